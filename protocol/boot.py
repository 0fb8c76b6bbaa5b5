"""The boot state machine (2.0.1 B01-B04, 1.6 Core BootNotification) as a table, with time passed in.

Pure: it decides when to send BootNotification and what the station may send or serve; it never
sends anything, never imports trio and never reads a clock.
"""

from __future__ import annotations

import enum
from typing import Final, final

from evstation.protocol.versions import OcppVersion
from evstation.records import record

__all__ = [
    "DEFAULT_RETRY_INTERVAL_S",
    "TRANSITIONS",
    "V16_DEFAULT_GATES",
    "V16_REMOTE_TX_GATES",
    "V201_CONFIGURATION_GATES",
    "V201_DEFAULT_GATES",
    "V201_REMOTE_TX_GATES",
    "V201_TRIGGER_GATES",
    "BootDecision",
    "BootGates",
    "BootInput",
    "BootMachine",
    "BootState",
    "Gate",
    "IllegalBootTransition",
    "default_gates",
    "gate_for",
]

# B01.FR.05 / B02.FR.01: an interval of 0 leaves the retry interval to the station. libocpp retries
# BootNotification every 60 s (PR #431); we do the same.
DEFAULT_RETRY_INTERVAL_S: Final = 60.0


class BootState(enum.Enum):
    NOT_SENT = "NotSent"  # after (re)start, before the first BootNotification went out
    AWAITING = "Awaiting"  # a BootNotification is in flight
    PENDING = "Pending"  # the CSMS answered Pending: retry after the interval (B02)
    REJECTED = "Rejected"  # the CSMS answered Rejected: retry after the interval (B03)
    ACCEPTED = "Accepted"  # registered: heartbeat, status and transaction messages may flow (B01)


class BootInput(enum.Enum):
    SENT = "Sent"
    ACCEPTED = "Accepted"
    PENDING = "Pending"
    REJECTED = "Rejected"
    FAILED = "Failed"  # timeout or CALLERROR for the BootNotification in flight
    RECONNECTED = "Reconnected"  # a new connection is up
    # 2.0.1 B10.FR.10: a connection came up through another network profile than the last one
    PROFILE_SWITCHED = "ProfileSwitched"


# Every legal (state, input) pair. A pair missing here is a bug in the caller (IllegalBootTransition).
TRANSITIONS: Final[dict[tuple[BootState, BootInput], BootState]] = {
    (BootState.NOT_SENT, BootInput.SENT): BootState.AWAITING,
    (BootState.PENDING, BootInput.SENT): BootState.AWAITING,  # B02.FR.01 retry after the interval
    (BootState.REJECTED, BootInput.SENT): BootState.AWAITING,  # B03.FR.01 retry after the interval
    (BootState.AWAITING, BootInput.ACCEPTED): BootState.ACCEPTED,  # B01.FR.01
    (BootState.AWAITING, BootInput.PENDING): BootState.PENDING,  # B02
    (BootState.AWAITING, BootInput.REJECTED): BootState.REJECTED,  # B03
    # No answer: keep trying as if Rejected, but at the default interval.
    (BootState.AWAITING, BootInput.FAILED): BootState.REJECTED,
    # A boot lost with its connection is sent again at once on the next one.
    (BootState.AWAITING, BootInput.RECONNECTED): BootState.NOT_SENT,
    (BootState.NOT_SENT, BootInput.RECONNECTED): BootState.NOT_SENT,
    # B02.FR.01 / B03.FR.02: the retry interval runs on across a reconnect; nothing is sent before it.
    (BootState.PENDING, BootInput.RECONNECTED): BootState.PENDING,
    (BootState.REJECTED, BootInput.RECONNECTED): BootState.REJECTED,
    # B01: an Accepted station does not boot again after a mere reconnect.
    (BootState.ACCEPTED, BootInput.RECONNECTED): BootState.ACCEPTED,
    # B10.FR.10: after a switch of network profile the registration starts over, whatever the last CSMS
    # said: the one now connected may never have seen this station.
    **{(state, BootInput.PROFILE_SWITCHED): BootState.NOT_SENT for state in BootState},
}


_ANSWERS: Final = {
    "Accepted": BootInput.ACCEPTED,
    "Pending": BootInput.PENDING,
    "Rejected": BootInput.REJECTED,
}


class IllegalBootTransition(Exception):
    """The runtime fed the machine an input its current state does not allow (a bug, not peer input)."""


class Gate(enum.Enum):
    """What to do with a CALL from the CSMS, given the boot state."""

    SERVE = "Serve"
    REJECT = "Reject"  # answer with the action's own Rejected status
    SECURITY_ERROR = "SecurityError"  # answer with a CALLERROR SecurityError
    IGNORE = "Ignore"  # send no answer at all (1.6 section 4.2 while Rejected)


@record
class BootGates:
    """How one CSMS action is gated before the station is Accepted; declared by the block serving it.

    `pending` applies while the CSMS keeps the station Pending; `rejected` while it is Rejected and
    before any answer to the first BootNotification (the CSMS has not accepted the station yet).
    """

    pending: Gate
    rejected: Gate


# 1.6 section 4.2: while Pending the Charge Point SHOULD answer the Central System (only
# RemoteStart/RemoteStopTransaction are not allowed); while Rejected it SHALL NOT answer anything.
V16_DEFAULT_GATES: Final = BootGates(pending=Gate.SERVE, rejected=Gate.IGNORE)
V16_REMOTE_TX_GATES: Final = BootGates(pending=Gate.REJECT, rejected=Gate.IGNORE)
# 2.0.1 B02.FR.01: while Pending the station SHALL answer requests that read or change its
# configuration (B05-B08) and TriggerMessage (F06); the spec names no other CSMS request for Pending or
# Rejected, so everything else is refused with SecurityError, the code the spec uses for calls made in
# the wrong boot state (B02.FR.09, B03.FR.07), rather than silently served.
V201_DEFAULT_GATES: Final = BootGates(pending=Gate.SECURITY_ERROR, rejected=Gate.SECURITY_ERROR)
V201_CONFIGURATION_GATES: Final = BootGates(pending=Gate.SERVE, rejected=Gate.SECURITY_ERROR)
# TriggerMessage(BootNotification) is how a CSMS ends a Rejected wait early (TC_B_31).
V201_TRIGGER_GATES: Final = BootGates(pending=Gate.SERVE, rejected=Gate.SERVE)
V201_REMOTE_TX_GATES: Final = BootGates(pending=Gate.REJECT, rejected=Gate.REJECT)


def default_gates(version: OcppVersion) -> BootGates:
    return V16_DEFAULT_GATES if version is OcppVersion.V16 else V201_DEFAULT_GATES


def gate_for(state: BootState, gates: BootGates) -> Gate:
    """Whether a CSMS CALL may be served in `state`, given the action's declared gates."""
    if state is BootState.ACCEPTED:
        return Gate.SERVE
    if state is BootState.PENDING:
        return gates.pending
    return gates.rejected


@record
class BootDecision:
    """What the runtime must do after an input: when to send the next BootNotification (monotonic
    seconds, None = never again in this run) and the heartbeat interval to use once Accepted."""

    state: BootState
    next_boot_at: float | None
    heartbeat_interval_s: float | None


@final
class BootMachine:
    """One station's registration state. Survives reconnects; a restart makes a new one.

    An Accepted station does not boot again after a reconnect (2.0.1 B01: BootNotification follows a
    (re)boot, not a reconnect; 1.6 section 4.2 likewise).
    """

    def __init__(self, default_retry_s: float = DEFAULT_RETRY_INTERVAL_S) -> None:
        self.state = BootState.NOT_SENT
        self.next_boot_at: float | None = None
        self.heartbeat_interval_s: float | None = None
        # Counts B10.FR.10 switches: what a CSMS asked for before one is not the new CSMS's business.
        self.registration = 0
        self._default_retry_s = default_retry_s

    def _move(self, event: BootInput) -> BootState:
        try:
            self.state = TRANSITIONS[(self.state, event)]
        except KeyError:
            raise IllegalBootTransition(f"{event.value} not allowed in {self.state.value}") from None
        return self.state

    def boot_due(self, now: float) -> bool:
        """True if a BootNotification should go out now (first one, or a retry whose time has come)."""
        if self.state is BootState.NOT_SENT:
            return True
        if self.state in (BootState.PENDING, BootState.REJECTED):
            return self.next_boot_at is not None and now >= self.next_boot_at
        return False

    def sent(self) -> None:
        self._move(BootInput.SENT)

    def answered(self, status: str, interval_s: float, now: float) -> BootDecision:
        """Feed the RegistrationStatus of a BootNotification response ("Accepted"/"Pending"/"Rejected").

        Accepted: `interval_s` is the heartbeat interval (B01.FR.04; 0 keeps the configured one).
        Pending/Rejected: `interval_s` is the wait before the next BootNotification (B02.FR.01,
        B03.FR.01); 0 means "station's choice", the default retry interval.
        """
        event = _ANSWERS[status]
        self._move(event)
        if event is BootInput.ACCEPTED:
            self.next_boot_at = None
            self.heartbeat_interval_s = interval_s if interval_s > 0 else None
        else:
            self.next_boot_at = now + (interval_s if interval_s > 0 else self._default_retry_s)
        return BootDecision(self.state, self.next_boot_at, self.heartbeat_interval_s)

    def failed(self, now: float) -> BootDecision:
        """The BootNotification got no usable answer (timeout, CALLERROR, link lost)."""
        self._move(BootInput.FAILED)
        self.next_boot_at = now + self._default_retry_s
        return BootDecision(self.state, self.next_boot_at, None)

    def may_send(self, action: str, *, requested: bool = False) -> bool:
        """Whether the station may send a CALL with `action` now.

        Before Accepted nothing but BootNotification (B02.FR.02, B03.FR.02), except, while Pending, a
        message the CSMS asked for (`requested`: a NotifyReport for its GetBaseReport, a message it
        triggered; B02.FR.09 names exactly those)."""
        if self.state is BootState.ACCEPTED or action == "BootNotification":
            return True
        return requested and self.state is BootState.PENDING

    def triggered(self, now: float) -> bool:
        """TriggerMessage(BootNotification): while Pending / Rejected the next BootNotification is due
        now instead of after the interval (1.6 section 4.2, 2.0.1 F06 / TC_B_31). False in any other
        state (Accepted: 2.0.1 F06.FR.17 refuses the trigger; a boot not yet answered is under way)."""
        if self.state not in (BootState.PENDING, BootState.REJECTED):
            return False
        self.next_boot_at = now
        return True

    def reconnected(self) -> None:
        """A new connection is up: a boot lost in flight goes out again at once; Pending/Rejected keep
        their retry time; Accepted stays Accepted."""
        self._move(BootInput.RECONNECTED)

    def profile_switched(self) -> None:
        """2.0.1 B10.FR.10: the new connection runs over another network profile than the previous one:
        a BootNotification goes out at once, even if the station was Accepted."""
        self._move(BootInput.PROFILE_SWITCHED)
        self.next_boot_at = None
        self.registration += 1

"""The version-neutral EVSE: plug, authorize, energize, stop and faults, as a table-driven machine.

It drives one charge controller and reads one meter per EVSE, and publishes `EvseEvent`s; it never
knows OCPP message formats (the session adapters map these events to 1.6 / 2.0.1 messages).
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NoReturn, final

import trio

from evstation.drivers.api import (
    NON_BLOCKING_FAULTS,
    BoardReset,
    CableRating,
    ChargeController,
    ContactorChanged,
    ControllerError,
    ControllerEvent,
    FaultCleared,
    FaultCode,
    FaultRaised,
    LockChanged,
    MeterFault,
    MeterRecovered,
    MeterSample,
    PilotChanged,
    PilotState,
    PowerMeter,
)
from evstation.protocol.authorization import TokenMatcher, token_matcher
from evstation.protocol.versions import OcppVersion
from evstation.records import record
from evstation.runtime.events import DEFAULT_SUBSCRIBER_BUFFER, Broadcaster, Dropped

log = logging.getLogger(__name__)

AUTHORIZATION_TIMEOUT_S = 30.0  # no resolve_authorization within this -> the token counts as rejected
CONNECTION_TIMEOUT_S = 60.0  # auth-first: the EV must plug in within this (1.6 ConnectionTimeOut)
DEFAULT_MAX_CURRENT_A = 32.0
MIN_OFFER_A = 6.0  # IEC 61851-1: no PWM below 6 A, so a lower limit suspends the offer
# A SuspendedEV status is published only once it has lasted this long. Every session passes through
# it for the moment between the PWM offer and the EV closing S2 (and an EV may blip C -> B -> C); a
# CSMS would see Preparing -> SuspendedEV -> Charging within milliseconds. Only the published status
# waits: `Evse.status()` and the session events (EnergyFlowSuspended) are immediate.
SUSPENDED_EV_SETTLE_S = 1.0

_METER_FAULTS = frozenset({FaultCode.METER_COMMUNICATION, FaultCode.METER_ENERGY_BACKWARDS})
# The faults an EVSE raises itself, whatever its drivers: no meter reading at a start point
# (`refuse_unmetered`), the database refusing writes (`set_storage_failure`) and, on an EVSE with a
# lock, a lock move its board refused (`_move_lock`). runtime/fault_components.py adds them to the
# drivers' sets.
EVSE_FAULTS_RAISED = frozenset(
    {FaultCode.METER_COMMUNICATION, FaultCode.STORAGE_FAILURE, FaultCode.CONNECTOR_LOCK_FAILURE}
)
_EV_PRESENT = frozenset({PilotState.B, PilotState.C, PilotState.D})
_EV_READY = frozenset({PilotState.C, PilotState.D})


# ---------------------------------------------------------------------------------------------------
# Public vocabulary (the contract with the session adapters)


class ConnectorStatus(enum.Enum):
    AVAILABLE = "Available"
    PREPARING = "Preparing"
    CHARGING = "Charging"
    SUSPENDED_EV = "SuspendedEV"
    SUSPENDED_EVSE = "SuspendedEVSE"
    FINISHING = "Finishing"
    RESERVED = "Reserved"
    UNAVAILABLE = "Unavailable"
    FAULTED = "Faulted"
    # 2.0.1 maps PREPARING/CHARGING/SUSPENDED_*/FINISHING to "Occupied"; 1.6 uses them as is.


class StopReason(enum.Enum):
    """Why a session ended; names follow 2.0.1 ReasonEnumType, the 1.6 adapter maps them."""

    LOCAL = "Local"
    REMOTE = "Remote"
    EV_DISCONNECTED = "EVDisconnected"
    POWER_LOSS = "PowerLoss"
    REBOOT = "Reboot"
    # A CSMS Reset ended the session: 2.0.1 ImmediateReset; 1.6 HardReset / SoftReset.
    IMMEDIATE_RESET = "ImmediateReset"
    HARD_RESET = "HardReset"
    SOFT_RESET = "SoftReset"
    DE_AUTHORIZED = "DeAuthorized"
    EMERGENCY_STOP = "EmergencyStop"
    OTHER = "Other"
    # 1.6 only (Reason UnlockCommand): UnlockConnector ended the session (2.0.1 refuses to unlock instead).
    UNLOCK_COMMAND = "UnlockCommand"
    # The EV was not (re)connected within EVConnectionTimeOut: 2.0.1 Timeout / EVConnectTimeout (1.6: Other).
    TIMEOUT = "Timeout"


@record
class StatusChanged:
    evse_id: int
    connector_id: int
    status: ConnectorStatus
    fault: FaultCode | None  # the most relevant active fault (blocking ones first), also when not Faulted
    # A kept session's EV is away (StopTxOnEVSideDisconnect false): 1.6 shows SuspendedEV, 2.0.1
    # Available (docs/session.md "EV-side disconnect").
    ev_away: bool = False


@record
class EvPlugged:
    evse_id: int
    connector_id: int


@record
class EvUnplugged:
    evse_id: int
    connector_id: int
    session_kept: bool = False  # StopTxOnEVSideDisconnect false: the session waits for the EV to return


@record
class AuthorizationRequested:
    """A token was presented; the session must answer with `Evse.resolve_authorization`.

    With `session_token` set, the token was shown at an EVSE whose session that other token started:
    the answer says whether it may stop the session (same group, master pass), not start one."""

    evse_id: int | None
    id_token: str
    token_type: str
    session_token: tuple[str, str] | None = None


@record
class Authorized:
    evse_id: int
    id_token: str
    token_type: str


@record
class EnergyFlowStarted:
    """Contactor closed with the EV in C/D (PowerPathClosed)."""

    evse_id: int


@record
class EnergyFlowSuspended:
    evse_id: int
    by_ev: bool


@record
class SessionEnded:
    """The authorized session is over (the EV may still be plugged: status Finishing)."""

    evse_id: int
    connector_id: int
    reason: StopReason


@record
class FaultChanged:
    evse_id: int
    fault: FaultCode
    active: bool
    # What the driver said (a raise only), for 2.0.1 NotifyEvent techInfo; not part of the fault's identity.
    detail: str = field(default="", compare=False)


@record
class CableRatingChanged:
    """The board read the cable's current rating from its Proximity Pilot (None: no cable / unknown)."""

    evse_id: int
    max_current_a: int | None


EvseEvent = (
    StatusChanged
    | EvPlugged
    | EvUnplugged
    | AuthorizationRequested
    | Authorized
    | EnergyFlowStarted
    | EnergyFlowSuspended
    | SessionEnded
    | FaultChanged
    | CableRatingChanged
)


# ---------------------------------------------------------------------------------------------------
# The pure machine: session phase x input -> new phase + effects


class Phase(enum.Enum):
    IDLE = "Idle"  # no EV, no authorization
    AUTHORIZED = "Authorized"  # auth-first: waiting for the EV (ConnectionTimeOut runs)
    PLUGGED = "Plugged"  # plug-first: waiting for an accepted token
    OFFERED = "EnergyOffered"  # authorized + plugged, PWM on, EV not drawing (also: EV suspended)
    CHARGING = "Charging"  # contactor closed, EV in C/D
    SUSPENDED_EVSE = "SuspendedEVSE"  # authorized + plugged, but the limit is below 6 A
    FINISHING = "Finishing"  # session stopped, EV still plugged
    # StopTxOnEVSideDisconnect false: the cable left the EV, the session is kept (E10 / 1.6 SuspendedEV)
    # until the EV comes back (-> EnergyOffered), a stop, or (tethered cable) EVConnectionTimeOut.
    EV_DISCONNECTED = "EvDisconnected"


class Input(enum.Enum):
    PLUG = "Plug"  # pilot A -> B/C/D
    UNPLUG = "Unplug"  # pilot -> A
    EV_SIDE_UNPLUG = "EvSideUnplug"  # pilot -> A with StopTxOnEVSideDisconnect false: keep the session
    AUTHORIZE = "Authorize"  # token accepted (local or remote)
    POWER_ON = "PowerOn"  # contactor closed
    EV_PAUSED = "EvPaused"  # EV went C -> B (or contactor opened with the EV in B)
    POWER_OFF = "PowerOff"  # contactor opened for another reason (fault)
    LIMIT_ZERO = "LimitBelowMinimum"  # the current limit is below 6 A
    LIMIT_RESTORED = "LimitRestored"
    STOP = "Stop"  # stop_session (remote, local, de-authorized ...)
    CONNECTION_TIMEOUT = "ConnectionTimeout"


class Effect(enum.Enum):
    PUBLISH_PLUGGED = "EvPlugged"
    PUBLISH_UNPLUGGED = "EvUnplugged"
    PUBLISH_AUTHORIZED = "Authorized"
    PUBLISH_FLOW_STARTED = "EnergyFlowStarted"
    PUBLISH_SUSPENDED_EV = "EnergyFlowSuspended(by_ev)"
    PUBLISH_SUSPENDED_EVSE = "EnergyFlowSuspended(by_evse)"
    END_EV_DISCONNECTED = "SessionEnded(EVDisconnected)"
    END_REQUESTED = "SessionEnded(requested reason)"
    END_TIMEOUT = "SessionEnded(Timeout)"


P, In, E = Phase, Input, Effect
_ENERGIZED = (P.OFFERED, P.CHARGING, P.SUSPENDED_EVSE)

# Pairs not listed leave the phase unchanged and have no effect: hardware reports (pilot blips,
# contactor echoes) may arrive in any phase, and ignoring the meaningless ones is the safe answer.
TRANSITIONS: dict[tuple[Phase, Input], tuple[Phase, tuple[Effect, ...]]] = {
    (P.IDLE, In.PLUG): (P.PLUGGED, (E.PUBLISH_PLUGGED,)),
    (P.IDLE, In.AUTHORIZE): (P.AUTHORIZED, (E.PUBLISH_AUTHORIZED,)),
    (P.AUTHORIZED, In.PLUG): (P.OFFERED, (E.PUBLISH_PLUGGED,)),
    (P.AUTHORIZED, In.STOP): (P.IDLE, (E.END_REQUESTED,)),
    (P.AUTHORIZED, In.CONNECTION_TIMEOUT): (P.IDLE, (E.END_TIMEOUT,)),
    (P.PLUGGED, In.AUTHORIZE): (P.OFFERED, (E.PUBLISH_AUTHORIZED,)),
    (P.PLUGGED, In.UNPLUG): (P.IDLE, (E.PUBLISH_UNPLUGGED,)),
    (P.OFFERED, In.POWER_ON): (P.CHARGING, (E.PUBLISH_FLOW_STARTED,)),
    (P.OFFERED, In.LIMIT_ZERO): (P.SUSPENDED_EVSE, (E.PUBLISH_SUSPENDED_EVSE,)),
    (P.CHARGING, In.EV_PAUSED): (P.OFFERED, (E.PUBLISH_SUSPENDED_EV,)),
    (P.CHARGING, In.POWER_OFF): (P.OFFERED, (E.PUBLISH_SUSPENDED_EVSE,)),
    (P.CHARGING, In.LIMIT_ZERO): (P.SUSPENDED_EVSE, (E.PUBLISH_SUSPENDED_EVSE,)),
    (P.SUSPENDED_EVSE, In.LIMIT_RESTORED): (P.OFFERED, ()),
    (P.FINISHING, In.UNPLUG): (P.IDLE, (E.PUBLISH_UNPLUGGED,)),
    (P.EV_DISCONNECTED, In.PLUG): (P.OFFERED, (E.PUBLISH_PLUGGED,)),
    (P.EV_DISCONNECTED, In.STOP): (P.IDLE, (E.END_REQUESTED,)),
    (P.EV_DISCONNECTED, In.CONNECTION_TIMEOUT): (P.IDLE, (E.END_TIMEOUT,)),
}
# Outside a running session an EV-side unplug is a plain unplug.
for (_phase, _inp), _result in list(TRANSITIONS.items()):
    if _inp is In.UNPLUG:
        TRANSITIONS[(_phase, In.EV_SIDE_UNPLUG)] = _result
for _phase in _ENERGIZED:
    TRANSITIONS[(_phase, In.UNPLUG)] = (P.IDLE, (E.PUBLISH_UNPLUGGED, E.END_EV_DISCONNECTED))
    TRANSITIONS[(_phase, In.EV_SIDE_UNPLUG)] = (P.EV_DISCONNECTED, (E.PUBLISH_UNPLUGGED,))
    TRANSITIONS[(_phase, In.STOP)] = (P.FINISHING, (E.END_REQUESTED,))

# Connector status per phase, before the overrides (Faulted, then Unavailable) are applied.
PHASE_STATUS: dict[Phase, ConnectorStatus] = {
    P.IDLE: ConnectorStatus.AVAILABLE,
    P.AUTHORIZED: ConnectorStatus.PREPARING,
    P.PLUGGED: ConnectorStatus.PREPARING,
    P.OFFERED: ConnectorStatus.SUSPENDED_EV,
    P.CHARGING: ConnectorStatus.CHARGING,
    P.SUSPENDED_EVSE: ConnectorStatus.SUSPENDED_EVSE,
    P.FINISHING: ConnectorStatus.FINISHING,
    P.EV_DISCONNECTED: ConnectorStatus.SUSPENDED_EV,  # 1.6 TC_005_3: the kept session shows SuspendedEV
}
SESSION_PHASES = frozenset(
    {P.AUTHORIZED, P.EV_DISCONNECTED, *_ENERGIZED}
)  # an authorized session is in progress
LOCKED_PHASES = frozenset(_ENERGIZED)  # lock from session start until it stops


def step(phase: Phase, inp: Input) -> tuple[Phase, tuple[Effect, ...]]:
    """The pure transition function: unknown pairs are ignored (same phase, no effects)."""
    return TRANSITIONS.get((phase, inp), (phase, ()))


def connector_status(
    phase: Phase,
    *,
    blocking_fault: bool,
    available: bool,
    reserved: bool = False,
    cable_held: bool = False,
) -> ConnectorStatus:
    """Status of the connector in use: Faulted beats everything; Unavailable only outside a session;
    Finishing while idle with a finished session's cable held locked in the socket (E09.FR.03);
    Reserved (the reservation block says so) only while idle: an EV plugged in makes it Preparing."""
    if blocking_fault:
        return ConnectorStatus.FAULTED
    if not available and phase not in SESSION_PHASES:
        return ConnectorStatus.UNAVAILABLE
    if cable_held and phase is Phase.IDLE:
        # 1.6 TC_005_1/2: a session the EV-side unplug ended shows Finishing while its cable is still
        # in the socket; a locked cable certainly is.
        return ConnectorStatus.FINISHING
    if reserved and phase is Phase.IDLE:
        return ConnectorStatus.RESERVED
    return PHASE_STATUS[phase]


# ---------------------------------------------------------------------------------------------------
# The runtime EVSE


@dataclass
class _PendingAuth:
    """A token presented and awaiting its authorization decision until `deadline`."""

    id_token: str
    token_type: str
    deadline: float
    answer: bool | None = None
    stop: bool = False  # asks to stop the running session, not to start one


@final
class Evse:
    """One EVSE: owns its charge controller and meter (starts their `run` tasks) and its machine.

    Inputs (board events, meter events, tokens, commands) are applied one at a time under a lock; the
    board outputs (PWM offer, power permission, lock, state F) are a function of the resulting state
    and are only sent when they change. A fault keeps the session: power is withdrawn while it lasts
    and offered again when it clears; ending the session on a fault is the session adapter's choice.
    """

    def __init__(
        self,
        evse_id: int,
        controller: ChargeController,
        meter: PowerMeter | None,
        events: Broadcaster[EvseEvent],
        *,
        connector_ids: tuple[int, ...] = (1,),
        max_current_a: float = DEFAULT_MAX_CURRENT_A,
        has_lock: bool = True,
        authorization_timeout_s: float = AUTHORIZATION_TIMEOUT_S,
        connection_timeout_s: float = CONNECTION_TIMEOUT_S,
        status_settle_s: float = SUSPENDED_EV_SETTLE_S,
        same_token: TokenMatcher | None = None,
    ) -> None:
        if not connector_ids:
            raise ValueError("an EVSE needs at least one connector")
        self.id = evse_id
        self.connector_ids = connector_ids
        self.controller = controller
        self.power_meter = meter
        self.max_current_a = max_current_a
        self.has_lock = has_lock
        self.authorization_timeout_s = authorization_timeout_s
        self.connection_timeout_s = connection_timeout_s
        self.status_settle_s = status_settle_s
        # TxCtrlr.StopTxOnEVSideDisconnect / OCPPCommCtrlr.UnlockOnEVSideDisconnect (the transactions
        # block keeps them in line with the device model); read when the pilot goes to A.
        self.stop_on_ev_side_disconnect = True
        self.unlock_on_ev_side_disconnect = True
        # Set by the transactions block when its transaction starts before the energy (every start
        # point but EnergyTransfer): power only once that transaction's start is committed to the
        # database, so no energy flows that the CSMS might never hear of (a full or read-only disk).
        self.energy_waits_for_record = False
        self._recorded = False  # the transaction of this EVSE's session is committed (see above)
        self._events = events
        # Token identity per the OCPP version (case-insensitive; 2.0.1 also compares the type).
        self._same_token = same_token or token_matcher(OcppVersion.V201)
        self._lock = trio.Lock()
        self._phase = Phase.IDLE
        self._connector = connector_ids[0]
        self._unavailable: set[int] = set()  # connectors made Inoperative (ChangeAvailability)
        self._reserved = False  # held by a reservation (runtime/blocks/reservation.py)
        self._limit_a: float | None = None
        self._faults: set[FaultCode] = set()
        self._pilot: PilotState | None = None
        self._ev_present = False
        self._contactor = False
        self._session_token: tuple[str, str] | None = None
        # E09.FR.03 / 1.6 UnlockConnectorOnEVSideDisconnect false: the token of the session the EV-side
        # unplug ended, whose cable stays locked until that token (or its group) or UnlockConnector.
        self._held_by: tuple[str, str] | None = None
        # The cable's rating from its Proximity Pilot resistor, if the board reports one (A).
        self._cable_a: int | None = None
        self._pending: _PendingAuth | None = None
        self._connection_deadline: float | None = None
        self._latest: MeterSample | None = None
        self._readings = 0  # samples received so far: `wait_reading(after=n)` waits for a newer one
        self._meter_changed = trio.Event()
        # Billing rule: power is offered only once the session has a meter reading to start from.
        self._session_metered = False
        # The transactions block found no reading at a start point: Faulted until the meter reads again.
        self._unmetered = False
        self._energy_suspended = False  # E05 / 1.6 StopTransactionOnInvalidId false: no energy, session kept
        self._board_known = trio.Event()  # set at the board's first pilot report
        self._changed = trio.Event()
        self._started = False
        # Last commands sent to the board; None = unknown (start-up, board reset) -> resend.
        self._sent_offer: tuple[float | None] | None = None
        self._sent_power: bool | None = None
        self._sent_lock: bool | None = None
        self._sent_unavailable: bool | None = None
        self._published: dict[int, tuple[ConnectorStatus, FaultCode | None, bool]] = {}
        self._settle_deadline: float | None = None  # a SuspendedEV waits until then to be published

    # --- queries ----------------------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def connector_in_use(self) -> int:
        return self._connector

    def status(self, connector_id: int = 1) -> ConnectorStatus:
        if connector_id not in self.connector_ids:
            raise KeyError(f"EVSE {self.id} has no connector {connector_id}")
        if connector_id != self._connector:
            # One connector of an EVSE at a time: the others are blocked while it is in use.
            own = connector_status(
                Phase.IDLE,
                blocking_fault=self._blocking_fault(),
                available=self.available(connector_id),
                reserved=self._reserved and self._phase is Phase.IDLE,
            )
            if own is ConnectorStatus.AVAILABLE and self._phase is not Phase.IDLE:
                return ConnectorStatus.UNAVAILABLE
            return own
        return connector_status(
            self._phase,
            blocking_fault=self._blocking_fault(),
            available=self.available(connector_id),
            reserved=self._reserved,
            cable_held=self._held_by is not None,
        )

    def ev_away(self, connector_id: int = 1) -> bool:
        """A kept session's EV left (StopTxOnEVSideDisconnect false): 2.0.1 reports Available."""
        return connector_id == self._connector and self._phase is Phase.EV_DISCONNECTED

    def cable_held(self) -> bool:
        """A finished session's cable is held locked until its token or UnlockConnector (E09.FR.03)."""
        return self._held_by is not None

    def cable_max_current_a(self) -> int | None:
        """The plugged cable's rating (Proximity Pilot), None when the board does not report one."""
        return self._cable_a

    def published_status(self, connector_id: int = 1) -> ConnectorStatus | None:
        """The status last published in StatusChanged (what the CSMS was told); None before the first."""
        published = self._published.get(connector_id)
        return None if published is None else published[0]

    def active_faults(self) -> frozenset[FaultCode]:
        return frozenset(self._faults)

    def energy_wh(self) -> float | None:
        return None if self._latest is None else self._latest.energy_import_wh

    @property
    def has_meter(self) -> bool:
        return self.power_meter is not None

    @property
    def ev_present(self) -> bool:
        """The board reports an EV on the pilot (B, C or D)."""
        return self._ev_present

    def reading(self) -> MeterSample | None:
        """The latest sample if the meter is answering now (a sample from before a communication
        fault is no reading to bill from)."""
        if self._latest is None or FaultCode.METER_COMMUNICATION in self._faults:
            return None
        return self._latest

    @property
    def readings_received(self) -> int:
        return self._readings

    async def wait_reading(self, after: int = 0) -> MeterSample:
        """The first usable reading that is the `after+1`-th sample or later (bound it with a timeout)."""
        while True:
            changed = self._meter_changed
            sample = self.reading()
            if sample is not None and self._readings > after:
                return sample
            await changed.wait()

    async def wait_board_state(self) -> None:
        """Until the board has reported the pilot once (whether an EV is plugged in is known)."""
        await self._board_known.wait()

    async def suspend_energy(self, suspended: bool) -> None:
        """Withhold (or give back) the energy offer while keeping the session (SuspendedEVSE): the
        CSMS refused the token of a running transaction and StopTxOnInvalidId is false."""
        async with self._lock:
            self._energy_suspended = suspended
            await self._apply()

    async def refuse_unmetered(self) -> None:
        """No meter reading at a transaction's start point: end the session unenergized and show the
        fault (MeterCommunicationFault, status Faulted) until the meter reads again."""
        async with self._lock:
            self._unmetered = True
            self._set_fault(FaultCode.METER_COMMUNICATION, True, "no meter reading at the start point")
            await self._handle(Input.STOP, StopReason.OTHER)

    async def set_transaction_recorded(self, recorded: bool) -> None:
        """The transactions block committed this EVSE's transaction start (True), or ended it (False)."""
        async with self._lock:
            self._recorded = recorded
            await self._apply()

    async def set_storage_failure(self, failing: bool) -> None:
        """The station database refuses writes (or accepts them again): Faulted (1.6 InternalError) and
        no energy while it lasts, as no transaction could be recorded; a session is kept, as for any
        fault, and its power comes back with the database."""
        async with self._lock:
            self._set_fault(FaultCode.STORAGE_FAILURE, failing)
            await self._apply()

    def power_w(self) -> float | None:
        return None if self._latest is None else self._latest.power_w

    def offered_current_a(self) -> float | None:
        return None if self._sent_offer is None else self._sent_offer[0]

    def current_limit_a(self) -> float | None:
        return self._limit_a

    def session_active(self) -> bool:
        return self._phase in SESSION_PHASES

    def session_token(self) -> str | None:
        return None if self._session_token is None else self._session_token[0]

    def owns_session(self, id_token: str, token_type: str) -> bool:
        """Whether `id_token` is the token of the running session (any letter case)."""
        own = self._session_token
        return own is not None and self._same_token(own[0], own[1], id_token, token_type)

    def holds_cable_of(self, id_token: str, token_type: str) -> bool:
        """Whether this EVSE holds the cable of the session `id_token` started (E09.FR.03)."""
        held = self._held_by
        return held is not None and self._same_token(held[0], held[1], id_token, token_type)

    def available(self, connector_id: int | None = None) -> bool:
        """Whether the connector (default: the one in use / selected) is Operative."""
        return (self._connector if connector_id is None else connector_id) not in self._unavailable

    # --- commands ---------------------------------------------------------------------------------

    def select_connector(self, connector_id: int) -> None:
        """Which connector the next plug-in happens on (EVSEs with several connectors)."""
        if connector_id not in self.connector_ids:
            raise KeyError(f"EVSE {self.id} has no connector {connector_id}")
        if self._phase in (Phase.IDLE, Phase.AUTHORIZED):
            self._connector = connector_id

    async def present_token(self, id_token: str, token_type: str = "ISO14443") -> bool:
        """A token shown at this EVSE. Returns False when it cannot be used here now.

        The session's own token stops it (local stop); otherwise AuthorizationRequested is published
        and the answer comes through `resolve_authorization` within `authorization_timeout_s`.
        """
        async with self._lock:
            if self.owns_session(id_token, token_type):
                await self._handle(Input.STOP, StopReason.LOCAL)
                return True
            if self._held_by is not None and self._phase not in SESSION_PHASES:
                if not self.holds_cable_of(id_token, token_type):
                    # Another token: only the held session's group (or a master pass) frees the cable.
                    return self._ask_to_stop(id_token, token_type, self._held_by)
                await self._release_cable()
                if self._phase is not Phase.PLUGGED:
                    return True
                # The driver's EV is back on the held cable: the token also asks for a new session.
            if self._session_token is not None and self._phase in SESSION_PHASES:
                return self._ask_to_stop(id_token, token_type, self._session_token)
            if not self._can_start():
                log.info("EVSE %d: token ignored, EVSE cannot start a session now", self.id)
                return False
            deadline = trio.current_time() + self.authorization_timeout_s
            self._pending = _PendingAuth(id_token, token_type, deadline)
            self._events.publish(AuthorizationRequested(self.id, id_token, token_type))
            self._wake()
            return True

    def _ask_to_stop(self, id_token: str, token_type: str, session_token: tuple[str, str]) -> bool:
        deadline = trio.current_time() + self.authorization_timeout_s
        self._pending = _PendingAuth(id_token, token_type, deadline, stop=True)
        self._events.publish(AuthorizationRequested(self.id, id_token, token_type, session_token))
        self._wake()
        return True

    async def _release_cable(self) -> None:
        self._held_by = None
        await self._apply()

    def resolve_authorization(self, id_token: str, accepted: bool) -> None:
        """The answer to AuthorizationRequested; answers for other tokens or after the timeout are ignored."""
        pending = self._pending
        if pending is None or pending.id_token != id_token or pending.answer is not None:
            log.info("EVSE %d: stale authorization answer for a token ignored", self.id)
            return
        pending.answer = accepted
        self._wake()

    async def authorize_remote(self, id_token: str, token_type: str) -> bool:
        """Authorize without asking the CSMS (RemoteStart); False if no session can start now."""
        async with self._lock:
            if not self._can_start():
                return False
            self._pending = None
            return await self._authorize(id_token, token_type)

    async def authorize_plugged(self, id_token: str, token_type: str) -> bool:
        """Authorize a plugged-in EV waiting for a token (free vend: AuthCtrlr.Enabled false); False
        when there is none (no EV, a session already, or the EVSE cannot start one now), or when a
        token presented just before is being decided: the driver's token goes into the transaction."""
        async with self._lock:
            if self._phase is not Phase.PLUGGED or not self._can_start():
                return False
            if self._pending is not None and not self._pending.stop:
                return False
            return await self._authorize(id_token, token_type)

    async def stop_session(self, reason: StopReason) -> None:
        async with self._lock:
            await self._handle(Input.STOP, reason)

    async def set_available(self, available: bool, connector_ids: Iterable[int] | None = None) -> None:
        """ChangeAvailability for the given connectors (default: all of this EVSE). A connector in a
        session keeps its status until the session ends; whether to wait for that is the caller's
        (the availability block's) decision."""
        targets = set(self.connector_ids if connector_ids is None else connector_ids)
        unknown = targets - set(self.connector_ids)
        if unknown:
            raise KeyError(f"EVSE {self.id} has no connector {min(unknown)}")
        async with self._lock:
            if available:
                self._unavailable -= targets
            else:
                self._unavailable |= targets
            await self._apply()

    async def set_reserved(self, reserved: bool) -> None:
        """Show Reserved while idle (2.0.1 H01.FR.04 / 1.6 5.13); who may use the EVSE is the
        reservation block's decision, not the EVSE's."""
        async with self._lock:
            if reserved != self._reserved:
                self._reserved = reserved
                await self._apply()

    async def set_current_limit(self, amps: float | None) -> None:
        """Smart-charging limit in A per phase (None = none); below 6 A suspends the offer (SuspendedEVSE)."""
        async with self._lock:
            self._limit_a = amps
            await self._apply()

    async def unlock(self) -> bool:
        """UnlockConnector: move the lock open; False if the lock failed (or there is no lock)."""
        async with self._lock:
            if not self.has_lock:
                return False
            self._held_by = None  # E09.FR.03: UnlockConnector frees a held cable too
            ok = await self._move_lock(False)
            await self._apply()
            return ok

    # --- tasks ------------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Start the board and meter tasks, apply the initial outputs, then follow their events."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.controller.run)
            if self.power_meter is not None:
                await nursery.start(self.power_meter.run)
                nursery.start_soon(self._follow_meter, self.power_meter.events())
            nursery.start_soon(self._follow_board, self.controller.events())
            nursery.start_soon(self._watch_deadlines)
            async with self._lock:
                self._started = True
                await self._apply()
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _follow_board(self, events: AsyncIterator[ControllerEvent]) -> None:
        async for event in events:
            async with self._lock:
                await self._on_board(event)

    async def _follow_meter(self, events: AsyncIterator[MeterSample | MeterFault | MeterRecovered]) -> None:
        async for event in events:
            async with self._lock:
                if isinstance(event, MeterSample):
                    self._latest = event
                    self._readings += 1
                    if self._unmetered:
                        self._unmetered = False
                        self._set_fault(FaultCode.METER_COMMUNICATION, False)
                elif isinstance(event, MeterFault):
                    self._set_fault(event.code, True, event.detail)
                else:
                    for code in _METER_FAULTS & self._faults:
                        self._set_fault(code, False)
                await self._apply()
                self._meter_changed.set()
                self._meter_changed = trio.Event()

    async def _watch_deadlines(self) -> None:
        """Authorization answers and timeouts, and the auth-first connection timeout."""
        while True:
            changed = self._changed
            candidates = (self._connection_deadline, self._pending_deadline(), self._settle_deadline)
            deadlines = [d for d in candidates if d is not None]
            pending = self._pending
            if pending is None or pending.answer is None:
                with trio.move_on_at(min(deadlines, default=math.inf)):
                    await changed.wait()
                    continue
            async with self._lock:
                await self._on_deadline_or_answer()

    def _pending_deadline(self) -> float | None:
        return None if self._pending is None else self._pending.deadline

    async def _on_deadline_or_answer(self) -> None:
        now = trio.current_time()
        pending = self._pending
        if pending is not None and (pending.answer is not None or now >= pending.deadline):
            self._pending = None
            if pending.stop:
                if pending.answer and self._phase in SESSION_PHASES:
                    await self._handle(Input.STOP, StopReason.LOCAL)
                elif pending.answer and self._held_by is not None:
                    await self._release_cable()
            elif pending.answer and self._can_start():
                await self._authorize(pending.id_token, pending.token_type)
            elif pending.answer is None:
                log.info("EVSE %d: no authorization answer in %.0f s", self.id, self.authorization_timeout_s)
        if self._connection_deadline is not None and now >= self._connection_deadline:
            await self._handle(Input.CONNECTION_TIMEOUT)
        if self._settle_deadline is not None and now >= self._settle_deadline:
            self._publish_status()

    # --- internals (called with self._lock held) --------------------------------------------------

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _blocking_fault(self) -> bool:
        return self._unmetered or bool(self._faults - NON_BLOCKING_FAULTS)

    def _can_start(self) -> bool:
        # A cable held for the previous session's driver (E09.FR.03) is theirs until they free it.
        return (
            self.available()
            and not self._blocking_fault()
            and self._held_by is None
            and self._phase in (Phase.IDLE, Phase.PLUGGED)
        )

    async def _authorize(self, id_token: str, token_type: str) -> bool:
        self._session_token = (id_token, token_type)
        await self._handle(Input.AUTHORIZE)
        return True

    async def _on_board(self, event: ControllerEvent) -> None:
        if isinstance(event, PilotChanged):
            previous, self._pilot = self._pilot, event.state
            self._board_known.set()
            if event.state is PilotState.A and self._ev_present:
                self._ev_present = False
                # The pilot cannot tell the EV side from the station side: any loss of the EV counts as
                # the EV side (docs/session.md "EV-side disconnect"). A locked cable can only have left
                # the EV, so UnlockOnEVSideDisconnect false holds it after the session ends (E09.FR.03).
                if not self.stop_on_ev_side_disconnect:
                    await self._handle(Input.EV_SIDE_UNPLUG)
                    return
                if self._phase in _ENERGIZED and self.has_lock and not self.unlock_on_ev_side_disconnect:
                    self._held_by = self._session_token
                await self._handle(Input.UNPLUG)
                return
            if event.state in _EV_PRESENT and not self._ev_present:
                self._ev_present = True
                await self._handle(Input.PLUG)
                return
            if previous in _EV_READY and event.state is PilotState.B:
                await self._handle(Input.EV_PAUSED)
                return
        elif isinstance(event, ContactorChanged):
            self._contactor = event.closed
            if event.closed:
                await self._handle(Input.POWER_ON)
            else:
                await self._handle(Input.EV_PAUSED if self._pilot is PilotState.B else Input.POWER_OFF)
            return
        elif isinstance(event, FaultRaised):
            self._set_fault(event.code, True, event.detail)
        elif isinstance(event, FaultCleared):
            self._set_fault(event.code, False)
        elif isinstance(event, BoardReset):
            log.warning("EVSE %d: board reset (%s); re-applying outputs", self.id, event.reason)
            self._sent_offer = self._sent_power = self._sent_lock = self._sent_unavailable = None
        elif isinstance(event, LockChanged):
            pass  # the lock position is commanded by us; failures arrive as ControllerError / faults
        elif isinstance(event, CableRating) and event.max_current_a != self._cable_a:
            self._cable_a = event.max_current_a
            self._events.publish(CableRatingChanged(self.id, event.max_current_a))
        await self._apply()

    def _set_fault(self, code: FaultCode, active: bool, detail: str = "") -> None:
        if active == (code in self._faults):
            return
        if active:
            self._faults.add(code)
        else:
            self._faults.discard(code)
        self._events.publish(FaultChanged(self.id, code, active, detail))

    async def _handle(self, inp: Input, reason: StopReason | None = None) -> None:
        self._phase, effects = step(self._phase, inp)
        for effect in effects:
            self._publish_effect(effect, reason)
        if self._waits_for_ev() and self._connection_deadline is None:
            self._connection_deadline = trio.current_time() + self.connection_timeout_s
            self._wake()
        elif not self._waits_for_ev():
            self._connection_deadline = None
        if self._phase not in SESSION_PHASES:
            self._session_token = None
        else:
            self._held_by = None  # a new session takes the lock over
        await self._apply()

    def _waits_for_ev(self) -> bool:
        """EVConnectionTimeOut runs: auth-first before the plug, and (E10.FR.02) a tethered cable
        unplugged from the EV in a kept session. A socket's kept session waits for a stop instead."""
        if self._phase is Phase.AUTHORIZED:
            return True
        return self._phase is Phase.EV_DISCONNECTED and not self.has_lock

    def _publish_effect(self, effect: Effect, reason: StopReason | None) -> None:
        ev: EvseEvent
        if effect is Effect.PUBLISH_PLUGGED:
            ev = EvPlugged(self.id, self._connector)
        elif effect is Effect.PUBLISH_UNPLUGGED:
            ev = EvUnplugged(self.id, self._connector, self._phase is Phase.EV_DISCONNECTED)
        elif effect is Effect.PUBLISH_AUTHORIZED:
            assert self._session_token is not None
            ev = Authorized(self.id, *self._session_token)
        elif effect is Effect.PUBLISH_FLOW_STARTED:
            ev = EnergyFlowStarted(self.id)
        elif effect is Effect.PUBLISH_SUSPENDED_EV:
            ev = EnergyFlowSuspended(self.id, by_ev=True)
        elif effect is Effect.PUBLISH_SUSPENDED_EVSE:
            ev = EnergyFlowSuspended(self.id, by_ev=False)
        elif effect is Effect.END_EV_DISCONNECTED:
            ev = SessionEnded(self.id, self._connector, StopReason.EV_DISCONNECTED)
        elif effect is Effect.END_REQUESTED:
            ev = SessionEnded(self.id, self._connector, reason or StopReason.OTHER)
        else:
            ev = SessionEnded(self.id, self._connector, StopReason.TIMEOUT)
        self._events.publish(ev)

    def _limit_allows_charging(self) -> bool:
        return self._offer_amps() >= MIN_OFFER_A

    def _offer_amps(self) -> float:
        if self._energy_suspended:
            return 0.0
        limit = self.max_current_a if self._limit_a is None else min(self._limit_a, self.max_current_a)
        if self._cable_a is not None:
            limit = min(limit, float(self._cable_a))  # never more than the cable is rated for
        return max(limit, 0.0)

    async def _apply(self) -> None:
        """Bring the board outputs and the published status in line with the state."""
        # Derived inputs: an offer below the IEC minimum is no offer at all.
        if self._phase is Phase.SUSPENDED_EVSE and self._limit_allows_charging():
            self._phase, _ = step(self._phase, Input.LIMIT_RESTORED)
        elif self._phase in (Phase.OFFERED, Phase.CHARGING) and not self._limit_allows_charging():
            self._phase, effects = step(self._phase, Input.LIMIT_ZERO)
            for effect in effects:
                self._publish_effect(effect, None)
        self._publish_status()
        if not self._started:
            return
        if self._phase not in SESSION_PHASES:
            self._session_metered = False
            self._energy_suspended = False
        elif self.power_meter is None or self.reading() is not None:
            self._session_metered = True  # later meter glitches do not cut a metered session's power
        energize = (
            self._phase in (Phase.OFFERED, Phase.CHARGING)
            and not self._blocking_fault()
            and self._session_metered
            and (self._recorded or not self.energy_waits_for_record)
        )
        offer = self._offer_amps() if energize else None
        # Power off before the PWM goes away, and PWM up before power is allowed (drivers-facts 3).
        if not energize:
            await self._send_power(False)
        await self._send_offer(offer)
        if energize:
            await self._send_power(True)
        # UnlockOnEVSideDisconnect false: a kept session whose EV left holds the cable in the socket.
        # E09.FR.03: so does one whose session the EV-side unplug ended, until its token comes back.
        kept_locked = self._phase is Phase.EV_DISCONNECTED and not self.unlock_on_ev_side_disconnect
        held = self._held_by is not None
        want_lock = self.has_lock and (self._phase in LOCKED_PHASES or kept_locked or held)
        if self.has_lock and want_lock != self._sent_lock:
            await self._move_lock(want_lock)
        # State F only with no EV: a plugged EV would be cut off mid-session or lose its unplug report.
        # Only when every connector is Inoperative: state F is EVSE-wide and would block the others.
        want_f = self._unavailable >= set(self.connector_ids) and self._phase is Phase.IDLE
        if want_f != self._sent_unavailable:
            await self._command(self.controller.set_unavailable(want_f))
            self._sent_unavailable = want_f
        self._publish_status()

    async def _send_offer(self, offer: float | None) -> None:
        if self._sent_offer != (offer,) and await self._command(self.controller.offer_current(offer)):
            self._sent_offer = (offer,)

    async def _send_power(self, allowed: bool) -> None:
        if self._sent_power != allowed and await self._command(self.controller.allow_power(allowed)):
            self._sent_power = allowed

    async def _move_lock(self, locked: bool) -> bool:
        self._sent_lock = locked  # do not retry a failed move on every input; the fault says it failed
        try:
            await self.controller.set_lock(locked)
        except ControllerError as exc:
            log.warning("EVSE %d: lock move failed: %s", self.id, exc)
            self._set_fault(FaultCode.CONNECTOR_LOCK_FAILURE, True, exc.detail)
            return False
        return True

    async def _command(self, command: Awaitable[None]) -> bool:
        try:
            await command
        except ControllerError as exc:
            log.warning("EVSE %d: board command failed: %s", self.id, exc)
            return False
        return True

    def _publish_status(self) -> None:
        fault = self._most_relevant_fault()
        now = trio.current_time()
        settling = False
        for cid in self.connector_ids:
            current = (self.status(cid), fault, self.ev_away(cid))
            published = self._published.get(cid)
            if published == current:
                continue
            entering_suspended_ev = current[0] is ConnectorStatus.SUSPENDED_EV and (
                published is None or published[0] is not ConnectorStatus.SUSPENDED_EV
            )
            if entering_suspended_ev and self.status_settle_s > 0:
                if self._settle_deadline is None:
                    self._settle_deadline = now + self.status_settle_s
                    self._wake()
                if now < self._settle_deadline:
                    settling = True
                    continue
            self._published[cid] = current
            self._events.publish(StatusChanged(self.id, cid, *current))
        if not settling:
            self._settle_deadline = None

    def _most_relevant_fault(self) -> FaultCode | None:
        ordered = [code for code in FaultCode if code in self._faults]
        blocking = [code for code in ordered if code not in NON_BLOCKING_FAULTS]
        chosen = blocking or ordered
        return chosen[0] if chosen else None


@final
class Evses:
    """The station's EVSEs and the one event channel they all publish on."""

    def __init__(
        self, events: Broadcaster[EvseEvent] | None = None, *, same_token: TokenMatcher | None = None
    ) -> None:
        self.events: Broadcaster[EvseEvent] = events if events is not None else Broadcaster()
        self._by_id: dict[int, Evse] = {}
        self._same_token = same_token or token_matcher(OcppVersion.V201)

    def add(
        self,
        evse_id: int,
        controller: ChargeController,
        meter: PowerMeter | None = None,
        **options: float | bool | tuple[int, ...],
    ) -> Evse:
        """Create and register an EVSE; `options` are the keyword options of `Evse`."""
        if evse_id in self._by_id:
            raise ValueError(f"EVSE {evse_id} already exists")
        evse = Evse(
            evse_id,
            controller,
            meter,
            self.events,
            same_token=self._same_token,
            **options,  # type: ignore[arg-type]
        )
        self._by_id[evse_id] = evse
        return evse

    def __getitem__(self, evse_id: int) -> Evse:
        return self._by_id[evse_id]

    def __iter__(self) -> Iterator[Evse]:
        return iter(sorted(self._by_id.values(), key=lambda e: e.id))

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, evse_id: object) -> bool:
        return evse_id in self._by_id

    @contextmanager
    def subscribe(
        self, max_buffer: int = DEFAULT_SUBSCRIBER_BUFFER
    ) -> Iterator[trio.MemoryReceiveChannel[EvseEvent | Dropped]]:
        """Every EvseEvent published while the block is open; a lagging reader gets `Dropped(n)`."""
        with self.events.subscribe(max_buffer) as receive:
            yield receive

    async def present_token(
        self, id_token: str, token_type: str = "ISO14443", evse_id: int | None = None
    ) -> int | None:
        """Route a token to an EVSE: the given one, else the one whose session it owns, else one
        waiting for authorization, else the first idle one. Returns the EVSE id, or None if unusable."""
        target = self._route_token(id_token, token_type, evse_id)
        if target is None:
            return None
        return target.id if await target.present_token(id_token, token_type) else None

    def _route_token(self, id_token: str, token_type: str, evse_id: int | None) -> Evse | None:
        if evse_id is not None:
            return self._by_id.get(evse_id)
        by_preference: Iterable[Callable[[Evse], bool]] = (
            lambda e: e.owns_session(id_token, token_type),
            lambda e: e.holds_cable_of(id_token, token_type),
            lambda e: e.phase is Phase.PLUGGED,
            lambda e: e.phase is Phase.IDLE and e.available() and e.status() is ConnectorStatus.AVAILABLE,
            # Last: a reserved EVSE, where only its reservation's token is admitted (the session decides).
            lambda e: e.phase is Phase.IDLE and e.status() is ConnectorStatus.RESERVED,
        )
        for wanted in by_preference:
            for evse in self:
                if wanted(evse):
                    return evse
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Run every EVSE; started once they all are."""
        async with trio.open_nursery() as nursery:
            for evse in self:
                await nursery.start(evse.run)
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

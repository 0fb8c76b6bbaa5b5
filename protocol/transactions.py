"""Transaction rules shared by both versions: where a transaction starts and stops (TxStartPoint /
TxStopPoint, 2.0.1 E01-E03), the trigger and stopped reasons of its events, and the billing rule's
meter register check. Pure: conditions in, decisions out; never reads a clock.

The EVSE's stop reasons are the 1.6 Reason values, which 2.0.1 ReasonEnumType repeats.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import field, replace
from typing import Final

from evstation.records import record

__all__ = [
    "INTERRUPTED_TRIGGER",
    "REASON_POWER_LOSS",
    "REASON_REBOOT",
    "V16_START_POINTS",
    "Conditions",
    "TxAction",
    "TxPoint",
    "TxPoints",
    "TxStep",
    "ended_trigger",
    "monotonic_energy",
    "parse_points",
    "step_points",
    "stop_reason_for",
    "v16_reason",
    "v16_stop_points",
]

REASON_POWER_LOSS: Final = "PowerLoss"
REASON_REBOOT: Final = "Reboot"
REASON_EV_DISCONNECTED: Final = "EVDisconnected"
REASON_DEAUTHORIZED: Final = "DeAuthorized"
REASON_STOPPED_BY_EV: Final = "StoppedByEV"

# A transaction ended at start-up because the station went down while it ran: no user, CSMS or EV
# stopped it, so neither StopAuthorized nor ResetCommand (a CSMS Reset) nor EVDeparted fits.
INTERRUPTED_TRIGGER: Final = "AbnormalCondition"

# Stop reason (1.6 Reason == 2.0.1 ReasonEnumType) -> TriggerReasonEnumType of the Ended event (E06).
# EVDisconnected is the cable leaving the EV: EVCommunicationLost (the pilot went to A). EVDeparted is
# the parking-bay detector's trigger, which this station does not have.
_END_TRIGGER: Final[Mapping[str, str]] = {
    "Local": "StopAuthorized",
    "Remote": "RemoteStop",
    "EVDisconnected": "EVCommunicationLost",
    "PowerLoss": "AbnormalCondition",
    "Reboot": "ResetCommand",
    # B12.FR.04 / B12.FR.08: a transaction ended by a CSMS Reset (1.6 names Hard / Soft).
    "ImmediateReset": "ResetCommand",
    "HardReset": "ResetCommand",
    "SoftReset": "ResetCommand",
    "DeAuthorized": "Deauthorized",
    "StoppedByEV": "ChargingStateChanged",
    "Timeout": "EVConnectTimeout",
    "UnlockCommand": "UnlockCommand",
    "EmergencyStop": "AbnormalCondition",
    "Other": "AbnormalCondition",
}

# 1.6 Reason has no StoppedByEV / Timeout: the 1.6 StopTransaction says Other for them.
V16_REASONS: Final = frozenset(
    {
        "EmergencyStop",
        "EVDisconnected",
        "HardReset",
        "Local",
        "Other",
        "PowerLoss",
        "Reboot",
        "Remote",
        "SoftReset",
        "UnlockCommand",
        "DeAuthorized",
    }
)


def ended_trigger(reason: str) -> str:
    """The triggerReason of the Ended event for a transaction stopped with `reason`."""
    return _END_TRIGGER.get(reason, "AbnormalCondition")


def v16_reason(reason: str) -> str:
    """The 1.6 StopTransaction reason for a stop reason of either version."""
    if reason in V16_REASONS:
        return reason
    if reason == "ImmediateReset":
        return "HardReset"
    return "Other"


def monotonic_energy(previous_wh: float | None, reading_wh: float) -> float:
    """Billing rule: the register reported inside a transaction never goes backwards. A lower reading
    (a meter swap, a glitch) is reported as the highest value already reported."""
    return reading_wh if previous_wh is None or reading_wh >= previous_wh else previous_wh


# --------------------------------------------------------------------------------------------------
# TxStartPoint / TxStopPoint


class TxPoint(enum.Enum):
    """TxStartPointValues (2.0.1 part 2, TxCtrlr). No ParkingBayOccupancy: this station has no bay
    detector; DataSigned only for stations whose meter signs."""

    EV_CONNECTED = "EVConnected"
    AUTHORIZED = "Authorized"
    POWER_PATH_CLOSED = "PowerPathClosed"
    ENERGY_TRANSFER = "EnergyTransfer"
    DATA_SIGNED = "DataSigned"


# 1.6 has no configurable points: StartTransaction needs the idTag and the plug (1.6 section 3.6).
V16_START_POINTS: Final = frozenset({TxPoint.POWER_PATH_CLOSED})
V16_STOP_POINTS: Final = frozenset({TxPoint.EV_CONNECTED, TxPoint.AUTHORIZED})


def v16_stop_points(stop_on_ev_side_disconnect: bool) -> frozenset[TxPoint]:
    """1.6 StopTransactionOnEVSideDisconnect: true, losing the EV stops the transaction; false, only
    the end of the authorization does (the EV may leave and come back inside the transaction)."""
    return V16_STOP_POINTS if stop_on_ev_side_disconnect else frozenset({TxPoint.AUTHORIZED})


def parse_points(text: str, *, allow_data_signed: bool = False) -> frozenset[TxPoint]:
    """A TxStartPoint / TxStopPoint value as points; members this station cannot detect are dropped."""
    allowed = {
        point.value: point for point in TxPoint if allow_data_signed or point is not TxPoint.DATA_SIGNED
    }
    return frozenset(allowed[item] for item in (p.strip() for p in text.split(",")) if item in allowed)


@record
class Conditions:
    """What the EVSE reports now. PowerPathClosed: EV connected and authorized, so the EVSE offers
    power (2.0.1 E01: "all preconditions for charging met"); EnergyTransfer: the contactor closed with
    the EV drawing; DataSigned: the meter gave a signed start reading."""

    ev_connected: bool = False
    authorized: bool = False
    energy_transfer: bool = False
    data_signed: bool = False

    def holds(self, point: TxPoint) -> bool:
        if point is TxPoint.EV_CONNECTED:
            return self.ev_connected
        if point is TxPoint.AUTHORIZED:
            return self.authorized
        if point is TxPoint.POWER_PATH_CLOSED:
            return self.ev_connected and self.authorized
        if point is TxPoint.ENERGY_TRANSFER:
            return self.energy_transfer
        return self.data_signed


@record
class TxPoints:
    """The configured points (read at decision time from TxCtrlr)."""

    start: frozenset[TxPoint]
    stop: frozenset[TxPoint]


class TxAction(enum.Enum):
    NONE = "None"
    START = "Start"
    STOP = "Stop"


@record
class TxStep:
    """Per-EVSE state of the point machine: the last conditions, whether a transaction is open, and
    which stop points have held during it (a stop point that never held cannot be lost)."""

    conditions: Conditions = Conditions()
    open: bool = False
    held: frozenset[TxPoint] = field(default_factory=frozenset)


@record
class TxDecision:
    step: TxStep
    action: TxAction
    point: TxPoint | None = None  # the start point that rose, or the stop point that was lost


def _rising(before: Conditions, after: Conditions, points: Iterable[TxPoint]) -> TxPoint | None:
    for point in TxPoint:  # enumeration order: deterministic when two rise together
        if point in points and after.holds(point) and not before.holds(point):
            return point
    return None


def step_points(state: TxStep, after: Conditions, points: TxPoints) -> TxDecision:
    """Apply new conditions. A transaction starts when a start point becomes true (E01-E03: the first
    configured event that occurs); it stops when a stop point that held during it ceases to hold, or
    when nothing of the session is left (no EV and no authorization: the session is over whatever
    the configuration). Edge-triggered: an EV left plugged after its transaction ended does not start
    another until a start point rises again.
    """
    before = state.conditions
    if not state.open:
        point = _rising(before, after, points.start)
        if point is None or not (after.ev_connected or after.authorized):
            return TxDecision(replace(state, conditions=after), TxAction.NONE)
        held = frozenset(p for p in points.stop if after.holds(p))
        return TxDecision(TxStep(after, True, held), TxAction.START, point)
    held = state.held | frozenset(p for p in points.stop if after.holds(p))
    for lost in TxPoint:
        if lost in held and not after.holds(lost):
            return TxDecision(TxStep(after, False, frozenset()), TxAction.STOP, lost)
    if not after.ev_connected and not after.authorized:
        lost = TxPoint.EV_CONNECTED if before.ev_connected else TxPoint.AUTHORIZED
        return TxDecision(TxStep(after, False, frozenset()), TxAction.STOP, lost)
    return TxDecision(TxStep(after, True, held), TxAction.NONE)


def stop_reason_for(point: TxPoint, after: Conditions, session_reason: str | None) -> str:
    """The stoppedReason when `point` was lost. `session_reason` is the EVSE's reason when the change
    came from its session ending (Local, Remote, DeAuthorized, a Reset ...)."""
    if not after.ev_connected and point is not TxPoint.AUTHORIZED:
        return REASON_EV_DISCONNECTED
    if session_reason is not None:
        return session_reason
    if point is TxPoint.ENERGY_TRANSFER:
        return REASON_STOPPED_BY_EV
    if point is TxPoint.AUTHORIZED:
        return REASON_DEAUTHORIZED
    return "Other"

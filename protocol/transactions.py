"""Transaction rules shared by both versions: stop reasons and the 2.0.1 trigger of an Ended event.

The EVSE's stop reasons are the 1.6 Reason values, which 2.0.1 ReasonEnumType repeats. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "INTERRUPTED_TRIGGER",
    "REASON_POWER_LOSS",
    "REASON_REBOOT",
    "ended_trigger",
]

REASON_POWER_LOSS: Final = "PowerLoss"
REASON_REBOOT: Final = "Reboot"

# A transaction ended at start-up because the station went down while it ran: no user, CSMS or EV
# stopped it, so neither StopAuthorized nor ResetCommand (a CSMS Reset) nor EVDeparted fits.
INTERRUPTED_TRIGGER: Final = "AbnormalCondition"

# Stop reason (1.6 Reason == 2.0.1 ReasonEnumType) -> TriggerReasonEnumType of the Ended event (E06).
_END_TRIGGER: Final[Mapping[str, str]] = {
    "Local": "StopAuthorized",
    "Remote": "RemoteStop",
    "EVDisconnected": "EVDeparted",
    "PowerLoss": "AbnormalCondition",
    "Reboot": "ResetCommand",
    # B12.FR.04 / B12.FR.08: a transaction ended by a CSMS Reset (1.6 names Hard / Soft).
    "ImmediateReset": "ResetCommand",
    "HardReset": "ResetCommand",
    "SoftReset": "ResetCommand",
    "DeAuthorized": "Deauthorized",
    "EmergencyStop": "AbnormalCondition",
    "Other": "AbnormalCondition",
}


def ended_trigger(reason: str) -> str:
    """The triggerReason of the Ended event for a transaction stopped with `reason`."""
    return _END_TRIGGER.get(reason, "AbnormalCondition")

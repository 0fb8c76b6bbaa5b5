"""Security events (2.0.1 part 2 appendix "Security Events", use case A04; 1.6 security whitepaper
section "Security events"): their names in each version, which are critical, and how a pending event
is kept. Pure: no I/O, no clock.

Both lists have the same events; 1.6 names the CSMS "Central System" and the station "Charge Point" in
three of them. Both say the same events are critical. This station pushes every event it detects to
the CSMS (the spec requires it for the critical ones and allows it for the rest), critical or not;
the difference is what an overfull queue gives up first (`trim`).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Sequence
from typing import Final

from evstation.protocol.versions import OcppVersion
from evstation.records import record

__all__ = [
    "MAX_PENDING",
    "TECH_INFO_MAX",
    "PendingEvent",
    "SecurityEvent",
    "decode_pending",
    "encode_pending",
    "event_type",
    "is_critical",
    "trim",
]


class SecurityEvent(enum.Enum):
    """The events this station can detect; the value is the 2.0.1 name."""

    STARTUP_OF_THE_DEVICE = "StartupOfTheDevice"
    RESET_OR_REBOOT = "ResetOrReboot"
    SETTING_SYSTEM_TIME = "SettingSystemTime"
    RECONFIGURATION_OF_SECURITY_PARAMETERS = "ReconfigurationOfSecurityParameters"
    INVALID_CSMS_CERTIFICATE = "InvalidCsmsCertificate"
    FAILED_TO_AUTHENTICATE_AT_CSMS = "FailedToAuthenticateAtCsms"
    INVALID_TLS_VERSION = "InvalidTLSVersion"
    INVALID_TLS_CIPHER_SUITE = "InvalidTLSCipherSuite"


# The appendix / whitepaper mark these critical (SHALL be pushed to the CSMS); the others of ours are not.
_CRITICAL: Final = frozenset(
    {
        SecurityEvent.STARTUP_OF_THE_DEVICE,
        SecurityEvent.RESET_OR_REBOOT,
        SecurityEvent.SETTING_SYSTEM_TIME,
    }
)

# 1.6 whitepaper names where they differ from 2.0.1's.
_V16_NAMES: Final = {
    SecurityEvent.INVALID_CSMS_CERTIFICATE: "InvalidCentralSystemCertificate",
    SecurityEvent.FAILED_TO_AUTHENTICATE_AT_CSMS: "FailedToAuthenticateAtCentralSystem",
}

# SecurityEventNotification techInfo maxLength (both versions).
TECH_INFO_MAX: Final = 255
# Pending events kept at most; past it the oldest non-critical one goes first (`trim`).
MAX_PENDING: Final = 100


def is_critical(event: SecurityEvent) -> bool:
    return event in _CRITICAL


def event_type(version: OcppVersion, event: SecurityEvent) -> str:
    """The `type` field of SecurityEventNotification for `event` in `version`."""
    if version is OcppVersion.V16:
        return _V16_NAMES.get(event, event.value)
    return event.value


@record
class PendingEvent:
    """An event detected and not yet acknowledged by the CSMS; `timestamp` is when it happened (RFC 3339)."""

    type: str
    timestamp: str
    tech_info: str | None
    critical: bool

    def payload(self) -> dict[str, object]:
        payload: dict[str, object] = {"type": self.type, "timestamp": self.timestamp}
        if self.tech_info:
            payload["techInfo"] = self.tech_info[:TECH_INFO_MAX]
        return payload


def trim(
    pending: Sequence[PendingEvent], limit: int = MAX_PENDING
) -> tuple[list[PendingEvent], list[PendingEvent]]:
    """(kept, dropped): at most `limit` events, giving up the oldest non-critical ones first, then the
    oldest critical ones. Order is kept."""
    kept = list(pending)
    dropped: list[PendingEvent] = []
    while len(kept) > limit:
        index = next((i for i, event in enumerate(kept) if not event.critical), 0)
        dropped.append(kept.pop(index))
    return kept, dropped


def encode_pending(pending: Sequence[PendingEvent]) -> str:
    return json.dumps(
        [
            {"type": e.type, "timestamp": e.timestamp, "techInfo": e.tech_info, "critical": e.critical}
            for e in pending
        ],
        separators=(",", ":"),
    )


def decode_pending(text: str | None) -> list[PendingEvent]:
    """The stored queue; unreadable entries (a damaged value) are skipped, never a crash."""
    if not text:
        return []
    try:
        items = json.loads(text)
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    pending: list[PendingEvent] = []
    for item in items:
        if not isinstance(item, dict):
            continue
        kind, timestamp, info = item.get("type"), item.get("timestamp"), item.get("techInfo")
        if not isinstance(kind, str) or not isinstance(timestamp, str):
            continue
        pending.append(
            PendingEvent(
                kind, timestamp, info if isinstance(info, str) else None, item.get("critical") is True
            )
        )
    return pending

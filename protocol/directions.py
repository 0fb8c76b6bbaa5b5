"""Which side starts each action: the station's own messages and the CSMS's, per version (data).

DataTransfer goes both ways. The CSMS-initiated set is what a station may be asked to serve: an action
in it that no block serves is answered NotSupported; an action the version does not define at all is
NotImplemented (the RPC layer answers that before any handler is looked up).
"""

from __future__ import annotations

from typing import Final

from evstation.protocol.messages import actions
from evstation.protocol.versions import OcppVersion

__all__ = ["csms_initiated", "station_initiated"]

_STATION_V16: Final = frozenset(
    {
        "Authorize",
        "BootNotification",
        "DataTransfer",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "Heartbeat",
        "LogStatusNotification",
        "MeterValues",
        "SecurityEventNotification",
        "SignCertificate",
        "SignedFirmwareStatusNotification",
        "StartTransaction",
        "StatusNotification",
        "StopTransaction",
    }
)
_STATION_V201: Final = frozenset(
    {
        "Authorize",
        "BootNotification",
        "ClearedChargingLimit",
        "DataTransfer",
        "FirmwareStatusNotification",
        "Get15118EVCertificate",
        "GetCertificateStatus",
        "Heartbeat",
        "LogStatusNotification",
        "MeterValues",
        "NotifyChargingLimit",
        "NotifyCustomerInformation",
        "NotifyDisplayMessages",
        "NotifyEVChargingNeeds",
        "NotifyEVChargingSchedule",
        "NotifyEvent",
        "NotifyMonitoringReport",
        "NotifyReport",
        "PublishFirmwareStatusNotification",
        "ReportChargingProfiles",
        "ReservationStatusUpdate",
        "SecurityEventNotification",
        "SignCertificate",
        "StatusNotification",
        "TransactionEvent",
    }
)
_BOTH_WAYS: Final = frozenset({"DataTransfer"})


def station_initiated(version: OcppVersion) -> frozenset[str]:
    """The actions the station sends as CALLs."""
    return _STATION_V16 if version is OcppVersion.V16 else _STATION_V201


def csms_initiated(version: OcppVersion) -> frozenset[str]:
    """The actions the CSMS sends as CALLs, i.e. those a station serves."""
    return (actions(version) - station_initiated(version)) | _BOTH_WAYS

"""The station's functional blocks, built once with the services each asks for.

A new block is added here (constructed with its services) and in `StationBlocks.serving`; its handlers
are found by the registry. Blocks are built in dependency order: authorization and reservation before
transactions, transactions before remote control.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.authorization import Authorization
from evstation.runtime.blocks.availability import Availability
from evstation.runtime.blocks.data_transfer import DataTransfer
from evstation.runtime.blocks.fault_events import FaultEvents
from evstation.runtime.blocks.provisioning import Provisioning
from evstation.runtime.blocks.remote_control import RemoteControl
from evstation.runtime.blocks.reservation import Reservations
from evstation.runtime.blocks.reset import Reset
from evstation.runtime.blocks.security import Security
from evstation.runtime.blocks.transactions import Transactions, TxServices
from evstation.runtime.blocks.trigger import Trigger
from evstation.runtime.clock import MeterTimestamps, WallClock
from evstation.runtime.config import StationConfig
from evstation.runtime.device_model import DeviceModel, layout_from_config
from evstation.runtime.evse import Evses
from evstation.runtime.lifecycle import StopRequests
from evstation.runtime.outbox import Outbox
from evstation.runtime.storage import Storage
from evstation.runtime.uplink import Uplink

__all__ = ["NOT_YET_SERVED", "StationBlocks", "build_blocks"]

# CSMS-initiated actions no block serves yet, each with the block module that will own it. They are
# answered NotSupported (protocol.directions); a test keeps this table, the registry and the versions'
# action lists in step, so every action is either served or listed here.
NOT_YET_SERVED: Final[Mapping[OcppVersion, Mapping[str, str]]] = {
    OcppVersion.V16: {
        "CertificateSigned": "security",
        "ClearChargingProfile": "smart_charging",
        "DeleteCertificate": "security",
        "GetCompositeSchedule": "smart_charging",
        "GetDiagnostics": "diagnostics",
        "GetInstalledCertificateIds": "security",
        "GetLog": "diagnostics",
        "InstallCertificate": "security",
        "SetChargingProfile": "smart_charging",
        "SignedUpdateFirmware": "firmware",
        "UpdateFirmware": "firmware",
    },
    OcppVersion.V201: {
        "CertificateSigned": "security",
        "ClearChargingProfile": "smart_charging",
        "ClearDisplayMessage": "display",
        "ClearVariableMonitoring": "diagnostics",
        "CostUpdated": "tariff",
        "CustomerInformation": "diagnostics",
        "DeleteCertificate": "security",
        "GetChargingProfiles": "smart_charging",
        "GetCompositeSchedule": "smart_charging",
        "GetDisplayMessages": "display",
        "GetInstalledCertificateIds": "security",
        "GetLog": "diagnostics",
        "GetMonitoringReport": "diagnostics",
        "InstallCertificate": "security",
        "PublishFirmware": "firmware",
        "SetChargingProfile": "smart_charging",
        "SetDisplayMessage": "display",
        "SetMonitoringBase": "diagnostics",
        "SetMonitoringLevel": "diagnostics",
        "SetVariableMonitoring": "diagnostics",
        "UnpublishFirmware": "firmware",
        "UpdateFirmware": "firmware",
    },
}


@dataclass(eq=False)
class StationBlocks:
    """Every functional block of one station, built with its services by `build_blocks`."""

    provisioning: Provisioning
    availability: Availability
    authorization: Authorization
    transactions: Transactions
    reservation: Reservations
    remote_control: RemoteControl
    data_transfer: DataTransfer
    trigger: Trigger
    reset: Reset
    security: Security
    # 2.0.1 only (NotifyEvent); a 1.6 station reports faults in StatusNotification.
    fault_events: FaultEvents | None

    def serving(self) -> tuple[object, ...]:
        """Every block that may answer CSMS calls, for the registry."""
        return (
            self.provisioning,
            self.availability,
            self.authorization,
            self.transactions,
            self.reservation,
            self.remote_control,
            self.data_transfer,
            self.trigger,
            self.reset,
        )


def build_blocks(
    *,
    config: StationConfig,
    storage: Storage,
    outbox: Outbox,
    evses: Evses,
    clock: WallClock,
    uplink: Uplink,
    device_model: DeviceModel,
    stop: StopRequests,
) -> StationBlocks:
    version: OcppVersion = config.station.ocpp_version
    layout = layout_from_config(config)
    authorization = Authorization(
        version=version,
        uplink=uplink,
        storage=storage,
        device_model=device_model,
        clock=clock,
        free_vend_id_tag=config.authorization.free_vend_id_tag,
    )
    reservation = Reservations(
        version=version,
        evses=evses,
        layout=layout,
        storage=storage,
        clock=clock,
        uplink=uplink,
        device_model=device_model,
    )
    transactions = Transactions(
        version=version,
        services=TxServices(storage, outbox, evses, clock, uplink, layout),
        authorization=authorization,
        device_model=device_model,
        reservations=reservation,
        meter_timestamps=MeterTimestamps(
            clock,
            start=config.test_aids.fake_meter_timestamps_start,
            offset=timedelta(seconds=config.test_aids.fake_meter_timestamps_offset_s or 0),
        ),
    )
    provisioning = Provisioning(
        version=version,
        identity=config.station,
        storage=storage,
        clock=clock,
        device_model=device_model,
        uplink=uplink,
    )
    availability = Availability(
        version=version,
        evses=evses,
        layout=layout,
        clock=clock,
        storage=storage,
        transaction_ids=transactions.ids,
    )
    security = Security(
        version=version, storage=storage, clock=clock, uplink=uplink, device_model=device_model
    )
    fault_events = (
        FaultEvents(
            version=version,
            storage=storage,
            clock=clock,
            uplink=uplink,
            device_model=device_model,
            evses=evses,
        )
        if version is OcppVersion.V201
        else None
    )
    return StationBlocks(
        provisioning=provisioning,
        availability=availability,
        authorization=authorization,
        transactions=transactions,
        reservation=reservation,
        remote_control=RemoteControl(
            evses=evses,
            layout=layout,
            transactions=transactions,
            reservations=reservation,
            device_model=device_model,
        ),
        data_transfer=DataTransfer(version=version, uplink=uplink),
        trigger=Trigger(
            version=version,
            uplink=uplink,
            evses=evses,
            layout=layout,
            clock=clock,
            availability=availability,
            provisioning=provisioning,
            transactions=transactions,
        ),
        reset=Reset(
            version=version,
            evses=evses,
            transactions=transactions,
            storage=storage,
            outbox=outbox,
            uplink=uplink,
            stop=stop,
            flush_timeout_s=float(config.csms.message_timeout_s),
            security=security,
            fault_events=fault_events,
        ),
        security=security,
        fault_events=fault_events,
    )

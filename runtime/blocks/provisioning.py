"""Provisioning (2.0.1 B; 1.6 Core BootNotification): what the station says about itself at boot and
the boot reason it persisted before a restart.

The session layer runs the boot sequence (when to send); this block owns the message content.
"""

from __future__ import annotations

from typing import Final

from evstation.protocol.versions import OcppVersion
from evstation.runtime.clock import WallClock
from evstation.runtime.config import StationIdentity
from evstation.runtime.storage import BootState as StoredBootState
from evstation.runtime.storage import Storage

__all__ = ["POWER_UP", "Provisioning"]

# 2.0.1 BootReasonEnumType for a first start; a Reset stores e.g. "RemoteReset" before it restarts
# the station (storage boot_state.next_boot_reason).
POWER_UP: Final = "PowerUp"


class Provisioning:
    def __init__(
        self, *, version: OcppVersion, identity: StationIdentity, storage: Storage, clock: WallClock
    ) -> None:
        self.version = version
        self._identity = identity
        self._storage = storage
        self._clock = clock

    async def boot_request(self) -> dict[str, object]:
        """The BootNotification payload, with the persisted boot reason (2.0.1 only; 1.6 has none)."""
        identity = self._identity
        if self.version is OcppVersion.V16:
            payload: dict[str, object] = {
                "chargePointVendor": identity.vendor,
                "chargePointModel": identity.model,
            }
            if identity.serial_number is not None:
                payload["chargePointSerialNumber"] = identity.serial_number
            if identity.firmware_version is not None:
                payload["firmwareVersion"] = identity.firmware_version
            return payload
        station: dict[str, object] = {"model": identity.model, "vendorName": identity.vendor}
        if identity.serial_number is not None:
            station["serialNumber"] = identity.serial_number
        if identity.firmware_version is not None:
            station["firmwareVersion"] = identity.firmware_version
        stored = await self._storage.boot_state()
        return {"chargingStation": station, "reason": stored.next_boot_reason or POWER_UP}

    async def accepted(self) -> None:
        """Persist the Accepted registration; the next boot reason is PowerUp unless a Reset says else."""
        await self._storage.save_boot_state(StoredBootState("Accepted", self._clock.now(), None))

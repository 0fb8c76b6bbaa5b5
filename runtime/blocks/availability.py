"""Availability (2.0.1 G; 1.6 Core StatusNotification / ChangeAvailability): connector statuses.

Builds the StatusNotification payloads of both versions from the EVSEs' state; the session layer
decides when they are sent. Status rules (Occupied folding, connector 0) live in protocol.availability.
"""

from __future__ import annotations

from evstation.drivers.api import MREC_VENDOR_ID, FaultCode, mrec_code, ocpp16_error_code
from evstation.protocol.availability import v16_charge_point_status, v201_connector_status
from evstation.protocol.layout import StationLayout
from evstation.protocol.versions import OcppVersion
from evstation.runtime.clock import WallClock
from evstation.runtime.evse import Evses, StatusChanged

__all__ = ["Availability"]


def _v16_error_fields(fault: FaultCode | None) -> dict[str, object]:
    if fault is None:
        return {"errorCode": "NoError"}
    fields: dict[str, object] = {"errorCode": ocpp16_error_code(fault), "info": fault.value[:50]}
    code = mrec_code(fault)
    if code is not None:
        # ChargeX MREC: vendorId names MREC, vendorErrorCode carries the CXnnn code.
        fields["vendorId"] = MREC_VENDOR_ID
        fields["vendorErrorCode"] = code
    return fields


def _first_fault(faults: frozenset[FaultCode]) -> FaultCode | None:
    return min(faults, key=lambda f: f.value) if faults else None


class Availability:
    def __init__(
        self, *, version: OcppVersion, evses: Evses, layout: StationLayout, clock: WallClock
    ) -> None:
        self.version = version
        self._evses = evses
        self._layout = layout
        self._clock = clock

    def status_requests(self, event: StatusChanged | None) -> list[dict[str, object]]:
        """StatusNotification payloads: every connector's (1.6: and connector 0's) when `event` is None,
        else the changed connector's."""
        if self.version is OcppVersion.V16:
            return self._v16_status_requests(event)
        return self._v201_status_requests(event)

    def _v16_status_requests(self, event: StatusChanged | None) -> list[dict[str, object]]:
        now = self._clock.iso()
        if event is not None:
            return [
                {
                    "connectorId": self._layout.v16_number(event.evse_id, event.connector_id),
                    "status": event.status.value,
                    "timestamp": now,
                    **_v16_error_fields(event.fault),
                }
            ]
        payloads: list[dict[str, object]] = []
        for evse_id, connector_id in self._layout.connectors():
            evse = self._evses[evse_id]
            payloads.append(
                {
                    "connectorId": self._layout.v16_number(evse_id, connector_id),
                    "status": evse.status(connector_id).value,
                    "timestamp": now,
                    **_v16_error_fields(_first_fault(evse.active_faults())),
                }
            )
        station: dict[str, object] = {
            "connectorId": 0,
            "status": v16_charge_point_status(str(p["status"]) for p in payloads),
            "timestamp": now,
            "errorCode": "NoError",
        }
        return [station, *payloads]

    def _v201_status_requests(self, event: StatusChanged | None) -> list[dict[str, object]]:
        now = self._clock.iso()
        if event is not None:
            pairs = [(event.evse_id, event.connector_id, event.status.value)]
        else:
            pairs = [
                (evse_id, connector_id, self._evses[evse_id].status(connector_id).value)
                for evse_id, connector_id in self._layout.connectors()
            ]
        return [
            {
                "timestamp": now,
                "connectorStatus": v201_connector_status(status),
                "evseId": evse_id,
                "connectorId": connector_id,
            }
            for evse_id, connector_id, status in pairs
        ]

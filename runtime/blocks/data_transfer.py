"""DataTransfer (2.0.1 P01 / P02; 1.6 Core sections 4.3 and 5.6), both directions, for both versions.

Incoming: a registry of vendor handlers by (vendorId, messageId); routing rules in
protocol.data_transfer. Outgoing: `send`, answered with the CSMS's status and data. The station's own
vendor (org.evstation, messageId Ping: data echoed) is registered at construction.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from evstation.protocol.boot import V16_DEFAULT_GATES, V201_DEFAULT_GATES
from evstation.protocol.data_transfer import (
    EVSTATION_VENDOR_ID,
    PING_MESSAGE_ID,
    DataTransferStatus,
    VendorAnswer,
    VendorHandler,
    ping,
    resolve,
)
from evstation.protocol.messages import VersionModels, enum_text
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.registry import handles
from evstation.runtime.link import LinkDown
from evstation.runtime.uplink import Uplink

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["DataTransfer", "DuplicateVendorMessage"]

V16, V201 = OcppVersion.V16, OcppVersion.V201


class DuplicateVendorMessage(Exception):
    """Two handlers registered for one (vendorId, messageId)."""


class DataTransfer:
    def __init__(self, *, version: OcppVersion, uplink: Uplink) -> None:
        self.version = version
        self._uplink = uplink
        self._vendors: dict[str, dict[str | None, VendorHandler]] = {}
        self.register(EVSTATION_VENDOR_ID, PING_MESSAGE_ID, ping)

    def register(self, vendor_id: str, message_id: str | None, handler: VendorHandler) -> None:
        """Serve incoming DataTransfer (vendor_id, message_id) with `handler`."""
        messages = self._vendors.setdefault(vendor_id, {})
        if message_id in messages:
            raise DuplicateVendorMessage(f"{vendor_id} / {message_id} already has a handler")
        messages[message_id] = handler

    def answer(self, vendor_id: str, message_id: str | None, data: object) -> VendorAnswer:
        found = resolve(self._vendors, vendor_id, message_id)
        if isinstance(found, DataTransferStatus):
            return VendorAnswer(found)
        return found(message_id, data)

    async def send(self, vendor_id: str, message_id: str | None = None, data: object = None) -> VendorAnswer:
        """DataTransfer to the CSMS (only once it accepted the station; B02.FR.02 / 1.6 4.2); returns its
        status and data. Raises LinkDown when offline, and whatever `CallManager.call` raises."""
        calls = self._uplink.calls
        if calls is None:
            raise LinkDown("DataTransfer not sent: not connected and accepted")
        payload: dict[str, object] = {"vendorId": vendor_id}
        if message_id is not None:
            payload["messageId"] = message_id
        if data is not None:
            payload["data"] = data if self.version is V201 or isinstance(data, str) else json.dumps(data)
        response = await calls.call("DataTransfer", payload)
        expected = v16.DataTransferResponse if self.version is V16 else v201.DataTransferResponse
        assert isinstance(response, expected), type(response)
        return VendorAnswer(DataTransferStatus(enum_text(response.status)), response.data)

    # 1.6 section 4.2: served while Pending (only remote start / stop are refused), unanswered while
    # Rejected.
    @handles(V16, "DataTransfer", gates=V16_DEFAULT_GATES)
    async def data_transfer_v16(self, req: v16.DataTransferRequest) -> v16.DataTransferResponse:
        result = self.answer(req.vendor_id, req.message_id, req.data)
        data = result.data
        if data is not None and not isinstance(data, str):
            data = json.dumps(data)  # 1.6 data is a string: structured answers travel as JSON text
        return v16.DataTransferResponse(status=v16.DataTransferStatusEnum(result.status.value), data=data)

    # 2.0.1 B02.FR.01 names only the configuration use cases (B05-B08) for a Pending station, and P02
    # says nothing of the boot state: SecurityError while Pending or Rejected (docs/session.md).
    @handles(V201, "DataTransfer", gates=V201_DEFAULT_GATES)
    async def data_transfer_v201(self, req: v201.DataTransferRequest) -> v201.DataTransferResponse:
        result = self.answer(req.vendor_id, req.message_id, req.data)
        return v201.DataTransferResponse(
            status=v201.DataTransferStatusEnumType(result.status.value), data=result.data
        )

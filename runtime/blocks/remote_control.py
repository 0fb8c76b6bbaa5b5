"""Remote control (2.0.1 F01-F04; 1.6 Core RemoteStart/RemoteStopTransaction).

The handlers only ask an EVSE to authorize or stop; the transaction messages follow from the EVSE's
events (the transactions block). They never wait on the CSMS: no Authorize for remote tokens (1.6
AuthorizeRemoteTxRequests and 2.0.1 AuthorizeRemoteStart are false until the device model says else).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evstation.protocol.boot import V16_REMOTE_TX_GATES, V201_REMOTE_TX_GATES
from evstation.protocol.errors import ErrorKind
from evstation.protocol.layout import StationLayout, UnknownConnector
from evstation.protocol.messages import VersionModels, enum_text
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.registry import handles
from evstation.runtime.blocks.transactions import Transactions
from evstation.runtime.calls import HandlerError
from evstation.runtime.evse import ConnectorStatus, Evse, Evses, StopReason

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["RemoteControl"]

V16, V201 = OcppVersion.V16, OcppVersion.V201


class RemoteControl:
    def __init__(self, *, evses: Evses, layout: StationLayout, transactions: Transactions) -> None:
        self._evses = evses
        self._layout = layout
        self._transactions = transactions

    def _idle_evse(self) -> Evse | None:
        for evse in self._evses:
            if not evse.session_active() and evse.status() in (
                ConnectorStatus.AVAILABLE,
                ConnectorStatus.PREPARING,
            ):
                return evse
        return None

    async def _stop(self, transaction_id: str) -> bool:
        evse_id = await self._transactions.evse_of_transaction(transaction_id)
        if evse_id is None:
            return False
        await self._evses[evse_id].stop_session(StopReason.REMOTE)
        return True

    # --- 1.6 ---------------------------------------------------------------------------------------

    @handles(V16, "RemoteStartTransaction", gates=V16_REMOTE_TX_GATES)
    async def remote_start(
        self, req: v16.RemoteStartTransactionRequest
    ) -> v16.RemoteStartTransactionResponse:
        status = v16.RemoteStartTransactionStatusEnum
        if req.connector_id == 0:
            return v16.RemoteStartTransactionResponse(status=status.REJECTED)  # 5.11: not a connector
        if req.connector_id is None:
            evse = self._idle_evse()
        else:
            try:
                evse = self._evses[self._layout.from_v16_number(req.connector_id)[0]]
            except UnknownConnector:
                raise HandlerError(
                    ErrorKind.PROPERTY_CONSTRAINT, f"no connector {req.connector_id}"
                ) from None
        accepted = evse is not None and await evse.authorize_remote(req.id_tag, "Central")
        return v16.RemoteStartTransactionResponse(status=status.ACCEPTED if accepted else status.REJECTED)

    @handles(V16, "RemoteStopTransaction", gates=V16_REMOTE_TX_GATES)
    async def remote_stop(self, req: v16.RemoteStopTransactionRequest) -> v16.RemoteStopTransactionResponse:
        status = v16.RemoteStopTransactionStatusEnum
        stopped = await self._stop(str(req.transaction_id))
        return v16.RemoteStopTransactionResponse(status=status.ACCEPTED if stopped else status.REJECTED)

    # --- 2.0.1 -------------------------------------------------------------------------------------

    @handles(V201, "RequestStartTransaction", gates=V201_REMOTE_TX_GATES)
    async def request_start(
        self, req: v201.RequestStartTransactionRequest
    ) -> v201.RequestStartTransactionResponse:
        status = v201.RequestStartStopStatusEnumType
        if req.evse_id is not None and req.evse_id not in self._evses:
            raise HandlerError(ErrorKind.OCCURRENCE_CONSTRAINT, f"no EVSE {req.evse_id}")
        evse = self._idle_evse() if req.evse_id is None else self._evses[req.evse_id]
        if evse is None:
            return v201.RequestStartTransactionResponse(status=status.REJECTED)
        # F01: the Started event names the RemoteStart trigger and echoes remoteStartId.
        self._transactions.remote_starts[evse.id] = req.remote_start_id
        accepted = await evse.authorize_remote(req.id_token.id_token, enum_text(req.id_token.type))
        if not accepted:
            self._transactions.remote_starts.pop(evse.id, None)
        return v201.RequestStartTransactionResponse(status=status.ACCEPTED if accepted else status.REJECTED)

    @handles(V201, "RequestStopTransaction", gates=V201_REMOTE_TX_GATES)
    async def request_stop(
        self, req: v201.RequestStopTransactionRequest
    ) -> v201.RequestStopTransactionResponse:
        status = v201.RequestStartStopStatusEnumType
        stopped = await self._stop(req.transaction_id)
        return v201.RequestStopTransactionResponse(status=status.ACCEPTED if stopped else status.REJECTED)

"""Remote start/stop handlers: 1.6 RemoteStartTransaction / RemoteStopTransaction and 2.0.1
RequestStartTransaction / RequestStopTransaction (F01, F03).

They only ask the EVSE to authorize or stop; the transaction messages follow from the EVSE's events
(transactions.py). They never wait on the CSMS (no Authorize for remote tokens: 1.6
AuthorizeRemoteTxRequests and 2.0.1 AuthorizeRemoteStart default to false).
"""

from __future__ import annotations

from typing import Any

from evstation.protocol.errors import ErrorKind
from evstation.protocol.messages import OcppModel
from evstation.runtime.calls import Handler, HandlerError
from evstation.runtime.evse import ConnectorStatus, StopReason
from evstation.runtime.session.common import SessionContext, enum_text

__all__ = ["v16_handlers", "v201_handlers"]


def _status(accepted: bool) -> dict[str, object]:
    return {"status": "Accepted" if accepted else "Rejected"}


def _idle_evse(ctx: SessionContext) -> Any | None:
    for evse in ctx.evses:
        if not evse.session_active() and evse.status() in (
            ConnectorStatus.AVAILABLE,
            ConnectorStatus.PREPARING,
        ):
            return evse
    return None


def _evse_for_v16_connector(ctx: SessionContext, number: int) -> Any:
    count = 0
    for evse in ctx.evses:
        for _ in evse.connector_ids:
            count += 1
            if count == number:
                return evse
    raise HandlerError(ErrorKind.PROPERTY_CONSTRAINT, f"no connector {number}")


async def _evse_of_transaction(ctx: SessionContext, transaction_id: str) -> int | None:
    for record in await ctx.storage.transactions():
        if record.state == "Started" and transaction_id in (record.id, str(record.csms_transaction_id)):
            return record.evse_id
    return None


async def _stop_transaction(ctx: SessionContext, request: OcppModel) -> dict[str, object]:
    """1.6 RemoteStopTransaction and 2.0.1 RequestStopTransaction: both name only the transaction."""
    evse_id = await _evse_of_transaction(ctx, str(getattr(request, "transaction_id")))  # noqa: B009
    if evse_id is None:
        return _status(False)
    await ctx.evses[evse_id].stop_session(StopReason.REMOTE)
    return _status(True)


def v16_handlers(ctx: SessionContext) -> dict[str, Handler]:
    async def remote_start(request: OcppModel) -> dict[str, object]:
        connector_id = getattr(request, "connector_id", None)
        if connector_id == 0:
            return _status(False)  # 1.6 5.11: connector 0 cannot start a transaction
        evse = _idle_evse(ctx) if connector_id is None else _evse_for_v16_connector(ctx, connector_id)
        if evse is None:
            return _status(False)
        accepted = await evse.authorize_remote(str(getattr(request, "id_tag")), "Central")  # noqa: B009
        return _status(accepted)

    async def remote_stop(request: OcppModel) -> dict[str, object]:
        return await _stop_transaction(ctx, request)

    return {"RemoteStartTransaction": remote_start, "RemoteStopTransaction": remote_stop}


def v201_handlers(ctx: SessionContext) -> dict[str, Handler]:
    async def request_start(request: OcppModel) -> dict[str, object]:
        evse_id = getattr(request, "evse_id", None)
        if evse_id is not None and evse_id not in {e.id for e in ctx.evses}:
            raise HandlerError(ErrorKind.OCCURRENCE_CONSTRAINT, f"no EVSE {evse_id}")
        evse = _idle_evse(ctx) if evse_id is None else ctx.evses[evse_id]
        if evse is None:
            return _status(False)
        token = getattr(request, "id_token")  # noqa: B009
        # F01.FR.xx: the Started event names the RemoteStart trigger and echoes remoteStartId.
        ctx.remote_starts[evse.id] = int(getattr(request, "remote_start_id"))  # noqa: B009
        accepted = await evse.authorize_remote(str(token.id_token), enum_text(token.type))
        if not accepted:
            ctx.remote_starts.pop(evse.id, None)
        return _status(accepted)

    async def request_stop(request: OcppModel) -> dict[str, object]:
        return await _stop_transaction(ctx, request)

    return {"RequestStartTransaction": request_start, "RequestStopTransaction": request_stop}

"""Remote control (2.0.1 F01-F05; 1.6 Core RemoteStart/RemoteStopTransaction, UnlockConnector).

The handlers ask an EVSE to authorize, stop or unlock; the transaction messages follow from the EVSE's
events (the transactions block). With AuthCtrlr.AuthorizeRemoteStart (1.6 AuthorizeRemoteTxRequests)
true, a remote token is handled as if presented at the EVSE: the transactions block sends Authorize
and applies the reservation rules to the answer; the handler does not wait for it. The rules are in
protocol.remote_control.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from evstation.protocol.boot import V16_REMOTE_TX_GATES, V201_REMOTE_TX_GATES
from evstation.protocol.errors import ErrorKind
from evstation.protocol.layout import StationLayout, UnknownConnector
from evstation.protocol.messages import OcppModel, VersionModels, enum_text
from evstation.protocol.remote_control import (
    UnlockPlan,
    profile_purpose_allowed,
    v16_unlock_plan,
    v201_unlock_plan,
)
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.registry import handles
from evstation.runtime.blocks.reservation import Reservations
from evstation.runtime.blocks.transactions import Transactions
from evstation.runtime.calls import HandlerError
from evstation.runtime.device_model import AUTHORIZE_REMOTE_START, DeviceModel
from evstation.runtime.evse import ConnectorStatus, Evse, Evses, StopReason

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["RemoteControl"]

log = logging.getLogger(__name__)

V16, V201 = OcppVersion.V16, OcppVersion.V201

# 1.6 UnlockConnector with a transaction: how long to wait for its StopTransaction to be queued before
# the unlock (it is queued at once unless SQLite stalls; the unlock must not wait for ever).
STOP_BEFORE_UNLOCK_S: Final = 5.0


class RemoteControl:
    def __init__(
        self,
        *,
        evses: Evses,
        layout: StationLayout,
        transactions: Transactions,
        reservations: Reservations,
        device_model: DeviceModel,
    ) -> None:
        self._evses = evses
        self._layout = layout
        self._transactions = transactions
        self._reservations = reservations
        self._device_model = device_model
        # EVSE id -> the TxProfile a remote start brought. Kept (in memory: a TxProfile lives only as
        # long as its transaction) for smart charging (K), which is not built: until then it does not
        # limit the current. `run` drops it when the transaction ends.
        self.tx_profiles: dict[int, OcppModel] = {}
        # EVSE id -> the EVSE's count of ended transactions when its profile was kept: the next end is
        # that of the profile's transaction (running then, or started by the remote start).
        self._kept_at_end: dict[int, int] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Forget each TxProfile when its transaction ends (start it for the station's lifetime)."""
        ids = self._transactions.ids
        task_status.started()
        while True:
            changed = ids.changed
            for evse_id, kept_at in list(self._kept_at_end.items()):
                if ids.ends(evse_id) > kept_at:
                    del self._kept_at_end[evse_id]
                    self.tx_profiles.pop(evse_id, None)
            await changed.wait()

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

    async def _start(self, evse: Evse, id_token: str, token_type: str, group_id_token: str | None) -> bool:
        """Authorize the EVSE for a remote token; False if it cannot start now or is reserved for
        another token (2.0.1 F01.FR.21-22 as the reference station reads them; 1.6 5.13)."""
        if not self._reservations.admit(evse.id, id_token, group_id_token, token_type=token_type):
            return False
        if self._device_model.get_bool(AUTHORIZE_REMOTE_START):
            # F01.FR.01 / 1.6 AuthorizeRemoteTxRequests: Authorize first, as for a local token.
            return await evse.present_token(id_token, token_type)
        return await evse.authorize_remote(id_token, token_type)

    def _keep_profile(self, evse_id: int, profile: OcppModel | None) -> None:
        if profile is None:
            self.tx_profiles.pop(evse_id, None)
            self._kept_at_end.pop(evse_id, None)
        else:
            self.tx_profiles[evse_id] = profile
            self._kept_at_end[evse_id] = self._transactions.ids.ends(evse_id)

    # --- 1.6 ---------------------------------------------------------------------------------------

    @handles(V16, "RemoteStartTransaction", gates=V16_REMOTE_TX_GATES)
    async def remote_start(
        self, req: v16.RemoteStartTransactionRequest
    ) -> v16.RemoteStartTransactionResponse:
        status = v16.RemoteStartTransactionStatusEnum
        if req.connector_id == 0:
            return v16.RemoteStartTransactionResponse(status=status.REJECTED)  # 5.11: not a connector
        profile = req.charging_profile
        if profile is not None and not profile_purpose_allowed(enum_text(profile.charging_profile_purpose)):
            log.info("RemoteStartTransaction refused: its charging profile is not a TxProfile")
            return v16.RemoteStartTransactionResponse(status=status.REJECTED)
        if req.connector_id is None:
            evse = self._idle_evse()
        else:
            try:
                evse = self._evses[self._layout.from_v16_number(req.connector_id)[0]]
            except UnknownConnector:
                raise HandlerError(
                    ErrorKind.PROPERTY_CONSTRAINT, f"no connector {req.connector_id}"
                ) from None
        accepted = evse is not None and await self._start(evse, req.id_tag, "Central", None)
        if accepted and evse is not None:
            self._keep_profile(evse.id, profile)
        return v16.RemoteStartTransactionResponse(status=status.ACCEPTED if accepted else status.REJECTED)

    @handles(V16, "RemoteStopTransaction", gates=V16_REMOTE_TX_GATES)
    async def remote_stop(self, req: v16.RemoteStopTransactionRequest) -> v16.RemoteStopTransactionResponse:
        status = v16.RemoteStopTransactionStatusEnum
        stopped = await self._stop(str(req.transaction_id))
        return v16.RemoteStopTransactionResponse(status=status.ACCEPTED if stopped else status.REJECTED)

    @handles(V16, "UnlockConnector")
    async def unlock_connector_v16(self, req: v16.UnlockConnectorRequest) -> v16.UnlockConnectorResponse:
        status = v16.UnlockConnectorStatusEnum
        try:
            evse = self._evses[self._layout.from_v16_number(req.connector_id)[0]]
        except (UnknownConnector, KeyError):
            evse = None
        plan = v16_unlock_plan(
            known=evse is not None,
            has_lock=evse is not None and evse.has_lock,
            transaction=evse is not None and self._in_transaction(evse),
        )
        if plan is UnlockPlan.NOT_SUPPORTED or evse is None:
            return v16.UnlockConnectorResponse(status=status.NOT_SUPPORTED)
        if plan is UnlockPlan.STOP_THEN_UNLOCK:
            await evse.stop_session(StopReason.UNLOCK_COMMAND)
            # The StopTransaction is queued (the id forgotten) before the connector is released.
            with trio.move_on_after(STOP_BEFORE_UNLOCK_S):
                await self._transactions.ids.wait_none(frozenset({evse.id}))
        unlocked = await evse.unlock()
        return v16.UnlockConnectorResponse(status=status.UNLOCKED if unlocked else status.UNLOCK_FAILED)

    # --- 2.0.1 -------------------------------------------------------------------------------------

    @handles(V201, "RequestStartTransaction", gates=V201_REMOTE_TX_GATES)
    async def request_start(
        self, req: v201.RequestStartTransactionRequest
    ) -> v201.RequestStartTransactionResponse:
        status = v201.RequestStartStopStatusEnumType
        if req.evse_id is not None and req.evse_id not in self._evses:
            raise HandlerError(ErrorKind.OCCURRENCE_CONSTRAINT, f"no EVSE {req.evse_id}")
        profile = req.charging_profile
        if profile is not None and not profile_purpose_allowed(enum_text(profile.charging_profile_purpose)):
            log.info("RequestStartTransaction refused: its charging profile is not a TxProfile")
            return v201.RequestStartTransactionResponse(status=status.REJECTED)
        evse = self._idle_evse() if req.evse_id is None else self._evses[req.evse_id]
        if evse is None:
            return v201.RequestStartTransactionResponse(status=status.REJECTED)
        # F01: the Started event names the RemoteStart trigger and echoes remoteStartId.
        self._transactions.remote_starts[evse.id] = req.remote_start_id
        # A transaction the EVSE started before this request (TxStartPoint EVConnected, cable first):
        # the answer names it, so the CSMS can tie its remoteStartId to it.
        running = self._transactions.ids.get(evse.id)
        group = None if req.group_id_token is None else req.group_id_token.id_token
        accepted = await self._start(evse, req.id_token.id_token, enum_text(req.id_token.type), group)
        if accepted:
            self._keep_profile(evse.id, profile)
        else:
            self._transactions.remote_starts.pop(evse.id, None)
        return v201.RequestStartTransactionResponse(
            status=status.ACCEPTED if accepted else status.REJECTED,
            transaction_id=running if accepted else None,
        )

    @handles(V201, "RequestStopTransaction", gates=V201_REMOTE_TX_GATES)
    async def request_stop(
        self, req: v201.RequestStopTransactionRequest
    ) -> v201.RequestStopTransactionResponse:
        status = v201.RequestStartStopStatusEnumType
        stopped = await self._stop(req.transaction_id)
        return v201.RequestStopTransactionResponse(status=status.ACCEPTED if stopped else status.REJECTED)

    @handles(V201, "UnlockConnector")
    async def unlock_connector_v201(self, req: v201.UnlockConnectorRequest) -> v201.UnlockConnectorResponse:
        status = v201.UnlockStatusEnumType
        known = self._layout.has_connector(req.evse_id, req.connector_id) and req.evse_id in self._evses
        evse = self._evses[req.evse_id] if known else None
        plan = v201_unlock_plan(
            known=evse is not None,
            has_lock=evse is not None and evse.has_lock,
            transaction=evse is not None and self._in_transaction(evse),
        )
        if plan is UnlockPlan.UNKNOWN_CONNECTOR or evse is None:
            return v201.UnlockConnectorResponse(status=status.UNKNOWN_CONNECTOR)
        if plan is UnlockPlan.REFUSE_TRANSACTION:
            return v201.UnlockConnectorResponse(status=status.ONGOING_AUTHORIZED_TRANSACTION)
        unlocked = await evse.unlock()
        return v201.UnlockConnectorResponse(status=status.UNLOCKED if unlocked else status.UNLOCK_FAILED)

    def _in_transaction(self, evse: Evse) -> bool:
        """An authorized session or a transaction the transactions block still runs on the EVSE."""
        return evse.session_active() or self._transactions.ids.get(evse.id) is not None

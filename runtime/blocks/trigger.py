"""TriggerMessage (2.0.1 F06; 1.6 Remote Trigger 5.17 and the security whitepaper's
ExtendedTriggerMessage): the CSMS asks for a message now.

The answer goes out first (F06.FR.04 / 1.6 5.17: the response, then the message); the triggered
message is sent from a task in the block's own nursery with `Uplink.call_requested`, so it also goes
out while the CSMS keeps the station Pending (B02.FR.09). A triggered 2.0.1 TransactionEvent is the
exception: the transactions block queues it in the outbox behind the transaction's earlier events,
so its seqNo stays contiguous and persisted. A message whose block is not built yet is answered
NotImplemented, never faked. Never sends a message it cannot build truthfully.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from evstation.protocol.boot import V201_TRIGGER_GATES, BootState
from evstation.protocol.layout import StationLayout, UnknownConnector
from evstation.protocol.messages import OcppModel, VersionModels
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.after_answer import AfterAnswer
from evstation.runtime.blocks.availability import Availability
from evstation.runtime.blocks.provisioning import Provisioning
from evstation.runtime.blocks.registry import handles
from evstation.runtime.blocks.transactions import Transactions
from evstation.runtime.calls import CallFailed
from evstation.runtime.clock import WallClock
from evstation.runtime.evse import Evse, Evses
from evstation.runtime.link import LinkDown
from evstation.runtime.uplink import Uplink

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["NOT_IMPLEMENTED_TRIGGERS", "Trigger", "TriggerAnswer"]

log = logging.getLogger(__name__)

V16, V201 = OcppVersion.V16, OcppVersion.V201

# Triggers whose message belongs to a block not built yet (firmware, diagnostics, security), by
# version.
NOT_IMPLEMENTED_TRIGGERS: Final[Mapping[OcppVersion, frozenset[str]]] = {
    V16: frozenset(
        {
            "DiagnosticsStatusNotification",
            "FirmwareStatusNotification",
            "LogStatusNotification",
            "SignChargePointCertificate",
        }
    ),
    V201: frozenset(
        {
            "FirmwareStatusNotification",
            "LogStatusNotification",
            "PublishFirmwareStatusNotification",
            "SignChargingStationCertificate",
            "SignCombinedCertificate",
            "SignV2GCertificate",
        }
    ),
}


class TriggerAnswer(enum.Enum):
    """TriggerMessageStatus, the same three values in 1.6, the whitepaper and 2.0.1."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    NOT_IMPLEMENTED = "NotImplemented"


class Trigger:
    """The trigger block. Start `run` with `nursery.start` for the station's lifetime."""

    def __init__(
        self,
        *,
        version: OcppVersion,
        uplink: Uplink,
        evses: Evses,
        layout: StationLayout,
        clock: WallClock,
        availability: Availability,
        provisioning: Provisioning,
        transactions: Transactions,
    ) -> None:
        self.version = version
        self._uplink = uplink
        self._evses = evses
        self._layout = layout
        self._clock = clock
        self._availability = availability
        self._provisioning = provisioning
        self._transactions = transactions
        self._after_answer = AfterAnswer("trigger")

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        await self._after_answer.run(task_status=task_status)

    # --- the decision and the send ---------------------------------------------------------------

    def trigger(self, message: str, evse_id: int | None, connector_id: int | None) -> TriggerAnswer:
        """Answer a trigger for `message` about (EVSE, connector) (None: not given) and, if Accepted,
        schedule the message; the caller has mapped 1.6 connector numbers (connector 0: evse_id 0)."""
        if message in NOT_IMPLEMENTED_TRIGGERS[self.version]:
            return TriggerAnswer.NOT_IMPLEMENTED
        if message == "BootNotification":
            return self._trigger_boot()
        if message == "Heartbeat":
            heartbeat: list[dict[str, object]] = [{}]
            self._after_answer.start_soon(self._send, "Heartbeat", heartbeat)
            return TriggerAnswer.ACCEPTED
        if message == "TransactionEvent":
            return self._trigger_transaction_events(evse_id)
        if message == "StatusNotification":
            payloads = self._status_payloads(evse_id, connector_id)
        elif message == "MeterValues":
            payloads = self._meter_payloads(evse_id, connector_id)
        else:  # pragma: no cover - every enum value of both versions is listed above
            return TriggerAnswer.NOT_IMPLEMENTED
        if not payloads:
            return TriggerAnswer.REJECTED
        self._after_answer.start_soon(self._send, message, payloads)
        return TriggerAnswer.ACCEPTED

    def _trigger_boot(self) -> TriggerAnswer:
        if self._uplink.boot.state is BootState.ACCEPTED:
            if self.version is V201:
                return TriggerAnswer.REJECTED  # F06.FR.17: not once the CSMS accepted the station
            # 1.6 has no such rule: an Accepted station sends a BootNotification on request.
            self._after_answer.start_soon(self._send_boot)
            return TriggerAnswer.ACCEPTED
        self._uplink.trigger_boot()  # Pending / Rejected: the boot loop sends one now
        return TriggerAnswer.ACCEPTED

    def _trigger_transaction_events(self, evse_id: int | None) -> TriggerAnswer:
        # F06.FR.07: one Updated event per running transaction of the EVSE (no EVSE, or EVSE 0: of
        # every EVSE). With none running there is nothing true to send: Rejected, as libocpp and the
        # OCTT expect (the spec's rule for a trigger the station cannot honour now).
        evse_ids = self._transactions.running_evses(evse_id)
        if not evse_ids:
            return TriggerAnswer.REJECTED
        self._after_answer.start_soon(self._queue_transaction_events, evse_ids)
        return TriggerAnswer.ACCEPTED

    async def _queue_transaction_events(self, evse_ids: list[int]) -> None:
        # Queued after the handler returned, so the answer is on the wire before the outbox sender
        # can send the event (F06.FR.04). A transaction that ended meanwhile gets no event: nothing
        # may follow its Ended event.
        for evse_id in evse_ids:
            if not await self._transactions.send_triggered_event(evse_id):
                log.info("triggered TransactionEvent for EVSE %d not queued: transaction ended", evse_id)

    def _status_payloads(self, evse_id: int | None, connector_id: int | None) -> list[dict[str, object]]:
        payloads = self._availability.status_requests(None)
        if self.version is V16:
            if evse_id is None:
                return payloads
            number = 0 if evse_id == 0 else self._layout.v16_number(evse_id, connector_id or 1)
            return [p for p in payloads if p["connectorId"] == number]
        # F06.FR.12 (as libocpp and the OCTT read it): a StatusNotification trigger names its
        # EVSE and connector; without them it is Rejected.
        if evse_id is None or connector_id is None:
            return []
        return [p for p in payloads if (p["evseId"], p["connectorId"]) == (evse_id, connector_id)]

    def _meter_payloads(self, evse_id: int | None, connector_id: int | None) -> list[dict[str, object]]:
        if evse_id is None or evse_id == 0:
            evses = list(self._evses)
        elif evse_id in self._evses:
            evses = [self._evses[evse_id]]
        else:
            return []
        payloads: list[dict[str, object]] = []
        for evse in evses:
            meter_value = self._transactions.triggered_meter_value(evse.id)
            if meter_value is None:
                continue  # no reading (or none of the configured measurands): nothing true to send
            if self.version is V16:
                connector = connector_id if connector_id is not None else evse.connector_in_use
                number = self._layout.v16_number(evse.id, connector)
                payload: dict[str, object] = {"connectorId": number, "meterValue": [meter_value]}
                transaction_id = self._v16_transaction_id(evse, connector)
                if transaction_id is not None:
                    payload["transactionId"] = transaction_id
                payloads.append(payload)
            else:
                payloads.append({"evseId": evse.id, "meterValue": [meter_value]})
        return payloads

    def _v16_transaction_id(self, evse: Evse, connector_id: int) -> int | None:
        """1.6 MeterValues.transactionId: the CSMS's id of the transaction running on that connector.
        None while the CSMS has not confirmed the start yet (the local placeholder would name no
        transaction it knows) or when no transaction runs there."""
        transaction_id = self._transactions.ids.get(evse.id)
        if transaction_id is None or connector_id != evse.connector_in_use:
            return None
        try:
            number = int(transaction_id)
        except ValueError:
            return None
        return number if number >= 0 else None

    async def _send(self, action: str, payloads: list[dict[str, object]]) -> None:
        for payload in payloads:
            response = await self._call(action, payload)
            if action == "Heartbeat" and response is not None:
                self._clock.set(response.current_time)  # type: ignore[attr-defined]

    async def _send_boot(self) -> None:
        payload = await self._provisioning.boot_request()
        response = await self._call("BootNotification", payload)
        if response is not None:
            self._clock.set(response.current_time)  # type: ignore[attr-defined]
            # The registration stays Accepted: a triggered boot is information for the CSMS.
            log.info("triggered BootNotification answered %s", response.status)  # type: ignore[attr-defined]

    async def _call(self, action: str, payload: dict[str, object]) -> OcppModel | None:
        try:
            return await self._uplink.call_requested(action, payload)
        except (LinkDown, CallFailed) as exc:
            # Not queued: a trigger asks for the state now; the CSMS triggers again if it still cares.
            log.warning("triggered %s not delivered: %s", action, exc)
            return None

    # --- handlers --------------------------------------------------------------------------------

    def _v16_target(self, connector_id: int | None) -> tuple[int | None, int | None] | None:
        if connector_id is None:
            return None, None
        if connector_id == 0:
            return 0, None
        try:
            return self._layout.from_v16_number(connector_id)
        except UnknownConnector:
            return None

    def _v16(self, message: str, connector_id: int | None) -> TriggerAnswer:
        target = self._v16_target(connector_id)
        if target is None:
            return TriggerAnswer.REJECTED  # 5.17: a connectorId the station does not have
        return self.trigger(message, *target)

    @handles(V16, "TriggerMessage")
    async def trigger_message_v16(self, req: v16.TriggerMessageRequest) -> v16.TriggerMessageResponse:
        answer = self._v16(str(req.requested_message.value), req.connector_id)
        return v16.TriggerMessageResponse(status=v16.TriggerMessageStatusEnum(answer.value))

    @handles(V16, "ExtendedTriggerMessage")
    async def extended_trigger_message_v16(
        self, req: v16.ExtendedTriggerMessageRequest
    ) -> v16.ExtendedTriggerMessageResponse:
        answer = self._v16(str(req.requested_message.value), req.connector_id)
        return v16.ExtendedTriggerMessageResponse(status=v16.TriggerMessageStatusEnumType(answer.value))

    @handles(V201, "TriggerMessage", gates=V201_TRIGGER_GATES)
    async def trigger_message_v201(self, req: v201.TriggerMessageRequest) -> v201.TriggerMessageResponse:
        evse = req.evse
        status = v201.TriggerMessageStatusEnumType
        if evse is not None and evse.id != 0:
            known = evse.id in self._layout.evse_ids() and (
                evse.connector_id is None or self._layout.has_connector(evse.id, evse.connector_id)
            )
            if not known:
                return v201.TriggerMessageResponse(
                    status=status.REJECTED,
                    status_info=v201.StatusInfoType(
                        reason_code="UnknownEvse", additional_info=f"no EVSE {evse.id}"
                    ),
                )
        evse_id = None if evse is None else evse.id
        connector_id = None if evse is None else evse.connector_id
        message = str(req.requested_message.value)
        answer = self.trigger(message, evse_id, connector_id)
        if message == "TransactionEvent" and answer is TriggerAnswer.REJECTED:
            where = f" on EVSE {evse_id}" if evse_id else ""
            return v201.TriggerMessageResponse(
                status=status.REJECTED,
                status_info=v201.StatusInfoType(
                    reason_code="TxNotFound", additional_info=f"no transaction running{where}"
                ),
            )
        return v201.TriggerMessageResponse(status=status(answer.value))

"""OCPP 2.0.1 message formats for the session: BootNotification (with BootReason), StatusNotification,
Authorize and TransactionEvent (Started / Updated / Ended, seqNo persisted, offline flag).

Formats only; sequencing and timing belong to common.py and transactions.py. Never sends.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, Final

from evstation.protocol.messages import OcppModel
from evstation.protocol.versions import OcppVersion
from evstation.runtime.calls import CallManager, Handler
from evstation.runtime.outbox import OutboxEntry
from evstation.runtime.session.common import SessionContext, enum_text
from evstation.runtime.storage import TransactionRecord

__all__ = ["V201Adapter", "V201Transactions", "connector_status"]

# ConnectorStatusEnumType has five values; every in-use state of the EVSE state machine is Occupied.
_KEPT: Final = frozenset({"Available", "Reserved", "Unavailable", "Faulted"})

# StopReason (== 2.0.1 ReasonEnumType) -> the TriggerReasonEnumType of the Ended event (E06).
_END_TRIGGER: Final = {
    "Local": "StopAuthorized",
    "Remote": "RemoteStop",
    "EVDisconnected": "EVDeparted",
    "PowerLoss": "AbnormalCondition",
    "Reboot": "ResetCommand",
    "DeAuthorized": "Deauthorized",
    "EmergencyStop": "AbnormalCondition",
    "Other": "AbnormalCondition",
}


def connector_status(status: object) -> str:
    text = enum_text(status)
    return text if text in _KEPT else "Occupied"


class V201Adapter:
    version = OcppVersion.V201

    def handlers(self, ctx: SessionContext) -> dict[str, Handler]:
        from evstation.runtime.session.remote import v201_handlers

        return v201_handlers(ctx)

    def boot_request(self, ctx: SessionContext, reason: str) -> dict[str, object]:
        identity = ctx.config.station
        station: dict[str, object] = {"model": identity.model, "vendorName": identity.vendor}
        if identity.serial_number is not None:
            station["serialNumber"] = identity.serial_number
        if identity.firmware_version is not None:
            station["firmwareVersion"] = identity.firmware_version
        return {"chargingStation": station, "reason": reason}

    def status_requests(self, ctx: SessionContext, event: Any | None) -> list[dict[str, object]]:
        now = ctx.clock.iso()
        if event is not None:
            pairs = [(event.evse_id, event.connector_id, event.status)]
        else:
            pairs = [
                (evse.id, cid, evse.status(cid))
                for evse in sorted(ctx.evses, key=lambda e: e.id)
                for cid in evse.connector_ids
            ]
        return [
            {
                "timestamp": now,
                "connectorStatus": connector_status(status),
                "evseId": evse_id,
                "connectorId": cid,
            }
            for evse_id, cid, status in pairs
        ]

    async def prepare(self, ctx: SessionContext, entry: OutboxEntry) -> dict[str, object] | None:
        return dict(entry.payload)

    async def delivered(self, ctx: SessionContext, entry: OutboxEntry, response: OcppModel) -> None:
        if entry.action == "TransactionEvent" and entry.payload.get("eventType") == "Ended":
            info = entry.payload.get("transactionInfo")
            if isinstance(info, dict):
                await ctx.storage.delete_transaction(str(info["transactionId"]))


def _meter_value(ctx: SessionContext, evse: Any, context: str) -> list[dict[str, object]]:
    values: list[dict[str, object]] = []
    energy = evse.energy_wh()
    if energy is not None:
        values.append({"value": energy, "measurand": "Energy.Active.Import.Register", "context": context})
    sample = evse.meter()
    if sample is not None:
        if sample.power_w is not None:
            values.append({"value": sample.power_w, "measurand": "Power.Active.Import", "context": context})
        if sample.current_a.l1 is not None:
            values.append({"value": sample.current_a.l1, "measurand": "Current.Import", "context": context})
    return [{"timestamp": ctx.clock.iso(), "sampledValue": values}] if values else []


class V201Transactions:
    """E01-E07 minimal: one TransactionEvent stream per transaction through the outbox."""

    version = OcppVersion.V201

    async def authorize(self, calls: CallManager, id_token: str, token_type: str) -> bool:
        response = await calls.call("Authorize", {"idToken": {"idToken": id_token[:36], "type": token_type}})
        return enum_text(getattr(getattr(response, "id_token_info"), "status")) == "Accepted"  # noqa: B009

    async def _event(
        self,
        ctx: SessionContext,
        record: TransactionRecord,
        seq_no: int,
        event_type: str,
        trigger: str,
        info: dict[str, object],
        meter_context: str | None,
        with_token: bool = False,
    ) -> None:
        payload: dict[str, object] = {
            "eventType": event_type,
            "timestamp": ctx.clock.iso(),
            "triggerReason": trigger,
            "seqNo": seq_no,
            "transactionInfo": {"transactionId": record.id, **info},
            "evse": {"id": record.evse_id, "connectorId": record.connector_id},
        }
        if with_token and record.id_token:
            payload["idToken"] = {"idToken": record.id_token, "type": record.id_token_type or "ISO14443"}
        if meter_context is not None:
            meter = _meter_value(ctx, ctx.evses[record.evse_id], meter_context)
            if meter:
                payload["meterValue"] = meter
        offline = not ctx.online
        if offline:
            # E04.FR.01 (queued while offline): the CSMS must know this event was not sent live.
            payload["offline"] = True
        await ctx.outbox.put("TransactionEvent", payload, offline=offline)

    async def start(
        self,
        ctx: SessionContext,
        evse_id: int,
        connector_id: int,
        id_token: str,
        token_type: str,
        trigger: str,
        remote_start_id: int | None = None,
    ) -> TransactionRecord:
        record = TransactionRecord(
            id=str(uuid.uuid4()),
            evse_id=evse_id,
            connector_id=connector_id,
            id_token=id_token,
            id_token_type=token_type,
            started_at=ctx.clock.now(),
            meter_start_wh=ctx.evses[evse_id].energy_wh() or 0.0,
            state="Started",
            seq_no=0,
        )
        await ctx.storage.save_transaction(record)
        info: dict[str, object] = {"chargingState": "EVConnected"}
        if remote_start_id is not None:
            info["remoteStartId"] = remote_start_id
        await self._event(ctx, record, 0, "Started", trigger, info, "Transaction.Begin", True)
        return record

    async def meter_values(self, ctx: SessionContext, record: TransactionRecord) -> None:
        seq_no = await ctx.storage.next_seq_no(record.id)
        await self._event(ctx, record, seq_no, "Updated", "MeterValuePeriodic", {}, "Sample.Periodic")

    async def charging_state(self, ctx: SessionContext, record: TransactionRecord, state: str) -> None:
        seq_no = await ctx.storage.next_seq_no(record.id)
        await self._event(
            ctx, record, seq_no, "Updated", "ChargingStateChanged", {"chargingState": state}, None
        )

    async def stop(self, ctx: SessionContext, record: TransactionRecord, reason: str) -> None:
        seq_no = await ctx.storage.next_seq_no(record.id)
        fresh = await ctx.storage.get_transaction(record.id) or record
        await ctx.storage.save_transaction(
            replace(
                fresh,
                state="Ended",
                stopped_at=ctx.clock.now(),
                meter_stop_wh=ctx.evses[record.evse_id].energy_wh(),
                stop_reason=reason,
            )
        )
        trigger = _END_TRIGGER.get(reason, "AbnormalCondition")
        info: dict[str, object] = {"stoppedReason": reason}
        await self._event(ctx, record, seq_no, "Ended", trigger, info, "Transaction.End", True)

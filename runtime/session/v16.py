"""OCPP 1.6J message formats for the session: BootNotification, StatusNotification, Authorize and the
transaction messages (StartTransaction / MeterValues / StopTransaction with offline placeholder ids).

Formats only; sequencing and I/O timing belong to common.py and transactions.py. Never sends.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from evstation.drivers.api import MREC_VENDOR_ID, FaultCode, mrec_code, ocpp16_error_code
from evstation.protocol.messages import OcppModel
from evstation.protocol.versions import OcppVersion
from evstation.runtime.calls import CallManager, Handler
from evstation.runtime.outbox import OutboxEntry
from evstation.runtime.session.common import SessionContext, enum_text, iso
from evstation.runtime.storage import (
    ENDED,
    TransactionRecord,
    read_setting,
    read_transaction,
    write_last_meter,
    write_setting,
    write_transaction,
)

__all__ = ["V16Adapter", "V16Transactions", "connector_number"]

log = logging.getLogger(__name__)

_LAST_LOCAL_ID_KEY: Final = "session.v16.last_local_transaction_id"


def connector_number(ctx: SessionContext, evse_id: int, connector_id: int) -> int:
    """1.6 numbers connectors 1..n across the station (no EVSE level): EVSEs in order, then connectors."""
    number = 0
    for evse in sorted(ctx.evses, key=lambda e: e.id):
        for cid in evse.connector_ids:
            number += 1
            if evse.id == evse_id and cid == connector_id:
                return number
    raise LookupError(f"no connector {connector_id} on EVSE {evse_id}")


def _error_fields(fault: FaultCode | None) -> dict[str, object]:
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


class V16Adapter:
    version = OcppVersion.V16

    def handlers(self, ctx: SessionContext) -> dict[str, Handler]:
        from evstation.runtime.session.remote import v16_handlers

        return v16_handlers(ctx)

    def boot_request(self, ctx: SessionContext, reason: str) -> dict[str, object]:
        # 1.6 BootNotification has no reason field.
        identity = ctx.config.station
        payload: dict[str, object] = {
            "chargePointVendor": identity.vendor,
            "chargePointModel": identity.model,
        }
        if identity.serial_number is not None:
            payload["chargePointSerialNumber"] = identity.serial_number
        if identity.firmware_version is not None:
            payload["firmwareVersion"] = identity.firmware_version
        return payload

    def status_requests(self, ctx: SessionContext, event: Any | None) -> list[dict[str, object]]:
        now = ctx.clock.iso()
        if event is not None:
            return [
                {
                    "connectorId": connector_number(ctx, event.evse_id, event.connector_id),
                    "status": enum_text(event.status),
                    "timestamp": now,
                    **_error_fields(event.fault),
                }
            ]
        evses = sorted(ctx.evses, key=lambda e: e.id)
        faults: frozenset[FaultCode] = frozenset()
        payloads: list[dict[str, object]] = []
        for evse in evses:
            faults |= evse.active_faults()
            for cid in evse.connector_ids:
                payloads.append(
                    {
                        "connectorId": connector_number(ctx, evse.id, cid),
                        "status": enum_text(evse.status(cid)),
                        "timestamp": now,
                        **_error_fields(_first_fault(evse.active_faults())),
                    }
                )
        # Connector 0 is the charge point itself (1.6 section 4.9): Available unless every connector is
        # Unavailable.
        all_unavailable = all(p["status"] == "Unavailable" for p in payloads)
        station: dict[str, object] = {
            "connectorId": 0,
            "status": "Unavailable" if all_unavailable else "Available",
            "timestamp": now,
            "errorCode": "NoError",
        }
        return [station, *payloads]

    async def prepare(self, ctx: SessionContext, entry: OutboxEntry) -> dict[str, object] | None:
        """Rewrite a local placeholder transactionId (negative) with the CSMS's id, persisting the rewrite."""
        payload = dict(entry.payload)
        payload.pop("_localTransactionId", None)
        tx_id = payload.get("transactionId")
        if entry.action == "StartTransaction" or not isinstance(tx_id, int) or tx_id >= 0:
            return payload
        record = await ctx.storage.get_transaction(str(tx_id))
        if record is None or record.csms_transaction_id is None:
            log.error(
                "%s #%d refers to transaction %d the CSMS never confirmed", entry.action, entry.id, tx_id
            )
            return None
        payload["transactionId"] = record.csms_transaction_id
        await ctx.outbox.update_payload(entry.id, payload)
        return payload

    async def delivered(self, ctx: SessionContext, entry: OutboxEntry, response: OcppModel) -> None:
        if entry.action == "StartTransaction":
            local_id = entry.payload.get("_localTransactionId")
            real_id = int(getattr(response, "transaction_id"))  # noqa: B009
            status = enum_text(getattr(getattr(response, "id_tag_info"), "status"))  # noqa: B009
            if status != "Accepted":
                # 1.6 StopTransactionOnInvalidId is left to a later issue (docs/status/E-transactions.md).
                log.warning("StartTransaction %s: idTag %s", real_id, status)
            if local_id is not None:
                await ctx.storage.set_csms_transaction_id(str(local_id), real_id)
                record = await ctx.storage.get_transaction(str(local_id))
                if record is not None and ctx.transaction_ids.get(record.evse_id) == record.id:
                    ctx.set_transaction_id(record.evse_id, str(real_id))
        elif entry.action == "StopTransaction":
            tx_id = entry.payload.get("transactionId")
            for record in await ctx.storage.transactions():
                if str(tx_id) in (record.id, str(record.csms_transaction_id)):
                    await ctx.storage.delete_transaction(record.id)


def _sampled(value: str, measurand: str, unit: str) -> dict[str, object]:
    return {"value": value, "measurand": measurand, "unit": unit, "context": "Sample.Periodic"}


def _sampled_values(
    energy_wh: float | None, power_w: float | None, current_a: float | None
) -> list[dict[str, object]]:
    values: list[dict[str, object]] = []
    if energy_wh is not None:
        values.append(_sampled(f"{energy_wh:.0f}", "Energy.Active.Import.Register", "Wh"))
    if power_w is not None:
        values.append(_sampled(f"{power_w:.0f}", "Power.Active.Import", "W"))
    if current_a is not None:
        values.append(_sampled(f"{current_a:.1f}", "Current.Import", "A"))
    return values


class V16Transactions:
    """1.6 Core transactions: StartTransaction / MeterValues / StopTransaction through the outbox.

    Every transaction starts under a local negative placeholder id (libocpp's scheme) because the
    StartTransaction may be queued offline; the outbox sender swaps in the CSMS's id at send time.
    """

    version = OcppVersion.V16

    async def authorize(self, calls: CallManager, id_token: str, token_type: str) -> bool:
        response = await calls.call("Authorize", {"idTag": id_token[:20]})
        return enum_text(getattr(getattr(response, "id_tag_info"), "status")) == "Accepted"  # noqa: B009

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
        meter_start = ctx.evses[evse_id].energy_wh() or 0.0
        started_at = ctx.clock.now()
        connector = connector_number(ctx, evse_id, connector_id)
        created: list[TransactionRecord] = []

        def build(conn: sqlite3.Connection) -> dict[str, object]:
            # The placeholder id, the record and the StartTransaction commit together: a crash never
            # leaves a record whose StartTransaction was not queued.
            local_id = int(read_setting(conn, _LAST_LOCAL_ID_KEY) or "0") - 1
            write_setting(conn, _LAST_LOCAL_ID_KEY, str(local_id))
            record = TransactionRecord(
                id=str(local_id),
                evse_id=evse_id,
                connector_id=connector_id,
                id_token=id_token,
                id_token_type=token_type,
                started_at=started_at,
                meter_start_wh=meter_start,
                state="Started",
            )
            write_transaction(conn, record)
            created.append(record)
            return {
                "connectorId": connector,
                "idTag": id_token[:20],
                "meterStart": round(meter_start),
                "timestamp": iso(started_at),
                # Not an OCPP field: stripped before sending; links the conf to the placeholder
                # after a restart.
                "_localTransactionId": local_id,
            }

        await ctx.outbox.put_with("StartTransaction", build, offline=not ctx.online)
        return created[0]

    async def meter_values(self, ctx: SessionContext, record: TransactionRecord) -> None:
        evse = ctx.evses[record.evse_id]
        sample = evse.meter()
        energy = evse.energy_wh()
        values = _sampled_values(
            energy,
            None if sample is None else sample.power_w,
            None if sample is None else sample.current_a.l1,
        )
        if not values:
            return
        at = ctx.clock.now()
        connector = connector_number(ctx, record.evse_id, record.connector_id)

        def build(conn: sqlite3.Connection) -> dict[str, object] | None:
            fresh = read_transaction(conn, record.id)
            if fresh is None or not fresh.is_open:
                return None  # ended meanwhile: no sample after its StopTransaction
            if energy is not None:
                write_last_meter(conn, record.id, energy, at)
            return {
                "connectorId": connector,
                "transactionId": _wire_id(fresh),
                "meterValue": [{"timestamp": iso(at), "sampledValue": values}],
            }

        await ctx.outbox.put_with("MeterValues", build, offline=not ctx.online)

    async def charging_state(self, ctx: SessionContext, record: TransactionRecord, state: str) -> None:
        """1.6 reports charging state through StatusNotification only."""

    async def stop(self, ctx: SessionContext, record: TransactionRecord, reason: str) -> None:
        await _queue_stop(
            ctx, record.id, reason, ctx.evses[record.evse_id].energy_wh(), ctx.clock.now(), True
        )

    async def end_interrupted(self, ctx: SessionContext, record: TransactionRecord, reason: str) -> bool:
        """After a restart: StopTransaction with the last persisted meter reading and its time (no idTag:
        nobody presented one)."""
        return await _queue_stop(ctx, record.id, reason, None, None, False)


def _wire_id(record: TransactionRecord) -> int:
    """The CSMS's id once known, else the placeholder (rewritten at send time by V16Adapter.prepare)."""
    return record.csms_transaction_id if record.csms_transaction_id is not None else int(record.id)


async def _queue_stop(
    ctx: SessionContext,
    transaction_id: str,
    reason: str,
    meter_wh: float | None,
    at: datetime | None,
    with_id_tag: bool,
) -> bool:
    """Queue the StopTransaction and mark the record Ended in one SQLite transaction, so the Stop is
    queued at most once whatever restarts happen around it (libocpp #907 sent it twice). `meter_wh` /
    `at` None: the last persisted reading (else meterStart) and its time (else the start)."""

    def build(conn: sqlite3.Connection) -> dict[str, object] | None:
        fresh = read_transaction(conn, transaction_id)
        if fresh is None or not fresh.is_open:
            return None
        meter = meter_wh if meter_wh is not None else fresh.last_meter_wh
        if meter is None:
            meter = fresh.meter_start_wh
        stopped_at = at if at is not None else (fresh.last_meter_at or fresh.started_at)
        write_transaction(
            conn, replace(fresh, state=ENDED, stopped_at=stopped_at, meter_stop_wh=meter, stop_reason=reason)
        )
        payload: dict[str, object] = {
            "transactionId": _wire_id(fresh),
            "meterStop": round(meter),
            "timestamp": iso(stopped_at),
            "reason": reason,  # StopReason values are 1.6 Reason values
        }
        if with_id_tag and fresh.id_token:
            payload["idTag"] = fresh.id_token[:20]
        return payload

    entry = await ctx.outbox.put_with("StopTransaction", build, offline=not ctx.online)
    if entry is None:
        log.warning("transaction %s already ended: StopTransaction not queued again", transaction_id)
    return entry is not None

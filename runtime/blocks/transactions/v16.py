"""OCPP 1.6J transaction messages: StartTransaction / MeterValues / StopTransaction through the outbox,
with offline placeholder ids rewritten to the CSMS's transactionId at send time.

Formats and their storage writes only; the Transactions block sequences them. Never sends.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Final

from evstation.protocol.messages import OcppModel, VersionModels, enum_text
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.transactions.services import TxServices
from evstation.runtime.clock import iso
from evstation.runtime.outbox import OutboxEntry
from evstation.runtime.storage import (
    ENDED,
    TransactionRecord,
    read_setting,
    read_transaction,
    write_last_meter,
    write_setting,
    write_transaction,
)

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
else:
    v16 = VersionModels(OcppVersion.V16)

__all__ = ["V16Transactions"]

log = logging.getLogger(__name__)

_LAST_LOCAL_ID_KEY: Final = "session.v16.last_local_transaction_id"


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

    async def prepare(self, tx: TxServices, entry: OutboxEntry) -> dict[str, object] | None:
        """Rewrite a local placeholder transactionId (negative) with the CSMS's id, persisting the rewrite."""
        payload = dict(entry.payload)
        payload.pop("_localTransactionId", None)
        tx_id = payload.get("transactionId")
        if entry.action == "StartTransaction" or not isinstance(tx_id, int) or tx_id >= 0:
            return payload
        record = await tx.storage.get_transaction(str(tx_id))
        if record is None or record.csms_transaction_id is None:
            log.error(
                "%s #%d refers to transaction %d the CSMS never confirmed", entry.action, entry.id, tx_id
            )
            return None
        payload["transactionId"] = record.csms_transaction_id
        await tx.outbox.update_payload(entry.id, payload)
        return payload

    async def delivered(self, tx: TxServices, entry: OutboxEntry, response: OcppModel) -> None:
        if entry.action == "StartTransaction":
            local_id = entry.payload.get("_localTransactionId")
            assert isinstance(response, v16.StartTransactionResponse)
            real_id = response.transaction_id
            status = enum_text(response.id_tag_info.status)
            if status != "Accepted":
                # 1.6 StopTransactionOnInvalidId is left to a later issue (docs/status/E-transactions.md).
                log.warning("StartTransaction %s: idTag %s", real_id, status)
            if local_id is not None:
                await tx.storage.set_csms_transaction_id(str(local_id), real_id)
                record = await tx.storage.get_transaction(str(local_id))
                if record is not None and tx.ids.get(record.evse_id) == record.id:
                    tx.ids.set(record.evse_id, str(real_id))
        elif entry.action == "StopTransaction":
            tx_id = entry.payload.get("transactionId")
            for record in await tx.storage.transactions():
                if str(tx_id) in (record.id, str(record.csms_transaction_id)):
                    await tx.storage.delete_transaction(record.id)

    async def start(
        self,
        tx: TxServices,
        evse_id: int,
        connector_id: int,
        id_token: str,
        token_type: str,
        trigger: str,
        remote_start_id: int | None = None,
        reservation_id: int | None = None,
    ) -> TransactionRecord:
        meter_start = tx.evses[evse_id].energy_wh() or 0.0
        started_at = tx.clock.now()
        connector = tx.layout.v16_number(evse_id, connector_id)
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
            payload: dict[str, object] = {
                "connectorId": connector,
                "idTag": id_token[:20],
                "meterStart": round(meter_start),
                "timestamp": iso(started_at),
                # Not an OCPP field: stripped before sending; links the conf to the placeholder
                # after a restart.
                "_localTransactionId": local_id,
            }
            if reservation_id is not None:
                payload["reservationId"] = reservation_id  # 5.13: the reservation this start used
            return payload

        await tx.outbox.put_with("StartTransaction", build, offline=not tx.online)
        return created[0]

    async def meter_values(self, tx: TxServices, record: TransactionRecord) -> None:
        evse = tx.evses[record.evse_id]
        sample = evse.meter()
        energy = evse.energy_wh()
        values = _sampled_values(
            energy,
            None if sample is None else sample.power_w,
            None if sample is None else sample.current_a.l1,
        )
        if not values:
            return
        at = tx.clock.now()
        connector = tx.layout.v16_number(record.evse_id, record.connector_id)

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

        await tx.outbox.put_with("MeterValues", build, offline=not tx.online)

    async def charging_state(self, tx: TxServices, record: TransactionRecord, state: str) -> None:
        """1.6 reports charging state through StatusNotification only."""

    async def stop(self, tx: TxServices, record: TransactionRecord, reason: str) -> None:
        await _queue_stop(tx, record.id, reason, tx.evses[record.evse_id].energy_wh(), tx.clock.now(), True)

    async def end_interrupted(self, tx: TxServices, record: TransactionRecord, reason: str) -> bool:
        """After a restart: StopTransaction with the last persisted meter reading and its time (no idTag:
        nobody presented one)."""
        return await _queue_stop(tx, record.id, reason, None, None, False)


def _wire_id(record: TransactionRecord) -> int:
    """The CSMS's id once known, else the placeholder (rewritten at send time by V16Adapter.prepare)."""
    return record.csms_transaction_id if record.csms_transaction_id is not None else int(record.id)


async def _queue_stop(
    tx: TxServices,
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

    entry = await tx.outbox.put_with("StopTransaction", build, offline=not tx.online)
    if entry is None:
        log.warning("transaction %s already ended: StopTransaction not queued again", transaction_id)
    return entry is not None

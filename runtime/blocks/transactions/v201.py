"""OCPP 2.0.1 transaction messages: TransactionEvent Started / Updated / Ended through the outbox, with
seqNo persisted together with each event and the offline flag (E04).

Formats and their storage writes only; the Transactions block sequences them. Never sends.
"""

from __future__ import annotations

import logging
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

from evstation.protocol.messages import OcppModel
from evstation.protocol.transactions import INTERRUPTED_TRIGGER, ended_trigger
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.transactions.services import TxServices
from evstation.runtime.clock import iso
from evstation.runtime.outbox import OutboxEntry
from evstation.runtime.storage import (
    ENDED,
    TransactionRecord,
    bump_seq_no,
    read_transaction,
    write_last_meter,
    write_transaction,
)

__all__ = ["V201Transactions"]

log = logging.getLogger(__name__)


def _meter_value(tx: TxServices, evse: Any, context: str) -> list[dict[str, object]]:
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
    return [{"timestamp": tx.clock.iso(), "sampledValue": values}] if values else []


# Inside the write transaction: (the fresh open record, its seqNo) -> (transactionInfo extras, meter
# values) of the event, after any extra writes of its own.
_Content = Callable[[sqlite3.Connection, TransactionRecord, int], dict[str, object]]


class V201Transactions:
    """E01-E07 minimal: one TransactionEvent stream per transaction through the outbox."""

    version = OcppVersion.V201

    async def prepare(self, tx: TxServices, entry: OutboxEntry) -> dict[str, object] | None:
        return dict(entry.payload)

    async def delivered(self, tx: TxServices, entry: OutboxEntry, response: OcppModel) -> None:
        if entry.action == "TransactionEvent" and entry.payload.get("eventType") == "Ended":
            info = entry.payload.get("transactionInfo")
            if isinstance(info, dict):
                await tx.storage.delete_transaction(str(info["transactionId"]))

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
        record = TransactionRecord(
            id=str(uuid.uuid4()),
            evse_id=evse_id,
            connector_id=connector_id,
            id_token=id_token,
            id_token_type=token_type,
            started_at=tx.clock.now(),
            meter_start_wh=tx.evses[evse_id].energy_wh() or 0.0,
            state="Started",
            seq_no=0,
        )
        info: dict[str, object] = {"chargingState": "EVConnected"}
        if remote_start_id is not None:
            info["remoteStartId"] = remote_start_id
        payload = _payload(
            record,
            0,
            "Started",
            trigger,
            tx.clock.iso(),
            info,
            _meter_value(tx, tx.evses[evse_id], "Transaction.Begin"),
            with_token=True,
        )
        if reservation_id is not None:
            payload["reservationId"] = reservation_id  # H03: the reservation this transaction used

        def build(conn: sqlite3.Connection) -> dict[str, object]:
            write_transaction(conn, record)  # together with its Started event, or not at all
            return _mark_offline(payload, not tx.online)

        await tx.outbox.put_with("TransactionEvent", build, offline=not tx.online)
        return record

    async def meter_values(self, tx: TxServices, record: TransactionRecord) -> None:
        meter = _meter_value(tx, tx.evses[record.evse_id], "Sample.Periodic")
        energy = tx.evses[record.evse_id].energy_wh()
        at = tx.clock.now()
        await self._updated(tx, record, "MeterValuePeriodic", {}, meter, energy, at)

    async def charging_state(self, tx: TxServices, record: TransactionRecord, state: str) -> None:
        await self._updated(
            tx, record, "ChargingStateChanged", {"chargingState": state}, [], None, tx.clock.now()
        )

    async def triggered(self, tx: TxServices, record: TransactionRecord, charging_state: str) -> bool:
        """F06.FR.07: Updated, triggerReason Trigger, with the chargingState and the current reading
        (context Trigger); False if the transaction ended before it could be queued."""
        meter = _meter_value(tx, tx.evses[record.evse_id], "Trigger")
        energy = tx.evses[record.evse_id].energy_wh()
        info: dict[str, object] = {"chargingState": charging_state}
        return await self._updated(tx, record, "Trigger", info, meter, energy, tx.clock.now())

    async def _updated(
        self,
        tx: TxServices,
        record: TransactionRecord,
        trigger: str,
        info: dict[str, object],
        meter: list[dict[str, object]],
        energy: float | None,
        at: datetime,
    ) -> bool:
        offline = not tx.online

        def build(conn: sqlite3.Connection) -> dict[str, object] | None:
            # seqNo, last meter reading and the event commit together: no seqNo gap after a crash.
            fresh = read_transaction(conn, record.id)
            if fresh is None or not fresh.is_open:
                return None  # ended meanwhile: nothing may follow its Ended event
            seq_no = bump_seq_no(conn, record.id)
            if energy is not None:
                write_last_meter(conn, record.id, energy, at)
            payload = _payload(fresh, seq_no, "Updated", trigger, iso(at), info, meter)
            return _mark_offline(payload, offline)

        return await tx.outbox.put_with("TransactionEvent", build, offline=offline) is not None

    async def stop(self, tx: TxServices, record: TransactionRecord, reason: str) -> None:
        energy = tx.evses[record.evse_id].energy_wh()
        meter = _meter_value(tx, tx.evses[record.evse_id], "Transaction.End")
        trigger = ended_trigger(reason)
        await _queue_ended(tx, record.id, reason, trigger, energy, tx.clock.now(), meter, with_token=True)

    async def end_interrupted(self, tx: TxServices, record: TransactionRecord, reason: str) -> bool:
        """After a restart: Ended with the next seqNo, the last persisted energy reading and its time."""
        return await _queue_ended(tx, record.id, reason, INTERRUPTED_TRIGGER, None, None, None, False)


def _payload(
    record: TransactionRecord,
    seq_no: int,
    event_type: str,
    trigger: str,
    timestamp: str,
    info: dict[str, object],
    meter: list[dict[str, object]],
    *,
    with_token: bool = False,
) -> dict[str, object]:
    payload: dict[str, object] = {
        "eventType": event_type,
        "timestamp": timestamp,
        "triggerReason": trigger,
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": record.id, **info},
        "evse": {"id": record.evse_id, "connectorId": record.connector_id},
    }
    if with_token and record.id_token:
        payload["idToken"] = {"idToken": record.id_token, "type": record.id_token_type or "ISO14443"}
    if meter:
        payload["meterValue"] = meter
    return payload


def _mark_offline(payload: dict[str, object], offline: bool) -> dict[str, object]:
    if offline:
        # E04.FR.01 (queued while offline): the CSMS must know this event was not sent live.
        payload["offline"] = True
    return payload


async def _queue_ended(
    tx: TxServices,
    transaction_id: str,
    reason: str,
    trigger: str,
    energy: float | None,
    at: datetime | None,
    meter: list[dict[str, object]] | None,
    with_token: bool,
) -> bool:
    """Queue the Ended event, its seqNo and the record's Ended state in one SQLite transaction, so it is
    queued at most once whatever restarts happen around it (libocpp #907 sent an end twice).
    `at` / `meter` None: the last persisted energy reading (else the start value) and its time."""
    offline = not tx.online
    # Recovered at start-up, the event happened while the station was down (E04 offline flag).
    interrupted = at is None

    def build(conn: sqlite3.Connection) -> dict[str, object] | None:
        fresh = read_transaction(conn, transaction_id)
        if fresh is None or not fresh.is_open:
            return None
        seq_no = bump_seq_no(conn, transaction_id)
        stopped_at = at if at is not None else (fresh.last_meter_at or fresh.started_at)
        meter_wh = energy if energy is not None else fresh.last_meter_wh
        if meter_wh is None:
            meter_wh = fresh.meter_start_wh
        values = meter
        if values is None:
            values = [
                {
                    "timestamp": iso(stopped_at),
                    "sampledValue": [
                        {
                            "value": meter_wh,
                            "measurand": "Energy.Active.Import.Register",
                            "context": "Transaction.End",
                        }
                    ],
                }
            ]
        write_transaction(
            conn,
            replace(
                fresh,
                state=ENDED,
                seq_no=seq_no,
                stopped_at=stopped_at,
                meter_stop_wh=meter_wh,
                stop_reason=reason,
            ),
        )
        payload = _payload(
            fresh,
            seq_no,
            "Ended",
            trigger,
            iso(stopped_at),
            {"stoppedReason": reason},
            values,
            with_token=with_token,
        )
        return _mark_offline(payload, offline or interrupted)

    entry = await tx.outbox.put_with("TransactionEvent", build, offline=offline or interrupted)
    if entry is None:
        log.warning("transaction %s already ended: Ended event not queued again", transaction_id)
    return entry is not None

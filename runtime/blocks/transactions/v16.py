"""OCPP 1.6J transaction messages: StartTransaction / MeterValues / StopTransaction through the outbox,
with offline placeholder ids rewritten to the CSMS's transactionId at send time.

Formats and their storage writes only; the Transactions block sequences them (the same decisions as
2.0.1, translated). Never sends a transaction message. Build functions run in the database thread and
read only their arguments and the database.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Final

from evstation.protocol.messages import OcppModel, VersionModels, enum_text
from evstation.protocol.transactions import monotonic_energy, v16_reason
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.transactions.formats import (
    ALREADY_DELIVERED,
    AlreadyDelivered,
    IdTokenVerdict,
    MeterValue,
    StartData,
    StopData,
    UpdateData,
    with_energy_floor,
)
from evstation.runtime.blocks.transactions.services import TxServices
from evstation.runtime.calls import CallFailed
from evstation.runtime.clock import iso
from evstation.runtime.link import LinkDown
from evstation.runtime.outbox import OutboxEntry
from evstation.runtime.storage import (
    ENDED,
    TransactionRecord,
    append_ended_values,
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


class V16Transactions:
    """1.6 Core transactions: StartTransaction / MeterValues / StopTransaction through the outbox.

    Every transaction starts under a local negative placeholder id (libocpp's scheme) because the
    StartTransaction may be queued offline; the outbox sender swaps in the CSMS's id at send time. The
    outbox row names the local id in its `transaction_id` column, so no payload carries a non-OCPP key.
    """

    version = OcppVersion.V16

    async def prepare(
        self, tx: TxServices, entry: OutboxEntry
    ) -> Mapping[str, object] | AlreadyDelivered | None:
        """Rewrite a local placeholder transactionId (negative) with the CSMS's id, persisting the rewrite.

        A StartTransaction whose transaction already has the CSMS's id was answered before the station
        stopped: sent again, it would open a second transaction at the CSMS, one never stopped. (One
        whose transaction record is gone never gets here: `Transactions.recover` removed it.)
        """
        if entry.action == "StartTransaction":
            if entry.transaction_id is not None:
                started = await tx.storage.get_transaction(entry.transaction_id)
                if started is not None and started.csms_transaction_id is not None:
                    return ALREADY_DELIVERED
            return entry.payload  # sent as the stored text
        tx_id = entry.payload.get("transactionId")
        if not isinstance(tx_id, int) or tx_id >= 0:
            return entry.payload  # sent as the stored text
        payload = dict(entry.payload)
        record = await tx.storage.get_transaction(str(tx_id))
        if record is None or record.csms_transaction_id is None:
            log.error(
                "%s #%d refers to transaction %d the CSMS never confirmed", entry.action, entry.id, tx_id
            )
            return None
        payload["transactionId"] = record.csms_transaction_id
        await tx.outbox.update_payload(entry.id, payload)
        return payload

    async def delivered(
        self, tx: TxServices, entry: OutboxEntry, response: OcppModel
    ) -> IdTokenVerdict | None:
        if entry.action == "StartTransaction":
            assert isinstance(response, v16.StartTransactionResponse)
            real_id = response.transaction_id
            status = enum_text(response.id_tag_info.status)
            local_id = entry.transaction_id
            if local_id is None:
                log.error("StartTransaction #%d has no transaction: id %d not recorded", entry.id, real_id)
                return None
            await tx.storage.set_csms_transaction_id(local_id, real_id, status)
            record = await tx.storage.get_transaction(local_id)
            if record is not None and tx.ids.get(record.evse_id) == record.id:
                tx.ids.set(record.evse_id, str(real_id))
            return IdTokenVerdict(local_id, status)
        if self.is_end(entry) and entry.transaction_id is not None:
            await tx.storage.delete_transaction(entry.transaction_id)
        return None

    def is_end(self, entry: OutboxEntry) -> bool:
        return entry.action == "StopTransaction"

    async def start(self, tx: TxServices, data: StartData) -> TransactionRecord:
        assert data.id_token is not None, "1.6 StartTransaction needs the idTag"
        id_tag = data.id_token
        connector = tx.layout.v16_number(data.evse_id, data.connector_id)
        meter_start = data.meter_wh if data.meter_wh is not None else 0.0

        def allocate(conn: sqlite3.Connection) -> int:
            local_id = int(read_setting(conn, _LAST_LOCAL_ID_KEY) or "0") - 1
            write_setting(conn, _LAST_LOCAL_ID_KEY, str(local_id))
            return local_id

        # Its own write: a crash right after it only skips a placeholder number.
        local_id = await tx.storage.write(allocate)
        record = TransactionRecord(
            id=str(local_id),
            evse_id=data.evse_id,
            connector_id=data.connector_id,
            id_token=id_tag,
            id_token_type=data.token_type,
            started_at=data.at,
            meter_start_wh=meter_start,
            state="Started",
            last_meter_wh=data.meter_wh,
            last_meter_at=data.at if data.meter_wh is not None else None,
            remote_start_id=data.remote_start_id,
            reservation_id=data.reservation_id,
            ended_values=json.dumps([data.ended_begin]) if data.ended_begin is not None else None,
            signed_start=data.signed_start,
        )
        payload: dict[str, object] = {
            "connectorId": connector,
            "idTag": id_tag,
            "meterStart": round(meter_start),
            "timestamp": iso(data.at),
        }
        if data.reservation_id is not None:
            payload["reservationId"] = data.reservation_id

        def build(conn: sqlite3.Connection) -> dict[str, object]:
            # The record and its StartTransaction commit together: a crash never leaves a record
            # whose StartTransaction was not queued.
            write_transaction(conn, record)
            return payload

        await tx.outbox.put_with("StartTransaction", build, offline=data.offline, transaction_id=record.id)
        return record

    async def updated(self, tx: TxServices, record: TransactionRecord, data: UpdateData) -> bool:
        """1.6 has no Updated event: meter values go out as MeterValues; charging state changes are
        StatusNotifications (sent by the session)."""
        connector = tx.layout.v16_number(record.evse_id, record.connector_id)

        def build(conn: sqlite3.Connection) -> dict[str, object] | None:
            fresh = read_transaction(conn, record.id)
            if fresh is None or not fresh.is_open:
                return None  # ended meanwhile: no sample after its StopTransaction
            if data.ended:
                append_ended_values(conn, record.id, data.ended)
            if data.meter is None:
                return None
            meter = data.meter
            if data.energy_wh is not None:
                energy = monotonic_energy(fresh.last_meter_wh, data.energy_wh)
                meter = with_energy_floor(meter, energy)
                write_last_meter(conn, record.id, energy, data.at)
            return {"connectorId": connector, "transactionId": _wire_id(fresh), "meterValue": [meter]}

        entry = await tx.outbox.put_with("MeterValues", build, offline=data.offline, transaction_id=record.id)
        return entry is not None

    async def stop(self, tx: TxServices, record: TransactionRecord, data: StopData) -> OutboxEntry | None:
        """Queue the StopTransaction and mark the record Ended in one SQLite transaction, so the Stop is
        queued at most once whatever restarts happen around it (libocpp #907 sent it twice). Without
        `data.at`: the last persisted reading (else meterStart) and its time (else the start)."""

        def build(conn: sqlite3.Connection) -> dict[str, object] | None:
            fresh = read_transaction(conn, record.id)
            if fresh is None or not fresh.is_open:
                return None
            last = fresh.last_meter_wh if fresh.last_meter_wh is not None else fresh.meter_start_wh
            meter = last if data.meter_wh is None else monotonic_energy(last, data.meter_wh)
            stopped_at = data.at if data.at is not None else (fresh.last_meter_at or fresh.started_at)
            values: list[MeterValue] = json.loads(fresh.ended_values) if fresh.ended_values else []
            if data.end is not None:
                values.append(with_energy_floor(data.end, meter))
            write_transaction(
                conn,
                replace(
                    fresh,
                    state=ENDED,
                    stopped_at=stopped_at,
                    meter_stop_wh=meter,
                    stop_reason=data.reason,
                    signed_stop=data.signed_stop,
                ),
            )
            payload: dict[str, object] = {
                "transactionId": _wire_id(fresh),
                "meterStop": round(meter),
                "timestamp": iso(stopped_at),
                "reason": v16_reason(data.reason),
            }
            if data.with_token and fresh.id_token:
                payload["idTag"] = fresh.id_token
            if values:
                # StopTxnSampledData / StopTxnAlignedData (1.6 section 9.1).
                payload["transactionData"] = values
            return payload

        entry = await tx.outbox.put_with(
            "StopTransaction", build, offline=data.offline, transaction_id=record.id
        )
        if entry is None:
            log.warning("transaction %s already ended: StopTransaction not queued again", record.id)
        return entry

    async def idle_meter_values(self, tx: TxServices, evse_id: int, meter: MeterValue) -> None:
        calls = tx.uplink.calls
        if calls is None:
            return  # not a transaction message: not queued
        connector = tx.layout.v16_number(evse_id, tx.evses[evse_id].connector_in_use)
        try:
            await calls.call("MeterValues", {"connectorId": connector, "meterValue": [meter]})
        except (CallFailed, LinkDown) as exc:
            log.warning("MeterValues (connector %d, idle) not delivered: %s", connector, exc)


def _wire_id(record: TransactionRecord) -> int:
    """The CSMS's id once known, else the placeholder (rewritten at send time by `prepare`)."""
    return record.csms_transaction_id if record.csms_transaction_id is not None else int(record.id)

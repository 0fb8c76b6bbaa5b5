"""OCPP 2.0.1 transaction messages: TransactionEvent Started / Updated / Ended through the outbox, with
the seqNo persisted together with each event (E01-E07, E14), and MeterValues outside a transaction (J01).

Formats and their storage writes only; the Transactions block sequences them. Never sends a
transaction message (the outbox sender does). Every build function runs in the database thread and
reads only its arguments and the database.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from evstation.protocol.messages import OcppModel, VersionModels, enum_text
from evstation.protocol.meter_values import ENERGY_REGISTER
from evstation.protocol.transactions import monotonic_energy
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.transactions.formats import (
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
    bump_seq_no,
    read_transaction,
    write_last_meter,
    write_transaction,
)

if TYPE_CHECKING:
    from evstation.protocol.v201 import messages as v201
else:
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["V201Transactions"]

log = logging.getLogger(__name__)



class V201Transactions:
    """One TransactionEvent stream per transaction through the outbox."""

    version = OcppVersion.V201

    async def prepare(self, tx: TxServices, entry: OutboxEntry) -> Mapping[str, object] | None:
        return entry.payload  # sent as the stored text

    async def delivered(
        self, tx: TxServices, entry: OutboxEntry, response: OcppModel
    ) -> IdTokenVerdict | None:
        if entry.action != "TransactionEvent":
            return None
        info = entry.payload.get("transactionInfo")
        transaction_id = str(info["transactionId"]) if isinstance(info, dict) else None
        if transaction_id is None:
            return None
        if self.is_end(entry):
            await tx.storage.delete_transaction(transaction_id)
            return None
        assert isinstance(response, v201.TransactionEventResponse)
        if response.id_token_info is None:
            return None
        status = enum_text(response.id_token_info.status)
        if status != "Accepted":
            await tx.storage.refuse_token(transaction_id, status)
        return IdTokenVerdict(transaction_id, status)

    def is_end(self, entry: OutboxEntry) -> bool:
        return entry.action == "TransactionEvent" and entry.payload.get("eventType") == "Ended"

    async def start(self, tx: TxServices, data: StartData) -> TransactionRecord:
        record = TransactionRecord(
            id=str(uuid.uuid4()),
            evse_id=data.evse_id,
            connector_id=data.connector_id,
            id_token=data.id_token,
            id_token_type=data.token_type,
            started_at=data.at,
            meter_start_wh=data.meter_wh if data.meter_wh is not None else 0.0,
            state="Started",
            seq_no=0,
            last_meter_wh=data.meter_wh,
            last_meter_at=data.at if data.meter_wh is not None else None,
            remote_start_id=data.remote_start_id,
            reservation_id=data.reservation_id,
            ended_values=json.dumps([data.ended_begin]) if data.ended_begin is not None else None,
            signed_start=data.signed_start,
        )
        info: dict[str, object] = {"chargingState": data.charging_state}
        if data.remote_start_id is not None:
            info["remoteStartId"] = data.remote_start_id
        payload = _payload(record, 0, "Started", data.trigger, iso(data.at), info, data.offline)
        if data.begin is not None:
            payload["meterValue"] = [data.begin]
        if data.id_token is not None:
            payload["idToken"] = _id_token(data.id_token, data.token_type)
        if data.reservation_id is not None:
            payload["reservationId"] = data.reservation_id
        if data.number_of_phases is not None:
            payload["numberOfPhasesUsed"] = data.number_of_phases
        if data.cable_max_current is not None:
            payload["cableMaxCurrent"] = data.cable_max_current

        def build(conn: sqlite3.Connection) -> dict[str, object]:
            write_transaction(conn, record)  # together with its Started event, or not at all
            return payload

        await tx.outbox.put_with("TransactionEvent", build, offline=data.offline, transaction_id=record.id)
        return record

    async def updated(self, tx: TxServices, record: TransactionRecord, data: UpdateData) -> bool:
        def build(conn: sqlite3.Connection) -> dict[str, object] | None:
            # seqNo, last meter reading and the event commit together: no seqNo gap after a crash.
            fresh = read_transaction(conn, record.id)
            if fresh is None or not fresh.is_open:
                return None  # ended meanwhile: nothing may follow its Ended event
            if data.ended:
                append_ended_values(conn, record.id, data.ended)
            if (
                data.meter is None
                and data.charging_state is None
                and data.id_token is None
                and data.cable_max_current is None
            ):
                return None  # only values for the end message
            seq_no = bump_seq_no(conn, record.id)
            info: dict[str, object] = {}
            if data.charging_state is not None:
                info["chargingState"] = data.charging_state
            payload = _payload(fresh, seq_no, "Updated", data.trigger, iso(data.at), info, data.offline)
            if data.meter is not None:
                meter = data.meter
                if data.energy_wh is not None:
                    energy = monotonic_energy(fresh.last_meter_wh, data.energy_wh)
                    meter = with_energy_floor(meter, energy)
                    write_last_meter(conn, record.id, energy, data.at)
                payload["meterValue"] = [meter]
            if data.id_token is not None:
                token, token_type = data.id_token
                payload["idToken"] = _id_token(token, token_type)
                write_transaction(
                    conn, replace(fresh, seq_no=seq_no, id_token=token, id_token_type=token_type)
                )
            if data.number_of_phases is not None:
                payload["numberOfPhasesUsed"] = data.number_of_phases
            if data.cable_max_current is not None:
                payload["cableMaxCurrent"] = data.cable_max_current
            return payload

        entry = await tx.outbox.put_with(
            "TransactionEvent", build, offline=data.offline, transaction_id=record.id
        )
        return entry is not None

    async def stop(self, tx: TxServices, record: TransactionRecord, data: StopData) -> OutboxEntry | None:
        """Queue the Ended event, its seqNo and the record's Ended state in one SQLite transaction, so
        it is queued at most once whatever restarts happen around it (libocpp #907 sent an end twice).
        Without `data.at`: the last persisted reading (else the start value) and its time."""

        def build(conn: sqlite3.Connection) -> dict[str, object] | None:
            fresh = read_transaction(conn, record.id)
            if fresh is None or not fresh.is_open:
                return None
            seq_no = bump_seq_no(conn, record.id)
            stopped_at = data.at if data.at is not None else (fresh.last_meter_at or fresh.started_at)
            last = fresh.last_meter_wh if fresh.last_meter_wh is not None else fresh.meter_start_wh
            meter_wh = last if data.meter_wh is None else monotonic_energy(last, data.meter_wh)
            values: list[MeterValue] = json.loads(fresh.ended_values) if fresh.ended_values else []
            if data.end is not None:
                values.append(with_energy_floor(data.end, meter_wh))
            else:
                values.append(
                    {
                        "timestamp": iso(stopped_at),
                        "sampledValue": [
                            {
                                "value": meter_wh,
                                "context": "Transaction.End",
                                "measurand": ENERGY_REGISTER,
                                "location": "Outlet",
                                "unitOfMeasure": {"unit": "Wh", "multiplier": 0},
                            }
                        ],
                    }
                )
            write_transaction(
                conn,
                replace(
                    fresh,
                    state=ENDED,
                    seq_no=seq_no,
                    stopped_at=stopped_at,
                    meter_stop_wh=meter_wh,
                    stop_reason=data.reason,
                    signed_stop=data.signed_stop,
                ),
            )
            info: dict[str, object] = {"stoppedReason": data.reason}
            if data.charging_state is not None:
                info["chargingState"] = data.charging_state
            payload = _payload(fresh, seq_no, "Ended", data.trigger, iso(stopped_at), info, data.offline)
            payload["meterValue"] = values
            if data.with_token and fresh.id_token:
                payload["idToken"] = _id_token(fresh.id_token, fresh.id_token_type)
            return payload

        entry = await tx.outbox.put_with(
            "TransactionEvent", build, offline=data.offline, transaction_id=record.id
        )
        if entry is None:
            log.warning("transaction %s already ended: Ended event not queued again", record.id)
        return entry

    async def idle_meter_values(self, tx: TxServices, evse_id: int, meter: MeterValue) -> None:
        calls = tx.uplink.calls
        if calls is None:
            return  # J01: not a transaction message, not queued
        try:
            await calls.call("MeterValues", {"evseId": evse_id, "meterValue": [meter]})
        except (CallFailed, LinkDown) as exc:
            log.warning("MeterValues (EVSE %d, idle) not delivered: %s", evse_id, exc)


def _id_token(token: str, token_type: str | None) -> dict[str, object]:
    return {"idToken": token, "type": token_type or "ISO14443"}


def _payload(
    record: TransactionRecord,
    seq_no: int,
    event_type: str,
    trigger: str,
    timestamp: str,
    info: dict[str, object],
    offline: bool,
) -> dict[str, object]:
    payload: dict[str, object] = {
        "eventType": event_type,
        "timestamp": timestamp,
        "triggerReason": trigger,
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": record.id, **info},
        "evse": {"id": record.evse_id, "connectorId": record.connector_id},
    }
    if offline:
        # E04.FR.01 (queued while offline): the CSMS must know this event was not sent live.
        payload["offline"] = True
    return payload

"""A station whose database refuses writes (disk full, read-only SD card): a real SQLite file refusing
writes by its own limits (`PRAGMA max_page_count`, `PRAGMA query_only`), sessions driven through the
transactions block with sim boards and a scripted CSMS."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from test_runtime_transactions import BOTH, POLL_S, START, STOP, V16, V201, Rig, rig

from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.transactions import START_READING_WAIT_S, STORAGE_PROBE_S
from evstation.runtime.device_model import (
    AUTH_CACHE_ENABLED,
    TX_ENDED_MEASURANDS,
    TX_START_POINT,
    TX_UPDATED_INTERVAL,
)
from evstation.runtime.events import Dropped
from evstation.runtime.evse import Authorized, ConnectorStatus, EnergyFlowStarted, EvseEvent
from evstation.runtime.session import SessionContext
from evstation.runtime.storage import Storage, open_storage

# Enough end-of-transaction measurands (per phase) that the start's record overflows a small page.
MANY_MEASURANDS = "Energy.Active.Import.Register,Current.Import,Voltage,Power.Active.Import"


def small_pages(path: Path) -> None:
    """Create the station's file with 512-byte pages (before the station opens it): a transaction record
    carrying a few meter values then needs an overflow page, i.e. the file must grow to hold it."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA page_size = 512")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


async def fill_up(storage: Storage) -> None:
    """Disk full: the database may not grow by one page (and has no free page left to reuse)."""

    def work(conn: sqlite3.Connection) -> None:
        # Free pages (left by rows deleted earlier) would be reused before the file grows: use them up.
        conn.execute("CREATE TABLE IF NOT EXISTS filler (data BLOB)")
        while conn.execute("PRAGMA freelist_count").fetchone()[0] > 0:
            conn.execute("INSERT INTO filler VALUES (zeroblob(100))")
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await storage.write(work)


async def make_read_only(storage: Storage) -> None:
    await storage.write(lambda conn: conn.execute("PRAGMA query_only = ON"))


async def writable_again(storage: Storage) -> None:
    """Space freed / the card remounted read-write. (Through `read`: a write is what is refused.)"""

    def work(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA query_only = OFF")
        conn.execute("PRAGMA max_page_count = 1000000")

    await storage.read(work)


ENERGY = "Energy.Active.Import.Register"
MODES = pytest.mark.parametrize("mode", ["full", "readonly"])


def storage_of(ctx: SessionContext) -> Storage:
    return ctx.blocks.transactions.services.storage


def _fault_reported(payload: dict[str, Any], version: OcppVersion) -> bool:
    if version is V16:
        return bool(payload["status"] == "Faulted" and payload["errorCode"] == "InternalError")
    return bool(payload["connectorStatus"] == "Faulted")


async def _wait_fault_reported(r: Rig, version: OcppVersion) -> None:
    while not any(
        s.call.payload["connectorId"] == 1 and _fault_reported(s.call.payload, version)
        for s in r.csms.of("StatusNotification")
    ):
        await r.csms.wait_for("StatusNotification", len(r.csms.of("StatusNotification")) + 1)


def _drain(events: trio.MemoryReceiveChannel[EvseEvent | Dropped]) -> list[EvseEvent | Dropped]:
    seen: list[EvseEvent | Dropped] = []
    while True:
        try:
            seen.append(events.receive_nowait())
        except trio.WouldBlock:
            return seen


@asynccontextmanager
async def failing_rig(tmp_path: Path, version: OcppVersion, mode: str) -> AsyncIterator[Rig]:
    """A station whose database refuses the next write that needs room (full) or any write (readonly)."""
    small_pages(tmp_path / "station.db")
    async with rig(tmp_path, version, settings={TX_ENDED_MEASURANDS: MANY_MEASURANDS}) as r:
        await (fill_up if mode == "full" else make_read_only)(storage_of(r.ctx))
        yield r


@BOTH
@MODES
async def test_a_start_the_database_cannot_record_gives_no_energy_and_no_crash(
    clock: trio.testing.MockClock,
    tmp_path: Path,
    version: OcppVersion,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The start's record and message cannot be committed: no transaction, no energy, the session ends,
    the EVSE reports the fault (1.6 InternalError, 2.0.1 Faulted), one log line names the file and the
    SQLite error without a traceback, and the station runs on (the rig leaves cleanly)."""
    caplog.set_level(logging.WARNING)
    async with failing_rig(tmp_path, version, mode) as r:
        with r.ctx.evses.subscribe() as events:
            await r.plug_and_authorize()
            await _wait_fault_reported(r, version)
            await trio.sleep(START_READING_WAIT_S)
            seen = _drain(events)
        # Never energized, not even for the moment the refused write took.
        assert not any(isinstance(event, EnergyFlowStarted) for event in seen)
        assert any(isinstance(event, Authorized) for event in seen)
        assert r.ctx.evses[1].status() is ConnectorStatus.FAULTED
        assert not r.ctx.evses[1].session_active()
        assert r.board.offered_current_a is None and r.meter.energy_wh == 1000
        assert r.ctx.blocks.transactions.ids.get(1) is None
        assert await r.ctx.outbox.depth() == 0
        assert await storage_of(r.ctx).transactions() == []
        assert not r.csms.of(START[version])
    error = "database or disk is full (SQLITE_FULL)" if mode == "full" else "(SQLITE_READONLY)"
    lines = [
        rec
        for rec in caplog.records
        if rec.name == "evstation.runtime.storage" and rec.levelno == logging.ERROR
    ]
    assert len(lines) == 1
    assert str(tmp_path / "station.db") in lines[0].getMessage() and error in lines[0].getMessage()
    assert all(rec.exc_info is None for rec in caplog.records)


@BOTH
@MODES
async def test_the_fault_clears_and_sessions_start_once_writes_succeed_again(
    clock: trio.testing.MockClock,
    tmp_path: Path,
    version: OcppVersion,
    mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with failing_rig(tmp_path, version, mode) as r:
        await r.plug_and_authorize()
        await _wait_fault_reported(r, version)
        await trio.sleep(3 * STORAGE_PROBE_S)
        assert r.ctx.evses[1].status() is ConnectorStatus.FAULTED  # the probe still fails
        # One line for the whole failure, not one per refused probe.
        assert len([rec for rec in caplog.records if "database write failed" in rec.getMessage()]) == 1
        await writable_again(storage_of(r.ctx))
        await trio.sleep(STORAGE_PROBE_S + 1)
        assert r.ctx.evses[1].status() is not ConnectorStatus.FAULTED
        r.board.unplug()
        await trio.sleep(1)
        await r.plug_and_authorize("TOKEN-2")
        await r.csms.wait_for(START[version])
        await trio.sleep(2 * POLL_S)
        assert r.meter.energy_wh > 1000
    assert any("succeed again" in rec.getMessage() for rec in caplog.records)


@BOTH
async def test_a_running_transaction_keeps_its_session_and_record_while_writes_fail(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Writes fail mid-transaction: the EVSE is Faulted and its energy withheld (none flows that cannot
    be recorded), the session and the transaction go on, and the energy comes back with the database."""
    settings = {TX_UPDATED_INTERVAL: "10"}
    async with rig(tmp_path, version, settings=settings) as r:
        await r.plug_and_authorize()
        await r.csms.wait_for(START[version])
        await make_read_only(storage_of(r.ctx))
        await _wait_fault_reported(r, version)
        held = r.meter.energy_wh
        await trio.sleep(60)  # several refused meter-value writes
        assert r.ctx.evses[1].session_active() and r.board.offered_current_a is None
        assert r.meter.energy_wh == held
        await writable_again(storage_of(r.ctx))
        await trio.sleep(STORAGE_PROBE_S + 1)
        assert r.ctx.evses[1].status() is not ConnectorStatus.FAULTED
        assert r.board.offered_current_a is not None
        assert r.ctx.blocks.transactions.ids.get(1) is not None


@BOTH
@MODES
@pytest.mark.parametrize("during_stop", [False, True], ids=["before", "during"])
async def test_a_transaction_that_ends_while_writes_fail_is_ended_once_they_succeed(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, mode: str, during_stop: bool
) -> None:
    """The EV leaves while the database refuses writes, from before the stop (its note is refused) or
    from within it (the note is in, the end message is refused after the wait for a last reading): no
    crash; the end is kept and queued, with the time and reading of the stop, as soon as writes
    succeed again, and the EVSE is free for the next session."""
    small_pages(tmp_path / "station.db")
    async with rig(tmp_path, version, settings={TX_ENDED_MEASURANDS: MANY_MEASURANDS}) as r:
        await r.plug_and_authorize()
        await r.csms.wait_for(START[version])
        await trio.sleep(10)
        fail = fill_up if mode == "full" else make_read_only
        if not during_stop:
            await fail(storage_of(r.ctx))
        at_stop = r.meter.energy_wh
        unplugged_at = r.ctx.blocks.transactions.services.clock.now()
        r.board.unplug()
        if during_stop:
            # The stop is noted at once; its end waits for the meter's next reading (polled each
            # second, up to END_READING_WAIT_S): the disk fails in between.
            for _ in range(50):  # the note is a commit, polled: it has no event
                if (await storage_of(r.ctx).transactions())[0].stop_reason is not None:
                    break
                await trio.sleep(0.01)
            else:
                pytest.fail("the stop was not noted")
            await fail(storage_of(r.ctx))
        await _wait_fault_reported(r, version)
        await trio.sleep(STORAGE_PROBE_S + 1)  # a refused probe too
        assert not r.ctx.evses[1].session_active()
        assert not any(_is_end(s.call.payload, version) for s in r.csms.of(STOP[version]))
        assert r.meter.energy_wh == at_stop
        await writable_again(storage_of(r.ctx))
        end = await r.ended(version)
        stopped = end["meterStop"] if version is V16 else _end_register(end)
        assert stopped == round(at_stop) if version is V16 else stopped == at_stop
        # The stop's time, not the recovery's (minutes later).
        assert abs(datetime.fromisoformat(end["timestamp"]) - unplugged_at) < timedelta(seconds=5)
        await trio.sleep(1)
        assert r.ctx.evses[1].status() is ConnectorStatus.AVAILABLE
        assert await storage_of(r.ctx).transactions() == []


def _is_end(payload: dict[str, Any], version: OcppVersion) -> bool:
    return version is V16 or payload["eventType"] == "Ended"


def _end_register(payload: dict[str, Any]) -> float:
    (value,) = [
        v
        for meter in payload["meterValue"]
        for v in meter["sampledValue"]
        if v.get("context") == "Transaction.End" and v.get("measurand", ENERGY) == ENERGY
    ]
    return float(value["value"])


async def test_a_failed_commit_is_rolled_back_and_the_next_write_goes_through(tmp_path: Path) -> None:
    """A COMMIT SQLite refuses (here a deferred foreign key; on a full disk the same) leaves its
    transaction open unless rolled back: every later write would then fail with "cannot start a
    transaction within a transaction"."""
    async with open_storage(tmp_path / "station.db") as storage:

        def tables(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
            conn.execute(
                "CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )

        await storage.write(tables)
        with pytest.raises(sqlite3.IntegrityError):
            await storage.write(lambda conn: conn.execute("INSERT INTO child VALUES (7)"))
        await storage.set_setting("after", "ok")
        assert await storage.get_setting("after") == "ok"
        assert await storage.read(lambda conn: conn.execute("SELECT COUNT(*) FROM child").fetchone()[0]) == 0


async def test_v201_tx_start_point_energy_transfer_energizes_before_the_record(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A transaction that starts at EnergyTransfer needs the energy first: the EVSE does not wait for
    its record (else neither would ever come). Changed while running: read at the change."""
    async with rig(tmp_path, V201) as r:
        await r.ctx.device_model.set(TX_START_POINT, "EnergyTransfer")
        await r.plug_and_authorize()
        (started,) = [s.call.payload for s in await r.csms.wait_for("TransactionEvent")]
        assert started["eventType"] == "Started" and started["triggerReason"] == "ChargingStateChanged"
        await trio.sleep(2 * POLL_S)
        assert r.meter.energy_wh > 1000


@BOTH
async def test_a_token_swiped_on_a_read_only_card_is_decided_and_its_start_refused(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The first write a swipe makes is the authorization cache's (the Authorize answer): refused, it
    does not fail the authorization (the cache keeps it in memory) nor the station; the start that
    follows is refused unenergized and the EVSE Faulted."""
    async with failing_rig(tmp_path, version, "readonly") as r:
        await r.ctx.device_model.set(AUTH_CACHE_ENABLED, "true")
        r.board.plug_in()
        await trio.sleep(0.5)
        assert await r.ctx.evses.present_token("TOKEN-9") == 1
        await r.csms.wait_for("Authorize")
        await _wait_fault_reported(r, version)
        assert [entry.token.value for entry in r.ctx.blocks.authorization.cached()] == ["TOKEN-9"]
        assert r.meter.energy_wh == 1000 and not r.csms.of(START[version])


def _periodic(r: Rig, version: OcppVersion) -> list[dict[str, Any]]:
    """The transaction's periodic meter-value messages as the CSMS got them, in order."""
    if version is V16:
        return [s.call.payload for s in r.csms.of("MeterValues") if "transactionId" in s.call.payload]
    return [p for p in r.tx_events() if p["triggerReason"] == "MeterValuePeriodic"]


def _stamp(payload: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(payload["meterValue"][0]["timestamp"])


@BOTH
@MODES
async def test_meter_values_refused_while_writes_fail_are_queued_in_order_once_they_succeed(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, mode: str
) -> None:
    """A running transaction's periodic values refused by the database are held in memory and queued,
    in order, once writes succeed (before its end): the CSMS gets the transaction's meter data for the
    whole failure (2.0.1: seqNos without a gap)."""
    small_pages(tmp_path / "station.db")
    settings = {TX_UPDATED_INTERVAL: "10", TX_ENDED_MEASURANDS: MANY_MEASURANDS}
    async with rig(tmp_path, version, settings=settings) as r:
        await r.plug_and_authorize()
        await r.csms.wait_for(START[version])
        await trio.sleep(25)
        failed_at = r.ctx.blocks.transactions.services.clock.now()
        await (fill_up if mode == "full" else make_read_only)(storage_of(r.ctx))
        await _wait_fault_reported(r, version)
        await trio.sleep(60)  # six values refused
        back_at = r.ctx.blocks.transactions.services.clock.now()
        await writable_again(storage_of(r.ctx))
        await trio.sleep(STORAGE_PROBE_S + 5)
        r.board.unplug()
        end = await r.ended(version)
        periodic = _periodic(r, version)
        stamps = [_stamp(payload) for payload in periodic]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert len([at for at in stamps if failed_at < at < back_at]) >= 5, stamps
        assert max(stamps) <= datetime.fromisoformat(end["timestamp"])
        if version is V201:
            seq = [p["seqNo"] for p in r.tx_events()]
            assert seq == list(range(len(seq))), seq


@BOTH
async def test_held_meter_values_go_out_as_soon_as_writes_succeed_and_before_the_end(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Held values are queued as soon as a write succeeds (here the 30 s probe, long before the next
    value of a 45 s interval), and a transaction that ends while writes fail queues its held values
    before its end."""
    async with rig(tmp_path, version, settings={TX_UPDATED_INTERVAL: "45"}) as r:
        await r.plug_and_authorize()
        await r.csms.wait_for(START[version])
        storage = storage_of(r.ctx)
        now = r.ctx.blocks.transactions.services.clock.now
        await trio.sleep(50)  # one value in
        failed_at = now()
        await make_read_only(storage)
        await _wait_fault_reported(r, version)  # the value at 90 s refused; probes at 120 s, 150 s
        await trio.sleep(46)  # the value at 135 s refused too
        back_at = now()
        await writable_again(storage)
        while storage.write_failure is not None:  # until the probe commits, 15 s before the next value
            await storage.wait_write_health_change()
        await trio.sleep(0.5)
        held = [at for at in map(_stamp, _periodic(r, version)) if failed_at < at < back_at]
        assert len(held) == 2, held
        failed_at = now()
        await make_read_only(storage)
        await trio.sleep(35)  # the value at 180 s refused
        r.board.unplug()
        await trio.sleep(20)
        back_at = now()
        await writable_again(storage)
        end = await r.ended(version)
        stamps = list(map(_stamp, _periodic(r, version)))
        assert len([at for at in stamps if failed_at < at < back_at]) == 1, stamps
        assert stamps == sorted(stamps) and max(stamps) <= datetime.fromisoformat(end["timestamp"])
        if version is V16:
            actions = [a for a in r.csms.actions() if a in ("MeterValues", "StopTransaction")]
            assert actions[-1] == "StopTransaction" and actions.count("StopTransaction") == 1
        else:
            assert [p["eventType"] for p in r.tx_events()][-1] == "Ended"

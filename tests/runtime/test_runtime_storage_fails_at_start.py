"""A station that starts on a database refusing writes (read-only SD card, full disk): the previous run's
interrupted transactions, its clean-shutdown marker and its answered-but-not-removed messages wait for
writes to succeed, while the station comes online Faulted and sends what is queued. A real SQLite file
refusing writes by its own limits (`PRAGMA query_only` on the station's own connection, set before any
block starts), the blocks started in open_station's order, a scripted CSMS."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import EPOCH, CsmsPeer, MemoryConnection, serve_until_link_down, station_config
from test_runtime_session_restart import killed_run_with_open_transaction, station_run
from test_runtime_storage_fails import make_read_only, storage_of, writable_again
from test_runtime_transactions import BOTH, POLL_S, START, STOP, V16, V201, Rig

from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.meter import SimMeter
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.transactions import CLEAN_SHUTDOWN_KEY, STORAGE_PROBE_S
from evstation.runtime.clock import WallClock
from evstation.runtime.device_model import TX_START_POINT, load_device_model
from evstation.runtime.evse import ConnectorStatus, Evses
from evstation.runtime.outbox import Outbox
from evstation.runtime.session import SessionContext, new_session
from evstation.runtime.storage import Storage, open_storage

Fail = Callable[[Storage], Awaitable[None]]
Before = Callable[[SessionContext], Awaitable[None]]


@asynccontextmanager
async def restarted(
    tmp_path: Path, version: OcppVersion, fail: Fail | None = make_read_only, *, before: Before | None = None
) -> AsyncIterator[Rig]:
    """The next run over the file, its database refusing writes (`fail`) from before any block starts;
    blocks started in open_station's order (the outbox's delete task too), then a CSMS connects.
    `before` runs first, with writes still allowed. Leaving the block is a clean shutdown."""
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    board = SimChargeController(SimEv(plugged=False), flow=meter)
    async with open_storage(tmp_path / "station.db") as storage, trio.open_nursery() as nursery:
        evses = Evses()
        evses.add(1, board, meter)
        evses.add(2, SimChargeController(), None)
        config = station_config(tmp_path, version)
        outbox = Outbox(storage)
        ctx = new_session(
            config,
            storage=storage,
            outbox=outbox,
            evses=evses,
            clock=WallClock.anchored(EPOCH),
            device_model=await load_device_model(storage, config),
        )
        if before is not None:
            await before(ctx)
        if fail is not None:
            await fail(storage)
        await nursery.start(outbox.run)
        await nursery.start(ctx.blocks.availability.run)
        await nursery.start(ctx.blocks.reservation.run)
        await nursery.start(evses.run)
        await nursery.start(ctx.blocks.authorization.run)
        await nursery.start(ctx.blocks.transactions.run)
        peer = CsmsPeer(version)
        conn = MemoryConnection(version)
        nursery.start_soon(peer.serve, conn)
        nursery.start_soon(serve_until_link_down, conn, ctx)
        yield Rig(ctx, peer, conn, board, meter, nursery)
        nursery.cancel_scope.cancel()


def _first_statuses(r: Rig, version: OcppVersion) -> dict[int, dict[str, Any]]:
    """Each EVSE's first StatusNotification (1.6: by connector number, connector 0 left out)."""
    first: dict[int, dict[str, Any]] = {}
    for seen in r.csms.of("StatusNotification"):
        payload: dict[str, Any] = dict(seen.call.payload)
        key = int(payload["connectorId"] if version is V16 else payload["evseId"])
        if key:
            first.setdefault(key, payload)
    return first


def _faulted_for_storage(payload: dict[str, Any], version: OcppVersion) -> bool:
    if version is V16:
        return (payload["status"], payload["errorCode"], payload.get("info")) == (
            "Faulted",
            "InternalError",
            "StorageFailure",
        )
    return bool(payload["connectorStatus"] == "Faulted")


def _ends(r: Rig, version: OcppVersion) -> list[dict[str, Any]]:
    if version is V16:
        return [s.call.payload for s in r.csms.of("StopTransaction")]
    return [p for p in r.tx_events() if p["eventType"] == "Ended"]


async def _online_and_faulted(r: Rig, version: OcppVersion) -> None:
    await r.csms.wait_for("StatusNotification", 3 if version is V16 else 2)
    first = _first_statuses(r, version)
    assert sorted(first) == [1, 2]
    assert all(_faulted_for_storage(payload, version) for payload in first.values()), first


@BOTH
async def test_an_interrupted_transaction_is_ended_once_writes_succeed_and_the_station_runs_meanwhile(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, caplog: pytest.LogCaptureFixture
) -> None:
    """(a) The previous run was killed mid-transaction; this one starts on a read-only card: it comes
    online, every EVSE Faulted from its first status, and sends the queued messages (1.6: the
    StartTransaction, then waits to record its answer; 2.0.1: every queued event). The end waits for
    writes; once the card is writable again (the next probe), it is queued and sent exactly once, and
    the fault clears. Nothing is sent twice."""
    caplog.set_level(logging.WARNING)
    await killed_run_with_open_transaction(tmp_path, version)
    async with restarted(tmp_path, version) as r:
        await _online_and_faulted(r, version)
        queued = 1 if version is V16 else 3
        await r.csms.wait_for(START[version], queued)
        await trio.sleep(3 * STORAGE_PROBE_S)
        assert _ends(r, version) == []
        assert not r.ctx.blocks.transactions.ids.recovered.is_set()
        assert [t.is_open for t in await storage_of(r.ctx).transactions()] == [True]
        assert len(r.csms.of(START[version])) == queued
        await writable_again(storage_of(r.ctx))
        await trio.sleep(STORAGE_PROBE_S + 1)
        assert r.ctx.blocks.transactions.ids.recovered.is_set()
        await r.ctx.outbox.wait_empty()
        (end,) = _ends(r, version)
        if version is V16:
            kinds = ("StartTransaction", "MeterValues", "StopTransaction")
            assert [a for a in r.csms.actions() if a in kinds] == list(kinds)
            assert (end["transactionId"], end["reason"]) == (42, "PowerLoss")
        else:
            assert [(e["eventType"], e["seqNo"]) for e in r.tx_events()] == [
                ("Started", 0),
                ("Updated", 1),
                ("Updated", 2),
                ("Ended", 3),
            ]
            assert end["transactionInfo"]["stoppedReason"] == "PowerLoss"
        assert r.ctx.evses[1].status() is ConnectorStatus.AVAILABLE
        assert await storage_of(r.ctx).transactions() == []
    waited = "recovery of the previous run's transactions waits"
    assert any(waited in rec.getMessage() for rec in caplog.records)
    assert all(rec.exc_info is None for rec in caplog.records)


async def _clean_run(tmp_path: Path, version: OcppVersion) -> None:
    meter = SimMeter(230, poll_interval_s=POLL_S)
    async with station_run(tmp_path, version, meter) as ctx, trio.open_nursery() as nursery:
        await nursery.start(ctx.blocks.transactions.run)
        nursery.cancel_scope.cancel()


@BOTH
@pytest.mark.parametrize("previous", ["clean", "none"])
async def test_nothing_interrupted_the_station_starts_faulted_and_recovers_with_the_disk(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, previous: str
) -> None:
    """(b) Nothing was open: after a clean shutdown (its marker to clear) or on a file with nothing to
    write at all (the start-up probe finds the refusal). Faulted from the first status; once writes
    succeed the marker is cleared, the fault clears and a session charges."""
    if previous == "clean":
        await _clean_run(tmp_path, version)
    async with restarted(tmp_path, version) as r:
        await _online_and_faulted(r, version)
        await trio.sleep(STORAGE_PROBE_S + 1)
        assert not await r.ctx.evses[1].authorize_remote("TOKEN-1", "ISO14443")
        await writable_again(storage_of(r.ctx))
        await trio.sleep(STORAGE_PROBE_S + 1)
        assert r.ctx.blocks.transactions.ids.recovered.is_set()
        assert await storage_of(r.ctx).get_setting(CLEAN_SHUTDOWN_KEY) is None
        assert r.ctx.evses[1].status() is ConnectorStatus.AVAILABLE
        await r.plug_and_authorize()
        await r.csms.wait_for(START[version])
        await trio.sleep(2 * POLL_S)
        assert r.meter.energy_wh > 1000


async def _forget_the_record(ctx: SessionContext) -> None:
    """The transaction's last message was answered and its record deleted; the removal of its queued
    messages was lost (a kill within the outbox's delete batch)."""
    storage = ctx.blocks.transactions.services.storage
    await storage.write(lambda conn: conn.execute("DELETE FROM transactions"))


async def _rows_in_outbox(r: Rig) -> int:
    count = await storage_of(r.ctx).read(lambda c: c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    return int(count)


@BOTH
async def test_messages_answered_before_the_restart_are_never_sent_while_their_removal_waits(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    await killed_run_with_open_transaction(tmp_path, version)
    async with restarted(tmp_path, version, before=_forget_the_record) as r:
        await _online_and_faulted(r, version)
        await trio.sleep(STORAGE_PROBE_S + 1)
        # Still in the file (their removal refused), never on the wire.
        assert await _rows_in_outbox(r) == (3 if version is V201 else 2)
        await writable_again(storage_of(r.ctx))
        await trio.sleep(STORAGE_PROBE_S + 1)
        assert await _rows_in_outbox(r) == 0
        assert not r.csms.of(START[version]) and not r.csms.of(STOP[version])
        assert not r.csms.of("MeterValues")


async def test_v201_an_ev_plugged_in_meanwhile_starts_its_transaction_after_the_interrupted_one_ended(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The EVSE's events wait for the end of its interrupted transaction: with TxStartPoint EVConnected,
    the EV plugged in while writes fail starts its transaction once they succeed, after the Ended event
    of the one before (applied at once, its start would have been refused and the EV left without)."""
    await killed_run_with_open_transaction(tmp_path, V201)

    async def ev_connected(ctx: SessionContext) -> None:
        await ctx.device_model.set(TX_START_POINT, "EVConnected")

    async with restarted(tmp_path, V201, before=ev_connected) as r:
        await _online_and_faulted(r, V201)
        r.board.plug_in()
        await trio.sleep(STORAGE_PROBE_S + 1)
        await writable_again(storage_of(r.ctx))
        await trio.sleep(STORAGE_PROBE_S + START_WAIT)
        kinds = [(p["eventType"], p["transactionInfo"]["transactionId"]) for p in r.tx_events()]
        ended = kinds.index(("Ended", kinds[0][1]))
        started_after = [k for k in kinds[ended:] if k[0] == "Started"]
        assert len(started_after) == 1 and started_after[0][1] != kinds[0][1], kinds


START_WAIT = 15.0


@BOTH
async def test_a_shutdown_before_the_recovery_completed_leaves_the_reason_to_the_next_start(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Stopped (cleanly) while the recovery still waits: no clean-shutdown marker is written, even if
    the disk took it at that moment, so the next start still ends the killed run's transaction as a
    power loss, not a reboot."""
    await killed_run_with_open_transaction(tmp_path, version)
    async with restarted(tmp_path, version) as r:
        await _online_and_faulted(r, version)
        await writable_again(storage_of(r.ctx))  # leaves before the next probe finds it
    async with restarted(tmp_path, version, fail=None) as r:
        await r.csms.wait_for(STOP[version] if version is V16 else "TransactionEvent")
        await r.ctx.outbox.wait_empty()
        (end,) = _ends(r, version)
        reason = end["reason"] if version is V16 else end["transactionInfo"]["stoppedReason"]
        assert reason == "PowerLoss"

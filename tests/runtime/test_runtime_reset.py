"""Reset through the session with running sim EVSEs (2.0.1 B11 / B12; 1.6 Core Reset): the answer, the
transaction ends, the stop request to the station supervisor, the stored boot reason, and the next
start after it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
import trio.testing
from runtime_session_harness import CsmsPeer, NoAnswer, board, call, online, start_transaction

from evstation.protocol.versions import OcppVersion
from evstation.runtime.evse import ConnectorStatus, SessionEnded, StopReason
from evstation.runtime.lifecycle import StationOutcome

V16, V201 = OcppVersion.V16, OcppVersion.V201


def ended_events(csms: CsmsPeer) -> list[dict[str, Any]]:
    return [s.call.payload for s in csms.of("TransactionEvent") if s.call.payload["eventType"] == "Ended"]


async def test_b12_fr_02_fr_04_immediate_reset_ends_the_transaction_then_stops_the_station(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Immediate with a transaction running: Accepted, the Ended event (ImmediateReset, ResetCommand)
    reaches the CSMS, the next boot reason RemoteReset is stored, then the station is asked to stop."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        await start_transaction(ctx, 1)
        stop = ctx.blocks.reset.stop_requests
        assert await call(csms, conn, "Reset", {"type": "Immediate"}) == {"status": "Accepted"}
        assert await stop.wait() is StationOutcome.RESET
        [ended] = ended_events(csms)  # delivered before the stop was requested
        assert ended["triggerReason"] == "ResetCommand"
        assert ended["transactionInfo"]["stoppedReason"] == "ImmediateReset"
        assert await ctx.outbox.depth() == 0
        assert (await ctx.blocks.transactions.services.storage.boot_state()).next_boot_reason == "RemoteReset"


async def test_b12_a_restart_before_the_resets_ends_are_queued_resumes_none_of_them(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A restart right after the Reset stopped the sessions, before the transactions block handled the
    stop (it records the stop, then waits up to 3 s for the meter's last reading before queueing the
    end). After the restart the EV is still plugged in, yet its transaction is not resumed: the Reset
    block marked it non-resumable before stopping it, so it is ended now, once (Reboot: the harness's
    stop is a clean one; a power cut would say PowerLoss). Resumed, it would charge on after a Reset
    that ended it."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        await start_transaction(ctx, 1)
        await ctx.outbox.wait_empty()
        with ctx.evses.subscribe() as events:
            await csms.send_call(conn, "Reset", {"type": "Immediate"})
            async for event in events:
                if isinstance(event, SessionEnded):
                    break  # the cut: leaving the block stops everything before anything else runs
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True, plugged=frozenset({1})) as (ctx, conn):
        await ctx.outbox.wait_empty()
        await trio.sleep(60)
        assert ctx.blocks.transactions.ids.running() == frozenset()
    [ended] = ended_events(csms)
    # Ended now, at the restart: the first run never queued its end (that would say ImmediateReset).
    assert ended["transactionInfo"]["stoppedReason"] == "Reboot"


async def test_b11_fr_01_idle_station_reset_is_accepted_and_stops_the_station(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        assert await call(csms, conn, "Reset", {"type": "OnIdle"}) == {"status": "Accepted"}
        assert await ctx.blocks.reset.stop_requests.wait() is StationOutcome.RESET
        assert ended_events(csms) == []


async def test_b11_reset_of_an_unknown_evse_is_rejected(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        assert await call(csms, conn, "Reset", {"type": "Immediate", "evseId": 7}) == {"status": "Rejected"}
        assert ctx.blocks.reset.stop_requests.outcome is None


async def test_b12_fr_01_fr_03_on_idle_is_scheduled_and_runs_once_the_transaction_ended(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """OnIdle with a transaction: Scheduled; the transaction goes on until it ends normally, then the
    station resets with boot reason ScheduledReset. A second OnIdle meanwhile is Scheduled too."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        await start_transaction(ctx, 1)
        stop = ctx.blocks.reset.stop_requests
        assert await call(csms, conn, "Reset", {"type": "OnIdle"}) == {"status": "Scheduled"}
        await trio.sleep(120)  # meter values flow; nothing ends the transaction
        assert stop.outcome is None
        assert ended_events(csms) == []
        assert await call(csms, conn, "Reset", {"type": "OnIdle"}) == {"status": "Scheduled"}
        await ctx.evses[1].stop_session(StopReason.LOCAL)
        assert await stop.wait() is StationOutcome.RESET
        [ended] = ended_events(csms)
        assert ended["transactionInfo"]["stoppedReason"] == "Local"
        storage = ctx.blocks.transactions.services.storage
        assert (await storage.boot_state()).next_boot_reason == "ScheduledReset"


async def test_b12_immediate_while_on_idle_is_scheduled_resets_at_once(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        await start_transaction(ctx, 1)
        assert await call(csms, conn, "Reset", {"type": "OnIdle"}) == {"status": "Scheduled"}
        assert await call(csms, conn, "Reset", {"type": "Immediate"}) == {"status": "Accepted"}
        assert await ctx.blocks.reset.stop_requests.wait() is StationOutcome.RESET
        [ended] = ended_events(csms)
        assert ended["transactionInfo"]["stoppedReason"] == "ImmediateReset"


async def test_b12_fr_08_evse_reset_ends_its_transaction_and_cycles_it_through_unavailable(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Per EVSE: only that EVSE's transaction ends; the EVSE reports Unavailable, then Available
    again; the station keeps running (no stop request)."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        await start_transaction(ctx, 1)
        await start_transaction(ctx, 2)
        controller = board(ctx, 1)
        assert await call(csms, conn, "Reset", {"type": "Immediate", "evseId": 1}) == {"status": "Accepted"}
        while ctx.blocks.transactions.ids.get(1) is not None:
            await ctx.blocks.transactions.ids.changed.wait()
        controller.unplug()
        await trio.sleep(30)
        assert ctx.blocks.reset.stop_requests.outcome is None
        [ended] = ended_events(csms)
        assert ended["evse"]["id"] == 1
        assert ended["transactionInfo"]["stoppedReason"] == "ImmediateReset"
        assert ctx.blocks.transactions.ids.get(2) is not None
        statuses = [
            s.call.payload["connectorStatus"]
            for s in csms.of("StatusNotification")
            if s.call.payload["evseId"] == 1
        ]
        assert "Unavailable" in statuses
        assert statuses[-1] == "Available"
        assert statuses.index("Unavailable") > statuses.index("Occupied")


async def test_b11_an_inoperative_evse_stays_unavailable_through_its_reset(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """B11: persistent states survive the reset. An EVSE the CSMS set Inoperative is reset and is
    Unavailable afterwards, not Available; the other EVSE is untouched."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        inoperative = {"operationalStatus": "Inoperative", "evse": {"id": 1}}
        assert await call(csms, conn, "ChangeAvailability", inoperative) == {"status": "Accepted"}
        await trio.sleep(5)
        assert ctx.evses[1].published_status() is ConnectorStatus.UNAVAILABLE
        assert await call(csms, conn, "Reset", {"type": "Immediate", "evseId": 1}) == {"status": "Accepted"}
        await trio.sleep(30)
        assert ctx.blocks.reset.stop_requests.outcome is None
        assert ctx.evses[1].published_status() is ConnectorStatus.UNAVAILABLE
        assert ctx.evses[2].published_status() is ConnectorStatus.AVAILABLE
        last_sent = {
            s.call.payload["evseId"]: s.call.payload["connectorStatus"] for s in csms.of("StatusNotification")
        }
    assert last_sent == {1: "Unavailable", 2: "Available"}


async def test_b12_fr_07_evse_on_idle_waits_for_that_evse_only(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        await start_transaction(ctx, 2)
        assert await call(csms, conn, "Reset", {"type": "OnIdle", "evseId": 1}) == {"status": "Accepted"}
        assert await call(csms, conn, "Reset", {"type": "OnIdle", "evseId": 2}) == {"status": "Scheduled"}
        await trio.sleep(30)
        assert ended_events(csms) == []
        await ctx.evses[2].stop_session(StopReason.LOCAL)
        await trio.sleep(30)
        assert ctx.blocks.reset.scheduled == set()
        assert ctx.blocks.reset.stop_requests.outcome is None


async def test_v16_hard_reset_stops_the_transaction_with_hard_reset_then_the_station(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms = CsmsPeer(V16)
    async with online(tmp_path, V16, csms, run_reset=True) as (ctx, conn):
        await start_transaction(ctx, 1)
        assert await call(csms, conn, "Reset", {"type": "Hard"}) == {"status": "Accepted"}
        assert await ctx.blocks.reset.stop_requests.wait() is StationOutcome.RESET
        [stop] = csms.of("StopTransaction")
        assert stop.call.payload["reason"] == "HardReset"


async def test_v16_soft_reset_stops_the_transaction_with_soft_reset(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms = CsmsPeer(V16)
    async with online(tmp_path, V16, csms, run_reset=True) as (ctx, conn):
        await start_transaction(ctx, 2)
        assert await call(csms, conn, "Reset", {"type": "Soft"}) == {"status": "Accepted"}
        assert await ctx.blocks.reset.stop_requests.wait() is StationOutcome.RESET
        [stop] = csms.of("StopTransaction")
        assert stop.call.payload["reason"] == "SoftReset"


async def test_b12_after_the_restart_boot_says_remote_reset_and_the_ended_transaction_stays_ended(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The CSMS does not answer the Reset's Ended: the station still stops after the bounded flush.
    After the restart the BootNotification carries RemoteReset, the queued Ended (ImmediateReset) goes
    out, and the transaction is neither resumed nor ended a second time (no PowerLoss / Reboot end)."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        await start_transaction(ctx, 1)
        await trio.sleep(5)
        await ctx.outbox.wait_empty()
        csms.then("TransactionEvent", *[NoAnswer()] * 10)
        assert await call(csms, conn, "Reset", {"type": "Immediate"}) == {"status": "Accepted"}
        assert await ctx.blocks.reset.stop_requests.wait() is StationOutcome.RESET
        assert len(ended_events(csms)) == 1  # sent, never answered
        assert await ctx.outbox.depth() == 1
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn):
        assert csms.of("BootNotification")[0].call.payload["reason"] == "RemoteReset"
        await ctx.outbox.wait_empty()
        await trio.sleep(60)
        [ended] = ended_events(csms)
        assert ended["transactionInfo"]["stoppedReason"] == "ImmediateReset"
        assert ctx.blocks.transactions.ids.running() == frozenset()
        assert await ctx.blocks.transactions.services.storage.transactions() == []
        assert (await ctx.blocks.transactions.services.storage.boot_state()).next_boot_reason is None

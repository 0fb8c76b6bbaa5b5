"""B04 / OfflineThreshold: after a reconnect, every connector's status if the station was offline longer
than the threshold, else only the statuses that changed while it was offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    CsmsPeer,
    MemoryConnection,
    board,
    open_session_context,
    serving,
    start_transaction,
    statuses_at_boot,
)

from evstation.drivers.sim.board import SimChargeController
from evstation.protocol.rpc import Call
from evstation.protocol.versions import OcppVersion
from evstation.runtime.device_model import OFFLINE_THRESHOLD

V16, V201 = OcppVersion.V16, OcppVersion.V201


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)


@pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])
async def test_b04_short_outage_resends_only_changed_statuses_long_outage_all(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    async with open_session_context(tmp_path, version, run_evses=True) as ctx:
        await ctx.device_model.set(OFFLINE_THRESHOLD, "600")
        everyone = 3 if version is V16 else 2  # 1.6 reports connector 0 too
        first = CsmsPeer(version)
        async with serving(first, MemoryConnection(version, 1), ctx):
            await first.wait_for("StatusNotification", everyone)
        board = ctx.evses[1].controller
        assert isinstance(board, SimChargeController)
        board.plug_in()  # EVSE 1 changes while offline
        await trio.sleep(60)
        short = CsmsPeer(version)
        async with serving(short, MemoryConnection(version, 2), ctx):
            await short.wait_for("StatusNotification")
            await trio.sleep(30)
        changed = [s.call.payload for s in short.of("StatusNotification")]
        assert len(changed) == 1
        assert changed[0].get("connectorId") == 1 and changed[0].get("evseId", 1) == 1
        await trio.sleep(601)
        long = CsmsPeer(version)
        async with serving(long, MemoryConnection(version, 3), ctx):
            await long.wait_for("StatusNotification", everyone)
            await trio.sleep(30)
        assert len(long.of("StatusNotification")) == everyone


def _is_end_message(call: Call) -> bool:
    return call.action == "StopTransaction" or call.payload.get("eventType") == "Ended"


def _connector_1_status(call: Call) -> str | None:
    payload = call.payload
    if call.action != "StatusNotification" or payload.get("connectorId") != 1:
        return None
    return str(payload.get("status", payload.get("connectorStatus")))


@pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])
async def test_b04_a_status_the_drop_kept_off_the_wire_is_sent_after_a_short_outage(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The Available after a transaction's end waits behind its end message, which this CSMS never
    answers; the connection drops meanwhile. The status never went out, so after a short outage it is
    sent (only what went out counts as told), behind the end message sent again."""
    first = CsmsPeer(version, answer_delay=lambda call: 1000.0 if _is_end_message(call) else 0.0)
    async with open_session_context(tmp_path, version, run_evses=True) as ctx:
        await ctx.device_model.set(OFFLINE_THRESHOLD, "600")
        async with trio.open_nursery() as nursery:
            await nursery.start(ctx.blocks.transactions.run)
            async with serving(first, MemoryConnection(version, 1), ctx):
                await first.wait_for("StatusNotification", statuses_at_boot(version))
                await start_transaction(ctx, 1)
                await ctx.outbox.wait_empty()
                board(ctx, 1).unplug()
                end_action = "StopTransaction" if version is V16 else "TransactionEvent"
                while not any(_is_end_message(s.call) for s in first.seen):
                    await first.wait_for(end_action, len(first.of(end_action)) + 1)
                await trio.sleep(5)
            second = CsmsPeer(version)
            async with serving(second, MemoryConnection(version, 2), ctx):
                while "Available" not in [_connector_1_status(s.call) for s in second.seen]:
                    await second.wait_for("StatusNotification", len(second.of("StatusNotification")) + 1)
            nursery.cancel_scope.cancel()
    end = next(i for i, s in enumerate(first.seen) if _is_end_message(s.call))
    assert "Available" not in [_connector_1_status(s.call) for s in first.seen[end:]]
    order = [s.call for s in second.seen]
    available = next(i for i, c in enumerate(order) if _connector_1_status(c) == "Available")
    assert any(_is_end_message(c) for c in order[:available]), [c.action for c in order]

"""B04 / OfflineThreshold: after a reconnect, every connector's status if the station was offline longer
than the threshold, else only the statuses that changed while it was offline."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from runtime_session_harness import CsmsPeer, MemoryConnection, open_session_context, serving

from evstation.drivers.sim.board import SimChargeController
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

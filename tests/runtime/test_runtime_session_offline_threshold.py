"""B04 / OfflineThreshold: after a reconnect, every connector's status if the station was offline longer
than the threshold, else only the statuses that changed while it was offline."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    CsmsPeer,
    MemoryConnection,
    board,
    is_end_message,
    open_session_context,
    serving,
    start_transaction,
    statuses_at_boot,
)

from evstation.drivers.sim.board import SimChargeController
from evstation.protocol.backoff import BackoffSettings
from evstation.protocol.rpc import Call
from evstation.protocol.versions import OcppVersion
from evstation.runtime.device_model import OFFLINE_THRESHOLD
from evstation.runtime.link import CsmsEndpoint, Link, LinkSettings, run_link
from evstation.runtime.session import serve_session
from evstation.runtime.testcsms import TestCsms, serve_test_csms

V16, V201 = OcppVersion.V16, OcppVersion.V201
STATION = "CS-TEST-1"  # the harness's station id


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
            await trio.sleep(1)  # their answers arrive: a status still awaiting one is not told
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
    first = CsmsPeer(version, answer_delay=lambda call: 1000.0 if is_end_message(call) else 0.0)
    async with open_session_context(tmp_path, version, run_evses=True) as ctx:
        await ctx.device_model.set(OFFLINE_THRESHOLD, "600")
        async with trio.open_nursery() as nursery:
            await nursery.start(ctx.blocks.transactions.run)
            async with serving(first, MemoryConnection(version, 1), ctx):
                await first.wait_for("StatusNotification", statuses_at_boot(version))
                await start_transaction(ctx, 1)
                await ctx.outbox.wait_empty()
                board(ctx, 1).unplug()
                await first.wait_for_end()
                await trio.sleep(5)
            second = CsmsPeer(version)
            async with serving(second, MemoryConnection(version, 2), ctx):
                while "Available" not in [_connector_1_status(s.call) for s in second.seen]:
                    await second.wait_for("StatusNotification", len(second.of("StatusNotification")) + 1)
            nursery.cancel_scope.cancel()
    end = next(i for i, s in enumerate(first.seen) if is_end_message(s.call))
    assert "Available" not in [_connector_1_status(s.call) for s in first.seen[end:]]
    order = [s.call for s in second.seen]
    available = next(i for i, c in enumerate(order) if _connector_1_status(c) == "Available")
    assert any(is_end_message(c) for c in order[:available]), [c.action for c in order]


@pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])
async def test_b04_a_status_lost_with_a_silent_link_is_sent_after_a_short_outage(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """A status change goes out on a link that has silently died (no answer, no pong: the station
    redials). The frame went nowhere, so after the short outage it is sent again, even though only
    changed statuses are sent then: unanswered is not told."""
    endpoint = CsmsEndpoint(url="ws://csms.invalid/ocpp", priority=0, security_profile=0)
    quick = BackoffSettings(wait_minimum_s=1.0, random_range_s=0.0, repeat_times=0, attempts_per_endpoint=3)
    settings = LinkSettings(
        station_id=STATION, version=version, endpoints=(endpoint,), backoff=quick, ping_interval_s=300.0
    )
    async with open_session_context(tmp_path, version, run_evses=True, message_timeout_s=30) as ctx:
        await ctx.device_model.set(OFFLINE_THRESHOLD, "600")
        with trio.fail_after(300):  # the timeout at 30 s, the pong timeout 5 s later, a 1 s back-off
            async with trio.open_nursery() as nursery:
                csms: TestCsms = await nursery.start(serve_test_csms)
                serve = functools.partial(serve_session, ctx=ctx)
                link = functools.partial(
                    run_link, settings, Link(), serve, rng=random.Random(0), connector=csms.open_memory_stream
                )
                await nursery.start(link)
                await csms.wait_for(STATION, "StatusNotification", statuses_at_boot(version))
                await trio.sleep(1)  # their answers arrive
                csms.stall(STATION)  # the link dies silently
                board(ctx, 1).plug_in()
                # A stalled connection reads nothing: the status arrives only on the next one.
                await csms.wait_for(STATION, "StatusNotification", statuses_at_boot(version) + 1)
                nursery.cancel_scope.cancel()
    assert csms.connections_total(STATION) == 2
    [resent] = csms.received(STATION, "StatusNotification")[statuses_at_boot(version) :]
    assert resent.payload.get("connectorId") == 1 and resent.payload.get("evseId", 1) == 1

"""A status change the status sender lost to a full event buffer still reaches the CSMS, with no later
EVSE event needed: the Dropped marker ends its queue and it re-sends every connector's status."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from runtime_session_harness import CsmsPeer, MemoryConnection, board, open_session_context, serving

from evstation.drivers.api import FaultCode
from evstation.protocol.rpc import Call
from evstation.protocol.versions import OcppVersion
from evstation.runtime.events import DEFAULT_SUBSCRIBER_BUFFER
from evstation.runtime.evse import ConnectorStatus, FaultChanged

SLOW_ANSWER_S = 5.0


def _of_evse(call: Call, evse_id: int) -> bool:
    payload = call.payload
    if call.action != "StatusNotification":
        return False
    # 1.6 numbers connectors across the station (EVSE n has connector n here); 2.0.1 names the EVSE.
    connector = payload["connectorId"]
    return isinstance(connector, int) and connector >= 1 and payload.get("evseId", connector) == evse_id


def _occupied(call: Call) -> bool:
    status = call.payload.get("status", call.payload.get("connectorStatus"))
    return status in ("Preparing", "Occupied")


@pytest.mark.parametrize("version", [OcppVersion.V16, OcppVersion.V201])
async def test_a_status_lost_at_the_end_of_a_burst_is_sent(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms, conn = CsmsPeer(version), MemoryConnection(version)
    async with open_session_context(tmp_path, version, run_evses=True) as ctx, serving(csms, conn, ctx):
        boot_statuses = await csms.wait_for("StatusNotification", 3 if version is OcppVersion.V16 else 2)
        # The status sender is held up: the CSMS answers EVSE 2's next status slowly.
        csms.answer_delay = lambda call: SLOW_ANSWER_S if _of_evse(call, 2) and _occupied(call) else 0.0
        board(ctx, 2).plug_in()
        await csms.wait_for("StatusNotification", len(boot_statuses) + 1)
        held_until = trio.current_time() + SLOW_ANSWER_S
        # Meanwhile more EVSE events than its buffer holds, then EVSE 1's change, lost; nothing after.
        for _ in range(DEFAULT_SUBSCRIBER_BUFFER + 1):
            ctx.evses.events.publish(FaultChanged(2, FaultCode.GROUND_FAILURE, False))
        dropped = ctx.evses.events.total_dropped
        board(ctx, 1).plug_in()
        while ctx.evses[1].published_status() is not ConnectorStatus.PREPARING:
            await trio.testing.wait_all_tasks_blocked()
        assert ctx.evses.events.total_dropped > dropped
        assert trio.current_time() < held_until  # the sender was still held up when the change was lost
        with trio.fail_after(60):  # virtual time; EVConnectionTimeOut would end EVSE 1's session later
            while not any(_of_evse(s.call, 1) and _occupied(s.call) for s in csms.of("StatusNotification")):
                await csms.wait_for("StatusNotification", len(csms.of("StatusNotification")) + 1)

"""The demo's wait for a status survives losing that status's event to a full buffer."""

from __future__ import annotations

import trio
import trio.testing

from evstation.drivers.api import FaultCode
from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.ev import SimEv
from evstation.runtime.demo import wait_status
from evstation.runtime.events import DEFAULT_SUBSCRIBER_BUFFER
from evstation.runtime.evse import ConnectorStatus, Evses, FaultChanged


async def test_a_lost_status_change_is_read_from_the_evse(clock: trio.testing.MockClock) -> None:
    evses = Evses()
    board = SimChargeController(SimEv())
    evse = evses.add(1, board)
    waited = False

    async def waiter() -> None:
        nonlocal waited
        await wait_status(evses, 1, ConnectorStatus.PREPARING)
        waited = True

    async def flood() -> None:
        # One buffer's worth of unrelated events each round: the waiter reads one event a round, so
        # the EVSE's StatusChanged(Preparing) finds its buffer full and is lost.
        while evse.published_status() is not ConnectorStatus.PREPARING:
            for _ in range(DEFAULT_SUBSCRIBER_BUFFER + 1):
                evses.events.publish(FaultChanged(2, FaultCode.GROUND_FAILURE, False))
            await trio.lowlevel.checkpoint()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(evse.run)
            await trio.testing.wait_all_tasks_blocked()
            assert evse.published_status() is ConnectorStatus.AVAILABLE
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            board.plug_in()
            await flood()
            assert evses.events.total_dropped > 0
            while not waited:  # noqa: ASYNC110 - virtual time: the waiter drains the backlog
                await trio.sleep(0.1)
            nursery.cancel_scope.cancel()

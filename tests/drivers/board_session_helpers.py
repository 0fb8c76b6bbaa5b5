"""Helpers the board-driver session tests share (imported by name: tests/ folders are not packages).

Every wait here is bounded by `STEP_TIMEOUT`, so a silent driver fails the test instead of hanging it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from evstation.drivers.api import ChargeController, ControllerEvent, FaultRaised
from evstation.drivers.safe_stop import Step

STEP_TIMEOUT = 3.0  # real pty I/O: generous, but a hang still fails fast

# A safe stop with nothing going wrong: every step of drivers/safe_stop.py, in the order IEC 61851-1 wants.
COMPLETE_SAFE_STOP = [
    Step.OFFER_WITHDRAWN,
    Step.EV_STOPPED,
    Step.CONTACTOR_OPEN_SENT,
    Step.CONTACTOR_CONFIRMED_OPEN,
    Step.LOCK_RELEASED,
]


async def expect(events: AsyncIterator[ControllerEvent], wanted: ControllerEvent) -> list[ControllerEvent]:
    """Read events until `wanted` arrives; returns everything seen before it."""
    seen: list[ControllerEvent] = []
    with trio.fail_after(STEP_TIMEOUT):
        async for event in events:
            if event == wanted:
                return seen
            seen.append(event)
    raise AssertionError(f"event stream ended before {wanted}")


async def expect_all(events: AsyncIterator[ControllerEvent], *wanted: ControllerEvent) -> None:
    """Read events until every one of `wanted` has arrived, in any order."""
    missing = list(wanted)
    with trio.fail_after(STEP_TIMEOUT):
        async for event in events:
            if event in missing:
                missing.remove(event)
                if not missing:
                    return
    raise AssertionError(f"event stream ended before {missing}")


async def next_fault(events: AsyncIterator[ControllerEvent]) -> FaultRaised:
    """Skip events up to the next `FaultRaised` and return it."""
    with trio.fail_after(STEP_TIMEOUT):
        async for event in events:
            if isinstance(event, FaultRaised):
                return event
    raise AssertionError("no fault")


@asynccontextmanager
async def running(board: ChargeController) -> AsyncIterator[None]:
    """Run `board` (started within `STEP_TIMEOUT`) for the duration of the block."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(STEP_TIMEOUT):
            await nursery.start(board.run)
        yield
        nursery.cancel_scope.cancel()

"""Sending a message after a handler's answer, from the block's own nursery.

Some requests are answered first and acted on afterwards: a report's NotifyReport pages (provisioning),
a triggered message (trigger). The block's handler starts the sending task here and returns; the task
then sends with `Uplink.call_requested` (which also works while the CSMS keeps the station Pending).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVarTuple

import trio

__all__ = ["AfterAnswer"]

_Args = TypeVarTuple("_Args")


class AfterAnswer:
    """A block's nursery for the tasks its handlers start; `run` it for the block's lifetime."""

    def __init__(self, block: str) -> None:
        self._block = block
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover

    def start_soon(self, async_fn: Callable[[*_Args], Awaitable[object]], *args: *_Args) -> None:
        """Start `async_fn(*args)` once the running handler has returned.

        The handler returns before this task first runs, and the CallManager takes its (FIFO) send lock
        for the answer before it yields: the answer is on the wire before anything the task sends.
        """
        if self._nursery is None:
            raise RuntimeError(f"the {self._block} block is not running")
        self._nursery.start_soon(async_fn, *args)

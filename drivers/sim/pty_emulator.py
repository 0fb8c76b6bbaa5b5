"""What the board emulators share: the pty service loop, the EV/fault control surface, wire corruption.

Board protocols stay in rapi_emulator.py, yeti_emulator.py and phyverso_emulator.py (the last two on
framed_emulator.py). Never used by production code paths.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NoReturn, TypeVar

import trio

from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.pty_port import open_pty_master

_STALLED_WRITE_S = 0.5  # a write blocked this long has no reader: the bytes are dropped


class PtyEmulator:
    """Base of a board emulator on the master side of a pseudo-terminal.

    Subclasses set `faults` (a dataclass of bool flags), implement `_read_host` and `_services`, and
    write through `_write`; `_poke` wakes whichever service reports changes.
    """

    faults: Any

    def __init__(self, ev: SimEv | None) -> None:
        self.ev = ev if ev is not None else SimEv()
        self.silent = False
        self._corrupt_next = 0
        self._corruption_sent = trio.Event()
        self._path: str | None = None
        self._stream: trio.lowlevel.FdStream | None = None
        self._send_lock = trio.Lock()
        self._changed = trio.Event()
        self._observed = trio.Event()  # replaced on every poke: what `wait_until` waits on

    # ---------------------------------------------------------------- control surface

    @property
    def port_path(self) -> str:
        if self._path is None:
            raise RuntimeError("emulator not running")
        return self._path

    def update_ev(self, **changes: Any) -> None:
        """Change the EV (plugged=..., wants_energy=..., max_current_a=...) and let the board see it."""
        for name, value in changes.items():
            if not hasattr(self.ev, name):
                raise AttributeError(f"SimEv has no attribute {name!r}")
            setattr(self.ev, name, value)
        self._poke()

    def inject(self, **faults: bool) -> None:
        """Set or clear faults by field name of this emulator's `faults` (see its class)."""
        for name, value in faults.items():
            if not hasattr(self.faults, name):
                raise AttributeError(f"no such fault {name!r}")
            setattr(self.faults, name, value)
        self._poke()

    async def wait_corruption_sent(self) -> None:
        """Return once every corrupted line or frame asked for is on the wire."""
        await self._corruption_sent.wait()

    # ---------------------------------------------------------------- service

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Serve forever; `started` with the slave path the driver should open."""
        async with open_pty_master() as (stream, path), trio.open_nursery() as nursery:
            self._stream = stream
            self._path = path
            nursery.start_soon(self._read_host, stream)
            for service in self._services():
                nursery.start_soon(service)
            task_status.started(path)
            await trio.sleep_forever()
        raise AssertionError("unreachable")

    def _services(self) -> Sequence[Callable[[], Awaitable[None]]]:
        """The board's own tasks besides reading the host, in start order."""
        raise NotImplementedError

    async def _read_host(self, stream: trio.lowlevel.FdStream) -> None:
        raise NotImplementedError

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; it is checked after every host command and state change."""
        while not predicate():
            await self._observed.wait()

    def _poke(self) -> None:
        """Something changed: the reporting service looks again, and so do `wait_until` callers."""
        self._changed.set()
        self._notify()

    def _notify(self) -> None:
        observed, self._observed = self._observed, trio.Event()
        observed.set()

    def _arm_corruption(self, count: int) -> None:
        self._corrupt_next += count
        self._corruption_sent = trio.Event()

    def _corrupt_this_one(self) -> bool:
        """Whether what is being sent now goes out corrupted; counts it against the armed number."""
        if self._corrupt_next <= 0:
            return False
        self._corrupt_next -= 1
        if self._corrupt_next == 0:
            self._corruption_sent.set()
        return True

    async def _write(self, wire: bytes) -> None:
        if self._stream is None:
            return
        async with self._send_lock:
            # A UART sends whether anyone listens or not: with no reader on the slave (the station
            # died) the pty buffer fills, and the board must go on rather than block on it.
            with trio.move_on_after(_STALLED_WRITE_S):
                await self._stream.send_all(wire)


EmulatorT = TypeVar("EmulatorT", bound=PtyEmulator)


@asynccontextmanager
async def serve_emulator(emulator: EmulatorT) -> AsyncIterator[EmulatorT]:
    """Run `emulator` for the duration of the block."""
    async with trio.open_nursery() as nursery:
        await nursery.start(emulator.run)
        yield emulator
        nursery.cancel_scope.cancel()

"""What every serial charge-controller driver shares: port supervision, the session frame, comm faults.

Board protocols stay in the drivers (rapi.py, yeti.py); this module never parses bytes and never
makes threads (serial_port.py does, at the hardware boundary).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import NoReturn, Protocol

import trio

from evstation.drivers.api import ControllerEvent, FaultCleared, FaultCode, FaultRaised
from evstation.drivers.boards.serial_port import SerialPort, SerialPortError, supervise_port


class _ReconnectCounter(Protocol):
    reconnects: int


class SessionGuard:
    """One session's task group: a failure of a guarded task (a `fatal` error) ends the session."""

    def __init__(self, nursery: trio.Nursery, fatal: tuple[type[Exception], ...]) -> None:
        self.nursery = nursery
        self.failures: list[str] = []
        self._fatal = fatal

    async def run(self, fn: Callable[[], Awaitable[None]]) -> None:
        try:
            await fn()
        except self._fatal as exc:
            self.failures.append(str(exc))
            self.nursery.cancel_scope.cancel()

    def start_soon(self, fn: Callable[[], Awaitable[None]]) -> None:
        self.nursery.start_soon(self.run, fn)


class SupervisedBoard:
    """Base of a serial board driver: `run` owns the port forever, a session per successful open.

    Subclasses set `stats` (with a `reconnects` counter), implement `_receive` and `_session`, and
    build `_session` on `_port_session`.
    """

    stats: _ReconnectCounter

    def __init__(self, port: str, *, baudrate: int, reopen_interval: float, read_timeout: float) -> None:
        self._path = port
        self._baudrate = baudrate
        self._reopen_interval = reopen_interval
        self._read_timeout = read_timeout
        self._events_send, self._events_recv = trio.open_memory_channel[ControllerEvent](256)
        self._port: SerialPort | None = None
        self._comm_fault = False

    def events(self) -> AsyncIterator[ControllerEvent]:
        return self._events_recv

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Own the port forever: open, run a session; reopen after a port failure.

        Started once the first session is set up, or once the first open failed (a fault event says so).
        """
        await supervise_port(
            self._path,
            self._baudrate,
            read_timeout=self._read_timeout,
            reopen_interval=self._reopen_interval,
            session=self._session,
            session_ended=self._session_ended,
            task_status=task_status,
        )

    async def _session(self, port: SerialPort, ready: Callable[[], None]) -> None:
        raise NotImplementedError

    async def _receive(self, chunks: trio.MemoryReceiveChannel[bytes]) -> None:
        raise NotImplementedError

    async def _session_ended(self, error: str | None) -> None:
        if error is not None:
            self._port = None
            await self._raise_comm_fault(error)
        self.stats.reconnects += 1

    @asynccontextmanager
    async def _port_session(
        self, port: SerialPort, *, fatal: tuple[type[Exception], ...]
    ) -> AsyncIterator[SessionGuard]:
        """Read and decode `port` in guarded tasks while the body sets the board up.

        Ends only by raising one `SerialPortError` (not a group): the first guarded failure, or
        "session ended" if none.
        """
        chunks_send, chunks_recv = trio.open_memory_channel[bytes](64)
        async with trio.open_nursery() as nursery:
            guard = SessionGuard(nursery, fatal)
            guard.start_soon(partial(port.read_into, chunks_send))
            guard.start_soon(partial(self._receive, chunks_recv))
            self._port = port
            yield guard
        self._port = None
        raise SerialPortError(guard.failures[0] if guard.failures else f"{self._path}: session ended")

    async def _raise_comm_fault(self, detail: str) -> None:
        if not self._comm_fault:
            self._comm_fault = True
            await self._emit(FaultRaised(FaultCode.BOARD_COMMUNICATION, detail))

    async def _clear_comm_fault(self) -> None:
        if self._comm_fault:
            self._comm_fault = False
            await self._emit(FaultCleared(FaultCode.BOARD_COMMUNICATION))

    async def _emit(self, event: ControllerEvent) -> None:
        await self._events_send.send(event)

"""What every serial charge-controller driver shares: port supervision, the session frame, comm faults,
and running the safe stop when the session is cancelled.

Board protocols stay in the drivers (rapi.py, yeti.py, phyverso.py); this module never parses bytes
and never makes threads (serial_port.py does, at the hardware boundary).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Final, NoReturn, Protocol, TypedDict, Unpack

import trio

from evstation.drivers.api import ControllerEvent, FaultCleared, FaultCode, FaultRaised
from evstation.drivers.boards.serial_port import SerialPort, SerialPortError, supervise_port
from evstation.drivers.safe_stop import SafeStopBoard, SafeStopReport, SafeStopTimeouts, run_safe_stop

# The fault a supervised serial board raises itself: the link to the MCU lost (port error, silence).
# Part of every serial board's FAULTS_RAISED.
SUPERVISION_FAULTS: Final[frozenset[FaultCode]] = frozenset({FaultCode.BOARD_COMMUNICATION})
REOPEN_INTERVAL_S = 2.0
READ_TIMEOUT_S = 0.1


class _ReconnectCounter(Protocol):
    reconnects: int


class PortSettings(TypedDict, total=False):
    """How a board driver keeps its port (keyword arguments every board driver takes besides `baudrate`):
    `reopen_interval` between attempts to open it, `read_timeout` of one read, `safe_stop` timeouts."""

    reopen_interval: float
    read_timeout: float
    safe_stop: SafeStopTimeouts | None


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


class SupervisedPort:
    """Base of a serial board driver: `run` owns the port forever, a session per successful open.

    Subclasses set `stats` (with a `reconnects` counter), implement `_receive`, `_session` (built on
    `_run_port_session`), `_port_failed` (say that the board is out of reach) and `_safe_stop` (put
    everything the port drives into its safe state).
    """

    stats: _ReconnectCounter

    def __init__(
        self,
        port: str,
        *,
        baudrate: int,
        reopen_interval: float = REOPEN_INTERVAL_S,
        read_timeout: float = READ_TIMEOUT_S,
        safe_stop: SafeStopTimeouts | None = None,
    ) -> None:
        self.safe_stop_timeouts = safe_stop or SafeStopTimeouts()
        self._path = port
        self._baudrate = baudrate
        self._reopen_interval = reopen_interval
        self._read_timeout = read_timeout
        self._port: SerialPort | None = None

    @property
    def path(self) -> str:
        return self._path

    @property
    def port_open(self) -> bool:
        return self._port is not None

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

    async def _port_failed(self, error: str) -> None:
        raise NotImplementedError

    async def _safe_stop(self) -> None:
        raise NotImplementedError

    async def _session_ended(self, error: str | None) -> None:
        if error is not None:
            self._port = None
            await self._port_failed(error)
        self.stats.reconnects += 1

    async def _run_port_session(
        self,
        port: SerialPort,
        *,
        fatal: tuple[type[Exception], ...],
        setup: Callable[[SessionGuard], Awaitable[None]],
    ) -> NoReturn:
        """Read and decode `port` while `setup(guard)` sets the board up, then until cancelled.

        Ends by raising one `SerialPortError` (the first guarded failure) when the port fails; when the
        task is cancelled instead (station stopping, a sibling task crashed), the board is first put
        into its safe state (`_safe_stop`) under a shield with a deadline, the reader still running so
        the board's reports are seen, and the cancellation then goes on.
        """
        chunks_send, chunks_recv = trio.open_memory_channel[bytes](64)
        reader_scopes: list[trio.CancelScope] = []

        async def shielded(fn: Callable[[], Awaitable[None]]) -> None:
            # Outer cancellation must not stop the reader: the safe stop needs the board's answers.
            with trio.CancelScope(shield=True) as scope:
                reader_scopes.append(scope)
                await fn()

        async with trio.open_nursery() as nursery:
            guard = SessionGuard(nursery, fatal)
            nursery.start_soon(shielded, partial(guard.run, partial(port.read_into, chunks_send)))
            nursery.start_soon(shielded, partial(guard.run, partial(self._receive, chunks_recv)))
            self._port = port
            try:
                await setup(guard)
                await trio.sleep_forever()
            finally:
                if not guard.failures:
                    with trio.CancelScope(shield=True) as scope:
                        # The sequence keeps its own deadline (and reports it); this one is the backstop.
                        scope.deadline = trio.current_time() + self.safe_stop_timeouts.deadline_s + 1.0
                        await self._safe_stop()
                self._port = None
                for scope in reader_scopes:
                    scope.cancel()
        raise SerialPortError(guard.failures[0] if guard.failures else f"{self._path}: session ended")


class SupervisedBoard(SupervisedPort):
    """A `SupervisedPort` that is one `ChargeController`: one event stream, one comm fault, one safe stop.

    Subclasses implement `_safe_stop_board` (the board's side of drivers/safe_stop.py).
    """

    def __init__(self, port: str, *, baudrate: int, **settings: Unpack[PortSettings]) -> None:
        super().__init__(port, baudrate=baudrate, **settings)
        self.last_safe_stop: SafeStopReport | None = None
        self._events_send, self._events_recv = trio.open_memory_channel[ControllerEvent](256)
        self._comm_fault = False

    def events(self) -> AsyncIterator[ControllerEvent]:
        return self._events_recv

    async def _port_failed(self, error: str) -> None:
        await self._raise_comm_fault(error)

    async def _safe_stop(self) -> None:
        self.last_safe_stop = await run_safe_stop(self._safe_stop_board(), self.safe_stop_timeouts)

    def _safe_stop_board(self) -> SafeStopBoard:
        raise NotImplementedError

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

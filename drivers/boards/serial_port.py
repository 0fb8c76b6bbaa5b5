"""One serial port at the hardware boundary: a pyserial reader thread feeding a Trio channel, locked writes.

The only place in the board drivers that makes threads. It never parses bytes and never abandons a
thread that owns the port: the reader polls for cancellation every read timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NoReturn

import serial
import trio

DEFAULT_READ_TIMEOUT_S = 0.1
DEFAULT_WRITE_TIMEOUT_S = 1.0
_MAX_READ_CHUNK = 4096


class SerialPortError(Exception):
    """The port could not be opened, or failed while open (unplugged adapter, pty master gone)."""


class SerialPort:
    """An open port. Create with `open_serial_port`; run `read_into` in exactly one task."""

    def __init__(self, port: serial.Serial) -> None:
        self._serial = port
        self._write_lock = trio.Lock()

    @property
    def path(self) -> str:
        return str(self._serial.port)

    async def read_into(self, send: trio.MemorySendChannel[bytes]) -> None:
        """Forward received chunks until cancelled; raises `SerialPortError` when the port fails."""
        async with send:
            await trio.to_thread.run_sync(self._read_loop, send)

    def _read_loop(self, send: trio.MemorySendChannel[bytes]) -> None:
        while True:
            # The read below blocks at most one read timeout, so cancellation is seen that quickly.
            trio.from_thread.check_cancelled()
            try:
                waiting = self._serial.in_waiting
                data = self._serial.read(min(max(waiting, 1), _MAX_READ_CHUNK))
            except (serial.SerialException, OSError) as exc:
                raise SerialPortError(f"{self.path}: read failed: {exc}") from exc
            if data:
                trio.from_thread.run(send.send, data)

    async def write(self, data: bytes) -> None:
        """Write all of `data`; concurrent writers are serialised so frames never interleave."""
        async with self._write_lock:
            try:
                await trio.to_thread.run_sync(self._write_all, data)
            except (serial.SerialException, OSError) as exc:
                raise SerialPortError(f"{self.path}: write failed: {exc}") from exc

    def _write_all(self, data: bytes) -> None:
        self._serial.write(data)
        self._serial.flush()


@asynccontextmanager
async def open_serial_port(
    path: str,
    baudrate: int,
    *,
    read_timeout: float = DEFAULT_READ_TIMEOUT_S,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT_S,
) -> AsyncIterator[SerialPort]:
    """Open `path` 8N1 (/dev/ttyUSB0, /dev/serial0, a pty slave, or a pyserial URL); close on exit."""

    def _open() -> serial.Serial:
        # serial_for_url: a device path as usual, or rfc2217:// / socket:// for a remote serial server.
        return serial.serial_for_url(
            path,
            baudrate=baudrate,
            timeout=read_timeout,
            write_timeout=write_timeout,
            exclusive=True,  # a second process on the same UART would corrupt both streams
        )

    try:
        raw = await trio.to_thread.run_sync(_open)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SerialPortError(f"{path}: cannot open: {exc}") from exc
    try:
        yield SerialPort(raw)
    finally:
        raw.close()


async def supervise_port(
    path: str,
    baudrate: int,
    *,
    read_timeout: float,
    reopen_interval: float,
    session: Callable[[SerialPort, Callable[[], None]], Awaitable[None]],
    session_ended: Callable[[str | None], Awaitable[None]],
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Own a board's port forever: open it, run `session(port, ready)`, reopen after a failure.

    `session` calls `ready()` once it is set up; the supervisor also reports started after the first
    failed open, so a station boots even with its board unplugged (a fault event tells why).
    `session_ended(error)` runs after every session, with the port error's text or None.
    """
    started = False

    def ready() -> None:
        nonlocal started
        if not started:
            started = True
            task_status.started()

    while True:
        error: str | None = None
        try:
            async with open_serial_port(path, baudrate, read_timeout=read_timeout) as port:
                await session(port, ready)
        except SerialPortError as exc:
            error = str(exc)
        await session_ended(error)
        ready()
        await trio.sleep(reopen_interval)

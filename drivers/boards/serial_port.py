"""One serial port at the hardware boundary: a pyserial reader thread feeding a Trio channel, locked writes.

The only place in the board drivers that makes threads. It never parses bytes and never abandons a
thread that owns the port: the reader polls for cancellation every read timeout.
"""

from __future__ import annotations

import errno
import grp
import logging
import os
import pwd
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import NoReturn

import serial
import trio

log = logging.getLogger(__name__)

DEFAULT_READ_TIMEOUT_S = 0.1
DEFAULT_WRITE_TIMEOUT_S = 1.0
# While a port keeps failing the same way, the log repeats it at most this often (with a count): the
# first line says why, and a station retrying every 2 s for a week must not fill the journal.
FAILURE_LOG_INTERVAL_S = 300.0
_MAX_READ_CHUNK = 4096
# Debian and Raspberry Pi OS give serial devices (/dev/ttyUSB*, /dev/ttyACM*, /dev/serial0) this group.
SERIAL_GROUP = "dialout"


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


def open_failure_reason(path: str, exc: BaseException) -> str:
    """Why `path` could not be opened, said the way the person installing the station can act on it."""
    code = getattr(exc, "errno", None)
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return (
            "no such device: is the board connected and the path right? "
            "(`ls -l /dev/serial/by-id/` lists USB adapters by name)"
        )
    if code in (errno.EACCES, errno.EPERM):
        user = _name(lambda: pwd.getpwuid(os.geteuid()).pw_name, str(os.geteuid()))
        group = _name(lambda: grp.getgrgid(os.stat(path).st_gid).gr_name, SERIAL_GROUP)
        hint = "" if group == SERIAL_GROUP else f"; this device belongs to group '{group}'"
        return (
            f"permission denied: add the user {user} to the '{SERIAL_GROUP}' group "
            f"(`sudo usermod -aG {SERIAL_GROUP} {user}`, then restart the station){hint}"
        )
    if code in (errno.EBUSY, errno.EAGAIN) or "exclusively lock" in str(exc):
        return "in use by another program (a serial console on the UART, ModemManager, a second station?)"
    return str(exc)


def _name(lookup: Callable[[], str], fallback: str) -> str:
    try:
        return lookup()
    except (KeyError, OSError):
        return fallback


def open_raw(
    path: str,
    baudrate: int,
    *,
    read_timeout: float = DEFAULT_READ_TIMEOUT_S,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT_S,
) -> serial.Serial:
    """Open `path` 8N1, blocking (run it in a worker thread); `SerialPortError` says why it failed."""
    try:
        # serial_for_url: a device path as usual, or rfc2217:// / socket:// for a remote serial server.
        return serial.serial_for_url(
            path,
            baudrate=baudrate,
            timeout=read_timeout,
            write_timeout=write_timeout,
            exclusive=True,  # a second process on the same UART would corrupt both streams
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SerialPortError(f"{path}: cannot open: {open_failure_reason(path, exc)}") from exc


@asynccontextmanager
async def open_serial_port(
    path: str,
    baudrate: int,
    *,
    read_timeout: float = DEFAULT_READ_TIMEOUT_S,
    write_timeout: float = DEFAULT_WRITE_TIMEOUT_S,
) -> AsyncIterator[SerialPort]:
    """Open `path` 8N1 (/dev/ttyUSB0, /dev/serial0, a pty slave, or a pyserial URL); close on exit."""
    raw = await trio.to_thread.run_sync(
        lambda: open_raw(path, baudrate, read_timeout=read_timeout, write_timeout=write_timeout)
    )
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
    `session_ended(error)` runs after every session, with the port error's text or None. Each failure
    is logged once, then at most every `FAILURE_LOG_INTERVAL_S` while it repeats.
    """
    started = False
    failures = FailureLog(FAILURE_LOG_INTERVAL_S)

    def ready() -> None:
        nonlocal started
        if not started:
            started = True
            task_status.started()

    def session_ready() -> None:
        failures.recovered(path)
        ready()

    while True:
        error: str | None = None
        try:
            async with open_serial_port(path, baudrate, read_timeout=read_timeout) as port:
                await session(port, session_ready)
        except SerialPortError as exc:
            error = str(exc)
        if error is not None:
            failures.failed(error, trio.current_time())
        await session_ended(error)
        ready()
        await trio.sleep(reopen_interval)


class FailureLog:
    """Logs a failure the first time, then, while the same failure repeats, at most once per
    `interval_s` with how often it happened meanwhile. Time comes in as `now`: no clock is read here."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._logged_at: dict[str, float] = {}
        self._repeats: dict[str, int] = {}

    def failed(self, reason: str, now: float) -> None:
        logged_at = self._logged_at.get(reason)
        if logged_at is None:
            log.warning("%s", reason)
        elif now - logged_at >= self._interval_s:
            repeats = self._repeats[reason] + 1
            log.warning("%s (still failing: %d times in the last %.0f s)", reason, repeats, now - logged_at)
        else:
            self._repeats[reason] += 1
            return
        self._logged_at[reason] = now
        self._repeats[reason] = 0

    def recovered(self, what: str) -> None:
        """The port works again: say so if a failure was logged, and log the next failure at once."""
        if self._logged_at:
            log.info("%s: open and answering again", what)
        self._logged_at.clear()
        self._repeats.clear()

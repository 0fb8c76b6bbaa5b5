"""systemd's service notification protocol (sd_notify), spoken directly: one datagram per message to the
Unix socket named by $NOTIFY_SOCKET (READY=1, WATCHDOG=1, STOPPING=1, STATUS=...).

Without $NOTIFY_SOCKET (not started by systemd with Type=notify) it does nothing. Sending never blocks
the event loop, and a failed send is logged, never raised: the station runs on without its supervisor.
"""

from __future__ import annotations

import logging
import os
import socket as stdlib_socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import NoReturn

import trio

from evstation.records import record

log = logging.getLogger(__name__)

USEC_PER_S = 1_000_000


class NotifyConfigError(ValueError):
    """$NOTIFY_SOCKET or $WATCHDOG_USEC cannot be used (the text says which and why)."""


@record
class NotifySettings:
    """Where to send notifications and how often the watchdog wants to hear from us."""

    address: str  # a filesystem path, or an abstract-namespace name starting with NUL
    watchdog_interval_s: float | None  # half of $WATCHDOG_USEC, as sd_notify(3) recommends

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int) -> NotifySettings | None:
        """The settings systemd passed in the environment; None when not run under Type=notify."""
        raw = environ.get("NOTIFY_SOCKET")
        if not raw:
            return None
        if raw.startswith("@"):
            address = "\0" + raw[1:]  # Linux abstract namespace, spelled '@' in the variable
        elif raw.startswith("/"):
            address = raw
        else:
            raise NotifyConfigError(
                f"NOTIFY_SOCKET={raw!r}: only an absolute path or an abstract '@name' is supported"
            )
        return cls(address, _watchdog_interval(environ, pid))


def _watchdog_interval(environ: Mapping[str, str], pid: int) -> float | None:
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    # WATCHDOG_PID names the process the watchdog is meant for; a child that inherited it is not that.
    owner = environ.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    try:
        usec = int(raw)
    except ValueError:
        raise NotifyConfigError(f"WATCHDOG_USEC={raw!r} is not an integer") from None
    if usec <= 0:
        raise NotifyConfigError(f"WATCHDOG_USEC={raw!r} must be positive")
    return usec / USEC_PER_S / 2


class Notifier:
    """Sends notifications to systemd over one connected datagram socket."""

    def __init__(self, sock: trio.socket.SocketType, settings: NotifySettings) -> None:
        self._sock = sock
        self.settings = settings
        self._failing = False

    async def notify(self, *assignments: str) -> None:
        """Send `KEY=value` lines as one datagram; a failure is logged once until a send works again."""
        data = "\n".join(assignments).encode()
        try:
            await self._sock.send(data)
        except OSError as exc:
            if not self._failing:
                log.warning("cannot notify systemd (%s): %s", ", ".join(assignments), exc)
            self._failing = True
            return
        self._failing = False

    async def run_watchdog(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """WATCHDOG=1 every half watchdog interval, from the event loop itself: if the loop blocks, the
        pings stop and systemd restarts the station. Without a watchdog this only waits."""
        interval = self.settings.watchdog_interval_s
        task_status.started()
        if interval is None:
            await trio.sleep_forever()
        while True:
            await self.notify("WATCHDOG=1")
            await trio.sleep(interval)


@asynccontextmanager
async def open_notifier(environ: Mapping[str, str] | None = None) -> AsyncIterator[Notifier | None]:
    """A Notifier for systemd's socket, or None when there is none; the socket closes on exit."""
    settings = NotifySettings.from_environ(os.environ if environ is None else environ, os.getpid())
    if settings is None:
        yield None
        return
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
    with sock:
        try:
            await sock.connect(settings.address)
        except OSError as exc:
            # Still start: the station is useful without its supervisor, and the log says why.
            log.warning("cannot reach systemd's notify socket %s: %s", _shown(settings.address), exc)
        yield Notifier(sock, settings)


def _shown(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address

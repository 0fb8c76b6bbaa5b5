"""Helpers for the whole-station tests: a station.toml writer, an `evstation run` subprocess and a
control-API client on the Unix socket.

Test support only; it never reaches into the station process other than through its CLI, its control
socket and its SQLite file.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import trio

REPO = Path(__file__).resolve().parents[2]
CONNECT_RETRY_S = 0.02  # polling interval while the station process creates its control socket


@contextmanager
def short_dir() -> Iterator[Path]:
    """A fresh folder directly under /tmp: a Unix socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="evs-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(
    folder: Path,
    *,
    version: str,
    port: int,
    station_id: str = "E2E-1",
    evses: int = 1,
    extra_csms: str = "",
) -> Path:
    """A sim station.toml in `folder` (data dir `folder/data`, control socket `folder/c.sock`)."""
    evse_tables = "".join(
        f"""
[[evse]]
id = {n}
[[evse.connector]]
id = 1
type = "cType2"
phases = 3
max_current_a = 32
[evse.controller]
driver = "sim"
[evse.meter]
driver = "sim"
"""
        for n in range(1, evses + 1)
    )
    text = f"""
[station]
id = "{station_id}"
vendor = "evstation"
model = "e2e"
ocpp_version = "{version}"
data_dir = "data"

[csms]
retry_backoff_wait_minimum_s = 0.2
retry_backoff_random_range_s = 0
heartbeat_interval_s = 300
{extra_csms}

[[csms.endpoints]]
url = "ws://127.0.0.1:{port}/ocpp"
security_profile = 0

[control]
socket_path = "c.sock"
{evse_tables}
"""
    path = folder / "station.toml"
    path.write_text(text)
    return path


def station_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "evstation", *args]


def _log_files(folder: Path) -> tuple[BinaryIO, BinaryIO]:
    return open(folder / "stdout.log", "ab"), open(folder / "stderr.log", "ab")


@asynccontextmanager
async def station_process(config: Path, env: dict[str, str] | None = None) -> AsyncIterator[trio.Process]:
    """`evstation run --config CONFIG` as a subprocess; killed (SIGKILL) on exit unless already gone.

    Its output goes to files next to the config so a full pipe can never block it. `env` adds to (or
    overrides) this process's environment.
    """
    out, err = _log_files(config.parent)
    with out, err:
        process = await trio.lowlevel.open_process(
            station_command("run", "--config", str(config)),
            stdout=out,
            stderr=err,
            cwd=REPO,
            env={**os.environ, **(env or {})},
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def terminate(process: trio.Process, signum: signal.Signals = signal.SIGTERM) -> int:
    process.send_signal(signum)
    return await process.wait()


def stderr_of(config: Path) -> str:
    path = config.parent / "stderr.log"
    return path.read_text() if path.exists() else ""


class ControlClient:
    """One connection to the control API: requests with replies, and (after subscribe) events."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    async def _line(self) -> dict[str, Any]:
        while (newline := self._buffer.find(b"\n")) < 0:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise EOFError("control connection closed")
            self._buffer += chunk
        line = bytes(self._buffer[:newline])
        del self._buffer[: newline + 1]
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    async def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one op and return its reply; events arriving meanwhile are kept in `events`."""
        self._next_id += 1
        request_id = self._next_id
        await self._stream.send_all((json.dumps({"id": request_id, "op": op, **args}) + "\n").encode())
        while True:
            message = await self._line()
            if "event" in message:
                self.events.append(message)
            elif message.get("id") == request_id:
                return message

    async def ok(self, op: str, **args: Any) -> dict[str, Any]:
        reply = await self.request(op, **args)
        assert reply["ok"], reply
        result: dict[str, Any] = reply["result"]
        return result

    async def wait_event(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The first event (kept or new) matching `predicate`."""
        for event in self.events:
            if predicate(event):
                return event
        while True:
            message = await self._line()
            if "event" in message:
                self.events.append(message)
                if predicate(message):
                    return message


@asynccontextmanager
async def control_client(socket_path: Path, process: trio.Process) -> AsyncIterator[ControlClient]:
    """Connect once the station has created its socket (fails if the process died first)."""
    while True:
        if process.returncode is not None or process.poll() is not None:
            raise AssertionError(f"station exited with {process.returncode} before its control socket")
        try:
            stream = await trio.open_unix_socket(os.fspath(socket_path))
            break
        except (FileNotFoundError, ConnectionRefusedError):
            await trio.sleep(CONNECT_RETRY_S)
    async with stream:
        yield ControlClient(stream)


def outbox_rows(data_dir: Path) -> list[tuple[str, dict[str, Any]]]:
    """(action, payload) of every queued outbox entry, read straight from the station's SQLite file."""
    db = next(data_dir.glob("*.sqlite3"))
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT action, payload FROM outbox ORDER BY id").fetchall()
    finally:
        conn.close()
    return [(action, json.loads(payload)) for action, payload in rows]


async def run_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    """A short-lived `evstation ...` command, its output captured; bound it with trio.fail_after."""
    return await trio.run_process(
        station_command(*args), capture_stdout=True, capture_stderr=True, cwd=REPO, check=False
    )

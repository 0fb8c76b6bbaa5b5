"""`evstation run` on a disk that refuses writes from the start. The refusal is real: the process may not
grow any file past a limit (`RLIMIT_FSIZE`, SIGXFSZ ignored: a write past it fails, as on a full disk),
the same as root and as another user.

- Before the database is usable (a new file that cannot be created, a schema that needs a migration it
  cannot write): the station cannot run its code on a schema it cannot migrate; it stops before
  dialling the CSMS, with one line naming the file and SQLite's error, exit status 1.
- A current schema whose writes are refused: the whole station starts, comes online Faulted and sends
  what is queued; the end of the interrupted transaction waits for writes (here: the next run).
- A current schema SQLite cannot even open read-write (no room for the `-shm` a WAL file needs): the
  station opens it read-only and runs as above; once the disk has room again (the limit lifted in the
  running process), its next write reopens the file read-write and it recovers without a restart.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket as stdlib_socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pytest
import trio
from e2e_station import (
    REPO,
    control_client,
    outbox_rows,
    short_dir,
    station_command,
    station_process,
    stderr_of,
    terminate,
    write_config,
)

from evstation.runtime.migrations import all_migrations
from evstation.runtime.storage import connect, migrate, schema_version
from evstation.runtime.testcsms import TestCsms, serve_test_csms

TIMEOUT_S = 18.0
DATABASE = "evstation.sqlite3"  # in the data dir (StationConfig.database_path)


STATION = "E2E-FULL-DISK"
WAL_LIMIT = 32768  # the size of the -shm file: it fits, the write-ahead log may not grow past it


def _full_disk(limit: int) -> None:
    """In the child, before exec: no file may grow past `limit` bytes."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), no signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


async def _run_on_a_full_disk(config: Path, limit: int) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        station_command("run", "--config", str(config)),
        capture_stdout=True,
        capture_stderr=True,
        cwd=REPO,
        check=False,
        preexec_fn=lambda: _full_disk(limit),
    )


def _log_file(config: Path) -> BinaryIO:
    return open(config.parent / "full-disk.log", "wb")


@asynccontextmanager
async def _station_on_a_full_disk(config: Path, limit: int = WAL_LIMIT) -> AsyncIterator[trio.Process]:
    """`evstation run` whose files may not grow past `limit`; output to the folder (pipes never fill,
    and its few lines stay far below the limit). SIGKILLed on exit unless already gone."""
    with _log_file(config) as out:
        process = await trio.lowlevel.open_process(
            station_command("run", "--config", str(config)),
            stdout=out,
            stderr=out,
            cwd=REPO,
            env=dict(os.environ),
            preexec_fn=lambda: _full_disk(limit),
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def _start_refused(folder: Path, limit: int) -> tuple[subprocess.CompletedProcess[bytes], bool, Path]:
    csms = stdlib_socket.socket()
    csms.bind(("127.0.0.1", 0))
    csms.listen()
    csms.setblocking(False)
    with csms:
        config = write_config(folder, version="2.0.1", port=csms.getsockname()[1])
        done = await _run_on_a_full_disk(config, limit)
        try:
            csms.accept()
            dialled = True
        except BlockingIOError:
            dialled = False
    return done, dialled, config


def _the_one_line(done: subprocess.CompletedProcess[bytes], config: Path) -> str:
    assert done.returncode == 1
    stderr = done.stderr.decode()
    assert "Traceback" not in stderr, stderr
    (line,) = [text for text in stderr.splitlines() if "cannot start" in text]
    assert line.startswith(f"{config}: cannot start: {config.parent / 'data' / DATABASE}: "), line
    return line


async def test_e2e_a_new_database_that_cannot_be_created_stops_the_station_before_it_dials() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        done, dialled, config = await _start_refused(folder, limit=0)
        line = _the_one_line(done, config)
    assert "cannot open database: disk I/O error (SQLITE_IOERR" in line, line
    assert not dialled


async def test_e2e_a_migration_the_disk_refuses_stops_the_station_before_it_dials() -> None:
    """The file is one schema version behind and its write-ahead log already past the limit (an
    operator's sqlite3 shell keeps it open): the migration's first write is refused."""
    latest = len(all_migrations())
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        (folder / "data").mkdir()
        path = folder / "data" / DATABASE
        shell = connect(path)
        try:
            migrate(shell, target=latest - 1)
            assert (folder / "data" / f"{DATABASE}-wal").stat().st_size > 32768
            done, dialled, config = await _start_refused(folder, limit=32768)
            line = _the_one_line(done, config)
            assert schema_version(shell) == latest - 1  # rolled back: still the previous version
        finally:
            shell.close()
    assert f"cannot open database: migration {all_migrations()[-1].name} failed: " in line, line
    assert "(SQLITE_IOERR" in line or "(SQLITE_FULL" in line, line
    assert not dialled


def _events(csms: TestCsms, kind: str) -> list[dict[str, object]]:
    return [
        call.payload
        for call in csms.received(STATION, "TransactionEvent")
        if call.payload["eventType"] == kind
    ]


async def test_e2e_v201_a_station_on_a_full_disk_starts_faulted_and_sends_what_is_queued() -> None:
    """Run 1 charges, its Started event unanswered, and is killed while the EV leaves. Run 2 on a full
    disk: online, both statuses Faulted from the first, the queued Started sent again, no Ended (its
    write is refused), no traceback; SIGTERM exits 0. Run 3 (room again): Ended, PowerLoss, once."""
    with trio.fail_after(3 * TIMEOUT_S), short_dir() as folder:
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            config = write_config(folder, version="2.0.1", port=csms.port, station_id=STATION)
            data = folder / "data"
            csms.delay_results(3600, "TransactionEvent")  # queued, unanswered, when the power goes
            async with station_process(config) as process:
                async with control_client(folder / "c.sock", process) as ops:
                    await csms.wait_for(STATION, "StatusNotification")
                    await ops.ok("plug_in", evse=1)
                    await ops.ok("present_id_token", id_token="E2E-TOKEN", evse=1)
                    await csms.wait_for(STATION, "TransactionEvent")
                process.kill()
                await process.wait()
            csms.delay_results(0, "TransactionEvent")
            sim = data / "sim-evse-1.json"
            sim.write_text(json.dumps({**json.loads(sim.read_text()), "ev_plugged": False}))
            assert (data / "evstation.sqlite3-wal").stat().st_size > WAL_LIMIT  # appending is refused
            statuses = len(csms.received(STATION, "StatusNotification"))
            async with _station_on_a_full_disk(config) as process:
                await csms.wait_for(STATION, "TransactionEvent", 2)  # the queued Started, again
                await csms.wait_for(STATION, "StatusNotification", statuses + 1)
                first = [c.payload for c in csms.received(STATION, "StatusNotification")][statuses:]
                assert all(payload["connectorStatus"] == "Faulted" for payload in first), first
                await trio.sleep(1.0)
                assert process.returncode is None, (folder / "full-disk.log").read_text()
                assert await terminate(process) == 0
            log = (folder / "full-disk.log").read_text()
            assert "Traceback" not in log, log
            assert (
                "database write failed" in log and "recovery of the previous run's transactions waits" in log
            )
            assert _events(csms, "Ended") == []
            async with station_process(config) as process:
                while not _events(csms, "Ended"):
                    await csms.wait_for(
                        STATION, "TransactionEvent", len(csms.received(STATION, "TransactionEvent")) + 1
                    )
                await trio.sleep(0.5)
                assert await terminate(process) == 0
            (ended,) = _events(csms, "Ended")
            assert ended["transactionInfo"]["stoppedReason"] == "PowerLoss"  # type: ignore[index]
            assert "Traceback" not in stderr_of(config)
            nursery.cancel_scope.cancel()


SHM_REFUSED = 16384  # below the 32 KiB the `-shm` index must grow to: SQLite cannot open the file read-write


@dataclass(frozen=True)
class Flavour:
    """What one OCPP version calls the same things."""

    version: str
    start: str  # the queued start message
    messages: tuple[str, ...]  # every transaction message action

    async def set_heartbeat(self, csms: TestCsms, seconds: int) -> str:
        """A CSMS request whose effect must be stored (a new value): a write, so a reopen, on demand."""
        if self.version == "1.6":
            payload: dict[str, object] = {"key": "HeartbeatInterval", "value": str(seconds)}
            return str((await csms.call(STATION, "ChangeConfiguration", payload))["status"])
        heartbeat = {
            "component": {"name": "OCPPCommCtrlr"},
            "variable": {"name": "HeartbeatInterval"},
            "attributeValue": str(seconds),
        }
        answer = await csms.call(STATION, "SetVariables", {"setVariableData": [heartbeat]})
        return str(answer["setVariableResult"][0]["attributeStatus"])  # type: ignore[index]

    def status(self, payload: dict[str, object]) -> object:
        return payload["status" if self.version == "1.6" else "connectorStatus"]

    def evse_statuses(self, csms: TestCsms) -> list[dict[str, object]]:
        """StatusNotifications of EVSE 1 (1.6: its connector; the station's connector 0 left out)."""
        key = "connectorId" if self.version == "1.6" else "evseId"
        return [c.payload for c in csms.received(STATION, "StatusNotification") if c.payload[key] == 1]

    def sent(self, csms: TestCsms) -> int:
        return sum(len(csms.received(STATION, action)) for action in self.messages)

    def ends(self, csms: TestCsms) -> list[dict[str, object]]:
        if self.version == "1.6":
            return [call.payload for call in csms.received(STATION, "StopTransaction")]
        return _events(csms, "Ended")

    def stopped_reason(self, end: dict[str, object]) -> object:
        if self.version == "1.6":
            return end["reason"]
        return end["transactionInfo"]["stoppedReason"]  # type: ignore[index]


FLAVOURS = [
    pytest.param(
        Flavour("1.6", "StartTransaction", ("StartTransaction", "StopTransaction", "MeterValues")), id="v16"
    ),
    pytest.param(Flavour("2.0.1", "TransactionEvent", ("TransactionEvent",)), id="v201"),
]


async def _next(csms: TestCsms, action: str) -> None:
    await csms.wait_for(STATION, action, len(csms.received(STATION, action)) + 1)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_e2e_a_database_that_cannot_be_opened_read_write_runs_read_only_and_recovers(
    flavour: Flavour,
) -> None:
    """Run 1 charges, its start message unanswered, and stops cleanly (SIGTERM: SQLite checkpoints and
    removes its `-wal` and `-shm`) while the EV leaves. Run 2 may grow no file past SHM_REFUSED: the
    read-write open fails, the file opens read-only (one log line), the station comes online with its
    EVSE Faulted from the first status and sends the queued start; a new heartbeat interval is Rejected
    (not stored). The limit lifted (the disk has room), the next one reopens the file read-write:
    Accepted, the interrupted transaction ends once, the fault clears, the answered messages' deletes
    commit. Run 3 (normal disk) sends no transaction message again."""
    with trio.fail_after(3 * TIMEOUT_S), short_dir() as folder:
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            config = write_config(folder, version=flavour.version, port=csms.port, station_id=STATION)
            data = folder / "data"
            csms.delay_results(3600, flavour.start)  # queued, unanswered, when the station stops
            async with station_process(config) as process:
                async with control_client(folder / "c.sock", process) as ops:
                    await csms.wait_for(STATION, "StatusNotification")
                    await ops.ok("plug_in", evse=1)
                    await ops.ok("present_id_token", id_token="E2E-TOKEN", evse=1)
                    await csms.wait_for(STATION, flavour.start)
                assert await terminate(process) == 0
            csms.delay_results(0, flavour.start)
            sim = data / "sim-evse-1.json"
            sim.write_text(json.dumps({**json.loads(sim.read_text()), "ev_plugged": False}))
            assert sorted(p.name for p in data.glob(f"{DATABASE}*")) == [DATABASE]  # no -wal, no -shm
            statuses = len(flavour.evse_statuses(csms))
            async with _station_on_a_full_disk(config, SHM_REFUSED) as process:
                await csms.wait_for(STATION, flavour.start, 2)  # the queued start, again
                while len(flavour.evse_statuses(csms)) == statuses:
                    await _next(csms, "StatusNotification")
                assert flavour.status(flavour.evse_statuses(csms)[statuses]) == "Faulted"
                assert await flavour.set_heartbeat(csms, 301) == "Rejected"
                assert flavour.ends(csms) == []
                resource.prlimit(process.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
                assert await flavour.set_heartbeat(csms, 302) == "Accepted"
                while not flavour.ends(csms):
                    await _next(csms, "StopTransaction" if flavour.version == "1.6" else "TransactionEvent")
                while flavour.status(flavour.evse_statuses(csms)[-1]) != "Available":
                    await _next(csms, "StatusNotification")
                await trio.sleep(0.5)  # the end's answer reaches the outbox (its delete: at the stop)
                assert await terminate(process) == 0
            log = (folder / "full-disk.log").read_text()
            assert "Traceback" not in log, log
            (opened,) = [line for line in log.splitlines() if "cannot open the database read-write" in line]
            assert "(SQLITE_IOERR_SHM" in opened and "immutable" in opened, opened
            assert "database reopened read-write" in log, log
            assert outbox_rows(data) == []
            sent = flavour.sent(csms)
            statuses = len(csms.received(STATION, "StatusNotification"))
            async with station_process(config) as process:
                await csms.wait_for(STATION, "StatusNotification", statuses + 1)
                await trio.sleep(0.5)
                assert await terminate(process) == 0
            assert flavour.sent(csms) == sent  # nothing sent twice
            (end,) = flavour.ends(csms)
            assert flavour.stopped_reason(end) == "Reboot"
            assert "Traceback" not in stderr_of(config)
            nursery.cancel_scope.cancel()

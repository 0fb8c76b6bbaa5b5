"""`evstation run` on a disk that refuses writes before the database is usable: a new file that cannot
be created, or a schema that needs a migration it cannot write. The station cannot run its code on a
schema it cannot migrate: it stops before dialling the CSMS, with one line naming the file and SQLite's
error, exit status 1. The refusal is real: the process may not grow any file (`RLIMIT_FSIZE`, SIGXFSZ
ignored, as a full disk looks to SQLite), the same as root and as another user."""

from __future__ import annotations

import resource
import signal
import socket as stdlib_socket
import subprocess
from pathlib import Path

import trio
from e2e_station import REPO, short_dir, station_command, write_config

from evstation.runtime.migrations import all_migrations
from evstation.runtime.storage import connect, migrate, schema_version

TIMEOUT_S = 18.0
DATABASE = "evstation.sqlite3"  # in the data dir (StationConfig.database_path)


async def _run_on_a_full_disk(config: Path, limit: int) -> subprocess.CompletedProcess[bytes]:
    def full_disk() -> None:  # in the child, before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG), no signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return await trio.run_process(
        station_command("run", "--config", str(config)),
        capture_stdout=True,
        capture_stderr=True,
        cwd=REPO,
        check=False,
        preexec_fn=full_disk,
    )


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

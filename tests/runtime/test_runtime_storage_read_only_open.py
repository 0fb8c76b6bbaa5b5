"""A database file SQLite cannot open read-write (a full disk: no room for the `-shm` index a WAL file
needs): the station opens it read-only, runs Faulted and sends what is queued, and goes back to a
read-write connection, without a restart, once the disk takes writes again.

The refusal is real: this test process may not grow any file past `SHM_REFUSED` bytes (`RLIMIT_FSIZE`,
SIGXFSZ ignored: a write past it fails as on a full disk), set around the open and lifted to recover.
"""

from __future__ import annotations

import logging
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from test_runtime_session_restart import killed_run_with_open_transaction
from test_runtime_storage_fails import storage_of
from test_runtime_storage_fails_at_start import _ends, _online_and_faulted, restarted
from test_runtime_transactions import BOTH, START, V16

from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.transactions import STORAGE_PROBE_S
from evstation.runtime.evse import ConnectorStatus
from evstation.runtime.migrations import all_migrations
from evstation.runtime.storage import StorageError, connect, migrate, open_storage

# Below the 32 KiB the `-shm` must grow to: the read-write open of a WAL file fails (SQLITE_IOERR_SHM*).
SHM_REFUSED = 16384


@contextmanager
def full_disk(limit: int = SHM_REFUSED) -> Iterator[None]:
    """No file of this process may grow past `limit` bytes until the block exits (the disk has room
    again). The previous limit and SIGXFSZ handler are restored whatever happens."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("station.db-") and p.stat().st_size)


@BOTH
async def test_a_file_that_cannot_be_opened_read_write_runs_read_only_and_recovers_without_a_restart(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, caplog: pytest.LogCaptureFixture
) -> None:
    """The previous run was killed mid-transaction (its file closed: no `-wal` left). This run's disk
    is full: the read-write open fails, the file is opened read-only, the station comes online Faulted
    from its first status and sends the queued messages; the interrupted transaction's end waits. Once
    the disk has room, the next probe reopens the file read-write: the fault clears, the end is queued
    and sent once, and the answered messages' deletes commit. (Without the fallback the open raises
    StorageError; without the reopen the station stays Faulted.)"""
    caplog.set_level(logging.WARNING)
    await killed_run_with_open_transaction(tmp_path, version)
    assert _leftovers(tmp_path) == []
    disk = full_disk()
    disk.__enter__()
    try:
        async with restarted(tmp_path, version, fail=None) as r:
            storage = storage_of(r.ctx)
            assert storage.read_only
            await _online_and_faulted(r, version)
            queued = 1 if version is V16 else 3
            await r.csms.wait_for(START[version], queued)
            await trio.sleep(2 * STORAGE_PROBE_S)
            assert storage.read_only and storage.write_failure is not None
            assert _ends(r, version) == []
            assert not r.ctx.blocks.transactions.ids.recovered.is_set()
            disk.__exit__(None, None, None)
            await trio.sleep(STORAGE_PROBE_S + 1)
            assert not storage.read_only and storage.write_failure is None
            assert r.ctx.blocks.transactions.ids.recovered.is_set()
            await r.ctx.outbox.wait_empty()
            assert len(_ends(r, version)) == 1
            if version is V16:  # nothing sent twice
                kinds = ("StartTransaction", "MeterValues", "StopTransaction")
                assert [a for a in r.csms.actions() if a in kinds] == list(kinds)
            else:
                sent = [(e["eventType"], e["seqNo"]) for e in r.tx_events()]
                assert sent == [("Started", 0), ("Updated", 1), ("Updated", 2), ("Ended", 3)]
            assert r.ctx.evses[1].status() is ConnectorStatus.AVAILABLE
            assert await storage.transactions() == []
            assert await storage.journal_mode() == "wal"
    finally:
        disk.__exit__(None, None, None)
    messages = [rec.getMessage() for rec in caplog.records]
    (opened,) = [m for m in messages if "cannot open the database read-write" in m]
    assert "(SQLITE_IOERR_SHM" in opened and "immutable" in opened, opened
    assert sum("database reopened read-write" in m for m in messages) == 1
    assert all(rec.exc_info is None for rec in caplog.records)


def _database(folder: Path, *, version: int | None = None, killed: bool = False, shm: bool = False) -> Path:
    """A station file at schema `version` (default: current), closed cleanly; or (`killed`) as a kill
    leaves it: its `-wal` holding a commit the file does not have yet (a copy taken while it is open),
    with its `-shm` if `shm`."""
    path = folder / "station.db"
    work = folder / "work"
    work.mkdir()
    conn = connect(work / path.name)
    try:
        migrate(conn, target=version)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if killed:
            conn.execute("INSERT INTO settings (key, value) VALUES ('only-in-the-wal', '1')")
            for suffix in ("-wal", "-shm") if shm else ("-wal",):
                shutil.copyfile(work / f"{path.name}{suffix}", folder / f"{path.name}{suffix}")
        shutil.copyfile(work / path.name, path)
    finally:
        conn.close()
    return path


async def _open_on_a_full_disk(path: Path, limit: int = SHM_REFUSED) -> str:
    with full_disk(limit), pytest.raises(StorageError) as refused:
        async with open_storage(path):
            pass
    return str(refused.value)


async def test_a_write_ahead_log_without_room_for_its_index_is_read_with_exclusive_locking(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A kill left a `-wal` holding a commit, and the full disk has no room for the `-shm`: neither
    read-only way reads it (`immutable=1` would ignore the commit). Exclusive locking keeps the index in
    memory: the commit is read, and once the disk has room the same connection writes (it was a stop of
    the station before, with the messages on disk never sent)."""
    caplog.set_level(logging.WARNING)
    path = _database(tmp_path, killed=True)
    assert _leftovers(tmp_path) == ["station.db-wal"]
    disk = full_disk()
    disk.__enter__()
    try:
        async with open_storage(path) as storage:
            assert not storage.read_only
            assert await storage.get_setting("only-in-the-wal") == "1"
            with pytest.raises(StorageError):
                await storage.set_setting("large", "x" * SHM_REFUSED)
            disk.__exit__(None, None, None)
            await storage.set_setting("after", "room again")
    finally:
        disk.__exit__(None, None, None)
    messages = [r.getMessage() for r in caplog.records]
    (line,) = [m for m in messages if "cannot open the database read-write" in m]
    assert "(SQLITE_IOERR_SHM" in line and "opened it with exclusive locking" in line, line
    async with open_storage(path) as storage:  # as usual again, both commits there
        assert await storage.get_setting("only-in-the-wal") == "1"
        assert await storage.get_setting("after") == "room again"


async def test_a_file_that_needs_a_migration_migrates_with_exclusive_locking_if_it_fits(
    tmp_path: Path,
) -> None:
    """Not read-only (its code cannot run on the old schema): with exclusive locking, whose write-ahead
    log needs no `-shm`; the migration commits if the disk has room for it, else the one-line stop."""
    latest = len(all_migrations())
    path = _database(tmp_path, version=latest - 1)
    # Not even one page of the write-ahead log fits: the migration is refused.
    line = await _open_on_a_full_disk(path, limit=4096)
    assert line.startswith(f"{path}: cannot open database: migration "), line
    with full_disk():
        async with open_storage(path) as storage:
            assert await storage.schema_version() == latest


async def test_a_new_file_still_stops_the_start(tmp_path: Path) -> None:
    path = tmp_path / "station.db"
    line = await _open_on_a_full_disk(path)
    assert line.startswith(f"{path}: cannot open database: "), line


async def test_reads_on_the_read_only_connection_see_the_data_and_writes_are_refused(tmp_path: Path) -> None:
    path = _database(tmp_path)
    async with open_storage(path) as ready:
        await ready.set_setting("kept", "yes")
    with full_disk():
        async with open_storage(path) as storage:
            assert storage.read_only
            assert await storage.get_setting("kept") == "yes"
            with pytest.raises(StorageError):
                await storage.set_setting("new", "no")
            assert storage.write_failure is not None and "SQLITE_IOERR_SHM" in storage.write_failure


# Run as root in a private mount namespace (`unshare -m`), the data folder bind-mounted read-only: for
# each state the previous run left, open, read, a refused write, the folder remounted read-write, a write
# that commits on the same Storage. Prints one line per state.
_ON_A_READ_ONLY_FILE_SYSTEM = """
import subprocess, sys, trio
from pathlib import Path
from evstation.runtime.storage import StorageWriteError, open_storage

async def main(folder: Path) -> None:
    subprocess.run(["mount", "--bind", folder, folder], check=True)
    for state in sorted(p for p in folder.iterdir() if p.is_dir()):
        subprocess.run(["mount", "-o", "remount,bind,ro", folder], check=True)
        async with open_storage(state / "station.db") as storage:
            kept = await storage.get_setting("only-in-the-wal")
            try:
                await storage.set_setting("k", "refused")
                refused = "no"
            except StorageWriteError as exc:
                refused = str(exc).rsplit(": ", 1)[-1]
            subprocess.run(["mount", "-o", "remount,bind,rw", folder], check=True)
            await storage.set_setting("k", "committed")
            print(state.name, storage.read_only, kept, refused, await storage.get_setting("k"), sep="|")

trio.run(main, Path(sys.argv[1]))
"""


def _mount_namespace_permitted() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False).returncode == 0
    except FileNotFoundError:
        return False


def _in_a_mount_namespace(script: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """`script` run by this Python as root in a private mount namespace, with `folder` as its argument."""
    return subprocess.run(
        ["unshare", "-m", sys.executable, "-c", script, str(folder)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


@pytest.mark.skipif(not _mount_namespace_permitted(), reason="needs unshare -m and mount (root)")
def test_a_read_only_file_system_runs_read_only_and_recovers_when_remounted(tmp_path: Path) -> None:
    """(a) After a clean shutdown (no `-wal` / `-shm`): SQLite cannot open the file at all (CANTOPEN,
    also with mode=ro): it opens `immutable=1`. (b) After a kill (`-wal` with a commit and `-shm` left):
    SQLite opens it, read-only on its own, and the commit in the `-wal` is read; that connection would
    never write again, so it is treated the same. Both: writes refused, and the first write once the
    file system is read-write again reopens the file and commits."""
    clean, killed = tmp_path / "a-clean", tmp_path / "b-killed"
    clean.mkdir()
    killed.mkdir()
    _database(clean)
    _database(killed, killed=True, shm=True)
    done = _in_a_mount_namespace(_ON_A_READ_ONLY_FILE_SYSTEM, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "a-clean|False|None|the file is not writable|committed",
        "b-killed|False|1|the file is not writable|committed",
    ], done.stderr
    assert "opened it read-only, immutable" in done.stderr  # (a)
    assert "the database file is not writable: opened it read-only" in done.stderr  # (b)


async def test_a_corrupt_file_on_a_full_disk_stops_the_start_as_on_a_disk_with_room(tmp_path: Path) -> None:
    """Its schema page overwritten: the read-write open fails on it (SQLITE_CORRUPT, read when the
    journal mode is set), so the station stops with one line. On a full disk the read-write open fails
    earlier (the `-shm`), and the read-only ways must read as far, or they would open the corrupt file
    read-only and the station would fail on its first read instead. The line names the corruption, not
    the disk: room on the disk would not help."""
    path = _database(tmp_path)
    page = bytearray(path.read_bytes())
    page[100:4096] = bytes(4096 - 100)  # page 1 after the file header: the schema table
    path.write_bytes(page)
    with pytest.raises(StorageError) as with_room:
        async with open_storage(path):
            pass
    assert "(SQLITE_CORRUPT)" in str(with_room.value)
    line = await _open_on_a_full_disk(path)
    assert line.startswith(f"{path}: cannot open database: "), line
    assert "(SQLITE_CORRUPT)" in line, line


# As above, one state (a kill left a `-wal` with a commit and its `-shm`): the folder remounted
# read-write but the disk full (`RLIMIT_FSIZE`): the reopen is refused (SQLite truncates the `-shm` to
# rebuild it and cannot grow it), then a read, then a write once the disk has room. Prints one line.
_REMOUNTED_ON_A_FULL_DISK = """
import resource, signal, subprocess, sys, trio
from pathlib import Path
from evstation.runtime.storage import StorageWriteError, open_storage

async def main(folder: Path) -> None:
    subprocess.run(["mount", "--bind", folder, folder], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", folder], check=True)
    async with open_storage(folder / "station.db") as storage:
        subprocess.run(["mount", "-o", "remount,bind,rw", folder], check=True)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, resource.RLIM_INFINITY))
        try:
            await storage.set_setting("k", "refused")
            refused = "no"
        except StorageWriteError:
            refused = "refused"
        kept = await storage.get_setting("only-in-the-wal")
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        await storage.set_setting("k", "committed")
        print(refused, kept, await storage.get_setting("k"), storage.read_only, sep="|")

trio.run(main, Path(sys.argv[1]))
"""


@pytest.mark.skipif(not _mount_namespace_permitted(), reason="needs unshare -m and mount (root)")
def test_a_refused_reopen_reads_the_write_ahead_log_as_the_start_would(tmp_path: Path) -> None:
    """After the refused reopen the file must be readable again as `open_storage` would open it: here
    neither read-only way reads it (no room for the `-shm`, commits in the `-wal`), exclusive locking
    does. (Without it the Storage was left on a closed connection: the next read raised
    ProgrammingError and ended the station, though a restart would have run.)"""
    _database(tmp_path, killed=True, shm=True)
    done = _in_a_mount_namespace(_REMOUNTED_ON_A_FULL_DISK, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["refused|1|committed|False"], done.stderr
    assert "database opened again with exclusive locking (no -shm file)" in done.stderr, done.stderr

"""The station's SQLite database: schema migrations and typed reads/writes, run in one worker thread.

The connection is created, used and closed only inside one `trio.CapacityLimiter(1)` worker, so the
event loop never blocks on disk I/O and no two threads ever touch the connection at the same time.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import trio

from evstation.records import record
from evstation.runtime.migrations import Migration, all_migrations

T = TypeVar("T")

log = logging.getLogger(__name__)

# TransactionRecord.state once the end message (StopTransaction / TransactionEvent Ended) is queued.
ENDED = "Ended"

# Wait this long for a lock held by another process (e.g. an operator's sqlite3 shell) before failing.
BUSY_TIMEOUT_MS = 5000

# While writes keep failing, their log line repeats at most this often (a full SD card fails every write,
# and one line per write would fill the journal that shares the card).
WRITE_FAILURE_LOG_INTERVAL_S = 600.0


class StorageError(Exception):
    """The database cannot be used as it is."""


class SchemaTooNewError(StorageError):
    """The file was written by a newer evstation; we never downgrade a schema."""


class MigrationError(StorageError):
    """A migration failed; its transaction was rolled back and the file is at the previous version."""


class StorageWriteError(StorageError):
    """A write failed and nothing of it was committed (disk full, read-only file system, I/O error)."""


class UnknownEntryError(StorageError, LookupError):
    """No row with that id (e.g. an outbox entry already removed or given up)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_db_time(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: the database stores UTC instants only")
    return value.astimezone(UTC).isoformat()


def from_db_time(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


# --------------------------------------------------------------------------------------------------
# Synchronous part: only ever called inside the worker thread (or by tests building old schemas).


def connect(path: Path, *, exclusive: bool = False) -> sqlite3.Connection:
    """Open the file with the pragmas every connection to it must have.

    `exclusive`: SQLite's exclusive locking mode, set before the first access, so that it keeps the
    write-ahead log's index in this process's memory instead of the `-shm` file (for a disk that has no
    room for that file: `open_storage`). No other program can then read the file while it is open.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: we issue BEGIN/COMMIT ourselves so each write is exactly one transaction.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        if exclusive:
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise StorageError(f"{path}: cannot switch to WAL journal mode (got {mode!r})")
        # FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss, and a
        # transaction message acknowledged to the session as "queued" must survive exactly that.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except BaseException:
        conn.close()
        raise
    return conn


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


# Primary SQLite result codes of a read-write open that the file system refused (read-only file system,
# no room for the `-shm` index a WAL database needs, permissions): the file itself may still be read.
# Others (a corrupt file, a lock held elsewhere, not a database) are not the disk's refusal.
_REFUSED_BY_THE_DISK = frozenset(
    {
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_PERM,
    }
)


def _refused_by_the_disk(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _REFUSED_BY_THE_DISK


def _has_content(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def open_read_only(path: Path) -> tuple[sqlite3.Connection, str]:
    """Open an existing file for reading only, for a station whose disk refuses the read-write open.

    `mode=ro` first: it reads the write-ahead log, but on a WAL file it still needs the `-shm` index
    (created, or grown, on the disk that refused). Else `immutable=1`, which needs no `-shm` but ignores
    the `-wal` and any `-journal` altogether: only when neither holds anything, as commits in them would
    be invisible (answered messages sent again, transactions missed). Returns the connection and how it
    was opened; raises `sqlite3.Error` when neither way reads the file.
    """
    uri = path.resolve().as_uri()
    try:
        return _open_uri(f"{uri}?mode=ro"), "read-only"
    except sqlite3.Error:
        if _has_content(path.with_name(path.name + "-wal")) or _has_content(
            path.with_name(path.name + "-journal")
        ):
            raise
    return _open_uri(f"{uri}?immutable=1"), "read-only, immutable (no write-ahead log to read)"


def _open_uri(uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        schema_version(conn)  # the first read: where a missing or unreadable `-shm` is found
        # The schema read as well, as `connect` does (its journal mode pragma loads it): else a file
        # whose schema is corrupt would open here, and the station would fail at its first read
        # instead of stopping with one line (`user_version` reads the file header only).
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except BaseException:
        conn.close()
        raise
    return conn


def migrate(conn: sqlite3.Connection, *, target: int | None = None) -> int:
    """Apply every migration after the file's version, up to `target` (default: the newest).

    Each migration and its `user_version` bump commit together, so a crash leaves a known version.
    A new (empty) file gets all of them in one transaction: it has no data to keep between steps, and
    one commit instead of one per migration makes a first start faster (each commit is an fsync);
    a failure or a crash leaves it empty, at version 0.
    """
    migrations = all_migrations()
    latest = len(migrations)
    target = latest if target is None else target
    current = schema_version(conn)
    if current > latest:
        raise SchemaTooNewError(
            f"database schema version {current} is newer than this evstation supports ({latest}); "
            "downgrading is not supported: run a newer evstation or restore a backup"
        )
    pending = migrations[current:target]
    if current == 0:
        _apply(conn, pending)
    else:
        for migration in pending:
            _apply(conn, [migration])
    return schema_version(conn)


def _apply(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> None:
    """Run `migrations` and the `user_version` bump to the last one as one transaction."""
    if not migrations:
        return
    conn.execute("BEGIN IMMEDIATE")
    migration = migrations[0]
    try:
        for migration in migrations:
            for statement in migration.statements:
                conn.execute(statement)
        # PRAGMA takes no bound parameters; the version is an int we produced.
        conn.execute(f"PRAGMA user_version = {int(migration.version)}")
        # Inside the try: in WAL mode the pages are written at COMMIT, so a full or read-only disk
        # refuses the migration here.
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        if conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR)
            conn.execute("ROLLBACK")
        raise MigrationError(f"migration {migration.name} failed: {_sqlite_error(exc)}") from exc


def _sqlite_error(exc: sqlite3.Error) -> str:
    """SQLite's message with its error name (`disk I/O error (SQLITE_IOERR_WRITE)`), when it has one."""
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


def in_transaction(conn: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run `work` as one committed write transaction; roll back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        # A failed COMMIT (disk full) leaves the transaction open: the next BEGIN would fail for ever.
        # SQLite may already have rolled back on its own (SQLITE_FULL, SQLITE_IOERR): check first.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


# --------------------------------------------------------------------------------------------------
# Typed rows


@record
class TransactionRecord:
    """What the station must remember to resume or end a transaction after a reboot.

    `id` is the station's transaction id (2.0.1 transactionId; 1.6: a local id until the CSMS's
    integer `csms_transaction_id` arrives). `seq_no` is the last 2.0.1 seqNo used for it.
    `state` is `ENDED` once its end message is in the outbox; the record is deleted when the CSMS
    acknowledges that message, or when it goes to the dead letters. `last_meter_wh` / `last_meter_at`
    is the last energy reading persisted with a meter-values message (or at a clean shutdown): what a
    power-loss end reports.
    """

    id: str
    evse_id: int
    connector_id: int
    id_token: str | None
    started_at: datetime
    meter_start_wh: float
    state: str
    seq_no: int = 0
    csms_transaction_id: int | None = None
    id_token_type: str | None = None
    stopped_at: datetime | None = None
    meter_stop_wh: float | None = None
    stop_reason: str | None = None
    last_meter_wh: float | None = None
    last_meter_at: datetime | None = None
    remote_start_id: int | None = None
    reservation_id: int | None = None
    # The meter values of the end message collected so far (TxEnded / StopTxn measurands), as JSON of
    # the version's MeterValue objects: reported after a power loss too.
    ended_values: str | None = None
    signed_start: str | None = None
    signed_stop: str | None = None
    resumable: bool = True  # False once a Reset ended its session: never resumed after the restart
    # The CSMS's verdict on the token: 1.6 StartTransaction.conf's idTagInfo status, or the first
    # refusal in a 2.0.1 TransactionEventResponse. None: none heard.
    token_status: str | None = None
    # The energy register when the station began acting on a refusal with StopTxOnInvalidId false:
    # MaxEnergyOnInvalidId counts from here, also after a restart. None: no such refusal acted on.
    invalid_id_from_wh: float | None = None

    @property
    def is_open(self) -> bool:
        """Still running as far as the station knows: its end message has not been queued yet."""
        return self.state != ENDED


@record
class BootState:
    """The registration outcome of the last boot, and why the next boot happens (2.0.1 BootReason)."""

    registration_status: str | None = None
    last_boot_at: datetime | None = None
    next_boot_reason: str | None = None


_TRANSACTION_COLUMNS = (
    "id, evse_id, connector_id, id_token, started_at, meter_start_wh, state, seq_no, "
    "csms_transaction_id, id_token_type, stopped_at, meter_stop_wh, stop_reason, last_meter_wh, "
    "last_meter_at, "
    "remote_start_id, reservation_id, ended_values, signed_start, signed_stop, resumable, token_status, "
    "invalid_id_from_wh"
)


def _transaction_from_row(row: sqlite3.Row) -> TransactionRecord:
    started = from_db_time(row["started_at"])
    assert started is not None
    return TransactionRecord(
        id=row["id"],
        evse_id=row["evse_id"],
        connector_id=row["connector_id"],
        id_token=row["id_token"],
        started_at=started,
        meter_start_wh=row["meter_start_wh"],
        state=row["state"],
        seq_no=row["seq_no"],
        csms_transaction_id=row["csms_transaction_id"],
        id_token_type=row["id_token_type"],
        stopped_at=from_db_time(row["stopped_at"]),
        meter_stop_wh=row["meter_stop_wh"],
        stop_reason=row["stop_reason"],
        last_meter_wh=row["last_meter_wh"],
        last_meter_at=from_db_time(row["last_meter_at"]),
        remote_start_id=row["remote_start_id"],
        reservation_id=row["reservation_id"],
        ended_values=row["ended_values"],
        signed_start=row["signed_start"],
        signed_stop=row["signed_stop"],
        resumable=bool(row["resumable"]),
        token_status=row["token_status"],
        invalid_id_from_wh=row["invalid_id_from_wh"],
    )


def _db_time_or_none(value: datetime | None) -> str | None:
    return None if value is None else to_db_time(value)


# Synchronous transaction-row operations, for `Storage.write` work functions that must change a
# transaction and the outbox in one SQLite transaction (so a crash can never leave one without the other).


def write_transaction(conn: sqlite3.Connection, record: TransactionRecord) -> None:
    """Insert or replace the whole record."""
    values = (
        record.id,
        record.evse_id,
        record.connector_id,
        record.id_token,
        to_db_time(record.started_at),
        record.meter_start_wh,
        record.state,
        record.seq_no,
        record.csms_transaction_id,
        record.id_token_type,
        _db_time_or_none(record.stopped_at),
        record.meter_stop_wh,
        record.stop_reason,
        record.last_meter_wh,
        _db_time_or_none(record.last_meter_at),
        record.remote_start_id,
        record.reservation_id,
        record.ended_values,
        record.signed_start,
        record.signed_stop,
        int(record.resumable),
        record.token_status,
        record.invalid_id_from_wh,
    )
    placeholders = ", ".join("?" * len(values))
    conn.execute(
        f"INSERT OR REPLACE INTO transactions ({_TRANSACTION_COLUMNS}) VALUES ({placeholders})", values
    )


def read_transaction(conn: sqlite3.Connection, transaction_id: str) -> TransactionRecord | None:
    row = conn.execute(
        f"SELECT {_TRANSACTION_COLUMNS} FROM transactions WHERE id = ?", (transaction_id,)
    ).fetchone()
    return None if row is None else _transaction_from_row(row)


def bump_seq_no(conn: sqlite3.Connection, transaction_id: str) -> int:
    """Increment and return the transaction's 2.0.1 seqNo."""
    row = conn.execute(
        "UPDATE transactions SET seq_no = seq_no + 1 WHERE id = ? RETURNING seq_no", (transaction_id,)
    ).fetchone()
    if row is None:
        raise UnknownEntryError(f"no transaction {transaction_id!r}")
    return int(row["seq_no"])


def append_ended_values(
    conn: sqlite3.Connection, transaction_id: str, values: list[dict[str, object]]
) -> None:
    """Add meter values to those the transaction's end message will carry."""
    row = conn.execute("SELECT ended_values FROM transactions WHERE id = ?", (transaction_id,)).fetchone()
    if row is None:
        return
    kept: list[object] = json.loads(row["ended_values"]) if row["ended_values"] else []
    kept.extend(values)
    conn.execute(
        "UPDATE transactions SET ended_values = ? WHERE id = ?",
        (json.dumps(kept, separators=(",", ":")), transaction_id),
    )


def read_setting(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM settings WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row["value"])


def write_setting(conn: sqlite3.Connection, key: str, value: str) -> None:
    conn.execute(
        "INSERT INTO settings (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def write_last_meter(conn: sqlite3.Connection, transaction_id: str, energy_wh: float, at: datetime) -> None:
    """Remember the latest energy reading of a running transaction (what a power-loss end reports)."""
    conn.execute(
        "UPDATE transactions SET last_meter_wh = ?, last_meter_at = ? WHERE id = ?",
        (energy_wh, to_db_time(at), transaction_id),
    )


# --------------------------------------------------------------------------------------------------
# The async face


async def run_in_worker(limiter: trio.CapacityLimiter, work: Callable[..., T], *args: object) -> T:
    """The one way into the database thread. (The test suite holds its virtual clock still around it:
    time does not pass while the disk works.)"""
    return await trio.to_thread.run_sync(work, *args, limiter=limiter)


class Storage:
    """Typed access to the station database. Create it with `open_storage`, never directly."""

    def __init__(
        self, conn: sqlite3.Connection, limiter: trio.CapacityLimiter, path: Path, *, read_only: bool = False
    ) -> None:
        # Used, swapped (`_reopen_read_write`) and closed only in the database thread: the limiter runs
        # one piece of database work at a time, so no work ever holds a connection that was swapped.
        self._conn = conn
        self._limiter = limiter
        self.path = path
        # Opened by `open_read_only` after the disk refused the read-write open: every write first tries
        # that open again, and goes on on the new connection once it succeeds (no restart needed).
        self._read_only = read_only
        self._write_failure: str | None = None  # the SQLite error of the last write, None once one succeeds
        self._failure_logged_at = -math.inf
        self._health_changed = trio.Event()

    @property
    def write_failure(self) -> str | None:
        """Why writes fail (the SQLite error of the last one), or None: the last write committed."""
        return self._write_failure

    async def wait_write_health_change(self) -> None:
        """Until writes start failing or succeed again."""
        await self._health_changed.wait()

    async def until_written(self, write: Callable[[], Awaitable[T]]) -> T:
        """Run `write` (work that writes here) until it is not refused: after a `StorageWriteError`,
        wait until some write commits again (anyone's), then run it again from the start."""
        while True:
            try:
                return await write()
            except StorageWriteError:
                while self._write_failure is not None:
                    await self._health_changed.wait()

    def _note_write(self, failure: str | None) -> None:
        changed = (failure is None) != (self._write_failure is None)
        now = trio.current_time()
        if failure is not None and (changed or now - self._failure_logged_at >= WRITE_FAILURE_LOG_INTERVAL_S):
            # One line, no traceback: the cause is the disk, not the code.
            log.error("%s: database write failed: %s", self.path, failure)
            self._failure_logged_at = now
        elif failure is None and changed:
            log.warning("%s: database writes succeed again", self.path)
        self._write_failure = failure
        if changed:
            self._health_changed.set()
            self._health_changed = trio.Event()

    @property
    def read_only(self) -> bool:
        """Running on the read-only fallback connection (the read-write open was refused)."""
        return self._read_only

    def _with_conn(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return work(self._conn)

    def _write_now(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._read_only:
            self._reopen_read_write()
        return in_transaction(self._conn, work)

    def _reopen_read_write(self) -> None:
        """Swap the read-only connection for a read-write one, if the disk accepts it now; else raise
        what SQLite said, on the file opened for reading again."""
        if not os.access(self.path, os.W_OK):
            # SQLite would open it anyway, read-only on its own (a read-only file system where the
            # `-wal` and `-shm` exist): a connection that stays read-only after the disk recovers.
            raise StorageWriteError(f"{self.path}: the file is not writable")
        # Closed first: SQLite shares a file's locks and `-shm` among the connections of one process,
        # and a new connection would inherit the read-only `-shm` of the open one (read-only for ever).
        self._conn.close()
        try:
            conn = connect(self.path)
            try:
                # Nothing could write the file meanwhile, so its schema is the one we opened; checked
                # anyway, as this code must never run on another.
                version, latest = schema_version(conn), len(all_migrations())
                if version != latest:
                    raise StorageWriteError(
                        f"{self.path}: reopened read-write at schema version {version}, not {latest}"
                    )
            except BaseException:
                conn.close()
                raise
        except BaseException:
            # As it is opened at a start (what failed there fails the same way now; exclusive locking
            # when the files changed since: a read-only file system after a kill, remounted read-write
            # but full, the `-shm` truncated by this reopen). Should even that fail, the error
            # propagates and the closed connection fails every later use: the file cannot be read any
            # more, which ends the station as a file that cannot be opened does.
            opened = _open_for_the_station(self.path)
            self._conn, self._read_only = opened.conn, opened.read_only
            if opened.note is None:
                # The disk took the open a moment later (room made meanwhile): this write is still
                # refused, the next ones go through.
                log.warning("%s: database reopened read-write", self.path)
            elif not opened.read_only:  # the one other way that writes
                log.warning("%s: database opened again with exclusive locking (no -shm file)", self.path)
            raise
        self._conn = conn
        self._read_only = False
        log.warning("%s: database reopened read-write", self.path)

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` in the database thread. Not cancellable once started, by design."""
        return await run_in_worker(self._limiter, self._with_conn, work)

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work(conn)` as one transaction in the database thread; committed when this returns.

        A cancelled caller still waits for the commit or rollback: the thread is never abandoned.
        A write SQLite refuses (disk full, read-only file, I/O error) raises `StorageWriteError`,
        and is logged (one line, rate-limited) and watched (`write_failure`) here.
        """
        try:
            result: T = await run_in_worker(self._limiter, self._write_now, work)
        except sqlite3.OperationalError as exc:
            # SQLITE_READONLY (a read-only connection or file) is an OperationalError as well.
            self._note_write(_sqlite_error(exc))
            raise StorageWriteError(f"{self.path}: {exc}") from exc
        except StorageWriteError as exc:
            self._note_write(str(exc).removeprefix(f"{self.path}: "))
            raise
        self._note_write(None)
        return result

    def _close(self) -> None:
        self._conn.close()

    async def schema_version(self) -> int:
        return await self.read(schema_version)

    async def journal_mode(self) -> str:
        return await self.read(lambda conn: str(conn.execute("PRAGMA journal_mode").fetchone()[0]))

    # -- settings (configuration keys / device-model values set by the CSMS) ---------------------

    async def get_setting(self, key: str) -> str | None:
        return await self.read(lambda conn: read_setting(conn, key))

    async def set_setting(self, key: str, value: str) -> None:
        await self.write(lambda conn: write_setting(conn, key, value))

    async def delete_setting(self, key: str) -> None:
        await self.write(lambda conn: conn.execute("DELETE FROM settings WHERE key = ?", (key,)))

    async def settings(self) -> dict[str, str]:
        def work(conn: sqlite3.Connection) -> dict[str, str]:
            return {row["key"]: row["value"] for row in conn.execute("SELECT key, value FROM settings")}

        return await self.read(work)

    # -- transactions ------------------------------------------------------------------------------

    async def save_transaction(self, record: TransactionRecord) -> None:
        """Insert or replace the whole record."""
        await self.write(lambda conn: write_transaction(conn, record))

    async def get_transaction(self, transaction_id: str) -> TransactionRecord | None:
        return await self.read(lambda conn: read_transaction(conn, transaction_id))

    async def transactions(self) -> list[TransactionRecord]:
        """Every remembered transaction, oldest start first."""

        def work(conn: sqlite3.Connection) -> list[TransactionRecord]:
            rows = conn.execute(f"SELECT {_TRANSACTION_COLUMNS} FROM transactions ORDER BY started_at, id")
            return [_transaction_from_row(row) for row in rows]

        return await self.read(work)

    async def next_seq_no(self, transaction_id: str) -> int:
        """Increment and return the transaction's 2.0.1 seqNo, committed before it is used on the wire."""
        return await self.write(lambda conn: bump_seq_no(conn, transaction_id))

    async def set_csms_transaction_id(
        self, transaction_id: str, csms_transaction_id: int, token_status: str = "Accepted"
    ) -> None:
        """1.6: the id and idTagInfo status StartTransaction.conf gave, together. Those columns only: a
        whole-record write here could undo a concurrent change (the transaction ending while its
        StartTransaction was in flight)."""
        await self.write(
            lambda conn: conn.execute(
                "UPDATE transactions SET csms_transaction_id = ?, token_status = ? WHERE id = ?",
                (csms_transaction_id, token_status, transaction_id),
            )
        )

    async def refuse_token(self, transaction_id: str, token_status: str) -> None:
        """2.0.1: the CSMS refused the transaction's token. The first refusal stays, as the station
        acts on the first one only."""
        await self.write(
            lambda conn: conn.execute(
                "UPDATE transactions SET token_status = ? WHERE id = ? "
                "AND (token_status IS NULL OR token_status = 'Accepted')",
                (token_status, transaction_id),
            )
        )

    async def count_invalid_id_from(self, transaction_id: str, energy_wh: float) -> float:
        """Where MaxEnergyOnInvalidId counts from for this transaction: the register stored by the
        first call (kept across restarts), else `energy_wh`, stored now. Returns the one that holds."""

        def work(conn: sqlite3.Connection) -> float:
            conn.execute(
                "UPDATE transactions SET invalid_id_from_wh = ? WHERE id = ? AND invalid_id_from_wh IS NULL",
                (energy_wh, transaction_id),
            )
            row = conn.execute(
                "SELECT invalid_id_from_wh FROM transactions WHERE id = ?", (transaction_id,)
            ).fetchone()
            # No row: the transaction ended meanwhile; nothing to remember.
            return energy_wh if row is None or row[0] is None else float(row[0])

        return await self.write(work)

    async def note_stop(self, transaction_id: str, reason: str, at: datetime) -> None:
        """The transaction's session ended (`reason`, at `at`) and its end message is not queued yet
        (it waits a moment for a last reading). Noted at once: a restart before the end is queued must
        not resume a transaction that was stopped, and ends it with this reason (state stays open)."""
        await self.write(
            lambda conn: conn.execute(
                "UPDATE transactions SET resumable = 0, stop_reason = ?, stopped_at = ? "
                "WHERE id = ? AND state != ?",
                (reason, to_db_time(at), transaction_id, ENDED),
            )
        )

    async def forbid_resume(self, transaction_ids: list[str]) -> None:
        """A Reset ends these transactions' sessions: never resume them after the restart."""
        await self.write(
            lambda conn: conn.executemany(
                "UPDATE transactions SET resumable = 0 WHERE id = ?", [(tid,) for tid in transaction_ids]
            )
        )

    async def delete_transaction(self, transaction_id: str) -> None:
        await self.write(
            lambda conn: conn.execute("DELETE FROM transactions WHERE id = ?", (transaction_id,))
        )

    # -- boot state --------------------------------------------------------------------------------

    async def boot_state(self) -> BootState:
        def work(conn: sqlite3.Connection) -> BootState:
            row = conn.execute(
                "SELECT registration_status, last_boot_at, next_boot_reason FROM boot_state"
            ).fetchone()
            if row is None:
                return BootState()
            return BootState(
                registration_status=row["registration_status"],
                last_boot_at=from_db_time(row["last_boot_at"]),
                next_boot_reason=row["next_boot_reason"],
            )

        return await self.read(work)

    async def save_boot_state(self, state: BootState) -> None:
        values = (
            state.registration_status,
            None if state.last_boot_at is None else to_db_time(state.last_boot_at),
            state.next_boot_reason,
        )
        await self.write(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO boot_state "
                "(singleton, registration_status, last_boot_at, next_boot_reason) VALUES (1, ?, ?, ?)",
                values,
            )
        )


def _open_and_migrate(path: Path, *, exclusive: bool = False) -> sqlite3.Connection:
    conn = connect(path, exclusive=exclusive)
    try:
        migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn


def _open_read_only_fallback(path: Path) -> tuple[sqlite3.Connection, str] | None:
    """The file opened read-only if its schema is current (nothing to migrate), else None."""
    try:
        conn, how = open_read_only(path)
    except sqlite3.Error:
        return None
    try:
        current = schema_version(conn) == len(all_migrations())
    except sqlite3.Error:
        current = False
    if not current:
        conn.close()
        return None
    return conn, how


@record
class _Opened:
    conn: sqlite3.Connection
    note: str | None  # how it was opened and why, when not as usual (logged)
    read_only: bool = False


def _open_for_the_station(path: Path) -> _Opened:
    """`open_storage`'s work, in one trip to the database thread (a start waits for it)."""
    existed = path.exists()
    try:
        conn = _open_and_migrate(path)
    except sqlite3.Error as exc:
        if not (existed and _refused_by_the_disk(exc)):
            raise
        refused = f"cannot open the database read-write: {_sqlite_error(exc)}"
        fallback = _open_read_only_fallback(path)
        if fallback is not None:
            conn, how = fallback
            return _Opened(conn, f"{refused}; opened it {how}", read_only=True)
        # Neither read-only way reads it: a `-wal` holding commits and no room for the `-shm` (a full
        # disk after a kill). Exclusive locking needs no `-shm`; it reads the `-wal`, and writes succeed
        # as soon as they fit, so this connection is kept (and migrates, if it can) as a usual one.
        try:
            conn = _open_and_migrate(path, exclusive=True)
        except sqlite3.Error as last:
            # The read-write open's refusal is the one to report, unless this open got further and
            # found what room on the disk would not mend (a corrupt file, SQLITE_CORRUPT).
            raise (exc if _refused_by_the_disk(last) else last) from None
        return _Opened(conn, f"{refused}; opened it with exclusive locking (no -shm file)")
    # SQLite opens a file it cannot write read-only without a word when its `-wal` and `-shm` exist (a
    # read-only file system after a kill): writes are refused as on the fallback, and it must reopen in
    # the same way, since that connection never writes again.
    if not os.access(path, os.W_OK):
        return _Opened(conn, "the database file is not writable: opened it read-only", read_only=True)
    return _Opened(conn, None)


@asynccontextmanager
async def open_storage(path: Path) -> AsyncIterator[Storage]:
    """Open (creating if needed) and migrate the database at `path`; close it when the block exits.

    An existing file with a current schema whose read-write open the disk refuses (read-only file
    system, no room for the `-shm`) is opened read-only instead: the station runs on it, every write
    refused (`StorageWriteError`) until the read-write open succeeds, which each write tries first.
    """
    limiter = trio.CapacityLimiter(1)
    # Each failure names the file and SQLite's error: `evstation run` prints it as the one line that
    # says why the station cannot start (it cannot run its code on a schema it cannot migrate).
    try:
        opened = await run_in_worker(limiter, _open_for_the_station, path)
    except sqlite3.Error as exc:
        raise StorageError(f"{path}: cannot open database: {_sqlite_error(exc)}") from exc
    except (MigrationError, SchemaTooNewError) as exc:
        raise type(exc)(f"{path}: cannot open database: {exc}") from exc
    if opened.note is not None:
        # One line, no traceback: the disk, not the code. Faulted: the transactions block's probe write.
        log.error(
            "%s: %s: the station runs with every EVSE Faulted and sends what is queued until the disk "
            "accepts writes",
            path,
            opened.note,
        )
    storage = Storage(opened.conn, limiter, path, read_only=opened.read_only)
    try:
        yield storage
    finally:
        with trio.CancelScope(shield=True):
            await run_in_worker(limiter, storage._close)

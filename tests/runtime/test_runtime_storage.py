"""The station database: migrations from every earlier schema, refusal to downgrade, WAL, typed rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from evstation.runtime.migrations import all_migrations
from evstation.runtime.storage import (
    BootState,
    MigrationError,
    SchemaTooNewError,
    TransactionRecord,
    UnknownEntryError,
    connect,
    migrate,
    open_storage,
    schema_version,
)

LATEST = len(all_migrations())
T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

# Representative rows written with the schema as it was at each version; the key is the version at
# which the rows' tables/columns exist. Each later migration must keep them.
SEED: dict[int, Callable[[sqlite3.Connection], object]] = {
    1: lambda conn: conn.executescript(
        """
        INSERT INTO outbox (action, payload, attempts, offline, created_at)
            VALUES ('StartTransaction', '{"connectorId":1}', 2, 1, '2025-01-02T03:04:05+00:00');
        INSERT INTO transactions (id, evse_id, connector_id, id_token, started_at, meter_start_wh, state,
                                  seq_no, csms_transaction_id)
            VALUES ('tx-1', 1, 1, 'TAG1', '2025-01-02T03:04:05+00:00', 1000.5, 'Charging', 4, 77);
        INSERT INTO settings (key, value) VALUES ('HeartbeatInterval', '120');
        INSERT INTO boot_state (singleton, registration_status, last_boot_at, next_boot_reason)
            VALUES (1, 'Accepted', '2025-01-02T03:04:05+00:00', 'RemoteReset');
        """
    ),
    2: lambda conn: conn.executescript(
        """
        INSERT INTO dead_letter (id, action, payload, attempts, offline, created_at, last_attempt_at,
                                 reason, given_up_at)
            VALUES (99, 'MeterValues', '{}', 3, 0, '2025-01-02T03:04:05+00:00',
                    '2025-01-02T03:05:05+00:00', 'CALLERROR InternalError', '2025-01-02T03:06:05+00:00');
        """
    ),
    8: lambda conn: conn.execute(
        "INSERT INTO reservations (id, evse_id, connector_type, id_token, token_type, group_id_token,"
        " expires_at) VALUES (5, NULL, 'cType2', 'OWNER', 'ISO14443', 'FLEET', '2025-01-02T04:04:05+00:00')"
    ),
}


def build_at_version(path: Path, version: int) -> None:
    """A database file exactly as an older evstation (schema `version`) would have left it."""
    conn = connect(path)
    try:
        migrate(conn, target=version)
        assert schema_version(conn) == version
        for seeded_at, seed in SEED.items():
            if seeded_at <= version:
                seed(conn)
    finally:
        conn.close()


def table_columns(path: Path) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            table: [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for table in sorted(tables)
            if not table.startswith("sqlite_")
        }
    finally:
        conn.close()


def test_migrations_are_numbered_without_gaps() -> None:
    assert [m.version for m in all_migrations()] == list(range(1, LATEST + 1))
    assert LATEST >= 2


async def test_fresh_database_has_latest_schema_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "station.sqlite3"
    with trio.fail_after(10):
        async with open_storage(path) as storage:
            assert await storage.schema_version() == LATEST
            assert await storage.journal_mode() == "wal"
            synchronous = await storage.read(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0])
            assert synchronous == 2  # FULL
    assert path.exists()


@pytest.mark.parametrize("start", range(1, LATEST))
async def test_migrates_from_every_earlier_version_keeping_data(tmp_path: Path, start: int) -> None:
    fresh = tmp_path / "fresh.sqlite3"
    with trio.fail_after(10):
        async with open_storage(fresh):
            pass
    path = tmp_path / "old.sqlite3"
    build_at_version(path, start)

    with trio.fail_after(10):
        async with open_storage(path) as storage:
            assert await storage.schema_version() == LATEST
            assert await storage.get_setting("HeartbeatInterval") == "120"
            tx = await storage.get_transaction("tx-1")
            assert tx is not None
            assert (tx.evse_id, tx.connector_id, tx.id_token, tx.seq_no, tx.csms_transaction_id) == (
                1,
                1,
                "TAG1",
                4,
                77,
            )
            assert tx.started_at == T0
            assert tx.meter_start_wh == 1000.5
            assert tx.stopped_at is None
            assert tx.token_status is None  # no verdict heard before version 10
            assert tx.invalid_id_from_wh is None  # no refusal acted on before version 11
            assert await storage.boot_state() == BootState("Accepted", T0, "RemoteReset")
            rows = await storage.read(lambda conn: conn.execute("SELECT * FROM outbox").fetchall())
            assert [(r["action"], r["attempts"], r["offline"]) for r in rows] == [("StartTransaction", 2, 1)]
            if start >= 2:
                dead = await storage.read(lambda conn: conn.execute("SELECT id FROM dead_letter").fetchall())
                assert [r["id"] for r in dead] == [99]

    # The migrated file has exactly the schema a fresh one has.
    assert table_columns(path) == table_columns(fresh)


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    with trio.fail_after(10), pytest.raises(SchemaTooNewError, match="downgrading is not supported"):
        async with open_storage(path):
            pytest.fail("opened a database from the future")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST + 1  # untouched
    conn.close()


async def test_failed_write_rolls_back(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:

            def half_done(conn: sqlite3.Connection) -> None:
                conn.execute("INSERT INTO settings (key, value) VALUES ('a', '1')")
                raise RuntimeError("bug in the middle of a write")

            with pytest.raises(RuntimeError):
                await storage.write(half_done)
            assert await storage.settings() == {}


async def test_settings_round_trip_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with trio.fail_after(10):
        async with open_storage(path) as storage:
            await storage.set_setting("HeartbeatInterval", "60")
            await storage.set_setting("HeartbeatInterval", "90")
            await storage.set_setting("MeterValueSampleInterval", "15")
            await storage.delete_setting("MeterValueSampleInterval")
        async with open_storage(path) as storage:
            assert await storage.settings() == {"HeartbeatInterval": "90"}
            assert await storage.get_setting("absent") is None


async def test_transactions_round_trip_and_seq_no(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    record = TransactionRecord(
        id="f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
        evse_id=2,
        connector_id=1,
        id_token="04A2B3C4",
        id_token_type="ISO14443",
        started_at=T0,
        meter_start_wh=12.0,
        state="Charging",
    )
    with trio.fail_after(10):
        async with open_storage(path) as storage:
            await storage.save_transaction(record)
            assert await storage.next_seq_no(record.id) == 1
            assert await storage.next_seq_no(record.id) == 2
            with pytest.raises(UnknownEntryError):
                await storage.next_seq_no("nope")
        async with open_storage(path) as storage:
            loaded = await storage.get_transaction(record.id)
            assert loaded is not None
            assert loaded.seq_no == 2
            stopped = TransactionRecord(
                **{
                    **{f: getattr(loaded, f) for f in loaded.__dataclass_fields__},
                    "state": "Ended",
                    "stopped_at": T0,
                    "meter_stop_wh": 42.5,
                    "stop_reason": "EVDisconnected",
                }
            )
            await storage.save_transaction(stopped)
            assert await storage.transactions() == [stopped]
            await storage.delete_transaction(record.id)
            assert await storage.transactions() == []


async def test_the_invalid_id_allowance_start_is_kept_from_its_first_write(tmp_path: Path) -> None:
    """MaxEnergyOnInvalidId counts from the register of the first refusal acted on, also after a
    reopen; a later call gets that register back, and a gone transaction keeps nothing."""
    path = tmp_path / "db.sqlite3"
    record = TransactionRecord(
        id="tx-1", evse_id=1, connector_id=1, id_token="T", started_at=T0, meter_start_wh=0, state="Charging"
    )
    with trio.fail_after(10):
        async with open_storage(path) as storage:
            await storage.save_transaction(record)
            assert await storage.count_invalid_id_from("tx-1", 1200.0) == 1200.0
        async with open_storage(path) as storage:
            assert await storage.count_invalid_id_from("tx-1", 1500.0) == 1200.0
            loaded = await storage.get_transaction("tx-1")
            assert loaded is not None and loaded.invalid_id_from_wh == 1200.0
            assert await storage.count_invalid_id_from("gone", 7.0) == 7.0


async def test_boot_state_defaults_then_persists(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with trio.fail_after(10):
        async with open_storage(path) as storage:
            assert await storage.boot_state() == BootState()
            await storage.save_boot_state(BootState("Pending", T0, None))
        async with open_storage(path) as storage:
            assert await storage.boot_state() == BootState("Pending", T0, None)


async def test_naive_datetimes_are_a_bug(tmp_path: Path) -> None:
    record = TransactionRecord("t", 1, 1, None, datetime(2025, 1, 1), 0.0, "Idle")
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            with pytest.raises(ValueError, match="naive"):
                await storage.save_transaction(record)


def test_a_new_database_is_migrated_in_one_commit_and_an_old_one_step_by_step(tmp_path: Path) -> None:
    """A first start pays one commit (one fsync) for the whole schema; an existing file keeps one
    commit per migration, so a crash in the middle leaves it at a known version with its data."""
    for start, commits in ((0, 1), (5, LATEST - 5)):
        path = tmp_path / f"from-{start}.sqlite3"
        if start:
            build_at_version(path, start)
        conn = connect(path)
        statements: list[str] = []
        conn.set_trace_callback(statements.append)
        try:
            assert migrate(conn) == LATEST
        finally:
            conn.close()
        assert statements.count("COMMIT") == commits, start


async def test_a_failing_migration_rolls_back_to_the_previous_version(tmp_path: Path) -> None:
    path = tmp_path / "tampered.sqlite3"
    build_at_version(path, 1)
    conn = sqlite3.connect(path)
    # Someone added by hand the column migration 2 adds: migration 2 must fail as a whole.
    conn.execute("ALTER TABLE outbox ADD COLUMN last_attempt_at TEXT")
    conn.close()
    with trio.fail_after(10), pytest.raises(MigrationError, match="m0002"):
        async with open_storage(path):
            pytest.fail("opened a database whose migration failed")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "dead_letter" not in tables
    conn.close()


async def test_m0009_moves_the_local_transaction_id_out_of_queued_payloads(tmp_path: Path) -> None:
    """Earlier versions stored the 1.6 local id as `_localTransactionId` inside the queued payload;
    migration 9 moves it to the outbox's transaction_id column (and links 2.0.1 events by theirs)."""
    path = tmp_path / "old.sqlite3"
    conn = connect(path)
    try:
        migrate(conn, target=5)
        conn.executescript(
            """
            INSERT INTO transactions (id, evse_id, connector_id, id_token, started_at, meter_start_wh, state,
                                      seq_no, csms_transaction_id)
                VALUES ('-3', 1, 1, 'TAG1', '2025-01-02T03:04:05+00:00', 10, 'Started', 0, 77);
            INSERT INTO outbox (action, payload, attempts, offline, created_at) VALUES
                ('StartTransaction', '{"connectorId":1,"idTag":"TAG1","_localTransactionId":-3}', 0, 1,
                 '2025-01-02T03:04:05+00:00'),
                ('StopTransaction', '{"transactionId":77,"meterStop":20}', 0, 1, '2025-01-02T03:04:06+00:00'),
                ('TransactionEvent',
                 '{"eventType":"Updated","transactionInfo":{"transactionId":"tx-9"}}',
                 0, 0, '2025-01-02T03:04:07+00:00');
            """
        )
    finally:
        conn.close()
    with trio.fail_after(10):
        async with open_storage(path) as storage:
            rows = await storage.read(
                lambda c: [tuple(r) for r in c.execute("SELECT action, payload, transaction_id FROM outbox")]
            )
    assert rows == [
        ("StartTransaction", '{"connectorId":1,"idTag":"TAG1"}', "-3"),
        ("StopTransaction", '{"transactionId":77,"meterStop":20}', "-3"),
        ("TransactionEvent", '{"eventType":"Updated","transactionInfo":{"transactionId":"tx-9"}}', "tx-9"),
    ]

"""The durable outbox: transaction-related messages, written to SQLite before they are sent.

Every method returns only after its write is committed (synchronous=FULL), so a message the session
was told is queued survives a crash or power loss. A message is never silently dropped: after its last
attempt it moves to `dead_letter`, where it is kept and logged. It never sends anything itself.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import trio

from evstation.runtime.storage import Storage, UnknownEntryError, from_db_time, to_db_time, utc_now

logger = logging.getLogger(__name__)

_COLUMNS = "id, action, payload, attempts, offline, created_at, last_attempt_at"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One queued CALL. `payload` is a fresh copy decoded from the database: changing it changes nothing."""

    id: int
    action: str
    payload: dict[str, Any]
    attempts: int
    offline: bool
    created_at: datetime
    last_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A transaction message that used up its attempts; kept for the operator, never re-sent by itself."""

    entry: OutboxEntry
    reason: str
    given_up_at: datetime


def _encode(payload: dict[str, Any]) -> str:
    # allow_nan=False: NaN is not JSON, and the CSMS would reject the frame after we persisted it.
    return json.dumps(payload, separators=(",", ":"), allow_nan=False)


def _entry(row: sqlite3.Row) -> OutboxEntry:
    created = from_db_time(row["created_at"])
    assert created is not None
    return OutboxEntry(
        id=row["id"],
        action=row["action"],
        payload=json.loads(row["payload"]),
        attempts=row["attempts"],
        offline=bool(row["offline"]),
        created_at=created,
        last_attempt_at=from_db_time(row["last_attempt_at"]),
    )


def _fetch(conn: sqlite3.Connection, entry_id: int) -> OutboxEntry:
    row = conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (entry_id,)).fetchone()
    if row is None:
        raise UnknownEntryError(f"no outbox entry {entry_id}")
    return _entry(row)


class Outbox:
    """FIFO of transaction messages over `Storage`. Use one instance per station (it owns the wake-up)."""

    def __init__(self, storage: Storage, *, clock: Callable[[], datetime] = utc_now) -> None:
        self._storage = storage
        self._clock = clock
        # Replaced after every put: a waiter grabs the current one *before* it checks the depth, so
        # a put that commits after the check always sets the event that waiter holds.
        self._put_event = trio.Event()
        # Same scheme for removals (delivered or given up), for `wait_empty`.
        self._taken_event = trio.Event()

    def _taken(self) -> None:
        self._taken_event.set()
        self._taken_event = trio.Event()

    async def put(self, action: str, payload: dict[str, Any], *, offline: bool = False) -> OutboxEntry:
        """Append a message; returns the stored entry with its sequence id (the FIFO order)."""
        entry = await self.put_with(action, lambda conn: payload, offline=offline)
        assert entry is not None
        return entry

    async def put_with(
        self,
        action: str,
        build: Callable[[sqlite3.Connection], dict[str, Any] | None],
        *,
        offline: bool = False,
    ) -> OutboxEntry | None:
        """Append the message `build(conn)` returns, in the same SQLite transaction as `build`'s own writes.

        For a message that must change other state atomically with being queued (a transaction's
        seqNo, its Ended state): a crash leaves both or neither, so a restart can never queue the same
        message twice or lose it. `build` runs in the database thread; returning None queues nothing
        (its writes still commit). An exception in `build` rolls everything back.
        """
        created = to_db_time(self._clock())

        def work(conn: sqlite3.Connection) -> OutboxEntry | None:
            payload = build(conn)
            if payload is None:
                return None
            cursor = conn.execute(
                "INSERT INTO outbox (action, payload, attempts, offline, created_at) VALUES (?, ?, 0, ?, ?)",
                (action, _encode(payload), int(offline), created),
            )
            assert cursor.lastrowid is not None
            return _fetch(conn, cursor.lastrowid)

        entry = await self._storage.write(work)
        if entry is not None:
            self._put_event.set()
            self._put_event = trio.Event()
        return entry

    async def head(self) -> OutboxEntry | None:
        """The oldest entry: the only one that may be in flight (messages go out in order)."""

        def work(conn: sqlite3.Connection) -> OutboxEntry | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY id LIMIT 1").fetchone()
            return None if row is None else _entry(row)

        return await self._storage.read(work)

    async def entries(self) -> list[OutboxEntry]:
        def work(conn: sqlite3.Connection) -> list[OutboxEntry]:
            return [_entry(row) for row in conn.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY id")]

        return await self._storage.read(work)

    async def depth(self) -> int:
        return await self._storage.read(
            lambda conn: int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        )

    async def record_attempt(self, entry_id: int) -> OutboxEntry:
        """Count one failed attempt and stamp the wall time: the CSMS did not answer the entry on a live
        connection (timeout, CALLERROR or an unusable CALLRESULT). A lost connection is no attempt."""
        now = to_db_time(self._clock())

        def work(conn: sqlite3.Connection) -> OutboxEntry:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ? WHERE id = ?", (now, entry_id)
            )
            return _fetch(conn, entry_id)

        return await self._storage.write(work)

    async def remove(self, entry_id: int) -> None:
        """The CSMS answered with a CALLRESULT: the message is delivered."""

        def work(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,)).rowcount == 0:
                raise UnknownEntryError(f"no outbox entry {entry_id}")

        await self._storage.write(work)
        self._taken()

    async def update_payload(self, entry_id: int, payload: dict[str, Any]) -> OutboxEntry:
        """Rewrite a queued message in place, keeping its position (1.6: fill in the real transactionId)."""
        encoded = _encode(payload)

        def work(conn: sqlite3.Connection) -> OutboxEntry:
            if conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (encoded, entry_id)).rowcount == 0:
                raise UnknownEntryError(f"no outbox entry {entry_id}")
            return _fetch(conn, entry_id)

        return await self._storage.write(work)

    async def give_up(self, entry_id: int, reason: str) -> DeadLetter:
        """Move the entry to `dead_letter` after its last attempt; it is kept there and logged."""
        now = self._clock()
        now_text = to_db_time(now)

        def work(conn: sqlite3.Connection) -> OutboxEntry:
            entry = _fetch(conn, entry_id)
            conn.execute(
                "INSERT INTO dead_letter "
                "(id, action, payload, attempts, offline, created_at, last_attempt_at, reason, given_up_at) "
                "SELECT id, action, payload, attempts, offline, created_at, last_attempt_at, ?, ? "
                "FROM outbox WHERE id = ?",
                (reason, now_text, entry_id),
            )
            conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
            return entry

        entry = await self._storage.write(work)
        self._taken()
        logger.warning(
            "outbox: gave up on %s #%d after %d attempts (%s); kept in dead_letter",
            entry.action,
            entry.id,
            entry.attempts,
            reason,
        )
        return DeadLetter(entry=entry, reason=reason, given_up_at=now)

    async def dead_letters(self) -> list[DeadLetter]:
        def work(conn: sqlite3.Connection) -> list[DeadLetter]:
            rows = conn.execute(f"SELECT {_COLUMNS}, reason, given_up_at FROM dead_letter ORDER BY id")
            result = []
            for row in rows:
                given_up = from_db_time(row["given_up_at"])
                assert given_up is not None
                result.append(DeadLetter(entry=_entry(row), reason=row["reason"], given_up_at=given_up))
            return result

        return await self._storage.read(work)

    async def wait_not_empty(self) -> None:
        """Return as soon as the outbox holds at least one entry (immediately if it already does)."""
        while True:
            event = self._put_event
            if await self.depth() > 0:
                return
            await event.wait()

    async def wait_empty(self) -> None:
        """Return once every entry has been delivered or given up (immediately if none is queued)."""
        while True:
            event = self._taken_event
            if await self.depth() == 0:
                return
            await event.wait()

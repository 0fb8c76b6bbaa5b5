"""The durable outbox: transaction-related messages, written to SQLite before they are sent.

Every method returns only after its write is committed (synchronous=FULL), so a message the session
was told is queued survives a crash or power loss; the one exception is `acknowledge` while `run` is
running, whose delete of a delivered message commits in the background (a crash before it commits
sends that message again: at least once, never lost). A message is never silently dropped: after its
last attempt it moves to `dead_letter`, where it is kept and logged; that table keeps the newest
DEAD_LETTER_LIMIT of them (a CSMS refusing one message a day for years must not fill the card). It
never sends anything itself.

The front of the queue is read ahead, READ_AHEAD rows per query, and kept in memory, so sending a
replayed backlog costs no database round trip per message; the payload stays JSON text there, and
each entry gets it as a `JsonObject` of its own: decoded on first read, sent as that very text.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import sqlite3
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NoReturn

import trio

from evstation.protocol.rpc import JsonObject
from evstation.records import record
from evstation.runtime.storage import (
    Storage,
    StorageWriteError,
    UnknownEntryError,
    from_db_time,
    to_db_time,
    utc_now,
)

logger = logging.getLogger(__name__)

_COLUMNS = "id, action, payload, attempts, offline, created_at, last_attempt_at, transaction_id"
# Rows read per query when the in-memory front of the queue runs dry: one database round trip per
# READ_AHEAD replayed messages instead of one per message.
READ_AHEAD = 128
# `run` lets acknowledged deletes gather this long before it commits them in one transaction: one
# fsync and one database round trip for many messages while a backlog is replayed. It only delays
# the deletes (a crash meanwhile re-sends those messages, as OCPP's at-least-once delivery allows).
# An acknowledgement that leaves the queue empty ends the gathering at once: nothing is left to share
# the commit with, and a message's delete then waits no longer than its commit.
DELETE_GATHER_S = 0.1
# Dead letters kept, the newest: a message given up on is never sent again, and kept only for the
# operator to read. Without a bound a CSMS that refuses (say) one meter value a day fills the SD card
# over the years. 1,000 rows of a few hundred bytes each: well under a megabyte.
DEAD_LETTER_LIMIT = 1000


@record
class OutboxEntry:
    """One queued CALL. `payload` is the stored JSON text, read-only; each entry decodes its own copy
    (on first read), so changing the decoded values changes nothing that is stored or sent."""

    id: int
    action: str
    payload: JsonObject
    attempts: int
    offline: bool
    created_at: datetime
    last_attempt_at: datetime | None = None
    transaction_id: str | None = None  # the station's id of the transaction it belongs to, if any


@record
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
        payload=JsonObject(row["payload"]),
        attempts=row["attempts"],
        offline=bool(row["offline"]),
        created_at=created,
        last_attempt_at=from_db_time(row["last_attempt_at"]),
        transaction_id=row["transaction_id"],
    )


def _fetch(conn: sqlite3.Connection, entry_id: int) -> OutboxEntry:
    return _entry(_fetch_row(conn, entry_id))


def _fetch_row(conn: sqlite3.Connection, entry_id: int) -> sqlite3.Row:
    row: sqlite3.Row | None = conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", (entry_id,)
    ).fetchone()
    if row is None:
        raise UnknownEntryError(f"no outbox entry {entry_id}")
    return row


def _read_ahead(conn: sqlite3.Connection, after_id: int) -> list[sqlite3.Row]:
    return conn.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE id > ? ORDER BY id LIMIT ?", (after_id, READ_AHEAD)
    ).fetchall()


def _delete(conn: sqlite3.Connection, entry_ids: Sequence[int]) -> int:
    placeholders = ", ".join("?" * len(entry_ids))
    return conn.execute(f"DELETE FROM outbox WHERE id IN ({placeholders})", tuple(entry_ids)).rowcount


class Outbox:
    """FIFO of transaction messages over `Storage`.

    Use one instance per station: it owns the wake-ups and the in-memory front of the queue, so no
    one else may write the `outbox` table while it is in use.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        clock: Callable[[], datetime] = utc_now,
        dead_letter_limit: int = DEAD_LETTER_LIMIT,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self._dead_letter_limit = dead_letter_limit
        # Replaced after every put: a waiter grabs the current one *before* it checks the depth, so
        # a put that commits after the check always sets the event that waiter holds.
        self._put_event = trio.Event()
        # Same scheme for removals (delivered or given up), for `wait_empty`.
        self._taken_event = trio.Event()
        # The first rows of the table in id order, as read (payload still JSON text). `_front_is_all`:
        # the table holds nothing after them. Unknown until the first read.
        self._front: deque[sqlite3.Row] = deque()
        self._front_known = False
        self._front_is_all = False
        # Every row with an id up to this one is deleted, or acknowledged and being deleted.
        self._popped_id = 0
        # Bumped whenever the front changes other than by a read: a read that was under way then is stale.
        self._front_epoch = 0
        # The entry `queued_after` built for a front row, which `head` hands out (once) while that very
        # row object is at the front (a changed row is a new object).
        self._built: tuple[sqlite3.Row, OutboxEntry] | None = None
        # Acknowledged entries whose delete `run` has not committed yet, and its wake-up.
        self._to_delete: list[int] = []
        self._deleting: set[int] = set()
        self._delete_wanted = trio.Event()
        # Set when an acknowledgement leaves the queue empty: no other will come soon to share the
        # commit, so `run` commits at once instead of gathering (a kill then repeats less).
        self._drained = trio.Event()
        self._running = False

    def _taken(self) -> None:
        self._taken_event.set()
        self._taken_event = trio.Event()

    def _pop_front(self, entry_id: int) -> None:
        """`entry_id` leaves the queue: the front moves on, or (not the head) is read again."""
        self._front_epoch += 1
        if self._front and self._front[0]["id"] == entry_id:
            self._front.popleft()
            self._popped_id = entry_id
        else:
            self._forget_front()

    def _unpop(self, entry_id: int) -> None:
        """Taking `entry_id` out of the queue did not commit (refused, cancelled before it ran): it is
        still queued, so the front is read again from it, not after it. Every id before it has left the
        queue or is being deleted if it was the head; if it was not, the bound is already lower."""
        self._popped_id = min(self._popped_id, entry_id - 1)
        self._forget_front()

    def _forget_front(self) -> None:
        self._front_epoch += 1
        self._front.clear()
        self._front_known = False

    def _set_front(self, rows: list[sqlite3.Row]) -> None:
        self._front.extend(rows)
        self._front_known = True
        self._front_is_all = len(rows) < READ_AHEAD

    def _replace_in_front(self, row: sqlite3.Row) -> None:
        for index, held in enumerate(self._front):
            if held["id"] == row["id"]:
                self._front[index] = row
                return

    def _front_needs_rows(self) -> bool:
        return not self._front and not (self._front_known and self._front_is_all)

    async def put(
        self,
        action: str,
        payload: dict[str, Any],
        *,
        offline: bool = False,
        transaction_id: str | None = None,
    ) -> OutboxEntry:
        """Append a message; returns the stored entry with its sequence id (the FIFO order)."""
        entry = await self.put_with(
            action, lambda conn: payload, offline=offline, transaction_id=transaction_id
        )
        assert entry is not None
        return entry

    async def put_with(
        self,
        action: str,
        build: Callable[[sqlite3.Connection], dict[str, Any] | None],
        *,
        offline: bool = False,
        transaction_id: str | None = None,
    ) -> OutboxEntry | None:
        """Append the message `build(conn)` returns, in the same SQLite transaction as `build`'s own writes.

        For a message that must change other state atomically with being queued (a transaction's
        seqNo, its Ended state): a crash leaves both or neither, so a restart can never queue the same
        message twice or lose it. `build` runs in the database thread; returning None queues nothing
        (its writes still commit). An exception in `build` rolls everything back. `build` must not
        read Trio-owned state (it runs in another thread): compute such values before and close over them.
        """
        created = to_db_time(self._clock())

        def work(conn: sqlite3.Connection) -> sqlite3.Row | None:
            payload = build(conn)
            if payload is None:
                return None
            cursor = conn.execute(
                "INSERT INTO outbox (action, payload, attempts, offline, created_at, transaction_id) "
                "VALUES (?, ?, 0, ?, ?, ?)",
                (action, _encode(payload), int(offline), created, transaction_id),
            )
            assert cursor.lastrowid is not None
            return _fetch_row(conn, cursor.lastrowid)

        row = await self._storage.write(work)
        if row is None:
            return None
        # A front that holds the whole queue takes the new row at its end, unless a read that ran after
        # this insert already brought it in (or it has even been sent and acknowledged since).
        last_id = self._front[-1]["id"] if self._front else self._popped_id
        if self._front_known and self._front_is_all and row["id"] > last_id:
            self._front.append(row)
        # A read of the front under way may have run before this insert yet finish after it (trio may
        # run the two continuations in either order): its result is stale, read again.
        self._front_epoch += 1
        self._put_event.set()
        self._put_event = trio.Event()
        return _entry(row)

    async def head(self) -> OutboxEntry | None:
        """The oldest entry: the only one that may be in flight (messages go out in order)."""
        if not await self._fill_front():
            return None
        row, built = self._front[0], self._built
        if built is not None and built[0] is row:
            self._built = None
            return built[1]
        return _entry(row)

    async def _fill_front(self) -> bool:
        """Whether the queue holds an entry, reading the next rows into the front if it ran dry. From
        memory it is no schedule point (as before the read-ahead: the sender's next call yields)."""
        while not self._front:
            if not self._front_needs_rows():  # the front is known to hold the whole (empty) queue
                await trio.lowlevel.checkpoint()
                return False
            after, epoch = self._popped_id, self._front_epoch
            rows = await self._storage.read(functools.partial(_read_ahead, after_id=after))
            # Another task may have filled or changed the front meanwhile: then read again.
            if self._front_needs_rows() and epoch == self._front_epoch:
                self._set_front(rows)
        return True

    def queued_after(self, entry_id: int) -> OutboxEntry | None:
        """The entry after `entry_id` if the in-memory front holds both (None otherwise): what the
        sender may prepare while `entry_id` awaits its answer. The next `head` that finds it at the
        front, unchanged, returns this very entry (built once). Not a checkpoint."""
        front = self._front
        if len(front) < 2 or front[0]["id"] != entry_id:
            return None
        row = front[1]
        entry = _entry(row)
        self._built = (row, entry)
        return entry

    async def entries(self) -> list[OutboxEntry]:
        """Every queued entry, oldest first (not those acknowledged and being deleted)."""
        deleting = frozenset(self._deleting)  # read in Trio, never in the database thread

        def work(conn: sqlite3.Connection) -> list[OutboxEntry]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY id")
            return [_entry(row) for row in rows if row["id"] not in deleting]

        return await self._storage.read(work)

    async def depth(self) -> int:
        """How many entries are queued (not those acknowledged and being deleted)."""
        # A snapshot taken in Trio: the database thread never reads Trio-owned state. A delete that
        # commits meanwhile removes its row, so nothing is subtracted twice.
        deleting = frozenset(self._deleting)

        def work(conn: sqlite3.Connection) -> int:
            ids = {int(row[0]) for row in conn.execute("SELECT id FROM outbox")}
            return len(ids - deleting)

        return await self._storage.read(work)

    async def has_messages_of(self, transaction_id: str | None) -> bool:
        """Whether messages of that transaction (None: of any transaction) are still queued (E14); those
        acknowledged and waiting to be deleted do not count."""
        deleting = frozenset(self._deleting)

        def work(conn: sqlite3.Connection) -> bool:
            if transaction_id is None:
                rows = conn.execute("SELECT id FROM outbox WHERE transaction_id IS NOT NULL")
            else:
                rows = conn.execute("SELECT id FROM outbox WHERE transaction_id = ?", (transaction_id,))
            return any(int(row[0]) not in deleting for row in rows)

        return await self._storage.read(work)

    async def entries_of_gone_transactions(self) -> list[OutboxEntry]:
        """Queued entries that name a transaction with no record left, oldest first.

        A record is deleted only when its transaction's last message leaves the queue (answered, or
        given up), after every earlier one; a given-up entry leaves the queue in the same commit, so
        such entries were answered before the station stopped, and only their removal was lost (the
        transactions block's `recover`)."""

        def work(conn: sqlite3.Connection) -> list[OutboxEntry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE transaction_id IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM transactions WHERE transactions.id = outbox.transaction_id) ORDER BY id"
            )
            return [_entry(row) for row in rows]

        return await self._storage.read(work)

    async def record_attempt(self, entry_id: int) -> OutboxEntry:
        """Count one failed attempt and stamp the wall time: the CSMS did not answer the entry on a live
        connection (timeout, CALLERROR or an unusable CALLRESULT). A lost connection is no attempt."""
        now = to_db_time(self._clock())

        def work(conn: sqlite3.Connection) -> sqlite3.Row:
            conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_attempt_at = ? WHERE id = ?", (now, entry_id)
            )
            return _fetch_row(conn, entry_id)

        row = await self._storage.write(work)
        self._replace_in_front(row)
        return _entry(row)

    async def remove(self, entry_id: int) -> None:
        """The CSMS answered with a CALLRESULT: the message is delivered. Returns once that is committed."""
        self._pop_front(entry_id)
        refill = self._front_needs_rows()
        after, epoch = self._popped_id, self._front_epoch

        def work(conn: sqlite3.Connection) -> list[sqlite3.Row] | None:
            if _delete(conn, (entry_id,)) == 0:
                raise UnknownEntryError(f"no outbox entry {entry_id}")
            # The next rows come with the same round trip when the front ran dry.
            return _read_ahead(conn, after) if refill else None

        try:
            rows = await self._storage.write(work)
        except BaseException:
            self._unpop(entry_id)
            raise
        if rows is not None and self._front_needs_rows() and epoch == self._front_epoch:
            self._set_front(rows)
        self._taken()

    async def acknowledge(self, entry_id: int) -> None:
        """The CSMS answered the head entry with a CALLRESULT: it leaves the queue at once.

        While `run` is running, the delete commits in its task, overlapping the caller's next send
        (deletes that pile up commit together); until then a crash sends the message again, which
        OCPP's at-least-once delivery allows. Without `run`, this is `remove`.
        """
        if not self._running or not self._front or self._front[0]["id"] != entry_id:
            await self.remove(entry_id)
            return
        self._pop_front(entry_id)
        self._deleting.add(entry_id)
        self._to_delete.append(entry_id)
        self._delete_wanted.set()
        if not self._front and self._front_known and self._front_is_all:
            self._drained.set()
        # A cancel point but no schedule point: the sender's next call yields anyway, and a yield per
        # message here would cost a scheduler round while a backlog is replayed.
        await trio.lowlevel.checkpoint_if_cancelled()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Commit the deletes of acknowledged entries in the background; start it with `nursery.start`
        before the outbox is used. When cancelled it first commits what is pending (shielded)."""
        self._running = True
        task_status.started()
        try:
            while True:
                await self._delete_wanted.wait()
                with trio.move_on_after(DELETE_GATHER_S):
                    await self._drained.wait()
                self._drained = trio.Event()
                self._delete_wanted = trio.Event()
                # One batch per gathering: acknowledgements that arrive while it commits set the
                # new event and wait for the next gathering, not for a commit of their own each.
                # A batch the database refuses (disk full, read-only: logged there) stays pending and
                # commits, with what joined it meanwhile, once writes succeed again.
                await self._storage.until_written(self._commit_batch)
        finally:
            self._running = False
            # Still refused at shutdown: those messages are sent again after the restart, which
            # at-least-once delivery allows (a transaction's answered ones are recognised then).
            with trio.CancelScope(shield=True), contextlib.suppress(StorageWriteError):
                await self._commit_deletes()

    async def _commit_deletes(self) -> None:
        while self._to_delete:
            await self._commit_batch()

    async def _commit_batch(self) -> None:
        batch, self._to_delete = self._to_delete, []
        if batch:
            try:
                await self._storage.write(functools.partial(self._delete_acknowledged, batch))
            except BaseException:
                # Not committed (cancelled while the database thread was busy with another write, or
                # rolled back): the batch stays pending, so the shielded final commit still deletes it
                # rather than leaving delivered messages queued to be sent again after a restart.
                self._to_delete[:0] = batch
                raise
            self._taken()

    def _delete_acknowledged(self, batch: list[int], conn: sqlite3.Connection) -> None:
        _delete(conn, batch)
        # Still in the database thread: depth() and entries() never see a committed delete as pending.
        self._deleting.difference_update(batch)

    async def update_payload(self, entry_id: int, payload: dict[str, Any]) -> OutboxEntry:
        """Rewrite a queued message in place, keeping its position (1.6: fill in the real transactionId)."""
        encoded = _encode(payload)

        def work(conn: sqlite3.Connection) -> sqlite3.Row:
            if conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (encoded, entry_id)).rowcount == 0:
                raise UnknownEntryError(f"no outbox entry {entry_id}")
            return _fetch_row(conn, entry_id)

        row = await self._storage.write(work)
        self._replace_in_front(row)
        return _entry(row)

    async def give_up(self, entry_id: int, reason: str) -> DeadLetter:
        """Move the entry to `dead_letter` after its last attempt; it is kept there and logged."""
        now = self._clock()
        now_text = to_db_time(now)

        self._pop_front(entry_id)

        def work(conn: sqlite3.Connection) -> tuple[OutboxEntry, int]:
            entry = _fetch(conn, entry_id)
            conn.execute(
                "INSERT INTO dead_letter (id, action, payload, attempts, offline, created_at, "
                "last_attempt_at, transaction_id, reason, given_up_at) "
                "SELECT id, action, payload, attempts, offline, created_at, last_attempt_at, transaction_id, "
                "?, ? FROM outbox WHERE id = ?",
                (reason, now_text, entry_id),
            )
            conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
            # The oldest dead letters go first: they were given up on long ago and are never sent.
            pruned = conn.execute(
                "DELETE FROM dead_letter WHERE id NOT IN "
                "(SELECT id FROM dead_letter ORDER BY id DESC LIMIT ?)",
                (self._dead_letter_limit,),
            ).rowcount
            return entry, pruned

        try:
            entry, pruned = await self._storage.write(work)
        except BaseException:
            self._unpop(entry_id)
            raise
        self._taken()
        # One line per give-up, the pruning named in it: a CSMS refusing often must not double the log.
        logger.warning(
            "outbox: gave up on %s #%d after %d attempts (%s); kept in dead_letter%s",
            entry.action,
            entry.id,
            entry.attempts,
            reason,
            f" (the {pruned} oldest dropped: it keeps the newest {self._dead_letter_limit})"
            if pruned
            else "",
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
            if self._front:
                await trio.lowlevel.checkpoint_if_cancelled()  # as in acknowledge
                return
            # The read-ahead's query, not a count: it runs when the front ran dry, and its rows are
            # what `head` serves next (a put that commits meanwhile sets `event`).
            if await self._fill_front():
                return
            await event.wait()

    async def wait_empty(self) -> None:
        """Return once every entry has been delivered (its delete committed) or given up; immediately
        if none is queued."""
        while True:
            event = self._taken_event
            if not self._front and not self._deleting and await self.depth() == 0:
                return
            await event.wait()

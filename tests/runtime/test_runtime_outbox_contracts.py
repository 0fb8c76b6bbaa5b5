"""The outbox's own promises that the sender's retries would otherwise hide, on a real SQLite file:
a refused delete keeps the entry at the head, a read of the front that a removal overtook is read
again, and what `wait_empty` and `has_messages_of` say about acknowledged entries whose delete is
still gathering. (Each test here was written against a mutant of runtime/outbox.py that survived the
rest of the suite: the docstrings name it.)"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from evstation.runtime.outbox import DELETE_GATHER_S, Outbox
from evstation.runtime.storage import Storage, StorageWriteError, open_storage


def _read_only(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA query_only = ON")


def _writable(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA query_only = OFF")


async def _count(storage: Storage) -> int:
    """Rows in the file's outbox table (acknowledged ones whose delete has not committed included)."""
    count = await storage.read(lambda conn: conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
    return int(count)


@pytest.mark.parametrize("taking", ["remove", "give_up"])
async def test_an_entry_whose_removal_the_database_refuses_stays_the_head(
    tmp_path: Path, taking: str
) -> None:
    """The disk refuses the write that takes the head out of the queue (a delivered message's delete,
    a dead letter's move): the entry is still queued, so it stays the head, and the next one must not
    go out before it. The sender retries once writes succeed, but a link drop meanwhile ends that
    retry, and the next connection's sender starts from `head`. Failed before the fix: the front was
    read again after the refused id, skipping it (sent out of order, or only after a restart)."""
    async with open_storage(tmp_path / "db.sqlite3") as storage:
        outbox = Outbox(storage)
        first = await outbox.put("TransactionEvent", {"seqNo": 0}, transaction_id="tx")
        second = await outbox.put("TransactionEvent", {"seqNo": 1}, transaction_id="tx")
        assert await outbox.head() == first
        await storage.write(_read_only)
        with pytest.raises(StorageWriteError):
            if taking == "remove":
                await outbox.remove(first.id)
            else:
                await outbox.give_up(first.id, "refused")
        assert await outbox.head() == first
        await storage.read(_writable)
        assert await outbox.head() == first
        await outbox.remove(first.id)
        assert await outbox.head() == second
        assert [entry.id for entry in await outbox.entries()] == [second.id]


async def test_a_front_read_overtaken_by_a_remove_is_read_again(tmp_path: Path) -> None:
    """`head` reads the front while another task removes the entry that read returns (the database
    thread serves the read first): the stale rows are dropped and read again, so the removed entry is
    never handed out (sent twice). Fails without `_fill_front`'s epoch check."""
    path = tmp_path / "db.sqlite3"
    async with open_storage(path) as storage:
        first = await Outbox(storage).put("TransactionEvent", {"seqNo": 0}, transaction_id="tx")
        second = await Outbox(storage).put("TransactionEvent", {"seqNo": 1}, transaction_id="tx")
    busy, release = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        busy.set()
        release.wait(10)

    async with open_storage(path) as storage, trio.open_nursery() as nursery:
        outbox = Outbox(storage)  # its front unknown: `head` must read it
        heads: list[int | None] = []

        async def read_head() -> None:
            entry = await outbox.head()
            heads.append(None if entry is None else entry.id)

        nursery.start_soon(storage.write, hold)
        await trio.to_thread.run_sync(busy.wait)
        nursery.start_soon(read_head)
        await trio.testing.wait_all_tasks_blocked()  # its read waits for the database thread
        nursery.start_soon(outbox.remove, first.id)
        await trio.testing.wait_all_tasks_blocked()  # the delete queued behind the read
        release.set()
    assert heads == [second.id]


async def test_wait_empty_waits_for_the_delete_of_an_acknowledged_entry_to_commit(
    tmp_path: Path, manual_clock: trio.testing.MockClock
) -> None:
    """An acknowledged entry's delete still gathering while the queue is otherwise empty: `wait_empty`
    (a Reset's flush) returns only once it is committed. Fails if it counts only what `depth` shows."""
    async with open_storage(tmp_path / "db.sqlite3") as storage, trio.open_nursery() as nursery:
        outbox = Outbox(storage)
        await nursery.start(outbox.run)
        first = await outbox.put("TransactionEvent", {"seqNo": 0}, transaction_id="tx")
        second = await outbox.put("TransactionEvent", {"seqNo": 1}, transaction_id="tx")
        assert await outbox.head() == first
        await outbox.acknowledge(first.id)  # gathers: `second` is still queued
        await outbox.remove(second.id)  # commits at once, leaving only `first`'s pending delete
        emptied = trio.Event()

        async def wait() -> None:
            await outbox.wait_empty()
            emptied.set()

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        # Read after `wait_empty`'s own look at the table (one database thread, in order): it has
        # decided by the time this returns.
        assert await _count(storage) == 1
        await trio.testing.wait_all_tasks_blocked()
        assert not emptied.is_set()
        manual_clock.jump(DELETE_GATHER_S)  # the gathering ends: `run` commits the delete
        await emptied.wait()
        assert await _count(storage) == 0
        nursery.cancel_scope.cancel()


async def test_an_acknowledged_message_whose_delete_gathers_is_no_message_in_queue(
    tmp_path: Path, manual_clock: trio.testing.MockClock
) -> None:
    """E14 messagesInQueue: a message the CSMS answered is not queued any more, though its delete has
    not committed yet. Fails if `has_messages_of` counts the ids being deleted."""
    async with open_storage(tmp_path / "db.sqlite3") as storage, trio.open_nursery() as nursery:
        outbox = Outbox(storage)
        await nursery.start(outbox.run)
        answered = await outbox.put("TransactionEvent", {"seqNo": 0}, transaction_id="done")
        await outbox.put("TransactionEvent", {"seqNo": 0}, transaction_id="other")
        assert await outbox.head() == answered
        await outbox.acknowledge(answered.id)  # gathers: another entry is queued
        assert await _count(storage) == 2  # not committed yet
        assert not await outbox.has_messages_of("done")
        assert await outbox.has_messages_of("other")
        assert await outbox.has_messages_of(None)
        nursery.cancel_scope.cancel()


@pytest.fixture
def manual_clock() -> trio.testing.MockClock:
    """Virtual time that moves only when the test jumps it (the gathering pause then lasts)."""
    return trio.testing.MockClock()

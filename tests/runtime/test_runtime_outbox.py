"""The durable outbox on a real SQLite file: FIFO order, persistence across reopen, dead letters, wake-up."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio
import trio.testing

from evstation.runtime.outbox import DEAD_LETTER_LIMIT, DELETE_GATHER_S, READ_AHEAD, Outbox, OutboxEntry
from evstation.runtime.storage import UnknownEntryError, open_storage

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


class StepClock:
    """A wall clock that advances one second per reading, so timestamps are distinct and known."""

    def __init__(self) -> None:
        self._ticks: Iterator[int] = iter(range(10**6))

    def __call__(self) -> datetime:
        return T0 + timedelta(seconds=next(self._ticks))


async def test_entries_keep_fifo_order_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "station.sqlite3"
    with trio.fail_after(10):
        async with open_storage(path) as storage:
            outbox = Outbox(storage, clock=StepClock())
            first = await outbox.put("StartTransaction", {"connectorId": 1, "meterStart": 0})
            second = await outbox.put("MeterValues", {"connectorId": 1, "transactionId": -1}, offline=True)
            third = await outbox.put("StopTransaction", {"transactionId": -1, "meterStop": 1500})
            assert first.id < second.id < third.id
            assert (first.attempts, first.offline, first.created_at) == (0, False, T0)
            assert second.offline is True
            assert await outbox.depth() == 3

        async with open_storage(path) as storage:
            outbox = Outbox(storage)
            entries = await outbox.entries()
            assert [e.action for e in entries] == ["StartTransaction", "MeterValues", "StopTransaction"]
            assert entries == [first, second, third]
            assert await outbox.head() == first


async def test_remove_on_callresult_advances_the_head(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            assert await outbox.head() is None
            a = await outbox.put("TransactionEvent", {"seqNo": 0})
            b = await outbox.put("TransactionEvent", {"seqNo": 1})
            await outbox.remove(a.id)
            assert await outbox.head() == b
            await outbox.remove(b.id)
            assert await outbox.head() is None
            assert await outbox.depth() == 0
            with pytest.raises(UnknownEntryError):
                await outbox.remove(b.id)


async def test_record_attempt_counts_and_stamps_wall_time(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with trio.fail_after(10):
        async with open_storage(path) as storage:
            outbox = Outbox(storage, clock=StepClock())
            entry = await outbox.put("TransactionEvent", {"seqNo": 0})  # reads T0
            once = await outbox.record_attempt(entry.id)  # T0 + 1 s
            twice = await outbox.record_attempt(entry.id)  # T0 + 2 s
            assert (once.attempts, once.last_attempt_at) == (1, T0 + timedelta(seconds=1))
            assert (twice.attempts, twice.last_attempt_at) == (2, T0 + timedelta(seconds=2))
            with pytest.raises(UnknownEntryError):
                await outbox.record_attempt(entry.id + 100)
        async with open_storage(path) as storage:
            head = await Outbox(storage).head()
            assert head is not None
            assert head.attempts == 2


async def test_update_payload_rewrites_in_place(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            start = await outbox.put("StartTransaction", {"connectorId": 1})
            stop = await outbox.put("StopTransaction", {"transactionId": -1, "meterStop": 10})
            # 1.6: StartTransaction.conf carried transactionId 4711; fix the queued StopTransaction.
            updated = await outbox.update_payload(stop.id, {**stop.payload, "transactionId": 4711})
            assert updated.payload == {"transactionId": 4711, "meterStop": 10}
            assert (updated.id, updated.created_at) == (stop.id, stop.created_at)
            assert [e.id for e in await outbox.entries()] == [start.id, stop.id]
            with pytest.raises(UnknownEntryError):
                await outbox.update_payload(stop.id + 100, {})


async def test_returned_payload_is_a_copy(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            entry = await outbox.put("MeterValues", {"meterValue": [{"timestamp": "t"}]})
            meter_values = entry.payload["meterValue"]
            assert isinstance(meter_values, list)
            meter_values.clear()
            head = await outbox.head()
            assert head is not None
            assert head.payload == {"meterValue": [{"timestamp": "t"}]}
            assert head.payload.text == '{"meterValue":[{"timestamp":"t"}]}'  # what is sent


async def test_give_up_keeps_the_message_in_dead_letter(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db.sqlite3"
    with trio.fail_after(10):
        async with open_storage(path) as storage:
            outbox = Outbox(storage, clock=StepClock())
            doomed = await outbox.put("StopTransaction", {"transactionId": 9, "meterStop": 5})
            survivor = await outbox.put("MeterValues", {"transactionId": 10})
            for _ in range(3):
                await outbox.record_attempt(doomed.id)
            dead = await outbox.give_up(doomed.id, "CALLERROR InternalError after 3 attempts")
            assert dead.entry.attempts == 3
            assert "StopTransaction" in caplog.text
            assert "dead_letter" in caplog.text
            assert await outbox.head() == survivor
        async with open_storage(path) as storage:
            letters = await Outbox(storage).dead_letters()
            assert len(letters) == 1
            kept = letters[0]
            assert (kept.entry.id, kept.entry.action, dict(kept.entry.payload)) == (
                doomed.id,
                "StopTransaction",
                {"transactionId": 9, "meterStop": 5},
            )
            assert kept.entry.attempts == 3
            assert kept.reason == "CALLERROR InternalError after 3 attempts"
            assert kept.given_up_at == dead.given_up_at
            with pytest.raises(UnknownEntryError):
                await Outbox(storage).give_up(doomed.id, "twice")


async def test_dead_letter_keeps_only_the_newest_up_to_its_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CSMS that refuses a message now and then, for years: the dead letters stop at the limit,
    the oldest dropped (and said so), the newest kept; the queue itself is untouched."""
    limit = 3
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage, clock=StepClock(), dead_letter_limit=limit)
            doomed = [await outbox.put("MeterValues", {"transactionId": n}) for n in range(limit + 4)]
            pending = await outbox.put("StopTransaction", {"transactionId": 99})
            for entry in doomed:
                await outbox.give_up(entry.id, "CALLERROR")
            letters = await outbox.dead_letters()
            assert [letter.entry.id for letter in letters] == [entry.id for entry in doomed[-limit:]]
            assert await outbox.entries() == [pending]
    assert "kept in dead_letter (the 1 oldest dropped: it keeps the newest 3)" in caplog.text
    assert DEAD_LETTER_LIMIT == 1000


async def test_wait_not_empty_returns_at_once_when_entries_exist(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            await outbox.put("TransactionEvent", {"seqNo": 0})
            await outbox.wait_not_empty()


async def test_wait_not_empty_reads_the_next_rows_ahead_instead_of_counting(tmp_path: Path) -> None:
    """After a restart (nothing in memory) and whenever the read-ahead runs dry, wait_not_empty answers
    with the read-ahead's own query: the rows it read are what head serves next, without another read."""
    path = tmp_path / "db.sqlite3"
    with trio.fail_after(10):
        async with open_storage(path) as storage:
            first = Outbox(storage)
            queued = [await first.put("TransactionEvent", {"seqNo": n}) for n in range(READ_AHEAD + 2)]
        async with open_storage(path) as storage, trio.open_nursery() as nursery:
            outbox = Outbox(storage)
            await nursery.start(outbox.run)
            await outbox.wait_not_empty()
            for entry in queued[:READ_AHEAD]:
                assert await outbox.head() == entry
                await outbox.acknowledge(entry.id)  # its delete commits in the background
            # The front ran dry with two rows left in the table: wait_not_empty reads them ahead.
            await outbox.wait_not_empty()
            hidden = await storage.write(lambda conn: conn.execute("DELETE FROM outbox").rowcount)
            assert hidden >= 2  # gone from the table behind the outbox's back, still served from memory:
            assert await outbox.head() == queued[READ_AHEAD]
            nursery.cancel_scope.cancel()


async def test_wait_not_empty_waits_when_only_acknowledged_entries_remain(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage, trio.open_nursery() as nursery:
            outbox = Outbox(storage)
            await nursery.start(outbox.run)
            entry = await outbox.put("TransactionEvent", {"seqNo": 0})
            await outbox.wait_not_empty()
            await outbox.acknowledge(entry.id)  # still in the table until its delete commits
            heads: list[OutboxEntry | None] = []

            async def sender() -> None:
                await outbox.wait_not_empty()
                heads.append(await outbox.head())

            async with trio.open_nursery() as sending:
                sending.start_soon(sender)
                await trio.testing.wait_all_tasks_blocked()
                later = await outbox.put("TransactionEvent", {"seqNo": 1})
            assert heads == [later]
            nursery.cancel_scope.cancel()


async def test_wait_not_empty_wakes_on_put(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            woke = trio.Event()

            async def waiter() -> None:
                await outbox.wait_not_empty()
                woke.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                assert not woke.is_set()
                await outbox.put("TransactionEvent", {"seqNo": 0})
                await woke.wait()


async def test_not_json_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            with pytest.raises(ValueError):
                await outbox.put("MeterValues", {"value": float("nan")})
            assert await outbox.depth() == 0


async def test_wait_empty_returns_once_the_last_entry_is_delivered(tmp_path: Path) -> None:
    async with open_storage(tmp_path / "s.db") as storage:
        outbox = Outbox(storage)
        await outbox.wait_empty()  # nothing queued: returns at once
        first = await outbox.put("StopTransaction", {"transactionId": 1})
        second = await outbox.put("StopTransaction", {"transactionId": 2})
        emptied = trio.Event()

        async def waiter() -> None:
            await outbox.wait_empty()
            emptied.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await outbox.remove(first.id)
            await trio.testing.wait_all_tasks_blocked()
            assert not emptied.is_set()
            await outbox.give_up(second.id, "test")
            with trio.fail_after(5):
                await emptied.wait()


# -- the in-memory front and background deletes (replay speed, docs/storage.md) --------------------


async def test_a_backlog_longer_than_the_read_ahead_comes_out_whole_and_in_order(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    count = 2 * READ_AHEAD + 5
    with trio.fail_after(30):
        async with open_storage(path) as storage:
            writer = Outbox(storage)
            for n in range(count):
                await writer.put("TransactionEvent", {"seqNo": n})
        async with open_storage(path) as storage:
            outbox = Outbox(storage)
            seen = []
            while (head := await outbox.head()) is not None:
                seen.append(head.payload["seqNo"])
                if len(seen) == READ_AHEAD:  # a put while the front does not hold the whole queue
                    await outbox.put("TransactionEvent", {"seqNo": count})
                await outbox.remove(head.id)
            assert seen == list(range(count + 1))
            assert await outbox.depth() == 0


async def test_a_put_joins_a_front_that_holds_the_whole_queue(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            first = await outbox.put("TransactionEvent", {"seqNo": 0})
            assert await outbox.head() == first  # the front is read, and is the whole queue
            second = await outbox.put("TransactionEvent", {"seqNo": 1})
            await outbox.remove(first.id)
            assert await outbox.head() == second
            await outbox.remove(second.id)
            assert await outbox.head() is None


async def test_changes_to_a_queued_entry_show_in_the_head(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            entry = await outbox.put("StopTransaction", {"transactionId": -1})
            assert await outbox.head() == entry
            await outbox.update_payload(entry.id, {"transactionId": 42})
            await outbox.record_attempt(entry.id)
            head = await outbox.head()
            assert head is not None
            assert (dict(head.payload), head.attempts) == ({"transactionId": 42}, 1)


async def test_removing_an_entry_behind_the_head_keeps_the_order(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            a, b, c = [await outbox.put("TransactionEvent", {"seqNo": n}) for n in range(3)]
            assert await outbox.head() == a
            await outbox.give_up(b.id, "operator")
            await outbox.remove(a.id)
            assert await outbox.head() == c


async def test_an_acknowledged_entry_leaves_at_once_and_its_delete_commits_in_the_background(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite3"
    with trio.fail_after(10):
        async with open_storage(path) as storage, trio.open_nursery() as nursery:
            outbox = Outbox(storage)
            await nursery.start(outbox.run)
            first = await outbox.put("TransactionEvent", {"seqNo": 0})
            second = await outbox.put("TransactionEvent", {"seqNo": 1})
            assert await outbox.head() == first
            await outbox.acknowledge(first.id)
            # Gone from the queue before its delete is committed...
            assert await outbox.head() == second
            assert await outbox.depth() == 1
            assert await outbox.entries() == [second]
            await outbox.acknowledge(second.id)
            # ...and wait_empty returns only once every delete is.
            await outbox.wait_empty()
            rows = await storage.read(lambda conn: conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            assert rows == 0
            nursery.cancel_scope.cancel()


async def test_pending_deletes_are_committed_when_the_outbox_stops(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with trio.fail_after(10):
        async with open_storage(path) as storage, trio.open_nursery() as nursery:
            outbox = Outbox(storage)
            await nursery.start(outbox.run)
            entries = [await outbox.put("TransactionEvent", {"seqNo": n}) for n in range(3)]
            for entry in entries[:2]:
                assert await outbox.head() == entry
                await outbox.acknowledge(entry.id)
            nursery.cancel_scope.cancel()  # at once: the deletes may not have run yet
        async with open_storage(path) as storage:
            assert await Outbox(storage).entries() == [entries[2]]


async def test_acknowledge_without_run_is_remove(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            entry = await outbox.put("TransactionEvent", {"seqNo": 0})
            await outbox.acknowledge(entry.id)
            rows = await storage.read(lambda conn: conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            assert rows == 0
            with pytest.raises(UnknownEntryError):
                await outbox.acknowledge(entry.id)


async def test_entries_put_while_the_front_is_drained_all_come_out_once_in_order(tmp_path: Path) -> None:
    """Producers and the sender interleave freely (reads of the front racing inserts): every entry
    is seen exactly once, in id order, and the outbox ends empty."""
    total = 3 * READ_AHEAD
    with trio.fail_after(60):
        async with open_storage(tmp_path / "db.sqlite3") as storage, trio.open_nursery() as nursery:
            outbox = Outbox(storage)
            await nursery.start(outbox.run)
            seen: list[int] = []

            async def produce(first: int) -> None:
                for n in range(first, total, 2):
                    await outbox.put("TransactionEvent", {"seqNo": n})

            async def consume() -> None:
                while len(seen) < total:
                    await outbox.wait_not_empty()
                    head = await outbox.head()
                    if head is None:
                        await trio.lowlevel.checkpoint()
                        continue
                    seen.append(head.id)
                    await outbox.acknowledge(head.id)

            async with trio.open_nursery() as work:
                work.start_soon(consume)
                work.start_soon(produce, 0)
                work.start_soon(produce, 1)
            await outbox.wait_empty()
            nursery.cancel_scope.cancel()
    assert seen == sorted(seen)
    assert len(set(seen)) == total


async def test_queued_after_builds_the_next_entry_that_head_then_returns_once(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage:
            outbox = Outbox(storage)
            first = await outbox.put("TransactionEvent", {"seqNo": 0})
            assert outbox.queued_after(first.id) is None  # nothing read ahead yet
            second = await outbox.put("MeterValues", {"seqNo": 1})
            third = await outbox.put("MeterValues", {"seqNo": 2})
            assert await outbox.head() == first
            assert outbox.queued_after(second.id) is None  # not the head
            following = outbox.queued_after(first.id)
            assert following == second
            await outbox.remove(first.id)
            assert await outbox.head() is following  # built once, handed out once...
            again = await outbox.head()
            assert again == second and again is not following  # ...then a fresh copy as always
            # A change to the entry after it was built ahead: head returns the changed entry.
            built = outbox.queued_after(second.id)
            assert built == third
            await outbox.remove(second.id)
            await outbox.update_payload(third.id, {"seqNo": 3})
            head = await outbox.head()
            assert head is not None and head is not built
            assert head.payload == {"seqNo": 3}
            assert outbox.queued_after(third.id) is None  # nothing after it


@pytest.fixture
def manual_clock() -> trio.testing.MockClock:
    """Virtual time that moves only when the test jumps it (the gathering pause is then exact)."""
    return trio.testing.MockClock()


async def test_a_delete_batch_waiting_for_the_database_is_committed_when_the_outbox_stops(
    tmp_path: Path, manual_clock: trio.testing.MockClock
) -> None:
    """`run` cancelled (station shutdown) while its gathered batch waits for the database thread, busy
    with another write: the shielded final commit still deletes that batch. Otherwise the delivered
    message stays queued and is sent again after the restart."""
    path = tmp_path / "db.sqlite3"
    busy, release = threading.Event(), threading.Event()

    def hold(conn: object) -> None:
        busy.set()
        release.wait(10)

    async with open_storage(path) as storage, trio.open_nursery() as outer:
        outbox = Outbox(storage)
        async with trio.open_nursery() as running:
            await running.start(outbox.run)
            delivered = await outbox.put("TransactionEvent", {"seqNo": 0})
            waiting = await outbox.put("TransactionEvent", {"seqNo": 1})  # so the deletes gather
            assert await outbox.head() == delivered
            await outbox.acknowledge(delivered.id)
            outer.start_soon(storage.write, hold)  # another writer holds the database thread
            await trio.to_thread.run_sync(busy.wait)
            manual_clock.jump(DELETE_GATHER_S)
            await trio.testing.wait_all_tasks_blocked()  # run's batch now waits for the thread
            running.cancel_scope.cancel()
            with trio.CancelScope(shield=True):  # this task is inside the cancelled scope too
                await trio.testing.wait_all_tasks_blocked()  # run stopped, or commits what is pending
            release.set()
        assert await outbox.entries() == [waiting]
    # Read from the file by a fresh outbox: `entries` of the one that ran hides ids it still holds as
    # being deleted, so a batch dropped on the cancel (not put back for the final commit) showed only here.
    async with open_storage(path) as storage:
        assert await Outbox(storage).entries() == [waiting]


async def test_deletes_gather_while_entries_remain_and_commit_at_once_when_the_queue_is_empty(
    tmp_path: Path, clock: trio.testing.MockClock
) -> None:
    """While a backlog is replayed the deletes wait DELETE_GATHER_S to commit together; the
    acknowledgement that empties the queue commits at once (with what gathered before it), so a kill
    just after the last answer repeats nothing. (Virtual time stands still while SQLite works.)"""
    with trio.fail_after(10):
        async with open_storage(tmp_path / "db.sqlite3") as storage, trio.open_nursery() as nursery:
            outbox = Outbox(storage)
            await nursery.start(outbox.run)

            async def stored() -> int:
                count = await storage.read(lambda c: c.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
                return int(count)

            first, second = [await outbox.put("TransactionEvent", {"seqNo": n}) for n in range(2)]
            assert await outbox.head() == first
            t0 = trio.current_time()
            await outbox.acknowledge(first.id)
            assert await stored() == 2  # gathering: another entry is queued
            assert await outbox.head() == second
            await outbox.acknowledge(second.id)
            await outbox.wait_empty()
            assert await stored() == 0
            assert trio.current_time() - t0 < DELETE_GATHER_S
            nursery.cancel_scope.cancel()

"""A small durable queue of notifications for the CSMS (security events, hardware-fault events): kept in
one settings-table key, sent head first once the CSMS accepted the boot, an entry removed only when the
CSMS answered it or the transaction-message retry policy gave up on it (logged).

Not the transaction outbox: these messages must not hold up (or be held up by) transaction messages and
their retries. It never decides what an entry means: the owning block gives the encoding, the bound
(`trim`) and the CALL that carries a batch of entries.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, NoReturn, TypeVar

import trio

from evstation.runtime.calls import CallFailed, CallManager, InvalidRequest
from evstation.runtime.device_model import DeviceModel, transaction_retry_policy
from evstation.runtime.link import LinkDown
from evstation.runtime.storage import Storage, StorageWriteError
from evstation.runtime.uplink import Uplink

__all__ = ["PendingQueue"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class PendingQueue(Generic[T]):
    """Entries not yet acknowledged by the CSMS, oldest first, mirrored in storage key `key`.

    `append` stores before it returns (when the database refuses writes the queue lives in memory and is
    stored by `run_saver` once writes succeed). Run `run_saver` and `deliver` in the owner's nursery.
    """

    def __init__(
        self,
        *,
        name: str,
        storage: Storage,
        key: str,
        encode: Callable[[Sequence[T]], str],
        decode: Callable[[str | None], list[T]],
        trim: Callable[[Sequence[T]], tuple[list[T], list[T]]],
    ) -> None:
        self._name = name  # for log lines: "security events", "fault events"
        self._storage = storage
        self._key = key
        self._encode = encode
        self._decode = decode
        self._trim = trim
        self._entries: list[T] = []
        self._added = trio.Event()
        self._emptied = trio.Event()
        self._lock = trio.Lock()  # one writer of the stored queue at a time
        self._save_refused = trio.Event()  # the stored queue is behind memory (`run_saver`)
        # The owner runs `deliver` (set it as the task starts): someone empties the queue.
        self.delivering = False

    @property
    def entries(self) -> list[T]:
        """A copy, oldest first."""
        return list(self._entries)

    async def load(self) -> None:
        self._entries = self._decode(await self._storage.get_setting(self._key))

    async def append(self, entry: T) -> list[T]:
        """Queue `entry` durably; returns the entries the bound dropped (the owner logs them)."""
        async with self._lock:
            kept, dropped = self._trim([*self._entries, entry])
            self._entries = kept
            await self._save()
        self._added.set()
        self._added = trio.Event()
        return dropped

    async def wait_empty(self) -> None:
        """Until the queue is empty; at once when nobody delivers (nobody would empty it)."""
        while self._entries and self.delivering:
            emptied = self._emptied
            await emptied.wait()

    async def _remove(self, sent: Sequence[T]) -> None:
        # By identity: an overfull queue may have dropped some of them while they were in flight.
        gone = {id(entry) for entry in sent}
        async with self._lock:
            remaining = [entry for entry in self._entries if id(entry) not in gone]
            if len(remaining) != len(self._entries):
                self._entries = remaining
                await self._save()
        if not self._entries:
            self._emptied.set()
            self._emptied = trio.Event()

    async def _save(self) -> None:
        """Store the queue as it is in memory (hold `_lock`). A refused write leaves it to `run_saver`:
        entries are sent from memory meanwhile, and a removal not stored only means the CSMS may get
        that entry again after a restart."""
        try:
            await self._storage.set_setting(self._key, self._encode(self._entries))
        except StorageWriteError:
            log.warning("%s queued in memory only until the database takes writes again", self._name)
            self._save_refused.set()

    async def run_saver(self) -> NoReturn:
        while True:
            await self._save_refused.wait()
            self._save_refused = trio.Event()
            await self._storage.until_written(self._save_now)

    async def _save_now(self) -> None:
        async with self._lock:
            await self._storage.set_setting(self._key, self._encode(self._entries))

    async def deliver(
        self,
        *,
        uplink: Uplink,
        device_model: DeviceModel,
        send: Callable[[CallManager, list[T]], Awaitable[object]],
        batch: int = 1,
        describe: Callable[[list[T]], str],
        on_online: Callable[[], None] | None = None,
    ) -> NoReturn:
        """Forever: while online, `send` up to `batch` head entries in one CALL and drop them once
        answered. A CALLERROR is retried per the transaction-message retry policy (TransactionMessage-
        Attempts / RetryInterval; 1.6 alike) and then given up, logged; a schema-invalid batch is given
        up at once. A batch of several given up is not dropped: its entries go again one by one, so
        only the ones the CSMS refuses alone are lost. A lost connection keeps the entries for the next
        one. `on_online` runs each time the loop finds the CSMS accepting us."""
        attempts = 0
        singles = 0  # entries of a refused batch still to go one by one
        while True:
            calls = await uplink.wait_online()
            if on_online is not None:
                on_online()
            if not self._entries:
                # An append wakes us; while offline we then wait above for the next connection.
                await self._added.wait()
                continue
            head = self._entries[: 1 if singles else batch]
            try:
                await send(calls, head)
            except LinkDown:
                await uplink.wait_offline()  # sent again on the next connection
                continue
            except CallFailed as exc:
                attempts += 1
                policy = transaction_retry_policy(device_model)
                delay = None if isinstance(exc, InvalidRequest) else policy.delay_after(attempts)
                if delay is not None:
                    log.warning("%s: %s failed (%s); retry in %g s", self._name, describe(head), exc, delay)
                    await trio.sleep(delay)
                    continue
                attempts = 0
                if len(head) > 1:
                    log.warning("%s: %s refused (%s); one by one now", self._name, describe(head), exc)
                    singles = len(head)
                    continue
                log.error("%s: giving up %s: %s", self._name, describe(head), exc)
            attempts = 0
            singles = max(0, singles - 1)
            await self._remove(head)

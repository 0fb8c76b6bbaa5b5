"""The durable notification queue (runtime/pending_queue.py) on its own, with the session's real uplink
and SQLite file: what its owners' tests (security events, fault events) do not reach."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import trio
import trio.testing
from runtime_session_harness import CsmsPeer, MemoryConnection, open_session_context, serving

from evstation.protocol.versions import OcppVersion
from evstation.runtime.calls import CallErrorReceived, CallManager, InvalidRequest
from evstation.runtime.device_model import transaction_retry_policy
from evstation.runtime.pending_queue import PendingQueue
from evstation.runtime.session import SessionContext

V201 = OcppVersion.V201
KEY = "test.pending"


def queue_of(ctx: SessionContext) -> PendingQueue[str]:
    def trim(entries: Sequence[str]) -> tuple[list[str], list[str]]:
        return list(entries), []

    return PendingQueue[str](
        name="test notes",
        storage=ctx.blocks.transactions.services.storage,
        key=KEY,
        encode=lambda entries: json.dumps(list(entries)),
        decode=lambda text: json.loads(text) if text else [],
        trim=trim,
    )


async def test_an_entry_our_own_schema_refuses_is_given_up_at_once_and_alone(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """InvalidRequest (our payload breaks the schema: nothing was sent) is not retried: the same payload
    cannot pass. In a batch, the others go on one at a time."""
    sent: list[list[str]] = []

    async def send(calls: CallManager, entries: list[str]) -> None:
        sent.append(list(entries))
        if "bad" in entries:
            raise InvalidRequest("Note", "m-1", "schema says no")

    async with open_session_context(tmp_path, V201) as ctx:
        queue = queue_of(ctx)
        for entry in ("ok-1", "bad", "ok-2"):
            await queue.append(entry)
        csms = CsmsPeer(V201)
        async with serving(csms, MemoryConnection(V201), ctx), trio.open_nursery() as nursery:
            queue.delivering = True
            nursery.start_soon(
                lambda: queue.deliver(
                    uplink=ctx.uplink,
                    device_model=ctx.device_model,
                    send=send,
                    batch=3,
                    describe=lambda entries: ",".join(entries),
                )
            )
            with trio.fail_after(1):  # no retry interval is waited: at once
                await queue.wait_empty()
            nursery.cancel_scope.cancel()
        assert await ctx.blocks.transactions.services.storage.get_setting(KEY) == "[]"
    assert sent == [["ok-1", "bad", "ok-2"], ["ok-1"], ["bad"], ["ok-2"]]


async def test_wait_empty_returns_at_once_when_nobody_delivers(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The reset block flushes before a restart; with no delivery task it must not wait for ever.
    async with open_session_context(tmp_path, V201) as ctx:
        queue = queue_of(ctx)
        await queue.append("never sent")
        with trio.fail_after(1):
            await queue.wait_empty()
        assert queue.entries == ["never sent"]


async def test_the_entries_of_a_refused_batch_each_get_their_own_attempts(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A batch the CSMS refuses to the last attempt goes again one entry at a time, and each of those
    starts with a full set of attempts: a single that fails once and then passes is delivered, not
    given up on the batch's used-up count (checked: without the reset, "a" is lost)."""
    sent: list[list[str]] = []
    failed_once: set[str] = set()

    async def send(calls: CallManager, entries: list[str]) -> None:
        sent.append(list(entries))
        if len(entries) > 1:
            raise CallErrorReceived("Note", "m-1", "InternalError", "not as a batch")
        if entries[0] not in failed_once:
            failed_once.add(entries[0])
            raise CallErrorReceived("Note", "m-2", "InternalError", "not yet")

    async with open_session_context(tmp_path, V201) as ctx:
        attempts = transaction_retry_policy(ctx.device_model).max_transmissions
        assert attempts >= 2
        queue = queue_of(ctx)
        for entry in ("a", "b"):
            await queue.append(entry)
        csms = CsmsPeer(V201)
        async with serving(csms, MemoryConnection(V201), ctx), trio.open_nursery() as nursery:
            queue.delivering = True
            nursery.start_soon(
                lambda: queue.deliver(
                    uplink=ctx.uplink,
                    device_model=ctx.device_model,
                    send=send,
                    batch=2,
                    describe=lambda entries: ",".join(entries),
                )
            )
            await queue.wait_empty()
            nursery.cancel_scope.cancel()
        assert await ctx.blocks.transactions.services.storage.get_setting(KEY) == "[]"
    assert sent == [["a", "b"]] * attempts + [["a"], ["a"], ["b"], ["b"]]

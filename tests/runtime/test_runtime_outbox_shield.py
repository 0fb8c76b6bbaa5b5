"""An acknowledged transaction message is removed from the outbox even when the link drops in the same
instant: the CSMS has it, so it must never be sent (and counted by the CSMS) a second time.

Guards the shield around "delivered + remove" in the outbox sender (runtime/session/common.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    CsmsPeer,
    MemoryConnection,
    default_replies,
    open_session_context,
    serve_until_link_down,
)

from evstation.protocol.messages import parse_request
from evstation.protocol.rpc import Call, CallResult, decode, encode
from evstation.protocol.versions import OcppVersion
from evstation.runtime.storage import TransactionRecord

V16, V201 = OcppVersion.V16, OcppVersion.V201
TIMESTAMP = "2025-01-01T00:00:00.000Z"


# One transaction message per version, as the transactions block queues it. Each one's delivery does
# two storage steps before the removal (1.6: record the CSMS's transactionId for the local placeholder,
# then read the transaction back; 2.0.1 Ended with the token's idTokenInfo: cache the token, then forget
# the transaction), so a drop lands between them while "delivered + remove" is under way. One step
# alone would not do: a worker-thread call that has begun finishes despite the cancel, and the removal
# itself takes the entry off the queue before its first checkpoint, so nothing would be left undone.
MESSAGES: dict[OcppVersion, tuple[str, dict[str, Any]]] = {
    V16: (
        "StartTransaction",
        {
            "connectorId": 1,
            "idTag": "TOKEN-1",
            "meterStart": 0,
            "timestamp": TIMESTAMP,
        },
    ),
    V201: (
        "TransactionEvent",
        {
            "eventType": "Ended",
            "timestamp": TIMESTAMP,
            "triggerReason": "EVDeparted",
            "seqNo": 1,
            "transactionInfo": {"transactionId": "tx-1", "stoppedReason": "EVDisconnected"},
            "idToken": {"idToken": "TOKEN-1", "type": "ISO14443"},
        },
    ),
}
# The CSMS's answers to those messages: 2.0.1 with idTokenInfo, which the authorization cache stores.
REPLIES: dict[OcppVersion, dict[str, Any]] = {
    V16: {"idTagInfo": {"status": "Accepted"}, "transactionId": 42},
    V201: {"idTokenInfo": {"status": "Accepted"}},
}


async def answer_then_drop(conn: MemoryConnection, version: OcppVersion, action: str) -> list[Call]:
    """A CSMS that answers every CALL with the default reply, and drops the connection in the same step
    as it answers `action`: the station reads that CALLRESULT and right behind it the end of the link."""
    seen: list[Call] = []
    async for text in conn.up_receive:
        message = decode(text, version)
        if not isinstance(message, Call):
            continue
        parse_request(version, message.action, message.payload)
        seen.append(message)
        reply = REPLIES[version] if message.action == action else default_replies(version)[message.action]
        answer = CallResult(message.message_id, reply)
        await conn.down_send.send(encode(answer))
        if message.action == action:
            conn.close()
    return seen


@pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])
async def test_a_message_answered_as_the_link_drops_is_removed_and_never_sent_again(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    action, payload = MESSAGES[version]
    async with open_session_context(tmp_path, version) as ctx:
        if version is V16:
            # A 1.6 StartTransaction is queued with its transaction's record (one commit); one whose
            # record is gone or already has the CSMS's id was answered, and is never sent.
            for local_id in ("-1", "-2"):
                await ctx.blocks.transactions.services.storage.save_transaction(_started(local_id))
        await ctx.outbox.put(action, payload, transaction_id="-1")
        first = MemoryConnection(version, 1)
        # No trio deadline: while SQLite works in its thread the MockClock may jump to the next one, and a
        # test bound would be that one. pytest-timeout bounds the test in real time instead.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_until_link_down, first, ctx)
            seen_first = await answer_then_drop(first, version, action)
        left = await ctx.outbox.entries()
        # The next connection: the CSMS must not get the acknowledged message again.
        second, csms = MemoryConnection(version, 2), CsmsPeer(version)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, second)
            nursery.start_soon(serve_until_link_down, second, ctx)
            await csms.wait_for("StatusNotification", 2)
            # A sentinel behind anything still queued: once it is sent, the queue has been replayed.
            await ctx.outbox.put(action, payload, transaction_id="-2")
            await csms.wait_for(action)
            nursery.cancel_scope.cancel()
    assert [c.action for c in seen_first].count(action) == 1
    assert left == []
    assert len(csms.of(action)) == 1  # the sentinel only


def _started(local_id: str) -> TransactionRecord:
    return TransactionRecord(
        id=local_id,
        evse_id=1,
        connector_id=1,
        id_token="TOKEN-1",
        started_at=datetime(2025, 1, 1, tzinfo=UTC),
        meter_start_wh=0.0,
        state="Started",
    )

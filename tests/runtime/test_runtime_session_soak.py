"""Soak: 100 abrupt drops and reconnects while transaction messages flow, over real websockets on 127.0.0.1.

Never two connections open at once; each transaction message is acknowledged by exactly one CALLRESULT
that reached the station, in order; a message is sent again only when the CALLRESULT of its previous
transmission was lost in a drop.
"""

from __future__ import annotations

import functools
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path

import trio
from runtime_session_harness import open_session_context

from evstation.protocol.backoff import BackoffSettings
from evstation.protocol.versions import OcppVersion
from evstation.runtime.link import CsmsEndpoint, Link, LinkSettings, run_link
from evstation.runtime.session import serve_session
from evstation.runtime.testcsms import TestCsms, TimelineEntry, TimelineKind, serve_test_csms

STATION = "CS-TEST-1"  # the harness's station id
DROPS = 100
PER_DROP = 3  # messages queued per cycle: 300 in all
SEED = 20250101
HELD_S = 5.0  # "no answer yet" for the drop in an unanswered cycle (the drop comes long before)
BOUND_S = 60.0  # real seconds; the soak takes a few
FAST = BackoffSettings(wait_minimum_s=0.001, random_range_s=0.0, repeat_times=0, attempts_per_endpoint=3)
V201 = OcppVersion.V201


def _event(seq_no: int) -> dict[str, object]:
    return {
        "eventType": "Updated",
        "timestamp": "2025-01-01T00:00:00.000Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": "tx-soak"},
    }


def _is_transaction_call(entry: TimelineEntry) -> bool:
    if entry.kind is not TimelineKind.RECEIVED:
        return False
    frame = json.loads(entry.text)
    return bool(frame[0] == 2 and frame[2] == "TransactionEvent")


@dataclass(frozen=True)
class Transmission:
    """One TransactionEvent CALL as the CSMS saw it, and whether (where) it answered it."""

    connection: int
    index: int  # position in the station's timeline
    seq_no: int
    answered_at: int | None  # timeline position of the CALLRESULT the CSMS sent, if any


def transmissions(timeline: list[TimelineEntry]) -> list[Transmission]:
    connection = 0
    calls: dict[str, tuple[int, int]] = {}  # message id -> (timeline index, seqNo), current connection
    answered: dict[int, int] = {}
    found: list[tuple[int, int, int]] = []
    for index, entry in enumerate(timeline):
        if entry.kind is TimelineKind.CONNECTED:
            connection += 1
            calls = {}
        elif _is_transaction_call(entry):
            frame = json.loads(entry.text)
            calls[frame[1]] = (index, frame[3]["seqNo"])
            found.append((connection, index, frame[3]["seqNo"]))
        elif entry.kind is TimelineKind.SENT:
            frame = json.loads(entry.text)
            if frame[0] == 3 and frame[1] in calls:
                answered[calls[frame[1]][0]] = index
    return [Transmission(c, i, s, answered.get(i)) for c, i, s in found]


async def test_soak_100_drops_exactly_one_acknowledged_delivery_per_message_in_order(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    total = DROPS * PER_DROP
    with trio.fail_after(BOUND_S):
        async with trio.open_nursery() as nursery, open_session_context(tmp_path, V201) as ctx:
            csms: TestCsms = await nursery.start(serve_test_csms)
            entries = csms.subscribe(max_buffer=100_000)
            endpoint = CsmsEndpoint(url=f"ws://127.0.0.1:{csms.port}/ocpp/", priority=0, security_profile=0)
            settings = LinkSettings(
                station_id=STATION, version=V201, endpoints=(endpoint,), backoff=FAST, ping_interval_s=0.0
            )
            await nursery.start(
                functools.partial(
                    run_link,
                    settings,
                    Link(),
                    functools.partial(serve_session, ctx=ctx),
                    rng=random.Random(SEED),
                )
            )
            await csms.wait_for(STATION, "StatusNotification")
            for cycle in range(DROPS):
                for n in range(PER_DROP):
                    await ctx.outbox.put("TransactionEvent", _event(cycle * PER_DROP + n))
                # Drop while a TransactionEvent is unanswered, right after it arrived (its result
                # possibly on its way), right after its result was sent, or a little later.
                moment = rng.choice(("unanswered", "call", "result", "later"))
                csms.delay_results(HELD_S if moment == "unanswered" else 0, "TransactionEvent")
                async for entry in entries:
                    if _is_transaction_call(entry):
                        break
                if moment == "result":
                    async for entry in entries:
                        if entry.kind is TimelineKind.SENT:
                            break
                elif moment == "later":
                    await trio.sleep(rng.uniform(0.0, 0.003))
                csms.drop(STATION)
                await csms.wait_connected(STATION, cycle + 2)
            await ctx.outbox.wait_empty()
            dead = await ctx.outbox.dead_letters()
            nursery.cancel_scope.cancel()

    assert dead == []
    assert csms.max_connections_open(STATION) == 1
    assert csms.connections_total(STATION) == DROPS + 1
    sent = transmissions(csms.timeline(STATION))
    seqs = [t.seq_no for t in sent]
    # Head first, in order: each transmission repeats the previous message or sends the next one.
    assert seqs[0] == 0
    assert all(b in (a, a + 1) for a, b in itertools.pairwise(seqs)), seqs
    assert sorted(set(seqs)) == list(range(total))
    for previous, current in itertools.pairwise(sent):
        if current.seq_no == previous.seq_no + 1:
            # The station moved on only after the CSMS had answered the previous message ...
            assert previous.answered_at is not None and previous.answered_at < current.index
        else:
            # ... and sent a message again only on a new connection, after the drop lost that answer.
            assert current.connection > previous.connection, (previous, current)
    # Exactly one acknowledged delivery per message: the last transmission of each was answered.
    last = {t.seq_no: t for t in sent}
    assert all(t.answered_at is not None for t in last.values())
    repeats = len(sent) - total
    assert repeats <= DROPS  # at most one lost answer per drop
    assert any(t.answered_at is None for t in sent)  # some drops did catch a CALL unanswered

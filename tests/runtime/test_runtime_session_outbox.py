"""The outbox sender and the minimal transactions: in-order delivery across reconnects, retry and dead
letters, the 2.0.1 offline flag and the 1.6 placeholder transaction id. Real SQLite underneath.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from pathlib import Path

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    CsmsPeer,
    Fail,
    MemoryConnection,
    NoAnswer,
    call,
    open_session_context,
    serve_until_link_down,
    serving,
)

from evstation.protocol.backoff import BackoffSettings
from evstation.protocol.versions import OcppVersion
from evstation.runtime.device_model import OFFLINE_TX_FOR_UNKNOWN_ID
from evstation.runtime.evse import Authorized, EvPlugged, EvUnplugged, SessionEnded, StopReason
from evstation.runtime.link import CsmsEndpoint, Link, LinkSettings, run_link
from evstation.runtime.session import SessionContext, serve_session
from evstation.runtime.testcsms import TestCsms, TimelineKind, serve_test_csms

V16, V201 = OcppVersion.V16, OcppVersion.V201
STATION = "CS-TEST-1"  # the harness's station id


def _event(seq_no: int) -> dict[str, object]:
    return {
        "eventType": "Updated",
        "timestamp": "2025-01-01T00:00:00.000Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": "tx-1"},
    }


async def _connect(
    ctx: SessionContext, csms: CsmsPeer, conn: MemoryConnection, nursery: trio.Nursery
) -> None:
    nursery.start_soon(csms.serve, conn)
    nursery.start_soon(serve_until_link_down, conn, ctx)


async def test_outbox_delivers_each_message_once_and_in_order_across_a_reconnect(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Removed only on CALLRESULT; the unanswered head is replayed first on the next connection."""
    async with open_session_context(tmp_path, V201) as ctx:
        for seq_no in range(4):
            await ctx.outbox.put("TransactionEvent", _event(seq_no))
        first = CsmsPeer(V201).then("TransactionEvent", {}, NoAnswer())
        conn = MemoryConnection(V201, 1)
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await _connect(ctx, first, conn, nursery)
                await first.wait_for("TransactionEvent", 2)
                conn.close()
        second = CsmsPeer(V201).then("TransactionEvent", {}, {}, NoAnswer())
        conn = MemoryConnection(V201, 2)
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await _connect(ctx, second, conn, nursery)
                await second.wait_for("TransactionEvent", 3)
                nursery.cancel_scope.cancel()
        left = await ctx.outbox.entries()
    assert [s.call.payload["seqNo"] for s in first.of("TransactionEvent")] == [0, 1]
    assert [s.call.payload["seqNo"] for s in second.of("TransactionEvent")] == [1, 2, 3]
    # The last one was sent but never answered: still queued, nothing else is.
    assert [e.payload["seqNo"] for e in left] == [3]


async def test_callerror_is_retried_per_policy_then_dead_lettered(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 TransactionMessageAttempts / RetryInterval (2.0.1 MessageAttempts / MessageAttemptInterval):
    linear back-off, then give_up with the reason; the next message is not held back for ever."""
    async with open_session_context(
        tmp_path, V16, transaction_message_attempts=3, transaction_message_retry_interval_s=10
    ) as ctx:
        await ctx.outbox.put("MeterValues", {"connectorId": 1, "meterValue": [_meter()]})
        await ctx.outbox.put("MeterValues", {"connectorId": 2, "meterValue": [_meter()]})
        csms = CsmsPeer(V16).then("MeterValues", Fail(), Fail(), Fail())
        conn = MemoryConnection(V16)
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await _connect(ctx, csms, conn, nursery)
                seen = await csms.wait_for("MeterValues", 4)
                nursery.cancel_scope.cancel()
        dead = await ctx.outbox.dead_letters()
    first_at = seen[0].at
    assert [s.at - first_at for s in seen[:3]] == pytest.approx([0, 10, 30])
    assert [s.call.payload["connectorId"] for s in seen] == [1, 1, 1, 2]
    assert len(dead) == 1
    assert dead[0].entry.payload["connectorId"] == 1
    assert "InternalError" in dead[0].reason


@pytest.mark.parametrize("version", [V16, V201])
async def test_a_transaction_whose_last_message_is_given_up_leaves_no_record(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The CSMS refuses every transaction message (CALLERROR, one attempt each): they go to the dead
    letters, the end last (1.6: unsent, its StartTransaction never got an id). Its record goes with it;
    kept, it would stay Ended for ever and be read at every start."""
    start = "StartTransaction" if version is V16 else "TransactionEvent"
    async with open_session_context(tmp_path, version, transaction_message_attempts=1) as ctx:
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                await _session_begins_offline(ctx)
                ctx.evses.events.publish(SessionEnded(1, 1, StopReason.LOCAL))
                await ctx.blocks.transactions.ids.wait_none(frozenset({1}))  # the end is queued
                queued = await ctx.outbox.entries()
                csms = CsmsPeer(version).then(start, *[Fail()] * len(queued))
                await _connect(ctx, csms, MemoryConnection(version), nursery)
                await ctx.outbox.wait_empty()
                nursery.cancel_scope.cancel()
        dead = [d.entry.id for d in await ctx.outbox.dead_letters()]
        left = await ctx.blocks.transactions.services.storage.transactions()
    assert dead == [e.id for e in queued] and len(dead) == 2
    assert left == []


async def test_an_entry_that_breaks_the_schema_is_never_sent_and_dead_lettered_at_once(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A hand-built payload does not bypass the models: an invalid one never reaches the CSMS, and
    retrying the same bytes cannot help, so it goes to the dead letters without waiting."""
    async with open_session_context(
        tmp_path, V16, transaction_message_attempts=3, transaction_message_retry_interval_s=10
    ) as ctx:
        await ctx.outbox.put("MeterValues", {"connectorId": "1", "meterValue": [_meter()]})
        await ctx.outbox.put("MeterValues", {"connectorId": 2, "meterValue": [_meter()]})
        csms = CsmsPeer(V16)
        conn = MemoryConnection(V16)
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await _connect(ctx, csms, conn, nursery)
                start = trio.current_time()
                seen = await csms.wait_for("MeterValues", 1)
                nursery.cancel_scope.cancel()
        dead = await ctx.outbox.dead_letters()
    assert [s.call.payload["connectorId"] for s in seen] == [2]
    assert seen[0].at - start < 10
    assert [d.entry.payload["connectorId"] for d in dead] == ["1"]
    assert "connectorId" in dead[0].reason


def _meter() -> dict[str, object]:
    return {"timestamp": "2025-01-01T00:00:00.000Z", "sampledValue": [{"value": "1"}]}


async def test_v201_e04_transaction_events_queued_offline_carry_offline_true(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A transaction started while offline is queued with offline=true and sent after reconnect (E04)."""
    async with open_session_context(tmp_path, V201) as ctx:
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                ctx.evses.events.publish(EvPlugged(1, 1))
                ctx.evses.events.publish(Authorized(1, "TOKEN-1", "ISO14443"))
                await ctx.outbox.wait_not_empty()
                csms, conn = CsmsPeer(V201), MemoryConnection(V201)
                await _connect(ctx, csms, conn, nursery)
                started = (await csms.wait_for("TransactionEvent"))[0].call.payload
                ctx.evses.events.publish(EvUnplugged(1, 1))
                ctx.evses.events.publish(SessionEnded(1, 1, StopReason.EV_DISCONNECTED))
                events = await csms.wait_for("TransactionEvent", 2)
                nursery.cancel_scope.cancel()
    assert started["eventType"] == "Started"
    assert started["offline"] is True
    assert started["seqNo"] == 0
    assert started["triggerReason"] == "Authorized"
    assert started["idToken"] == {"idToken": "TOKEN-1", "type": "ISO14443"}
    ended = events[1].call.payload
    assert ended["eventType"] == "Ended"
    assert ended["seqNo"] == 1
    assert "offline" not in ended
    assert ended["transactionInfo"] == {
        "transactionId": started["transactionInfo"]["transactionId"],  # type: ignore[index]
        "stoppedReason": "EVDisconnected",
        "chargingState": "Idle",
    }
    # E02 / E06: the cable left the EV (pilot state A), not a parking-bay detector's EVDeparted.
    assert ended["triggerReason"] == "EVCommunicationLost"


async def test_v16_queued_messages_get_the_real_transaction_id_from_start_transaction_conf(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6: MeterValues/StopTransaction queued before StartTransaction.conf carry a local placeholder id,
    rewritten to the CSMS's transactionId before they are sent."""
    async with open_session_context(tmp_path, V16, meter_interval_s=10, run_evses=True) as ctx:
        # The first StartTransaction goes unanswered (30 s MessageTimeout, then 60 s retry interval),
        # so the meter values and the stop are queued under the placeholder meanwhile.
        csms = CsmsPeer(V16).then("StartTransaction", NoAnswer())
        conn = MemoryConnection(V16)
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                await _connect(ctx, csms, conn, nursery)
                await csms.wait_for("StatusNotification", 3)
                ctx.evses.events.publish(Authorized(1, "TOKEN-1", "ISO14443"))
                ctx.evses.events.publish(EvPlugged(1, 1))
                await csms.wait_for("StartTransaction")
                await trio.sleep(25)
                ctx.evses.events.publish(SessionEnded(1, 1, StopReason.LOCAL))
                await csms.wait_for("StopTransaction")
                # A sentinel behind the stop: once it is sent, the stop has been fully processed.
                await ctx.outbox.put("MeterValues", {"connectorId": 2, "meterValue": [_meter()]})
                await csms.wait_for("MeterValues", len(csms.of("MeterValues")) + 1)
                nursery.cancel_scope.cancel()
        remembered = await ctx.blocks.transactions.services.storage.transactions()
    starts = csms.of("StartTransaction")
    assert len(starts) == 2
    assert "_localTransactionId" not in starts[0].call.payload
    meter_values = csms.of("MeterValues")[:-1]
    assert len(meter_values) >= 2
    assert all(m.call.payload["transactionId"] == 42 for m in meter_values)
    stop = csms.of("StopTransaction")[0].call.payload
    assert stop["transactionId"] == 42
    assert stop["reason"] == "Local"
    assert stop["idTag"] == "TOKEN-1"
    assert remembered == []  # forgotten once its StopTransaction was confirmed
    order = csms.actions()[:-1]  # without the sentinel
    assert order[-1] == "StopTransaction"
    assert order.index("StartTransaction") < order.index("MeterValues")


async def _session_begins_offline(ctx: SessionContext, evse_id: int = 1) -> str:
    """TOKEN-1 and a plug on the EVSE with no CSMS: until the transactions block has queued the start.
    Returns the transaction's record id."""
    ids = ctx.blocks.transactions.ids
    ctx.evses.events.publish(Authorized(evse_id, "TOKEN-1", "ISO14443"))
    ctx.evses.events.publish(EvPlugged(evse_id, 1))
    while (record_id := ids.get(evse_id)) is None:
        await ids.changed.wait()
    return record_id


async def _deliver_all(ctx: SessionContext, nursery: trio.Nursery, version: OcppVersion = V16) -> CsmsPeer:
    """Connect a scripted CSMS, let the outbox drain, then end the nursery's tasks."""
    csms = CsmsPeer(version)
    await _connect(ctx, csms, MemoryConnection(version), nursery)
    await ctx.outbox.wait_empty()
    nursery.cancel_scope.cancel()
    return csms


async def test_v16_a_start_transaction_whose_answer_is_stored_is_not_sent_again(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """What a kill leaves after `delivered` committed the CSMS's transactionId and before the entry's
    removal was committed (removals go in 0.1 s batches): the StartTransaction is removed unsent, so the
    CSMS opens no second transaction (one it would never see stopped), and the StopTransaction behind it
    goes out under the stored id."""
    async with open_session_context(tmp_path, V16) as ctx:
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                ids = ctx.blocks.transactions.ids
                await _session_begins_offline(ctx)
                [start] = await ctx.outbox.entries()
                assert start.action == "StartTransaction" and start.transaction_id is not None
                storage = ctx.blocks.transactions.services.storage
                await storage.set_csms_transaction_id(start.transaction_id, 42)
                ctx.evses.events.publish(SessionEnded(1, 1, StopReason.LOCAL))
                await ids.wait_none(frozenset({1}))  # the StopTransaction is queued
                queued = [e.action for e in await ctx.outbox.entries()]
                assert queued == ["StartTransaction", "StopTransaction"]
                csms = await _deliver_all(ctx, nursery)
        assert await ctx.outbox.dead_letters() == []
    assert csms.of("StartTransaction") == []
    [stop] = csms.of("StopTransaction")
    assert stop.call.payload["transactionId"] == 42


@pytest.mark.parametrize("version", [V16, V201])
async def test_a_transaction_answered_to_its_end_before_a_kill_is_not_sent_again_after_the_restart(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """A kill after a transaction's messages were all answered, its last one's answer having deleted
    its record, and before their removals committed (removals go in 0.1 s batches, so a replayed
    backlog can be answered to its end within one). After the restart none of them goes again: not
    the stop (the CSMS would see it twice), and on 1.6 not the StartTransaction, which would open a
    second transaction at the CSMS that the StopTransaction behind it (under the first id) never
    stops. Another transaction's messages behind them still go."""
    async with open_session_context(tmp_path, version) as ctx:
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                answered = await _session_begins_offline(ctx, evse_id=1)
                ctx.evses.events.publish(SessionEnded(1, 1, StopReason.LOCAL))
                await ctx.blocks.transactions.ids.wait_none(frozenset({1}))  # its end is queued
                other = await _session_begins_offline(ctx, evse_id=2)
                first, last = [e for e in await ctx.outbox.entries() if e.transaction_id == answered]
                storage = ctx.blocks.transactions.services.storage
                if version is V16:
                    # What the StartTransaction's delivery committed: the CSMS's id, the stop rewritten.
                    await storage.set_csms_transaction_id(answered, 42)
                    await ctx.outbox.update_payload(last.id, {**last.payload, "transactionId": 42})
                # What the last message's delivery committed.
                await storage.delete_transaction(answered)
                nursery.cancel_scope.cancel()
    async with open_session_context(tmp_path, version) as ctx:
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                assert first.id not in {e.id for e in await ctx.outbox.entries()}
                csms = await _deliver_all(ctx, nursery, version)
        assert await ctx.outbox.dead_letters() == []
    if version is V16:
        # Only the other transaction: its start, and its end by the restart.
        assert [c.call.payload["connectorId"] for c in csms.of("StartTransaction")] == [2]
        assert [c.call.payload["reason"] for c in csms.of("StopTransaction")] == ["Reboot"]
    else:
        sent = {c.call.payload["transactionInfo"]["transactionId"] for c in csms.of("TransactionEvent")}  # type: ignore[index]
        assert sent == {other}
    expected = ("StartTransaction", "StopTransaction") if version is V16 else ("TransactionEvent",) * 2
    assert (first.action, last.action) == expected


@pytest.mark.parametrize("version", [V16, V201])
async def test_link_drops_do_not_use_up_a_messages_attempts(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Only a CSMS that fails to answer on a live connection counts as an attempt (docs/storage.md).

    Three drops while the message awaits its answer, then one unanswered send: with 3 attempts it is
    still retried and delivered, not dead-lettered (which on 1.6 would take its whole transaction).
    """
    action = "MeterValues" if version is V16 else "TransactionEvent"
    payload = {"connectorId": 1, "meterValue": [_meter()]} if version is V16 else _event(0)
    async with open_session_context(
        tmp_path, version, transaction_message_attempts=3, transaction_message_retry_interval_s=10
    ) as ctx:
        await ctx.outbox.put(action, payload)
        for generation in (1, 2, 3):
            dropped = CsmsPeer(version).then(action, NoAnswer())
            conn = MemoryConnection(version, generation)
            with trio.fail_after(1000):
                async with trio.open_nursery() as nursery:
                    await _connect(ctx, dropped, conn, nursery)
                    await dropped.wait_for(action)
                    conn.close()
        assert [e.attempts for e in await ctx.outbox.entries()] == [0]
        csms = CsmsPeer(version).then(action, NoAnswer(), {})
        conn = MemoryConnection(version, 4)
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await _connect(ctx, csms, conn, nursery)
                await csms.wait_for(action, 2)
                await ctx.outbox.wait_empty()
                nursery.cancel_scope.cancel()
        assert await ctx.outbox.dead_letters() == []
    assert len(csms.of(action)) == 2  # the unanswered send and its retry, which was answered


def _silent_link_case(version: OcppVersion) -> tuple[str, dict[str, object], LinkSettings]:
    """A transaction message, and link settings with pings 300 s apart and a 5 s pong timeout."""
    action = "MeterValues" if version is V16 else "TransactionEvent"
    payload = {"connectorId": 1, "meterValue": [_meter()]} if version is V16 else _event(0)
    endpoint = CsmsEndpoint(url="ws://csms.invalid/ocpp", priority=0, security_profile=0)
    quick = BackoffSettings(wait_minimum_s=1.0, random_range_s=0.0, repeat_times=0, attempts_per_endpoint=3)
    settings = LinkSettings(
        station_id=STATION, version=version, endpoints=(endpoint,), backoff=quick, ping_interval_s=300.0
    )
    return action, payload, settings


async def _online_and_quiet(ctx: SessionContext, settings: LinkSettings, nursery: trio.Nursery) -> TestCsms:
    """The test CSMS (real websocket, served in memory), the link to it, and the station online with
    its StatusNotifications answered: nothing of ours in flight."""
    csms: TestCsms = await nursery.start(serve_test_csms)
    serve = functools.partial(serve_session, ctx=ctx)
    dial = csms.open_memory_stream
    await nursery.start(
        functools.partial(run_link, settings, Link(), serve, rng=random.Random(0), connector=dial)
    )
    await ctx.uplink.wait_online()
    await csms.wait_for(STATION, "StatusNotification", 2)
    await trio.sleep(1)  # their answers arrive
    return csms


@pytest.mark.parametrize("version", [V16, V201])
async def test_a_silent_link_costs_a_transaction_message_no_attempt(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """A link that dies without a FIN (a modem losing its bearer: frames and pings go unanswered) is a
    lost link, not a CSMS failing to answer: an answer 5 s late prompts one ping, and with no pong the
    station redials and sends the message again at no cost in attempts.

    3 attempts, a 30 s timeout and 10 s between attempts, pings every 300 s: counted as attempts, the
    timeouts on the dead link would dead-letter the message at ~90 s, long before the keepalive's ping.
    """
    action, payload, settings = _silent_link_case(version)
    async with open_session_context(
        tmp_path, version, message_timeout_s=30, transaction_message_attempts=3,
        transaction_message_retry_interval_s=10,
    ) as ctx:  # fmt: skip
        with trio.fail_after(10_000):
            async with trio.open_nursery() as nursery:
                csms = await _online_and_quiet(ctx, settings, nursery)
                csms.stall(STATION)  # the CSMS's side reads nothing more: the link is silently dead
                silent_from = trio.current_time()
                await ctx.outbox.put(action, payload)
                await ctx.outbox.wait_empty()
                nursery.cancel_scope.cancel()
        assert await ctx.outbox.dead_letters() == []
    dropped = [e.time for e in csms.timeline(STATION) if e.kind is TimelineKind.DISCONNECTED]
    assert dropped[0] - silent_from == pytest.approx(10.0, abs=1.0)  # PROBE_AFTER_S, then the pong timeout
    assert csms.connections_total(STATION) == 2
    assert len(csms.received(STATION, action)) == 1  # the first copy died with the silent link


@pytest.mark.parametrize("version", [V16, V201])
async def test_an_authorize_on_a_silent_link_is_decided_offline_within_seconds(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """A driver presents a token while the link is silently dead: the Authorize's answer, 5 s late,
    prompts a ping; without a pong the call fails and the offline rules decide (OfflineTxForUnknownId:
    authorized) about 10 s after the token, not after the 30 s message timeout and a pong timeout."""
    _, _, settings = _silent_link_case(version)
    async with open_session_context(tmp_path, version, run_evses=True, message_timeout_s=30) as ctx:
        assert (await ctx.device_model.set(OFFLINE_TX_FOR_UNKNOWN_ID, "true")).applies
        with trio.fail_after(10_000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)  # it takes the EVSEs' token requests
                csms = await _online_and_quiet(ctx, settings, nursery)
                csms.stall(STATION)
                with ctx.evses.subscribe() as events:
                    presented_at = trio.current_time()
                    assert await ctx.evses.present_token("STRANGER", "ISO14443", evse_id=1) == 1
                    async for event in events:
                        if isinstance(event, Authorized):
                            break
                    decided_after = trio.current_time() - presented_at
                nursery.cancel_scope.cancel()
    assert len(csms.received(STATION, "Authorize")) == 0  # the stalled CSMS read nothing more
    assert decided_after == pytest.approx(10.0, abs=1.0)


@pytest.mark.parametrize("version", [V16, V201])
async def test_a_csms_that_answers_pings_but_not_the_message_costs_it_an_attempt(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The other side of the ping: a live CSMS that leaves the message unanswered has failed to process
    it, and that is an attempt; the connection stays up."""
    action, payload, settings = _silent_link_case(version)
    async with open_session_context(
        tmp_path, version, message_timeout_s=30, transaction_message_attempts=3,
        transaction_message_retry_interval_s=10,
    ) as ctx:  # fmt: skip
        with trio.fail_after(10_000):
            async with trio.open_nursery() as nursery:
                csms = await _online_and_quiet(ctx, settings, nursery)
                csms.delay_results(1000, action)
                await ctx.outbox.put(action, payload)
                await trio.sleep(31)  # the timeout at 30 s, the pong at once
                assert [e.attempts for e in await ctx.outbox.entries()] == [1]
                assert csms.connections_total(STATION) == 1
                nursery.cancel_scope.cancel()


@pytest.mark.parametrize("version", [V16, V201])
async def test_with_pings_off_an_unanswered_message_sends_no_ping_and_costs_an_attempt(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """WebSocketPingInterval 0 disables the station's pings (1.6 Core key, 2.0.1 OCPPCommCtrlr: no
    ping, or only the CSMS's): the probe after a timeout is a ping too, so it is not sent, and the
    timeout is the CSMS's failure as it was before the probe (an attempt; the connection stays up).
    Pinging anyway would drop the link to a CSMS that never answers pings after every slow answer."""
    action, payload, settings = _silent_link_case(version)
    settings = dataclasses.replace(settings, ping_interval_s=0.0)
    async with open_session_context(
        tmp_path, version, message_timeout_s=30, transaction_message_attempts=3,
        transaction_message_retry_interval_s=10,
    ) as ctx:  # fmt: skip
        with trio.fail_after(10_000):
            async with trio.open_nursery() as nursery:
                csms = await _online_and_quiet(ctx, settings, nursery)
                csms.stall(STATION)  # nothing is answered, pings neither
                await ctx.outbox.put(action, payload)
                await trio.sleep(31 + 5 + 1)  # past the timeout and a pong timeout after it
                assert [e.attempts for e in await ctx.outbox.entries()] == [1]
                assert csms.connections_total(STATION) == 1
                nursery.cancel_scope.cancel()


def _ping_interval_change(version: OcppVersion, seconds: int) -> tuple[str, dict[str, object]]:
    """The CSMS's CALL that sets WebSocketPingInterval."""
    if version is V16:
        return "ChangeConfiguration", {"key": "WebSocketPingInterval", "value": str(seconds)}
    variable = {
        "component": {"name": "OCPPCommCtrlr"},
        "variable": {"name": "WebSocketPingInterval"},
        "attributeValue": str(seconds),
    }
    return "SetVariables", {"setVariableData": [variable]}


@pytest.mark.parametrize("version", [V16, V201])
async def test_a_ping_interval_the_csms_sets_applies_to_the_connection_in_use(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """WebSocketPingInterval set while connected takes effect on that very connection: from 300 s to
    10 s, a CSMS that then goes silent is dropped 15 s later (the next ping 10 s after the change, 5 s
    for its pong), not up to 305 s later; set to 0, a silent CSMS is never pinged, so never dropped."""
    _, _, settings = _silent_link_case(version)
    async with open_session_context(tmp_path, version) as ctx:
        with trio.fail_after(10_000):
            async with trio.open_nursery() as nursery:
                csms = await _online_and_quiet(ctx, settings, nursery)
                answer = await csms.call(STATION, *_ping_interval_change(version, 10))
                changed_at = trio.current_time()
                csms.stall(STATION)
                await csms.wait_connected(STATION, 2)
                await ctx.uplink.wait_online()
                await csms.call(STATION, *_ping_interval_change(version, 0))
                csms.stall(STATION)
                await trio.sleep(3600)
                assert csms.connections_total(STATION) == 2
                nursery.cancel_scope.cancel()
    status = answer["status"] if version is V16 else answer["setVariableResult"][0]["attributeStatus"]  # type: ignore[index]
    assert status == "Accepted"
    dropped = [e.time for e in csms.timeline(STATION) if e.kind is TimelineKind.DISCONNECTED]
    assert dropped[0] - changed_at == pytest.approx(15.0, abs=0.5)


def _retry_policy_change(
    version: OcppVersion, attempts: int, interval_s: int
) -> list[tuple[str, dict[str, object]]]:
    """The CSMS's CALLs that set the transaction messages' attempts and interval."""
    if version is V16:
        return [
            ("ChangeConfiguration", {"key": "TransactionMessageAttempts", "value": str(attempts)}),
            ("ChangeConfiguration", {"key": "TransactionMessageRetryInterval", "value": str(interval_s)}),
        ]
    return [
        (
            "SetVariables",
            {
                "setVariableData": [
                    {
                        "component": {"name": "OCPPCommCtrlr"},
                        "variable": {"name": name, "instance": "TransactionEvent"},
                        "attributeValue": str(value),
                    }
                    for name, value in (("MessageAttempts", attempts), ("MessageAttemptInterval", interval_s))
                ]
            },
        )
    ]


@pytest.mark.parametrize("version", [V16, V201])
async def test_a_retry_policy_set_on_the_live_connection_applies_from_the_next_failure(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """1.6 TransactionMessageAttempts / RetryInterval, 2.0.1 MessageAttempts / MessageAttemptInterval
    (TransactionEvent): the policy is read at each failure, not once per connection. With 2 attempts the
    message would be dead-lettered after its second failure; raised to 4 with interval 100 while the
    station waits out its first retry, the second failure waits 2 x 100 s and two more sends follow."""
    action = "MeterValues" if version is V16 else "TransactionEvent"
    payload = {"connectorId": 1, "meterValue": [_meter()]} if version is V16 else _event(0)
    async with open_session_context(
        tmp_path, version, transaction_message_attempts=2, transaction_message_retry_interval_s=10
    ) as ctx:
        csms = CsmsPeer(version).then(action, Fail(), Fail(), Fail(), Fail())
        conn = MemoryConnection(version)
        async with serving(csms, conn, ctx):
            await ctx.outbox.put(action, payload)
            first_at = (await csms.wait_for(action))[0].at
            await trio.sleep(5)  # the station waits out its 10 s retry interval
            for change, body in _retry_policy_change(version, attempts=4, interval_s=100):
                await call(csms, conn, change, body)
            seen = await csms.wait_for(action, 4)
            await ctx.outbox.wait_empty()
        dead = await ctx.outbox.dead_letters()
    assert [s.at - first_at for s in seen] == pytest.approx([0, 10, 210, 510])
    assert len(dead) == 1


async def test_v16_a_csms_transaction_id_of_zero_is_sent_as_it_is(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 transactionId is any integer: a CSMS that numbers a transaction 0 gets its MeterValues and
    StopTransaction with 0. Only negative ids are the station's placeholders; taking 0 for one would
    look for a local transaction "0" and dead-letter the stop (checked with `tx_id > 0` in prepare)."""
    async with open_session_context(tmp_path, V16, meter_interval_s=10, run_evses=True) as ctx:
        started = {"idTagInfo": {"status": "Accepted"}, "transactionId": 0}
        csms = CsmsPeer(V16).then("StartTransaction", started)
        conn = MemoryConnection(V16)
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                await _connect(ctx, csms, conn, nursery)
                await csms.wait_for("StatusNotification", 3)
                ctx.evses.events.publish(Authorized(1, "TOKEN-1", "ISO14443"))
                ctx.evses.events.publish(EvPlugged(1, 1))
                await csms.wait_for("MeterValues")
                ctx.evses.events.publish(SessionEnded(1, 1, StopReason.LOCAL))
                await csms.wait_for("StopTransaction")
                await ctx.outbox.wait_empty()
                nursery.cancel_scope.cancel()
        assert await ctx.outbox.dead_letters() == []
        assert await ctx.blocks.transactions.services.storage.transactions() == []
    assert [m.call.payload["transactionId"] for m in csms.of("MeterValues")] == [0] * len(
        csms.of("MeterValues")
    )
    assert csms.of("StopTransaction")[0].call.payload["transactionId"] == 0

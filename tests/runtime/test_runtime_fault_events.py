"""Hardware faults as 2.0.1 NotifyEvent (N07-style HardWiredNotification, ChargeX MREC techCode): a fault
raised and cleared on a real sim EVSE reaches the scripted CSMS (which validates every request against
the generated 2.0.1 models) as EventData on the failed component's Problem variable; events are kept in
the real SQLite file across outages and restarts until the CSMS answered; a 1.6 station sends none."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio
import trio.testing
from runtime_session_harness import (
    CSMS_TIME,
    CsmsPeer,
    Fail,
    MemoryConnection,
    board,
    online,
    open_session_context,
    serving,
    statuses_at_boot,
)
from test_runtime_storage_fails import make_read_only, storage_of, writable_again

from evstation.drivers.api import FaultCode
from evstation.drivers.sim.meter import SimMeter
from evstation.protocol.device_model import ComponentKey, VariableKey
from evstation.protocol.fault_events import (
    FaultEvent,
    decode_active,
    decode_pending,
    encode_pending,
    notify_event,
    trim,
)
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.fault_events import (
    CARRIED_FAULTS_SETTLE_S,
    FAULT_COMPONENTS,
    PENDING_FAULTS_KEY,
    FaultEvents,
)
from evstation.runtime.events import DEFAULT_SUBSCRIBER_BUFFER
from evstation.runtime.evse import FaultChanged
from evstation.runtime.lifecycle import StationOutcome
from evstation.runtime.session import SessionContext

V16, V201 = OcppVersion.V16, OcppVersion.V201
METER_POLL_S = 5  # the harness's sim meters


def blocks(ctx: SessionContext) -> FaultEvents:
    assert ctx.blocks.fault_events is not None
    return ctx.blocks.fault_events


def event_data(csms: CsmsPeer) -> list[dict[str, Any]]:
    """Every EventData the CSMS received, in order."""
    return [data for seen in csms.of("NotifyEvent") for data in _data(seen.call.payload)]


def _data(payload: Any) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = payload["eventData"]
    return data


async def wait_event_data(csms: CsmsPeer, count: int) -> list[dict[str, Any]]:
    while len(event_data(csms)) < count:
        await csms.wait_for("NotifyEvent", len(csms.of("NotifyEvent")) + 1)
    return event_data(csms)


async def wait_pending(ctx: SessionContext, count: int) -> None:
    # Events are stored by the block's task (SQLite in a worker thread): poll in virtual time.
    while len(blocks(ctx).pending) < count:  # noqa: ASYNC110
        await trio.sleep(0.1)


async def stored(ctx: SessionContext) -> list[FaultEvent]:
    text = await ctx.blocks.transactions.services.storage.get_setting(PENDING_FAULTS_KEY)
    return decode_pending(text)[0]


def meter(ctx: SessionContext, evse_id: int) -> SimMeter:
    power_meter = ctx.evses[evse_id].power_meter
    assert isinstance(power_meter, SimMeter)
    return power_meter


@asynccontextmanager
async def with_fault_events(tmp_path: Path) -> AsyncIterator[SessionContext]:
    """A 2.0.1 session context on running sim EVSEs with the fault-event block running, not connected."""
    async with open_session_context(tmp_path, V201, run_evses=True) as ctx, trio.open_nursery() as nursery:
        await nursery.start(blocks(ctx).run)
        yield ctx
        nursery.cancel_scope.cancel()


def problem(ctx: SessionContext, component: ComponentKey) -> str | None:
    return ctx.device_model.get(VariableKey(component, "Problem"))


# --- the events ----------------------------------------------------------------------------------


async def test_n07_a_meter_fault_raised_and_cleared_online_is_two_event_data(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms = CsmsPeer(V201)
    async with with_fault_events(tmp_path) as ctx:
        conn = MemoryConnection(V201)
        async with serving(csms, conn, ctx):
            await csms.wait_for("StatusNotification", statuses_at_boot(V201))
            meter(ctx, 1).set_failed("Modbus timeout")
            [raised] = await wait_event_data(csms, 1)
            assert problem(ctx, ComponentKey("EVSE", evse_id=1)) == "true"
            assert problem(ctx, ComponentKey("ChargingStation")) == "true"
            assert problem(ctx, ComponentKey("EVSE", evse_id=2)) == "false"
            meter(ctx, 1).set_failed(None)
            _, cleared = await wait_event_data(csms, 2)
            await blocks(ctx).wait_sent()
            assert problem(ctx, ComponentKey("EVSE", evse_id=1)) == "false"
            assert problem(ctx, ComponentKey("ChargingStation")) == "false"
        assert await stored(ctx) == []
    common = {
        "trigger": "Alerting",
        "eventNotificationType": "HardWiredNotification",
        "component": {"name": "FiscalMetering", "evse": {"id": 1}},
        "variable": {"name": "Problem"},
        "techCode": "MeterCommunicationFault",  # MREC has no code for it: the fault's name
    }
    assert raised == {
        **common,
        "eventId": raised["eventId"],
        "timestamp": raised["timestamp"],
        "actualValue": "true",
        "techInfo": "MeterCommunicationFault: Modbus timeout",
    }
    assert cleared == {
        **common,
        "eventId": cleared["eventId"],
        "timestamp": cleared["timestamp"],
        "actualValue": "false",
        "cleared": True,
        "techInfo": "MeterCommunicationFault",
    }
    assert cleared["eventId"] != raised["eventId"]
    # Stamped by the station clock (which the boot set to the CSMS's time), a poll apart.
    assert raised["timestamp"].startswith(CSMS_TIME[:10]) and raised["timestamp"] < cleared["timestamp"]
    assert "cleared" not in raised


async def test_n07_techcode_is_the_mrec_code_and_the_component_the_one_that_failed(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A board's ground fault (MREC CX002) is the RCD's Problem; the lock (CX001) names the connector."""
    csms = CsmsPeer(V201)
    async with with_fault_events(tmp_path) as ctx:
        conn = MemoryConnection(V201)
        async with serving(csms, conn, ctx):
            await csms.wait_for("StatusNotification", statuses_at_boot(V201))
            board(ctx, 2).inject_fault(FaultCode.GROUND_FAILURE, "RCD tripped")
            board(ctx, 1).inject_fault(FaultCode.CONNECTOR_LOCK_FAILURE, "lock stuck")
            await wait_event_data(csms, 2)
    lock, ground = sorted(event_data(csms), key=lambda d: str(d["techCode"]))  # two EVSEs' tasks: any order
    assert (ground["techCode"], ground["component"]) == ("CX002", {"name": "RCD", "evse": {"id": 2}})
    assert ground["techInfo"] == "GroundFailure: RCD tripped"
    assert (lock["techCode"], lock["component"]) == (
        "CX001",
        {"name": "ConnectorPlugRetentionLock", "evse": {"id": 1, "connectorId": 1}},
    )


async def test_n07_a_station_wide_fault_every_evse_reports_is_one_event(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The database refusing writes is told to every EVSE: one ChargingStation event, raised by the
    first EVSE and cleared by the last."""
    async with with_fault_events(tmp_path) as ctx:
        for evse in ctx.evses:
            await evse.set_storage_failure(True)
        await wait_pending(ctx, 1)
        await ctx.evses[1].set_storage_failure(False)
        await trio.sleep(1)
        assert [e.active for e in blocks(ctx).pending] == [True]
        await ctx.evses[2].set_storage_failure(False)
        await wait_pending(ctx, 2)
        pending = blocks(ctx).pending
    assert [(e.component, e.evse_id, e.active) for e in pending] == [
        ("ChargingStation", None, True),
        ("ChargingStation", None, False),
    ]


async def test_n07_a_clear_of_one_of_two_faults_on_a_component_says_its_problem_stands(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Two faults on EVSE 1's RCD: the first clearing is `cleared` (its techCode) but the RCD's Problem
    stays "true"; only the last clearing says "false". The EVSE component likewise follows
    EVSE.Problem, which any fault of the EVSE holds (GetVariables and the events agree)."""
    async with with_fault_events(tmp_path) as ctx:
        board(ctx, 1).inject_fault(FaultCode.GROUND_FAILURE, "30 mA")
        board(ctx, 1).inject_fault(FaultCode.RCD_SELFTEST_FAILED, "self-test")
        board(ctx, 1).inject_fault(FaultCode.PILOT_FAULT, "CP short")
        await wait_pending(ctx, 3)
        board(ctx, 1).clear_fault(FaultCode.GROUND_FAILURE)
        await wait_pending(ctx, 4)
        board(ctx, 1).clear_fault(FaultCode.PILOT_FAULT)
        await wait_pending(ctx, 5)
        assert problem(ctx, ComponentKey("EVSE", evse_id=1)) == "true"
        board(ctx, 1).clear_fault(FaultCode.RCD_SELFTEST_FAILED)
        await wait_pending(ctx, 6)
        data = [e.event_data() for e in blocks(ctx).pending[3:]]
    assert [(d["component"]["name"], d["techCode"], d["actualValue"], d["cleared"]) for d in data] == [  # type: ignore[index]
        ("RCD", "CX002", "true", True),  # the self-test failure still holds the RCD
        ("EVSE", "CX014", "true", True),  # the RCD fault still holds EVSE 1
        ("RCD", "RcdSelfTestFailed", "false", True),
    ]


async def test_n07_a_clear_lost_to_a_full_event_buffer_is_found_by_reading_the_evses_again(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The block lags (held on its change lock) while a burst fills its buffer and the EVSE's clearing
    is lost; the `Dropped` marker makes it read the EVSEs' present faults and report the clear."""
    async with with_fault_events(tmp_path) as ctx:
        board(ctx, 1).inject_fault(FaultCode.GROUND_FAILURE, "30 mA")
        await wait_pending(ctx, 1)
        async with blocks(ctx)._changing:  # the block busy: it reads at most one more event
            # A burst the block takes as no change (EVSE 2 has no such fault), one buffer's worth and more.
            for _ in range(DEFAULT_SUBSCRIBER_BUFFER + 2):
                ctx.evses.events.publish(FaultChanged(2, FaultCode.GROUND_FAILURE, False))
            board(ctx, 1).clear_fault(FaultCode.GROUND_FAILURE)
            while FaultCode.GROUND_FAILURE in ctx.evses[1].active_faults():  # noqa: ASYNC110
                await trio.sleep(0.1)
        # Nothing is published after the burst: the marker ends the block's queue (events.py).
        await trio.sleep(1)  # virtual time; the clock holds still while SQLite stores the event
        _, cleared = blocks(ctx).pending
        assert problem(ctx, ComponentKey("EVSE", evse_id=1)) == "false"
    assert (cleared.component, cleared.evse_id, cleared.active) == ("RCD", 1, False)
    assert cleared.tech_info == "GroundFailure: cleared while its event was missed"


# --- delivery ------------------------------------------------------------------------------------


async def test_n07_a_fault_raised_offline_is_sent_after_the_reconnect_and_boot(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with with_fault_events(tmp_path) as ctx:
        meter(ctx, 2).set_failed("CRC error")
        await wait_pending(ctx, 1)
        assert [e.tech_code for e in await stored(ctx)] == ["MeterCommunicationFault"]  # stored first
        csms = CsmsPeer(V201)
        async with serving(csms, MemoryConnection(V201), ctx):
            [raised] = await wait_event_data(csms, 1)
            await blocks(ctx).wait_sent()
        assert await stored(ctx) == []
    assert raised["component"] == {"name": "FiscalMetering", "evse": {"id": 2}}
    assert csms.actions().index("BootNotification") < csms.actions().index("NotifyEvent")


async def test_n07_an_unanswered_event_survives_a_restart_and_ids_are_never_reused(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with with_fault_events(tmp_path) as ctx:
        board(ctx, 1).inject_fault(FaultCode.OVER_CURRENT, "32 A exceeded")
        await wait_pending(ctx, 1)
        [before] = blocks(ctx).pending
    async with with_fault_events(tmp_path) as ctx:  # the same database: a restart
        assert blocks(ctx).pending == [before]
        board(ctx, 2).inject_fault(FaultCode.OVER_VOLTAGE, "265 V")
        await wait_pending(ctx, 2)
        csms = CsmsPeer(V201)
        async with serving(csms, MemoryConnection(V201), ctx):
            await wait_event_data(csms, 2)
            await blocks(ctx).wait_sent()
    assert len(csms.of("NotifyEvent")) == 1  # the backlog goes in one message
    first, second = event_data(csms)
    assert (first["eventId"], first["techCode"], first["timestamp"]) == (
        before.event_id,
        "CX004",
        before.timestamp,
    )
    assert second["techCode"] == "CX005" and second["component"]["name"] == "ElectricalFeed"
    assert second["eventId"] > first["eventId"]


async def test_n07_an_answered_event_is_not_sent_again_after_a_restart(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with with_fault_events(tmp_path) as ctx:
        csms = CsmsPeer(V201)
        async with serving(csms, MemoryConnection(V201), ctx):
            board(ctx, 1).inject_fault(FaultCode.EVSE_CONTACTOR_FAULT, "welded")
            board(ctx, 1).clear_fault(FaultCode.EVSE_CONTACTOR_FAULT)
            await wait_event_data(csms, 2)
            await blocks(ctx).wait_sent()
    async with with_fault_events(tmp_path) as ctx:
        assert blocks(ctx).pending == []
        again = CsmsPeer(V201)
        async with serving(again, MemoryConnection(V201), ctx):
            await again.wait_for("StatusNotification", statuses_at_boot(V201))
            await trio.sleep(60)
        # The queue is empty, yet the next event does not reuse an id: the counter is stored too.
        board(ctx, 2).inject_fault(FaultCode.EVSE_CONTACTOR_FAULT, "welded")
        await wait_pending(ctx, 1)
        [later] = blocks(ctx).pending
    assert [d["component"]["name"] for d in event_data(csms)] == ["PowerContactor", "PowerContactor"]
    assert again.of("NotifyEvent") == []
    assert later.event_id > max(d["eventId"] for d in event_data(csms))


async def test_n07_a_fault_already_active_when_the_block_starts_is_reported(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The block starts after the EVSEs found the fault: it reads the faults already active."""
    async with open_session_context(tmp_path, V201, run_evses=True) as ctx, trio.open_nursery() as nursery:
        board(ctx, 1).inject_fault(FaultCode.EMERGENCY_STOP, "pressed")
        while FaultCode.EMERGENCY_STOP not in ctx.evses[1].active_faults():  # noqa: ASYNC110
            await trio.sleep(0.1)
        await nursery.start(blocks(ctx).run)
        [event] = blocks(ctx).pending
        nursery.cancel_scope.cancel()
    assert (event.component, event.evse_id, event.active, event.tech_code) == (
        "EmergencyStopSensor",
        1,
        True,
        "CX008",
    )


async def _reported_then_restarted(tmp_path: Path) -> list[dict[str, Any]]:
    """A 2.0.1 station reports an over-current on EVSE 1, the CSMS answers, the station stops."""
    async with with_fault_events(tmp_path) as ctx:
        csms = CsmsPeer(V201)
        async with serving(csms, MemoryConnection(V201), ctx):
            board(ctx, 1).inject_fault(FaultCode.OVER_CURRENT, "32 A exceeded")
            await wait_event_data(csms, 1)
            await blocks(ctx).wait_sent()
    return event_data(csms)


async def test_n07_a_fault_still_active_after_a_restart_is_not_reported_twice(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    [raised] = await _reported_then_restarted(tmp_path)
    async with with_fault_events(tmp_path) as ctx:  # the same database: a restart
        again = CsmsPeer(V201)
        async with serving(again, MemoryConnection(V201), ctx):
            await again.wait_for("StatusNotification", statuses_at_boot(V201))
            board(ctx, 1).inject_fault(FaultCode.OVER_CURRENT, "32 A exceeded")  # found again
            await trio.sleep(CARRIED_FAULTS_SETTLE_S + 60)
            assert problem(ctx, ComponentKey("EVSE", evse_id=1)) == "true"
    assert raised["actualValue"] == "true"
    assert again.of("NotifyEvent") == []  # the CSMS knew it already: neither a raise nor a clear


async def test_n07_a_fault_that_cleared_during_a_restart_is_reported_cleared_once_the_evses_settled(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    [raised] = await _reported_then_restarted(tmp_path)
    async with with_fault_events(tmp_path) as ctx:  # the same database; the fault is gone
        started = trio.current_time()
        # Until the EVSEs had their time to find it again, the fault stands as reported.
        assert problem(ctx, ComponentKey("EVSE", evse_id=1)) == "true"
        again = CsmsPeer(V201)
        async with serving(again, MemoryConnection(V201), ctx):
            await again.wait_for("StatusNotification", statuses_at_boot(V201))
            await trio.sleep_until(started + CARRIED_FAULTS_SETTLE_S - 10)
            assert again.of("NotifyEvent") == []
            assert problem(ctx, ComponentKey("EVSE", evse_id=1)) == "true"
            with trio.fail_after(60):
                [cleared] = await wait_event_data(again, 1)
                await blocks(ctx).wait_sent()
            assert trio.current_time() >= started + CARRIED_FAULTS_SETTLE_S
            assert problem(ctx, ComponentKey("EVSE", evse_id=1)) == "false"
        assert blocks(ctx).pending == []
    assert (cleared["actualValue"], cleared["cleared"], cleared["techCode"]) == ("false", True, "CX004")
    assert cleared["component"] == raised["component"] == {"name": "OverCurrentProtection", "evse": {"id": 1}}
    assert "restart" in cleared["techInfo"]
    assert cleared["eventId"] > raised["eventId"]


async def test_n07_a_fault_of_an_evse_no_longer_configured_is_reported_cleared_after_a_restart(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The CSMS was told of a ground fault on EVSE 3; the station restarts configured with two EVSEs.
    Nothing will find that fault again: it is reported cleared once the EVSEs settled (ignoring it left
    the RCD of EVSE 3 faulted at the CSMS for good)."""
    async with open_session_context(tmp_path, V201, run_evses=True) as ctx, trio.open_nursery() as nursery:
        storage = ctx.blocks.transactions.services.storage
        await storage.set_setting(PENDING_FAULTS_KEY, encode_pending([], 7, {3: ["GroundFailure"]}))
        await nursery.start(blocks(ctx).run)
        assert problem(ctx, ComponentKey("ChargingStation")) == "true"
        await trio.sleep(CARRIED_FAULTS_SETTLE_S + 1)
        [cleared] = blocks(ctx).pending
        assert problem(ctx, ComponentKey("ChargingStation")) == "false"
        assert decode_active(await storage.get_setting(PENDING_FAULTS_KEY)) == {}
        nursery.cancel_scope.cancel()
    assert (cleared.event_id, cleared.component, cleared.evse_id, cleared.active) == (7, "RCD", 3, False)
    assert cleared.event_data()["actualValue"] == "false"


async def test_n07_a_reset_waits_for_the_fault_events_before_the_station_stops(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The CSMS takes 5 s to answer a NotifyEvent (within the flush's message timeout), and reads the
    # station's answer to its Reset only after that: the station stops as soon as its flush is done.
    csms = CsmsPeer(V201, answer_delay=lambda call: 5.0 if call.action == "NotifyEvent" else 0.0)
    async with online(tmp_path, V201, csms, run_reset=True) as (ctx, conn), trio.open_nursery() as nursery:
        await nursery.start(blocks(ctx).run)
        board(ctx, 1).inject_fault(FaultCode.EMERGENCY_STOP, "pressed")
        await csms.wait_for("NotifyEvent")
        sent_at = trio.current_time()
        await csms.send_call(conn, "Reset", {"type": "Immediate"})
        assert await ctx.blocks.reset.stop_requests.wait() is StationOutcome.RESET
        assert trio.current_time() >= sent_at + 5.0
        assert blocks(ctx).pending == []  # answered before the stop
        assert await stored(ctx) == []
        nursery.cancel_scope.cancel()


async def test_n07_a_callerror_is_retried_per_the_retry_policy(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with with_fault_events(tmp_path) as ctx:
        csms = CsmsPeer(V201).then("NotifyEvent", Fail())
        board(ctx, 1).inject_fault(FaultCode.READER_FAILURE, "no answer")
        await wait_pending(ctx, 1)
        async with serving(csms, MemoryConnection(V201), ctx):
            await csms.wait_for("NotifyEvent", 2)
            await blocks(ctx).wait_sent()
        first, second = csms.of("NotifyEvent")
        assert second.at - first.at >= ctx.retry_policy.delay_after(1)  # type: ignore[operator]
    assert _data(first.call.payload) == _data(second.call.payload)
    assert _data(first.call.payload)[0]["component"] == {"name": "TokenReader", "evse": {"id": 1}}


async def test_n07_a_refused_batch_goes_again_one_event_at_a_time(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A CSMS that refuses a NotifyEvent of several events every time (a payload it cannot take): once
    the retry policy gives up on the batch, its events go one by one, so the others are not lost."""
    async with with_fault_events(tmp_path) as ctx:
        attempts = ctx.retry_policy.attempts
        csms = CsmsPeer(V201).then("NotifyEvent", *[Fail()] * attempts)
        board(ctx, 1).inject_fault(FaultCode.READER_FAILURE, "no answer")
        board(ctx, 2).inject_fault(FaultCode.OVER_VOLTAGE, "265 V")
        await wait_pending(ctx, 2)
        ids = [event.event_id for event in blocks(ctx).pending]
        async with serving(csms, MemoryConnection(V201), ctx):
            await csms.wait_for("NotifyEvent", attempts + 2)
            await blocks(ctx).wait_sent()
    sent = [[d["eventId"] for d in _data(seen.call.payload)] for seen in csms.of("NotifyEvent")]
    assert sent == [ids] * attempts + [[ids[0]], [ids[1]]]


async def test_16_station_sends_no_notify_event(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    """1.6 keeps StatusNotification errorCode: no fault-event block, no NotifyEvent."""
    csms = CsmsPeer(V16)
    async with online(tmp_path, V16, csms) as (ctx, _):
        assert ctx.blocks.fault_events is None
        board(ctx, 1).inject_fault(FaultCode.GROUND_FAILURE, "RCD tripped")
        while not any(
            s.call.payload.get("errorCode") == "GroundFailure" for s in csms.of("StatusNotification")
        ):
            await csms.wait_for("StatusNotification", len(csms.of("StatusNotification")) + 1)
    assert "NotifyEvent" not in csms.actions()


async def test_n07_an_event_while_the_database_refuses_writes_is_kept_and_stored_once_it_takes_them(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A read-only database does not end the block: the event waits in memory and reaches the disk at
    the first write that commits again."""
    async with with_fault_events(tmp_path) as ctx:
        storage = storage_of(ctx)
        await make_read_only(storage)
        board(ctx, 1).inject_fault(FaultCode.OVER_CURRENT, "40 A")
        await wait_pending(ctx, 1)
        assert await stored(ctx) == []
        await writable_again(storage)
        await storage.set_setting("someone.else", "writes")  # any write that commits
        await trio.sleep(1)
        assert [e.tech_code for e in await stored(ctx)] == ["CX004"]


# --- pure parts ----------------------------------------------------------------------------------


def _event(event_id: int, active: bool = True) -> FaultEvent:
    return FaultEvent(event_id, "2030-06-01T12:00:00.000Z", "RCD", 1, None, active, "CX002", "GroundFailure")


def test_every_fault_code_has_a_component() -> None:
    assert set(FAULT_COMPONENTS) == set(FaultCode)


def test_stored_queue_round_trips_keeps_the_next_id_and_skips_damage() -> None:
    events = [_event(3), _event(4, active=False)]
    assert decode_pending(encode_pending(events, 9)) == (events, 9)
    assert decode_pending(encode_pending([], 9)) == ([], 9)
    # A damaged counter never goes below the ids still queued.
    text = encode_pending(events, 9).replace('"nextEventId":9', '"nextEventId":"x"')
    assert decode_pending(text) == (events, 5)
    damaged = encode_pending(events, 9).replace('"active":true', '"active":"yes"')
    assert decode_pending(damaged) == ([events[1]], 9)
    assert decode_pending("not json") == ([], 0)
    assert decode_pending(None) == ([], 0)


def test_stored_faults_reported_active_round_trip_and_skip_damage() -> None:
    text = encode_pending([_event(3)], 4, {1: ["OverCurrentFailure", "EmergencyStop"], 2: []})
    assert decode_active(text) == {1: ["EmergencyStop", "OverCurrentFailure"]}
    assert decode_pending(text) == ([_event(3)], 4)
    assert decode_active(encode_pending([], 0)) == {}
    damaged = text.replace('"1":', '"one":').replace('"EmergencyStop"', "7")
    assert decode_active(damaged) == {}
    assert decode_active(text.replace('"EmergencyStop"', "7")) == {1: ["OverCurrentFailure"]}
    assert decode_active('{"active": [1]}') == {}
    assert decode_active("not json") == decode_active(None) == {}


def test_an_overfull_queue_drops_the_oldest() -> None:
    kept, dropped = trim([_event(i) for i in range(5)], limit=3)
    assert [e.event_id for e in kept] == [2, 3, 4]
    assert [e.event_id for e in dropped] == [0, 1]


def test_an_overfull_queue_never_drops_a_conditions_last_event() -> None:
    """The CSMS got the contactor fault raised before an outage; during it the fault clears, then a
    flapping meter fills the queue. The clear is the contactor's only news: it stays (were it dropped,
    the CSMS would hold the contactor faulted for good); the meter's superseded events go instead."""
    clear = FaultEvent(0, "2030-06-01T12:00:00.000Z", "PowerContactor", 1, None, False, "CX017", "")
    flaps = [
        FaultEvent(i, "2030-06-01T12:00:01.000Z", "FiscalMetering", 2, None, i % 2 == 1, "M", "")
        for i in range(1, 6)
    ]
    kept, dropped = trim([clear, *flaps], limit=3)
    assert kept == [clear, *flaps[-2:]]
    assert dropped == flaps[:3]
    # Every condition down to its last event: the oldest goes.
    kept, dropped = trim([clear, flaps[-1]], limit=1)
    assert (kept, dropped) == ([flaps[-1]], [clear])


def test_notify_event_is_one_complete_message() -> None:
    payload = notify_event([_event(1), _event(2, active=False)], "2030-06-01T12:00:01.000Z")
    assert payload["seqNo"] == 0 and "tbc" not in payload
    assert [d["eventId"] for d in payload["eventData"]] == [1, 2]  # type: ignore[attr-defined]

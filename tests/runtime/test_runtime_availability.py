"""ChangeAvailability through the session (2.0.1 G03 EVSE / connector, G04 station; 1.6 section 5.2):
answers, StatusNotifications, scheduling around a transaction, persistence across a restart. Virtual time
(conftest's clock, held still while SQLite works in its thread).

Requirement ids name the use case (G03 / G04); the FR numbers were not checked line by line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    CSMS_TIME,
    CsmsPeer,
    MemoryConnection,
    call,
    is_end_message,
    online,
    open_session_context,
    serving,
    start_transaction,
    statuses_at_boot,
)

from evstation.protocol.boot import BootState
from evstation.protocol.rpc import Call, CallError, CallResult
from evstation.protocol.versions import OcppVersion
from evstation.runtime.evse import StopReason

V16, V201 = OcppVersion.V16, OcppVersion.V201


def status_of(p: dict[str, Any]) -> tuple[Any, ...]:
    """A StatusNotification as (evseId, connectorId, status) (1.6: (connectorId, status))."""
    return (
        (p["evseId"], p["connectorId"], p["connectorStatus"])
        if "evseId" in p
        else (p["connectorId"], p["status"])
    )


def statuses(csms: CsmsPeer) -> list[tuple[Any, ...]]:
    """Every StatusNotification so far, as `status_of`."""
    return [status_of(seen.call.payload) for seen in csms.of("StatusNotification")]


async def wait_status(csms: CsmsPeer, wanted: tuple[Any, ...], after: int = 0) -> None:
    """Until a StatusNotification `wanted` arrives, counting only those after the first `after`."""
    while wanted not in statuses(csms)[after:]:
        await csms.wait_for("StatusNotification", len(csms.of("StatusNotification")) + 1)


async def test_g03_evse_inoperative_when_idle_is_accepted_applied_at_once_and_reported(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        request = {"evse": {"id": 1}, "operationalStatus": "Inoperative"}
        assert await call(csms, conn, "ChangeAvailability", request) == {"status": "Accepted"}
        await wait_status(csms, (1, 1, "Unavailable"))
        assert not ctx.evses[1].available() and ctx.evses[2].available()
        # Already Inoperative: Accepted, nothing changes, nothing is re-sent.
        sent = len(csms.of("StatusNotification"))
        assert await call(csms, conn, "ChangeAvailability", request) == {"status": "Accepted"}
        request["operationalStatus"] = "Operative"
        assert await call(csms, conn, "ChangeAvailability", request) == {"status": "Accepted"}
        await wait_status(csms, (1, 1, "Available"), after=sent)
        assert statuses(csms)[sent:] == [(1, 1, "Available")]


async def test_g03_inoperative_during_a_transaction_is_scheduled_and_applied_when_it_ends(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        assert await ctx.evses[1].authorize_remote("T1", "Central")
        await wait_status(csms, (1, 1, "Occupied"))
        request = {"evse": {"id": 1, "connectorId": 1}, "operationalStatus": "Inoperative"}
        assert await call(csms, conn, "ChangeAvailability", request) == {"status": "Scheduled"}
        assert ctx.evses[1].session_active() and ctx.evses[1].available()  # not yet
        await ctx.evses[1].stop_session(StopReason.REMOTE)
        await wait_status(csms, (1, 1, "Unavailable"))
        assert not ctx.evses[1].available()
        assert not await ctx.evses[1].authorize_remote("T2", "Central")  # no new session


END_ANSWER_DELAY_S = 10.0  # under the 30 s message timeout: answered late, not retried


@pytest.mark.parametrize("delayed", [False, True], ids=["answered", "end-answer-delayed"])
@pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])
async def test_g03_scheduled_unavailable_reaches_the_csms_after_the_transaction_end_message(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, delayed: bool
) -> None:
    """The EVSE switches to Unavailable the moment its session ends, while the end message is queued
    only after the last meter reading (up to END_READING_WAIT_S later): the StatusNotification is held
    until StopTransaction / TransactionEvent Ended went out, and (one call in flight) until its answer."""

    def delay(call_: Call) -> float:
        return END_ANSWER_DELAY_S if delayed and is_end_message(call_) else 0.0

    csms = CsmsPeer(version, answer_delay=delay)
    unavailable = (1, 1, "Unavailable") if version is V201 else (1, "Unavailable")
    async with online(tmp_path, version, csms) as (ctx, conn):
        await start_transaction(ctx, 1)
        await ctx.outbox.wait_empty()
        request = (
            {"connectorId": 1, "type": "Inoperative"}
            if version is V16
            else {"evse": {"id": 1}, "operationalStatus": "Inoperative"}
        )
        assert await call(csms, conn, "ChangeAvailability", request) == {"status": "Scheduled"}
        await ctx.evses[1].stop_session(StopReason.REMOTE)
        await wait_status(csms, unavailable)
    seen = csms.seen
    end = next(i for i, s in enumerate(seen) if is_end_message(s.call))
    status = next(
        i
        for i, s in enumerate(seen)
        if s.call.action == "StatusNotification" and status_of(s.call.payload) == unavailable
    )
    assert end < status, [s.call.action for s in seen]
    if delayed:
        assert seen[status].at >= seen[end].at + END_ANSWER_DELAY_S


async def test_g04_station_inoperative_switches_idle_evses_now_and_the_busy_one_after_its_transaction(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 section 5.2: connectorId 0 is the charge point; connector 0 reports Unavailable once applied."""
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 3)
        assert await ctx.evses[1].authorize_remote("T1", "Central")
        request = {"connectorId": 0, "type": "Inoperative"}
        assert await call(csms, conn, "ChangeAvailability", request) == {"status": "Scheduled"}
        await wait_status(csms, (2, "Unavailable"))
        assert (0, "Unavailable") not in statuses(csms)
        await ctx.evses[1].stop_session(StopReason.REMOTE)
        await wait_status(csms, (1, "Unavailable"))
        await wait_status(csms, (0, "Unavailable"))
        sent = len(csms.of("StatusNotification"))
        assert await call(csms, conn, "ChangeAvailability", {"connectorId": 0, "type": "Operative"}) == {
            "status": "Accepted"
        }
        await wait_status(csms, (0, "Available"), after=sent)
        assert ctx.evses[1].available() and ctx.evses[2].available()


@pytest.mark.parametrize(
    ("version", "request_", "answer"),
    [
        (V16, {"connectorId": 3, "type": "Inoperative"}, {"status": "Rejected"}),
        (V16, {"connectorId": -1, "type": "Inoperative"}, {"status": "Rejected"}),
        (
            V201,
            {"evse": {"id": 9}, "operationalStatus": "Inoperative"},
            {
                "status": "Rejected",
                "statusInfo": {"reasonCode": "UnknownEvse", "additionalInfo": "no EVSE 9"},
            },
        ),
        (
            V201,
            {"evse": {"id": 1, "connectorId": 2}, "operationalStatus": "Inoperative"},
            {
                "status": "Rejected",
                "statusInfo": {
                    "reasonCode": "UnknownConnector",
                    "additionalInfo": "no connector 2 on EVSE 1",
                },
            },
        ),
    ],
)
async def test_change_availability_of_what_does_not_exist_is_rejected_and_changes_nothing(
    clock: trio.testing.MockClock,
    tmp_path: Path,
    version: OcppVersion,
    request_: dict[str, Any],
    answer: dict[str, Any],
) -> None:
    csms, conn = CsmsPeer(version), MemoryConnection(version)
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        assert await call(csms, conn, "ChangeAvailability", request_) == answer
        assert all(evse.available() for evse in ctx.evses)


async def test_g03_requested_availability_survives_a_restart_and_is_applied_before_the_first_status(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        request = {"evse": {"id": 2}, "operationalStatus": "Inoperative"}
        assert await call(csms, conn, "ChangeAvailability", request) == {"status": "Accepted"}
        await wait_status(csms, (2, 1, "Unavailable"))
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        assert not ctx.evses[2].available()
        await csms.wait_for("StatusNotification", 2)
        assert statuses(csms)[:2] == [(1, 1, "Available"), (2, 1, "Unavailable")]


async def test_change_availability_with_custom_data_is_served(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """2.0.1 customData (any vendor properties) is accepted on a request and does not disturb it."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        request = {
            "customData": {"vendorId": "com.example", "note": {"any": [1, 2]}},
            "evse": {"id": 1, "customData": {"vendorId": "com.example"}},
            "operationalStatus": "Inoperative",
        }
        assert await call(csms, conn, "ChangeAvailability", request) == {"status": "Accepted"}
        assert not ctx.evses[1].available()


async def test_g03_connector_level_on_an_evse_with_two_connectors_touches_only_that_connector(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """EVSE 1 has connectors 1 and 2. Connector 2 Inoperative: Accepted, only (1, 2) goes Unavailable
    and a session still runs on connector 1; connector 1 Inoperative during that session: Scheduled,
    applied when it ends; connector 2 Operative again: Available, connector 1 stays Unavailable."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201, connectors=(2, 1)) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 3)
        assert statuses(csms) == [(1, 1, "Available"), (1, 2, "Available"), (2, 1, "Available")]
        evse = ctx.evses[1]

        def change(connector_id: int, status: str) -> dict[str, Any]:
            return {"evse": {"id": 1, "connectorId": connector_id}, "operationalStatus": status}

        assert await call(csms, conn, "ChangeAvailability", change(2, "Inoperative")) == {
            "status": "Accepted"
        }
        await wait_status(csms, (1, 2, "Unavailable"))
        assert statuses(csms)[3:] == [(1, 2, "Unavailable")]
        assert evse.available(1) and not evse.available(2) and ctx.evses[2].available()

        assert await evse.authorize_remote("T1", "Central")  # connector 1 still serves
        await wait_status(csms, (1, 1, "Occupied"))
        assert await call(csms, conn, "ChangeAvailability", change(1, "Inoperative")) == {
            "status": "Scheduled"
        }
        assert evse.available(1) and evse.session_active()
        await evse.stop_session(StopReason.REMOTE)
        await wait_status(csms, (1, 1, "Unavailable"))

        sent = len(statuses(csms))
        assert await call(csms, conn, "ChangeAvailability", change(2, "Operative")) == {"status": "Accepted"}
        await wait_status(csms, (1, 2, "Available"), after=sent)
        assert statuses(csms)[sent:] == [(1, 2, "Available")]
        assert not evse.available(1) and evse.available(2)
        assert (2, 1, "Unavailable") not in statuses(csms)


async def test_v16_5_2_connector_of_a_two_connector_evse_is_numbered_across_the_station(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 numbers connectors across the station: EVSE 1's second connector is connectorId 2, EVSE 2's
    is 3. ChangeAvailability of connectorId 2 changes that connector alone; connector 0 stays Available."""
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16, connectors=(2, 1)) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 4)
        sent = len(statuses(csms))
        request = {"connectorId": 2, "type": "Inoperative"}
        assert await call(csms, conn, "ChangeAvailability", request) == {"status": "Accepted"}
        await wait_status(csms, (2, "Unavailable"), after=sent)
        assert statuses(csms)[sent:] == [(2, "Unavailable")]  # connector 0 unchanged: not re-sent
        assert ctx.evses[1].available(1) and not ctx.evses[1].available(2) and ctx.evses[2].available()


@pytest.mark.parametrize("version", [V16, V201])
async def test_change_availability_while_pending_1_6_serves_it_2_0_1_answers_security_error(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """1.6 section 4.2: while Pending only remote start / stop are refused, so ChangeAvailability is
    served (and reported once Accepted). 2.0.1 B02.FR.01 opens only the configuration use cases
    (B05-B08) to a Pending station: ChangeAvailability gets SecurityError and changes nothing."""
    csms, conn = CsmsPeer(version), MemoryConnection(version)
    csms.then("BootNotification", {"status": "Pending", "currentTime": CSMS_TIME, "interval": 600})
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("BootNotification")
        await trio.sleep(1)  # virtual: the Pending answer is processed long before
        assert ctx.uplink.boot.state is BootState.PENDING
        if version is V16:
            request: dict[str, Any] = {"connectorId": 1, "type": "Inoperative"}
        else:
            request = {"evse": {"id": 1}, "operationalStatus": "Inoperative"}
        answer = await csms.wait_answer(await csms.send_call(conn, "ChangeAvailability", request))
        if version is V16:
            assert isinstance(answer, CallResult) and answer.payload == {"status": "Accepted"}
        else:
            assert isinstance(answer, CallError) and answer.code == "SecurityError"
        assert ctx.evses[1].available() is (version is V201)
        assert csms.of("StatusNotification") == []  # nothing of ours goes out while Pending
        await csms.wait_for("BootNotification", 2)  # after the interval: Accepted
        await csms.wait_for("StatusNotification", statuses_at_boot(version))
        expected = (1, "Unavailable") if version is V16 else (1, 1, "Available")
        assert expected in statuses(csms)

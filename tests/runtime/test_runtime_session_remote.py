"""Remote start/stop through running sim EVSEs: the CSMS's request, the EVSE's events, the transaction
messages that follow (1.6 Core RemoteStart/RemoteStopTransaction; 2.0.1 F01, F03)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    CsmsPeer,
    MemoryConnection,
    open_session_context,
    serve_until_link_down,
    serving,
)

from evstation.drivers.sim.board import SimChargeController
from evstation.protocol.versions import OcppVersion
from evstation.runtime.device_model import TX_START_POINT
from evstation.runtime.evse import Authorized
from evstation.runtime.session import SessionContext

V16, V201 = OcppVersion.V16, OcppVersion.V201


@asynccontextmanager
async def running(
    tmp_path: Path, version: OcppVersion, csms: CsmsPeer, conn: MemoryConnection
) -> AsyncIterator[SessionContext]:
    """A session with running EVSEs and the transactions block, served to `csms` while the body runs."""
    async with open_session_context(tmp_path, version, run_evses=True) as ctx:
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                nursery.start_soon(csms.serve, conn)
                nursery.start_soon(serve_until_link_down, conn, ctx)
                yield ctx
                nursery.cancel_scope.cancel()


async def test_v201_f01_f03_request_start_then_plug_then_request_stop(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """F01: RequestStartTransaction authorizes the EVSE; the Started event echoes remoteStartId and the
    idToken. F03: RequestStopTransaction ends it with stoppedReason Remote / triggerReason RemoteStop."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with running(tmp_path, V201, csms, conn) as ctx:
        await csms.wait_for("StatusNotification", 2)
        start = await csms.send_call(
            conn,
            "RequestStartTransaction",
            {"evseId": 1, "remoteStartId": 7, "idToken": {"idToken": "R1", "type": "Central"}},
        )
        assert (await csms.wait_answer(start)).payload == {"status": "Accepted"}  # type: ignore[union-attr]
        controller = ctx.evses[1].controller
        assert isinstance(controller, SimChargeController)
        controller.plug_in()
        started = (await csms.wait_for("TransactionEvent"))[0].call.payload
        info = started["transactionInfo"]
        assert isinstance(info, dict)
        assert ctx.blocks.transactions.ids.get(1) == info["transactionId"]
        stop = await csms.send_call(conn, "RequestStopTransaction", {"transactionId": info["transactionId"]})
        assert (await csms.wait_answer(stop)).payload == {"status": "Accepted"}  # type: ignore[union-attr]
        while True:
            events = await csms.wait_for("TransactionEvent", len(csms.of("TransactionEvent")) + 1)
            if events[-1].call.payload["eventType"] == "Ended":
                break
    assert started["eventType"] == "Started"
    assert info["remoteStartId"] == 7
    assert started["idToken"] == {"idToken": "R1", "type": "Central"}
    ended = events[-1].call.payload
    assert ended["triggerReason"] == "RemoteStop"
    assert ended["transactionInfo"]["stoppedReason"] == "Remote"  # type: ignore[index]
    assert [e.call.payload["seqNo"] for e in events] == list(range(len(events)))


async def test_v201_f01_request_start_after_the_cable_names_the_running_transaction(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """RequestStartTransactionResponse.transactionId: the EVSE started a transaction when the cable went
    in (TxStartPoint EVConnected) before the request; the answer names that transaction,
    the token then authorizes it (Updated, RemoteStart) and no second transaction starts."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with running(tmp_path, V201, csms, conn) as ctx:
        await csms.wait_for("StatusNotification", 2)
        await ctx.device_model.set(TX_START_POINT, "EVConnected")
        controller = ctx.evses[1].controller
        assert isinstance(controller, SimChargeController)
        controller.plug_in()
        started = (await csms.wait_for("TransactionEvent"))[0].call.payload
        start = await csms.send_call(
            conn,
            "RequestStartTransaction",
            {"evseId": 1, "remoteStartId": 3, "idToken": {"idToken": "R1", "type": "Central"}},
        )
        answer = (await csms.wait_answer(start)).payload  # type: ignore[union-attr]
        events = await csms.wait_for("TransactionEvent", 2)
        idle = await csms.send_call(
            conn,
            "RequestStartTransaction",
            {"evseId": 2, "remoteStartId": 4, "idToken": {"idToken": "R2", "type": "Central"}},
        )
        idle_answer = (await csms.wait_answer(idle)).payload  # type: ignore[union-attr]
    tx_id = started["transactionInfo"]["transactionId"]  # type: ignore[index]
    assert started["eventType"] == "Started"
    assert answer == {"status": "Accepted", "transactionId": tx_id}
    authorized = events[1].call.payload
    assert (authorized["eventType"], authorized["transactionInfo"]["transactionId"]) == ("Updated", tx_id)  # type: ignore[index]
    assert authorized["idToken"] == {"idToken": "R1", "type": "Central"}
    assert idle_answer == {"status": "Accepted"}  # nothing ran on EVSE 2: no transactionId


async def test_v201_request_start_for_an_unknown_evse_is_an_occurrence_error(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        start = await csms.send_call(
            conn,
            "RequestStartTransaction",
            {"evseId": 9, "remoteStartId": 1, "idToken": {"idToken": "R1", "type": "Central"}},
        )
        answer = await csms.wait_answer(start)
    assert answer.code == "OccurenceConstraintViolation"  # type: ignore[union-attr]  # (sic) 2.0.1 spelling


async def test_v16_remote_start_then_plug_then_remote_stop(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 5.11/5.12: RemoteStartTransaction -> StartTransaction with the idTag once plugged;
    RemoteStopTransaction(transactionId from the conf) -> StopTransaction reason Remote."""
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with running(tmp_path, V16, csms, conn) as ctx:
        await csms.wait_for("StatusNotification", 3)
        start = await csms.send_call(conn, "RemoteStartTransaction", {"connectorId": 1, "idTag": "R1"})
        assert (await csms.wait_answer(start)).payload == {"status": "Accepted"}  # type: ignore[union-attr]
        controller = ctx.evses[1].controller
        assert isinstance(controller, SimChargeController)
        controller.plug_in()
        await csms.wait_for("StartTransaction")
        # A sentinel behind StartTransaction: once it is sent, the conf (id 42) is stored.
        await ctx.outbox.put("DataTransfer", {"vendorId": "test"})
        await csms.wait_for("DataTransfer")
        assert ctx.blocks.transactions.ids.get(1) == "42"
        stop = await csms.send_call(conn, "RemoteStopTransaction", {"transactionId": 42})
        assert (await csms.wait_answer(stop)).payload == {"status": "Accepted"}  # type: ignore[union-attr]
        stops = await csms.wait_for("StopTransaction")
        assert ctx.blocks.transactions.ids.get(1) is None
    assert csms.of("StartTransaction")[0].call.payload["idTag"] == "R1"
    assert stops[0].call.payload["transactionId"] == 42
    assert stops[0].call.payload["reason"] == "Remote"


@pytest.mark.parametrize(
    ("version", "reply", "accepted"),
    [
        (V16, {"idTagInfo": {"status": "Accepted"}}, True),
        (V16, {"idTagInfo": {"status": "Blocked"}}, False),
        (V201, {"idTokenInfo": {"status": "Accepted"}}, True),
        (V201, {"idTokenInfo": {"status": "Invalid"}}, False),
    ],
)
async def test_c01_presented_token_is_authorized_with_the_csms(
    clock: trio.testing.MockClock,
    tmp_path: Path,
    version: OcppVersion,
    reply: dict[str, object],
    accepted: bool,
) -> None:
    """1.6 4.1 / 2.0.1 C01: a presented token is sent in Authorize; the answer resolves the EVSE."""
    csms, conn = CsmsPeer(version).then("Authorize", reply), MemoryConnection(version)
    async with open_session_context(tmp_path, version, run_evses=True) as ctx:
        with trio.fail_after(1000), ctx.evses.events.subscribe() as events:
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                nursery.start_soon(csms.serve, conn)
                nursery.start_soon(serve_until_link_down, conn, ctx)
                await csms.wait_for("StatusNotification", 3 if version is V16 else 2)
                assert await ctx.evses.present_token("TAG-1", "ISO14443") == 1
                seen = (await csms.wait_for("Authorize"))[0].call.payload
                # Accepted -> Authorized at once; refused -> nothing, so wait out the EVSE's own
                # authorization timeout (virtual time) to be sure no Authorized follows.
                authorized = False
                with trio.move_on_after(ctx.evses[1].authorization_timeout_s + 1):
                    async for event in events:
                        if isinstance(event, Authorized):
                            authorized = True
                            break
                nursery.cancel_scope.cancel()
    assert seen == (
        {"idTag": "TAG-1"} if version is V16 else {"idToken": {"idToken": "TAG-1", "type": "ISO14443"}}
    )
    assert authorized is accepted

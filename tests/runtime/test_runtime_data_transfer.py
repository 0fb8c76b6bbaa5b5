"""DataTransfer both ways through the session (2.0.1 P01 station -> CSMS, P02 CSMS -> station; 1.6
sections 4.3 and 5.6), with the vendor-handler registry and the built-in org.evstation Ping."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from runtime_session_harness import CSMS_TIME, CsmsPeer, MemoryConnection, call, open_session_context, serving

from evstation.protocol.boot import BootState
from evstation.protocol.data_transfer import DataTransferStatus, VendorAnswer
from evstation.protocol.rpc import CallError, CallResult
from evstation.protocol.versions import OcppVersion
from evstation.runtime.link import LinkDown

V16, V201 = OcppVersion.V16, OcppVersion.V201
VERSIONS = [V16, V201]


@pytest.mark.parametrize("version", VERSIONS)
async def test_p02_incoming_unknown_vendor_unknown_message_and_ping(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms, conn = CsmsPeer(version), MemoryConnection(version)
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        assert await call(csms, conn, "DataTransfer", {"vendorId": "com.other", "messageId": "Ping"}) == {
            "status": "UnknownVendorId"
        }
        assert await call(csms, conn, "DataTransfer", {"vendorId": "org.evstation", "messageId": "Pong"}) == {
            "status": "UnknownMessageId"
        }
        assert await call(csms, conn, "DataTransfer", {"vendorId": "org.evstation"}) == {
            "status": "UnknownMessageId"
        }
        assert await call(
            csms, conn, "DataTransfer", {"vendorId": "org.evstation", "messageId": "Ping", "data": "hello"}
        ) == {
            "status": "Accepted",
            "data": "hello",
        }


async def test_p02_registered_vendor_handler_answers_with_its_status_and_data(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        seen: list[object] = []

        def meter_serial(message_id: str | None, data: object) -> VendorAnswer:
            seen.append(data)
            return VendorAnswer(DataTransferStatus.REJECTED, {"reason": "no meter", "tries": 0})

        ctx.blocks.data_transfer.register("com.acme", "MeterSerial", meter_serial)
        await csms.wait_for("StatusNotification", 2)
        payload = {
            "vendorId": "com.acme",
            "messageId": "MeterSerial",
            "data": {"evse": 1},
            "customData": {"vendorId": "com.acme", "trace": "abc"},
        }
        assert await call(csms, conn, "DataTransfer", payload) == {
            "status": "Rejected",
            "data": {"reason": "no meter", "tries": 0},
        }
        assert seen == [{"evse": 1}]


async def test_v16_structured_vendor_data_is_answered_as_json_text(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx):
        ctx.blocks.data_transfer.register(
            "com.acme", None, lambda _m, _d: VendorAnswer(DataTransferStatus.ACCEPTED, {"a": 1})
        )
        await csms.wait_for("StatusNotification", 3)
        assert await call(csms, conn, "DataTransfer", {"vendorId": "com.acme"}) == {
            "status": "Accepted",
            "data": '{"a": 1}',
        }


@pytest.mark.parametrize("version", VERSIONS)
async def test_p01_outgoing_data_transfer_returns_the_csms_answer(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms, conn = CsmsPeer(version), MemoryConnection(version)
    csms.then("DataTransfer", {"status": "UnknownMessageId"}, {"status": "Accepted", "data": "pong"})
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx):
        block = ctx.blocks.data_transfer
        with pytest.raises(LinkDown):
            await block.send("com.csms", "X")  # not yet accepted
        await ctx.uplink.wait_online()
        assert await block.send("com.csms", "X") == VendorAnswer(DataTransferStatus.UNKNOWN_MESSAGE_ID)
        assert await block.send("com.csms", "Ping", "ping") == VendorAnswer(
            DataTransferStatus.ACCEPTED, "pong"
        )
    sent = [s.call.payload for s in csms.of("DataTransfer")]
    assert sent == [
        {"vendorId": "com.csms", "messageId": "X"},
        {"vendorId": "com.csms", "messageId": "Ping", "data": "ping"},
    ]


@pytest.mark.parametrize("version", VERSIONS)
async def test_data_transfer_while_pending_1_6_serves_it_2_0_1_answers_security_error(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """1.6 section 4.2: a Pending charge point answers everything but remote start / stop. 2.0.1
    B02.FR.01 names only the configuration use cases (B05-B08) for a Pending station: SecurityError."""
    csms, conn = CsmsPeer(version), MemoryConnection(version)
    csms.then("BootNotification", {"status": "Pending", "currentTime": CSMS_TIME, "interval": 600})
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("BootNotification")
        await trio.sleep(1)  # virtual: the Pending answer is processed long before
        assert ctx.uplink.boot.state is BootState.PENDING
        ping = {"vendorId": "org.evstation", "messageId": "Ping", "data": "hello"}
        answer = await csms.wait_answer(await csms.send_call(conn, "DataTransfer", ping))
        if version is V16:
            assert isinstance(answer, CallResult)
            assert answer.payload == {"status": "Accepted", "data": "hello"}
        else:
            assert isinstance(answer, CallError) and answer.code == "SecurityError"

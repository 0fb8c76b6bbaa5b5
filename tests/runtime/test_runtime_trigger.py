"""TriggerMessage (2.0.1 F06; 1.6 section 5.17 and the security whitepaper's ExtendedTriggerMessage)
through the session: the answer first, then the message; Pending; unknown targets; NotImplemented."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import CsmsPeer, MemoryConnection, open_session_context, serving

from evstation.protocol.boot import BootState
from evstation.protocol.rpc import CallResult
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.trigger import NOT_IMPLEMENTED_TRIGGERS

V16, V201 = OcppVersion.V16, OcppVersion.V201


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)  # SQLite runs in a worker thread


async def ask(csms: CsmsPeer, conn: MemoryConnection, action: str, payload: dict[str, Any]) -> Any:
    answer = await csms.wait_answer(await csms.send_call(conn, action, payload))
    assert isinstance(answer, CallResult), answer
    return answer.payload


async def test_f06_heartbeat_trigger_is_answered_accepted_before_the_heartbeat_goes_out(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        start = len(csms.wire)
        assert await ask(csms, conn, "TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
            "status": "Accepted"
        }
        await csms.wait_for("Heartbeat")
        assert csms.wire[start:] == ["answer", "Heartbeat"]  # F06.FR.04: response first


async def test_f06_status_notification_trigger_for_one_connector_and_f06_fr_12_without_one_rejected(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        request = {"requestedMessage": "StatusNotification", "evse": {"id": 2, "connectorId": 1}}
        assert await ask(csms, conn, "TriggerMessage", request) == {"status": "Accepted"}
        sent = (await csms.wait_for("StatusNotification", 3))[2].call.payload
        assert (sent["evseId"], sent["connectorId"], sent["connectorStatus"]) == (2, 1, "Available")
        for evse in ({"id": 2}, None):
            request = {"requestedMessage": "StatusNotification", **({"evse": evse} if evse else {})}
            assert await ask(csms, conn, "TriggerMessage", request) == {"status": "Rejected"}
        unknown = {"requestedMessage": "Heartbeat", "evse": {"id": 7}}
        assert (await ask(csms, conn, "TriggerMessage", unknown))["status"] == "Rejected"
        assert len(csms.of("StatusNotification")) == 3 and not csms.of("Heartbeat")


async def test_f06_meter_values_trigger_sends_the_current_reading_of_the_evse(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201, run_evses=True) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        await trio.sleep(6)  # the sim meters have been polled
        request = {"requestedMessage": "MeterValues", "evse": {"id": 1}}
        assert await ask(csms, conn, "TriggerMessage", request) == {"status": "Accepted"}
        payload: dict[str, Any] = (await csms.wait_for("MeterValues"))[0].call.payload
    assert payload["evseId"] == 1
    (energy,) = [v for v in payload["meterValue"][0]["sampledValue"] if v["measurand"].startswith("Energy")]
    assert energy == {"value": 1000, "measurand": "Energy.Active.Import.Register", "context": "Trigger"}


async def test_f06_fr_17_boot_trigger_after_accepted_is_rejected_and_sends_nothing(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        request = {"requestedMessage": "BootNotification"}
        assert await ask(csms, conn, "TriggerMessage", request) == {"status": "Rejected"}
        await trio.sleep(1)
        assert len(csms.of("BootNotification")) == 1


async def test_b02_f06_while_pending_boot_trigger_sends_boot_now_and_triggered_messages_go_out(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """B02.FR.09: a triggered message goes out while Pending; TC_B_31: the trigger cuts the boot
    interval short, with reason Triggered."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    csms.then(
        "BootNotification", {"status": "Pending", "currentTime": "2030-06-01T12:00:00Z", "interval": 600}
    )
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("BootNotification")
        await trio.sleep(1)  # virtual: the Pending answer is processed long before (nothing to wait on)
        assert ctx.uplink.boot.state is BootState.PENDING
        assert await ask(csms, conn, "TriggerMessage", {"requestedMessage": "Heartbeat"}) == {
            "status": "Accepted"
        }
        await csms.wait_for("Heartbeat")
        pending_at = trio.current_time()
        assert await ask(csms, conn, "TriggerMessage", {"requestedMessage": "BootNotification"}) == {
            "status": "Accepted"
        }
        boots = await csms.wait_for("BootNotification", 2)
        assert boots[1].at - pending_at < 10  # not after the 600 s interval
        assert boots[1].call.payload["reason"] == "Triggered"
        await csms.wait_for("StatusNotification", 2)  # Accepted now


@pytest.mark.parametrize(
    ("version", "action", "message"),
    [(V201, "TriggerMessage", m) for m in sorted(NOT_IMPLEMENTED_TRIGGERS[V201])]
    + [(V16, "TriggerMessage", m) for m in ("DiagnosticsStatusNotification", "FirmwareStatusNotification")]
    + [
        (V16, "ExtendedTriggerMessage", m)
        for m in ("LogStatusNotification", "FirmwareStatusNotification", "SignChargePointCertificate")
    ],
)
async def test_trigger_of_a_message_whose_block_is_not_built_is_not_implemented_and_sends_nothing(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, action: str, message: str
) -> None:
    csms, conn = CsmsPeer(version), MemoryConnection(version)
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 3 if version is V16 else 2)  # 1.6: and connector 0
        before = len(csms.seen)
        assert await ask(csms, conn, action, {"requestedMessage": message}) == {"status": "NotImplemented"}
        await trio.sleep(1)
        assert len(csms.seen) == before


async def test_v16_5_17_status_for_all_connectors_one_connector_connector_0_and_unknown_rejected(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 3)
        assert await ask(csms, conn, "TriggerMessage", {"requestedMessage": "StatusNotification"}) == {
            "status": "Accepted"
        }
        seen = await csms.wait_for("StatusNotification", 6)
        assert [s.call.payload["connectorId"] for s in seen[3:]] == [0, 1, 2]
        for connector_id, expected in ((2, 2), (0, 0)):
            request = {"requestedMessage": "StatusNotification", "connectorId": connector_id}
            assert await ask(csms, conn, "TriggerMessage", request) == {"status": "Accepted"}
            seen = await csms.wait_for("StatusNotification", len(seen) + 1)
            assert seen[-1].call.payload["connectorId"] == expected
        request = {"requestedMessage": "MeterValues", "connectorId": 3}
        assert await ask(csms, conn, "TriggerMessage", request) == {"status": "Rejected"}


async def test_v16_boot_and_extended_heartbeat_triggers_after_accepted_send_the_message(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 has no F06.FR.17: an Accepted charge point sends a BootNotification on request."""
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 3)
        assert await ask(csms, conn, "TriggerMessage", {"requestedMessage": "BootNotification"}) == {
            "status": "Accepted"
        }
        await csms.wait_for("BootNotification", 2)
        assert await ask(csms, conn, "ExtendedTriggerMessage", {"requestedMessage": "Heartbeat"}) == {
            "status": "Accepted"
        }
        await csms.wait_for("Heartbeat")
        assert ctx.uplink.boot.state is BootState.ACCEPTED

"""Session boot, heartbeat, clock and StatusNotification over an in-memory connection, both versions.

Real SQLite underneath; conftest holds the virtual clock still while its thread works.
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
    Fail,
    MemoryConnection,
    NoAnswer,
    open_session_context,
    serve_until_link_down,
    serving,
)

from evstation.drivers.api import MREC_VENDOR_ID, FaultCode
from evstation.protocol.boot import DEFAULT_RETRY_INTERVAL_S, BootState
from evstation.protocol.versions import OcppVersion
from evstation.runtime.device_model import HEARTBEAT_INTERVAL
from evstation.runtime.evse import ConnectorStatus, StatusChanged
from evstation.runtime.storage import BootState as StoredBootState

V16, V201 = OcppVersion.V16, OcppVersion.V201
BOTH = pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])


def _boot(status: str, interval: int) -> dict[str, object]:
    return {"status": status, "currentTime": CSMS_TIME, "interval": interval}


@BOTH
async def test_b02_pending_retries_at_the_interval_then_accepted(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """B02.FR.01/FR.02: Pending -> BootNotification again after `interval`, nothing else before Accepted."""
    csms = CsmsPeer(version).then("BootNotification", _boot("Pending", 10))
    conn = MemoryConnection(version)
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification")
    boots = csms.of("BootNotification")
    assert len(boots) == 2
    assert boots[1].at - boots[0].at == pytest.approx(10)
    assert csms.actions()[:2] == ["BootNotification", "BootNotification"]
    assert ctx.uplink.boot.state is BootState.ACCEPTED


@BOTH
async def test_b03_rejected_retries_at_the_interval_and_sends_nothing_else(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """B03.FR.01/FR.02 (1.6 4.2): Rejected -> only BootNotification, again after each interval."""
    csms = CsmsPeer(version).then("BootNotification", _boot("Rejected", 20), _boot("Rejected", 20))
    conn = MemoryConnection(version)
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("BootNotification", 3)
    times = [seen.at - csms.seen[0].at for seen in csms.of("BootNotification")]
    assert times == pytest.approx([0, 20, 40])
    assert set(csms.actions()[:3]) == {"BootNotification"}


async def test_b01_boot_reason_comes_from_storage_and_is_cleared_after_accepted(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """B01 / B11-B12: the reason of the next boot (e.g. RemoteReset) is read from storage."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx:
        await ctx.blocks.transactions.services.storage.save_boot_state(
            StoredBootState(next_boot_reason="RemoteReset")
        )
        async with serving(csms, conn, ctx):
            await csms.wait_for("StatusNotification")
        stored = await ctx.blocks.transactions.services.storage.boot_state()
    assert csms.of("BootNotification")[0].call.payload["reason"] == "RemoteReset"
    assert stored.registration_status == "Accepted"
    assert stored.next_boot_reason is None


async def test_b01_power_up_is_the_default_reason_and_1_6_has_none(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    for version in (V201, V16):
        csms, conn = CsmsPeer(version), MemoryConnection(version)
        async with open_session_context(tmp_path / version.name, version) as ctx, serving(csms, conn, ctx):
            await csms.wait_for("BootNotification")
        assert csms.of("BootNotification")[0].call.payload.get("reason") == (
            "PowerUp" if version is V201 else None
        )


async def test_boot_notification_names_the_configured_vendor_model_and_serial_number(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 4.2 / 2.0.1 B01: the BootNotification carries station.toml's vendor, model and serial
    number (the harness configures Acme / Wallbox / 0001)."""
    for version in (V201, V16):
        csms, conn = CsmsPeer(version), MemoryConnection(version)
        async with open_session_context(tmp_path / version.name, version) as ctx, serving(csms, conn, ctx):
            await csms.wait_for("BootNotification")
        payload: dict[str, Any] = csms.of("BootNotification")[0].call.payload
        if version is V16:
            identity = (
                payload["chargePointVendor"],
                payload["chargePointModel"],
                payload["chargePointSerialNumber"],
            )
        else:
            station = payload["chargingStation"]
            identity = (station["vendorName"], station["model"], station["serialNumber"])
        assert identity == ("Acme", "Wallbox", "0001")


@BOTH
async def test_heartbeat_at_the_accepted_interval_and_interval_change_takes_effect(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """B01.FR.04 / 1.6 4.6: Heartbeat every `interval`; a new interval applies from the change; the
    station clock follows the CSMS's currentTime."""
    csms = CsmsPeer(version).then("BootNotification", _boot("Accepted", 100))
    conn = MemoryConnection(version)
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx, fail_after_s=10_000):
        await csms.wait_for("StatusNotification")
        # The BootNotification answer alone sets the clock: no Heartbeat answer has come yet.
        assert csms.of("Heartbeat") == []
        assert ctx.clock.now().year == 2030
        await csms.wait_for("Heartbeat", 2)
        changed_at = trio.current_time()
        await ctx.device_model.set(HEARTBEAT_INTERVAL, "50")
        beats = await csms.wait_for("Heartbeat", 4)
    boot_at = csms.of("BootNotification")[0].at
    assert [b.at - boot_at for b in beats[:2]] == pytest.approx([100, 200])
    assert [b.at - changed_at for b in beats[2:]] == pytest.approx([50, 100])


@BOTH
async def test_b01_accepted_with_interval_0_keeps_the_configured_heartbeat_interval(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """B01: an Accepted answer with interval 0 leaves HeartbeatInterval as configured (120 s here);
    taking the 0 would stop the heartbeats altogether."""
    csms = CsmsPeer(version).then("BootNotification", _boot("Accepted", 0))
    conn = MemoryConnection(version)
    async with (
        open_session_context(tmp_path, version, heartbeat_interval_s=120) as ctx,
        serving(csms, conn, ctx, fail_after_s=10_000),
    ):
        beats = await csms.wait_for("Heartbeat", 2)
        assert ctx.device_model.get_int(HEARTBEAT_INTERVAL) == 120
    boot_at = csms.of("BootNotification")[0].at
    assert [b.at - boot_at for b in beats[:2]] == pytest.approx([120, 240])


@BOTH
@pytest.mark.parametrize(
    ("failure", "failed_after_s"),
    [(Fail("InternalError"), 0.0), (NoAnswer(), 30.0)],
    ids=["callerror", "timeout"],
)
async def test_a_failed_boot_is_retried_after_the_retry_interval_not_at_once(
    clock: trio.testing.MockClock,
    tmp_path: Path,
    version: OcppVersion,
    failure: Fail | NoAnswer,
    failed_after_s: float,
) -> None:
    """B01 / 1.6 4.2: a BootNotification answered by a CALLERROR or not at all (message timeout 30 s)
    is retried after the default retry interval, and nothing else is sent meanwhile."""
    csms = CsmsPeer(version).then("BootNotification", failure)
    conn = MemoryConnection(version)
    async with open_session_context(tmp_path, version, message_timeout_s=30) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification")
    boots = csms.of("BootNotification")
    assert len(boots) == 2
    assert boots[1].at - boots[0].at == pytest.approx(failed_after_s + DEFAULT_RETRY_INTERVAL_S)
    assert csms.actions()[:2] == ["BootNotification", "BootNotification"]


@BOTH
async def test_a_heartbeat_interval_changed_mid_interval_applies_at_once(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """1.6 HeartbeatInterval / 2.0.1 OCPPCommCtrlr.HeartbeatInterval: a change 30 s into a 100 s interval
    makes the next beat come 50 s after the change (not at 100 s, nor 100 s after the change)."""
    csms = CsmsPeer(version).then("BootNotification", _boot("Accepted", 100))
    conn = MemoryConnection(version)
    async with open_session_context(tmp_path, version) as ctx, serving(csms, conn, ctx, fail_after_s=10_000):
        first = (await csms.wait_for("Heartbeat", 1))[0]
        await trio.sleep(30)
        changed_at = trio.current_time()
        await ctx.device_model.set(HEARTBEAT_INTERVAL, "50")
        beats = await csms.wait_for("Heartbeat", 3)
    assert changed_at - first.at == pytest.approx(30)
    assert [b.at - changed_at for b in beats[1:]] == pytest.approx([50, 100])


async def test_b01_reconnect_after_accepted_sends_no_new_boot(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with open_session_context(tmp_path, V201) as ctx:
        for generation in (1, 2):
            csms, conn = CsmsPeer(V201), MemoryConnection(V201, generation)
            with trio.fail_after(1000):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(csms.serve, conn)
                    nursery.start_soon(serve_until_link_down, conn, ctx)
                    await csms.wait_for("StatusNotification", 2)
                    conn.close()
            assert ctx.uplink.calls is None
            assert len(csms.of("BootNotification")) == (1 if generation == 1 else 0)


async def test_v16_status_notification_for_every_connector_after_boot(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 4.9: connector 0 and each connector after Accepted; a fault carries the 1.6 error code and
    the ChargeX MREC code (vendorId/vendorErrorCode)."""
    csms, conn = CsmsPeer(V16), MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 3)
        ctx.evses.events.publish(StatusChanged(2, 1, ConnectorStatus.FAULTED, FaultCode.GROUND_FAILURE))
        statuses = await csms.wait_for("StatusNotification", 4)
    first = [s.call.payload for s in statuses[:3]]
    assert [(p["connectorId"], p["status"], p["errorCode"]) for p in first] == [
        (0, "Available", "NoError"),
        (1, "Available", "NoError"),
        (2, "Available", "NoError"),
    ]
    fault = statuses[3].call.payload
    assert fault["connectorId"] == 2
    assert fault["status"] == "Faulted"
    assert fault["errorCode"] == "GroundFailure"
    assert fault["vendorId"] == MREC_VENDOR_ID
    assert fault["vendorErrorCode"] == "CX002"
    assert csms.actions().index("StatusNotification") > csms.actions().index("BootNotification")


async def test_v201_status_notification_for_every_connector_after_boot(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """B01 / G01: every connector's status after Accepted; in-use states map to Occupied, and a change
    that stays Occupied is not sent again."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", 2)
        publish = ctx.evses.events.publish
        publish(StatusChanged(1, 1, ConnectorStatus.CHARGING, None))
        await trio.sleep(1)
        # Charging itself is reported as Occupied (not left to the next change to report).
        (charging,) = csms.of("StatusNotification")[2:]
        publish(StatusChanged(1, 1, ConnectorStatus.SUSPENDED_EV, None))  # still Occupied: not sent
        publish(StatusChanged(1, 1, ConnectorStatus.FAULTED, FaultCode.GROUND_FAILURE))
        statuses = await csms.wait_for("StatusNotification", 4)
    assert [(s.call.payload["evseId"], s.call.payload["connectorStatus"]) for s in statuses] == [
        (1, "Available"),
        (2, "Available"),
        (1, "Occupied"),
        (1, "Faulted"),
    ]
    assert statuses[0].call.payload["timestamp"] == "2030-06-01T12:00:00.000Z"
    assert charging.call.payload["connectorStatus"] == "Occupied"


async def test_b02_pending_v201_rejects_request_start_and_refuses_unlisted_actions(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """While Pending: RequestStartTransaction answered Rejected (its declared gate), an action the
    version defines but no block serves NotSupported, and nothing is sent but BootNotification."""
    csms = CsmsPeer(V201).then("BootNotification", _boot("Pending", 500))
    conn = MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("BootNotification")
        start = await csms.send_call(
            conn,
            "RequestStartTransaction",
            {"idToken": {"idToken": "A", "type": "Central"}, "remoteStartId": 1},
        )
        unserved = await csms.send_call(conn, "GetDisplayMessages", {"requestId": 1})
        answers = [await csms.wait_answer(i) for i in (start, unserved)]
    assert answers[0].payload == {"status": "Rejected"}  # type: ignore[union-attr]
    assert answers[1].code == "NotSupported"  # type: ignore[union-attr]
    assert csms.actions() == ["BootNotification"]


async def test_v16_4_2_pending_rejects_remote_start(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    csms = CsmsPeer(V16).then("BootNotification", _boot("Pending", 500))
    conn = MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("BootNotification")
        start = await csms.send_call(conn, "RemoteStartTransaction", {"idTag": "A", "connectorId": 1})
        answer = await csms.wait_answer(start)
    assert answer.payload == {"status": "Rejected"}  # type: ignore[union-attr]


async def test_v16_4_2_rejected_station_answers_no_csms_call(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 section 4.2: while Rejected the Charge Point SHALL NOT respond to CSMS-initiated messages;
    an answered call sent afterwards shows the first one was dropped, not delayed."""
    csms = CsmsPeer(V16).then("BootNotification", _boot("Rejected", 500))
    conn = MemoryConnection(V16)
    async with open_session_context(tmp_path, V16) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("BootNotification")
        await csms.send_call(conn, "RemoteStartTransaction", {"idTag": "A", "connectorId": 1})
        await trio.sleep(100)
        assert csms.answers == []
        ctx.uplink.boot.sent()
        ctx.uplink.boot.answered("Accepted", 300, trio.current_time())
        stop = await csms.send_call(conn, "RemoteStopTransaction", {"transactionId": 7})
        answer = await csms.wait_answer(stop)
    assert answer.payload == {"status": "Rejected"}  # type: ignore[union-attr]
    assert len(csms.answers) == 1

"""The project's test CSMS: schema-valid defaults, programmable answers, CSMS-initiated calls, records."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import jsonschema
import pytest
import trio
import trio.testing
import trio_websocket

from evstation.protocol.versions import OcppVersion
from evstation.runtime.testcsms import (
    CallErrorReceived,
    CallErrorReply,
    JsonObject,
    StationNotConnected,
    TestCsms,
    TimelineKind,
    default_response,
    serve_test_csms,
)

STATION = "CS-42"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
TEST_TIMEOUT_S = 10.0

V16_ACTIONS = [
    "Authorize",
    "BootNotification",
    "DataTransfer",
    "DiagnosticsStatusNotification",
    "FirmwareStatusNotification",
    "Heartbeat",
    "MeterValues",
    "StartTransaction",
    "StatusNotification",
    "StopTransaction",
    "SecurityEventNotification",
    "SignCertificate",
    "LogStatusNotification",
    "SignedFirmwareStatusNotification",
]
V201_ACTIONS = [
    "Authorize",
    "BootNotification",
    "ClearedChargingLimit",
    "DataTransfer",
    "FirmwareStatusNotification",
    "GetCertificateStatus",
    "Heartbeat",
    "LogStatusNotification",
    "MeterValues",
    "NotifyChargingLimit",
    "NotifyCustomerInformation",
    "NotifyDisplayMessages",
    "NotifyEVChargingNeeds",
    "NotifyEVChargingSchedule",
    "NotifyEvent",
    "NotifyMonitoringReport",
    "NotifyReport",
    "PublishFirmwareStatusNotification",
    "ReportChargingProfiles",
    "ReservationStatusUpdate",
    "SecurityEventNotification",
    "SignCertificate",
    "StatusNotification",
    "TransactionEvent",
]


def response_schema(version: OcppVersion, action: str) -> dict[str, Any]:
    """The official response schema, as shipped by the independent `ocpp` package."""
    folder = "v16" if version is OcppVersion.V16 else "v201"
    path = resources.files("ocpp") / folder / "schemas" / f"{action}Response.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


@pytest.mark.parametrize(
    ("version", "action"),
    [(OcppVersion.V16, a) for a in V16_ACTIONS] + [(OcppVersion.V201, a) for a in V201_ACTIONS],
)
def test_default_answers_are_schema_valid(version: OcppVersion, action: str) -> None:
    schema = response_schema(version, action)
    for request in ({}, {"idToken": {"idToken": "ABC", "type": "ISO14443"}}):
        payload = default_response(version, action, request, now=NOW)
        jsonschema.validators.validator_for(schema)(schema).validate(payload)


def test_transaction_event_with_id_token_gets_id_token_info() -> None:
    with_token = default_response(OcppVersion.V201, "TransactionEvent", {"idToken": {}}, now=NOW)
    assert with_token == {"idTokenInfo": {"status": "Accepted"}}
    assert default_response(OcppVersion.V201, "TransactionEvent", {}, now=NOW) == {}


def test_unknown_action_is_not_implemented() -> None:
    with pytest.raises(CallErrorReply) as caught:
        default_response(OcppVersion.V16, "TransactionEvent", {}, now=NOW)
    assert caught.value.code == "NotImplemented"


async def request(
    ws: trio_websocket.WebSocketConnection, message_id: str, action: str, payload: JsonObject
) -> Any:
    await ws.send_message(json.dumps([2, message_id, action, payload]))
    return json.loads(await ws.get_message())


def url(csms: TestCsms) -> str:
    return f"ws://127.0.0.1:{csms.port}/ocpp/{STATION}"


async def test_start_transaction_ids_count_up_and_boot_can_be_programmed() -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            csms.set_response("BootNotification", {"status": "Pending", "currentTime": "x", "interval": 5})
            async with trio_websocket.open_websocket_url(url(csms), subprotocols=["ocpp1.6"]) as ws:
                assert (await request(ws, "1", "BootNotification", {}))[2]["status"] == "Pending"
                start = {"connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"}
                first = await request(ws, "2", "StartTransaction", start)
                second = await request(ws, "3", "StartTransaction", start)
                assert (first[2]["transactionId"], second[2]["transactionId"]) == (1, 2)
                assert first[2]["idTagInfo"] == {"status": "Accepted"}
            nursery.cancel_scope.cancel()


async def test_responder_callable_and_call_error_reply() -> None:
    def authorize(station_id: str, payload: JsonObject) -> JsonObject:
        if payload.get("idTag") == "BLOCKED":
            raise CallErrorReply("SecurityError", "blocked tag")
        return {"idTagInfo": {"status": "Invalid" if station_id == STATION else "Accepted"}}

    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            csms.set_response("Authorize", authorize)
            async with trio_websocket.open_websocket_url(url(csms), subprotocols=["ocpp1.6"]) as ws:
                assert (await request(ws, "a", "Authorize", {"idTag": "X"}))[2]["idTagInfo"][
                    "status"
                ] == "Invalid"
                assert (await request(ws, "b", "Authorize", {"idTag": "BLOCKED"}))[:3] == [
                    4,
                    "b",
                    "SecurityError",
                ]
                assert (await request(ws, "c", "Bogus", {}))[:3] == [4, "c", "NotImplemented"]
            nursery.cancel_scope.cancel()


async def test_csms_calls_the_station_and_gets_its_answer() -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            with pytest.raises(StationNotConnected):
                await csms.call(STATION, "Reset", {"type": "Soft"})
            async with trio_websocket.open_websocket_url(url(csms), subprotocols=["ocpp2.0.1"]) as ws:
                await csms.wait_connected(STATION)

                async def station() -> None:
                    for answer in ({"status": "Accepted"}, None):
                        _, message_id, action, _payload = json.loads(await ws.get_message())
                        assert action == "Reset"
                        if answer is None:
                            await ws.send_message(json.dumps([4, message_id, "NotSupported", "no", {}]))
                        else:
                            await ws.send_message(json.dumps([3, message_id, answer]))

                nursery.start_soon(station)
                assert await csms.call(STATION, "Reset", {"type": "Immediate"}) == {"status": "Accepted"}
                with pytest.raises(CallErrorReceived) as caught:
                    await csms.call(STATION, "Reset", {"type": "OnIdle"})
                assert caught.value.code == "NotSupported"
            nursery.cancel_scope.cancel()


async def test_delay_results_and_wait_for_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            csms.delay_results(30.0, "Heartbeat")
            entries = csms.subscribe()
            stream = await csms.open_memory_stream()
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,  # type: ignore[arg-type]
                "csms",
                f"/ocpp/{STATION}",
                subprotocols=["ocpp2.0.1"],
            )
            sent_at = trio.current_time()
            await ws.send_message('[2,"h","Heartbeat",{}]')
            assert await csms.wait_for(STATION, "Heartbeat") == {}
            reply = json.loads(await ws.get_message())
            assert reply[1] == "h"
            assert trio.current_time() - sent_at == pytest.approx(30.0)
            kinds = [(await entries.receive()).kind for _ in range(3)]
            assert kinds == [TimelineKind.CONNECTED, TimelineKind.RECEIVED, TimelineKind.SENT]
            sent = csms.frames(STATION)[-1]
            assert sent.kind is TimelineKind.SENT
            assert sent.time - sent_at == pytest.approx(30.0)
            nursery.cancel_scope.cancel()


async def test_stall_holds_frames_until_resume(autojump_clock: trio.testing.MockClock) -> None:
    with trio.fail_after(1000):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            stream = await csms.open_memory_stream()
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,  # type: ignore[arg-type]
                "csms",
                f"/ocpp/{STATION}",
                subprotocols=["ocpp1.6"],
            )
            await csms.wait_connected(STATION)
            csms.stall(STATION)
            await ws.send_message('[2,"s","Heartbeat",{}]')
            with trio.move_on_after(100):
                await ws.ping(b"p")
                pytest.fail("a stalled CSMS answered a ping")
            assert csms.received(STATION) == []
            csms.resume(STATION)
            await csms.wait_for(STATION, "Heartbeat")
            assert json.loads(await ws.get_message())[1] == "s"
            nursery.cancel_scope.cancel()


async def test_wrong_subprotocol_is_accepted_without_one_and_recorded() -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(
                functools.partial(serve_test_csms, accepted_subprotocols=("ocpp1.6",))
            )
            async with trio_websocket.open_websocket_url(url(csms), subprotocols=["ocpp2.0.1"]) as ws:
                assert ws.subprotocol is None
                await csms.wait_connected(STATION)
                assert csms.version(STATION) is None
                assert csms.timeline(STATION)[0].text == "subprotocol none"
            nursery.cancel_scope.cancel()

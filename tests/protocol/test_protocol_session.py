"""RpcSession, one transition per test line: OCPP-J's one-call-in-flight rule and CALLERROR answers."""

from __future__ import annotations

import json

import pytest

from evstation.protocol.errors import ErrorKind, error_code
from evstation.protocol.rpc import CallError, EncodeError, LocalProtocolError
from evstation.protocol.session import (
    CallReceived,
    Dropped,
    ErrorReceived,
    InvalidCall,
    InvalidResult,
    ResultReceived,
    RpcSession,
    Unmatched,
    error_frame,
    result_frame,
)
from evstation.protocol.versions import OcppVersion

V16, V201 = OcppVersion.V16, OcppVersion.V201
NOW = "2024-05-01T12:00:00Z"
BOOT_REQUEST: dict[OcppVersion, dict[str, object]] = {
    V16: {"chargePointVendor": "Acme", "chargePointModel": "One"},
    V201: {"reason": "PowerUp", "chargingStation": {"vendorName": "Acme", "model": "One"}},
}
BOOT_RESPONSE = {"status": "Accepted", "currentTime": NOW, "interval": 300}
RESET_REQUEST = {V16: {"type": "Soft"}, V201: {"type": "Immediate"}}
versions = pytest.mark.parametrize("version", list(OcppVersion))


def frame(*elements: object) -> str:
    return json.dumps(list(elements))


def reply(event: object) -> list[object]:
    assert isinstance(event, InvalidCall)
    decoded = json.loads(event.reply_frame)
    assert isinstance(decoded, list)
    return decoded


@versions
def test_our_call_is_in_flight_until_its_result_arrives(version: OcppVersion) -> None:
    session = RpcSession(version)
    sent = session.start_call("1", "BootNotification", BOOT_REQUEST[version])
    assert json.loads(sent) == [2, "1", "BootNotification", BOOT_REQUEST[version]]
    assert session.in_flight == ("1", "BootNotification")

    event = session.receive(frame(3, "1", BOOT_RESPONSE))

    assert isinstance(event, ResultReceived)
    assert (event.message_id, event.action) == ("1", "BootNotification")
    assert session.in_flight is None


@versions
def test_a_date_time_without_offset_in_an_answer_is_taken_as_utc_and_reported(version: OcppVersion) -> None:
    session = RpcSession(version)
    session.start_call("1", "BootNotification", BOOT_REQUEST[version])

    event = session.receive(frame(3, "1", {**BOOT_RESPONSE, "currentTime": "2026-01-01T00:00:00"}))

    assert isinstance(event, ResultReceived)
    assert event.naive_datetimes == ("currentTime",)
    assert event.response.current_time.isoformat() == "2026-01-01T00:00:00+00:00"  # type: ignore[attr-defined]


def test_a_date_time_without_offset_in_a_peers_call_is_taken_as_utc_and_reported() -> None:
    session = RpcSession(V16)
    payload = {"connectorId": 1, "expiryDate": "2026-01-01T00:00:00", "idTag": "T", "reservationId": 1}

    event = session.receive(frame(2, "c1", "ReserveNow", payload))

    assert isinstance(event, CallReceived)
    assert event.naive_datetimes == ("expiryDate",)


@versions
def test_a_second_call_while_one_is_in_flight_is_our_error(version: OcppVersion) -> None:
    session = RpcSession(version)
    session.start_call("1", "Heartbeat", {})

    with pytest.raises(LocalProtocolError):
        session.start_call("2", "Heartbeat", {})
    assert session.in_flight == ("1", "Heartbeat")


@versions
def test_cancelled_call_frees_the_session_and_its_late_answer_is_unmatched(version: OcppVersion) -> None:
    session = RpcSession(version)
    session.start_call("1", "Heartbeat", {})
    session.cancel_call()
    assert session.in_flight is None

    assert isinstance(session.receive(frame(3, "1", {"currentTime": NOW})), Unmatched)
    session.start_call("2", "Heartbeat", {})
    assert session.in_flight == ("2", "Heartbeat")


@versions
def test_result_for_an_unknown_id_is_unmatched_and_keeps_our_call(version: OcppVersion) -> None:
    session = RpcSession(version)
    session.start_call("1", "Heartbeat", {})

    event = session.receive(frame(3, "other", {"currentTime": NOW}))

    assert isinstance(event, Unmatched)
    assert session.in_flight == ("1", "Heartbeat")


@versions
def test_callerror_for_our_call_ends_it(version: OcppVersion) -> None:
    session = RpcSession(version)
    session.start_call("1", "Heartbeat", {})

    event = session.receive(frame(4, "1", "InternalError", "db down", {}))

    assert event == ErrorReceived("1", "Heartbeat", CallError("1", "InternalError", "db down", {}))
    assert session.in_flight is None


@versions
def test_result_whose_payload_breaks_the_schema_ends_our_call_as_invalid(version: OcppVersion) -> None:
    session = RpcSession(version)
    session.start_call("1", "Heartbeat", {})

    event = session.receive(frame(3, "1", {"currentTime": 17}))

    assert isinstance(event, InvalidResult)
    assert (event.message_id, event.action) == ("1", "Heartbeat")
    assert session.in_flight is None


@versions
def test_malformed_result_frame_for_our_call_ends_it_and_is_not_answered(version: OcppVersion) -> None:
    session = RpcSession(version)
    session.start_call("1", "Heartbeat", {})

    event = session.receive(frame(3, "1", []))

    code = error_code(ErrorKind.FORMAT, version)
    assert event == InvalidResult("1", "Heartbeat", code, "payload must be an object")
    assert session.in_flight is None


@versions
def test_inbound_call_is_delivered_while_our_call_is_pending(version: OcppVersion) -> None:
    session = RpcSession(version)
    session.start_call("1", "Heartbeat", {})

    event = session.receive(frame(2, "csms-7", "Reset", RESET_REQUEST[version]))

    assert isinstance(event, CallReceived)
    assert (event.call.message_id, event.call.action) == ("csms-7", "Reset")
    assert session.in_flight == ("1", "Heartbeat")


@versions
def test_call_for_an_action_the_version_lacks_is_answered_not_implemented(version: OcppVersion) -> None:
    session = RpcSession(version)

    event = session.receive(frame(2, "9", "NoSuchAction", {}))

    assert reply(event)[:3] == [4, "9", "NotImplemented"]


def test_v201_boot_notification_without_charging_station_is_an_occurrence_constraint_violation() -> None:
    session = RpcSession(V201)

    event = session.receive(frame(2, "9", "BootNotification", {"reason": "PowerUp"}))

    code, description = reply(event)[2:4]
    assert code == error_code(ErrorKind.OCCURRENCE_CONSTRAINT, V201)
    assert isinstance(description, str) and "chargingStation" in description


def test_v16_call_with_an_extra_property_is_a_formation_violation() -> None:
    session = RpcSession(V16)

    event = session.receive(frame(2, "9", "Reset", {"type": "Soft", "extra": 1}))

    code, description = reply(event)[2:4]
    assert code == "FormationViolation"
    assert isinstance(description, str) and "extra" in description


def test_v201_unreadable_frame_is_answered_with_rpc_framework_error_and_id_minus_one() -> None:
    session = RpcSession(V201)

    event = session.receive("{not json")

    assert reply(event) == [4, "-1", "RpcFrameworkError", "frame is not valid JSON", {}]


def test_v16_unreadable_frame_is_dropped() -> None:
    session = RpcSession(V16)

    event = session.receive("{not json")

    assert event == Dropped("{not json", "frame is not valid JSON")


@versions
def test_unknown_message_type_with_a_readable_id_is_answered(version: OcppVersion) -> None:
    session = RpcSession(version)

    event = session.receive(frame(6, "9", {}))

    assert reply(event)[:3] == [4, "9", error_code(ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED, version)]


@versions
def test_start_call_refuses_an_id_over_36_characters_or_an_unknown_action(version: OcppVersion) -> None:
    session = RpcSession(version)

    with pytest.raises(LocalProtocolError):
        session.start_call("x" * 37, "Heartbeat", {})
    with pytest.raises(LocalProtocolError):
        session.start_call("1", "NoSuchAction", {})
    assert session.in_flight is None


def test_start_call_with_nan_raises_and_leaves_nothing_in_flight() -> None:
    session = RpcSession(V201)

    with pytest.raises(EncodeError):
        session.start_call("1", "DataTransfer", {"vendorId": "v", "data": float("nan")})
    assert session.in_flight is None


def test_result_and_error_frames_are_compact_and_spelled_for_the_version() -> None:
    assert result_frame("7", {"status": "Accepted"}) == '[3,"7",{"status":"Accepted"}]'
    assert error_frame(V16, "7", ErrorKind.FORMAT, "bad") == '[4,"7","FormationViolation","bad",{}]'
    assert error_frame(V201, "7", ErrorKind.FORMAT, "bad") == '[4,"7","FormatViolation","bad",{}]'
    long = json.loads(error_frame(V201, "7", ErrorKind.GENERIC, "x" * 300, {"k": 1}))
    assert long == [4, "7", "GenericError", "x" * 255, {"k": 1}]

"""Behaviour of the message models and of the messages API that the schema tests do not pin down."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pydantic
import pytest

from evstation.protocol import messages
from evstation.protocol.errors import ErrorKind
from evstation.protocol.messages import (
    PayloadError,
    UnknownAction,
    actions,
    parse_request,
    parse_response,
    request_model,
    response_model,
    to_payload,
)
from evstation.protocol.v16 import messages as v16
from evstation.protocol.v201 import messages as v201
from evstation.protocol.versions import OcppVersion

V16 = OcppVersion.V16
V201 = OcppVersion.V201


def transaction_event(**changes: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "eventType": "Updated",
        "timestamp": "2024-03-01T12:00:00+01:00",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": 4,
        "transactionInfo": {"transactionId": "tx-1", "chargingState": "Charging"},
        "meterValue": [
            {
                "timestamp": "2024-03-01T11:00:00Z",
                "sampledValue": [
                    {"value": 1.5 + i, "measurand": "Energy.Active.Import.Register"} for i in range(3)
                ],
            }
        ],
    }
    payload.update(changes)
    return payload


def failure(version: OcppVersion, action: str, payload: object) -> PayloadError:
    with pytest.raises(PayloadError) as caught:
        parse_request(version, action, payload)
    return caught.value


# -- registry ------------------------------------------------------------------------------------


def test_registry_maps_actions_to_request_and_response_models() -> None:
    assert request_model(V16, "BootNotification") is v16.BootNotificationRequest
    assert response_model(V16, "BootNotification") is v16.BootNotificationResponse
    assert v201.ACTIONS["TransactionEvent"] == (v201.TransactionEventRequest, v201.TransactionEventResponse)
    assert len(actions(V16)) == 39
    assert len(actions(V201)) == 64


def test_unknown_action_is_its_own_error() -> None:
    with pytest.raises(UnknownAction) as caught:
        parse_request(V16, "TransactionEvent", {})
    assert caught.value.action == "TransactionEvent"
    with pytest.raises(UnknownAction):
        response_model(V201, "StartTransaction")


# -- customData (2.0.1) --------------------------------------------------------------------------


def test_custom_data_on_a_nested_object_passes_through_unchanged() -> None:
    vendor = {"vendorId": "com.example", "firmware": {"build": 17, "flags": [True, None]}, "note": None}
    info = {"transactionId": "tx-1", "customData": vendor}
    model = parse_request(V201, "TransactionEvent", transaction_event(transactionInfo=info))
    assert isinstance(model, v201.TransactionEventRequest)
    custom = model.transaction_info.custom_data
    assert custom is not None and custom.vendor_id == "com.example"
    assert to_payload(model)["transactionInfo"] == info


def test_custom_data_still_requires_a_bounded_vendor_id() -> None:
    missing = failure(V201, "Heartbeat", {"customData": {"other": 1}})
    assert (missing.kind, missing.path) == (ErrorKind.OCCURRENCE_CONSTRAINT, "customData.vendorId")
    too_long = failure(V201, "Heartbeat", {"customData": {"vendorId": "v" * 256}})
    assert (too_long.kind, too_long.path) == (ErrorKind.PROPERTY_CONSTRAINT, "customData.vendorId")


# -- date-times ----------------------------------------------------------------------------------


def test_datetimes_are_held_and_sent_in_utc_with_z() -> None:
    model = parse_request(V201, "TransactionEvent", transaction_event())
    assert isinstance(model, v201.TransactionEventRequest)
    assert model.timestamp == datetime(2024, 3, 1, 11, 0, tzinfo=UTC)
    assert model.timestamp.utcoffset() == timedelta(0)
    wire = to_payload(model)
    assert wire["timestamp"] == "2024-03-01T11:00:00Z"
    built = v16.HeartbeatResponse(
        current_time=datetime(2024, 1, 1, 1, 30, 0, 250000, tzinfo=timezone(timedelta(hours=1)))
    )
    assert to_payload(built) == {"currentTime": "2024-01-01T00:30:00.250000Z"}


@pytest.mark.parametrize(
    "stamp",
    [
        "2024-03-01T12:00:00",  # naive
        "2024-03-01",
        "1709290800",  # a unix time in a string
        "2024-03-01T12:00+01:00",  # no seconds
        "2024-03-01T12:00:00+0100",
        "2024-02-30T12:00:00Z",
        "yesterday",
    ],
)
def test_malformed_or_naive_datetime_strings_are_property_violations(stamp: str) -> None:
    error = failure(V201, "TransactionEvent", transaction_event(timestamp=stamp))
    assert (error.kind, error.path) == (ErrorKind.PROPERTY_CONSTRAINT, "timestamp")


def test_a_peers_datetime_without_offset_is_taken_as_utc_and_reported() -> None:
    """Tolerant in what we receive: EVerest's test CSMS answers BootNotification like this."""
    payload = {"status": "Accepted", "currentTime": "2026-01-01T00:00:00", "interval": 300}
    received = messages.receive_response(V16, "BootNotification", payload)
    assert isinstance(received.model, v16.BootNotificationResponse)
    assert received.model.current_time == datetime(2026, 1, 1, tzinfo=UTC)
    assert received.naive_datetimes == ("currentTime",)
    assert payload["currentTime"] == "2026-01-01T00:00:00"  # the caller's payload is left alone
    # Strict for what we send (and for parse_*): the same payload is refused there.
    with pytest.raises(PayloadError):
        parse_response(V16, "BootNotification", payload)


def test_nested_naive_datetimes_in_a_request_are_each_reported() -> None:
    event = transaction_event(timestamp="2024-03-01T12:00:00.5")
    event["meterValue"][0]["timestamp"] = "2024-03-01T11:00:00"  # type: ignore[index]
    received = messages.receive_request(V201, "TransactionEvent", event)
    assert sorted(received.naive_datetimes) == ["meterValue.0.timestamp", "timestamp"]
    assert to_payload(received.model)["timestamp"] == "2024-03-01T12:00:00.500000Z"


def test_a_peers_payload_that_meets_the_schema_reports_nothing() -> None:
    received = messages.receive_request(V201, "TransactionEvent", transaction_event())
    assert received.naive_datetimes == ()


@pytest.mark.parametrize("stamp", ["2024-03-01", "2024-03-01T12:00", "2024-02-30T12:00:00", "yesterday"])
def test_only_a_missing_offset_is_tolerated(stamp: str) -> None:
    with pytest.raises(PayloadError) as caught:
        messages.receive_request(V201, "TransactionEvent", transaction_event(timestamp=stamp))
    assert (caught.value.kind, caught.value.path) == (ErrorKind.PROPERTY_CONSTRAINT, "timestamp")


def test_a_tolerated_datetime_does_not_hide_another_error() -> None:
    with pytest.raises(PayloadError) as caught:
        messages.receive_request(
            V201, "TransactionEvent", transaction_event(timestamp="2024-03-01T12:00:00", seqNo="4")
        )
    assert (caught.value.kind, caught.value.path) == (ErrorKind.TYPE_CONSTRAINT, "seqNo")


def test_naive_datetime_objects_are_rejected_too() -> None:
    with pytest.raises(pydantic.ValidationError):
        v16.HeartbeatResponse(current_time=datetime(2024, 1, 1))


def test_a_number_for_a_datetime_is_a_type_violation() -> None:
    error = failure(V201, "TransactionEvent", transaction_event(timestamp=1709290800))
    assert error.kind is ErrorKind.TYPE_CONSTRAINT


# -- strictness ----------------------------------------------------------------------------------


def test_no_coercion_between_json_types() -> None:
    assert failure(V16, "CancelReservation", {"reservationId": "12"}).kind is ErrorKind.TYPE_CONSTRAINT
    assert failure(V16, "CancelReservation", {"reservationId": True}).kind is ErrorKind.TYPE_CONSTRAINT
    assert failure(V16, "Authorize", {"idTag": 12}).kind is ErrorKind.TYPE_CONSTRAINT
    assert failure(V201, "TransactionEvent", transaction_event(offline=1)).kind is ErrorKind.TYPE_CONSTRAINT


def test_number_fields_take_ints_and_floats_but_not_nan() -> None:
    value = {"value": 7, "measurand": "Voltage"}
    meter = [{"timestamp": "2024-03-01T11:00:00Z", "sampledValue": [value]}]
    model = parse_request(V201, "MeterValues", {"evseId": 1, "meterValue": meter})
    assert to_payload(model)["meterValue"] == [{"timestamp": "2024-03-01T11:00:00Z", "sampledValue": [value]}]
    value["value"] = float("nan")
    nan = failure(V201, "MeterValues", {"evseId": 1, "meterValue": meter})
    assert (nan.kind, nan.path) == (ErrorKind.PROPERTY_CONSTRAINT, "meterValue.0.sampledValue.0.value")


def test_explicit_null_for_an_optional_property_is_a_type_violation() -> None:
    error = failure(
        V16, "BootNotification", {"chargePointVendor": "v", "chargePointModel": "m", "iccid": None}
    )
    assert (error.kind, error.path) == (ErrorKind.TYPE_CONSTRAINT, "iccid")


def test_untyped_data_keeps_an_explicit_null() -> None:
    model = parse_request(V201, "DataTransfer", {"vendorId": "v", "data": None})
    assert to_payload(model) == {"vendorId": "v", "data": None}


def test_snake_case_keys_are_unknown_properties_on_the_wire() -> None:
    error = failure(V16, "Authorize", {"id_tag": "abc"})
    assert error.kind is ErrorKind.OCCURRENCE_CONSTRAINT  # idTag is missing, reported first
    error = failure(V16, "Authorize", {"idTag": "abc", "id_tag": "abc"})
    assert (error.kind, error.path) == (ErrorKind.FORMAT, "id_tag")


def test_an_integer_too_large_to_hold_is_a_value_error_not_an_unknown_property() -> None:
    log = {"remoteLocation": "ftp://example.com/logs"}
    error = failure(V201, "GetLog", {"requestId": 1e308, "logType": "DiagnosticsLog", "log": log})
    assert (error.kind, error.path) == (ErrorKind.PROPERTY_CONSTRAINT, "requestId")
    assert error.description == "requestId: integer out of range"


def test_an_error_without_a_mapping_keeps_its_own_description() -> None:
    # pydantic's "multiple_of" / "literal_error" and the like have no entry of ours: the field exists,
    # so the description says what is wrong with its value, never "unknown property".
    error = messages._payload_error(
        pydantic.ValidationError.from_exception_data(
            "X", [{"type": "literal_error", "loc": ("status",), "input": "x", "ctx": {"expected": "'A'"}}]
        )
    )
    assert error.path == "status"
    assert "unknown property" not in error.description
    assert error.description == "status: Input should be 'A'"


def test_payload_that_is_not_an_object_is_a_format_violation() -> None:
    payloads: list[object] = [[], "x", None, 3]
    for payload in payloads:
        error = failure(V16, "Heartbeat", payload)
        assert (error.kind, error.path) == (ErrorKind.FORMAT, "")


def test_first_failure_in_schema_order_is_reported() -> None:
    payload = transaction_event(seqNo="4", triggerReason="Nope", extra=1)
    first = failure(V201, "TransactionEvent", payload)
    assert (first.kind, first.path) == (ErrorKind.PROPERTY_CONSTRAINT, "triggerReason")
    assert failure(V201, "TransactionEvent", payload).description == first.description
    assert "triggerReason" in first.description


def test_response_parsing_uses_the_response_schema() -> None:
    model = parse_response(
        V16,
        "BootNotification",
        {"status": "Accepted", "currentTime": "2024-01-01T00:00:00Z", "interval": 300},
    )
    assert isinstance(model, v16.BootNotificationResponse)
    assert model.status is v16.BootNotificationStatusEnum.ACCEPTED
    status: str = model.status
    assert status == "Accepted"  # StrEnum: compares equal to the wire value


# -- building models in Python --------------------------------------------------------------------


def test_python_construction_uses_snake_case_and_treats_none_as_absent() -> None:
    request = v16.BootNotificationRequest(
        charge_point_vendor="ACME", charge_point_model="Wallbox", iccid=None, firmware_version="1.2"
    )
    wire = to_payload(request)
    assert wire == {"chargePointVendor": "ACME", "chargePointModel": "Wallbox", "firmwareVersion": "1.2"}
    assert json.loads(json.dumps(wire)) == wire
    assert parse_request(V16, "BootNotification", wire) == request


def test_schema_defaults_apply_but_are_not_sent() -> None:
    model = v201.TransactionEventRequest(
        event_type=v201.TransactionEventEnumType.STARTED,
        timestamp=datetime(2024, 1, 1, tzinfo=UTC),
        trigger_reason=v201.TriggerReasonEnumType.AUTHORIZED,
        seq_no=0,
        transaction_info=v201.TransactionType(transaction_id="t"),
    )
    assert model.offline is False
    assert "offline" not in to_payload(model)


def test_models_are_immutable() -> None:
    model = v16.AuthorizeRequest(id_tag="abc")
    with pytest.raises(pydantic.ValidationError):
        model.id_tag = "other"  # type: ignore[misc]


def test_constraints_apply_to_python_construction_too() -> None:
    with pytest.raises(pydantic.ValidationError):
        v16.AuthorizeRequest(id_tag="x" * 21)


def test_messages_module_exports_the_base_model() -> None:
    assert issubclass(v16.AuthorizeRequest, messages.OcppModel)


def test_nested_validation_stays_in_pydantic_core() -> None:
    # OcppModel's None-dropping __init__ is marked as pydantic's own; if a pydantic upgrade stops
    # honouring that, every nested object would be validated through Python (slow) and this fails.
    assert v201.TransactionEventRequest.__pydantic_custom_init__ is False
    assert v16.MeterValuesRequest.__pydantic_custom_init__ is False

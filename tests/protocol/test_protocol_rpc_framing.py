"""OCPP-J framing rules, one table row per rule and version (1.6 section 4; 2.0.1 part 4 section 4)."""

from __future__ import annotations

import json
import math

import pytest

from evstation.protocol.rpc import (
    Call,
    CallError,
    CallResult,
    EncodeError,
    FrameError,
    JsonObject,
    LocalProtocolError,
    decode,
    encode,
    encode_call,
    error_reply,
)
from evstation.protocol.versions import OcppVersion

V16, V201 = OcppVersion.V16, OcppVersion.V201
ID36 = "x" * 36
ID37 = "x" * 37

# (frame, version, expected code, expected message_id to answer with, expected response_id)
MALFORMED = [
    # Unreadable frames: 2.0.1 answers RpcFrameworkError with id "-1"; 1.6 has no such id and drops.
    ("not json", V201, "RpcFrameworkError", "-1", None),
    ("not json", V16, "ProtocolError", None, None),
    ('{"a": 1}', V201, "RpcFrameworkError", "-1", None),
    ('{"a": 1}', V16, "ProtocolError", None, None),
    ("[]", V201, "RpcFrameworkError", "-1", None),
    ("[]", V16, "ProtocolError", None, None),
    ("[2]", V201, "RpcFrameworkError", "-1", None),
    ('[2, 17, "Heartbeat", {}]', V201, "RpcFrameworkError", "-1", None),
    ('[2, 17, "Heartbeat", {}]', V16, "ProtocolError", None, None),
    (f'[2, "{ID37}", "Heartbeat", {{}}]', V201, "RpcFrameworkError", "-1", None),
    (f'[2, "{ID37}", "Heartbeat", {{}}]', V16, "ProtocolError", None, None),
    ('[2, "a", "Heartbeat", {"v": NaN}]', V201, "RpcFrameworkError", "-1", None),
    ("[" * 100_000, V201, "RpcFrameworkError", "-1", None),
    # A response with an unreadable id is never answered, in either version.
    ("[3, null, {}]", V201, "RpcFrameworkError", None, None),
    ('[4, null, "GenericError", "x", {}]', V201, "RpcFrameworkError", None, None),
    (f'[4, "{ID37}", "GenericError", "x", {{}}]', V201, "RpcFrameworkError", None, None),
    # Unknown MessageTypeId with a readable id: 2.0.1 MessageTypeNotSupported, 1.6 ProtocolError.
    ('[5, "a", {}]', V201, "MessageTypeNotSupported", "a", None),
    ('[5, "a", {}]', V16, "ProtocolError", "a", None),
    ('["2", "a", "Heartbeat", {}]', V201, "MessageTypeNotSupported", "a", None),
    ('[2.0, "a", "Heartbeat", {}]', V201, "MessageTypeNotSupported", "a", None),
    ('[true, "a", "Heartbeat", {}]', V201, "MessageTypeNotSupported", "a", None),
    # A CALL with the wrong element count is not a valid RPC request.
    ('[2, "a", "Heartbeat"]', V201, "RpcFrameworkError", "a", None),
    ('[2, "a", "Heartbeat"]', V16, "ProtocolError", "a", None),
    ('[2, "a", "Heartbeat", {}, {}]', V201, "RpcFrameworkError", "a", None),
    # A CALL whose action is not a string, or whose payload is not an object, is badly formed.
    ('[2, "a", 7, {}]', V201, "FormatViolation", "a", None),
    ('[2, "a", 7, {}]', V16, "FormationViolation", "a", None),
    ('[2, "a", "Heartbeat", []]', V201, "FormatViolation", "a", None),
    ('[2, "a", "Heartbeat", null]', V16, "FormationViolation", "a", None),
    # Malformed responses: never answered, but their id names the call they end.
    ('[3, "a"]', V201, "RpcFrameworkError", None, "a"),
    ('[3, "a", []]', V201, "FormatViolation", None, "a"),
    ('[3, "a", "x"]', V16, "FormationViolation", None, "a"),
    ('[4, "a", "GenericError", "x"]', V201, "RpcFrameworkError", None, "a"),
    ('[4, "a", 1, "x", {}]', V201, "FormatViolation", None, "a"),
    ('[4, "a", "GenericError", "x", []]', V16, "FormationViolation", None, "a"),
]


@pytest.mark.parametrize(("frame", "version", "code", "answer_id", "response_id"), MALFORMED)
def test_malformed_frame_gets_the_error_the_spec_names(
    frame: str, version: OcppVersion, code: str, answer_id: str | None, response_id: str | None
) -> None:
    error = decode(frame, version)

    assert isinstance(error, FrameError)
    assert (error.code, error.message_id, error.response_id) == (code, answer_id, response_id)


@pytest.mark.parametrize("version", list(OcppVersion))
def test_well_formed_frames_decode_to_their_message(version: OcppVersion) -> None:
    assert decode(f'[2,"{ID36}","Heartbeat",{{}}]', version) == Call(ID36, "Heartbeat", {})
    assert decode('[3,"a",{"currentTime":"x"}]', version) == CallResult("a", {"currentTime": "x"})
    assert decode('[4, "", "NotImplemented", "", {}]', version) == CallError("", "NotImplemented", "", {})


def test_inbound_callerror_with_an_unknown_code_keeps_the_code() -> None:
    message = decode('[4,"a","NoSuchCode","why",{"k":1}]', V201)

    assert message == CallError("a", "NoSuchCode", "why", {"k": 1})


def test_encode_is_compact_and_keeps_non_ascii() -> None:
    assert encode(Call("1", "DataTransfer", {"data": "Grüße"})) == '[2,"1","DataTransfer",{"data":"Grüße"}]'
    assert encode(CallResult("1", {})) == '[3,"1",{}]'
    assert encode(CallError("1", "GenericError", "d", {})) == '[4,"1","GenericError","d",{}]'


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_encode_refuses_to_produce_nan_or_infinity(bad: float) -> None:
    with pytest.raises(EncodeError):
        encode(CallResult("1", {"value": bad}))


def test_error_reply_answers_with_the_frame_errors_id_and_code() -> None:
    error = decode('[2, "a", 7, {}]', V201)
    assert isinstance(error, FrameError)

    assert encode(error_reply(error)) == '[4,"a","FormatViolation","action must be a string",{}]'


def test_error_reply_refuses_a_frame_that_must_be_dropped() -> None:
    error = decode("not json", V16)
    assert isinstance(error, FrameError)

    with pytest.raises(LocalProtocolError):
        error_reply(error)


def test_a_json_object_goes_into_the_call_frame_as_its_very_text() -> None:
    text = '{"seqNo":1,"ünits":"Wh","value":12.50}'  # a float spelled as stored, not as re-encoded
    frame = encode_call("id-1", "TransactionEvent", JsonObject(text))
    assert frame == '[2,"id-1","TransactionEvent",' + text + "]"
    assert decode(frame, V201) == Call("id-1", "TransactionEvent", json.loads(text))
    quoted = encode_call('a"b', "Act\\ion", JsonObject("{}"))
    assert decode(quoted, V201) == Call('a"b', "Act\\ion", {})


def test_a_json_object_reads_as_its_decoded_mapping() -> None:
    payload = JsonObject('{"a":[1,2],"b":null}')
    assert payload == {"a": [1, 2], "b": None}
    assert dict(payload) == {"a": [1, 2], "b": None}
    assert payload.get("a") == [1, 2]
    assert payload.get("z") is None and payload.get("z", 5) == 5
    assert "a" in payload and "z" not in payload
    assert len(payload) == 2
    assert payload == JsonObject('{"a":[1,2],"b":null}')
    with pytest.raises(ValueError, match="not a JSON object"):
        len(JsonObject("[1]"))
    with pytest.raises(ValueError, match="not a JSON object"):
        JsonObject('"text"').load()
    assert JsonObject('{"a":"\\ud800","b":1e400}') == {"a": "\ud800", "b": math.inf}  # as json reads it
    with pytest.raises(ValueError):
        JsonObject('{"a":NaN}').load()

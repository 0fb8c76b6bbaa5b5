"""Property tests: `decode` never raises on any input and only ever names codes its version defines."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from evstation.protocol.errors import codes_for
from evstation.protocol.rpc import (
    MAX_MESSAGE_ID_LENGTH,
    Call,
    CallError,
    CallResult,
    FrameError,
    Message,
    decode,
    encode,
)
from evstation.protocol.versions import OcppVersion

versions = st.sampled_from(list(OcppVersion))


def _json_values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[object]:
    scalars = st.none() | st.booleans() | st.integers() | floats | st.text()
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )


# NaN and Infinity included: json.dumps writes them as bare tokens, which strict JSON forbids.
json_values = _json_values(st.floats())
scalars = st.none() | st.booleans() | st.integers() | st.text()
type_ids = st.sampled_from([2, 3, 4]) | st.integers() | scalars
ids = st.text(max_size=60) | scalars
# Arrays shaped like frames (a plausible type and id up front) reach the deeper branches of decode.
frame_like = st.builds(
    lambda type_id, message_id, rest: [type_id, message_id, *rest],
    type_ids,
    ids,
    st.lists(json_values, max_size=4),
)


def _assert_well_formed(result: Message | FrameError, version: OcppVersion) -> None:
    if isinstance(result, FrameError):
        assert result.code in codes_for(version)
        assert result.message_id is None or result.response_id is None
        if result.message_id is not None:
            assert len(result.message_id) <= MAX_MESSAGE_ID_LENGTH


@given(st.text(), versions)
def test_decode_never_raises_on_arbitrary_text(text: str, version: OcppVersion) -> None:
    _assert_well_formed(decode(text, version), version)


@given(st.lists(json_values, max_size=6) | frame_like, versions)
def test_decode_never_raises_on_arbitrary_json_arrays(frame: list[object], version: OcppVersion) -> None:
    _assert_well_formed(decode(json.dumps(frame), version), version)


message_ids = st.text(max_size=MAX_MESSAGE_ID_LENGTH)
payloads = st.dictionaries(
    st.text(max_size=8), _json_values(st.floats(allow_nan=False, allow_infinity=False)), max_size=5
)
messages: st.SearchStrategy[Message] = (
    st.builds(Call, message_ids, st.text(max_size=20), payloads)
    | st.builds(CallResult, message_ids, payloads)
    | st.builds(CallError, message_ids, st.text(max_size=20), st.text(max_size=50), payloads)
)


@given(messages, versions)
def test_valid_messages_survive_an_encode_decode_round_trip(message: Message, version: OcppVersion) -> None:
    assert decode(encode(message), version) == message

"""Property tests: RpcSession answers any inbound frame with one event and only well-formed CALLERRORs."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from evstation.protocol.errors import codes_for
from evstation.protocol.messages import actions
from evstation.protocol.rpc import CallError, decode
from evstation.protocol.session import InvalidCall, RpcSession
from evstation.protocol.versions import OcppVersion

scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=3),
    max_leaves=12,
)


@st.composite
def inbound(draw: st.DrawFn) -> tuple[OcppVersion, str]:
    version = draw(st.sampled_from(list(OcppVersion)))
    action = draw(st.sampled_from(sorted(actions(version))) | st.text(max_size=12))
    payload = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=4))
    type_id = draw(st.sampled_from([2, 3, 4]) | scalars)
    shaped = [type_id, draw(st.text(max_size=40)), action, payload]
    return version, json.dumps(draw(st.just(shaped) | st.lists(json_values, max_size=5)))


@given(inbound())
def test_every_inbound_frame_becomes_one_event_and_any_reply_is_a_valid_callerror(
    case: tuple[OcppVersion, str],
) -> None:
    version, text = case
    session = RpcSession(version)
    session.start_call("ours", "Heartbeat", {})

    event = session.receive(text)

    if isinstance(event, InvalidCall):
        reply = decode(event.reply_frame, version)
        assert isinstance(reply, CallError)
        assert reply.code in codes_for(version)
        assert len(reply.description) <= 255

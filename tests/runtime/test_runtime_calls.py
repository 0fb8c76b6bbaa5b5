"""CallManager over an in-memory connection: one CALL in flight, timeouts, CSMS CALLs served meanwhile."""

from __future__ import annotations

import functools
import json

import pytest
import trio
import trio.testing
from runtime_session_harness import CSMS_TIME, CsmsPeer, Fail, MemoryConnection, NoAnswer

from evstation.protocol.errors import ErrorKind, error_code
from evstation.protocol.messages import OcppModel
from evstation.protocol.rpc import Call, CallResult, JsonObject, decode, encode
from evstation.protocol.versions import OcppVersion
from evstation.runtime.calls import (
    CallErrorReceived,
    CallManager,
    CallTimeout,
    Direction,
    Handler,
    HandlerError,
    InvalidRequest,
    MessageLogEntry,
)
from evstation.runtime.events import Broadcaster
from evstation.runtime.link import LinkDown

V16, V201 = OcppVersion.V16, OcppVersion.V201
STATUS = {"timestamp": CSMS_TIME, "connectorStatus": "Available", "evseId": 1, "connectorId": 1}
GET_VARIABLES = {
    "getVariableData": [{"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}]
}


async def _get_variables(request: OcppModel) -> dict[str, object]:
    return {
        "getVariableResult": [
            {
                "attributeStatus": "Accepted",
                "attributeValue": "300",
                "component": {"name": "OCPPCommCtrlr"},
                "variable": {"name": "HeartbeatInterval"},
            }
        ]
    }


def _manager(
    conn: MemoryConnection, handlers: dict[str, Handler] | None = None, **kwargs: object
) -> CallManager:
    return CallManager(conn, handlers or {}, timeout_s=30.0, **kwargs)  # type: ignore[arg-type]


async def test_call_returns_the_typed_response(autojump_clock: trio.testing.MockClock) -> None:
    conn, csms = MemoryConnection(V201), CsmsPeer(V201)
    calls = _manager(conn)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            response = await calls.call("Heartbeat", {})
            assert response.current_time.year == 2030  # type: ignore[attr-defined]
            nursery.cancel_scope.cancel()


async def test_on_sent_runs_once_the_frame_is_out_and_a_later_call_waits_for_the_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`on_sent` marks the frame on the connection, before the answer; a call made from then on goes
    out only after that answer (one call in flight): what the status sender's order relies on."""
    conn, csms = MemoryConnection(V201), CsmsPeer(V201, answer_delay=lambda call: 5.0)
    calls = _manager(conn)
    sent_at: list[tuple[float, int]] = []
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            sent = trio.Event()

            def on_sent() -> None:
                sent_at.append((trio.current_time(), len(csms.of("Heartbeat"))))
                sent.set()

            nursery.start_soon(functools.partial(calls.call, "Heartbeat", {}, on_sent=on_sent))
            await sent.wait()
            await calls.call("StatusNotification", STATUS)
            nursery.cancel_scope.cancel()
    ((at, heartbeats_seen),) = sent_at
    assert at == 0.0 and heartbeats_seen <= 1
    assert [s.call.action for s in csms.seen] == ["Heartbeat", "StatusNotification"]
    assert csms.of("StatusNotification")[0].at == pytest.approx(5.0)


async def test_on_answer_runs_before_a_csms_call_that_follows_the_answer_is_handled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The CSMS answers our call and sends a call of its own right behind: `on_answer` has run when
    that call's handler starts, whichever task the scheduler runs first after the answer (what keeps
    an answer's token info from outliving a ClearCache sent after it)."""
    conn = MemoryConnection(V201)
    order: list[str] = []

    async def get_variables(request: OcppModel) -> dict[str, object]:
        order.append("handler")
        return await _get_variables(request)

    calls = _manager(conn, {"GetVariables": get_variables})
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(calls.run)
            nursery.start_soon(
                functools.partial(calls.call, "Heartbeat", {}, on_answer=lambda: order.append("answer"))
            )
            ours = decode(await conn.up_receive.receive(), V201)
            assert isinstance(ours, Call)
            await conn.down_send.send(encode(CallResult(ours.message_id, {"currentTime": CSMS_TIME})))
            await conn.down_send.send(encode(Call("csms-1", "GetVariables", dict(GET_VARIABLES))))
            answer = decode(await conn.up_receive.receive(), V201)
            assert isinstance(answer, CallResult) and answer.message_id == "csms-1"
            assert order == ["answer", "handler"]
            nursery.cancel_scope.cancel()


async def test_message_timeout_raises_call_timeout_and_the_next_call_proceeds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """2.0.1 OCPPCommCtrlr.MessageTimeout: an unanswered CALL ends after the timeout, not later."""
    conn, csms = MemoryConnection(V201), CsmsPeer(V201).then("Heartbeat", NoAnswer())
    calls = _manager(conn)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            start = trio.current_time()
            with pytest.raises(CallTimeout):
                await calls.call("Heartbeat", {})
            assert trio.current_time() - start == pytest.approx(30.0)
            await calls.call("Heartbeat", {})
            assert len(csms.of("Heartbeat")) == 2
            nursery.cancel_scope.cancel()


async def test_csms_call_is_answered_while_our_call_is_pending(
    autojump_clock: trio.testing.MockClock,
) -> None:
    conn, csms = MemoryConnection(V201), CsmsPeer(V201).then("Heartbeat", NoAnswer())
    calls = _manager(conn, {"GetVariables": _get_variables})
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            nursery.start_soon(calls.call, "Heartbeat", {})
            await csms.wait_for("Heartbeat")
            message_id = await csms.send_call(conn, "GetVariables", GET_VARIABLES)
            answer = await csms.wait_answer(message_id)
            assert answer.payload["getVariableResult"][0]["attributeValue"] == "300"  # type: ignore[union-attr,index]
            # The answer came while our Heartbeat was still waiting for its own.
            assert trio.current_time() < csms.of("Heartbeat")[0].at + 30.0
            nursery.cancel_scope.cancel()


async def test_callresult_for_an_unknown_id_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    conn, csms = MemoryConnection(V201), CsmsPeer(V201)
    calls = _manager(conn)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            await conn.down_send.send(json.dumps([3, "not-ours", {"currentTime": CSMS_TIME}]))
            response = await calls.call("Heartbeat", {})
            assert response is not None
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("handlers", "expected_code"),
    [
        ({}, "NotSupported"),  # Reset is a 2.0.1 action: known, not served
        # 2.0.1 spells it "OccurenceConstraintViolation" (sic); error_code knows.
        ({"Reset": "refuse"}, error_code(ErrorKind.OCCURRENCE_CONSTRAINT, V201)),
        ({"Reset": "bug"}, "InternalError"),
    ],
)
async def test_inbound_call_errors(
    autojump_clock: trio.testing.MockClock, handlers: dict[str, str], expected_code: str
) -> None:
    """No handler -> NotSupported; HandlerError -> its kind; any other exception -> InternalError."""

    async def refuse(request: OcppModel) -> dict[str, object]:
        raise HandlerError(ErrorKind.OCCURRENCE_CONSTRAINT, "no such EVSE")

    async def bug(request: OcppModel) -> dict[str, object]:
        raise ZeroDivisionError

    table: dict[str, Handler] = {"refuse": refuse, "bug": bug}
    conn, csms = MemoryConnection(V201), CsmsPeer(V201)
    calls = _manager(conn, {action: table[name] for action, name in handlers.items()})
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            message_id = await csms.send_call(conn, "Reset", {"type": "Immediate", "evseId": 9})
            answer = await csms.wait_answer(message_id)
            assert answer.code == expected_code  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("version", "payload"), [(V16, {"type": "Hard"}), (V201, {"type": "Immediate"})])
async def test_an_action_the_version_defines_but_nobody_serves_is_not_supported(
    autojump_clock: trio.testing.MockClock, version: OcppVersion, payload: dict[str, object]
) -> None:
    """Both versions define Reset: with no handler it is recognised but not supported (1.6 and 2.0.1
    RPC error codes), never NotImplemented, which is kept for an action the version lacks."""
    conn, csms = MemoryConnection(version), CsmsPeer(version)
    calls = _manager(conn)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            unserved = await csms.send_call(conn, "Reset", payload)
            answer = await csms.wait_answer(unserved)
            assert answer.code == "NotSupported"  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("version", [V16, V201])
async def test_an_action_the_version_does_not_define_is_not_implemented(
    autojump_clock: trio.testing.MockClock, version: OcppVersion
) -> None:
    conn, csms = MemoryConnection(version), CsmsPeer(version)
    calls = _manager(conn)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            unknown = await csms.send_call(conn, "BrewCoffee", {})
            answer = await csms.wait_answer(unknown)
            assert answer.code == "NotImplemented"  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


async def test_callerror_answer_raises_call_error_received(autojump_clock: trio.testing.MockClock) -> None:
    conn, csms = (
        MemoryConnection(OcppVersion.V16),
        CsmsPeer(OcppVersion.V16).then("Heartbeat", Fail("NotSupported")),
    )
    calls = _manager(conn)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            with pytest.raises(CallErrorReceived) as caught:
                await calls.call("Heartbeat", {})
            assert caught.value.code == "NotSupported"
            nursery.cancel_scope.cancel()


async def test_every_frame_is_published_to_the_message_log(autojump_clock: trio.testing.MockClock) -> None:
    conn, csms = MemoryConnection(V201), CsmsPeer(V201)
    log: Broadcaster[MessageLogEntry] = Broadcaster()
    calls = _manager(conn, {"GetVariables": _get_variables}, message_log=log)
    with log.subscribe() as entries, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            await calls.call("Heartbeat", {})
            message_id = await csms.send_call(conn, "GetVariables", GET_VARIABLES)
            await csms.wait_answer(message_id)
            nursery.cancel_scope.cancel()
        seen = [(e.direction, e.action) for e in [entries.receive_nowait() for _ in range(4)]]  # type: ignore[union-attr]
        assert seen == [
            (Direction.OUT, "Heartbeat"),
            (Direction.IN, "Heartbeat"),
            (Direction.IN, "GetVariables"),
            (Direction.OUT, "GetVariables"),
        ]


async def test_a_stored_json_payload_is_validated_and_sent_as_its_very_text(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """docs/storage.md: a replayed outbox entry is validated as its stored text and sent as that text."""
    conn, csms = MemoryConnection(V201), CsmsPeer(V201)
    log: Broadcaster[MessageLogEntry] = Broadcaster()
    calls = _manager(conn, message_log=log)
    text = '{"connectorStatus":"Available","connectorId":1,"evseId":1,"timestamp":"2030-01-01T00:00:00.0Z"}'
    with log.subscribe() as entries, trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            await calls.call("StatusNotification", JsonObject(text))
            with pytest.raises(InvalidRequest):
                await calls.call("StatusNotification", JsonObject(text.replace("Available", "Plugged")))
            nursery.cancel_scope.cancel()
        sent = entries.receive_nowait()
        assert isinstance(sent, MessageLogEntry)
        assert sent.frame.endswith(f',"StatusNotification",{text}]')
        assert csms.actions() == ["StatusNotification"]


async def test_validating_ahead_never_lets_another_or_an_invalid_text_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """validate_ahead (the outbox sender's next message, judged while the current one awaits its
    answer) spares only the very text it found valid, for that action, once."""
    conn, csms = MemoryConnection(V201), CsmsPeer(V201)
    calls = _manager(conn)
    valid = '{"connectorStatus":"Available","connectorId":1,"evseId":1,"timestamp":"2030-01-01T00:00:00Z"}'
    invalid = valid.replace("Available", "Plugged")
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            calls.validate_ahead("StatusNotification", JsonObject(invalid))  # not valid: not spared
            with pytest.raises(InvalidRequest):
                await calls.call("StatusNotification", JsonObject(invalid))
            calls.validate_ahead("StatusNotification", JsonObject(valid))  # another text comes instead
            with pytest.raises(InvalidRequest):
                await calls.call("StatusNotification", JsonObject(invalid))
            calls.validate_ahead("StatusNotification", JsonObject(valid))  # another action comes instead
            with pytest.raises(InvalidRequest):
                await calls.call("Heartbeat", JsonObject(valid))
            calls.validate_ahead("StatusNotification", JsonObject(valid))
            await calls.call("StatusNotification", JsonObject(valid))
            nursery.cancel_scope.cancel()
    assert csms.actions() == ["StatusNotification"]


@pytest.mark.parametrize(
    ("action", "payload"),
    [
        ("StatusNotification", {"evseId": 1, "connectorId": 1, "connectorStatus": "Plugged"}),  # no such enum
        ("Heartbeat", {"extra": 1}),  # additional property
        ("Authorize", {"idToken": {"idToken": "x" * 37, "type": "ISO14443"}}),  # too long
        ("NoSuchAction", {}),
    ],
)
async def test_a_hand_built_dict_payload_is_validated_and_never_sent_when_invalid(
    autojump_clock: trio.testing.MockClock, action: str, payload: dict[str, object]
) -> None:
    conn, csms = MemoryConnection(V201), CsmsPeer(V201)
    calls = _manager(conn)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            with pytest.raises(InvalidRequest):
                await calls.call(action, payload)
            # Nothing went out, and the next (valid) call is not blocked by the refused one.
            await calls.call("Heartbeat", {})
            assert csms.actions() == ["Heartbeat"]
            nursery.cancel_scope.cancel()


async def test_a_model_of_another_action_is_refused(autojump_clock: trio.testing.MockClock) -> None:
    from evstation.protocol.messages import parse_request

    conn = MemoryConnection(V201)
    calls = _manager(conn)
    wrong = parse_request(V201, "Heartbeat", {})
    with pytest.raises(InvalidRequest):
        await calls.call("ClearCache", wrong)


async def test_a_handler_returning_an_invalid_dict_is_answered_internal_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def bad_reset(request: OcppModel) -> dict[str, object]:
        return {"status": "Maybe"}

    conn, csms = MemoryConnection(V201), CsmsPeer(V201)
    calls = _manager(conn, {"Reset": bad_reset})
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            message_id = await csms.send_call(conn, "Reset", {"type": "Immediate"})
            answer = await csms.wait_answer(message_id)
            assert answer.code == "InternalError"  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()


async def test_a_call_outside_the_connection_learns_of_its_loss_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An Authorize waiting when the connection drops ends with LinkDown now, not after the message
    timeout; a call on the dead manager fails at once too."""
    conn, csms = MemoryConnection(V201), CsmsPeer(V201).then("Heartbeat", NoAnswer())
    calls = _manager(conn)
    with trio.fail_after(5):
        async with trio.open_nursery() as outside:

            async def connection() -> None:
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(csms.serve, conn)
                        await nursery.start(calls.run)
                except* LinkDown:
                    pass

            async def drop() -> None:
                await csms.wait_for("Heartbeat")
                conn.close()

            outside.start_soon(connection)
            outside.start_soon(drop)
            start = trio.current_time()
            with pytest.raises(LinkDown):
                await calls.call("Heartbeat", {})
            assert trio.current_time() - start < 1.0
            with pytest.raises(LinkDown):
                await calls.call("Heartbeat", {})
            outside.cancel_scope.cancel()


class _DropsAfterTheAnswer(MemoryConnection):
    """A ping of ours still awaits its pong, and the connection drops right behind the CSMS's answer:
    the reader, asking for the next frame after the answer, finds it gone (`dropped` cancelled)."""

    def __init__(self, version: OcppVersion, dropped: trio.CancelScope) -> None:
        super().__init__(version)
        self._dropped = dropped
        self._answered = False

    async def responsive(self) -> bool:
        await trio.sleep_forever()  # the pong is still on its way
        raise AssertionError("unreachable")

    async def receive_text(self) -> str:
        if self._answered:
            self._dropped.cancel()
        text = await super().receive_text()
        self._answered = text.startswith("[3")
        return text


async def test_an_answer_that_arrives_while_the_probe_awaits_its_pong_is_returned_though_the_link_drops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An answer 6 s late (the probe's ping went out at 5 s, no pong yet) and the connection lost right
    after it: the call returns the answer. The CSMS processed the message; failing the call would send
    it again after the reconnect (for a 1.6 StartTransaction: a second transaction at the CSMS). Before,
    ending the probe was a checkpoint at which the drop's cancellation discarded the answer."""
    dropped = trio.CancelScope()
    conn = _DropsAfterTheAnswer(V201, dropped)
    csms = CsmsPeer(V201, answer_delay=lambda call: 6.0)
    calls = _manager(conn)
    answers: list[OcppModel] = []
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            with dropped:
                answers.append(await calls.call("Heartbeat", {}))
            nursery.cancel_scope.cancel()
    assert dropped.cancel_called
    assert len(answers) == 1


async def test_a_connection_lost_while_the_probe_awaits_its_pong_ends_the_call_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No answer, the probe's ping out at 5 s, and the connection lost at 6 s: the waiting call ends
    then, not when the probe would give up (the probe is shielded only from the outside: it ends with
    the call however the call ends)."""
    dropped = trio.CancelScope()
    conn = _DropsAfterTheAnswer(V201, trio.CancelScope())
    csms = CsmsPeer(V201).then("Heartbeat", NoAnswer())
    calls = _manager(conn)
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            await nursery.start(calls.run)
            start = trio.current_time()
            with dropped:
                dropped.deadline = start + 6
                await calls.call("Heartbeat", {})
            assert dropped.cancelled_caught
            assert trio.current_time() - start == pytest.approx(6.0)
            nursery.cancel_scope.cancel()

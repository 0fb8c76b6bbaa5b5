"""A sans-IO OCPP-J session: frames in, typed events out; our one CALL in flight; CALLERRORs to send back.

Never does I/O, never reads a clock (timeouts belong to the runtime, which calls `cancel_call`), and
never raises on peer input: every inbound frame becomes exactly one `RpcEvent`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, final

from evstation.protocol.errors import ErrorKind, error_code
from evstation.protocol.messages import (
    OcppModel,
    PayloadError,
    UnknownAction,
    actions,
    receive_request,
    receive_response,
    to_payload,
)
from evstation.protocol.rpc import (
    Call,
    CallError,
    CallResult,
    FrameError,
    JsonObject,
    LocalProtocolError,
    decode,
    encode,
    encode_call,
    error_reply,
    is_valid_message_id,
)
from evstation.protocol.versions import OcppVersion
from evstation.records import record

__all__ = [
    "CallReceived",
    "Dropped",
    "ErrorReceived",
    "InvalidCall",
    "InvalidResult",
    "ResultReceived",
    "RpcEvent",
    "RpcSession",
    "Unmatched",
    "error_frame",
    "result_frame",
]

# 2.0.1 part 4 section 4.2.3 limits errorDescription to 255 characters; 1.6 sets no limit, so one
# rule for both keeps our CALLERRORs valid everywhere.
MAX_ERROR_DESCRIPTION: Final = 255


@final
@record
class CallReceived:
    """The peer sent a valid CALL: handle `request`, then answer `call.message_id` with a result/error."""

    call: Call
    request: OcppModel
    # Date-times the peer sent without a UTC offset, taken as UTC (wire paths); log them.
    naive_datetimes: tuple[str, ...] = ()


@final
@record
class InvalidCall:
    """The peer sent a CALL (or a frame we can answer) that we refuse: send `reply_frame` as is."""

    message_id: str
    reply_frame: str
    reason: str


@final
@record
class ResultReceived:
    """Our in-flight call got a valid CALLRESULT; the session is free for the next call."""

    message_id: str
    action: str
    response: OcppModel
    # Date-times the peer sent without a UTC offset, taken as UTC (wire paths); log them.
    naive_datetimes: tuple[str, ...] = ()


@final
@record
class InvalidResult:
    """Our in-flight call got an answer we cannot accept (bad payload, malformed frame). It is over."""

    message_id: str
    action: str
    code: str
    description: str


@final
@record
class ErrorReceived:
    """Our in-flight call got a CALLERROR; the session is free for the next call."""

    message_id: str
    action: str
    error: CallError


@final
@record
class Unmatched:
    """A CALLRESULT/CALLERROR for no call of ours in flight (late, duplicate, or bogus): log and drop."""

    frame: str
    reason: str


@final
@record
class Dropped:
    """A frame with nothing the spec lets us answer (1.6 unreadable frame, bad response id): log it."""

    frame: str
    reason: str


RpcEvent = CallReceived | InvalidCall | ResultReceived | InvalidResult | ErrorReceived | Unmatched | Dropped


@final
class RpcSession:
    """One side of one OCPP-J connection, for one version.

    It holds the single CALL of ours in flight (OCPP allows one at a time) and classifies every inbound
    frame into an `RpcEvent`. The peer's CALLs are delivered whether or not ours is pending; answering
    them is the caller's job (`result_frame` / `error_frame`), and needs no session state.
    """

    __slots__ = ("_in_flight", "version")

    def __init__(self, version: OcppVersion) -> None:
        self.version: Final = version
        self._in_flight: tuple[str, str] | None = None

    @property
    def in_flight(self) -> tuple[str, str] | None:
        """`(message_id, action)` of our call awaiting an answer, or None."""
        return self._in_flight

    def start_call(self, message_id: str, action: str, payload: OcppModel | Mapping[str, object]) -> str:
        """Record our CALL as in flight and return its frame text, to be sent as is.

        Raises:
            LocalProtocolError: a call is already in flight, the id is not a string of at most 36
                characters, or the version has no such action.
            EncodeError: the payload holds NaN/Infinity (a subclass of LocalProtocolError).
        """
        if self._in_flight is not None:
            raise LocalProtocolError(
                f"call {self._in_flight[0]!r} ({self._in_flight[1]}) is still in flight; OCPP allows one"
            )
        if not is_valid_message_id(message_id):
            raise LocalProtocolError(f"message id must be a string of at most 36 characters: {message_id!r}")
        if action not in actions(self.version):
            raise LocalProtocolError(f"OCPP {self.version.value} has no action {action!r}")
        if isinstance(payload, JsonObject):
            frame = encode_call(message_id, action, payload)  # a stored message, sent as its text
        else:
            frame = encode(Call(message_id, action, _wire(payload)))
        self._in_flight = (message_id, action)
        return frame

    def cancel_call(self) -> None:
        """Forget our in-flight call (it timed out, or the connection is gone). Idempotent.

        A late answer to it will then come back as `Unmatched`.
        """
        self._in_flight = None

    def receive(self, text: str) -> RpcEvent:
        """Classify one inbound text frame. Never raises on peer input.

        A CALLRESULT or CALLERROR (even a malformed one) whose id matches our in-flight call ends it.
        """
        message = decode(text, self.version)
        if isinstance(message, Call):
            return self._receive_call(message)
        if isinstance(message, FrameError):
            return self._receive_frame_error(text, message)
        in_flight = self._in_flight
        if in_flight is None or in_flight[0] != message.message_id:
            return Unmatched(text, f"no call of ours in flight with id {message.message_id!r}")
        self._in_flight = None
        message_id, action = in_flight
        if isinstance(message, CallError):
            return ErrorReceived(message_id, action, message)
        try:
            received = receive_response(self.version, action, message.payload)
        except PayloadError as exc:
            return InvalidResult(
                message_id, action, error_code(exc.kind, self.version), _describe(exc.path, exc.description)
            )
        return ResultReceived(message_id, action, received.model, received.naive_datetimes)

    def _receive_call(self, call: Call) -> CallReceived | InvalidCall:
        try:
            received = receive_request(self.version, call.action, call.payload)
        except UnknownAction:
            reason = f"OCPP {self.version.value} has no action {call.action!r}"
            return self._refuse(call.message_id, ErrorKind.NOT_IMPLEMENTED, reason)
        except PayloadError as exc:
            return self._refuse(call.message_id, exc.kind, _describe(exc.path, exc.description))
        return CallReceived(call, received.model, received.naive_datetimes)

    def _refuse(self, message_id: str, kind: ErrorKind, reason: str) -> InvalidCall:
        return InvalidCall(message_id, error_frame(self.version, message_id, kind, reason), reason)

    def _receive_frame_error(self, text: str, error: FrameError) -> RpcEvent:
        if error.message_id is not None:
            return InvalidCall(error.message_id, encode(error_reply(error)), error.description)
        in_flight = self._in_flight
        if error.response_id is None:
            return Dropped(text, error.description)
        if in_flight is None or in_flight[0] != error.response_id:
            return Unmatched(text, f"malformed answer for no call of ours in flight: {error.description}")
        self._in_flight = None
        return InvalidResult(in_flight[0], in_flight[1], error.code, error.description)


def _wire(payload: OcppModel | Mapping[str, object]) -> dict[str, object]:
    return to_payload(payload) if isinstance(payload, OcppModel) else dict(payload)


def _describe(path: str, description: str) -> str:
    # The field path must reach the peer; messages.py may already lead with it.
    if not path or description.startswith(path):
        return description
    return f"{path}: {description}"


def result_frame(message_id: str, response: OcppModel | Mapping[str, object]) -> str:
    """The CALLRESULT frame answering the peer's call `message_id` with `response`.

    Raises:
        EncodeError: the payload holds NaN/Infinity.
    """
    return encode(CallResult(message_id, _wire(response)))


def error_frame(
    version: OcppVersion,
    message_id: str,
    kind: ErrorKind,
    description: str,
    details: dict[str, object] | None = None,
) -> str:
    """The CALLERROR frame answering the peer's call `message_id`, spelled for `version`.

    The description is cut to 255 characters; `details` defaults to `{}` (the spec wants an empty
    object, never null, when there are none).
    """
    code = error_code(kind, version)
    return encode(CallError(message_id, code, description[:MAX_ERROR_DESCRIPTION], details or {}))

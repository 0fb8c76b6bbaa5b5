"""OCPP-J framing: one websocket text frame <-> one Call / CallResult / CallError, per version's rules.

Pure and synchronous: no I/O, no clock, no payload schemas (protocol/messages.py does those). Never
raises on peer input: `decode` turns every malformed frame into a `FrameError` value.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Final, NoReturn, final

from pydantic_core import from_json

from evstation.protocol.errors import ErrorKind, error_code
from evstation.protocol.versions import OcppVersion
from evstation.records import record

__all__ = [
    "CALL",
    "CALLERROR",
    "CALLRESULT",
    "MAX_MESSAGE_ID_LENGTH",
    "UNREADABLE_ID",
    "Call",
    "CallError",
    "CallResult",
    "EncodeError",
    "FrameError",
    "JsonObject",
    "LocalProtocolError",
    "Message",
    "decode",
    "encode",
    "encode_call",
    "error_reply",
    "is_valid_message_id",
]

CALL: Final = 2
CALLRESULT: Final = 3
CALLERROR: Final = 4

# OCPP-J 1.6 section 4.1.4 / 2.0.1 part 4 section 4.1.4: "maximum of 36 characters, to allow for GUIDs".
MAX_MESSAGE_ID_LENGTH: Final = 36
# 2.0.1 part 4 section 4.2.3: a CALLERROR for a CALL whose message id could not be read carries "-1".
UNREADABLE_ID: Final = "-1"


class LocalProtocolError(Exception):
    """We (not the peer) broke an OCPP-J rule: a bug in the caller, never bad peer input."""


class EncodeError(LocalProtocolError):
    """A message could not become strict JSON (NaN, Infinity or a circular structure in it)."""


@final
@record
class Call:
    """`[2, "<messageId>", "<action>", {payload}]`: a request."""

    message_id: str
    action: str
    payload: dict[str, object]


@final
@record
class CallResult:
    """`[3, "<messageId>", {payload}]`: the answer to the Call with the same id."""

    message_id: str
    payload: dict[str, object]


@final
@record
class CallError:
    """`[4, "<messageId>", "<errorCode>", "<errorDescription>", {errorDetails}]`.

    An inbound CallError keeps whatever code string the peer sent, even one its version does not define.
    """

    message_id: str
    code: str
    description: str
    details: dict[str, object]


@final
@record
class FrameError:
    """A frame that breaks the OCPP-J framing rules. What to do with it:

    - `message_id` is not None: answer with `error_reply(error)` (a CALLERROR with `code`); for an
      unreadable 2.0.1 frame this is "-1", as the spec asks.
    - `message_id` is None: drop it and log it; there is nothing the spec lets us answer.
    - `response_id` is set for a malformed CALLRESULT/CALLERROR whose id could be read. Such a frame is
      never answered (a CALLERROR only answers a CALL), but the id says which of our calls it ended.

    `code` is always one of `codes_for(version)`.
    """

    code: str
    description: str
    message_id: str | None
    response_id: str | None = None


Message = Call | CallResult | CallError


@final
class JsonObject(Mapping[str, object]):
    """A payload kept as the compact JSON text of an object (a stored message), decoded on first read.

    `encode_call` writes `text` into the frame as it is, and `protocol.messages` validates `text` itself:
    the bytes that were validated are the bytes sent, whatever a reader does with the decoded values
    (and a replayed message is never decoded and encoded again just to be sent). `text` must be strict
    JSON (no NaN or Infinity) of one object: a validator refuses anything else before it is sent.
    """

    __slots__ = ("_items", "text")

    def __init__(self, text: str) -> None:
        self.text: Final = text
        self._items: dict[str, object] | None = None

    def load(self) -> None:
        """Decode now rather than on the first read (e.g. while waiting for something else anyway).

        Raises:
            ValueError: the text is not JSON, or not of an object.
        """
        self._decoded()

    def _decoded(self) -> dict[str, object]:
        items = self._items
        if items is None:
            try:
                # pydantic-core's parser (the one that validated the text): twice as fast as json's.
                decoded = from_json(self.text, allow_inf_nan=False)
            except ValueError:
                # The standard decoder reads what that one refuses (an escaped lone surrogate) and
                # refuses NaN alike.
                decoded = _DECODER.decode(self.text)
            if type(decoded) is not dict:
                raise ValueError("JsonObject text is not a JSON object")
            items = self._items = decoded
        return items

    def __getitem__(self, key: str) -> object:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    # Mapping's own get and __contains__ go through __getitem__ and a KeyError: these are read on
    # every delivered message.
    def get(self, key: str, default: object = None) -> object:
        return self._decoded().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._decoded()

    def __len__(self) -> int:
        return len(self._decoded())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, JsonObject) and other.text == self.text:
            return True
        return Mapping.__eq__(self, other)

    __hash__ = None  # type: ignore[assignment]  # equal to a dict, so unhashable like one

    def __repr__(self) -> str:
        return f"JsonObject({self.text!r})"


def is_valid_message_id(value: object) -> bool:
    """True for a string of at most 36 characters, the only message ids OCPP-J allows."""
    return type(value) is str and len(value) <= MAX_MESSAGE_ID_LENGTH


def _reject_constant(name: str) -> NoReturn:
    # json accepts NaN/Infinity/-Infinity by default; RFC 8259 (and so OCPP-J) does not.
    raise ValueError(f"{name} is not JSON")


# Built once: json.loads/json.dumps with non-default options build a new codec object on every call.
_DECODER: Final = json.JSONDecoder(parse_constant=_reject_constant)
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def decode(frame_text: str, version: OcppVersion) -> Message | FrameError:
    """Classify one inbound text frame. Never raises on any `str`.

    Per-version answers to malformed frames (docs/protocol.md has the full table):
    unreadable (not JSON, not a non-empty array, bad message id) -> 2.0.1 RpcFrameworkError with id
    "-1", 1.6 dropped; unknown MessageTypeId -> MessageTypeNotSupported (1.6: ProtocolError);
    wrong element count -> RpcFrameworkError (1.6: ProtocolError); action not a string or payload
    not an object -> FormatViolation (1.6: FormationViolation).
    """
    try:
        frame = _DECODER.decode(frame_text)
    except (ValueError, RecursionError):
        # ValueError covers JSONDecodeError, NaN/Infinity and over-long integers; RecursionError covers
        # absurdly deep nesting, which the C scanner reports that way.
        return _unreadable(version, "frame is not valid JSON")
    if type(frame) is not list or not frame:
        return _unreadable(version, "frame is not a non-empty JSON array")
    count = len(frame)
    type_id = frame[0]
    is_response = type(type_id) is int and type_id in (CALLRESULT, CALLERROR)
    message_id = frame[1] if count > 1 else None
    if type(message_id) is not str or len(message_id) > MAX_MESSAGE_ID_LENGTH:
        reason = "message id must be a string of at most 36 characters"
        if is_response:
            return FrameError(error_code(ErrorKind.RPC_FRAMEWORK, version), reason, None)
        return _unreadable(version, reason)

    if type(type_id) is not int:
        return _unsupported_type(version, message_id)
    if type_id == CALL:
        if count != 4:
            return _bad_count(version, message_id, "CALL", 4, count)
        action, payload = frame[2], frame[3]
        if type(action) is not str:
            return FrameError(error_code(ErrorKind.FORMAT, version), "action must be a string", message_id)
        if type(payload) is not dict:
            return FrameError(error_code(ErrorKind.FORMAT, version), "payload must be an object", message_id)
        return Call(message_id, action, payload)
    if type_id == CALLRESULT:
        if count != 3:
            return _bad_count(version, message_id, "CALLRESULT", 3, count)
        payload = frame[2]
        if type(payload) is not dict:
            return FrameError(
                error_code(ErrorKind.FORMAT, version), "payload must be an object", None, message_id
            )
        return CallResult(message_id, payload)
    if type_id == CALLERROR:
        if count != 5:
            return _bad_count(version, message_id, "CALLERROR", 5, count)
        code, description, details = frame[2], frame[3], frame[4]
        if type(code) is not str or type(description) is not str or type(details) is not dict:
            return FrameError(
                error_code(ErrorKind.FORMAT, version),
                "CALLERROR needs a string code, a string description and an object of details",
                None,
                message_id,
            )
        return CallError(message_id, code, description, details)
    return _unsupported_type(version, message_id)


def _unreadable(version: OcppVersion, reason: str) -> FrameError:
    if version is OcppVersion.V201:
        return FrameError(error_code(ErrorKind.RPC_FRAMEWORK, version), reason, UNREADABLE_ID)
    # OCPP-J 1.6 has no "-1" convention: with no id to answer to, the frame can only be dropped.
    return FrameError(error_code(ErrorKind.RPC_FRAMEWORK, version), reason, None)


def _unsupported_type(version: OcppVersion, message_id: str) -> FrameError:
    return FrameError(
        error_code(ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED, version),
        "MessageTypeId must be 2 (CALL), 3 (CALLRESULT) or 4 (CALLERROR)",
        message_id,
    )


def _bad_count(version: OcppVersion, message_id: str, name: str, expected: int, got: int) -> FrameError:
    description = f"{name} must have {expected} elements, not {got}"
    code = error_code(ErrorKind.RPC_FRAMEWORK, version)
    if name == "CALL":
        return FrameError(code, description, message_id)
    return FrameError(code, description, None, message_id)


def encode(message: Message) -> str:
    """The compact JSON text frame for `message`.

    Raises:
        EncodeError: the payload or details hold NaN, +/-Infinity or a reference cycle.
        TypeError: they hold something JSON has no form for (a bug in the caller).
    """
    frame: list[object]
    if isinstance(message, Call):
        frame = [CALL, message.message_id, message.action, message.payload]
    elif isinstance(message, CallResult):
        frame = [CALLRESULT, message.message_id, message.payload]
    else:
        frame = [CALLERROR, message.message_id, message.code, message.description, message.details]
    try:
        return _ENCODER.encode(frame)
    except ValueError as exc:
        raise EncodeError(f"message {message.message_id!r} is not strict JSON: {exc}") from exc


def encode_call(message_id: str, action: str, payload: JsonObject) -> str:
    """The CALL frame for a payload held as JSON text: the text is spliced in as it is, never decoded
    and encoded again (it is what was validated, and what is sent)."""
    head = _ENCODER.encode([CALL, message_id, action])
    return f"{head[:-1]},{payload.text}]"


def error_reply(error: FrameError) -> CallError:
    """The CALLERROR that answers an answerable `FrameError` (one with a `message_id`).

    Raises:
        LocalProtocolError: `error.message_id` is None; such a frame must be dropped, not answered.
    """
    if error.message_id is None:
        raise LocalProtocolError(f"frame error {error.code!r} has no message id to answer: drop it")
    return CallError(error.message_id, error.code, error.description, {})

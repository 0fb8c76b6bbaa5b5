"""Typed OCPP payloads for any version: look up, validate and serialise message models by action.

A version's models are imported on first use only, so a 1.6 station never builds the 2.0.1 ones.
Validation failures become PayloadError with the OCPP-J error kind; nothing here does I/O.
"""

from __future__ import annotations

import copy
import enum
import functools
import importlib
import re
from collections.abc import Mapping
from types import ModuleType
from typing import Any, Final, final

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from evstation.protocol._base import DATETIME_ERROR, DATETIME_RANGE_ERROR, OcppModel
from evstation.protocol.errors import ErrorKind
from evstation.protocol.rpc import JsonObject
from evstation.protocol.versions import OcppVersion
from evstation.records import record

__all__ = [
    "OcppModel",
    "PayloadError",
    "Received",
    "UnknownAction",
    "VersionModels",
    "actions",
    "enum_text",
    "parse_request",
    "parse_response",
    "receive_request",
    "receive_response",
    "request_model",
    "response_model",
    "to_payload",
]

_PACKAGES: Final[Mapping[OcppVersion, str]] = {
    OcppVersion.V16: "evstation.protocol.v16",
    OcppVersion.V201: "evstation.protocol.v201",
}

Registry = Mapping[str, tuple[type[OcppModel], type[OcppModel]]]


class PayloadError(Exception):
    """A payload that does not match its schema.

    `kind` is the OCPP-J error to answer with, `path` the failing property in wire spelling
    (e.g. "meterValue.0.sampledValue.2.value"; "" for the payload itself).
    """

    def __init__(self, kind: ErrorKind, path: str, description: str) -> None:
        super().__init__(description)
        self.kind = kind
        self.path = path
        self.description = description


class UnknownAction(Exception):
    """The version defines no message with this action name."""

    def __init__(self, action: str) -> None:
        super().__init__(f"unknown action {action!r}")
        self.action = action


@functools.cache
def _registry(version: OcppVersion) -> Registry:
    # functools.cache only memoises the import (sys.modules holds the module anyway).
    module = importlib.import_module(_PACKAGES[version])
    registry: Registry = module.ACTIONS
    return registry


class VersionModels:
    """A version's generated models module, imported on first attribute access.

    Modules that serve both versions bind `v16 = VersionModels(OcppVersion.V16)` at run time (and the
    real module under TYPE_CHECKING), so a 1.6 station never imports the 2.0.1 models and vice versa.
    """

    __slots__ = ("_loaded", "_version")

    def __init__(self, version: OcppVersion) -> None:
        self._version = version
        # Set on the first attribute read (import_module on every read costs a few µs per message).
        self._loaded: ModuleType | None = None

    def _module(self) -> ModuleType:
        module = self._loaded
        if module is None:
            module = self._loaded = importlib.import_module(f"{_PACKAGES[self._version]}.messages")
        return module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module(), name)


def enum_text(value: object) -> str:
    """A model field that may be an Enum or a plain string, as its wire text."""
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


@functools.cache
def actions(version: OcppVersion) -> frozenset[str]:
    """Every action name the version defines (1.6 includes the security-whitepaper messages)."""
    return frozenset(_registry(version))


def _models(version: OcppVersion, action: str) -> tuple[type[OcppModel], type[OcppModel]]:
    try:
        return _registry(version)[action]
    except KeyError:
        raise UnknownAction(action) from None


def request_model(version: OcppVersion, action: str) -> type[OcppModel]:
    """The model of `action`'s request payload; raises UnknownAction."""
    return _models(version, action)[0]


def response_model(version: OcppVersion, action: str) -> type[OcppModel]:
    """The model of `action`'s response payload; raises UnknownAction."""
    return _models(version, action)[1]


def parse_request(version: OcppVersion, action: str, payload: object) -> OcppModel:
    """Validate a decoded CALL payload; raises UnknownAction or PayloadError."""
    return _parse(_models(version, action)[0], payload)


def parse_response(version: OcppVersion, action: str, payload: object) -> OcppModel:
    """Validate a decoded CALLRESULT payload; raises UnknownAction or PayloadError."""
    return _parse(_models(version, action)[1], payload)


@final
@record
class Received:
    """A payload the peer sent, validated with the one tolerance we extend to peers (see below)."""

    model: OcppModel
    # Wire paths of date-times that came without a UTC offset and were taken as UTC, e.g.
    # ("currentTime",); empty for a payload that met the schema as it is.
    naive_datetimes: tuple[str, ...] = ()


def receive_request(version: OcppVersion, action: str, payload: object) -> Received:
    """Validate a CALL payload the peer sent; like `parse_request`, but a date-time without an offset
    ("2026-01-01T00:00:00") is taken as UTC instead of refused. Raises UnknownAction or PayloadError."""
    return _receive(_models(version, action)[0], payload)


def receive_response(version: OcppVersion, action: str, payload: object) -> Received:
    """Validate a CALLRESULT payload the peer sent, with the tolerance of `receive_request`."""
    return _receive(_models(version, action)[1], payload)


def _validate(model: type[OcppModel], payload: object) -> OcppModel:
    # Wire names only: a snake_case key in a payload is an unknown property, not an alias.
    # The validator is called directly: model_validate's Python wrapper costs about 1 µs a call.
    validator = model.__pydantic_validator__
    if isinstance(payload, JsonObject):
        # The text itself, the very bytes `rpc.encode` sends; JSON mode judges a JSON text exactly as
        # Python mode judges its decoded values (tests/protocol/test_protocol_models_mutations.py).
        validated: OcppModel = validator.validate_json(payload.text, by_alias=True, by_name=False)
    else:
        validated = validator.validate_python(payload, by_alias=True, by_name=False)
    return validated


def _parse(model: type[OcppModel], payload: object) -> OcppModel:
    try:
        return _validate(model, payload)
    except ValidationError as exc:
        raise _payload_error(exc) from None


# An RFC 3339 date-time but for its missing offset. Some CSMSs send these (EVerest's test CSMS answers
# BootNotification so); refusing them would keep a station from ever booting, while UTC is what OCPP
# means by every date-time. We still never send one: our own payloads go through the strict models.
_NAIVE_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?$")


def _receive(model: type[OcppModel], payload: object) -> Received:
    try:
        return Received(_validate(model, payload))
    except ValidationError as exc:
        first = exc
    # Only on the error path: a payload that meets the schema costs nothing extra.
    locations = [
        error["loc"]
        for error in first.errors(include_url=False, include_context=False)
        if error["type"] == DATETIME_ERROR
        and isinstance(error["input"], str)
        and _NAIVE_DATETIME.match(error["input"])
    ]
    if not locations:
        raise _payload_error(first) from None
    fixed = copy.deepcopy(payload)
    locations = [loc for loc in locations if _mark_utc(fixed, loc)]
    if not locations:
        raise _payload_error(first) from None
    try:
        validated = _validate(model, fixed)
    except ValidationError as exc:
        raise _payload_error(exc) from None
    return Received(validated, tuple(".".join(str(part) for part in loc) for loc in locations))


def _mark_utc(payload: object, loc: tuple[int | str, ...]) -> bool:
    """Append "Z" to the string at `loc` in the decoded JSON `payload`; False if `loc` leads elsewhere
    (a location pydantic decorated, e.g. with a union member's name)."""
    node = payload
    for key in loc[:-1]:
        node = _child(node, key)
    last = loc[-1] if loc else None
    if isinstance(node, dict) and isinstance(last, str) and isinstance(node.get(last), str):
        node[last] += "Z"
        return True
    if (
        isinstance(node, list)
        and isinstance(last, int)
        and 0 <= last < len(node)
        and isinstance(node[last], str)
    ):
        node[last] += "Z"
        return True
    return False


def _child(node: object, key: int | str) -> object:
    if isinstance(node, dict) and isinstance(key, str):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None


def to_payload(model: OcppModel) -> dict[str, object]:
    """The wire form: camelCase keys, absent fields omitted, date-times in UTC ending in "Z"."""
    # exclude_unset rather than exclude_none: fields are never None once set (OcppModel drops None
    # keywords), and vendor customData may carry nulls that must pass through unchanged.
    payload: dict[str, object] = model.__pydantic_serializer__.to_python(
        model, mode="json", by_alias=True, exclude_unset=True
    )
    return payload


_KINDS: Final[Mapping[str, ErrorKind]] = {
    "missing": ErrorKind.OCCURRENCE_CONSTRAINT,
    "too_short": ErrorKind.OCCURRENCE_CONSTRAINT,
    "too_long": ErrorKind.OCCURRENCE_CONSTRAINT,
    "extra_forbidden": ErrorKind.FORMAT,
    "string_type": ErrorKind.TYPE_CONSTRAINT,
    "int_type": ErrorKind.TYPE_CONSTRAINT,
    "int_from_float": ErrorKind.TYPE_CONSTRAINT,
    "float_type": ErrorKind.TYPE_CONSTRAINT,
    "bool_type": ErrorKind.TYPE_CONSTRAINT,
    "list_type": ErrorKind.TYPE_CONSTRAINT,
    "model_type": ErrorKind.TYPE_CONSTRAINT,
    "model_attributes_type": ErrorKind.TYPE_CONSTRAINT,
    "dict_type": ErrorKind.TYPE_CONSTRAINT,
    "string_too_long": ErrorKind.PROPERTY_CONSTRAINT,
    "string_too_short": ErrorKind.PROPERTY_CONSTRAINT,
    "greater_than": ErrorKind.PROPERTY_CONSTRAINT,
    "greater_than_equal": ErrorKind.PROPERTY_CONSTRAINT,
    "less_than": ErrorKind.PROPERTY_CONSTRAINT,
    "less_than_equal": ErrorKind.PROPERTY_CONSTRAINT,
    "multiple_of": ErrorKind.PROPERTY_CONSTRAINT,
    "finite_number": ErrorKind.PROPERTY_CONSTRAINT,
    # A JSON integer such as 1e+308: integral, so not a type error, but beyond what a field can hold.
    "int_parsing_size": ErrorKind.PROPERTY_CONSTRAINT,
    "enum": ErrorKind.PROPERTY_CONSTRAINT,
    DATETIME_ERROR: ErrorKind.PROPERTY_CONSTRAINT,
    DATETIME_RANGE_ERROR: ErrorKind.PROPERTY_CONSTRAINT,
}
# Our own words where pydantic's would mislead the peer (it speaks of parsing a string here).
_MESSAGES: Final[Mapping[str, str]] = {
    "extra_forbidden": "unknown property",
    "int_parsing_size": "integer out of range",
}
# Errors whose input has the wrong JSON type altogether are type errors, e.g. 7 for an enum.
_TYPE_WHEN_NOT_STRING: Final = frozenset({"enum", DATETIME_ERROR})


def _kind(error: ErrorDetails) -> ErrorKind:
    kind = error["type"]
    if not error["loc"] and kind in ("model_type", "model_attributes_type", "dict_type"):
        return ErrorKind.FORMAT
    if kind in _TYPE_WHEN_NOT_STRING and not isinstance(error["input"], str):
        return ErrorKind.TYPE_CONSTRAINT
    return _KINDS.get(kind, ErrorKind.FORMAT)


def _payload_error(exc: ValidationError) -> PayloadError:
    # pydantic reports errors in schema property order (then unknown keys in payload order), which
    # is deterministic for a given payload: the first one is the one we answer with.
    error = exc.errors(include_url=False, include_context=False)[0]
    path = ".".join(str(part) for part in error["loc"])
    kind = _kind(error)
    if not error["loc"] and kind is ErrorKind.FORMAT:
        return PayloadError(kind, "", "payload must be a JSON object")
    # Only a key the schema does not define is an unknown property; any other error without a
    # mapping of its own keeps pydantic's description of what is wrong with the value.
    message = _MESSAGES.get(error["type"], error["msg"])
    return PayloadError(kind, path, f"{path}: {message}")

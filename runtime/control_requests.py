"""The control API's requests: one pydantic model per op, and the parsing of a request line.

Loaded on a control connection's first request, not while the station starts (issue 9): a station
whose control API is never used never builds these classes. `runtime.control` serves the requests;
this module never does I/O and never imports the server.
"""

from __future__ import annotations

import json
import typing
from typing import Annotated, Literal

import pydantic

from evstation.drivers.api import FaultCode

# Every op with what it does, in the order `evstation ctl --help` lists them.
OP_SUMMARIES: dict[str, str] = {
    "status": "station facts (link, boot, outbox depth) and every EVSE",
    "plug_in": "sim: plug the simulated EV in",
    "unplug": "sim: unplug the simulated EV",
    "present_id_token": "present an id token (an RFID card), to an EVSE or routed",
    "ev": "sim: what the simulated EV wants (energy, current)",
    "fault": "sim: raise a fault on the simulated board",
    "clear_fault": "sim: clear a fault on the simulated board",
    "lock": "sim: make the next connector-lock move fail (or not)",
    "meter": "sim: script the simulated meter (energy, power)",
    "network": "cut or restore the CSMS link (only with [control] allow_network_op = true)",
    "subscribe": "stream EVSE events and OCPP frames on this connection",
    "auth": "authenticate a TCP connection with the [control] tcp_token (first request on TCP)",
}
OPS = tuple(OP_SUMMARIES)

# NaN / Infinity parse as JSON numbers in Python but would make the replies invalid JSON.
# defer_build: the validators are built on the first request, not while the station starts.
_STRICT = pydantic.ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, defer_build=True)
RequestId = str | int | None


class _Req(pydantic.BaseModel):
    model_config = _STRICT
    id: RequestId = None


class StatusReq(_Req):
    op: Literal["status"]


class PlugReq(_Req):
    op: Literal["plug_in"]
    evse: int
    connector: int = 1
    # The rating the cable's Proximity Pilot resistor codes (IEC 61851-1), in A; None: not reported.
    cable_max_current_a: Literal[13, 20, 32, 63] | None = None


class UnplugReq(_Req):
    op: Literal["unplug"]
    evse: int
    connector: int = 1


class TokenReq(_Req):
    op: Literal["present_id_token"]
    id_token: Annotated[str, pydantic.Field(min_length=1, max_length=255)]
    type: str = "ISO14443"
    evse: int | None = None


class EvReq(_Req):
    op: Literal["ev"]
    evse: int
    wants_energy: bool
    max_current_a: Annotated[float, pydantic.Field(gt=0)] | None = None


class FaultReq(_Req):
    op: Literal["fault", "clear_fault"]
    evse: int
    code: FaultCode


class LockReq(_Req):
    op: Literal["lock"]
    evse: int
    fail: bool


class MeterReq(_Req):
    op: Literal["meter"]
    evse: int
    energy_wh: Annotated[float, pydantic.Field(ge=0)] | None = None
    power_w: float | None = None


class NetworkReq(_Req):
    op: Literal["network"]
    up: bool


class SubscribeReq(_Req):
    op: Literal["subscribe"]


class AuthReq(_Req):
    op: Literal["auth"]
    token: Annotated[str, pydantic.Field(max_length=1024)]


Request = Annotated[
    StatusReq
    | PlugReq
    | UnplugReq
    | TokenReq
    | EvReq
    | FaultReq
    | LockReq
    | MeterReq
    | NetworkReq
    | SubscribeReq
    | AuthReq,
    pydantic.Field(discriminator="op"),
]
_REQUEST = pydantic.TypeAdapter[Request](Request, config=pydantic.ConfigDict(defer_build=True))

_MODELS: tuple[type[_Req], ...] = (
    StatusReq,
    PlugReq,
    UnplugReq,
    TokenReq,
    EvReq,
    FaultReq,
    LockReq,
    MeterReq,
    NetworkReq,
    SubscribeReq,
    AuthReq,
)


def op_arguments(op: str) -> list[tuple[str, bool, object]]:
    """(name, required, default) of each argument of `op`, in declaration order."""
    for model in _MODELS:
        ops = typing.get_args(model.model_fields["op"].annotation)
        if op in ops:
            return [
                (name, info.is_required(), info.default)
                for name, info in model.model_fields.items()
                if name not in ("id", "op")
            ]
    raise KeyError(op)


class BadRequest(ValueError):
    def __init__(self, request_id: RequestId, message: str) -> None:
        super().__init__(message)
        self.request_id = request_id


def parse_request(line: bytes) -> Request:
    """Validate one request line; raises BadRequest with the id when it could be read."""
    try:
        raw = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(None, f"not JSON: {exc}") from None
    except RecursionError:
        # `[[[[...` within MAX_LINE_BYTES exhausts json's recursion limit; it must not end the server.
        raise BadRequest(None, "not JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise BadRequest(None, "a request must be a JSON object")
    request_id = raw.get("id")
    if not isinstance(request_id, str | int) or isinstance(request_id, bool):
        request_id = None
    if raw.get("op") not in OPS:
        raise BadRequest(request_id, f"unknown op {raw.get('op')!r}; ops: {', '.join(OPS)}")
    try:
        return _REQUEST.validate_json(line, strict=True)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or 'request'}: {err['msg']}" for err in exc.errors()
        )
        raise BadRequest(request_id, problems) from None

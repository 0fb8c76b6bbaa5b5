"""The local control API: newline-delimited JSON requests on a Unix socket (and optionally 127.0.0.1 TCP).

For simulation, HIL and operations. It talks to the station only through `ControlTarget`; it never
crashes on client input: malformed requests get an error reply and the connection stays up. The Unix
socket is guarded by its file mode; a TCP client must send the configured token (`auth`) first.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac
import json
import logging
import os
import socket as stdlib_socket
import stat
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import trio

from evstation.records import record
from evstation.runtime.events import Dropped
from evstation.runtime.evse import Evse, EvseEvent, Evses

if TYPE_CHECKING:
    # Only named in annotations: a station on real hardware does not load the simulator.
    from evstation.drivers.sim.board import SimChargeController

    # The ops' request models are built on a connection's first request (runtime/control_requests.py).
    from evstation.runtime.control_requests import Request

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 64 * 1024  # a longer request line is refused and the connection closed
SUBSCRIBER_BUFFER = 1024  # events a `subscribe` client may lag behind before it gets `Dropped`
_RECEIVE_CHUNK = 4096
_LISTEN_BACKLOG = 16

JsonObject = dict[str, Any]


class ControlError(Exception):
    """An op that cannot be done; its message becomes the `error` of the reply."""


class LoggedFrame(Protocol):
    """One OCPP-J frame as it crossed the websocket (runtime.calls.MessageLogEntry fits)."""

    @property
    def direction(self) -> enum.Enum: ...

    @property
    def frame(self) -> str: ...


class FrameLog(Protocol):
    """A broadcaster of logged frames (runtime.events.Broadcaster[MessageLogEntry] fits)."""

    def subscribe(self, max_buffer: int = ...) -> AbstractContextManager[trio.MemoryReceiveChannel[Any]]: ...


class SimMeterControls(Protocol):
    def script(self, energy_wh: float | None = None, power_w: float | None = None) -> None: ...


class ControlTarget(Protocol):
    """What the control API needs from a station; the lead wires the real station to it."""

    @property
    def evses(self) -> Evses: ...

    async def status(self) -> JsonObject:
        """Station-level facts: ocpp_version, link state, boot status, outbox depth (JSON-ready)."""
        ...

    def transaction_id(self, evse_id: int) -> str | None: ...

    def set_network(self, up: bool) -> None:
        """Simulate losing / regaining the CSMS network; raise ControlError where impossible."""
        ...

    def sim_board(self, evse_id: int) -> SimChargeController | None:
        """The simulated board of this EVSE, or None on real hardware."""
        ...

    def sim_meter(self, evse_id: int) -> SimMeterControls | None: ...

    def ocpp_messages(self) -> FrameLog | None: ...


# ---------------------------------------------------------------------------------------------------
# JSON shapes of replies and streamed events


def _jsonable(value: object) -> object:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | frozenset | set):
        items = [_jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, frozenset | set) else items
    return value


def event_json(event: EvseEvent | LoggedFrame | Dropped) -> JsonObject:
    """`{"event": <class name>, ...fields}`; OCPP frames are embedded as parsed JSON when they parse."""
    if isinstance(event, EvseEvent | Dropped):
        fields = {f.name: _jsonable(getattr(event, f.name)) for f in dataclasses.fields(event)}
        return {"event": type(event).__name__, **fields}
    try:
        message: object = json.loads(event.frame)
    except ValueError:
        message = event.frame
    return {"event": "OcppMessage", "direction": event.direction.value, "message": message}


def evse_json(evse: Evse, transaction_id: str | None) -> JsonObject:
    return {
        "id": evse.id,
        "connectors": [{"id": cid, "status": evse.status(cid).value} for cid in evse.connector_ids],
        "phase": evse.phase.value,
        "transaction_id": transaction_id,
        "offered_current_a": evse.offered_current_a(),
        "power_w": evse.power_w(),
        "energy_wh": evse.energy_wh(),
        "active_faults": _jsonable(evse.active_faults()),
        "cable_max_current_a": evse.cable_max_current_a(),
    }


# ---------------------------------------------------------------------------------------------------
# Ops


def _evse(target: ControlTarget, evse_id: int, connector: int | None = None) -> Evse:
    if evse_id not in target.evses:
        raise ControlError(f"no EVSE {evse_id}")
    evse = target.evses[evse_id]
    if connector is not None and connector not in evse.connector_ids:
        raise ControlError(f"EVSE {evse_id} has no connector {connector}")
    return evse


def _board(target: ControlTarget, evse_id: int) -> SimChargeController:
    _evse(target, evse_id)
    board = target.sim_board(evse_id)
    if board is None:
        raise ControlError(f"EVSE {evse_id} has a real charge controller: this op needs the simulator")
    return board


NETWORK_OP_OFF = (
    "the network op is off: set [control] allow_network_op = true to use it "
    "(it cuts the link to the CSMS; meant for tests and demos)"
)


async def execute(target: ControlTarget, req: Request, *, allow_network: bool = False) -> JsonObject:
    """Run one (non-subscribe, non-auth) op; raises ControlError for a clear error reply."""
    from evstation.runtime.control_requests import (
        EvReq,
        FaultReq,
        LockReq,
        MeterReq,
        NetworkReq,
        PlugReq,
        StatusReq,
        TokenReq,
        UnplugReq,
    )

    if isinstance(req, StatusReq):
        return {
            **(await target.status()),
            "evses": [evse_json(e, target.transaction_id(e.id)) for e in target.evses],
        }
    if isinstance(req, PlugReq | UnplugReq):
        evse = _evse(target, req.evse, req.connector)
        board = _board(target, req.evse)
        if isinstance(req, PlugReq):
            evse.select_connector(req.connector)
            board.plug_in(req.cable_max_current_a)
        else:
            board.unplug()
        return {"evse": req.evse, "connector": req.connector, "pilot": board.pilot_state.value}
    if isinstance(req, TokenReq):
        if req.evse is not None:
            _evse(target, req.evse)
        chosen = await target.evses.present_token(req.id_token, req.type, req.evse)
        if chosen is None:
            raise ControlError("no EVSE can take this token now (unavailable, faulted or busy)")
        return {"evse": chosen}
    if isinstance(req, EvReq):
        board = _board(target, req.evse)
        board.set_ev(wants_energy=req.wants_energy, max_current_a=req.max_current_a)
        return {"evse": req.evse, "pilot": board.pilot_state.value}
    if isinstance(req, FaultReq):
        board = _board(target, req.evse)
        if req.op == "fault":
            board.inject_fault(req.code)
        else:
            board.clear_fault(req.code)
        return {"evse": req.evse, "active_faults": _jsonable(board.active_faults)}
    if isinstance(req, LockReq):
        board = _board(target, req.evse)
        board.fail_next_move = req.fail
        return {"evse": req.evse, "fail_next_move": req.fail}
    if isinstance(req, MeterReq):
        _evse(target, req.evse)
        meter = target.sim_meter(req.evse)
        if meter is None:
            raise ControlError(f"EVSE {req.evse} has a real meter: this op needs the simulator")
        meter.script(energy_wh=req.energy_wh, power_w=req.power_w)
        return {"evse": req.evse}
    if isinstance(req, NetworkReq):
        if not allow_network:
            raise ControlError(NETWORK_OP_OFF)
        target.set_network(req.up)
        return {"up": req.up}
    raise AssertionError(f"unhandled op {req.op}")  # subscribe and auth are the connection's


# ---------------------------------------------------------------------------------------------------
# Connections


class _LineTooLong(Exception):
    pass


class _Connection:
    def __init__(self, stream: trio.abc.Stream, token: str | None = None) -> None:
        self.stream = stream
        self._buffer = bytearray()
        self._send_lock = trio.Lock()
        self._token = token.encode() if token is not None else None
        self.authenticated = token is None

    def token_matches(self, offered: str) -> bool:
        # Constant time: the comparison must not tell an attacker how much of a guess was right.
        return self._token is None or hmac.compare_digest(self._token, offered.encode())

    async def send(self, obj: JsonObject) -> None:
        data = (json.dumps(obj, separators=(",", ":")) + "\n").encode()
        async with self._send_lock:
            await self.stream.send_all(data)

    async def receive_line(self) -> bytes | None:
        """The next line without its newline; None at end of stream; _LineTooLong past the limit."""
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                if newline > MAX_LINE_BYTES:
                    raise _LineTooLong
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                return line
            if len(self._buffer) > MAX_LINE_BYTES:
                raise _LineTooLong
            chunk = await self.stream.receive_some(_RECEIVE_CHUNK)
            if not chunk:
                return None  # a partial last line without newline is discarded with the connection
            self._buffer += chunk


async def _forward(conn: _Connection, receive: trio.MemoryReceiveChannel[Any]) -> None:
    async for event in receive:
        await conn.send(event_json(event))


async def _subscribe(
    target: ControlTarget, conn: _Connection, nursery: trio.Nursery, stack: ExitStack
) -> None:
    nursery.start_soon(_forward, conn, stack.enter_context(target.evses.subscribe(SUBSCRIBER_BUFFER)))
    ocpp = target.ocpp_messages()
    if ocpp is not None:
        nursery.start_soon(_forward, conn, stack.enter_context(ocpp.subscribe(SUBSCRIBER_BUFFER)))


@record
class ControlAccess:
    """What one connection may do: `token` (TCP) must be sent with `auth` first; `allow_network`
    enables the `network` op."""

    token: str | None = None
    allow_network: bool = False


async def handle_connection(
    target: ControlTarget, stream: trio.abc.Stream, access: ControlAccess
) -> None:
    """Serve one client until it closes; subscriptions stream alongside further requests."""
    conn = _Connection(stream, access.token)
    try:
        async with stream, trio.open_nursery() as nursery:
            with ExitStack() as stack:
                await _serve_requests(target, conn, nursery, stack, access)
                nursery.cancel_scope.cancel()
    except* (trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("control client went away")  # its subscriptions ended with it; nothing to clean


AUTH_FIRST = 'authenticate first: send {"op": "auth", "token": "<[control] tcp_token>"}; closing'


async def _serve_requests(
    target: ControlTarget,
    conn: _Connection,
    nursery: trio.Nursery,
    stack: ExitStack,
    access: ControlAccess,
) -> None:
    from evstation.runtime.control_requests import AuthReq, BadRequest, SubscribeReq, parse_request

    subscribed = False
    while True:
        try:
            line = await conn.receive_line()
        except _LineTooLong:
            await conn.send(
                {
                    "id": None,
                    "ok": False,
                    "error": f"request line longer than {MAX_LINE_BYTES} bytes; closing",
                }
            )
            return
        if line is None:
            return
        if not line.strip():
            continue
        try:
            req = parse_request(line)
        except BadRequest as exc:
            # An unauthenticated client learns nothing about the API beyond how to authenticate.
            error = str(exc) if conn.authenticated else AUTH_FIRST
            await conn.send({"id": exc.request_id, "ok": False, "error": error})
            if not conn.authenticated:
                return
            continue
        if isinstance(req, AuthReq):
            if not conn.token_matches(req.token):
                log.warning("control API: a TCP client sent a wrong token; connection closed")
                await conn.send({"id": req.id, "ok": False, "error": "wrong token; closing"})
                return
            conn.authenticated = True
            await conn.send({"id": req.id, "ok": True, "result": {"authenticated": True}})
            continue
        if not conn.authenticated:
            await conn.send({"id": req.id, "ok": False, "error": AUTH_FIRST})
            return
        if isinstance(req, SubscribeReq):
            if not subscribed:
                await _subscribe(target, conn, nursery, stack)
                subscribed = True
            await conn.send({"id": req.id, "ok": True, "result": {"subscribed": True}})
            continue
        try:
            result = await execute(target, req, allow_network=access.allow_network)
        except ControlError as exc:
            await conn.send({"id": req.id, "ok": False, "error": str(exc)})
            continue
        await conn.send({"id": req.id, "ok": True, "result": result})


# ---------------------------------------------------------------------------------------------------
# Server


@record
class ControlEndpoints:
    socket_path: Path | None
    tcp_port: int | None  # the bound port (useful with port 0)


def _remove_socket_file(path: Path, *, missing_ok: bool) -> None:
    """Remove a (stale) socket file; refuse to touch any other kind of file."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        if missing_ok:
            return
        raise FileExistsError(f"{path} exists and is not a socket")
    path.unlink(missing_ok=True)


async def open_unix_listener(path: Path) -> trio.SocketListener:
    """Bind a Unix socket at `path` (replacing a stale socket file, never any other file), mode 0600."""
    _remove_socket_file(path, missing_ok=False)
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(os.fspath(path))
        os.chmod(path, 0o600)  # the API can stop sessions: only the station's user may talk to it
        sock.listen(_LISTEN_BACKLOG)
    except OSError as exc:
        sock.close()
        # bind's own errors name no path ("AF_UNIX path too long", "[Errno 2] ..."): the operator needs it.
        # (The original, with its errno, stays the __cause__.)
        raise OSError(f"cannot listen on the control socket {path}: {exc.strerror or exc}") from exc
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def serve_control(
    target: ControlTarget,
    socket_path: Path | str | None,
    *,
    tcp_port: int | None = None,
    tcp_token: str | None = None,
    allow_network: bool = False,
    task_status: trio.TaskStatus[ControlEndpoints] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Serve the control API until cancelled; started with the endpoints once they accept.

    `tcp_port` (0 = any) additionally listens on 127.0.0.1 only, for clients that send `tcp_token`
    first. `allow_network` turns the `network` op on. The socket file is removed on exit.
    """
    if tcp_port is not None and not tcp_token:
        raise ValueError("the control API's TCP listener needs a token (tcp_token)")
    listeners: list[trio.SocketListener] = []
    path = Path(socket_path) if socket_path is not None else None
    try:
        if path is not None:
            listeners.append(await open_unix_listener(path))
        bound_port = None
        if tcp_port is not None:
            tcp = await trio.open_tcp_listeners(tcp_port, host="127.0.0.1")
            listeners.extend(tcp)
            bound_port = tcp[0].socket.getsockname()[1]
        if not listeners:
            raise ValueError("serve_control needs a socket path or a TCP port")
        local = ControlAccess(None, allow_network)
        remote = ControlAccess(tcp_token, allow_network)

        async def handler(stream: trio.SocketStream) -> None:
            # The Unix socket's file mode (0600) already limits it to the station's user.
            unix = stream.socket.family == stdlib_socket.AF_UNIX
            await handle_connection(target, stream, local if unix else remote)

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, handler, listeners)
            task_status.started(ControlEndpoints(path, bound_port))
            await trio.sleep_forever()
    finally:
        if path is not None:
            _remove_socket_file(path, missing_ok=True)
    raise AssertionError("unreachable")  # pragma: no cover

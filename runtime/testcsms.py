"""The project's test CSMS: a small, programmable OCPP 1.6J / 2.0.1 central system on trio-websocket.

For tests and the demo: it answers station CALLs with schema-valid defaults, records every frame with
its trio time, and can misbehave on request. It is never a production CSMS (no persistence, no real
authorization) and never logs a station's password.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import enum
import itertools
import ssl
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NoReturn, final
from urllib.parse import unquote

import trio
import trio.testing
import trio_websocket

from evstation.protocol.rpc import Call, CallError, CallResult, FrameError, decode, encode
from evstation.protocol.versions import OcppVersion

JsonObject = dict[str, object]
Responder = Callable[[str, JsonObject], JsonObject]
"""(station id, request payload) -> response payload; raise CallErrorReply to answer a CALLERROR."""

HANDSHAKE_TIMEOUT_S = 10.0
DEFAULT_HEARTBEAT_INTERVAL_S = 300
_HTTP_UNAUTHORIZED = 401


class CallErrorReply(Exception):
    """Raised by a Responder: answer the station's CALL with this CALLERROR."""

    def __init__(self, code: str, description: str = "", details: JsonObject | None = None) -> None:
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.details: JsonObject = details or {}


class CallErrorReceived(Exception):
    """The station answered our CALL with a CALLERROR."""

    def __init__(self, code: str, description: str, details: JsonObject) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.details = details


class StationNotConnected(LookupError):
    """The station has no open connection (or lost it while we waited for its answer)."""


class TimelineKind(enum.Enum):
    CONNECTED = "connected"
    REJECTED = "rejected"  # HTTP 401 / refused handshake
    TLS_FAILED = "tls-failed"
    DISCONNECTED = "disconnected"
    DROPPED = "dropped"  # we closed the socket abruptly (drop())
    RECEIVED = "received"
    SENT = "sent"


@dataclass(frozen=True)
class TimelineEntry:
    time: float  # trio.current_time()
    station_id: str | None  # None before the station is known (e.g. a TLS failure)
    kind: TimelineKind
    text: str


@dataclass
class _Pending:
    done: trio.Event = field(default_factory=trio.Event)
    result: JsonObject | None = None
    error: Exception | None = None


@dataclass
class _StationConnection:
    station_id: str
    version: OcppVersion | None
    ws: trio_websocket.WebSocketConnection
    valve: _Valve
    scope: trio.CancelScope
    pending: dict[str, _Pending] = field(default_factory=dict)


@final
class _Valve(trio.abc.Stream):
    """A server-side stream that can hold back received bytes (stall), so pings go unanswered.

    While stalled it keeps reading, so a peer that hangs up is still noticed; the held bytes are
    delivered on resume(), or discarded if the peer hangs up first.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._flowing = True
        self._held: collections.deque[bytes | bytearray] = collections.deque()
        self._stalled_read: trio.CancelScope | None = None

    def stall(self) -> None:
        self._flowing = False

    def resume(self) -> None:
        self._flowing = True
        if self._stalled_read is not None:
            self._stalled_read.cancel()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while True:
            if self._flowing and self._held:
                return self._held.popleft()
            with trio.CancelScope() as read:
                self._stalled_read = None if self._flowing else read
                data = await self._stream.receive_some(max_bytes)
            self._stalled_read = None
            if read.cancelled_caught:
                continue  # resume() during a stalled read: deliver what was held
            if not data or self._flowing:
                return data
            self._held.append(data)

    async def send_eof(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self._stream.aclose()


@final
class TestCsms:
    """A running test CSMS (see serve_test_csms). All methods but the async ones are non-blocking."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        nursery: trio.Nursery,
        *,
        accepted_subprotocols: Iterable[str],
        passwords: dict[str, str] | None,
        wall_clock: Callable[[], datetime],
        heartbeat_interval_s: int,
    ) -> None:
        self.port = 0
        self._nursery = nursery
        self._accepted = tuple(accepted_subprotocols)
        self._passwords = passwords
        self._wall_clock = wall_clock
        self._heartbeat_interval_s = heartbeat_interval_s
        self._responses: dict[str, JsonObject | Responder] = {}
        self._delays: dict[str | None, float] = {}
        self._current: dict[str, _StationConnection] = {}
        self._open: Counter[str] = Counter()
        self._max_open: Counter[str] = Counter()
        self._total: Counter[str] = Counter()
        self._timeline: list[TimelineEntry] = []
        self._calls: dict[str, list[Call]] = {}
        self._call_waiters: list[tuple[str, str, int, trio.Event]] = []
        self._connect_waiters: list[tuple[str, int, trio.Event]] = []
        self._subscribers: list[trio.MemorySendChannel[TimelineEntry]] = []
        self.dropped_timeline_entries = 0
        self._message_ids = itertools.count(1)
        self._transaction_ids = itertools.count(1)

    # -- programming its behaviour ---------------------------------------------------------------

    def set_response(self, action: str, response: JsonObject | Responder) -> None:
        """Answer `action` with this payload (or what the responder returns) instead of the default."""
        self._responses[action] = response

    def clear_response(self, action: str) -> None:
        self._responses.pop(action, None)

    def delay_results(self, seconds: float, action: str | None = None) -> None:
        """Wait `seconds` (trio time) before answering `action` (every action if None); 0 undoes it."""
        self._delays[action] = seconds

    def drop(self, station_id: str) -> None:
        """Close the station's socket abruptly: no closing handshake, as if the CSMS crashed."""
        conn = self._current.get(station_id)
        if conn is None:
            return
        self._record(station_id, TimelineKind.DROPPED, "socket closed without a closing handshake")
        conn.scope.cancel()

    def stall(self, station_id: str) -> None:
        """Stop reading from the station's socket: its frames and pings pile up unanswered."""
        conn = self._current.get(station_id)
        if conn is not None:
            conn.valve.stall()

    def resume(self, station_id: str) -> None:
        conn = self._current.get(station_id)
        if conn is not None:
            conn.valve.resume()

    # -- talking to a station ----------------------------------------------------------------------

    async def call(self, station_id: str, action: str, payload: JsonObject) -> JsonObject:
        """Send a CALL to the station and return its CALLRESULT payload.

        Raises:
            StationNotConnected: not connected, or the connection ended before the answer.
            CallErrorReceived: the station answered with a CALLERROR.
        """
        conn = self._current.get(station_id)
        if conn is None:
            raise StationNotConnected(station_id)
        message_id = f"csms-{next(self._message_ids)}"
        pending = _Pending()
        conn.pending[message_id] = pending
        await self._send(conn, encode(Call(message_id, action, payload)))
        await pending.done.wait()
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    async def wait_for(self, station_id: str, action: str, count: int = 1) -> JsonObject:
        """Wait until the station has sent `count` CALLs of `action` (since the CSMS started); return
        the payload of the `count`-th."""
        calls = self.received(station_id, action)
        if len(calls) < count:
            event = trio.Event()
            self._call_waiters.append((station_id, action, count, event))
            await event.wait()
            calls = self.received(station_id, action)
        else:
            await trio.lowlevel.checkpoint()
        return calls[count - 1].payload

    async def wait_connected(self, station_id: str, count: int = 1) -> None:
        """Wait until the station's `count`-th connection has been accepted."""
        if self._total[station_id] >= count:
            await trio.lowlevel.checkpoint()
            return
        event = trio.Event()
        self._connect_waiters.append((station_id, count, event))
        await event.wait()

    # -- what happened ---------------------------------------------------------------------------------

    def connections_open(self, station_id: str) -> int:
        return self._open[station_id]

    def max_connections_open(self, station_id: str) -> int:
        """The most connections the station ever had open at once (1 for a well-behaved station)."""
        return self._max_open[station_id]

    def connections_total(self, station_id: str) -> int:
        return self._total[station_id]

    def version(self, station_id: str) -> OcppVersion | None:
        conn = self._current.get(station_id)
        return None if conn is None else conn.version

    def received(self, station_id: str, action: str | None = None) -> list[Call]:
        """The CALLs the station sent, oldest first."""
        calls = self._calls.get(station_id, [])
        return [c for c in calls if action is None or c.action == action]

    def timeline(self, station_id: str | None = None) -> list[TimelineEntry]:
        """Every recorded entry (for one station, or all), oldest first."""
        return [e for e in self._timeline if station_id is None or e.station_id == station_id]

    def frames(self, station_id: str) -> list[TimelineEntry]:
        """Every frame received from or sent to the station, oldest first."""
        kinds = (TimelineKind.RECEIVED, TimelineKind.SENT)
        return [e for e in self._timeline if e.station_id == station_id and e.kind in kinds]

    def clear_history(self) -> None:
        """Forget the recorded timeline and CALLs (a long run measuring the station's memory, not
        ours); `wait_for` counts from here on."""
        self._timeline.clear()
        self._calls.clear()

    def subscribe(self, max_buffer: int = 1000) -> trio.MemoryReceiveChannel[TimelineEntry]:
        """A live stream of timeline entries from now on, e.g. for the demo's display.

        A subscriber that falls `max_buffer` entries behind loses entries (counted in
        `dropped_timeline_entries`) rather than slowing the CSMS down; close the channel to unsubscribe.
        """
        send, receive = trio.open_memory_channel[TimelineEntry](max_buffer)
        self._subscribers.append(send)
        return receive

    async def open_memory_stream(self, endpoint: object = None) -> trio.abc.Stream:
        """A client stream connected to this CSMS in memory: a link Connector for MockClock tests."""
        client, server = trio.testing.memory_stream_pair()
        self._nursery.start_soon(self._handle, server)
        await trio.lowlevel.checkpoint()
        return client

    # -- internals -------------------------------------------------------------------------------------

    def _record(self, station_id: str | None, kind: TimelineKind, text: str) -> None:
        entry = TimelineEntry(trio.current_time(), station_id, kind, text)
        self._timeline.append(entry)
        for subscriber in list(self._subscribers):
            try:
                subscriber.send_nowait(entry)
            except trio.WouldBlock:
                self.dropped_timeline_entries += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(subscriber)

    async def _handle(self, stream: trio.abc.Stream) -> None:
        valve = _Valve(stream)
        try:
            if isinstance(stream, trio.SSLStream):
                try:
                    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                        await stream.do_handshake()
                except (trio.BrokenResourceError, trio.TooSlowError) as exc:
                    cause = exc.__cause__
                    self._record(None, TimelineKind.TLS_FAILED, str(cause or type(exc).__name__))
                    return
            async with trio.open_nursery() as nursery:
                try:
                    with trio.fail_after(HANDSHAKE_TIMEOUT_S):
                        request = await trio_websocket.wrap_server_stream(nursery, valve)
                    await self._accept_or_reject(request, valve)
                except (trio.TooSlowError, trio_websocket.ConnectionClosed):
                    pass
                nursery.cancel_scope.cancel()
        finally:
            await trio.aclose_forcefully(stream)

    async def _accept_or_reject(self, request: trio_websocket.WebSocketRequest, valve: _Valve) -> None:
        station_id = unquote(request.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1])
        if self._passwords is not None and not self._authorized(station_id, request.headers):
            self._record(
                station_id, TimelineKind.REJECTED, "HTTP 401: missing or wrong Basic-auth credentials"
            )
            await request.reject(
                _HTTP_UNAUTHORIZED, extra_headers=[(b"WWW-Authenticate", b'Basic realm="OCPP"')]
            )
            return
        chosen = next((p for p in request.proposed_subprotocols if p in self._accepted), None)
        ws = await request.accept(subprotocol=chosen)
        version = None if chosen is None else OcppVersion.from_subprotocol(chosen)
        with trio.CancelScope() as scope:
            conn = _StationConnection(station_id, version, ws, valve, scope)
            await self._serve_station(conn)

    def _authorized(self, station_id: str, headers: list[tuple[bytes, bytes]]) -> bool:
        assert self._passwords is not None
        expected = self._passwords.get(station_id)
        for name, value in headers:
            if name.lower() != b"authorization" or not value.startswith(b"Basic "):
                continue
            try:
                user, _, password = base64.b64decode(value[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return False
            return expected is not None and user == station_id and password == expected
        return False

    async def _serve_station(self, conn: _StationConnection) -> None:
        station_id = conn.station_id
        self._open[station_id] += 1
        self._total[station_id] += 1
        self._max_open[station_id] = max(self._max_open[station_id], self._open[station_id])
        self._current[station_id] = conn
        offered = "none" if conn.version is None else conn.version.subprotocol
        self._record(station_id, TimelineKind.CONNECTED, f"subprotocol {offered}")
        for waiter in list(self._connect_waiters):
            if waiter[0] == station_id and self._total[station_id] >= waiter[1]:
                self._connect_waiters.remove(waiter)
                waiter[2].set()
        try:
            async with trio.open_nursery() as answers:
                while True:
                    try:
                        text = await conn.ws.get_message()
                    except trio_websocket.ConnectionClosed:
                        break
                    if isinstance(text, bytes):
                        self._record(
                            station_id, TimelineKind.RECEIVED, f"<binary frame of {len(text)} bytes>"
                        )
                        continue
                    self._record(station_id, TimelineKind.RECEIVED, text)
                    self._dispatch(conn, text, answers)
                answers.cancel_scope.cancel()
        finally:
            self._open[station_id] -= 1
            if self._current.get(station_id) is conn:
                del self._current[station_id]
            for pending in conn.pending.values():
                pending.error = StationNotConnected(f"{station_id} disconnected before answering")
                pending.done.set()
            closed = conn.ws.closed
            self._record(
                station_id, TimelineKind.DISCONNECTED, "" if closed is None else f"code {closed.code}"
            )

    def _dispatch(self, conn: _StationConnection, text: str, answers: trio.Nursery) -> None:
        message = decode(text, conn.version or OcppVersion.V201)
        if isinstance(message, FrameError):
            if message.message_id is not None:
                reply = CallError(message.message_id, message.code, message.description, {})
                answers.start_soon(self._send, conn, encode(reply))
            return
        if isinstance(message, Call):
            self._calls.setdefault(conn.station_id, []).append(message)
            count = sum(1 for c in self._calls[conn.station_id] if c.action == message.action)
            for waiter in list(self._call_waiters):
                station_id, action, wanted, event = waiter
                if station_id == conn.station_id and action == message.action and count >= wanted:
                    self._call_waiters.remove(waiter)
                    event.set()
            answers.start_soon(self._answer, conn, message)
            return
        pending = conn.pending.pop(message.message_id, None)
        if pending is None:
            return
        if isinstance(message, CallResult):
            pending.result = message.payload
        else:
            pending.error = CallErrorReceived(message.code, message.description, message.details)
        pending.done.set()

    async def _answer(self, conn: _StationConnection, call: Call) -> None:
        delay = self._delays.get(call.action, self._delays.get(None, 0.0))
        if delay > 0:
            await trio.sleep(delay)
        reply: CallResult | CallError
        try:
            payload = self._response_payload(conn, call)
            reply = CallResult(call.message_id, payload)
        except CallErrorReply as exc:
            reply = CallError(call.message_id, exc.code, exc.description, exc.details)
        await self._send(conn, encode(reply))

    def _response_payload(self, conn: _StationConnection, call: Call) -> JsonObject:
        programmed = self._responses.get(call.action)
        if programmed is None:
            return default_response(
                conn.version or OcppVersion.V201,
                call.action,
                call.payload,
                now=self._wall_clock(),
                heartbeat_interval_s=self._heartbeat_interval_s,
                transaction_id=lambda: next(self._transaction_ids),
            )
        if callable(programmed):
            return programmed(conn.station_id, call.payload)
        return programmed

    async def _send(self, conn: _StationConnection, text: str) -> None:
        self._record(conn.station_id, TimelineKind.SENT, text)
        # A station that is gone is no error here: _serve_station records the disconnect.
        with contextlib.suppress(trio_websocket.ConnectionClosed):
            await conn.ws.send_message(text)


def _iso(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Answers with no required field beyond these; every other known action answers {}.
_V16_EMPTY = frozenset(
    {
        "StatusNotification",
        "MeterValues",
        "DiagnosticsStatusNotification",
        "FirmwareStatusNotification",
        "SecurityEventNotification",
        "LogStatusNotification",
        "SignedFirmwareStatusNotification",
    }
)
_V201_EMPTY = frozenset(
    {
        "StatusNotification",
        "MeterValues",
        "SecurityEventNotification",
        "FirmwareStatusNotification",
        "LogStatusNotification",
        "NotifyEvent",
        "NotifyReport",
        "NotifyMonitoringReport",
        "NotifyChargingLimit",
        "ClearedChargingLimit",
        "ReportChargingProfiles",
        "NotifyCustomerInformation",
        "NotifyDisplayMessages",
        "PublishFirmwareStatusNotification",
        "ReservationStatusUpdate",
    }
)


def default_response(
    version: OcppVersion,
    action: str,
    request: Mapping[str, object],
    *,
    now: datetime,
    heartbeat_interval_s: int = DEFAULT_HEARTBEAT_INTERVAL_S,
    transaction_id: Callable[[], int] = lambda: 1,
) -> JsonObject:
    """The test CSMS's schema-valid default answer to a station CALL of `version`.

    Raises:
        CallErrorReply: NotImplemented, for an action the version does not let a station send.
    """
    accepted: JsonObject = {"status": "Accepted"}
    if action == "BootNotification":
        return {"currentTime": _iso(now), "interval": heartbeat_interval_s, "status": "Accepted"}
    if action == "Heartbeat":
        return {"currentTime": _iso(now)}
    if action in ("DataTransfer", "SignCertificate"):
        return dict(accepted)
    if version is OcppVersion.V16:
        if action in _V16_EMPTY:
            return {}
        if action == "Authorize" or action == "StopTransaction":
            return {"idTagInfo": dict(accepted)}
        if action == "StartTransaction":
            return {"transactionId": transaction_id(), "idTagInfo": dict(accepted)}
    else:
        if action in _V201_EMPTY:
            return {}
        if action == "Authorize":
            return {"idTokenInfo": dict(accepted)}
        if action == "TransactionEvent":
            # E01/E03: idTokenInfo belongs in the answer only when the request carried an idToken.
            return {"idTokenInfo": dict(accepted)} if "idToken" in request else {}
        if action in ("NotifyEVChargingNeeds", "NotifyEVChargingSchedule", "GetCertificateStatus"):
            return dict(accepted)
    raise CallErrorReply("NotImplemented", f"the test CSMS has no answer for {action} ({version.value})")


async def serve_test_csms(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    ssl_context: ssl.SSLContext | None = None,
    accepted_subprotocols: Iterable[str] = ("ocpp1.6", "ocpp2.0.1"),
    passwords: dict[str, str] | None = None,
    wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    heartbeat_interval_s: int = DEFAULT_HEARTBEAT_INTERVAL_S,
    task_status: trio.TaskStatus[TestCsms] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Run a test CSMS on `host:port` (0 = any free port) until cancelled; started with the TestCsms.

    `ssl_context` (a server ssl.SSLContext) makes it wss://; `passwords` (station id -> password)
    turns on HTTP Basic auth, answering 401 to a missing or wrong one. A station offering none of
    `accepted_subprotocols` is accepted without a subprotocol, as a careless CSMS would.
    """
    async with trio.open_nursery() as nursery:
        csms = TestCsms(
            nursery,
            accepted_subprotocols=accepted_subprotocols,
            passwords=passwords,
            wall_clock=wall_clock,
            heartbeat_interval_s=heartbeat_interval_s,
        )
        tcp_listeners = await trio.open_tcp_listeners(port, host=host)
        csms.port = tcp_listeners[0].socket.getsockname()[1]
        listeners: list[trio.abc.Listener[trio.abc.Stream]]
        if ssl_context is None:
            listeners = list(tcp_listeners)
        else:
            listeners = [trio.SSLListener(t, ssl_context, https_compatible=True) for t in tcp_listeners]
        await nursery.start(trio.serve_listeners, csms._handle, listeners)
        task_status.started(csms)
        await trio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


__all__ = [
    "HANDSHAKE_TIMEOUT_S",
    "CallErrorReceived",
    "CallErrorReply",
    "JsonObject",
    "Responder",
    "StationNotConnected",
    "TestCsms",
    "TimelineEntry",
    "TimelineKind",
    "default_response",
    "serve_test_csms",
]

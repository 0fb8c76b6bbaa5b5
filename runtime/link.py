"""The CSMS link supervisor: dials the OCPP websocket, authenticates, pings, and redials with back-off.

At most one connection is open at a time and each lives in its own cancel scope; a reconnect cancels
that scope and nothing else. This module never parses OCPP and never puts the Basic-auth password into
a log line, an exception or a repr.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import itertools
import logging
import math
import random
import re
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import field
from pathlib import Path
from typing import NoReturn, final
from urllib.parse import quote, urlsplit

import trio
import trio_websocket

from evstation.protocol.backoff import DEFAULT_BACKOFF, BackoffSettings, ReconnectPlan
from evstation.protocol.versions import OcppVersion
from evstation.records import record
from evstation.runtime.logs import quote as quote_peer_text
from evstation.runtime.tls import (
    HandshakeWitness,
    SecurityFailure,
    TlsConfigError,
    classify_tls_failure,
    client_context,
    describe_tls_failure,
)

log = logging.getLogger(__name__)

# Profiles 0 and 1 run over plain ws://, profiles 2 and 3 over wss:// (OCPP 2.0.1 part 2 A00).
_PLAIN_PROFILES = frozenset({0, 1})
TLS_PROFILES = frozenset({2, 3})
BASIC_AUTH_PROFILES = frozenset({1, 2})
_HTTP_UNAUTHORIZED = 401
_HTTP_SWITCHING_PROTOCOLS = 101
# How long a refused upgrade's body may take to arrive (it ends only when the CSMS closes) before we
# report the refusal anyway.
REFUSAL_GRACE_S = 1.0
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3})[ \r]")
_MAX_STATUS_LINE = 1024


class LinkDown(Exception):
    """The CSMS connection is gone, or never came up; the text says why. The supervisor redials.

    `security` says which security event the failure is, when it is one (a TLS handshake refused)."""

    def __init__(self, *args: object, security: SecurityFailure | None = None) -> None:
        super().__init__(*args)
        self.security = security


SecurityFailureHook = Callable[[SecurityFailure, str], None]
"""Told (synchronously, must not block) of each failed dial that is a security event, with the description."""


@record
class CsmsEndpoint:
    """One CSMS address with its security profile (a 2.0.1 NetworkConnectionProfile slot)."""

    url: str
    priority: int
    security_profile: int
    password: str | None = field(default=None, repr=False)
    ca_bundle: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    # A SetNetworkProfile's messageTimeout (2.0.1 B09); None: the station's MessageTimeout.
    message_timeout_s: float | None = None

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.username is not None or parts.password is not None:
            # Not echoed: the URL is logged on every dial, and this one carries a secret.
            raise ValueError(
                "CSMS URL must not carry user:password@; give the Basic-auth password as `password`"
            )
        scheme = parts.scheme
        profile = self.security_profile
        if profile in _PLAIN_PROFILES and scheme != "ws":
            raise ValueError(f"security profile {profile} needs a ws:// URL, got {self.url!r}")
        if profile in TLS_PROFILES and scheme != "wss":
            raise ValueError(f"security profile {profile} needs a wss:// URL, got {self.url!r}")
        if profile not in _PLAIN_PROFILES | TLS_PROFILES:
            raise ValueError(f"security profile must be 0, 1, 2 or 3, got {profile}")
        if profile in BASIC_AUTH_PROFILES and not self.password:
            raise ValueError(f"security profile {profile} needs a Basic-auth password for {self.url!r}")
        if profile == 3 and (self.client_cert is None or self.client_key is None):
            raise ValueError(f"security profile 3 needs client_cert and client_key for {self.url!r}")
        if urlsplit(self.url).hostname is None:
            raise ValueError(f"CSMS URL has no host: {self.url!r}")


@record
class LinkSettings:
    """Everything the supervisor needs; the runtime maps station.toml / the device model onto it."""

    station_id: str
    version: OcppVersion
    endpoints: tuple[CsmsEndpoint, ...]
    backoff: BackoffSettings = DEFAULT_BACKOFF
    ping_interval_s: float = 60.0  # 2.0.1 WebSocketPingInterval; 0 turns pings off
    pong_timeout_s: float = 5.0
    connect_timeout_s: float = 30.0  # TCP + TLS + websocket handshake together
    close_timeout_s: float = 2.0  # how long a polite close waits for the CSMS's close frame

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("at least one CSMS endpoint is needed")
        if not self.station_id or ":" in self.station_id:
            # RFC 7617: the Basic-auth user-id (our identity) cannot contain a colon.
            raise ValueError(f"station id must be non-empty and contain no ':', got {self.station_id!r}")

    @property
    def endpoints_by_priority(self) -> tuple[CsmsEndpoint, ...]:
        return tuple(sorted(self.endpoints, key=lambda e: e.priority))


@record
class DialPlan:
    """The endpoints to dial, in order, and the failed dials on one before the next (2.0.1
    NetworkConfigurationPriority and NetworkProfileConnectionAttempts)."""

    endpoints: tuple[CsmsEndpoint, ...]
    attempts_per_endpoint: int
    # The reconnect timing (RetryBackOff*, read from the device model with the plan); None: the
    # link settings'. Its attempts_per_endpoint is ignored in favour of the plan's.
    backoff: BackoffSettings | None = None
    # WebSocketPingInterval (read with the plan) for the connections dialled under it; None: the link
    # settings'.
    ping_interval_s: float | None = None

    def __post_init__(self) -> None:
        if not self.endpoints:
            raise ValueError("a dial plan needs at least one endpoint")
        if self.attempts_per_endpoint < 1:
            raise ValueError("attempts_per_endpoint must be at least 1")


PlanSource = Callable[[], Awaitable[DialPlan]]
"""Builds the dial plan afresh: at start and after each lost connection (runtime/network_profiles.py)."""


class LinkState(enum.Enum):
    OFFLINE = "Offline"
    CONNECTING = "Connecting"
    CONNECTED = "Connected"
    BACKING_OFF = "BackingOff"
    NETWORK_DOWN = "NetworkDown"


@record
class LinkStatistics:
    state: LinkState
    generation: int
    endpoint_url: str | None
    network_up: bool
    dials: int
    connections: int
    failed_dials: int
    reconnect_requests: int  # honoured ones
    ignored_reconnect_requests: int  # stale generation, or a reconnect already under way
    last_failure: str | None


@final
class Link:
    """The link's state and control surface, shared by the supervisor, the session and the control API.

    Every method except the `wait_*` ones is synchronous and never blocks.
    """

    def __init__(self, *, on_security_failure: SecurityFailureHook | None = None) -> None:
        self._on_security_failure = on_security_failure
        self._state = LinkState.OFFLINE
        self._generation = 0
        self._endpoint: CsmsEndpoint | None = None
        self._connection: Connection | None = None
        self._last_connection: Connection | None = None
        self._attempt_scope: trio.CancelScope | None = None  # the whole attempt: cancelled = abrupt
        self._work_scope: trio.CancelScope | None = None  # the open connection's tasks: cancelled = polite
        self._idle_scope: trio.CancelScope | None = None  # a back-off sleep
        self._reconnect_reason: str | None = None
        self._abrupt = False
        self._network_up = True
        self._network_restored = trio.Event()
        self._state_waiters: dict[LinkState, list[trio.Event]] = {}
        self._dials = 0
        self._connections = 0
        self._failed_dials = 0
        self._reconnects = 0
        self._ignored_reconnects = 0
        self._last_failure: str | None = None

    @property
    def state(self) -> LinkState:
        return self._state

    @property
    def generation(self) -> int:
        """Bumped on every dial; a Connection carries the generation it was opened under."""
        return self._generation

    @property
    def endpoint(self) -> CsmsEndpoint | None:
        """The endpoint being dialled or connected to (the last one while backing off)."""
        return self._endpoint

    @property
    def connection(self) -> Connection | None:
        """The open connection, or None when not CONNECTED."""
        return self._connection

    @property
    def network_up(self) -> bool:
        return self._network_up

    def statistics(self) -> LinkStatistics:
        return LinkStatistics(
            state=self._state,
            generation=self._generation,
            endpoint_url=None if self._endpoint is None else self._endpoint.url,
            network_up=self._network_up,
            dials=self._dials,
            connections=self._connections,
            failed_dials=self._failed_dials,
            reconnect_requests=self._reconnects,
            ignored_reconnect_requests=self._ignored_reconnects,
            last_failure=self._last_failure,
        )

    def request_reconnect(self, generation: int, reason: str) -> None:
        """Close the connection of `generation` politely and redial (after the back-off wait).

        Does nothing if `generation` is no longer current or a reconnect of it is already under way, so
        a second report about the same connection never causes a second reconnect.
        """
        self._request_reconnect(generation, reason, abrupt=False)

    def set_network(self, up: bool) -> None:
        """Cut (False) or restore (True) the station's side of the network, for tests and the control API.

        Cutting closes the socket without a closing handshake, as a pulled cable would, and keeps the
        link down (no dials) until the network is restored.
        """
        if up == self._network_up:
            return
        self._network_up = up
        if up:
            log.info("network restored: redialling the CSMS after the back-off wait")
            self._network_restored.set()
            return
        log.warning(
            "network cut: dropping the CSMS socket without a closing handshake; no dials until restored"
        )
        self._network_restored = trio.Event()
        self._abrupt = True
        if self._reconnect_reason is None:
            self._reconnect_reason = "network cut"
        if self._attempt_scope is not None:
            self._attempt_scope.cancel()
        if self._idle_scope is not None:
            self._idle_scope.cancel()

    async def wait_state(self, state: LinkState) -> None:
        """Return once the link is in `state` (or enters it, however briefly)."""
        if self._state is state:
            await trio.lowlevel.checkpoint()
            return
        await self._wait_entry(state)

    async def wait_connected(self) -> Connection:
        """The open connection, waiting for the next one if there is none or it is being closed.

        The connection may close at any time after; its methods then raise LinkDown.
        """
        if self._connection is not None and self._reconnect_reason is None:
            await trio.lowlevel.checkpoint()
            return self._connection
        await self._wait_entry(LinkState.CONNECTED)
        assert self._last_connection is not None
        return self._last_connection

    async def _wait_entry(self, state: LinkState) -> None:
        event = trio.Event()
        self._state_waiters.setdefault(state, []).append(event)
        await event.wait()

    # -- used by run_link and Connection only -------------------------------------------------

    def _request_reconnect(self, generation: int, reason: str, *, abrupt: bool) -> None:
        if (
            generation != self._generation
            or self._attempt_scope is None
            or self._reconnect_reason is not None
        ):
            self._ignored_reconnects += 1
            log.debug("ignoring reconnect request for generation %d (%s)", generation, reason)
            return
        self._reconnects += 1
        self._reconnect_reason = reason
        self._abrupt = abrupt
        log.warning("reconnecting to the CSMS (connection %d): %s", generation, reason)
        if self._work_scope is not None and not abrupt:
            self._work_scope.cancel()
        else:
            self._attempt_scope.cancel()

    def _set_state(self, state: LinkState) -> None:
        self._state = state
        for event in self._state_waiters.pop(state, []):
            event.set()

    def _begin_attempt(self, scope: trio.CancelScope, endpoint: CsmsEndpoint) -> int:
        self._generation += 1
        self._dials += 1
        self._endpoint = endpoint
        self._attempt_scope = scope
        self._reconnect_reason = None
        self._abrupt = not self._network_up
        if self._abrupt:
            scope.cancel()
        self._set_state(LinkState.CONNECTING)
        return self._generation

    def _connected(self, connection: Connection, work: trio.CancelScope) -> None:
        self._connections += 1
        self._connection = self._last_connection = connection
        self._work_scope = work
        self._set_state(LinkState.CONNECTED)

    def _failed(self, description: str, security: SecurityFailure | None = None) -> None:
        self._last_failure = description
        if security is not None and self._on_security_failure is not None:
            self._on_security_failure(security, description)

    def _end_attempt(self) -> bool:
        """Forget the attempt; True if it had reached CONNECTED."""
        was_connected = self._state is LinkState.CONNECTED
        if not was_connected:
            self._failed_dials += 1
        self._connection = None
        self._attempt_scope = self._work_scope = None
        self._set_state(LinkState.OFFLINE)
        return was_connected


@final
class Connection:
    """One open websocket to the CSMS; usable exactly as long as its attempt's cancel scope lives."""

    def __init__(
        self,
        link: Link,
        ws: trio_websocket.WebSocketConnection,
        generation: int,
        version: OcppVersion,
        endpoint: CsmsEndpoint,
        pong_timeout_s: float,
        *,
        ping_interval_s: float = 0.0,
    ) -> None:
        self._link = link
        self._ws = ws
        self.generation = generation
        self.version = version
        self.endpoint = endpoint
        self._pong_timeout_s = pong_timeout_s
        self._ping_interval_s = ping_interval_s  # 0: WebSocketPingInterval 0, the station sends no pings
        self._ping_changed = trio.Event()
        self.read_from = False  # someone reads it: they learn of its end from receive_text

    async def send_text(self, text: str) -> None:
        """Send one OCPP-J frame.

        Raises:
            LinkDown: the connection is gone. The link has been told (once per generation) and redials.
        """
        if not self._link.network_up:
            # Cut by set_network: the socket closes only when the attempt's task unwinds, and until
            # then a frame from another task would still reach the CSMS, which a pulled cable forbids.
            raise LinkDown(f"send refused on connection {self.generation}: network cut")
        try:
            await self._ws.send_message(text)
        except (trio_websocket.ConnectionClosed, LinkDown) as exc:
            self._link._request_reconnect(self.generation, "send failed", abrupt=True)
            raise LinkDown(f"send failed on connection {self.generation}: {_describe(exc)}") from None

    async def responsive(self) -> bool:
        """Whether the CSMS end still answers a websocket ping within the pong timeout.

        A link that dies without a FIN or RST (a cellular modem losing its bearer) looks like a CSMS
        that does not answer until the keepalive's next ping; a caller whose CALL timed out asks here
        which of the two it was. False: the link has been told to redial.

        With pings off (WebSocketPingInterval 0: "no ping/pong, or the CSMS pings") nothing is sent and
        the answer is True: the station cannot tell, and a CSMS may rely on getting no pings.
        """
        if not self._link.network_up:
            await trio.lowlevel.checkpoint()
            return False  # cut (set_network): no frame goes out, not even a ping
        if self._ping_interval_s <= 0:
            await trio.lowlevel.checkpoint()
            return True
        with trio.move_on_after(self._pong_timeout_s):
            try:
                await self._ws.ping()  # a random payload: never clashes with the keepalive's
            except trio_websocket.ConnectionClosed:
                return False  # the link learns of it from the reader
            return True
        reason = f"no pong within {self._pong_timeout_s:g} s after an unanswered call"
        self._link._request_reconnect(self.generation, reason, abrupt=True)
        return False

    def set_ping_interval(self, seconds: float) -> None:
        """WebSocketPingInterval changed while connected: the next keepalive ping goes `seconds` from
        now (0: from now on the station sends no pings, and the probe after a timeout none either)."""
        self._ping_interval_s = seconds
        self._ping_changed.set()
        self._ping_changed = trio.Event()

    async def keepalive(self) -> None:
        """Ping every WebSocketPingInterval; no pong within the pong timeout ends the connection."""
        # libocpp #1175: a pong timeout must end the connection like any other loss, so that we redial.
        for sequence in itertools.count():
            await self._ping_due()
            with trio.move_on_after(self._pong_timeout_s):
                await self._ws.ping(struct.pack("!Q", sequence))
                continue
            raise LinkDown(f"no pong within {self._pong_timeout_s:g} s: the CSMS or the network is gone")

    async def _ping_due(self) -> None:
        """Until the next ping is due: a new interval restarts the wait."""
        while True:
            changed = self._ping_changed
            interval = self._ping_interval_s if self._ping_interval_s > 0 else math.inf
            with trio.move_on_after(interval) as wait:
                await changed.wait()
            if wait.cancelled_caught:
                return

    async def receive_text(self) -> str:
        """The next OCPP-J frame from the CSMS. Frames that arrived before the connection ended are
        still returned; then LinkDown.

        Read straight from trio-websocket, with no task in between: one task switch less per frame.

        Raises:
            LinkDown: the connection is gone; no frame will follow on it.
        """
        self.read_from = True
        while True:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                raise LinkDown(_describe(exc)) from None
            if isinstance(message, str):
                return message
            log.warning(
                "dropping a %d-byte binary frame from the CSMS: OCPP-J uses text frames", len(message)
            )


Serve = Callable[[Connection], Awaitable[None]]
Connector = Callable[[CsmsEndpoint], Awaitable[trio.abc.Stream]]
"""Opens the byte stream to an endpoint (TCP, or TLS with its handshake done). Expected failures are
OSError or LinkDown. Tests inject one that returns an in-memory stream."""


async def open_csms_stream(endpoint: CsmsEndpoint) -> trio.abc.Stream:
    """The default Connector: TCP for profiles 0-1, TLS 1.2+ with a finished handshake for 2-3.

    Raises:
        LinkDown: TLS configuration or handshake failure, with a sentence saying which.
        OSError: the host cannot be resolved or reached.
    """
    host, port = _host_port(endpoint.url)
    if endpoint.security_profile not in TLS_PROFILES:
        return await trio.open_tcp_stream(host, port)
    try:
        context = client_context(
            security_profile=endpoint.security_profile,
            ca_bundle=endpoint.ca_bundle,
            client_cert=endpoint.client_cert,
            client_key=endpoint.client_key,
        )
    except TlsConfigError as exc:
        raise LinkDown(str(exc)) from None
    tcp = await trio.open_tcp_stream(host, port)
    witnessed = _WitnessedStream(tcp)
    stream = trio.SSLStream(witnessed, context, server_hostname=host, https_compatible=True)
    try:
        await stream.do_handshake()
    except trio.BrokenResourceError as exc:
        await trio.aclose_forcefully(stream)
        cause = exc.__cause__
        if isinstance(cause, OSError):  # ssl.SSLError included
            description = describe_tls_failure(
                cause, host, witnessed.witness, client_certificate=endpoint.security_profile == 3
            )
            raise LinkDown(description, security=classify_tls_failure(cause)) from None
        raise LinkDown(_describe(exc, host)) from None
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    witnessed.witness.done = True  # handshake over: the stream only passes bytes on from here
    return stream


async def run_link(
    settings: LinkSettings,
    link: Link,
    serve: Serve,
    *,
    rng: random.Random,
    connector: Connector = open_csms_stream,
    plan_source: PlanSource | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> NoReturn:
    """Keep the station connected to a CSMS for ever, running `serve(conn)` on each open connection.

    `serve` returning closes the connection politely and redials; an exception from it that is not an
    expected network failure (LinkDown, ConnectionClosed, OSError, ...) is a bug and crashes the link.
    Started (task_status) at once; use `link.wait_connected()` to wait for a connection.

    Without `plan_source` the link dials `settings.endpoints` by priority with `settings.backoff`'s
    attempts per endpoint. With one, it asks it for the plan at start and after every lost connection
    (2.0.1 B10.FR.03 / .04), and redials the lost connection's slot first while the plan still has it.
    """
    if plan_source is None:
        current = DialPlan(settings.endpoints_by_priority, settings.backoff.attempts_per_endpoint)
    else:
        current = await plan_source()
    plan = _reconnect_plan(settings, current, rng)
    dial = plan.first_dial()
    task_status.started()
    while True:
        if not link.network_up:
            link._set_state(LinkState.NETWORK_DOWN)
            await link._network_restored.wait()
            dial = plan.connection_lost()
        endpoint = current.endpoints[dial.endpoint_index]
        if dial.wait_s > 0:
            link._endpoint = endpoint
            link._set_state(LinkState.BACKING_OFF)
            log.info("dialling CSMS %s in %.1f s", endpoint.url, dial.wait_s)
            with trio.CancelScope() as idle:
                link._idle_scope = idle
                await trio.sleep(dial.wait_s)
            link._idle_scope = None
            if not link.network_up:
                continue
        if not await _attempt(_with_plan(settings, current), link, endpoint, serve, connector):
            dial = plan.dial_failed()
        elif plan_source is None:
            dial = plan.connection_lost()
        else:
            current = await plan_source()
            plan = _reconnect_plan(settings, current, rng)
            slots = [e.priority for e in current.endpoints]
            dial = plan.connection_lost(slots.index(endpoint.priority) if endpoint.priority in slots else 0)


def _with_plan(settings: LinkSettings, plan: DialPlan) -> LinkSettings:
    if plan.ping_interval_s is None or plan.ping_interval_s == settings.ping_interval_s:
        return settings
    return dataclasses.replace(settings, ping_interval_s=plan.ping_interval_s)


def _reconnect_plan(settings: LinkSettings, plan: DialPlan, rng: random.Random) -> ReconnectPlan:
    base = settings.backoff if plan.backoff is None else plan.backoff
    backoff = dataclasses.replace(base, attempts_per_endpoint=plan.attempts_per_endpoint)
    return ReconnectPlan(backoff, len(plan.endpoints), rng)


# The failures an attempt expects; anything else is a bug and propagates.
_EXPECTED = (
    LinkDown,
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
    OSError,  # includes ssl.SSLError, socket.gaierror
    trio.BrokenResourceError,
    trio.TooSlowError,
)


async def _attempt(
    settings: LinkSettings, link: Link, endpoint: CsmsEndpoint, serve: Serve, connect: Connector
) -> bool:
    """One dial and, if it works, one connection's life. True if the connection came up."""
    with trio.CancelScope() as attempt:
        generation = link._begin_attempt(attempt, endpoint)
        log.info(
            "dialling CSMS %s (security profile %d, connection %d)",
            endpoint.url,
            endpoint.security_profile,
            generation,
        )
        try:
            await _connect_and_serve(settings, link, endpoint, generation, serve, connect)
        except* _EXPECTED as group:
            leaf = _first_leaf(group)
            description = _describe(leaf, _host_port(endpoint.url)[0], settings)
            link._failed(description, _security_failure(leaf))
            if link.state is LinkState.CONNECTED:
                log.warning("CSMS connection %d lost: %s", generation, description)
            else:
                log.warning("cannot connect to CSMS %s: %s", endpoint.url, description)
    return link._end_attempt()


async def _connect_and_serve(
    settings: LinkSettings,
    link: Link,
    endpoint: CsmsEndpoint,
    generation: int,
    serve: Serve,
    connect: Connector,
) -> None:
    subprotocol = settings.version.subprotocol
    host, port = _host_port(endpoint.url)
    stream: trio.abc.Stream | None = None
    try:
        async with trio.open_nursery() as nursery:  # owns trio-websocket's reader task
            with trio.fail_after(settings.connect_timeout_s):
                stream = await connect(endpoint)
                reporting = _ReportingStream(stream, _silent_close_hint(endpoint))
                ws = await trio_websocket.wrap_client_stream(
                    nursery,
                    reporting,  # type: ignore[arg-type]
                    _host_header(endpoint.url, host, port),
                    _resource(endpoint.url, settings.station_id),
                    subprotocols=[subprotocol],
                    extra_headers=_auth_headers(settings.station_id, endpoint),
                )
            if ws.subprotocol != subprotocol:
                # OCPP-J: without an agreed subprotocol neither side knows the message set.
                raise LinkDown(
                    f"CSMS did not select subprotocol {subprotocol} (it chose {_chosen(ws.subprotocol)}); "
                    "refusing to talk"
                )
            connection = Connection(
                link,
                ws,
                generation,
                settings.version,
                endpoint,
                settings.pong_timeout_s,
                ping_interval_s=settings.ping_interval_s,
            )
            with trio.CancelScope() as work:
                link._connected(connection, work)
                log.info("connected to CSMS %s as %s (%s)", endpoint.url, settings.station_id, subprotocol)
                async with trio.open_nursery() as tasks:
                    tasks.start_soon(_notice_close, connection, ws, reporting)
                    tasks.start_soon(connection.keepalive)
                    await serve(connection)
                    log.info("session on connection %d ended; closing it", generation)
                    tasks.cancel_scope.cancel()
            if not link._abrupt:
                with trio.move_on_after(settings.close_timeout_s):
                    await ws.aclose()
            nursery.cancel_scope.cancel()
    finally:
        if stream is not None:
            await trio.aclose_forcefully(stream)


async def _notice_close(
    connection: Connection, ws: trio_websocket.WebSocketConnection, stream: _ReportingStream
) -> None:
    """End the attempt when the CSMS hangs up on a session that does not read (nothing else would).

    A session that reads learns it from receive_text, after the frames that came before the close;
    a broken transport ends the attempt from trio-websocket's reader already (_ReportingStream).
    """
    await stream.peer_closed.wait()
    if not connection.read_from:
        closed = ws.closed
        raise LinkDown(
            "connection closed" if closed is None else _describe(trio_websocket.ConnectionClosed(closed))
        )


@final
class _WitnessedStream(trio.abc.Stream):
    """The TCP stream under TLS, showing what the CSMS sends to a HandshakeWitness until the handshake
    is over, so a refusal without a clear alert can still be named (runtime/tls.py)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self.witness = HandshakeWitness()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self._stream.receive_some(max_bytes)
        if not self.witness.done:
            self.witness.feed(data)
        return data

    async def aclose(self) -> None:
        await self._stream.aclose()


@final
class _ReportingStream(trio.abc.Stream):
    """Turns a broken transport, or one closed before the CSMS said a word, into LinkDown with a reason,
    and a refused upgrade into ConnectionRejected with its HTTP status.

    trio-websocket's reader swallows BrokenResourceError and EOF: during the opening handshake that
    would hang until the connect timeout and lose the reason. A TLS 1.3 server that refuses our client
    certificate does so after our handshake has finished, often by just closing the connection.

    trio-websocket 0.12 also never ends the handshake when the CSMS refuses the upgrade with a response
    whose body runs until the connection closes (no Content-Length, as Daphne answers 403 or 500): it
    stops reading at EOF without telling wsproto, so ConnectionRejected never comes (docs/link.md). So
    the response's status line is read here: anything but 101 is a refusal, reported when the CSMS
    closes or after REFUSAL_GRACE_S, whichever is first.
    """

    def __init__(self, stream: trio.abc.Stream, silent_close_hint: str) -> None:
        self._stream = stream
        self._silent_close_hint = silent_close_hint
        self._heard_from_peer = False
        self._status_line: bytearray | None = bytearray()  # None once the status is known
        self._refused_with: int | None = None
        self._refusal_deadline = math.inf
        self.peer_closed = trio.Event()  # the CSMS ended the TCP stream (EOF) after the handshake

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._stream.send_all(data)
        except trio.BrokenResourceError as exc:
            raise _broken(exc) from None

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._status_line is None and self._refused_with is None:
            # The handshake's answer was 101: from here on, just a transport that names its failures.
            try:
                received = await self._stream.receive_some(max_bytes)
            except trio.BrokenResourceError as exc:
                raise _broken(exc) from None
            if not received:
                self.peer_closed.set()
            return received
        data: bytes | bytearray = b""
        try:
            with trio.move_on_at(self._refusal_deadline):
                data = await self._stream.receive_some(max_bytes)
        except trio.BrokenResourceError as exc:
            if self._refused_with is None:
                raise _broken(exc) from None
        if data:
            self._heard_from_peer = True
            if self._status_line is not None:
                self._read_status(data)
            return data
        if self._refused_with is not None:
            # Closed, broken or out of time while the refusal's body was arriving.
            raise trio_websocket.ConnectionRejected(self._refused_with, (), None)
        if not self._heard_from_peer:
            raise LinkDown(
                f"CSMS closed the connection before answering the handshake{self._silent_close_hint}"
            )
        return data

    def _read_status(self, data: bytes | bytearray) -> None:
        assert self._status_line is not None
        self._status_line += data[: _MAX_STATUS_LINE - len(self._status_line)]
        if b"\n" not in self._status_line and len(self._status_line) < _MAX_STATUS_LINE:
            return
        match = _STATUS_LINE.match(self._status_line)
        self._status_line = None
        # An unreadable status line is left to wsproto, which refuses it.
        if match is not None and int(match[1]) != _HTTP_SWITCHING_PROTOCOLS:
            self._refused_with = int(match[1])
            self._refusal_deadline = trio.current_time() + REFUSAL_GRACE_S

    async def send_eof(self) -> None:
        raise NotImplementedError  # trio-websocket never half-closes

    async def aclose(self) -> None:
        await self._stream.aclose()


def _broken(exc: trio.BrokenResourceError) -> LinkDown:
    """A transport that broke after our TLS handshake finished. A TLS 1.3 CSMS refuses our client
    certificate only then, with an alert (certificate_required, unknown_ca, bad_certificate, ...): that
    is FailedToAuthenticateAtCsms as much as during the handshake, so the failure keeps its class.
    Other alerts and plain closes carry none (no security event names them; docs/link.md)."""
    return LinkDown(_describe(exc), security=_security_failure(exc))


def _describe(exc: BaseException, host: str = "CSMS", settings: LinkSettings | None = None) -> str:
    """One line on why an attempt ended. Never includes request headers (the password is in one)."""
    if isinstance(exc, trio_websocket.ConnectionRejected):
        if exc.status_code == _HTTP_UNAUTHORIZED:
            return (
                "CSMS refused our credentials (HTTP 401 Unauthorized): "
                "check the station id and Basic-auth password"
            )
        return f"CSMS refused the websocket upgrade with HTTP {exc.status_code}"
    if isinstance(exc, trio_websocket.ConnectionTimeout | trio.TooSlowError):
        limit = "" if settings is None else f" within {settings.connect_timeout_s:g} s"
        return f"no websocket connection{limit}"
    if isinstance(exc, trio_websocket.ConnectionClosed):
        reason = exc.reason
        if reason is None:
            return "connection closed"
        text = f": {reason.reason}" if reason.reason else ""
        return f"connection closed ({reason.code} {reason.name}{text})"
    if isinstance(exc, ssl.SSLError):
        return describe_tls_failure(exc, host)
    if isinstance(exc, trio.BrokenResourceError):
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            return describe_tls_failure(cause, host)
        if isinstance(cause, OSError):
            return f"transport broken: {cause.strerror or type(cause).__name__}"
        return "transport broken"
    if isinstance(exc, OSError):
        return f"cannot reach {host}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def _security_failure(exc: BaseException) -> SecurityFailure | None:
    """The security event an attempt's failure is, if any: a refused TLS handshake (classified where it
    failed), or HTTP 401 to our Basic-auth credentials."""
    if isinstance(exc, LinkDown):
        return exc.security
    if isinstance(exc, trio_websocket.ConnectionRejected) and exc.status_code == _HTTP_UNAUTHORIZED:
        return SecurityFailure.CREDENTIALS_REFUSED
    if isinstance(exc, ssl.SSLError):
        return classify_tls_failure(exc)
    if isinstance(exc, trio.BrokenResourceError) and isinstance(exc.__cause__, ssl.SSLError):
        return classify_tls_failure(exc.__cause__)
    return None


def _chosen(subprotocol: str | None) -> str:
    # The CSMS chose the header's text and its length: a bounded quote of it.
    return "None" if subprotocol is None else quote_peer_text(subprotocol)


def _silent_close_hint(endpoint: CsmsEndpoint) -> str:
    if endpoint.security_profile == 3:
        return " (a TLS 1.3 CSMS does this when it does not trust our client certificate)"
    if endpoint.security_profile == 2:
        return " (a TLS 1.3 CSMS does this when it requires a client certificate: security profile 3)"
    return ""


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None  # CsmsEndpoint checked it
    return parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)


def _host_header(url: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    default = 443 if urlsplit(url).scheme == "wss" else 80
    return shown if port == default else f"{shown}:{port}"


def _resource(url: str, station_id: str) -> str:
    """`<path of url>/<station id>`: OCPP-J puts the identity in the last path segment."""
    return urlsplit(url).path.rstrip("/") + "/" + quote(station_id, safe="")


def _auth_headers(station_id: str, endpoint: CsmsEndpoint) -> list[tuple[bytes, bytes]]:
    if endpoint.security_profile not in BASIC_AUTH_PROFILES or endpoint.password is None:
        return []
    token = base64.b64encode(f"{station_id}:{endpoint.password}".encode()).decode("ascii")
    return [(b"Authorization", f"Basic {token}".encode("ascii"))]

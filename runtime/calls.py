"""Per-connection OCPP-J call manager: our one CALL in flight, the CSMS's CALLs served concurrently.

It owns the reading side of one `Connection` and serialises every frame it writes. It never retries
or queues a call across connections (that is the outbox sender's job) and never blocks its reader on
a handler.
"""

from __future__ import annotations

import enum
import itertools
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, NoReturn, Protocol, final

import trio

from evstation.protocol.errors import ErrorKind
from evstation.protocol.messages import (
    OcppModel,
    PayloadError,
    UnknownAction,
    parse_request,
    parse_response,
    request_model,
    response_model,
)
from evstation.protocol.rpc import JsonObject
from evstation.protocol.session import (
    CallReceived,
    Dropped,
    ErrorReceived,
    InvalidCall,
    InvalidResult,
    ResultReceived,
    RpcSession,
    Unmatched,
    error_frame,
    result_frame,
)
from evstation.protocol.versions import OcppVersion
from evstation.records import record
from evstation.runtime.link import LinkDown
from evstation.runtime.logs import FaultLimiter, clip, quote, suppressed_note

__all__ = [
    "CallErrorReceived",
    "CallFailed",
    "CallManager",
    "CallTimeout",
    "Direction",
    "FrameConnection",
    "Handler",
    "HandlerError",
    "InvalidRequest",
    "InvalidResponse",
    "MessageLog",
    "MessageLogEntry",
    "NoAnswer",
]

log = logging.getLogger(__name__)

# How many offset-less date-time paths one log line names (a peer controls how many there are).
_NAIVE_PATHS_SHOWN = 3
# An answer not here this long after the CALL prompts one websocket ping, so that a silently dead link
# (a modem that lost its bearer) fails the call after this plus the pong timeout, not after the whole
# message timeout: an Authorize is decided offline in seconds, not half a minute.
PROBE_AFTER_S: Final = 5.0


class FrameConnection(Protocol):
    """What the call manager needs of `runtime.link.Connection`."""

    @property
    def version(self) -> OcppVersion: ...

    @property
    def generation(self) -> int: ...

    async def send_text(self, text: str) -> None: ...

    async def receive_text(self) -> str: ...

    async def responsive(self) -> bool:
        """The peer still answers (a websocket ping); False: the connection is gone."""
        ...

    def set_ping_interval(self, seconds: float) -> None:
        """WebSocketPingInterval changed: applies to this connection from now (0: no pings)."""
        ...


class Direction(enum.Enum):
    IN = "in"  # CSMS -> station
    OUT = "out"  # station -> CSMS


@final
@record
class MessageLogEntry:
    """One OCPP-J frame as it crossed the wire, for the control API and the demo timeline."""

    direction: Direction
    frame: str
    action: str | None
    generation: int
    at: float  # trio.current_time() when it was sent/received


class MessageLog(Protocol):
    """Where frames are published (runtime.events.Broadcaster[MessageLogEntry] fits)."""

    def publish(self, item: MessageLogEntry, /) -> None: ...

    def subscriber_count(self) -> int: ...


class CallFailed(Exception):
    """Our call ended without a usable CALLRESULT. Expected on a flaky CSMS: handle, never crash."""

    def __init__(self, action: str, message_id: str, detail: str) -> None:
        super().__init__(f"{action} ({message_id}): {detail}")
        self.action = action
        self.message_id = message_id


class CallTimeout(CallFailed):
    """No answer within the message timeout (2.0.1 OCPPCommCtrlr.MessageTimeout)."""


class CallErrorReceived(CallFailed):
    """The CSMS answered with a CALLERROR."""

    def __init__(self, action: str, message_id: str, code: str, description: str) -> None:
        # The CSMS chose both texts and their length: the message (logged, kept with a dead letter)
        # carries a bounded prefix; the attributes keep them whole.
        super().__init__(action, message_id, f"CALLERROR {clip(code)}: {clip(description)}")
        self.code = code
        self.description = description


class InvalidResponse(CallFailed):
    """The CSMS answered with a CALLRESULT whose payload breaks the schema."""


class InvalidRequest(CallFailed):
    """Our own payload breaks the schema (or is the model of another action); nothing was sent.

    A bug on our side, logged as an error; retrying the same payload cannot help.
    """


class HandlerError(Exception):
    """A handler refuses a CSMS request with a specific CALLERROR (e.g. OccurrenceConstraintViolation
    for an EVSE id out of range). Anything else a handler raises is a bug: InternalError, logged."""

    def __init__(self, kind: ErrorKind, description: str) -> None:
        super().__init__(f"{kind.value}: {description}")
        self.kind = kind
        self.description = description


class NoAnswer(Exception):
    """A handler decides that the CSMS's CALL gets no answer at all (1.6 section 4.2: a Rejected
    station does not respond to CSMS-initiated messages)."""


Handler = Callable[[OcppModel], Awaitable[OcppModel | dict[str, object]]]


@final
class _Waiter:
    __slots__ = ("done", "on_answer", "outcome")

    def __init__(self, on_answer: Callable[[], None] | None) -> None:
        self.done = trio.Event()
        self.on_answer = on_answer
        self.outcome: ResultReceived | ErrorReceived | InvalidResult | None = None


@final
class CallManager:
    """One per connection. Start `run` in the connection nursery, then `call` from any task.

    `handlers` maps each CSMS action we answer to its handler; an action the version defines but no
    handler serves is answered NotSupported (one the version does not define never reaches here: the
    RPC layer answers it NotImplemented). Each CSMS CALL is handled in its own task so a slow handler
    never stalls the reader (and so never delays the answer to our own pending call).
    """

    def __init__(
        self,
        conn: FrameConnection,
        handlers: Mapping[str, Handler],
        *,
        timeout_s: float,
        message_log: MessageLog | None = None,
        new_message_id: Callable[[], str] | None = None,
    ) -> None:
        self._conn = conn
        self._session = RpcSession(conn.version)
        self._handlers = handlers
        self.timeout_s = timeout_s
        self._message_log = message_log
        self._new_message_id = new_message_id or _message_ids()
        self._call_lock = trio.Lock()
        self._send_lock = trio.Lock()
        self._waiter: _Waiter | None = None
        self._closed = False  # `run` has ended: no answer will ever be read on this connection
        self._serving = 0  # CSMS calls received and not answered yet
        self._served = trio.Event()
        self._told_naive_datetimes = False
        # A peer can send bad frames as fast as the link carries them: a few lines a minute per kind.
        self._faults = FaultLimiter()
        # (action, text) of the stored payload `validate_ahead` found valid: `call` does not judge that
        # very text again. One slot: the outbox sender validates only the message after its current one.
        self._valid_ahead: tuple[str, str] | None = None

    @property
    def version(self) -> OcppVersion:
        return self._conn.version

    async def call(
        self,
        action: str,
        payload: OcppModel | Mapping[str, object],
        *,
        on_sent: Callable[[], None] | None = None,
        on_answer: Callable[[], None] | None = None,
    ) -> OcppModel:
        """Send one CALL and wait for its answer; waits first for any call of ours still in flight.

        `on_sent` runs once the frame is on the connection: a call another task makes from then on
        goes out after this one is answered (or timed out). `on_answer` runs in the reading task as a
        CALLRESULT arrives, before any CSMS call received after it is handed to its handler, while
        this task resumes only later: it marks where the answer falls among the CSMS's calls (an
        answer's token info must not outlive a ClearCache the CSMS sent after it).

        A checkpoint. Cancellation forgets the call (a late answer is logged and dropped).

        A mapping payload is validated against the action's request model first, exactly like a model is
        on construction: nothing leaves the station unvalidated (a `JsonObject`'s text is validated, and
        sent, as it is).

        Raises:
            InvalidRequest: the payload breaks the schema; nothing was sent.
            CallTimeout: no answer within `timeout_s` of sending, from a peer that still answers a
                ping (up to the link's pong timeout more); without a pong it is LinkDown. A ping also
                goes out once the answer is PROBE_AFTER_S late: without its pong, LinkDown comes then.
            CallErrorReceived: the CSMS answered with a CALLERROR.
            InvalidResponse: the answer broke the schema.
            LinkDown: the connection failed while sending or waiting, or was already gone: a caller
                outside the connection's nursery (an Authorize) learns it at once, not after the
                message timeout.
        """
        self._check_request(action, payload)
        await _acquire(self._call_lock)
        try:
            if self._closed:
                await trio.lowlevel.checkpoint()
                raise LinkDown(f"connection {self._conn.generation} is closed; {action} not sent")
            message_id = self._new_message_id()
            frame = self._session.start_call(message_id, action, payload)
            waiter = self._waiter = _Waiter(on_answer)
            try:
                with trio.move_on_after(self.timeout_s):
                    await self._send(frame, action)
                    if on_sent is not None:
                        on_sent()
                    await self._wait_probing(waiter)
            finally:
                self._waiter = None
                self._session.cancel_call()
            outcome = waiter.outcome
        finally:
            self._call_lock.release()
        if outcome is None and self._closed:
            raise LinkDown(f"connection {self._conn.generation} closed before {action} was answered")
        if outcome is None:
            # A silent link looks like a CSMS that did not answer. Only a CSMS that still answers a ping
            # failed to process the call: that costs a transaction message one of its attempts, a lost
            # link does not (docs/storage.md).
            if not await self._conn.responsive():
                raise LinkDown(
                    f"no answer to {action} within {self.timeout_s:g} s nor to a ping: "
                    f"connection {self._conn.generation} is gone"
                )
            raise CallTimeout(action, message_id, f"no answer within {self.timeout_s:g} s")
        if isinstance(outcome, ResultReceived):
            return outcome.response
        if isinstance(outcome, ErrorReceived):
            error = outcome.error
            raise CallErrorReceived(action, message_id, error.code, error.description)
        raise InvalidResponse(action, message_id, f"{outcome.code}: {clip(outcome.description)}")

    async def _wait_probing(self, waiter: _Waiter) -> None:
        """Until the answer (or the connection's end); one slower than PROBE_AFTER_S prompts one ping
        while the wait goes on. Without a pong the link is told to redial, which ends the wait."""
        with trio.move_on_after(PROBE_AFTER_S):
            await waiter.done.wait()
            return
        # Shielded, and ended by this task alone: a probe cancelled from outside as well (the connection
        # dropping right behind the answer) would re-raise that cancellation here while it unwinds,
        # discarding an answer already in hand, whose message would then go out again.
        probe = trio.CancelScope(shield=True)

        async def probing() -> None:
            with probe:
                await self._conn.responsive()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probing)
            try:
                await waiter.done.wait()
            finally:
                probe.cancel()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Read frames until the connection fails (LinkDown propagates); handlers run in child tasks."""
        try:
            await self._read(task_status)
        finally:
            self._closed = True
            if self._waiter is not None:
                self._waiter.done.set()
            self._served.set()
            for kind, count in self._faults.pending().items():
                log.warning("connection %d closed; %d more %s not logged", self._conn.generation, count, kind)

    async def _read(self, task_status: trio.TaskStatus[None]) -> NoReturn:
        async with trio.open_nursery() as handlers:
            task_status.started()
            while True:
                text = await self._conn.receive_text()
                event = self._session.receive(text)
                self._publish(Direction.IN, text, _action_of(event))
                if isinstance(event, CallReceived | ResultReceived) and event.naive_datetimes:
                    self._tell_naive_datetimes(_action_of(event), event.naive_datetimes)
                if isinstance(event, CallReceived):
                    handlers.start_soon(self._serve, event)
                elif isinstance(event, InvalidCall):
                    self._fault(
                        "refused CSMS calls", "refused CSMS call %s: %s", event.message_id, event.reason
                    )
                    handlers.start_soon(self._send, event.reply_frame, None)
                elif isinstance(event, ResultReceived | ErrorReceived | InvalidResult):
                    waiter = self._waiter
                    if waiter is not None:
                        waiter.outcome = event
                        if isinstance(event, ResultReceived) and waiter.on_answer is not None:
                            waiter.on_answer()
                        waiter.done.set()
                elif isinstance(event, Unmatched):
                    self._fault(
                        "unmatched answers",
                        "dropped answer for no call in flight: %s (%s)",
                        event.frame,
                        event.reason,
                    )
                else:
                    assert isinstance(event, Dropped)
                    self._fault(
                        "unreadable frames", "dropped unreadable frame: %s (%s)", event.frame, event.reason
                    )

    def _fault(self, kind: str, message: str, subject: str, reason: str) -> None:
        """Log a fault in the peer's input: bounded quotes of its text, rate-limited per kind."""
        suppressed = self._faults.admit(kind, trio.current_time())
        if suppressed is not None:
            log.warning(message + "%s", quote(subject), clip(reason), suppressed_note(suppressed))

    def _tell_naive_datetimes(self, action: str | None, paths: tuple[str, ...]) -> None:
        # Once per connection: a CSMS that does this does it in every Heartbeat answer.
        if self._told_naive_datetimes:
            return
        self._told_naive_datetimes = True
        log.warning(
            "CSMS sent a date-time without a UTC offset (%s: %s); taking it as UTC "
            "(said once per connection)",
            action,
            ", ".join(paths[:_NAIVE_PATHS_SHOWN]) + (", ..." if len(paths) > _NAIVE_PATHS_SHOWN else ""),
        )

    async def wait_answers_sent(self) -> None:
        """Wait until every CSMS call received so far has been answered (or the connection closed):
        what a block that ends the connection (Reset) waits for, so its own answer goes out first."""
        while self._serving and not self._closed:
            served = self._served
            await served.wait()

    async def _serve(self, event: CallReceived) -> None:
        self._serving += 1
        try:
            await self._answer(event)
        finally:
            self._serving -= 1
            self._served.set()
            self._served = trio.Event()

    async def _answer(self, event: CallReceived) -> None:
        call = event.call
        handler = self._handlers.get(call.action)
        if handler is None:
            frame = error_frame(
                self.version, call.message_id, ErrorKind.NOT_SUPPORTED, f"{call.action} is not supported"
            )
        else:
            try:
                response = await handler(event.request)
            except NoAnswer as exc:
                log.info("not answering %s: %s", call.action, exc)
                return
            except HandlerError as exc:
                frame = error_frame(self.version, call.message_id, exc.kind, exc.description)
            except Exception as exc:
                # A bug in a handler must not take the connection down, but it must be seen: answer
                # InternalError and log the traceback.
                log.exception("handler for %s failed", call.action)
                frame = error_frame(self.version, call.message_id, ErrorKind.INTERNAL, type(exc).__name__)
            else:
                problem = _response_problem(self.version, call.action, response)
                if problem is None:
                    frame = result_frame(call.message_id, response)
                else:
                    # Never answer with a payload the schema forbids: the CSMS would refuse it anyway.
                    log.error("handler for %s returned an invalid response: %s", call.action, problem)
                    frame = error_frame(
                        self.version, call.message_id, ErrorKind.INTERNAL, "invalid response payload"
                    )
        await self._send(frame, call.action)

    def validate_ahead(self, action: str, payload: JsonObject) -> None:
        """Validate a stored payload that is to be sent next, while our call waits for its answer.

        Work moved off the round trip, not skipped: `call` sends exactly that text (a str, immutable)
        without judging it again; a payload found invalid here is refused by `call` as usual.
        """
        try:
            parse_request(self.version, action, payload)
        except (UnknownAction, PayloadError):
            return
        self._valid_ahead = (action, payload.text)

    def _check_request(self, action: str, payload: OcppModel | Mapping[str, object]) -> None:
        if isinstance(payload, JsonObject) and self._valid_ahead is not None:
            valid_action, valid_text = self._valid_ahead
            self._valid_ahead = None
            if valid_action == action and valid_text == payload.text:
                return
        try:
            model = request_model(self.version, action)
            if isinstance(payload, OcppModel):
                if not isinstance(payload, model):
                    raise PayloadError(
                        ErrorKind.FORMAT, "", f"{type(payload).__name__} is not the {action} request"
                    )
            else:
                parse_request(self.version, action, payload)
        except UnknownAction:
            problem = f"OCPP {self.version.value} has no action {action!r}"
        except PayloadError as exc:
            problem = f"{exc.path}: {exc.description}" if exc.path else exc.description
        else:
            return
        log.error("not sending %s: %s", action, problem)
        raise InvalidRequest(action, "-", f"invalid request, not sent: {problem}")

    async def _send(self, frame: str, action: str | None) -> None:
        await _acquire(self._send_lock)
        try:
            await self._conn.send_text(frame)
        finally:
            self._send_lock.release()
        self._publish(Direction.OUT, frame, action)

    def _publish(self, direction: Direction, frame: str, action: str | None) -> None:
        # No entry built for nobody: two per message while a backlog is replayed.
        if self._message_log is not None and self._message_log.subscriber_count():
            entry = MessageLogEntry(direction, frame, action, self._conn.generation, trio.current_time())
            self._message_log.publish(entry)


async def _acquire(lock: trio.Lock) -> None:
    """Take `lock`, at once when it is free.

    `async with lock` yields to the scheduler even then: a scheduler round per call and per frame that
    the send right after it makes needless (it is the schedule point). Taken lock: queue as usual.
    """
    try:
        lock.acquire_nowait()
    except trio.WouldBlock:
        await lock.acquire()


def _message_ids() -> Callable[[], str]:
    """Unique ids for one connection's CALLs: a random prefix and a counter ("5f3a9c01-17").

    OCPP-J only asks for uniqueness (at most 36 characters); a counter costs no system call per
    message, unlike uuid4, and the prefix keeps ids apart across connections and restarts.
    """
    prefix = secrets.token_hex(4)
    counter = itertools.count(1)
    return lambda: f"{prefix}-{next(counter)}"


def _response_problem(
    version: OcppVersion, action: str, response: OcppModel | dict[str, object]
) -> str | None:
    """Why `response` is not a valid answer to the CSMS's `action` (None: it is)."""
    if isinstance(response, OcppModel):
        model = response_model(version, action)
        return None if isinstance(response, model) else f"{type(response).__name__} is not {model.__name__}"
    try:
        parse_response(version, action, response)
    except PayloadError as exc:
        return f"{exc.path}: {exc.description}" if exc.path else exc.description
    return None


def _action_of(event: object) -> str | None:
    if isinstance(event, CallReceived):
        return event.call.action
    if isinstance(event, ResultReceived | ErrorReceived | InvalidResult):
        return event.action
    return None

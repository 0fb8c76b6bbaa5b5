"""Test harness for the session layer: an in-memory `Connection` and a scripted CSMS peer.

The CSMS side validates every request the station sends with `parse_request`, so a malformed payload
fails the test that produced it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio
import trio.testing

from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.meter import SimMeter
from evstation.protocol.authorization import token_matcher
from evstation.protocol.messages import parse_request
from evstation.protocol.rpc import Call, CallError, CallResult, FrameError, decode, encode
from evstation.protocol.versions import OcppVersion
from evstation.runtime.clock import WallClock
from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.device_model import load_device_model
from evstation.runtime.evse import Evses
from evstation.runtime.link import LinkDown
from evstation.runtime.outbox import Outbox
from evstation.runtime.session import SessionContext, new_session, serve_session
from evstation.runtime.storage import open_storage

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
CSMS_TIME = "2030-06-01T12:00:00.000Z"


class MemoryConnection:
    """Both ends of one connection in memory; `close()` makes both sides see LinkDown / end of stream."""

    def __init__(self, version: OcppVersion, generation: int = 1) -> None:
        self.version = version
        self.generation = generation
        self.ping_interval_s: float | None = None
        self._up_send, self.up_receive = trio.open_memory_channel[str](100)  # station -> CSMS
        self.down_send, self._down_receive = trio.open_memory_channel[str](100)  # CSMS -> station
        self._closed = False

    async def send_text(self, text: str) -> None:
        try:
            await self._up_send.send(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise LinkDown("closed") from None

    async def receive_text(self) -> str:
        try:
            return await self._down_receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise LinkDown("closed") from None

    async def responsive(self) -> bool:
        # Memory channels fail loudly, never silently: an open one always answers.
        await trio.lowlevel.checkpoint()
        return not self._closed

    def set_ping_interval(self, seconds: float) -> None:
        self.ping_interval_s = seconds  # memory channels have no pings: kept for tests to read

    def close(self) -> None:
        self._closed = True
        self.down_send.close()
        self._up_send.close()


@dataclass(frozen=True)
class NoAnswer:
    """Script entry: leave this CALL unanswered."""


@dataclass(frozen=True)
class Fail:
    """Script entry: answer with a CALLERROR."""

    code: str = "InternalError"


Reply = dict[str, Any] | NoAnswer | Fail


def default_replies(version: OcppVersion) -> dict[str, dict[str, Any]]:
    if version is OcppVersion.V16:
        return {
            "BootNotification": {"status": "Accepted", "currentTime": CSMS_TIME, "interval": 300},
            "Heartbeat": {"currentTime": CSMS_TIME},
            "StatusNotification": {},
            "Authorize": {"idTagInfo": {"status": "Accepted"}},
            "StartTransaction": {"transactionId": 42, "idTagInfo": {"status": "Accepted"}},
            "StopTransaction": {},
            "MeterValues": {},
            "DataTransfer": {"status": "Accepted"},
            "SecurityEventNotification": {},
        }
    return {
        "BootNotification": {"status": "Accepted", "currentTime": CSMS_TIME, "interval": 300},
        "Heartbeat": {"currentTime": CSMS_TIME},
        "StatusNotification": {},
        "Authorize": {"idTokenInfo": {"status": "Accepted"}},
        "TransactionEvent": {},
        "MeterValues": {},
        "NotifyReport": {},
        "ReservationStatusUpdate": {},
        "SecurityEventNotification": {},
        "NotifyEvent": {},
    }


def is_end_message(message: Call) -> bool:
    """A transaction's end: 1.6 StopTransaction, 2.0.1 TransactionEvent Ended."""
    return message.action == "StopTransaction" or (
        message.action == "TransactionEvent" and message.payload.get("eventType") == "Ended"
    )


@dataclass
class Seen:
    at: float
    call: Call


@dataclass
class CsmsPeer:
    """Answers the station's CALLs from a per-action script (then the defaults), recording each one."""

    version: OcppVersion
    script: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    seen: list[Seen] = field(default_factory=list)
    answers: list[CallResult | CallError] = field(default_factory=list)
    wire: list[str] = field(
        default_factory=list
    )  # every frame from the station, in order: action or "answer"
    # Seconds to wait before answering a CALL (a slow CSMS); the peer reads nothing meanwhile.
    answer_delay: Callable[[Call], float] | None = None
    _changed: trio.Event = field(default_factory=trio.Event)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def then(self, action: str, *replies: Reply) -> CsmsPeer:
        self.script[action].extend(replies)
        return self

    def actions(self) -> list[str]:
        return [s.call.action for s in self.seen]

    def of(self, action: str) -> list[Seen]:
        return [s for s in self.seen if s.call.action == action]

    async def wait_for(self, action: str, count: int = 1) -> list[Seen]:
        while len(self.of(action)) < count:
            await self._changed.wait()
        return self.of(action)

    async def wait_for_end(self) -> None:
        """Until a transaction's end arrived (`is_end_message`)."""
        while not any(is_end_message(s.call) for s in self.seen):
            await self._changed.wait()

    async def wait_answer(self, message_id: str) -> CallResult | CallError:
        while True:
            for answer in self.answers:
                if answer.message_id == message_id:
                    return answer
            await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def send_call(self, conn: MemoryConnection, action: str, payload: dict[str, Any]) -> str:
        message_id = f"csms-{next(self._ids)}"
        await conn.down_send.send(encode(Call(message_id, action, payload)))
        return message_id

    async def serve(self, conn: MemoryConnection) -> None:
        """Answer until the connection closes."""
        async for text in conn.up_receive:
            message = decode(text, self.version)
            assert not isinstance(message, FrameError), text
            if isinstance(message, CallResult | CallError):
                self.wire.append("answer")
                self.answers.append(message)
                self._notify()
                continue
            parse_request(self.version, message.action, message.payload)  # schema-valid or the test fails
            self.wire.append(message.action)
            self.seen.append(Seen(trio.current_time(), message))
            self._notify()
            queue = self.script.get(message.action)
            reply: Reply = queue.popleft() if queue else default_replies(self.version)[message.action]
            if isinstance(reply, NoAnswer):
                continue
            if self.answer_delay is not None:
                await trio.sleep(self.answer_delay(message))
            frame: CallResult | CallError
            if isinstance(reply, Fail):
                frame = CallError(message.message_id, reply.code, "scripted failure", {})
            else:
                frame = CallResult(message.message_id, reply)
            try:
                await conn.down_send.send(encode(frame))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


def station_config(
    tmp_path: Path,
    version: OcppVersion,
    *,
    connectors: tuple[int, int] = (1, 1),
    drivers: Mapping[int, Mapping[str, Any]] | None = None,
    **csms: Any,
) -> StationConfig:
    """Two EVSEs with `connectors` connectors each (EVSE 1's count, EVSE 2's), on sim drivers unless
    `drivers` names others for an EVSE (by id: its `controller` and / or `meter` table)."""
    data: dict[str, Any] = {
        "station": {
            "id": "CS-TEST-1",
            "vendor": "Acme",
            "model": "Wallbox",
            "serial_number": "0001",
            "ocpp_version": version.value,
            "data_dir": str(tmp_path),
        },
        "csms": {"endpoints": [{"url": "ws://127.0.0.1:9/ocpp", "security_profile": 0}], **csms},
        "evse": [
            {
                "id": evse_id,
                "connector": [
                    {"id": connector_id, "type": "cType2", "max_current_a": 32}
                    for connector_id in range(1, count + 1)
                ],
                "controller": {"driver": "sim"},
                "meter": {"driver": "sim"},
                **(drivers or {}).get(evse_id, {}),
            }
            for evse_id, count in zip((1, 2), connectors, strict=True)
        ],
    }
    return parse_config(data, base_dir=tmp_path)


@asynccontextmanager
async def open_session_context(
    tmp_path: Path,
    version: OcppVersion,
    *,
    meter_interval_s: float = 60.0,
    run_evses: bool = False,
    connectors: tuple[int, int] = (1, 1),
    plugged: frozenset[int] = frozenset(),
    drivers: Mapping[int, Mapping[str, Any]] | None = None,
    **csms: Any,
) -> AsyncIterator[SessionContext]:
    """A SessionContext over a real SQLite file and two real EVSEs on sim boards.

    With `run_evses` the EVSEs run, each with a sim meter polled every 5 s (1000 Wh at start).
    `connectors`: how many connectors EVSE 1 and EVSE 2 have (the config and the EVSEs agree).
    `plugged`: the EVSEs whose EV is plugged in from the start, as after a restart with the EV there.
    `drivers`: per EVSE id, the drivers the configuration names instead of sim ones (the device model
    follows the configuration; the EVSEs still run on sim boards).
    """
    async with open_storage(tmp_path / "station.db") as storage, trio.open_nursery() as nursery:
        outbox = Outbox(storage)
        await nursery.start(outbox.run)
        evses = Evses(same_token=token_matcher(version))
        for evse_id in (1, 2):
            meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=5) if run_evses else None
            connector_ids = tuple(range(1, connectors[evse_id - 1] + 1))
            board = SimChargeController(SimEv(plugged=evse_id in plugged))
            evse = evses.add(evse_id, board, meter, connector_ids=connector_ids)
            if run_evses:
                await nursery.start(evse.run)
        config = station_config(
            tmp_path,
            version,
            connectors=connectors,
            drivers=drivers,
            meter_value_sample_interval_s=meter_interval_s,
            **csms,
        )
        ctx = new_session(
            config,
            storage=storage,
            outbox=outbox,
            evses=evses,
            clock=WallClock.anchored(EPOCH),
            device_model=await load_device_model(storage, config),
        )
        await nursery.start(ctx.blocks.availability.run)
        await nursery.start(ctx.blocks.authorization.run)
        await nursery.start(ctx.blocks.reservation.run)
        await nursery.start(ctx.blocks.trigger.run)
        await nursery.start(ctx.blocks.provisioning.run)
        yield ctx
        nursery.cancel_scope.cancel()


async def serve_until_link_down(conn: MemoryConnection, ctx: SessionContext) -> None:
    """serve_session, with the LinkDown that ends it (when the test closes `conn`) swallowed."""
    try:
        await serve_session(conn, ctx)
    except* LinkDown:
        pass


@asynccontextmanager
async def serving(
    csms: CsmsPeer, conn: MemoryConnection, ctx: SessionContext, *, fail_after_s: float = 1000
) -> AsyncIterator[None]:
    """Both ends serve `conn` for the duration of the block, bounded by `fail_after_s`; then both stop."""
    with trio.fail_after(fail_after_s):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(csms.serve, conn)
            nursery.start_soon(serve_until_link_down, conn, ctx)
            yield
            nursery.cancel_scope.cancel()


def statuses_at_boot(version: OcppVersion) -> int:
    """StatusNotifications a booted two-EVSE station sends first: one a connector (1.6: and connector 0)."""
    return 3 if version is OcppVersion.V16 else 2


@asynccontextmanager
async def online(
    tmp_path: Path,
    version: OcppVersion,
    csms: CsmsPeer,
    *,
    run_reset: bool = False,
    run_security: bool = False,
    plugged: frozenset[int] = frozenset(),
) -> AsyncIterator[tuple[SessionContext, MemoryConnection]]:
    """A booted session on running sim EVSEs with the transactions block running (and, with `run_reset`
    / `run_security`, the reset / security-event block), as open_station runs them; `csms` serves the
    connection and the first StatusNotifications are in."""
    conn = MemoryConnection(version)
    async with open_session_context(tmp_path, version, run_evses=True, plugged=plugged) as ctx:
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                await nursery.start(ctx.blocks.remote_control.run)
                if run_reset:
                    await nursery.start(ctx.blocks.reset.run)
                if run_security:
                    await nursery.start(ctx.blocks.security.run)
                nursery.start_soon(csms.serve, conn)
                nursery.start_soon(serve_until_link_down, conn, ctx)
                await csms.wait_for("StatusNotification", statuses_at_boot(version))
                yield ctx, conn
                nursery.cancel_scope.cancel()


async def call(csms: CsmsPeer, conn: MemoryConnection, action: str, payload: dict[str, Any]) -> Any:
    """`csms` sends `action`; the payload of the station's CALLRESULT (a CALLERROR fails the test)."""
    answer = await csms.wait_answer(await csms.send_call(conn, action, payload))
    assert isinstance(answer, CallResult), answer
    return answer.payload


def board(ctx: SessionContext, evse_id: int) -> SimChargeController:
    """The sim charge controller of EVSE `evse_id`."""
    controller = ctx.evses[evse_id].controller
    assert isinstance(controller, SimChargeController)
    return controller


async def start_transaction(ctx: SessionContext, evse_id: int) -> None:
    """Authorize TOKEN<evse_id> remotely and plug in; until the transactions block has an id for it."""
    assert await ctx.evses[evse_id].authorize_remote(f"TOKEN{evse_id}", "ISO14443")
    board(ctx, evse_id).plug_in()
    while ctx.blocks.transactions.ids.get(evse_id) is None:
        await ctx.blocks.transactions.ids.changed.wait()

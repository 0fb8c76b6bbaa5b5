"""Test harness for the session layer: an in-memory `Connection` and a scripted CSMS peer.

The CSMS side validates every request the station sends with `parse_request`, so a malformed payload
fails the test that produced it.
"""

from __future__ import annotations

import itertools
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.meter import SimMeter
from evstation.protocol.messages import parse_request
from evstation.protocol.rpc import Call, CallError, CallResult, FrameError, decode, encode
from evstation.protocol.versions import OcppVersion
from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.evse import Evses
from evstation.runtime.link import LinkDown
from evstation.runtime.outbox import Outbox
from evstation.runtime.session import SessionContext, WallClock, serve_session
from evstation.runtime.storage import open_storage

EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
CSMS_TIME = "2030-06-01T12:00:00.000Z"


class MemoryConnection:
    """Both ends of one connection in memory; `close()` makes both sides see LinkDown / end of stream."""

    def __init__(self, version: OcppVersion, generation: int = 1) -> None:
        self.version = version
        self.generation = generation
        self._up_send, self.up_receive = trio.open_memory_channel[str](100)  # station -> CSMS
        self.down_send, self._down_receive = trio.open_memory_channel[str](100)  # CSMS -> station

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

    def close(self) -> None:
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
        }
    return {
        "BootNotification": {"status": "Accepted", "currentTime": CSMS_TIME, "interval": 300},
        "Heartbeat": {"currentTime": CSMS_TIME},
        "StatusNotification": {},
        "Authorize": {"idTokenInfo": {"status": "Accepted"}},
        "TransactionEvent": {},
    }


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
                self.answers.append(message)
                self._notify()
                continue
            parse_request(self.version, message.action, message.payload)  # schema-valid or the test fails
            self.seen.append(Seen(trio.current_time(), message))
            self._notify()
            queue = self.script.get(message.action)
            reply: Reply = queue.popleft() if queue else default_replies(self.version)[message.action]
            if isinstance(reply, NoAnswer):
                continue
            frame: CallResult | CallError
            if isinstance(reply, Fail):
                frame = CallError(message.message_id, reply.code, "scripted failure", {})
            else:
                frame = CallResult(message.message_id, reply)
            try:
                await conn.down_send.send(encode(frame))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


def station_config(tmp_path: Path, version: OcppVersion, **csms: Any) -> StationConfig:
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
                "connector": [{"id": 1, "type": "cType2", "max_current_a": 32}],
                "controller": {"driver": "sim"},
                "meter": {"driver": "sim"},
            }
            for evse_id in (1, 2)
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
    **csms: Any,
) -> AsyncIterator[SessionContext]:
    """A SessionContext over a real SQLite file and two real EVSEs on sim boards.

    With `run_evses` the EVSEs run, each with a sim meter polled every 5 s (1000 Wh at start).
    """
    async with open_storage(tmp_path / "station.db") as storage, trio.open_nursery() as nursery:
        outbox = Outbox(storage)
        await nursery.start(outbox.run)
        evses = Evses()
        for evse_id in (1, 2):
            meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=5) if run_evses else None
            evse = evses.add(evse_id, SimChargeController(), meter)
            if run_evses:
                await nursery.start(evse.run)
        yield SessionContext(
            config=station_config(tmp_path, version, **csms),
            storage=storage,
            outbox=outbox,
            evses=evses,
            clock=WallClock.anchored(EPOCH),
            meter_interval_s=meter_interval_s,
        )
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

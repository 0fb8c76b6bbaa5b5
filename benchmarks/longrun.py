"""Months of operation in minutes: drive a whole in-process station through thousands of charging
sessions on virtual time and report what grows.

```sh
.venv/bin/python -m benchmarks.longrun                       # both versions, 3,000 cycles each
.venv/bin/python -m benchmarks.longrun --version 1.6 --cycles 500 --every 250
```

The station is `open_station` with two sim EVSEs, talking to the test CSMS over its in-memory streams
on a `MockClock(autojump_threshold=0)`: a day of charging costs the real time of its SQLite writes
only. As in the tests, the clock stands still while SQLite works in its thread. One cycle is one
session on an EVSE (alternately a new card, a local-list card, a remote start and an unknown card)
plus CSMS requests (configuration read, TriggerMessage, DataTransfer); every few cycles the link
drops, a reservation is made and left to expire, the CSMS's clock jumps (a security event) and the
local list changes. Every `--every` cycles it measures Python heap growth (tracemalloc, by line),
object counts by type, the length of every container reachable from the station, Trio's task count
and the SQLite file (rows per table, file and WAL sizes), and prints the growth since the previous
checkpoint. A script, never a test (tests/runtime/test_runtime_long_run.py runs a few cycles of it so
it keeps working; the bounds it found have their own tests).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import enum
import functools
import gc
import linecache
import math
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio
import trio.testing

from evstation.protocol.versions import OcppVersion
from evstation.runtime import storage
from evstation.runtime.clock import WallClock, iso
from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.station import Station, open_station
from evstation.runtime.testcsms import (
    CallErrorReceived,
    CallErrorReply,
    JsonObject,
    StationNotConnected,
    TestCsms,
    serve_test_csms,
)

STATION = "LONG-1"
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
CHARGE_S = 30 * 60  # virtual seconds a session charges
IDLE_S = 10 * 60  # virtual seconds between sessions
METER_INTERVAL_S = 300
METER_POLL_S = 10
TRACE_FRAMES = 12
WAIT_S = 600.0  # virtual seconds a step may take before it counts as stuck
DROP_EVERY = 7  # cycles between link drops (mid-session: its messages queue offline)
RESERVE_EVERY = 5
CLOCK_JUMP_EVERY = 50
LOCAL_LIST_EVERY = 100
LOCAL_TOKENS = 20
REJECT_ONE_IN = 40


class Kind(enum.Enum):
    NEW_CARD = "new card"  # never seen before: Authorize, then cached
    LOCAL = "local list"
    REMOTE = "remote start"
    UNKNOWN = "unknown"  # the CSMS answers Invalid: no session


KINDS = tuple(Kind)


# --- holding virtual time still while SQLite works (as tests/conftest.py does) ---------------------


def hold_clock_during_sqlite() -> Callable[[], None]:
    """Patch storage.run_in_worker so the MockClock cannot jump while a query runs; returns the undo."""
    real = storage.run_in_worker
    in_flight = [0]

    async def held(limiter: trio.CapacityLimiter, work: Any, *args: object) -> Any:
        clock = trio.lowlevel.current_clock()
        if not isinstance(clock, trio.testing.MockClock):
            return await real(limiter, work, *args)
        in_flight[0] += 1
        clock.autojump_threshold = math.inf
        try:
            return await real(limiter, work, *args)
        finally:
            in_flight[0] -= 1
            if in_flight[0] == 0:
                clock.autojump_threshold = 0

    storage.run_in_worker = held

    def undo() -> None:
        storage.run_in_worker = real

    return undo


# --- the station and the CSMS ---------------------------------------------------------------------------


def station_config(data_dir: Path, version: OcppVersion) -> StationConfig:
    data: dict[str, Any] = {
        "station": {
            "id": STATION,
            "vendor": "evstation",
            "model": "longrun",
            "ocpp_version": version.value,
            "data_dir": str(data_dir),
        },
        "csms": {
            "endpoints": [{"url": "ws://127.0.0.1:9/ocpp", "security_profile": 0}],
            "retry_backoff_wait_minimum_s": 5,
            "retry_backoff_random_range_s": 0,
            "meter_value_sample_interval_s": METER_INTERVAL_S,
        },
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
    return parse_config(data, base_dir=data_dir)


class CsmsClock:
    """The test CSMS's wall clock: the virtual epoch plus trio time, shifted by `jump` on demand."""

    def __init__(self) -> None:
        self._wall = WallClock.anchored(EPOCH)
        self.shift = timedelta(0)

    def now(self) -> datetime:
        return self._wall.now() + self.shift


def meter_value_responder(
    version: OcppVersion, reject_one_in: int = REJECT_ONE_IN
) -> Callable[[str, JsonObject], JsonObject]:
    """One meter-value message in `reject_one_in` (picked by its first timestamp, so every retry of it
    too) gets a CALLERROR: the outbox retries it and then gives it up to the dead letters."""

    def answer(_station: str, request: JsonObject) -> JsonObject:
        values = request.get("meterValue")
        if (
            request.get("eventType", "Updated") == "Updated"
            and isinstance(values, list)
            and values
            and isinstance(values[0], dict)
        ):
            stamp = str(values[0].get("timestamp"))
            if zlib.crc32(stamp.encode()) % reject_one_in == 0:
                raise CallErrorReply("InternalError", "the long run's CSMS refuses this one")
        if version is OcppVersion.V201 and "idToken" in request:
            return {"idTokenInfo": {"status": "Accepted"}}
        return {}

    return answer


def authorize_responder(version: OcppVersion) -> Callable[[str, JsonObject], JsonObject]:
    """Cards named UNKNOWN-* are Invalid, every other is Accepted."""

    def answer(_station: str, request: JsonObject) -> JsonObject:
        if version is OcppVersion.V16:
            token = str(request["idTag"])
            return {"idTagInfo": {"status": "Invalid" if token.startswith("UNKNOWN") else "Accepted"}}
        id_token = request["idToken"]
        assert isinstance(id_token, dict)
        token = str(id_token["idToken"])
        return {"idTokenInfo": {"status": "Invalid" if token.startswith("UNKNOWN") else "Accepted"}}

    return answer


@dataclasses.dataclass
class Driver:
    version: OcppVersion
    station: Station
    csms: TestCsms
    csms_clock: CsmsClock
    stuck: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    local_version: int = 0
    reservation_ids: Iterator[int] = dataclasses.field(default_factory=lambda: iter(range(1, 10**9)))

    @property
    def v16(self) -> bool:
        return self.version is OcppVersion.V16

    async def call(self, action: str, payload: JsonObject) -> JsonObject | None:
        """A CSMS request; None when the station is offline or answers with a CALLERROR."""
        try:
            return await self.csms.call(STATION, action, payload)
        except (StationNotConnected, CallErrorReceived) as exc:  # counted, not fatal
            self.stuck[f"{action}: {type(exc).__name__}"] += 1
            return None

    async def online(self) -> None:
        await self.station.session.uplink.wait_online()

    async def until(
        self, what: str, ready: Callable[[], bool], changed: Callable[[], Awaitable[None]]
    ) -> bool:
        with trio.move_on_after(WAIT_S):
            while not ready():
                await changed()
            return True
        self.stuck[what] += 1
        return False

    async def set_local_pre_authorize(self) -> None:
        if self.v16:
            await self.call("ChangeConfiguration", {"key": "LocalPreAuthorize", "value": "true"})
            await self.call("ChangeConfiguration", {"key": "LocalAuthListEnabled", "value": "true"})
        else:
            await self.call(
                "SetVariables",
                {
                    "setVariableData": [
                        {
                            "attributeValue": "true",
                            "component": {"name": "AuthCtrlr"},
                            "variable": {"name": "LocalPreAuthorize"},
                        }
                    ]
                },
            )

    async def send_local_list(self, cycle: int) -> None:
        self.local_version += 1
        full = self.local_version == 1
        tokens = [f"LOCAL-{k}" for k in range(LOCAL_TOKENS)] if full else [f"LOCAL-{cycle % LOCAL_TOKENS}"]
        if self.v16:
            entries: list[JsonObject] = [{"idTag": t, "idTagInfo": {"status": "Accepted"}} for t in tokens]
            await self.call(
                "SendLocalList",
                {
                    "listVersion": self.local_version,
                    "updateType": "Full" if full else "Differential",
                    "localAuthorizationList": entries,
                },
            )
        else:
            entries = [
                {"idToken": {"idToken": t, "type": "ISO14443"}, "idTokenInfo": {"status": "Accepted"}}
                for t in tokens
            ]
            await self.call(
                "SendLocalList",
                {
                    "versionNumber": self.local_version,
                    "updateType": "Full" if full else "Differential",
                    "localAuthorizationList": entries,
                },
            )

    async def csms_requests(self, cycle: int) -> None:
        if self.v16:
            await self.call("GetConfiguration", {"key": ["HeartbeatInterval", "LocalPreAuthorize"]})
            await self.call("TriggerMessage", {"requestedMessage": "Heartbeat"})
        else:
            await self.call(
                "GetVariables",
                {
                    "getVariableData": [
                        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}},
                        {"component": {"name": "AuthCtrlr"}, "variable": {"name": "LocalPreAuthorize"}},
                    ]
                },
            )
            await self.call("TriggerMessage", {"requestedMessage": "Heartbeat"})
        await self.call("DataTransfer", {"vendorId": "org.example", "messageId": f"m{cycle}", "data": "x"})

    async def reserve_and_expire(self) -> None:
        """A reservation of EVSE 2 that nobody uses: it expires (and its row goes)."""
        expiry = iso(self.station.session.clock.now() + timedelta(seconds=120))
        reservation_id = next(self.reservation_ids)
        if self.v16:
            payload: JsonObject = {
                "connectorId": 2,
                "expiryDate": expiry,
                "idTag": "RESERVER",
                "reservationId": reservation_id,
            }
        else:
            payload = {
                "id": reservation_id,
                "expiryDateTime": expiry,
                "idToken": {"idToken": "RESERVER", "type": "ISO14443"},
                "evseId": 2,
            }
        await self.call("ReserveNow", payload)
        await trio.sleep(180)

    async def session(self, cycle: int, evse_id: int) -> None:
        kind = KINDS[cycle % len(KINDS)]
        ids = self.station.session.blocks.transactions.ids
        board = self.station.sim_board(evse_id)
        assert board is not None
        token = {
            Kind.NEW_CARD: f"CARD-{cycle}",
            Kind.LOCAL: f"LOCAL-{cycle % LOCAL_TOKENS}",
            Kind.REMOTE: f"REMOTE-{cycle % 3}",
            Kind.UNKNOWN: f"UNKNOWN-{cycle}",
        }[kind]
        if kind is Kind.REMOTE:
            if self.v16:
                await self.call("RemoteStartTransaction", {"idTag": token, "connectorId": evse_id})
            else:
                await self.call(
                    "RequestStartTransaction",
                    {
                        "idToken": {"idToken": token, "type": "Central"},
                        "remoteStartId": cycle,
                        "evseId": evse_id,
                    },
                )
        else:
            await self.station.evses.present_token(token, "ISO14443", evse_id)
        board.plug_in()
        if kind is Kind.UNKNOWN:
            await trio.sleep(60)
        else:
            started = await self.until(
                f"{kind.value}: start", lambda: ids.get(evse_id) is not None, lambda: ids.changed.wait()
            )
            if started and cycle % DROP_EVERY == 0:
                await trio.sleep(CHARGE_S / 3)
                self.csms.drop(STATION)  # the rest of the session is offline until the redial
                await trio.sleep(2 * CHARGE_S / 3)
            else:
                await trio.sleep(CHARGE_S)
        board.unplug()
        await self.until(f"{kind.value}: end", lambda: ids.get(evse_id) is None, lambda: ids.changed.wait())

    async def cycle(self, cycle: int) -> None:
        await self.session(cycle, 1 + cycle % 2)
        await self.online_or_count()
        await self.csms_requests(cycle)
        if cycle % RESERVE_EVERY == 0:
            await self.reserve_and_expire()
        if cycle % CLOCK_JUMP_EVERY == 0:
            # The CSMS's clock moves an hour: the next Heartbeat sets ours (SettingSystemTime event).
            self.csms_clock.shift += timedelta(hours=1)
            await self.call("TriggerMessage", {"requestedMessage": "Heartbeat"})
        if cycle % LOCAL_LIST_EVERY == 0:
            await self.send_local_list(cycle)
        await trio.sleep(IDLE_S)

    async def reset(self) -> None:
        """A CSMS Reset; returns once the station asked to be stopped (the caller starts it again)."""
        await self.call("Reset", {"type": "Soft"} if self.v16 else {"type": "Immediate"})
        with trio.move_on_after(WAIT_S):
            await self.station.stop.wait()
            return
        self.stuck["reset"] += 1

    async def online_or_count(self) -> None:
        with trio.move_on_after(WAIT_S):
            await self.online()
            return
        self.stuck["online"] += 1


# --- measuring ------------------------------------------------------------------------------------------


def _is_container(value: object) -> bool:
    return isinstance(value, dict | list | set | frozenset | collections.deque)


def containers(root: object, max_depth: int = 8) -> dict[str, int]:
    """len() of every dict/list/set/deque reachable from `root` through evstation objects' attributes,
    by attribute path (the first path found)."""
    found: dict[str, int] = {}
    seen: set[int] = set()
    queue: collections.deque[tuple[str, object, int]] = collections.deque([("station", root, 0)])
    while queue:
        path, value, depth = queue.popleft()
        if id(value) in seen or depth > max_depth:
            continue
        seen.add(id(value))
        if _is_container(value):
            found[path] = len(value)  # type: ignore[arg-type]
            items: list[tuple[str, object]]
            if isinstance(value, dict):
                items = [(f"{path}[{k!r}]"[:160], v) for k, v in list(value.items())[:50]]
            else:
                listed = list(value)[:50]  # type: ignore[call-overload]
                items = [(f"{path}[{n}]", v) for n, v in enumerate(listed)]
            for child_path, child in items:
                queue.append((child_path, child, depth + 1))
            continue
        module = type(value).__module__
        if not module.startswith(("evstation", "trio")):
            continue
        attributes: dict[str, object] = {}
        if hasattr(value, "__dict__"):
            attributes.update(vars(value))
        for slot in getattr(type(value), "__slots__", ()):
            if isinstance(slot, str) and hasattr(value, slot):
                attributes[slot] = getattr(value, slot)
        if module.startswith("trio") and not module.startswith("trio._channel"):
            # Trio's internals only through its channels' state (buffers, waiting tasks).
            attributes = {
                k: v for k, v in attributes.items() if k in ("_state", "data", "open_send_channels")
            }
        for name, child in attributes.items():
            queue.append((f"{path}.{name}", child, depth + 1))
    return found


def task_count() -> int:
    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

    root = trio.lowlevel.current_root_task()
    return 0 if root is None else count(root)


def database_facts(path: Path) -> dict[str, int]:
    facts: dict[str, int] = {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            facts[f"rows {table}"] = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
        settings = conn.execute("SELECT key, length(value) FROM settings").fetchall()
        for key, length in settings:
            facts[f"setting bytes {key}"] = length
    finally:
        conn.close()
    for suffix in ("", "-wal"):
        file = path.with_name(path.name + suffix)
        facts[f"bytes {file.name}"] = file.stat().st_size if file.exists() else 0
    return facts


@dataclasses.dataclass
class Checkpoint:
    cycle: int
    virtual_days: float
    real_s: float
    heap: tracemalloc.Snapshot
    objects: collections.Counter[str]
    containers: dict[str, int]
    tasks: int
    database: dict[str, int]


def checkpoint(cycle: int, started: float, station: Station, db: Path) -> Checkpoint:
    gc.collect()
    heap = tracemalloc.take_snapshot().filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, linecache.__file__),  # the report's own source lines
            tracemalloc.Filter(False, "*/testcsms.py"),
            tracemalloc.Filter(False, "*/benchmarks/longrun.py"),
        )
    )
    objects = collections.Counter(type(o).__name__ for o in gc.get_objects())
    return Checkpoint(
        cycle=cycle,
        virtual_days=trio.current_time() / 86400,
        real_s=time.monotonic() - started,
        heap=heap,
        objects=objects,
        containers=containers(station),
        tasks=task_count(),
        database=database_facts(db),
    )


def report(previous: Checkpoint, current: Checkpoint, out: Callable[[str], None]) -> None:
    cycles = current.cycle - previous.cycle
    per_k = 1000 / cycles
    out(
        f"-- cycles {previous.cycle}..{current.cycle} (virtual day {current.virtual_days:.1f}, "
        f"real {current.real_s:.0f} s); growth per 1,000 cycles:"
    )
    stats = current.heap.compare_to(previous.heap, "lineno")
    total = sum(s.size_diff for s in stats)
    out(f"   traced heap: {total * per_k / 1024:+.1f} KiB (now {sum(s.size for s in stats) / 1024:.0f} KiB)")
    for stat in stats[:8]:
        if stat.size_diff > 0:
            size, count = stat.size_diff * per_k / 1024, stat.count_diff * per_k
            out(f"     {size:+8.1f} KiB {count:+8.0f} blocks  {stat.traceback[0]}")
    # Where the top growth was allocated from: the whole call stack, innermost frame last.
    for stat in current.heap.compare_to(previous.heap, "traceback")[:3]:
        if stat.size_diff > 0:
            out(f"     {stat.size_diff * per_k / 1024:+8.1f} KiB allocated at:")
            for line in stat.traceback.format(limit=TRACE_FRAMES):
                if line.startswith("  File"):
                    out(f"        {line.strip()}")
    growth = {k: (current.objects[k] - previous.objects.get(k, 0)) for k in current.objects}
    top = sorted(((v, k) for k, v in growth.items() if v > 0), reverse=True)[:8]
    out("   objects: " + ", ".join(f"{k} {v * per_k:+.0f}" for v, k in top))
    grew = [
        (current.containers[path] - previous.containers.get(path, 0), path)
        for path in current.containers
        if current.containers[path] > previous.containers.get(path, 0) and path in previous.containers
    ]
    for diff, path in sorted(grew, reverse=True)[:10]:
        before, after = previous.containers[path], current.containers[path]
        out(f"   container {path}: {before} -> {after} ({diff * per_k:+.0f})")
    out(f"   trio tasks: {previous.tasks} -> {current.tasks}")
    for key in sorted(current.database):
        before, after = previous.database.get(key, 0), current.database[key]
        if before != after or key.startswith("rows"):
            out(f"   db {key}: {before} -> {after}")


async def long_run(
    version: OcppVersion,
    data_dir: Path,
    *,
    cycles: int,
    every: int,
    on_checkpoint: Callable[[Checkpoint], None],
    reset_every: int = 0,
    reject_one_in: int = REJECT_ONE_IN,
) -> collections.Counter[str]:
    """Run `cycles` cycles; `on_checkpoint` gets a Checkpoint at 0 (after warm-up) and every `every`.

    With `reset_every`, the CSMS sends Reset after every that many cycles and the station is started
    again on the same data dir, as systemd would (the heap then starts over: watch the database).
    """
    csms_clock = CsmsClock()
    config = station_config(data_dir, version)
    started = time.monotonic()
    warm_up = min(every, 50)  # caches, pools and first-time imports fill before the baseline
    n = 0
    driver: Driver | None = None
    async with trio.open_nursery() as nursery:
        csms: TestCsms = await nursery.start(functools.partial(serve_test_csms, wall_clock=csms_clock.now))
        csms.set_response("Authorize", authorize_responder(version))
        csms.set_response(
            "MeterValues" if version is OcppVersion.V16 else "TransactionEvent",
            meter_value_responder(version, reject_one_in),
        )
        while n < warm_up + cycles:
            async with open_station(
                config,
                rng=random.Random(7),
                clock=WallClock.anchored(EPOCH + timedelta(seconds=trio.current_time())),
                connector=csms.open_memory_stream,
            ) as station:
                for sim in station.sims.values():
                    if sim.meter is not None:
                        # A real meter is read every second or so; 10 s keeps a virtual week
                        # affordable (the sim fsyncs its register file at every reading) and the
                        # per-reading work still runs hundreds of times a session.
                        sim.meter.poll_interval_s = METER_POLL_S
                await station.session.uplink.wait_online()
                if driver is None:
                    driver = Driver(version, station, csms, csms_clock)
                    await driver.set_local_pre_authorize()
                    await driver.send_local_list(0)
                driver.station = station
                while n < warm_up + cycles:
                    await driver.cycle(n)
                    n += 1
                    done = n - warm_up
                    if done >= 0 and done % every == 0:
                        # The CSMS is a test tool, not the station: its records go before a measurement.
                        csms.clear_history()
                        on_checkpoint(checkpoint(done, started, station, config.database_path))
                    if reset_every and n % reset_every == 0 and n < warm_up + cycles:
                        await driver.reset()
                        break
        nursery.cancel_scope.cancel()
    assert driver is not None
    return driver.stuck


class Reporter:
    """Prints the growth from the previous checkpoint; keeps only that one (older ones would count
    as growth)."""

    def __init__(self) -> None:
        self._previous: Checkpoint | None = None

    def __call__(self, point: Checkpoint) -> None:
        if self._previous is not None:
            report(self._previous, point, lambda line: print(line, flush=True))
        self._previous = point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", choices=("1.6", "2.0.1", "both"), default="both")
    parser.add_argument("--cycles", type=int, default=3000)
    parser.add_argument("--every", type=int, default=1000)
    parser.add_argument("--reset-every", type=int, default=0, help="a CSMS Reset every N cycles (0: never)")
    parser.add_argument("--reject-one-in", type=int, default=REJECT_ONE_IN, help="meter values refused")
    parser.add_argument(
        "--frames", type=int, default=1, help="tracemalloc frames (more: slower, with stacks)"
    )
    args = parser.parse_args(argv)
    versions = [OcppVersion.V16, OcppVersion.V201] if args.version == "both" else [OcppVersion(args.version)]
    undo = hold_clock_during_sqlite()
    tracemalloc.start(args.frames)
    try:
        for version in versions:
            print(
                f"=== OCPP {version.value}: {args.cycles} cycles, checkpoint every {args.every}", flush=True
            )
            on_checkpoint = Reporter()

            with tempfile.TemporaryDirectory(prefix="evs-long-") as folder:
                stuck = trio.run(
                    functools.partial(
                        long_run,
                        version,
                        Path(folder),
                        cycles=args.cycles,
                        every=args.every,
                        on_checkpoint=on_checkpoint,
                        reset_every=args.reset_every,
                        reject_one_in=args.reject_one_in,
                    ),
                    clock=trio.testing.MockClock(autojump_threshold=0),
                )
            print(f"   steps that did not complete: {dict(stuck) or 'none'}", flush=True)
    finally:
        tracemalloc.stop()
        undo()
    return 0


if __name__ == "__main__":
    sys.exit(main())

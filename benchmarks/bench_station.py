"""Whole-station runtime benchmarks, each side by side with the `ocpp` package and a bare floor:
start-up and idle memory, Heartbeat round trips and outbox replay against a bare CSMS, idle CPU.

A script, not a test: it prints figures and asserts nothing about them. Run from the repo root:
`.venv/bin/python -m benchmarks.bench_station [--idle-seconds N] [--rounds N]`.

The variants of each figure run interleaved, round after round, so that load from elsewhere on a
shared machine hits all of them alike; the best round of each is the figure compared (the least
disturbed), the median is printed next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio_websocket

from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.outbox import Outbox
from evstation.runtime.station import open_station
from evstation.runtime.storage import open_storage
from evstation.runtime.testcsms import TestCsms, serve_test_csms

REPO = Path(__file__).resolve().parents[1]
ROUND_TRIPS = 1000
WARMUP = 50
REPLAY_MESSAGES = 1000
START_RUNS = 5
RSS_SETTLE_S = 3.0
EVSES = 2  # in _toml's station, one connector each
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _toml(folder: Path, port: int, station_id: str) -> Path:
    evse = """
[[evse]]
id = {n}
[[evse.connector]]
id = 1
type = "cType2"
max_current_a = 32
[evse.controller]
driver = "sim"
[evse.meter]
driver = "sim"
"""
    text = f"""
[station]
id = "{station_id}"
vendor = "evstation"
model = "bench"
ocpp_version = "2.0.1"
data_dir = "data"
[[csms.endpoints]]
url = "ws://127.0.0.1:{port}/ocpp"
security_profile = 0
[control]
socket_path = "c.sock"
{evse.format(n=1)}{evse.format(n=2)}
"""
    path = folder / "station.toml"
    path.write_text(text)
    return path


def _config(folder: Path, port: int, version: str) -> StationConfig:
    connector = {"id": 1, "type": "cType2", "max_current_a": 32}
    evse = {"connector": [connector], "controller": {"driver": "sim"}, "meter": {"driver": "sim"}}
    return parse_config(
        {
            "station": {
                "id": "BENCH-1",
                "vendor": "evstation",
                "model": "bench",
                "ocpp_version": version,
                "data_dir": str(folder / "data"),
            },
            "csms": {"endpoints": [{"url": f"ws://127.0.0.1:{port}/ocpp", "security_profile": 0}]},
            "evse": [{"id": 1, **evse}, {"id": 2, **evse}],
            "control": {"socket_path": str(folder / "c.sock")},
        },
        base_dir=folder,
    )


@dataclass
class Samples:
    """One figure's rounds; `best` is the least disturbed one (lowest time or highest rate)."""

    higher_is_better: bool
    values: list[float] = field(default_factory=list)

    @property
    def best(self) -> float:
        return max(self.values) if self.higher_is_better else min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)


# --- processes: start-up, RSS, idle CPU ---------------------------------------------------------------


def byte_compile() -> None:
    """Write the repo's .pyc files, as `pip install` does for a deployed station and for the `ocpp`
    package and the floor's libraries. Without them (PYTHONDONTWRITEBYTECODE=1, as some sandboxes
    set) every start would compile evstation from source, which is not what a station pays."""
    # compileall does not follow symlinks: evstation/{protocol,runtime,drivers} are links to these
    # folders, and a module's .pyc sits next to its real file either way.
    for folder in ("evstation", "protocol", "runtime", "drivers", "benchmarks"):
        if not compileall.compile_dir(REPO / folder, quiet=1):
            raise RuntimeError(f"byte-compiling {folder} failed")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_ticks(pid: int) -> int:
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


@dataclass
class ProcessFigures:
    start_ms: Samples = field(default_factory=lambda: Samples(higher_is_better=False))
    # Ours only: process start -> the last StatusNotification (one per EVSE), so that work moved from
    # before BootNotification to after it shows.
    statuses_ms: Samples = field(default_factory=lambda: Samples(higher_is_better=False))
    rss_mib: float = 0.0
    idle_cpu_s: float | None = None


PROCESS_VARIANTS = ("ocpp package", "floor", "floor + models", "evstation")
_FLOOR_MODULES = {
    "ocpp package": "benchmarks.ocpp_station",
    "floor": "benchmarks.floor_station",
    "floor + models": "benchmarks.floor_pydantic_station",
}


def _command(variant: str, folder: Path, port: int, station_id: str) -> list[str]:
    if variant == "evstation":
        return [sys.executable, "-m", "evstation", "run", "--config", str(_toml(folder, port, station_id))]
    return [sys.executable, "-m", _FLOOR_MODULES[variant], str(port), station_id]


async def bench_processes(idle_seconds: float) -> dict[str, ProcessFigures]:
    """Process start -> BootNotification at the test CSMS (2.0.1), then RSS once idle; idle CPU for ours."""
    figures = {variant: ProcessFigures() for variant in PROCESS_VARIANTS}
    async with trio.open_nursery() as nursery:
        csms: TestCsms = await nursery.start(serve_test_csms)
        for run in range(START_RUNS):
            for n, variant in enumerate(PROCESS_VARIANTS):
                with tempfile.TemporaryDirectory(prefix="evsb-", dir="/tmp") as tmp:
                    station_id = f"BENCH-{run}-{n}"
                    command = _command(variant, Path(tmp), csms.port, station_id)
                    t0 = time.perf_counter()
                    process = await trio.lowlevel.open_process(
                        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO
                    )
                    try:
                        await csms.wait_for(station_id, "BootNotification")
                        figures[variant].start_ms.values.append(1000 * (time.perf_counter() - t0))
                        if variant == "evstation":
                            await csms.wait_for(station_id, "StatusNotification", EVSES)
                            figures[variant].statuses_ms.values.append(1000 * (time.perf_counter() - t0))
                        if run == START_RUNS - 1:
                            await _settle(csms, station_id, variant)
                            figures[variant].rss_mib = _rss_kib(process.pid) / 1024
                            if variant == "evstation":
                                ticks0 = _cpu_ticks(process.pid)
                                await trio.sleep(idle_seconds)
                                figures[variant].idle_cpu_s = (_cpu_ticks(process.pid) - ticks0) / CLOCK_TICKS
                    finally:
                        process.kill()
                        await process.wait()
        nursery.cancel_scope.cancel()
    return figures


async def _settle(csms: TestCsms, station_id: str, variant: str) -> None:
    if variant == "evstation":
        await csms.wait_for(station_id, "StatusNotification", EVSES)
    await trio.sleep(RSS_SETTLE_S)


# --- Heartbeat round trips against benchmarks/bare_csms.py --------------------------------------


async def rtt_ocpp_package(port: int) -> float:
    import websockets
    from ocpp.v16 import ChargePoint, call

    async with websockets.connect(f"ws://127.0.0.1:{port}/OCPPPKG", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
        cp = ChargePoint("OCPPPKG", ws)
        reader = asyncio.create_task(cp.start())
        try:
            for _ in range(WARMUP):
                await cp.call(call.Heartbeat())
            t0 = time.perf_counter()
            for _ in range(ROUND_TRIPS):
                await cp.call(call.Heartbeat())
            elapsed = time.perf_counter() - t0
        finally:
            reader.cancel()
    return 1e6 * elapsed / ROUND_TRIPS


async def rtt_bare_trio(port: int) -> float:
    frame = json.dumps([2, "1", "Heartbeat", {}])
    async with trio_websocket.open_websocket_url(
        f"ws://127.0.0.1:{port}/BARE", subprotocols=["ocpp1.6"]
    ) as ws:
        for _ in range(WARMUP):
            await ws.send_message(frame)
            await ws.get_message()
        t0 = time.perf_counter()
        for _ in range(ROUND_TRIPS):
            await ws.send_message(frame)
            await ws.get_message()
        elapsed = time.perf_counter() - t0
    return 1e6 * elapsed / ROUND_TRIPS


async def rtt_ours(port: int) -> float:
    with tempfile.TemporaryDirectory(prefix="evsb-", dir="/tmp") as tmp:
        async with open_station(_config(Path(tmp), port, "1.6")) as station:
            calls = await station.session.uplink.wait_online()
            for _ in range(WARMUP):
                await calls.call("Heartbeat", {})
            t0 = time.perf_counter()
            for _ in range(ROUND_TRIPS):
                await calls.call("Heartbeat", {})
            elapsed = time.perf_counter() - t0
    return 1e6 * elapsed / ROUND_TRIPS


# --- outbox replay ----------------------------------------------------------------------------------


def _transaction_event(seq_no: int) -> dict[str, Any]:
    measurands = [
        ("Energy.Active.Import.Register", None, "Wh"),
        ("Power.Active.Import", None, "W"),
        ("Current.Import", "L1", "A"),
        ("Current.Import", "L2", "A"),
        ("Current.Import", "L3", "A"),
        ("Voltage", "L1-N", "V"),
        ("Voltage", "L2-N", "V"),
        ("Voltage", "L3-N", "V"),
        ("Frequency", None, None),
        ("Power.Factor", None, None),
    ]
    sampled = []
    for measurand, phase, unit in measurands:
        value: dict[str, Any] = {"value": 12.5 + seq_no, "measurand": measurand, "location": "Outlet"}
        if phase is not None:
            value["phase"] = phase
        if unit is not None:
            value["unitOfMeasure"] = {"unit": unit}
        sampled.append(value)
    return {
        "eventType": "Updated",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "triggerReason": "MeterValuePeriodic",
        "seqNo": seq_no,
        "transactionInfo": {"transactionId": "bench-tx-1", "chargingState": "Charging"},
        "evse": {"id": 1, "connectorId": 1},
        "meterValue": [{"timestamp": "2026-01-01T00:00:00.000Z", "sampledValue": sampled}],
    }


async def replay_ocpp_package(port: int) -> float:
    """The same 1,000 TransactionEvents through `ocpp.v201.ChargePoint.call`, one at a time. It has no
    outbox: nothing is stored or deleted, so this is its messaging cost alone."""
    import websockets
    from ocpp.charge_point import camel_to_snake_case
    from ocpp.v201 import ChargePoint, call

    requests = [
        call.TransactionEvent(**camel_to_snake_case(_transaction_event(n))) for n in range(REPLAY_MESSAGES)
    ]
    async with websockets.connect(f"ws://127.0.0.1:{port}/OCPPPKG", subprotocols=["ocpp2.0.1"]) as ws:  # type: ignore[list-item]
        cp = ChargePoint("OCPPPKG", ws)
        reader = asyncio.create_task(cp.start())
        try:
            t0 = time.perf_counter()
            for request in requests:
                await cp.call(request)
            elapsed = time.perf_counter() - t0
        finally:
            reader.cancel()
    return REPLAY_MESSAGES / elapsed


async def replay_bare_trio(port: int) -> float:
    """The floor: prebuilt frames of the same messages over a bare trio-websocket client, one at a time."""
    frames = [
        json.dumps([2, str(n), "TransactionEvent", _transaction_event(n)]) for n in range(REPLAY_MESSAGES)
    ]
    async with trio_websocket.open_websocket_url(
        f"ws://127.0.0.1:{port}/BARE", subprotocols=["ocpp2.0.1"]
    ) as ws:
        t0 = time.perf_counter()
        for frame in frames:
            await ws.send_message(frame)
            await ws.get_message()
        elapsed = time.perf_counter() - t0
    return REPLAY_MESSAGES / elapsed


async def replay_ours(port: int) -> float:
    """1,000 queued TransactionEvents replayed after the station comes online: each validated, sent,
    answered, its answer validated, and deleted from SQLite (synchronous=FULL) once answered."""
    with tempfile.TemporaryDirectory(prefix="evsb-", dir="/tmp") as tmp:
        config = _config(Path(tmp), port, "2.0.1")
        config.station.data_dir.mkdir(parents=True, exist_ok=True)
        async with open_storage(config.database_path) as storage:
            outbox = Outbox(storage)
            for seq_no in range(REPLAY_MESSAGES):
                await outbox.put("TransactionEvent", _transaction_event(seq_no), offline=True)
        async with open_station(config) as station:
            await station.session.uplink.wait_online()
            t0 = time.perf_counter()
            await station.outbox.wait_empty()
            elapsed = time.perf_counter() - t0
            dead = len(await station.outbox.dead_letters())
    if dead:
        raise RuntimeError(f"{dead} replayed messages were given up")
    return REPLAY_MESSAGES / elapsed


# --- one run ------------------------------------------------------------------------------------------


def _rounds(
    rounds: int, variants: dict[str, Callable[[], float]], higher_is_better: bool
) -> dict[str, Samples]:
    samples = {name: Samples(higher_is_better) for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            samples[name].values.append(run())
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of RTT and replay")
    parser.add_argument(
        "--no-compile", action="store_true", help="do not write .pyc files first (start-up then may compile)"
    )
    args = parser.parse_args()
    if not args.no_compile:
        byte_compile()

    processes = trio.run(bench_processes, args.idle_seconds)
    bare = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bare_csms"], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert bare.stdout is not None
        port = int(bare.stdout.readline())
        rtt = _rounds(
            args.rounds,
            {
                "ocpp package": lambda: asyncio.run(rtt_ocpp_package(port)),
                "floor": lambda: trio.run(rtt_bare_trio, port),
                "evstation": lambda: trio.run(rtt_ours, port),
            },
            higher_is_better=False,
        )
        replay = _rounds(
            args.rounds,
            {
                "ocpp package": lambda: asyncio.run(replay_ocpp_package(port)),
                "floor": lambda: trio.run(replay_bare_trio, port),
                "evstation": lambda: trio.run(replay_ours, port),
            },
            higher_is_better=True,
        )
    finally:
        bare.terminate()
        bare.wait()
    _report(processes, rtt, replay, args)


def _report(
    processes: dict[str, ProcessFigures],
    rtt: dict[str, Samples],
    replay: dict[str, Samples],
    args: argparse.Namespace,
) -> None:
    compiled = "from source (--no-compile)" if args.no_compile else "byte-compiled first"
    print(
        f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; {args.rounds} rounds, best (median); "
        f"repo modules {compiled}"
    )
    print()
    print("| figure | ocpp package | floor | floor + models | evstation | evstation / floor |")
    print("|---|---|---|---|---|---|")
    starts = {name: f.start_ms for name, f in processes.items()}
    print(_row("process start -> BootNotification (ms)", starts, "{:.0f}"))
    statuses = processes["evstation"].statuses_ms
    print(
        f"| process start -> last StatusNotification ({EVSES} EVSEs) (ms) | | | | "
        f"{statuses.best:.0f} ({statuses.median:.0f}) | |"
    )
    rss = {name: f.rss_mib for name, f in processes.items()}
    cells = " | ".join(f"{rss[name]:.1f}" for name in PROCESS_VARIANTS)
    print(f"| RSS once idle (MiB) | {cells} | {rss['evstation'] / rss['floor']:.2f}x |")
    print(_row("Heartbeat round trip (µs)", rtt, "{:.0f}"))
    print(_row(f"replay of {REPLAY_MESSAGES} TransactionEvents (msg/s)", replay, "{:.0f}"))
    cpu = processes["evstation"].idle_cpu_s
    if cpu is not None:
        print()
        share = 100 * cpu / args.idle_seconds
        print(f"evstation idle CPU over {args.idle_seconds:g} s: {cpu:.2f} s ({share:.2f} %)")
    print()
    print(
        "floor: start-up = trio + trio-websocket + pydantic imported, one BootNotification "
        "(benchmarks/floor_station.py); RTT and replay = a bare trio-websocket client with prebuilt frames."
    )
    print(
        "floor + models: the floor with the BootNotification built and its answer validated by our "
        "pydantic message models (benchmarks/floor_pydantic_station.py), start-up only."
    )


def _row(label: str, samples: dict[str, Samples], fmt: str) -> str:
    # RTT and replay have no "floor + models" run: the models' cost there is inside evstation's figure.
    cells = [
        f"{fmt.format(samples[n].best)} ({fmt.format(samples[n].median)})" if n in samples else ""
        for n in PROCESS_VARIANTS
    ]
    ratio = samples["evstation"].best / samples["floor"].best
    return f"| {label} | {' | '.join(cells)} | {ratio:.2f}x |"


if __name__ == "__main__":
    main()

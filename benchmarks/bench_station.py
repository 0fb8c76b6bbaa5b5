"""Whole-station runtime benchmarks: start-up time, idle RSS and CPU, Heartbeat round trips against a
bare CSMS (ours vs the `ocpp` package vs a bare trio-websocket client) and outbox replay throughput.

A script, not a test: it prints figures and asserts nothing about them. Run from the repo root:
`.venv/bin/python -m benchmarks.bench_station [--idle-seconds N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
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


# --- process: start-up, RSS, idle CPU ---------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_ticks(pid: int) -> int:
    # Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


async def bench_process(idle_seconds: float) -> dict[str, float]:
    starts: list[float] = []
    result: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        csms: TestCsms = await nursery.start(serve_test_csms)
        for run in range(START_RUNS):
            with tempfile.TemporaryDirectory(prefix="evsb-", dir="/tmp") as tmp:
                station_id = f"BENCH-{run}"
                config = _toml(Path(tmp), csms.port, station_id)
                t0 = time.perf_counter()
                process = await trio.lowlevel.open_process(
                    [sys.executable, "-m", "evstation", "run", "--config", str(config)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=REPO,
                )
                try:
                    await csms.wait_for(station_id, "BootNotification")
                    starts.append(time.perf_counter() - t0)
                    if run == START_RUNS - 1:
                        await csms.wait_for(station_id, "StatusNotification", 2)
                        await trio.sleep(RSS_SETTLE_S)
                        result["rss_mib"] = _rss_kib(process.pid) / 1024
                        ticks0 = _cpu_ticks(process.pid)
                        await trio.sleep(idle_seconds)
                        cpu_s = (_cpu_ticks(process.pid) - ticks0) / CLOCK_TICKS
                        result["idle_cpu_s"] = cpu_s
                        result["idle_cpu_pct"] = 100 * cpu_s / idle_seconds
                finally:
                    process.kill()
                    await process.wait()
        nursery.cancel_scope.cancel()
    result["start_to_boot_median_ms"] = 1000 * statistics.median(starts)
    result["start_to_boot_min_ms"] = 1000 * min(starts)
    return result


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


async def bench_replay(port: int) -> float:
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
            while await station.outbox.depth() > 0:
                await station.outbox.wait_empty()
            elapsed = time.perf_counter() - t0
            dead = len(await station.outbox.dead_letters())
    if dead:
        raise RuntimeError(f"{dead} replayed messages were given up")
    return REPLAY_MESSAGES / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()

    figures = trio.run(bench_process, args.idle_seconds)
    print(
        f"process start -> BootNotification received: median {figures['start_to_boot_median_ms']:.0f} ms "
        f"(min {figures['start_to_boot_min_ms']:.0f} ms, {START_RUNS} runs)"
    )
    print(f"RSS after boot, idle, 2 EVSEs: {figures['rss_mib']:.1f} MiB")
    cpu_s, cpu_pct = figures["idle_cpu_s"], figures["idle_cpu_pct"]
    print(f"CPU over {args.idle_seconds:g} s idle: {cpu_s:.2f} s ({cpu_pct:.2f} %)")

    bare = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bare_csms"], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    try:
        assert bare.stdout is not None
        port = int(bare.stdout.readline())
        ocpp_us = asyncio.run(rtt_ocpp_package(port))
        floor_us = trio.run(rtt_bare_trio, port)
        ours_us = trio.run(rtt_ours, port)
        print(f"Heartbeat round trip, {ROUND_TRIPS} sequential, bare CSMS:")
        print(f"  (a) ocpp package (asyncio + websockets): {ocpp_us:8.1f} µs")
        print(f"  (b) bare trio-websocket client (floor):  {floor_us:8.1f} µs")
        print(f"  (c) evstation CallManager over Link:     {ours_us:8.1f} µs")
        print(f"  ours / ocpp package = {ours_us / ocpp_us:.2f}x; ours / floor = {ours_us / floor_us:.2f}x")
        rate = trio.run(bench_replay, port)
        print(
            f"outbox replay: {REPLAY_MESSAGES} TransactionEvents (10 sampled values each): {rate:.0f} msg/s"
        )
    finally:
        bare.terminate()
        bare.wait()


if __name__ == "__main__":
    main()

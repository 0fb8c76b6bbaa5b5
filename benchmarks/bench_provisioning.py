"""GetBaseReport FullInventory on a two-EVSE 2.0.1 station: time from the CSMS sending the request to
the last NotifyReport arriving, and the number and size of the NotifyReport messages.

The station (`open_station`, sim hardware) and our test CSMS (runtime/testcsms.py, which validates
every frame against the schema) run in one process over a loopback websocket. A script, not a test:
it prints figures and asserts nothing about them. Run from the repo root:
`.venv/bin/python -m benchmarks.bench_provisioning [--runs N]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.station import open_station
from evstation.runtime.testcsms import TestCsms, serve_test_csms

STATION_ID = "BENCH-PROV-1"
WARMUP = 3


def _config(folder: Path, port: int) -> StationConfig:
    connector = {"id": 1, "type": "cType2", "max_current_a": 32}
    evse = {"connector": [connector], "controller": {"driver": "sim"}, "meter": {"driver": "sim"}}
    return parse_config(
        {
            "station": {
                "id": STATION_ID,
                "vendor": "evstation",
                "model": "bench",
                "ocpp_version": "2.0.1",
                "data_dir": str(folder / "data"),
            },
            "csms": {"endpoints": [{"url": f"ws://127.0.0.1:{port}/ocpp", "security_profile": 0}]},
            "evse": [{"id": 1, **evse}, {"id": 2, **evse}],
        },
        base_dir=folder,
    )


async def _one_report(csms: TestCsms, request_id: int) -> tuple[float, list[dict[str, Any]]]:
    already = len(csms.received(STATION_ID, "NotifyReport"))
    t0 = time.perf_counter()
    answer = await csms.call(
        STATION_ID, "GetBaseReport", {"requestId": request_id, "reportBase": "FullInventory"}
    )
    assert answer["status"] == "Accepted", answer
    count = already + 1
    while True:
        page = await csms.wait_for(STATION_ID, "NotifyReport", count)
        if not page["tbc"]:
            break
        count += 1
    elapsed = time.perf_counter() - t0
    pages = [call.payload for call in csms.received(STATION_ID, "NotifyReport")[already:]]
    return elapsed, pages


async def bench(runs: int) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        csms: TestCsms = await nursery.start(serve_test_csms)
        with tempfile.TemporaryDirectory(prefix="evsb-", dir="/tmp") as tmp:
            async with open_station(_config(Path(tmp), csms.port)) as station:
                await station.session.uplink.wait_online()
                await csms.wait_for(STATION_ID, "StatusNotification", 2)
                variables = len(station.session.device_model.definitions)
                for request_id in range(WARMUP):
                    await _one_report(csms, request_id)
                times: list[float] = []
                pages: list[dict[str, Any]] = []
                for request_id in range(WARMUP, WARMUP + runs):
                    elapsed, pages = await _one_report(csms, request_id)
                    times.append(elapsed)
        nursery.cancel_scope.cancel()
    sizes = [len(json.dumps(p, separators=(",", ":")).encode()) for p in pages]
    return {
        "variables": variables,
        "messages": len(pages),
        "items": sum(len(p["reportData"]) for p in pages),
        "payload_bytes": sum(sizes),
        "largest_payload_bytes": max(sizes),
        "median_ms": 1000 * statistics.median(times),
        "min_ms": 1000 * min(times),
        "max_ms": 1000 * max(times),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    result = trio.run(bench, args.runs)
    print(
        f"GetBaseReport FullInventory, 2 EVSEs: {result['variables']} variables in {result['messages']} "
        f"NotifyReport messages ({result['payload_bytes']} bytes of payload, largest "
        f"{result['largest_payload_bytes']})"
    )
    print(
        f"request -> last NotifyReport: median {result['median_ms']:.1f} ms, min {result['min_ms']:.1f} ms, "
        f"max {result['max_ms']:.1f} ms over {result['runs']} runs"
    )


if __name__ == "__main__":
    main()

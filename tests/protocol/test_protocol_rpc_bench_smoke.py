"""The codec benchmark's messages are schema-valid, and both of its round trips run (no timing here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from evstation.protocol.versions import OcppVersion

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_codec.py"


def _load_bench() -> ModuleType:
    # By path: the benchmarks/ folder is not on sys.path under every way of running pytest.
    spec = importlib.util.spec_from_file_location("bench_codec", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.mark.parametrize(("name", "version", "action", "build"), bench.CASES)
def test_benchmark_message_is_schema_valid_for_both_implementations(
    name: str, version: OcppVersion, action: str, build: object
) -> None:
    assert callable(build)
    payload = build()
    frame = bench.frame_for(action, payload)

    ours = json.loads(bench.evstation_round_trip(frame, version))
    theirs = json.loads(bench.ocpp_round_trip(frame, version))  # raises if the official schema rejects it

    assert ours[:3] == [2, ours[1], action]
    assert ours[3] == theirs == payload

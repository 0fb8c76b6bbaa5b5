"""The long-run benchmark's driver (benchmarks/longrun.py), a few cycles of each version: every step
of a cycle completes (sessions of each kind, link drop, reservation, CSMS requests) and a checkpoint
measures the station, so the benchmark does not rot between the runs that find what grows."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest
import trio

from benchmarks.longrun import Checkpoint, long_run
from evstation.protocol.versions import OcppVersion


@pytest.mark.parametrize("version", [OcppVersion.V16, OcppVersion.V201])
async def test_long_run_cycles_complete_and_are_measured(
    tmp_path: Path, clock: trio.testing.MockClock, version: OcppVersion
) -> None:
    points: list[Checkpoint] = []
    tracemalloc.start(1)
    try:
        stuck = await long_run(version, tmp_path, cycles=2, every=2, on_checkpoint=points.append)
    finally:
        tracemalloc.stop()
    assert stuck == {}
    assert [point.cycle for point in points] == [0, 2]
    last = points[-1]
    assert last.tasks > 0
    assert last.database["rows outbox"] == 0  # every transaction message answered (or given up)
    assert last.database["rows transactions"] == 0
    assert any(path.endswith("._held") for path in last.containers)  # the walk reaches the blocks

"""Shared test settings. Every Trio test runs under pytest-trio (trio_mode in pyproject.toml)."""


# --- CSMS link and test CSMS (tests/runtime/test_runtime_link*.py, *_tls*.py, *_testcsms*.py) ---

import math
from typing import Any

import pytest
import trio.testing
import trustme
from timeout_report import pytest_timeout_cancel_timer, pytest_timeout_set_timer

from evstation.runtime import storage

__all__ = ["pytest_timeout_cancel_timer", "pytest_timeout_set_timer"]  # hooks, found by name


@pytest.fixture
def csms_ca() -> trustme.CA:
    """The CA that signs the test CSMS's certificate (and the stations' client certificates)."""
    return trustme.CA()


# --- virtual time over real SQLite (the runtime session tests; a module may define its own `clock`) ---


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time that jumps as soon as every task waits. SQLite's worker thread does not let it jump
    mid-query: the fixture below holds the clock still around every database call. (A threshold of
    20 ms, used before that fixture, cost 20 ms of real time at every jump: about 90 s of the suite.)"""
    return trio.testing.MockClock(autojump_threshold=0)


@pytest.fixture(autouse=True)
def _virtual_time_stands_still_while_sqlite_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """With an autojumping MockClock, a SQLite call in its worker thread that outlasts the threshold (a
    busy machine, a slow fsync) would let the clock jump to the next timer while the caller waits, and
    a test's deadline or expected timings would drift with the machine's load. The real database call
    still runs; only the clock is held still until it returns (nested and concurrent calls counted)."""
    real = storage.run_in_worker
    holds: dict[int, tuple[int, float]] = {}  # id(clock) -> (calls in flight, threshold to restore)

    async def held(limiter: trio.CapacityLimiter, work: Any, *args: object) -> Any:
        clock = trio.lowlevel.current_clock()
        if not isinstance(clock, trio.testing.MockClock):
            return await real(limiter, work, *args)
        key = id(clock)
        count, saved = holds.get(key, (0, clock.autojump_threshold))
        holds[key] = (count + 1, saved)
        clock.autojump_threshold = math.inf
        try:
            return await real(limiter, work, *args)
        finally:
            count, saved = holds[key]
            if count == 1:
                del holds[key]
                clock.autojump_threshold = saved
            else:
                holds[key] = (count - 1, saved)

    monkeypatch.setattr(storage, "run_in_worker", held)

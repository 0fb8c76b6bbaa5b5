"""Shared test settings. Every Trio test runs under pytest-trio (trio_mode in pyproject.toml)."""


# --- CSMS link and test CSMS (tests/runtime/test_runtime_link*.py, *_tls*.py, *_testcsms*.py) ---

import pytest
import trio.testing
import trustme
from timeout_report import pytest_timeout_cancel_timer, pytest_timeout_set_timer

__all__ = ["pytest_timeout_cancel_timer", "pytest_timeout_set_timer"]  # hooks, found by name


@pytest.fixture
def csms_ca() -> trustme.CA:
    """The CA that signs the test CSMS's certificate (and the stations' client certificates)."""
    return trustme.CA()


# --- virtual time over real SQLite (the runtime session tests; a module may define its own `clock`) ---


@pytest.fixture
def clock() -> trio.testing.MockClock:
    """Virtual time that jumps only after 20 ms of real idleness: SQLite runs in a worker thread, and a
    threshold of 0 would jump the clock while a query is still running."""
    return trio.testing.MockClock(autojump_threshold=0.02)

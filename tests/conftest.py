"""Shared test settings. Every Trio test runs under pytest-trio (trio_mode in pyproject.toml)."""


# --- CSMS link and test CSMS (tests/runtime/test_runtime_link*.py, *_tls*.py, *_testcsms*.py) ---

import pytest
import trustme
from timeout_report import pytest_timeout_cancel_timer, pytest_timeout_set_timer

__all__ = ["pytest_timeout_cancel_timer", "pytest_timeout_set_timer"]  # hooks, found by name


@pytest.fixture
def csms_ca() -> trustme.CA:
    """The CA that signs the test CSMS's certificate (and the stations' client certificates)."""
    return trustme.CA()

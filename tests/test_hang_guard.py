"""A hung test fails the run within minutes: pytest-timeout as configured in pyproject.toml."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
MAX_TIMEOUT_S = 300  # "fails in minutes": well inside CI's 90-minute limit, far above any test's need

HUNG_TEST = """
import trio


async def test_waits_for_an_event_nobody_sets() -> None:
    await trio.Event().wait()


def test_never_reached() -> None:
    pass
"""

CONFTEST = """
from timeout_report import pytest_timeout_cancel_timer, pytest_timeout_set_timer

__all__ = ["pytest_timeout_cancel_timer", "pytest_timeout_set_timer"]
"""


def test_the_suite_has_a_per_test_timeout_of_minutes(pytestconfig: pytest.Config) -> None:
    timeout = float(pytestconfig.getini("timeout"))
    assert 0 < timeout <= MAX_TIMEOUT_S
    assert pytestconfig.getini("timeout_method") == "thread"


@pytest.mark.slow
def test_a_hung_trio_test_ends_the_run_naming_the_test(tmp_path: Path) -> None:
    (tmp_path / "test_hung.py").write_text(HUNG_TEST)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    paths = [str(TESTS), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    started = time.monotonic()
    # The repository's own pytest settings (-c), with the timeout shortened from minutes to a second.
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "--rootdir", str(tmp_path)),
            *("-q", "--timeout", "1", str(tmp_path / "test_hung.py")),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # without the plugin the run would hang: this bounds the test itself
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert "test_hung.py::test_waits_for_an_event_nobody_sets still running after 1 s" in result.stdout
    assert "Stack of MainThread" in result.stdout
    assert elapsed < 30

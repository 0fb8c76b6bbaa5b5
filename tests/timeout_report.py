"""pytest-timeout's thread method, with the hung test named first (its own dump does not name it).

A hung Trio test shows only the event loop waiting in epoll in the stack dump, so the test id is the
one clue to where it hung. Loaded by tests/conftest.py (which re-exports the two hooks).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import pytest_timeout

_TIMER = pytest.StashKey[threading.Timer]()


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    if settings.method != "thread":
        return None  # pytest-timeout's own handling

    def expire() -> None:
        item.config.get_terminal_writer().line(
            f"\n{item.nodeid} still running after {settings.timeout:g} s: dumping stacks and exiting"
        )
        pytest_timeout.timeout_timer(item, settings)  # dumps every thread's stack, then os._exit(1)

    timer = threading.Timer(settings.timeout, expire)
    timer.daemon = True
    timer.name = f"timeout {item.nodeid}"
    item.stash[_TIMER] = timer
    timer.start()
    return True


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_cancel_timer(item: pytest.Item) -> bool | None:
    timer = item.stash.get(_TIMER, None)
    if timer is None:
        return None
    timer.cancel()
    timer.join()
    del item.stash[_TIMER]
    return True

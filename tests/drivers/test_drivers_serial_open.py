"""A serial port that cannot be opened says why (missing device; permission: add the user to dialout),
once, then at a bounded rate while the supervisor keeps retrying. Real paths and a real pty."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import traceback
import warnings
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from evstation.drivers.boards.serial_port import (
    FAILURE_LOG_INTERVAL_S,
    FailureLog,
    SerialPort,
    SerialPortError,
    open_raw,
    supervise_port,
)

LOGGER = "evstation.drivers.boards.serial_port"
MISSING = "/dev/no-such-tty-for-evstation"
NOBODY = 65534  # uid and gid of `nobody` on Debian
REOPEN_S = 2.0


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


# --- the rate limit, as a pure function of time ------------------------------------------------------


def test_a_repeating_failure_is_logged_once_then_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures = FailureLog(300.0)
    for attempt in range(301):  # every 2 s for 600 s
        failures.failed("/dev/ttyUSB0: cannot open: no such device", now=attempt * 2.0)
    assert warnings_of(caplog) == [
        "/dev/ttyUSB0: cannot open: no such device",
        "/dev/ttyUSB0: cannot open: no such device (still failing: 150 times in the last 300 s)",
        "/dev/ttyUSB0: cannot open: no such device (still failing: 150 times in the last 300 s)",
    ]


def test_a_new_reason_is_logged_at_once_and_recovery_resets(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    failures = FailureLog(300.0)
    failures.failed("gone", now=0.0)
    failures.failed("permission denied", now=2.0)
    failures.failed("gone", now=4.0)  # seen within the interval: quiet
    failures.recovered("/dev/ttyUSB0")
    failures.failed("gone", now=6.0)
    messages = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert messages == ["gone", "permission denied", "/dev/ttyUSB0: open and answering again", "gone"]


def test_recovery_without_a_logged_failure_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    FailureLog(300.0).recovered("/dev/ttyUSB0")
    assert caplog.records == []


# --- the supervisor retrying a port that cannot be opened --------------------------------------------


async def _never_opens(_port: SerialPort, _ready: object) -> None:
    raise AssertionError("the port was opened")


async def supervise_until(path: str, attempts: int) -> list[str | None]:
    """Run the supervisor on `path` until it has ended `attempts` sessions; their errors."""
    ended: list[str | None] = []
    enough = trio.Event()

    async def session_ended(error: str | None) -> None:
        ended.append(error)
        if len(ended) == attempts:
            enough.set()

    async with trio.open_nursery() as nursery:
        # No deadline here: with a MockClock a worker thread's open would let it jump straight to one.
        # pytest-timeout bounds the test instead.
        await nursery.start(
            lambda task_status: supervise_port(
                path,
                115200,
                read_timeout=0.1,
                reopen_interval=REOPEN_S,
                session=_never_opens,
                session_ended=session_ended,
                task_status=task_status,
            )
        )
        await enough.wait()
        nursery.cancel_scope.cancel()
    return ended


async def test_a_missing_device_is_logged_once_then_at_a_bounded_rate_while_retrying(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    attempts = int(1.5 * FAILURE_LOG_INTERVAL_S / REOPEN_S)  # 225 tries over 450 virtual seconds
    ended = await supervise_until(MISSING, attempts)
    reason = f"{MISSING}: cannot open: no such device: is the board connected and the path right?"
    assert all(error is not None and error.startswith(reason) for error in ended)
    logged = warnings_of(caplog)
    assert len(logged) == 2
    assert logged[0].startswith(reason)
    assert "(still failing: " in logged[1]


# --- permission: "add the user to dialout" -----------------------------------------------------------


@pytest.fixture
def locked_pty() -> Iterator[str]:
    """A real pty slave with mode 000; the master stays open so the slave can be reopened."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    os.close(slave)
    os.chmod(path, 0)
    try:
        yield path
    finally:
        os.close(master)


def open_error_as_nobody(path: str) -> str:
    """The error text of `open_raw(path)` in a child process that runs as `nobody`.

    Root opens any file whatever its mode, so the permission case needs a user without that power; a
    forked child (not a new interpreter) because root's Python may sit where `nobody` cannot read.
    """
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork in a threaded process; the child only opens a file and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        text = "opened"
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            open_raw(path, 115200).close()
        except SerialPortError as exc:
            text = str(exc)
        except BaseException:
            text = traceback.format_exc()
        os.write(write_fd, text.encode())
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    return text


def test_a_device_the_user_may_not_open_says_add_the_user_to_dialout(locked_pty: str) -> None:
    if os.geteuid() == 0:
        message, user = open_error_as_nobody(locked_pty), "nobody"
    else:
        with pytest.raises(SerialPortError) as info:
            open_raw(locked_pty, 115200)
        message, user = str(info.value), pwd.getpwuid(os.geteuid()).pw_name
    # A pty belongs to 'tty' (or 'root' in some containers); a real UART or USB adapter to 'dialout'.
    group = grp.getgrgid(os.stat(locked_pty).st_gid).gr_name
    assert message == (
        f"{locked_pty}: cannot open: permission denied: add the user {user} to the 'dialout' group "
        f"(`sudo usermod -aG dialout {user}`, then restart the station); "
        f"this device belongs to group '{group}'"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens a mode-000 pty; the message is checked as nobody")
async def test_a_device_the_user_may_not_open_is_logged_once_while_retrying(
    autojump_clock: trio.testing.MockClock, locked_pty: str, caplog: pytest.LogCaptureFixture
) -> None:
    ended = await supervise_until(locked_pty, 20)
    assert all(error is not None and "permission denied" in error for error in ended)
    logged = warnings_of(caplog)
    assert len(logged) == 1
    assert "add the user" in logged[0] and "dialout" in logged[0]

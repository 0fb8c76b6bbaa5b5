"""The station as operations see it. systemd notification (sd_notify): READY=1 once every service is up,
WATCHDOG=1 at half the watchdog interval from the event loop, STOPPING=1 on SIGTERM (the "systemd" here
is a datagram socket the test listens on). Start-up: one log line, folders made or refused naming the
path, before any dial. The control API's `network` op follows `[control] allow_network_op`.
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import os
import shutil
import signal
import socket as stdlib_socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from evstation import __version__
from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.control import NETWORK_OP_OFF
from evstation.runtime.notify import NotifyConfigError, NotifySettings, open_notifier
from evstation.runtime.station import StartupError, open_station, prepare_directories, run_station

WATCHDOG_USEC = 10_000_000  # 10 s: pings every 5 s
FAST_WATCHDOG_USEC = 200_000  # 0.2 s, for the real-time station tests: pings every 0.1 s
BOUND_S = 1000.0  # virtual seconds
IO_TIMEOUT_S = 15.0  # real seconds; each test is over in well under one


@pytest.fixture
def folder() -> Iterator[Path]:
    # pytest's tmp_path can exceed AF_UNIX's 108-byte limit: use a short directory under /tmp.
    path = Path(tempfile.mkdtemp(prefix="evs-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def sim_config(data_dir: Path, csms_port: int = 9, **control: Any) -> StationConfig:
    data: dict[str, Any] = {
        "station": {
            "id": "NOTIFY-1",
            "vendor": "Acme",
            "model": "Wallbox",
            "ocpp_version": "2.0.1",
            "data_dir": str(data_dir),
        },
        "csms": {
            "endpoints": [{"url": f"ws://127.0.0.1:{csms_port}/ocpp", "security_profile": 0}],
            "retry_backoff_wait_minimum_s": 1,
        },
        "evse": [
            {
                "id": 1,
                "connector": [{"id": 1, "type": "cType2", "max_current_a": 32}],
                "controller": {"driver": "sim"},
                "meter": {"driver": "sim"},
            }
        ],
        "control": control,
    }
    return parse_config(data, base_dir=data_dir)


async def datagram_listener(address: str) -> trio.socket.SocketType:
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
    await sock.bind(address)
    return sock


async def next_message(sock: trio.socket.SocketType) -> tuple[float, str]:
    data = await sock.recv(4096)
    return trio.current_time(), data.decode()


# --- the environment systemd passes -----------------------------------------------------------------


def test_no_notify_socket_means_no_notifications() -> None:
    assert NotifySettings.from_environ({}, pid=1) is None
    assert NotifySettings.from_environ({"NOTIFY_SOCKET": ""}, pid=1) is None


def test_notify_socket_path_abstract_name_and_watchdog_interval() -> None:
    path = NotifySettings.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify"}, pid=7)
    assert path == NotifySettings("/run/systemd/notify", None)
    abstract = NotifySettings.from_environ(
        {"NOTIFY_SOCKET": "@sd-notify", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7
    )
    assert abstract == NotifySettings("\0sd-notify", 15.0)  # pings at half the interval


def test_watchdog_meant_for_another_process_is_ignored() -> None:
    environ = {"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}
    settings = NotifySettings.from_environ(environ, pid=7)
    assert settings is not None and settings.watchdog_interval_s is None


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"NOTIFY_SOCKET": "vsock:2:1234"}, "only an absolute path or an abstract '@name'"),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "soon"}, "WATCHDOG_USEC='soon' is not an integer"),
        ({"NOTIFY_SOCKET": "/n", "WATCHDOG_USEC": "0"}, "WATCHDOG_USEC='0' must be positive"),
    ],
)
def test_unusable_environment_is_a_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(NotifyConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        NotifySettings.from_environ(environ, pid=1)


async def test_notifications_reach_an_abstract_socket() -> None:
    name = f"evstation-test-{uuid.uuid4().hex}"
    with await datagram_listener("\0" + name) as listener, trio.fail_after(10):
        async with open_notifier({"NOTIFY_SOCKET": "@" + name}) as notifier:
            assert notifier is not None
            await notifier.notify("READY=1", "STATUS=up")
        assert (await listener.recv(4096)) == b"READY=1\nSTATUS=up"


async def test_a_vanished_notify_socket_is_logged_once_and_the_station_goes_on(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = folder / "notify"
    listener = await datagram_listener(str(path))
    with trio.fail_after(10):
        async with open_notifier({"NOTIFY_SOCKET": str(path)}) as notifier:
            assert notifier is not None
            listener.close()  # systemd went away
            for _ in range(3):
                await notifier.notify("WATCHDOG=1")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot notify systemd (WATCHDOG=1)" in warnings[0].getMessage()


async def test_watchdog_pings_at_half_the_interval_from_the_event_loop(
    autojump_clock: trio.testing.MockClock, folder: Path
) -> None:
    path = str(folder / "notify")
    with await datagram_listener(path) as listener, trio.fail_after(BOUND_S):
        async with open_notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)}) as notifier:
            assert notifier is not None
            async with trio.open_nursery() as nursery:
                await nursery.start(notifier.run_watchdog)
                pings = [await next_message(listener) for _ in range(4)]
                nursery.cancel_scope.cancel()
    assert [text for _, text in pings] == ["WATCHDOG=1"] * 4
    assert [b[0] - a[0] for a, b in itertools.pairwise(pings)] == [5.0] * 3


# --- the station under systemd ----------------------------------------------------------------------
# Real time here: opening SQLite in its worker thread can take longer than a MockClock's autojump
# threshold, and the clock would then jump straight to the test's deadline.


async def test_station_reports_ready_pings_the_watchdog_and_says_stopping(folder: Path) -> None:
    listener = await datagram_listener(str(folder / "notify"))
    environ = {"NOTIFY_SOCKET": str(folder / "notify"), "WATCHDOG_USEC": str(FAST_WATCHDOG_USEC)}
    config = sim_config(folder / "data")
    with listener, trio.fail_after(IO_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(run_station, config, environ=environ))
            before_ready: list[str] = []
            while not (message := (await next_message(listener))[1]).startswith("READY=1"):
                before_ready.append(message)
            # Ready means served: the control socket is listening.
            assert config.control_socket_path.is_socket()
            status = message.splitlines()[1]
            pings = [(await next_message(listener))[1] for _ in range(3)]
            os.kill(os.getpid(), signal.SIGTERM)
            while (await next_message(listener))[1] != "STOPPING=1":
                pass
    # The watchdog runs from the start (a start-up that hangs is a hung station), not from READY on.
    assert before_ready[:1] == ["WATCHDOG=1"]
    assert set(before_ready) == {"WATCHDOG=1"}
    assert status.startswith(f"STATUS=running: evstation {__version__}: station NOTIFY-1, OCPP 2.0.1")
    assert pings == ["WATCHDOG=1"] * 3
    assert not config.control_socket_path.exists()  # shut down cleanly


async def test_station_without_notify_socket_runs_as_before(folder: Path) -> None:
    config = sim_config(folder / "data")
    with trio.fail_after(IO_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            started = trio.Event()
            nursery.start_soon(
                functools.partial(run_station, config, environ={}, ready=lambda _station: started.set())
            )
            await started.wait()
            nursery.cancel_scope.cancel()


# --- start-up: one line, folders made or refused before the CSMS is dialled --------------------------


async def test_start_up_logs_one_line_and_makes_missing_folders(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    socket_path = folder / "run" / "evstation" / "c.sock"
    config = sim_config(folder / "var" / "lib" / "evstation", socket_path=str(socket_path))
    with trio.fail_after(IO_TIMEOUT_S):
        async with open_station(config):
            assert socket_path.is_socket()
            assert (folder / "var" / "lib" / "evstation" / "evstation.sqlite3").is_file()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evstation ")]
    assert lines == [
        f"evstation {__version__}: station NOTIFY-1, OCPP 2.0.1, data dir {folder}/var/lib/evstation, "
        f"control socket {socket_path}"
    ]


@pytest.mark.parametrize("which", ["data_dir", "socket"])
async def test_a_folder_that_cannot_be_made_is_named_before_the_csms_is_dialled(
    folder: Path, which: str
) -> None:
    blocker = folder / "blocker"
    blocker.write_text("a file where a folder should be")
    data_dir = blocker / "data" if which == "data_dir" else folder / "data"
    socket_path = folder / "run" / "c.sock" if which == "data_dir" else blocker / "evstation" / "c.sock"
    # A CSMS that would see the dial: it must not.
    csms = stdlib_socket.socket()
    csms.bind(("127.0.0.1", 0))
    csms.listen()
    csms.setblocking(False)
    with csms, trio.fail_after(IO_TIMEOUT_S):
        config = sim_config(data_dir, csms_port=csms.getsockname()[1], socket_path=str(socket_path))
        with pytest.raises(StartupError) as info:
            async with open_station(config):
                pass
        with pytest.raises(BlockingIOError):
            csms.accept()
    expected = (
        f"cannot create the data dir {blocker}/data: Not a directory"
        if which == "data_dir"
        else f"cannot create the control socket's folder {blocker}/evstation: Not a directory"
    )
    assert str(info.value) == expected


async def test_a_control_socket_that_cannot_be_bound_is_named(folder: Path) -> None:
    socket_path = folder / ("x" * 120) / "c.sock"  # longer than a Unix socket address may be
    errors: list[str] = []
    with trio.fail_after(IO_TIMEOUT_S):
        try:
            async with open_station(sim_config(folder / "data", socket_path=str(socket_path))):
                pass
        except* OSError as group:  # raised inside the station's nursery
            errors = [str(error) for error in group.exceptions]
    assert errors == [f"cannot listen on the control socket {socket_path}: AF_UNIX path too long"]


def test_a_folder_that_exists_as_a_file_is_refused_by_name(folder: Path) -> None:
    (folder / "data").write_text("not a folder")
    with pytest.raises(StartupError) as info:
        prepare_directories(sim_config(folder / "data"))
    assert str(info.value) == f"cannot use {folder}/data as the data dir: it exists and is not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0500 folder: the check cannot fail as root")
def test_a_folder_this_user_cannot_write_is_refused_by_name(folder: Path) -> None:
    (folder / "ro").mkdir(mode=0o500)
    with pytest.raises(StartupError, match=f"the data dir {folder}/ro is not writable by this user"):
        prepare_directories(sim_config(folder / "ro"))


# --- the network op follows the configuration ------------------------------------------------------


async def network_op_reply(config: StationConfig) -> dict[str, Any]:
    return await control_reply(config, b'{"id": 1, "op": "network", "up": false}\n')


async def control_reply(config: StationConfig, request: bytes) -> dict[str, Any]:
    with trio.fail_after(IO_TIMEOUT_S):
        async with open_station(config):
            stream = await trio.open_unix_socket(str(config.control_socket_path))
            async with stream:
                await stream.send_all(request)
                data = b""
                while not data.endswith(b"\n"):
                    data += await stream.receive_some(4096)
    reply: dict[str, Any] = json.loads(data)
    return reply


async def test_station_answers_the_network_op_only_when_configured(folder: Path) -> None:
    off = await network_op_reply(sim_config(folder / "off"))
    assert off == {"id": 1, "ok": False, "error": NETWORK_OP_OFF}
    on = await network_op_reply(sim_config(folder / "on", allow_network_op=True))
    assert on == {"id": 1, "ok": True, "result": {"up": False}}


async def test_the_status_op_of_a_real_station_has_the_documented_keys(folder: Path) -> None:
    # docs/control-api.md: the `status` example and the values of `link` and `boot`.
    reply = await control_reply(sim_config(folder), b'{"id": 1, "op": "status"}\n')
    result = reply["result"]
    station_keys = {"ocpp_version", "station_id", "link", "network_up", "boot", "outbox_depth"}
    assert set(result) == {*station_keys, "evses"}
    assert result["link"] in {"Offline", "Connecting", "Connected", "BackingOff", "NetworkDown"}
    assert result["boot"] in {"NotSent", "Awaiting", "Pending", "Rejected", "Accepted"}
    assert result["network_up"] is True
    assert set(result["evses"][0]) == {
        "id", "connectors", "phase", "transaction_id", "offered_current_a", "power_w", "energy_wh",
        "active_faults", "cable_max_current_a",
    }  # fmt: skip

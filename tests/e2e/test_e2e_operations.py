"""End to end, the operator's view: `evstation run` as systemd runs it (deploy/evstation.service):
notifications on the socket in $NOTIFY_SOCKET, the start-up line, folders made or refused before the
CSMS is dialled; `evstation ctl --help`."""

from __future__ import annotations

import signal
import socket as stdlib_socket
import uuid

import trio
from e2e_station import (
    run_cli,
    short_dir,
    station_process,
    stderr_of,
    terminate,
    write_config,
)

from evstation import __version__
from evstation.runtime.testcsms import TestCsms, serve_test_csms

TIMEOUT_S = 18.0
STATION = "E2E-SYSTEMD"
WATCHDOG_USEC = 200_000  # pings every 0.1 s


async def test_e2e_under_systemd_ready_watchdog_and_stopping() -> None:
    name = f"evstation-e2e-{uuid.uuid4().hex}"
    listener = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_DGRAM)
    await listener.bind("\0" + name)  # abstract, as systemd's own socket is given: '@name'
    env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with listener, trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            config = write_config(folder, version="2.0.1", port=csms.port, station_id=STATION)
            async with station_process(config, env=env) as process:
                messages: list[str] = []
                while not messages or not messages[-1].startswith("READY=1"):
                    messages.append((await listener.recv(4096)).decode())
                assert (folder / "c.sock").is_socket()
                for _ in range(3):
                    messages.append((await listener.recv(4096)).decode())
                await csms.wait_for(STATION, "BootNotification")
                process.send_signal(signal.SIGTERM)
                while messages[-1] != "STOPPING=1":
                    messages.append((await listener.recv(4096)).decode())
                assert await process.wait() == 0
            nursery.cancel_scope.cancel()
        log = stderr_of(config)
    ready = next(m for m in messages if m.startswith("READY=1"))
    assert ready.splitlines()[1].startswith(f"STATUS=running: evstation {__version__}: station {STATION}")
    assert messages[0] == "WATCHDOG=1"
    assert messages.count("WATCHDOG=1") >= 4
    start_lines = [line for line in log.splitlines() if f"evstation {__version__}: station" in line]
    assert len(start_lines) == 1
    assert start_lines[0].endswith(
        f"station {STATION}, OCPP 2.0.1, data dir {folder / 'data'}, control socket {folder / 'c.sock'}"
    )


async def test_e2e_missing_runtime_folder_is_created() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            config = write_config(folder, version="1.6", port=csms.port, station_id=STATION)
            config.write_text(config.read_text().replace('"c.sock"', '"run/evs/c.sock"'))
            async with station_process(config) as process:
                await csms.wait_for(STATION, "BootNotification")
                assert (folder / "run" / "evs" / "c.sock").is_socket()
                assert await terminate(process) == 0
            nursery.cancel_scope.cancel()


async def test_e2e_unusable_socket_folder_is_named_and_the_csms_never_dialled() -> None:
    csms = stdlib_socket.socket()
    csms.bind(("127.0.0.1", 0))
    csms.listen()
    csms.setblocking(False)
    with csms, trio.fail_after(TIMEOUT_S), short_dir() as folder:
        (folder / "run").write_text("a file where /run/evstation's parent should be")
        config = write_config(folder, version="2.0.1", port=csms.getsockname()[1])
        config.write_text(config.read_text().replace('"c.sock"', '"run/evs/c.sock"'))
        done = await run_cli("run", "--config", str(config))
        try:
            csms.accept()
            dialled = True
        except BlockingIOError:
            dialled = False
    assert done.returncode == 1
    lines = done.stderr.decode().strip().splitlines()
    assert lines[-1] == (
        f"{config}: cannot start: cannot create the control socket's folder {folder}/run/evs: Not a directory"
    )
    assert not dialled


async def test_e2e_ctl_help_lists_the_ops_and_exits_0() -> None:
    with trio.fail_after(TIMEOUT_S):
        done = await run_cli("ctl", "--help")
    assert done.returncode == 0
    out = done.stdout.decode()
    assert out.startswith("usage: evstation ctl")
    for op in ("status", "plug_in", "present_id_token", "network", "subscribe", "auth"):
        assert f"\n  {op}" in out

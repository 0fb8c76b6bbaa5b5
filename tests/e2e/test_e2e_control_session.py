"""End to end: `evstation run` as a process with simulated hardware, driven through the control API,
against the project's test CSMS; plus the CLI's version, config-error and `ctl` behaviour."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import trio
from e2e_station import (
    ControlClient,
    control_client,
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
STATION = "E2E-CTL"


def _status_is(status: str) -> Any:
    return lambda e: e["event"] == "StatusChanged" and e["evse_id"] == 1 and e["status"] == status


async def _drive_session(ops: ControlClient, events: ControlClient, csms: TestCsms, version: str) -> None:
    await ops.ok("plug_in", evse=1)
    await events.wait_event(lambda e: e["event"] == "EvPlugged" and e["evse_id"] == 1)
    assert (await ops.ok("present_id_token", id_token="E2E-TOKEN-1", evse=1))["evse"] == 1
    await events.wait_event(_status_is("Charging"))
    # The transaction is known once its start message went out.
    await csms.wait_for(STATION, "StartTransaction" if version == "1.6" else "TransactionEvent")
    status = await ops.ok("status")
    evse = status["evses"][0]
    assert evse["connectors"][0]["status"] == "Charging"
    assert evse["transaction_id"] is not None
    await ops.ok("unplug", evse=1)
    await events.wait_event(lambda e: e["event"] == "EvUnplugged" and e["evse_id"] == 1)
    await events.wait_event(_status_is("Available"))


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_e2e_session_through_control_api(version: str) -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            config = write_config(folder, version=version, port=csms.port, station_id=STATION)
            async with station_process(config) as process:
                await csms.wait_for(STATION, "StatusNotification")  # sent once online
                async with (
                    control_client(folder / "c.sock", process) as events,
                    control_client(folder / "c.sock", process) as ops,
                ):
                    assert (await events.ok("subscribe"))["subscribed"] is True
                    await _drive_session(ops, events, csms, version)
                    if version == "1.6":
                        start = await csms.wait_for(STATION, "StartTransaction")
                        stop = await csms.wait_for(STATION, "StopTransaction")
                        assert start["idTag"] == "E2E-TOKEN-1"
                        assert stop["reason"] == "EVDisconnected"
                        meter_start, meter_stop = start["meterStart"], stop["meterStop"]
                        assert isinstance(meter_start, int) and isinstance(meter_stop, int)
                        assert meter_stop >= meter_start
                    else:
                        await csms.wait_for(STATION, "TransactionEvent", 2)
                        kinds = [c.payload["eventType"] for c in csms.received(STATION, "TransactionEvent")]
                        while "Ended" not in kinds:
                            await csms.wait_for(STATION, "TransactionEvent", len(kinds) + 1)
                            kinds = [
                                c.payload["eventType"] for c in csms.received(STATION, "TransactionEvent")
                            ]
                        assert kinds[0] == "Started" and kinds[-1] == "Ended"
                        ended = csms.received(STATION, "TransactionEvent")[-1].payload
                        info = ended["transactionInfo"]
                        assert isinstance(info, dict) and info["stoppedReason"] == "EVDisconnected"
                    # The OCPP frames are streamed to subscribers too.
                    assert any(e["event"] == "OcppMessage" for e in events.events)
                # Both stop signals shut the station down cleanly (SIGINT is Ctrl-C in a terminal).
                assert await terminate(process, signal.SIGINT if version == "1.6" else signal.SIGTERM) == 0
                assert "shutting down" in stderr_of(config)
            nursery.cancel_scope.cancel()


async def test_e2e_ctl_status_against_running_station() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            config = write_config(folder, version="2.0.1", port=csms.port, station_id=STATION, evses=2)
            async with station_process(config) as process:
                await csms.wait_for(STATION, "StatusNotification", 2)
                async with control_client(folder / "c.sock", process):
                    pass  # the socket is up
                done = await run_cli("ctl", "--socket", str(folder / "c.sock"), "status")
                assert done.returncode == 0, done.stderr
                reply = json.loads(done.stdout.decode().splitlines()[0])
                assert reply["ok"] is True
                result = reply["result"]
                assert result["station_id"] == STATION
                assert result["ocpp_version"] == "2.0.1"
                assert [e["id"] for e in result["evses"]] == [1, 2]
                bad = await run_cli("ctl", "--socket", str(folder / "c.sock"), "plug_in", "--evse", "9")
                assert bad.returncode == 1
                assert json.loads(bad.stdout.decode())["ok"] is False
                assert await terminate(process) == 0
            nursery.cancel_scope.cancel()


async def test_e2e_bad_config_key_exits_2_naming_the_key() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        config = write_config(folder, version="2.0.1", port=9, extra_csms="heartbeat_intervall_s = 5")
        done = await run_cli("run", "--config", str(config))
        assert done.returncode == 2
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1, lines
        assert "csms.heartbeat_intervall_s" in lines[0]


async def test_e2e_station_that_cannot_start_says_why_in_one_line_and_exits_1() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        config = write_config(folder, version="2.0.1", port=9)
        (folder / "data").write_text("a file where the data folder should be")
        done = await run_cli("run", "--config", str(config))
        assert done.returncode == 1
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "cannot start" in lines[0] and "data" in lines[0], lines


async def test_e2e_station_logs_to_its_configured_file() -> None:
    """[logging] file: the station's log goes to that (rotating, size-capped) file, not to stderr; a
    file that cannot be opened is one line naming it, exit 1."""
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        config = write_config(folder, version="2.0.1", port=9)
        base = config.read_text()
        (folder / "not-a-folder").write_text("")
        config.write_text(base + '\n[logging]\nfile = "not-a-folder/station.log"\n')
        done = await run_cli("run", "--config", str(config))
        assert done.returncode == 1
        lines = done.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "cannot open log file" in lines[0] and "not-a-folder" in lines[0], lines

        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            config = write_config(folder, version="2.0.1", port=csms.port, station_id=STATION)
            logging = '\n[logging]\nfile = "logs/station.log"\nmax_file_bytes = 65536\n'
            config.write_text(config.read_text() + logging)
            async with station_process(config) as process:
                await csms.wait_for(STATION, "BootNotification")
                assert await terminate(process) == 0
            nursery.cancel_scope.cancel()
        logged = (folder / "logs" / "station.log").read_text()
        assert "connected to CSMS" in logged and "shutting down" in logged
        assert "connected to CSMS" not in stderr_of(config)


async def test_e2e_missing_config_file_is_one_line_naming_it_once() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        done = await run_cli("check-config", str(folder / "nope.toml"))
    assert done.returncode == 2
    assert done.stderr.decode().strip() == f"{folder / 'nope.toml'}: file not found"


async def test_e2e_version() -> None:
    with trio.fail_after(TIMEOUT_S):
        done = await run_cli("--version")
    assert done.returncode == 0
    assert done.stdout.decode().strip() == f"evstation {__version__}"


def test_e2e_config_helper_writes_short_socket_path() -> None:
    with short_dir() as folder:
        assert len(str(folder / "c.sock")) < 108
        assert isinstance(write_config(folder, version="1.6", port=1), Path)

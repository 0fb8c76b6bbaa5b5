"""The HIL rig's files: its configs load and build real drivers, hil/run_session.py drives a session
through a running station's control API (and fails when the session does not happen), the emulators'
consoles and the station's Modbus line sharing."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from e2e_station import REPO, short_dir, write_config

from evstation.drivers.boards.rapi import RapiBoard
from evstation.drivers.boards.yeti import YetiBoard
from evstation.drivers.meters import ModbusMeter, load_model
from evstation.drivers.sim.emulator_cli import apply_command
from evstation.drivers.sim.modbus_emulator import ModbusMeterEmulator, apply_console_command
from evstation.drivers.sim.phyverso_emulator import PhyVersoEmulator
from evstation.drivers.sim.yeti_emulator import YetiEmulator
from evstation.runtime.config import ConfigError, StationConfig, load_config, parse_config
from evstation.runtime.station import ModbusLines, build_evses, open_station
from evstation.runtime.testcsms import TestCsms, serve_test_csms

HIL = REPO / "hil"
RIGS = sorted(HIL.glob("*.toml"))
TIMEOUT_S = 15.0


def test_there_are_rig_configs() -> None:
    assert {p.name for p in RIGS} >= {"rig-yeti-sdm630.toml", "rig-rapi-em340.toml"}


@pytest.mark.parametrize("path", RIGS, ids=lambda p: p.name)
def test_rig_config_validates_and_builds_real_drivers(path: Path) -> None:
    config = load_config(path)
    lines = ModbusLines()
    evses, sims = build_evses(config, lines)
    lines.close()
    assert not sims  # hardware drivers only, nothing simulated
    for evse in evses:
        assert isinstance(evse.controller, YetiBoard | RapiBoard)
        assert evse.power_meter is not None


def _rtu_meter(device: str, unit_id: int, baud: int) -> dict[str, object]:
    return {
        "driver": "modbus",
        "model": "sdm630",
        "transport": "rtu",
        "device": device,
        "unit_id": unit_id,
        "baud": baud,
    }


def _two_meter_config(tmp_path: Path, baud_2: int) -> StationConfig:
    connector = [{"id": 1, "type": "cType2", "max_current_a": 16}]
    return parse_config(
        {
            "station": {"id": "LINES", "vendor": "v", "model": "m", "ocpp_version": "1.6"},
            "csms": {"endpoints": [{"url": "ws://127.0.0.1:1/ocpp", "security_profile": 0}]},
            "evse": [
                {
                    "id": n,
                    "connector": connector,
                    "controller": {"driver": "sim"},
                    "meter": _rtu_meter("/dev/ttyRS485", n, baud),
                }
                for n, baud in ((1, 9600), (2, baud_2))
            ],
        },
        base_dir=tmp_path,
    )


def test_meters_on_one_rs485_line_share_one_bus(tmp_path: Path) -> None:
    config = _two_meter_config(tmp_path, 9600)
    evses, _ = build_evses(config, ModbusLines())
    meters = [evse.power_meter for evse in evses]
    assert all(isinstance(m, ModbusMeter) for m in meters)
    first, second = (m for m in meters if isinstance(m, ModbusMeter))
    assert first.bus is second.bus
    assert (first.unit_id, second.unit_id) == (1, 2)


def test_meters_on_one_line_with_different_settings_are_refused(tmp_path: Path) -> None:
    # Refused when the file is validated (exit 2 naming the key), not when the station starts.
    with pytest.raises(ConfigError) as info:
        _two_meter_config(tmp_path, 19200)
    assert info.value.problems == [
        "evse[1].meter: shares its line with evse[0].meter but not its "
        "baud/parity/stopbits/timeout_s/rs485_direction/rs485_gpio"
    ]


def test_board_emulator_console_commands() -> None:
    emulator = YetiEmulator()
    assert apply_command(emulator, "plug") == "ok" and emulator.ev.plugged
    assert apply_command(emulator, "charge off") == "ok" and not emulator.ev.wants_energy
    assert apply_command(emulator, "fault rcd_tripped on") == "ok" and emulator.faults.rcd_tripped
    assert apply_command(emulator, "fault melted on") == "error: no such fault 'melted'"
    assert apply_command(emulator, "silent maybe").startswith("error: expected on or off")
    assert apply_command(emulator, "fly").startswith("unknown command")
    assert apply_command(emulator, "unplug") == "ok" and not emulator.ev.plugged
    assert apply_command(emulator, "2 plug") == "error: this board has one port: give no port number"


def test_two_port_emulator_console_takes_the_port_first() -> None:
    emulator = PhyVersoEmulator()
    assert apply_command(emulator, "2 plug") == "ok"
    assert emulator.ports[2].ev.plugged and not emulator.ports[1].ev.plugged
    assert apply_command(emulator, "plug") == "ok" and emulator.ports[1].ev.plugged  # port 1 by default
    assert apply_command(emulator, "2 fault pp_fault on") == "ok"
    assert emulator.ports[2].faults.pp_fault and not emulator.ports[1].faults.pp_fault
    assert apply_command(emulator, "3 plug") == "error: no port 3"
    assert apply_command(emulator, "2 silent on").startswith("unknown command")  # the whole board's
    assert apply_command(emulator, "silent on") == "ok"


def test_board_emulators_start_from_the_command_line() -> None:
    # `python -m evstation.drivers.sim.<board>_emulator --help`: each board has its entry point.
    for board in ("yeti", "rapi", "phyverso"):
        done = subprocess.run(
            [sys.executable, "-m", f"evstation.drivers.sim.{board}_emulator", "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0 and f"{board}_emulator" in done.stdout, done.stderr


def test_modbus_emulator_console_commands() -> None:
    emulator = ModbusMeterEmulator(load_model("sdm630"))
    assert apply_console_command(emulator, "energy 1500") == "ok"
    assert emulator.words("input", 0x48, 2) == [0x3FC0, 0x0000]  # 1.5 kWh as float32, high word first
    assert apply_console_command(emulator, "energy lots").startswith("error:")
    assert apply_console_command(emulator, "fly").startswith("unknown command")


async def _run_session(*args: str) -> tuple[int, str]:
    done = await trio.run_process(
        [sys.executable, str(HIL / "run_session.py"), *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return done.returncode, done.stdout.decode() + done.stderr.decode()


async def test_run_session_drives_a_sim_station_to_charging_and_back() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            config = load_config(write_config(folder, version="1.6", port=csms.port, station_id="HIL-RS"))
            async with open_station(config):
                await csms.wait_for("HIL-RS", "StatusNotification")
                code, out = await _run_session("--socket", str(folder / "c.sock"), "--sim", "--timeout", "5")
                assert code == 0, out
                assert "CHARGING on EVSE 1" in out
                assert "AVAILABLE again on EVSE 1" in out
                assert (await csms.wait_for("HIL-RS", "StopTransaction"))["reason"] == "EVDisconnected"
                # Nobody plugs an EV in: the script gives up with a non-zero status.
                code, out = await _run_session("--socket", str(folder / "c.sock"), "--plug-timeout", "0.3")
                assert code == 1, out
                assert "timed out after 0.3 s waiting for the EV to be plugged in" in out
            nursery.cancel_scope.cancel()


async def test_run_session_over_tcp_sends_the_token_first() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            with socket.socket() as probe:  # a free port for the listener
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            path = write_config(folder, version="2.0.1", port=csms.port, station_id="HIL-TCP")
            (folder / "token").write_text("hil-control-token-0123456789\n")
            listener = f'[control]\ntcp_port = {port}\ntcp_token_file = "token"\n'
            path.write_text(path.read_text().replace("[control]\n", listener))
            async with open_station(load_config(path)):
                await csms.wait_for("HIL-TCP", "StatusNotification")
                tcp = ("--tcp-port", str(port), "--sim", "--timeout", "5")
                code, out = await _run_session(*tcp, "--control-token-file", str(folder / "token"))
                assert code == 0, out
                assert "CHARGING on EVSE 1" in out
                (folder / "wrong").write_text("not-the-control-token-at-all\n")
                code, out = await _run_session(*tcp, "--control-token-file", str(folder / "wrong"))
                assert code == 1, out
                assert "auth: wrong token; closing" in out
            nursery.cancel_scope.cancel()


async def test_run_session_without_a_station_exits_2() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        code, out = await _run_session("--socket", str(folder / "none.sock"))
    assert code == 2
    assert "cannot reach the control API" in out

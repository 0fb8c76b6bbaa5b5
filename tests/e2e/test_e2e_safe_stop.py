"""`evstation run` as a process on the real board drivers, each board on its emulator: SIGTERM puts the
board into its safe state in IEC 61851 order; after SIGKILL only the board's own supervision is left.

Charging is started as a user would: a token through the control API (the test CSMS accepts it) and the
EV plugged at the emulator.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio
from e2e_station import control_client, short_dir, station_process, stderr_of, terminate

from evstation.drivers.boards.yeti import PWM_STATE_F, PWM_X1
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.rapi_emulator import Mode, RapiEmulator, open_rapi_emulator
from evstation.drivers.sim.yeti_emulator import YetiEmulator, open_yeti_emulator
from evstation.runtime.testcsms import TestCsms, serve_test_csms

STATION = "E2E-STOP"
TIMEOUT_S = 30.0


def _config(folder: Path, port: int, controller: str) -> Path:
    text = f"""
[station]
id = "{STATION}"
vendor = "evstation"
model = "e2e"
ocpp_version = "2.0.1"
data_dir = "data"

[csms]
retry_backoff_wait_minimum_s = 0.2
retry_backoff_random_range_s = 0

[[csms.endpoints]]
url = "ws://127.0.0.1:{port}/ocpp"
security_profile = 0

[control]
socket_path = "c.sock"

[[evse]]
id = 1
[[evse.connector]]
id = 1
type = "cType2"
phases = 3
max_current_a = 16
[evse.controller]
{controller}
[evse.meter]
driver = "sim"
"""
    path = folder / "station.toml"
    path.write_text(text)
    return path


def _yeti(device: str) -> str:
    return f'driver = "yeti"\ndevice = "{device}"\nkeepalive_timeout_s = 2'


def _rapi(device: str) -> str:
    return (
        f'driver = "rapi"\ndevice = "{device}"\ncommand_timeout_s = 0.5\npoll_interval_s = 0.5\n'
        "lock = true\nheartbeat_interval_s = 2"
    )


@asynccontextmanager
async def charging_station(
    folder: Path, controller: str, plug: object
) -> AsyncIterator[trio.Process]:
    """The station process, online, with a session authorized and the EV plugged (`plug()`)."""
    async with trio.open_nursery() as nursery:
        csms: TestCsms = await nursery.start(serve_test_csms)
        config = _config(folder, csms.port, controller)
        async with station_process(config) as process:
            await csms.wait_for(STATION, "StatusNotification")
            async with control_client(folder / "c.sock", process) as ops:
                await ops.ok("present_id_token", id_token="E2E-STOP-1", evse=1)
            plug()  # type: ignore[operator]
            yield process
        nursery.cancel_scope.cancel()


def _after(emulator: YetiEmulator, mark: int) -> list[tuple[str, object]]:
    return [(c.member, c.value) for c in emulator.host_log[mark:] if c.member != "keep_alive"]


async def test_yeti_sigterm_withdraws_pwm_then_permission_then_unlocks() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with open_yeti_emulator(SimEv(plugged=False)) as emulator:
            plug = lambda: emulator.update_ev(plugged=True)  # noqa: E731
            async with charging_station(folder, _yeti(emulator.port_path), plug) as process:
                await emulator.wait_until(lambda: emulator.relay_closed and emulator.lock_requested)
                mark = len(emulator.host_log)
                assert await terminate(process, signal.SIGTERM) == 0
            after = _after(emulator, mark)
            # The offer goes first: before X1 only re-sends of the charging state, which the driver
            # repeats on its own and which a slow machine may interleave before the signal lands.
            withdrawn = after.index(("pwm_duty_cycle", PWM_X1))
            assert not {("allow_power_on", False), ("connector_lock", False)} & set(after[:withdrawn])
            assert withdrawn < after.index(("allow_power_on", False)) < after.index(("connector_lock", False))
            assert ("pwm_duty_cycle", PWM_STATE_F) not in after and ("reset", True) not in after
            assert not emulator.relay_closed and not emulator.lock_requested
            assert "safe stop: offer withdrawn" in stderr_of(folder / "station.toml")


async def test_yeti_sigkill_leaves_the_mcu_supervision_to_stop_charging() -> None:
    # A firmware whose host keep-alive timer acts (the public one leaves that action commented out;
    # see the next test and docs/boards.md).
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with open_yeti_emulator(SimEv(plugged=False), host_timeout=1.0) as emulator:
            plug = lambda: emulator.update_ev(plugged=True)  # noqa: E731
            async with charging_station(folder, _yeti(emulator.port_path), plug) as process:
                await emulator.wait_until(lambda: emulator.relay_closed)
                mark = len(emulator.host_log)
                process.kill()
                await process.wait()
                killed_at = trio.current_time()
                await emulator.wait_until(lambda: not emulator.relay_closed)
                assert trio.current_time() - killed_at < 3.0  # host timeout (1 s) since the last keep-alive
            assert _after(emulator, mark) == []  # nothing from the host: the MCU stopped on its own
            assert emulator.duty == PWM_STATE_F


async def test_yeti_public_firmware_keeps_charging_after_sigkill_until_the_station_restarts() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with open_yeti_emulator(SimEv(plugged=False)) as emulator:
            plug = lambda: emulator.update_ev(plugged=True)  # noqa: E731
            async with charging_station(folder, _yeti(emulator.port_path), plug) as process:
                await emulator.wait_until(lambda: emulator.relay_closed)
                process.kill()
                await process.wait()
                await trio.sleep(1.5)
                assert emulator.relay_closed  # the known gap: no host supervision in this firmware
            # A restarted station (systemd) resets the MCU first: relay open, PWM off.
            async with trio.open_nursery() as nursery:
                csms: TestCsms = await nursery.start(serve_test_csms)
                async with station_process(_config(folder, csms.port, _yeti(emulator.port_path))):
                    await emulator.wait_until(lambda: ("reset", True) in _after(emulator, 0))
                    await emulator.wait_until(lambda: not emulator.relay_closed)
                nursery.cancel_scope.cancel()


async def test_rapi_sigterm_sleeps_the_board_then_unlocks() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with open_rapi_emulator(SimEv(plugged=False), lock_supported=True) as emulator:
            plug = lambda: emulator.update_ev(plugged=True)  # noqa: E731
            async with charging_station(folder, _rapi(emulator.port_path), plug) as process:
                await emulator.wait_until(lambda: emulator.relay_closed and emulator.lock_engaged)
                mark = len(emulator.commands)
                assert await terminate(process, signal.SIGTERM) == 0
            after = [name for name in emulator.command_names()[mark:] if name not in ("SY", "GS")]
            # Sleep goes first: before FS only the driver's own current re-sends (`SC`), which a slow
            # machine may interleave before the signal lands.
            slept = after.index("FS")
            assert all(name.startswith("SC ") for name in after[:slept]), after
            assert after.index("S5 0") > slept
            assert "FD" not in after
            assert emulator.mode is Mode.SLEEPING
            assert not emulator.relay_closed and not emulator.lock_engaged


async def test_rapi_sigkill_board_falls_back_to_its_minimum_current() -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with open_rapi_emulator(SimEv(plugged=False), lock_supported=True) as emulator:
            plug = lambda: emulator.update_ev(plugged=True)  # noqa: E731
            async with charging_station(folder, _rapi(emulator.port_path), plug) as process:
                await emulator.wait_until(lambda: emulator.relay_closed)
                assert (emulator.hs_interval, emulator.capacity_a) == (2, 16)
                process.kill()
                await process.wait()
                killed_at = trio.current_time()
                await emulator.wait_until(lambda: emulator.capacity_a == 6)
                assert trio.current_time() - killed_at < 3.5
                # OpenEVSE's heartbeat supervision lowers the current; it cannot stop the session.
                assert _rapi_relay(emulator)


def _rapi_relay(emulator: RapiEmulator) -> bool:
    return emulator.relay_closed

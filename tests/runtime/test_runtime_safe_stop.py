"""The safe stop when the station does not stop by a signal: a crashed EVSE task, and the station's own
supervisor giving up (an exception out of its body). Real Yeti driver on its emulator (real pty)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

import trio

from evstation.drivers.api import MeterEvent, MeterSample
from evstation.drivers.boards.yeti import PWM_X1, YetiBoard
from evstation.drivers.safe_stop import SafeStopTimeouts, Step
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.yeti_emulator import YetiEmulator, open_yeti_emulator
from evstation.runtime.config import parse_config
from evstation.runtime.evse import Evses
from evstation.runtime.station import open_station

TIMEOUT_S = 15.0


class CrashingMeter:
    """A meter driver (hardware stand-in) that gives one reading (the billing rule energizes only a
    metered session), then dies with a bug when `crash` is set."""

    def __init__(self) -> None:
        self.crash = trio.Event()
        self._send, self._receive = trio.open_memory_channel[MeterEvent](1)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        task_status.started()
        await self._send.send(MeterSample(datetime.now(UTC), energy_import_wh=1000.0))
        await self.crash.wait()
        raise RuntimeError("meter driver bug")

    def events(self) -> AsyncIterator[MeterEvent]:
        return self._receive

    def latest(self) -> MeterSample | None:
        return None


@contextmanager
def _raises(message: str) -> Iterator[None]:
    """The block ends with a RuntimeError(`message`), possibly inside nurseries' exception groups."""
    seen: list[str] = []
    try:
        yield
    except* RuntimeError as group:
        seen = [str(exc) for exc in _leaves(group)]
    assert seen == [message]


def _leaves(group: BaseExceptionGroup[RuntimeError]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _stop_sequence(emulator: YetiEmulator, mark: int) -> list[tuple[str, object]]:
    return [(c.member, c.value) for c in emulator.host_log[mark:] if c.member != "keep_alive"]


def _assert_safe_state(emulator: YetiEmulator, mark: int) -> None:
    after = _stop_sequence(emulator, mark)
    assert after[0] == ("pwm_duty_cycle", PWM_X1)
    assert after.index(("allow_power_on", False)) < after.index(("connector_lock", False))
    assert not emulator.relay_closed and not emulator.lock_requested


async def test_a_crashed_evse_task_puts_its_board_into_the_safe_state() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_yeti_emulator(SimEv(plugged=False), report_interval=0.05) as emulator:
            board = YetiBoard(emulator.port_path, reset_wait=0.3, safe_stop=SafeStopTimeouts(deadline_s=5))
            meter = CrashingMeter()
            evses = Evses()
            evse = evses.add(1, board, meter, max_current_a=16.0)
            mark = 0
            with _raises("meter driver bug"):
                async with trio.open_nursery() as nursery:
                    await nursery.start(evses.run)
                    assert await evse.authorize_remote("TOKEN-1", "ISO14443")
                    emulator.update_ev(plugged=True)
                    await emulator.wait_until(lambda: emulator.relay_closed and emulator.lock_requested)
                    mark = len(emulator.host_log)
                    meter.crash.set()
            _assert_safe_state(emulator, mark)
            report = board.last_safe_stop
            assert report is not None and report.complete and report.steps[-1] is Step.LOCK_RELEASED


async def test_the_station_giving_up_puts_every_board_into_the_safe_state(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_yeti_emulator(SimEv(plugged=False), report_interval=0.05) as emulator:
            config = parse_config(
                {
                    "station": {
                        "id": "SAFE-1",
                        "vendor": "evstation",
                        "model": "test",
                        "ocpp_version": "2.0.1",
                        "data_dir": str(tmp_path / "data"),
                    },
                    # Nobody listens there: the station stays offline, which changes nothing here.
                    "csms": {"endpoints": [{"url": "ws://127.0.0.1:9/ocpp", "security_profile": 0}]},
                    "evse": [
                        {
                            "id": 1,
                            "connector": [{"id": 1, "type": "cType2", "max_current_a": 16}],
                            "controller": {"driver": "yeti", "device": emulator.port_path},
                            "meter": {"driver": "sim"},
                        }
                    ],
                    "control": {"socket_path": None},
                },
                base_dir=tmp_path,
            )
            mark = 0
            with _raises("supervisor gives up"):
                async with open_station(config) as station:
                    assert await station.evses[1].authorize_remote("TOKEN-1", "ISO14443")
                    emulator.update_ev(plugged=True)
                    await emulator.wait_until(lambda: emulator.relay_closed)
                    mark = len(emulator.host_log)
                    raise RuntimeError("supervisor gives up")
            _assert_safe_state(emulator, mark)

"""`SimMeter`: a `PowerMeter` with no wire, integrating energy from the current the simulated EV draws.

Energy is integrated piecewise-constant over `trio.current_time()` so a MockClock drives it; it never
reads the wall clock except through the injected `wall_clock` for sample timestamps.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, NoReturn

import trio

from evstation.drivers.api import FaultCode, MeterEvent, MeterSample, PhaseValues
from evstation.drivers.meters.publisher import EVENT_BUFFER_SIZE, PUBLISHER_FAULTS, MeterEventPublisher
from evstation.drivers.sim.state import ENERGY_KEY, SimStateFile

_SECONDS_PER_HOUR = 3600.0
# A failure the control API injects (`set_failed`: METER_COMMUNICATION) and the publisher's energy check.
FAULTS_RAISED: Final[frozenset[FaultCode]] = frozenset({FaultCode.METER_COMMUNICATION}) | PUBLISHER_FAULTS


def utc_now() -> datetime:
    # Our own, not the Modbus driver's: a simulated station must not import pymodbus to tell the time.
    return datetime.now(UTC)


class SimMeter:
    """A three- (or one-) phase meter twin fed by `set_flow`; `script` forces values for tests.

    `line_voltage_v` is the phase-to-neutral voltage from configuration (no built-in 230 V). With a
    `state` file the register survives restarts as a real meter's does: it starts from the stored value
    (`initial_energy_wh` only when there is none) and every published reading is stored first.
    """

    def __init__(
        self,
        line_voltage_v: float,
        *,
        supply_phases: int = 3,
        frequency_hz: float = 50.0,
        initial_energy_wh: float = 0.0,
        poll_interval_s: float = 1.0,
        wall_clock: Callable[[], datetime] = utc_now,
        event_buffer: int = EVENT_BUFFER_SIZE,
        state: SimStateFile | None = None,
    ) -> None:
        if line_voltage_v <= 0:
            raise ValueError("line_voltage_v must be positive")
        if supply_phases not in (1, 3):
            raise ValueError("supply_phases must be 1 or 3")
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        self.line_voltage_v = line_voltage_v
        self.supply_phases = supply_phases
        self.frequency_hz = frequency_hz
        self.poll_interval_s = poll_interval_s
        self._wall_clock = wall_clock
        self._publisher = MeterEventPublisher(event_buffer)
        self._state = state
        stored = None if state is None else state.get_float(ENERGY_KEY)
        self._energy_wh = initial_energy_wh if stored is None else max(stored, initial_energy_wh)
        self._export_wh = 0.0
        self._current_a = 0.0
        self._phases = 0
        self._forced_power_w: float | None = None
        self._failed: str | None = None
        self._since: float | None = None  # trio time the current flow started; None before first use

    # ------------------------------------------------------------------ inputs

    def set_flow(self, current_a: float, phases: int) -> None:
        """The current the EV draws per phase on `phases` phases; clears a scripted power."""
        if current_a < 0:
            raise ValueError("current_a must not be negative (export is not simulated)")
        if not 0 <= phases <= self.supply_phases:
            raise ValueError(f"phases must be 0..{self.supply_phases}")
        self._advance()
        self._current_a = current_a if phases else 0.0
        self._phases = phases if current_a else 0
        self._forced_power_w = None

    def script(self, energy_wh: float | None = None, power_w: float | None = None) -> None:
        """Force the energy register and/or the power (kept until the next `set_flow`).

        A scripted energy lower than the last published one is reported as METER_ENERGY_BACKWARDS, as a
        real meter's would be.
        """
        self._advance()
        if energy_wh is not None:
            self._energy_wh = energy_wh
        if power_w is not None:
            self._forced_power_w = power_w

    def set_failed(self, detail: str | None) -> None:
        """Simulate an unreadable meter (METER_COMMUNICATION) until called with None."""
        self._failed = detail

    # ------------------------------------------------------------------ outputs

    @property
    def power_w(self) -> float:
        if self._forced_power_w is not None:
            return self._forced_power_w
        return self._current_a * self._phases * self.line_voltage_v

    @property
    def energy_wh(self) -> float:
        """The register value now (integrated up to the current trio time)."""
        self._advance()
        return self._energy_wh

    def events(self) -> trio.MemoryReceiveChannel[MeterEvent]:
        return self._publisher.events()

    def latest(self) -> MeterSample | None:
        return self._publisher.latest()

    def read(self) -> MeterSample:
        """The reading the meter would give now (not published)."""
        self._advance()
        currents = [self._current_a if i < self._phases else 0.0 for i in range(self.supply_phases)]
        voltages = [self.line_voltage_v] * self.supply_phases
        return MeterSample(
            timestamp=self._wall_clock(),
            energy_import_wh=self._energy_wh,
            energy_export_wh=self._export_wh,
            power_w=self.power_w,
            voltage_v=PhaseValues(*voltages),
            current_a=PhaseValues(*currents),
            frequency_hz=self.frequency_hz,
        )

    def poll_once(self) -> None:
        """Publish one reading (or the injected fault), as one poll of a real meter would."""
        if self._failed is not None:
            self._publisher.fault(FaultCode.METER_COMMUNICATION, self._failed)
            return
        sample = self.read()
        if self._state is not None:
            # Stored before anyone sees it: a restart never reports less than a reading already sent.
            self._state.set(ENERGY_KEY, sample.energy_import_wh)
        self._publisher.sample(sample)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        self._advance()
        self.poll_once()
        task_status.started()
        next_poll = trio.current_time()
        while True:
            next_poll += self.poll_interval_s
            await trio.sleep_until(next_poll)
            self.poll_once()

    def _advance(self) -> None:
        now = trio.current_time()
        if self._since is not None:
            energy = self.power_w * (now - self._since) / _SECONDS_PER_HOUR
            # A negative (scripted) power is export: it fills the export register, import never shrinks.
            if energy >= 0:
                self._energy_wh += energy
            else:
                self._export_wh -= energy
        self._since = now

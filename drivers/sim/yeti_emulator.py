"""A Yeti MCU on a pseudo-terminal: real COBS + CRC + protobuf frames, an EV (`SimEv`) behind it.

It behaves as the public firmware we read (PionixPublic/yeti-firmware: MgmtLink, RemoteControlRX/TX,
ControlPilot): a receive queue of two frames that drops the rest and acknowledges nothing, reports every
200 ms, relay rules of its ControlPilot, no lock or PP reports. For tests, the HIL rig and a simulated
station; production drivers never import it.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from evstation.drivers.boards.framed_mcu import time_stamp_ms
from evstation.drivers.boards.proto import yeti_pb2 as pb
from evstation.drivers.pilot import duty_to_amps
from evstation.drivers.sim import framed_emulator
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.pty_emulator import serve_emulator

RX_QUEUE_FRAMES = 2  # MgmtLink: a message queue of RX_QUEUE_SIZE - 1 = 2 frames
REPORT_INTERVAL_S = 0.2
C1_FORCE_OFF_S = 7.0  # ControlPilot: relay forced off 7 s after the PWM stopped under load
SW_VERSION = "evstation-yeti-emulator"
_PILOT_TO_CP = framed_emulator.cp_states(pb.CpState)
_CP_VOLTS = framed_emulator.cp_high_volts(pb.CpState)


@dataclasses.dataclass
class YetiFaults(framed_emulator.McuFaults):
    """Injected hardware faults; the MCU reports them through error_flags and acts on them."""

    over_current: bool = False
    relay_welded: bool = False  # the relay stays closed whatever the MCU commands (no flag reports it)


class YetiEmulator(framed_emulator.FramedMcuEmulator[pb.EverestToMcu], framed_emulator.PwmDrive):
    """The MCU: takes host frames through a two-frame queue, drives an EV model, reports every 200 ms.

    `rx_frame_time`: how long the MCU takes per queued frame (its receive thread competes with the
    others); frames arriving while the queue is full are dropped and counted in `host_frames_dropped`.
    `host_timeout`: None as in the public firmware (its 5 s host keep-alive timer has no action); a
    number makes the MCU drive state F after that much host silence, as a firmware with that action
    enabled would.
    """

    def __init__(
        self,
        ev: SimEv | None = None,
        *,
        report_interval: float = REPORT_INTERVAL_S,
        line_voltage: float = 230.0,
        max_current_a: float = 32.0,
        rx_queue_frames: int = RX_QUEUE_FRAMES,
        rx_frame_time: float = 0.001,
        boot_time: float = 0.05,
        host_timeout: float | None = None,
        c1_force_off: float = C1_FORCE_OFF_S,
    ) -> None:
        super().__init__(ev, host_message=pb.EverestToMcu, boot_time=boot_time)
        self.faults = YetiFaults()
        self._report_interval = report_interval
        self._line_voltage = line_voltage
        self._max_current_a = max_current_a
        self._rx_queue_frames = rx_queue_frames
        self._rx_frame_time = rx_frame_time
        self._host_timeout = host_timeout
        self._c1_force_off = c1_force_off
        # Host-commanded state (what the MCU holds in RAM; a reset forgets it). The firmware boots into
        # state F and enables X1 once its control-pilot task runs.
        self.duty = framed_emulator.PWM_X1
        self.power_allowed = False
        self.lock_requested = False
        self.relay = False
        self._pwm_stopped_at: float | None = None
        self._host_timed_out = False
        self._rx_queue: deque[bytes] = deque()
        self._rx_ready = trio.Event()
        self._last_cp: int | None = None
        self._last_relay: bool | None = None
        self._last_flags: pb.ErrorFlags | None = None
        self.energy_wh = 0.0
        self.host_keepalives = 0

    # ---------------------------------------------------------------- control surface

    def spurious_reset(self) -> None:
        """A watchdog reset the host did not ask for."""
        self._reset(pb.WATCHDOG)

    @property
    def relay_closed(self) -> bool:
        return self.relay

    # ---------------------------------------------------------------- service

    def _services(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self._boot, self._process_host_frames, self._report_changes, self._periodic]

    # ---------------------------------------------------------------- MCU behaviour

    def _reset(self, reason: int) -> None:
        self.duty = framed_emulator.PWM_X1
        self.power_allowed = False
        self.relay = False
        self._pwm_stopped_at = None
        self._rx_queue.clear()
        self._host_timed_out = False
        self._forget_reports()
        self._start_boot(reason)

    def _forget_reports(self) -> None:
        self._last_cp = self._last_relay = self._last_flags = None

    def _cp_state(self) -> int:
        return _PILOT_TO_CP[self.faults.pilot(self.ev, self.duty_pct, self.duty == 0)]

    def _flags(self, cp: int) -> pb.ErrorFlags:
        f = self.faults
        return pb.ErrorFlags(
            **f.error_flags(self.ev, pwm_running=self.pwm_running, lock_wanted=self.lock_requested),
            over_current=f.over_current,
        )

    def _step_relay(self, cp: int, flags: pb.ErrorFlags) -> None:
        """ControlPilot's relay rules for the current inputs."""
        now = trio.current_time()
        if cp == pb.STATE_A:
            self.power_allowed = False
        if self.faults.relay_welded and self.relay:
            return
        faulted = any(getattr(flags, fld.name) for fld in flags.DESCRIPTOR.fields)
        if faulted or cp not in (pb.STATE_C, pb.STATE_D):
            self.relay = False
        elif self.pwm_running:
            if self.power_allowed:
                self.relay = True
            # A withdrawn permission alone does not open the relay in C2: the firmware switches off
            # on the EV's B, on F/E, on a fault, or 7 s after the PWM stopped.
        else:
            stopped = self._pwm_stopped_at
            if self.relay and stopped is not None and now - stopped > self._c1_force_off:
                self.relay = False

    async def _announce_boot(self, reason: int) -> None:
        for _ in range(3):  # RemoteControlRX: "dummy packets to ensure COBS resync"
            await self._send(pb.McuToEverest(keep_alive=self._keepalive()))
        await self._send(pb.McuToEverest(reset=reason))  # type: ignore[arg-type]

    async def _report_state(self) -> None:
        cp = self._cp_state()
        flags = self._flags(cp)
        self._step_relay(cp, flags)
        if cp != self._last_cp:
            self._last_cp = cp
            await self._send(pb.McuToEverest(cp_state=cp))  # type: ignore[arg-type]
        if flags != self._last_flags:
            self._last_flags = flags
            await self._send(pb.McuToEverest(error_flags=flags))
        if self.relay != self._last_relay:
            self._last_relay = self.relay
            await self._send(pb.McuToEverest(relais_state=self.relay))

    def _keepalive(self) -> pb.KeepAliveLo:
        return pb.KeepAliveLo(
            time_stamp=time_stamp_ms(),
            protocol_version_major=0,
            protocol_version_minor=1,
            sw_version_string=SW_VERSION,
            hwcap_max_current=self._max_current_a,
            hwcap_min_current=6.0,
            hwcap_max_phase_count=3,
            hwcap_min_phase_count=1,
            supports_changing_phases_during_charging=True,
        )

    def _telemetry(self, cp: int) -> pb.Telemetry:
        # The firmware stores float volts into uint32 fields: -12 V (the PWM's low half, or F) reads 0.
        hi = _CP_VOLTS[cp]
        lo = 0 if self.pwm_running else hi
        return pb.Telemetry(cp_voltage_hi=hi, cp_voltage_lo=lo)

    async def _periodic(self) -> None:
        last = trio.current_time()
        while True:
            await trio.sleep(self._report_interval)
            now = trio.current_time()
            self._check_host_timeout(now)
            cp = self._cp_state()
            self._step_relay(cp, self._flags(cp))
            self._poke()  # timers (C1 force-off) may have changed the relay
            pwm = self.duty_pct
            amps = self.ev.current_draw(duty_to_amps(pwm) if pwm is not None else 0.0, self.relay)
            phases = max(1, min(3, self.ev.phases))
            per_phase = [amps if i < phases else 0.0 for i in range(3)]
            watts = [a * self._line_voltage for a in per_phase]
            self.energy_wh += sum(watts) * (now - last) / 3600.0
            last = now
            if self.silent or self._booting():
                continue
            volts = self._line_voltage
            await self._send(pb.McuToEverest(keep_alive=self._keepalive()))
            await self._send(pb.McuToEverest(telemetry=self._telemetry(cp)))
            meter = pb.PowerMeter(
                time_stamp=int(now * 1000) & 0xFFFFFFFF,
                vrmsL1=volts,
                vrmsL2=volts,
                vrmsL3=volts,
                irmsL1=per_phase[0],
                irmsL2=per_phase[1],
                irmsL3=per_phase[2],
                totalWattHr=self.energy_wh,
                wattL1=watts[0],
                wattL2=watts[1],
                wattL3=watts[2],
                freqL1=50.0,
                freqL2=50.0,
                freqL3=50.0,
            )
            await self._send(pb.McuToEverest(power_meter=meter))

    def _check_host_timeout(self, now: float) -> None:
        if self._host_timeout is None or self._host_timed_out:
            return
        if now - self._last_host_keepalive > self._host_timeout:
            self._host_timed_out = True
            self._set_duty(0)  # the action the firmware leaves commented out: pwm_F()

    def _take_host_frame(self, payload: bytes) -> None:
        if len(self._rx_queue) >= self._rx_queue_frames:
            self.host_frames_dropped += 1  # MgmtLink: osMessageQueuePut fails, packet dropped
            return
        self._rx_queue.append(payload)
        self._rx_ready.set()

    async def _process_host_frames(self) -> None:
        while True:
            while not self._rx_queue:
                self._rx_ready = trio.Event()
                await self._rx_ready.wait()
            await trio.sleep(self._rx_frame_time)
            if not self._rx_queue:
                continue  # a reset emptied the queue meanwhile
            self._apply_host_frame(self._rx_queue.popleft())

    def _set_duty(self, duty: int) -> None:
        was_running = self.pwm_running
        self.duty = duty
        if not self.pwm_running:
            # ControlPilot::pwm_off() and pwm_F() clear the permission to switch power on.
            self.power_allowed = False
            if was_running:
                self._pwm_stopped_at = trio.current_time()
        else:
            self._pwm_stopped_at = None
        self._poke()

    def _on_host(self, member: str, msg: pb.EverestToMcu) -> None:
        self._log_host(member, msg)  # after the receive queue: what the MCU acts on
        if member == "keep_alive":
            self.host_keepalives += 1
            self._last_host_keepalive = trio.current_time()
        elif member == "pwm_duty_cycle":
            self._host_timed_out = False
            self._set_duty(msg.pwm_duty_cycle)
        elif member == "allow_power_on":
            self.power_allowed = msg.allow_power_on
            self._poke()
        elif member == "connector_lock":
            self.lock_requested = msg.connector_lock
            self._poke()
        elif member == "reset":
            self._reset(pb.USER)


@asynccontextmanager
async def open_yeti_emulator(ev: SimEv | None = None, **kwargs: Any) -> AsyncIterator[YetiEmulator]:
    """Run a `YetiEmulator` for the duration of the block (kwargs go to its constructor)."""
    async with serve_emulator(YetiEmulator(ev, **kwargs)) as emulator:
        yield emulator


if __name__ == "__main__":
    from evstation.drivers.sim.emulator_cli import main

    main("yeti", YetiEmulator, [f.name for f in dataclasses.fields(YetiFaults)])

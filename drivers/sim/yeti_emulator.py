"""A Yeti-family MCU on a pseudo-terminal: real COBS + CRC + protobuf frames, an EV (`SimEv`) behind it.

For tests, the HIL rig and a simulated station. It emulates the MCU's observable behaviour only; it
must never be imported by production drivers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from evstation.drivers.api import PilotState
from evstation.drivers.boards.proto3 import ProtoDecodeError
from evstation.drivers.boards.yeti_framing import FrameDecoder, FrameError, cobs_encode, crc32_jamcrc
from evstation.drivers.boards.yeti_messages import (
    AllowPowerOn,
    ConnectorLock,
    CpState,
    CpStateReport,
    ErrorFlags,
    HostKeepAlive,
    HostMessage,
    LockStateReport,
    McuKeepAlive,
    McuMessage,
    McuReset,
    PowerMeterReport,
    PwmDutyCycle,
    RelaisState,
    ResetReason,
    ResetRequest,
    YetiLockState,
    decode_host_message,
    encode_mcu_message,
)
from evstation.drivers.pilot import duty_to_amps
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.pty_emulator import PtyEmulator, serve_emulator

_PWM_X1_MIN = 10000  # >= 100 %: steady +12 V, no PWM
_PILOT_TO_CP = {
    PilotState.A: CpState.A,
    PilotState.B: CpState.B,
    PilotState.C: CpState.C,
    PilotState.D: CpState.D,
    PilotState.E: CpState.E,
    PilotState.F: CpState.F,
}


@dataclasses.dataclass
class YetiFaults:
    """Injected hardware faults; the MCU reports them through error_flags and acts on them."""

    diode_short: bool = False
    rcd_tripped: bool = False
    lock_jammed: bool = False
    over_current: bool = False
    cp_shorted: bool = False


@dataclasses.dataclass(frozen=True)
class _Outputs:
    cp: CpState
    relay: bool
    lock: YetiLockState
    flags: ErrorFlags


class YetiEmulator(PtyEmulator):
    """The MCU: decodes host frames, drives an EV model, reports state changes and a 1 Hz keep-alive."""

    def __init__(
        self,
        ev: SimEv | None = None,
        *,
        keepalive_interval: float = 1.0,
        meter_interval: float = 1.0,
        line_voltage: float = 230.0,
        max_current_a: float = 32.0,
    ) -> None:
        super().__init__(ev)
        self.faults = YetiFaults()
        self._keepalive_interval = keepalive_interval
        self._meter_interval = meter_interval
        self._line_voltage = line_voltage
        self._max_current_a = max_current_a
        # Host-commanded state (what an MCU holds in RAM; a reset forgets it).
        self.duty = _PWM_X1_MIN
        self.power_allowed = False
        self.lock_requested = False
        self._last_sent: _Outputs | None = None
        self._resend_all = True
        self._pending_reset: ResetReason | None = None
        self.energy_wh = 0.0
        self.host_frames = 0
        self.host_bad_frames = 0
        self.host_keepalives = 0

    # ---------------------------------------------------------------- control surface

    def go_silent(self, silent: bool = True) -> None:
        """Stop (or resume) talking and listening, like a hung MCU or a broken TX line."""
        self.silent = silent
        if not silent:
            self._resend_all = True
        self._poke()

    def corrupt_next_frames(self, count: int = 1) -> None:
        """The next `count` frames go out with a wrong CRC (`wait_corruption_sent` waits for them)."""
        self._arm_corruption(count)

    def spurious_reset(self) -> None:
        """A watchdog reset the host did not ask for."""
        self._reset(ResetReason.WATCHDOG)

    @property
    def relay_closed(self) -> bool:
        return self._outputs().relay

    @property
    def duty_pct(self) -> float | None:
        """The PWM duty in percent, None when steady (X1) or state F."""
        if self.duty == 0 or self.duty >= _PWM_X1_MIN:
            return None
        return self.duty / 100.0

    # ---------------------------------------------------------------- service

    def _services(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self._report_changes, self._keepalives, self._meter]

    # ---------------------------------------------------------------- MCU behaviour

    def _reset(self, reason: ResetReason) -> None:
        self.duty = _PWM_X1_MIN
        self.power_allowed = False
        self._pending_reset = reason
        self._resend_all = True
        self._poke()

    def _outputs(self) -> _Outputs:
        f = self.faults
        pwm = self.duty_pct
        cp = _PILOT_TO_CP[self.ev.pilot_state(pwm, self.duty == 0)]
        if f.cp_shorted:
            cp = CpState.E
        flags = ErrorFlags(
            # A shorted diode only shows while the EV loads a PWM: the low half no longer reads -12 V.
            diode_fault=f.diode_short and self.ev.plugged and pwm is not None,
            rcd_triggered=f.rcd_tripped,
            connector_lock_failed=f.lock_jammed and self.lock_requested,
            cp_signal_fault=f.cp_shorted,
            over_current=f.over_current,
        )
        any_fault = any(getattr(flags, fld.name) for fld in dataclasses.fields(flags))
        relay = self.power_allowed and pwm is not None and cp in (CpState.C, CpState.D) and not any_fault
        locked = self.lock_requested and not f.lock_jammed
        lock = YetiLockState.LOCKED if locked else YetiLockState.UNLOCKED
        return _Outputs(cp, relay, lock, flags)

    async def _report_changes(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            if self.silent:
                continue
            if self._pending_reset is not None:
                reason, self._pending_reset = self._pending_reset, None
                await self._send(McuReset(reason))
            new = self._outputs()
            old = None if self._resend_all else self._last_sent
            self._resend_all = False
            self._last_sent = new
            if old is None or old.cp != new.cp:
                await self._send(CpStateReport(new.cp))
            if old is None or old.flags != new.flags:
                await self._send(new.flags)
            if old is None or old.relay != new.relay:
                await self._send(RelaisState(new.relay))
            if old is None or old.lock != new.lock:
                await self._send(LockStateReport(new.lock))

    async def _keepalives(self) -> None:
        while True:
            if not self.silent:
                await self._send(
                    McuKeepAlive(
                        time_stamp=int(trio.current_time() * 1000) & 0xFFFFFFFF,
                        hw_type=1,
                        hw_revision=1,
                        protocol_version_major=1,
                        protocol_version_minor=0,
                        sw_version_string="evstation-yeti-emulator",
                        hwcap_max_current=self._max_current_a,
                        hwcap_min_current=6.0,
                        hwcap_max_phase_count=3,
                        hwcap_min_phase_count=1,
                    )
                )
            await trio.sleep(self._keepalive_interval)

    async def _meter(self) -> None:
        last = trio.current_time()
        while True:
            await trio.sleep(self._meter_interval)
            now = trio.current_time()
            out = self._outputs()
            pwm = self.duty_pct
            amps = self.ev.current_draw(duty_to_amps(pwm) if pwm is not None else 0.0, out.relay)
            phases = max(1, min(3, self.ev.phases))
            per_phase = [amps if i < phases else 0.0 for i in range(3)]
            watts = [a * self._line_voltage for a in per_phase]
            self.energy_wh += sum(watts) * (now - last) / 3600.0
            last = now
            if self.silent:
                continue
            volts = self._line_voltage
            await self._send(
                PowerMeterReport(
                    time_stamp=int(now * 1000) & 0xFFFFFFFF,
                    vrms_l1=volts,
                    vrms_l2=volts,
                    vrms_l3=volts,
                    irms_l1=per_phase[0],
                    irms_l2=per_phase[1],
                    irms_l3=per_phase[2],
                    total_watt_hr=self.energy_wh,
                    watt_l1=watts[0],
                    watt_l2=watts[1],
                    watt_l3=watts[2],
                    freq_l1=50.0,
                    freq_l2=50.0,
                    freq_l3=50.0,
                )
            )

    async def _read_host(self, stream: trio.lowlevel.FdStream) -> None:
        decoder = FrameDecoder()
        while True:
            data = await stream.receive_some(4096)
            if not data:
                raise AssertionError("pty master closed while the slave is held open")
            if self.silent:
                continue
            for item in decoder.feed(data):
                if isinstance(item, FrameError):
                    self.host_bad_frames += 1
                    continue
                try:
                    msg = decode_host_message(item)
                except ProtoDecodeError:
                    self.host_bad_frames += 1
                    continue
                if msg is not None:
                    self.host_frames += 1
                    self._on_host(msg)

    def _on_host(self, msg: HostMessage) -> None:
        match msg:
            case HostKeepAlive():
                self.host_keepalives += 1
                return
            case PwmDutyCycle():
                self.duty = msg.duty
            case AllowPowerOn():
                self.power_allowed = msg.allowed
            case ConnectorLock():
                self.lock_requested = msg.lock
            case ResetRequest():
                self._reset(ResetReason.USER)
            case _:
                return
        self._poke()

    async def _send(self, msg: McuMessage) -> None:
        if self._stream is None:
            return
        payload = encode_mcu_message(msg)
        crc = crc32_jamcrc(payload)
        if self._corrupt_this_one():
            crc ^= 0x00000001
        wire = cobs_encode(payload + crc.to_bytes(4, "little")) + b"\x00"
        await self._write(wire)


@asynccontextmanager
async def open_yeti_emulator(ev: SimEv | None = None, **kwargs: Any) -> AsyncIterator[YetiEmulator]:
    """Run a `YetiEmulator` for the duration of the block (kwargs go to its constructor)."""
    async with serve_emulator(YetiEmulator(ev, **kwargs)) as emulator:
        yield emulator


if __name__ == "__main__":
    from evstation.drivers.sim.emulator_cli import main

    main("yeti", YetiEmulator, [f.name for f in dataclasses.fields(YetiFaults)])

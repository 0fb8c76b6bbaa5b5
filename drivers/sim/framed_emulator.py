"""What the emulated COBS + CRC-32 + protobuf MCUs (yeti_emulator.py, phyverso_emulator.py) share: the
boot after a reset, taking frames from the host, and framing their own (optionally corrupted).

Each board's module keeps its schema, queueing and per-port behaviour. Never used by production code paths.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Generic, TypeVar

import trio
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import DecodeError, Message

from evstation.drivers.api import PilotState
from evstation.drivers.boards.framed_mcu import pilot_states
from evstation.drivers.boards.yeti_framing import FrameDecoder, FrameError, cobs_encode, crc32_jamcrc
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.pty_emulator import PtyEmulator
from evstation.records import record

HostMessageT = TypeVar("HostMessageT", bound=Message)
PWM_X1 = 10000  # `pwm_duty_cycle` from 100 % up: steady +12 V, no PWM (both firmwares)
# High level of each pilot state in whole volts, as the telemetry carries it (F's -12 V reads 0).
_HIGH_VOLTS = {
    PilotState.A: 12, PilotState.B: 9, PilotState.C: 6, PilotState.D: 3, PilotState.E: 0, PilotState.F: 0,
}  # fmt: skip


def cp_states(cp_state: EnumTypeWrapper) -> dict[PilotState, int]:
    """`PilotState` -> the schema's CpState value (both schemas name them STATE_A ... STATE_F)."""
    return {pilot: cp for cp, pilot in pilot_states(cp_state).items()}


def cp_high_volts(cp_state: EnumTypeWrapper) -> dict[int, int]:
    """The schema's CpState value -> the high pilot level its telemetry shows, in whole volts."""
    return {cp: _HIGH_VOLTS[pilot] for cp, pilot in pilot_states(cp_state).items()}


@dataclasses.dataclass
class McuFaults:
    """Injected faults both MCUs report through error_flags (each board adds its own)."""

    diode_short: bool = False
    rcd_tripped: bool = False
    lock_jammed: bool = False
    cp_shorted: bool = False

    def pilot(self, ev: SimEv, duty_pct: float | None, state_f: bool) -> PilotState:
        """What the MCU reads on the pilot: E while it is shorted, else the EV's answer to the drive."""
        return PilotState.E if self.cp_shorted else ev.pilot_state(duty_pct, state_f)

    def error_flags(self, ev: SimEv, *, pwm_running: bool, lock_wanted: bool) -> dict[str, bool]:
        """The error_flags fields these faults set (the board's own faults set the rest)."""
        return {
            # A shorted diode only shows while the EV loads a PWM: the low half no longer reads -12 V.
            "diode_fault": self.diode_short and ev.plugged and pwm_running,
            "rcd_triggered": self.rcd_tripped,
            "connector_lock_failed": self.lock_jammed and lock_wanted,
            "cp_signal_fault": self.cp_shorted,
        }


class PwmDrive:
    """The pilot drive of an MCU (or of one of its ports) by its `duty` (`pwm_duty_cycle`): 0 is state F,
    `PWM_X1` and above steady +12 V, anything between a PWM."""

    duty: int

    @property
    def pwm_running(self) -> bool:
        return 0 < self.duty < PWM_X1

    @property
    def duty_pct(self) -> float | None:
        """The PWM duty in percent, None when steady (X1) or state F."""
        return self.duty / 100.0 if self.pwm_running else None


@record
class HostCommand:
    """One host frame the MCU acted on, for tests that check order and content (and addressing: the
    frame's `connector`, on a board that has the field)."""

    at: float
    member: str
    value: object
    connector: int = 0


class FramedMcuEmulator(PtyEmulator, Generic[HostMessageT]):
    """Base of an emulated MCU whose host frames decode into `host_message` (`EverestToMcu`).

    Subclasses list `_boot` and `_report_changes` among their `_services`, implement `_reset` (start it
    with `_start_boot`), `_announce_boot`, `_report_state` (send what changed), `_forget_reports` (what a
    resumed MCU reports again) and `_on_host`; `_take_host_frame` applies a frame at once unless
    overridden (a receive queue). `_send` frames a message to the host.
    """

    def __init__(self, ev: SimEv | None, *, host_message: type[HostMessageT], boot_time: float) -> None:
        super().__init__(ev)
        self._host_message = host_message
        self._boot_time = boot_time
        self._booting_until = -math.inf
        self._rebooted = trio.Event()
        self._pending_reset: int | None = None  # the reason `_report_changes` announces after the boot
        self._last_host_keepalive = -math.inf
        self._drop_next = 0
        self.host_frames = 0
        self.host_bad_frames = 0
        self.host_frames_dropped = 0
        self.host_log: list[HostCommand] = []

    # ---------------------------------------------------------------- control surface

    def go_silent(self, silent: bool = True) -> None:
        """Stop (or resume) talking and listening, like a hung MCU or a broken TX line."""
        self.silent = silent
        if not silent:
            self._forget_reports()
        self._poke()

    def corrupt_next_frames(self, count: int = 1) -> None:
        """The next `count` frames go out with a wrong CRC (`wait_corruption_sent` waits for them)."""
        self._arm_corruption(count)

    def drop_next_host_frames(self, count: int = 1) -> None:
        """Lose the next `count` host frames, as a full receive queue would."""
        self._drop_next += count

    def commands(self, member: str, connector: int | None = None) -> list[object]:
        """The values of every `member` command the MCU acted on, in order (for `connector`, if given)."""
        return [
            c.value
            for c in self.host_log
            if c.member == member and (connector is None or c.connector == connector)
        ]

    # ---------------------------------------------------------------- boot

    def _reset(self, reason: int) -> None:
        raise NotImplementedError

    def _forget_reports(self) -> None:
        raise NotImplementedError

    def _start_boot(self, reason: int) -> None:
        """Deaf and mute for `boot_time`, then the boot is announced with `reason`."""
        self._pending_reset = reason
        self._booting_until = trio.current_time() + self._boot_time
        self._last_host_keepalive = self._booting_until  # the host timer starts at boot
        self._rebooted.set()

    async def _boot(self) -> None:
        """After every reset: deaf while booting, then `_report_changes` announces the boot. (The
        emulator starts booted: a board is powered up long before the station opens its port.)"""
        self._last_host_keepalive = trio.current_time()
        while True:
            await self._rebooted.wait()
            self._rebooted = trio.Event()
            await trio.sleep_until(self._booting_until)
            self._poke()

    def _booting(self) -> bool:
        return trio.current_time() < self._booting_until

    async def _announce_boot(self, reason: int) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- reports

    async def _report_changes(self) -> None:
        """On every poke: announce a finished boot, then report what changed (a hung MCU reports nothing)."""
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            if self.silent or self._booting():
                continue
            if self._pending_reset is not None:
                reason, self._pending_reset = self._pending_reset, None
                await self._announce_boot(reason)
            await self._report_state()

    async def _report_state(self) -> None:
        raise NotImplementedError

    # ---------------------------------------------------------------- host frames

    async def _read_host(self, stream: trio.lowlevel.FdStream) -> None:
        decoder = FrameDecoder()
        while True:
            data = await stream.receive_some(4096)
            if not data:
                raise AssertionError("pty master closed while the slave is held open")
            if self.silent or self._booting():
                continue  # a hung or booting MCU hears nothing
            for item in decoder.feed(data):
                if isinstance(item, FrameError):
                    self.host_bad_frames += 1
                    continue
                if self._drop_next > 0:
                    self._drop_next -= 1
                    self.host_frames_dropped += 1
                    continue
                self._take_host_frame(item)

    def _take_host_frame(self, payload: bytes) -> None:
        self._apply_host_frame(payload)

    def _apply_host_frame(self, payload: bytes) -> None:
        msg = self._host_message()
        try:
            msg.ParseFromString(payload)
        except DecodeError:
            self.host_bad_frames += 1
            return
        member = msg.WhichOneof("payload")
        if member is not None:
            self.host_frames += 1
            self._on_host(member, msg)

    def _on_host(self, member: str, msg: HostMessageT) -> None:
        raise NotImplementedError

    def _log_host(self, member: str, msg: HostMessageT, connector: int = 0) -> None:
        self.host_log.append(HostCommand(trio.current_time(), member, getattr(msg, member), connector))

    # ---------------------------------------------------------------- to the host

    async def _send(self, msg: Message) -> None:
        if self._stream is None:
            return
        payload = msg.SerializeToString()
        crc = crc32_jamcrc(payload)
        if self._corrupt_this_one():
            crc ^= 0x00000001
        await self._write(cobs_encode(payload + crc.to_bytes(4, "little")) + b"\x00")

"""Yeti-family charge-controller driver (PIONIX Yeti and boards with the same COBS + CRC + protobuf UART).

Runs the IEC 61851 host side as EVerest's YetiDriver does: it sets PWM, relay permission and lock, and
turns the MCU's reports into `ControllerEvent`s. Bad frames are counted and skipped, never fatal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn

import trio

from evstation.drivers.api import (
    BoardReset,
    ContactorChanged,
    ControllerError,
    FaultCleared,
    FaultCode,
    FaultRaised,
    LockChanged,
    LockState,
    MeterEvent,
    MeterSample,
    PhaseValues,
    PilotChanged,
    PilotState,
)
from evstation.drivers.boards.proto3 import ProtoDecodeError
from evstation.drivers.boards.serial_port import SerialPort, SerialPortError
from evstation.drivers.boards.supervised import SupervisedBoard
from evstation.drivers.boards.yeti_framing import FrameDecoder, FrameError, FrameErrorKind, encode_frame
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
    PpState,
    PpStateReport,
    PwmDutyCycle,
    RelaisState,
    ResetRequest,
    Telemetry,
    YetiLockState,
    decode_mcu_message,
    encode_host_message,
)
from evstation.drivers.meters.publisher import EVENT_BUFFER_SIZE, MeterEventPublisher
from evstation.drivers.pilot import X1_DUTY_PCT, amps_to_duty

DEFAULT_BAUDRATE = 115200
PWM_STATE_F = 0
# The proto comment says 10000 = 100 %; EVerest's YetiDriver sends 10001 for X1 and the firmware treats
# anything >= 10000 as steady +12 V. We follow the driver that runs in the field.
PWM_X1 = 10001
_RESYNC_KEEPALIVES = 3  # after a reset, so the MCU's COBS decoder finds a frame boundary

_CP_TO_PILOT = {
    CpState.A: PilotState.A,
    CpState.B: PilotState.B,
    CpState.C: PilotState.C,
    CpState.D: PilotState.D,
    CpState.E: PilotState.E,
    CpState.F: PilotState.F,
}
_LOCK_TO_API = {
    YetiLockState.UNDEFINED: LockState.UNKNOWN,
    YetiLockState.UNLOCKED: LockState.UNLOCKED,
    YetiLockState.LOCKED: LockState.LOCKED,
}
# error_flags field -> fault (YetiDriver.cpp mapping, plus the flags it leaves unmapped).
ERROR_FLAG_FAULTS: dict[str, FaultCode] = {
    "diode_fault": FaultCode.DIODE_FAULT,
    "rcd_triggered": FaultCode.GROUND_FAILURE,
    "rcd_selftest_failed": FaultCode.RCD_SELFTEST_FAILED,
    "ventilation_not_available": FaultCode.VENTILATION_NOT_AVAILABLE,
    "connector_lock_failed": FaultCode.CONNECTOR_LOCK_FAILURE,
    "cp_signal_fault": FaultCode.PILOT_FAULT,
    "over_current": FaultCode.OVER_CURRENT,
}


def duty_for(amps: float | None, *, unavailable: bool) -> int:
    """The `pwm_duty_cycle` value (0.01 % units) for an offer; state F wins over any offer."""
    if unavailable:
        return PWM_STATE_F
    pct = amps_to_duty(amps)
    if pct >= X1_DUTY_PCT:
        return PWM_X1
    # Round down (never offer more than asked); the epsilon absorbs float error like 10.0 -> 999.99...
    return math.floor(pct * 100 + 1e-6)


@dataclass
class YetiStats:
    """Counters for the health page and tests; bad input is counted, never fatal."""

    frames_ok: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    length_errors: int = 0
    decode_errors: int = 0
    unknown_messages: int = 0
    unrequested_resets: int = 0
    reconnects: int = 0


@dataclass(frozen=True, slots=True)
class YetiBoardInfo:
    """What the MCU says about itself in its keep-alive."""

    hw_type: int
    hw_revision: int
    protocol_version: tuple[int, int]
    sw_version: str
    max_current_a: float
    min_current_a: float
    max_phases: int
    min_phases: int


class YetiBoard(SupervisedBoard):
    """`ChargeController` for one Yeti-family board on a serial port.

    `keepalive_timeout` is 5 s on real hardware (the MCU sends 1 Hz); tests shorten it.
    """

    stats: YetiStats

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        keepalive_interval: float = 1.0,
        keepalive_timeout: float = 5.0,
        reset_on_start: bool = True,
        reset_wait: float = 1.0,
        reopen_interval: float = 2.0,
        read_timeout: float = 0.1,
    ) -> None:
        super().__init__(port, baudrate=baudrate, reopen_interval=reopen_interval, read_timeout=read_timeout)
        self._keepalive_interval = keepalive_interval
        self._keepalive_timeout = keepalive_timeout
        self._reset_on_start = reset_on_start
        self._reset_wait = reset_wait
        self.stats = YetiStats()
        self._meter_send, self._meter_recv = trio.open_memory_channel[PowerMeterReport](8)
        # What the host wants; re-sent after a (re)connect or an MCU reset.
        self._offer: float | None = None
        self._unavailable = False
        self._allowed = False
        self._locked: bool | None = None
        # What the MCU last reported; None = not yet heard in this connection.
        self._pilot: PilotState | None = None
        self._contactor: bool | None = None
        self._lock_state: LockState | None = None
        self._flags = ErrorFlags()
        self._last_keepalive = 0.0
        self._alive = trio.Event()
        self._reset_seen = trio.Event()
        self._expecting_reset = False
        self.board_info: YetiBoardInfo | None = None
        self.pp_state: PpState | None = None
        self.telemetry: Telemetry | None = None
        self.latest_power_meter: PowerMeterReport | None = None

    # ------------------------------------------------------------------ ChargeController

    async def offer_current(self, amps: float | None) -> None:
        self._offer = amps
        await self._send_duty()

    async def set_unavailable(self, unavailable: bool) -> None:
        self._unavailable = unavailable
        await self._send_duty()

    async def allow_power(self, allowed: bool) -> None:
        self._allowed = allowed
        await self._send(AllowPowerOn(allowed))

    async def set_lock(self, locked: bool) -> None:
        self._locked = locked
        await self._send(ConnectorLock(locked))

    def power_meter(self) -> YetiPowerMeter:
        """The board's own meter (power_meter messages) as a `PowerMeter`. Call at most once."""
        return YetiPowerMeter(self._meter_recv)

    # ------------------------------------------------------------------ session

    async def _session(self, port: SerialPort, ready: Callable[[], None]) -> None:
        """Resync, supervise keep-alives; returns only by raising one `SerialPortError` on port failure."""
        self._pilot = self._contactor = self._lock_state = None
        async with self._port_session(port, fatal=(SerialPortError, ControllerError)) as guard:
            self._last_keepalive = trio.current_time()
            await guard.run(self._start_session)
            guard.start_soon(self._send_keepalives)
            guard.start_soon(self._watchdog)
            if not guard.failures:
                ready()

    async def _start_session(self) -> None:
        if self._reset_on_start:
            self._reset_seen = trio.Event()
            self._expecting_reset = True
            await self._send(ResetRequest())
            with trio.move_on_after(self._reset_wait):
                await self._reset_seen.wait()
            self._expecting_reset = False
        for _ in range(_RESYNC_KEEPALIVES):
            await self._send(self._keepalive())
        await self._apply_desired()

    def _keepalive(self) -> HostKeepAlive:
        stamp = int(trio.current_time() * 1000) & 0xFFFFFFFF
        return HostKeepAlive(time_stamp=stamp, sw_version_string="evstation")

    async def _apply_desired(self) -> None:
        await self._send_duty()
        await self._send(AllowPowerOn(self._allowed))
        if self._locked is not None:
            await self._send(ConnectorLock(self._locked))

    async def _send_duty(self) -> None:
        await self._send(PwmDutyCycle(duty_for(self._offer, unavailable=self._unavailable)))

    async def _send(self, msg: HostMessage) -> None:
        port = self._port
        if port is None:
            raise ControllerError(FaultCode.BOARD_COMMUNICATION, f"{self._path}: port not open")
        try:
            await port.write(encode_frame(encode_host_message(msg)))
        except SerialPortError as exc:
            raise ControllerError(FaultCode.BOARD_COMMUNICATION, str(exc)) from exc

    async def _send_keepalives(self) -> None:
        # The firmware falls back to standalone mode without a host keep-alive (module docs).
        while True:
            await trio.sleep(self._keepalive_interval)
            await self._send(self._keepalive())

    async def _watchdog(self) -> None:
        while True:
            deadline = self._last_keepalive + self._keepalive_timeout
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)
                continue
            # A fresh event before the emit: a keep-alive handled while the emit waits must wake us,
            # or a board that falls silent again afterwards would never be reported.
            self._alive = trio.Event()
            await self._raise_comm_fault(f"no MCU keep-alive for {self._keepalive_timeout:g} s")
            await self._alive.wait()

    async def _receive(self, chunks: trio.MemoryReceiveChannel[bytes]) -> None:
        decoder = FrameDecoder()
        async for chunk in chunks:
            for item in decoder.feed(chunk):
                if isinstance(item, FrameError):
                    self._count_frame_error(item)
                    continue
                try:
                    msg = decode_mcu_message(item)
                except ProtoDecodeError:
                    self.stats.decode_errors += 1
                    continue
                if msg is None:
                    self.stats.unknown_messages += 1
                    continue
                self.stats.frames_ok += 1
                await self._handle(msg)

    def _count_frame_error(self, error: FrameError) -> None:
        if error.kind is FrameErrorKind.CRC:
            self.stats.crc_errors += 1
        elif error.kind is FrameErrorKind.COBS:
            self.stats.cobs_errors += 1
        else:
            self.stats.length_errors += 1

    async def _handle(self, msg: McuMessage) -> None:
        match msg:
            case McuKeepAlive():
                self._last_keepalive = trio.current_time()
                self.board_info = YetiBoardInfo(
                    hw_type=msg.hw_type,
                    hw_revision=msg.hw_revision,
                    protocol_version=(msg.protocol_version_major, msg.protocol_version_minor),
                    sw_version=msg.sw_version_string,
                    max_current_a=msg.hwcap_max_current,
                    min_current_a=msg.hwcap_min_current,
                    max_phases=msg.hwcap_max_phase_count,
                    min_phases=msg.hwcap_min_phase_count,
                )
                self._alive.set()
                await self._clear_comm_fault()
            case McuReset():
                await self._on_reset(msg)
            case CpStateReport():
                pilot = _CP_TO_PILOT[msg.state]
                if pilot != self._pilot:
                    self._pilot = pilot
                    await self._emit(PilotChanged(pilot))
            case RelaisState():
                if msg.closed != self._contactor:
                    self._contactor = msg.closed
                    await self._emit(ContactorChanged(msg.closed))
            case LockStateReport():
                lock = _LOCK_TO_API[msg.state]
                if lock != self._lock_state:
                    self._lock_state = lock
                    await self._emit(LockChanged(lock))
            case ErrorFlags():
                old, self._flags = self._flags, msg
                for name, code in ERROR_FLAG_FAULTS.items():
                    was, now = getattr(old, name), getattr(msg, name)
                    if now and not was:
                        await self._emit(FaultRaised(code, f"error_flags.{name}"))
                    elif was and not now:
                        await self._emit(FaultCleared(code))
            case PpStateReport():
                self.pp_state = msg.state
            case Telemetry():
                self.telemetry = msg
            case PowerMeterReport():
                self.latest_power_meter = msg
                # The meter adapter may be absent or slow: dropping a 1 Hz reading is harmless.
                with suppress(trio.WouldBlock):
                    self._meter_send.send_nowait(msg)

    async def _on_reset(self, msg: McuReset) -> None:
        if self._expecting_reset and not self._reset_seen.is_set():
            self._reset_seen.set()
            return
        self.stats.unrequested_resets += 1
        # The MCU forgot everything: its relay is open. Restore PWM and lock, but not the permission
        # to switch power: the runtime decides that again after seeing BoardReset.
        self._allowed = False
        await self._emit(BoardReset(msg.reason.name.lower()))
        for _ in range(_RESYNC_KEEPALIVES):
            await self._send(self._keepalive())
        await self._apply_desired()


class YetiPowerMeter:
    """`PowerMeter` view of a Yeti board's power_meter messages; the board's `run` must be running.

    Events go through the shared `MeterEventPublisher`, so the board meter gets the same drop-oldest
    channel and the same "energy never goes backwards" check as the Modbus meters.
    """

    def __init__(
        self,
        reports: trio.MemoryReceiveChannel[PowerMeterReport],
        *,
        wall_clock: Callable[[], datetime] | None = None,
        event_buffer: int = EVENT_BUFFER_SIZE,
    ) -> None:
        self._reports = reports
        # Not drivers.meters.modbus.utc_now: a board driver has no business importing pymodbus.
        self._wall_clock = wall_clock or (lambda: datetime.now(UTC))
        self._publisher = MeterEventPublisher(event_buffer)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        task_status.started()
        async for report in self._reports:
            self._publisher.sample(sample_from_report(report, self._wall_clock()))
        raise AssertionError("board meter channel closed")  # the board owns it for its lifetime

    def events(self) -> trio.MemoryReceiveChannel[MeterEvent]:
        return self._publisher.events()

    def latest(self) -> MeterSample | None:
        return self._publisher.latest()


def sample_from_report(report: PowerMeterReport, timestamp: datetime) -> MeterSample:
    """A `MeterSample` from one power_meter message (frequency: L1's, as the board measures per phase)."""
    return MeterSample(
        timestamp=timestamp,
        energy_import_wh=report.total_watt_hr,
        power_w=report.watt_l1 + report.watt_l2 + report.watt_l3,
        voltage_v=PhaseValues(report.vrms_l1, report.vrms_l2, report.vrms_l3),
        current_a=PhaseValues(report.irms_l1, report.irms_l2, report.irms_l3),
        frequency_hz=report.freq_l1,
    )

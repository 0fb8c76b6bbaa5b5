"""PIONIX Yeti charge-controller driver: COBS + CRC-32 + protobuf (drivers/boards/proto/yeti.proto) on a UART.

Runs the IEC 61851 host side as EVerest's YetiDriver does: it sets PWM, relay permission and lock, and
turns the MCU's reports into `ControllerEvent`s. The MCU queues two frames and acknowledges nothing, so
the wanted state is re-sent until the MCU's own reports confirm it, and frames are paced. Bad frames are
counted and skipped, never fatal.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import UTC, datetime
from functools import partial
from typing import Final, NoReturn, Unpack

import trio

from evstation.drivers.api import (
    BoardReset,
    ContactorChanged,
    ControllerError,
    FaultCode,
    LockChanged,
    LockState,
    MeterEvent,
    MeterSample,
    PhaseValues,
    PilotChanged,
    PilotState,
)
from evstation.drivers.boards import framed_mcu
from evstation.drivers.boards.proto import yeti_pb2 as pb
from evstation.drivers.boards.serial_port import SerialPort, SerialPortError
from evstation.drivers.boards.supervised import (
    SUPERVISION_FAULTS,
    PortSettings,
    SessionGuard,
    SupervisedBoard,
)
from evstation.drivers.meters.publisher import EVENT_BUFFER_SIZE, PUBLISHER_FAULTS, MeterEventPublisher
from evstation.drivers.safe_stop import SafeStopBoard
from evstation.records import record

DEFAULT_BAUDRATE = 115200
PWM_STATE_F = framed_mcu.PWM_STATE_F
# The schema says 10000 = X1; EVerest's YetiDriver sends 10001 and the firmware treats anything >= 10000
# as steady +12 V. We follow the driver that runs in the field.
PWM_X1 = 10001
SW_VERSION_MAX_CHARS = 50  # the firmware copies at most 50 characters (char[51] in yeti.pb.h)
HOST_SW_VERSION = "evstation"
# Re-send cadence of the wanted state: fast while the MCU's reports contradict it, slow otherwise (a
# report cannot show every command, e.g. a permission while the EV is in B).
RESEND_INTERVAL_S = 0.5  # > two telemetry periods (200 ms each): time for a confirmation to arrive
REFRESH_INTERVAL_S = 2.0
FRAME_GAP_S = 0.02  # between our frames: the MCU's two-frame queue never sees a burst
LOCK_SENDS = 3  # the lock is not reported back: a move is sent this often, `LOCK_RESEND_S` apart
LOCK_RESEND_S = 0.3
# A telemetry frame may have been measured before our command arrived: the second one after a change
# is the first that can confirm it.
TELEMETRY_TO_CONFIRM = 2

_CP_TO_PILOT = framed_mcu.pilot_states(pb.CpState)
_LOCK_TO_API = {pb.UNDEFINED: LockState.UNKNOWN, pb.UNLOCKED: LockState.UNLOCKED, pb.LOCKED: LockState.LOCKED}
_RESET_NAMES = {pb.USER: "user", pb.WATCHDOG: "watchdog"}
_EV_READY = frozenset({PilotState.C, PilotState.D})
# error_flags field -> fault (YetiDriver.cpp mapping, plus the flags it leaves unmapped).
ERROR_FLAG_FAULTS = {**framed_mcu.ERROR_FLAG_FAULTS, "over_current": FaultCode.OVER_CURRENT}
# Every fault a Yeti can raise: its error_flags and the lost link. It has no flag for an emergency stop,
# the supply voltage or the contactor, so its EVSE has no such component (runtime/fault_components.py);
# tests/drivers/test_drivers_fault_sets.py checks that the code names no other.
FAULTS_RAISED: Final[frozenset[FaultCode]] = frozenset(ERROR_FLAG_FAULTS.values()) | SUPERVISION_FAULTS
# The board's own meter (`driver = "board"`): only the publisher's energy check; a silent board is the
# board's communication fault, not the meter's.
METER_FAULTS_RAISED: Final[frozenset[FaultCode]] = PUBLISHER_FAULTS


def duty_for(amps: float | None, *, unavailable: bool) -> int:
    """The `pwm_duty_cycle` value (0.01 % units) for an offer; state F wins over any offer."""
    return framed_mcu.duty_units(amps, unavailable=unavailable, x1=PWM_X1)


class PilotDrive(enum.Enum):
    """What the MCU drives on the pilot, as far as its telemetry can show it."""

    PWM = "pwm"  # the low half of the period reads -12 V
    STEADY = "steady"  # X1: no low half
    STATE_F = "F"


def drive_of(duty: int) -> PilotDrive:
    if duty == PWM_STATE_F:
        return PilotDrive.STATE_F
    return PilotDrive.STEADY if duty >= 10000 else PilotDrive.PWM


def telemetry_drive(telemetry: pb.Telemetry) -> PilotDrive:
    """The drive a telemetry frame shows. The firmware stores float volts into unsigned integers, so
    -12 V arrives as 0: a low level below the high one is a PWM, two equal levels are steady."""
    if telemetry.cp_voltage_hi == 0:
        return PilotDrive.STATE_F  # -12 V (F) or 0 V (E): nothing positive on the pilot
    if telemetry.cp_voltage_lo < telemetry.cp_voltage_hi:
        return PilotDrive.PWM
    return PilotDrive.STEADY


def host_message(**payload: object) -> pb.EverestToMcu:
    """One `EverestToMcu` with exactly one oneof member set (`host_message(pwm_duty_cycle=2666)`)."""
    return framed_mcu.one_payload(pb.EverestToMcu(**payload), payload)  # type: ignore[arg-type]


YetiStats = framed_mcu.FrameStats  # the Yeti driver counts nothing beyond what every framed link counts


@record
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


class YetiBoard(SupervisedBoard, framed_mcu.SilenceWatchdog):
    """`ChargeController` for one Yeti board on a serial port.

    `keepalive_timeout`: how long the MCU may stay silent (no frame of any kind) before a
    communication fault; the MCU reports every 200 ms, so 5 s is many missed frames.
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
        resend_interval: float = RESEND_INTERVAL_S,
        refresh_interval: float = REFRESH_INTERVAL_S,
        frame_gap: float = FRAME_GAP_S,
        **port_settings: Unpack[PortSettings],
    ) -> None:
        super().__init__(port, baudrate=baudrate, **port_settings)
        framed_mcu.SilenceWatchdog.__init__(self, keepalive_timeout)
        self._keepalive_interval = keepalive_interval
        self._reset_on_start = reset_on_start
        self._reset_wait = reset_wait
        self._resend_interval = resend_interval
        self._refresh_interval = refresh_interval
        self.stats = YetiStats()
        self._writer = framed_mcu.FrameWriter(port, self.stats, frame_gap=frame_gap)
        self._meter_send, self._meter_recv = trio.open_memory_channel[pb.PowerMeter](8)
        # What the host wants; re-sent until confirmed, and after a (re)connect or an MCU reset.
        self._offer: float | None = None
        self._unavailable = False
        self._allowed = False
        self._locked: bool | None = None
        self._lock_sends_left = 0
        self._lock_due = math.inf
        self._state_due = math.inf  # when `_keep_state_applied` sends the wanted state next
        self._wake = trio.Event()
        self._telemetry_since_change = 0
        # What the MCU last reported; None = not yet heard in this connection.
        self._pilot: PilotState | None = None
        self._contactor: bool | None = None
        self._lock_state: LockState | None = None
        self._flags = pb.ErrorFlags()
        self._reported = trio.Event()  # set (and replaced) on every frame from the MCU
        self._reset = framed_mcu.RequestedReset()
        self.board_info: YetiBoardInfo | None = None
        self.pp_state: int | None = None
        self.telemetry: pb.Telemetry | None = None
        self.latest_power_meter: pb.PowerMeter | None = None

    # ------------------------------------------------------------------ ChargeController

    async def offer_current(self, amps: float | None) -> None:
        self._offer = amps
        self._wanted_state_changed(resend_after=self._resend_interval)
        await self._send_duty()

    async def set_unavailable(self, unavailable: bool) -> None:
        self._unavailable = unavailable
        self._wanted_state_changed(resend_after=self._resend_interval)
        await self._send_duty()

    async def allow_power(self, allowed: bool) -> None:
        self._allowed = allowed
        self._wanted_state_changed(resend_after=self._resend_interval)
        await self._send(host_message(allow_power_on=allowed))

    async def set_lock(self, locked: bool) -> None:
        self._locked = locked
        self._schedule_lock(LOCK_SENDS - 1, after=LOCK_RESEND_S)
        await self._send(host_message(connector_lock=locked))

    def power_meter(self) -> YetiPowerMeter:
        """The board's own meter (power_meter messages) as a `PowerMeter`. Call at most once."""
        return YetiPowerMeter(self._meter_recv)

    async def next_report(self) -> None:
        """Return when the next frame from the MCU has been handled."""
        await self._reported.wait()

    @property
    def wanted_duty(self) -> int:
        return duty_for(self._offer, unavailable=self._unavailable)

    def state_confirmed(self) -> bool:
        """Whether the MCU's latest reports agree with the PWM and permission we want."""
        if self._telemetry_since_change < TELEMETRY_TO_CONFIRM or self.telemetry is None:
            return False
        drive = drive_of(self.wanted_duty)
        if drive is PilotDrive.STATE_F:
            pwm_ok = self._pilot is PilotState.F
        else:
            pwm_ok = self._pilot is not PilotState.F and telemetry_drive(self.telemetry) is drive
        if not pwm_ok:
            return False
        if self._contactor is None:
            return False
        if not self._allowed:
            # The MCU may keep its relay closed in C after a withdrawn permission (it switches off on
            # the EV's B, on X1 + 7 s, or on F); a closed relay is no proof the frame was lost, but
            # re-sending a "no" costs nothing.
            return not self._contactor
        ready_to_close = drive is PilotDrive.PWM and self._pilot in _EV_READY and not self._blocking_flags()
        return self._contactor or not ready_to_close

    # ------------------------------------------------------------------ session

    async def _session(self, port: SerialPort, ready: Callable[[], None]) -> None:
        """Resync, keep the wanted state applied; returns only by raising one `SerialPortError`."""
        self._pilot = self._contactor = self._lock_state = None
        self.telemetry = None
        self._telemetry_since_change = 0

        async def setup(guard: SessionGuard) -> None:
            self._last_heard = trio.current_time()
            await guard.run(self._start_session)
            guard.start_soon(self._send_keepalives)
            guard.start_soon(self._watchdog)
            guard.start_soon(self._keep_state_applied)
            if not guard.failures:
                ready()

        await self._run_port_session(port, fatal=(SerialPortError, ControllerError), setup=setup)

    async def _start_session(self) -> None:
        port = self._port
        if port is not None:
            # A lone delimiter ends whatever half frame the MCU's decoder holds; it takes no queue slot.
            await port.write(b"\x00")
        if self._reset_on_start:
            await self._reset.request(partial(self._send, host_message(reset=True)), self._reset_wait)
        self._wanted_state_changed(resend_after=self._resend_interval)
        await self._send_state()
        if self._locked is not None:
            await self._send(host_message(connector_lock=self._locked))
            self._schedule_lock(LOCK_SENDS - 1, after=LOCK_RESEND_S)

    def _keepalive(self) -> pb.EverestToMcu:
        keepalive = pb.KeepAlive(
            time_stamp=framed_mcu.time_stamp_ms(), sw_version_string=HOST_SW_VERSION[:SW_VERSION_MAX_CHARS]
        )
        return host_message(keep_alive=keepalive)

    def _wanted_state_changed(self, *, resend_after: float) -> None:
        """The wanted state changed (or the MCU forgot it): no report so far can confirm it."""
        self._telemetry_since_change = 0
        self._state_due = trio.current_time() + resend_after
        self._wake.set()

    def _schedule_lock(self, sends: int, *, after: float) -> None:
        self._lock_sends_left = sends
        self._lock_due = trio.current_time() + after
        self._wake.set()

    async def _send_duty(self) -> None:
        await self._send(host_message(pwm_duty_cycle=self.wanted_duty))

    async def _send_state(self) -> None:
        # PWM before permission: the permission is meaningless (and cleared by the MCU) without PWM.
        await self._send_duty()
        await self._send(host_message(allow_power_on=self._allowed))

    async def _keep_state_applied(self) -> None:
        """Re-send the wanted state: every `resend_interval` until the MCU's reports confirm it, then
        every `refresh_interval`; repeat a lock move `LOCK_SENDS` times (the lock is never reported)."""
        while True:
            now = trio.current_time()
            if now >= self._state_due:
                confirmed = self.state_confirmed()
                if not confirmed:
                    self.stats.state_resends += 1
                await self._send_state()
                self._state_due = now + (self._refresh_interval if confirmed else self._resend_interval)
            if self._lock_sends_left > 0 and self._locked is not None and now >= self._lock_due:
                await self._send(host_message(connector_lock=self._locked))
                self._schedule_lock(self._lock_sends_left - 1, after=LOCK_RESEND_S)
            due = self._state_due
            if self._lock_sends_left > 0:
                due = min(due, self._lock_due)
            self._wake = trio.Event()
            with trio.move_on_at(due):
                await self._wake.wait()

    async def _send(self, msg: pb.EverestToMcu) -> None:
        # Paced (`frame_gap`): the MCU's receive queue holds two frames and drops the rest.
        await self._writer.send(self._port, msg)

    async def _send_keepalives(self) -> None:
        while True:
            await trio.sleep(self._keepalive_interval)
            await self._send(self._keepalive())

    async def _mcu_silent(self) -> None:
        await self._raise_comm_fault(f"no frame from the MCU for {self._keepalive_timeout:g} s")

    async def _receive(self, chunks: trio.MemoryReceiveChannel[bytes]) -> None:
        await framed_mcu.receive_messages(chunks, pb.McuToEverest, self._handle, self.stats)

    async def _heard(self) -> None:
        # Any valid frame proves the MCU alive: the firmware we read sends its keep-alive only at boot,
        # but telemetry and power-meter frames periodically.
        self._mcu_heard()
        reported, self._reported = self._reported, trio.Event()
        reported.set()
        await self._clear_comm_fault()

    async def _handle(self, msg: pb.McuToEverest) -> bool:
        """Apply one MCU message; False for an empty or unknown member or enum value (not applied)."""
        case = msg.WhichOneof("payload")
        if case == "keep_alive":
            ka = msg.keep_alive
            self.board_info = YetiBoardInfo(
                hw_type=ka.hw_type,
                hw_revision=ka.hw_revision,
                protocol_version=(ka.protocol_version_major, ka.protocol_version_minor),
                sw_version=ka.sw_version_string,
                max_current_a=ka.hwcap_max_current,
                min_current_a=ka.hwcap_min_current,
                max_phases=ka.hwcap_max_phase_count,
                min_phases=ka.hwcap_min_phase_count,
            )
        elif case == "reset":
            if msg.reset not in _RESET_NAMES:
                return False  # proto3 enums are open: a newer firmware's value is unknown, not an error
            await self._heard()
            await self._on_reset(_RESET_NAMES[msg.reset])
            return True
        elif case == "cp_state":
            pilot = _CP_TO_PILOT.get(msg.cp_state)
            if pilot is None:
                return False
            if pilot != self._pilot:
                self._pilot = pilot
                await self._emit(PilotChanged(pilot))
        elif case == "relais_state":
            if msg.relais_state != self._contactor:
                self._contactor = msg.relais_state
                await self._emit(ContactorChanged(msg.relais_state))
        elif case == "lock_state":
            lock = _LOCK_TO_API.get(msg.lock_state)
            if lock is None:
                return False
            if lock != self._lock_state:
                self._lock_state = lock
                await self._emit(LockChanged(lock))
        elif case == "error_flags":
            old, self._flags = self._flags, msg.error_flags
            for event in framed_mcu.flag_faults(old, msg.error_flags, ERROR_FLAG_FAULTS):
                await self._emit(event)
        elif case == "pp_state":
            self.pp_state = msg.pp_state
        elif case == "telemetry":
            self.telemetry = msg.telemetry
            self._telemetry_since_change += 1
        elif case == "power_meter":
            self.latest_power_meter = msg.power_meter
            # The meter adapter may be absent or slow: dropping one periodic reading is harmless.
            with suppress(trio.WouldBlock):
                self._meter_send.send_nowait(msg.power_meter)
        else:
            return False
        await self._heard()
        return True

    def _blocking_flags(self) -> bool:
        return any(getattr(self._flags, name) for name in ERROR_FLAG_FAULTS)

    async def _on_reset(self, reason: str) -> None:
        if not self._reset.unrequested():
            return
        self.stats.unrequested_resets += 1
        # The MCU forgot everything: its relay is open. Restore PWM and lock at once, but not the
        # permission to switch power: the runtime decides that again after seeing BoardReset.
        self._allowed = False
        self._wanted_state_changed(resend_after=0.0)
        if self._locked is not None:
            self._schedule_lock(LOCK_SENDS, after=0.0)
        await self._emit(BoardReset(reason))

    # ------------------------------------------------------------------ safe stop

    def _safe_stop_board(self) -> SafeStopBoard:
        return _YetiSafeStop(self)

    async def _resend_until(self, condition: Callable[[], bool], send: Callable[[], Awaitable[None]]) -> None:
        """Re-send (the MCU acknowledges nothing) until its reports satisfy `condition`."""
        interval = self._resend_interval
        await framed_mcu.resend_until(condition, send, next_report=self.next_report, interval=interval)


class _YetiSafeStop:
    """The Yeti side of drivers/safe_stop.py: X1, wait for B, permission off, lock open."""

    def __init__(self, board: YetiBoard) -> None:
        self.board = board
        self.name = f"Yeti {board._path}"

    async def withdraw_offer(self) -> None:
        self.board._offer = None
        self.board._unavailable = False
        await self.board._send_duty()

    async def wait_ev_stopped(self) -> None:
        board = self.board
        # The EV answers X1 by opening S2 (C -> B); the relay then opens by itself.
        await board._resend_until(
            lambda: board._pilot not in _EV_READY or board._contactor is False, board._send_duty
        )

    async def open_contactor(self) -> None:
        self.board._allowed = False
        await self.board._send(host_message(allow_power_on=False))

    async def wait_contactor_open(self) -> None:
        board = self.board

        async def resend() -> None:
            await board._send_duty()
            await board._send(host_message(allow_power_on=False))

        await board._resend_until(lambda: board._contactor is not True, resend)

    async def signal_fault(self) -> None:
        self.board._unavailable = True
        await self.board._send_duty()

    async def release_lock(self) -> None:
        board = self.board
        if board._locked is None:
            return  # never locked by us: nothing to release (and no motor pulse for nothing)
        board._locked = False
        # The firmware never reports its lock: the move is sent more than once, as in normal operation.
        for n in range(LOCK_SENDS):
            if n:
                await trio.sleep(LOCK_RESEND_S)
            await board._send(host_message(connector_lock=False))


class YetiPowerMeter:
    """`PowerMeter` view of a Yeti board's power_meter messages; the board's `run` must be running.

    Events go through the shared `MeterEventPublisher`, so the board meter gets the same drop-oldest
    channel and the same "energy never goes backwards" check as the Modbus meters.
    """

    def __init__(
        self,
        reports: trio.MemoryReceiveChannel[pb.PowerMeter],
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


def sample_from_report(report: pb.PowerMeter, timestamp: datetime) -> MeterSample:
    """A `MeterSample` from one power_meter message (frequency: L1's, as the board measures per phase)."""
    return MeterSample(
        timestamp=timestamp,
        energy_import_wh=report.totalWattHr,
        power_w=report.wattL1 + report.wattL2 + report.wattL3,
        voltage_v=PhaseValues(report.vrmsL1, report.vrmsL2, report.vrmsL3),
        current_a=PhaseValues(report.irmsL1, report.irmsL2, report.irmsL3),
        frequency_hz=report.freqL1,
    )

"""PHYTEC phyVERSO charge-controller driver (AC): two charge ports behind one UART, COBS + CRC-32 +
protobuf (drivers/boards/proto/phyverso.proto; the Yeti's framing, shared from yeti_framing.py).

`PhyVersoLink` owns the port: one reader, frames demultiplexed by their `connector` field, keep-alives
both ways, the boot-configuration handshake, the MCU's reset. `PhyVersoConnector` is the
`ChargeController` of one charge port; both connectors of a board share one link. The MCU acknowledges
commands only through its reports, so each connector re-sends its wanted state until the reports confirm
it. Bad frames are counted and skipped, never fatal.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Final, NoReturn, Unpack

import trio

from evstation.drivers.api import (
    BoardReset,
    CableRating,
    ContactorChanged,
    ControllerError,
    ControllerEvent,
    FaultCleared,
    FaultCode,
    FaultRaised,
    LockChanged,
    LockState,
    PilotChanged,
    PilotState,
)
from evstation.drivers.boards import framed_mcu
from evstation.drivers.boards.proto import phyverso_pb2 as pb
from evstation.drivers.boards.serial_port import SerialPort, SerialPortError
from evstation.drivers.boards.supervised import SUPERVISION_FAULTS, PortSettings, SessionGuard, SupervisedPort
from evstation.drivers.safe_stop import SafeStopReport, run_safe_stop

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 115200
PWM_STATE_F = framed_mcu.PWM_STATE_F
CONNECTORS = (1, 2)
BOARD = 0  # `connector` of frames about the whole board (keep-alive, reset, configuration)
PWM_X1 = 10000  # what EVerest's PhyVersoBSP sends for "PWM off"
HOST_SW_VERSION = "evstation"
KEEPALIVE_INTERVAL_S = 1.0  # PhyVersoBSP sends one every second
KEEPALIVE_TIMEOUT_S = 5.0  # PhyVersoBSP's timeout for the MCU's keep-alive
RESET_WAIT_S = 1.0  # PhyVersoBSP waits 20 x 50 ms for the reset announcement
CONFIG_WAIT_S = 2.0  # PhyVersoBSP resets again after 20 x 100 ms without configuration_done
RESEND_INTERVAL_S = 0.5
REFRESH_INTERVAL_S = 2.0
TELEMETRY_TO_CONFIRM = 2  # the first telemetry after a change may predate it

_CP_TO_PILOT = framed_mcu.pilot_states(pb.CpState)
# LOCKING / UNLOCKING are moves, not states: no event until the move ends.
_LOCK_TO_API = {pb.UNDEFINED: LockState.UNKNOWN, pb.UNLOCKED: LockState.UNLOCKED, pb.LOCKED: LockState.LOCKED}
_LOCK_MOVES = frozenset({pb.LOCKING, pb.UNLOCKING})
# PP coding -> cable rating (A). The schema's 70 A is IEC 61851-1's 100 ohm coding, which the station
# knows as 63 A (three-phase rating; drivers/api.py PP_CODING).
_PP_RATING: dict[int, int | None] = {
    pb.STATE_NC: None, pb.STATE_13A: 13, pb.STATE_20A: 20, pb.STATE_32A: 32, pb.STATE_70A: 63,
    pb.STATE_FAULT: None,
}  # fmt: skip
_RESET_NAMES = {pb.USER: "user", pb.WATCHDOG: "watchdog"}
# station.toml's names (`hw_revision`, `lock`) -> the schema's values.
HW_REVISIONS = {"A": pb.HW_REV_A, "B": pb.HW_REV_B}
LOCK_TYPES = {
    "none": pb.MOTOR_LOCK_NONE,
    "hella": pb.MOTOR_LOCK_HELLA,
    "valeo_hvac": pb.MOTOR_LOCK_DEBUG_VALEO_HVAC,
}
_EV_READY = frozenset({PilotState.C, PilotState.D})
# error_flags field -> fault. heartbeat_timeout: the MCU heard no keep-alive of ours.
ERROR_FLAG_FAULTS = {
    **framed_mcu.ERROR_FLAG_FAULTS,
    "heartbeat_timeout": FaultCode.BOARD_COMMUNICATION,
    "coil_feedback_diverges": FaultCode.EVSE_CONTACTOR_FAULT,
    "pp_signal_fault": FaultCode.PROXIMITY_FAULT,
}
# Every fault a phyVERSO port can raise: its error_flags and the lost link (tests/drivers/
# test_drivers_fault_sets.py checks that the code names no other).
FAULTS_RAISED: Final[frozenset[FaultCode]] = frozenset(ERROR_FLAG_FAULTS.values()) | SUPERVISION_FAULTS
# Flags under which the MCU will not close the coil (a permission is then confirmed while it stays open).
_BLOCKING_FLAGS = ("diode_fault", "rcd_triggered", "cp_signal_fault", "heartbeat_timeout", "pp_signal_fault")
_LINK = "link"  # comm-fault reasons: the host lost the MCU (port error, silence) ...
_HEARTBEAT = "heartbeat"  # ... or the MCU lost the host (its heartbeat_timeout flag)


def duty_for(amps: float | None, *, unavailable: bool) -> int:
    """The `pwm_duty_cycle` value (0.01 % units) for an offer; state F wins over any offer."""
    return framed_mcu.duty_units(amps, unavailable=unavailable, x1=PWM_X1)


def pwm_shown(duty: int, telemetry: pb.Telemetry) -> bool:
    """Whether telemetry shows the drive `duty` asks for: a PWM (low level below the high one) or not."""
    if duty == PWM_STATE_F:
        return telemetry.cp_voltage_hi == 0
    pwm = telemetry.cp_voltage_lo < telemetry.cp_voltage_hi
    return pwm if duty < PWM_X1 else (telemetry.cp_voltage_hi > 0 and not pwm)


def host_message(connector: int, **payload: object) -> pb.EverestToMcu:
    """One `EverestToMcu` for `connector` (0 = the board) with exactly one payload member set."""
    msg = pb.EverestToMcu(connector=connector, **payload)  # type: ignore[arg-type]
    return framed_mcu.one_payload(msg, payload)


@dataclass
class PhyVersoStats(framed_mcu.FrameStats):
    """Counters of one link; bad input is counted, never fatal."""

    unknown_connector: int = 0
    config_responses: int = 0


class PhyVersoLink(SupervisedPort, framed_mcu.SilenceWatchdog):
    """One phyVERSO board on one serial port: create its connectors with `connector(n)`, then start
    `run` once (in a nursery that outlives the connectors' EVSEs) before their `run`s."""

    stats: PhyVersoStats

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        hw_revision: int = pb.HW_REV_B,
        keepalive_interval: float = KEEPALIVE_INTERVAL_S,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT_S,
        reset_wait: float = RESET_WAIT_S,
        config_wait: float = CONFIG_WAIT_S,
        resend_interval: float = RESEND_INTERVAL_S,
        refresh_interval: float = REFRESH_INTERVAL_S,
        **port_settings: Unpack[PortSettings],
    ) -> None:
        super().__init__(port, baudrate=baudrate, **port_settings)
        framed_mcu.SilenceWatchdog.__init__(self, keepalive_timeout)
        self.stats = PhyVersoStats()
        self._writer = framed_mcu.FrameWriter(port, self.stats)
        self.mcu_info: pb.KeepAlive | None = None
        self._hw_revision = hw_revision
        self._keepalive_interval = keepalive_interval
        self._reset_wait = reset_wait
        self._config_wait = config_wait
        self.resend_interval = resend_interval
        self.refresh_interval = refresh_interval
        self._connectors: dict[int, PhyVersoConnector] = {}
        self._reset = framed_mcu.RequestedReset()
        self.configured = trio.Event()

    def connector(
        self, number: int, *, lock: int = pb.MOTOR_LOCK_NONE, has_socket: bool = False
    ) -> PhyVersoConnector:
        """The `ChargeController` of charge port `number` (1 or 2), configured as AC with `lock`."""
        if number not in CONNECTORS:
            raise ValueError(f"connector must be 1 or 2 (got {number})")
        if number in self._connectors:
            raise ValueError(f"{self.path}: connector {number} already taken")
        connector = self._connectors[number] = PhyVersoConnector(
            self, number, lock=lock, has_socket=has_socket
        )
        return connector

    def boot_config(self) -> pb.BootConfigResponse:
        """Our answer to the MCU's config_request: one entry per port, unconfigured ports disabled."""
        ports = []
        for number in CONNECTORS:
            connector = self._connectors.get(number)
            if connector is None:
                ports.append(pb.ChargePortConfig(type=pb.DISABLED))
                continue
            ports.append(
                pb.ChargePortConfig(
                    type=pb.AC,
                    # PhyVersoBSP's defaults for the contactor's mirror contact: active high, pulled down.
                    feedback_active_low=False,
                    feedback_pull=pb.DOWN,
                    lock=pb.ConfigMotorLockType(type=connector.lock_type),  # type: ignore[arg-type]
                    has_socket=connector.has_socket,
                )
            )
        return pb.BootConfigResponse(hw_rev=self._hw_revision, chargeport_config=ports)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ the port (`run`: SupervisedPort)

    async def _port_failed(self, error: str) -> None:
        for connector in self._connectors.values():
            await connector.comm_fault(_LINK, error)

    async def _session(self, port: SerialPort, ready: Callable[[], None]) -> None:
        self.configured = trio.Event()
        for connector in self._connectors.values():
            connector.forget_reports()

        async def setup(guard: SessionGuard) -> None:
            self._last_heard = trio.current_time()
            await guard.run(self._reset_mcu)
            guard.start_soon(self._send_keepalives)
            guard.start_soon(self._watchdog)
            await self._wait_configured()
            for connector in self._connectors.values():
                guard.start_soon(connector.keep_state_applied)
            if not guard.failures:
                ready()

        await self._run_port_session(port, fatal=(SerialPortError, ControllerError), setup=setup)

    async def _safe_stop(self) -> None:
        async with trio.open_nursery() as stops:
            for connector in self._connectors.values():
                stops.start_soon(connector.safe_stop)

    async def _reset_mcu(self) -> None:
        """Resync the MCU's decoder and reset it into a known state (bounded wait for its answer)."""
        if self._port is not None:
            await self._port.write(b"\x00")  # ends any half frame in the MCU's decoder
        await self._reset.request(partial(self.send, host_message(BOARD, reset=True)), self._reset_wait)

    async def _wait_configured(self) -> None:
        # The MCU asks for its configuration (config_request) once it has booted; `_handle` answers.
        with trio.move_on_after(self._config_wait):
            await self.configured.wait()
        if not self.configured.is_set():
            log.warning("%s: the phyVERSO MCU has not confirmed its configuration yet", self.path)

    async def send(self, msg: pb.EverestToMcu) -> None:
        await self._writer.send(self._port, msg)

    async def _send_keepalives(self) -> None:
        while True:
            keepalive = pb.KeepAlive(time_stamp=framed_mcu.time_stamp_ms(), sw_version_string=HOST_SW_VERSION)
            await self.send(host_message(BOARD, keep_alive=keepalive))
            await trio.sleep(self._keepalive_interval)

    async def _mcu_silent(self) -> None:
        detail = f"no keep-alive from the phyVERSO MCU for {self._keepalive_timeout:g} s"
        for connector in self._connectors.values():
            await connector.comm_fault(_LINK, detail)

    async def _receive(self, chunks: trio.MemoryReceiveChannel[bytes]) -> None:
        await framed_mcu.receive_messages(chunks, pb.McuToEverest, self._handle, self.stats)

    async def _handle(self, msg: pb.McuToEverest) -> bool:
        """Apply one MCU message; False for an unknown member or enum value (not applied)."""
        case = msg.WhichOneof("payload")
        if case == "keep_alive":
            # The host module times the link on the MCU's keep-alives (sent periodically), not on any frame.
            self.mcu_info = msg.keep_alive
            self._mcu_heard()
            if msg.keep_alive.configuration_done:
                self.configured.set()
            for connector in self._connectors.values():
                await connector.comm_restored(_LINK)
            return True
        if case == "config_request":
            self.stats.config_responses += 1
            await self.send(host_message(BOARD, config_response=self.boot_config()))
            return True
        if case == "reset":
            if msg.reset not in _RESET_NAMES:
                return False
            await self._on_reset(_RESET_NAMES[msg.reset])
            return True
        if case == "fan_state":
            return True  # fans are out of scope; a valid report all the same
        if case is None:
            return False
        port = self._connectors.get(msg.connector)
        if port is None:
            self.stats.unknown_connector += 1
            return True  # a port we do not drive (disabled, or a newer firmware's numbering)
        return await port.handle(case, msg)

    async def _on_reset(self, reason: str) -> None:
        self.configured = trio.Event()
        if not self._reset.unrequested():
            return
        self.stats.unrequested_resets += 1
        for connector in self._connectors.values():
            await connector.board_reset(reason)


class PhyVersoConnector:
    """`ChargeController` for one charge port of a phyVERSO board (`PhyVersoLink.connector`)."""

    def __init__(self, link: PhyVersoLink, number: int, *, lock: int, has_socket: bool) -> None:
        self.link = link
        self.number = number
        self.lock_type = lock
        self.has_socket = has_socket
        self.name = f"phyVERSO {link.path} connector {number}"
        self.last_safe_stop: SafeStopReport | None = None
        self._events_send, self._events_recv = trio.open_memory_channel[ControllerEvent](256)
        # What the host wants; re-sent until confirmed, and after a (re)connect or an MCU reset.
        self._offer: float | None = None
        self._unavailable = False
        self._allowed = False
        self._locked: bool | None = None
        self._state_due = math.inf
        self._wake = trio.Event()
        self._telemetry_since_change = 0
        # What the MCU last reported; None = not yet heard in this session.
        self.pilot: PilotState | None = None
        self.coil: bool | None = None
        self.lock_state: int | None = None
        self.telemetry: pb.Telemetry | None = None
        self.pp_state: int | None = None
        self._flags = pb.ErrorFlags()
        self._comm_reasons: set[str] = set()
        self._reported = trio.Event()
        self._stop_lock = trio.Lock()
        self._safe_stopped = False

    # ------------------------------------------------------------------ ChargeController

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """The link does the I/O; this task's cancellation puts this port into its safe state."""
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self.link.safe_stop_timeouts.deadline_s + 1.0
                await self.safe_stop()
        raise AssertionError("unreachable")

    def events(self) -> AsyncIterator[ControllerEvent]:
        return self._events_recv

    async def offer_current(self, amps: float | None) -> None:
        self._offer = amps
        self._wanted_state_changed()
        await self._send_duty()

    async def set_unavailable(self, unavailable: bool) -> None:
        self._unavailable = unavailable
        self._wanted_state_changed()
        await self._send_duty()

    async def allow_power(self, allowed: bool) -> None:
        self._allowed = allowed
        self._wanted_state_changed()
        await self._send_coil()

    async def set_lock(self, locked: bool) -> None:
        self._locked = locked
        self._wanted_state_changed()
        await self._send_lock()

    @property
    def wanted_duty(self) -> int:
        return duty_for(self._offer, unavailable=self._unavailable)

    async def next_report(self) -> None:
        """Return when the next frame for this port has been handled."""
        await self._reported.wait()

    def state_confirmed(self) -> bool:
        """Whether the MCU's latest reports agree with the PWM, coil and lock we want."""
        return self._pwm_confirmed() and self._coil_confirmed() and self._lock_confirmed()

    def _pwm_confirmed(self) -> bool:
        duty = self.wanted_duty
        if duty == PWM_STATE_F:
            return self.pilot is PilotState.F
        if self._telemetry_since_change < TELEMETRY_TO_CONFIRM or self.telemetry is None:
            return False
        return self.pilot is not PilotState.F and pwm_shown(duty, self.telemetry)

    def _coil_confirmed(self) -> bool:
        if self.coil is None:
            return False
        if not self._allowed:
            return not self.coil
        can_close = (
            0 < self.wanted_duty < PWM_X1
            and self.pilot in _EV_READY
            and not any(getattr(self._flags, name) for name in _BLOCKING_FLAGS)
        )
        return self.coil or not can_close

    def _lock_confirmed(self) -> bool:
        if self._locked is None:
            return True
        if self.lock_state in _LOCK_MOVES:
            return True  # a move is under way: sending again would restart the motor
        return self.lock_state == (pb.LOCKED if self._locked else pb.UNLOCKED)

    # ------------------------------------------------------------------ sending

    def _wanted_state_changed(self, resend_after: float | None = None) -> None:
        self._safe_stopped = False
        self._telemetry_since_change = 0
        delay = self.link.resend_interval if resend_after is None else resend_after
        self._state_due = trio.current_time() + delay
        self._wake.set()

    async def _send_duty(self) -> None:
        await self.link.send(host_message(self.number, pwm_duty_cycle=self.wanted_duty))

    async def _send_coil(self) -> None:
        request = pb.CoilState(coil_type=pb.COIL_AC, coil_state=self._allowed)
        await self.link.send(host_message(self.number, set_coil_state_request=request))

    async def _send_lock(self) -> None:
        if self._locked is not None:
            await self.link.send(host_message(self.number, connector_lock=self._locked))

    async def keep_state_applied(self) -> None:
        """Re-send the wanted state: every `resend_interval` until the reports confirm it, then every
        `refresh_interval` (PWM and coil; the lock only while unconfirmed: each frame moves its motor)."""
        self._wanted_state_changed(resend_after=0.0)
        while True:
            now = trio.current_time()
            if now >= self._state_due:
                confirmed = self.state_confirmed()
                if not confirmed:
                    self.link.stats.state_resends += 1
                await self._send_duty()  # PWM before the coil: the MCU closes it only with a PWM
                await self._send_coil()
                if not self._lock_confirmed():
                    await self._send_lock()
                interval = self.link.refresh_interval if confirmed else self.link.resend_interval
                self._state_due = now + interval
            self._wake = trio.Event()
            with trio.move_on_at(self._state_due):
                await self._wake.wait()

    # ------------------------------------------------------------------ reports (from the link)

    def forget_reports(self) -> None:
        self.pilot = self.coil = self.lock_state = self.pp_state = None
        self.telemetry = None
        self._telemetry_since_change = 0

    async def handle(self, case: str, msg: pb.McuToEverest) -> bool:
        if case == "cp_state":
            pilot = _CP_TO_PILOT.get(msg.cp_state)
            if pilot is None:
                return False
            if pilot != self.pilot:
                self.pilot = pilot
                await self._emit(PilotChanged(pilot))
        elif case == "set_coil_state_response":
            response = msg.set_coil_state_response
            if response.coil_type != pb.COIL_AC:
                return True  # a DC coil: out of scope
            if response.coil_state != self.coil:
                self.coil = response.coil_state
                await self._emit(ContactorChanged(response.coil_state))
        elif case == "error_flags":
            old, self._flags = self._flags, msg.error_flags
            for event in framed_mcu.flag_faults(old, msg.error_flags, ERROR_FLAG_FAULTS):
                if event.code is not FaultCode.BOARD_COMMUNICATION:
                    await self._emit(event)
                elif isinstance(event, FaultRaised):
                    await self.comm_fault(_HEARTBEAT, "the MCU heard no keep-alive from the station")
                else:
                    await self.comm_restored(_HEARTBEAT)
        elif case == "lock_state":
            state = msg.lock_state
            if state not in _LOCK_TO_API and state not in _LOCK_MOVES:
                return False
            previous, self.lock_state = self.lock_state, state
            if state in _LOCK_TO_API and state != previous:
                await self._emit(LockChanged(_LOCK_TO_API[state]))
        elif case == "pp_state":
            if msg.pp_state not in _PP_RATING:
                return False
            if msg.pp_state != self.pp_state:
                self.pp_state = msg.pp_state
                if msg.pp_state == pb.STATE_FAULT:
                    log.warning("%s: PP reads neither a cable nor none", self.name)
                await self._emit(CableRating(_PP_RATING[msg.pp_state]))
        elif case == "telemetry":
            self.telemetry = msg.telemetry
            self._telemetry_since_change += 1
        else:
            return False
        reported, self._reported = self._reported, trio.Event()
        reported.set()
        return True

    async def comm_fault(self, reason: str, detail: str) -> None:
        first = not self._comm_reasons
        self._comm_reasons.add(reason)
        if first:
            await self._emit(FaultRaised(FaultCode.BOARD_COMMUNICATION, detail))

    async def comm_restored(self, reason: str) -> None:
        if reason in self._comm_reasons:
            self._comm_reasons.discard(reason)
            if not self._comm_reasons:
                await self._emit(FaultCleared(FaultCode.BOARD_COMMUNICATION))

    async def board_reset(self, reason: str) -> None:
        # The MCU forgot everything: PWM and lock are restored, the permission is not: the runtime
        # decides it again after BoardReset.
        self._allowed = False
        self.forget_reports()
        self._flags = pb.ErrorFlags()
        self._wanted_state_changed(resend_after=0.0)
        await self._emit(BoardReset(reason))

    async def _emit(self, event: ControllerEvent) -> None:
        await self._events_send.send(event)

    # ------------------------------------------------------------------ safe stop

    async def safe_stop(self) -> None:
        """Run drivers/safe_stop.py once for this port (the link and `run` may both ask at a stop)."""
        async with self._stop_lock:
            if self._safe_stopped:
                return
            self.last_safe_stop = await run_safe_stop(_PhyVersoSafeStop(self), self.link.safe_stop_timeouts)
            self._safe_stopped = True

    async def resend_until(self, condition: Callable[[], bool], send: Callable[[], Awaitable[None]]) -> None:
        """Re-send until the reports satisfy `condition`; `ControllerError` when the port is gone."""

        def check_port() -> None:
            if not self.link.port_open:
                raise ControllerError(FaultCode.BOARD_COMMUNICATION, f"{self.link.path}: port not open")

        interval = self.link.resend_interval
        await framed_mcu.resend_until(
            condition, send, next_report=self.next_report, interval=interval, check_port=check_port
        )


class _PhyVersoSafeStop:
    """One port's side of drivers/safe_stop.py: X1, wait for the EV, coil open, lock released."""

    def __init__(self, connector: PhyVersoConnector) -> None:
        self.c = connector
        self.name = connector.name

    async def withdraw_offer(self) -> None:
        self.c._offer = None
        self.c._unavailable = False
        await self.c._send_duty()

    async def wait_ev_stopped(self) -> None:
        c = self.c
        await c.resend_until(lambda: c.pilot not in _EV_READY or c.coil is False, c._send_duty)

    async def open_contactor(self) -> None:
        self.c._allowed = False
        await self.c._send_coil()

    async def wait_contactor_open(self) -> None:
        c = self.c
        await c.resend_until(lambda: c.coil is False, c._send_coil)

    async def signal_fault(self) -> None:
        self.c._unavailable = True
        await self.c._send_duty()

    async def release_lock(self) -> None:
        c = self.c
        if c._locked is None:
            return  # never locked by us: no motor move for nothing
        c._locked = False
        await c._send_lock()

        async def resend_unless_moving() -> None:
            if c.lock_state not in _LOCK_MOVES:
                await c._send_lock()

        with trio.move_on_after(c.link.safe_stop_timeouts.contactor_s):
            await c.resend_until(lambda: c.lock_state == pb.UNLOCKED, resend_unless_moving)

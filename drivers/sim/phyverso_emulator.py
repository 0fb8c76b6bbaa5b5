"""A phyVERSO MCU on a pseudo-terminal: two AC charge ports behind one UART, real COBS + CRC + protobuf
frames (drivers/boards/proto/phyverso.proto), one simulated EV (`SimEv`) per port.

The MCU firmware is not public: this models what EVerest's host module (PhyVersoBSP) expects of it, as
docs/boards.md says: after a reset it announces the reason and asks for its configuration until it gets
it, keep-alives tell whether it is configured, the coil answers every request with its state, the lock
reports its moves, and without host keep-alives it flags `heartbeat_timeout` and stops charging (state F,
coil open). For tests, the HIL rig and a simulated station; production drivers never import it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from evstation.drivers.boards.framed_mcu import time_stamp_ms
from evstation.drivers.boards.proto import phyverso_pb2 as pb
from evstation.drivers.pilot import duty_to_amps
from evstation.drivers.sim import framed_emulator
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.pty_emulator import serve_emulator

CONNECTORS = (1, 2)
PWM_X1 = framed_emulator.PWM_X1
BOARD = 0  # the `connector` value of frames about the whole board
REPORT_INTERVAL_S = 0.2
# How long the MCU waits for a host keep-alive before it flags heartbeat_timeout and stops charging:
# not published (the firmware is closed); the host module's own timeout is 5 s, so we assume the same.
HOST_TIMEOUT_S = 5.0
LOCK_MOVE_S = 0.2
SW_VERSION = "evstation-phyverso-emulator"
PORT_MEMBERS = frozenset({"connector_lock", "pwm_duty_cycle", "set_coil_state_request", "rcd_cmd"})
# Flags under which the contactor must stay open.
_BLOCKING_FLAGS = ("diode_fault", "rcd_triggered", "cp_signal_fault", "heartbeat_timeout", "pp_signal_fault")
_PILOT_TO_CP = framed_emulator.cp_states(pb.CpState)
_CP_VOLTS = framed_emulator.cp_high_volts(pb.CpState)
_PP_OF_RATING: dict[int | None, int] = {
    None: pb.STATE_NC, 13: pb.STATE_13A, 20: pb.STATE_20A, 32: pb.STATE_32A, 63: pb.STATE_70A,
}  # fmt: skip


@dataclasses.dataclass
class PhyVersoFaults(framed_emulator.McuFaults):
    """Injected faults of one charge port; the MCU reports them through its error_flags."""

    rcd_selftest_failed: bool = False
    pp_fault: bool = False
    coil_welded: bool = False  # the contactor stays closed; its mirror contact then disagrees


@dataclasses.dataclass
class ChargePort(framed_emulator.PwmDrive):
    """One charge port of the MCU: what the host commanded, what the hardware does, what was reported."""

    ev: SimEv
    faults: PhyVersoFaults = dataclasses.field(default_factory=PhyVersoFaults)
    config: pb.ChargePortConfig | None = None
    duty: int = PWM_X1
    coil_wanted: bool = False
    coil: bool = False
    lock_wanted: bool = False
    lock_state: int = pb.UNDEFINED
    lock_done_at: float = math.inf
    coil_answer_due: bool = False
    last_cp: int | None = None
    last_flags: pb.ErrorFlags | None = None
    last_coil: bool | None = None
    last_lock: int | None = None
    last_pp: int | None = None

    def forget_reports(self) -> None:
        self.last_cp = self.last_flags = self.last_coil = self.last_lock = self.last_pp = None


class PhyVersoEmulator(framed_emulator.FramedMcuEmulator[pb.EverestToMcu]):
    """The MCU with two charge ports. `ev` is port 1's EV; `ports[n].ev` each port's."""

    def __init__(
        self,
        ev: SimEv | None = None,
        ev2: SimEv | None = None,
        *,
        report_interval: float = REPORT_INTERVAL_S,
        host_timeout: float | None = HOST_TIMEOUT_S,
        boot_time: float = 0.05,
        lock_move: float = LOCK_MOVE_S,
    ) -> None:
        super().__init__(ev, host_message=pb.EverestToMcu, boot_time=boot_time)
        self.ports = {1: ChargePort(self.ev), 2: ChargePort(ev2 if ev2 is not None else SimEv())}
        self.faults = self.ports[1].faults
        self._report_interval = report_interval
        self._host_timeout = host_timeout
        self._lock_move = lock_move
        self.configured = False
        self.config: pb.BootConfigResponse | None = None
        self.heartbeat_timeout = False
        self.host_misaddressed = 0  # port commands for no port, or before the configuration
        self.config_requests = 0

    # ---------------------------------------------------------------- control surface

    def update_ev(self, connector: int = 1, **changes: Any) -> None:
        """Change port `connector`'s EV (plugged=..., wants_energy=..., ...) and let the MCU see it."""
        ev = self.ports[connector].ev
        for name, value in changes.items():
            if not hasattr(ev, name):
                raise AttributeError(f"SimEv has no attribute {name!r}")
            setattr(ev, name, value)
        self._poke()

    def inject(self, connector: int = 1, **faults: bool) -> None:
        """Set or clear faults of port `connector` by `PhyVersoFaults` field name."""
        port = self.ports[connector]
        for name, value in faults.items():
            if not hasattr(port.faults, name):
                raise AttributeError(f"no such fault {name!r}")
            setattr(port.faults, name, value)
        self._poke()

    def keep_host_frames(self) -> None:
        """Stop dropping host frames (undoes `drop_next_host_frames`)."""
        self._drop_next = 0

    def spurious_reset(self) -> None:
        """A watchdog reset the host did not ask for."""
        self._reset(pb.WATCHDOG)

    def coil_closed(self, connector: int) -> bool:
        return self.ports[connector].coil

    def current_a(self, connector: int) -> float:
        """What port `connector`'s EV draws per phase now."""
        port = self.ports[connector]
        pwm = port.duty_pct
        return port.ev.current_draw(duty_to_amps(pwm) if pwm is not None else 0.0, port.coil)

    # ---------------------------------------------------------------- service

    def _services(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self._boot, self._report_changes, self._periodic]

    def _reset(self, reason: int) -> None:
        for port in self.ports.values():
            port.duty = PWM_X1
            port.coil_wanted = port.coil = False
            port.config = None
            port.coil_answer_due = False
            port.forget_reports()
        self.configured = False
        self.config = None
        self.heartbeat_timeout = False
        self._start_boot(reason)

    def _forget_reports(self) -> None:
        for port in self.ports.values():
            port.forget_reports()

    def _ac(self, port: ChargePort) -> bool:
        return self.configured and port.config is not None and port.config.type == pb.AC

    def _cp_state(self, port: ChargePort) -> int:
        return _PILOT_TO_CP[port.faults.pilot(port.ev, port.duty_pct, port.duty == 0)]

    def _flags(self, port: ChargePort) -> pb.ErrorFlags:
        f = port.faults
        return pb.ErrorFlags(
            **f.error_flags(port.ev, pwm_running=port.pwm_running, lock_wanted=port.lock_wanted),
            rcd_selftest_failed=f.rcd_selftest_failed,
            heartbeat_timeout=self.heartbeat_timeout,
            coil_feedback_diverges=f.coil_welded and port.coil and not port.coil_wanted,
            pp_signal_fault=f.pp_fault and port.ev.plugged,
        )

    def _pp_state(self, port: ChargePort) -> int:
        if port.faults.pp_fault and port.ev.plugged:
            return pb.STATE_FAULT
        rating = port.ev.cable_max_current_a if port.ev.plugged else None
        return _PP_OF_RATING.get(rating, pb.STATE_FAULT)

    def _step(self, port: ChargePort, cp: int, flags: pb.ErrorFlags) -> None:
        """The port's contactor and lock for the current inputs."""
        now = trio.current_time()
        if port.lock_done_at <= now:
            port.lock_done_at = math.inf
            if not (port.faults.lock_jammed and port.lock_wanted):
                port.lock_state = pb.LOCKED if port.lock_wanted else pb.UNLOCKED
        if port.faults.coil_welded and port.coil:
            return
        blocked = any(
            getattr(flags, name)
            for name in (
                "diode_fault",
                "rcd_triggered",
                "cp_signal_fault",
                "heartbeat_timeout",
                "pp_signal_fault",
            )
        )
        # The contactor closes only on the host's request, with a PWM offered and the EV asking (C/D);
        # it stays closed after the PWM stopped until the host opens it (the host's safe stop waits for
        # the EV first) or the EV leaves C/D.
        may_close = port.pwm_running or port.coil
        port.coil = port.coil_wanted and not blocked and may_close and cp in (pb.STATE_C, pb.STATE_D)

    async def _announce_boot(self, reason: int) -> None:
        await self._send(pb.McuToEverest(keep_alive=self._keepalive(), connector=BOARD))
        await self._send(pb.McuToEverest(reset=reason, connector=BOARD))  # type: ignore[arg-type]
        await self._request_config()

    async def _report_state(self) -> None:
        for number, port in self.ports.items():
            if self._ac(port):
                await self._report_port(number, port)

    async def _report_port(self, number: int, port: ChargePort) -> None:
        cp = self._cp_state(port)
        flags = self._flags(port)
        self._step(port, cp, flags)
        if cp != port.last_cp:
            port.last_cp = cp
            await self._send(pb.McuToEverest(cp_state=cp, connector=number))  # type: ignore[arg-type]
        if flags != port.last_flags:
            port.last_flags = flags
            await self._send(pb.McuToEverest(error_flags=flags, connector=number))
        if port.coil != port.last_coil or port.coil_answer_due:
            port.last_coil = port.coil
            port.coil_answer_due = False
            state = pb.CoilState(coil_type=pb.COIL_AC, coil_state=port.coil)
            await self._send(pb.McuToEverest(set_coil_state_response=state, connector=number))
        if port.lock_state != port.last_lock:
            port.last_lock = port.lock_state
            await self._send(pb.McuToEverest(lock_state=port.lock_state, connector=number))  # type: ignore[arg-type]
        pp = self._pp_state(port)
        if pp != port.last_pp:
            port.last_pp = pp
            await self._send(pb.McuToEverest(pp_state=pp, connector=number))  # type: ignore[arg-type]

    async def _request_config(self) -> None:
        self.config_requests += 1
        await self._send(pb.McuToEverest(config_request=pb.BootConfigRequest(), connector=BOARD))

    def _keepalive(self) -> pb.KeepAlive:
        return pb.KeepAlive(
            time_stamp=time_stamp_ms(),
            hw_type=0,
            hw_revision=self.config.hw_rev if self.config is not None else 0,
            sw_version_string=SW_VERSION,
            configuration_done=self.configured,
        )

    async def _periodic(self) -> None:
        while True:
            await trio.sleep(self._report_interval)
            self._check_host_timeout(trio.current_time())
            self._poke()  # lock moves and the host timeout may have changed a port
            if self.silent or self._booting():
                continue
            await self._send(pb.McuToEverest(keep_alive=self._keepalive(), connector=BOARD))
            if not self.configured:
                await self._request_config()
                continue
            for number, port in self.ports.items():
                if self._ac(port):
                    cp = self._cp_state(port)
                    hi = _CP_VOLTS[cp]
                    # As the Yeti firmware does, the volts land in unsigned fields: -12 V reads 0.
                    telemetry = pb.Telemetry(cp_voltage_hi=hi, cp_voltage_lo=0 if port.pwm_running else hi)
                    await self._send(pb.McuToEverest(telemetry=telemetry, connector=number))

    def _check_host_timeout(self, now: float) -> None:
        if self._host_timeout is None or self.heartbeat_timeout or not self.configured:
            return
        if now - self._last_host_keepalive > self._host_timeout:
            # The host is gone: nobody supervises the session, so the MCU ends it (state F, coil open).
            self.heartbeat_timeout = True
            for port in self.ports.values():
                port.duty = 0
                port.coil_wanted = False

    def _on_host(self, member: str, msg: pb.EverestToMcu) -> None:
        now = trio.current_time()
        if member in PORT_MEMBERS:
            port = self.ports.get(msg.connector)
            if port is None or not self._ac(port):
                self.host_misaddressed += 1
                return
            self._log_host(member, msg, msg.connector)
            self._on_port_command(port, member, msg)
            self._poke()
            return
        self._log_host(member, msg, msg.connector)
        if member == "keep_alive":
            self._last_host_keepalive = now
            if self.heartbeat_timeout:
                self.heartbeat_timeout = False
        elif member == "config_response":
            self._configure(msg.config_response)
        elif member == "reset":
            self._reset(pb.USER)
            return
        self._poke()

    def _on_port_command(self, port: ChargePort, member: str, msg: pb.EverestToMcu) -> None:
        if member == "pwm_duty_cycle":
            port.duty = min(msg.pwm_duty_cycle, PWM_X1)
        elif member == "set_coil_state_request":
            request = msg.set_coil_state_request
            if request.coil_type == pb.COIL_AC:
                port.coil_wanted = request.coil_state
                port.coil_answer_due = True
        elif member == "connector_lock":
            moving = pb.LOCKING if msg.connector_lock else pb.UNLOCKING
            if port.lock_state == moving:
                return  # already moving that way: a repeated command does not restart the motor
            port.lock_wanted = msg.connector_lock
            port.lock_state = pb.LOCKING if msg.connector_lock else pb.UNLOCKING
            port.lock_done_at = trio.current_time() + self._lock_move

    def _configure(self, config: pb.BootConfigResponse) -> None:
        self.config = config
        for index, number in enumerate(CONNECTORS):
            port = self.ports[number]
            port.config = config.chargeport_config[index] if index < len(config.chargeport_config) else None
            port.forget_reports()
        self.configured = True


@asynccontextmanager
async def open_phyverso_emulator(
    ev: SimEv | None = None, ev2: SimEv | None = None, **kwargs: Any
) -> AsyncIterator[PhyVersoEmulator]:
    """Run a `PhyVersoEmulator` for the duration of the block (kwargs go to its constructor)."""
    async with serve_emulator(PhyVersoEmulator(ev, ev2, **kwargs)) as emulator:
        yield emulator


if __name__ == "__main__":
    from evstation.drivers.sim.emulator_cli import main

    main("phyverso", PhyVersoEmulator, [f.name for f in dataclasses.fields(PhyVersoFaults)])

"""OpenEVSE RAPI (5.x) charge-controller driver: the board runs J1772 itself; we set amps and enable.

Replies are matched to requests by sequence id; `$AT`/`$AB` notifications are demultiplexed by prefix
and may arrive between a command and its reply. Bad lines are counted and skipped, never fatal. Facts
from OpenEVSE/open_evse firmware/open_evse/rapi_proc.h and J1772EvseController.cpp (firmware 8.x, RAPI
5.x): `$GV`, `$S5` (Mennekes lock, needs MENNEKES_LOCK), `$SY` (heartbeat supervision, needs
HEARTBEAT_SUPERVISION).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Unpack

import trio

from evstation.drivers.api import (
    BoardReset,
    ContactorChanged,
    ControllerError,
    FaultCleared,
    FaultCode,
    FaultRaised,
    PilotChanged,
    PilotState,
)
from evstation.drivers.boards.rapi_codec import (
    LineSplitter,
    RapiChecksumError,
    RapiFormatError,
    RapiLine,
    encode_line,
    parse_line,
)
from evstation.drivers.boards.serial_port import SerialPort, SerialPortError
from evstation.drivers.boards.supervised import (
    SUPERVISION_FAULTS,
    PortSettings,
    SessionGuard,
    SupervisedBoard,
)
from evstation.drivers.pilot import MIN_AC_CURRENT_A, X1_DUTY_PCT, amps_to_duty
from evstation.drivers.safe_stop import SafeStopBoard

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 115200
# RAPI before 5.0.0 reports `GS` with other fields and announces state changes as `$ST`, not `$AT`.
MIN_RAPI_VERSION = (5, 0, 0)
# $SY: if no pulse reaches the board within this many seconds, it lowers its current to the fallback.
# The firmware clamps the fallback to its minimum (6 A): it cannot stop charging by itself.
HEARTBEAT_INTERVAL_S = 30
HEARTBEAT_ACK_COOKIE = 165  # 0xA5, "$SY 165" acknowledges a missed pulse and restores the ampacity
# A `$AB` this soon after opening the port means the open itself rebooted the board (DTR auto-reset).
DTR_RESET_WINDOW_S = 3.0
_SAFE_STOP_POLL_S = 0.2
_VERSION = re.compile(r"^[A-Za-z]*(\d+)\.(\d+)\.(\d+)")
STATE_SLEEPING = 0xFE
STATE_DISABLED = 0xFF
VFLAG_RELAY_CLOSED = 0x0040

_EV_READY = frozenset({PilotState.C, PilotState.D})
_PILOT_OF_STATE = {0x01: PilotState.A, 0x02: PilotState.B, 0x03: PilotState.C, 0x04: PilotState.D}
# EVSE fault states -> (fault, detail); drivers-facts.md 4.3.
STATE_FAULTS: dict[int, tuple[FaultCode, str]] = {
    0x05: (FaultCode.DIODE_FAULT, "diode check failed"),
    0x06: (FaultCode.GROUND_FAILURE, "GFCI tripped"),
    0x07: (FaultCode.GROUND_FAILURE, "no ground"),
    0x08: (FaultCode.EVSE_CONTACTOR_FAULT, "stuck relay"),
    0x09: (FaultCode.GROUND_FAILURE, "GFI self-test failed"),
    0x0A: (FaultCode.HIGH_TEMPERATURE, "over-temperature"),
    0x0B: (FaultCode.OVER_CURRENT, "over-current"),
    0x0E: (FaultCode.EVSE_CONTACTOR_FAULT, "relay closure fault"),
}
# Every fault a RAPI board can raise: its fault states, the Mennekes lock ($S5 refused) and the lost
# link (tests/drivers/test_drivers_fault_sets.py keeps this true to the code).
FAULTS_RAISED: Final[frozenset[FaultCode]] = (
    frozenset(fault for fault, _ in STATE_FAULTS.values())
    | {FaultCode.CONNECTOR_LOCK_FAILURE}
    | SUPERVISION_FAULTS
)


@dataclass
class RapiStats:
    """Counters for the health page and tests; bad input is counted, never fatal."""

    lines_ok: int = 0
    checksum_errors: int = 0
    format_errors: int = 0
    stale_replies: int = 0
    unknown_lines: int = 0
    timeouts: int = 0
    boots: int = 0
    reconnects: int = 0
    heartbeats: int = 0
    missed_heartbeats: int = 0  # pulses the board answered with $NK: it had lowered its current


class RapiVersionError(Exception):
    """The board speaks a RAPI older than 5.0.0 (or does not say which): it is not driven."""


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`5.1.2`, `D7.1.3`, `8.2.2.EU` -> the first three numbers; None when there are none."""
    match = _VERSION.match(text)
    if match is None:
        return None
    return (int(match[1]), int(match[2]), int(match[3]))


def rapi_version_of(reply: RapiLine) -> tuple[int, int, int]:
    """The RAPI version of a `$GV` reply (`$OK firmware rapi`); raises `RapiVersionError`."""
    if reply.name != "OK" or len(reply.args) < 2:
        raise RapiVersionError(
            f"$GV answered {' '.join((reply.name, *reply.args))!r}: no RAPI version (RAPI < 5.0.0?)"
        )
    version = parse_version(reply.args[1])
    if version is None:
        raise RapiVersionError(f"$GV: cannot read the RAPI version {reply.args[1]!r}")
    if version < MIN_RAPI_VERSION:
        raise RapiVersionError(
            f"RAPI {reply.args[1]} (firmware {reply.args[0]}) is older than 5.0.0 and not supported: "
            "update the OpenEVSE firmware"
        )
    return version


@dataclass
class _Pending:
    name: str
    seq: int
    done: trio.Event
    reply: RapiLine | None = None


class RapiBoard(SupervisedBoard):
    """`ChargeController` for an OpenEVSE board speaking RAPI on a serial port.

    Mapping (the board owns the pilot and the relay): offer_current(A) -> `SC A V` + `FE`;
    offer_current(None, or no valid pilot offer: < 6 A, > 80 A, NaN, inf) -> `FS`;
    allow_power(False) -> `FS` until the next offer or allow_power(True);
    set_unavailable(True) -> `FD`; set_lock -> `S5 1` / `S5 0` in manual mode when `has_lock`
    (firmware built with MENNEKES_LOCK), else it raises.
    At start: `GV` (RAPI >= 5.0.0 or the board is refused), `S5 M` when `has_lock`, and heartbeat
    supervision `SY heartbeat_interval 6` (0 disables), pulsed with every poll.
    """

    stats: RapiStats

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        command_timeout: float = 1.0,
        poll_interval: float = 5.0,
        has_lock: bool = False,
        heartbeat_interval: int = HEARTBEAT_INTERVAL_S,
        **port_settings: Unpack[PortSettings],
    ) -> None:
        super().__init__(port, baudrate=baudrate, **port_settings)
        if heartbeat_interval and heartbeat_interval <= poll_interval:
            raise ValueError("heartbeat_interval must be longer than poll_interval (the poll pulses it)")
        self._command_timeout = command_timeout
        self._poll_interval = poll_interval
        self.has_lock = has_lock
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_active = False
        self._locked: bool | None = None
        self._lock_mode_set = False
        self._opened_at = -math.inf
        self._reported_errors: set[str] = set()
        self.stats = RapiStats()
        self._command_lock = trio.Lock()
        self._pending: _Pending | None = None
        self._seq = 0
        # What the host wants; re-applied after a (re)connect or a board reboot.
        self._offer: float | None = None
        self._power_forbidden = False
        self._unavailable = False
        # What the board last reported.
        self._evse_state: int | None = None
        self._pilot: PilotState | None = None
        self._contactor: bool | None = None
        self._fault: FaultCode | None = None
        self._reapply = trio.Event()
        self._mode_dirty = True  # the board's enable/current may differ from ours until applied
        self.firmware_version: str | None = None
        self.rapi_version: tuple[int, int, int] | None = None
        self.current_capacity_a: int | None = None

    # ------------------------------------------------------------------ ChargeController

    async def offer_current(self, amps: float | None) -> None:
        self._offer = amps
        self._power_forbidden = False
        await self._apply_mode()

    async def allow_power(self, allowed: bool) -> None:
        self._power_forbidden = not allowed
        await self._apply_mode()

    async def set_unavailable(self, unavailable: bool) -> None:
        self._unavailable = unavailable
        await self._apply_mode()

    async def set_lock(self, locked: bool) -> None:
        if not self.has_lock:
            raise ControllerError(
                FaultCode.CONNECTOR_LOCK_FAILURE,
                "no connector lock configured (tethered cable; `lock = true` needs a MENNEKES_LOCK firmware)",
            )
        self._locked = locked
        if not self._lock_mode_set:
            await self._set_lock_mode()
        await self._lock_command("1" if locked else "0")

    async def _set_lock_mode(self) -> None:
        # Manual mode is volatile: the board boots in automatic mode (locked whenever an EV is connected).
        await self._lock_command("M")
        self._lock_mode_set = True

    async def _lock_command(self, arg: str) -> None:
        reply = await self.command("S5", arg)
        if reply.name != "OK":
            raise ControllerError(
                FaultCode.CONNECTOR_LOCK_FAILURE,
                f"$S5 {arg} refused: the firmware has no Mennekes lock support, or the lock failed",
            )

    async def command(self, name: str, *args: str | int) -> RapiLine:
        """Send one command and wait for its `$OK`/`$NK`; raises `ControllerError` on timeout."""
        async with self._command_lock:
            port = self._port
            if port is None:
                raise ControllerError(FaultCode.BOARD_COMMUNICATION, f"{self._path}: port not open")
            self._seq = self._seq % 0xFF + 1
            pending = _Pending(name, self._seq, trio.Event())
            self._pending = pending
            try:
                await port.write(encode_line(name, args, seq=pending.seq))
                with trio.move_on_after(self._command_timeout):
                    await pending.done.wait()
            except SerialPortError as exc:
                raise ControllerError(FaultCode.BOARD_COMMUNICATION, str(exc)) from exc
            finally:
                self._pending = None
        if pending.reply is None:
            self.stats.timeouts += 1
            detail = f"${name}: no reply within {self._command_timeout:g} s"
            await self._raise_comm_fault(detail)
            raise ControllerError(FaultCode.BOARD_COMMUNICATION, detail)
        await self._clear_comm_fault()
        return pending.reply

    # ------------------------------------------------------------------ internals

    async def _ok(self, name: str, *args: str | int) -> RapiLine:
        reply = await self.command(name, *args)
        if reply.name != "OK":
            raise ControllerError(FaultCode.BOARD_COMMUNICATION, f"${name} refused: {' '.join(reply.args)}")
        return reply

    async def _apply_mode(self) -> None:
        self._mode_dirty = True
        if self._unavailable:
            await self._ok("FD")
            self._mode_dirty = False
            return
        amps = self._offer
        # The pilot rule decides what counts as an offer (None, NaN, inf, < 6 A, > 80 A: none), as for
        # PWM boards; an inf reaching math.floor below would kill the poll task with OverflowError.
        if amps is None or amps_to_duty(amps) >= X1_DUTY_PCT or self._power_forbidden:
            await self._ok("FS")
            self._mode_dirty = False
            return
        # "V" = volatile: smart charging changes the limit often, and the permanent one wears EEPROM.
        reply = await self.command("SC", math.floor(amps), "V")
        if reply.name == "NK" and not reply.args:
            raise ControllerError(FaultCode.BOARD_COMMUNICATION, f"$SC {math.floor(amps)} refused")
        # `$NK amps` means "clamped to amps": still a valid offer, just lower.
        if reply.args and reply.args[0].isdigit():
            self.current_capacity_a = int(reply.args[0])
        await self._ok("FE")
        self._mode_dirty = False

    async def _session(self, port: SerialPort, ready: Callable[[], None]) -> None:
        """Check the firmware, read state, poll `GS`; returns only by raising one `SerialPortError`."""
        self._evse_state = None
        self._pilot = self._contactor = None
        self.rapi_version = None
        self._lock_mode_set = False
        self._heartbeat_active = False
        self._opened_at = trio.current_time()

        async def setup(guard: SessionGuard) -> None:
            try:
                await self._start_session()
            except ControllerError:
                pass  # a silent board at start-up: the fault event says so; polling sets it up later
            except RapiVersionError as exc:
                # Not a word more to this board (not even the safe stop): end the session; the port
                # is reopened and the version read again later, in case the firmware was updated. The
                # port supervisor's FailureLog says why, once and then at a bounded rate.
                guard.failures.append(f"{self._path}: {exc}")
                guard.nursery.cancel_scope.cancel()
                return
            guard.start_soon(self._poll)
            guard.start_soon(self._reapply_after_boot)
            ready()

        await self._run_port_session(port, fatal=(SerialPortError,), setup=setup)

    def _log_once(self, message: str) -> None:
        # A refused board is retried at every reopen: say why once, not every two seconds.
        if message not in self._reported_errors:
            self._reported_errors.add(message)
            log.error("%s: %s", self._path, message)

    async def _start_session(self) -> None:
        version = await self.command("GV")
        if version.name == "OK" and version.args:
            self.firmware_version = version.args[0]
        self.rapi_version = rapi_version_of(version)
        await self._refresh_state()
        await self._configure()
        await self._apply_mode()

    async def _configure(self) -> None:
        """What the board forgets at a reboot or never had: heartbeat supervision and the lock mode."""
        if self._heartbeat_interval:
            reply = await self.command("SY", self._heartbeat_interval, int(MIN_AC_CURRENT_A))
            self._heartbeat_active = reply.name == "OK"
            if not self._heartbeat_active:
                self._log_once(
                    "the firmware refuses $SY (no HEARTBEAT_SUPERVISION): a board whose host dies keeps "
                    "offering its current"
                )
        if self.has_lock:
            try:
                await self._set_lock_mode()
                if self._locked is not None:
                    await self._lock_command("1" if self._locked else "0")
            except ControllerError as exc:
                self._log_once(str(exc))
                await self._emit(FaultRaised(FaultCode.CONNECTOR_LOCK_FAILURE, exc.detail))

    async def _pulse_heartbeat(self) -> None:
        if not self._heartbeat_active:
            return
        reply = await self.command("SY")
        self.stats.heartbeats += 1
        if reply.name == "NK":
            # A pulse was missed (the host stalled): the board lowered its current to the fallback
            # and keeps it there until acknowledged; then our own current is set again.
            self.stats.missed_heartbeats += 1
            log.warning("%s: the board missed a heartbeat and lowered its current; restoring", self._path)
            await self.command("SY", HEARTBEAT_ACK_COOKIE)
            self._mode_dirty = True

    async def _refresh_state(self) -> None:
        reply = await self._ok("GS")
        # GS: evsestate(hex) elapsed(dec) pilotstate(hex) vflags(hex)
        try:
            evse = int(reply.args[0], 16)
            pilot = int(reply.args[2], 16) if len(reply.args) > 2 else None
            vflags = int(reply.args[3], 16) if len(reply.args) > 3 else None
        except (IndexError, ValueError):
            self.stats.format_errors += 1
            return
        await self._on_state(evse, pilot, vflags)

    async def _poll(self) -> None:
        # Polling GS is our heartbeat check of the board (a silent board shows as a timeout, an $AT
        # lost to a checksum error is corrected within one interval); the $SY pulse is the board's
        # check of us.
        while True:
            await trio.sleep(self._poll_interval)
            try:
                if self.rapi_version is None:
                    await self._start_session()  # the board was silent when the session started
                    continue
                await self._pulse_heartbeat()
                await self._refresh_state()
                if self._mode_dirty:
                    await self._apply_mode()
            except ControllerError:
                continue
            except RapiVersionError as exc:
                self._log_once(str(exc))
                raise SerialPortError(f"{self._path}: {exc}") from exc

    async def _reapply_after_boot(self) -> None:
        while True:
            await self._reapply.wait()
            self._reapply = trio.Event()
            try:
                await self._configure()
                await self._apply_mode()
            except ControllerError:
                continue  # the fault event is out; the next command or poll retries

    async def _receive(self, chunks: trio.MemoryReceiveChannel[bytes]) -> None:
        splitter = LineSplitter()
        async for chunk in chunks:
            for raw in splitter.feed(chunk):
                try:
                    line = parse_line(raw)
                except RapiChecksumError:
                    self.stats.checksum_errors += 1
                    continue
                except RapiFormatError:
                    self.stats.format_errors += 1
                    continue
                self.stats.lines_ok += 1
                await self._dispatch(line)

    async def _dispatch(self, line: RapiLine) -> None:
        if line.is_reply:
            pending = self._pending
            # Old firmware does not echo sequence ids; then the single outstanding command owns it.
            if pending is not None and not pending.done.is_set() and line.seq in (None, pending.seq):
                pending.reply = line
                pending.done.set()
            else:
                self.stats.stale_replies += 1
        elif line.name == "AT":
            # $AT evsestate(hex) pilotstate(hex) currentcapacity(dec) vflags(hex)
            try:
                evse = int(line.args[0], 16)
                pilot = int(line.args[1], 16)
                capacity = int(line.args[2])
                vflags = int(line.args[3], 16)
            except (IndexError, ValueError):
                self.stats.format_errors += 1
                return
            self.current_capacity_a = capacity
            await self._on_state(evse, pilot, vflags)
        elif line.name == "AB":
            await self._on_boot(line)
        else:
            self.stats.unknown_lines += 1  # $AN button, $WF Wi-Fi: nothing for a charge controller

    async def _on_boot(self, line: RapiLine) -> None:
        self.stats.boots += 1
        if len(line.args) > 1:
            self.firmware_version = line.args[1]
        postcode = line.args[0] if line.args else "?"
        if trio.current_time() - self._opened_at < DTR_RESET_WINDOW_S:
            log.warning(
                "%s: the board rebooted just after the port was opened: a USB-serial adapter resetting "
                "the MCU through DTR? (docs/hardware.md, 'DTR reset')",
                self._path,
            )
        self._lock_mode_set = False  # the lock is back in automatic mode after a boot
        # The board forgot our sleep/current: like a Yeti reset, power waits for a new permission.
        self._power_forbidden = True
        await self._emit(BoardReset(f"boot postcode {postcode}"))
        # Re-applying waits for replies, which this (receiving) task delivers: another task does it.
        self._reapply.set()

    async def _on_state(self, evse: int, pilot_code: int | None, vflags: int | None) -> None:
        self._evse_state = evse
        if evse == STATE_DISABLED:
            pilot: PilotState | None = PilotState.F
        else:
            pilot = _PILOT_OF_STATE.get(pilot_code or 0) or _PILOT_OF_STATE.get(evse)
        if pilot is not None and pilot != self._pilot:
            self._pilot = pilot
            await self._emit(PilotChanged(pilot))
        if vflags is not None:
            closed = bool(vflags & VFLAG_RELAY_CLOSED)
            if closed != self._contactor:
                self._contactor = closed
                await self._emit(ContactorChanged(closed))
        fault = STATE_FAULTS.get(evse)
        new_code = fault[0] if fault else None
        if new_code != self._fault:
            if self._fault is not None:
                await self._emit(FaultCleared(self._fault))
            self._fault = new_code
            if fault is not None:
                await self._emit(FaultRaised(fault[0], f"EVSE state {evse:02X}: {fault[1]}"))

    # ------------------------------------------------------------------ safe stop

    def _safe_stop_board(self) -> SafeStopBoard:
        return _RapiSafeStop(self)

    def _relay_open(self) -> bool:
        return self._contactor is not True

    async def _poll_until(self, condition: Callable[[], bool]) -> None:
        while True:
            await self._refresh_state()
            if condition():
                return
            await trio.sleep(_SAFE_STOP_POLL_S)


class _RapiSafeStop:
    """The RAPI side of drivers/safe_stop.py: sleep, wait for the relay, disable only on a fault."""

    def __init__(self, board: RapiBoard) -> None:
        self.board = board
        self.name = f"OpenEVSE {board._path}"

    async def withdraw_offer(self) -> None:
        # Sleep: steady +12 V; the board itself opens the relay once the EV stops (it owns J1772).
        self.board._offer = None
        await self.board._ok("FS")

    async def wait_ev_stopped(self) -> None:
        board = self.board
        await board._poll_until(lambda: board._pilot not in _EV_READY or board._relay_open())

    async def open_contactor(self) -> None:
        # RAPI has no relay command: a sleeping board opens it; say sleep again in case it was lost.
        await self.board._ok("FS")

    async def wait_contactor_open(self) -> None:
        await self.board._poll_until(self.board._relay_open)

    async def signal_fault(self) -> None:
        self.board._unavailable = True
        await self.board._ok("FD")

    async def release_lock(self) -> None:
        board = self.board
        if board.has_lock and board._locked:
            board._locked = False
            await board._lock_command("0")

"""OpenEVSE RAPI (5.x) charge-controller driver: the board runs J1772 itself; we set amps and enable.

Replies are matched to requests by sequence id; `$AT`/`$AB` notifications are demultiplexed by prefix
and may arrive between a command and its reply. Bad lines are counted and skipped, never fatal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

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
from evstation.drivers.boards.supervised import SupervisedBoard
from evstation.drivers.pilot import X1_DUTY_PCT, amps_to_duty

DEFAULT_BAUDRATE = 115200
STATE_SLEEPING = 0xFE
STATE_DISABLED = 0xFF
VFLAG_RELAY_CLOSED = 0x0040

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
    set_unavailable(True) -> `FD`. set_lock raises: RAPI has no connector-lock command.
    """

    stats: RapiStats

    def __init__(
        self,
        port: str,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        command_timeout: float = 1.0,
        poll_interval: float = 5.0,
        reopen_interval: float = 2.0,
        read_timeout: float = 0.1,
    ) -> None:
        super().__init__(port, baudrate=baudrate, reopen_interval=reopen_interval, read_timeout=read_timeout)
        self._command_timeout = command_timeout
        self._poll_interval = poll_interval
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
        raise ControllerError(
            FaultCode.CONNECTOR_LOCK_FAILURE, "OpenEVSE RAPI has no connector-lock command (tethered cable)"
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
        """Read state, poll `GS`; returns only by raising one `SerialPortError` when the port fails."""
        self._evse_state = None
        self._pilot = self._contactor = None
        async with self._port_session(port, fatal=(SerialPortError,)) as guard:
            with suppress(ControllerError):
                # A silent board at start-up: the fault event says so; polling re-applies the mode.
                await self._start_session()
            guard.nursery.start_soon(self._poll)
            guard.nursery.start_soon(self._reapply_after_boot)
            ready()

    async def _start_session(self) -> None:
        version = await self.command("GV")
        if version.name == "OK" and version.args:
            self.firmware_version = version.args[0]
        await self._refresh_state()
        await self._apply_mode()

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
        # Polling GS is the heartbeat: a silent board shows as a timeout, and an $AT lost to a
        # checksum error is corrected within one interval.
        while True:
            await trio.sleep(self._poll_interval)
            try:
                await self._refresh_state()
                if self._mode_dirty:
                    await self._apply_mode()
            except ControllerError:
                continue

    async def _reapply_after_boot(self) -> None:
        while True:
            await self._reapply.wait()
            self._reapply = trio.Event()
            try:
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

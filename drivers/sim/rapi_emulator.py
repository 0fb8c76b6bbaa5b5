"""An OpenEVSE board speaking RAPI on a pseudo-terminal, with its own J1772 state machine and a `SimEv`.

For tests, the HIL rig and a simulated station. It emulates the board's observable behaviour only; it
must never be imported by production drivers.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from evstation.drivers.api import PilotState
from evstation.drivers.boards.rapi_codec import (
    LineSplitter,
    RapiFormatError,
    RapiLine,
    encode_line,
    parse_line,
    xor_checksum,
)
from evstation.drivers.pilot import amps_to_duty
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.pty_emulator import PtyEmulator, serve_emulator

_PILOT_CODE = {PilotState.A: 0x01, PilotState.B: 0x02, PilotState.C: 0x03, PilotState.D: 0x04}
_MIN_AMPS = 6  # MIN_CURRENT_CAPACITY_J1772
# J1772EVSEController::Update while sleeping: the relay stays closed until the pilot reads above the B/C
# threshold (the EV opened S2, or was unplugged), or this long after Sleep(), whichever comes first.
SLEEP_RELAY_HOLD_S = 3.0
HS_ACK_COOKIE = 165
HS_MISSED_NOT_ACKED = 2
HS_MISSED_ACKED = 1
VFLAG_GFI_TRIPPED = 0x0080
VFLAG_RELAY_CLOSED = 0x0040
VFLAG_EV_CONNECTED = 0x0100


class Mode(enum.Enum):
    ENABLED = "enabled"
    SLEEPING = "sleeping"
    DISABLED = "disabled"


@dataclasses.dataclass
class RapiFaults:
    """Injected faults, highest priority first; each forces its EVSE fault state and opens the relay."""

    diode_check_failed: bool = False  # 05
    gfci_tripped: bool = False  # 06
    no_ground: bool = False  # 07
    stuck_relay: bool = False  # 08
    gfi_selftest_failed: bool = False  # 09
    over_temperature: bool = False  # 0A
    over_current: bool = False  # 0B

    def state(self) -> int | None:
        codes = (
            (self.diode_check_failed, 0x05),
            (self.gfci_tripped, 0x06),
            (self.no_ground, 0x07),
            (self.stuck_relay, 0x08),
            (self.gfi_selftest_failed, 0x09),
            (self.over_temperature, 0x0A),
            (self.over_current, 0x0B),
        )
        return next((code for active, code in codes if active), None)


@dataclasses.dataclass(frozen=True)
class _Status:
    evse_state: int
    pilot_code: int
    capacity: int
    vflags: int


class RapiEmulator(PtyEmulator):
    """The board: answers RAPI commands, runs J1772 against the EV, announces changes with `$AT`."""

    def __init__(
        self,
        ev: SimEv | None = None,
        *,
        max_current_a: int = 32,
        firmware_version: str = "8.2.2",
        rapi_version: str = "5.2.0",
        at_before_reply: bool = True,
        lock_supported: bool = False,
        heartbeat_supported: bool = True,
        ev_stop_delay_s: float = 0.0,
    ) -> None:
        super().__init__(ev)
        # How long the EV keeps S2 closed (state C, drawing) after the PWM is withdrawn; 0: at once.
        self.ev_stop_delay_s = ev_stop_delay_s
        self._slept_under_load_at: float | None = None
        self.faults = RapiFaults()
        self.max_current_a = max_current_a
        self.firmware_version = firmware_version
        self.rapi_version = rapi_version
        # MENNEKES_LOCK: $S5/$G5; the lock boots in automatic mode (locked while an EV is connected).
        self.lock_supported = lock_supported
        self.lock_manual = False
        self.lock_engaged_manual = False
        # HEARTBEAT_SUPERVISION ($SY): kept in EEPROM by the firmware, so it survives a reboot.
        self.heartbeat_supported = heartbeat_supported
        self.hs_interval = 0
        self.hs_fallback = 0
        self.hs_triggered = 0
        self._hs_last_pulse = 0.0
        # Real firmware may interleave $AT with a reply; sending it first exercises the demultiplexer.
        self._at_before_reply = at_before_reply
        self.mode = Mode.ENABLED
        self.capacity_a = max_current_a
        self._last_status: _Status | None = None
        self._pending_boot = False
        self.commands: list[RapiLine] = []
        self.bad_lines = 0

    # ---------------------------------------------------------------- control surface

    def go_silent(self, silent: bool = True) -> None:
        """Stop (or resume) answering and announcing."""
        self.silent = silent
        self._poke()

    def corrupt_next_lines(self, count: int = 1) -> None:
        """The next `count` lines go out with a wrong checksum (`wait_corruption_sent` waits for them)."""
        self._arm_corruption(count)

    def spurious_reboot(self) -> None:
        """The board reboots on its own: `$AB 00 <fw>`, volatile settings lost, back to enabled."""
        self.mode = Mode.ENABLED
        self._slept_under_load_at = None
        self.capacity_a = self.max_current_a
        self.lock_manual = False
        self.lock_engaged_manual = False
        self.hs_triggered = 0
        self._hs_last_pulse = trio.current_time()
        self._pending_boot = True
        self._poke()

    @property
    def lock_engaged(self) -> bool:
        """The Mennekes lock's position: manual mode follows `$S5 0|1`, automatic locks while connected."""
        if not self.lock_supported:
            return False
        return self.lock_engaged_manual if self.lock_manual else self.ev.plugged

    def command_names(self) -> list[str]:
        """Every command received, with its arguments, in order (`"SC 16 V"`)."""
        return [" ".join((c.name, *c.args)) for c in self.commands]

    def status(self) -> _Status:
        fault = self.faults.state()
        plugged_flag = VFLAG_EV_CONNECTED if self.ev.plugged else 0
        gfi_flag = VFLAG_GFI_TRIPPED if self.faults.gfci_tripped else 0
        if self.mode is Mode.DISABLED:
            # Disabled drives the pilot to -12 V: the EV sees F, the board reads no J1772 state.
            return _Status(0xFF, 0x00, self.capacity_a, plugged_flag | gfi_flag)
        seen = self.ev.pilot_state(None, False)  # steady +12 V: the EV never closes S2
        if self.mode is Mode.ENABLED and fault is None:
            seen = self.ev.pilot_state(amps_to_duty(self.capacity_a), False)
        ev_still_drawing, relay_held = self._after_sleep()
        if ev_still_drawing and fault is None:
            seen = PilotState.C
        pilot_code = _PILOT_CODE.get(seen, 0x00)
        if fault is not None:
            return _Status(fault, pilot_code, self.capacity_a, plugged_flag | gfi_flag)
        if self.mode is Mode.SLEEPING:
            relay = VFLAG_RELAY_CLOSED if relay_held else 0
            return _Status(0xFE, pilot_code, self.capacity_a, plugged_flag | relay)
        relay = VFLAG_RELAY_CLOSED if seen in (PilotState.C, PilotState.D) else 0
        return _Status(pilot_code, pilot_code, self.capacity_a, plugged_flag | relay)

    @property
    def relay_closed(self) -> bool:
        return bool(self.status().vflags & VFLAG_RELAY_CLOSED)

    def _after_sleep(self) -> tuple[bool, bool]:
        """(the EV still keeps S2 closed, the relay is still held closed) after a sleep under load."""
        if self.mode is not Mode.SLEEPING or self._slept_under_load_at is None or not self.ev.plugged:
            return False, False
        elapsed = trio.current_time() - self._slept_under_load_at
        drawing = elapsed < self.ev_stop_delay_s
        return drawing, drawing and elapsed < SLEEP_RELAY_HOLD_S

    # ---------------------------------------------------------------- service

    def _services(self) -> Sequence[Callable[[], Awaitable[None]]]:
        return [self._announce_changes, self._heartbeat_supervision, self._sleep_release]

    async def _sleep_release(self) -> None:
        # The board's main loop: announce the EV leaving C and the relay opening, which time alone brings.
        while True:
            await trio.sleep(0.05)
            if self._slept_under_load_at is not None and self._after_sleep() == (False, False):
                self._slept_under_load_at = None
                self._poke()

    async def _heartbeat_supervision(self) -> None:
        # J1772EVSEController::HsExpirationCheck, run from the board's main loop.
        while True:
            await trio.sleep(0.05)
            now = trio.current_time()
            if self.hs_interval and now - self._hs_last_pulse > self.hs_interval:
                fallback = max(self.hs_fallback, _MIN_AMPS)  # SetCurrentCapacity clamps to the minimum
                if fallback < self.capacity_a:
                    self.capacity_a = fallback
                self.hs_triggered = HS_MISSED_NOT_ACKED
                self._hs_last_pulse = now
                self._poke()

    async def _announce_changes(self) -> None:
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            if self.silent:
                continue
            if self._pending_boot:
                self._pending_boot = False
                await self._send("AB", ["00", self.firmware_version])
            await self._announce_if_changed()

    async def _announce_if_changed(self) -> None:
        status = self.status()
        if status != self._last_status:
            self._last_status = status
            await self._send(
                "AT",
                [
                    f"{status.evse_state:02X}",
                    f"{status.pilot_code:02X}",
                    str(status.capacity),
                    f"{status.vflags:04X}",
                ],
            )

    async def _read_host(self, stream: trio.lowlevel.FdStream) -> None:
        splitter = LineSplitter()
        while True:
            data = await stream.receive_some(4096)
            if not data:
                raise AssertionError("pty master closed while the slave is held open")
            for raw in splitter.feed(data):
                if self.silent:
                    continue
                try:
                    line = parse_line(raw)
                except RapiFormatError:
                    self.bad_lines += 1
                    await self._send("NK", [])
                    continue
                self.commands.append(line)
                await self._execute(line)

    async def _execute(self, cmd: RapiLine) -> None:
        ok, values = self._apply(cmd)
        if self._at_before_reply:
            await self._announce_if_changed()
        await self._send("OK" if ok else "NK", values, seq=cmd.seq)
        if not self._at_before_reply:
            await self._announce_if_changed()
        self._notify()

    def _apply(self, cmd: RapiLine) -> tuple[bool, list[str]]:
        match cmd.name:
            case "GS":
                s = self.status()
                return True, [f"{s.evse_state:02X}", "0", f"{s.pilot_code:02X}", f"{s.vflags:04X}"]
            case "GV":
                return True, [self.firmware_version, self.rapi_version]
            case "S5" if self.lock_supported and cmd.args and cmd.args[0] in ("A", "M", "0", "1"):
                arg = cmd.args[0]
                if arg in ("A", "M"):
                    self.lock_manual = arg == "M"
                    return True, []
                if not self.lock_manual:
                    return False, []  # 0/1 are valid in manual mode only
                self.lock_engaged_manual = arg == "1"
                return True, []
            case "G5" if self.lock_supported:
                return True, ["1" if self.lock_engaged else "0", "M" if self.lock_manual else "A"]
            case "SY" if self.heartbeat_supported:
                return self._heartbeat(cmd.args)
            case "GY" if self.heartbeat_supported:
                return True, [str(self.hs_interval), str(self.hs_fallback), str(self.hs_triggered)]
            case "G0":
                return True, ["1" if self.ev.plugged else "0"]
            case "GC":
                return True, [
                    str(_MIN_AMPS),
                    str(self.max_current_a),
                    str(self.capacity_a),
                    str(self.max_current_a),
                ]
            case "SC" if cmd.args and cmd.args[0].isdigit():
                wanted = int(cmd.args[0])
                self.capacity_a = max(_MIN_AMPS, min(wanted, self.max_current_a))
                return self.capacity_a == wanted, [str(self.capacity_a)]
            case "FE":
                self.mode = Mode.ENABLED
                self._slept_under_load_at = None
                return True, []
            case "FS":
                if self.mode is not Mode.SLEEPING:
                    # Sleep() leaves a closed relay to Update(), which waits for the EV (or 3 s); a
                    # second FS while asleep changes nothing.
                    self._slept_under_load_at = trio.current_time() if self.relay_closed else None
                self.mode = Mode.SLEEPING
                return True, []
            case "FD":
                self.mode = Mode.DISABLED  # a panic stop: the relay opens at once
                self._slept_under_load_at = None
                return True, []
            case "FR":
                self.spurious_reboot()
                return True, []
            case _:
                return False, []

    def _heartbeat(self, args: tuple[str, ...]) -> tuple[bool, list[str]]:
        now = trio.current_time()
        if not args:  # a pulse; $NK while a missed pulse waits for its acknowledgement
            self._hs_last_pulse = now
            return self.hs_triggered != HS_MISSED_NOT_ACKED, []
        if len(args) == 1:
            if args[0] != str(HS_ACK_COOKIE):
                return False, []
            if self.hs_triggered == HS_MISSED_NOT_ACKED:
                self.capacity_a = self.max_current_a  # HsRestoreAmpacity: back to the maximum
                self.hs_triggered = HS_MISSED_ACKED
            return True, []
        if not (args[0].isdigit() and args[1].isdigit()):
            return False, []
        self.hs_interval, self.hs_fallback = int(args[0]), int(args[1])
        self.hs_triggered = 0
        self._hs_last_pulse = now
        return True, [str(self.hs_interval), str(self.hs_fallback), str(self.hs_triggered)]

    async def _send(self, name: str, args: list[str], seq: int | None = None) -> None:
        if self._stream is None:
            return
        wire = encode_line(name, args, seq=seq)
        if self._corrupt_this_one():
            body = wire[: wire.rindex(b"^")]
            wire = body + f"^{xor_checksum(body) ^ 0x01:02X}\r".encode("ascii")
        await self._write(wire)


@asynccontextmanager
async def open_rapi_emulator(ev: SimEv | None = None, **kwargs: Any) -> AsyncIterator[RapiEmulator]:
    """Run a `RapiEmulator` for the duration of the block (kwargs go to its constructor)."""
    async with serve_emulator(RapiEmulator(ev, **kwargs)) as emulator:
        yield emulator


if __name__ == "__main__":
    from evstation.drivers.sim.emulator_cli import main

    main("rapi", RapiEmulator, [f.name for f in dataclasses.fields(RapiFaults)])

"""An in-process simulated charge-controller board (no wire) around a `SimEv`, for tests and demos.

Implements `evstation.drivers.api.ChargeController`. It never knows OCPP and never reads a clock: every
change happens synchronously inside a command or a sim control, and is reported on `events()`.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Final, NoReturn, Protocol, final

import trio

from evstation.drivers.api import (
    NON_BLOCKING_FAULTS,
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
from evstation.drivers.pilot import X1_DUTY_PCT, amps_to_duty, duty_to_amps
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.state import EV_PLUGGED_KEY, SimStateFile

_POWERED_STATES = frozenset({PilotState.C, PilotState.D})
# The control API injects any fault into a simulated board (`inject_fault`), so a simulated EVSE has
# every component a fault can name.
FAULTS_RAISED: Final[frozenset[FaultCode]] = frozenset(FaultCode)


class FlowSink(Protocol):
    """Where the simulated current goes: a `SimMeter.set_flow` integrates it into energy."""

    def set_flow(self, current_a: float, phases: int) -> None: ...


@final
class SimChargeController:
    """A board that runs IEC 61851 against a `SimEv` in memory.

    Rules: the contactor closes only while power is allowed, no fault is active and the EV is in C or
    D; it opens at once on `allow_power(False)`, on the EV leaving C/D, on unplug and on any fault.

    The event queue is unbounded on purpose: the consumer (the EVSE) reacts to events by sending
    commands that themselves produce events, a circular flow that a bounded queue could deadlock.
    Each command adds at most a handful of events, so the queue stays as short as the consumer is slow.
    """

    def __init__(
        self,
        ev: SimEv | None = None,
        *,
        flow: FlowSink | None = None,
        has_lock: bool = True,
        state: SimStateFile | None = None,
    ) -> None:
        self.ev = ev if ev is not None else SimEv()
        # With a state file the EV's presence survives a station restart (a power cut does not unplug it).
        self._state = state
        if state is not None:
            self.ev.plugged = bool(state.get_bool(EV_PLUGGED_KEY))
        self._flow = flow
        self.has_lock = has_lock
        self.fail_next_move = False  # the next lock move fails with ConnectorLockFailure
        self._send, self._receive = trio.open_memory_channel[ControllerEvent](math.inf)
        self._offered_a: float | None = None
        self._power_allowed = False
        self._unavailable = False
        self._faults: set[FaultCode] = set()
        self._pilot = self.ev.pilot_state(None, False)
        self._contactor = False
        self._lock = LockState.UNLOCKED if has_lock else LockState.UNKNOWN
        self._draw_a = 0.0

    # --- ChargeController -------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        if self.ev.plugged and self.ev.cable_max_current_a is not None:
            self._emit(CableRating(self.ev.cable_max_current_a))
        self._emit(PilotChanged(self._pilot))  # the consumer learns the state it starts from
        task_status.started()
        try:
            await trio.sleep_forever()
        finally:
            self._safe_stop()

    def _safe_stop(self) -> None:
        """The safe state on cancellation, as the serial boards reach it (drivers/safe_stop.py): the
        simulated EV answers at once, so each step is immediate."""
        self._offered_a = None
        self._update()  # X1: the EV opens S2
        self._power_allowed = False
        self._update()  # contactor open
        if self.has_lock and not self._contactor and self._lock is LockState.LOCKED:
            self._lock = LockState.UNLOCKED
            self._emit(LockChanged(LockState.UNLOCKED))

    def events(self) -> AsyncIterator[ControllerEvent]:
        return self._receive

    async def offer_current(self, amps: float | None) -> None:
        await trio.lowlevel.checkpoint()
        self._offered_a = amps
        self._update()

    async def allow_power(self, allowed: bool) -> None:
        await trio.lowlevel.checkpoint()
        self._power_allowed = allowed
        self._update()

    async def set_lock(self, locked: bool) -> None:
        await trio.lowlevel.checkpoint()
        if not self.has_lock:
            return
        if self.fail_next_move:
            self.fail_next_move = False
            self.inject_fault(FaultCode.CONNECTOR_LOCK_FAILURE, "lock motor did not reach its end position")
            raise ControllerError(FaultCode.CONNECTOR_LOCK_FAILURE, "lock motor did not move")
        new = LockState.LOCKED if locked else LockState.UNLOCKED
        if new is not self._lock:
            self._lock = new
            self._emit(LockChanged(new))

    async def set_unavailable(self, unavailable: bool) -> None:
        await trio.lowlevel.checkpoint()
        self._unavailable = unavailable
        self._update()

    # --- simulation controls (sync: they stand for the physical world) ----------------------------

    def plug_in(self, cable_max_current_a: int | None = None) -> None:
        """Plug the EV in; `cable_max_current_a` is the rating its cable's PP resistor codes (13, 20,
        32 or 63 A; None: the board reads no rating)."""
        self.ev.plugged = True
        self._remember_plug()
        if cable_max_current_a != self.ev.cable_max_current_a:
            self.ev.cable_max_current_a = cable_max_current_a
            # PP is read as the plug goes in, before the EV can answer on the control pilot.
            self._emit(CableRating(cable_max_current_a))
        self._update()

    def unplug(self) -> None:
        self.ev.plugged = False
        self._remember_plug()
        self._update()
        if self.ev.cable_max_current_a is not None:
            self.ev.cable_max_current_a = None
            self._emit(CableRating(None))

    def _remember_plug(self) -> None:
        if self._state is not None:
            self._state.set(EV_PLUGGED_KEY, self.ev.plugged)

    def set_ev(self, wants_energy: bool | None = None, max_current_a: float | None = None) -> None:
        if wants_energy is not None:
            self.ev.wants_energy = wants_energy
        if max_current_a is not None:
            self.ev.max_current_a = max_current_a
        self._update()

    def inject_fault(self, code: FaultCode, detail: str = "injected") -> None:
        if code not in self._faults:
            self._faults.add(code)
            self._emit(FaultRaised(code, detail))
        self._update()

    def clear_fault(self, code: FaultCode) -> None:
        if code in self._faults:
            self._faults.discard(code)
            self._emit(FaultCleared(code))
        self._update()

    # --- observations -----------------------------------------------------------------------------

    @property
    def pilot_state(self) -> PilotState:
        return self._pilot

    @property
    def contactor_closed(self) -> bool:
        return self._contactor

    @property
    def lock_state(self) -> LockState:
        return self._lock

    @property
    def offered_current_a(self) -> float | None:
        return self._offered_a

    @property
    def duty_pct(self) -> float | None:
        """The PWM duty cycle driven now; None = no PWM (X1 or F)."""
        duty = amps_to_duty(self._offered_a)
        return None if duty == X1_DUTY_PCT or self._unavailable else duty

    @property
    def active_faults(self) -> frozenset[FaultCode]:
        return frozenset(self._faults)

    @property
    def current_draw_a(self) -> float:
        return self._draw_a

    # --- internals --------------------------------------------------------------------------------

    def _emit(self, event: ControllerEvent) -> None:
        self._send.send_nowait(event)  # unbounded: never raises WouldBlock

    def _update(self) -> None:
        duty = self.duty_pct
        pilot = self.ev.pilot_state(duty, self._unavailable)
        if pilot is not self._pilot:
            self._pilot = pilot
            self._emit(PilotChanged(pilot))
        closed = self._power_allowed and not (self._faults - NON_BLOCKING_FAULTS) and pilot in _POWERED_STATES
        if closed is not self._contactor:
            self._contactor = closed
            self._emit(ContactorChanged(closed))
        # The EV follows the PWM it reads, not the number the EVSE meant to offer.
        readable_a = round(duty_to_amps(duty), 2) if duty is not None else 0.0  # no float dust in Wh
        draw = self.ev.current_draw(readable_a, closed)
        if draw != self._draw_a:
            self._draw_a = draw
            if self._flow is not None:
                self._flow.set_flow(draw, self.ev.phases)

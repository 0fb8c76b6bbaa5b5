"""A pure model of an electric vehicle on the control pilot (IEC 61851-1 session sequence).

Plain data and functions of the EVSE's outputs; no time, no I/O. The board sims (in-process and pty
emulators) ask it which pilot state the EVSE sees and how much current flows.
"""

from __future__ import annotations

from dataclasses import dataclass

from evstation.drivers.api import PilotState
from evstation.drivers.pilot import duty_to_amps


@dataclass
class SimEv:
    """An EV: plugged or not, wanting energy or done, with its own current limit per phase.

    Sequence (drivers-facts.md section 3): A -> plug -> B1 -> PWM offered -> B2 -> EV closes S2 (when it
    wants energy) -> C2 (D2 with ventilation) -> contactor closed -> draws <= offered -> EV done -> B2
    -> contactor opens -> PWM off -> B1 -> unplug -> A.
    """

    plugged: bool = False
    wants_energy: bool = True
    max_current_a: float = 32.0
    phases: int = 3
    needs_ventilation: bool = False
    # An EV that keeps S2 closed when the PWM stops (IEC 61851-1 Table A.6 sequence 10.2: some EVs do;
    # the EVSE must then switch off under load). Off for a well-behaved EV.
    ignores_pwm_stop: bool = False
    # The rating its cable's Proximity Pilot resistor codes (A); None: not reported by the board.
    cable_max_current_a: int | None = None

    def pilot_state(self, duty_pct: float | None, state_f: bool) -> PilotState:
        """The state the EVSE reads for its PWM `duty_pct` (None = no PWM) and its state-F output."""
        if state_f:
            return PilotState.F  # -12 V steady: the EV sees "not available" and its load is irrelevant
        if not self.plugged:
            return PilotState.A
        if duty_pct is None and self.ignores_pwm_stop and self.wants_energy:
            return PilotState.D if self.needs_ventilation else PilotState.C
        # A real EV closes S2 only on a usable PWM offer (B2), never on X1 (B1).
        if duty_pct is None or not self.wants_energy or duty_to_amps(duty_pct) <= 0.0:
            return PilotState.B
        return PilotState.D if self.needs_ventilation else PilotState.C

    def current_draw(self, offered_a: float, contactor_closed: bool) -> float:
        """Amps per phase the EV draws: min(offered, own max) while powered and wanting energy."""
        if not (self.plugged and self.wants_energy and contactor_closed) or offered_a <= 0.0:
            return 0.0
        return min(offered_a, self.max_current_a)

"""The in-process simulated board: pilot states from the EV model, contactor rules, lock, faults, flow."""

from __future__ import annotations

import pytest
import trio

from evstation.drivers.api import (
    CableRating,
    ChargeController,
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
    cable_rating_of_pp,
)
from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.ev import SimEv


class FlowRecorder:
    def __init__(self) -> None:
        self.flows: list[tuple[float, int]] = []

    def set_flow(self, current_a: float, phases: int) -> None:
        self.flows.append((current_a, phases))


def drain(board: SimChargeController) -> list[ControllerEvent]:
    receive = board.events()
    assert isinstance(receive, trio.MemoryReceiveChannel)
    out: list[ControllerEvent] = []
    while True:
        try:
            out.append(receive.receive_nowait())
        except trio.WouldBlock:
            return out


def test_ev_model_follows_the_session_sequence() -> None:
    ev = SimEv(plugged=False, wants_energy=True, max_current_a=16, phases=1)
    assert ev.pilot_state(None, False) is PilotState.A
    ev.plugged = True
    assert ev.pilot_state(None, False) is PilotState.B  # B1
    assert ev.pilot_state(53.3, False) is PilotState.C  # B2 -> C2
    assert ev.pilot_state(53.3, True) is PilotState.F
    ev.needs_ventilation = True
    assert ev.pilot_state(53.3, False) is PilotState.D
    ev.wants_energy = False
    assert ev.pilot_state(53.3, False) is PilotState.B
    assert ev.current_draw(32, contactor_closed=True) == 0
    ev.wants_energy = True
    assert ev.current_draw(32, contactor_closed=True) == 16
    assert ev.current_draw(10, contactor_closed=True) == 10
    assert ev.current_draw(32, contactor_closed=False) == 0


def test_sim_board_implements_the_protocol() -> None:
    assert isinstance(SimChargeController(), ChargeController)


async def test_contactor_closes_only_when_allowed_and_ev_ready() -> None:
    flow = FlowRecorder()
    board = SimChargeController(SimEv(max_current_a=20, phases=3), flow=flow)
    board.plug_in()
    assert drain(board) == [PilotChanged(PilotState.B)]
    await board.allow_power(True)
    assert drain(board) == []  # no PWM: the EV stays in B1
    await board.offer_current(16)
    assert drain(board) == [PilotChanged(PilotState.C), ContactorChanged(True)]
    assert flow.flows == [(16.0, 3)]
    await board.offer_current(32)
    assert flow.flows[-1] == (20.0, 3)  # the EV's own maximum
    await board.allow_power(False)
    assert drain(board) == [ContactorChanged(False)]
    assert flow.flows[-1] == (0.0, 3)


async def test_contactor_opens_when_ev_returns_to_b_or_unplugs() -> None:
    board = SimChargeController(SimEv())
    board.plug_in()
    await board.offer_current(10)
    await board.allow_power(True)
    drain(board)
    board.set_ev(wants_energy=False)
    assert drain(board) == [PilotChanged(PilotState.B), ContactorChanged(False)]
    board.set_ev(wants_energy=True)
    assert drain(board) == [PilotChanged(PilotState.C), ContactorChanged(True)]
    board.unplug()
    assert drain(board) == [PilotChanged(PilotState.A), ContactorChanged(False)]


async def test_fault_opens_the_contactor_until_cleared() -> None:
    board = SimChargeController(SimEv(plugged=True))
    await board.offer_current(10)
    await board.allow_power(True)
    drain(board)
    board.inject_fault(FaultCode.GROUND_FAILURE)
    assert drain(board) == [FaultRaised(FaultCode.GROUND_FAILURE, "injected"), ContactorChanged(False)]
    assert board.active_faults == {FaultCode.GROUND_FAILURE}
    board.clear_fault(FaultCode.GROUND_FAILURE)
    assert drain(board) == [FaultCleared(FaultCode.GROUND_FAILURE), ContactorChanged(True)]


async def test_non_blocking_fault_keeps_the_contactor_closed() -> None:
    # MREC CX003 HighTemperature is a derating condition, not a stop.
    board = SimChargeController(SimEv(plugged=True))
    await board.offer_current(10)
    await board.allow_power(True)
    drain(board)
    board.inject_fault(FaultCode.HIGH_TEMPERATURE)
    assert drain(board) == [FaultRaised(FaultCode.HIGH_TEMPERATURE, "injected")]
    assert board.contactor_closed


async def test_state_f_and_lock_failure() -> None:
    board = SimChargeController(SimEv(plugged=True))
    await board.set_unavailable(True)
    assert board.pilot_state is PilotState.F
    await board.set_lock(True)
    assert board.lock_state is LockState.LOCKED
    board.fail_next_move = True
    with pytest.raises(ControllerError) as info:
        await board.set_lock(False)
    assert info.value.code is FaultCode.CONNECTOR_LOCK_FAILURE
    assert board.lock_state is LockState.LOCKED
    assert board.fail_next_move is False
    events = drain(board)
    assert LockChanged(LockState.LOCKED) in events
    assert events[-1] == FaultRaised(
        FaultCode.CONNECTOR_LOCK_FAILURE, "lock motor did not reach its end position"
    )
    await board.set_lock(False)
    assert board.lock_state.value == LockState.UNLOCKED.value


async def test_run_reports_the_initial_pilot_state() -> None:
    board = SimChargeController(SimEv(plugged=True))
    async with trio.open_nursery() as nursery:
        await nursery.start(board.run)
        assert drain(board) == [PilotChanged(PilotState.B)]
        nursery.cancel_scope.cancel()


async def test_cancelled_sim_board_goes_to_the_safe_state_in_iec_order() -> None:
    board = SimChargeController(SimEv(plugged=True))
    async with trio.open_nursery() as nursery:
        await nursery.start(board.run)
        await board.set_lock(True)
        await board.offer_current(16)
        await board.allow_power(True)
        assert board.contactor_closed
        drain(board)
        nursery.cancel_scope.cancel()
    assert drain(board) == [
        PilotChanged(PilotState.B),  # X1 first: the EV opens S2 ...
        ContactorChanged(False),  # ... the contactor opens ...
        LockChanged(LockState.UNLOCKED),  # ... and only then the lock
    ]
    assert board.offered_current_a is None and board.lock_state is LockState.UNLOCKED


@pytest.mark.parametrize(
    ("ohms", "amps"),
    [
        (1500.0, 13),
        (1650.0, 13),
        (680.0, 20),
        (220.0, 32),
        (100.0, 63),
        (90.0, 63),
        (400.0, None),
        (1e9, None),
    ],
)
def test_pp_resistor_codes_the_cable_rating(ohms: float, amps: int | None) -> None:
    """IEC 61851-1 Annex B coding; a value between the bands (or an open PP) codes no rating."""
    assert cable_rating_of_pp(ohms) == amps


async def test_sim_board_reports_the_cable_rating_before_the_pilot() -> None:
    """PP is read as the plug goes in: the rating comes before the EV answers on the pilot, and the
    unplug (no cable any more) reports None. A plug without a rating reports nothing."""
    board = SimChargeController(SimEv())
    board.plug_in(cable_max_current_a=32)
    assert drain(board) == [CableRating(32), PilotChanged(PilotState.B)]
    board.unplug()
    assert drain(board) == [PilotChanged(PilotState.A), CableRating(None)]
    board.plug_in()
    assert drain(board) == [PilotChanged(PilotState.B)]

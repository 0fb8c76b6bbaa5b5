"""The version-neutral EVSE machine on a simulated board and meter, under MockClock (autojump)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing

from evstation.drivers.api import FaultCode, LockState
from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.meter import SimMeter
from evstation.runtime.events import Dropped
from evstation.runtime.evse import (
    AUTHORIZATION_TIMEOUT_S,
    CONNECTION_TIMEOUT_S,
    SUSPENDED_EV_SETTLE_S,
    TRANSITIONS,
    AuthorizationRequested,
    Authorized,
    CableRatingChanged,
    ConnectorStatus,
    EnergyFlowStarted,
    EnergyFlowSuspended,
    EvPlugged,
    Evse,
    EvseEvent,
    Evses,
    EvUnplugged,
    FaultChanged,
    Input,
    Phase,
    SessionEnded,
    StatusChanged,
    StopReason,
    step,
)

S = ConnectorStatus


@dataclass
class Rig:
    evses: Evses
    evse: Evse
    board: SimChargeController
    meter: SimMeter | None
    rx: trio.MemoryReceiveChannel[EvseEvent | Dropped]

    async def events(self) -> list[EvseEvent | Dropped]:
        await trio.testing.wait_all_tasks_blocked()
        out: list[EvseEvent | Dropped] = []
        while True:
            try:
                out.append(self.rx.receive_nowait())
            except trio.WouldBlock:
                return out

    async def statuses(self) -> list[ConnectorStatus]:
        return [e.status for e in await self.events() if isinstance(e, StatusChanged)]

    async def authorize(self, token: str = "TAG1") -> None:
        assert await self.evse.present_token(token)
        events = await self.events()
        assert AuthorizationRequested(1, token, "ISO14443") in events
        self.evse.resolve_authorization(token, accepted=True)


@pytest.fixture
async def rig(nursery: trio.Nursery) -> AsyncIterator[Rig]:
    # Tests that let virtual time pass request autojump_clock themselves: pytest-trio only sees it there.
    async with _start(nursery, with_meter=False) as rig:
        yield rig


@asynccontextmanager
async def _start(nursery: trio.Nursery, *, with_meter: bool) -> AsyncIterator[Rig]:
    meter = SimMeter(230.0, poll_interval_s=1.0) if with_meter else None
    board = SimChargeController(SimEv(max_current_a=32, phases=3), flow=meter)
    evses = Evses()
    evse = evses.add(1, board, meter, max_current_a=16.0)
    with evses.subscribe() as rx:
        await nursery.start(evses.run)
        yield Rig(evses, evse, board, meter, rx)


def test_table_is_pure_and_ignores_unknown_pairs() -> None:
    assert step(Phase.IDLE, Input.PLUG)[0] is Phase.PLUGGED
    assert step(Phase.IDLE, Input.POWER_OFF) == (Phase.IDLE, ())
    reached = {Phase.IDLE} | {new for new, _ in TRANSITIONS.values()}
    assert reached == set(Phase)


async def test_normal_session_plug_first(rig: Rig, autojump_clock: trio.testing.MockClock) -> None:
    assert await rig.statuses() == [S.AVAILABLE]
    rig.board.plug_in()
    assert await rig.events() == [EvPlugged(1, 1), StatusChanged(1, 1, S.PREPARING, None)]
    await rig.authorize()
    events = await rig.events()
    assert events[0] == Authorized(1, "TAG1", "ISO14443")
    assert EnergyFlowStarted(1) in events
    # The instant between the PWM offer and the EV closing S2 is not published as SuspendedEV.
    assert [e.status for e in events if isinstance(e, StatusChanged)] == [S.CHARGING]
    assert rig.board.offered_current_a == 16.0  # connector maximum
    assert rig.board.contactor_closed
    assert rig.board.lock_state is LockState.LOCKED
    assert rig.evse.session_active()
    rig.board.set_ev(wants_energy=False)  # EV full
    assert await rig.events() == [EnergyFlowSuspended(1, by_ev=True)]
    assert rig.evse.status() is S.SUSPENDED_EV and rig.evse.published_status() is S.CHARGING
    await trio.sleep(SUSPENDED_EV_SETTLE_S)
    assert await rig.events() == [StatusChanged(1, 1, S.SUSPENDED_EV, None)]
    rig.board.unplug()
    assert await rig.events() == [
        EvUnplugged(1, 1),
        SessionEnded(1, 1, StopReason.EV_DISCONNECTED),
        StatusChanged(1, 1, S.AVAILABLE, None),
    ]
    assert rig.board.lock_state.value == LockState.UNLOCKED.value
    assert rig.board.offered_current_a is None
    assert not rig.evse.session_active()


async def test_auth_first_then_plug(rig: Rig) -> None:
    await rig.events()
    await rig.authorize()
    assert await rig.events() == [Authorized(1, "TAG1", "ISO14443"), StatusChanged(1, 1, S.PREPARING, None)]
    rig.board.plug_in()
    events = await rig.events()
    assert events[0] == EvPlugged(1, 1)
    assert EnergyFlowStarted(1) in events
    assert rig.evse.status() is S.CHARGING


async def test_auth_first_connection_timeout_ends_the_session(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    await rig.events()
    await rig.authorize()
    start = trio.current_time()
    await rig.events()
    rx_wait = await _next(rig, SessionEnded)
    assert rx_wait == SessionEnded(1, 1, StopReason.TIMEOUT)
    assert trio.current_time() - start == pytest.approx(CONNECTION_TIMEOUT_S)
    assert rig.evse.status() is S.AVAILABLE


async def _next(rig: Rig, kind: type) -> EvseEvent | Dropped:
    with trio.fail_after(3600):
        async for event in rig.rx:
            if isinstance(event, kind):
                return event
    raise AssertionError("stream ended")


async def test_authorization_timeout_means_not_authorized(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    rig.board.plug_in()
    await rig.events()
    start = trio.current_time()
    assert await rig.evse.present_token("SLOW")
    await trio.sleep(AUTHORIZATION_TIMEOUT_S + 1)
    assert trio.current_time() - start > AUTHORIZATION_TIMEOUT_S
    rig.evse.resolve_authorization("SLOW", accepted=True)  # too late: ignored
    events = await rig.events()
    assert not any(isinstance(e, Authorized) for e in events)
    assert rig.evse.status() is S.PREPARING
    assert rig.board.offered_current_a is None


async def test_rejected_token_offers_nothing(rig: Rig) -> None:
    rig.board.plug_in()
    assert await rig.evse.present_token("BAD")
    rig.evse.resolve_authorization("BAD", accepted=False)
    events = await rig.events()
    assert not any(isinstance(e, Authorized) for e in events)
    assert rig.board.offered_current_a is None


async def test_ev_suspends_and_resumes(rig: Rig) -> None:
    rig.board.plug_in()
    await rig.authorize()
    await rig.events()
    rig.board.set_ev(wants_energy=False)
    assert rig.evse.status() is S.CHARGING  # not processed yet
    await rig.events()
    assert rig.evse.status() is S.SUSPENDED_EV
    rig.board.set_ev(wants_energy=True)
    # A pause shorter than the settle time reaches the session, but never the published status.
    assert await rig.events() == [EnergyFlowStarted(1)]
    assert rig.evse.published_status() is S.CHARGING


async def test_ev_pause_longer_than_settle_time_is_published(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    rig.board.plug_in()
    await rig.authorize()
    await rig.events()
    rig.board.set_ev(wants_energy=False)
    start = trio.current_time()
    assert await _next(rig, StatusChanged) == StatusChanged(1, 1, S.SUSPENDED_EV, None)
    assert trio.current_time() - start == pytest.approx(SUSPENDED_EV_SETTLE_S)
    rig.board.set_ev(wants_energy=True)
    assert await rig.events() == [EnergyFlowStarted(1), StatusChanged(1, 1, S.CHARGING, None)]


async def test_ev_slow_to_draw_shows_suspended_ev_after_settle_time(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    rig.board.set_ev(wants_energy=False)  # plugged EV that does not answer the PWM offer
    rig.board.plug_in()
    await rig.authorize()
    assert S.SUSPENDED_EV not in await rig.statuses()
    await trio.sleep(SUSPENDED_EV_SETTLE_S)
    assert await rig.statuses() == [S.SUSPENDED_EV]


async def test_fault_during_charging_opens_contactor_and_recovers(rig: Rig) -> None:
    rig.board.plug_in()
    await rig.authorize()
    await rig.events()
    rig.board.inject_fault(FaultCode.GROUND_FAILURE)
    events = await rig.events()
    assert events[0] == FaultChanged(1, FaultCode.GROUND_FAILURE, active=True)
    assert StatusChanged(1, 1, S.FAULTED, FaultCode.GROUND_FAILURE) in events
    assert not rig.board.contactor_closed
    assert rig.board.offered_current_a is None  # no PWM while faulted
    assert rig.evse.active_faults() == {FaultCode.GROUND_FAILURE}
    rig.board.clear_fault(FaultCode.GROUND_FAILURE)
    events = await rig.events()
    assert events[0] == FaultChanged(1, FaultCode.GROUND_FAILURE, active=False)
    assert EnergyFlowStarted(1) in events
    assert rig.evse.status() is S.CHARGING
    assert rig.board.contactor_closed


async def test_fault_while_idle_blocks_new_sessions(rig: Rig) -> None:
    rig.board.inject_fault(FaultCode.EMERGENCY_STOP)
    await rig.events()
    assert rig.evse.status() is S.FAULTED
    assert not await rig.evse.present_token("TAG1")
    assert not await rig.evse.authorize_remote("TAG1", "ISO14443")


async def test_unplug_during_charging_ends_with_ev_disconnected(rig: Rig) -> None:
    rig.board.plug_in()
    await rig.authorize()
    await rig.events()
    rig.board.unplug()
    events = await rig.events()
    assert events[:2] == [EvUnplugged(1, 1), SessionEnded(1, 1, StopReason.EV_DISCONNECTED)]
    assert not rig.board.contactor_closed


async def test_remote_start_and_remote_stop_go_through_finishing(rig: Rig) -> None:
    rig.board.plug_in()
    assert await rig.evse.authorize_remote("REMOTE1", "Central")
    assert Authorized(1, "REMOTE1", "Central") in await rig.events()
    await rig.evse.stop_session(StopReason.REMOTE)
    events = await rig.events()
    assert events[0] == SessionEnded(1, 1, StopReason.REMOTE)
    assert rig.evse.status() is S.FINISHING
    assert not rig.board.contactor_closed
    assert rig.board.lock_state.value == LockState.UNLOCKED.value  # the driver can take the cable
    rig.board.unplug()
    assert await rig.events() == [EvUnplugged(1, 1), StatusChanged(1, 1, S.AVAILABLE, None)]


async def test_same_token_again_stops_locally(rig: Rig) -> None:
    rig.board.plug_in()
    await rig.authorize("TAG1")
    await rig.events()
    assert await rig.evses.present_token("TAG1") == 1
    assert SessionEnded(1, 1, StopReason.LOCAL) in await rig.events()


async def test_set_unavailable_while_idle_applies_now(rig: Rig) -> None:
    await rig.evse.set_available(False)
    assert await rig.statuses() == [S.AVAILABLE, S.UNAVAILABLE]
    assert rig.board.pilot_state.value == "F"
    await rig.evse.set_available(True)
    assert await rig.statuses() == [S.AVAILABLE]


async def test_set_unavailable_during_session_is_scheduled(rig: Rig) -> None:
    rig.board.plug_in()
    await rig.authorize()
    await rig.events()
    await rig.evse.set_available(False)
    assert rig.evse.status() is S.CHARGING  # scheduled until the session ends
    assert rig.board.contactor_closed
    rig.board.unplug()
    await rig.events()
    assert rig.evse.status() is S.UNAVAILABLE
    assert not await rig.evse.present_token("TAG2")


async def test_current_limit_changes_the_offer(rig: Rig) -> None:
    rig.board.plug_in()
    await rig.authorize()
    await rig.events()
    await rig.evse.set_current_limit(10.0)
    assert rig.board.offered_current_a == 10.0
    assert rig.evse.offered_current_a() == 10.0
    await rig.evse.set_current_limit(100.0)
    assert rig.board.offered_current_a == 16.0  # never above the connector maximum
    await rig.evse.set_current_limit(0.0)
    events = await rig.events()
    assert EnergyFlowSuspended(1, by_ev=False) in events
    assert rig.evse.status() is S.SUSPENDED_EVSE
    assert not rig.board.contactor_closed
    await rig.evse.set_current_limit(None)
    await rig.events()
    assert rig.evse.status() is S.CHARGING


async def test_unlock_reports_lock_failure(rig: Rig) -> None:
    assert await rig.evse.unlock()
    rig.board.fail_next_move = True
    assert not await rig.evse.unlock()
    events = await rig.events()
    assert FaultChanged(1, FaultCode.CONNECTOR_LOCK_FAILURE, active=True) in events
    assert rig.evse.status() is S.FAULTED


async def test_meter_energy_follows_offered_current(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async with _start(nursery, with_meter=True) as rig:
        rig.board.plug_in()
        await rig.authorize()
        await rig.events()
        await trio.sleep(3600)
        energy = rig.evse.energy_wh()
        assert energy is not None
        assert energy == pytest.approx(16 * 3 * 230, rel=0.01)  # 16 A x 3 phases x 230 V, one hour
        assert rig.evse.power_w() == pytest.approx(16 * 3 * 230)


@pytest.mark.parametrize("unlock", [True, False], ids=["unlock", "keep-locked"])
async def test_e10_ev_side_unplug_keeps_the_session_and_replug_continues(
    rig: Rig, autojump_clock: trio.testing.MockClock, unlock: bool
) -> None:
    """StopTxOnEVSideDisconnect false: the pilot going to A keeps the session (SuspendedEV, no
    SessionEnded); UnlockOnEVSideDisconnect decides the lock; the EV coming back charges again."""
    rig.evse.stop_on_ev_side_disconnect = False
    rig.evse.unlock_on_ev_side_disconnect = unlock
    rig.board.plug_in()
    await rig.authorize()
    await trio.sleep(5)
    assert rig.evse.status() is S.CHARGING
    await rig.events()
    rig.board.unplug()
    await trio.sleep(5)
    events = await rig.events()
    assert EvUnplugged(1, 1, session_kept=True) in events
    assert not any(isinstance(e, SessionEnded) for e in events)
    assert rig.evse.phase is Phase.EV_DISCONNECTED and rig.evse.session_active()
    assert rig.evse.status() is S.SUSPENDED_EV
    # The status event says the EV is away (2.0.1 reports Available, 1.6 SuspendedEV).
    assert StatusChanged(1, 1, S.SUSPENDED_EV, None, ev_away=True) in events
    assert rig.evse.ev_away(1)
    assert rig.board.offered_current_a is None
    expected_lock = LockState.UNLOCKED if unlock else LockState.LOCKED
    assert rig.board.lock_state.value == expected_lock.value
    await trio.sleep(3600)  # a socket's kept session has no connection timeout
    assert rig.evse.session_active()
    rig.board.plug_in()
    await trio.sleep(5)
    assert rig.evse.status() is S.CHARGING
    assert rig.board.lock_state.value == LockState.LOCKED.value
    assert rig.evse.session_token() == "TAG1"
    # The session's own token ends it, also while the EV is away.
    rig.board.unplug()
    await trio.sleep(5)
    assert await rig.evse.present_token("tag1")
    await trio.sleep(1)
    assert SessionEnded(1, 1, StopReason.LOCAL) in await rig.events()
    assert rig.evse.status() is S.AVAILABLE
    after_stop: LockState = rig.board.lock_state
    assert after_stop.value == LockState.UNLOCKED.value


async def test_e09_ev_side_unplug_with_stop_true_ends_the_session(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    """StopTxOnEVSideDisconnect true (default): unplugging ends the session with EVDisconnected."""
    rig.board.plug_in()
    await rig.authorize()
    await trio.sleep(5)
    await rig.events()
    rig.board.unplug()
    events = await rig.events()
    assert EvUnplugged(1, 1) in events and SessionEnded(1, 1, StopReason.EV_DISCONNECTED) in events
    # UnlockOnEVSideDisconnect true (default): the cable is free at once.
    assert rig.board.lock_state.value == LockState.UNLOCKED.value
    assert rig.evse.status() is S.AVAILABLE


async def _ev_side_unplug_ends_a_session_with_unlock_false(rig: Rig) -> None:
    rig.evse.unlock_on_ev_side_disconnect = False
    rig.board.plug_in()
    await rig.authorize()
    await trio.sleep(5)
    await rig.events()
    rig.board.unplug()
    await trio.sleep(5)
    events = await rig.events()
    assert SessionEnded(1, 1, StopReason.EV_DISCONNECTED) in events
    assert not rig.evse.session_active()
    assert rig.board.lock_state.value == LockState.LOCKED.value
    assert rig.evse.cable_held()
    # 1.6 TC_005_1/2: Finishing while the ended session's cable is still in the socket.
    assert rig.evse.status() is S.FINISHING


async def test_e09_fr_03_unlock_false_holds_the_cable_until_the_token_comes_back(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    """StopTxOnEVSideDisconnect true, UnlockOnEVSideDisconnect false: the EV-side unplug ends the
    session, the lock stays closed; a stranger's token (not of the group) does not open it, the
    session's own token does (any letter case)."""
    await _ev_side_unplug_ends_a_session_with_unlock_false(rig)
    assert await rig.evse.present_token("OTHER")
    events = await rig.events()
    # Asked like a stop by another token: only the held session's group (or a master pass) may.
    assert AuthorizationRequested(1, "OTHER", "ISO14443", ("TAG1", "ISO14443")) in events
    rig.evse.resolve_authorization("OTHER", accepted=False)
    await trio.sleep(1)
    assert rig.board.lock_state.value == LockState.LOCKED.value
    assert rig.evse.phase is Phase.IDLE  # no session started for the stranger
    assert await rig.evse.present_token("tag1")
    await trio.sleep(1)
    assert rig.board.lock_state.value == LockState.UNLOCKED.value
    assert not rig.evse.cable_held() and rig.evse.status() is S.AVAILABLE
    assert S.AVAILABLE in [e.status for e in await rig.events() if isinstance(e, StatusChanged)]


async def test_e09_fr_03_held_cable_opens_for_a_group_token_or_unlock_connector(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    """The group's token (the session decides, like a stop by another token) or UnlockConnector free
    a held cable."""
    await _ev_side_unplug_ends_a_session_with_unlock_false(rig)
    assert await rig.evse.present_token("GROUPMATE")
    await rig.events()
    rig.evse.resolve_authorization("GROUPMATE", accepted=True)
    await trio.sleep(1)
    assert rig.board.lock_state.value == LockState.UNLOCKED.value
    assert rig.evse.status() is S.AVAILABLE and rig.evse.phase is Phase.IDLE
    await _ev_side_unplug_ends_a_session_with_unlock_false(rig)
    assert not await rig.evse.authorize_remote("SOMEONE", "ISO14443")  # the cable is not theirs
    assert await rig.evse.unlock()
    await trio.sleep(1)
    assert rig.board.lock_state.value == LockState.UNLOCKED.value
    assert not rig.evse.cable_held() and rig.evse.status() is S.AVAILABLE


async def test_e09_fr_03_driver_back_on_the_held_cable_frees_it_and_starts_with_one_token(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    """The EV plugged back into the held cable (Preparing, still locked): the driver's token frees the
    cable and asks for a new session at once."""
    await _ev_side_unplug_ends_a_session_with_unlock_false(rig)
    rig.board.plug_in()
    await trio.sleep(1)
    assert rig.evse.phase is Phase.PLUGGED and rig.board.lock_state.value == LockState.LOCKED.value
    await rig.authorize("TAG1")
    await trio.sleep(5)
    assert rig.evse.status() is S.CHARGING and not rig.evse.cable_held()


async def test_cable_rating_from_the_proximity_pilot_limits_the_offer(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    """A board that reads the cable's PP coding reports it before the EV answers on the pilot; the
    offer never exceeds it (EVSE 16 A, cable 13 A); the unplug forgets it."""
    rig.board.plug_in(cable_max_current_a=13)
    events = await rig.events()
    assert events.index(CableRatingChanged(1, 13)) < events.index(EvPlugged(1, 1))
    assert rig.evse.cable_max_current_a() == 13
    await rig.authorize()
    await trio.sleep(5)
    assert rig.evse.status() is S.CHARGING
    assert rig.board.offered_current_a == 13.0
    rig.board.unplug()
    assert CableRatingChanged(1, None) in await rig.events()
    assert rig.evse.cable_max_current_a() is None


async def test_e10_fr_02_tethered_cable_kept_session_ends_at_the_connection_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A tethered cable (no lock) unplugged from the EV: EVConnectionTimeOut ends the kept session
    with reason Timeout."""
    board = SimChargeController(SimEv(max_current_a=32, phases=3))
    evses = Evses()
    evse = evses.add(1, board, None, has_lock=False, connection_timeout_s=90.0)
    evse.stop_on_ev_side_disconnect = False
    with evses.subscribe() as rx:
        await nursery.start(evses.run)
        board.plug_in()
        await trio.sleep(1)
        assert await evse.authorize_remote("TAG1", "ISO14443")
        await trio.sleep(5)
        board.unplug()
        await trio.sleep(1)
        left = trio.current_time()
        rig = Rig(evses, evse, board, None, rx)
        await rig.events()
        ended = await _next(rig, SessionEnded)
        assert ended == SessionEnded(1, 1, StopReason.TIMEOUT)
        assert trio.current_time() - left == pytest.approx(89.0, abs=0.1)
        assert evse.status() is S.AVAILABLE

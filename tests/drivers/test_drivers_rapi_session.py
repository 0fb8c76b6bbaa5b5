"""The RAPI driver against the OpenEVSE emulator over a real pseudo-terminal (pyserial on the slave)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
import trio
from board_session_helpers import COMPLETE_SAFE_STOP, STEP_TIMEOUT, expect, expect_all, next_fault, running

from evstation.drivers.api import (
    BoardReset,
    ChargeController,
    ContactorChanged,
    ControllerError,
    ControllerEvent,
    FaultCleared,
    FaultCode,
    FaultRaised,
    PilotChanged,
    PilotState,
)
from evstation.drivers.boards.rapi import RapiBoard, parse_version, rapi_version_of
from evstation.drivers.boards.rapi_codec import RapiLine
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.rapi_emulator import Mode, RapiEmulator, open_rapi_emulator


def mode_of(emulator: RapiEmulator) -> Mode:
    # A call, not an attribute read, so mypy does not carry narrowing across awaits.
    return emulator.mode


@pytest.fixture
async def rig() -> AsyncIterator[tuple[RapiEmulator, RapiBoard]]:
    async with open_rapi_emulator() as emulator:
        board = RapiBoard(emulator.port_path, command_timeout=0.3, poll_interval=0.2)
        async with running(board):
            yield emulator, board


async def test_rapi_board_satisfies_the_controller_protocol(rig: tuple[RapiEmulator, RapiBoard]) -> None:
    emulator, board = rig
    assert isinstance(board, ChargeController)
    assert board.firmware_version == emulator.firmware_version
    # Nothing offered yet: the driver puts the board to sleep at start.
    assert mode_of(emulator) is Mode.SLEEPING


async def test_rapi_full_session(rig: tuple[RapiEmulator, RapiBoard]) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(15):
        await expect(events, PilotChanged(PilotState.A))
        emulator.update_ev(plugged=True)
        await expect(events, PilotChanged(PilotState.B))
        assert not emulator.relay_closed

        await board.offer_current(16.7)
        await expect(events, PilotChanged(PilotState.C))
        assert emulator.capacity_a == 16  # whole amps, rounded down
        assert mode_of(emulator) is Mode.ENABLED
        sent = [(c.name, c.args) for c in emulator.commands[-2:]]
        assert sent == [("SC", ("16", "V")), ("FE", ())]

        await board.allow_power(True)
        await expect(events, ContactorChanged(True))

        emulator.update_ev(wants_energy=False)
        await expect_all(events, PilotChanged(PilotState.B), ContactorChanged(False))

        await board.offer_current(None)
        assert mode_of(emulator) is Mode.SLEEPING
        emulator.update_ev(plugged=False)
        await expect(events, PilotChanged(PilotState.A))
        assert board.stats.checksum_errors == 0
        assert board.stats.timeouts == 0


async def test_rapi_allow_power_false_sleeps_and_unavailable_disables(
    rig: tuple[RapiEmulator, RapiBoard],
) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        emulator.update_ev(plugged=True)
        await board.offer_current(32)
        await expect(events, ContactorChanged(True))
        await board.allow_power(False)
        await expect(events, ContactorChanged(False))
        assert mode_of(emulator) is Mode.SLEEPING
        await board.allow_power(True)
        await expect(events, ContactorChanged(True))
        await board.set_unavailable(True)
        await expect_all(events, PilotChanged(PilotState.F), ContactorChanged(False))
        assert mode_of(emulator) is Mode.DISABLED
        await board.set_unavailable(False)
        await expect(events, ContactorChanged(True))


async def test_rapi_gfci_trip_raises_and_clears_ground_failure(rig: tuple[RapiEmulator, RapiBoard]) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        emulator.update_ev(plugged=True)
        await board.offer_current(16)
        await expect(events, ContactorChanged(True))
        emulator.inject(gfci_tripped=True)
        await expect_all(
            events,
            FaultRaised(FaultCode.GROUND_FAILURE, "EVSE state 06: GFCI tripped"),
            ContactorChanged(False),
        )
        emulator.inject(gfci_tripped=False)
        await expect_all(events, FaultCleared(FaultCode.GROUND_FAILURE), ContactorChanged(True))


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("diode_check_failed", FaultCode.DIODE_FAULT),
        ("no_ground", FaultCode.GROUND_FAILURE),
        ("stuck_relay", FaultCode.EVSE_CONTACTOR_FAULT),
        ("over_temperature", FaultCode.HIGH_TEMPERATURE),
        ("over_current", FaultCode.OVER_CURRENT),
    ],
)
async def test_rapi_fault_states_map_to_fault_codes(
    rig: tuple[RapiEmulator, RapiBoard], fault: str, code: FaultCode
) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        emulator.inject(**{fault: True})
        await _expect_fault(events, code)
        emulator.inject(**{fault: False})
        await expect(events, FaultCleared(code))


async def test_rapi_checksum_error_is_counted_and_the_session_continues(
    rig: tuple[RapiEmulator, RapiBoard],
) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        await expect(events, PilotChanged(PilotState.A))
        emulator.corrupt_next_lines(1)
        emulator.update_ev(plugged=True)  # this $AT is lost to the checksum error ...
        await emulator.wait_corruption_sent()
        await expect(events, PilotChanged(PilotState.B))  # ... and the next GS poll recovers it
        assert board.stats.checksum_errors == 1
        await board.offer_current(16)
        await expect(events, PilotChanged(PilotState.C))


async def test_rapi_silent_board_times_out_then_recovers(rig: tuple[RapiEmulator, RapiBoard]) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        emulator.update_ev(plugged=True)
        await expect(events, PilotChanged(PilotState.B))
        emulator.go_silent()
        with pytest.raises(ControllerError) as info:
            await board.offer_current(16)
        assert info.value.code is FaultCode.BOARD_COMMUNICATION
        await _expect_fault(events, FaultCode.BOARD_COMMUNICATION)
        emulator.go_silent(False)
        await expect(events, FaultCleared(FaultCode.BOARD_COMMUNICATION))
        # The poll re-applies the offer that timed out while the board was silent.
        await expect(events, PilotChanged(PilotState.C))
        assert emulator.capacity_a == 16


async def _expect_fault(events: AsyncIterator[ControllerEvent], code: FaultCode) -> FaultRaised:
    event = await next_fault(events)
    assert event.code is code
    return event


async def test_rapi_spurious_reboot_reports_board_reset_and_withdraws_power(
    rig: tuple[RapiEmulator, RapiBoard],
) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        emulator.update_ev(plugged=True)
        await board.offer_current(16)
        await expect(events, ContactorChanged(True))
        emulator.spurious_reboot()
        await expect(events, BoardReset("boot postcode 00"))
        await expect(events, ContactorChanged(False))
        assert mode_of(emulator) is Mode.SLEEPING
        await board.allow_power(True)
        await expect(events, ContactorChanged(True))


@pytest.mark.parametrize("amps", [math.inf, 80.5])
async def test_rapi_invalid_offer_sleeps_the_board_and_does_not_raise(
    rig: tuple[RapiEmulator, RapiBoard], amps: float
) -> None:
    emulator, board = rig
    with trio.fail_after(10):
        await board.offer_current(16)
        assert mode_of(emulator) is Mode.ENABLED
        await board.offer_current(amps)  # inf used to raise OverflowError from math.floor
        assert mode_of(emulator) is Mode.SLEEPING
        await board.offer_current(16)  # the session is alive and takes the next valid offer
        assert mode_of(emulator) is Mode.ENABLED


async def test_rapi_set_lock_is_not_supported(rig: tuple[RapiEmulator, RapiBoard]) -> None:
    _, board = rig
    with pytest.raises(ControllerError) as info:
        await board.set_lock(True)
    assert info.value.code is FaultCode.CONNECTOR_LOCK_FAILURE


# ------------------------------------------------------------------ firmware version, lock, heartbeat


@pytest.mark.parametrize(
    ("firmware", "rapi", "why"),
    [
        ("D3.11.3", "3.0.1", "older than 5.0.0"),
        ("4.8.0", "4.0.1", "older than 5.0.0"),
        ("5.1.2", "", "no RAPI version"),  # $GV answers the firmware version only
    ],
)
async def test_rapi_older_than_5_is_refused_with_a_clear_fault(
    firmware: str, rapi: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_rapi_emulator(firmware_version=firmware, rapi_version=rapi) as emulator:
        board = RapiBoard(emulator.port_path, command_timeout=0.3, poll_interval=0.2, reopen_interval=0.2)
        async with running(board):
            raised = await next_fault(board.events())
            assert raised.code is FaultCode.BOARD_COMMUNICATION
            assert why in raised.detail
            await trio.sleep(0.5)  # reopened and refused again meanwhile
        # Nothing but $GV ever reaches such a board: no enable, no sleep, no safe stop.
        assert {c.name for c in emulator.commands} == {"GV"}
        assert board.stats.reconnects >= 2
    refusals = [r for r in caplog.records if why in r.getMessage()]
    assert len(refusals) == 1  # said once, not at every reopen


def test_rapi_version_parsing() -> None:
    assert parse_version("5.1.2") == (5, 1, 2)
    assert parse_version("D7.1.3") == (7, 1, 3)
    assert parse_version("8.2.2.EU") == (8, 2, 2)
    assert parse_version("new") is None
    assert rapi_version_of(RapiLine("OK", ("8.2.2", "5.0.0"))) == (5, 0, 0)


async def test_rapi_lock_moves_in_manual_mode() -> None:
    async with open_rapi_emulator(SimEv(plugged=True), lock_supported=True) as emulator:
        board = RapiBoard(emulator.port_path, command_timeout=0.3, poll_interval=0.2, has_lock=True)
        async with running(board):
            assert emulator.lock_manual  # S5 M at start: the board must not lock on its own
            assert not emulator.lock_engaged
            await board.set_lock(True)
            assert emulator.lock_engaged
            await board.set_lock(False)
            assert not emulator.lock_engaged
            assert emulator.command_names()[-2:] == ["S5 1", "S5 0"]


async def test_rapi_lock_configured_on_a_firmware_without_it_is_a_lock_fault() -> None:
    async with open_rapi_emulator(lock_supported=False) as emulator:
        board = RapiBoard(emulator.port_path, command_timeout=0.3, poll_interval=0.2, has_lock=True)
        async with running(board):
            raised = await next_fault(board.events())
            assert raised.code is FaultCode.CONNECTOR_LOCK_FAILURE
            with pytest.raises(ControllerError) as info:
                await board.set_lock(True)
            assert info.value.code is FaultCode.CONNECTOR_LOCK_FAILURE


async def test_rapi_heartbeat_supervision_is_set_and_pulsed() -> None:
    async with open_rapi_emulator() as emulator:
        board = RapiBoard(emulator.port_path, command_timeout=0.3, poll_interval=0.1, heartbeat_interval=2)
        async with running(board):
            assert (emulator.hs_interval, emulator.hs_fallback) == (2, 6)
            with trio.fail_after(STEP_TIMEOUT):
                await emulator.wait_until(lambda: emulator.command_names().count("SY") >= 3)
            assert emulator.hs_triggered == 0


async def test_rapi_missed_heartbeat_is_acknowledged_and_the_current_restored() -> None:
    ev = SimEv(plugged=True)
    async with open_rapi_emulator(ev) as emulator:
        board = RapiBoard(emulator.port_path, command_timeout=0.3, poll_interval=0.1, heartbeat_interval=2)
        async with running(board):
            await board.offer_current(16)
            # The board missed a pulse (the host stalled): it fell back to its minimum current.
            emulator.capacity_a = 6
            emulator.hs_triggered = 2
            with trio.fail_after(STEP_TIMEOUT):
                await emulator.wait_until(lambda: emulator.capacity_a == 16)
            assert "SY 165" in emulator.command_names()
            assert board.stats.missed_heartbeats == 1


async def test_rapi_board_without_heartbeat_support_still_runs() -> None:
    async with open_rapi_emulator(heartbeat_supported=False) as emulator:
        board = RapiBoard(emulator.port_path, command_timeout=0.3, poll_interval=0.1)
        async with running(board):
            await board.offer_current(16)
            assert mode_of(emulator) is Mode.ENABLED
            await trio.sleep(0.3)
            assert emulator.command_names().count("SY") == 0  # configured once, refused, not pulsed


async def test_rapi_reboot_right_after_open_warns_about_dtr(
    rig: tuple[RapiEmulator, RapiBoard], caplog: pytest.LogCaptureFixture
) -> None:
    emulator, board = rig
    emulator.spurious_reboot()  # as an Arduino does when the adapter's DTR pulses on open
    await expect(board.events(), BoardReset("boot postcode 00"))
    assert any("DTR" in r.getMessage() for r in caplog.records)


async def test_rapi_safe_stop_sleeps_waits_for_the_relay_then_unlocks() -> None:
    ev = SimEv(plugged=True)
    async with open_rapi_emulator(ev, lock_supported=True) as emulator:
        board = RapiBoard(emulator.port_path, command_timeout=0.3, poll_interval=0.2, has_lock=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(board.run)
            await board.set_lock(True)
            await board.offer_current(16)
            await expect(board.events(), ContactorChanged(True))
            mark = len(emulator.commands)
            nursery.cancel_scope.cancel()
        after = emulator.command_names()[mark:]
        assert after[0] == "FS"
        assert after.index("S5 0") > after.index("FS")
        assert "FD" not in after  # F (disabled) only for faults
        assert mode_of(emulator) is Mode.SLEEPING
        assert not emulator.relay_closed and not emulator.lock_engaged
        report = board.last_safe_stop
        assert report is not None and report.complete
        assert report.steps == COMPLETE_SAFE_STOP



async def test_rapi_safe_stop_waits_for_an_ev_slow_to_stop_drawing() -> None:
    """OpenEVSE's Sleep keeps the relay closed until the EV leaves C (or 3 s): an EV that takes 1.5 s
    to open S2 is waited for (IEC 61851-1 Table A.6, sequence 10.2), so the relay opens without state F.
    Asking for the relay at once would find it still closed after the 1 s contactor wait: a false fault."""
    ev = SimEv(plugged=True)
    async with open_rapi_emulator(ev, lock_supported=True, ev_stop_delay_s=1.5) as emulator:
        board = RapiBoard(emulator.port_path, command_timeout=0.3, poll_interval=0.2, has_lock=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(board.run)
            await board.set_lock(True)
            await board.offer_current(16)
            await expect(board.events(), ContactorChanged(True))
            mark = len(emulator.commands)
            nursery.cancel_scope.cancel()
        after = emulator.command_names()[mark:]
        assert "FD" not in after
        assert after.index("S5 0") > after.index("FS")
        assert not emulator.relay_closed and not emulator.lock_engaged
        report = board.last_safe_stop
        assert report is not None and report.complete
        assert report.steps == COMPLETE_SAFE_STOP

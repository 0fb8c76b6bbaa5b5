"""The RAPI driver against the OpenEVSE emulator over a real pseudo-terminal (pyserial on the slave)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest
import trio
from board_session_helpers import expect, expect_all, next_fault, running

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
from evstation.drivers.boards.rapi import RapiBoard
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

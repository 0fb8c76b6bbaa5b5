"""The Yeti driver against the Yeti MCU emulator over a real pseudo-terminal (pyserial on the slave)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import trio
import trio.testing
from board_session_helpers import STEP_TIMEOUT, expect, expect_all, next_fault, running

from evstation.drivers.api import (
    BoardReset,
    ChargeController,
    ContactorChanged,
    ControllerError,
    ControllerEvent,
    FaultCleared,
    FaultCode,
    FaultRaised,
    MeterFault,
    MeterRecovered,
    MeterSample,
    PilotChanged,
    PilotState,
    PowerMeter,
)
from evstation.drivers.boards.proto import yeti_pb2 as pb
from evstation.drivers.boards.yeti import PWM_STATE_F, PWM_X1, YetiBoard, YetiPowerMeter
from evstation.drivers.sim.yeti_emulator import YetiEmulator, open_yeti_emulator


@pytest.fixture
async def rig() -> AsyncIterator[tuple[YetiEmulator, YetiBoard]]:
    async with open_yeti_emulator(report_interval=0.05) as emulator:
        board = YetiBoard(
            emulator.port_path,
            keepalive_interval=0.1,
            keepalive_timeout=0.5,
            reset_wait=0.5,
            resend_interval=0.15,
            refresh_interval=0.5,
            frame_gap=0.005,
        )
        async with running(board):
            yield emulator, board


async def test_yeti_board_satisfies_the_controller_protocol(rig: tuple[YetiEmulator, YetiBoard]) -> None:
    _, board = rig
    assert isinstance(board, ChargeController)
    assert isinstance(board.power_meter(), PowerMeter)


async def test_yeti_full_session(rig: tuple[YetiEmulator, YetiBoard]) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(15):
        await expect(events, PilotChanged(PilotState.A))
        # The start-up reset was asked for: it must not surface as a spurious BoardReset.
        assert board.stats.unrequested_resets == 0

        emulator.update_ev(plugged=True)
        await expect(events, PilotChanged(PilotState.B))

        await board.set_lock(True)
        await board.offer_current(16)
        await expect(events, PilotChanged(PilotState.C))
        assert emulator.duty == 2666  # 16 A -> 26.67 %, rounded down in 0.01 % units
        assert emulator.lock_requested  # the firmware never reports its lock: check the MCU's side

        await board.allow_power(True)
        await expect(events, ContactorChanged(True))

        emulator.update_ev(wants_energy=False)
        await expect(events, PilotChanged(PilotState.B))
        await expect(events, ContactorChanged(False))

        await board.allow_power(False)
        await board.offer_current(None)
        await board.set_lock(False)
        emulator.update_ev(plugged=False)
        await expect(events, PilotChanged(PilotState.A))
        with trio.fail_after(STEP_TIMEOUT):
            await emulator.wait_until(lambda: not emulator.lock_requested)
        assert emulator.duty == PWM_X1
        # Frames are acted on in the order sent: X1 before the unlock.
        members = [c.member for c in emulator.host_log if c.member in ("pwm_duty_cycle", "connector_lock")]
        last_lock = len(members) - 1 - members[::-1].index("connector_lock")
        assert "pwm_duty_cycle" in members[:last_lock]
        assert board.stats.crc_errors == 0


async def test_yeti_unavailable_drives_state_f(rig: tuple[YetiEmulator, YetiBoard]) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        await board.offer_current(10)
        await board.set_unavailable(True)
        await expect(events, PilotChanged(PilotState.F))
        assert emulator.duty == PWM_STATE_F
        await board.set_unavailable(False)
        await expect(events, PilotChanged(PilotState.A))
        assert emulator.duty == 1666


async def test_yeti_rcd_trip_raises_and_clears_ground_failure(rig: tuple[YetiEmulator, YetiBoard]) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        emulator.update_ev(plugged=True)
        await board.offer_current(32)
        await board.allow_power(True)
        await expect(events, ContactorChanged(True))

        emulator.inject(rcd_tripped=True)
        await expect_all(
            events,
            FaultRaised(FaultCode.GROUND_FAILURE, "error_flags.rcd_triggered"),
            ContactorChanged(False),
        )

        emulator.inject(rcd_tripped=False)
        await expect(events, FaultCleared(FaultCode.GROUND_FAILURE))
        await expect(events, ContactorChanged(True))


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("diode_short", FaultCode.DIODE_FAULT),
        ("over_current", FaultCode.OVER_CURRENT),
        ("cp_shorted", FaultCode.PILOT_FAULT),
        ("lock_jammed", FaultCode.CONNECTOR_LOCK_FAILURE),
    ],
)
async def test_yeti_injected_faults_map_to_fault_codes(
    rig: tuple[YetiEmulator, YetiBoard], fault: str, code: FaultCode
) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        emulator.update_ev(plugged=True)
        await board.offer_current(16)
        await board.set_lock(True)
        emulator.inject(**{fault: True})
        raised = await next_fault(events)
        assert raised.code is code
        emulator.inject(**{fault: False})
        await expect(events, FaultCleared(code))


async def test_yeti_corrupted_frames_are_counted_and_skipped(rig: tuple[YetiEmulator, YetiBoard]) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        await expect(events, PilotChanged(PilotState.A))
        emulator.corrupt_next_frames(1)
        emulator.update_ev(plugged=True)  # this B report (or a keep-alive) is lost to the CRC error
        await emulator.wait_corruption_sent()
        await board.offer_current(16)  # later frames get through: the session goes on
        await expect(events, PilotChanged(PilotState.C))
        assert board.stats.crc_errors == 1


async def test_yeti_silent_mcu_raises_and_clears_communication_fault(
    rig: tuple[YetiEmulator, YetiBoard],
) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        await expect(events, PilotChanged(PilotState.A))
        emulator.go_silent()
        raised = await next_fault(events)
        assert raised.code is FaultCode.BOARD_COMMUNICATION
        emulator.go_silent(False)
        await expect(events, FaultCleared(FaultCode.BOARD_COMMUNICATION))
        # Any frame clears it; the periodic keep-alive carries the board's capabilities.
        with trio.fail_after(STEP_TIMEOUT):
            while board.board_info is None:
                await board.next_report()
        assert board.board_info is not None
        assert board.board_info.max_current_a == 32.0


async def test_yeti_spurious_reset_reports_board_reset_and_withdraws_power(
    rig: tuple[YetiEmulator, YetiBoard],
) -> None:
    emulator, board = rig
    events = board.events()
    with trio.fail_after(10):
        emulator.update_ev(plugged=True)
        await board.offer_current(16)
        await board.allow_power(True)
        await expect(events, ContactorChanged(True))
        emulator.spurious_reset()
        await expect(events, BoardReset("watchdog"))
        await expect(events, ContactorChanged(False))
        assert board.stats.unrequested_resets == 1
        # PWM is restored by the driver; power waits for the runtime to allow it again.
        await expect(events, PilotChanged(PilotState.C))
        assert not emulator.power_allowed
        await board.allow_power(True)
        await expect(events, ContactorChanged(True))


async def test_yeti_power_meter_adapter_reports_energy(rig: tuple[YetiEmulator, YetiBoard]) -> None:
    emulator, board = rig
    meter = board.power_meter()
    async with trio.open_nursery() as nursery:
        await nursery.start(meter.run)
        emulator.update_ev(plugged=True, max_current_a=10.0)
        await board.offer_current(16)
        await board.allow_power(True)
        with trio.fail_after(10):
            async for sample in meter.events():
                if sample.power_w:  # type: ignore[union-attr]
                    break
        latest = meter.latest()
        assert latest is not None
        assert latest.current_a.l1 == pytest.approx(10.0)
        assert latest.power_w == pytest.approx(3 * 230.0 * 10.0)
        nursery.cancel_scope.cancel()


async def test_yeti_commands_without_an_open_port_raise_controller_error() -> None:
    board = YetiBoard("/dev/null-no-such-port")
    with pytest.raises(ControllerError) as info:
        await board.offer_current(16)
    assert info.value.code is FaultCode.BOARD_COMMUNICATION


async def test_yeti_missing_port_is_a_fault_event_not_a_crash() -> None:
    board = YetiBoard("/dev/no-such-tty-for-evstation", reopen_interval=0.05)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(STEP_TIMEOUT):
            await nursery.start(board.run)
            event = await board.events().__anext__()
        assert isinstance(event, FaultRaised)
        assert event.code is FaultCode.BOARD_COMMUNICATION
        nursery.cancel_scope.cancel()


async def test_yeti_keepalive_during_the_fault_emit_does_not_blind_the_watchdog(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # No port needed: the watchdog and the keep-alive handler only touch the board's state and events.
    board = YetiBoard("/dev/unused", keepalive_timeout=5.0)
    board._last_heard = trio.current_time()
    filler = FaultCleared(FaultCode.DIODE_FAULT)
    while True:  # a full event channel makes every emit wait, which opens the window
        try:
            board._events_send.send_nowait(filler)
        except trio.WouldBlock:
            break

    def drain() -> list[ControllerEvent]:
        out: list[ControllerEvent] = []
        while True:
            try:
                event = board._events_recv.receive_nowait()
            except trio.WouldBlock:
                return [e for e in out if e != filler]
            out.append(event)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(board._watchdog)
        await trio.sleep(6)  # timed out; the watchdog now waits to emit its fault
        nursery.start_soon(board._handle, pb.McuToEverest(telemetry=pb.Telemetry()))  # speaks again
        await trio.sleep(0.5)
        assert drain() == [
            FaultRaised(FaultCode.BOARD_COMMUNICATION, "no frame from the MCU for 5 s"),
            FaultCleared(FaultCode.BOARD_COMMUNICATION),
        ]
        await trio.sleep(10)  # ... and falls silent again: that must be reported again
        assert drain() == [FaultRaised(FaultCode.BOARD_COMMUNICATION, "no frame from the MCU for 5 s")]
        nursery.cancel_scope.cancel()


def _report(total_wh: float) -> pb.PowerMeter:
    return pb.PowerMeter(totalWattHr=total_wh, vrmsL1=230.0, irmsL1=10.0, wattL1=2300.0)


async def test_yeti_board_meter_never_publishes_energy_going_backwards() -> None:
    send, receive = trio.open_memory_channel[pb.PowerMeter](8)
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    meter = YetiPowerMeter(receive, wall_clock=lambda: stamp)
    for total in (1000.0, 900.0, 1100.0):
        send.send_nowait(_report(total))
    async with trio.open_nursery() as nursery:
        await nursery.start(meter.run)
        events = meter.events()
        with trio.fail_after(STEP_TIMEOUT):
            seen = [await events.receive() for _ in range(5)]
        nursery.cancel_scope.cancel()
    samples = [e for e in seen if isinstance(e, MeterSample)]
    assert [s.energy_import_wh for s in samples] == [1000.0, 1000.0, 1100.0]  # held, not trusted
    assert samples[0].timestamp == stamp and samples[0].power_w == pytest.approx(2300.0)
    assert [type(e) for e in seen] == [MeterSample, MeterFault, MeterSample, MeterRecovered, MeterSample]
    assert seen[1] == MeterFault(FaultCode.METER_ENERGY_BACKWARDS, "import 900.000 Wh < trusted 1000.000 Wh")
    latest = meter.latest()
    assert latest is not None and latest.energy_import_wh == 1100.0

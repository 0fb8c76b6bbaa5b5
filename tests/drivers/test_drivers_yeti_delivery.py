"""The Yeti MCU acknowledges nothing and queues two frames: the driver re-sends until the MCU's reports
agree, and runs the IEC 61851 safe stop when its task is cancelled. Against the emulator, real pty."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from board_session_helpers import COMPLETE_SAFE_STOP, STEP_TIMEOUT, expect

from evstation.drivers.api import ContactorChanged, PilotChanged, PilotState
from evstation.drivers.boards.yeti import PWM_STATE_F, PWM_X1, YetiBoard
from evstation.drivers.safe_stop import SafeStopTimeouts, Step
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.yeti_emulator import YetiEmulator, open_yeti_emulator

FAST_STOP = SafeStopTimeouts(ev_stop_s=0.6, contactor_s=0.4, deadline_s=5.0)


def _board(emulator: YetiEmulator, **options: object) -> YetiBoard:
    settings: dict[str, object] = {
        "keepalive_interval": 0.1,
        "keepalive_timeout": 1.0,
        "reset_wait": 0.5,
        "resend_interval": 0.15,
        "refresh_interval": 0.6,
        "frame_gap": 0.005,
        "safe_stop": FAST_STOP,
    }
    settings.update(options)
    return YetiBoard(emulator.port_path, **settings)  # type: ignore[arg-type]


@asynccontextmanager
async def board_task(board: YetiBoard) -> AsyncIterator[trio.CancelScope]:
    """Run the board; cancelling the yielded scope is the station stopping (SIGTERM, a crash)."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(STEP_TIMEOUT):
            await nursery.start(board.run)
        yield nursery.cancel_scope


async def _charging(emulator: YetiEmulator, board: YetiBoard) -> None:
    emulator.update_ev(plugged=True)
    await board.set_lock(True)
    await board.offer_current(16)
    await board.allow_power(True)
    await expect(board.events(), ContactorChanged(True))  # the driver has heard it, not only the MCU


async def test_yeti_lost_pwm_and_permission_frames_are_sent_again() -> None:
    async with open_yeti_emulator(SimEv(plugged=True), report_interval=0.05) as emulator:
        board = _board(emulator)
        async with board_task(board) as scope:
            events = board.events()
            await expect(events, PilotChanged(PilotState.B))
            emulator.drop_next_host_frames(1)
            await board.offer_current(16)  # this frame is lost ...
            await expect(events, PilotChanged(PilotState.C))  # ... and sent again
            assert emulator.duty == 2666
            emulator.drop_next_host_frames(1)
            await board.allow_power(True)
            await expect(events, ContactorChanged(True))
            assert emulator.host_frames_dropped == 2
            assert board.stats.state_resends >= 1
            scope.cancel()


async def test_yeti_start_up_burst_into_a_two_frame_queue_still_reaches_the_wanted_state() -> None:
    # A slow MCU (0.1 s per frame) and no pacing: a burst of commands overflows its two-frame queue.
    ev = SimEv(plugged=True)
    async with open_yeti_emulator(ev, report_interval=0.05, rx_frame_time=0.1) as emulator:
        board = _board(
            emulator, frame_gap=0.0, reset_on_start=False, resend_interval=0.3, keepalive_interval=1.0
        )
        async with board_task(board) as scope:
            await board.offer_current(10)
            await board.allow_power(True)
            with trio.fail_after(10):
                await emulator.wait_until(lambda: emulator.relay_closed and emulator.duty == 1666)
            assert emulator.host_frames_dropped > 0  # the queue really did drop frames
            # (The lock is not in this promise: it is never reported, so it is sent LOCK_SENDS times
            # and no more, since every frame runs the lock motor again; an overload can lose all.)
            scope.cancel()


async def test_yeti_state_is_confirmed_by_telemetry_then_only_refreshed() -> None:
    async with open_yeti_emulator(SimEv(plugged=True), report_interval=0.05) as emulator:
        board = _board(emulator)
        async with board_task(board) as scope:
            await board.offer_current(16)
            await board.allow_power(True)
            with trio.fail_after(STEP_TIMEOUT):
                await emulator.wait_until(lambda: emulator.relay_closed)
                while not board.state_confirmed():
                    await board.next_report()
            # Confirmed: PWM on the pilot (telemetry low level at -12 V) and the relay closed.
            telemetry = board.telemetry
            assert telemetry is not None and telemetry.cp_voltage_lo < telemetry.cp_voltage_hi
            before = len(emulator.commands("pwm_duty_cycle"))
            await trio.sleep(0.65)  # about one refresh interval, several resend intervals
            assert len(emulator.commands("pwm_duty_cycle")) - before <= 2
            scope.cancel()


async def test_yeti_safe_stop_withdraws_pwm_waits_for_b_opens_then_unlocks() -> None:
    async with open_yeti_emulator(report_interval=0.05) as emulator:
        board = _board(emulator)
        async with board_task(board) as scope:
            await _charging(emulator, board)
            mark = len(emulator.host_log)
            scope.cancel()
        # The board task is gone; what did the MCU see after the stop began?
        after = [(c.member, c.value) for c in emulator.host_log[mark:] if c.member != "keep_alive"]
        members = [m for m, _ in after]
        assert after[0] == ("pwm_duty_cycle", PWM_X1)
        first_no = after.index(("allow_power_on", False))
        first_unlock = after.index(("connector_lock", False))
        assert 0 < first_no < first_unlock  # offer withdrawn, then permission, then the lock
        assert ("pwm_duty_cycle", PWM_STATE_F) not in after  # F only for faults
        assert "reset" not in members
        assert not emulator.relay_closed and not emulator.lock_requested
        assert emulator.duty == PWM_X1
        report = board.last_safe_stop
        assert report is not None and report.complete
        assert report.steps == COMPLETE_SAFE_STOP


async def test_yeti_safe_stop_uses_state_f_only_when_the_ev_keeps_drawing() -> None:
    ev = SimEv(ignores_pwm_stop=True)
    async with open_yeti_emulator(ev, report_interval=0.05) as emulator:
        board = _board(emulator)
        async with board_task(board) as scope:
            await _charging(emulator, board)
            scope.cancel()
        report = board.last_safe_stop
        assert report is not None and report.complete
        # The EV stays in C after X1; the firmware keeps its relay closed for 7 s without PWM, so the
        # permission alone does not open it in time: that is a fault, answered with state F.
        assert Step.EV_STOP_TIMED_OUT in report.steps
        assert report.steps.index(Step.CONTACTOR_STUCK) < report.steps.index(Step.STATE_F)
        assert report.steps[-1] is Step.LOCK_RELEASED
        assert emulator.duty == PWM_STATE_F and not emulator.relay_closed
        assert not emulator.lock_requested


async def test_yeti_safe_stop_keeps_the_lock_when_the_relay_never_opens() -> None:
    async with open_yeti_emulator(report_interval=0.05) as emulator:
        board = _board(emulator)
        async with board_task(board) as scope:
            await _charging(emulator, board)
            emulator.inject(relay_welded=True)
            scope.cancel()
        report = board.last_safe_stop
        assert report is not None and report.complete
        assert report.steps[-1] is Step.LOCK_KEPT
        assert emulator.lock_requested  # never released over a live contactor
        assert emulator.relay_closed


async def test_yeti_safe_stop_is_bounded_by_its_deadline_when_the_mcu_is_silent() -> None:
    async with open_yeti_emulator(report_interval=0.05) as emulator:
        board = _board(emulator, safe_stop=SafeStopTimeouts(ev_stop_s=5, contactor_s=5, deadline_s=0.5))
        async with board_task(board) as scope:
            await _charging(emulator, board)
            emulator.go_silent()
            started = trio.current_time()
            scope.cancel()
        assert trio.current_time() - started < 2.0
        report = board.last_safe_stop
        assert report is not None and not report.complete
        assert report.steps[-1] is Step.DEADLINE

"""The phyVERSO driver (one link, two connectors) against the phyVERSO MCU emulator over a real pty."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator

import pytest
import trio
from board_session_helpers import COMPLETE_SAFE_STOP, STEP_TIMEOUT, expect, expect_all

from evstation.drivers.api import (
    BoardReset,
    CableRating,
    ChargeController,
    ContactorChanged,
    ControllerError,
    FaultCleared,
    FaultCode,
    FaultRaised,
    LockChanged,
    LockState,
    PilotChanged,
    PilotState,
)
from evstation.drivers.boards.phyverso import PWM_STATE_F, PWM_X1, PhyVersoConnector, PhyVersoLink
from evstation.drivers.boards.proto import phyverso_pb2 as pb
from evstation.drivers.safe_stop import SafeStopTimeouts, Step
from evstation.drivers.sim.phyverso_emulator import PhyVersoEmulator, open_phyverso_emulator

Rig = tuple[PhyVersoEmulator, PhyVersoLink, PhyVersoConnector, PhyVersoConnector]
FAST_SAFE_STOP = SafeStopTimeouts(ev_stop_s=1.0, contactor_s=0.5, deadline_s=3.0)


def make_link(path: str) -> PhyVersoLink:
    return PhyVersoLink(
        path,
        hw_revision=pb.HW_REV_B,
        keepalive_interval=0.1,
        keepalive_timeout=0.5,
        reset_wait=0.5,
        config_wait=1.0,
        resend_interval=0.15,
        refresh_interval=0.5,
        safe_stop=FAST_SAFE_STOP,
    )


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async with open_phyverso_emulator(report_interval=0.05, host_timeout=0.6) as emulator:
        link = make_link(emulator.port_path)
        one = link.connector(1, lock=pb.MOTOR_LOCK_HELLA, has_socket=True)
        two = link.connector(2)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(STEP_TIMEOUT):
                await nursery.start(link.run)
                await nursery.start(one.run)
                await nursery.start(two.run)
            yield emulator, link, one, two
            nursery.cancel_scope.cancel()


async def test_phyverso_connectors_satisfy_the_controller_protocol(rig: Rig) -> None:
    _, _, one, two = rig
    assert isinstance(one, ChargeController)
    assert isinstance(two, ChargeController)


async def test_phyverso_handshake_resets_and_configures_the_mcu(rig: Rig) -> None:
    emulator, link, _, _ = rig
    assert link.configured.is_set()
    assert emulator.configured
    assert emulator.commands("reset") == [True]
    assert link.stats.unrequested_resets == 0  # the reset we asked for is no BoardReset
    config = emulator.config
    assert config is not None
    assert config.hw_rev == pb.HW_REV_B
    assert [port.type for port in config.chargeport_config] == [pb.AC, pb.AC]
    assert config.chargeport_config[0].lock.type == pb.MOTOR_LOCK_HELLA
    assert config.chargeport_config[0].has_socket
    assert config.chargeport_config[1].lock.type == pb.MOTOR_LOCK_NONE
    # Keep-alives go out both ways; ours are addressed to the board, not to a port.
    with trio.fail_after(STEP_TIMEOUT):
        await emulator.wait_until(lambda: len(emulator.commands("keep_alive", connector=0)) >= 3)
    assert link.mcu_info is not None and link.mcu_info.configuration_done


async def test_phyverso_session_on_connector_1_with_coil_and_lock_confirmed(rig: Rig) -> None:
    emulator, _, one, _ = rig
    events = one.events()
    with trio.fail_after(10):
        await expect(events, PilotChanged(PilotState.A))
        emulator.update_ev(1, plugged=True, cable_max_current_a=32)
        await expect_all(events, PilotChanged(PilotState.B), CableRating(32))

        await one.set_lock(True)
        await expect(events, LockChanged(LockState.LOCKED))
        await one.offer_current(16)
        await expect(events, PilotChanged(PilotState.C))
        assert emulator.ports[1].duty == 2666  # 16 A -> 26.67 %, rounded down in 0.01 % units

        await one.allow_power(True)
        await expect(events, ContactorChanged(True))
        assert emulator.commands("set_coil_state_request", connector=1)[-1] == pb.CoilState(
            coil_type=pb.COIL_AC, coil_state=True
        )
        assert emulator.current_a(1) == pytest.approx(16.0, abs=0.01)
        await emulator.wait_until(one.state_confirmed)

        await one.allow_power(False)
        await expect(events, ContactorChanged(False))
        await one.offer_current(None)
        await expect(events, PilotChanged(PilotState.B))
        assert emulator.ports[1].duty == PWM_X1
        await one.set_lock(False)
        await expect(events, LockChanged(LockState.UNLOCKED))
        emulator.update_ev(1, plugged=False)
        await expect_all(events, PilotChanged(PilotState.A), CableRating(None))


async def test_phyverso_commands_for_connector_2_never_reach_connector_1(rig: Rig) -> None:
    emulator, _, one, two = rig
    events_two = two.events()
    with trio.fail_after(10):
        await expect(events_two, PilotChanged(PilotState.A))
        emulator.update_ev(2, plugged=True)
        await expect(events_two, PilotChanged(PilotState.B))
        await two.offer_current(10)
        await expect(events_two, PilotChanged(PilotState.C))
        await two.allow_power(True)
        await expect(events_two, ContactorChanged(True))
        await two.set_unavailable(True)
        await expect(events_two, PilotChanged(PilotState.F))
    assert emulator.ports[2].duty == PWM_STATE_F
    # Connector 1 was never told anything but its own resends of its (idle) wanted state.
    assert emulator.ports[1].duty == PWM_X1
    assert not emulator.ports[1].coil
    assert set(emulator.commands("pwm_duty_cycle", connector=1)) == {PWM_X1}
    assert not any(c.coil_state for c in emulator.commands("set_coil_state_request", connector=1))  # type: ignore[attr-defined]
    assert one.pilot is PilotState.A
    assert one.coil is False


async def test_phyverso_error_flags_become_faults_and_clear(rig: Rig) -> None:
    emulator, _, one, two = rig
    with trio.fail_after(10):
        emulator.inject(2, rcd_tripped=True)
        await expect(two.events(), FaultRaised(FaultCode.GROUND_FAILURE, "error_flags.rcd_triggered"))
        emulator.inject(2, rcd_tripped=False)
        await expect(two.events(), FaultCleared(FaultCode.GROUND_FAILURE))
        emulator.inject(1, cp_shorted=True)
        await expect_all(
            one.events(),
            FaultRaised(FaultCode.PILOT_FAULT, "error_flags.cp_signal_fault"),
            PilotChanged(PilotState.E),
        )
        emulator.inject(1, cp_shorted=False)
        await expect(one.events(), FaultCleared(FaultCode.PILOT_FAULT))
    assert one.events() is not two.events()


async def test_phyverso_lost_frames_are_sent_again_until_confirmed(rig: Rig) -> None:
    emulator, link, one, _ = rig
    events = one.events()
    emulator.update_ev(1, plugged=True)
    with trio.fail_after(10):
        await expect(events, PilotChanged(PilotState.B))
        emulator.drop_next_host_frames(1)
        await one.offer_current(20)  # lost
        await expect(events, PilotChanged(PilotState.C))
        emulator.drop_next_host_frames(1)
        await one.allow_power(True)  # lost
        await expect(events, ContactorChanged(True))
    assert emulator.host_frames_dropped == 2
    assert link.stats.state_resends >= 1


async def test_phyverso_silent_mcu_is_a_communication_fault_on_both_connectors(rig: Rig) -> None:
    emulator, _, one, two = rig
    with trio.fail_after(10):
        emulator.go_silent(True)
        for connector in (one, two):
            event = await expect_fault(connector)
            assert event.code is FaultCode.BOARD_COMMUNICATION
        emulator.go_silent(False)
        await expect(one.events(), FaultCleared(FaultCode.BOARD_COMMUNICATION))
        await expect(two.events(), FaultCleared(FaultCode.BOARD_COMMUNICATION))


async def expect_fault(connector: PhyVersoConnector) -> FaultRaised:
    with trio.fail_after(STEP_TIMEOUT):
        async for event in connector.events():
            if isinstance(event, FaultRaised):
                return event
    raise AssertionError("no fault")


async def test_phyverso_bad_frames_are_counted_and_skipped(rig: Rig) -> None:
    emulator, link, one, _ = rig
    emulator.corrupt_next_frames(3)
    with trio.fail_after(STEP_TIMEOUT):
        await emulator.wait_corruption_sent()
        emulator.update_ev(1, plugged=True)
        await expect(one.events(), PilotChanged(PilotState.B))
    assert link.stats.crc_errors == 3


async def test_phyverso_spurious_reset_reconfigures_and_withdraws_the_permission(rig: Rig) -> None:
    emulator, link, one, two = rig
    emulator.update_ev(1, plugged=True)
    with trio.fail_after(10):
        await expect(one.events(), PilotChanged(PilotState.B))
        await one.offer_current(16)
        await one.allow_power(True)
        await expect(one.events(), ContactorChanged(True))
        emulator.spurious_reset()
        await expect(one.events(), BoardReset("watchdog"))
        await expect(two.events(), BoardReset("watchdog"))
        await emulator.wait_until(lambda: emulator.configured)
        # PWM comes back, the coil stays open until the runtime allows power again.
        await emulator.wait_until(lambda: emulator.ports[1].duty == 2666)
    assert link.stats.unrequested_resets == 1
    assert link.stats.config_responses >= 2
    assert not emulator.ports[1].coil


async def test_phyverso_safe_stop_order_on_cancellation() -> None:
    # A connector run of its own, cancelled alone (its EVSE's task crashed): only it stops.
    async with open_phyverso_emulator(report_interval=0.05) as emu:
        link = make_link(emu.port_path)
        first = link.connector(1, lock=pb.MOTOR_LOCK_HELLA, has_socket=True)
        second = link.connector(2)
        async with trio.open_nursery() as outer:
            await outer.start(link.run)
            await outer.start(second.run)
            with trio.fail_after(10):
                async with trio.open_nursery() as inner:
                    await inner.start(first.run)
                    emu.update_ev(1, plugged=True)
                    emu.update_ev(2, plugged=True)
                    await first.set_lock(True)
                    await first.offer_current(16)
                    await first.allow_power(True)
                    await second.offer_current(16)
                    await second.allow_power(True)
                    await emu.wait_until(lambda: emu.ports[1].coil and emu.ports[2].coil)
                    await emu.wait_until(lambda: emu.ports[1].lock_state == pb.LOCKED)
                    start = len(emu.host_log)
                    inner.cancel_scope.cancel()
            report = first.last_safe_stop
            assert report is not None and report.steps == COMPLETE_SAFE_STOP
            members = ("pwm_duty_cycle", "set_coil_state_request", "connector_lock")
            sent = [c for c in emu.host_log[start:] if c.connector == 1]
            moves = [(c.member, c.value) for c in sent if c.member in members]
            first_x1 = moves.index(("pwm_duty_cycle", PWM_X1))
            coil_open = pb.CoilState(coil_type=pb.COIL_AC, coil_state=False)
            coil_off = moves.index(("set_coil_state_request", coil_open))
            unlock = moves.index(("connector_lock", False))
            assert first_x1 < coil_off < unlock
            assert not emu.ports[1].coil and emu.ports[1].lock_state == pb.UNLOCKED
            assert emu.ports[2].coil  # the other connector charges on
            assert second.last_safe_stop is None
            outer.cancel_scope.cancel()
    assert second.last_safe_stop is not None and second.last_safe_stop.complete


async def test_phyverso_safe_stop_waits_for_an_ev_that_keeps_drawing(rig: Rig) -> None:
    emulator, _, one, _ = rig
    emulator.update_ev(1, plugged=True, ignores_pwm_stop=True)
    with trio.fail_after(10):
        await one.offer_current(16)
        await one.allow_power(True)
        await expect(one.events(), ContactorChanged(True))
        await one.safe_stop()
    report = one.last_safe_stop
    assert report is not None
    assert report.steps[:2] == [Step.OFFER_WITHDRAWN, Step.EV_STOP_TIMED_OUT]
    assert Step.CONTACTOR_CONFIRMED_OPEN in report.steps
    assert not emulator.ports[1].coil


async def test_phyverso_commands_fail_cleanly_without_a_port() -> None:
    link = PhyVersoLink("/dev/nonexistent-phyverso")
    connector = link.connector(1)
    with pytest.raises(ControllerError) as info:
        await connector.offer_current(16)
    assert info.value.code is FaultCode.BOARD_COMMUNICATION
    with pytest.raises(ValueError, match="1 or 2"):
        link.connector(3)
    with pytest.raises(ValueError, match="already taken"):
        link.connector(1)


async def test_phyverso_mcu_heartbeat_flag_is_a_communication_fault(rig: Rig) -> None:
    emulator, link, one, two = rig
    emulator.update_ev(1, plugged=True)
    with trio.fail_after(10):
        await one.offer_current(16)
        await one.allow_power(True)
        await emulator.wait_until(lambda: emulator.ports[1].coil)
        # The host's keep-alives stop reaching the MCU (a TX wire broken): it flags it and stops.
        emulator.drop_next_host_frames(10_000)
        event = await expect_fault(one)
        heartbeat_lost = "the MCU heard no keep-alive from the station"
        assert event == FaultRaised(FaultCode.BOARD_COMMUNICATION, heartbeat_lost)
        await emulator.wait_until(lambda: not emulator.ports[1].coil and emulator.ports[1].duty == 0)
        emulator.keep_host_frames()
        await expect(one.events(), FaultCleared(FaultCode.BOARD_COMMUNICATION))
    assert link.stats.frames_ok > 0
    assert two is not one


_SIGKILL_HOST = textwrap.dedent(
    """
    import sys, trio
    from evstation.drivers.boards.phyverso import PhyVersoLink
    async def main(path):
        link = PhyVersoLink(path, keepalive_interval=0.1, reset_wait=0.5, config_wait=1.0)
        one = link.connector(1)
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await nursery.start(one.run)
            await one.offer_current(16)
            await one.allow_power(True)
            print("charging", flush=True)
            await trio.sleep_forever()
    trio.run(main, sys.argv[1])
    """
)


async def test_phyverso_mcu_stops_charging_by_itself_after_the_host_is_killed() -> None:
    async with open_phyverso_emulator(report_interval=0.05, host_timeout=0.6) as emulator:
        emulator.update_ev(1, plugged=True)
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", _SIGKILL_HOST, emulator.port_path], stdout=subprocess.PIPE
        )
        try:
            with trio.fail_after(15):
                await emulator.wait_until(lambda: emulator.ports[1].coil)
                os.kill(process.pid, signal.SIGKILL)
                await process.wait()
                await emulator.wait_until(lambda: emulator.heartbeat_timeout)
                await emulator.wait_until(lambda: not emulator.ports[1].coil)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert emulator.ports[1].duty == PWM_STATE_F
    assert emulator.current_a(1) == 0.0

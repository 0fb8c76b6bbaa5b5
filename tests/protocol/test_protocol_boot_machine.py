"""The pure boot state machine: 2.0.1 B01-B03 and 1.6 Core BootNotification timing and gating."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evstation.protocol.boot import (
    DEFAULT_RETRY_INTERVAL_S,
    TRANSITIONS,
    V16_DEFAULT_GATES,
    V16_REMOTE_TX_GATES,
    V201_CONFIGURATION_GATES,
    V201_DEFAULT_GATES,
    V201_REMOTE_TX_GATES,
    V201_TRIGGER_GATES,
    BootGates,
    BootInput,
    BootMachine,
    BootState,
    Gate,
    IllegalBootTransition,
    default_gates,
    gate_for,
)
from evstation.protocol.versions import OcppVersion


def test_b01_fr_01_first_boot_is_due_at_once_and_accepted_sets_heartbeat() -> None:
    machine = BootMachine()
    assert machine.boot_due(0.0)
    machine.sent()
    assert not machine.boot_due(0.0)
    decision = machine.answered("Accepted", 300, now=5.0)
    assert decision.state is BootState.ACCEPTED
    assert decision.heartbeat_interval_s == 300
    assert decision.next_boot_at is None
    assert not machine.boot_due(1e9)


def test_b01_accepted_with_interval_zero_keeps_configured_heartbeat() -> None:
    machine = BootMachine()
    machine.sent()
    assert machine.answered("Accepted", 0, now=0.0).heartbeat_interval_s is None


def test_b02_fr_01_pending_retries_after_the_interval() -> None:
    machine = BootMachine()
    machine.sent()
    decision = machine.answered("Pending", 20, now=100.0)
    assert decision.next_boot_at == 120.0
    assert not machine.boot_due(119.9)
    assert machine.boot_due(120.0)
    machine.sent()
    assert machine.answered("Accepted", 60, now=121.0).state is BootState.ACCEPTED


def test_b03_fr_01_rejected_interval_zero_uses_the_default() -> None:
    machine = BootMachine()
    machine.sent()
    assert machine.answered("Rejected", 0, now=10.0).next_boot_at == 10.0 + DEFAULT_RETRY_INTERVAL_S


def test_failed_boot_retries_at_the_default_interval() -> None:
    machine = BootMachine(default_retry_s=7.0)
    machine.sent()
    assert machine.failed(now=3.0).next_boot_at == 10.0
    assert machine.state is BootState.REJECTED


def test_b02_fr_02_nothing_but_boot_may_be_sent_before_accepted() -> None:
    machine = BootMachine()
    assert machine.may_send("BootNotification")
    assert not machine.may_send("Heartbeat")
    machine.sent()
    machine.answered("Pending", 1, now=0.0)
    assert not machine.may_send("StatusNotification")
    machine.sent()
    machine.answered("Accepted", 1, now=0.0)
    assert machine.may_send("StatusNotification")


def test_b01_reconnect_after_accepted_needs_no_new_boot() -> None:
    machine = BootMachine()
    machine.sent()
    machine.answered("Accepted", 30, now=0.0)
    machine.reconnected()
    assert machine.state is BootState.ACCEPTED
    assert not machine.boot_due(1e6)


def test_boot_lost_in_flight_is_sent_again_after_reconnect() -> None:
    machine = BootMachine()
    machine.sent()
    machine.reconnected()
    assert machine.boot_due(0.0)


def test_b03_fr_02_rejected_retry_time_survives_a_reconnect() -> None:
    machine = BootMachine()
    machine.sent()
    machine.answered("Rejected", 50, now=0.0)
    machine.reconnected()
    assert not machine.boot_due(49.0)
    assert machine.boot_due(50.0)


@pytest.mark.parametrize("answer", ["Accepted", "Rejected"])
def test_b10_fr_10_a_switch_of_network_profile_boots_again_at_once(answer: str) -> None:
    machine = BootMachine()
    machine.sent()
    machine.answered(answer, 50, now=0.0)
    machine.profile_switched()
    machine.reconnected()  # the session's own call on the new connection changes nothing more
    assert machine.state is BootState.NOT_SENT
    assert machine.boot_due(1.0)


def test_answer_without_a_boot_in_flight_is_a_local_bug() -> None:
    with pytest.raises(IllegalBootTransition):
        BootMachine().answered("Accepted", 10, now=0.0)


@pytest.mark.parametrize(
    ("state", "gates", "gate"),
    [
        (BootState.PENDING, V201_CONFIGURATION_GATES, Gate.SERVE),  # B02.FR.01
        (BootState.PENDING, V201_TRIGGER_GATES, Gate.SERVE),
        (BootState.PENDING, V201_REMOTE_TX_GATES, Gate.REJECT),
        (BootState.PENDING, V201_DEFAULT_GATES, Gate.SECURITY_ERROR),
        (BootState.REJECTED, V201_CONFIGURATION_GATES, Gate.SECURITY_ERROR),
        (BootState.REJECTED, V201_TRIGGER_GATES, Gate.SERVE),
        (BootState.NOT_SENT, V201_TRIGGER_GATES, Gate.SERVE),
        (BootState.ACCEPTED, V201_DEFAULT_GATES, Gate.SERVE),
    ],
)
def test_b02_b03_gates_csms_requests_v201(state: BootState, gates: BootGates, gate: Gate) -> None:
    assert gate_for(state, gates) is gate


def test_v16_4_2_pending_serves_all_but_remote_start_stop_and_rejected_answers_nothing() -> None:
    assert default_gates(OcppVersion.V16) == V16_DEFAULT_GATES
    assert gate_for(BootState.PENDING, V16_DEFAULT_GATES) is Gate.SERVE  # Reset, ChangeAvailability ...
    assert gate_for(BootState.PENDING, V16_REMOTE_TX_GATES) is Gate.REJECT
    assert gate_for(BootState.REJECTED, V16_DEFAULT_GATES) is Gate.IGNORE
    assert gate_for(BootState.REJECTED, V16_REMOTE_TX_GATES) is Gate.IGNORE


def test_b02_fr_09_pending_station_may_send_what_the_csms_asked_for() -> None:
    machine = BootMachine()
    assert not machine.may_send("NotifyReport", requested=True)  # no answer yet
    machine.sent()
    machine.answered("Pending", 10, now=0.0)
    assert machine.may_send("NotifyReport", requested=True)
    assert not machine.may_send("NotifyReport")
    machine.sent()
    machine.answered("Rejected", 10, now=1.0)
    assert not machine.may_send("NotifyReport", requested=True)


@given(st.lists(st.sampled_from(list(BootInput)), max_size=20))
def test_every_input_sequence_either_follows_the_table_or_raises(inputs: list[BootInput]) -> None:
    machine = BootMachine()
    for event in inputs:
        before = machine.state
        expected = TRANSITIONS.get((before, event))
        try:
            if event is BootInput.SENT:
                machine.sent()
            elif event is BootInput.FAILED:
                machine.failed(now=0.0)
            elif event is BootInput.RECONNECTED:
                machine.reconnected()
            elif event is BootInput.PROFILE_SWITCHED:
                machine.profile_switched()
            else:
                machine.answered(event.value, 10, now=0.0)
        except IllegalBootTransition:
            assert expected is None
            assert machine.state is before
        else:
            assert machine.state is expected

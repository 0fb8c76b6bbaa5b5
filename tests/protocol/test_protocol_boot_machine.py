"""The pure boot state machine: 2.0.1 B01-B03 and 1.6 Core BootNotification timing and gating."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evstation.protocol.boot import (
    DEFAULT_RETRY_INTERVAL_S,
    TRANSITIONS,
    BootInput,
    BootMachine,
    BootState,
    Gate,
    IllegalBootTransition,
    gate_csms_request,
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


def test_answer_without_a_boot_in_flight_is_a_local_bug() -> None:
    with pytest.raises(IllegalBootTransition):
        BootMachine().answered("Accepted", 10, now=0.0)


@pytest.mark.parametrize(
    ("state", "action", "gate"),
    [
        (BootState.PENDING, "GetVariables", Gate.SERVE),
        (BootState.PENDING, "SetVariables", Gate.SERVE),
        (BootState.PENDING, "TriggerMessage", Gate.SERVE),
        (BootState.PENDING, "RequestStartTransaction", Gate.REJECT),
        (BootState.PENDING, "RequestStopTransaction", Gate.REJECT),
        (BootState.PENDING, "Reset", Gate.SECURITY_ERROR),
        (BootState.REJECTED, "GetVariables", Gate.SECURITY_ERROR),
        (BootState.REJECTED, "TriggerMessage", Gate.SERVE),
        (BootState.ACCEPTED, "Reset", Gate.SERVE),
    ],
)
def test_b02_fr_09_pending_gates_csms_requests_v201(state: BootState, action: str, gate: Gate) -> None:
    assert gate_csms_request(state, action, OcppVersion.V201) is gate


def test_v16_pending_serves_configuration_and_rejects_remote_start() -> None:
    assert gate_csms_request(BootState.PENDING, "ChangeConfiguration", OcppVersion.V16) is Gate.SERVE
    assert gate_csms_request(BootState.PENDING, "RemoteStartTransaction", OcppVersion.V16) is Gate.REJECT
    assert gate_csms_request(BootState.PENDING, "Reset", OcppVersion.V16) is Gate.SECURITY_ERROR


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
            else:
                machine.answered(event.value, 10, now=0.0)
        except IllegalBootTransition:
            assert expected is None
            assert machine.state is before
        else:
            assert machine.state is expected

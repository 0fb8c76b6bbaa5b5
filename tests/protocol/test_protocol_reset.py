"""Reset rules (protocol.reset): the answer, what ends now, when a scheduled reset is due, the boot
reason. 2.0.1 B11 / B12, 1.6 Core Reset."""

from __future__ import annotations

from evstation.protocol.reset import (
    STATION,
    ResetKind,
    ResetStatus,
    boot_reason,
    decide_reset,
    due_scopes,
    stop_reason,
)
from evstation.protocol.transactions import ended_trigger

EVSES = (1, 2)


def test_b11_fr_01_idle_station_reset_is_accepted_and_runs_now() -> None:
    for kind in (ResetKind.IMMEDIATE, ResetKind.ON_IDLE):
        decision = decide_reset(kind, None, evses=EVSES, busy=())
        assert decision.status is ResetStatus.ACCEPTED
        assert decision.scope is STATION
        assert decision.perform_now
        assert decision.end_now == frozenset()


def test_b11_unknown_evse_is_rejected() -> None:
    for evse_id in (0, 3, 99):
        assert decide_reset(ResetKind.IMMEDIATE, evse_id, evses=EVSES, busy=()).status is ResetStatus.REJECTED


def test_b12_fr_01_fr_03_on_idle_with_a_transaction_is_scheduled() -> None:
    decision = decide_reset(ResetKind.ON_IDLE, None, evses=EVSES, busy=(2,))
    assert (decision.status, decision.scope, decision.perform_now) == (ResetStatus.SCHEDULED, STATION, False)
    assert decision.end_now == frozenset()


def test_b12_fr_07_evse_on_idle_waits_only_for_its_own_transaction() -> None:
    assert decide_reset(ResetKind.ON_IDLE, 1, evses=EVSES, busy=(1,)).status is ResetStatus.SCHEDULED
    other = decide_reset(ResetKind.ON_IDLE, 1, evses=EVSES, busy=(2,))
    assert (other.status, other.scope, other.perform_now) == (ResetStatus.ACCEPTED, 1, True)


def test_b12_fr_02_fr_04_immediate_ends_every_transaction_with_immediate_reset() -> None:
    decision = decide_reset(ResetKind.IMMEDIATE, None, evses=EVSES, busy=(1, 2))
    assert decision.status is ResetStatus.ACCEPTED
    assert decision.end_now == {1, 2}
    assert stop_reason(ResetKind.IMMEDIATE) == "ImmediateReset"
    assert ended_trigger("ImmediateReset") == "ResetCommand"


def test_b12_fr_08_evse_immediate_ends_only_that_evse() -> None:
    decision = decide_reset(ResetKind.IMMEDIATE, 2, evses=EVSES, busy=(1, 2))
    assert (decision.status, decision.scope, decision.end_now) == (ResetStatus.ACCEPTED, 2, frozenset({2}))


def test_v16_hard_and_soft_are_accepted_and_end_with_their_reason() -> None:
    for kind, reason in ((ResetKind.HARD, "HardReset"), (ResetKind.SOFT, "SoftReset")):
        decision = decide_reset(kind, None, evses=EVSES, busy=(1,))
        assert (decision.status, decision.end_now) == (ResetStatus.ACCEPTED, frozenset({1}))
        assert stop_reason(kind) == reason
    assert stop_reason(ResetKind.ON_IDLE) is None


def test_scheduled_resets_are_due_when_their_scope_is_idle() -> None:
    assert due_scopes({STATION}, busy=(1,)) == []
    assert due_scopes({STATION}, busy=()) == [STATION]
    assert due_scopes({1, 2}, busy=(2,)) == [1]
    assert due_scopes({2, STATION, 1}, busy=()) == [STATION, 1, 2]


def test_boot_reason_after_a_reset() -> None:
    assert boot_reason(scheduled=False) == "RemoteReset"
    assert boot_reason(scheduled=True) == "ScheduledReset"

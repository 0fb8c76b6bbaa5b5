"""ChangeAvailability scheduling rules (2.0.1 G03 EVSE / connector, G04 station; 1.6 section 5.2), pure."""

from __future__ import annotations

import pytest

from evstation.protocol.availability import AvailabilityTargets, ChangeAnswer, decide_change

ALL_OPERATIVE = {(1, 1): True, (2, 1): True, (2, 2): True}


def test_g03_inoperative_on_an_idle_evse_applies_at_once() -> None:
    wanted = AvailabilityTargets().changed(False, 1)
    decision = decide_change(ALL_OPERATIVE, wanted, in_transaction=[])
    assert decision.answer is ChangeAnswer.ACCEPTED
    assert decision.now == {(1, 1): False}
    assert decision.after_transaction == frozenset()


def test_g03_inoperative_during_a_transaction_is_scheduled() -> None:
    wanted = AvailabilityTargets().changed(False, 2)
    decision = decide_change(ALL_OPERATIVE, wanted, in_transaction=[2])
    assert decision.answer is ChangeAnswer.SCHEDULED
    assert decision.now == {}
    assert decision.after_transaction == {2}


def test_g04_station_inoperative_switches_idle_evses_now_and_schedules_busy_ones() -> None:
    wanted = AvailabilityTargets().changed(False)
    decision = decide_change(ALL_OPERATIVE, wanted, in_transaction=[1])
    assert decision.answer is ChangeAnswer.SCHEDULED
    assert decision.now == {(2, 1): False, (2, 2): False}
    assert decision.after_transaction == {1}


def test_operative_applies_at_once_even_during_a_transaction() -> None:
    applied = {**ALL_OPERATIVE, (1, 1): False}
    decision = decide_change(applied, AvailabilityTargets(), in_transaction=[1])
    assert decision.answer is ChangeAnswer.ACCEPTED
    assert decision.now == {(1, 1): True}


@pytest.mark.parametrize("operative", [True, False])
def test_already_in_that_state_is_accepted_with_nothing_to_do(operative: bool) -> None:
    targets = AvailabilityTargets() if operative else AvailabilityTargets().changed(False, 1)
    applied = {pair: targets.operative(*pair) for pair in ALL_OPERATIVE}
    decision = decide_change(applied, targets.changed(operative, 1), in_transaction=[1])
    assert decision.answer is ChangeAnswer.ACCEPTED
    assert decision.now == {}


def test_levels_are_kept_apart_station_operative_does_not_revive_an_inoperative_evse() -> None:
    targets = AvailabilityTargets().changed(False, 1).changed(False).changed(True)
    assert not targets.operative(1, 1)
    assert targets.operative(2, 1)


def test_connector_level_change_touches_only_that_connector() -> None:
    wanted = AvailabilityTargets().changed(False, 2, 2)
    decision = decide_change(ALL_OPERATIVE, wanted, in_transaction=[])
    assert decision.now == {(2, 2): False}


def test_a_scheduled_change_withdrawn_before_the_transaction_ends_leaves_nothing_scheduled() -> None:
    wanted = AvailabilityTargets().changed(False, 1).changed(True, 1)
    decision = decide_change(ALL_OPERATIVE, wanted, in_transaction=[1])
    assert decision.answer is ChangeAnswer.ACCEPTED
    assert decision.after_transaction == frozenset()


def test_targets_round_trip_through_json_and_garbage_is_a_value_error() -> None:
    targets = AvailabilityTargets().changed(False).changed(False, 2).changed(False, 1, 1)
    assert AvailabilityTargets.from_json(targets.to_json()) == targets
    for text in ("", "[]", '{"station_inoperative": true}', '{"station_inoperative": 1, "evses": [[1]]}'):
        with pytest.raises(ValueError):
            AvailabilityTargets.from_json(text)

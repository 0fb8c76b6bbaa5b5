"""IEC 61851-1 duty cycle <-> current, both sides (drivers-facts.md section 3)."""

from __future__ import annotations

import math

import pytest

from evstation.drivers.pilot import X1_DUTY_PCT, amps_to_duty, duty_to_amps


@pytest.mark.parametrize(
    ("amps", "duty"),
    [
        (6.0, 10.0),
        (10.0, 100 / 6),
        (16.0, 16 / 0.6),
        (32.0, 32 / 0.6),
        (51.0, 85.0),
        (52.0, 85.0),  # 51-52.5 A is a gap in the norm: clamped to 51 A
        (52.5, 85.0),
        (63.0, 63 / 2.5 + 64),
        (80.0, 96.0),
    ],
)
def test_evse_side_amps_to_duty(amps: float, duty: float) -> None:
    assert amps_to_duty(amps) == pytest.approx(duty)


@pytest.mark.parametrize("amps", [None, 0.0, 5.9, -1.0, 80.1, math.nan])
def test_no_offer_or_invalid_current_is_x1(amps: float | None) -> None:
    assert amps_to_duty(amps) == X1_DUTY_PCT


@pytest.mark.parametrize(
    ("duty", "amps"),
    [
        (0.0, 0.0),
        (5.0, 0.0),  # digital communication only
        (7.9, 0.0),
        (8.0, 6.0),
        (10.0, 6.0),
        (50.0, 30.0),
        (85.0, 51.0),
        (90.0, 65.0),
        (96.0, 80.0),
        (96.5, 80.0),
        (97.5, 0.0),
        (100.0, 0.0),
    ],
)
def test_ev_side_duty_to_amps(duty: float, amps: float) -> None:
    assert duty_to_amps(duty) == pytest.approx(amps)


@pytest.mark.parametrize("amps", [6, 8, 10, 13, 16, 20, 25, 32, 40, 48, 51, 53, 63, 70, 80])
def test_round_trip_gives_the_offered_current(amps: float) -> None:
    assert duty_to_amps(amps_to_duty(amps)) == pytest.approx(amps)

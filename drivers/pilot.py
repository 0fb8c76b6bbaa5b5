"""IEC 61851-1 control-pilot maths: PWM duty cycle <-> maximum current, for both sides of the cable.

Pure functions of numbers; never touches hardware, time or I/O. Sources: IEC 61851-1 Annex A as
summarised in shared/reference/drivers-facts.md section 3 (EvseManager / OpenEVSE / YetiSimulator).
"""

from __future__ import annotations

import math

X1_DUTY_PCT = 100.0  # steady +12 V / +9 V: no PWM, no current offered
MIN_AC_CURRENT_A = 6.0  # below this the norm has no duty cycle: offering means "stop" (X1)
MAX_AC_CURRENT_A = 80.0
_LOW_RANGE_MAX_A = 51.0  # 0.6 A per % up to 85 %
_HIGH_RANGE_MIN_A = 52.5  # 51-52.5 A is a gap in the norm: clamp down to 51 A
_DUTY_PER_A_LOW = 1 / 0.6
_DUTY_PER_A_HIGH = 1 / 2.5
_HIGH_RANGE_OFFSET_PCT = 64.0

_EV_NO_CHARGE_BELOW_PCT = 8.0  # < 8 %: no charging (3-7 % = digital communication only)
_EV_MIN_CURRENT_BELOW_PCT = 10.0  # 8-10 %: 6 A
_EV_LOW_RANGE_MAX_PCT = 85.0
_EV_HIGH_RANGE_MAX_PCT = 96.0
_EV_MAX_PCT = 97.0


def amps_to_duty(amps: float | None) -> float:
    """The duty cycle (percent) an EVSE drives to offer `amps`.

    None, NaN, below 6 A or above 80 A mean "no offer" and give 100 % (state X1). 51-52.5 A, a gap in
    the norm, is clamped down to 51 A (85 %).
    """
    if amps is None or math.isnan(amps) or amps < MIN_AC_CURRENT_A or amps > MAX_AC_CURRENT_A:
        return X1_DUTY_PCT
    if amps < _HIGH_RANGE_MIN_A:
        return min(amps, _LOW_RANGE_MAX_A) * _DUTY_PER_A_LOW
    return amps * _DUTY_PER_A_HIGH + _HIGH_RANGE_OFFSET_PCT


def duty_to_amps(duty_pct: float) -> float:
    """The maximum current (A) an EV may draw for a measured duty cycle; 0 when it may not charge."""
    if math.isnan(duty_pct) or duty_pct < _EV_NO_CHARGE_BELOW_PCT:
        return 0.0
    if duty_pct < _EV_MIN_CURRENT_BELOW_PCT:
        return MIN_AC_CURRENT_A
    if duty_pct <= _EV_LOW_RANGE_MAX_PCT:
        return 0.6 * duty_pct
    if duty_pct <= _EV_HIGH_RANGE_MAX_PCT:
        return 2.5 * (duty_pct - _HIGH_RANGE_OFFSET_PCT)
    if duty_pct <= _EV_MAX_PCT:
        return MAX_AC_CURRENT_A
    return 0.0

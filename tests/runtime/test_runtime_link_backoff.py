"""The pure reconnect plan (protocol/backoff.py): back-off formula and endpoint rotation, synchronously."""

from __future__ import annotations

import random

import pytest

from evstation.protocol.backoff import DEFAULT_BACKOFF, BackoffSettings, Dial, ReconnectPlan
from evstation.protocol.device_model.standard import STATION_ROWS
from evstation.runtime.config import CsmsConfig


def _jitter(count: int, width: float) -> list[float]:
    """The random terms a plan seeded with 0 draws, in order."""
    rng = random.Random(0)
    return [rng.uniform(0.0, width) for _ in range(count)]


def test_first_dial_is_immediate_on_the_preferred_endpoint() -> None:
    plan = ReconnectPlan(DEFAULT_BACKOFF, 3, random.Random(0))
    assert plan.first_dial() == Dial(0, 0.0)


def test_wait_doubles_then_stops_growing_after_repeat_times() -> None:
    settings = BackoffSettings(
        wait_minimum_s=1.0, random_range_s=2.0, repeat_times=2, attempts_per_endpoint=99
    )
    plan = ReconnectPlan(settings, 1, random.Random(0))
    plan.first_dial()
    waits = [plan.dial_failed().wait_s for _ in range(5)]
    bases = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert waits == pytest.approx([b + j for b, j in zip(bases, _jitter(5, 2.0), strict=True)])


def test_without_random_range_the_schedule_is_exact() -> None:
    settings = BackoffSettings(
        wait_minimum_s=3.0, random_range_s=0.0, repeat_times=3, attempts_per_endpoint=99
    )
    plan = ReconnectPlan(settings, 1, random.Random(0))
    plan.first_dial()
    assert [plan.dial_failed().wait_s for _ in range(6)] == [3.0, 6.0, 12.0, 24.0, 24.0, 24.0]


def test_jitter_stays_within_random_range() -> None:
    settings = BackoffSettings(
        wait_minimum_s=1.0, random_range_s=0.5, repeat_times=1, attempts_per_endpoint=99
    )
    plan = ReconnectPlan(settings, 1, random.Random(7))
    plan.first_dial()
    for _ in range(200):
        wait = plan.dial_failed().wait_s
        assert 1.0 <= wait <= 2.5


@pytest.mark.parametrize(
    ("failures", "expected"),
    [
        # (index after the n-th failure, base wait): 3 dials per endpoint (the first one of endpoint 0
        # is first_dial), then the next endpoint with a fresh back-off sequence, wrapping around.
        (1, (0, 1.0)),
        (2, (0, 2.0)),
        (3, (1, 1.0)),
        (4, (1, 2.0)),
        (5, (1, 4.0)),
        (6, (2, 1.0)),
        (8, (2, 4.0)),
        (9, (0, 1.0)),
    ],
)
def test_endpoint_rotation_after_attempts_per_endpoint(failures: int, expected: tuple[int, float]) -> None:
    settings = BackoffSettings(
        wait_minimum_s=1.0, random_range_s=2.0, repeat_times=2, attempts_per_endpoint=3
    )
    plan = ReconnectPlan(settings, 3, random.Random(0))
    plan.first_dial()
    dials = [plan.dial_failed() for _ in range(failures)]
    index, base = expected
    assert dials[-1] == Dial(index, pytest.approx(base + _jitter(failures, 2.0)[-1]))  # type: ignore[arg-type]


def test_lost_connection_redials_same_endpoint_with_first_wait() -> None:
    settings = BackoffSettings(
        wait_minimum_s=1.0, random_range_s=0.0, repeat_times=5, attempts_per_endpoint=2
    )
    plan = ReconnectPlan(settings, 2, random.Random(0))
    plan.first_dial()
    plan.dial_failed()
    assert plan.dial_failed() == Dial(1, 1.0)  # endpoint 0 used up its two dials
    plan.connected()
    assert plan.connection_lost() == Dial(1, 1.0)
    assert plan.dial_failed() == Dial(1, 2.0)
    assert plan.dial_failed() == Dial(0, 1.0)


def test_every_redial_waits() -> None:
    """EVerest#2475: back-off must apply to every re-dial, never only the first one."""
    settings = BackoffSettings(
        wait_minimum_s=0.5, random_range_s=0.0, repeat_times=0, attempts_per_endpoint=1
    )
    plan = ReconnectPlan(settings, 2, random.Random(0))
    plan.first_dial()
    assert all(plan.dial_failed().wait_s == 0.5 for _ in range(10))
    assert plan.connection_lost().wait_s == 0.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {"wait_minimum_s": -1.0, "random_range_s": 0.0, "repeat_times": 0, "attempts_per_endpoint": 1},
        {"wait_minimum_s": 1.0, "random_range_s": -1.0, "repeat_times": 0, "attempts_per_endpoint": 1},
        {"wait_minimum_s": 1.0, "random_range_s": 0.0, "repeat_times": -1, "attempts_per_endpoint": 1},
        {"wait_minimum_s": 1.0, "random_range_s": 0.0, "repeat_times": 0, "attempts_per_endpoint": 0},
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BackoffSettings(**kwargs)  # type: ignore[arg-type]


def test_no_endpoints_is_refused() -> None:
    with pytest.raises(ValueError):
        ReconnectPlan(DEFAULT_BACKOFF, 0, random.Random(0))


def test_one_set_of_back_off_defaults_in_code_config_and_device_model() -> None:
    # docs/link.md: DEFAULT_BACKOFF, station.toml's [csms] defaults and the device model's OCPPCommCtrlr
    # defaults are one choice; a bare run_link caller must not back off differently from a station.
    csms = CsmsConfig.model_fields
    from_config = BackoffSettings(
        wait_minimum_s=float(csms["retry_backoff_wait_minimum_s"].default),
        random_range_s=float(csms["retry_backoff_random_range_s"].default),
        repeat_times=csms["retry_backoff_repeat_times"].default,
        attempts_per_endpoint=csms["connection_attempts_per_endpoint"].default,
    )
    rows = {row.variable: row.default for row in STATION_ROWS if row.component == "OCPPCommCtrlr"}
    from_device_model = BackoffSettings(
        wait_minimum_s=float(rows["RetryBackOffWaitMinimum"] or "nan"),
        random_range_s=float(rows["RetryBackOffRandomRange"] or "nan"),
        repeat_times=int(rows["RetryBackOffRepeatTimes"] or "-1"),
        attempts_per_endpoint=DEFAULT_BACKOFF.attempts_per_endpoint,
    )
    assert from_config == DEFAULT_BACKOFF
    assert from_device_model == DEFAULT_BACKOFF

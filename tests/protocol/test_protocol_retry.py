"""TransactionRetryPolicy: the linear OCPP schedule (interval x transmissions so far), then give up."""

from __future__ import annotations

import pytest

from evstation.protocol.retry import TransactionRetryPolicy


@pytest.mark.parametrize(
    ("attempts", "interval_s", "expected"),
    [
        # 1.6 defaults often seen: 3 attempts, 60 s -> wait 60, then 120, then give up.
        (3, 60.0, [60.0, 120.0, None]),
        (1, 60.0, [None]),
        (0, 60.0, [None]),  # 0 behaves like 1: send once, never retry
        (5, 10.0, [10.0, 20.0, 30.0, 40.0, None]),
        (2, 0.0, [0.0, None]),
    ],
)
def test_delay_after_each_attempt(attempts: int, interval_s: float, expected: list[float | None]) -> None:
    policy = TransactionRetryPolicy(attempts=attempts, interval_s=interval_s)
    assert [policy.delay_after(n) for n in range(1, len(expected) + 1)] == expected


def test_after_the_last_attempt_it_stays_given_up() -> None:
    policy = TransactionRetryPolicy(attempts=3, interval_s=60)
    assert policy.delay_after(4) is None
    assert policy.delay_after(100) is None


@pytest.mark.parametrize(("attempts", "interval_s"), [(-1, 60.0), (3, -1.0)])
def test_negative_settings_are_refused(attempts: int, interval_s: float) -> None:
    with pytest.raises(ValueError):
        TransactionRetryPolicy(attempts=attempts, interval_s=interval_s)


def test_attempt_numbers_are_one_based() -> None:
    with pytest.raises(ValueError, match="1-based"):
        TransactionRetryPolicy(attempts=3, interval_s=60).delay_after(0)

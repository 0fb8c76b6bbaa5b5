"""Reconnect back-off and CSMS endpoint rotation, as a pure state machine.

It decides which endpoint to dial next and how long to wait first; it never sleeps, never reads a clock
and never draws randomness from anywhere but the `random.Random` it is given.

OCPP 2.0.1 (part 4, "Reconnecting"; OCPPCommCtrlr.RetryBackOff*) fixes the shape: the first wait is
RetryBackOffWaitMinimum plus a random term of at most RetryBackOffRandomRange; every further failed
attempt doubles the back-off time, RetryBackOffRepeatTimes times at most, and adds a fresh random
term; after that the last back-off time is kept. We double the back-off time *without* its random
term, so the jitter stays within RandomRange instead of compounding:

    wait(k) = WaitMinimum * 2 ** min(k, RepeatTimes) + uniform(0, RandomRange)     k = 0, 1, 2, ...

OCPP 1.6J leaves reconnect timing to the implementation; we use the same shape and the same defaults
(`DEFAULT_BACKOFF`) for both versions.
"""

from __future__ import annotations

import random
from typing import final

from evstation.records import record


@record
class BackoffSettings:
    """The reconnect knobs (2.0.1 names in the comments)."""

    wait_minimum_s: float  # OCPPCommCtrlr.RetryBackOffWaitMinimum
    random_range_s: float  # OCPPCommCtrlr.RetryBackOffRandomRange
    repeat_times: int  # OCPPCommCtrlr.RetryBackOffRepeatTimes
    attempts_per_endpoint: int  # OCPPCommCtrlr.NetworkProfileConnectionAttempts

    def __post_init__(self) -> None:
        if self.wait_minimum_s < 0 or self.random_range_s < 0:
            raise ValueError("back-off times must not be negative")
        if self.repeat_times < 0:
            raise ValueError("repeat_times must not be negative")
        if self.attempts_per_endpoint < 1:
            raise ValueError("attempts_per_endpoint must be at least 1")


# Our choice for both versions (the spec gives no defaults): a fleet spreads its reconnects over
# 10 s of jitter, and a station never waits longer than 3 * 2**5 + 10 = 106 s between dials. The same
# values are station.toml's [csms] defaults and the device model's (a test checks that they agree).
DEFAULT_BACKOFF = BackoffSettings(
    wait_minimum_s=3.0, random_range_s=10.0, repeat_times=5, attempts_per_endpoint=3
)


@record
class Dial:
    """The decision: wait `wait_s`, then dial the endpoint at `endpoint_index` (in priority order)."""

    endpoint_index: int
    wait_s: float


@final
class ReconnectPlan:
    """Which endpoint to dial next and after how long.

    Endpoints are indexed in priority order (index 0 is the preferred one). After
    `attempts_per_endpoint` failed dials in a row on one endpoint the plan moves to the next one,
    wrapping around, and the back-off sequence starts again. A connection that came up and was later
    lost does not count as a failure: the plan redials the same endpoint with the first wait.
    """

    def __init__(self, settings: BackoffSettings, endpoint_count: int, rng: random.Random) -> None:
        if endpoint_count < 1:
            raise ValueError("at least one endpoint is needed")
        self._settings = settings
        self._endpoint_count = endpoint_count
        self._rng = rng
        self._endpoint_index = 0
        self._failures = 0  # consecutive failed dials on the current endpoint
        self._step = 0  # how many waits since the last success or endpoint switch

    @property
    def endpoint_index(self) -> int:
        return self._endpoint_index

    def wait_for_step(self, step: int) -> float:
        """The wait before the dial after `step` earlier waits; draws one random term."""
        s = self._settings
        base = s.wait_minimum_s * (1 << min(step, s.repeat_times))
        return base + self._rng.uniform(0.0, s.random_range_s)

    def first_dial(self) -> Dial:
        """The very first dial of a run: the preferred endpoint, no wait."""
        self._endpoint_index = 0
        self._failures = 0
        self._step = 0
        return Dial(0, 0.0)

    def dial_failed(self) -> Dial:
        """A dial did not lead to an open, accepted connection: back off, maybe switch endpoint."""
        self._failures += 1
        if self._failures >= self._settings.attempts_per_endpoint:
            self._endpoint_index = (self._endpoint_index + 1) % self._endpoint_count
            self._failures = 0
            self._step = 0
        return self._next()

    def connected(self) -> None:
        """The dial succeeded: the next loss starts the back-off sequence from the beginning."""
        self._failures = 0
        self._step = 0

    def connection_lost(self, endpoint_index: int | None = None) -> Dial:
        """An open connection ended (or the network came back): redial the same endpoint, first wait.

        `endpoint_index` names the endpoint to redial instead, when the list changed meanwhile (the
        runtime rebuilt the plan and the endpoint moved, or is gone: 0).
        """
        if endpoint_index is not None:
            if not 0 <= endpoint_index < self._endpoint_count:
                raise ValueError(f"endpoint index {endpoint_index} outside 0..{self._endpoint_count - 1}")
            self._endpoint_index = endpoint_index
        self._failures = 0
        self._step = 0
        return self._next()

    def _next(self) -> Dial:
        wait = self.wait_for_step(self._step)
        self._step += 1
        return Dial(self._endpoint_index, wait)

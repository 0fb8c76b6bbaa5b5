"""When to re-send a transaction-related message the CSMS failed to process, and when to give up.

Pure arithmetic: it reads no clock and sleeps nowhere; the runtime owns the waiting.
"""

from __future__ import annotations

from evstation.records import record


@record
class TransactionRetryPolicy:
    """The linear schedule of OCPP 1.6 (TransactionMessageAttempts / TransactionMessageRetryInterval)
    and 2.0.1 (OCPPCommCtrlr MessageAttemptsTransactionEvent / MessageAttemptIntervalTransactionEvent).

    `attempts` counts every transmission including the first; 0 is treated like 1 (send once, never
    retry). Before transmission n+1 the station waits `interval_s * n`, n = transmissions made so far:
    with interval 60 and 3 attempts it sends, waits 60 s, sends, waits 120 s, sends, gives up.
    """

    attempts: int
    interval_s: float

    def __post_init__(self) -> None:
        if self.attempts < 0:
            raise ValueError(f"attempts must be >= 0 (got {self.attempts})")
        if self.interval_s < 0:
            raise ValueError(f"interval_s must be >= 0 (got {self.interval_s})")

    @property
    def max_transmissions(self) -> int:
        return max(self.attempts, 1)

    def delay_after(self, attempt_number: int) -> float | None:
        """Seconds to wait after transmission number `attempt_number` (1-based) failed; None = give up."""
        if attempt_number < 1:
            raise ValueError(f"attempt_number is 1-based (got {attempt_number})")
        if attempt_number >= self.max_transmissions:
            return None
        return self.interval_s * attempt_number

"""Wall-clock time for OCPP timestamps, following the CSMS's clock; runtime timers use trio time.

Never used for timers or timeouts: those run on trio's clock so tests can drive them with MockClock.
"""

from __future__ import annotations

from datetime import UTC, datetime

import trio

__all__ = ["WallClock", "as_datetime", "iso"]


class WallClock:
    """UTC time for OCPP timestamps: trio's clock plus an offset that follows the CSMS's currentTime.

    Tests anchor it to the MockClock.
    """

    def __init__(self, offset_s: float) -> None:
        self._offset_s = offset_s

    @classmethod
    def anchored(cls, at: datetime) -> WallClock:
        """A clock that reads `at` now (call inside trio.run)."""
        return cls(at.timestamp() - trio.current_time())

    @classmethod
    def system(cls) -> WallClock:
        return cls.anchored(datetime.now(UTC))

    def now(self) -> datetime:
        return datetime.fromtimestamp(trio.current_time() + self._offset_s, UTC)

    def set(self, now: datetime) -> None:
        """Follow the CSMS's clock (BootNotification / Heartbeat currentTime)."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        self._offset_s = now.timestamp() - trio.current_time()

    def iso(self) -> str:
        return iso(self.now())


def iso(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a Z, as both versions' date-time fields want."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None

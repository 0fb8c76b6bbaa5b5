"""Wall-clock time for OCPP timestamps, following the CSMS's clock; runtime timers use trio time.

Never used for timers or timeouts: those run on trio's clock so tests can drive them with MockClock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio

__all__ = ["MeterTimestamps", "WallClock", "iso"]


class WallClock:
    """UTC time for OCPP timestamps: trio's clock plus an offset that follows the CSMS's currentTime.

    Tests anchor it to the MockClock.
    """

    def __init__(self, offset_s: float) -> None:
        self._offset_s = offset_s
        self._moved = trio.Event()

    @classmethod
    def anchored(cls, at: datetime) -> WallClock:
        """A clock that reads `at` now (call inside trio.run)."""
        return cls(at.timestamp() - trio.current_time())

    @classmethod
    def system(cls) -> WallClock:
        return cls.anchored(datetime.now(UTC))

    def now(self) -> datetime:
        return datetime.fromtimestamp(trio.current_time() + self._offset_s, UTC)

    def set(self, now: datetime) -> float:
        """Follow the CSMS's clock (BootNotification / Heartbeat currentTime). Returns by how many
        seconds the clock moved (negative: back), for the SettingSystemTime security event."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        offset_s = now.timestamp() - trio.current_time()
        moved_s, self._offset_s = offset_s - self._offset_s, offset_s
        if moved_s:
            self._moved.set()
            self._moved = trio.Event()
        return moved_s

    def moved(self) -> trio.Event:
        """Set at the clock's next correction: a timer armed for a wall-clock time (a reservation's
        expiry) takes this before reading the time and re-arms when it fires."""
        return self._moved

    def iso(self) -> str:
        return iso(self.now())


class MeterTimestamps:
    """The timestamps meter values carry: the station clock's, unless the fake-meter-timestamps test
    aid ([test_aids] in station.toml) is on. Then either a fixed start instant plus the real time
    elapsed since this object was made (its own clock: the CSMS's currentTime never moves it), or the
    station clock shifted by a fixed offset. Make it inside trio.run."""

    def __init__(
        self,
        station: WallClock | None = None,
        *,
        start: datetime | None = None,
        offset: timedelta = timedelta(0),
    ) -> None:
        if start is not None and station is None:
            raise ValueError("a fake start instant needs the station clock")
        self._station = station
        self._fake = WallClock.anchored(start) if start is not None else None
        self._offset = offset

    def stamp(self, at: datetime) -> str:
        """The timestamp of a meter value read at `at` (station clock)."""
        if self._fake is not None and self._station is not None:
            # As long before the fake now as `at` lies before the station's now.
            return iso(self._fake.now() - (self._station.now() - at))
        return iso(at + self._offset)


def iso(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a Z, as both versions' date-time fields want."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

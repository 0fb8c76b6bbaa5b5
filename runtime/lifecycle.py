"""How a part of the station asks the station supervisor to stop the whole station, and why.

One `StopRequests` per station, created by `open_station` and handed to the blocks that may end the
process (Reset; later firmware update). The supervisor waits on it; nobody else stops the station.
"""

from __future__ import annotations

import enum

import trio

__all__ = ["StationOutcome", "StopRequests"]


class StationOutcome(enum.Enum):
    """Why `run_station` returned."""

    SIGNALLED = "signalled"  # SIGTERM / SIGINT: the operator stopped it
    RESET = "reset"  # a CSMS Reset: the process must be started again (docs/session.md)


class StopRequests:
    """A one-shot request to stop the station with an outcome; the first request wins."""

    def __init__(self) -> None:
        self._requested = trio.Event()
        self._outcome: StationOutcome | None = None

    @property
    def outcome(self) -> StationOutcome | None:
        return self._outcome

    def request(self, outcome: StationOutcome) -> None:
        if self._outcome is None:
            self._outcome = outcome
            self._requested.set()

    async def wait(self) -> StationOutcome:
        await self._requested.wait()
        assert self._outcome is not None
        return self._outcome

"""The station's EVSE / connector layout and the 1.6 connector numbering derived from it.

2.0.1 addresses a connector as (EVSE id, connector id); 1.6 has no EVSE level and numbers connectors
1..n across the station, with connector 0 meaning the charge point itself (1.6 section 3.3). Pure.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["StationLayout", "UnknownConnector"]


class UnknownConnector(LookupError):
    """No such EVSE, connector or 1.6 connector number on this station."""


@dataclass(frozen=True, slots=True)
class StationLayout:
    """EVSE id -> its connector ids, in configuration order."""

    evses: tuple[tuple[int, tuple[int, ...]], ...]

    @classmethod
    def of(cls, evses: dict[int, tuple[int, ...]]) -> StationLayout:
        return cls(tuple(sorted((evse_id, tuple(ids)) for evse_id, ids in evses.items())))

    def evse_ids(self) -> tuple[int, ...]:
        return tuple(evse_id for evse_id, _ in self.evses)

    def connectors(self) -> Iterator[tuple[int, int]]:
        """Every (EVSE id, connector id), EVSEs in id order, connectors in configuration order."""
        for evse_id, connector_ids in self.evses:
            for connector_id in connector_ids:
                yield evse_id, connector_id

    def connector_ids(self, evse_id: int) -> tuple[int, ...]:
        for candidate, connector_ids in self.evses:
            if candidate == evse_id:
                return connector_ids
        raise UnknownConnector(f"no EVSE {evse_id}")

    def has_connector(self, evse_id: int, connector_id: int) -> bool:
        return (evse_id, connector_id) in set(self.connectors())

    @property
    def v16_connector_count(self) -> int:
        """1.6 NumberOfConnectors: every physical connector of the station."""
        return sum(len(ids) for _, ids in self.evses)

    def v16_number(self, evse_id: int, connector_id: int) -> int:
        """The 1.6 connectorId (1..n) of a connector."""
        for number, pair in enumerate(self.connectors(), start=1):
            if pair == (evse_id, connector_id):
                return number
        raise UnknownConnector(f"no connector {connector_id} on EVSE {evse_id}")

    def from_v16_number(self, number: int) -> tuple[int, int]:
        """(EVSE id, connector id) of a 1.6 connectorId >= 1 (0 is the charge point, not a connector)."""
        for candidate, pair in enumerate(self.connectors(), start=1):
            if candidate == number:
                return pair
        raise UnknownConnector(f"no connector {number}")

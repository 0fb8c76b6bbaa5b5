"""The station's shape: EVSEs, their connectors (type, phases) and rated power, and the CSMS network
configuration slots, as station.toml describes the hardware; plus the 1.6 connector numbering, and
the components each EVSE / connector reports hardware faults on.

2.0.1 addresses a connector as (EVSE id, connector id), both numbered 1..n; 1.6 has no EVSE level and
numbers connectors 1..n across the station, with connector 0 meaning the charge point itself (1.6
section 3.3). The device model instantiates its EVSE and Connector components from this. Pure.
"""

from __future__ import annotations

from collections.abc import Iterator

from evstation.records import record

__all__ = ["ConnectorLayout", "EvseLayout", "StationLayout", "UnknownConnector"]


class UnknownConnector(LookupError):
    """No such EVSE, connector or 1.6 connector number on this station."""


@record
class ConnectorLayout:
    id: int
    connector_type: str = "Unknown"  # ConnectorEnumType text, e.g. "cType2"
    phases: int = 3  # 1 or 3 for AC; 0 for DC (the spec's SupplyPhases convention)
    # Components of this connector the station reports faults on (NotifyEvent): each gets a Problem
    # variable. Chosen by the runtime from the configured drivers (runtime/fault_components.py).
    problem_components: tuple[str, ...] = ()


@record
class EvseLayout:
    id: int
    connectors: tuple[ConnectorLayout, ...]
    max_power_w: float | None = None  # rated power (EVSE.Power maxLimit); None if unknown
    meter_signs: bool = False  # the EVSE's meter signs its readings (TxStartPoint DataSigned)
    # Components of this EVSE the station reports faults on, as ConnectorLayout's (RCD, Controller, ...).
    problem_components: tuple[str, ...] = ()

    @property
    def phases(self) -> int:
        return max(connector.phases for connector in self.connectors)

    @property
    def connector_ids(self) -> tuple[int, ...]:
        return tuple(connector.id for connector in self.connectors)


@record
class StationLayout:
    """EVSE ids -> connector ids (both 1..n in order, as 2.0.1 requires)."""

    evses: tuple[EvseLayout, ...]
    # The CSMS endpoints' configuration slots in priority order (NetworkConfigurationPriority).
    network_slots: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        ids = [evse.id for evse in self.evses]
        if not ids or ids != list(range(1, len(ids) + 1)):
            raise ValueError(f"EVSE ids must be 1..n in order (got {ids})")
        for evse in self.evses:
            cids = list(evse.connector_ids)
            if not cids or cids != list(range(1, len(cids) + 1)):
                raise ValueError(f"EVSE {evse.id}: connector ids must be 1..n in order (got {cids})")
        if not self.network_slots or len(set(self.network_slots)) != len(self.network_slots):
            raise ValueError(f"network slots must be unique and at least one (got {self.network_slots})")

    @property
    def phases(self) -> int:
        return max(evse.phases for evse in self.evses)

    @property
    def meters_sign(self) -> bool:
        """Every EVSE's meter signs: only then can TxStartPoint (one for the station) be DataSigned."""
        return all(evse.meter_signs for evse in self.evses)

    def evse_ids(self) -> tuple[int, ...]:
        return tuple(evse.id for evse in self.evses)

    def connectors(self) -> Iterator[tuple[int, int]]:
        """Every (EVSE id, connector id) in 1.6 numbering order: connector n of 1.6 is the n-th."""
        for evse in self.evses:
            for connector_id in evse.connector_ids:
                yield evse.id, connector_id

    def connector_ids(self, evse_id: int) -> tuple[int, ...]:
        for evse in self.evses:
            if evse.id == evse_id:
                return evse.connector_ids
        raise UnknownConnector(f"no EVSE {evse_id}")

    def has_connector(self, evse_id: int, connector_id: int) -> bool:
        return (evse_id, connector_id) in set(self.connectors())

    @property
    def v16_connector_count(self) -> int:
        """1.6 NumberOfConnectors: every physical connector of the station."""
        return sum(len(evse.connectors) for evse in self.evses)

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

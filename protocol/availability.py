"""Connector status rules of both versions (1.6 section 4.9 / 7.7, 2.0.1 G01 / ConnectorStatusEnumType).

The EVSE state machine speaks in the 1.6 ChargePointStatus vocabulary, the richer of the two; these
pure functions fold it onto what each version sends. Never reads hardware or time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["V201_KEPT_STATUSES", "v16_charge_point_status", "v201_connector_status"]

# ConnectorStatusEnumType has five values; every in-use state (Preparing, Charging, SuspendedEV,
# SuspendedEVSE, Finishing) is Occupied.
V201_KEPT_STATUSES: Final = frozenset({"Available", "Reserved", "Unavailable", "Faulted"})


def v201_connector_status(status: str) -> str:
    """The 2.0.1 connectorStatus of a 1.6-vocabulary status."""
    return status if status in V201_KEPT_STATUSES else "Occupied"


def v16_charge_point_status(connector_statuses: Iterable[str], *, station_unavailable: bool = False) -> str:
    """The status of 1.6 connector 0, the charge point itself (section 4.9): Unavailable when the
    station was made Unavailable or every connector is; Available otherwise."""
    statuses = list(connector_statuses)
    if station_unavailable or (statuses and all(s == "Unavailable" for s in statuses)):
        return "Unavailable"
    return "Available"

"""Connector status rules of both versions (1.6 section 4.9 / 7.7, 2.0.1 G01 / ConnectorStatusEnumType),
and the ChangeAvailability scheduling rules (2.0.1 G03 / G04, 1.6 section 5.2).

The EVSE state machine speaks in the 1.6 ChargePointStatus vocabulary, the richer of the two; these
pure functions fold it onto what each version sends. Never reads hardware or time.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Final

from evstation.records import record

__all__ = [
    "V201_KEPT_STATUSES",
    "AvailabilityDecision",
    "AvailabilityTargets",
    "ChangeAnswer",
    "Connector",
    "decide_change",
    "v16_charge_point_status",
    "v201_connector_status",
]

# ConnectorStatusEnumType has five values; every in-use state (Preparing, Charging, SuspendedEV,
# SuspendedEVSE, Finishing) is Occupied.
V201_KEPT_STATUSES: Final = frozenset({"Available", "Reserved", "Unavailable", "Faulted"})


def v201_connector_status(status: str, *, ev_away: bool = False) -> str:
    """The 2.0.1 connectorStatus of a 1.6-vocabulary status. `ev_away`: a transaction kept after an
    EV-side unplug (E10) whose EV is gone: Available (OCTT TC_E_26 expects it; 1.6 shows SuspendedEV)."""
    if status in V201_KEPT_STATUSES:
        return status
    return "Available" if ev_away else "Occupied"


def v16_charge_point_status(connector_statuses: Iterable[str], *, station_unavailable: bool = False) -> str:
    """The status of 1.6 connector 0, the charge point itself (section 4.9): Unavailable when the
    station was made Unavailable or every connector is; Available otherwise."""
    statuses = list(connector_statuses)
    if station_unavailable or (statuses and all(s == "Unavailable" for s in statuses)):
        return "Unavailable"
    return "Available"


# ---------------------------------------------------------------------------------------------------
# ChangeAvailability (2.0.1 G03 EVSE / connector, G04 station; 1.6 section 5.2)

Connector = tuple[int, int]  # (EVSE id, connector id)


@record
class AvailabilityTargets:
    """What the CSMS asked for, per level; persisted across restarts (G03 / G04, 1.6 5.2).

    A connector is Operative only when the station, its EVSE and the connector itself all are: the
    levels are kept apart so that making the station Operative again does not revive an EVSE the
    CSMS made Inoperative on its own.
    """

    station_inoperative: bool = False
    evses: frozenset[int] = frozenset()  # EVSEs made Inoperative
    connectors: frozenset[Connector] = frozenset()  # connectors made Inoperative

    def changed(
        self, operative: bool, evse_id: int | None = None, connector_id: int | None = None
    ) -> AvailabilityTargets:
        """The targets after one ChangeAvailability: station level when `evse_id` is None, EVSE level
        when `connector_id` is None."""
        if evse_id is None:
            return replace(self, station_inoperative=not operative)
        if connector_id is None:
            evses = self.evses - {evse_id} if operative else self.evses | {evse_id}
            return replace(self, evses=evses)
        pair = (evse_id, connector_id)
        connectors = self.connectors - {pair} if operative else self.connectors | {pair}
        return replace(self, connectors=connectors)

    def operative(self, evse_id: int, connector_id: int) -> bool:
        return not (
            self.station_inoperative or evse_id in self.evses or (evse_id, connector_id) in self.connectors
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "station_inoperative": self.station_inoperative,
                "evses": sorted(self.evses),
                "connectors": sorted([list(pair) for pair in self.connectors]),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> AvailabilityTargets:
        """Parse what `to_json` wrote; raises ValueError on anything else."""
        try:
            data = json.loads(text)
            return cls(
                station_inoperative=bool(data["station_inoperative"]),
                evses=frozenset(int(e) for e in data["evses"]),
                connectors=frozenset((int(e), int(c)) for e, c in data["connectors"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a stored availability: {exc}") from exc


class ChangeAnswer(enum.Enum):
    """ChangeAvailabilityStatus, the same three values in both versions."""

    ACCEPTED = "Accepted"
    SCHEDULED = "Scheduled"
    REJECTED = "Rejected"


@record
class AvailabilityDecision:
    answer: ChangeAnswer
    now: Mapping[Connector, bool]  # connectors to switch at once -> new operative state
    after_transaction: frozenset[int]  # EVSEs that go Inoperative when their transaction ends


def decide_change(
    applied: Mapping[Connector, bool],
    wanted: AvailabilityTargets,
    in_transaction: Iterable[int],
) -> AvailabilityDecision:
    """What to do with the connectors after the CSMS changed the targets to `wanted`.

    `applied` is each connector's current operative state, `in_transaction` the EVSEs with a running
    transaction. Becoming Inoperative waits for the EVSE's transaction to end (Scheduled; G03 / G04,
    1.6 5.2); becoming Operative, and anything on an idle EVSE, happens at once. Nothing to change:
    Accepted (already in that state). A change scheduled earlier and now wanted no more simply
    disappears: the runtime re-reads the targets when the transaction ends.
    """
    busy = frozenset(in_transaction)
    now: dict[Connector, bool] = {}
    later: set[int] = set()
    for (evse_id, connector_id), is_operative in applied.items():
        should = wanted.operative(evse_id, connector_id)
        if should == is_operative:
            continue
        if not should and evse_id in busy:
            later.add(evse_id)
        else:
            now[(evse_id, connector_id)] = should
    answer = ChangeAnswer.SCHEDULED if later else ChangeAnswer.ACCEPTED
    return AvailabilityDecision(answer, now, frozenset(later))

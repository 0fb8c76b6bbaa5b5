"""Hardware-fault events for OCPP 2.0.1 NotifyEvent (N07 "Alert event"-style, HardWiredNotification):
the EventData of a fault raised or cleared, and how the station keeps the ones not yet acknowledged.
Pure: no I/O, no clock (the runtime stamps each event and numbers it).

A fault is reported on the standardized component that failed (the table is in
runtime/blocks/fault_events.py, rendered in docs/hardware.md) through its `Problem` variable:
actualValue "true" when raised, "false" (and `cleared`) when cleared; techCode the ChargeX MREC code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Final

from evstation.records import record

__all__ = [
    "MAX_PENDING",
    "PROBLEM",
    "FaultEvent",
    "decode_active",
    "decode_pending",
    "encode_pending",
    "notify_event",
    "trim",
]

# The variable every fault is reported on (part 2 appendix: "Problem" is a standardized variable).
PROBLEM: Final = "Problem"
# Pending events kept at most; past it the oldest goes first (a clearing event keeps its raise's
# meaning only if both are kept, but a long outage must not grow the settings row without bound).
MAX_PENDING: Final = 100
# EventDataType limits (2.0.1 schema).
TECH_CODE_MAX: Final = 50
TECH_INFO_MAX: Final = 500


@record
class FaultEvent:
    """One fault raised or cleared, not yet acknowledged by the CSMS. `timestamp` is when it happened
    (RFC 3339); `event_id` is unique over the station's life (a persisted counter)."""

    event_id: int
    timestamp: str
    component: str
    evse_id: int | None
    connector_id: int | None
    active: bool
    tech_code: str
    tech_info: str
    # A clear after which the component's Problem stays true: another fault still holds it.
    still_held: bool = False

    def event_data(self) -> dict[str, object]:
        """The NotifyEvent EventDataType of this event."""
        component: dict[str, object] = {"name": self.component}
        if self.evse_id is not None:
            evse: dict[str, object] = {"id": self.evse_id}
            if self.connector_id is not None:
                evse["connectorId"] = self.connector_id
            component["evse"] = evse
        data: dict[str, object] = {
            "eventId": self.event_id,
            "timestamp": self.timestamp,
            # A fault is an alert, not a delta monitor's report; EVerest's OCPP 2.x module sends its errors
            # with Alerting too.
            "trigger": "Alerting",
            # The variable's value: this fault cleared (`cleared`, techCode) is not the component's
            # Problem gone while another fault holds it.
            "actualValue": "true" if self.active or self.still_held else "false",
            "techCode": self.tech_code[:TECH_CODE_MAX],
            "techInfo": self.tech_info[:TECH_INFO_MAX],
            "eventNotificationType": "HardWiredNotification",
            "component": component,
            "variable": {"name": PROBLEM},
        }
        if not self.active:
            data["cleared"] = True
        return data


def notify_event(events: Sequence[FaultEvent], generated_at: str) -> dict[str, object]:
    """One complete NotifyEventRequest carrying `events` (seqNo 0, no tbc: never split)."""
    return {"generatedAt": generated_at, "seqNo": 0, "eventData": [e.event_data() for e in events]}


def trim(
    pending: Sequence[FaultEvent], limit: int = MAX_PENDING
) -> tuple[list[FaultEvent], list[FaultEvent]]:
    """(kept, dropped): at most `limit` events, order kept. An event a later one of the same condition
    (component, EVSE, connector, techCode) supersedes goes first, oldest first: the CSMS still learns
    each condition's last state. Dropping plain oldest first could drop the only clear of a fault the
    CSMS got raised before the outage, leaving it raised there for good. Only when every queued
    condition is down to its last event does the oldest go."""
    excess = len(pending) - limit
    if excess <= 0:
        return list(pending), []
    last = {_condition(e): index for index, e in enumerate(pending)}
    superseded = [index for index, e in enumerate(pending) if last[_condition(e)] != index]
    drop = set(superseded[:excess])
    for index in range(len(pending)):
        if len(drop) >= excess:
            break
        drop.add(index)
    kept = [e for index, e in enumerate(pending) if index not in drop]
    return kept, [e for index, e in enumerate(pending) if index in drop]


def _condition(event: FaultEvent) -> tuple[str, int | None, int | None, str]:
    return (event.component, event.evse_id, event.connector_id, event.tech_code)


def encode_pending(
    pending: Sequence[FaultEvent],
    next_event_id: int,
    active: Mapping[int, Sequence[str]] | None = None,
) -> str:
    """The stored form: the queue, the next event id and the faults reported active (per EVSE id, the
    fault names) together, so one write keeps all three."""
    return json.dumps(
        {
            "nextEventId": next_event_id,
            "active": {str(evse_id): sorted(names) for evse_id, names in (active or {}).items() if names},
            "events": [
                {
                    "eventId": e.event_id,
                    "timestamp": e.timestamp,
                    "component": e.component,
                    "evse": e.evse_id,
                    "connector": e.connector_id,
                    "active": e.active,
                    "techCode": e.tech_code,
                    "techInfo": e.tech_info,
                    "stillHeld": e.still_held,
                }
                for e in pending
            ],
        },
        separators=(",", ":"),
    )


def decode_pending(text: str | None) -> tuple[list[FaultEvent], int]:
    """(queue, next event id) from the stored form; damaged entries are skipped, never a crash. The
    next id is never below one past the highest id still queued."""
    stored = _stored(text)
    items = stored.get("events")
    pending: list[FaultEvent] = []
    for item in items if isinstance(items, list) else []:
        event = _decode_event(item)
        if event is not None:
            pending.append(event)
    next_id = stored.get("nextEventId")
    floor = max((e.event_id + 1 for e in pending), default=0)
    return pending, max(next_id if isinstance(next_id, int) and _is_int(next_id) else 0, floor)


def decode_active(text: str | None) -> dict[int, list[str]]:
    """The faults reported active when the queue was last stored (EVSE id -> fault names); anything
    damaged is skipped, never a crash."""
    active = _stored(text).get("active")
    if not isinstance(active, dict):
        return {}
    result: dict[int, list[str]] = {}
    for key, names in active.items():
        if isinstance(key, str) and key.isdigit() and isinstance(names, list):
            kept = [name for name in names if isinstance(name, str)]
            if kept:
                result[int(key)] = kept
    return result


def _stored(text: str | None) -> dict[str, object]:
    """The stored form's top level; empty when there is none or it is damaged."""
    try:
        stored = json.loads(text) if text else None
    except ValueError:
        return {}
    return stored if isinstance(stored, dict) else {}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _decode_event(item: object) -> FaultEvent | None:
    if not isinstance(item, dict):
        return None
    event_id, evse, connector = item.get("eventId"), item.get("evse"), item.get("connector")
    texts = [item.get(name) for name in ("timestamp", "component", "techCode", "techInfo")]
    if not _is_int(event_id) or not all(isinstance(t, str) for t in texts):
        return None
    if not isinstance(item.get("active"), bool):
        return None
    if (evse is not None and not _is_int(evse)) or (connector is not None and not _is_int(connector)):
        return None
    timestamp, component, tech_code, tech_info = (str(t) for t in texts)
    return FaultEvent(
        event_id=int(event_id),  # type: ignore[arg-type]
        timestamp=timestamp,
        component=component,
        evse_id=evse,
        connector_id=connector,
        active=item["active"],
        tech_code=tech_code,
        tech_info=tech_info,
        still_held=item.get("stillHeld") is True,  # absent in a queue stored before it existed
    )

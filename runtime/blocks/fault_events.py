"""Hardware faults as OCPP 2.0.1 NotifyEvent (N07-style HardWiredNotification on the failed component's
`Problem` variable), kept durably until the CSMS answered. Built for 2.0.1 only: a 1.6 station reports
faults in StatusNotification's errorCode / vendorErrorCode (runtime/evse.py) and has no NotifyEvent.

Every `FaultChanged` an EVSE publishes becomes one EventData (raised: actualValue "true"; cleared:
"false" and `cleared`), techCode the ChargeX MREC code (else the fault's name), stamped with the station
clock and a station-unique eventId. Delivery is the security events' queue (runtime/pending_queue.py):
stored before anything else, sent head first once the boot is accepted, several per NotifyEvent,
removed only when answered or given up by the retry policy.

A restart carries what was reported: the faults reported active are stored with the queue, so a fault
still active after the restart is not reported twice, and one that cleared while the station was down is
reported cleared once the EVSEs have had CARRIED_FAULTS_SETTLE_S to find their faults again (a meter or
board fault is only found after a poll fails: clearing at once would report a clear, then the raise
again, for every fault that persists).

The block also keeps the device model's `EVSE.Problem` / `ChargingStation.Problem` true while a fault
is active there, and the Problem of each component the faults name (RCD, FiscalMetering, ...: the ones
runtime/fault_components.py gives the EVSE) while a fault holds it, so GetVariables and GetReport
(criterion Problem) agree with the events. It never
changes what an EVSE does about a fault: that is runtime/evse.py.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final, NoReturn

import trio

from evstation.drivers.api import FaultCode, mrec_code
from evstation.protocol.device_model import ComponentKey, VariableKey
from evstation.protocol.fault_events import (
    PROBLEM,
    FaultEvent,
    decode_active,
    decode_pending,
    encode_pending,
    notify_event,
    trim,
)
from evstation.protocol.versions import OcppVersion
from evstation.runtime.calls import CallManager
from evstation.runtime.clock import WallClock
from evstation.runtime.device_model import DeviceModel
from evstation.runtime.events import Dropped
from evstation.runtime.evse import EvseEvent, Evses, FaultChanged
from evstation.runtime.fault_components import (
    FAULT_COMPONENTS,
    OWN_PROBLEM_COMPONENTS,
    Place,
    Tier,
    fault_place,
)
from evstation.runtime.pending_queue import PendingQueue
from evstation.runtime.storage import Storage
from evstation.runtime.uplink import Uplink

__all__ = ["CARRIED_FAULTS_SETTLE_S", "FAULT_COMPONENTS", "PENDING_FAULTS_KEY", "FaultEvents", "Tier"]

log = logging.getLogger(__name__)

# storage `settings` key: the events not yet acknowledged and the next eventId (JSON).
PENDING_FAULTS_KEY: Final = "fault_events.pending"
# EventData per NotifyEvent: a backlog after an outage goes out in a few messages, not a hundred.
_BATCH: Final = 20
# After a restart, how long the EVSEs have to find a fault reported before it again (meter polls, board
# keep-alives) before it is reported cleared.
CARRIED_FAULTS_SETTLE_S: Final = 60.0


# (component, evse id, connector id, fault): one reported condition.
_Condition = tuple[str, int | None, int | None, FaultCode]


class FaultEvents:
    """The fault-event block. Start `run` with `nursery.start` before the EVSEs run, so that a fault they
    find at start-up is seen (a later start still reports it: `run` reads the faults already active)."""

    def __init__(
        self,
        *,
        version: OcppVersion,
        storage: Storage,
        clock: WallClock,
        uplink: Uplink,
        device_model: DeviceModel,
        evses: Evses,
    ) -> None:
        if version is not OcppVersion.V201:
            raise ValueError("NotifyEvent is OCPP 2.0.1; a 1.6 station reports faults in StatusNotification")
        self._clock = clock
        self._uplink = uplink
        self._dm = device_model
        self._evses = evses
        self._next_event_id = 0
        self._queue = PendingQueue[FaultEvent](
            name="fault events",
            storage=storage,
            key=PENDING_FAULTS_KEY,
            encode=lambda pending: encode_pending(pending, self._next_event_id, self._reported()),
            decode=self._decode,
            trim=trim,
        )
        self._active: dict[int, set[FaultCode]] = {}  # per EVSE, as this block last saw it
        self._carried: dict[int, list[str]] = {}  # reported active before a restart (stored form)
        # One change at a time: the settling check reads the EVSEs while the follower applies events.
        self._changing = trio.Lock()

    @property
    def pending(self) -> list[FaultEvent]:
        """The events not yet acknowledged, oldest first (a copy)."""
        return self._queue.entries

    async def wait_sent(self) -> None:
        """Until every queued event was answered (or given up)."""
        await self._queue.wait_empty()

    def _decode(self, text: str | None) -> list[FaultEvent]:
        pending, self._next_event_id = decode_pending(text)
        self._carried = decode_active(text)
        return pending

    def _reported(self) -> dict[int, list[str]]:
        return {evse_id: [code.value for code in codes] for evse_id, codes in self._active.items()}

    # --- the block's task --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Load the stored queue, follow the EVSEs' faults, and send."""
        await self._queue.load()
        carried = await self._carry()
        with self._evses.subscribe() as events:
            # Faults already active (EVSEs started before this block); carried ones are cleared later.
            await self._reconcile(clearing=None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._follow, events)
                nursery.start_soon(self._queue.run_saver)
                nursery.start_soon(self._send)
                if carried:
                    nursery.start_soon(self._settle_carried)
                self._queue.delivering = True
                task_status.started()
        raise AssertionError("the fault-event block's tasks never return")

    async def _carry(self) -> bool:
        """Take the faults reported active before a restart as seen (no event). True if any."""
        carried = False
        for evse_id, names in self._carried.items():
            for name in names:
                try:
                    code = FaultCode(name)
                except ValueError:
                    log.warning("fault events: unknown fault %r of EVSE %d stored; ignored", name, evse_id)
                    continue
                if evse_id not in self._evses:
                    # Still raised at the CSMS: held like the others, so the settling reports it cleared.
                    log.warning(
                        "fault events: fault %s of EVSE %d, which is gone, will be cleared", name, evse_id
                    )
                self._active.setdefault(evse_id, set()).add(code)
                carried = True
        for evse_id in self._active:
            await self._follow_problem(evse_id)
        for place in {condition[:3] for condition in self._held()}:
            await self._follow_component(place)
        return carried

    async def _settle_carried(self) -> None:
        await trio.sleep(CARRIED_FAULTS_SETTLE_S)
        await self._reconcile(clearing="not found again after a restart")

    async def _follow(self, events: trio.MemoryReceiveChannel[EvseEvent | Dropped]) -> None:
        async for event in events:
            if isinstance(event, FaultChanged):
                async with self._changing:
                    await self._change(event.evse_id, event.fault, event.active, event.detail)
            elif isinstance(event, Dropped):
                # Changes were lost to a full buffer: the EVSEs' present faults are the truth.
                log.warning("fault events: %d EVSE events missed; re-reading active faults", event.count)
                await self._reconcile(clearing="cleared while its event was missed")

    async def _reconcile(self, *, clearing: str | None) -> None:
        """Report the difference between the faults seen and the EVSEs' present ones: raises, and clears
        too (with `clearing` as their detail) unless it is None."""
        async with self._changing:
            present = {evse.id: evse.active_faults() for evse in self._evses}
            # An EVSE no longer configured (carried across a restart) has no faults now.
            for evse_id in sorted(present.keys() | self._active.keys()):
                now = present.get(evse_id, frozenset())
                seen = self._active.get(evse_id, set())
                gone = sorted(seen - now, key=lambda c: c.value) if clearing is not None else []
                for code in gone:
                    await self._change(evse_id, code, False, clearing or "")
                for code in sorted(now - seen, key=lambda c: c.value):
                    await self._change(evse_id, code, True, "")

    async def _change(self, evse_id: int, code: FaultCode, active: bool, detail: str) -> None:
        seen = self._active.setdefault(evse_id, set())
        if active == (code in seen):
            return
        at = self._clock.iso()
        condition = self._condition(evse_id, code)
        was_held = condition in self._held()
        if active:
            seen.add(code)
        else:
            seen.discard(code)
        await self._follow_problem(evse_id)
        await self._follow_component(condition[:3])
        if was_held == (condition in self._held()):
            return  # a station-tier condition another EVSE still holds (or already held)
        component, event_evse, connector, _ = condition
        tech_code = mrec_code(code) or code.value
        event = FaultEvent(
            event_id=self._next_event_id,
            timestamp=at,
            component=component,
            evse_id=event_evse,
            connector_id=connector,
            active=active,
            tech_code=tech_code,
            tech_info=f"{code.value}: {detail}" if detail else code.value,
            still_held=not active and self._still_held(component, event_evse, connector),
        )
        self._next_event_id += 1  # stored with the queue by `append`, in the same write
        log.warning(
            "fault %s %s on %s%s (%s)",
            code.value,
            "raised" if active else "cleared",
            component,
            f" of EVSE {event_evse}" if event_evse is not None else "",
            tech_code,
        )
        for lost in await self._queue.append(event):
            log.error(
                "fault event %d (%s) of %s dropped: queue full", lost.event_id, lost.tech_code, lost.timestamp
            )

    def _still_held(self, component: str, evse_id: int | None, connector_id: int | None) -> bool:
        """Whether the component's Problem stays true: another fault holds it. EVSE and ChargingStation
        as their device-model variables (`_follow_problem`): any fault of the EVSE / the station."""
        if component == "ChargingStation":
            return any(self._active.values())
        if component == "EVSE" and evse_id is not None:
            return bool(self._active.get(evse_id))
        place = (component, evse_id, connector_id)
        return any(condition[:3] == place for condition in self._held())

    def _held(self) -> set[_Condition]:
        """The conditions the active faults make: a station-tier one is held while any EVSE has it."""
        return {self._condition(evse_id, code) for evse_id, codes in self._active.items() for code in codes}

    def _condition(self, evse_id: int, code: FaultCode) -> _Condition:
        # A gone EVSE (carried across a restart) has no connectors: its events name none.
        connectors = self._evses[evse_id].connector_ids if evse_id in self._evses else ()
        return (*fault_place(code, evse_id, connectors), code)

    async def _follow_component(self, place: Place) -> None:
        """The Problem of a component a fault names (RCD of EVSE 1, ...): true while a fault holds it, by
        `_still_held`'s rule. The EVSE and the station are `_follow_problem`'s."""
        component, evse_id, connector_id = place
        if component in OWN_PROBLEM_COMPONENTS:
            return
        key = _problem(ComponentKey(component, evse_id=evse_id, connector_id=connector_id))
        if key not in self._dm.definitions:
            # Not a component of this EVSE's drivers (runtime/fault_components.py), or of an EVSE gone
            # since a restart: the event still goes, nothing to keep.
            log.info("fault events: %s is not in the device model; its Problem is not kept", key.component)
            return
        await self._dm.update(key, _bool(self._still_held(component, evse_id, connector_id)))

    async def _follow_problem(self, evse_id: int) -> None:
        """EVSE.Problem / ChargingStation.Problem: true while any fault is active there."""
        evse_problem = bool(self._active.get(evse_id))
        station_problem = any(self._active.values())
        if evse_id in self._evses:  # a gone EVSE has no variables
            await self._dm.update(_problem(ComponentKey("EVSE", evse_id=evse_id)), _bool(evse_problem))
        await self._dm.update(_problem(ComponentKey("ChargingStation")), _bool(station_problem))

    async def _send(self) -> NoReturn:
        await self._queue.deliver(
            uplink=self._uplink,
            device_model=self._dm,
            send=self._notify,
            batch=_BATCH,
            describe=_describe,
        )

    async def _notify(self, calls: CallManager, events: list[FaultEvent]) -> None:
        await calls.call("NotifyEvent", notify_event(events, self._clock.iso()))


def _problem(component: ComponentKey) -> VariableKey:
    return VariableKey(component, PROBLEM)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _describe(events: Sequence[FaultEvent]) -> str:
    ids = ", ".join(str(e.event_id) for e in events)
    return f"NotifyEvent (eventId {ids})"

"""Availability (2.0.1 G; 1.6 Core StatusNotification / ChangeAvailability): connector statuses and
the CSMS's requested availability of the station, its EVSEs and connectors.

Builds the StatusNotification payloads of both versions from the EVSEs' state; the session layer
decides when they are sent (the EVSEs publish StatusChanged on every change, availability included).
ChangeAvailability is persisted before it is applied, re-applied at start-up before anything is sent,
and a change to Inoperative on an EVSE with a transaction waits for the transaction's end (`run`).
The rules (status folding, connector 0, scheduling) live in protocol.availability.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from evstation.drivers.api import MREC_VENDOR_ID, FaultCode, mrec_code, ocpp16_error_code
from evstation.protocol.availability import (
    AvailabilityTargets,
    ChangeAnswer,
    Connector,
    decide_change,
    v16_charge_point_status,
    v201_connector_status,
)
from evstation.protocol.boot import V16_DEFAULT_GATES, V201_DEFAULT_GATES
from evstation.protocol.layout import StationLayout, UnknownConnector
from evstation.protocol.messages import VersionModels
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.registry import handles
from evstation.runtime.clock import WallClock
from evstation.runtime.events import Dropped
from evstation.runtime.evse import Evses, SessionEnded, StatusChanged
from evstation.runtime.storage import Storage, StorageWriteError

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
    from evstation.runtime.blocks.transactions.services import TransactionIds
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["AVAILABILITY_KEY", "Availability"]

log = logging.getLogger(__name__)

V16, V201 = OcppVersion.V16, OcppVersion.V201

# Storage setting holding the CSMS's requested availability (AvailabilityTargets.to_json).
AVAILABILITY_KEY: Final = "availability.targets"


def _v16_error_fields(fault: FaultCode | None) -> dict[str, object]:
    if fault is None:
        return {"errorCode": "NoError"}
    fields: dict[str, object] = {"errorCode": ocpp16_error_code(fault), "info": fault.value[:50]}
    code = mrec_code(fault)
    if code is not None:
        # ChargeX MREC: vendorId names MREC, vendorErrorCode carries the CXnnn code.
        fields["vendorId"] = MREC_VENDOR_ID
        fields["vendorErrorCode"] = code
    return fields


def _first_fault(faults: frozenset[FaultCode]) -> FaultCode | None:
    return min(faults, key=lambda f: f.value) if faults else None


class Availability:
    """The availability block. Start `run` with `nursery.start` before the session sends anything."""

    def __init__(
        self,
        *,
        version: OcppVersion,
        evses: Evses,
        layout: StationLayout,
        clock: WallClock,
        storage: Storage,
        transaction_ids: TransactionIds,
    ) -> None:
        self.version = version
        self._evses = evses
        self._layout = layout
        self._clock = clock
        self._storage = storage
        self._targets = AvailabilityTargets()
        self._transaction_ids = transaction_ids
        # EVSEs whose transaction, left open by the previous run, the transactions block may resume:
        # busy until it has resumed or ended them (G03: a scheduled change waits for the end).
        self._recovering: frozenset[int] = frozenset()
        self._lock = trio.Lock()  # one change at a time: decide, persist, apply

    @property
    def targets(self) -> AvailabilityTargets:
        return self._targets

    # --- ChangeAvailability ----------------------------------------------------------------------

    async def change(
        self, operative: bool, evse_id: int | None = None, connector_id: int | None = None
    ) -> ChangeAnswer:
        """Change the availability of the station (`evse_id` None), an EVSE (`connector_id` None) or a
        connector; the caller has checked that they exist. Persisted before it is applied: a change the
        database refuses to store is Rejected and not applied (applied, a restart would undo it)."""
        async with self._lock:
            wanted = self._targets.changed(operative, evse_id, connector_id)
            decision = decide_change(self._applied(), wanted, self._in_transaction())
            if wanted != self._targets:
                try:
                    await self._storage.set_setting(AVAILABILITY_KEY, wanted.to_json())
                except StorageWriteError as exc:
                    log.warning("ChangeAvailability rejected: %s", exc)
                    return ChangeAnswer.REJECTED
                self._targets = wanted
            await self._switch(decision.now)
            if decision.after_transaction:
                log.info("Inoperative scheduled for EVSE(s) %s", sorted(decision.after_transaction))
            return decision.answer

    def _applied(self) -> dict[Connector, bool]:
        return {
            (evse_id, connector_id): self._evses[evse_id].available(connector_id)
            for evse_id, connector_id in self._layout.connectors()
        }

    def _in_transaction(self) -> list[int]:
        # An authorized session counts: its transaction may not have started at the CSMS yet, and
        # SessionEnded ends both.
        return [evse.id for evse in self._evses if evse.session_active() or evse.id in self._recovering]

    async def _switch(self, now: Mapping[Connector, bool]) -> None:
        for (evse_id, connector_id), operative in sorted(now.items()):
            await self._evses[evse_id].set_available(operative, [connector_id])

    async def _catch_up(self) -> None:
        """Apply every change that is due: at start-up, and when a transaction ends."""
        async with self._lock:
            decision = decide_change(self._applied(), self._targets, self._in_transaction())
            await self._switch(decision.now)

    async def _load(self) -> None:
        text = await self._storage.get_setting(AVAILABILITY_KEY)
        if text is None:
            return
        try:
            self._targets = AvailabilityTargets.from_json(text)
        except ValueError as exc:
            log.error("stored availability unreadable (%s): every connector stays Operative", exc)
            return
        # A connector removed from the configuration since keeps nothing alive.
        known = set(self._layout.connectors())
        self._targets = AvailabilityTargets(
            self._targets.station_inoperative,
            frozenset(e for e in self._targets.evses if e in self._layout.evse_ids()),
            frozenset(pair for pair in self._targets.connectors if pair in known),
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Apply the persisted availability (G03 / G04: it survives a restart), report started, then
        apply each scheduled change when its EVSE's transaction ends. An EVSE whose transaction the
        previous run left open counts as in a transaction until the transactions block has resumed
        or ended it: a change scheduled for that transaction's end still waits for it."""
        await self._load()
        self._recovering = frozenset(
            r.evse_id for r in await self._storage.transactions() if r.is_open and r.resumable
        )
        with self._evses.subscribe() as events:
            await self._catch_up()
            task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._after_recovery)
                async for event in events:
                    if isinstance(event, SessionEnded | Dropped):
                        await self._catch_up()
        raise AssertionError("the EVSE event stream ended")  # pragma: no cover - subscriptions never end

    async def _after_recovery(self) -> None:
        """Once the previous run's transactions are resumed (their sessions active again) or ended,
        apply what waited for them."""
        await self._transaction_ids.recovered.wait()
        self._recovering = frozenset()
        await self._catch_up()

    # 1.6 section 4.2: while Pending only RemoteStart/RemoteStopTransaction are refused, so this is
    # served; while Rejected nothing is answered.
    @handles(V16, "ChangeAvailability", gates=V16_DEFAULT_GATES)
    async def change_availability_v16(
        self, req: v16.ChangeAvailabilityRequest
    ) -> v16.ChangeAvailabilityResponse:
        status = v16.ChangeAvailabilityStatusEnum
        operative = req.type == v16.ChangeAvailabilityTypeEnum.OPERATIVE
        if req.connector_id == 0:  # 5.2: connector 0 is the charge point as a whole
            answer = await self.change(operative)
        else:
            try:
                evse_id, connector_id = self._layout.from_v16_number(req.connector_id)
            except UnknownConnector:
                return v16.ChangeAvailabilityResponse(status=status.REJECTED)
            answer = await self.change(operative, evse_id, connector_id)
        return v16.ChangeAvailabilityResponse(status=status(answer.value))

    # 2.0.1 B02.FR.01 lets the CSMS of a Pending station read and change its configuration (B05-B08)
    # only; ChangeAvailability is not among them: SecurityError while Pending or Rejected
    # (docs/session.md).
    @handles(V201, "ChangeAvailability", gates=V201_DEFAULT_GATES)
    async def change_availability_v201(
        self, req: v201.ChangeAvailabilityRequest
    ) -> v201.ChangeAvailabilityResponse:
        status = v201.ChangeAvailabilityStatusEnumType
        operative = req.operational_status == v201.OperationalStatusEnumType.OPERATIVE
        evse = req.evse
        if evse is None or evse.id == 0:  # G04: no EVSE (or EVSE 0) is the station as a whole
            answer = await self.change(operative)
        elif evse.id not in self._layout.evse_ids():
            return _rejected("UnknownEvse", f"no EVSE {evse.id}")
        elif evse.connector_id is None:
            answer = await self.change(operative, evse.id)
        elif not self._layout.has_connector(evse.id, evse.connector_id):
            return _rejected("UnknownConnector", f"no connector {evse.connector_id} on EVSE {evse.id}")
        else:
            answer = await self.change(operative, evse.id, evse.connector_id)
        return v201.ChangeAvailabilityResponse(status=status(answer.value))

    # --- StatusNotification ----------------------------------------------------------------------

    def status_requests(self, event: StatusChanged | None) -> list[dict[str, object]]:
        """StatusNotification payloads: every connector's (1.6: and connector 0's) when `event` is None,
        else the changed connector's."""
        if self.version is OcppVersion.V16:
            return self._v16_status_requests(event)
        return self._v201_status_requests(event)

    def _v16_status_requests(self, event: StatusChanged | None) -> list[dict[str, object]]:
        now = self._clock.iso()
        if event is not None:
            # Connector 0 follows along: the session sends it only when its own status changed.
            return [
                {
                    "connectorId": self._layout.v16_number(event.evse_id, event.connector_id),
                    "status": event.status.value,
                    "timestamp": now,
                    **_v16_error_fields(event.fault),
                },
                self._v16_station_status(now),
            ]
        payloads: list[dict[str, object]] = []
        for evse_id, connector_id in self._layout.connectors():
            evse = self._evses[evse_id]
            payloads.append(
                {
                    "connectorId": self._layout.v16_number(evse_id, connector_id),
                    "status": evse.status(connector_id).value,
                    "timestamp": now,
                    **_v16_error_fields(_first_fault(evse.active_faults())),
                }
            )
        return [self._v16_station_status(now), *payloads]

    def list_conflict_requests(self) -> list[dict[str, object]]:
        """1.6 3.5.2: a local list / CSMS conflict is reported as connector 0's current status with
        errorCode LocalListConflict. 2.0.1 StatusNotification has no error code and no such report."""
        if self.version is not OcppVersion.V16:
            return []
        return [{**self._v16_station_status(self._clock.iso()), "errorCode": "LocalListConflict"}]

    def _v16_station_status(self, now: str) -> dict[str, object]:
        """1.6 connector 0: Unavailable once the station was made Inoperative and that is applied."""
        applied = self._applied()
        return {
            "connectorId": 0,
            "status": v16_charge_point_status(
                (self._evses[e].status(c).value for e, c in self._layout.connectors()),
                station_unavailable=self._targets.station_inoperative and not any(applied.values()),
            ),
            "timestamp": now,
            "errorCode": "NoError",
        }

    def _v201_status_requests(self, event: StatusChanged | None) -> list[dict[str, object]]:
        now = self._clock.iso()
        if event is not None:
            pairs = [(event.evse_id, event.connector_id, event.status.value, event.ev_away)]
        else:
            pairs = [
                (
                    evse_id,
                    connector_id,
                    self._evses[evse_id].status(connector_id).value,
                    self._evses[evse_id].ev_away(connector_id),
                )
                for evse_id, connector_id in self._layout.connectors()
            ]
        return [
            {
                "timestamp": now,
                "connectorStatus": v201_connector_status(status, ev_away=ev_away),
                "evseId": evse_id,
                "connectorId": connector_id,
            }
            for evse_id, connector_id, status, ev_away in pairs
        ]


def _rejected(reason: str, info: str) -> v201.ChangeAvailabilityResponse:
    return v201.ChangeAvailabilityResponse(
        status=v201.ChangeAvailabilityStatusEnumType.REJECTED,
        status_info=v201.StatusInfoType(reason_code=reason, additional_info=info),
    )

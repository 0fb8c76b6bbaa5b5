"""Reservation (2.0.1 H01-H04; 1.6 Reservation profile: ReserveNow, CancelReservation).

Holds the CSMS's reservations (persisted in SQLite, so a restart keeps them), shows the EVSEs they
hold as Reserved, expires them on time, and tells the transactions block and remote control which
token may use an EVSE (`admit`) and which reservation a starting transaction consumes (`consume`).
The rules are in protocol.reservation. Never imports the transactions block (it asks us).
"""

from __future__ import annotations

import logging
import math
import sqlite3
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from evstation.protocol.layout import StationLayout, UnknownConnector
from evstation.protocol.messages import VersionModels, enum_text
from evstation.protocol.reservation import (
    Admission,
    EvseState,
    EvseView,
    Reservation,
    ReservePolicy,
    ReserveStatus,
    admission,
    decide_reserve,
    expired,
    next_expiry,
    removed_by_state,
    reserved_evses,
)
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.registry import handles
from evstation.runtime.calls import CallFailed
from evstation.runtime.clock import WallClock
from evstation.runtime.device_model import (
    NOT_STORED_INFO,
    RESERVATION_ENABLED,
    RESERVATION_NON_EVSE_SPECIFIC,
    DeviceModel,
)
from evstation.runtime.events import Dropped, first_of
from evstation.runtime.evse import ConnectorStatus, Evse, Evses, StatusChanged
from evstation.runtime.link import LinkDown
from evstation.runtime.storage import Storage, StorageWriteError, from_db_time, to_db_time
from evstation.runtime.uplink import Uplink

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["Reservations"]

log = logging.getLogger(__name__)

V16, V201 = OcppVersion.V16, OcppVersion.V201

_STATE_OF_STATUS: Final = {
    ConnectorStatus.AVAILABLE: EvseState.AVAILABLE,
    ConnectorStatus.RESERVED: EvseState.AVAILABLE,  # our own display: the reservations say who holds it
    ConnectorStatus.FAULTED: EvseState.FAULTED,
    ConnectorStatus.UNAVAILABLE: EvseState.UNAVAILABLE,
}


def _read_all(conn: sqlite3.Connection) -> list[Reservation]:
    rows = conn.execute(
        "SELECT id, evse_id, connector_type, id_token, token_type, group_id_token, expires_at"
        " FROM reservations ORDER BY id"
    ).fetchall()
    reservations = []
    for row in rows:
        expires_at = from_db_time(row["expires_at"])
        assert expires_at is not None
        reservations.append(
            Reservation(
                id=row["id"],
                id_token=row["id_token"],
                expires_at=expires_at,
                evse_id=row["evse_id"],
                connector_type=row["connector_type"],
                token_type=row["token_type"],
                group_id_token=row["group_id_token"],
            )
        )
    return reservations


def _write(conn: sqlite3.Connection, r: Reservation) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO reservations"
        " (id, evse_id, connector_type, id_token, token_type, group_id_token, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            r.id,
            r.evse_id,
            r.connector_type,
            r.id_token,
            r.token_type,
            r.group_id_token,
            to_db_time(r.expires_at),
        ),
    )


def _delete(conn: sqlite3.Connection, reservation_ids: Iterable[int]) -> None:
    conn.executemany("DELETE FROM reservations WHERE id = ?", [(i,) for i in reservation_ids])


class Reservations:
    """The reservation block. Start `run` with `nursery.start` for the station's lifetime (it loads the
    stored reservations, keeps the Reserved statuses, expires reservations and sends 2.0.1
    ReservationStatusUpdate)."""

    def __init__(
        self,
        *,
        version: OcppVersion,
        evses: Evses,
        layout: StationLayout,
        storage: Storage,
        clock: WallClock,
        uplink: Uplink,
        device_model: DeviceModel,
    ) -> None:
        self.version = version
        self._evses = evses
        self._layout = layout
        self._storage = storage
        self._clock = clock
        self._uplink = uplink
        self._device_model = device_model
        self._held: dict[int, Reservation] = {}
        # EVSE id -> the reservation an admitted token will use there (group members included).
        self._claims: dict[int, int] = {}
        self._changed = trio.Event()
        # Removed here but still stored: the database refused the delete (`_record_removals`).
        self._unrecorded: set[int] = set()
        self._unrecorded_added = trio.Event()
        # Ids whose ReserveNow row is being written: a delete owed for the old row with that id must
        # not run after it (deletes and writes commit in the order they are called).
        self._writing: set[int] = set()
        self._updates_send, self._updates_receive = trio.open_memory_channel[tuple[int, str]](math.inf)

    # --- queries for other blocks --------------------------------------------------------------

    def reservations(self) -> list[Reservation]:
        return sorted(self._held.values(), key=lambda r: r.id)

    def admit(self, evse_id: int, id_token: str, group_id_token: str | None, *, token_type: str) -> bool:
        """Whether an authorized token may start on the EVSE (H03; 1.6 5.13); remembers the
        reservation it will use there, for `consume`. `token_type` is the presented token's type (the
        reader's, or the remote start request's); 1.6 reservations have none to compare it with."""
        decision: Admission = admission(
            self._held.values(), self._views(), evse_id, id_token, group_id_token, token_type=token_type
        )
        self._claims.pop(evse_id, None)
        if decision.allowed and decision.reservation_id is not None:
            self._claims[evse_id] = decision.reservation_id
        if not decision.allowed:
            log.info("EVSE %d is reserved for another token: %s refused", evse_id, id_token)
        return decision.allowed

    async def consume(self, evse_id: int, id_token: str, token_type: str) -> int | None:
        """A transaction starts on the EVSE for the token: the reservation it uses ends, and its id goes
        into the transaction (2.0.1 TransactionEvent.reservationId, 1.6 StartTransaction.reservationId)."""
        reservation_id = self._claims.pop(evse_id, None)
        if reservation_id not in self._held:
            reservation_id = admission(
                self._held.values(), self._views(), evse_id, id_token, None, token_type=token_type
            ).reservation_id
        if reservation_id is None:
            return None
        await self._remove([reservation_id])
        log.info("reservation %d used by the transaction on EVSE %d", reservation_id, evse_id)
        return reservation_id

    # --- the block's task ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Load the stored reservations, show them, then expire them on time, follow the EVSEs'
        statuses and send the ReservationStatusUpdates (2.0.1) once online."""
        self._held = {r.id: r for r in await self._storage.read(_read_all)}
        async with trio.open_nursery() as nursery:
            with self._evses.subscribe() as events:
                await self._expire_due()
                await self._show()
                nursery.start_soon(self._expire_on_time)
                nursery.start_soon(self._send_updates)
                nursery.start_soon(self._record_removals)
                task_status.started()
                async for event in events:
                    if isinstance(event, (StatusChanged, Dropped)):
                        await self._follow_statuses()
        raise AssertionError("the EVSE event stream ended")  # pragma: no cover

    async def _expire_on_time(self) -> NoReturn:
        while True:
            changed, moved = self._changed, self._clock.moved()
            await self._expire_due()
            due = next_expiry(self._held.values())
            if due is None:
                await changed.wait()
                continue
            # The wall clock follows the CSMS; the wait runs on trio time, re-armed at every change
            # and every clock correction (a CSMS clock ahead of ours ends a reservation sooner).
            with trio.move_on_after(max((due - self._clock.now()).total_seconds(), 0.0)):
                await first_of(changed, moved)

    async def _expire_due(self) -> None:
        due = expired(self._held.values(), self._clock.now())
        if due:
            for reservation in due:
                log.info("reservation %d expired", reservation.id)
            # H04.FR.01-02: back to Available, and (2.0.1) ReservationStatusUpdate Expired.
            await self._remove([r.id for r in due], update="Expired")

    async def _follow_statuses(self) -> None:
        if self.version is V201:
            states = {view.id: view.state for view in self._views()}
            gone = removed_by_state(self._held.values(), states)
            if gone:
                for reservation in gone:
                    log.warning(
                        "reservation %d removed: EVSE %s can no longer serve it",
                        reservation.id,
                        reservation.evse_id,
                    )
                await self._remove([r.id for r in gone], update="Removed")
                return
        await self._show()

    async def _send_updates(self) -> NoReturn:
        """2.0.1 ReservationStatusUpdate, in order, once the station is online; not queued across a
        restart (it is not a transaction message)."""
        async for reservation_id, status in self._updates_receive:
            calls = await self._uplink.wait_online()
            payload = {"reservationId": reservation_id, "reservationUpdateStatus": status}
            try:
                await calls.call("ReservationStatusUpdate", payload)
            except (CallFailed, LinkDown) as exc:
                log.warning("ReservationStatusUpdate %d %s not delivered: %s", reservation_id, status, exc)
        raise AssertionError("unreachable")  # pragma: no cover - we hold the send side

    # --- internals -----------------------------------------------------------------------------

    def _views(self) -> list[EvseView]:
        return [self._view(evse) for evse in self._evses]

    def _view(self, evse: Evse) -> EvseView:
        status = evse.status(evse.connector_in_use)
        state = _STATE_OF_STATUS.get(status, EvseState.OCCUPIED)
        layout = next((e for e in self._layout.evses if e.id == evse.id), None)
        types = frozenset() if layout is None else frozenset(c.connector_type for c in layout.connectors)
        return EvseView(evse.id, state, types)

    async def _show(self) -> None:
        """Each EVSE shows Reserved exactly when the reservations hold it."""
        held = reserved_evses(self._held.values(), self._views())
        for evse in self._evses:
            await evse.set_reserved(evse.id in held)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _record_removals(self) -> NoReturn:
        """Delete what `_remove` could not once writes succeed: else a restart brings back a reservation
        that expired, was used or was removed, and it holds the EVSE again."""
        while True:
            await self._unrecorded_added.wait()
            self._unrecorded_added = trio.Event()
            await self._storage.until_written(self._delete_unrecorded)

    async def _delete_unrecorded(self) -> None:
        ids = sorted(self._unrecorded - self._writing)
        if ids:
            await self._storage.write(lambda conn: _delete(conn, ids))
            self._unrecorded.difference_update(ids)
            log.info("reservation(s) %s now deleted from the database too", ids)

    async def _remove(
        self, reservation_ids: list[int], *, update: str | None = None, strict: bool = False
    ) -> None:
        """Forget the reservations. A delete the database refuses raises `StorageWriteError` when
        `strict` (a CancelReservation: answered Rejected, nothing changes); else they go all the same (one
        that expired, was used or can no longer be served must not hold the EVSE), and the delete is
        recorded once writes succeed."""
        ids = [i for i in reservation_ids if i in self._held]
        if not ids:
            return
        try:
            await self._storage.write(lambda conn: _delete(conn, ids))
        except StorageWriteError:
            if strict:
                raise
            log.warning(
                "reservation(s) %s removed; their delete is stored once the database takes writes", ids
            )
            self._unrecorded.update(ids)
            self._unrecorded_added.set()
        for reservation_id in ids:
            del self._held[reservation_id]
            if update is not None and self.version is V201:
                self._updates_send.send_nowait((reservation_id, update))
        self._claims = {evse: rid for evse, rid in self._claims.items() if rid in self._held}
        self._wake()
        await self._show()

    async def _reserve(self, request: Reservation) -> ReserveStatus:
        dm = self._device_model
        policy = ReservePolicy(dm.get_bool(RESERVATION_ENABLED), dm.get_bool(RESERVATION_NON_EVSE_SPECIFIC))
        status = decide_reserve(request, self._views(), self._held.values(), policy, self._clock.now())
        if status is ReserveStatus.ACCEPTED:
            self._writing.add(request.id)
            try:
                await self._storage.write(lambda conn: _write(conn, request))
            except StorageWriteError as exc:
                # Held only in memory, a restart would drop a reservation the CSMS was told it has.
                log.warning("reservation %d rejected: %s", request.id, exc)
                if request.id in self._unrecorded:
                    self._unrecorded_added.set()  # the old row's delete, skipped meanwhile, is still owed
                return ReserveStatus.REJECTED
            finally:
                self._writing.discard(request.id)
            self._held[request.id] = request  # replaces a reservation with the same id (H01.FR.02)
            # Its row replaced any stored one with this id: a delete still owed for that one is moot.
            self._unrecorded.discard(request.id)
            self._wake()
            await self._show()
            log.info(
                "reservation %d accepted (EVSE %s, until %s)", request.id, request.evse_id, request.expires_at
            )
        return status

    async def _cancel(self, reservation_id: int) -> bool:
        """False: no such reservation (H02.FR.01). A cancel the database refuses to store raises
        `StorageWriteError`: the reservation stays (memory agrees with the disk)."""
        if reservation_id not in self._held:
            return False
        await self._remove([reservation_id], strict=True)  # H02.FR.02; no ReservationStatusUpdate
        return True

    # --- 1.6 ---------------------------------------------------------------------------------------

    @handles(V16, "ReserveNow")
    async def reserve_now_v16(self, req: v16.ReserveNowRequest) -> v16.ReserveNowResponse:
        evse_id: int | None = None
        if req.connector_id != 0:
            try:
                evse_id = self._layout.from_v16_number(req.connector_id)[0]
            except UnknownConnector:
                return v16.ReserveNowResponse(status=v16.ReserveNowStatusEnum.REJECTED)
        request = Reservation(
            id=req.reservation_id,
            id_token=req.id_tag,
            expires_at=req.expiry_date,
            evse_id=evse_id,
            group_id_token=req.parent_id_tag,
        )
        status = await self._reserve(request)
        return v16.ReserveNowResponse(status=v16.ReserveNowStatusEnum(status.value))

    @handles(V16, "CancelReservation")
    async def cancel_reservation_v16(
        self, req: v16.CancelReservationRequest
    ) -> v16.CancelReservationResponse:
        status = v16.CancelReservationStatusEnum
        try:
            cancelled = await self._cancel(req.reservation_id)
        except StorageWriteError as exc:
            log.warning("CancelReservation %d rejected: %s", req.reservation_id, exc)
            cancelled = False
        return v16.CancelReservationResponse(status=status.ACCEPTED if cancelled else status.REJECTED)

    # --- 2.0.1 -------------------------------------------------------------------------------------

    @handles(V201, "ReserveNow")
    async def reserve_now_v201(self, req: v201.ReserveNowRequest) -> v201.ReserveNowResponse:
        request = Reservation(
            id=req.id,
            id_token=req.id_token.id_token,
            expires_at=req.expiry_date_time,
            evse_id=req.evse_id,
            connector_type=None if req.connector_type is None else enum_text(req.connector_type),
            token_type=enum_text(req.id_token.type),
            group_id_token=None if req.group_id_token is None else req.group_id_token.id_token,
        )
        status = await self._reserve(request)
        return v201.ReserveNowResponse(status=v201.ReserveNowStatusEnumType(status.value))

    @handles(V201, "CancelReservation")
    async def cancel_reservation_v201(
        self, req: v201.CancelReservationRequest
    ) -> v201.CancelReservationResponse:
        status = v201.CancelReservationStatusEnumType
        try:
            cancelled = await self._cancel(req.reservation_id)
        except StorageWriteError as exc:
            log.warning("CancelReservation %d rejected: %s", req.reservation_id, exc)
            info = v201.StatusInfoType(reason_code="InternalError", additional_info=NOT_STORED_INFO)
            return v201.CancelReservationResponse(status=status.REJECTED, status_info=info)
        return v201.CancelReservationResponse(status=status.ACCEPTED if cancelled else status.REJECTED)

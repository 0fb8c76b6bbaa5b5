"""Reservation rules of both versions (2.0.1 H01-H04; 1.6 section 5.13 ReserveNow / 5.3 CancelReservation).

Pure: the caller passes the reservations, a view of each EVSE and `now`; these functions answer
ReserveNow, say which EVSEs show Reserved, whether a token may use an EVSE (and which reservation it
consumes) and which reservations have expired. Never reads a clock or storage.

A reservation names one EVSE, or none (2.0.1 evseId absent, optionally with a connectorType; 1.6
connector 0). The station keeps, at any time, one distinct free EVSE for every reservation without
an EVSE (H01.FR.07 / H01.FR.09; 1.6 5.13 "keep one connector available"): a bipartite matching of
those reservations onto the free EVSEs that fit them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from evstation.records import record

__all__ = [
    "Admission",
    "EvseState",
    "EvseView",
    "Reservation",
    "ReservePolicy",
    "ReserveStatus",
    "admission",
    "decide_reserve",
    "expired",
    "next_expiry",
    "removed_by_state",
    "reserved_evses",
    "same_token",
]


class EvseState(enum.Enum):
    """What ReserveNow needs to know of an EVSE (from its connector status)."""

    AVAILABLE = "Available"  # free: no EV, no session
    OCCUPIED = "Occupied"  # an EV or a session is on it
    FAULTED = "Faulted"
    UNAVAILABLE = "Unavailable"


class ReserveStatus(enum.StrEnum):
    """ReserveNow answer: the same five values in 1.6 ReservationStatus and 2.0.1 ReserveNowStatusEnumType."""

    ACCEPTED = "Accepted"
    FAULTED = "Faulted"
    OCCUPIED = "Occupied"
    REJECTED = "Rejected"
    UNAVAILABLE = "Unavailable"


@record
class EvseView:
    id: int
    state: EvseState
    connector_types: frozenset[str]


@record
class Reservation:
    """One reservation. `group_id_token` is the 2.0.1 groupIdToken / the 1.6 parentIdTag."""

    id: int
    id_token: str
    expires_at: datetime
    evse_id: int | None = None  # None: any EVSE (2.0.1 evseId absent; 1.6 connector 0)
    connector_type: str | None = None  # 2.0.1 connectorType
    token_type: str | None = None  # 2.0.1 IdTokenType.type; None in 1.6
    group_id_token: str | None = None


@record
class ReservePolicy:
    enabled: bool  # 2.0.1 ReservationCtrlr.Enabled (1.6: the Reservation profile is there)
    non_evse_specific: bool  # 2.0.1 ReservationCtrlr.NonEvseSpecific; 1.6 ReserveConnectorZeroSupported


@record
class Admission:
    """May the token start on the EVSE, and which reservation (if any) it uses there."""

    allowed: bool
    reservation_id: int | None = None


def same_token(a: str, b: str) -> bool:
    """2.0.1 IdTokenType.idToken is case-insensitive; the 1.6 idTag is a CiString."""
    return a.casefold() == b.casefold()


def _fits(reservation: Reservation, evse: EvseView) -> bool:
    return reservation.connector_type is None or reservation.connector_type in evse.connector_types


def _matching_size(reservations: Sequence[Reservation], free: Sequence[EvseView]) -> int:
    """How many of `reservations` get a distinct EVSE of `free` that fits them (Kuhn's algorithm;
    both sides are a handful of items)."""
    owner: dict[int, int] = {}  # EVSE id -> index of the reservation holding it

    def place(index: int, seen: set[int]) -> bool:
        for evse in free:
            if evse.id in seen or not _fits(reservations[index], evse):
                continue
            seen.add(evse.id)
            holder = owner.get(evse.id)
            if holder is None or place(holder, seen):
                owner[evse.id] = index
                return True
        return False

    return sum(1 for index in range(len(reservations)) if place(index, set()))


def _free(evses: Iterable[EvseView], reservations: Iterable[Reservation]) -> list[EvseView]:
    """Available EVSEs no reservation names."""
    named = {r.evse_id for r in reservations if r.evse_id is not None}
    return [e for e in evses if e.state is EvseState.AVAILABLE and e.id not in named]


def _unspecified(reservations: Iterable[Reservation]) -> list[Reservation]:
    return [r for r in reservations if r.evse_id is None]


def _placed(reservations: Sequence[Reservation], evses: Sequence[EvseView]) -> int:
    return _matching_size(_unspecified(reservations), _free(evses, reservations))


def decide_reserve(
    request: Reservation,
    evses: Sequence[EvseView],
    reservations: Iterable[Reservation],
    policy: ReservePolicy,
    now: datetime,
) -> ReserveStatus:
    """The answer to ReserveNow. A request with the id of a held reservation replaces it when
    Accepted (H01.FR.02; 1.6 5.13); whatever else it answers, the held one stays."""
    if not policy.enabled or request.expires_at <= now:
        return ReserveStatus.REJECTED
    others = [r for r in reservations if r.id != request.id]
    if request.evse_id is not None:
        evse = next((e for e in evses if e.id == request.evse_id), None)
        if evse is None or not _fits(request, evse):
            return ReserveStatus.REJECTED
        if evse.state is EvseState.FAULTED:
            return ReserveStatus.FAULTED  # H01.FR.12
        if evse.state is EvseState.UNAVAILABLE:
            return ReserveStatus.UNAVAILABLE  # H01.FR.14
        if evse.state is EvseState.OCCUPIED or any(r.evse_id == evse.id for r in others):
            return ReserveStatus.OCCUPIED  # H01.FR.11 (a reserved EVSE is occupied too)
        # Taking this EVSE must leave every unspecified reservation its own free EVSE.
        if _placed([*others, request], evses) < _placed(others, evses):
            return ReserveStatus.OCCUPIED
        return ReserveStatus.ACCEPTED
    if not policy.non_evse_specific:
        return ReserveStatus.REJECTED  # H01.FR.19; 1.6 connector 0 without ReserveConnectorZeroSupported
    candidates = [e for e in evses if _fits(request, e)]
    if not candidates:
        return ReserveStatus.REJECTED  # no connector of that type here
    states = {e.state for e in candidates}
    if EvseState.AVAILABLE not in states:
        if states == {EvseState.FAULTED}:
            return ReserveStatus.FAULTED
        if states <= {EvseState.FAULTED, EvseState.UNAVAILABLE}:
            return ReserveStatus.UNAVAILABLE
        return ReserveStatus.OCCUPIED
    if _placed([*others, request], evses) <= _placed(others, evses):
        return ReserveStatus.OCCUPIED  # every fitting free EVSE is already promised
    return ReserveStatus.ACCEPTED


def reserved_evses(reservations: Iterable[Reservation], evses: Sequence[EvseView]) -> frozenset[int]:
    """The EVSEs that show Reserved: each one a reservation names (H01.FR.04), and each free EVSE
    the unspecified reservations cannot spare (taking it would leave one of them without an EVSE)."""
    held = list(reservations)
    named = {r.evse_id for r in held if r.evse_id is not None}
    return frozenset(named) | _critical(held, evses)


def _critical(reservations: Sequence[Reservation], evses: Sequence[EvseView]) -> frozenset[int]:
    unspecified = _unspecified(reservations)
    if not unspecified:
        return frozenset()
    free = _free(evses, reservations)
    placed = _matching_size(unspecified, free)
    return frozenset(
        e.id for e in free if _matching_size(unspecified, [f for f in free if f.id != e.id]) < placed
    )


def _belongs(
    reservation: Reservation, id_token: str, token_type: str | None, group_id_token: str | None
) -> bool:
    # 2.0.1 H03 (scenario S1): the presented IdTokenType is "the same as the reservation's", which is
    # idToken (case-insensitive) and type; a 1.6 reservation has no type (idTag only).
    same_type = reservation.token_type is None or token_type is None or reservation.token_type == token_type
    if same_type and same_token(reservation.id_token, id_token):
        return True
    # H03 S2 / 1.6 parentIdTag: the group is compared by its idToken (its type is not stored).
    group = reservation.group_id_token
    return group is not None and group_id_token is not None and same_token(group, group_id_token)


def admission(
    reservations: Iterable[Reservation],
    evses: Sequence[EvseView],
    evse_id: int,
    id_token: str,
    group_id_token: str | None,
    *,
    token_type: str | None = None,
) -> Admission:
    """Whether an authorized token may start on `evse_id` (H03; 1.6 5.13).

    The reserving idToken (2.0.1: of the reservation's type too; `token_type` None is a token without
    a type, 1.6), or a token of the reservation's group (2.0.1 groupIdToken, 1.6
    parentIdTag), uses its reservation: the one on this EVSE, else an unspecified one this EVSE fits.
    Any other token is refused on an EVSE a reservation names, and on a free EVSE the unspecified
    reservations cannot spare. The EVSE in question counts as free here: a driver may plug in first.
    """
    held = list(reservations)
    target = next((e for e in evses if e.id == evse_id), None)
    if target is None:
        return Admission(allowed=True)
    own = [r for r in held if _belongs(r, id_token, token_type, group_id_token)]
    for reservation in own:
        if reservation.evse_id == evse_id:
            return Admission(True, reservation.id)
    for reservation in own:
        if reservation.evse_id is None and _fits(reservation, target):
            return Admission(True, reservation.id)
    if any(r.evse_id == evse_id for r in held):
        return Admission(allowed=False)
    as_free = [
        EvseView(e.id, EvseState.AVAILABLE, e.connector_types) if e.id == evse_id else e for e in evses
    ]
    if evse_id in _critical(held, as_free):
        return Admission(allowed=False)
    return Admission(allowed=True)


def expired(reservations: Iterable[Reservation], now: datetime) -> list[Reservation]:
    """Reservations whose expiry time has come (H04; 1.6 5.13: valid until expiryDate)."""
    return [r for r in reservations if r.expires_at <= now]


def next_expiry(reservations: Iterable[Reservation]) -> datetime | None:
    return min((r.expires_at for r in reservations), default=None)


def removed_by_state(
    reservations: Iterable[Reservation], states: Mapping[int, EvseState]
) -> list[Reservation]:
    """2.0.1: reservations of an EVSE that became Faulted or Unavailable end (ReservationStatusUpdate
    Removed): the driver could not use them."""
    gone = (EvseState.FAULTED, EvseState.UNAVAILABLE)
    return [r for r in reservations if r.evse_id is not None and states.get(r.evse_id) in gone]

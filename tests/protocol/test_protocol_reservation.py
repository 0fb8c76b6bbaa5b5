"""Reservation rules (protocol.reservation): 2.0.1 H01-H04 and 1.6 5.13 / 5.3, pure and synchronous."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

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

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
ON = ReservePolicy(enabled=True, non_evse_specific=True)
A, OCC, F, U = EvseState.AVAILABLE, EvseState.OCCUPIED, EvseState.FAULTED, EvseState.UNAVAILABLE


def evses(*states: EvseState, types: tuple[str, ...] = ()) -> list[EvseView]:
    return [
        EvseView(i, state, frozenset({types[i - 1]} if types else {"cType2"}))
        for i, state in enumerate(states, start=1)
    ]


def res(rid: int, evse_id: int | None = None, token: str = "OWNER", **kw: object) -> Reservation:
    return Reservation(id=rid, id_token=token, expires_at=kw.pop("expires_at", LATER), evse_id=evse_id, **kw)  # type: ignore[arg-type]


def test_h01_fr_01_rejected_when_reservations_are_disabled() -> None:
    off = ReservePolicy(enabled=False, non_evse_specific=True)
    assert decide_reserve(res(1, 1), evses(A), [], off, NOW) is ReserveStatus.REJECTED


def test_h01_fr_04_an_available_evse_is_reserved_and_shows_reserved() -> None:
    assert decide_reserve(res(1, 1), evses(A, A), [], ON, NOW) is ReserveStatus.ACCEPTED
    assert reserved_evses([res(1, 1)], evses(A, A)) == {1}


@pytest.mark.parametrize(
    ("state", "answer"),
    [
        (OCC, ReserveStatus.OCCUPIED),  # H01.FR.11
        (F, ReserveStatus.FAULTED),  # H01.FR.12
        (U, ReserveStatus.UNAVAILABLE),  # H01.FR.14
    ],
)
def test_h01_fr_11_12_14_answers_for_a_busy_evse(state: EvseState, answer: ReserveStatus) -> None:
    assert decide_reserve(res(1, 1), evses(state, A), [], ON, NOW) is answer


def test_h01_fr_11_an_evse_reserved_by_another_reservation_is_occupied() -> None:
    assert decide_reserve(res(2, 1), evses(A, A), [res(1, 1)], ON, NOW) is ReserveStatus.OCCUPIED


def test_h01_fr_02_same_id_replaces_only_when_accepted() -> None:
    held = [res(1, 1)]
    # Moving reservation 1 to EVSE 2: EVSE 1 held by the very reservation being replaced is no obstacle.
    assert decide_reserve(res(1, 2), evses(A, A), held, ON, NOW) is ReserveStatus.ACCEPTED
    assert decide_reserve(res(1, 1, token="OTHER"), evses(A, A), held, ON, NOW) is ReserveStatus.ACCEPTED


def test_unknown_evse_wrong_connector_type_and_past_expiry_are_rejected() -> None:
    assert decide_reserve(res(1, 9), evses(A), [], ON, NOW) is ReserveStatus.REJECTED
    assert decide_reserve(res(1, 1, connector_type="cCCS2"), evses(A), [], ON, NOW) is ReserveStatus.REJECTED
    assert decide_reserve(res(1, 1, expires_at=NOW), evses(A), [], ON, NOW) is ReserveStatus.REJECTED


def test_h01_fr_19_unspecified_evse_needs_non_evse_specific_v16_connector_zero_too() -> None:
    """2.0.1 evseId absent without NonEvseSpecific; 1.6 connector 0 without ReserveConnectorZeroSupported."""
    specific_only = ReservePolicy(enabled=True, non_evse_specific=False)
    assert decide_reserve(res(1), evses(A, A), [], specific_only, NOW) is ReserveStatus.REJECTED
    assert decide_reserve(res(1), evses(A, A), [], ON, NOW) is ReserveStatus.ACCEPTED


def test_h01_fr_06_07_unspecified_reservations_each_keep_a_distinct_free_evse() -> None:
    held = [res(1)]
    assert decide_reserve(res(2), evses(A, A), held, ON, NOW) is ReserveStatus.ACCEPTED
    held.append(res(2))
    # Both EVSEs are promised: a third, or one for a specific EVSE, would break a promise.
    assert decide_reserve(res(3), evses(A, A), held, ON, NOW) is ReserveStatus.OCCUPIED
    assert decide_reserve(res(3, 1), evses(A, A), held, ON, NOW) is ReserveStatus.OCCUPIED
    # H01.FR.20/24 (errata): when the promises use every free EVSE, each shows Reserved.
    assert reserved_evses(held, evses(A, A)) == {1, 2}
    assert reserved_evses([res(1)], evses(A, A)) == frozenset()
    assert reserved_evses([res(1)], evses(A, OCC)) == {1}


def test_unspecified_answers_when_no_evse_is_free() -> None:
    assert decide_reserve(res(1), evses(F, F), [], ON, NOW) is ReserveStatus.FAULTED
    assert decide_reserve(res(1), evses(F, U), [], ON, NOW) is ReserveStatus.UNAVAILABLE
    assert decide_reserve(res(1), evses(OCC, F), [], ON, NOW) is ReserveStatus.OCCUPIED


def test_h01_fr_09_connector_type_reservations_count_only_fitting_evses() -> None:
    views = evses(A, A, types=("cType2", "cCCS2"))
    ccs = res(1, connector_type="cCCS2")
    assert decide_reserve(ccs, views, [], ON, NOW) is ReserveStatus.ACCEPTED
    assert reserved_evses([ccs], views) == {2}
    assert decide_reserve(res(2, connector_type="cCCS2"), views, [ccs], ON, NOW) is ReserveStatus.OCCUPIED
    assert decide_reserve(res(2, connector_type="cType2"), views, [ccs], ON, NOW) is ReserveStatus.ACCEPTED
    assert decide_reserve(res(2, connector_type="cG105"), views, [], ON, NOW) is ReserveStatus.REJECTED


def test_h03_the_reserving_token_uses_its_reservation_any_letter_case() -> None:
    held = [res(7, 1, token="Owner-1")]
    assert admission(held, evses(A, A), 1, "OWNER-1", None) == Admission(True, 7)


def test_h03_idtoken_type_is_compared_for_a_2_0_1_reservation() -> None:
    """2.0.1 H03 (S1): the presented IdTokenType must be the reservation's: idToken and type. The same
    text read as another type is another token; a 1.6 reservation (no type) compares the idTag only."""
    held = [res(7, 1, token="OWNER", token_type="ISO14443")]
    assert admission(held, evses(A, A), 1, "owner", None, token_type="ISO14443") == Admission(True, 7)
    assert admission(held, evses(A, A), 1, "OWNER", None, token_type="ISO15693") == Admission(False)
    assert admission(held, evses(A, A), 1, "OWNER", None, token_type="Central") == Admission(False)
    # Not this reservation's token, but a member of its group: the group still admits it.
    grouped = [res(7, 1, token="OWNER", token_type="ISO14443", group_id_token="FLEET")]
    assert admission(grouped, evses(A, A), 1, "OWNER", "FLEET", token_type="Central") == Admission(True, 7)
    v16 = [res(7, 1, token="OWNER")]
    assert admission(v16, evses(A, A), 1, "OWNER", None, token_type="Central") == Admission(True, 7)


def test_h03_a_token_of_the_reservation_group_uses_it() -> None:
    """2.0.1 groupIdToken; 1.6 parentIdTag (the presented token's, from Authorize)."""
    held = [res(7, 1, token="OWNER", group_id_token="Fleet")]
    assert admission(held, evses(A, A), 1, "DRIVER-2", "FLEET") == Admission(True, 7)
    assert admission(held, evses(A, A), 1, "DRIVER-2", "OTHER-FLEET") == Admission(False)
    assert admission([res(7, 1)], evses(A, A), 1, "DRIVER-2", None) == Admission(False)


def test_h03_another_token_is_refused_on_the_reserved_evse_but_not_elsewhere() -> None:
    held = [res(7, 1)]
    assert admission(held, evses(A, A), 1, "STRANGER", None) == Admission(False)
    assert admission(held, evses(A, A), 2, "STRANGER", None) == Admission(True)
    # Plugged in first: the reservation still holds the EVSE.
    assert admission(held, evses(OCC, A), 1, "STRANGER", None) == Admission(False)


def test_h03_unspecified_reservation_used_on_any_fitting_evse_and_guarded_when_critical() -> None:
    held = [res(8)]
    assert admission(held, evses(A, A), 2, "OWNER", None) == Admission(True, 8)
    assert admission(held, evses(A, A), 2, "STRANGER", None) == Admission(True)  # EVSE 1 stays free
    assert admission(held, evses(OCC, A), 2, "STRANGER", None) == Admission(False)  # the last free EVSE


def test_h04_expiry_and_next_expiry() -> None:
    soon, late = res(1, 1, expires_at=NOW + timedelta(seconds=5)), res(2, 2)
    assert next_expiry([soon, late]) == soon.expires_at
    assert next_expiry([]) is None
    assert expired([soon, late], NOW) == []
    assert expired([soon, late], NOW + timedelta(seconds=5)) == [soon]


def test_v201_reservation_of_a_faulted_or_unavailable_evse_is_removed() -> None:
    held = [res(1, 1), res(2, 2), res(3)]
    gone = removed_by_state(held, {1: F, 2: A})
    assert gone == [res(1, 1)]
    assert removed_by_state(held, {1: OCC, 2: U}) == [res(2, 2)]

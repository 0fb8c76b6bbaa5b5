"""TxStartPoint / TxStopPoint (2.0.1 E01-E03, E06) as a pure machine, for every combination of the
points this station offers, and the stop / trigger reasons (E02 EVCommunicationLost, not EVDeparted)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evstation.protocol.transactions import (
    Conditions,
    TxAction,
    TxPoint,
    TxPoints,
    TxStep,
    ended_trigger,
    monotonic_energy,
    parse_points,
    step_points,
    stop_reason_for,
    v16_reason,
    v16_stop_points,
)

EV, AUTH, PPC, ET = (
    TxPoint.EV_CONNECTED,
    TxPoint.AUTHORIZED,
    TxPoint.POWER_PATH_CLOSED,
    TxPoint.ENERGY_TRANSFER,
)
OFFERED = (EV, AUTH, PPC, ET)


def _subsets(points: Iterable[TxPoint]) -> list[frozenset[TxPoint]]:
    items = list(points)
    return [frozenset(c) for n in range(1, len(items) + 1) for c in itertools.combinations(items, n)]


ALL = _subsets(OFFERED)

# A plug-first session: plug, tap card, charge, EV pauses, charges again, driver stops with the card,
# unplugs. Index 0 is the idle state.
PLUG_FIRST = [
    Conditions(),
    Conditions(ev_connected=True),
    Conditions(ev_connected=True, authorized=True),
    Conditions(ev_connected=True, authorized=True, energy_transfer=True),
    Conditions(ev_connected=True, authorized=True),
    Conditions(ev_connected=True, authorized=True, energy_transfer=True),
    Conditions(ev_connected=True),
    Conditions(),
]
# For each point: the steps of PLUG_FIRST where it rises / is lost.
RISES = {EV: [1], AUTH: [2], PPC: [2], ET: [3, 5]}
LOST = {EV: [7], AUTH: [6], PPC: [6], ET: [4, 6]}


def _run(sequence: list[Conditions], points: TxPoints) -> list[tuple[int, TxAction, TxPoint | None]]:
    state = TxStep(sequence[0])
    out: list[tuple[int, TxAction, TxPoint | None]] = []
    for index, conditions in enumerate(sequence[1:], start=1):
        decision = step_points(state, conditions, points)
        state = decision.step
        if decision.action is not TxAction.NONE:
            out.append((index, decision.action, decision.point))
    return out


def _expected(start: frozenset[TxPoint], stop: frozenset[TxPoint]) -> list[tuple[int, TxAction]]:
    """The oracle from the per-point tables: start at the first rise of a start point while closed; stop
    at the first loss of a stop point that held since the start, or when nothing is left (step 7)."""
    out: list[tuple[int, TxAction]] = []
    is_open = False
    held: set[TxPoint] = set()
    for index, conditions in enumerate(PLUG_FIRST[1:], start=1):
        if not is_open:
            if any(index in RISES[p] for p in start):
                is_open = True
                held = {p for p in stop if conditions.holds(p)}
                out.append((index, TxAction.START))
            continue
        held |= {p for p in stop if conditions.holds(p)}
        if any(index in LOST[p] for p in held) or index == 7:
            is_open = False
            held = set()
            out.append((index, TxAction.STOP))
    return out


@pytest.mark.parametrize("start", ALL, ids=lambda s: "+".join(sorted(p.value for p in s)))
@pytest.mark.parametrize("stop", ALL, ids=lambda s: "+".join(sorted(p.value for p in s)))
def test_e01_e03_every_start_and_stop_point_combination(
    start: frozenset[TxPoint], stop: frozenset[TxPoint]
) -> None:
    got = [(index, action) for index, action, _ in _run(PLUG_FIRST, TxPoints(start, stop))]
    assert got == _expected(start, stop)


@pytest.mark.parametrize("stop", ALL, ids=lambda s: "+".join(sorted(p.value for p in s)))
def test_e03_authorize_first_then_plug_starts_at_power_path_closed(stop: frozenset[TxPoint]) -> None:
    sequence = [
        Conditions(),
        Conditions(authorized=True),
        Conditions(ev_connected=True, authorized=True),
        Conditions(ev_connected=True, authorized=True, energy_transfer=True),
        Conditions(authorized=True),  # unplugged while charging
        Conditions(),
    ]
    got = _run(sequence, TxPoints(frozenset({PPC}), stop))
    assert got[0] == (2, TxAction.START, PPC)
    # Every stop set ends it at the unplug at the latest (EV gone, or PowerPathClosed lost), or when
    # nothing of the session is left.
    assert got[1][0] in (3, 4, 5) and got[1][1] is TxAction.STOP
    assert len(got) == 2 or got[2][1] is TxAction.START


def test_stop_point_that_never_held_is_not_lost() -> None:
    """Start at EVConnected, stop at Authorized: an EV that is never authorized ends at the unplug."""
    got = _run(
        [Conditions(), Conditions(ev_connected=True), Conditions()],
        TxPoints(frozenset({EV}), frozenset({AUTH})),
    )
    assert got == [(1, TxAction.START, EV), (2, TxAction.STOP, EV)]


def test_an_ev_left_plugged_after_its_transaction_does_not_start_another() -> None:
    points = TxPoints(frozenset({EV}), frozenset({AUTH}))
    sequence = [Conditions(), Conditions(True), Conditions(True, True), Conditions(True), Conditions(True)]
    assert [a for _, a, _ in _run(sequence, points)] == [TxAction.START, TxAction.STOP]


@given(
    st.lists(st.tuples(st.booleans(), st.booleans(), st.booleans()), max_size=40),
    st.sampled_from(ALL),
    st.sampled_from(ALL),
)
def test_starts_and_stops_alternate_and_nothing_left_means_closed(
    steps: list[tuple[bool, bool, bool]], start: frozenset[TxPoint], stop: frozenset[TxPoint]
) -> None:
    state = TxStep()
    expect = TxAction.START
    for ev, auth, energy in steps:
        decision = step_points(state, Conditions(ev, auth, energy), TxPoints(start, stop))
        if decision.action is not TxAction.NONE:
            assert decision.action is expect
            expect = TxAction.STOP if expect is TxAction.START else TxAction.START
        state = decision.step
        if not ev and not auth:
            assert not state.open


def test_parse_points_drops_what_this_station_cannot_detect() -> None:
    assert parse_points("EVConnected, ParkingBayOccupancy,DataSigned") == frozenset({EV})
    assert parse_points("DataSigned", allow_data_signed=True) == frozenset({TxPoint.DATA_SIGNED})
    assert parse_points("") == frozenset()


@pytest.mark.parametrize(
    ("point", "after", "session_reason", "reason"),
    [
        (EV, Conditions(), None, "EVDisconnected"),
        (ET, Conditions(authorized=True), "EVDisconnected", "EVDisconnected"),
        (AUTH, Conditions(ev_connected=True), "Local", "Local"),
        (AUTH, Conditions(ev_connected=True), "Remote", "Remote"),
        (PPC, Conditions(ev_connected=True), "DeAuthorized", "DeAuthorized"),
        (ET, Conditions(ev_connected=True, authorized=True), None, "StoppedByEV"),
        (AUTH, Conditions(ev_connected=True), None, "DeAuthorized"),
    ],
)
def test_stop_reasons(point: TxPoint, after: Conditions, session_reason: str | None, reason: str) -> None:
    assert stop_reason_for(point, after, session_reason) == reason


@pytest.mark.parametrize(
    ("reason", "trigger"),
    [
        # E02: the cable left the EV: the pilot lost the EV. EVDeparted is a parking-bay detector's.
        ("EVDisconnected", "EVCommunicationLost"),
        ("Local", "StopAuthorized"),
        ("Remote", "RemoteStop"),
        ("DeAuthorized", "Deauthorized"),
        ("ImmediateReset", "ResetCommand"),
        ("PowerLoss", "AbnormalCondition"),
        ("StoppedByEV", "ChargingStateChanged"),
    ],
)
def test_e06_ended_trigger_reasons(reason: str, trigger: str) -> None:
    assert ended_trigger(reason) == trigger


def test_v16_reasons_are_the_1_6_enumeration() -> None:
    assert v16_reason("ImmediateReset") == "HardReset"
    assert v16_reason("StoppedByEV") == "Other"
    assert v16_reason("EVDisconnected") == "EVDisconnected"


def test_billing_rule_register_never_goes_backwards() -> None:
    assert monotonic_energy(None, 100.0) == 100.0
    assert monotonic_energy(100.0, 150.0) == 150.0
    assert monotonic_energy(150.0, 120.0) == 150.0


@pytest.mark.parametrize("stop_on_ev_side", [True, False])
def test_v16_stop_transaction_on_ev_side_disconnect(stop_on_ev_side: bool) -> None:
    """1.6 StopTransactionOnEVSideDisconnect: true, the EV leaving stops the transaction
    (EVDisconnected); false, it goes on until the authorization ends."""
    points = TxPoints(frozenset({PPC}), v16_stop_points(stop_on_ev_side))
    charging = Conditions(ev_connected=True, authorized=True, energy_transfer=True)
    started = step_points(TxStep(), charging, points)
    assert started.action is TxAction.START
    gone = Conditions(ev_connected=False, authorized=True)
    left = step_points(started.step, gone, points)
    if stop_on_ev_side:
        assert left.action is TxAction.STOP and left.point is EV
        assert stop_reason_for(EV, gone, None) == "EVDisconnected"
        return
    assert left.action is TxAction.NONE
    back = step_points(left.step, charging, points)
    assert back.action is TxAction.NONE  # the same transaction continues
    ended = step_points(back.step, Conditions(ev_connected=True), points)
    assert ended.action is TxAction.STOP and ended.point is AUTH


def test_e03_connection_timeout_reason_and_trigger() -> None:
    """An authorized session without an EV in EVConnectionTimeOut: Timeout / EVConnectTimeout (1.6 Other)."""
    assert stop_reason_for(AUTH, Conditions(), "Timeout") == "Timeout"
    assert ended_trigger("Timeout") == "EVConnectTimeout"
    assert v16_reason("Timeout") == "Other"

"""The reservation block through the session and running sim EVSEs (2.0.1 H01-H04; 1.6 5.13 ReserveNow,
5.3 CancelReservation): the Reserved status, who may use the EVSE, the transaction's reservationId,
expiry on a MockClock, removal, and persistence across a restart."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    EPOCH,
    CsmsPeer,
    MemoryConnection,
    board,
    call,
    online,
    open_session_context,
    serving,
)

from evstation.drivers.api import FaultCode
from evstation.protocol.versions import OcppVersion
from evstation.runtime.clock import iso
from evstation.runtime.evse import Authorized, ConnectorStatus
from evstation.runtime.session.common import SessionContext

V16, V201 = OcppVersion.V16, OcppVersion.V201


def statuses(csms: CsmsPeer, key: str, value: int) -> list[str]:
    return [
        str(s.call.payload["connectorStatus" if "connectorStatus" in s.call.payload else "status"])
        for s in csms.of("StatusNotification")
        if s.call.payload.get(key) == value
    ]


async def wait_status(csms: CsmsPeer, key: str, value: int, status: str) -> None:
    """Until the connector's latest status is `status`."""
    while statuses(csms, key, value)[-1:] != [status]:
        await csms.wait_for("StatusNotification", len(csms.of("StatusNotification")) + 1)


def reserve_201(
    ctx: SessionContext, rid: int, evse_id: int | None, token: str, **extra: Any
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": rid,
        "expiryDateTime": iso(ctx.clock.now() + timedelta(hours=1)),
        "idToken": {"idToken": token, "type": "ISO14443"},
        **extra,
    }
    if evse_id is not None:
        payload["evseId"] = evse_id
    return payload


async def authorized_within(
    ctx: SessionContext, evse_id: int, token: str, token_type: str = "ISO14443"
) -> bool:
    """Present `token` at the EVSE; whether it is Authorized before the EVSE's own timeout."""
    with ctx.evses.subscribe() as events:
        assert await ctx.evses.present_token(token, token_type, evse_id=evse_id) == evse_id
        with trio.move_on_after(ctx.evses[evse_id].authorization_timeout_s + 1):
            async for event in events:
                if isinstance(event, Authorized) and event.evse_id == evse_id:
                    return True
    return False


async def test_v201_h01_h03_reserved_evse_refuses_a_stranger_and_the_owner_consumes_it(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """H01.FR.04: Accepted, the EVSE reports Reserved. H03: another token is refused there (the CSMS
    accepted it), the reserving token (in another letter case) is admitted, and its transaction's
    Started event carries reservationId; the reservation is then gone."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 11, 1, "Owner-1")) == {
            "status": "Accepted"
        }
        await wait_status(csms, "evseId", 1, "Reserved")
        assert ctx.evses[1].status() is ConnectorStatus.RESERVED
        assert not await authorized_within(ctx, 1, "STRANGER")
        assert ctx.evses[1].status() is ConnectorStatus.RESERVED
        board(ctx, 1).plug_in()
        assert await authorized_within(ctx, 1, "OWNER-1")
        started = (await csms.wait_for("TransactionEvent"))[0].call.payload
        assert ctx.blocks.reservation.reservations() == []
        # A second ReserveNow for the same id is a new reservation now: the old one was used.
        assert await call(csms, conn, "CancelReservation", {"reservationId": 11}) == {"status": "Rejected"}
    assert started["eventType"] == "Started"
    assert started["reservationId"] == 11
    tokens = [a.call.payload["idToken"] for a in csms.of("Authorize")]
    assert tokens == [{"idToken": "STRANGER", "type": "ISO14443"}, {"idToken": "OWNER-1", "type": "ISO14443"}]


async def test_v201_h03_a_card_read_as_another_type_does_not_use_the_reservation(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """H03 (S1): the reader's token must be the reservation's IdTokenType, idToken and type. The same
    text read as ISO15693 is refused on the EVSE reserved for the ISO14443 card (the CSMS accepted
    it); read as ISO14443 it is admitted and its Started event names the reservation."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 13, 1, "CARD-9")) == {
            "status": "Accepted"
        }
        await wait_status(csms, "evseId", 1, "Reserved")
        board(ctx, 1).plug_in()
        assert not await authorized_within(ctx, 1, "CARD-9", "ISO15693")
        still_reserved = [r.id for r in ctx.blocks.reservation.reservations()]
        assert await authorized_within(ctx, 1, "card-9", "ISO14443")
        started = (await csms.wait_for("TransactionEvent"))[0].call.payload
    assert still_reserved == [13]
    assert started["eventType"] == "Started"
    assert started["reservationId"] == 13
    assert started["idToken"] == {"idToken": "card-9", "type": "ISO14443"}


async def test_f01_remote_start_on_an_evse_reserved_for_another_token_is_rejected(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """F01 (FR.21 / FR.22 as the reference station numbers them): RequestStartTransaction on an EVSE
    reserved for another token is Rejected and the reservation stays; for the reserving token it is
    Accepted. H03: the reserving token is idToken and type, so its text with another type (the
    request's Central) is another token and is Rejected too."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 12, 1, "OWNER-2")) == {
            "status": "Accepted"
        }
        await wait_status(csms, "evseId", 1, "Reserved")

        def start(token: str, remote_start_id: int, token_type: str = "ISO14443") -> dict[str, Any]:
            token_of = {"idToken": token, "type": token_type}
            return {"evseId": 1, "remoteStartId": remote_start_id, "idToken": token_of}

        stranger = await call(csms, conn, "RequestStartTransaction", start("STRANGER", 1))
        other_type = await call(csms, conn, "RequestStartTransaction", start("OWNER-2", 2, "Central"))
        still_reserved = [r.id for r in ctx.blocks.reservation.reservations()]
        owner = await call(csms, conn, "RequestStartTransaction", start("owner-2", 3))
    assert stranger == {"status": "Rejected"}
    assert other_type == {"status": "Rejected"}
    assert still_reserved == [12]
    assert owner == {"status": "Accepted"}


async def test_v16_5_13_group_member_uses_the_reservation_start_transaction_names_it(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 5.13: a reservation with parentIdTag admits a token whose Authorize.conf names that parent;
    StartTransaction carries reservationId; the connector showed Reserved before."""
    csms = CsmsPeer(V16).then("Authorize", {"idTagInfo": {"status": "Accepted", "parentIdTag": "FLEET"}})
    async with online(tmp_path, V16, csms) as (ctx, conn):
        expiry = iso(ctx.clock.now() + timedelta(hours=1))
        answer = await call(
            csms,
            conn,
            "ReserveNow",
            {
                "connectorId": 2,
                "expiryDate": expiry,
                "idTag": "OWNER",
                "parentIdTag": "fleet",
                "reservationId": 5,
            },
        )
        assert answer == {"status": "Accepted"}
        await wait_status(csms, "connectorId", 2, "Reserved")
        board(ctx, 2).plug_in()
        assert await authorized_within(ctx, 2, "DRIVER-7")
        start = (await csms.wait_for("StartTransaction"))[0].call.payload
    assert start["reservationId"] == 5
    assert (start["connectorId"], start["idTag"]) == (2, "DRIVER-7")


async def test_v16_connector_zero_reservation_with_reserve_connector_zero_supported(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 5.13: connector 0 is accepted when ReserveConnectorZeroSupported is true (our default, the
    key reads it); with one of two connectors free, that one shows Reserved."""
    csms = CsmsPeer(V16)
    async with online(tmp_path, V16, csms) as (ctx, conn):
        (key,), unknown = ctx.device_model.v16_get_configuration(["ReserveConnectorZeroSupported"])
        assert (unknown, key.value, key.readonly) == ([], "true", True)
        board(ctx, 1).plug_in()
        await wait_status(csms, "connectorId", 1, "Preparing")
        expiry = iso(ctx.clock.now() + timedelta(hours=1))
        answer = await call(
            csms,
            conn,
            "ReserveNow",
            {"connectorId": 0, "expiryDate": expiry, "idTag": "OWNER", "reservationId": 6},
        )
        assert answer == {"status": "Accepted"}
        await wait_status(csms, "connectorId", 2, "Reserved")
        # Both connectors are now taken (one by the EV, one promised): a second one is Occupied.
        again = {"connectorId": 0, "expiryDate": expiry, "idTag": "OTHER", "reservationId": 7}
        assert await call(csms, conn, "ReserveNow", again) == {"status": "Occupied"}


async def test_v201_h04_expiry_makes_the_evse_available_and_reports_expired(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """H04.FR.01-02: at expiryDateTime the EVSE is Available again and ReservationStatusUpdate(Expired)
    is sent; nothing happens before."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        expiry = iso(ctx.clock.now() + timedelta(seconds=100))
        payload = reserve_201(ctx, 3, 2, "OWNER", expiryDateTime=expiry)
        assert await call(csms, conn, "ReserveNow", payload) == {"status": "Accepted"}
        await wait_status(csms, "evseId", 2, "Reserved")
        reserved_at = trio.current_time()
        update = (await csms.wait_for("ReservationStatusUpdate"))[0]
        await wait_status(csms, "evseId", 2, "Available")
    assert update.call.payload == {"reservationId": 3, "reservationUpdateStatus": "Expired"}
    # (Shorter than the heartbeat interval: the test CSMS's Heartbeat sets the clock back to a fixed time.)
    assert 99 <= update.at - reserved_at <= 101
    assert statuses(csms, "evseId", 2)[-2:] == ["Reserved", "Available"]


@pytest.mark.parametrize("version", [V16, V201])
async def test_h04_a_clock_correction_past_the_expiry_ends_the_reservation_at_once(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The expiry timer runs on trio time from the wall clock at arming: a CSMS clock correction that
    jumps past expiryDateTime ends the reservation then, not when the old timer would have fired."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        key = "connectorId" if version is V16 else "evseId"
        if version is V16:
            expiry = {"expiryDate": iso(ctx.clock.now() + timedelta(hours=1))}
            payload = {"connectorId": 1, "idTag": "OWNER", "reservationId": 6, **expiry}
        else:
            payload = reserve_201(ctx, 6, 1, "OWNER")  # expires in an hour
        assert await call(csms, conn, "ReserveNow", payload) == {"status": "Accepted"}
        await wait_status(csms, key, 1, "Reserved")
        corrected_at = trio.current_time()
        ctx.clock.set(ctx.clock.now() + timedelta(hours=2))  # as a Heartbeat's currentTime would
        await wait_status(csms, key, 1, "Available")
    assert trio.current_time() - corrected_at < 5


async def test_v201_h04_expired_while_offline_is_reported_after_the_reconnect(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """H04.FR.02: a reservation that expires while the station is offline is reported
    (ReservationStatusUpdate Expired) on the next connection; the EVSE is Available at once. Held in
    memory only: not a transaction-related message, and QueueAllMessages is false (H-reservation.md)."""
    async with open_session_context(tmp_path, V201, run_evses=True) as ctx:
        first, conn = CsmsPeer(V201), MemoryConnection(V201, 1)
        async with serving(first, conn, ctx):
            await first.wait_for("StatusNotification", 2)
            expiry = iso(ctx.clock.now() + timedelta(seconds=100))
            payload = reserve_201(ctx, 4, 2, "OWNER", expiryDateTime=expiry)
            assert await call(first, conn, "ReserveNow", payload) == {"status": "Accepted"}
            await wait_status(first, "evseId", 2, "Reserved")
        await trio.sleep(150)  # offline past the expiry (virtual time)
        available_offline = ctx.evses[2].status() is ConnectorStatus.AVAILABLE
        second = CsmsPeer(V201)
        async with serving(second, MemoryConnection(V201, 2), ctx):
            update = (await second.wait_for("ReservationStatusUpdate"))[0]
    assert available_offline
    assert first.of("ReservationStatusUpdate") == []
    assert update.call.payload == {"reservationId": 4, "reservationUpdateStatus": "Expired"}


async def test_v201_h02_cancel_reservation_known_and_unknown(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """H02.FR.02: a held reservation is cancelled (Accepted; the EVSE is Available again, no
    ReservationStatusUpdate); H02.FR.01: an unknown id is Rejected."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 4, 1, "OWNER")) == {"status": "Accepted"}
        await wait_status(csms, "evseId", 1, "Reserved")
        assert await call(csms, conn, "CancelReservation", {"reservationId": 4}) == {"status": "Accepted"}
        await wait_status(csms, "evseId", 1, "Available")
        assert await call(csms, conn, "CancelReservation", {"reservationId": 4}) == {"status": "Rejected"}
    assert csms.of("ReservationStatusUpdate") == []


async def test_v16_5_3_cancel_reservation_and_5_13_expiry(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 5.3: CancelReservation of a held id is Accepted and frees the connector (Available), of an
    unknown one Rejected; 5.13: a reservation ends at its expiryDate (Available again, no message),
    not before. The 1.6 handlers are their own code: the 2.0.1 tests do not cover them."""
    csms = CsmsPeer(V16)
    async with online(tmp_path, V16, csms) as (ctx, conn):
        reserve = {
            "connectorId": 1,
            "expiryDate": iso(ctx.clock.now() + timedelta(hours=1)),
            "idTag": "OWNER",
        }
        assert await call(csms, conn, "ReserveNow", {**reserve, "reservationId": 4}) == {"status": "Accepted"}
        await wait_status(csms, "connectorId", 1, "Reserved")
        assert await call(csms, conn, "CancelReservation", {"reservationId": 4}) == {"status": "Accepted"}
        await wait_status(csms, "connectorId", 1, "Available")
        assert await call(csms, conn, "CancelReservation", {"reservationId": 4}) == {"status": "Rejected"}
        expiring = {
            **reserve,
            "expiryDate": iso(ctx.clock.now() + timedelta(seconds=100)),
            "reservationId": 5,
        }
        assert await call(csms, conn, "ReserveNow", expiring) == {"status": "Accepted"}
        await wait_status(csms, "connectorId", 1, "Reserved")
        await trio.sleep(98)
        reserved_before = ctx.evses[1].status()
        await trio.sleep(3)
        available_after = ctx.evses[1].status()
    assert reserved_before is ConnectorStatus.RESERVED
    assert available_after is ConnectorStatus.AVAILABLE


async def test_v201_h01_answers_occupied_faulted_and_removed_on_fault(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """H01.FR.11 Occupied (EV plugged), H01.FR.12 Faulted; a reserved EVSE that becomes Faulted loses
    its reservation: ReservationStatusUpdate(Removed)."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        board(ctx, 1).plug_in()
        await wait_status(csms, "evseId", 1, "Occupied")
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 1, 1, "A")) == {"status": "Occupied"}
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 2, 2, "B")) == {"status": "Accepted"}
        board(ctx, 2).inject_fault(FaultCode.GROUND_FAILURE)
        update = (await csms.wait_for("ReservationStatusUpdate"))[0]
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 3, 2, "B")) == {"status": "Faulted"}
    assert update.call.payload == {"reservationId": 2, "reservationUpdateStatus": "Removed"}


async def test_v201_h01_fr_19_unspecified_evse_and_connector_type(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """H01.FR.06/09: without evseId the reservation is accepted while a fitting EVSE stays free; an
    unknown connector type is Rejected; the reservation is used on whichever EVSE its token starts."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        ccs = reserve_201(ctx, 8, None, "OWNER", connectorType="cCCS2")
        assert await call(csms, conn, "ReserveNow", ccs) == {"status": "Rejected"}
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 9, None, "OWNER")) == {
            "status": "Accepted"
        }
        board(ctx, 2).plug_in()
        assert await authorized_within(ctx, 2, "owner")
        started = (await csms.wait_for("TransactionEvent"))[0].call.payload
    assert started["reservationId"] == 9


async def test_reservations_survive_a_restart(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    """Persisted in SQLite: after a restart the EVSE shows Reserved again and the reservation answers
    CancelReservation."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 21, 2, "OWNER")) == {
            "status": "Accepted"
        }
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        assert ctx.evses[2].status() is ConnectorStatus.RESERVED
        assert [r.id for r in ctx.blocks.reservation.reservations()] == [21]
        assert await call(csms, conn, "CancelReservation", {"reservationId": 21}) == {"status": "Accepted"}


async def test_v201_h04_stored_reservations_expire_at_their_stored_time_after_a_restart(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """H04 across a restart: a reservation whose expiryDateTime passed while the station was down is
    ended when the block starts (the EVSE Available); one still valid is held (Reserved) and expires
    at its stored expiryDateTime, not later. Both are reported Expired on the next connection."""
    async with open_session_context(tmp_path, V201, run_evses=True) as ctx:
        first, conn = CsmsPeer(V201), MemoryConnection(V201, 1)
        async with serving(first, conn, ctx):
            await first.wait_for("StatusNotification", 2)
            # The next start's wall clock reads EPOCH: put this one's an hour before it.
            ctx.clock.set(EPOCH - timedelta(hours=1))
            gone = reserve_201(ctx, 41, 1, "A", expiryDateTime=iso(EPOCH - timedelta(minutes=30)))
            kept = reserve_201(ctx, 42, 2, "B", expiryDateTime=iso(EPOCH + timedelta(seconds=100)))
            assert await call(first, conn, "ReserveNow", gone) == {"status": "Accepted"}
            assert await call(first, conn, "ReserveNow", kept) == {"status": "Accepted"}
    async with open_session_context(tmp_path, V201, run_evses=True) as ctx:
        held_at_start = [r.id for r in ctx.blocks.reservation.reservations()]
        statuses_at_start = (ctx.evses[1].status(), ctx.evses[2].status())
        await trio.sleep(90)
        held_before_expiry = [r.id for r in ctx.blocks.reservation.reservations()]
        await trio.sleep(20)
        held_after_expiry = [r.id for r in ctx.blocks.reservation.reservations()]
        status_after_expiry = ctx.evses[2].status()
        second = CsmsPeer(V201)
        async with serving(second, MemoryConnection(V201, 2), ctx):
            updates = await second.wait_for("ReservationStatusUpdate", 2)
    assert held_at_start == [42]
    assert statuses_at_start == (ConnectorStatus.AVAILABLE, ConnectorStatus.RESERVED)
    assert held_before_expiry == [42]
    assert (held_after_expiry, status_after_expiry) == ([], ConnectorStatus.AVAILABLE)
    assert [u.call.payload for u in updates] == [
        {"reservationId": 41, "reservationUpdateStatus": "Expired"},
        {"reservationId": 42, "reservationUpdateStatus": "Expired"},
    ]


async def test_v201_h01_fr_02_a_refused_reserve_now_changes_no_reservation(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """H01.FR.02: a ReserveNow with a held reservation's id replaces it only when Accepted; one answered
    otherwise (here Occupied) leaves the held reservation as it was, and a new id answered Occupied
    installs nothing, in memory or on disk."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 5, 2, "OWNER")) == {"status": "Accepted"}
        board(ctx, 1).plug_in()
        await wait_status(csms, "evseId", 1, "Occupied")
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 5, 1, "OTHER")) == {"status": "Occupied"}
        assert await call(csms, conn, "ReserveNow", reserve_201(ctx, 6, 1, "OTHER")) == {"status": "Occupied"}
        held = [(r.id, r.evse_id, r.id_token) for r in ctx.blocks.reservation.reservations()]
        evse_2 = ctx.evses[2].status()
    async with open_session_context(tmp_path, V201) as ctx:
        stored = [(r.id, r.evse_id, r.id_token) for r in ctx.blocks.reservation.reservations()]
    assert held == stored == [(5, 2, "OWNER")]
    assert evse_2 is ConnectorStatus.RESERVED

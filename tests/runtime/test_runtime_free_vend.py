"""Free vend (AuthCtrlr.Enabled false) through the session, the transactions block and running sim EVSEs,
for both versions: an EV plugged in is authorized without a token and without Authorize (2.0.1 idToken ""
of type NoAuthorization; 1.6 the configured free-vend idTag), a presented token is taken without
Authorize, a reserved EVSE still waits for its reservation's token, an Unavailable EVSE starts nothing,
and with Enabled true again the next plug waits for a token."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import CsmsPeer, MemoryConnection, board, call, online

from evstation.protocol.versions import OcppVersion
from evstation.runtime.clock import iso
from evstation.runtime.config import DEFAULT_FREE_VEND_ID_TAG
from evstation.runtime.device_model import AUTH_ENABLED
from evstation.runtime.evse import Phase
from evstation.runtime.session.common import SessionContext

V16, V201 = OcppVersion.V16, OcppVersion.V201
BOTH = pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])
# Longer than a start takes (the first meter reading comes within 5 s): nothing started by then.
SETTLE_S = 30.0


async def set_authorization(
    ctx: SessionContext, csms: CsmsPeer, conn: MemoryConnection, version: OcppVersion, enabled: bool
) -> None:
    """2.0.1: the CSMS's SetVariables (AuthCtrlr.Enabled is ReadWrite). 1.6 has no key for it: the
    device model, as station.toml's [authorization] enabled seeds it."""
    value = "true" if enabled else "false"
    if version is V16:
        await ctx.device_model.set(AUTH_ENABLED, value)
        return
    data = {"component": {"name": "AuthCtrlr"}, "variable": {"name": "Enabled"}, "attributeValue": value}
    answer = await call(csms, conn, "SetVariables", {"setVariableData": [data]})
    assert answer["setVariableResult"][0]["attributeStatus"] == "Accepted", answer


def starts(csms: CsmsPeer, version: OcppVersion) -> list[dict[str, Any]]:
    if version is V16:
        return [s.call.payload for s in csms.of("StartTransaction")]
    return [s.call.payload for s in csms.of("TransactionEvent") if s.call.payload["eventType"] == "Started"]


def ends(csms: CsmsPeer, version: OcppVersion) -> list[dict[str, Any]]:
    if version is V16:
        return [s.call.payload for s in csms.of("StopTransaction")]
    return [s.call.payload for s in csms.of("TransactionEvent") if s.call.payload["eventType"] == "Ended"]


async def next_start(csms: CsmsPeer, version: OcppVersion, count: int = 1) -> dict[str, Any]:
    action = "StartTransaction" if version is V16 else "TransactionEvent"
    while len(starts(csms, version)) < count:
        await csms.wait_for(action, len(csms.of(action)) + 1)
    return starts(csms, version)[count - 1]


async def next_end(csms: CsmsPeer, version: OcppVersion, count: int = 1) -> dict[str, Any]:
    action = "StopTransaction" if version is V16 else "TransactionEvent"
    while len(ends(csms, version)) < count:
        await csms.wait_for(action, len(csms.of(action)) + 1)
    return ends(csms, version)[count - 1]


def token_of(payload: dict[str, Any], version: OcppVersion) -> Any:
    """1.6 StartTransaction idTag; 2.0.1 the Started event's idToken (None when it has none)."""
    return payload["idTag"] if version is V16 else payload.get("idToken")


def nobody(version: OcppVersion) -> Any:
    """The token of a session started without one."""
    return DEFAULT_FREE_VEND_ID_TAG if version is V16 else {"idToken": "", "type": "NoAuthorization"}


async def charging(ctx: SessionContext, evse_id: int = 1) -> None:
    """Until the EVSE's contactor is closed with the EV drawing (PowerPathClosed)."""
    with ctx.evses.subscribe() as events:
        if ctx.evses[evse_id].phase is Phase.CHARGING:
            return
        async for _ in events:
            if ctx.evses[evse_id].phase is Phase.CHARGING:
                return


@BOTH
async def test_free_vend_plug_in_starts_a_transaction_without_authorize_and_the_unplug_ends_it(
    clock: trio.testing.MockClock, tmp_path: Any, version: OcppVersion
) -> None:
    """AuthCtrlr.Enabled false ("no authorization is done before starting a transaction"): the plug
    alone authorizes the EVSE, no Authorize goes out, the start message carries the token of nobody
    (2.0.1: idToken left empty, type NoAuthorization; 1.6: the free-vend idTag), energy flows, and the
    unplug ends the transaction (EVDisconnected)."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        await set_authorization(ctx, csms, conn, version, enabled=False)
        board(ctx, 1).plug_in()
        start = await next_start(csms, version)
        await charging(ctx)
        assert (board(ctx, 1).offered_current_a or 0) >= 6
        board(ctx, 1).unplug()
        end = await next_end(csms, version)
    assert token_of(start, version) == nobody(version)
    reason = end["reason"] if version is V16 else end["transactionInfo"]["stoppedReason"]
    assert reason == "EVDisconnected"
    assert not csms.of("Authorize")


@BOTH
async def test_free_vend_switched_on_again_the_next_plug_waits_for_a_token(
    clock: trio.testing.MockClock, tmp_path: Any, version: OcppVersion
) -> None:
    """After a free-vend session, Enabled true again (2.0.1 SetVariables): the next plug starts nothing
    until a token is presented, and that token is sent in Authorize as usual."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        await set_authorization(ctx, csms, conn, version, enabled=False)
        board(ctx, 1).plug_in()
        await next_start(csms, version)
        board(ctx, 1).unplug()
        await next_end(csms, version)
        await set_authorization(ctx, csms, conn, version, enabled=True)
        board(ctx, 1).plug_in()
        await trio.sleep(SETTLE_S)
        assert ctx.evses[1].phase is Phase.PLUGGED
        assert len(starts(csms, version)) == 1 and not csms.of("Authorize")
        assert await ctx.evses.present_token("TAG-9", "ISO14443", evse_id=1) == 1
        start = await next_start(csms, version, 2)
    assert len(csms.of("Authorize")) == 1
    assert token_of(start, version) == (
        "TAG-9" if version is V16 else {"idToken": "TAG-9", "type": "ISO14443"}
    )


@BOTH
async def test_free_vend_set_while_an_ev_waits_for_a_token_authorizes_it(
    clock: trio.testing.MockClock, tmp_path: Any, version: OcppVersion
) -> None:
    """An EV already plugged in and waiting for a token when Enabled turns false starts at once (the
    transactions block follows the variable with `watch`)."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        board(ctx, 1).plug_in()
        await trio.sleep(SETTLE_S)
        assert ctx.evses[1].phase is Phase.PLUGGED
        await set_authorization(ctx, csms, conn, version, enabled=False)
        start = await next_start(csms, version)
    assert token_of(start, version) == nobody(version)
    assert not csms.of("Authorize")


@BOTH
async def test_free_vend_an_unavailable_evse_starts_nothing_until_it_is_available(
    clock: trio.testing.MockClock, tmp_path: Any, version: OcppVersion
) -> None:
    """Free vend does not bypass availability: an Inoperative EVSE with an EV plugged in starts no
    session; once Operative again, the waiting EV is authorized without a token."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        await set_authorization(ctx, csms, conn, version, enabled=False)
        await ctx.evses[1].set_available(False)
        board(ctx, 1).plug_in()
        await trio.sleep(SETTLE_S)
        assert not ctx.evses[1].session_active() and not starts(csms, version)
        await ctx.evses[1].set_available(True)
        start = await next_start(csms, version)
    assert token_of(start, version) == nobody(version)


@BOTH
async def test_free_vend_a_presented_token_stops_a_session_started_without_one(
    clock: trio.testing.MockClock, tmp_path: Any, version: OcppVersion
) -> None:
    """A session nobody identified belongs to nobody: any presented token ends it (reason Local, like a
    stop button), and no Authorize is sent for it."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        await set_authorization(ctx, csms, conn, version, enabled=False)
        board(ctx, 1).plug_in()
        await next_start(csms, version)
        await charging(ctx)
        assert await ctx.evses.present_token("ANY-CARD", "ISO14443", evse_id=1) == 1
        end = await next_end(csms, version)
    reason = end["reason"] if version is V16 else end["transactionInfo"]["stoppedReason"]
    assert reason == "Local"
    assert not csms.of("Authorize")


@BOTH
async def test_free_vend_a_token_presented_first_is_carried_without_authorize(
    clock: trio.testing.MockClock, tmp_path: Any, version: OcppVersion
) -> None:
    """AuthCtrlr.Enabled: "If an idToken was provided, then it will be put in the idToken field" — and
    no authorization is done when reading it: no Authorize, the start message names the token."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        await set_authorization(ctx, csms, conn, version, enabled=False)
        assert await ctx.evses.present_token("CARD-7", "ISO14443", evse_id=1) == 1
        board(ctx, 1).plug_in()
        start = await next_start(csms, version)
    assert token_of(start, version) == (
        "CARD-7" if version is V16 else {"idToken": "CARD-7", "type": "ISO14443"}
    )
    assert not csms.of("Authorize")


@BOTH
async def test_free_vend_a_reserved_evse_still_needs_the_reserved_token(
    clock: trio.testing.MockClock, tmp_path: Any, version: OcppVersion
) -> None:
    """H03 / 1.6 5.13 with authorization disabled: the plug does not start a session on an EVSE
    reserved for a token (nobody's token is not the reservation's), another token is refused there,
    and the reserving token starts the transaction (without Authorize), which names the reservation."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        expiry = iso(ctx.clock.now() + timedelta(hours=1))
        if version is V16:
            reserve = {"connectorId": 1, "expiryDate": expiry, "idTag": "OWNER-1", "reservationId": 5}
        else:
            owner = {"idToken": "OWNER-1", "type": "ISO14443"}
            reserve = {"id": 5, "evseId": 1, "expiryDateTime": expiry, "idToken": owner}
        assert await call(csms, conn, "ReserveNow", reserve) == {"status": "Accepted"}
        await set_authorization(ctx, csms, conn, version, enabled=False)
        board(ctx, 1).plug_in()
        await trio.sleep(SETTLE_S)
        assert ctx.evses[1].phase is Phase.PLUGGED and not starts(csms, version)
        assert await ctx.evses.present_token("STRANGER", "ISO14443", evse_id=1) == 1
        await trio.sleep(SETTLE_S)
        assert ctx.evses[1].phase is Phase.PLUGGED and not starts(csms, version)
        assert await ctx.evses.present_token("OWNER-1", "ISO14443", evse_id=1) == 1
        start = await next_start(csms, version)
    assert start["reservationId"] == 5
    assert token_of(start, version) == (
        "OWNER-1" if version is V16 else {"idToken": "OWNER-1", "type": "ISO14443"}
    )
    assert not csms.of("Authorize")


async def test_v16_the_free_vend_id_tag_is_never_cached(clock: trio.testing.MockClock, tmp_path: Any) -> None:
    """1.6: the Central System's Accepted for the free-vend idTag (StartTransaction.conf) is not put in
    the authorization cache (C02.FR.03 in 2.0.1 terms): the tag is nobody's card, and a card reading it
    must not authorize offline."""
    csms = CsmsPeer(V16)
    async with online(tmp_path, V16, csms) as (ctx, conn):
        await set_authorization(ctx, csms, conn, V16, enabled=False)
        board(ctx, 1).plug_in()
        await next_start(csms, V16)
        # A sentinel behind the StartTransaction: sent only once its answer was processed.
        await ctx.outbox.put("DataTransfer", {"vendorId": "test"})
        await csms.wait_for("DataTransfer")
        cached = [entry.token.value for entry in ctx.blocks.authorization.cached()]
    assert DEFAULT_FREE_VEND_ID_TAG not in cached

"""The authorization block through the session and running sim EVSEs (2.0.1 C, D; 1.6 Core Authorize,
ClearCache, LocalAuthListManagement): offline authorization from the local list and the cache, unknown
ids offline, stops by the same token in another case, by a group member and by a master pass, the
SendLocalList / GetLocalListVersion / ClearCache answers, and persistence. Real SQLite underneath."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    CsmsPeer,
    Fail,
    MemoryConnection,
    board,
    call,
    open_session_context,
    serve_until_link_down,
    serving,
    statuses_at_boot,
)

from evstation.protocol.authorization import AuthStatus, IdToken, TokenInfo
from evstation.protocol.device_model import VariableKey
from evstation.protocol.local_list import UpdateType
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.authorization import ListConflict
from evstation.runtime.device_model import (
    AUTH_CACHE_ENABLED,
    LOCAL_AUTHORIZE_OFFLINE,
    LOCAL_LIST_ENTRIES_KEY,
    LOCAL_PRE_AUTHORIZE,
    MASTER_PASS_GROUP_ID,
    OFFLINE_TX_FOR_UNKNOWN_ID,
)
from evstation.runtime.events import Dropped
from evstation.runtime.evse import Authorized, EvseEvent, SessionEnded, StopReason
from evstation.runtime.session import SessionContext

V16, V201 = OcppVersion.V16, OcppVersion.V201
BOTH = pytest.mark.parametrize("version", [V16, V201])
# Long enough for any answer; short against the EVSE's 30 s authorization timeout (virtual time).
QUIET_S = 35.0


def authorize_reply(
    version: OcppVersion, status: str = "Accepted", group: str | None = None
) -> dict[str, Any]:
    if version is V16:
        info: dict[str, Any] = {"status": status}
        if group is not None:
            info["parentIdTag"] = group
        return {"idTagInfo": info}
    info = {"status": status}
    if group is not None:
        info["groupIdToken"] = {"idToken": group, "type": "Central"}
    return {"idTokenInfo": info}


def list_request(
    version: OcppVersion, list_version: int, tokens: dict[str, str], full: bool = True
) -> dict[str, Any]:
    if version is V16:
        return {
            "listVersion": list_version,
            "updateType": "Full" if full else "Differential",
            "localAuthorizationList": [{"idTag": t, "idTagInfo": {"status": s}} for t, s in tokens.items()],
        }
    return {
        "versionNumber": list_version,
        "updateType": "Full" if full else "Differential",
        "localAuthorizationList": [
            {"idToken": {"idToken": t, "type": "ISO14443"}, "idTokenInfo": {"status": s}}
            for t, s in tokens.items()
        ],
    }


async def next_of(
    events: trio.MemoryReceiveChannel[EvseEvent | Dropped], kind: type, timeout_s: float = QUIET_S
) -> Any:
    """The next event of `kind` within `timeout_s` (virtual), else None."""
    with trio.move_on_after(timeout_s):
        async for event in events:
            if isinstance(event, kind):
                return event
    return None


async def set_variable(ctx: SessionContext, key: VariableKey, value: str) -> None:
    decision = await ctx.device_model.set(key, value)
    assert decision.applies, decision


class Online:
    """A CSMS peer serving one connection; `drop()` takes the station offline."""

    def __init__(self, ctx: SessionContext, csms: CsmsPeer, conn: MemoryConnection) -> None:
        self.ctx, self.csms, self.conn = ctx, csms, conn
        self.ended = trio.Event()

    async def serve(self) -> None:
        await serve_until_link_down(self.conn, self.ctx)
        self.ended.set()

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = await call(self.csms, self.conn, action, payload)
        return answer

    async def drop(self) -> None:
        self.conn.close()
        await self.ended.wait()
        assert self.ctx.uplink.calls is None


@asynccontextmanager
async def station(
    tmp_path: Path, version: OcppVersion, csms: CsmsPeer | None = None
) -> AsyncIterator[tuple[SessionContext, Online, trio.MemoryReceiveChannel[EvseEvent | Dropped]]]:
    """Running EVSEs, the transactions block, and a CSMS connection (booted)."""
    csms = csms if csms is not None else CsmsPeer(version)
    conn = MemoryConnection(version)
    async with open_session_context(tmp_path, version, run_evses=True) as ctx:
        with ctx.evses.subscribe() as events:
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                online = Online(ctx, csms, conn)
                nursery.start_soon(csms.serve, conn)
                nursery.start_soon(online.serve)
                await csms.wait_for("StatusNotification", statuses_at_boot(version))
                yield ctx, online, events
                nursery.cancel_scope.cancel()


# --- the local list ------------------------------------------------------------------------------


@BOTH
async def test_d01_d02_c13_send_local_list_then_offline_authorization_from_the_list(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """D01 SendLocalList Full is Accepted and GetLocalListVersion reports it (D02); offline with
    LocalAuthorizeOffline, a listed Accepted token (in another letter case) authorizes (C13.FR.01),
    a listed Blocked one does not, and nothing is asked of the CSMS."""
    async with station(tmp_path, version) as (ctx, csms, events):
        assert (
            await csms.call(
                "SendLocalList", list_request(version, 3, {"LIST-OK": "Accepted", "LIST-NO": "Blocked"})
            )
        ) == {"status": "Accepted"}
        reported = await csms.call("GetLocalListVersion", {})
        assert reported == ({"listVersion": 3} if version is V16 else {"versionNumber": 3})
        assert ctx.device_model.get(LOCAL_LIST_ENTRIES_KEY) == "2"
        stale = list_request(version, 3, {"OTHER": "Accepted"}, full=False)
        assert (await csms.call("SendLocalList", stale)) == {"status": "VersionMismatch"}
        await set_variable(ctx, LOCAL_AUTHORIZE_OFFLINE, "true")
        await csms.drop()
        assert await ctx.evses.present_token("list-ok", "ISO14443", evse_id=1) == 1
        authorized = await next_of(events, Authorized)
        assert authorized is not None and authorized.evse_id == 1
        assert await ctx.evses.present_token("LIST-NO", "ISO14443", evse_id=2) == 2
        assert await next_of(events, Authorized) is None
    assert csms.csms.of("Authorize") == []


@BOTH
async def test_d01_size_limits_answer_failed(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """More entries than ItemsPerMessage (1.6 SendLocalListMaxLength) in one message: Failed."""
    async with station(tmp_path, version) as (_ctx, csms, _):
        too_many = {f"T{i}": "Accepted" for i in range(251)}
        assert (await csms.call("SendLocalList", list_request(version, 1, too_many))) == {"status": "Failed"}
        reported = await csms.call("GetLocalListVersion", {})
    assert reported == ({"listVersion": 0} if version is V16 else {"versionNumber": 0})


async def conflict_status(csms: CsmsPeer) -> dict[str, Any] | None:
    """The first StatusNotification with errorCode LocalListConflict within QUIET_S (virtual)."""
    with trio.move_on_after(QUIET_S):
        while True:
            seen = csms.of("StatusNotification")
            for status in seen:
                if status.call.payload["errorCode"] == "LocalListConflict":
                    return status.call.payload
            await csms.wait_for("StatusNotification", len(seen) + 1)
    return None


async def test_v16_3_5_2_list_conflict_is_reported_as_a_connector_0_status(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 3.5.2: a listed tag the CSMS answers with another status (list Accepted, Authorize.conf
    Blocked) is reported by a StatusNotification on connector 0 with errorCode LocalListConflict and
    connector 0's current status; a listed tag the CSMS answers alike is not. The list is kept."""
    csms = CsmsPeer(V16).then("Authorize", authorize_reply(V16, "Accepted"), authorize_reply(V16, "Blocked"))
    async with station(tmp_path, V16, csms) as (ctx, online, events):
        listed = list_request(V16, 1, {"AGREES": "Accepted", "DISPUTED": "Accepted"})
        assert (await online.call("SendLocalList", listed)) == {"status": "Accepted"}
        assert await ctx.evses.present_token("AGREES", "ISO14443", evse_id=1) == 1
        assert await next_of(events, Authorized) is not None
        assert await ctx.evses.present_token("DISPUTED", "ISO14443", evse_id=2) == 2
        conflict = await conflict_status(csms)
        assert conflict is not None
        station_status = ctx.blocks.availability.status_requests(None)[0]
        kept = await ctx.blocks.authorization.local_list_entries()
    assert [a.call.payload["idTag"] for a in csms.of("Authorize")] == ["AGREES", "DISPUTED"]
    assert (conflict["connectorId"], conflict["status"]) == (0, station_status["status"])
    codes = [s.call.payload["errorCode"] for s in csms.of("StatusNotification")]
    assert codes.count("LocalListConflict") == 1
    assert {e.token.value: e.info.status for e in kept} == {
        "AGREES": AuthStatus.ACCEPTED,
        "DISPUTED": AuthStatus.ACCEPTED,
    }


async def test_v201_list_conflict_sends_no_status_notification(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """2.0.1 defines no LocalListConflict report (StatusNotification has no error code): the conflict
    is logged and the list kept; nothing is sent for it."""
    csms = CsmsPeer(V201).then("Authorize", authorize_reply(V201, "Blocked"))
    async with station(tmp_path, V201, csms) as (ctx, online, events):
        listed = list_request(V201, 1, {"DISPUTED": "Accepted"})
        assert (await online.call("SendLocalList", listed)) == {"status": "Accepted"}
        before = len(csms.of("StatusNotification"))
        with ctx.blocks.authorization.conflicts.subscribe() as conflicts:
            assert await ctx.evses.present_token("DISPUTED", "ISO14443", evse_id=1) == 1
            with trio.fail_after(QUIET_S):
                conflict = await conflicts.receive()
            assert await next_of(events, Authorized) is None
    assert isinstance(conflict, ListConflict)
    assert (conflict.listed, conflict.answered) == (AuthStatus.ACCEPTED, AuthStatus.BLOCKED)
    assert len(csms.of("StatusNotification")) == before


async def test_c01_an_answer_for_other_evses_does_not_authorize_this_one(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """C01 idTokenInfo.evseId: an Accepted answer that lists EVSE 2 only authorizes nothing at EVSE 1
    (the EVSE the token was shown at reaches the decision); shown at EVSE 2 it authorizes."""
    only_2 = {"idTokenInfo": {"status": "Accepted", "evseId": [2]}}
    csms = CsmsPeer(V201).then("Authorize", only_2, only_2)
    async with station(tmp_path, V201, csms) as (ctx, _online, events):
        assert await ctx.evses.present_token("FLEET-2", "ISO14443", evse_id=1) == 1
        assert await next_of(events, Authorized) is None
        assert await ctx.evses.present_token("FLEET-2", "ISO14443", evse_id=2) == 2
        authorized = await next_of(events, Authorized)
    assert authorized is not None and authorized.evse_id == 2


@BOTH
async def test_a_listed_token_is_not_cached(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """1.6 3.5.3 / 2.0.1 C14: the list takes precedence, so the CSMS's answer for a listed token is not
    stored in the cache (else it would outlive the token's removal from the list); an unlisted
    token's answer is."""
    async with station(tmp_path, version) as (ctx, online, events):
        listed = list_request(version, 1, {"LISTED": "Accepted"})
        assert (await online.call("SendLocalList", listed)) == {"status": "Accepted"}
        assert await ctx.evses.present_token("LISTED", "ISO14443", evse_id=1) == 1
        assert await next_of(events, Authorized) is not None
        assert await ctx.evses.present_token("UNLISTED", "ISO14443", evse_id=2) == 2
        assert await next_of(events, Authorized) is not None
        cached = [e.token.value for e in ctx.blocks.authorization.cached()]
    asked: list[dict[str, Any]] = [a.call.payload for a in online.csms.of("Authorize")]
    assert [a["idTag"] if version is V16 else a["idToken"]["idToken"] for a in asked] == [
        "LISTED",
        "UNLISTED",
    ]
    assert cached == ["UNLISTED"]


# --- the cache -----------------------------------------------------------------------------------


@BOTH
async def test_c10_c12_answer_is_cached_then_authorizes_offline(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """C10.FR.01: the Authorize answer is stored; offline with LocalAuthorizeOffline the cached Accepted
    token authorizes (C12 offline), an unknown one does not (OfflineTxForUnknownIdEnabled false)."""
    async with station(tmp_path, version) as (ctx, csms, events):
        assert await ctx.evses.present_token("CACHED", "ISO14443", evse_id=1) == 1
        assert await next_of(events, Authorized) is not None
        await ctx.evses[1].stop_session(StopReason.LOCAL)
        assert [e.token.value for e in ctx.blocks.authorization.cached()] == ["CACHED"]
        await set_variable(ctx, LOCAL_AUTHORIZE_OFFLINE, "true")
        await csms.drop()
        assert await ctx.evses.present_token("cached", "ISO14443", evse_id=2) == 2
        assert await next_of(events, Authorized) is not None
        assert await ctx.evses.present_token("NEVER-SEEN", "ISO14443", evse_id=1) == 1
        assert await next_of(events, Authorized) is None
    assert len(csms.csms.of("Authorize")) == 1


async def test_c12_a_token_authorized_from_the_cache_is_carried_by_its_transaction(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """C12 (LocalPreAuthorize, online): a cached Accepted token starts the session without a second
    AuthorizeRequest, and the transaction it starts carries that idToken (type included) in its
    Started event, like a token the CSMS authorized just now."""
    async with station(tmp_path, V201) as (ctx, online, events):
        assert await ctx.evses.present_token("CACHED-1", "ISO14443", evse_id=1) == 1
        assert await next_of(events, Authorized) is not None
        await ctx.evses[1].stop_session(StopReason.LOCAL)
        await set_variable(ctx, LOCAL_PRE_AUTHORIZE, "true")
        assert await ctx.evses.present_token("CACHED-1", "ISO14443", evse_id=1) == 1
        assert await next_of(events, Authorized) is not None
        board(ctx, 1).plug_in()
        (sent,) = await online.csms.wait_for("TransactionEvent")
    started = sent.call.payload
    assert started["eventType"] == "Started"
    assert started["idToken"] == {"idToken": "CACHED-1", "type": "ISO14443"}
    assert len(online.csms.of("Authorize")) == 1


async def test_c06_a_local_id_type_token_is_authorized_by_the_csms_like_any_other(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """C06 (authorization using the local id type, IdTokenEnumType Local): the token goes to the CSMS
    in AuthorizeRequest with its type Local (unlike Central / NoAuthorization, C03 / C05), a refusal
    starts nothing (C06.FR.02, which TC_C_05_CS tests together with C01.FR.02), an Accepted answer
    authorizes the EVSE and the transaction carries the token, type Local, in its Started event."""
    csms = CsmsPeer(V201).then("Authorize", authorize_reply(V201, "Invalid"), authorize_reply(V201))
    async with station(tmp_path, V201, csms) as (ctx, online, events):
        assert await ctx.evses.present_token("KIOSK-7", "Local", evse_id=1) == 1
        assert await next_of(events, Authorized) is None
        assert await ctx.evses.present_token("KIOSK-8", "Local", evse_id=1) == 1
        assert await next_of(events, Authorized) is not None
        board(ctx, 1).plug_in()
        (sent,) = await online.csms.wait_for("TransactionEvent")
    asked = [s.call.payload["idToken"] for s in csms.of("Authorize")]
    assert asked == [{"idToken": "KIOSK-7", "type": "Local"}, {"idToken": "KIOSK-8", "type": "Local"}]
    assert sent.call.payload["eventType"] == "Started"
    assert sent.call.payload["idToken"] == {"idToken": "KIOSK-8", "type": "Local"}


@BOTH
async def test_c11_clear_cache(clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion) -> None:
    """C11 / 1.6 5.4: ClearCache empties the cache (Accepted); with the cache disabled: Rejected."""
    async with station(tmp_path, version) as (ctx, csms, events):
        await ctx.evses.present_token("CACHED", "ISO14443", evse_id=1)
        assert await next_of(events, Authorized) is not None
        assert ctx.blocks.authorization.cached()
        assert (await csms.call("ClearCache", {})) == {"status": "Accepted"}
        assert ctx.blocks.authorization.cached() == []
        await set_variable(ctx, AUTH_CACHE_ENABLED, "false")
        assert (await csms.call("ClearCache", {})) == {"status": "Rejected"}


@BOTH
async def test_c11_an_answer_that_arrived_before_a_clear_cache_is_not_cached_after_it(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The CSMS answers a message of ours with token info, then sends ClearCache; the task that sent
    the message stores that info only after the ClearCache handler ran (the interop test met this order
    on a real websocket, 1.6). It must not bring the token back: the CSMS cleared the cache after
    sending it (C11 / 1.6 5.4). `answer_mark` is taken as the answer arrives (the CallManager's
    `on_answer`, in the reading task, before the ClearCache is handled); an answer that arrived after
    the ClearCache is cached as usual."""
    accepted = TokenInfo(AuthStatus.ACCEPTED)
    async with station(tmp_path, version) as (ctx, csms, _events):
        authorization = ctx.blocks.authorization
        before = authorization.answer_mark()
        assert (await csms.call("ClearCache", {})) == {"status": "Accepted"}
        await authorization.learn("EARLY", "ISO14443", accepted, mark=before)
        assert authorization.cached() == []
        await authorization.learn("LATE", "ISO14443", accepted, mark=authorization.answer_mark())
        assert [entry.token.value for entry in authorization.cached()] == ["LATE"]


@BOTH
async def test_c10_transaction_answer_updates_the_cache(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """C10.FR.04/05 (1.6 3.5.2): the idTokenInfo / idTagInfo of a transaction answer updates the cache."""
    csms = CsmsPeer(version).then("DataTransfer", {"status": "Accepted"})
    if version is V16:
        csms.then("StartTransaction", {"transactionId": 7, "idTagInfo": {"status": "Blocked"}})
    else:
        csms.then("TransactionEvent", {"idTokenInfo": {"status": "Blocked"}})
    async with station(tmp_path, version, csms) as (ctx, online, events):
        await ctx.evses.present_token("TAG-1", "ISO14443", evse_id=1)
        assert await next_of(events, Authorized) is not None
        assert [e.info.status for e in ctx.blocks.authorization.cached()] == [AuthStatus.ACCEPTED]
        board(ctx, 1).plug_in()
        await online.csms.wait_for("StartTransaction" if version is V16 else "TransactionEvent")
        # A sentinel behind the transaction message: sent only once its answer was processed.
        await ctx.outbox.put("DataTransfer", {"vendorId": "test"})
        await online.csms.wait_for("DataTransfer")
        assert [e.info.status for e in ctx.blocks.authorization.cached()] == [AuthStatus.BLOCKED]


async def test_cache_and_list_survive_a_restart(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    """Both live in SQLite (migration 7): a new station on the same file has them."""
    async with open_session_context(tmp_path, V201) as ctx:
        auth = ctx.blocks.authorization
        await auth.learn(
            "Cached-1", "ISO14443", TokenInfo(AuthStatus.ACCEPTED, group=IdToken("G", "Central"))
        )
        await auth.send_local_list(
            UpdateType.FULL, 9, [(IdToken("L1", "ISO14443"), TokenInfo(AuthStatus.ACCEPTED))]
        )
    async with open_session_context(tmp_path, V201) as ctx:
        auth = ctx.blocks.authorization
        assert [(e.token.value, e.info.group) for e in auth.cached()] == [
            ("Cached-1", IdToken("G", "Central"))
        ]
        assert auth.local_list_version == 9
        assert [e.token.value for e in await auth.local_list_entries()] == ["L1"]
        assert ctx.device_model.get(LOCAL_LIST_ENTRIES_KEY) == "1"


@BOTH
async def test_d01_every_list_update_is_what_a_restart_loads(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """D01 / 1.6 5.15: what SendLocalList leaves is what the next start loads: a Full update replaces
    the stored entries (none of the old list comes back), a Differential one removes and updates
    them. A token removed from the list must not authorize again after a restart."""
    full, diff = UpdateType.FULL, UpdateType.DIFFERENTIAL
    ok, blocked = TokenInfo(AuthStatus.ACCEPTED), TokenInfo(AuthStatus.BLOCKED)

    def tag(value: str) -> IdToken:
        return IdToken(value, "" if version is V16 else "ISO14443")

    async with open_session_context(tmp_path, version) as ctx:
        auth = ctx.blocks.authorization
        assert await auth.send_local_list(full, 1, [(tag("OLD-1"), ok), (tag("OLD-2"), ok)]) == "Accepted"
        assert await auth.send_local_list(full, 2, [(tag("KEPT"), ok), (tag("GONE"), ok)]) == "Accepted"
        changes = [(tag("GONE"), None), (tag("kept"), blocked), (tag("NEW"), ok)]
        assert await auth.send_local_list(diff, 3, changes) == "Accepted"
    async with open_session_context(tmp_path, version) as ctx:
        auth = ctx.blocks.authorization
        loaded = {e.token.value.upper(): e.info.status for e in await auth.local_list_entries()}
        assert auth.local_list_version == 3
        assert loaded == {"KEPT": AuthStatus.BLOCKED, "NEW": AuthStatus.ACCEPTED}
        assert await auth.send_local_list(full, 4, []) == "Accepted"
    async with open_session_context(tmp_path, version) as ctx:
        auth = ctx.blocks.authorization
        assert (auth.local_list_version, await auth.local_list_entries()) == (0, [])


# --- unknown ids, failures, long tokens ------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("allowed", [True, False])
async def test_c15_unknown_id_offline(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, allowed: bool
) -> None:
    """C15 / 1.6 AllowOfflineTxForUnknownId: offline, an unknown token authorizes only when allowed."""
    async with station(tmp_path, version) as (ctx, csms, events):
        await set_variable(ctx, OFFLINE_TX_FOR_UNKNOWN_ID, "true" if allowed else "false")
        await csms.drop()
        assert await ctx.evses.present_token("STRANGER", "ISO14443", evse_id=1) == 1
        assert (await next_of(events, Authorized) is not None) is allowed


@BOTH
async def test_c15_unknown_id_accepted_offline_then_refused_online_ends_the_transaction(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """C15 with E05 / 1.6 StopTransactionOnInvalidId (default true): a transaction started offline for
    an unknown token is ended (DeAuthorized) once the CSMS, back online, answers its queued start with
    a refused token."""
    async with station(tmp_path, version) as (ctx, csms, events):
        await set_variable(ctx, OFFLINE_TX_FOR_UNKNOWN_ID, "true")
        await csms.drop()
        board(ctx, 1).plug_in()
        assert await ctx.evses.present_token("STRANGER", "ISO14443", evse_id=1) == 1
        assert await next_of(events, Authorized) is not None
        while ctx.blocks.transactions.ids.get(1) is None:
            await ctx.blocks.transactions.ids.changed.wait()
        back = CsmsPeer(version)
        if version is V16:
            back.then("StartTransaction", {"transactionId": 9, "idTagInfo": {"status": "Invalid"}})
            end_action = "StopTransaction"
        else:
            back.then("TransactionEvent", {"idTokenInfo": {"status": "Invalid"}})
            end_action = "TransactionEvent"
        async with serving(back, MemoryConnection(version, 2), ctx):
            while ctx.blocks.transactions.ids.get(1) is not None:
                await ctx.blocks.transactions.ids.changed.wait()
            await ctx.outbox.wait_empty()
        ended: dict[str, Any] = back.of(end_action)[-1].call.payload
    if version is V16:
        assert (ended["transactionId"], ended["reason"]) == (9, "DeAuthorized")
    else:
        assert back.of("TransactionEvent")[0].call.payload["eventType"] == "Started"
        assert ended["eventType"] == "Ended"
        assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"


@BOTH
async def test_a_failed_authorize_call_is_decided_offline(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """A CALLERROR (or timeout) to Authorize is no refusal: the offline rules decide (libocpp #895)."""
    async with station(tmp_path, version, CsmsPeer(version).then("Authorize", Fail())) as (ctx, csms, events):
        await set_variable(ctx, OFFLINE_TX_FOR_UNKNOWN_ID, "true")
        await ctx.evses.present_token("STRANGER", "ISO14443", evse_id=1)
        assert await next_of(events, Authorized) is not None
    assert len(csms.csms.of("Authorize")) == 1


@BOTH
async def test_a_token_longer_than_the_field_is_refused_with_a_log_line(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, caplog: pytest.LogCaptureFixture
) -> None:
    """issue 8: never cut; refused with a clear log line, no Authorize sent."""
    too_long = "X" * (21 if version is V16 else 37)
    caplog.set_level(logging.WARNING, logger="evstation.runtime.blocks.authorization")
    async with station(tmp_path, version) as (ctx, csms, events):
        await set_variable(ctx, OFFLINE_TX_FOR_UNKNOWN_ID, "true")
        await ctx.evses.present_token(too_long, "ISO14443", evse_id=1)
        assert await next_of(events, Authorized) is None
    assert csms.csms.of("Authorize") == []
    assert any("refused, not cut" in r.getMessage() and too_long in r.getMessage() for r in caplog.records)


# --- stopping --------------------------------------------------------------------------------------


async def start_session(ctx: SessionContext, events: Any, token: str, evse_id: int = 1) -> None:
    assert await ctx.evses.present_token(token, "ISO14443", evse_id=evse_id) == evse_id
    assert await next_of(events, Authorized) is not None
    board(ctx, evse_id).plug_in()


@BOTH
async def test_session_token_in_another_case_stops_its_session(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """2.0.1 idToken is case insensitive, 1.6 idTag a CiString: "tag-1" stops the session of "TAG-1"
    (routed to its EVSE, not starting a second session), without another Authorize."""
    async with station(tmp_path, version) as (ctx, csms, events):
        await start_session(ctx, events, "TAG-1")
        assert await ctx.evses.present_token("tag-1", "ISO14443") == 1
        ended = await next_of(events, SessionEnded)
        assert ended is not None and (ended.evse_id, ended.reason) == (1, StopReason.LOCAL)
        assert not ctx.evses[2].session_active()
    assert len(csms.csms.of("Authorize")) == 1


@BOTH
async def test_c09_token_of_the_same_group_stops_the_session(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """C09 groupIdToken / 1.6 parentIdTag: B of A's group stops A's session; C of another group does not."""
    csms = CsmsPeer(version).then(
        "Authorize",
        authorize_reply(version, group="FLEET"),
        authorize_reply(version, group="OTHER"),
        authorize_reply(version, group="fleet"),
    )
    async with station(tmp_path, version, csms) as (ctx, _online, events):
        await start_session(ctx, events, "A")
        assert await ctx.evses.present_token("C", "ISO14443", evse_id=1) == 1
        assert await next_of(events, SessionEnded) is None
        assert ctx.evses[1].session_active()
        assert await ctx.evses.present_token("B", "ISO14443", evse_id=1) == 1
        ended = await next_of(events, SessionEnded)
        assert ended is not None and ended.reason is StopReason.LOCAL


async def test_c16_master_pass_stops_any_session_and_starts_none(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """C16: a token of AuthCtrlr.MasterPassGroupId may stop any transaction and may not start one."""
    csms = CsmsPeer(V201).then(
        "Authorize",
        authorize_reply(V201, group="MASTER"),  # the master pass at an idle EVSE
        authorize_reply(V201),  # A starts
    )
    async with station(tmp_path, V201, csms) as (ctx, online, events):
        await set_variable(ctx, MASTER_PASS_GROUP_ID, "Master")
        assert await ctx.evses.present_token("M", "ISO14443", evse_id=2) == 2
        assert await next_of(events, Authorized) is None
        await start_session(ctx, events, "A")
        assert await ctx.evses.present_token("M", "ISO14443", evse_id=1) == 1
        ended = await next_of(events, SessionEnded)
        assert ended is not None and ended.evse_id == 1
    # The master pass's group came from the first answer (cached): no second Authorize for it.
    assert len(online.csms.of("Authorize")) == 2


async def test_v16_local_auth_list_keys(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    """1.6 9.2: the LocalAuthListManagement profile is supported; LocalAuthListEnabled is read-write,
    LocalAuthListMaxLength / SendLocalListMaxLength read-only with our limits."""
    async with open_session_context(tmp_path, V16) as ctx:
        dm = ctx.device_model
        found, unknown = dm.v16_get_configuration(
            [
                "SupportedFeatureProfiles",
                "LocalAuthListEnabled",
                "LocalAuthListMaxLength",
                "SendLocalListMaxLength",
            ]
        )
        change = await dm.v16_change_configuration("LocalAuthListEnabled", "false")
    assert unknown == []
    values = {entry.key: (entry.readonly, entry.value) for entry in found}
    assert "LocalAuthListManagement" in (values["SupportedFeatureProfiles"][1] or "")
    assert values["LocalAuthListEnabled"] == (False, "true")
    assert values["LocalAuthListMaxLength"] == (True, "10000")
    assert values["SendLocalListMaxLength"] == (True, "250")
    assert change.status.value == "Accepted"

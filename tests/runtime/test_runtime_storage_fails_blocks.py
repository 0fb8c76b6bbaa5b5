"""Writes outside the transaction path on a database that refuses them (read-only SD card): a CSMS
request whose effect cannot be stored gets the spec's negative answer (never a CALLERROR), and a
background write never ends the station. A real SQLite file refusing writes (`PRAGMA query_only`),
requests from a scripted CSMS (docs/storage.md "When writes fail")."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    CsmsPeer,
    Fail,
    MemoryConnection,
    call,
    is_end_message,
    online,
    open_session_context,
    serve_until_link_down,
    serving,
    start_transaction,
    statuses_at_boot,
)
from test_runtime_reservation import reserve_201
from test_runtime_storage_fails import make_read_only, storage_of, writable_again

from evstation.protocol.authorization import AuthStatus, TokenInfo
from evstation.protocol.reservation import Reservation
from evstation.protocol.security_events import SecurityEvent, decode_pending
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks import transactions as transactions_module
from evstation.runtime.blocks.authorization import CACHE_SWEEP_INTERVAL_S
from evstation.runtime.blocks.security import PENDING_EVENTS_KEY
from evstation.runtime.blocks.transactions import STORAGE_PROBE_S
from evstation.runtime.blocks.transactions.formats import UpdateData
from evstation.runtime.clock import iso
from evstation.runtime.device_model import ACTIVE_NETWORK_PROFILE, AUTH_CACHE_LIFETIME, HEARTBEAT_INTERVAL
from evstation.runtime.evse import ConnectorStatus
from evstation.runtime.lifecycle import StationOutcome
from evstation.runtime.network_profiles import (
    LAST_CONNECTED_SLOT_KEY,
    LAST_GOOD_PASSWORD_KEY,
    NetworkProfiles,
)
from evstation.runtime.session.common import SessionContext
from evstation.runtime.station import link_settings
from evstation.runtime.storage import Storage

V16, V201 = OcppVersion.V16, OcppVersion.V201
START_ACTION = {V16: "StartTransaction", V201: "TransactionEvent"}
BOTH = pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])


async def stored_reservations(storage: Storage) -> list[int]:
    def work(conn: sqlite3.Connection) -> list[int]:
        return [int(row[0]) for row in conn.execute("SELECT id FROM reservations ORDER BY id")]

    return await storage.read(work)


async def until_a_write_commits(ctx: SessionContext) -> None:
    """The transactions block's probe commits within STORAGE_PROBE_S once the disk takes writes."""
    await writable_again(storage_of(ctx))
    await trio.sleep(STORAGE_PROBE_S + 1)
    assert storage_of(ctx).write_failure is None


@asynccontextmanager
async def refusing(
    tmp_path: Path,
    version: OcppVersion,
    csms: CsmsPeer,
    *,
    run_reset: bool = False,
    run_security: bool = False,
) -> AsyncIterator[tuple[SessionContext, MemoryConnection]]:
    """A booted station (the transactions block and its probe running) whose database refuses writes."""
    booted = online(tmp_path, version, csms, run_reset=run_reset, run_security=run_security)
    async with booted as (ctx, conn):
        await make_read_only(storage_of(ctx))
        yield ctx, conn


# --- CSMS requests: the negative answer ------------------------------------------------------------


@BOTH
async def test_a_setting_that_cannot_be_stored_is_rejected_and_not_applied(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """2.0.1 SetVariables: that variable Rejected, reasonCode InternalError; 1.6 ChangeConfiguration:
    Rejected. The old value stays in force (memory agrees with the disk)."""
    csms = CsmsPeer(version)
    async with refusing(tmp_path, version, csms) as (ctx, conn):
        if version is V16:
            answer = await call(
                csms, conn, "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "120"}
            )
            assert answer == {"status": "Rejected"}
        else:
            item = {
                "attributeValue": "120",
                "component": {"name": "OCPPCommCtrlr"},
                "variable": {"name": "HeartbeatInterval"},
            }
            answer = await call(csms, conn, "SetVariables", {"setVariableData": [item]})
            [result] = answer["setVariableResult"]
            assert result["attributeStatus"] == "Rejected"
            assert result["attributeStatusInfo"]["reasonCode"] == "InternalError"
        assert ctx.device_model.get_int(HEARTBEAT_INTERVAL) == 300


@BOTH
async def test_clear_cache_that_cannot_be_stored_is_rejected(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms = CsmsPeer(version)
    async with refusing(tmp_path, version, csms) as (_ctx, conn):
        assert await call(csms, conn, "ClearCache", {}) == {"status": "Rejected"}


@BOTH
async def test_token_info_of_an_answer_recorded_after_a_clear_cache_sent_behind_it_is_not_cached(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """C11 / 1.6 5.4 through the outbox sender: the answer to the end of a transaction (its token's info
    Accepted) arrives while writes fail, so recording it waits; the disk takes writes again and the
    CSMS's next call is ClearCache, whose write is the first to commit (Accepted). The recording then
    runs again, after the clearing: the token info, older than the ClearCache, stays out of the cache.
    This holds only if the sender marks the answer as it arrives, not when it records it."""
    csms = CsmsPeer(version)
    csms.answer_delay = lambda message: 5.0 if is_end_message(message) else 0.0
    info = {"idTagInfo" if version is V16 else "idTokenInfo": {"status": "Accepted"}}
    async with online(tmp_path, version, csms) as (ctx, conn):

        def authorization_cached() -> list[str]:
            return [entry.token.value for entry in ctx.blocks.authorization.cached()]

        await start_transaction(ctx, 1)
        await ctx.outbox.wait_empty()
        # Every transaction message from here on is answered with the token's info.
        action = "StopTransaction" if version is V16 else "TransactionEvent"
        csms.then(action, *[info] * 10)
        assert await ctx.evses.present_token("TOKEN1", "ISO14443", evse_id=1) == 1  # the local stop
        await csms.wait_for_end()
        await make_read_only(storage_of(ctx))  # before the answer arrives
        await trio.sleep(30)
        # Learnt from the answer, then the record's write refused: the sender waits for writes.
        assert authorization_cached() == ["TOKEN1"]
        assert await ctx.outbox.entries() != []
        await writable_again(storage_of(ctx))
        assert await call(csms, conn, "ClearCache", {}) == {"status": "Accepted"}
        await ctx.outbox.wait_empty()
        assert authorization_cached() == []
        assert await storage_of(ctx).transactions() == []


@BOTH
async def test_send_local_list_that_cannot_be_stored_fails_and_keeps_the_old_list(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms = CsmsPeer(version)
    async with refusing(tmp_path, version, csms) as (ctx, conn):
        if version is V16:
            entry: dict[str, Any] = {"idTag": "CARD1", "idTagInfo": {"status": "Accepted"}}
            request: dict[str, Any] = {
                "listVersion": 5,
                "updateType": "Full",
                "localAuthorizationList": [entry],
            }
        else:
            entry = {
                "idToken": {"idToken": "CARD1", "type": "ISO14443"},
                "idTokenInfo": {"status": "Accepted"},
            }
            request = {"versionNumber": 5, "updateType": "Full", "localAuthorizationList": [entry]}
        assert await call(csms, conn, "SendLocalList", request) == {"status": "Failed"}
        assert ctx.blocks.authorization.local_list_version == 0
        assert await ctx.blocks.authorization.local_list_entries() == []


def reserve_request(
    ctx: SessionContext, version: OcppVersion, rid: int, minutes: float = 60
) -> dict[str, Any]:
    if version is V16:
        expiry = iso(ctx.clock.now() + timedelta(minutes=minutes))
        return {"connectorId": 2, "expiryDate": expiry, "idTag": "CARD1", "reservationId": rid}
    payload = reserve_201(ctx, rid, 2, "CARD1")
    payload["expiryDateTime"] = iso(ctx.clock.now() + timedelta(minutes=minutes))
    return payload


@BOTH
async def test_reserve_now_that_cannot_be_stored_is_rejected(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms = CsmsPeer(version)
    async with refusing(tmp_path, version, csms) as (ctx, conn):
        answer = await call(csms, conn, "ReserveNow", reserve_request(ctx, version, 7))
        assert answer["status"] == "Rejected"
        assert ctx.blocks.reservation.reservations() == []


@BOTH
async def test_cancel_reservation_that_cannot_be_stored_is_rejected_and_the_reservation_holds(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Rejected: the reservation the disk keeps stays in force (memory agrees with the disk) until its
    expiry or a cancel that can be stored."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        assert (await call(csms, conn, "ReserveNow", reserve_request(ctx, version, 7)))[
            "status"
        ] == "Accepted"
        await make_read_only(storage_of(ctx))
        answer = await call(csms, conn, "CancelReservation", {"reservationId": 7})
        assert answer["status"] == "Rejected"
        if version is V201:
            assert answer["statusInfo"]["reasonCode"] == "InternalError"
        assert await stored_reservations(storage_of(ctx)) == [7]


@BOTH
async def test_change_availability_that_cannot_be_stored_is_rejected(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms = CsmsPeer(version)
    async with refusing(tmp_path, version, csms) as (ctx, conn):
        if version is V16:
            request: dict[str, Any] = {"connectorId": 2, "type": "Inoperative"}
        else:
            request = {"operationalStatus": "Inoperative", "evse": {"id": 2}}
        assert (await call(csms, conn, "ChangeAvailability", request))["status"] == "Rejected"
        assert ctx.evses[2].available()
        assert not ctx.blocks.availability.targets.evses


async def test_v201_set_network_profile_that_cannot_be_stored_fails(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """B09.FR.03 (answered so before this file: the block already caught the refusal)."""
    csms = CsmsPeer(V201)
    async with refusing(tmp_path, V201, csms) as (ctx, conn):
        data = {
            "ocppVersion": "OCPP20",
            "ocppTransport": "JSON",
            "ocppCsmsUrl": "wss://csms.example/ocpp",
            "messageTimeout": 30,
            "securityProfile": 2,
            "ocppInterface": "Wired0",
        }
        request = {"configurationSlot": 0, "connectionData": data}
        assert await call(csms, conn, "SetNetworkProfile", request) == {"status": "Failed"}
        assert await ctx.blocks.provisioning.network_profiles() == []


# --- background writes: the station runs on ----------------------------------------------------------


async def cache_a_token(ctx: SessionContext) -> None:
    """CARD1 decided once online: the CSMS's Accepted answer is in the cache, stored."""
    assert (await ctx.blocks.authorization.decide("CARD1", "ISO14443", 1)).accepted
    assert [entry.token.value for entry in ctx.blocks.authorization.cached()] == ["CARD1"]


@BOTH
async def test_a_cached_token_presented_while_writes_fail_is_decided(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The lookup marks the entry used: a write the disk refuses, never a failed authorization."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, _conn):
        await cache_a_token(ctx)
        await make_read_only(storage_of(ctx))
        assert (await ctx.blocks.authorization.decide("CARD1", "ISO14443", 1)).accepted


@BOTH
async def test_the_cache_sweep_while_writes_fail_drops_stale_entries_and_runs_on(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Stale entries leave the memory at the hourly sweep; on disk they are swept after a restart."""
    async with open_session_context(tmp_path, version) as ctx:
        authorization = ctx.blocks.authorization
        await ctx.device_model.set(AUTH_CACHE_LIFETIME, "60")
        await authorization.learn("CARD1", "ISO14443", TokenInfo(AuthStatus.ACCEPTED))
        assert [entry.token.value for entry in authorization.cached()] == ["CARD1"]
        await make_read_only(storage_of(ctx))
        await trio.sleep(CACHE_SWEEP_INTERVAL_S + 1)
        assert authorization.cached() == []


@BOTH
async def test_a_reservation_expiring_while_writes_fail_frees_the_evse_and_is_deleted_once_they_succeed(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The expiry frees the EVSE on time (an expired reservation must not hold it), the station runs
    on, and the delete is recorded once writes succeed (else a restart would bring it back)."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        request = reserve_request(ctx, version, 7, minutes=2)
        assert (await call(csms, conn, "ReserveNow", request))["status"] == "Accepted"
        await make_read_only(storage_of(ctx))
        await trio.sleep(3 * 60)
        assert ctx.blocks.reservation.reservations() == []
        assert ctx.evses[2].status() is not ConnectorStatus.RESERVED
        assert await stored_reservations(storage_of(ctx)) == [7]
        await until_a_write_commits(ctx)
        assert await stored_reservations(storage_of(ctx)) == []


@BOTH
async def test_an_owed_reservation_delete_skips_the_id_of_a_row_being_written(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """A removal the disk refused leaves the delete of row 7 owed; when writes succeed again, a
    ReserveNow of id 7 may already wait for the database thread as the owed delete runs. Writes commit
    in call order, so the delete would remove the new row (a restart would lose a reservation the CSMS
    was told it has): it must skip that id, and the new row settles the owed delete. Through the CSMS
    that window is one scheduling order among several, so the block's own steps build it here: the
    owed delete, a held write, the reservation's write queued behind it, the delete's turn, release."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, _conn):
        block = ctx.blocks.reservation
        block._unrecorded.add(7)
        expiry = ctx.clock.now() + timedelta(hours=1)
        again = Reservation(id=7, id_token="CARD1", expires_at=expiry, evse_id=2)
        entered, release = threading.Event(), threading.Event()

        def held_write(db: sqlite3.Connection) -> None:
            entered.set()
            release.wait(10)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(storage_of(ctx).write, held_write)
            await trio.to_thread.run_sync(entered.wait)
            nursery.start_soon(block._reserve, again)
            await trio.testing.wait_all_tasks_blocked()  # its write waits behind the held one
            nursery.start_soon(block._delete_unrecorded)
            await trio.testing.wait_all_tasks_blocked()
            release.set()
        assert [r.id for r in block.reservations()] == [7]
        assert await stored_reservations(storage_of(ctx)) == [7]
        assert block._unrecorded == set()


@BOTH
async def test_a_security_event_recorded_while_writes_fail_is_kept_and_stored_once_they_succeed(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Offline (nothing sends it): the event stays queued in memory and reaches the disk at the first
    write that commits again, so a restart after that still sends it."""
    async with open_session_context(tmp_path, version) as ctx, trio.open_nursery() as nursery:
        await nursery.start(ctx.blocks.security.run)
        storage = storage_of(ctx)
        await make_read_only(storage)
        await ctx.blocks.security.record(SecurityEvent.INVALID_CSMS_CERTIFICATE, "test")
        assert [e.tech_info for e in ctx.blocks.security.pending] == ["test"]
        assert decode_pending(await storage.get_setting(PENDING_EVENTS_KEY)) == []
        await writable_again(storage)
        await storage.set_setting("someone.else", "writes")  # any write that commits
        await trio.sleep(1)
        assert [e.tech_info for e in decode_pending(await storage.get_setting(PENDING_EVENTS_KEY))] == [
            "test"
        ]
        nursery.cancel_scope.cancel()


@BOTH
async def test_a_security_event_delivered_while_writes_fail_leaves_the_stored_queue_once_they_succeed(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms = CsmsPeer(version)
    async with refusing(tmp_path, version, csms, run_security=True) as (ctx, _conn):
        security = ctx.blocks.security
        await security.wait_sent()
        await security.record(SecurityEvent.INVALID_CSMS_CERTIFICATE, "test")
        await security.wait_sent()
        assert "test" in [s.call.payload.get("techInfo") for s in csms.of("SecurityEventNotification")]
        await until_a_write_commits(ctx)
        assert decode_pending(await storage_of(ctx).get_setting(PENDING_EVENTS_KEY)) == []


@BOTH
async def test_a_boot_accepted_while_writes_fail_goes_on_with_the_csms_interval(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The Accepted boot state and the CSMS's heartbeat interval cannot be stored: the session goes on
    (statuses, heartbeats at the CSMS's interval); the next boot gets an interval again."""
    csms = CsmsPeer(version).then(
        "BootNotification", {"status": "Accepted", "currentTime": "2030-06-01T12:00:00.000Z", "interval": 120}
    )
    conn = MemoryConnection(version)
    async with open_session_context(tmp_path, version) as ctx:
        await make_read_only(storage_of(ctx))
        async with serving(csms, conn, ctx):
            await csms.wait_for("StatusNotification", statuses_at_boot(version))
            [first] = await csms.wait_for("Heartbeat")
            [_, second] = await csms.wait_for("Heartbeat", 2)
        assert ctx.device_model.get_int(HEARTBEAT_INTERVAL) == 120
        assert second.at - first.at == pytest.approx(120, abs=1)
        assert (await storage_of(ctx).boot_state()).registration_status is None


@BOTH
async def test_a_reset_whose_boot_reason_cannot_be_stored_restarts_anyway(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms = CsmsPeer(version)
    async with refusing(tmp_path, version, csms, run_reset=True, run_security=True) as (ctx, conn):
        request = {"type": "Hard"} if version is V16 else {"type": "Immediate"}
        assert await call(csms, conn, "Reset", request) == {"status": "Accepted"}
        assert await ctx.blocks.reset.stop_requests.wait() is StationOutcome.RESET
        assert (await storage_of(ctx).boot_state()).next_boot_reason is None


@BOTH
async def test_a_reset_ending_a_transaction_while_writes_fail_restarts_anyway(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The transaction cannot be marked ended (nor its end queued): the station restarts all the same,
    after the bounded wait for the end; the transaction stays open on disk, as after a power cut."""
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms, run_reset=True, run_security=True) as (ctx, conn):
        await start_transaction(ctx, 1)
        await ctx.outbox.wait_empty()
        await make_read_only(storage_of(ctx))
        request = {"type": "Hard"} if version is V16 else {"type": "Immediate"}
        assert await call(csms, conn, "Reset", request) == {"status": "Accepted"}
        assert await ctx.blocks.reset.stop_requests.wait() is StationOutcome.RESET
        [record] = await storage_of(ctx).transactions()
        assert record.is_open and record.resumable


BASIC_AUTH = [{"url": "ws://127.0.0.1:9/ocpp", "priority": 1, "security_profile": 1, "password": "p" * 16}]


@BOTH
async def test_a_connection_whose_slot_cannot_be_stored_goes_on_and_stores_it_at_the_next(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The slot in use, the accepted Basic-auth password (the fallback) and the station's own
    device-model values (ActiveNetworkProfile, ...) apply in memory; the slot and the password are
    written at the next connection once writes succeed."""
    async with open_session_context(tmp_path, version, endpoints=BASIC_AUTH) as ctx:
        storage = storage_of(ctx)
        profiles = NetworkProfiles(
            endpoints=link_settings(ctx.config).endpoints, session=ctx, storage=storage
        )
        [endpoint] = (await profiles.dial_plan()).endpoints
        await make_read_only(storage)
        await profiles.connected(endpoint)
        assert ctx.device_model.get(ACTIVE_NETWORK_PROFILE) == str(endpoint.priority)
        assert await storage.get_setting(LAST_CONNECTED_SLOT_KEY) is None
        assert await storage.get_setting(LAST_GOOD_PASSWORD_KEY) is None
        await writable_again(storage)
        await profiles.connected(endpoint)
        assert await storage.get_setting(LAST_CONNECTED_SLOT_KEY) == str(endpoint.priority)
        assert await storage.get_setting(LAST_GOOD_PASSWORD_KEY) == "p" * 16


async def test_a_triggered_transaction_event_refused_by_the_database_is_held_not_a_crash(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """2.0.1 TriggerMessage(TransactionEvent) while writes fail: Accepted, and the Updated event its
    answer promised is held as the meter values are (queued once writes succeed), instead of a
    StorageWriteError ending the station from the trigger block's task."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        await start_transaction(ctx, 1)
        await ctx.outbox.wait_empty()
        await make_read_only(storage_of(ctx))
        request = {"requestedMessage": "TransactionEvent", "evse": {"id": 1}}
        assert await call(csms, conn, "TriggerMessage", request) == {"status": "Accepted"}
        await trio.sleep(1)  # the trigger block's task has run
        assert await call(csms, conn, "ClearCache", {}) == {"status": "Rejected"}  # still serving
        await until_a_write_commits(ctx)
        await ctx.outbox.wait_empty()
        events = [s.call.payload for s in csms.of("TransactionEvent")]
        assert [e["triggerReason"] for e in events].count("Trigger") == 1
        assert [e["seqNo"] for e in events] == list(range(len(events)))


async def test_a_held_message_dropped_while_it_is_being_queued_loses_no_other(
    clock: trio.testing.MockClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HELD_UPDATES_MAX reached while the release queues the oldest held message: the one that makes
    room drops that oldest (already on its way into the outbox), and the release must not then
    remove the next, unsent one from the held queue in its place: every held message goes out."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, _conn):
        await start_transaction(ctx, 1)
        await ctx.outbox.wait_empty()
        block = ctx.blocks.transactions
        [record] = await storage_of(ctx).transactions()

        def value(n: int) -> UpdateData:
            stamp = ctx.clock.now() + timedelta(milliseconds=n)
            meter: dict[str, object] = {"timestamp": iso(stamp), "sampledValue": [{"value": float(n)}]}
            return UpdateData("MeterValuePeriodic", stamp, False, meter=meter)

        await make_read_only(storage_of(ctx))
        await trio.sleep(10)  # the EVSE Faulted (its charging-state event is held too)
        for n in range(3):
            await block._queue_update(record, value(n))  # held: the writes are refused
        await trio.sleep(10)
        held = list(block._held[record.id])
        monkeypatch.setattr(transactions_module, "HELD_UPDATES_MAX", len(held))
        await writable_again(storage_of(ctx))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(block._release_held, record)
            await trio.testing.wait_all_tasks_blocked()  # the oldest is being written
            last = value(3)
            await block._queue_update(record, last)  # drops that oldest to make room
        await ctx.outbox.wait_empty()
        sent = [
            (e["triggerReason"], e["timestamp"])
            for e in (s.call.payload for s in csms.of("TransactionEvent"))
        ]
        expected = [(data.trigger, iso(data.at)) for data in [*held, last]]
        assert [event for event in sent if event in expected] == expected


@BOTH
async def test_a_transaction_message_failed_by_the_csms_while_writes_fail_is_retried_not_a_crash(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """A CALLERROR to a queued transaction message costs an attempt, which is a write: refused, the
    sender waits for writes and then goes on (the message sent again, once), instead of a
    StorageWriteError ending the session's sender and the station."""
    csms = CsmsPeer(version)
    started = START_ACTION[version]
    csms.then(started, Fail())
    csms.answer_delay = lambda message: 5.0 if message.action == started else 0.0
    async with online(tmp_path, version, csms) as (ctx, _conn):
        await start_transaction(ctx, 1)
        await csms.wait_for(started)
        await make_read_only(storage_of(ctx))  # before the CALLERROR arrives
        await trio.sleep(30)
        await until_a_write_commits(ctx)
        await csms.wait_for(started, 2)
        await ctx.outbox.wait_empty()
        firsts = [s.call.payload for s in csms.of(started)]
        if version is V201:
            firsts = [p for p in firsts if p["eventType"] == "Started"]
        assert len(firsts) == 2 and firsts[0] == firsts[1]


async def test_a_queued_message_given_up_while_writes_fail_moves_to_the_dead_letters_once_they_succeed(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A queued message our own schema check refuses (say, queued by an older version) goes to the dead
    letters at once, with no attempt counted first: that move is a write, and while writes fail it waits
    for them (before, the refused move ended the station); the message is not sent meanwhile."""
    csms = CsmsPeer(V201)
    conn = MemoryConnection(V201)
    async with open_session_context(tmp_path, V201, run_evses=True) as ctx:
        bad = await ctx.outbox.put("TransactionEvent", {"eventType": "Updated"})
        await make_read_only(storage_of(ctx))
        with trio.fail_after(1000):
            async with trio.open_nursery() as nursery:
                await nursery.start(ctx.blocks.transactions.run)
                nursery.start_soon(csms.serve, conn)
                nursery.start_soon(serve_until_link_down, conn, ctx)
                await csms.wait_for("StatusNotification", statuses_at_boot(V201))
                await trio.sleep(3 * STORAGE_PROBE_S)
                assert [e.id for e in await ctx.outbox.entries()] == [bad.id]
                assert await ctx.outbox.dead_letters() == []
                await until_a_write_commits(ctx)
                await ctx.outbox.wait_empty()
                assert [d.entry.id for d in await ctx.outbox.dead_letters()] == [bad.id]
                assert "TransactionEvent" not in csms.actions()
                nursery.cancel_scope.cancel()

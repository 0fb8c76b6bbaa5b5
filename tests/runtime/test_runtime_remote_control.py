"""Remote control through the session and running sim EVSEs: UnlockConnector (2.0.1 F05; 1.6 5.18),
AuthorizeRemoteStart (2.0.1 F01.FR.01; 1.6 AuthorizeRemoteTxRequests), the TxProfile rule for a remote
start's charging profile, and the bound on the 1.6 wait that holds Charging until StartTransaction is
answered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import CsmsPeer, NoAnswer, board, call, online

from evstation.drivers.api import LockState
from evstation.protocol.versions import OcppVersion
from evstation.runtime.device_model import AUTHORIZE_REMOTE_START, MESSAGE_TIMEOUT
from evstation.runtime.evse import ConnectorStatus, EnergyFlowStarted
from evstation.runtime.session.common import SessionContext

V16, V201 = OcppVersion.V16, OcppVersion.V201


async def charging(ctx: SessionContext, evse_id: int, token: str) -> None:
    with ctx.evses.subscribe() as events:
        board(ctx, evse_id).plug_in()
        assert await ctx.evses.present_token(token, "ISO14443", evse_id=evse_id) == evse_id
        async for event in events:
            if isinstance(event, EnergyFlowStarted) and event.evse_id == evse_id:
                return


def tx_profile(purpose: str, v16: bool) -> dict[str, Any]:
    schedule = {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16}]}
    profile: dict[str, Any] = {
        "stackLevel": 0,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute" if v16 else "Relative",
    }
    if v16:
        return {"chargingProfileId": 1, **profile, "chargingSchedule": schedule}
    return {"id": 1, **profile, "chargingSchedule": [{"id": 1, **schedule}]}


async def test_v201_f05_unlock_answers(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    """F05.FR.02: OngoingAuthorizedTransaction while a transaction runs (the lock stays closed);
    Unlocked once it ended; UnlockFailed when the lock motor fails; UnknownConnector for a connector
    the station lacks and for one without a lock (tethered cable)."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, conn):
        await charging(ctx, 1, "TAG-1")
        unlock = {"evseId": 1, "connectorId": 1}
        ongoing = await call(csms, conn, "UnlockConnector", unlock)
        locked_meanwhile = board(ctx, 1).lock_state
        assert await ctx.evses.present_token("TAG-1", "ISO14443", evse_id=1) == 1  # local stop
        await csms.wait_for("TransactionEvent", 3)
        unlocked = await call(csms, conn, "UnlockConnector", unlock)
        board(ctx, 1).fail_next_move = True
        failed = await call(csms, conn, "UnlockConnector", unlock)
        unknown = await call(csms, conn, "UnlockConnector", {"evseId": 1, "connectorId": 2})
        ctx.evses[2].has_lock = False
        tethered = await call(csms, conn, "UnlockConnector", {"evseId": 2, "connectorId": 1})
    assert ongoing == {"status": "OngoingAuthorizedTransaction"}
    assert locked_meanwhile is LockState.LOCKED
    assert unlocked == {"status": "Unlocked"}
    assert failed == {"status": "UnlockFailed"}
    assert unknown == tethered == {"status": "UnknownConnector"}


async def test_v16_5_18_unlock_ends_the_transaction_first_reason_unlock_command(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 5.18: the running transaction is ended (StopTransaction reason UnlockCommand) and the
    connector unlocked; NotSupported for an unknown connector or one without a lock (TC_017_2)."""
    csms = CsmsPeer(V16)
    async with online(tmp_path, V16, csms) as (ctx, conn):
        await charging(ctx, 1, "TAG-1")
        await csms.wait_for("StartTransaction")
        answer = await call(csms, conn, "UnlockConnector", {"connectorId": 1})
        lock = board(ctx, 1).lock_state
        # "First": by the answer (the unlock done) the StopTransaction is queued, the id forgotten.
        id_at_answer = ctx.blocks.transactions.ids.get(1)
        stop = (await csms.wait_for("StopTransaction"))[0].call.payload
        unknown = await call(csms, conn, "UnlockConnector", {"connectorId": 9})
        ctx.evses[2].has_lock = False
        tethered = await call(csms, conn, "UnlockConnector", {"connectorId": 2})
        board(ctx, 1).fail_next_move = True
        failed = await call(csms, conn, "UnlockConnector", {"connectorId": 1})
    assert answer == {"status": "Unlocked"}
    assert lock is LockState.UNLOCKED
    assert stop["reason"] == "UnlockCommand"
    assert id_at_answer is None
    assert unknown == tethered == {"status": "NotSupported"}
    assert failed == {"status": "UnlockFailed"}


@pytest.mark.parametrize("version", [V16, V201])
async def test_f01_fr_01_authorize_remote_start_sends_authorize_first(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """AuthorizeRemoteStart / AuthorizeRemoteTxRequests true: the remote token is sent in Authorize;
    an accepted one starts the transaction on plug-in, a refused one authorizes nothing."""
    v16 = version is V16
    refused = {"idTagInfo": {"status": "Invalid"}} if v16 else {"idTokenInfo": {"status": "Invalid"}}
    csms = CsmsPeer(version).then("Authorize", refused)
    async with online(tmp_path, version, csms) as (ctx, conn):
        if v16:
            change = await ctx.device_model.v16_change_configuration("AuthorizeRemoteTxRequests", "true")
            assert change.status.value == "Accepted"
        else:
            assert (await ctx.device_model.set(AUTHORIZE_REMOTE_START, "true")).applies
        start, request = (
            ("RemoteStartTransaction", {"connectorId": 1, "idTag": "R1"})
            if v16
            else (
                "RequestStartTransaction",
                # A card's token: a Central one is never sent in Authorize (the authorization block).
                {"evseId": 1, "remoteStartId": 3, "idToken": {"idToken": "R1", "type": "ISO14443"}},
            )
        )
        assert await call(csms, conn, start, request) == {"status": "Accepted"}
        await csms.wait_for("Authorize")
        # Refused: the EVSE waits for nobody (no Authorized, still Available).
        await trio.sleep(ctx.evses[1].authorization_timeout_s + 1)
        idle_after_refusal = ctx.evses[1].status()
        assert await call(csms, conn, start, request) == {"status": "Accepted"}
        await csms.wait_for("Authorize", 2)
        board(ctx, 1).plug_in()
        first = (await csms.wait_for("StartTransaction" if v16 else "TransactionEvent"))[0].call.payload
    assert idle_after_refusal is ConnectorStatus.AVAILABLE
    if v16:
        assert [a.call.payload for a in csms.of("Authorize")] == [{"idTag": "R1"}] * 2
        assert first["idTag"] == "R1"
    else:
        assert first["idToken"] == {"idToken": "R1", "type": "ISO14443"}
        info = first["transactionInfo"]
        assert isinstance(info, dict) and info["remoteStartId"] == 3


@pytest.mark.parametrize("version", [V16, V201])
async def test_f01_remote_start_profile_must_be_a_tx_profile(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """A charging profile attached to a remote start must be a TxProfile: another purpose is Rejected
    (nothing is authorized); a TxProfile is accepted and kept for smart charging."""
    v16 = version is V16

    def request(purpose: str) -> tuple[str, dict[str, Any]]:
        if v16:
            return "RemoteStartTransaction", {
                "connectorId": 1,
                "idTag": "R1",
                "chargingProfile": tx_profile(purpose, True),
            }
        token = {"idToken": "R1", "type": "Central"}
        return "RequestStartTransaction", {
            "evseId": 1,
            "remoteStartId": 1,
            "idToken": token,
            "chargingProfile": tx_profile(purpose, False),
        }

    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        wrong = await call(csms, conn, *request("TxDefaultProfile"))
        session_after_wrong = ctx.evses[1].session_active()
        right = await call(csms, conn, *request("TxProfile"))
        kept = ctx.blocks.remote_control.tx_profiles.get(1)
    assert wrong == {"status": "Rejected"}
    assert not session_after_wrong
    assert right == {"status": "Accepted"}
    assert kept is not None


@pytest.mark.parametrize("version", [V16, V201])
async def test_a_remote_starts_tx_profile_is_forgotten_when_its_transaction_ends(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """A TxProfile lives as long as its transaction (2.0.1 K01 TxProfile; 1.6 5.11 / 3.13.2): kept from
    the remote start through the transaction, dropped once the transaction ended, so a station does not
    hold one per transaction ever started. Another EVSE's profile, whose transaction has not ended,
    stays."""
    v16 = version is V16

    def remote_start(evse_id: int) -> tuple[str, dict[str, Any]]:
        if v16:
            return "RemoteStartTransaction", {
                "connectorId": evse_id,
                "idTag": f"R{evse_id}",
                "chargingProfile": tx_profile("TxProfile", True),
            }
        return "RequestStartTransaction", {
            "evseId": evse_id,
            "remoteStartId": evse_id,
            "idToken": {"idToken": f"R{evse_id}", "type": "Central"},
            "chargingProfile": tx_profile("TxProfile", False),
        }

    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms) as (ctx, conn):
        ids = ctx.blocks.transactions.ids
        profiles = ctx.blocks.remote_control.tx_profiles
        assert await call(csms, conn, *remote_start(1)) == {"status": "Accepted"}
        board(ctx, 1).plug_in()
        while ids.get(1) is None:
            await ids.changed.wait()
        during = set(profiles)
        assert await call(csms, conn, *remote_start(2)) == {"status": "Accepted"}
        board(ctx, 1).unplug()
        await ids.wait_none(frozenset({1}))
        await trio.testing.wait_all_tasks_blocked()  # the block has seen the end
        after = set(profiles)
    assert during == {1}
    assert after == {2}


async def test_v16_charging_status_waits_for_start_transaction_at_most_the_message_timeout(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6: Charging is held until StartTransaction is answered, but a CSMS that never answers delays
    it by MessageTimeout at most (runtime/session/common.py _after_transaction_start)."""
    csms = CsmsPeer(V16).then("StartTransaction", NoAnswer())
    async with online(tmp_path, V16, csms) as (ctx, _conn):
        timeout = ctx.device_model.get_float(MESSAGE_TIMEOUT)
        await charging(ctx, 1, "TAG-1")
        start = (await csms.wait_for("StartTransaction"))[0]
        while not any(
            s.call.payload["status"] == "Charging" and s.call.payload["connectorId"] == 1
            for s in csms.of("StatusNotification")
        ):
            await csms.wait_for("StatusNotification", len(csms.of("StatusNotification")) + 1)
        status = next(s for s in csms.of("StatusNotification") if s.call.payload["status"] == "Charging")
        held = ctx.blocks.transactions.ids.get(1)
    # The CSMS never gave its id: the status went out on the bound, not on the answer.
    assert held is not None and held.startswith("-")
    assert timeout <= status.at - start.at <= timeout + 2

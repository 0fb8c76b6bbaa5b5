"""Interop, the actions the other interop tests leave out, against the `ocpp`-package CSMS (driven mode):
ClearCache, DataTransfer both ways, CancelReservation, the remote stop of a running transaction (1.6
RemoteStopTransaction; 2.0.1 RequestStopTransaction with GetTransactionStatus around it) and 2.0.1
SetNetworkProfile. Each asserts the answer the spec requires and the station's state after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from ocpp_peer import PEER_VENDOR_ID
from test_interop_ocpp_package import (
    TIMEOUT_S,
    Peer,
    _assert_nothing_refused,
    _config,
    accepted_and_reported,
    run_peer,
)
from test_interop_remote_reservation import _ends, _starts

from evstation.protocol.data_transfer import EVSTATION_VENDOR_ID, PING_MESSAGE_ID, DataTransferStatus
from evstation.runtime.device_model import (
    AUTH_CACHE_ENABLED,
    LOCAL_PRE_AUTHORIZE,
    NETWORK_CONFIGURATION_PRIORITY,
)
from evstation.runtime.evse import ConnectorStatus
from evstation.runtime.station import Station, open_station


async def _reserve_evse_2(peer: Peer, v16: bool, reservation_id: int, expiry: str) -> dict[str, Any]:
    """The CSMS reserves EVSE (1.6: connector) 2 for the token OWNER until `expiry`."""
    if v16:
        return await peer.call(
            "ReserveNow", connector_id=2, expiry_date=expiry, id_tag="OWNER", reservation_id=reservation_id
        )
    return await peer.call(
        "ReserveNow",
        id=reservation_id,
        expiry_date_time=expiry,
        id_token={"idToken": "OWNER", "type": "ISO14443"},
        evse_id=2,
    )


async def _session(station: Station, peer: Peer, v16: bool, evse_id: int, token: str) -> None:
    """A whole session on `evse_id` started by `token` and ended by the unplug."""
    starts, ends = len(_starts(peer, v16)), len(_ends(peer, v16))
    board = station.sims[evse_id].controller
    board.plug_in()
    assert await station.evses.present_token(token, "ISO14443", evse_id=evse_id) == evse_id
    await peer.wait_until(lambda: len(_starts(peer, v16)) > starts)
    board.unplug()
    await peer.wait_until(lambda: len(_ends(peer, v16)) > ends)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_clear_cache_makes_a_cached_token_ask_the_csms_again(
    tmp_path: Path, version: str
) -> None:
    """C11 / 1.6 5.4: ClearCache is Rejected while the cache is disabled. With the cache on and
    LocalPreAuthorize, the token's first session asks the CSMS (Authorize), its second starts from the
    cache without asking; ClearCache is Accepted and the third session asks again."""
    v16 = version == "1.6"
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer(version, "driven") as (peer, port),
            open_station(_config(tmp_path, version, port)) as station,
        ):
            await accepted_and_reported(station, peer)
            dm = station.session.device_model
            assert (await dm.set(AUTH_CACHE_ENABLED, "false")).applies
            disabled = await peer.call("ClearCache")
            assert (await dm.set(AUTH_CACHE_ENABLED, "true")).applies
            assert (await dm.set(LOCAL_PRE_AUTHORIZE, "true")).applies
            await _session(station, peer, v16, 1, "CACHED-1")
            asked_first = len(peer.received_calls("Authorize"))
            await _session(station, peer, v16, 2, "CACHED-1")
            asked_from_cache = len(peer.received_calls("Authorize"))
            # The StopTransaction.conf's idTagInfo is in the cache once its answer was processed: the
            # token is cached before the ClearCache (a ClearCache right behind an answer is
            # test_c11_an_answer_that_arrived_before_a_clear_cache_is_not_cached_after_it).
            await station.outbox.wait_empty()
            authorization = station.session.blocks.authorization
            assert [e.token.value for e in authorization.cached()] == ["CACHED-1"]
            clear = await peer.call("ClearCache")
            assert authorization.cached() == []
            await _session(station, peer, v16, 1, "CACHED-1")
            await station.outbox.wait_empty()
            await peer.wait_until(peer.all_answered)
        _assert_nothing_refused(peer)
    assert disabled["result"]["status"] == "Rejected"  # C11.FR.04: the cache is disabled
    assert clear["result"]["status"] == "Accepted"
    assert (asked_first, asked_from_cache) == (1, 1)
    assert len(peer.received_calls("Authorize")) == 2
    assert len(_starts(peer, v16)) == 3


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_data_transfer_both_ways(tmp_path: Path, version: str) -> None:
    """P01 / P02 (1.6 4.3 / 5.6). From the CSMS: an unknown vendorId gets UnknownVendorId, our vendor
    with an unknown messageId UnknownMessageId, our Ping Accepted with its data echoed. From the
    station: the CSMS's answer (Accepted with data; UnknownVendorId) comes back to the caller."""
    v16 = version == "1.6"
    data = "hello" if v16 else {"greeting": "hello"}
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer(version, "driven") as (peer, port),
            open_station(_config(tmp_path, version, port)) as station,
        ):
            await accepted_and_reported(station, peer)
            unknown_vendor = await peer.call("DataTransfer", vendor_id="com.nobody", message_id="X")
            unknown_message = await peer.call(
                "DataTransfer", vendor_id=EVSTATION_VENDOR_ID, message_id="NoSuchMessage"
            )
            ping = await peer.call(
                "DataTransfer", vendor_id=EVSTATION_VENDOR_ID, message_id=PING_MESSAGE_ID, data=data
            )
            block = station.session.blocks.data_transfer
            echoed = await block.send(PEER_VENDOR_ID, "Echo", data)
            refused = await block.send("com.nobody")
            await peer.wait_until(peer.all_answered)
        _assert_nothing_refused(peer)
    assert unknown_vendor["result"]["status"] == "UnknownVendorId"
    assert unknown_message["result"]["status"] == "UnknownMessageId"
    assert (ping["result"]["status"], ping["result"]["data"]) == ("Accepted", data)
    assert (echoed.status, echoed.data) == (DataTransferStatus.ACCEPTED, data)
    assert refused.status is DataTransferStatus.UNKNOWN_VENDOR_ID
    sent = peer.received_calls("DataTransfer")
    assert [(d["vendorId"], d.get("messageId")) for d in sent] == [
        (PEER_VENDOR_ID, "Echo"),
        ("com.nobody", None),
    ]


EXPIRES_IN_S = 2


def _statuses(peer: Peer, v16: bool, evse_id: int) -> list[str]:
    return [
        s["status"] if v16 else s["connectorStatus"]
        for s in peer.received_calls("StatusNotification")
        if s["connectorId" if v16 else "evseId"] == evse_id
    ]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_cancel_reservation_frees_the_evse(tmp_path: Path, version: str) -> None:
    """H02 / 1.6 5.1: ReserveNow on EVSE 2 makes it Reserved; CancelReservation of that id is Accepted
    and EVSE 2 reports Available again, so another token starts a session there; cancelling the same id
    again is Rejected (no such reservation)."""
    v16 = version == "1.6"
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer(version, "driven") as (peer, port),
            open_station(_config(tmp_path, version, port)) as station,
        ):
            await accepted_and_reported(station, peer)
            reserve = await _reserve_evse_2(peer, v16, 41, expiry)
            await peer.wait_until(lambda: _statuses(peer, v16, 2)[-1] == "Reserved")
            cancel = await peer.call("CancelReservation", reservation_id=41)
            await peer.wait_until(lambda: _statuses(peer, v16, 2)[-1] == "Available")
            assert station.evses[2].status() is ConnectorStatus.AVAILABLE
            again = await peer.call("CancelReservation", reservation_id=41)
            await _session(station, peer, v16, 2, "STRANGER")
            await station.outbox.wait_empty()
            await peer.wait_until(peer.all_answered)
        _assert_nothing_refused(peer)
    assert reserve["result"]["status"] == "Accepted"
    assert cancel["result"]["status"] == "Accepted"
    assert again["result"]["status"] == "Rejected"
    (started,) = _starts(peer, v16)
    if v16:
        assert (started["connectorId"], started["idTag"]) == (2, "STRANGER")
        assert "reservationId" not in started
    else:
        assert (started["evse"]["id"], started["idToken"]["idToken"]) == (2, "STRANGER")
        assert "reservationId" not in started
        # A cancelled reservation is not Expired or Removed: no ReservationStatusUpdate.
        assert peer.received_calls("ReservationStatusUpdate") == []


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_reservation_expires_on_time(tmp_path: Path, version: str) -> None:
    """H04.FR.01 / H04.FR.02 / 1.6 5.13: a reservation of EVSE 2 that expires in two seconds makes it
    Reserved, then Available again at its expiry; 2.0.1 tells the CSMS with ReservationStatusUpdate
    Expired (validated by the package)."""
    v16 = version == "1.6"
    expiry = (datetime.now(UTC) + timedelta(seconds=EXPIRES_IN_S)).isoformat()
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer(version, "driven") as (peer, port),
            open_station(_config(tmp_path, version, port)) as station,
        ):
            await accepted_and_reported(station, peer)
            reserve = await _reserve_evse_2(peer, v16, 42, expiry)
            await peer.wait_until(lambda: _statuses(peer, v16, 2)[-1] == "Reserved")
            await peer.wait_until(lambda: _statuses(peer, v16, 2)[-1] == "Available")
            freed_at = datetime.now(UTC)
            if not v16:
                await peer.wait_until(lambda: peer.received_calls("ReservationStatusUpdate"))
            await peer.wait_until(peer.all_answered)
            # Cancelling what expired: there is no such reservation any more.
            cancel = await peer.call("CancelReservation", reservation_id=42)
        _assert_nothing_refused(peer)
    assert reserve["result"]["status"] == "Accepted"
    assert freed_at >= datetime.fromisoformat(expiry)
    assert cancel["result"]["status"] == "Rejected"
    if not v16:
        (update,) = peer.received_calls("ReservationStatusUpdate")
        assert update == {"reservationId": 42, "reservationUpdateStatus": "Expired"}


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_remote_stop_of_the_running_transaction(tmp_path: Path, version: str) -> None:
    """1.6 5.12 / 2.0.1 F03: the CSMS stops the transaction running on EVSE 1 by its id: Accepted, and
    it ends with reason Remote. 2.0.1 E14 around it: GetTransactionStatus of the running one is ongoing
    with nothing queued, of the ended one not ongoing, of an unknown id neither; without an id, nothing
    queued."""
    v16 = version == "1.6"
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer(version, "driven") as (peer, port),
            open_station(_config(tmp_path, version, port)) as station,
        ):
            await accepted_and_reported(station, peer)
            station.sims[1].controller.plug_in()
            assert await station.evses.present_token("TAG-1", "ISO14443", evse_id=1) == 1
            await peer.wait_until(lambda: _starts(peer, v16))
            status: dict[str, dict[str, Any]] = {}
            if v16:
                await station.session.blocks.transactions.ids.wait_known(1)
                stop = await peer.call("RemoteStopTransaction", transaction_id=1001)
            else:
                tx_id = _starts(peer, v16)[0]["transactionInfo"]["transactionId"]
                await station.outbox.wait_empty()
                status["running"] = await peer.call("GetTransactionStatus", transaction_id=tx_id)
                stop = await peer.call("RequestStopTransaction", transaction_id=tx_id)
            await peer.wait_until(lambda: _ends(peer, v16))
            await station.outbox.wait_empty()
            if not v16:
                status["ended"] = await peer.call("GetTransactionStatus", transaction_id=tx_id)
                status["unknown"] = await peer.call("GetTransactionStatus", transaction_id="no-such-tx")
                status["any"] = await peer.call("GetTransactionStatus")
            await peer.wait_until(peer.all_answered)
            assert station.transaction_id(1) is None
        _assert_nothing_refused(peer)
    assert stop["result"]["status"] == "Accepted"
    (ended,) = _ends(peer, v16)
    if v16:
        assert (ended["transactionId"], ended["reason"]) == (1001, "Remote")
        return
    assert ended["transactionInfo"]["stoppedReason"] == "Remote"
    assert ended["triggerReason"] == "RemoteStop"

    def answer(key: str) -> tuple[object, object]:
        result = status[key]["result"]
        return result.get("ongoing_indicator"), result["messages_in_queue"]

    assert answer("running") == (True, False)
    assert answer("ended") == (False, False)
    assert answer("unknown") == (False, False)
    assert answer("any") == (None, False)


async def test_interop_b09_set_network_profile(tmp_path: Path) -> None:
    """B09 against the `ocpp` package: a usable profile in a slot NetworkConfigurationPriority lists is
    Accepted and stored; one for a slot not listed is Rejected InvalidConfSlot (B09.FR.05), one with
    an OCPP 1.6 endpoint Rejected InvalidNetworkConf (B09.FR.02); neither is stored."""
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer("2.0.1", "driven") as (peer, port),
            open_station(_config(tmp_path, "2.0.1", port)) as station,
        ):
            await accepted_and_reported(station, peer)
            definition = station.session.device_model.definitions[NETWORK_CONFIGURATION_PRIORITY]
            slots = [int(slot) for slot in definition.values_list or ()]
            assert slots, definition
            profile = {
                "ocpp_version": "OCPP20",
                "ocpp_transport": "JSON",
                "ocpp_csms_url": "ws://backup.example:9000/ocpp",
                "message_timeout": 30,
                "security_profile": 0,
                "ocpp_interface": "Wired0",
            }
            accepted = await peer.call(
                "SetNetworkProfile", configuration_slot=slots[-1], connection_data=profile
            )
            bad_slot = await peer.call(
                "SetNetworkProfile", configuration_slot=max(slots) + 1, connection_data=profile
            )
            bad_profile = await peer.call(
                "SetNetworkProfile",
                configuration_slot=slots[0],
                connection_data={**profile, "ocpp_version": "OCPP15"},
            )
            stored = await station.session.blocks.provisioning.network_profiles()
            await peer.wait_until(peer.all_answered)
        _assert_nothing_refused(peer)
    assert accepted["result"]["status"] == "Accepted"
    assert (bad_slot["result"]["status"], bad_slot["result"]["status_info"]["reason_code"]) == (
        "Rejected",
        "InvalidConfSlot",
    )
    assert (bad_profile["result"]["status"], bad_profile["result"]["status_info"]["reason_code"]) == (
        "Rejected",
        "InvalidNetworkConf",
    )
    (only,) = stored
    assert (only.slot, only.connection_data["ocppCsmsUrl"]) == (slots[-1], "ws://backup.example:9000/ocpp")

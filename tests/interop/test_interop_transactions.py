"""Interop, transactions: sessions under three TxStartPoint / TxStopPoint pairs (2.0.1 E01-E03), and an
offline session delivered after the reconnect (2.0.1 offline=true; 1.6 every message under the CSMS's
transactionId), each frame validated by the independent `ocpp` package's CSMS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from test_interop_ocpp_package import Peer, _config, run_peer

from evstation.runtime.device_model import TX_START_POINT, TX_STOP_POINT
from evstation.runtime.station import Station, open_station

TIMEOUT_S = 40.0


def _evse1(peer: Peer) -> list[dict[str, Any]]:
    return [e for e in peer.received_calls("TransactionEvent") if e.get("evse", {}).get("id", 1) == 1]


def _by_tx(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        out.setdefault(event["transactionInfo"]["transactionId"], []).append(event)
    return out


def _clean(peer: Peer) -> None:
    refused_by_peer, refused_by_us = peer.call_errors()
    assert refused_by_peer == [], f"the ocpp package refused our payloads: {refused_by_peer}"
    assert refused_by_us == []


async def _ended(peer: Peer, count: int) -> None:
    await peer.wait_until(lambda: sum(e["eventType"] == "Ended" for e in _evse1(peer)) >= count)


async def _token(station: Station) -> None:
    assert await station.evses.present_token("TAG-1", "ISO14443", evse_id=1) == 1


async def test_interop_e01_e03_three_start_and_stop_point_pairs(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer("2.0.1") as (peer, port),
            open_station(_config(tmp_path, "2.0.1", port)) as station,
        ):
            dm = station.session.device_model
            board = station.sims[1].controller
            await peer.wait_every_evse_reported()

            # 1. EVConnected / EVConnected: the plug starts it, the token follows in an Updated event.
            await dm.set(TX_START_POINT, "EVConnected")
            await dm.set(TX_STOP_POINT, "EVConnected")
            board.plug_in()
            await peer.wait_until(lambda: any(e["eventType"] == "Started" for e in _evse1(peer)))
            await _token(station)
            await peer.wait_until(lambda: any(e["triggerReason"] == "Authorized" for e in _evse1(peer)))
            board.unplug()
            await _ended(peer, 1)

            # 2. Authorized / EnergyTransfer: the token starts it; the EV stopping its draw ends it.
            await dm.set(TX_START_POINT, "Authorized")
            await dm.set(TX_STOP_POINT, "EnergyTransfer")
            board.set_ev(wants_energy=True)
            await _token(station)
            await peer.wait_until(lambda: sum(e["eventType"] == "Started" for e in _evse1(peer)) >= 2)
            board.plug_in()
            await peer.wait_until(lambda: station.evses[1].phase.value == "Charging")
            board.set_ev(wants_energy=False)
            await _ended(peer, 2)
            board.unplug()

            # 3. EnergyTransfer / Authorized: energy flowing starts it; the token again (local stop) ends it.
            await dm.set(TX_START_POINT, "EnergyTransfer")
            await dm.set(TX_STOP_POINT, "Authorized")
            board.set_ev(wants_energy=True)
            await trio.sleep(1.5)  # the unplug above is fully processed
            board.plug_in()
            await _token(station)
            await peer.wait_until(lambda: sum(e["eventType"] == "Started" for e in _evse1(peer)) >= 3)
            await _token(station)
            await _ended(peer, 3)
            board.unplug()
            await station.outbox.wait_empty()
            await peer.wait_until(peer.all_answered)
        _clean(peer)
    transactions = list(_by_tx(_evse1(peer)).values())
    assert len(transactions) == 3
    for events in transactions:
        assert [e["seqNo"] for e in events] == list(range(len(events)))
        assert events[0]["eventType"] == "Started" and events[-1]["eventType"] == "Ended"
    first, second, third = transactions
    assert first[0]["triggerReason"] == "CablePluggedIn" and "idToken" not in first[0]
    assert first[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert first[-1]["triggerReason"] == "EVCommunicationLost"
    assert second[0]["triggerReason"] == "Authorized"
    assert second[-1]["transactionInfo"]["stoppedReason"] == "StoppedByEV"
    assert third[0]["triggerReason"] == "ChargingStateChanged"
    assert (third[-1]["transactionInfo"]["stoppedReason"], third[-1]["triggerReason"]) == (
        "Local",
        "StopAuthorized",
    )


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_offline_session_is_delivered_after_the_reconnect(tmp_path: Path, version: str) -> None:
    """The network drops, a whole session runs offline (authorized locally), the network returns: every
    message reaches the CSMS, 2.0.1 marked offline, 1.6 all under the transactionId the CSMS gave."""
    v16 = version == "1.6"
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer(version) as (peer, port),
            open_station(_config(tmp_path, version, port)) as station,
        ):
            await peer.wait_every_evse_reported()
            await peer.wait_until(lambda: len(peer.peer_calls()) >= 2)
            station.set_network(False)
            await trio.sleep(0.5)
            assert not station.session.uplink.online
            board = station.sims[1].controller
            board.plug_in()
            # Offline authorization is the authorization block's; here the token is accepted locally.
            assert await station.evses[1].authorize_remote("TAG-1", "ISO14443")
            await trio.sleep(3)
            board.unplug()
            await station.session.blocks.transactions.ids.wait_none(frozenset({1}))
            assert await station.outbox.depth() >= 2
            station.set_network(True)
            await station.outbox.wait_empty()
            await peer.wait_until(peer.all_answered)
        _clean(peer)
    if v16:
        (started,) = [s for s in peer.received_calls("StartTransaction") if s["connectorId"] == 1]
        (stopped,) = peer.received_calls("StopTransaction")
        csms_ids = {1001, 1002}  # the peer's ids (its remote start on connector 2 may take one)
        values = [m for m in peer.received_calls("MeterValues") if m["connectorId"] == 1]
        ids = {m["transactionId"] for m in values if "transactionId" in m} | {stopped["transactionId"]}
        assert len(ids) == 1 and ids <= csms_ids
        assert stopped["meterStop"] >= started["meterStart"]
    else:
        (events,) = _by_tx([e for e in _evse1(peer) if e["evse"]["id"] == 1]).values()
        assert [e["seqNo"] for e in events] == list(range(len(events)))
        assert all(e.get("offline") is True for e in events)
        assert events[-1]["eventType"] == "Ended"


async def test_interop_free_vend_no_authorization_token_passes_the_csms_schema(tmp_path: Path) -> None:
    """AuthCtrlr.Enabled set false by the CSMS (SetVariables, Accepted): the plug alone starts a
    transaction whose Started event carries idToken "" of type NoAuthorization, no Authorize is sent,
    the unplug ends it, and the `ocpp` package's CSMS validates every frame (an empty idToken is valid
    in the 2.0.1 schema: no minimum length)."""
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer("2.0.1", "driven") as (peer, port),
            open_station(_config(tmp_path, "2.0.1", port)) as station,
        ):
            await peer.wait_every_evse_reported()
            enabled = {
                "component": {"name": "AuthCtrlr"},
                "variable": {"name": "Enabled"},
                "attributeValue": "false",
            }
            answer = await peer.call("SetVariables", set_variable_data=[enabled])
            assert answer["ok"], answer
            assert answer["result"]["set_variable_result"][0]["attribute_status"] == "Accepted", answer
            board = station.sims[1].controller
            board.plug_in()
            await peer.wait_until(lambda: any(e["eventType"] == "Started" for e in _evse1(peer)))
            board.unplug()
            await _ended(peer, 1)
            await peer.wait_until(peer.all_answered)
        _clean(peer)
    started = next(e for e in _evse1(peer) if e["eventType"] == "Started")
    assert started["idToken"] == {"idToken": "", "type": "NoAuthorization"}
    assert _evse1(peer)[-1]["transactionInfo"]["stoppedReason"] == "EVDisconnected"
    assert peer.received_calls("Authorize") == []

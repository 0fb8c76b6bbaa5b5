"""Interop, offline authorization end to end: with the network down a token read at the EVSE is
accepted locally — from the local list with LocalAuthorizeOffline, or unknown with
OfflineTxForUnknownIdEnabled (1.6 AllowOfflineTxForUnknownId) — the whole session runs offline, and
after the reconnect the `ocpp` package's CSMS receives all of it: 2.0.1 every event offline=true with
contiguous seqNos, 1.6 every message after StartTransaction under the transactionId the CSMS gave."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from test_interop_ocpp_package import Peer, _config, run_peer

from evstation.runtime.device_model import (
    LOCAL_AUTHORIZE_OFFLINE,
    OFFLINE_TX_FOR_UNKNOWN_ID,
    TX_UPDATED_INTERVAL,
)
from evstation.runtime.evse import Authorized
from evstation.runtime.station import open_station

TIMEOUT_S = 40.0
CASES = [
    pytest.param(version, mode, id=f"{version}-{mode}")
    for version in ("1.6", "2.0.1")
    for mode in ("local-list", "unknown-id")
]


def _clean(peer: Peer) -> None:
    refused_by_peer, refused_by_us = peer.call_errors()
    assert refused_by_peer == [], f"the ocpp package refused our payloads: {refused_by_peer}"
    assert refused_by_us == []


@pytest.mark.parametrize(("version", "mode"), CASES)
async def test_interop_offline_authorized_session_is_delivered_after_the_reconnect(
    tmp_path: Path, version: str, mode: str
) -> None:
    v16 = version == "1.6"
    token = "LIST-1" if mode == "local-list" else "STRANGER-9"
    setting = LOCAL_AUTHORIZE_OFFLINE if mode == "local-list" else OFFLINE_TX_FOR_UNKNOWN_ID
    with trio.fail_after(TIMEOUT_S):
        # "local-list": the peer sends SendLocalList (LIST-1 Accepted) once the station is up;
        # "driven": it sends nothing of its own.
        async with (
            run_peer(version, "local-list" if mode == "local-list" else "driven") as (peer, port),
            open_station(_config(tmp_path, version, port)) as station,
        ):
            await peer.wait_every_evse_reported()
            if mode == "local-list":
                await peer.wait_until(lambda: len(peer.peer_calls()) >= 2)
            await peer.wait_until(peer.all_answered)
            dm = station.session.device_model
            assert (await dm.set(setting, "true")).applies
            assert (await dm.set(TX_UPDATED_INTERVAL, "1")).applies
            board = station.sims[1].controller
            with station.evses.subscribe() as events:
                station.set_network(False)
                await trio.sleep(0.5)
                assert not station.session.uplink.online
                board.plug_in()
                assert await station.evses.present_token(token, "ISO14443", evse_id=1) == 1
                with trio.move_on_after(5):
                    async for event in events:
                        if isinstance(event, Authorized):
                            break
                    else:
                        raise AssertionError("no Authorized event")
            assert station.evses[1].session_token() == token
            await trio.sleep(3)
            board.unplug()
            await station.session.blocks.transactions.ids.wait_none(frozenset({1}))
            assert await station.outbox.depth() >= 2
            station.set_network(True)
            await station.outbox.wait_empty()
            await peer.wait_until(peer.all_answered)
        _clean(peer)
    if v16:
        (started,) = peer.received_calls("StartTransaction")
        (stopped,) = peer.received_calls("StopTransaction")
        assert started["idTag"] == token
        values: list[dict[str, Any]] = peer.received_calls("MeterValues")
        assert values, "sampled values were taken during the offline session"
        ids = {m.get("transactionId") for m in values} | {stopped["transactionId"]}
        assert ids == {1001}  # the peer's first (and only) transactionId, on every message
        assert stopped["meterStop"] >= started["meterStart"]
    else:
        events201 = peer.received_calls("TransactionEvent")
        assert len({e["transactionInfo"]["transactionId"] for e in events201}) == 1
        assert [e["seqNo"] for e in events201] == list(range(len(events201)))
        assert events201[0]["eventType"] == "Started" and events201[-1]["eventType"] == "Ended"
        assert events201[0]["idToken"]["idToken"] == token
        assert any(e["triggerReason"] == "MeterValuePeriodic" for e in events201)
        assert all(e.get("offline") is True for e in events201)

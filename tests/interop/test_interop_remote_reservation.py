"""Interop, both versions: remote start before plug-in, UnlockConnector with a running transaction and a
reservation used by its token and refused to another, against the `ocpp`-package CSMS (driven mode)
over real websockets, with the EV and the tokens driven through the station's control API."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
from test_interop_ocpp_package import TIMEOUT_S, Peer, _config, run_peer

from evstation.runtime.station import open_station


class Control:
    """A control-API client on the station's Unix socket (newline-delimited JSON)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = b""
        self._ids = 0

    async def request(self, op: str, **args: Any) -> dict[str, Any]:
        self._ids += 1
        await self._stream.send_all((json.dumps({"id": self._ids, "op": op, **args}) + "\n").encode())
        while True:
            while b"\n" not in self._buffer:
                chunk = await self._stream.receive_some()
                assert chunk, "control connection closed"
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\n", 1)
            reply: dict[str, Any] = json.loads(line)
            if reply.get("id") == self._ids:
                return reply


def _starts(peer: Peer, v16: bool) -> list[dict[str, Any]]:
    if v16:
        return peer.received_calls("StartTransaction")
    return [e for e in peer.received_calls("TransactionEvent") if e["eventType"] == "Started"]


def _ends(peer: Peer, v16: bool) -> list[dict[str, Any]]:
    if v16:
        return peer.received_calls("StopTransaction")
    return [e for e in peer.received_calls("TransactionEvent") if e["eventType"] == "Ended"]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_remote_start_unlock_and_reservation(tmp_path: Path, version: str) -> None:
    v16 = version == "1.6"
    expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    with trio.fail_after(TIMEOUT_S):
        async with run_peer(version, "driven") as (peer, port):
            config = _config(tmp_path, version, port)
            async with open_station(config) as station:
                assert config.control is not None
                stream = await trio.open_unix_socket(str(config.control.socket_path))
                async with stream:
                    control = Control(stream)
                    await peer.wait_every_evse_reported()

                    # Remote start before plug-in (1.6 5.11; 2.0.1 F01), then the EV arrives.
                    if v16:
                        remote = await peer.call("RemoteStartTransaction", id_tag="REMOTE-1", connector_id=1)
                    else:
                        remote = await peer.call(
                            "RequestStartTransaction",
                            id_token={"idToken": "REMOTE-1", "type": "Central"},
                            remote_start_id=7,
                            evse_id=1,
                        )
                    assert (await control.request("plug_in", evse=1))["ok"]
                    await peer.wait_until(lambda: _starts(peer, v16))

                    # UnlockConnector with the transaction running.
                    if v16:
                        unlock = await peer.call("UnlockConnector", connector_id=1)
                        await peer.wait_until(lambda: _ends(peer, v16))
                    else:
                        unlock = await peer.call("UnlockConnector", evse_id=1, connector_id=1)
                        stop_id = station.transaction_id(1)
                        await peer.call("RequestStopTransaction", transaction_id=stop_id)
                        await peer.wait_until(lambda: _ends(peer, v16))

                    # A reservation of EVSE 2: another token is refused there, the reserving one uses it.
                    if v16:
                        reserve = await peer.call(
                            "ReserveNow",
                            connector_id=2,
                            expiry_date=expiry,
                            id_tag="OWNER",
                            reservation_id=31,
                        )
                    else:
                        reserve = await peer.call(
                            "ReserveNow",
                            id=31,
                            expiry_date_time=expiry,
                            id_token={"idToken": "OWNER", "type": "ISO14443"},
                            evse_id=2,
                        )
                    assert (await control.request("plug_in", evse=2))["ok"]
                    assert (await control.request("present_id_token", id_token="STRANGER", evse=2))["ok"]
                    await peer.wait_until(lambda: len(peer.received_calls("Authorize")) >= 1)
                    stranger_refused = await _no_start_on_evse_2(station, peer, v16)
                    assert (await control.request("present_id_token", id_token="OWNER", evse=2))["ok"]
                    await peer.wait_until(lambda: len(_starts(peer, v16)) >= 2)
                    await station.outbox.wait_empty()
                    await peer.wait_until(peer.all_answered)
            refused_by_peer, refused_by_us = peer.call_errors()
    assert refused_by_peer == [], f"the ocpp package refused our payloads: {refused_by_peer}"
    assert refused_by_us == [], f"we refused the peer's calls: {refused_by_us}"
    for answer in (remote, unlock, reserve):
        assert answer["ok"], f"our answer failed the ocpp package's validation: {answer}"
    assert remote["result"]["status"] == "Accepted"
    assert reserve["result"]["status"] == "Accepted"
    assert stranger_refused
    first, second = _starts(peer, v16)
    (ended,) = _ends(peer, v16)
    if v16:
        assert (first["connectorId"], first["idTag"]) == (1, "REMOTE-1")
        assert unlock["result"]["status"] == "Unlocked"
        assert ended["reason"] == "UnlockCommand"
        assert (second["connectorId"], second["idTag"], second["reservationId"]) == (2, "OWNER", 31)
    else:
        assert (first["triggerReason"], first["transactionInfo"]["remoteStartId"]) == ("CablePluggedIn", 7)
        assert unlock["result"]["status"] == "OngoingAuthorizedTransaction"
        assert ended["transactionInfo"]["stoppedReason"] == "Remote"
        assert (second["evse"]["id"], second["idToken"]["idToken"], second["reservationId"]) == (
            2,
            "OWNER",
            31,
        )
    statuses = [
        s.get("status", s.get("connectorStatus"))
        for s in peer.received_calls("StatusNotification")
        if s.get("connectorId" if v16 else "evseId") == 2
    ]
    assert "Reserved" in statuses, peer.received_calls("StatusNotification")


async def _no_start_on_evse_2(station: Any, peer: Peer, v16: bool) -> bool:
    """The stranger's Authorize was answered Accepted, yet no transaction starts on the reserved EVSE:
    give the station a moment (real time) to act on the answer, then look."""
    await peer.wait_until(peer.all_answered)
    await trio.sleep(0.3)
    return station.transaction_id(2) is None and len(_starts(peer, v16)) == 1

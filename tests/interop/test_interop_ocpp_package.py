"""Interop: the whole station against a CSMS built on the independent `ocpp` package, 1.6 and 2.0.1.

The peer validates every frame against the official schemas; a CALLERROR from it means our payload
was refused. It never replaces the test CSMS: it only proves the wire format agrees with another
implementation.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.station import open_station

PEER = Path(__file__).with_name("ocpp_peer.py")
TIMEOUT_S = 20.0


def _config(tmp_path: Path, version: str, port: int) -> StationConfig:
    connector = {"id": 1, "type": "cType2", "phases": 3, "max_current_a": 32}
    evse = {"connector": [connector], "controller": {"driver": "sim"}, "meter": {"driver": "sim"}}
    return parse_config(
        {
            "station": {
                "id": "INTEROP-1",
                "vendor": "evstation",
                "model": "interop",
                "ocpp_version": version,
                "data_dir": str(tmp_path / "data"),
            },
            "csms": {
                "endpoints": [{"url": f"ws://127.0.0.1:{port}/ocpp", "security_profile": 0}],
                "retry_backoff_wait_minimum_s": 0.1,
                "retry_backoff_random_range_s": 0,
                # A MeterValues / TransactionEvent Updated within a second of the start.
                "meter_value_sample_interval_s": 0.5,
            },
            "evse": [{"id": 1, **evse}, {"id": 2, **evse}],
            "control": {"socket_path": str(tmp_path / "c.sock")},
        },
        base_dir=tmp_path,
    )


class Peer:
    """The ocpp_peer subprocess's stdout, as parsed JSON events."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._changed = trio.Event()

    async def pump(self) -> None:
        assert self.process.stdout is not None
        async for chunk in self.process.stdout:
            self._buffer += chunk
            *lines, self._buffer = self._buffer.split(b"\n")
            for line in lines:
                if line.strip():
                    self.events.append(json.loads(line))
            self._changed.set()
            self._changed = trio.Event()

    def frames(self, direction: str) -> list[list[Any]]:
        return [e["frame"] for e in self.events if e["event"] == direction]

    def received_actions(self) -> list[str]:
        return [f[2] for f in self.frames("recv") if f[0] == 2]

    def received_calls(self, action: str) -> list[dict[str, Any]]:
        return [f[3] for f in self.frames("recv") if f[0] == 2 and f[2] == action]

    def peer_calls(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == "peer_call"]

    def call_errors(self) -> tuple[list[list[Any]], list[list[Any]]]:
        """(CALLERRORs the peer sent us, CALLERRORs we sent the peer)."""
        return (
            [f for f in self.frames("sent") if f[0] == 4],
            [f for f in self.frames("recv") if f[0] == 4],
        )

    def all_answered(self) -> bool:
        answered = {f[1] for f in self.frames("sent") if f[0] in (3, 4)}
        return all(f[1] in answered for f in self.frames("recv") if f[0] == 2)

    async def send_call(self, action: str, **payload: Any) -> dict[str, Any]:
        """Scripted peer: send one CALL (fields in the ocpp package's snake_case) and wait for its
        `peer_call` report."""
        assert self.process.stdin is not None
        done = len(self.peer_calls())
        await self.process.stdin.send_all(
            (json.dumps({"action": action, "payload": payload}) + "\n").encode()
        )
        await self.wait_until(lambda: len(self.peer_calls()) > done)
        return self.peer_calls()[done]

    async def wait_until(self, predicate: Any) -> None:
        while not predicate():
            await self._changed.wait()


@asynccontextmanager
async def run_peer(version: str, *, scripted: bool = False) -> AsyncIterator[tuple[Peer, int]]:
    """The peer subprocess; `scripted`: it sends only the CALLs written to its stdin (`Peer.send_call`)."""
    command = [sys.executable, str(PEER), version, *(["scripted"] if scripted else [])]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            functools.partial(
                trio.run_process,
                command,
                stdout=subprocess.PIPE,
                stdin=subprocess.PIPE if scripted else None,
                check=False,
            )
        )
        peer = Peer(process)
        nursery.start_soon(peer.pump)
        try:
            await peer.wait_until(lambda: any(e["event"] == "listening" for e in peer.events))
            port = next(e["port"] for e in peer.events if e["event"] == "listening")
            yield peer, port
        finally:
            process.kill()


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_boot_heartbeat_status_validated_by_ocpp_package(tmp_path: Path, version: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with run_peer(version) as (peer, port):
            config = _config(tmp_path, version, port)
            async with open_station(config) as station:
                connectors = 2

                def done() -> bool:
                    actions = peer.received_actions()
                    return (
                        actions.count("Heartbeat") >= 1 and actions.count("StatusNotification") >= connectors
                    )

                await peer.wait_until(done)
                assert station.session.uplink.online
                # Every CALL the peer received is answered (result or error) before we judge.
                await peer.wait_until(peer.all_answered)
            actions = peer.received_actions()
            boot_ids = [f[1] for f in peer.frames("recv") if f[0] == 2 and f[2] == "BootNotification"]
            call_errors = [f for f in peer.frames("sent") if f[0] == 4]
            assert call_errors == [], f"the ocpp package refused our payloads: {call_errors}"
            assert boot_ids, actions
            boot_results = [f for f in peer.frames("sent") if f[0] == 3 and f[1] == boot_ids[0]]
            assert boot_results and boot_results[0][2]["status"] == "Accepted"
            assert "Heartbeat" in actions
            statuses = [f[3] for f in peer.frames("recv") if f[0] == 2 and f[2] == "StatusNotification"]
            if version == "1.6":
                assert {s["connectorId"] for s in statuses} >= {1, 2}
            else:
                assert {(s["evseId"], s["connectorId"]) for s in statuses} >= {(1, 1), (2, 1)}


def _events(peer: Peer, event_type: str) -> list[dict[str, Any]]:
    return [p for p in peer.received_calls("TransactionEvent") if p["eventType"] == event_type]


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_charging_session_and_remote_calls_validated_by_ocpp_package(
    tmp_path: Path, version: str
) -> None:
    """A whole local charging session on EVSE 1 (Authorize, start, meter values, stop) and the peer's
    own remote start / stop, every payload validated by the `ocpp` package in both directions."""
    v16 = version == "1.6"
    with trio.fail_after(TIMEOUT_S):
        async with run_peer(version) as (peer, port):
            async with open_station(_config(tmp_path, version, port)) as station:
                # The peer's own CALLs (remote start on connector/EVSE 2, remote stop of nothing).
                await peer.wait_until(lambda: len(peer.peer_calls()) >= 2)
                board = station.sims[1].controller
                board.plug_in()
                assert await station.evses.present_token("TAG-1", "ISO14443", evse_id=1) == 1
                if v16:
                    await peer.wait_until(lambda: peer.received_calls("MeterValues"))
                else:
                    # A periodic sample, so the package also validates an Updated event's meterValue.
                    await peer.wait_until(
                        lambda: any(
                            e["triggerReason"] == "MeterValuePeriodic" for e in _events(peer, "Updated")
                        )
                    )
                board.set_ev(wants_energy=False)
                board.unplug()
                if v16:
                    await peer.wait_until(lambda: peer.received_calls("StopTransaction"))
                else:
                    await peer.wait_until(lambda: _events(peer, "Ended"))
                await station.outbox.wait_empty()
                await peer.wait_until(peer.all_answered)
            refused_by_peer, refused_by_us = peer.call_errors()
            assert refused_by_peer == [], f"the ocpp package refused our payloads: {refused_by_peer}"
            assert refused_by_us == [], f"we refused the peer's calls: {refused_by_us}"

            calls = {c["action"]: c for c in peer.peer_calls()}
            for call in calls.values():
                assert call["ok"], f"our answer failed the ocpp package's validation: {call}"
            start, stop = ("RemoteStart", "RemoteStop") if v16 else ("RequestStart", "RequestStop")
            assert calls[f"{start}Transaction"]["result"]["status"] == "Accepted"
            assert calls[f"{stop}Transaction"]["result"]["status"] == "Rejected"

            authorized = peer.received_calls("Authorize")
            if v16:
                assert [a["idTag"] for a in authorized] == ["TAG-1"]
                (started,) = peer.received_calls("StartTransaction")
                assert (started["connectorId"], started["idTag"]) == (1, "TAG-1")
                # The CSMS's id replaced the local placeholder in everything after the start.
                tx_ids = {m["transactionId"] for m in peer.received_calls("MeterValues")}
                (stopped,) = peer.received_calls("StopTransaction")
                assert tx_ids | {stopped["transactionId"]} == {1001}
                assert stopped["reason"] == "EVDisconnected"
            else:
                assert [a["idToken"]["idToken"] for a in authorized] == ["TAG-1"]
                (started,) = _events(peer, "Started")
                (ended,) = _events(peer, "Ended")
                assert started["evse"]["id"] == 1
                assert (started["triggerReason"], started["idToken"]["idToken"]) == ("Authorized", "TAG-1")
                events = peer.received_calls("TransactionEvent")
                assert len({e["transactionInfo"]["transactionId"] for e in events}) == 1
                seq_nos = [e["seqNo"] for e in events]
                assert seq_nos == list(range(len(seq_nos)))
                assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"

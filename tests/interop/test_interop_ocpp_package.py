"""Interop: the whole station against a CSMS built on the independent `ocpp` package, 1.6 and 2.0.1.

The peer validates every frame against the official schemas; a CALLERROR from it means our payload
was refused. It never replaces the test CSMS: it only proves the wire format agrees with another
implementation.
"""

from __future__ import annotations

import functools
import itertools
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
from evstation.runtime.device_model import LOCAL_AUTHORIZE_OFFLINE
from evstation.runtime.evse import Authorized
from evstation.runtime.lifecycle import StationOutcome
from evstation.runtime.station import Station, open_station

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
        self._call_ids = itertools.count(1)

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

    async def wait_until(self, predicate: Any) -> None:
        while not predicate():
            await self._changed.wait()

    async def wait_every_evse_reported(self, evse_ids: tuple[int, ...] = (1, 2)) -> None:
        """Until a StatusNotification of each of `evse_ids` (1.6: connector ids) arrived. Counting them
        is not enough: 1.6 reports connector 0 too, so two notifications may leave connector 2 out."""

        def reported() -> set[int]:
            calls = self.received_calls("StatusNotification")
            return {c["evseId"] if "evseId" in c else c["connectorId"] for c in calls}

        await self.wait_until(lambda: set(evse_ids) <= reported())

    async def call(self, action: str, **args: Any) -> dict[str, Any]:
        """A driven peer's CALL to the station (args: the `ocpp` package's snake_case fields); returns
        the answer as the peer judged it: `ok`, and `result` (snake_case) or `error`."""
        assert self.process.stdin is not None, 'run_peer(version, "driven")'
        call_id = next(self._call_ids)
        command = {"id": call_id, "action": action, "args": args}
        await self.process.stdin.send_all(json.dumps(command).encode() + b"\n")

        def answered() -> list[dict[str, Any]]:
            return [c for c in self.peer_calls() if c.get("id") == call_id]

        await self.wait_until(answered)
        return answered()[0]


@asynccontextmanager
async def run_peer(
    version: str, scenario: str = "remote", *, script: Path = PEER
) -> AsyncIterator[tuple[Peer, int]]:
    """The peer subprocess `script` (ocpp_peer.py or a peer built on it) running `scenario` (ocpp_peer:
    "remote", "local-list", or "driven": it sends only the CALLs the test asks for with `Peer.call`),
    once it listens; the port it listens on."""
    driven = scenario == "driven"
    command = [sys.executable, str(script), version, scenario]
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            functools.partial(
                trio.run_process,
                command,
                stdout=subprocess.PIPE,
                stdin=subprocess.PIPE if driven else None,
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


async def _next_event(events: Any, kind: type, timeout_s: float) -> Any:
    """The next EVSE event of `kind` within `timeout_s`, else None."""
    with trio.move_on_after(timeout_s):
        async for event in events:
            if isinstance(event, kind):
                return event
    return None


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_send_local_list_then_offline_authorization_from_the_list(
    tmp_path: Path, version: str
) -> None:
    """D01/D02 (1.6 5.15/5.10) against the `ocpp` package: its SendLocalList is Accepted and its
    GetLocalListVersion answered 1; then, with the network down and LocalAuthorizeOffline, a listed token
    (presented in another letter case) authorizes from the list and a listed Blocked one does not."""
    with trio.fail_after(TIMEOUT_S):
        async with run_peer(version, "local-list") as (peer, port):
            async with open_station(_config(tmp_path, version, port)) as station:
                await peer.wait_until(lambda: len(peer.peer_calls()) >= 2)
                await peer.wait_until(peer.all_answered)
                decision = await station.session.device_model.set(LOCAL_AUTHORIZE_OFFLINE, "true")
                assert decision.applies
                with station.evses.subscribe() as events:
                    station.set_network(False)
                    assert await station.evses.present_token("list-1", "ISO14443", evse_id=1) == 1
                    authorized = await _next_event(events, Authorized, 5.0)
                    assert await station.evses.present_token("LIST-2", "ISO14443", evse_id=2) == 2
                    refused = await _next_event(events, Authorized, 2.0)
            refused_by_peer, refused_by_us = peer.call_errors()
            assert refused_by_peer == [] and refused_by_us == []
    calls = {c["action"]: c for c in peer.peer_calls()}
    assert calls["SendLocalList"]["ok"] and calls["SendLocalList"]["result"]["status"] == "Accepted"
    version_field = "list_version" if version == "1.6" else "version_number"
    assert calls["GetLocalListVersion"]["ok"] and calls["GetLocalListVersion"]["result"][version_field] == 1
    assert authorized is not None and authorized.evse_id == 1
    assert refused is None
    assert peer.received_calls("Authorize") == []


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_session_token_in_another_case_stops_its_session(tmp_path: Path, version: str) -> None:
    """The card that started the session, read in another letter case (1.6 CiString idTag; 2.0.1
    case-insensitive idToken), stops it: one start, one stop with reason Local, no second session."""
    v16 = version == "1.6"
    with trio.fail_after(TIMEOUT_S):
        async with run_peer(version) as (peer, port):
            async with open_station(_config(tmp_path, version, port)) as station:
                await peer.wait_until(lambda: len(peer.peer_calls()) >= 2)
                station.sims[1].controller.plug_in()
                assert await station.evses.present_token("Card-7", "ISO14443", evse_id=1) == 1
                if v16:
                    await peer.wait_until(lambda: peer.received_calls("StartTransaction"))
                else:
                    await peer.wait_until(lambda: _events(peer, "Started"))
                assert await station.evses.present_token("CARD-7", "ISO14443") == 1
                if v16:
                    await peer.wait_until(lambda: peer.received_calls("StopTransaction"))
                else:
                    await peer.wait_until(lambda: _events(peer, "Ended"))
                await station.outbox.wait_empty()
                await peer.wait_until(peer.all_answered)
            refused_by_peer, refused_by_us = peer.call_errors()
            assert refused_by_peer == [] and refused_by_us == []
    assert [a["idTag" if v16 else "idToken"] for a in peer.received_calls("Authorize")] == (
        ["Card-7"] if v16 else [{"idToken": "Card-7", "type": "ISO14443"}]
    )
    if v16:
        (started,) = peer.received_calls("StartTransaction")
        (stopped,) = peer.received_calls("StopTransaction")
        assert started["idTag"] == "Card-7"
        assert stopped["reason"] == "Local"
    else:
        (started,) = _events(peer, "Started")
        (ended,) = _events(peer, "Ended")
        assert started["idToken"]["idToken"] == "Card-7"
        assert ended["transactionInfo"]["stoppedReason"] == "Local"


def _status_of(version: str, payload: dict[str, Any], evse_id: int) -> str | None:
    """The status a StatusNotification reports for connector 1 of `evse_id` (None: another one)."""
    if version == "1.6":
        return payload["status"] if payload["connectorId"] == evse_id else None
    return payload["connectorStatus"] if (payload["evseId"], payload["connectorId"]) == (evse_id, 1) else None


async def accepted_and_reported(station: Station, peer: Peer) -> None:
    """Until the station is online (Accepted) and the peer has a status of every EVSE."""
    await peer.wait_every_evse_reported()
    await station.session.uplink.wait_online()


async def _charge_on_evse_1(station: Station, peer: Peer, version: str) -> None:
    """Plug in and tap a card on EVSE 1; return once the transaction runs and a periodic meter value
    (so a reading exists) reached the peer."""
    # Once Accepted and every connector reported: an Authorize before that is not sent.
    await accepted_and_reported(station, peer)
    station.sims[1].controller.plug_in()
    assert await station.evses.present_token("TAG-1", "ISO14443", evse_id=1) == 1
    if version == "1.6":
        await peer.wait_until(lambda: peer.received_calls("MeterValues"))
    else:
        await peer.wait_until(
            lambda: any(e["triggerReason"] == "MeterValuePeriodic" for e in _events(peer, "Updated"))
        )


def _assert_nothing_refused(peer: Peer) -> None:
    refused_by_peer, refused_by_us = peer.call_errors()
    assert refused_by_peer == [], f"the ocpp package refused our payloads: {refused_by_peer}"
    assert refused_by_us == [], f"we refused the peer's calls: {refused_by_us}"
    for call in peer.peer_calls():
        assert call["ok"], f"our answer failed the ocpp package's validation: {call}"


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_change_availability_inoperative_during_a_transaction_is_scheduled_then_applied(
    tmp_path: Path, version: str
) -> None:
    """G03 / 1.6 5.2 against the `ocpp` package: Inoperative for EVSE 1 (1.6 connector 1) while it
    charges is answered Scheduled; the EVSE reports Unavailable only after the transaction ended."""
    with trio.fail_after(TIMEOUT_S):
        async with run_peer(version, "driven") as (peer, port):
            async with open_station(_config(tmp_path, version, port)) as station:
                await _charge_on_evse_1(station, peer, version)
                if version == "1.6":
                    args: dict[str, Any] = {"connector_id": 1, "type": "Inoperative"}
                else:
                    args = {"operational_status": "Inoperative", "evse": {"id": 1}}
                answer = await peer.call("ChangeAvailability", **args)
                assert answer["ok"] and answer["result"]["status"] == "Scheduled", answer

                def unavailable() -> bool:
                    return any(
                        _status_of(version, s, 1) == "Unavailable"
                        for s in peer.received_calls("StatusNotification")
                    )

                assert not unavailable() and station.evses[1].available()
                board = station.sims[1].controller
                board.set_ev(wants_energy=False)
                board.unplug()
                await peer.wait_until(unavailable)
                # The end message waits (bounded) for a meter reading taken after the power went off.
                await peer.wait_until(
                    lambda: (
                        peer.received_calls("StopTransaction") if version == "1.6" else _events(peer, "Ended")
                    )
                )
                await station.outbox.wait_empty()
                await peer.wait_until(peer.all_answered)
                assert not station.evses[1].available() and station.evses[2].available()
            _assert_nothing_refused(peer)
            # Applied once the transaction ended (checked above: not before the EV left), and on the
            # wire after the end message (the status sender holds it: docs/session.md, "Status order").
            calls = [f for f in peer.frames("recv") if f[0] == 2]
            end = next(
                i
                for i, f in enumerate(calls)
                if f[2] == "StopTransaction" or (f[2] == "TransactionEvent" and f[3]["eventType"] == "Ended")
            )
            status = next(
                i
                for i, f in enumerate(calls)
                if f[2] == "StatusNotification" and _status_of(version, f[3], 1) == "Unavailable"
            )
            assert end < status, [f[2] for f in calls]
            if version == "1.6":
                (stopped,) = peer.received_calls("StopTransaction")
                assert stopped["reason"] == "EVDisconnected"  # the transaction ended on its own
            else:
                (ended,) = _events(peer, "Ended")
                assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
            # EVSE 2 was never touched.
            assert all(
                _status_of(version, s, 2) != "Unavailable" for s in peer.received_calls("StatusNotification")
            )


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_trigger_then_reset_with_a_running_transaction(tmp_path: Path, version: str) -> None:
    """Against the `ocpp` package, with a transaction running on EVSE 1:
    - 2.0.1 TriggerMessage(MeterValues) -> MeterValues with the AlignedDataCtrlr.Measurands (F06.FR.06);
      TriggerMessage(TransactionEvent) -> Updated / Trigger (F06.FR.07); Reset OnIdle ->
      Scheduled, the transaction goes on until the EV leaves (EVDisconnected), then the station asks
      to stop with boot reason ScheduledReset stored;
    - 1.6 TriggerMessage(MeterValues) -> MeterValues with the transactionId; Reset Soft -> Accepted,
      StopTransaction reason SoftReset, then the station asks to stop."""
    v16 = version == "1.6"
    with trio.fail_after(TIMEOUT_S):
        async with run_peer(version, "driven") as (peer, port):
            async with open_station(_config(tmp_path, version, port)) as station:
                await _charge_on_evse_1(station, peer, version)
                if v16:
                    await station.session.blocks.transactions.ids.wait_known(1)
                    answer = await peer.call(
                        "TriggerMessage", requested_message="MeterValues", connector_id=1
                    )
                    assert answer["ok"] and answer["result"]["status"] == "Accepted", answer

                    def triggered() -> list[dict[str, Any]]:
                        return [
                            m
                            for m in peer.received_calls("MeterValues")
                            if m["meterValue"][0]["sampledValue"][0].get("context") == "Trigger"
                        ]

                    await peer.wait_until(triggered)
                    assert triggered()[0]["transactionId"] == 1001  # the peer's first transaction id
                    answer = await peer.call("Reset", type="Soft")
                    assert answer["ok"] and answer["result"]["status"] == "Accepted", answer
                else:
                    # F06.FR.06: the AlignedDataCtrlr.Measurands, per phase where per phase.
                    measurands = {
                        "component": {"name": "AlignedDataCtrlr"},
                        "variable": {"name": "Measurands"},
                        "attributeValue": "Energy.Active.Import.Register,Current.Import,Voltage",
                    }
                    answer = await peer.call("SetVariables", set_variable_data=[measurands])
                    assert answer["ok"], answer
                    answer = await peer.call(
                        "TriggerMessage", requested_message="MeterValues", evse={"id": 1}
                    )
                    assert answer["ok"] and answer["result"]["status"] == "Accepted", answer
                    await peer.wait_until(lambda: peer.received_calls("MeterValues"))
                    (meter_values,) = peer.received_calls("MeterValues")
                    values = meter_values["meterValue"][0]["sampledValue"]
                    assert meter_values["evseId"] == 1 and {v["context"] for v in values} == {"Trigger"}
                    phases = {v.get("phase") for v in values}
                    assert phases == {None, "L1", "L2", "L3", "L1-N", "L2-N", "L3-N"}
                    answer = await peer.call(
                        "TriggerMessage", requested_message="TransactionEvent", evse={"id": 1}
                    )
                    assert answer["ok"] and answer["result"]["status"] == "Accepted", answer
                    await peer.wait_until(
                        lambda: any(e["triggerReason"] == "Trigger" for e in _events(peer, "Updated"))
                    )
                    answer = await peer.call("Reset", type="OnIdle")
                    assert answer["ok"] and answer["result"]["status"] == "Scheduled", answer
                    with trio.move_on_after(1):  # the transaction goes on: no stop meanwhile
                        await station.stop.wait()
                    assert station.stop.outcome is None and not _events(peer, "Ended")
                    board = station.sims[1].controller
                    board.set_ev(wants_energy=False)
                    board.unplug()
                assert await station.stop.wait() is StationOutcome.RESET
                boot_state = await station.storage.boot_state()
                await peer.wait_until(peer.all_answered)
            _assert_nothing_refused(peer)
            if v16:
                (stopped,) = peer.received_calls("StopTransaction")
                assert (stopped["transactionId"], stopped["reason"]) == (1001, "SoftReset")
            else:
                (ended,) = _events(peer, "Ended")
                assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
                assert boot_state.next_boot_reason == "ScheduledReset"
                trigger = next(e for e in _events(peer, "Updated") if e["triggerReason"] == "Trigger")
                assert trigger["transactionInfo"]["chargingState"] == "Charging"
                events = peer.received_calls("TransactionEvent")
                assert [e["seqNo"] for e in events] == list(range(len(events)))

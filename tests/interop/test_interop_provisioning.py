"""Interop of the provisioning block against the `ocpp`-package CSMS over real websockets: every
NotifyReport of a FullInventory passes the package's schema validation; SetVariables then GetVariables
on the station, an EVSE and a connector; 1.6 GetConfiguration with and without keys, and a
ChangeConfiguration of HeartbeatInterval that the next beats follow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from test_interop_ocpp_package import TIMEOUT_S, Peer, _config, run_peer

from evstation.runtime.station import open_station

PEER = Path(__file__).with_name("ocpp_provisioning_peer.py")


def _calls(peer: Peer) -> dict[str, list[dict[str, Any]]]:
    calls: dict[str, list[dict[str, Any]]] = {}
    for call in peer.peer_calls():
        assert call["ok"], f"our answer failed the ocpp package's validation: {call}"
        calls.setdefault(call["action"], []).append(call["result"])
    return calls


async def test_interop_b07_full_inventory_every_notify_report_passes_the_package_validation(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer("2.0.1", "report", script=PEER) as (peer, port),
            open_station(_config(tmp_path, "2.0.1", port)) as station,
        ):

            def last_page_in() -> bool:
                return any(not p["tbc"] for p in peer.received_calls("NotifyReport"))

            await peer.wait_until(last_page_in)
            await peer.wait_until(peer.all_answered)
            definitions = len(station.session.device_model.definitions)
    refused_by_peer, refused_by_us = peer.call_errors()
    assert refused_by_peer == [], f"the ocpp package refused our NotifyReport pages: {refused_by_peer}"
    assert refused_by_us == []
    assert [r["status"] for r in _calls(peer)["GetBaseReport"]] == ["Accepted"]
    pages = peer.received_calls("NotifyReport")
    assert [p["seqNo"] for p in pages] == list(range(len(pages)))
    assert [p["tbc"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert {p["requestId"] for p in pages} == {42}
    assert sum(len(p["reportData"]) for p in pages) == definitions
    # Each page got a CALLRESULT from the package, i.e. it passed its schema validation.
    page_ids = {f[1] for f in peer.frames("recv") if f[0] == 2 and f[2] == "NotifyReport"}
    assert page_ids <= {f[1] for f in peer.frames("sent") if f[0] == 3}


async def test_interop_b07_a_report_cut_by_the_network_goes_on_after_the_reconnect(tmp_path: Path) -> None:
    """The network drops while the package's CSMS holds back its answer to seqNo 1; after the
    reconnect seqNo 1 comes again and then the rest, every page valid for the package."""
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer("2.0.1", "report-stalled", script=PEER) as (peer, port),
            open_station(_config(tmp_path, "2.0.1", port)) as station,
        ):
            await peer.wait_until(lambda: len(peer.received_calls("NotifyReport")) >= 2)
            station.set_network(False)
            await station.session.uplink.wait_offline()
            station.set_network(True)

            def last_page_in() -> bool:
                return any(not p["tbc"] for p in peer.received_calls("NotifyReport"))

            await peer.wait_until(last_page_in)
            definitions = len(station.session.device_model.definitions)
    refused_by_peer, refused_by_us = peer.call_errors()
    assert refused_by_peer == [] and refused_by_us == []
    pages = peer.received_calls("NotifyReport")
    seq_nos = [p["seqNo"] for p in pages]
    assert seq_nos[:3] == [0, 1, 1] and seq_nos[2:] == list(range(1, len(pages) - 1))
    assert {p["requestId"] for p in pages} == {42} and len({p["generatedAt"] for p in pages}) == 1
    assert sum(len(p["reportData"]) for p in pages[:1] + pages[2:]) == definitions


async def test_interop_b05_b06_set_then_get_variables_on_station_evse_and_connector(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer("2.0.1", "variables", script=PEER) as (peer, port),
            open_station(_config(tmp_path, "2.0.1", port)),
        ):
            await peer.wait_until(lambda: len(peer.peer_calls()) >= 2)
            await peer.wait_until(peer.all_answered)
    assert peer.call_errors() == ([], [])
    calls = _calls(peer)
    (set_result,) = calls["SetVariables"]
    (get_result,) = calls["GetVariables"]
    statuses = [r["attribute_status"] for r in set_result["set_variable_result"]]
    assert statuses == ["Accepted", "Accepted", "Accepted", "Rejected"]
    got = [(r["attribute_status"], r.get("attribute_value")) for r in get_result["get_variable_result"]]
    assert got == [("Accepted", "45"), ("Accepted", "RST"), ("Accepted", "TSR"), ("Accepted", "Available")]
    connector = get_result["get_variable_result"][2]["component"]
    assert connector == {"name": "Connector", "evse": {"id": 2, "connector_id": 1}}


async def test_interop_v16_get_configuration_and_heartbeat_interval_change_on_the_next_beat(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer("1.6", "configuration", script=PEER) as (peer, port),
            open_station(_config(tmp_path, "1.6", port)),
        ):
            await peer.wait_until(lambda: len(peer.peer_calls()) >= 3)
            change_id = next(f[1] for f in peer.frames("sent") if f[0] == 2 and f[2] == "ChangeConfiguration")
            changed_at = next(
                e["t"] for e in peer.events if e["event"] == "recv" and e["frame"][:2] == [3, change_id]
            )

            def beats_after_change() -> list[float]:
                return [
                    e["t"]
                    for e in peer.events
                    if e["event"] == "recv" and e["frame"][0] == 2 and e["frame"][2] == "Heartbeat"
                    if e["t"] > changed_at
                ]

            await peer.wait_until(lambda: len(beats_after_change()) >= 2)
            await peer.wait_until(peer.all_answered)
    assert peer.call_errors() == ([], [])
    calls = _calls(peer)
    everything, named = calls["GetConfiguration"]
    keys = {k["key"]: k for k in everything["configuration_key"]}
    profiles = keys["SupportedFeatureProfiles"]["value"]
    assert profiles == "Core,LocalAuthListManagement,Reservation,RemoteTrigger"
    assert keys["HeartbeatInterval"] == {"key": "HeartbeatInterval", "readonly": False, "value": "1"}
    assert [k["key"] for k in named["configuration_key"]] == ["HeartbeatInterval", "NumberOfConnectors"]
    assert named["unknown_key"] == ["NoSuchKey"]
    assert calls["ChangeConfiguration"] == [{"status": "Accepted"}]
    first, second = beats_after_change()[:2]
    # The interval was 1 s; from the change on it is 2 s (the wait restarts at the change).
    assert 1.5 < first - changed_at < 2.7
    assert 1.5 < second - first < 2.7

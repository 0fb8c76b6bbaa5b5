"""Interop, the one-version actions the other interop tests leave out, against the `ocpp`-package CSMS
(driven mode): 1.6 ExtendedTriggerMessage (security whitepaper) and 2.0.1 GetReport (B08)."""

from __future__ import annotations

from pathlib import Path

import trio
from test_interop_ocpp_package import (
    TIMEOUT_S,
    _assert_nothing_refused,
    _config,
    accepted_and_reported,
    run_peer,
)

from evstation.runtime.station import open_station


async def test_interop_v16_extended_trigger_message(tmp_path: Path) -> None:
    """ExtendedTriggerMessage StatusNotification for connector 2 is Accepted and followed by that
    connector's StatusNotification; Heartbeat is Accepted and followed by a Heartbeat; a connector the
    station does not have is Rejected."""
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer("1.6", "driven") as (peer, port),
            open_station(_config(tmp_path, "1.6", port)) as station,
        ):
            await accepted_and_reported(station, peer)
            statuses = len(peer.received_calls("StatusNotification"))
            status = await peer.call(
                "ExtendedTriggerMessage", requested_message="StatusNotification", connector_id=2
            )
            await peer.wait_until(lambda: len(peer.received_calls("StatusNotification")) > statuses)
            beats = len(peer.received_calls("Heartbeat"))
            heartbeat = await peer.call("ExtendedTriggerMessage", requested_message="Heartbeat")
            await peer.wait_until(lambda: len(peer.received_calls("Heartbeat")) > beats)
            unknown = await peer.call(
                "ExtendedTriggerMessage", requested_message="StatusNotification", connector_id=9
            )
            await peer.wait_until(peer.all_answered)
        _assert_nothing_refused(peer)
    assert status["result"]["status"] == "Accepted"
    assert peer.received_calls("StatusNotification")[statuses]["connectorId"] == 2
    assert heartbeat["result"]["status"] == "Accepted"
    assert unknown["result"]["status"] == "Rejected"


async def test_interop_b08_get_report_of_one_variable_and_of_nothing(tmp_path: Path) -> None:
    """GetReport of OCPPCommCtrlr.HeartbeatInterval is Accepted and followed by one NotifyReport with
    its requestId, that variable and its value (validated by the package); a GetReport whose filter
    matches nothing is EmptyResultSet and sends no report."""
    wanted = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
    nothing = {"component": {"name": "NoSuchCtrlr"}, "variable": {"name": "NoSuchVariable"}}
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer("2.0.1", "driven") as (peer, port),
            open_station(_config(tmp_path, "2.0.1", port)) as station,
        ):
            await accepted_and_reported(station, peer)
            report = await peer.call("GetReport", request_id=77, component_variable=[wanted])
            await peer.wait_until(lambda: peer.received_calls("NotifyReport"))
            empty = await peer.call("GetReport", request_id=78, component_variable=[nothing])
            await peer.wait_until(peer.all_answered)
        _assert_nothing_refused(peer)
    assert report["result"]["status"] == "Accepted"
    assert empty["result"]["status"] == "EmptyResultSet"
    (notify,) = peer.received_calls("NotifyReport")
    assert (notify["requestId"], notify["seqNo"], notify.get("tbc", False)) == (77, 0, False)
    (data,) = notify["reportData"]
    assert (data["component"]["name"], data["variable"]["name"]) == ("OCPPCommCtrlr", "HeartbeatInterval")
    actual = next(a for a in data["variableAttribute"] if a.get("type", "Actual") == "Actual")
    assert actual["value"] == "1"  # the peer's BootNotification interval

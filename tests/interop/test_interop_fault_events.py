"""2.0.1 NotifyEvent for a hardware fault against the `ocpp` package's CSMS, which validates each request
against the official 2.0.1 schema: a board's ground fault raised and cleared on a running station, and
the component the event names read back with GetVariables while raised and once cleared."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from test_interop_ocpp_package import TIMEOUT_S, _config, run_peer

from evstation.drivers.api import FaultCode
from evstation.runtime.station import open_station


async def test_interop_fault_raised_and_cleared_is_notify_event_validated_by_ocpp_package(
    tmp_path: Path,
) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer("2.0.1", "driven") as (peer, port),
            open_station(_config(tmp_path, "2.0.1", port)) as station,
        ):

            def event_data() -> list[dict[str, object]]:
                return [data for p in peer.received_calls("NotifyEvent") for data in p["eventData"]]

            await peer.wait_until(lambda: bool(peer.received_calls("StatusNotification")))
            board = station.sim_board(1)
            assert board is not None
            read = {"component": {"name": "RCD", "evse": {"id": 1}}, "variable": {"name": "Problem"}}

            async def rcd_problem() -> Any:
                answer = await peer.call("GetVariables", get_variable_data=[read])
                assert answer["ok"], answer
                return answer["result"]["get_variable_result"][0]

            board.inject_fault(FaultCode.GROUND_FAILURE, "RCD tripped")
            await peer.wait_until(lambda: len(event_data()) >= 1)
            while_raised = await rcd_problem()
            board.clear_fault(FaultCode.GROUND_FAILURE)
            await peer.wait_until(lambda: len(event_data()) >= 2)
            once_cleared = await rcd_problem()
            await peer.wait_until(peer.all_answered)
    refused, _ = peer.call_errors()
    assert refused == [], f"the ocpp package refused our payloads: {refused}"
    raised, cleared = event_data()
    assert (raised["techCode"], raised["actualValue"], raised["component"]) == (
        "CX002",
        "true",
        {"name": "RCD", "evse": {"id": 1}},
    )
    assert (cleared["techCode"], cleared["actualValue"], cleared["cleared"]) == ("CX002", "false", True)
    assert (while_raised["attribute_status"], while_raised["attribute_value"]) == ("Accepted", "true")
    assert (once_cleared["attribute_status"], once_cleared["attribute_value"]) == ("Accepted", "false")

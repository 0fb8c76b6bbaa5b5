"""End to end: a CSMS Reset makes `evstation run` stop cleanly with exit code EXIT_RESET (75), after
the transaction's end reached the CSMS; started again, the station boots with reason RemoteReset
(2.0.1) and does not end the transaction a second time."""

from __future__ import annotations

import pytest
import trio
from e2e_station import control_client, short_dir, station_process, write_config

from evstation.runtime.cli import EXIT_RESET
from evstation.runtime.testcsms import TestCsms, serve_test_csms

TIMEOUT_S = 20.0
STATION = "E2E-RESET"


@pytest.mark.parametrize(
    ("version", "reset", "end"),
    [("1.6", "Hard", "StopTransaction"), ("2.0.1", "Immediate", "TransactionEvent")],
)
async def test_e2e_b12_reset_exits_with_the_reset_code_and_boots_with_its_reason(
    version: str, reset: str, end: str
) -> None:
    with trio.fail_after(TIMEOUT_S), short_dir() as folder:
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            config = write_config(folder, version=version, port=csms.port, station_id=STATION)

            async with station_process(config) as process:
                await csms.wait_for(STATION, "StatusNotification")
                async with control_client(folder / "c.sock", process) as ops:
                    await ops.ok("plug_in", evse=1)
                    await ops.ok("present_id_token", id_token="E2E-RESET-1", evse=1)
                    start = "StartTransaction" if version == "1.6" else "TransactionEvent"
                    await csms.wait_for(STATION, start)
                    ends_before = len(csms.received(STATION, end))
                    answer = await csms.call(STATION, "Reset", {"type": reset})
                    assert answer == {"status": "Accepted"}
                    assert await process.wait() == EXIT_RESET
            stopped = csms.received(STATION, end)[ends_before:]
            if version == "1.6":
                assert [c.payload["reason"] for c in stopped] == ["HardReset"]
            else:
                [ended] = [c for c in stopped if c.payload["eventType"] == "Ended"]
                info = ended.payload["transactionInfo"]
                assert isinstance(info, dict)
                assert info["stoppedReason"] == "ImmediateReset"

            ends_total = len(csms.received(STATION, end))
            statuses_before = len(csms.received(STATION, "StatusNotification"))
            async with station_process(config) as process:
                await csms.wait_connected(STATION, 2)
                boot = await csms.wait_for(STATION, "BootNotification", 2)
                if version == "2.0.1":
                    assert boot["reason"] == "RemoteReset"
                await csms.wait_for(STATION, "StatusNotification", statuses_before + 1)
                assert len(csms.received(STATION, end)) == ends_total  # nothing ended twice
            nursery.cancel_scope.cancel()

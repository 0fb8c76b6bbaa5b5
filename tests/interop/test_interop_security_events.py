"""SecurityEventNotification (2.0.1 A04; 1.6 security whitepaper) against the `ocpp` package's CSMS,
which validates each one against its schema (2.0.1, and the whitepaper's 1.6 schema the package ships):
StartupOfTheDevice after the boot, then ResetOrReboot for a CSMS Reset."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from test_interop_ocpp_package import TIMEOUT_S, _config, run_peer

from evstation.runtime.lifecycle import StationOutcome
from evstation.runtime.station import open_station


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_interop_security_events_validated_by_ocpp_package(tmp_path: Path, version: str) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with (
            run_peer(version, "driven") as (peer, port),
            open_station(_config(tmp_path, version, port)) as station,
        ):

            def sent(kind: str) -> bool:
                return any(p["type"] == kind for p in peer.received_calls("SecurityEventNotification"))

            await peer.wait_until(lambda: sent("StartupOfTheDevice"))
            reset = await peer.call("Reset", type="Hard" if version == "1.6" else "Immediate")
            assert reset["ok"], reset
            assert await station.stop.wait() is StationOutcome.RESET
            await peer.wait_until(lambda: sent("ResetOrReboot"))
            await peer.wait_until(peer.all_answered)
    refused, _ = peer.call_errors()
    assert refused == [], f"the ocpp package refused our payloads: {refused}"
    events = peer.received_calls("SecurityEventNotification")
    startup = next(p for p in events if p["type"] == "StartupOfTheDevice")
    assert startup["techInfo"] == "boot reason PowerUp"
    reset_event = next(p for p in events if p["type"] == "ResetOrReboot")
    assert reset_event["timestamp"].endswith("Z")

"""The README's demo command: a scripted session against the test CSMS that ends by itself."""

from __future__ import annotations

import io

import pytest
import trio

from evstation.runtime.demo import STATION_ID, Pace, run_demo
from evstation.runtime.lifecycle import StationOutcome
from evstation.runtime.testcsms import TestCsms

FAST = Pace(charge_s=0.6, pause_s=0.05, meter_interval_s=0.2)
# Charges long enough for the CSMS's Reset to arrive mid-session (the reset ends it much sooner).
LONG_CHARGE = Pace(charge_s=20, pause_s=0.05, meter_interval_s=0.2)


@pytest.mark.parametrize(
    ("version", "transaction_actions"),
    [
        ("1.6", ["StartTransaction", "MeterValues", "StopTransaction"]),
        ("2.0.1", ["TransactionEvent"]),
    ],
)
async def test_demo_runs_a_whole_session_and_ends(version: str, transaction_actions: list[str]) -> None:
    out = io.StringIO()
    with trio.fail_after(30):
        assert await run_demo(version, out, FAST) is None
    timeline = out.getvalue()
    for action in ["BootNotification", "StatusNotification", "Authorize", *transaction_actions]:
        assert f"station → CSMS   {action}" in timeline, action
    assert "StatusChanged                connector_id=1 status=Charging" in timeline
    if version == "2.0.1":
        assert '"eventType":"Ended"' in timeline
    assert timeline.rstrip().endswith("done")


@pytest.mark.parametrize(("version", "reset"), [("1.6", {"type": "Soft"}), ("2.0.1", {"type": "Immediate"})])
async def test_demo_ends_when_the_csms_resets_the_station(version: str, reset: dict[str, str]) -> None:
    """A Reset asks the station to stop; nothing would restart it, so the demo says so and ends
    instead of charging on with a station that is shutting down."""
    out = io.StringIO()
    answers: list[object] = []

    async def reset_while_charging(csms: TestCsms) -> None:
        await csms.wait_for(STATION_ID, "StartTransaction" if version == "1.6" else "TransactionEvent")
        answers.append(await csms.call(STATION_ID, "Reset", dict(reset)))

    with trio.fail_after(30):
        outcome = await run_demo(version, out, LONG_CHARGE, csms_script=reset_while_charging)
    assert outcome is StationOutcome.RESET
    assert answers == [{"status": "Accepted"}]
    timeline = out.getvalue()
    assert "the CSMS reset the station: the demo ends" in timeline
    assert "driver unplugs" not in timeline  # the scripted session was cut short
    assert timeline.rstrip().endswith("done")

"""The README's demo command: a scripted session against the test CSMS that ends by itself."""

from __future__ import annotations

import io

import pytest
import trio

from evstation.runtime.demo import Pace, run_demo

FAST = Pace(charge_s=0.6, pause_s=0.05, meter_interval_s=0.2)


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
        await run_demo(version, out, FAST)
    timeline = out.getvalue()
    for action in ["BootNotification", "StatusNotification", "Authorize", *transaction_actions]:
        assert f"station → CSMS   {action}" in timeline, action
    assert "StatusChanged                connector_id=1 status=Charging" in timeline
    if version == "2.0.1":
        assert '"eventType":"Ended"' in timeline
    assert timeline.rstrip().endswith("done")

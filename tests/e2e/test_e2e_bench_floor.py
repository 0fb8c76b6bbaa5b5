"""The benchmark's second start-up floor runs: its BootNotification passes the test CSMS's schema check
and the CSMS's answer passes our model. A broken floor would otherwise hang the benchmark, which waits
for a BootNotification that never comes."""

from __future__ import annotations

import subprocess
import sys

import trio
from e2e_station import REPO

from evstation.runtime.testcsms import TestCsms, serve_test_csms

TIMEOUT_S = 60


async def test_floor_with_models_sends_a_valid_boot_and_validates_the_answer() -> None:
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            process = await trio.lowlevel.open_process(
                [sys.executable, "-m", "benchmarks.floor_pydantic_station", str(csms.port), "FLOOR-1"],
                stdout=subprocess.PIPE,
                cwd=REPO,
            )
            try:
                boot = await csms.wait_for("FLOOR-1", "BootNotification")
                assert process.stdout is not None
                said = b""
                while b"\n" not in said:
                    chunk = await process.stdout.receive_some()
                    assert chunk, f"the floor exited ({await process.wait()}) before validating the answer"
                    said += chunk
            finally:
                process.kill()
                await process.wait()
            nursery.cancel_scope.cancel()
    assert boot == {"reason": "PowerUp", "chargingStation": {"model": "floor", "vendorName": "evstation"}}
    assert said == b"answer validated\n"

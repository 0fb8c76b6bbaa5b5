"""A CSMS that sends date-times without a UTC offset (EVerest's own test CSMS answers BootNotification
so): the station takes them as UTC, says so once per connection, and comes online.

The test CSMS serves each dial in memory (the link's Connector seam) under a MockClock, so heartbeats
300 virtual seconds apart take milliseconds. Real SQLite underneath (conftest holds the clock still
while it works).
"""

from __future__ import annotations

import functools
import logging
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.testing
from runtime_session_harness import open_session_context

from evstation.protocol.backoff import BackoffSettings
from evstation.protocol.boot import BootState
from evstation.protocol.versions import OcppVersion
from evstation.runtime.link import CsmsEndpoint, Link, LinkSettings, run_link
from evstation.runtime.session import serve_session
from evstation.runtime.testcsms import TestCsms, serve_test_csms

STATION = "CS-TEST-1"  # the harness's station id
NAIVE = "2026-01-01T00:00:00"
QUICK = BackoffSettings(wait_minimum_s=1.0, random_range_s=0.0, repeat_times=0, attempts_per_endpoint=3)


@pytest.mark.parametrize("version", [OcppVersion.V16, OcppVersion.V201], ids=["v16", "v201"])
async def test_boot_answer_without_utc_offset_is_taken_as_utc_and_logged_once_per_connection(
    clock: trio.testing.MockClock, tmp_path: Path, caplog: pytest.LogCaptureFixture, version: OcppVersion
) -> None:
    caplog.set_level(logging.WARNING, logger="evstation.runtime.calls")
    endpoint = CsmsEndpoint(url="ws://csms.invalid/ocpp", priority=0, security_profile=0)
    settings = LinkSettings(
        station_id=STATION, version=version, endpoints=(endpoint,), backoff=QUICK, ping_interval_s=0.0
    )
    async with open_session_context(tmp_path, version) as ctx:
        with trio.fail_after(10_000):
            async with trio.open_nursery() as nursery:
                csms: TestCsms = await nursery.start(serve_test_csms)
                csms.set_response(
                    "BootNotification", {"currentTime": NAIVE, "interval": 300, "status": "Accepted"}
                )
                csms.set_response("Heartbeat", {"currentTime": NAIVE})
                await nursery.start(
                    functools.partial(
                        run_link,
                        settings,
                        Link(),
                        functools.partial(serve_session, ctx=ctx),
                        rng=random.Random(0),
                        connector=csms.open_memory_stream,
                    )
                )
                # Boot, then two heartbeats whose answers lack the offset too.
                await csms.wait_for(STATION, "Heartbeat", 2)
                assert ctx.uplink.boot.state is BootState.ACCEPTED
                assert len(csms.received(STATION, "BootNotification")) == 1
                told = [r for r in caplog.records if "without a UTC offset" in r.getMessage()]
                assert len(told) == 1
                assert "currentTime" in told[0].getMessage()
                # A new connection says it again, once.
                csms.drop(STATION)
                await csms.wait_for(STATION, "Heartbeat", 4)  # the 3rd is answered by then
                told = [r for r in caplog.records if "without a UTC offset" in r.getMessage()]
                assert len(told) == 2
                # The station's clock follows the CSMS's, read as UTC.
                drift = ctx.clock.now() - datetime(2026, 1, 1, tzinfo=UTC)
                assert 0 <= drift.total_seconds() < 600
                nursery.cancel_scope.cancel()

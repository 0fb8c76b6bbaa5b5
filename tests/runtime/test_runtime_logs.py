"""Log amplification: whoever reaches the websocket cannot make the station write much more log than a
few lines a minute per kind of fault, and a log file cannot outgrow its cap."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import trio
import trio.testing
from runtime_session_harness import MemoryConnection

from evstation.protocol.versions import OcppVersion
from evstation.runtime.calls import CallManager
from evstation.runtime.config import LoggingConfig
from evstation.runtime.link import LinkDown
from evstation.runtime.logs import QUOTE_CHARS, FaultLimiter, clip, configure_logging, quote

BAD_FRAMES = 3000
FRAME_CHARS = 20_000


def test_fault_limiter_logs_a_burst_per_window_then_counts_what_it_left_out() -> None:
    limiter = FaultLimiter(burst=2, window_s=60.0)
    assert [limiter.admit("bad", 0.0) for _ in range(5)] == [0, 0, None, None, None]
    assert limiter.pending() == {"bad": 3}
    # Another kind has its own budget.
    assert limiter.admit("other", 1.0) == 0
    # A new window: the first line names the three left out, then the count starts again.
    assert limiter.admit("bad", 60.0) == 3
    assert limiter.admit("bad", 61.0) == 0
    assert limiter.admit("bad", 62.0) is None
    assert limiter.pending() == {"bad": 1}


def test_quotes_of_peer_text_are_bounded_and_escaped() -> None:
    frame = '[2,"1","Heartbeat",{}]\n2000-01-01 ERROR forged line' + "x" * 600_000
    quoted = quote(frame)
    assert len(quoted) < QUOTE_CHARS + 40
    assert "\n" not in quoted
    assert quoted.endswith(f"... ({len(frame):,} characters)")
    assert quote("short") == "'short'"
    assert clip("a\nb") == "a\\nb"
    assert len(clip("y" * 10_000)) < QUOTE_CHARS + 40


@pytest.mark.parametrize("version", [OcppVersion.V16, OcppVersion.V201], ids=["v16", "v201"])
async def test_many_bad_frames_produce_bounded_log_output(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, version: OcppVersion
) -> None:
    """Unreadable frames, answers to no call, and refused calls, each 20 kB: a few short lines per kind,
    then one line per kind at close saying how many were not logged."""
    caplog.set_level(logging.WARNING)
    conn = MemoryConnection(version)
    calls = CallManager(conn, {}, timeout_s=30.0)
    padding = "x" * FRAME_CHARS
    kinds = {
        "unreadable frames": "not json " + padding,
        "unmatched answers": json.dumps([3, "nobody-asked", {"junk": padding}]),
        "refused CSMS calls": json.dumps([2, "c1", "Heartbeat", {padding: 1}]),
    }
    with trio.fail_after(100):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, conn)
            nursery.start_soon(_run_until_closed, calls)
            await trio.testing.wait_all_tasks_blocked()
            for frame in kinds.values():
                for _ in range(BAD_FRAMES):
                    await conn.down_send.send(frame)
            await trio.testing.wait_all_tasks_blocked()
            conn.close()
    sent = BAD_FRAMES * len(kinds) * FRAME_CHARS
    logged = sum(len(r.getMessage()) for r in caplog.records)
    assert logged < 10_000, f"{logged} characters logged for {sent} received"
    assert all(len(r.getMessage()) < 600 for r in caplog.records)
    # Every bad frame is accounted for: logged, or counted in the closing line of its kind (2.0.1
    # answers an unreadable frame, so there it is a refused call).
    closing = [r.getMessage() for r in caplog.records if r.getMessage().endswith("not logged")]
    faults = [r for r in caplog.records if r.getMessage().startswith(("dropped", "refused"))]
    left_out = sum(int(line.split("; ")[1].split()[0]) for line in closing)
    assert len(faults) + left_out == BAD_FRAMES * len(kinds)
    assert len(faults) <= FaultLimiter().burst * len(kinds)


async def _run_until_closed(calls: CallManager) -> None:
    try:
        await calls.run()
    except* LinkDown:
        pass


async def _drain(conn: MemoryConnection) -> None:
    async for _ in conn.up_receive:
        pass


def test_a_log_file_rotates_at_its_size_cap(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "station.log"
    config = LoggingConfig(file=path, max_file_bytes=64 * 1024, backup_count=2)
    handler = configure_logging(config)
    logger = logging.getLogger("evstation.test.rotation")
    try:
        for n in range(20_000):
            logger.warning("line %d %s", n, "y" * 80)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["station.log", "station.log.1", "station.log.2"]
    total = sum(p.stat().st_size for p in path.parent.iterdir())
    assert total <= 3 * 64 * 1024
    assert "line 19999" in path.read_text()

"""Security events (2.0.1 A04 / part 2 appendix "Security Events"; 1.6 security whitepaper): each event
the station detects reaches the CSMS as a schema-valid SecurityEventNotification (the harness CSMS
validates every request), both versions; events detected offline are kept in SQLite and delivered after
the next accepted connection, a restart included; link failures reach the block through the real link
over real TLS (trustme)."""

from __future__ import annotations

import functools
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme
from runtime_session_harness import (
    CSMS_TIME,
    CsmsPeer,
    MemoryConnection,
    NoAnswer,
    call,
    online,
    open_session_context,
    serve_until_link_down,
    serving,
)

from evstation.protocol.backoff import BackoffSettings
from evstation.protocol.security_events import (
    PendingEvent,
    SecurityEvent,
    decode_pending,
    encode_pending,
    event_type,
    is_critical,
    trim,
)
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.security import PENDING_EVENTS_KEY
from evstation.runtime.device_model import SECURITY_PROFILE, TIME_ADJUSTMENT_REPORTING_THRESHOLD
from evstation.runtime.lifecycle import StationOutcome
from evstation.runtime.link import CsmsEndpoint, Link, LinkSettings, LinkState, run_link
from evstation.runtime.session import SessionContext
from evstation.runtime.testcsms import serve_test_csms
from evstation.runtime.tls import SecurityFailure

V16, V201 = OcppVersion.V16, OcppVersion.V201
BOTH = pytest.mark.parametrize("version", [V16, V201], ids=["1.6", "2.0.1"])


def security_events(csms: CsmsPeer) -> list[dict[str, Any]]:
    return [s.call.payload for s in csms.of("SecurityEventNotification")]


def types(csms: CsmsPeer) -> list[str]:
    """The event types the CSMS received, but SettingSystemTime: the harness clock starts in 2025 and
    its CSMS says 2030, so that one comes with every boot (its own test is below)."""
    return [p["type"] for p in security_events(csms) if p["type"] != "SettingSystemTime"]


async def wait_events(csms: CsmsPeer, count: int) -> None:
    """Until `count` events (SettingSystemTime not counted) have reached the CSMS."""
    while len(types(csms)) < count:
        await csms.wait_for("SecurityEventNotification", len(csms.of("SecurityEventNotification")) + 1)


async def stored(ctx: SessionContext) -> list[PendingEvent]:
    return decode_pending(await ctx.blocks.transactions.services.storage.get_setting(PENDING_EVENTS_KEY))


async def wait_pending(ctx: SessionContext, count: int) -> None:
    # Reported events are stored by the block's task (SQLite in a worker thread): poll in virtual time.
    while len(ctx.blocks.security.pending) < count:  # noqa: ASYNC110
        await trio.sleep(0.1)


@asynccontextmanager
async def with_security(tmp_path: Path, version: OcppVersion) -> AsyncIterator[SessionContext]:
    """A session context with the security block running and no connection yet."""
    async with open_session_context(tmp_path, version) as ctx, trio.open_nursery() as nursery:
        await nursery.start(ctx.blocks.security.run)
        yield ctx
        nursery.cancel_scope.cancel()


# --- the events ----------------------------------------------------------------------------------


@BOTH
async def test_a04_startup_of_the_device_after_the_accepted_boot_with_the_boot_reason(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    async with open_session_context(tmp_path, version) as ctx:
        storage = ctx.blocks.transactions.services.storage
        await storage.save_boot_state(replace(await storage.boot_state(), next_boot_reason="RemoteReset"))
        async with trio.open_nursery() as nursery:
            await nursery.start(ctx.blocks.security.run)
            csms, conn = CsmsPeer(version), MemoryConnection(version)
            async with serving(csms, conn, ctx):
                await wait_events(csms, 1)
                nursery.cancel_scope.cancel()
    [startup] = [p for p in security_events(csms) if p["type"] == "StartupOfTheDevice"]
    assert startup["techInfo"] == "boot reason RemoteReset"
    # Sent after the boot was accepted: stamped with the clock the CSMS set.
    assert startup["timestamp"].startswith(CSMS_TIME[:10])
    assert csms.actions().index("BootNotification") < csms.actions().index("SecurityEventNotification")


@BOTH
async def test_a04_setting_system_time_only_past_the_reporting_threshold(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The boot's currentTime moves the clock a few seconds (under ClockCtrlr.TimeAdjustmentReporting-
    Threshold, 60 s): nothing. The first heartbeat's moves it years: SettingSystemTime."""
    csms = CsmsPeer(version).then(
        "BootNotification", {"status": "Accepted", "currentTime": "2025-01-01T00:00:05.000Z", "interval": 300}
    )
    conn = MemoryConnection(version)
    async with with_security(tmp_path, version) as ctx:
        assert ctx.device_model.get_int(TIME_ADJUSTMENT_REPORTING_THRESHOLD) == 60
        async with serving(csms, conn, ctx):
            await csms.wait_for("Heartbeat")
            await csms.wait_for("SecurityEventNotification", 2)
    assert [p["type"] for p in security_events(csms)] == ["StartupOfTheDevice", "SettingSystemTime"]
    moved = security_events(csms)[1]
    assert moved["techInfo"].startswith("clock moved +")
    assert is_critical(SecurityEvent.SETTING_SYSTEM_TIME)


@BOTH
async def test_a04_reset_or_reboot_reaches_the_csms_before_the_station_stops(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms, run_reset=True, run_security=True) as (ctx, conn):
        kind = "Hard" if version is V16 else "Immediate"
        assert await call(csms, conn, "Reset", {"type": kind}) == {"status": "Accepted"}
        assert await ctx.blocks.reset.stop_requests.wait() is StationOutcome.RESET
        [reset] = [p for p in security_events(csms) if p["type"] == "ResetOrReboot"]
        assert reset["techInfo"] == f"{kind} Reset by the CSMS"
        assert ctx.blocks.security.pending == []  # answered before the stop
        assert await stored(ctx) == []


@BOTH
async def test_a04_reconfiguration_of_security_parameters_on_a_security_profile_change(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    csms = CsmsPeer(version)
    async with online(tmp_path, version, csms, run_security=True) as (ctx, _):
        await wait_events(csms, 1)  # StartupOfTheDevice
        await ctx.device_model.update(SECURITY_PROFILE, "1")  # as a connection through profile 1 does
        await wait_events(csms, 2)
    assert types(csms) == ["StartupOfTheDevice", "ReconfigurationOfSecurityParameters"]
    [event] = [p for p in security_events(csms) if p["type"] == "ReconfigurationOfSecurityParameters"]
    assert event["techInfo"] == "SecurityProfile 0 -> 1"


# --- delivery ------------------------------------------------------------------------------------


@BOTH
async def test_a04_link_security_failures_while_offline_are_delivered_after_the_next_connection(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Reported by the link during an outage: stored at once, one per kind however often the dial
    fails, sent head first once the CSMS accepted us; after that connection a failure is news again."""
    async with with_security(tmp_path, version) as ctx:
        security = ctx.blocks.security
        for _ in range(3):  # three failed dials of one outage
            security.link_failed(
                SecurityFailure.CSMS_CERTIFICATE, "CSMS certificate is not signed by a trusted CA"
            )
        security.link_failed(SecurityFailure.CREDENTIALS_REFUSED, "CSMS refused our credentials (HTTP 401)")
        await wait_pending(ctx, 2)
        assert [e.type for e in await stored(ctx)] == [
            event_type(version, SecurityEvent.INVALID_CSMS_CERTIFICATE),
            event_type(version, SecurityEvent.FAILED_TO_AUTHENTICATE_AT_CSMS),
        ]
        csms, conn = CsmsPeer(version), MemoryConnection(version)
        async with serving(csms, conn, ctx):
            await wait_events(csms, 3)
            await security.wait_sent()
            security.link_failed(SecurityFailure.CSMS_CERTIFICATE, "again, after a connection")
            await wait_events(csms, 4)
        assert await stored(ctx) == []
    if version is V16:
        expected = ["InvalidCentralSystemCertificate", "FailedToAuthenticateAtCentralSystem"]
    else:
        expected = ["InvalidCsmsCertificate", "FailedToAuthenticateAtCsms"]
    assert types(csms) == [*expected, "StartupOfTheDevice", expected[0]]
    assert security_events(csms)[0]["techInfo"] == "CSMS certificate is not signed by a trusted CA"


async def test_a04_pending_events_survive_a_restart(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    async with with_security(tmp_path, V201) as ctx:
        ctx.blocks.security.link_failed(SecurityFailure.TLS_VERSION, "CSMS speaks no TLS 1.2+")
        await wait_pending(ctx, 1)
    async with with_security(tmp_path, V201) as ctx:  # the same database: a restart
        assert [e.type for e in ctx.blocks.security.pending] == ["InvalidTLSVersion"]
        csms, conn = CsmsPeer(V201), MemoryConnection(V201)
        async with serving(csms, conn, ctx):
            await wait_events(csms, 2)
    assert types(csms) == ["InvalidTLSVersion", "StartupOfTheDevice"]


async def test_a04_an_event_in_flight_when_the_connection_drops_goes_again_on_the_next(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The connection ends while the CSMS holds the answer to an event: the event stays queued and is
    the first sent on the next connection (an unacknowledged event is never dropped)."""
    async with with_security(tmp_path, V201) as ctx:
        ctx.blocks.security.link_failed(SecurityFailure.TLS_VERSION, "CSMS speaks no TLS 1.2+")
        await wait_pending(ctx, 1)
        first = CsmsPeer(V201).then("SecurityEventNotification", NoAnswer())
        conn = MemoryConnection(V201, 1)
        async with serving(first, conn, ctx):
            await first.wait_for("SecurityEventNotification")
            conn.close()
            await ctx.uplink.wait_offline()
        second, conn = CsmsPeer(V201), MemoryConnection(V201, 2)
        async with serving(second, conn, ctx):
            await wait_events(second, 2)
            await ctx.blocks.security.wait_sent()
        assert await stored(ctx) == []
    assert types(first) == ["InvalidTLSVersion"]
    assert types(second) == ["InvalidTLSVersion", "StartupOfTheDevice"]


async def test_a04_a_csms_that_keeps_refusing_an_event_does_not_block_the_next_one(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """CALLERRORs: retried per the TransactionEvent policy, then given up (logged) and the next one sent."""
    from runtime_session_harness import Fail

    async with with_security(tmp_path, V201) as ctx:
        attempts = ctx.retry_policy.max_transmissions
        csms = CsmsPeer(V201).then("SecurityEventNotification", *[Fail()] * attempts)
        ctx.blocks.security.link_failed(SecurityFailure.TLS_CIPHER, "no shared cipher")
        await wait_pending(ctx, 1)
        conn = MemoryConnection(V201)
        async with serving(csms, conn, ctx):
            await wait_events(csms, attempts + 1)
            await ctx.blocks.security.wait_sent()
        assert await stored(ctx) == []
    assert types(csms) == ["InvalidTLSCipherSuite"] * attempts + ["StartupOfTheDevice"]


# --- the link tells the block, over real TLS and HTTP 401 ------------------------------------------


def _server_context(ca: trustme.CA) -> Any:
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx


async def test_a00_invalid_csms_certificate_from_the_link_reaches_the_csms_after_the_next_connection(
    csms_ca: trustme.CA, tmp_path: Path
) -> None:
    """Two network profiles: slot 0 trusts another CA (its dial fails: InvalidCsmsCertificate), slot 1
    the right one; the session over slot 1 sends the event the failed dial caused."""
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    right = tmp_path / "csms-ca.pem"
    csms_ca.cert_pem.write_to_path(str(right))
    with trio.fail_after(30):
        async with (
            open_session_context(tmp_path, V201) as ctx,
            trio.open_nursery() as nursery,
        ):
            await nursery.start(ctx.blocks.security.run)
            csms = await nursery.start(
                functools.partial(serve_test_csms, ssl_context=_server_context(csms_ca))
            )
            url = f"wss://127.0.0.1:{csms.port}/ocpp"
            settings = LinkSettings(
                station_id=ctx.config.station.id,
                version=V201,
                endpoints=(
                    CsmsEndpoint(url, priority=0, security_profile=2, password="p" * 16, ca_bundle=other),
                    CsmsEndpoint(url, priority=1, security_profile=2, password="p" * 16, ca_bundle=right),
                ),
                backoff=BackoffSettings(
                    wait_minimum_s=0.05, random_range_s=0, repeat_times=0, attempts_per_endpoint=1
                ),
                ping_interval_s=0.0,
                connect_timeout_s=5.0,
            )
            link = Link(on_security_failure=ctx.blocks.security.link_failed)
            serve = functools.partial(serve_until_link_down, ctx=ctx)
            await nursery.start(functools.partial(run_link, settings, link, serve, rng=random.Random(0)))
            event = await csms.wait_for(ctx.config.station.id, "SecurityEventNotification")
            assert event["type"] == "InvalidCsmsCertificate"  # queued first, sent first
            assert "not signed by a trusted CA" in event["techInfo"]
            nursery.cancel_scope.cancel()


async def test_a00_http_401_is_a_credentials_refused_security_failure(tmp_path: Path) -> None:
    told: list[tuple[SecurityFailure, str]] = []
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            csms = await nursery.start(
                functools.partial(serve_test_csms, passwords={"CS-1": "right-password-00"})
            )
            settings = LinkSettings(
                station_id="CS-1",
                version=V16,
                endpoints=(
                    CsmsEndpoint(
                        f"ws://127.0.0.1:{csms.port}/ocpp",
                        priority=0,
                        security_profile=1,
                        password="wrong-password-0",
                    ),
                ),
                backoff=BackoffSettings(
                    wait_minimum_s=600, random_range_s=0, repeat_times=0, attempts_per_endpoint=3
                ),
                ping_interval_s=0.0,
            )
            link = Link(on_security_failure=lambda failure, text: told.append((failure, text)))

            async def idle(conn: object) -> None:
                await trio.sleep_forever()

            await nursery.start(functools.partial(run_link, settings, link, idle, rng=random.Random(0)))
            await link.wait_state(LinkState.BACKING_OFF)
            nursery.cancel_scope.cancel()
    [(failure, text)] = told
    assert failure is SecurityFailure.CREDENTIALS_REFUSED
    assert "HTTP 401" in text


# --- the rules -----------------------------------------------------------------------------------


def test_event_names_per_version_and_criticality() -> None:
    assert event_type(V16, SecurityEvent.INVALID_CSMS_CERTIFICATE) == "InvalidCentralSystemCertificate"
    assert event_type(V201, SecurityEvent.INVALID_CSMS_CERTIFICATE) == "InvalidCsmsCertificate"
    assert event_type(V16, SecurityEvent.STARTUP_OF_THE_DEVICE) == "StartupOfTheDevice"
    critical = {e for e in SecurityEvent if is_critical(e)}
    assert critical == {
        SecurityEvent.STARTUP_OF_THE_DEVICE,
        SecurityEvent.RESET_OR_REBOOT,
        SecurityEvent.SETTING_SYSTEM_TIME,
    }


def test_an_overfull_queue_gives_up_non_critical_events_first() -> None:
    def event(n: int, critical: bool) -> PendingEvent:
        return PendingEvent(f"E{n}", "2025-01-01T00:00:00.000Z", None, critical)

    kept, dropped = trim([event(0, True), event(1, False), event(2, True), event(3, False)], limit=2)
    assert [e.type for e in kept] == ["E0", "E2"]
    assert [e.type for e in dropped] == ["E1", "E3"]
    kept, dropped = trim([event(0, True), event(1, True), event(2, True)], limit=2)
    assert [e.type for e in kept] == ["E1", "E2"]


def test_stored_queue_round_trips_and_damage_is_skipped() -> None:
    events = [PendingEvent("StartupOfTheDevice", "2025-01-01T00:00:00.000Z", "boot reason PowerUp", True)]
    assert decode_pending(encode_pending(events)) == events
    assert decode_pending("not json") == []
    assert decode_pending('{"type": 1}') == []
    assert decode_pending('[{"type": 1}, 7, {"type": "X", "timestamp": "t"}]') == [
        PendingEvent("X", "t", None, False)
    ]
    long = PendingEvent("X", "t", "i" * 300, False)
    assert len(str(long.payload()["techInfo"])) == 255

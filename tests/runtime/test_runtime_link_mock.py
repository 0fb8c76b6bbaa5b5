"""The link supervisor's timing and reconnect rules, on MockClock over in-memory streams.

The test CSMS serves each dial through `open_memory_stream` (the Connector seam), so back-off waits,
pings and pong timeouts run in virtual time with the real websocket code on both sides.
"""

from __future__ import annotations

import functools
import itertools
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from evstation.protocol.backoff import BackoffSettings, ReconnectPlan
from evstation.protocol.versions import OcppVersion
from evstation.runtime.link import (
    Connection,
    Connector,
    CsmsEndpoint,
    DialPlan,
    Link,
    LinkDown,
    LinkSettings,
    LinkState,
    run_link,
)
from evstation.runtime.testcsms import TestCsms, TimelineKind, serve_test_csms

STATION = "CS1"
PRIMARY = CsmsEndpoint(url="ws://primary.test/ocpp", priority=0, security_profile=0)
SECONDARY = CsmsEndpoint(url="ws://secondary.test/ocpp", priority=1, security_profile=0)
QUICK = BackoffSettings(wait_minimum_s=1.0, random_range_s=0.0, repeat_times=3, attempts_per_endpoint=2)


def settings(
    *endpoints: CsmsEndpoint, backoff: BackoffSettings = QUICK, ping_interval_s: float = 0.0
) -> LinkSettings:
    return LinkSettings(
        station_id=STATION,
        version=OcppVersion.V201,
        endpoints=endpoints or (PRIMARY,),
        backoff=backoff,
        ping_interval_s=ping_interval_s,
        pong_timeout_s=5.0,
        connect_timeout_s=10.0,
    )


async def idle(conn: Connection) -> None:
    await trio.sleep_forever()


@asynccontextmanager
async def station_and_csms(
    link_settings: LinkSettings,
    *,
    serve: Callable[[Connection], Awaitable[None]] = idle,
    connector: Callable[[TestCsms], Connector] | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[tuple[Link, TestCsms]]:
    # Virtual seconds: a hang becomes a failure after ~3 virtual hours, in milliseconds of real time.
    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            link = Link()
            connect = csms.open_memory_stream if connector is None else connector(csms)
            await nursery.start(
                functools.partial(
                    run_link, link_settings, link, serve, rng=rng or random.Random(0), connector=connect
                )
            )
            yield link, csms
            nursery.cancel_scope.cancel()


def disconnect_times(csms: TestCsms) -> list[float]:
    return [e.time for e in csms.timeline(STATION) if e.kind is TimelineKind.DISCONNECTED]


def connect_times(csms: TestCsms) -> list[float]:
    return [e.time for e in csms.timeline(STATION) if e.kind is TimelineKind.CONNECTED]


async def test_falls_back_to_next_endpoint_after_its_attempts(autojump_clock: trio.testing.MockClock) -> None:
    dials: list[tuple[float, str]] = []

    def connector(csms: TestCsms) -> Connector:
        async def connect(endpoint: CsmsEndpoint) -> trio.abc.Stream:
            dials.append((trio.current_time(), endpoint.url))
            if endpoint is PRIMARY:
                raise ConnectionRefusedError(111, "Connection refused")
            return await csms.open_memory_stream()

        return connect

    start = trio.current_time()
    async with station_and_csms(settings(SECONDARY, PRIMARY), connector=connector) as (link, _csms):
        conn = await link.wait_connected()
        assert conn.endpoint is SECONDARY
        # Given 2 attempts per endpoint and a 1 s first wait that doubles:
        assert [(t - start, url) for t, url in dials] == [
            (0.0, PRIMARY.url),
            (1.0, PRIMARY.url),
            (2.0, SECONDARY.url),  # new endpoint: the back-off sequence starts again
        ]
        assert link.statistics().failed_dials == 2
        assert "Connection refused" in (link.statistics().last_failure or "")


async def test_back_off_waits_match_the_plan_on_every_redial(autojump_clock: trio.testing.MockClock) -> None:
    """EVerest#2475: every re-dial waits, with the jitter drawn from the injected Random."""
    backoff = BackoffSettings(wait_minimum_s=2.0, random_range_s=3.0, repeat_times=2, attempts_per_endpoint=3)
    dials: list[float] = []

    def connector(csms: TestCsms) -> Connector:
        async def connect(endpoint: CsmsEndpoint) -> trio.abc.Stream:
            dials.append(trio.current_time())
            if len(dials) < 8:
                raise ConnectionRefusedError(111, "Connection refused")
            return await csms.open_memory_stream()

        return connect

    async with station_and_csms(settings(PRIMARY, SECONDARY, backoff=backoff), connector=connector) as (
        link,
        _,
    ):
        await link.wait_connected()
    plan = ReconnectPlan(backoff, 2, random.Random(0))
    plan.first_dial()
    expected = [plan.dial_failed().wait_s for _ in range(7)]
    assert [b - a for a, b in itertools.pairwise(dials)] == pytest.approx(expected)


async def test_redials_same_endpoint_with_first_wait_after_a_drop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with station_and_csms(settings(PRIMARY, SECONDARY)) as (link, csms):
        first = await link.wait_connected()
        dropped_at = trio.current_time()
        csms.drop(STATION)
        await csms.wait_connected(STATION, 2)
        second = await link.wait_connected()
        assert trio.current_time() - dropped_at == pytest.approx(QUICK.wait_minimum_s)
        assert second.endpoint is PRIMARY
        assert second.generation == first.generation + 1
        assert csms.max_connections_open(STATION) == 1


async def test_pong_timeout_reconnects(autojump_clock: trio.testing.MockClock) -> None:
    """libocpp #1175: a CSMS that stops answering pings is dead, and the station redials."""
    async with station_and_csms(settings(ping_interval_s=10.0)) as (link, csms):
        await link.wait_connected()
        connected_at = trio.current_time()
        csms.stall(STATION)
        await csms.wait_connected(STATION, 2)
        # ping at +10 s, no pong by +15 s, back off 1 s, connected again at +16 s.
        assert disconnect_times(csms)[0] - connected_at == pytest.approx(15.0)
        assert connect_times(csms)[1] - connected_at == pytest.approx(16.0)
        assert "no pong within 5 s" in (link.statistics().last_failure or "")
        assert csms.max_connections_open(STATION) == 1


async def test_answered_pings_keep_the_connection(autojump_clock: trio.testing.MockClock) -> None:
    async with station_and_csms(settings(ping_interval_s=10.0)) as (link, csms):
        conn = await link.wait_connected()
        await trio.sleep(3600)
        assert link.state is LinkState.CONNECTED
        assert link.generation == conn.generation
        assert csms.connections_total(STATION) == 1


async def test_network_cut_keeps_the_link_down_until_restored(autojump_clock: trio.testing.MockClock) -> None:
    async with station_and_csms(settings()) as (link, csms):
        await link.wait_connected()
        link.set_network(False)
        await link.wait_state(LinkState.NETWORK_DOWN)
        await trio.sleep(3600)  # virtual: an hour without a single dial
        assert link.state is LinkState.NETWORK_DOWN
        assert csms.connections_total(STATION) == 1
        # No closing handshake: the CSMS saw an abnormal closure.
        assert csms.timeline(STATION)[-1].kind is TimelineKind.DISCONNECTED
        assert csms.timeline(STATION)[-1].text == "code 1006"
        restored_at = trio.current_time()
        link.set_network(True)
        await link.wait_connected()
        assert trio.current_time() - restored_at == pytest.approx(QUICK.wait_minimum_s)
        assert csms.connections_total(STATION) == 2


async def test_network_cut_while_backing_off_stops_dialling(autojump_clock: trio.testing.MockClock) -> None:
    async with station_and_csms(settings()) as (link, csms):
        await link.wait_connected()
        csms.drop(STATION)
        await link.wait_state(LinkState.BACKING_OFF)
        link.set_network(False)
        await link.wait_state(LinkState.NETWORK_DOWN)
        await trio.sleep(600)
        assert csms.connections_total(STATION) == 1


class _Breakable(trio.abc.Stream):
    """A client stream whose sends can be made to fail, as a dead network interface would."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.broken = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.broken:
            await trio.lowlevel.checkpoint()
            raise trio.BrokenResourceError("interface down")
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.stream.receive_some(max_bytes)

    async def send_eof(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        await self.stream.aclose()


async def test_two_send_failures_of_one_generation_cause_one_reconnect(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """DESIGN.md: a message re-sent during a reconnect must not trigger another reconnect."""
    streams: list[_Breakable] = []

    def connector(csms: TestCsms) -> Connector:
        async def connect(endpoint: CsmsEndpoint) -> trio.abc.Stream:
            streams.append(_Breakable(await csms.open_memory_stream()))
            return streams[-1]

        return connect

    async with station_and_csms(settings(), connector=connector) as (link, csms):
        old = await link.wait_connected()
        streams[0].broken = True
        with pytest.raises(LinkDown, match="send failed"):
            await old.send_text('[2,"1","Heartbeat",{}]')
        with pytest.raises(LinkDown):
            await old.send_text('[2,"1","Heartbeat",{}]')  # the re-send, reported again
        new = await link.wait_connected()
        with pytest.raises(LinkDown):
            await old.send_text('[2,"1","Heartbeat",{}]')  # a stale sender after the reconnect
        await trio.sleep(60)
        assert link.state is LinkState.CONNECTED
        assert link.generation == new.generation == old.generation + 1
        stats = link.statistics()
        assert stats.reconnect_requests == 1
        assert stats.ignored_reconnect_requests == 2
        assert csms.connections_total(STATION) == 2


async def test_reconnect_request_closes_politely_and_only_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with station_and_csms(settings()) as (link, csms):
        conn = await link.wait_connected()
        link.request_reconnect(conn.generation, "new AuthorizationKey")
        link.request_reconnect(conn.generation, "new AuthorizationKey again")
        await csms.wait_connected(STATION, 2)
        await link.wait_connected()
        assert [e.text for e in csms.timeline(STATION) if e.kind is TimelineKind.DISCONNECTED] == [
            "code 1000"
        ]
        link.request_reconnect(conn.generation, "stale")
        await trio.sleep(60)
        assert csms.connections_total(STATION) == 2
        assert link.statistics().reconnect_requests == 1


async def test_serve_returning_closes_and_redials(autojump_clock: trio.testing.MockClock) -> None:
    async def one_heartbeat(conn: Connection) -> None:
        await conn.send_text('[2,"hb-1","Heartbeat",{}]')
        assert (await conn.receive_text()).startswith('[3,"hb-1"')

    async with station_and_csms(settings(), serve=one_heartbeat) as (link, csms):
        await csms.wait_for(STATION, "Heartbeat", count=3)
        assert link.generation >= 3
        assert csms.max_connections_open(STATION) == 1


async def test_session_sees_link_down_when_the_csms_drops(autojump_clock: trio.testing.MockClock) -> None:
    outcomes: list[str] = []

    async def reader(conn: Connection) -> None:
        try:
            await conn.receive_text()
        except LinkDown as exc:
            outcomes.append(str(exc))
            raise

    async with station_and_csms(settings(), serve=reader) as (link, csms):
        await link.wait_connected()
        csms.drop(STATION)
        await csms.wait_connected(STATION, 2)
        await link.wait_connected()
    assert outcomes and "closed" in outcomes[0]


async def test_a_bug_in_serve_crashes_the_link(autojump_clock: trio.testing.MockClock) -> None:
    async def buggy(conn: Connection) -> None:
        raise ZeroDivisionError("a bug, not a network failure")

    with pytest.RaisesGroup(ZeroDivisionError, flatten_subgroups=True):
        async with station_and_csms(settings(), serve=buggy) as (_link, _):
            await trio.sleep_forever()


def _plans_in_turn(plans: list[DialPlan]) -> Callable[[], Awaitable[DialPlan]]:
    """A plan source giving `plans` one per read, the last one from then on."""
    reads = 0

    async def plan_source() -> DialPlan:
        nonlocal reads
        reads += 1
        await trio.lowlevel.checkpoint()
        return plans[min(reads, len(plans)) - 1]

    return plan_source


async def test_a_plan_source_is_read_at_start_and_after_each_lost_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """2.0.1 B10.FR.03 / .04 (runtime/network_profiles.py is the real source): the plan's own attempts
    per endpoint apply (1, where the settings say 2); after a lost connection the plan is read again and
    the same slot redialled while the new plan has it, else the new plan's first endpoint."""
    third = CsmsEndpoint(url="ws://third.test/ocpp", priority=2, security_profile=0)
    plans = [
        DialPlan((PRIMARY, SECONDARY), attempts_per_endpoint=1),
        DialPlan((SECONDARY, PRIMARY), attempts_per_endpoint=1),
        DialPlan((third,), attempts_per_endpoint=1),
    ]
    reads = 0
    dials: list[str] = []

    async def plan_source() -> DialPlan:
        nonlocal reads
        reads += 1
        await trio.lowlevel.checkpoint()
        return plans[reads - 1]

    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)

            async def connect(endpoint: CsmsEndpoint) -> trio.abc.Stream:
                dials.append(endpoint.url)
                if endpoint is PRIMARY:
                    raise ConnectionRefusedError(111, "Connection refused")
                return await csms.open_memory_stream()

            link = Link()
            await nursery.start(
                functools.partial(
                    run_link,
                    settings(PRIMARY),
                    link,
                    idle,
                    rng=random.Random(0),
                    connector=connect,
                    plan_source=plan_source,
                )
            )
            assert (await link.wait_connected()).endpoint is SECONDARY
            assert dials == [PRIMARY.url, SECONDARY.url]
            csms.drop(STATION)
            await csms.wait_connected(STATION, 2)
            assert (await link.wait_connected()).endpoint is SECONDARY  # still in the plan: kept
            csms.drop(STATION)
            await csms.wait_connected(STATION, 3)
            assert (await link.wait_connected()).endpoint is third  # gone from the plan: its first
            assert dials == [PRIMARY.url, SECONDARY.url, SECONDARY.url, third.url]
            assert reads == 3
            nursery.cancel_scope.cancel()


async def test_the_plans_back_off_replaces_the_settings_from_the_next_lost_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RetryBackOffWaitMinimum set by the CSMS (carried by the plan read after a lost connection)
    times the redial; the settings' 1 s no longer applies."""
    slow = BackoffSettings(wait_minimum_s=100.0, random_range_s=0.0, repeat_times=0, attempts_per_endpoint=1)
    plans = [DialPlan((SECONDARY,), 1), DialPlan((SECONDARY,), 1, backoff=slow)]
    plan_source = _plans_in_turn(plans)

    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)

            async def connect(endpoint: CsmsEndpoint) -> trio.abc.Stream:
                return await csms.open_memory_stream()

            link = Link()
            await nursery.start(
                functools.partial(
                    run_link,
                    settings(SECONDARY),
                    link,
                    idle,
                    rng=random.Random(0),
                    connector=connect,
                    plan_source=plan_source,
                )
            )
            await link.wait_connected()
            dropped_at = trio.current_time()
            csms.drop(STATION)
            await csms.wait_connected(STATION, 2)
            waited = trio.current_time() - dropped_at
            nursery.cancel_scope.cancel()
    assert 100.0 <= waited < 101.0


async def test_the_plans_ping_interval_applies_to_the_connections_dialled_under_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """WebSocketPingInterval the CSMS set (carried by the plan) replaces the settings' 0: the next
    connection pings every 10 s, so a CSMS that stops answering is dropped 15 s after it stalls."""
    plans = [DialPlan((PRIMARY,), 1), DialPlan((PRIMARY,), 1, ping_interval_s=10.0)]
    plan_source = _plans_in_turn(plans)

    with trio.fail_after(10_000):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)

            async def connect(endpoint: CsmsEndpoint) -> trio.abc.Stream:
                return await csms.open_memory_stream()

            link = Link()
            rng = random.Random(0)
            run = functools.partial(
                run_link, settings(), link, idle, rng=rng, connector=connect, plan_source=plan_source
            )
            await nursery.start(run)
            await link.wait_connected()
            csms.stall(STATION)  # no pings on this connection (interval 0): it stays up
            await trio.sleep(3600)
            assert csms.connections_total(STATION) == 1
            csms.drop(STATION)  # the plan is read again: the next connection pings
            await csms.wait_connected(STATION, 2)
            stalled_at = trio.current_time()
            csms.stall(STATION)
            await csms.wait_connected(STATION, 3)
            nursery.cancel_scope.cancel()
    assert disconnect_times(csms)[1] - stalled_at == pytest.approx(15.0)

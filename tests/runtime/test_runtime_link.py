"""The link supervisor against the test CSMS over real websockets on 127.0.0.1 (profiles 0 and 1)."""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio_websocket

from evstation.protocol.backoff import BackoffSettings
from evstation.protocol.versions import OcppVersion
from evstation.runtime.link import Connection, CsmsEndpoint, Link, LinkDown, LinkSettings, LinkState, run_link
from evstation.runtime.testcsms import TestCsms, TimelineKind, serve_test_csms

STATION = "CS-0001"
PASSWORD = "correct-horse-battery-staple"
# Real clock: keep waits tiny so retries are quick, and bound every test.
FAST = BackoffSettings(wait_minimum_s=0.001, random_range_s=0.0, repeat_times=0, attempts_per_endpoint=3)
SLOW = BackoffSettings(wait_minimum_s=600.0, random_range_s=0.0, repeat_times=0, attempts_per_endpoint=3)
TEST_TIMEOUT_S = 20.0


def endpoint(csms: TestCsms, profile: int = 0, password: str | None = None) -> CsmsEndpoint:
    return CsmsEndpoint(
        url=f"ws://127.0.0.1:{csms.port}/ocpp/", priority=0, security_profile=profile, password=password
    )


def link_settings(
    ep: CsmsEndpoint, version: OcppVersion = OcppVersion.V201, backoff: BackoffSettings = FAST
) -> LinkSettings:
    return LinkSettings(
        station_id=STATION,
        version=version,
        endpoints=(ep,),
        backoff=backoff,
        ping_interval_s=0.0,
        pong_timeout_s=5.0,
        connect_timeout_s=5.0,
    )


async def idle(conn: Connection) -> None:
    await trio.sleep_forever()


@asynccontextmanager
async def running_link(settings: LinkSettings) -> AsyncIterator[Link]:
    link = Link()
    async with trio.open_nursery() as inner:
        await inner.start(functools.partial(run_link, settings, link, idle, rng=random.Random(0)))
        yield link
        inner.cancel_scope.cancel()


@pytest.mark.parametrize("version", list(OcppVersion))
async def test_connects_with_the_versions_subprotocol(version: OcppVersion) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            async with running_link(link_settings(endpoint(csms), version)) as link:
                conn = await link.wait_connected()
                assert conn.version is version
                assert csms.version(STATION) is version
                await conn.send_text('[2,"hb-1","Heartbeat",{}]')
                kind, message_id, payload = json.loads(await conn.receive_text())
                assert (kind, message_id) == (3, "hb-1")
                assert payload["currentTime"].endswith("Z")
                assert [f.kind for f in csms.frames(STATION)] == [TimelineKind.RECEIVED, TimelineKind.SENT]
            nursery.cancel_scope.cancel()


async def test_nothing_is_sent_once_the_network_is_cut() -> None:
    """set_network(False) is a pulled cable: a frame sent before the cut attempt's task has unwound (from
    another task, as a block's call is) raises LinkDown and never reaches the CSMS."""
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            async with running_link(link_settings(endpoint(csms))) as link:
                conn = await link.wait_connected()
                link.set_network(False)
                with pytest.raises(LinkDown, match="network cut"):
                    await conn.send_text('[2,"hb-1","Heartbeat",{}]')
                assert not await conn.responsive()  # not even a ping goes out
                await link.wait_state(LinkState.OFFLINE)
                assert not csms.received(STATION)
            nursery.cancel_scope.cancel()


async def test_refuses_a_csms_that_selects_no_subprotocol(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(functools.partial(serve_test_csms, accepted_subprotocols=()))
            async with running_link(link_settings(endpoint(csms))) as link:
                await csms.wait_connected(STATION, 3)  # refused, and retried
                assert link.statistics().connections == 0
                assert "did not select subprotocol ocpp2.0.1" in (link.statistics().last_failure or "")
            nursery.cancel_scope.cancel()
    assert "did not select subprotocol ocpp2.0.1" in caplog.text
    assert not csms.received(STATION)


async def test_basic_auth_profile_1_is_accepted() -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(
                functools.partial(serve_test_csms, passwords={STATION: PASSWORD})
            )
            async with running_link(link_settings(endpoint(csms, 1, PASSWORD))) as link:
                await link.wait_connected()
                assert csms.connections_open(STATION) == 1
            nursery.cancel_scope.cancel()


async def test_wrong_password_is_a_clear_401_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-password-0123456789"
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(
                functools.partial(serve_test_csms, passwords={STATION: PASSWORD})
            )
            ep = endpoint(csms, 1, wrong)
            async with running_link(link_settings(ep, backoff=SLOW)) as link:
                await link.wait_state(LinkState.BACKING_OFF)
                stats = link.statistics()
            nursery.cancel_scope.cancel()
    assert "HTTP 401 Unauthorized" in caplog.text
    assert "HTTP 401" in (stats.last_failure or "")
    assert csms.timeline(STATION)[0].kind is TimelineKind.REJECTED
    for text in (caplog.text, repr(ep), repr(stats), str(csms.timeline())):
        assert wrong not in text
        assert PASSWORD not in text


async def _refusing_server(
    response: bytes, *, close: bool, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A raw HTTP server: reads the upgrade request's head, answers `response` and (with `close`)
    hangs up, as Daphne does when it refuses an upgrade (no Content-Length: the body ends at close)."""

    async def answer(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some()
            if not chunk:
                return
            request += chunk
        await stream.send_all(response)
        if close:
            await stream.aclose()
        else:
            await trio.sleep_forever()

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(answer, listeners)


@pytest.mark.parametrize(
    ("response", "close", "expected"),
    [
        (b"HTTP/1.1 403 Forbidden\r\nServer: daphne\r\n\r\n", True, "HTTP 403"),
        (b"HTTP/1.1 500 Internal Server Error\r\n\r\nTraceback...", True, "HTTP 500"),
        (b"HTTP/1.1 401 Unauthorized\r\n\r\n", True, "HTTP 401 Unauthorized"),
        # Not even closed: the refusal is still reported after a short grace for the body.
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", False, "HTTP 403"),
    ],
    ids=["403-close", "500-close", "401-close", "403-open"],
)
async def test_a_refused_upgrade_without_content_length_is_reported_at_once(
    caplog: pytest.LogCaptureFixture, response: bytes, close: bool, expected: str
) -> None:
    """trio-websocket 0.12 waits for such a refusal until the connect timeout (30 s here) and loses the
    status; the link reports it within a second or so (docs/link.md)."""
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(functools.partial(_refusing_server, response, close=close))
            ep = CsmsEndpoint(url=f"ws://127.0.0.1:{port}/ocpp", priority=0, security_profile=0)
            settings = link_settings(ep, backoff=SLOW)
            settings = dataclasses.replace(settings, connect_timeout_s=30.0)
            start = trio.current_time()
            async with running_link(settings) as link:
                await link.wait_state(LinkState.BACKING_OFF)
                elapsed = trio.current_time() - start
                stats = link.statistics()
            nursery.cancel_scope.cancel()
    assert elapsed < 5.0
    assert expected in (stats.last_failure or "")
    assert expected in caplog.text


async def test_frames_sent_just_before_the_csms_hangs_up_are_still_read() -> None:
    """The session reads straight from the websocket: what arrived before the close comes first, then
    LinkDown, whether the CSMS closes politely or just drops the TCP connection."""
    got: list[str] = []
    ended = trio.Event()

    async def read_all(conn: Connection) -> None:
        try:
            while True:
                got.append(await conn.receive_text())
        finally:
            ended.set()

    async def talk_then_hang_up(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept(subprotocol="ocpp2.0.1")
        for n in range(3):
            await ws.send_message(f'[2,"c{n}","Reset",{{"type":"Immediate"}}]')
        await ws.aclose()

    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, talk_then_hang_up, "127.0.0.1", 0, None
            )
            ep = CsmsEndpoint(url=f"ws://127.0.0.1:{server.port}/ocpp", priority=0, security_profile=0)
            link = Link()
            settings = link_settings(ep, backoff=SLOW)
            await nursery.start(functools.partial(run_link, settings, link, read_all, rng=random.Random(0)))
            await ended.wait()
            await link.wait_state(LinkState.BACKING_OFF)
            nursery.cancel_scope.cancel()
    assert [json.loads(frame)[1] for frame in got] == ["c0", "c1", "c2"]
    assert "1000 NORMAL_CLOSURE" in (link.statistics().last_failure or "")


async def test_reconnects_after_the_csms_drops_the_socket() -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            async with running_link(link_settings(endpoint(csms))) as link:
                first = await link.wait_connected()
                csms.drop(STATION)
                await csms.wait_connected(STATION, 2)
                second = await link.wait_connected()
                assert second.generation > first.generation
                await second.send_text('[2,"hb-2","Heartbeat",{}]')
                assert json.loads(await second.receive_text())[1] == "hb-2"
            nursery.cancel_scope.cancel()


async def test_unreachable_csms_is_retried_with_a_clear_log(caplog: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(TEST_TIMEOUT_S):
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()  # nothing listens on this port now
        ep = CsmsEndpoint(url=f"ws://127.0.0.1:{port}/ocpp", priority=0, security_profile=0)
        async with running_link(link_settings(ep, backoff=SLOW)) as link:
            await link.wait_state(LinkState.BACKING_OFF)
    assert "cannot reach 127.0.0.1" in caplog.text


async def test_hundred_rapid_drops_never_show_two_connections() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            async with running_link(link_settings(endpoint(csms))) as link:
                for cycle in range(1, 101):
                    await csms.wait_connected(STATION, cycle)
                    assert csms.connections_open(STATION) == 1
                    csms.drop(STATION)
                await csms.wait_connected(STATION, 101)
                await link.wait_connected()
            nursery.cancel_scope.cancel()
    assert csms.connections_total(STATION) == 101
    assert csms.max_connections_open(STATION) == 1


def test_a_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ValueError, match="must not carry user:password@") as caught:
        CsmsEndpoint(url=f"ws://CS:{PASSWORD}@127.0.0.1:9/ocpp", priority=0, security_profile=0)
    assert PASSWORD not in str(caught.value)


async def test_the_password_is_never_logged_on_a_good_connection(caplog: pytest.LogCaptureFixture) -> None:
    # DEBUG for every logger, trio-websocket's and wsproto's included.
    caplog.set_level(logging.DEBUG, logger="")
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(
                functools.partial(serve_test_csms, passwords={STATION: PASSWORD})
            )
            async with running_link(link_settings(endpoint(csms, 1, PASSWORD))) as link:
                conn = await link.wait_connected()
                await conn.send_text('[2,"1","Heartbeat",{}]')
                await conn.receive_text()
                stats = link.statistics()
            nursery.cancel_scope.cancel()
    token = base64.b64encode(f"{STATION}:{PASSWORD}".encode()).decode()
    for text in (caplog.text, repr(stats), repr(conn.endpoint), str(csms.timeline())):
        assert PASSWORD not in text
        assert token not in text

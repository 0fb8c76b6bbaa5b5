"""Security profiles 2 and 3 over real TLS on 127.0.0.1 with trustme certificates, and the clear log line
for each way TLS can fail."""

from __future__ import annotations

import datetime
import functools
import logging
import random
import ssl
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trustme

from evstation.protocol.backoff import BackoffSettings
from evstation.protocol.versions import OcppVersion
from evstation.runtime.link import Connection, CsmsEndpoint, Link, LinkSettings, LinkState, run_link
from evstation.runtime.testcsms import TestCsms, TimelineKind, serve_test_csms
from evstation.runtime.tls import HandshakeWitness, SecurityFailure, TlsConfigError, client_context

STATION = "CS-TLS"
PASSWORD = "tls-basic-auth-password-0001"
SLOW = BackoffSettings(wait_minimum_s=600.0, random_range_s=0.0, repeat_times=0, attempts_per_endpoint=3)
TEST_TIMEOUT_S = 20.0


def write_ca(ca: trustme.CA, tmp_path: Path, name: str = "csms-ca.pem") -> Path:
    path = tmp_path / name
    ca.cert_pem.write_to_path(str(path))
    return path


def write_client_cert(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    leaf = ca.issue_cert(STATION)
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    for i, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(str(cert), append=i > 0)
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


def server_context(ca: trustme.CA, *identities: str, require_client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*identities).configure_cert(ctx)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(ctx)
    return ctx


async def idle(conn: Connection) -> None:
    await trio.sleep_forever()


@asynccontextmanager
async def csms_and_link(
    server_ctx: ssl.SSLContext,
    make_endpoint: functools.partial[CsmsEndpoint],
    passwords: dict[str, str] | None = None,
) -> AsyncIterator[tuple[TestCsms, Link]]:
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(
                functools.partial(serve_test_csms, ssl_context=server_ctx, passwords=passwords)
            )
            settings = LinkSettings(
                station_id=STATION,
                version=OcppVersion.V16,
                endpoints=(make_endpoint(url=f"wss://127.0.0.1:{csms.port}/ocpp"),),
                backoff=SLOW,
                ping_interval_s=0.0,
                connect_timeout_s=5.0,
            )
            link = Link()
            await nursery.start(functools.partial(run_link, settings, link, idle, rng=random.Random(0)))
            yield csms, link
            nursery.cancel_scope.cancel()


async def assert_refused(link: Link, caplog: pytest.LogCaptureFixture, expected: str) -> None:
    await link.wait_state(LinkState.BACKING_OFF)
    assert link.statistics().connections == 0
    assert expected in (link.statistics().last_failure or "")
    assert expected in caplog.text


async def test_profile_2_tls_with_basic_auth_connects(csms_ca: trustme.CA, tmp_path: Path) -> None:
    ep = functools.partial(CsmsEndpoint, priority=0, security_profile=2, password=PASSWORD)
    ep = functools.partial(ep, ca_bundle=write_ca(csms_ca, tmp_path))
    async with csms_and_link(server_context(csms_ca, "127.0.0.1"), ep, {STATION: PASSWORD}) as (csms, link):
        conn = await link.wait_connected()
        await conn.send_text('[2,"1","Heartbeat",{}]')
        assert (await conn.receive_text()).startswith('[3,"1"')
        assert csms.connections_open(STATION) == 1


async def test_profile_3_client_certificate_connects(csms_ca: trustme.CA, tmp_path: Path) -> None:
    cert, key = write_client_cert(csms_ca, tmp_path)
    ep = functools.partial(
        CsmsEndpoint,
        priority=0,
        security_profile=3,
        ca_bundle=write_ca(csms_ca, tmp_path),
        client_cert=cert,
        client_key=key,
    )
    server = server_context(csms_ca, "127.0.0.1", require_client_cert=True)
    async with csms_and_link(server, ep) as (csms, link):
        await link.wait_connected()
        assert csms.connections_open(STATION) == 1


async def test_wrong_ca_is_refused(
    csms_ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    other_ca = write_ca(trustme.CA(), tmp_path, "other-ca.pem")
    ep = functools.partial(
        CsmsEndpoint, priority=0, security_profile=2, password=PASSWORD, ca_bundle=other_ca
    )
    async with csms_and_link(server_context(csms_ca, "127.0.0.1"), ep) as (_, link):
        await assert_refused(link, caplog, "is not signed by a trusted CA")


async def test_expired_certificate_is_refused(
    csms_ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    long_ago = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    csms_ca.issue_cert(
        "127.0.0.1", not_before=long_ago, not_after=long_ago + datetime.timedelta(days=1)
    ).configure_cert(ctx)
    ep = functools.partial(
        CsmsEndpoint, priority=0, security_profile=2, password=PASSWORD, ca_bundle=write_ca(csms_ca, tmp_path)
    )
    async with csms_and_link(ctx, ep) as (_, link):
        await assert_refused(link, caplog, "certificate for 127.0.0.1 has expired")


async def test_host_name_mismatch_is_refused(
    csms_ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ep = functools.partial(
        CsmsEndpoint, priority=0, security_profile=2, password=PASSWORD, ca_bundle=write_ca(csms_ca, tmp_path)
    )
    async with csms_and_link(server_context(csms_ca, "csms.example.com"), ep) as (_, link):
        await assert_refused(link, caplog, "does not match host name '127.0.0.1'")


async def test_missing_client_certificate_is_refused(
    csms_ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A station without a client certificate against a CSMS that requires one (profile 3 CSMS)."""
    ep = functools.partial(
        CsmsEndpoint, priority=0, security_profile=2, password=PASSWORD, ca_bundle=write_ca(csms_ca, tmp_path)
    )
    server = server_context(csms_ca, "127.0.0.1", require_client_cert=True)
    async with csms_and_link(server, ep) as (csms, link):
        await assert_refused(link, caplog, "requires a client certificate")
        assert csms.connections_total(STATION) == 0


async def test_untrusted_client_certificate_is_refused(
    csms_ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = write_client_cert(trustme.CA(), tmp_path)  # signed by a CA the CSMS does not trust
    ep = functools.partial(
        CsmsEndpoint,
        priority=0,
        security_profile=3,
        ca_bundle=write_ca(csms_ca, tmp_path),
        client_cert=cert,
        client_key=key,
    )
    server = server_context(csms_ca, "127.0.0.1", require_client_cert=True)
    async with csms_and_link(server, ep) as (csms, link):
        await assert_refused(link, caplog, "does not trust our client certificate")
        assert any(e.kind is TimelineKind.TLS_FAILED for e in csms.timeline())


def test_profile_3_without_client_certificate_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="security profile 3 needs client_cert and client_key"):
        CsmsEndpoint(url="wss://csms.example.com/ocpp", priority=0, security_profile=3)


@pytest.mark.parametrize(
    ("profile", "url", "message"),
    [
        (0, "wss://csms.example.com/ocpp", "needs a ws:// URL"),
        (1, "wss://csms.example.com/ocpp", "needs a ws:// URL"),
        (2, "ws://csms.example.com/ocpp", "needs a wss:// URL"),
        (3, "ws://csms.example.com/ocpp", "needs a wss:// URL"),
        (4, "wss://csms.example.com/ocpp", "must be 0, 1, 2 or 3"),
    ],
)
def test_profile_and_scheme_must_agree(profile: int, url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CsmsEndpoint(url=url, priority=0, security_profile=profile, password=PASSWORD)


def test_basic_auth_profiles_need_a_password() -> None:
    with pytest.raises(ValueError, match="needs a Basic-auth password"):
        CsmsEndpoint(url="wss://csms.example.com/ocpp", priority=0, security_profile=2)


def test_client_context_is_tls12_plus_and_verifies(csms_ca: trustme.CA, tmp_path: Path) -> None:
    ctx = client_context(
        security_profile=2, ca_bundle=write_ca(csms_ca, tmp_path), client_cert=None, client_key=None
    )
    assert ctx.minimum_version is ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname


def test_unreadable_ca_bundle_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(TlsConfigError, match=r"nope\.pem"):
        client_context(security_profile=2, ca_bundle=missing, client_cert=None, client_key=None)


async def test_unreadable_client_key_is_logged_and_retried(
    csms_ca: trustme.CA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    ep = functools.partial(
        CsmsEndpoint,
        priority=0,
        security_profile=3,
        ca_bundle=write_ca(csms_ca, tmp_path),
        client_cert=tmp_path / "missing.pem",
        client_key=tmp_path / "missing.key",
    )
    async with csms_and_link(server_context(csms_ca, "127.0.0.1"), ep) as (_, link):
        await assert_refused(link, caplog, "cannot load client certificate")


def test_client_context_offers_the_tls12_suites_ocpp_requires(csms_ca: trustme.CA, tmp_path: Path) -> None:
    """2.0.1 A00.FR.318 / 1.6 whitepaper: ECDHE-ECDSA AES-GCM and plain RSA AES-GCM, both key sizes."""
    ctx = client_context(
        security_profile=2, ca_bundle=write_ca(csms_ca, tmp_path), client_cert=None, client_key=None
    )
    offered = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert offered >= {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
    }
    # Nothing weaker than AES-GCM with an AEAD MAC slipped in.
    assert all("GCM" in name for name in offered), offered


async def test_rsa_only_tls12_csms_is_reachable(tmp_path: Path) -> None:
    """A CSMS with an RSA certificate that offers only TLS_RSA_WITH_AES_128_GCM_SHA256 over TLS 1.2."""
    rsa_ca = trustme.CA(key_type=trustme.KeyType.RSA)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    rsa_ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA).configure_cert(server)
    server.maximum_version = ssl.TLSVersion.TLSv1_2
    server.set_ciphers("AES128-GCM-SHA256")
    ep = functools.partial(CsmsEndpoint, priority=0, security_profile=2, password=PASSWORD)
    ep = functools.partial(ep, ca_bundle=write_ca(rsa_ca, tmp_path))
    async with csms_and_link(server, ep, {STATION: PASSWORD}) as (csms, link):
        await link.wait_connected()
        assert csms.connections_open(STATION) == 1


# -- what a refusing CSMS refused -----------------------------------------------------------------
# Two kinds of refusing server: the test CSMS (trio's SSLStream closes without sending its alert, like
# many TLS stacks do) and a raw OpenSSL server that sends the alert before closing (as nginx does).


def legacy_only(ctx: ssl.SSLContext) -> None:
    """A CSMS that speaks only TLS 1.0 and 1.1 (OpenSSL 3 needs security level 0 for them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # legacy on purpose: that is the test
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")


def weak_ciphers_only(ctx: ssl.SSLContext) -> None:
    """TLS 1.2 with CBC-SHA1 suites only: none of the AES-GCM suites OCPP requires."""
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")


def tls12_client_certificate(ca: trustme.CA) -> Callable[[ssl.SSLContext], None]:
    """TLS 1.2, a client certificate from `ca` required (1.2: refused inside the handshake)."""

    def configure(ctx: ssl.SSLContext) -> None:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(ctx)

    return configure


async def serve_alerting_tls(
    ctx: ssl.SSLContext, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """A TLS server that, unlike trio's SSLStream, sends OpenSSL's alert before it hangs up."""

    async def handshake(stream: trio.SocketStream) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(incoming, outgoing, server_side=True)
        async with stream:
            while True:
                try:
                    tls.do_handshake()
                    return
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLError:
                    await stream.send_all(outgoing.read())  # the alert
                    return
                if outgoing.pending:
                    await stream.send_all(outgoing.read())
                data = await stream.receive_some()
                if not data:
                    return
                incoming.write(data)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    await trio.serve_listeners(handshake, listeners)


@pytest.mark.parametrize("alerting", [False, True], ids=["closes", "alerts"])
@pytest.mark.parametrize(
    ("configure", "profile_3", "silent", "with_alert"),
    [
        (legacy_only, False, "in answer to our TLS hello", "refused our protocol versions"),
        (weak_ciphers_only, False, "in answer to our TLS hello", "shares no cipher suite"),
        ("untrusted-client", True, "rejected our client certificate", "rejected our client certificate"),
        ("no-client", False, "requires a client certificate", "requires a client certificate"),
    ],
    ids=["tls1.0-1.1-only", "weak-ciphers-only", "client-cert-rejected", "client-cert-missing"],
)
async def test_a_refused_handshake_says_what_was_refused(
    csms_ca: trustme.CA,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    configure: Callable[[ssl.SSLContext], None] | str,
    profile_3: bool,
    silent: str,
    with_alert: str,
    alerting: bool,
) -> None:
    """Not UNEXPECTED_EOF_WHILE_READING: the protocol versions, the cipher suites or the client
    certificate, as far as the handshake lets us know (a bare close after our hello cannot tell the
    first two apart)."""
    server = server_context(csms_ca, "127.0.0.1")
    if isinstance(configure, str):
        tls12_client_certificate(csms_ca)(server)
    else:
        configure(server)
    ca_bundle = write_ca(csms_ca, tmp_path)
    if profile_3:
        cert, key = write_client_cert(trustme.CA(), tmp_path)  # a CA the CSMS does not trust
        ep = functools.partial(
            CsmsEndpoint,
            priority=0,
            security_profile=3,
            ca_bundle=ca_bundle,
            client_cert=cert,
            client_key=key,
        )
    else:
        ep = functools.partial(
            CsmsEndpoint, priority=0, security_profile=2, password=PASSWORD, ca_bundle=ca_bundle
        )
    if not alerting:
        async with csms_and_link(server, ep) as (_, link):
            await assert_refused(link, caplog, silent)
    else:
        with trio.fail_after(TEST_TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                port = await nursery.start(serve_alerting_tls, server)
                settings = LinkSettings(
                    station_id=STATION,
                    version=OcppVersion.V16,
                    endpoints=(ep(url=f"wss://127.0.0.1:{port}/ocpp"),),
                    backoff=SLOW,
                    ping_interval_s=0.0,
                    connect_timeout_s=5.0,
                )
                link = Link()
                await nursery.start(functools.partial(run_link, settings, link, idle, rng=random.Random(0)))
                await assert_refused(link, caplog, with_alert)
                nursery.cancel_scope.cancel()
    assert "UNEXPECTED_EOF" not in caplog.text


def test_the_witness_reads_only_the_plaintext_handshake() -> None:
    """Record by record, split anywhere: server hello, then a certificate request; encrypted records
    (TLS 1.3 after its hello) end the reading."""

    def record(content_type: int, body: bytes) -> bytes:
        return bytes([content_type, 3, 3]) + len(body).to_bytes(2, "big") + body

    def message(message_type: int, body: bytes) -> bytes:
        return bytes([message_type]) + len(body).to_bytes(3, "big") + body

    flight = record(22, message(2, b"h" * 70) + message(11, b"c" * 3000)) + record(22, message(13, b"r" * 20))
    witness = HandshakeWitness()
    for i in range(0, len(flight), 7):
        witness.feed(flight[i : i + 7])
    assert (witness.server_hello, witness.certificate_request, witness.done) == (True, True, False)
    witness.feed(record(20, b"\x01") + record(22, message(13, b"")))
    assert witness.done
    tls13 = HandshakeWitness()
    tls13.feed(record(22, message(2, b"h" * 90)) + record(23, b"x" * 50) + record(22, message(13, b"")))
    assert (tls13.server_hello, tls13.certificate_request) == (True, False)
    junk = HandshakeWitness()
    junk.feed(b"\x16\x03\x03\xff\xff" + b"z" * 70_000)  # never a whole record: gives up, bounded
    assert junk.done and not junk.server_hello


def write_expired_client_cert(ca: trustme.CA, tmp_path: Path) -> tuple[Path, Path]:
    long_ago = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    leaf = ca.issue_cert(STATION, not_before=long_ago, not_after=long_ago + datetime.timedelta(days=1))
    cert, key = tmp_path / "expired.pem", tmp_path / "expired.key"
    for i, blob in enumerate(leaf.cert_chain_pems):
        blob.write_to_path(str(cert), append=i > 0)
    leaf.private_key_pem.write_to_path(str(key))
    return cert, key


@pytest.mark.parametrize("version", [OcppVersion.V16, OcppVersion.V201])
@pytest.mark.parametrize(
    ("client", "alerting", "event"),
    [
        ("untrusted", True, True),
        ("expired", True, True),
        ("none", True, True),
        ("untrusted", False, False),
    ],
    ids=["unknown-ca-alert", "certificate-expired-alert", "certificate-required-alert", "bare-close"],
)
async def test_a04_a_tls13_alert_refusing_our_certificate_after_the_handshake_is_failed_to_authenticate(
    csms_ca: trustme.CA, tmp_path: Path, version: OcppVersion, client: str, alerting: bool, event: bool
) -> None:
    """TLS 1.3: our handshake is over before the CSMS checks our client certificate, so its refusal is
    an alert on the first read after the handshake (unknown_ca, certificate_expired,
    certificate_required). It is the CSMS rejecting our credentials: FailedToAuthenticateAtCsms (1.6
    FailedToAuthenticateAtCentralSystem), as during a TLS 1.2 handshake. A CSMS that just hangs up says
    nothing we could name: no event (2.0.1 part 2 appendix security events; 1.6 security whitepaper)."""
    server = server_context(csms_ca, "127.0.0.1", require_client_cert=True)
    server.minimum_version = ssl.TLSVersion.TLSv1_3
    ca_bundle = write_ca(csms_ca, tmp_path)
    if client == "none":
        endpoint = functools.partial(
            CsmsEndpoint, priority=0, security_profile=2, password=PASSWORD, ca_bundle=ca_bundle
        )
    else:
        cert, key = (
            write_client_cert(trustme.CA(), tmp_path)
            if client == "untrusted"
            else write_expired_client_cert(csms_ca, tmp_path)
        )
        endpoint = functools.partial(
            CsmsEndpoint,
            priority=0,
            security_profile=3,
            ca_bundle=ca_bundle,
            client_cert=cert,
            client_key=key,
        )
    told: list[tuple[SecurityFailure, str]] = []
    with trio.fail_after(TEST_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            if alerting:
                port = await nursery.start(serve_alerting_tls, server)
            else:
                csms: TestCsms = await nursery.start(functools.partial(serve_test_csms, ssl_context=server))
                port = csms.port
            settings = LinkSettings(
                station_id=STATION,
                version=version,
                endpoints=(endpoint(url=f"wss://127.0.0.1:{port}/ocpp"),),
                backoff=SLOW,
                ping_interval_s=0.0,
                connect_timeout_s=5.0,
            )
            link = Link(on_security_failure=lambda failure, text: told.append((failure, text)))
            await nursery.start(functools.partial(run_link, settings, link, idle, rng=random.Random(0)))
            await link.wait_state(LinkState.BACKING_OFF)
            failure = link.statistics().last_failure or ""
            nursery.cancel_scope.cancel()
    if event:
        [(kind, text)] = told
        assert kind is SecurityFailure.CREDENTIALS_REFUSED
        assert "client certificate" in text and text == failure
    else:
        assert told == []
        assert "does not trust our client certificate" in failure

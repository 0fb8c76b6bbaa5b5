"""Shared test settings. Every Trio test runs under pytest-trio (trio_mode in pyproject.toml)."""


# --- CSMS link and test CSMS (tests/runtime/test_runtime_link*.py, *_tls*.py, *_testcsms*.py) ---

import ssl as _ssl

import pytest
import trustme


@pytest.fixture
def csms_ca() -> trustme.CA:
    """The CA that signs the test CSMS's certificate (and the stations' client certificates)."""
    return trustme.CA()


@pytest.fixture
def csms_server_context(csms_ca: trustme.CA) -> _ssl.SSLContext:
    """A server context for wss://127.0.0.1 signed by `csms_ca`, with no client certificate required."""
    ctx = _ssl.create_default_context(_ssl.Purpose.CLIENT_AUTH)
    csms_ca.issue_cert("127.0.0.1").configure_cert(ctx)
    return ctx

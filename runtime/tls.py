"""TLS for the CSMS link: client contexts for security profiles 2 and 3, and readable TLS failures.

It must never weaken verification (no CERT_NONE, no check_hostname=False) and never log key material.
"""

from __future__ import annotations

import enum
import ssl
from pathlib import Path
from typing import Final

# OCPP 2.0.1 A00.FR.318 / 1.6 security whitepaper: a station must offer TLS_ECDHE_ECDSA_WITH_AES_128/256_GCM
# and TLS_RSA_WITH_AES_128/256_GCM (the last two, OpenSSL's "AES128-GCM-SHA256" / "AES256-GCM-SHA384",
# for CSMSs with an RSA certificate and no ECDHE). ECDHE-RSA comes before plain RSA so that forward
# secrecy wins whenever the CSMS allows it. TLS 1.3 suites are not affected by set_ciphers and stay at
# OpenSSL's (all AEAD) defaults.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "AES128-GCM-SHA256",
        "AES256-GCM-SHA384",
    )
)

# OpenSSL X509_V_ERR_* codes we turn into a sentence.
_X509_CERT_NOT_YET_VALID = 9
_X509_CERT_HAS_EXPIRED = 10
_X509_UNTRUSTED = frozenset({18, 19, 20, 21})  # self-signed leaf/chain, unknown issuer, unverifiable leaf
_X509_NAME_MISMATCH = frozenset({62, 64})  # host name, IP address


# TLS record content types and handshake message types (RFC 5246 / RFC 8446) the witness reads.
_RECORD_ALERT = 21
_RECORD_HANDSHAKE = 22
_HANDSHAKE_SERVER_HELLO = 2
_HANDSHAKE_CERTIFICATE_REQUEST = 13
_RECORD_HEADER = 5
_HANDSHAKE_HEADER = 4
# A server's plaintext handshake (hello, certificate chain, requests) fits in this; past it we stop.
_MAX_WITNESSED_BYTES = 64 * 1024


class HandshakeWitness:
    """What the CSMS showed of itself in the plaintext part of a TLS handshake, fed the raw bytes it sent.

    A CSMS that refuses our handshake often just closes the connection (OpenSSL then says
    UNEXPECTED_EOF_WHILE_READING) or sends a generic handshake_failure alert. How far it got tells us
    what it refused: nothing back at all is a refusal of our hello (protocol versions, cipher suites);
    a certificate request in a TLS 1.2 handshake followed by a close is a refusal of our client
    certificate. Pure: bytes in, facts out. Stops reading once the handshake turns encrypted.
    """

    def __init__(self) -> None:
        self.server_hello = False
        self.certificate_request = False
        self.done = False
        self._records = bytearray()
        self._handshake = bytearray()

    def feed(self, data: bytes | bytearray) -> None:
        """Bytes the CSMS sent, in order. Malformed input just ends the reading."""
        if self.done:
            return
        self._records += data
        while len(self._records) >= _RECORD_HEADER:
            length = int.from_bytes(self._records[3:5], "big")
            if len(self._records) < _RECORD_HEADER + length:
                break
            content_type = self._records[0]
            fragment = self._records[_RECORD_HEADER : _RECORD_HEADER + length]
            del self._records[: _RECORD_HEADER + length]
            if content_type == _RECORD_HANDSHAKE:
                self._handshake += fragment
                self._read_handshake()
            elif content_type != _RECORD_ALERT:
                # ChangeCipherSpec or application data: the rest is encrypted (all of TLS 1.3's).
                self.done = True
                return
        if len(self._records) + len(self._handshake) > _MAX_WITNESSED_BYTES:
            self.done = True

    def _read_handshake(self) -> None:
        while len(self._handshake) >= _HANDSHAKE_HEADER:
            length = int.from_bytes(self._handshake[1:4], "big")
            if len(self._handshake) < _HANDSHAKE_HEADER + length:
                return
            message_type = self._handshake[0]
            if message_type == _HANDSHAKE_SERVER_HELLO:
                self.server_hello = True
            elif message_type == _HANDSHAKE_CERTIFICATE_REQUEST:
                self.certificate_request = True
            del self._handshake[: _HANDSHAKE_HEADER + length]


class TlsConfigError(ValueError):
    """The endpoint's TLS settings cannot work (a missing or unreadable file); the text names it."""


def client_context(
    *, security_profile: int, ca_bundle: Path | None, client_cert: Path | None, client_key: Path | None
) -> ssl.SSLContext:
    """An SSL context for a `wss://` CSMS under security profile 2 or 3.

    The CSMS certificate is verified against `ca_bundle` (or the system trust store when None) and
    against the host name; TLS 1.2 is the minimum. Profile 3 loads the client certificate and key.

    Raises:
        TlsConfigError: profile not 2/3, a profile 3 without certificate or key, or a file that cannot
            be loaded.
    """
    if security_profile not in (2, 3):
        raise TlsConfigError(f"security profile {security_profile} does not use TLS")
    # PROTOCOL_TLS_CLIENT turns on CERT_REQUIRED and check_hostname; we never turn them off.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    if ca_bundle is None:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    else:
        # A configured CSMS root replaces the system store: only that CA may vouch for the CSMS.
        try:
            ctx.load_verify_locations(cafile=str(ca_bundle))
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(f"cannot load CSMS CA bundle {ca_bundle}: {_reason(exc)}") from None
    if security_profile == 3:
        if client_cert is None or client_key is None:
            raise TlsConfigError(
                "security profile 3 needs a client certificate and key (client_cert, client_key)"
            )
        try:
            ctx.load_cert_chain(certfile=str(client_cert), keyfile=str(client_key))
        except (OSError, ssl.SSLError) as exc:
            raise TlsConfigError(
                f"cannot load client certificate {client_cert} / key {client_key}: {_reason(exc)}"
            ) from None
    return ctx


# OpenSSL reason words of a CSMS refusing our client certificate (the alerts of RFC 8446 section 6.2 a
# server sends about the client's certificate), and of one refusing our TLS versions.
_CLIENT_CERT_REFUSED: Final = (
    "UNKNOWN_CA",
    "BAD_CERTIFICATE",
    "CERTIFICATE_UNKNOWN",
    "CERTIFICATE_EXPIRED",
    "CERTIFICATE_REVOKED",
    "UNSUPPORTED_CERTIFICATE",
    "ACCESS_DENIED",
)
_VERSION_REFUSED: Final = ("PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL")


def describe_tls_failure(
    exc: ssl.SSLError | OSError,
    host: str,
    witness: HandshakeWitness | None = None,
    *,
    client_certificate: bool = False,
) -> str:
    """One sentence saying why a TLS handshake with the CSMS at `host` failed.

    With the `witness` of the handshake, a CSMS that closed the connection or sent a generic
    handshake_failure alert is told apart by how far it got: refusing our hello (TLS versions, cipher
    suites), or our client certificate (`client_certificate`: we had one to send).
    """
    reason = (exc.reason or "").upper() if isinstance(exc, ssl.SSLError) else ""
    silent = isinstance(exc, ssl.SSLEOFError) or not isinstance(exc, ssl.SSLError)
    if witness is not None and (silent or "HANDSHAKE_FAILURE" in reason or "INSUFFICIENT_SECURITY" in reason):
        told = _what_was_refused(exc, host, witness, silent=silent, client_certificate=client_certificate)
        if told is not None:
            return told
    if not isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {host} failed: {_reason(exc)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        if code == _X509_CERT_HAS_EXPIRED:
            return f"CSMS certificate for {host} has expired"
        if code == _X509_CERT_NOT_YET_VALID:
            return f"CSMS certificate for {host} is not valid yet (check the station clock)"
        if code in _X509_NAME_MISMATCH:
            return f"CSMS certificate does not match host name {host!r}"
        if code in _X509_UNTRUSTED:
            return f"CSMS certificate for {host} is not signed by a trusted CA ({exc.verify_message})"
        return f"CSMS certificate for {host} rejected: {exc.verify_message}"
    if "CERTIFICATE_REQUIRED" in reason or "PEER_DID_NOT_RETURN_A_CERTIFICATE" in reason:
        return f"CSMS at {host} requires a client certificate (security profile 3) and got none"
    if any(word in reason for word in _CLIENT_CERT_REFUSED):
        return f"CSMS at {host} rejected our client certificate (TLS alert {exc.reason})"
    if any(word in reason for word in _VERSION_REFUSED):
        return (
            f"CSMS at {host} does not speak TLS 1.2 or later ({exc.reason}): it refused our protocol versions"
        )
    if "HANDSHAKE_FAILURE" in reason or "INSUFFICIENT_SECURITY" in reason or "NO_SHARED_CIPHER" in reason:
        return f"CSMS at {host} refused the handshake ({exc.reason}): {_OUR_CIPHERS}"
    return f"TLS handshake with {host} failed: {_reason(exc)}"


class SecurityFailure(enum.Enum):
    """A link failure that is a security event (2.0.1 part 2 appendix / 1.6 whitepaper), as the link
    can tell it; runtime/blocks/security.py names the event."""

    CSMS_CERTIFICATE = "csms-certificate"  # the CSMS's certificate did not verify (A00.FR.3xx)
    CREDENTIALS_REFUSED = "credentials-refused"  # HTTP 401, or a TLS alert refusing our certificate
    TLS_VERSION = "tls-version"  # the CSMS offers no TLS version of ours (1.2+)
    TLS_CIPHER = "tls-cipher"  # the CSMS shares no cipher suite with us


def classify_tls_failure(exc: ssl.SSLError | OSError) -> SecurityFailure | None:
    """The security event a TLS handshake failure is, when OpenSSL says plainly which; None for a
    silent close or a generic failure (we do not guess)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SecurityFailure.CSMS_CERTIFICATE
    if not isinstance(exc, ssl.SSLError):
        return None
    reason = (exc.reason or "").upper()
    if "CERTIFICATE_REQUIRED" in reason or any(word in reason for word in _CLIENT_CERT_REFUSED):
        return SecurityFailure.CREDENTIALS_REFUSED
    if any(word in reason for word in _VERSION_REFUSED):
        return SecurityFailure.TLS_VERSION
    if "NO_SHARED_CIPHER" in reason or "NO_CIPHERS_AVAILABLE" in reason:
        return SecurityFailure.TLS_CIPHER
    return None


_OUR_CIPHERS = (
    "it shares no cipher suite with us (we offer TLS 1.3 and the TLS 1.2 AES-GCM suites OCPP requires, "
    "nothing weaker)"
)


def _what_was_refused(
    exc: ssl.SSLError | OSError,
    host: str,
    witness: HandshakeWitness,
    *,
    silent: bool,
    client_certificate: bool,
) -> str | None:
    how = "closed the connection" if silent else f"sent TLS alert {_reason(exc)}"
    if not witness.server_hello:
        if silent:
            return (
                f"CSMS at {host} {how} in answer to our TLS hello: it accepts none of our protocol versions "
                "(TLS 1.2, 1.3) or cipher suites (AES-GCM); a CSMS limited to TLS 1.0/1.1 or to weak "
                "ciphers does this"
            )
        return f"CSMS at {host} refused our TLS hello ({how}): {_OUR_CIPHERS}"
    if witness.certificate_request:
        if client_certificate:
            return f"CSMS at {host} rejected our client certificate ({how} after receiving it)"
        return f"CSMS at {host} requires a client certificate (security profile 3) and got none ({how})"
    return None


def _reason(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return exc.strerror or type(exc).__name__

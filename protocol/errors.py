"""OCPP-J RPC error codes: one version-neutral kind per spec meaning, spelled per version on the wire.

1.6 (OCPP-J 1.6 section 4.2.3) and 2.0.1 (part 4, section 4.3) name most codes alike; the
differences are `FormationViolation` (1.6) vs `FormatViolation` (2.0.1) and the codes only 2.0.1 has.
"""

from __future__ import annotations

import enum

from evstation.protocol.versions import OcppVersion


class ErrorKind(enum.Enum):
    """What went wrong, independent of the version's spelling."""

    NOT_IMPLEMENTED = "NotImplemented"
    NOT_SUPPORTED = "NotSupported"
    INTERNAL = "InternalError"
    PROTOCOL = "ProtocolError"
    SECURITY = "SecurityError"
    FORMAT = "FormatViolation"
    PROPERTY_CONSTRAINT = "PropertyConstraintViolation"
    # Spelled with one "r" on the wire in both 1.6 (errata 5.1, "will not be fixed") and 2.0.1;
    # only OCPP 2.1 corrects it. Peers match the string exactly.
    OCCURRENCE_CONSTRAINT = "OccurenceConstraintViolation"
    TYPE_CONSTRAINT = "TypeConstraintViolation"
    GENERIC = "GenericError"
    # 2.0.1 only
    MESSAGE_TYPE_NOT_SUPPORTED = "MessageTypeNotSupported"
    RPC_FRAMEWORK = "RpcFrameworkError"


# The closest 1.6 code for the kinds 1.6 lacks.
_V16_FALLBACK: dict[ErrorKind, str] = {
    ErrorKind.FORMAT: "FormationViolation",
    ErrorKind.MESSAGE_TYPE_NOT_SUPPORTED: "ProtocolError",
    ErrorKind.RPC_FRAMEWORK: "ProtocolError",
}

V16_CODES: frozenset[str] = frozenset(
    {
        "NotImplemented",
        "NotSupported",
        "InternalError",
        "ProtocolError",
        "SecurityError",
        "FormationViolation",
        "PropertyConstraintViolation",
        "OccurenceConstraintViolation",
        "TypeConstraintViolation",
        "GenericError",
    }
)
V201_CODES: frozenset[str] = frozenset(kind.value for kind in ErrorKind)


def error_code(kind: ErrorKind, version: OcppVersion) -> str:
    """The wire spelling of `kind` for `version`."""
    if version is OcppVersion.V16:
        return _V16_FALLBACK.get(kind, kind.value)
    return kind.value


def codes_for(version: OcppVersion) -> frozenset[str]:
    """Every error code the version defines."""
    return V16_CODES if version is OcppVersion.V16 else V201_CODES

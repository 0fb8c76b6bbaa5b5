"""The OCPP versions evstation speaks, and their websocket subprotocol names."""

from __future__ import annotations

import enum


class OcppVersion(enum.Enum):
    V16 = "1.6"
    V201 = "2.0.1"

    @property
    def subprotocol(self) -> str:
        """The Sec-WebSocket-Protocol token offered for this version (OCPP-J section 3.1.2)."""
        return "ocpp" + self.value

    @classmethod
    def from_subprotocol(cls, name: str) -> OcppVersion:
        for version in cls:
            if version.subprotocol == name:
                return version
        raise ValueError(f"not an OCPP subprotocol we speak: {name!r}")

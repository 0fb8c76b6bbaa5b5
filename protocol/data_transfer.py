"""DataTransfer rules of both versions (2.0.1 P01 / P02; 1.6 sections 4.3 and 5.6): which vendor
handler answers an incoming DataTransfer, and the station's own built-in vendor. Pure.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Final

from evstation.records import record

__all__ = [
    "EVSTATION_VENDOR_ID",
    "PING_MESSAGE_ID",
    "DataTransferStatus",
    "VendorAnswer",
    "VendorHandler",
    "ping",
    "resolve",
]

# Our own vendorId (reverse-DNS style, as both versions recommend) and its one message.
EVSTATION_VENDOR_ID: Final = "org.evstation"
PING_MESSAGE_ID: Final = "Ping"


class DataTransferStatus(enum.Enum):
    """DataTransferStatus, the same four values in both versions."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    UNKNOWN_MESSAGE_ID = "UnknownMessageId"
    UNKNOWN_VENDOR_ID = "UnknownVendorId"


@record
class VendorAnswer:
    status: DataTransferStatus
    data: object = None  # 2.0.1: any JSON value; 1.6: a string (others are sent as their JSON text)


# (messageId, data) -> answer. A handler must not block: it runs inside the CSMS's call.
VendorHandler = Callable[[str | None, object], VendorAnswer]


def resolve(
    vendors: Mapping[str, Mapping[str | None, VendorHandler]], vendor_id: str, message_id: str | None
) -> VendorHandler | DataTransferStatus:
    """The handler for (vendorId, messageId), or the status to answer when there is none: an unknown
    vendor is UnknownVendorId, a known vendor without that message UnknownMessageId (2.0.1 P02;
    1.6 section 5.6). A handler registered under messageId None serves requests without one."""
    messages = vendors.get(vendor_id)
    if messages is None:
        return DataTransferStatus.UNKNOWN_VENDOR_ID
    handler = messages.get(message_id)
    if handler is None:
        return DataTransferStatus.UNKNOWN_MESSAGE_ID
    return handler


def ping(message_id: str | None, data: object) -> VendorAnswer:
    """org.evstation / Ping: answers Accepted with the request's data echoed (a link and
    vendor-routing check for CSMS operators)."""
    return VendorAnswer(DataTransferStatus.ACCEPTED, data)

"""DataTransfer routing (2.0.1 P02; 1.6 section 5.6), pure."""

from __future__ import annotations

from evstation.protocol.data_transfer import (
    EVSTATION_VENDOR_ID,
    PING_MESSAGE_ID,
    DataTransferStatus,
    VendorAnswer,
    VendorHandler,
    ping,
    resolve,
)

VENDORS: dict[str, dict[str | None, VendorHandler]] = {EVSTATION_VENDOR_ID: {PING_MESSAGE_ID: ping}}


def test_p02_unknown_vendor_is_unknown_vendor_id() -> None:
    assert resolve(VENDORS, "com.other", PING_MESSAGE_ID) is DataTransferStatus.UNKNOWN_VENDOR_ID


def test_p02_known_vendor_unknown_or_missing_message_is_unknown_message_id() -> None:
    assert resolve(VENDORS, EVSTATION_VENDOR_ID, "Pong") is DataTransferStatus.UNKNOWN_MESSAGE_ID
    assert resolve(VENDORS, EVSTATION_VENDOR_ID, None) is DataTransferStatus.UNKNOWN_MESSAGE_ID


def test_known_vendor_and_message_finds_the_handler_and_ping_echoes() -> None:
    handler = resolve(VENDORS, EVSTATION_VENDOR_ID, PING_MESSAGE_ID)
    assert handler is ping
    assert ping(PING_MESSAGE_ID, {"x": [1]}) == VendorAnswer(DataTransferStatus.ACCEPTED, {"x": [1]})

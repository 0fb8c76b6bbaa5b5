"""OpenEVSE RAPI line format: checksums, sequence ids, parsing and line splitting."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evstation.drivers.boards.rapi_codec import (
    ChecksumKind,
    LineSplitter,
    RapiChecksumError,
    RapiFormatError,
    RapiLine,
    encode_line,
    parse_line,
    sum_checksum,
    xor_checksum,
)


@pytest.mark.parametrize(
    "line", [b"$GS^30", b"$GE^26", b"$GG^24", b"$GU^36", b"$G0^53", b"$GC^20"]
)  # checked examples from the RAPI documentation
def test_documented_xor_checksums(line: bytes) -> None:
    assert parse_line(line) == RapiLine(line[1:3].decode(), (), None, ChecksumKind.XOR)
    assert encode_line(line[1:3].decode()) == line + b"\r"


def test_legacy_additive_checksum() -> None:
    assert sum_checksum(b"$FE") == 0xAF
    assert parse_line(b"$FE*AF") == RapiLine("FE", (), None, ChecksumKind.SUM)


def test_sequence_id_is_encoded_before_the_checksum_and_parsed_back() -> None:
    wire = encode_line("SC", [16, "V"], seq=0x1A)
    assert wire.startswith(b"$SC 16 V :1A^")
    assert wire.endswith(b"\r")
    assert parse_line(wire[:-1]) == RapiLine("SC", ("16", "V"), 0x1A)


def test_reply_with_values_and_sequence_id() -> None:
    body = b"$OK 03 120 03 0140 :07"
    line = parse_line(body + f"^{xor_checksum(body):02X}".encode())
    assert line.is_reply and not line.is_async
    assert line.args == ("03", "120", "03", "0140")
    assert line.seq == 7


def test_async_notifications_are_recognised() -> None:
    assert parse_line(encode_line("AT", ["03", "03", "16", "0140"])[:-1]).is_async
    assert parse_line(encode_line("AB", ["00", "5.1.2"])[:-1]).is_async


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"$GS^31", RapiChecksumError),
        (b"$FE*AE", RapiChecksumError),
        (b"GS^30", RapiFormatError),
        (b"$GS^3", RapiFormatError),
        (b"$GS^ZZ", RapiFormatError),
        (b"$GS", RapiFormatError),  # no checksum: accepted only when explicitly allowed
        (b"$G^24", RapiFormatError),
        (b"$\xffS^30", RapiFormatError),
        (b"$" + b"A" * 200, RapiFormatError),
    ],
)
def test_bad_lines_raise_format_errors(line: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_line(line)


def test_bad_sequence_ids_are_rejected() -> None:
    for seq in (b":00", b":G1", b":123"):
        body = b"$OK " + seq
        with pytest.raises(RapiFormatError):
            parse_line(body + f"^{xor_checksum(body):02X}".encode())
    with pytest.raises(ValueError):
        encode_line("GS", seq=0)


def test_unchecked_lines_are_allowed_on_request() -> None:
    assert parse_line(b"$GS", allow_unchecked=True) == RapiLine("GS", (), None, ChecksumKind.NONE)


def test_splitter_handles_torn_lines_noise_and_lf() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"noise$OK 1^") == []
    assert splitter.feed(b"xx\r\n$AT 01 01 16 0000^") == [b"$OK 1^xx"]
    assert splitter.feed(b"00\r") == [b"$AT 01 01 16 0000^00"]
    # A '$' mid-line ends a torn line: the next message is never swallowed by the broken one.
    assert splitter.feed(b"$OK 1$GS^30\r") == [b"$OK 1", b"$GS^30"]


def test_splitter_drops_overlong_lines() -> None:
    splitter = LineSplitter(max_line_bytes=8)
    assert splitter.feed(b"$" + b"A" * 20 + b"\r$GS^30\r") == [b"$GS^30"]
    assert splitter.overflows == 1


tokens = st.text(alphabet="0123456789ABCDEFabcdef.-", min_size=1, max_size=6)
names = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", min_size=2, max_size=2)


@given(names, st.lists(tokens, max_size=5), st.one_of(st.none(), st.integers(min_value=1, max_value=255)))
def test_encode_parse_round_trip(name: str, args: list[str], seq: int | None) -> None:
    wire = encode_line(name, args, seq=seq)
    lines = LineSplitter().feed(wire)
    assert lines == [wire[:-1]]
    assert parse_line(lines[0]) == RapiLine(name, tuple(args), seq)


@given(st.binary(max_size=600))
def test_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    for line in LineSplitter().feed(data):
        with contextlib.suppress(RapiFormatError):
            parse_line(line)

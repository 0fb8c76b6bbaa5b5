"""OpenEVSE RAPI line codec: `$XX args [:SS]^CK\r`, XOR (or legacy additive) checksums, line splitting.

Pure bytes <-> values. A bad line raises `RapiFormatError` for the caller to count; nothing here
reads a port or a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from evstation.records import record

# The firmware's receive buffer; a longer "line" is noise, not a command.
MAX_LINE_BYTES = 128
_START = ord("$")
_END = b"\r"


class RapiFormatError(ValueError):
    """A line that is not a well-formed RAPI message (or whose checksum does not match)."""


class RapiChecksumError(RapiFormatError):
    """A well-framed line whose checksum does not match: line noise, counted separately."""


class ChecksumKind(enum.Enum):
    XOR = "^"  # RAPI preferred form
    SUM = "*"  # legacy 8-bit additive
    NONE = ""  # firmware accepts it for manual testing only


def xor_checksum(data: bytes) -> int:
    result = 0
    for byte in data:
        result ^= byte
    return result


def sum_checksum(data: bytes) -> int:
    return sum(data) & 0xFF


def encode_line(name: str, args: Sequence[str | int] = (), seq: int | None = None) -> bytes:
    """A checksummed line: `encode_line("SC", [16, "V"], seq=5)` -> b"$SC 16 V :05^..\\r"."""
    if len(name) != 2 or not name.isascii() or not name.isalnum():
        raise ValueError(f"RAPI names are two ASCII letters/digits, not {name!r}")
    parts = [f"${name}", *(str(a) for a in args)]
    if seq is not None:
        if not 1 <= seq <= 0xFF:
            raise ValueError("sequence ids are 01..FF (00 is invalid)")
        parts.append(f":{seq:02X}")
    body = " ".join(parts).encode("ascii")
    return body + f"^{xor_checksum(body):02X}".encode("ascii") + _END


@record
class RapiLine:
    """One parsed line: a command (`SC`), a reply (`OK`/`NK`) or an async notification (`AT`, `AB`)."""

    name: str
    args: tuple[str, ...] = ()
    seq: int | None = None
    checksum: ChecksumKind = ChecksumKind.XOR

    @property
    def is_reply(self) -> bool:
        return self.name in ("OK", "NK")

    @property
    def is_async(self) -> bool:
        return self.name.startswith("A") or self.name == "WF"


def parse_line(line: bytes, *, allow_unchecked: bool = False) -> RapiLine:
    """Parse one line without its terminating CR; raises `RapiFormatError`."""
    if len(line) > MAX_LINE_BYTES:
        raise RapiFormatError(f"line longer than {MAX_LINE_BYTES} bytes")
    if not line or line[0] != _START:
        raise RapiFormatError("line does not start with '$'")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError as exc:
        raise RapiFormatError("non-ASCII byte in line") from exc
    body, kind = _strip_checksum(text)
    if kind is ChecksumKind.NONE and not allow_unchecked:
        raise RapiFormatError("line has no checksum")
    tokens = body[1:].split(" ")
    name = tokens[0]
    if len(name) != 2 or not name.isalnum():
        raise RapiFormatError(f"bad message name {name!r}")
    args = [t for t in tokens[1:] if t]
    seq: int | None = None
    if args and args[-1].startswith(":"):
        seq_text = args.pop()[1:]
        try:
            seq = int(seq_text, 16)
        except ValueError as exc:
            raise RapiFormatError(f"bad sequence id {seq_text!r}") from exc
        if not 1 <= seq <= 0xFF or len(seq_text) != 2:
            raise RapiFormatError(f"bad sequence id {seq_text!r}")
    return RapiLine(name.upper(), tuple(args), seq, kind)


def _strip_checksum(text: str) -> tuple[str, ChecksumKind]:
    for kind in (ChecksumKind.XOR, ChecksumKind.SUM):
        pos = text.rfind(kind.value)
        if pos < 0:
            continue
        body, digits = text[:pos], text[pos + 1 :]
        if len(digits) != 2:
            raise RapiFormatError(f"checksum must be two hex digits, got {digits!r}")
        try:
            given = int(digits, 16)
        except ValueError as exc:
            raise RapiFormatError(f"bad checksum digits {digits!r}") from exc
        raw = body.encode("ascii")
        wanted = xor_checksum(raw) if kind is ChecksumKind.XOR else sum_checksum(raw)
        if given != wanted:
            raise RapiChecksumError(f"checksum {given:02X} != {wanted:02X}")
        return body, kind
    return text, ChecksumKind.NONE


class LineSplitter:
    """Feed arbitrary chunks, get complete lines (CR-terminated, LF and leading noise dropped)."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_line_bytes
        self.overflows = 0

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        for byte in data:
            if byte == _START:
                # A '$' always starts a message: a torn line before it is handed on (and will fail
                # to parse), so the next message is never swallowed by the broken one.
                if self._buf:
                    lines.append(bytes(self._buf))
                self._buf = bytearray(b"$")
            elif not self._buf:
                continue  # noise between lines, or the rest of an overlong one
            elif byte == 0x0D:
                lines.append(bytes(self._buf))
                self._buf.clear()
            elif byte != 0x0A:
                self._buf.append(byte)
                if len(self._buf) > self._max:
                    self.overflows += 1
                    self._buf.clear()
        return lines

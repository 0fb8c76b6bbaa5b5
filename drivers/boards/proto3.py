"""A small proto3 wire-format codec: varints, fixed32/64, length-delimited fields, flat field specs.

Enough for the Yeti-family board messages; no `protobuf` dependency. Pure functions: malformed input
raises `ProtoDecodeError`, unknown field numbers are skipped as proto3 requires.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ProtoDecodeError(ValueError):
    """The bytes are not a valid protobuf encoding."""


class WireType(enum.IntEnum):
    VARINT = 0
    FIXED64 = 1
    LEN = 2
    SGROUP = 3  # deprecated groups: never produced by proto3, treated as malformed
    EGROUP = 4
    FIXED32 = 5


_MAX_VARINT_BYTES = 10
_U64 = (1 << 64) - 1


def encode_varint(value: int) -> bytes:
    """Base-128 varint; negative numbers use the 10-byte two's-complement form (int32/int64)."""
    if value < 0:
        value &= _U64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, next position); raises `ProtoDecodeError` when truncated or longer than 10 bytes."""
    result = 0
    shift = 0
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= len(data):
            raise ProtoDecodeError("truncated varint")
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _U64, pos + i + 1
        shift += 7
    raise ProtoDecodeError("varint longer than 10 bytes")


def _tag(number: int, wire_type: WireType) -> bytes:
    return encode_varint(number << 3 | wire_type)


@dataclass(frozen=True, slots=True)
class RawField:
    number: int
    wire_type: WireType
    value: int | bytes  # int for VARINT; bytes for LEN, FIXED32 (4 bytes), FIXED64 (8 bytes)


def iter_fields(data: bytes) -> list[RawField]:
    """Split a message into its fields, in wire order (duplicates kept: last one wins later)."""
    fields: list[RawField] = []
    pos = 0
    n = len(data)
    while pos < n:
        key, pos = decode_varint(data, pos)
        number = key >> 3
        raw_type = key & 0x7
        if number == 0 or number > 0x1FFFFFFF:
            raise ProtoDecodeError(f"invalid field number {number}")
        if raw_type not in (0, 1, 2, 5):
            raise ProtoDecodeError(f"unsupported wire type {raw_type} for field {number}")
        wire_type = WireType(raw_type)
        value: int | bytes
        if wire_type is WireType.VARINT:
            value, pos = decode_varint(data, pos)
        elif wire_type is WireType.LEN:
            length, pos = decode_varint(data, pos)
            if pos + length > n:
                raise ProtoDecodeError(f"field {number}: length {length} runs past the end")
            value = data[pos : pos + length]
            pos += length
        else:
            size = 8 if wire_type is WireType.FIXED64 else 4
            if pos + size > n:
                raise ProtoDecodeError(f"field {number}: truncated fixed{size * 8}")
            value = data[pos : pos + size]
            pos += size
        fields.append(RawField(number, wire_type, value))
    return fields


class Kind(enum.Enum):
    """The scalar types the board protocols use."""

    UINT32 = "uint32"
    INT32 = "int32"
    BOOL = "bool"
    ENUM = "enum"
    FLOAT = "float"
    STRING = "string"
    BYTES = "bytes"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    number: int
    name: str
    kind: Kind


_WIRE_OF: dict[Kind, WireType] = {
    Kind.UINT32: WireType.VARINT,
    Kind.INT32: WireType.VARINT,
    Kind.BOOL: WireType.VARINT,
    Kind.ENUM: WireType.VARINT,
    Kind.FLOAT: WireType.FIXED32,
    Kind.STRING: WireType.LEN,
    Kind.BYTES: WireType.LEN,
}

DEFAULTS: dict[Kind, Any] = {
    Kind.UINT32: 0,
    Kind.INT32: 0,
    Kind.BOOL: False,
    Kind.ENUM: 0,
    Kind.FLOAT: 0.0,
    Kind.STRING: "",
    Kind.BYTES: b"",
}


def encode_scalar(number: int, kind: Kind, value: Any) -> bytes:
    """One field, always written (oneof members must be written even when they hold the default)."""
    wire = _WIRE_OF[kind]
    if kind is Kind.FLOAT:
        return _tag(number, wire) + struct.pack("<f", float(value))
    if kind in (Kind.STRING, Kind.BYTES):
        raw = value.encode("utf-8") if kind is Kind.STRING else bytes(value)
        return _tag(number, wire) + encode_varint(len(raw)) + raw
    return _tag(number, wire) + encode_varint(int(value))


def encode_message_field(number: int, body: bytes) -> bytes:
    return _tag(number, WireType.LEN) + encode_varint(len(body)) + body


def encode_fields(values: Mapping[str, Any], specs: tuple[FieldSpec, ...]) -> bytes:
    """A flat message: proto3 leaves out fields that hold their default."""
    out = bytearray()
    for spec in specs:
        value = values[spec.name]
        if value == DEFAULTS[spec.kind]:
            continue
        out += encode_scalar(spec.number, spec.kind, value)
    return bytes(out)


def decode_scalar(field: RawField, kind: Kind) -> Any:
    """The Python value of a raw field; a wire type that does not match the spec is malformed."""
    if field.wire_type is not _WIRE_OF[kind]:
        raise ProtoDecodeError(f"field {field.number}: wire type {field.wire_type.name} is not {kind.value}")
    value = field.value
    if kind is Kind.FLOAT:
        assert isinstance(value, bytes)
        return struct.unpack("<f", value)[0]
    if kind is Kind.STRING:
        assert isinstance(value, bytes)
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtoDecodeError(f"field {field.number}: invalid UTF-8") from exc
    if kind is Kind.BYTES:
        return value
    assert isinstance(value, int)
    if kind is Kind.BOOL:
        return value != 0
    if kind in (Kind.INT32, Kind.ENUM):
        # int32 and enums are sign-extended to 64 bits on the wire; truncate back to 32.
        value &= 0xFFFFFFFF
        return value - (1 << 32) if value & 0x80000000 else value
    return value & 0xFFFFFFFF


def decode_fields(data: bytes, specs: tuple[FieldSpec, ...]) -> dict[str, Any]:
    """A flat message as a dict of every spec'd field (defaults filled in; unknown fields skipped)."""
    by_number = {spec.number: spec for spec in specs}
    values: dict[str, Any] = {spec.name: DEFAULTS[spec.kind] for spec in specs}
    for field in iter_fields(data):
        spec = by_number.get(field.number)
        if spec is None:
            continue
        values[spec.name] = decode_scalar(field, spec.kind)
    return values

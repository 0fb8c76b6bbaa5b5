"""Yeti-family wire format: COBS, CRC-32/JAMCRC, frames and the hand-written proto3 codec."""

from __future__ import annotations

import contextlib
import re
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evstation.drivers.boards import yeti_messages
from evstation.drivers.boards.proto3 import (
    FieldSpec,
    Kind,
    ProtoDecodeError,
    decode_fields,
    decode_varint,
    encode_fields,
    encode_scalar,
    encode_varint,
    iter_fields,
)
from evstation.drivers.boards.yeti import PWM_STATE_F, PWM_X1, duty_for
from evstation.drivers.boards.yeti_framing import (
    CobsError,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    cobs_decode,
    cobs_encode,
    crc32_jamcrc,
    decode_frame,
    encode_frame,
)
from evstation.drivers.boards.yeti_messages import (
    AllowPowerOn,
    ConnectorLock,
    CpState,
    CpStateReport,
    ErrorFlags,
    HostKeepAlive,
    LockStateReport,
    McuKeepAlive,
    McuReset,
    PowerMeterReport,
    PwmDutyCycle,
    RelaisState,
    ResetReason,
    ResetRequest,
    SetNumberOfPhases,
    YetiLockState,
    decode_host_message,
    decode_mcu_message,
    encode_host_message,
    encode_mcu_message,
)

# ------------------------------------------------------------------------------------------- COBS


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", b"\x01"),
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
    ],
)
def test_cobs_known_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@given(st.binary(max_size=1200))
def test_cobs_round_trip_and_no_zero_bytes(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert cobs_decode(encoded) == data


@pytest.mark.parametrize("bad", [b"\x05\x11\x22", b"\x02\x00", b"\x00"])
def test_cobs_rejects_malformed_blocks(bad: bytes) -> None:
    with pytest.raises(CobsError):
        cobs_decode(bad)


# -------------------------------------------------------------------------------------------- CRC


def test_crc_is_jamcrc() -> None:
    # CRC-32/JAMCRC check value for "123456789" (reveng catalogue).
    assert crc32_jamcrc(b"123456789") == 0x340BC6D9
    assert crc32_jamcrc(b"123456789") == zlib.crc32(b"123456789") ^ 0xFFFFFFFF


def test_frame_layout_is_cobs_of_payload_and_little_endian_crc() -> None:
    frame = encode_frame(b"\x01\x02")
    assert frame.endswith(b"\x00")
    raw = cobs_decode(frame[:-1])
    assert raw[:2] == b"\x01\x02"
    assert raw[2:] == crc32_jamcrc(b"\x01\x02").to_bytes(4, "little")


def test_frame_with_a_flipped_bit_is_a_crc_error() -> None:
    raw = bytearray(cobs_decode(encode_frame(b"hello")[:-1]))
    raw[1] ^= 0x10
    assert decode_frame(cobs_encode(bytes(raw))) == FrameError(FrameErrorKind.CRC, bytes(raw).hex())


def test_decoder_resyncs_after_garbage_and_splits_chunks() -> None:
    decoder = FrameDecoder()
    good = encode_frame(b"payload")
    stream = b"\x07\x99\x00" + good + b"\x00\x00" + good
    results: list[bytes | FrameError] = []
    for i in range(0, len(stream), 3):
        results += decoder.feed(stream[i : i + 3])
    assert [r for r in results if isinstance(r, bytes)] == [b"payload", b"payload"]
    assert sum(isinstance(r, FrameError) for r in results) == 1


def test_decoder_drops_oversized_frames_and_continues() -> None:
    decoder = FrameDecoder(max_frame_bytes=16)
    results = decoder.feed(b"\x01" * 40 + b"\x00" + encode_frame(b"ok"))
    assert results == [FrameError(FrameErrorKind.TOO_LONG, "> 16 bytes"), b"ok"]


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_frames_round_trip_through_the_stream_decoder(payloads: list[bytes]) -> None:
    decoder = FrameDecoder()
    wire = b"".join(encode_frame(p) for p in payloads)
    assert decoder.feed(wire) == payloads


@given(st.binary(max_size=3000))
def test_decoder_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    for item in FrameDecoder().feed(data):
        assert isinstance(item, bytes | FrameError)


# ----------------------------------------------------------------------------------------- proto3


@pytest.mark.parametrize(
    ("value", "wire"), [(0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (150, b"\x96\x01"), (300, b"\xac\x02")]
)
def test_varint_known_vectors(value: int, wire: bytes) -> None:
    assert encode_varint(value) == wire
    assert decode_varint(wire, 0) == (value, len(wire))


def test_negative_int32_uses_ten_bytes_and_decodes_back() -> None:
    specs = (FieldSpec(1, "x", Kind.INT32),)
    wire = encode_fields({"x": -2}, specs)
    assert len(wire) == 11
    assert decode_fields(wire, specs) == {"x": -2}


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    assert decode_varint(encode_varint(value), 0) == (value, len(encode_varint(value)))


@pytest.mark.parametrize("bad", [b"\x80", b"\xff" * 11, b"\x0a\x05ab", b"\x0b", b"\x00\x01", b"\x0d\x01"])
def test_malformed_protobuf_is_a_decode_error(bad: bytes) -> None:
    with pytest.raises(ProtoDecodeError):
        iter_fields(bad)


def test_defaults_are_left_out_but_oneof_members_are_always_written() -> None:
    assert encode_mcu_message(ErrorFlags()) == b"\xc2\x06\x00"  # field 104, empty submessage
    # relais_state = false is a oneof member: it must be on the wire, or the MCU report is lost.
    assert encode_mcu_message(RelaisState(False)) == b"\xb8\x06\x00"
    assert decode_mcu_message(b"\xb8\x06\x00") == RelaisState(False)


HOST_MESSAGES = [
    HostKeepAlive(time_stamp=123456, hw_type=1, hw_revision=2, sw_version_string="evstation"),
    ConnectorLock(True),
    PwmDutyCycle(PWM_X1),
    PwmDutyCycle(0),
    AllowPowerOn(True),
    ResetRequest(),
    SetNumberOfPhases(False),
]
MCU_MESSAGES = [
    McuKeepAlive(time_stamp=9, protocol_version_major=1, sw_version_string="fw", hwcap_max_current=32.0),
    McuReset(ResetReason.WATCHDOG),
    CpStateReport(CpState.C),
    RelaisState(True),
    ErrorFlags(diode_fault=True, over_current=True),
    LockStateReport(YetiLockState.LOCKED),
    PowerMeterReport(time_stamp=5, vrms_l1=230.5, irms_l1=16.0, total_watt_hr=1234.5, phase_seq_error=True),
]


@pytest.mark.parametrize("msg", HOST_MESSAGES)
def test_host_messages_round_trip(msg: object) -> None:
    assert decode_host_message(encode_host_message(msg)) == msg  # type: ignore[arg-type]


@pytest.mark.parametrize("msg", MCU_MESSAGES)
def test_mcu_messages_round_trip(msg: object) -> None:
    assert decode_mcu_message(encode_mcu_message(msg)) == msg  # type: ignore[arg-type]


def test_pwm_field_number_and_units() -> None:
    # EverestToMcu.pwm_duty_cycle = 103, varint: tag (103 << 3 | 0) = 824 = 0xb8 0x06.
    assert encode_host_message(PwmDutyCycle(2666)) == b"\xb8\x06" + encode_varint(2666)


def test_unknown_fields_are_skipped_inside_and_outside_the_oneof() -> None:
    unknown = encode_scalar(999, Kind.STRING, "from a newer firmware") + encode_scalar(7, Kind.FLOAT, 1.5)
    inner = encode_scalar(3, Kind.BOOL, True) + encode_scalar(42, Kind.UINT32, 7)
    payload = unknown + b"\xc2\x06" + encode_varint(len(inner)) + inner
    assert decode_mcu_message(payload) == ErrorFlags(rcd_triggered=True)


def test_unknown_oneof_case_and_unknown_enum_value_decode_to_none() -> None:
    assert decode_mcu_message(encode_scalar(250, Kind.BOOL, True)) is None
    assert decode_mcu_message(encode_scalar(102, Kind.ENUM, 17)) is None  # cp_state 17
    assert decode_mcu_message(b"") is None


def test_last_oneof_member_on_the_wire_wins() -> None:
    wire = encode_mcu_message(CpStateReport(CpState.B)) + encode_mcu_message(RelaisState(True))
    assert decode_mcu_message(wire) == RelaisState(True)


def test_wrong_wire_type_for_a_known_field_is_a_decode_error() -> None:
    with pytest.raises(ProtoDecodeError):
        decode_mcu_message(encode_scalar(102, Kind.STRING, "C"))


@given(st.binary(max_size=400))
def test_message_decoder_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ProtoDecodeError):
        decode_mcu_message(data)
    with contextlib.suppress(ProtoDecodeError):
        decode_host_message(data)


power_meters = st.builds(
    PowerMeterReport,
    time_stamp=st.integers(min_value=0, max_value=2**32 - 1),
    vrms_l1=st.floats(width=32, allow_nan=False),
    total_watt_hr=st.floats(width=32, allow_nan=False),
    phase_seq_error=st.booleans(),
)
flags = st.builds(ErrorFlags, *[st.booleans()] * 7)
keepalives = st.builds(
    McuKeepAlive,
    time_stamp=st.integers(min_value=0, max_value=2**32 - 1),
    sw_version_string=st.text(max_size=40),
    hwcap_max_current=st.floats(width=32, allow_nan=False),
)


@given(st.one_of(power_meters, flags, keepalives, st.builds(CpStateReport, st.sampled_from(CpState))))
def test_mcu_message_property_round_trip(msg: McuKeepAlive | PowerMeterReport | ErrorFlags) -> None:
    assert decode_mcu_message(encode_mcu_message(msg)) == msg


# --------------------------------------------------------------------------------- duty mapping


@pytest.mark.parametrize(
    ("amps", "unavailable", "duty"),
    [(None, False, PWM_X1), (16, False, 2666), (6, False, 1000), (32, False, 5333), (63, False, 8920),
     (3, False, PWM_X1), (16, True, PWM_STATE_F), (None, True, PWM_STATE_F)],
)  # fmt: skip
def test_duty_for_offer(amps: float | None, unavailable: bool, duty: int) -> None:
    assert duty_for(amps, unavailable=unavailable) == duty


# ------------------------------------------------------------------------ yeti.proto stays in step


def _proto_fields(message: str) -> dict[str, int]:
    text = (Path(yeti_messages.__file__).parent / "yeti.proto").read_text()
    body = re.search(r"message " + message + r" \{(.*?)\n\}", text, re.S)
    assert body is not None, message
    return {name: int(num) for name, num in re.findall(r"(\w+) = (\d+);", body.group(1))}


def _key(name: str) -> str:
    # The .proto keeps the firmware's camelCase (vrmsL1); the codec uses snake_case (vrms_l1).
    return name.replace("_", "").lower()


@pytest.mark.parametrize(
    ("message", "cls"),
    [("KeepAlive", HostKeepAlive), ("KeepAliveLo", McuKeepAlive), ("ErrorFlags", ErrorFlags),
     ("PowerMeter", PowerMeterReport)],
)  # fmt: skip
def test_proto_file_matches_codec_submessages(message: str, cls: Any) -> None:
    in_proto = {_key(name): num for name, num in _proto_fields(message).items()}
    assert in_proto == {_key(spec.name): spec.number for spec in cls.SPECS}


def test_proto_file_matches_codec_oneofs() -> None:
    host = _proto_fields("EverestToMcu")
    mcu = _proto_fields("McuToEverest")
    assert host["pwm_duty_cycle"] == PwmDutyCycle.FIELD
    assert host["keep_alive"] == HostKeepAlive.FIELD
    assert host["allow_power_on"] == AllowPowerOn.FIELD
    assert host["connector_lock"] == ConnectorLock.FIELD
    assert host["reset"] == ResetRequest.FIELD
    assert mcu["keep_alive"] == McuKeepAlive.FIELD
    assert mcu["error_flags"] == ErrorFlags.FIELD
    assert mcu["power_meter"] == PowerMeterReport.FIELD
    assert mcu["cp_state"] == CpStateReport.FIELD
    assert mcu["relais_state"] == RelaisState.FIELD
    assert mcu["lock_state"] == LockStateReport.FIELD
    assert mcu["reset"] == McuReset.FIELD

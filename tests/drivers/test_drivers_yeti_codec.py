"""Yeti wire format: COBS, CRC-32/JAMCRC, frames, and the messages generated from our yeti.proto."""

from __future__ import annotations

import contextlib
import zlib

import pytest
from google.protobuf.message import DecodeError, Message
from hypothesis import given
from hypothesis import strategies as st

from evstation.drivers.boards.proto import generate
from evstation.drivers.boards.proto import yeti_pb2 as pb
from evstation.drivers.boards.yeti import (
    PWM_STATE_F,
    PWM_X1,
    SW_VERSION_MAX_CHARS,
    PilotDrive,
    YetiBoard,
    duty_for,
    host_message,
    telemetry_drive,
)
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

# ------------------------------------------------------------------------------------------- COBS


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", b"\x01"),
        (b"\x00", b"\x01\x01"),
        (b"\x00\x00", b"\x01\x01\x01"),
        (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
        (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
        # 254 non-zero bytes fill one block; the final code byte is left out, as the firmware's own
        # cobsEncode leaves it out (MgmtLink.cpp), and both decoders take either form.
        (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255))),
    ],
)
def test_cobs_known_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


def test_cobs_decoder_takes_the_long_form_of_a_full_block_too() -> None:
    assert cobs_decode(b"\xff" + bytes(range(1, 255)) + b"\x01") == bytes(range(1, 255))


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


# ------------------------------------------------------------------------------ generated messages


def test_committed_messages_match_a_fresh_generation_byte_for_byte() -> None:
    for schema in generate.SCHEMAS:
        for name, content in generate.render(schema).items():
            assert (generate.PROTO_DIR / name).read_bytes() == content, name


def test_generator_check_flag_passes_on_the_committed_tree() -> None:
    assert generate.main(["--check"]) == 0


def _numbers(message: type[Message]) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


# Field numbers of the firmware (yeti-firmware Yeti/protobuf/yeti.pb.h, nanopb 0.4.8), written out here
# so that a change to our .proto that the firmware would misread fails a test.
FIRMWARE_NUMBERS: dict[str, dict[str, int]] = {
    "EverestToMcu": {"firmware_update": 16, "keep_alive": 100, "connector_lock": 102, "pwm_duty_cycle": 103,
                     "allow_power_on": 104, "reset": 105, "set_number_of_phases": 106},
    "McuToEverest": {"keep_alive": 3, "reset": 101, "cp_state": 102, "relais_state": 103, "error_flags": 104,
                     "telemetry": 105, "pp_state": 106, "lock_state": 107, "power_meter": 108},
    "KeepAlive": {"time_stamp": 1, "hw_type": 2, "hw_revision": 3, "sw_version_string": 6},
    "KeepAliveLo": {"time_stamp": 1, "hw_type": 2, "hw_revision": 3, "protocol_version_major": 4,
                    "protocol_version_minor": 5, "sw_version_string": 6, "hwcap_max_current": 7,
                    "hwcap_min_current": 8, "hwcap_max_phase_count": 9, "hwcap_min_phase_count": 10,
                    "supports_changing_phases_during_charging": 11},
    "FirmwareUpdate": {"invoke_rom_bootloader": 1},
    "ErrorFlags": {"diode_fault": 1, "rcd_selftest_failed": 2, "rcd_triggered": 3,
                   "ventilation_not_available": 4, "connector_lock_failed": 5, "cp_signal_fault": 6,
                   "over_current": 7},
    "Telemetry": {"cp_voltage_hi": 1, "cp_voltage_lo": 2},
    "PowerMeter": {"time_stamp": 1, **{name: n for n, name in enumerate(
        ["vrmsL1", "vrmsL2", "vrmsL3", "irmsL1", "irmsL2", "irmsL3", "irmsN", "wattHrL1", "wattHrL2",
         "wattHrL3", "totalWattHr", "tempL1", "tempL2", "tempL3", "tempN", "wattL1", "wattL2", "wattL3",
         "freqL1", "freqL2", "freqL3", "phaseSeqError"], start=2)}},
}  # fmt: skip


@pytest.mark.parametrize("message", sorted(FIRMWARE_NUMBERS))
def test_schema_field_numbers_are_the_firmware_s(message: str) -> None:
    assert _numbers(getattr(pb, message)) == FIRMWARE_NUMBERS[message]


def test_firmware_update_is_a_submessage_and_keep_alive_version_is_field_6() -> None:
    field = pb.EverestToMcu.DESCRIPTOR.fields_by_name["firmware_update"]
    assert field.message_type is not None and field.message_type.name == "FirmwareUpdate"
    wire = host_message(firmware_update=pb.FirmwareUpdate(invoke_rom_bootloader=True)).SerializeToString()
    assert wire == b"\x82\x01\x02\x08\x01"  # field 16, length 2: {field 1 = true}
    wire = host_message(keep_alive=pb.KeepAlive(sw_version_string="ev")).SerializeToString()
    assert wire == b"\xa2\x06\x04\x32\x02ev"  # field 100 {field 6 (0x32) = "ev"}


def test_host_keepalive_version_fits_the_firmware_buffer() -> None:
    keepalive = YetiBoard("/dev/unused")._keepalive
    # _keepalive reads the Trio clock: run it inside a Trio context.
    import trio

    async def build() -> pb.EverestToMcu:
        return keepalive()

    msg = trio.run(build)
    assert 0 < len(msg.keep_alive.sw_version_string) <= SW_VERSION_MAX_CHARS


def test_pwm_field_number_and_units() -> None:
    # EverestToMcu.pwm_duty_cycle = 103, varint: tag (103 << 3 | 0) = 824 = 0xb8 0x06; 2666 = 0xea 0x14.
    assert host_message(pwm_duty_cycle=2666).SerializeToString() == b"\xb8\x06\xea\x14"


def test_oneof_members_are_written_even_at_their_default() -> None:
    # relais_state = false is a oneof member: it must be on the wire, or the MCU report is lost.
    assert pb.McuToEverest(relais_state=False).SerializeToString() == b"\xb8\x06\x00"
    assert pb.McuToEverest(error_flags=pb.ErrorFlags()).SerializeToString() == b"\xc2\x06\x00"
    msg = pb.McuToEverest()
    msg.ParseFromString(b"\xb8\x06\x00")
    assert msg.WhichOneof("payload") == "relais_state" and msg.relais_state is False


def test_host_message_needs_exactly_one_member() -> None:
    with pytest.raises(ValueError, match="one payload member"):
        host_message()
    with pytest.raises(ValueError, match="one payload member"):
        host_message(reset=True, allow_power_on=True)


def test_unknown_fields_are_skipped_inside_and_outside_the_oneof() -> None:
    unknown = b"\xba\x3e\x03new" + b"\x3d\x00\x00\xc0\x3f"  # field 999 string, field 7 float
    inner = b"\x18\x01" + b"\xd0\x02\x07"  # rcd_triggered = true, field 42 = 7
    msg = pb.McuToEverest()
    msg.ParseFromString(unknown + b"\xc2\x06" + bytes([len(inner)]) + inner)
    assert msg.WhichOneof("payload") == "error_flags"
    assert [(f.name, value) for f, value in msg.error_flags.ListFields()] == [("rcd_triggered", True)]


def test_unknown_oneof_member_and_unknown_enum_value_are_kept_apart() -> None:
    msg = pb.McuToEverest()
    msg.ParseFromString(b"\xd0\x0f\x01")  # field 250: a member of a newer firmware
    assert msg.WhichOneof("payload") is None
    msg.ParseFromString(b"\xb0\x06\x11")  # cp_state 17: proto3 enums are open
    assert msg.WhichOneof("payload") == "cp_state" and msg.cp_state == 17


def test_last_oneof_member_on_the_wire_wins() -> None:
    wire = (pb.McuToEverest(cp_state=pb.STATE_B).SerializeToString()
            + pb.McuToEverest(relais_state=True).SerializeToString())  # fmt: skip
    msg = pb.McuToEverest()
    msg.ParseFromString(wire)
    assert msg.WhichOneof("payload") == "relais_state"


@pytest.mark.parametrize("bad", [b"\x80", b"\xff" * 11, b"\x0a\x05ab", b"\x0b"])
def test_malformed_protobuf_is_a_decode_error(bad: bytes) -> None:
    with pytest.raises(DecodeError):
        pb.McuToEverest().ParseFromString(bad)


@given(st.binary(max_size=400))
def test_message_decoder_never_crashes_on_arbitrary_bytes(data: bytes) -> None:
    for cls in (pb.McuToEverest, pb.EverestToMcu):
        with contextlib.suppress(DecodeError):
            cls().ParseFromString(data)


@given(
    st.builds(
        pb.PowerMeter,
        time_stamp=st.integers(min_value=0, max_value=2**32 - 1),
        vrmsL1=st.floats(width=32, allow_nan=False),
        totalWattHr=st.floats(width=32, allow_nan=False),
        phaseSeqError=st.booleans(),
    )
)
def test_power_meter_round_trips_through_a_frame(report: pb.PowerMeter) -> None:
    wire = encode_frame(pb.McuToEverest(power_meter=report).SerializeToString())
    (payload,) = FrameDecoder().feed(wire)
    assert isinstance(payload, bytes)
    msg = pb.McuToEverest()
    msg.ParseFromString(payload)
    assert msg.power_meter == report


# --------------------------------------------------------------------------------- duty mapping


@pytest.mark.parametrize(
    ("amps", "unavailable", "duty"),
    [(None, False, PWM_X1), (16, False, 2666), (6, False, 1000), (32, False, 5333), (63, False, 8920),
     (3, False, PWM_X1), (16, True, PWM_STATE_F), (None, True, PWM_STATE_F)],
)  # fmt: skip
def test_duty_for_offer(amps: float | None, unavailable: bool, duty: int) -> None:
    assert duty_for(amps, unavailable=unavailable) == duty


@pytest.mark.parametrize(
    ("hi", "lo", "drive"),
    [(9, 0, PilotDrive.PWM), (6, 0, PilotDrive.PWM), (9, 9, PilotDrive.STEADY), (12, 12, PilotDrive.STEADY),
     (0, 0, PilotDrive.STATE_F)],
)  # fmt: skip
def test_telemetry_shows_the_pilot_drive(hi: int, lo: int, drive: PilotDrive) -> None:
    # The firmware stores float volts into uint32: the PWM's -12 V low half reads 0.
    assert telemetry_drive(pb.Telemetry(cp_voltage_hi=hi, cp_voltage_lo=lo)) is drive

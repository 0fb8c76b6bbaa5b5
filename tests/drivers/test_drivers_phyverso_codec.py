"""phyVERSO wire format: the messages generated from our phyverso.proto against the schema's field
numbers (shared/reference/board-schemas.md), wire vectors, and how the link treats bad or unknown input."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from google.protobuf.message import Message

from evstation.drivers.api import CableRating, FaultCode, FaultRaised, PilotChanged, PilotState
from evstation.drivers.boards.phyverso import (
    ERROR_FLAG_FAULTS,
    PWM_STATE_F,
    PWM_X1,
    PhyVersoLink,
    duty_for,
    host_message,
)
from evstation.drivers.boards.proto import phyverso_pb2 as pb
from evstation.drivers.boards.yeti_framing import encode_frame


def _numbers(message: type[Message]) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


# board-schemas.md "phyverso.proto", written out so that a change to our .proto the MCU would misread
# fails here.
SCHEMA_NUMBERS: dict[str, dict[str, int]] = {
    "EverestToMcu": {"keep_alive": 1, "firmware_update": 2, "connector_lock": 3, "pwm_duty_cycle": 4,
                     "set_coil_state_request": 5, "reset": 6, "config_response": 8, "set_fan_state": 9,
                     "rcd_cmd": 10, "connector": 7},
    "McuToEverest": {"keep_alive": 1, "reset": 2, "cp_state": 3, "set_coil_state_response": 4,
                     "error_flags": 5, "telemetry": 7, "pp_state": 8, "fan_state": 9, "lock_state": 10,
                     "config_request": 11, "connector": 6},
    "ErrorFlags": {"diode_fault": 1, "rcd_selftest_failed": 2, "rcd_triggered": 3,
                   "ventilation_not_available": 4, "connector_lock_failed": 5, "cp_signal_fault": 6,
                   "heartbeat_timeout": 7, "coil_feedback_diverges": 8, "pp_signal_fault": 9},
    "KeepAlive": {"time_stamp": 1, "hw_type": 2, "hw_revision": 3, "sw_version_string": 6,
                  "configuration_done": 7},
    "Telemetry": {"cp_voltage_hi": 1, "cp_voltage_lo": 2},
    "FanState": {"fan_id": 1, "enabled": 2, "duty": 3, "rpm": 4},
    "CoilState": {"coil_type": 1, "coil_state": 2},
    "BootConfigRequest": {},
    "BootConfigResponse": {"hw_rev": 1, "chargeport_config": 6},
    "ChargePortConfig": {"type": 1, "feedback_active_low": 2, "feedback_pull": 3, "lock": 4, "has_socket": 5},
    "ConfigMotorLockType": {"type": 1},
    "RcdCommand": {"test": 1, "reset": 2},
}  # fmt: skip
ENUMS: dict[str, dict[str, int]] = {
    "CpState": {"STATE_A": 0, "STATE_B": 1, "STATE_C": 2, "STATE_D": 3, "STATE_E": 4, "STATE_F": 5},
    "ResetReason": {"USER": 0, "WATCHDOG": 1},
    "PpState": {"STATE_NC": 0, "STATE_13A": 1, "STATE_20A": 2, "STATE_32A": 3, "STATE_70A": 4,
                "STATE_FAULT": 5},
    "LockState": {"UNDEFINED": 0, "UNLOCKED": 1, "LOCKED": 2, "LOCKING": 3, "UNLOCKING": 4},
    "CoilType": {"COIL_UNKNOWN": 0, "COIL_AC": 1, "COIL_DC1": 2, "COIL_DC2": 3, "COIL_DC3": 4},
    "ChargePortType": {"DISABLED": 0, "AC": 1, "DC": 2},
    "GpioPull": {"NONE": 0, "UP": 1, "DOWN": 2},
    "ConfigHardwareRevision": {"HW_REV_UNKNOWN": 0, "HW_REV_A": 1, "HW_REV_B": 2},
    "MotorLockType": {"MOTOR_LOCK_UNKNOWN": 0, "MOTOR_LOCK_HELLA": 1, "MOTOR_LOCK_DEBUG_VALEO_HVAC": 2,
                      "MOTOR_LOCK_NONE": -1},
}  # fmt: skip


@pytest.mark.parametrize("message", sorted(SCHEMA_NUMBERS))
def test_phyverso_field_numbers_are_the_schema_s(message: str) -> None:
    assert _numbers(getattr(pb, message)) == SCHEMA_NUMBERS[message]


@pytest.mark.parametrize("enum", sorted(ENUMS))
def test_phyverso_enum_values_are_the_schema_s(enum: str) -> None:
    assert dict(getattr(pb, enum).items()) == ENUMS[enum]


def test_connector_is_outside_the_oneof() -> None:
    for message in (pb.EverestToMcu, pb.McuToEverest):
        assert message.DESCRIPTOR.fields_by_name["connector"].containing_oneof is None


def test_phyverso_wire_vectors() -> None:
    # pwm_duty_cycle (field 4, varint) 10000 = 0x90 0x4e, then connector (field 7) = 2.
    assert host_message(2, pwm_duty_cycle=PWM_X1).SerializeToString() == b"\x20\x90\x4e\x38\x02"
    # set_coil_state_request (field 5, length 4): {coil_type = COIL_AC, coil_state = true}, connector 1.
    coil = pb.CoilState(coil_type=pb.COIL_AC, coil_state=True)
    assert (
        host_message(1, set_coil_state_request=coil).SerializeToString()
        == b"\x2a\x04\x08\x01\x10\x01\x38\x01"
    )
    # connector_lock = false is a oneof member: on the wire even at its default. Connector 0 is not sent.
    assert host_message(1, connector_lock=False).SerializeToString() == b"\x18\x00\x38\x01"
    assert host_message(0, reset=True).SerializeToString() == b"\x30\x01"
    # MCU -> host: cp_state (field 3) = STATE_C for connector (field 6) 2.
    assert pb.McuToEverest(cp_state=pb.STATE_C, connector=2).SerializeToString() == b"\x18\x02\x30\x02"
    # MOTOR_LOCK_NONE is -1: a ten-byte varint.
    lock = pb.ConfigMotorLockType(type=pb.MOTOR_LOCK_NONE).SerializeToString()
    assert lock == b"\x08" + b"\xff" * 9 + b"\x01"


def test_duty_for_offer() -> None:
    assert duty_for(16, unavailable=False) == 2666
    assert duty_for(None, unavailable=False) == PWM_X1 == 10000  # PhyVersoBSP's "PWM off"
    assert duty_for(16, unavailable=True) == PWM_STATE_F


def test_every_error_flag_maps_to_a_fault() -> None:
    assert set(ERROR_FLAG_FAULTS) == set(SCHEMA_NUMBERS["ErrorFlags"])
    assert ERROR_FLAG_FAULTS["heartbeat_timeout"] is FaultCode.BOARD_COMMUNICATION
    assert ERROR_FLAG_FAULTS["coil_feedback_diverges"] is FaultCode.EVSE_CONTACTOR_FAULT


def test_boot_config_names_each_port_in_connector_order() -> None:
    link = PhyVersoLink("/dev/unused", hw_revision=pb.HW_REV_A)
    link.connector(2, lock=pb.MOTOR_LOCK_HELLA, has_socket=True)
    config = link.boot_config()
    assert config.hw_rev == pb.HW_REV_A
    assert [port.type for port in config.chargeport_config] == [pb.DISABLED, pb.AC]
    assert config.chargeport_config[1].lock.type == pb.MOTOR_LOCK_HELLA


def _wire(msg: pb.McuToEverest) -> bytes:
    return encode_frame(msg.SerializeToString())


async def test_link_skips_bad_frames_unknown_members_and_unknown_connectors() -> None:
    link = PhyVersoLink("/dev/unused")
    one = link.connector(1)
    send, receive = trio.open_memory_channel[bytes](16)
    good = _wire(pb.McuToEverest(cp_state=pb.STATE_B, connector=1))
    bad_crc = bytearray(_wire(pb.McuToEverest(cp_state=pb.STATE_C, connector=1)))
    bad_crc[1] ^= 0x40
    unknown_member = encode_frame(b"\xd0\x0f\x01\x30\x01")  # field 250 (a newer firmware's), connector 1
    unknown_enum = _wire(pb.McuToEverest(cp_state=17, connector=1))  # type: ignore[arg-type]
    pp = pb.McuToEverest(pp_state=pb.STATE_20A, connector=1).SerializeToString()
    unknown_fields = encode_frame(b"\xba\x3e\x03new" + pp)
    for_port_2 = _wire(pb.McuToEverest(cp_state=pb.STATE_C, connector=2))
    flags = _wire(pb.McuToEverest(error_flags=pb.ErrorFlags(rcd_triggered=True), connector=1))
    for chunk in (
        bytes(bad_crc),
        b"\x05\x11\x00",
        unknown_member,
        unknown_enum,
        for_port_2,
        good,
        unknown_fields,
        flags,
    ):
        send.send_nowait(chunk)
    send.close()
    await link._receive(receive)
    assert link.stats.crc_errors == 1
    assert link.stats.cobs_errors == 1
    assert link.stats.unknown_messages == 2
    assert link.stats.unknown_connector == 1
    assert link.stats.frames_ok == 4
    events = [one.events().receive_nowait() for _ in range(3)]  # type: ignore[attr-defined]
    assert events == [
        PilotChanged(PilotState.B),
        CableRating(20),
        FaultRaised(FaultCode.GROUND_FAILURE, "error_flags.rcd_triggered"),
    ]

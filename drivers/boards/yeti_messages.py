"""Yeti-family messages (`EverestToMcu`, `McuToEverest`, see yeti.proto) as dataclasses, and their codec.

Pure: bytes in, dataclasses out and back. Malformed payloads raise `ProtoDecodeError`; an empty or
unknown oneof case (or an enum value we do not know) decodes to None so the caller can count it.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from evstation.drivers.boards.proto3 import (
    FieldSpec,
    Kind,
    ProtoDecodeError,
    decode_fields,
    decode_scalar,
    encode_fields,
    encode_message_field,
    encode_scalar,
    iter_fields,
)


class CpState(enum.IntEnum):
    A = 0
    B = 1
    C = 2
    D = 3
    E = 4
    F = 5


class ResetReason(enum.IntEnum):
    USER = 0
    WATCHDOG = 1


class PpState(enum.IntEnum):
    NC = 0
    A13 = 1
    A20 = 2
    A32 = 3
    A70 = 4
    FAULT = 5


class YetiLockState(enum.IntEnum):
    UNDEFINED = 0
    UNLOCKED = 1
    LOCKED = 2


# A oneof case is either a scalar (one dataclass attribute) or a submessage (a flat field list).
class _Case:
    FIELD: ClassVar[int]
    SCALAR: ClassVar[tuple[str, Kind] | None] = None
    SPECS: ClassVar[tuple[FieldSpec, ...]] = ()
    ENUMS: ClassVar[dict[str, type[enum.IntEnum]]] = {}


def _specs(*items: tuple[int, str, Kind]) -> tuple[FieldSpec, ...]:
    return tuple(FieldSpec(n, name, kind) for n, name, kind in items)


# --------------------------------------------------------------------------------- host -> MCU


@dataclass(frozen=True, slots=True)
class HostKeepAlive(_Case):
    FIELD = 100
    SPECS = _specs(
        (1, "time_stamp", Kind.UINT32),
        (2, "hw_type", Kind.UINT32),
        (3, "hw_revision", Kind.UINT32),
        (4, "sw_version_string", Kind.STRING),
    )
    time_stamp: int = 0
    hw_type: int = 0
    hw_revision: int = 0
    sw_version_string: str = ""


@dataclass(frozen=True, slots=True)
class FirmwareUpdate(_Case):
    FIELD = 16
    SCALAR = ("invoke_rom_bootloader", Kind.BOOL)
    invoke_rom_bootloader: bool = True


@dataclass(frozen=True, slots=True)
class ConnectorLock(_Case):
    FIELD = 102
    SCALAR = ("lock", Kind.BOOL)
    lock: bool


@dataclass(frozen=True, slots=True)
class PwmDutyCycle(_Case):
    """Duty in 0.01 % units: 0 = state F, 10000 (or more) = steady +12 V (X1)."""

    FIELD = 103
    SCALAR = ("duty", Kind.UINT32)
    duty: int


@dataclass(frozen=True, slots=True)
class AllowPowerOn(_Case):
    FIELD = 104
    SCALAR = ("allowed", Kind.BOOL)
    allowed: bool


@dataclass(frozen=True, slots=True)
class ResetRequest(_Case):
    FIELD = 105
    SCALAR = ("reset", Kind.BOOL)
    reset: bool = True


@dataclass(frozen=True, slots=True)
class SetNumberOfPhases(_Case):
    FIELD = 106
    SCALAR = ("three_phase", Kind.BOOL)
    three_phase: bool


HostMessage = (
    HostKeepAlive
    | FirmwareUpdate
    | ConnectorLock
    | PwmDutyCycle
    | AllowPowerOn
    | ResetRequest
    | SetNumberOfPhases
)

# --------------------------------------------------------------------------------- MCU -> host


@dataclass(frozen=True, slots=True)
class McuKeepAlive(_Case):
    FIELD = 3
    SPECS = _specs(
        (1, "time_stamp", Kind.UINT32),
        (2, "hw_type", Kind.UINT32),
        (3, "hw_revision", Kind.UINT32),
        (4, "protocol_version_major", Kind.UINT32),
        (5, "protocol_version_minor", Kind.UINT32),
        (6, "sw_version_string", Kind.STRING),
        (7, "hwcap_max_current", Kind.FLOAT),
        (8, "hwcap_min_current", Kind.FLOAT),
        (9, "hwcap_max_phase_count", Kind.UINT32),
        (10, "hwcap_min_phase_count", Kind.UINT32),
        (11, "supports_changing_phases_during_charging", Kind.BOOL),
    )
    time_stamp: int = 0
    hw_type: int = 0
    hw_revision: int = 0
    protocol_version_major: int = 0
    protocol_version_minor: int = 0
    sw_version_string: str = ""
    hwcap_max_current: float = 0.0
    hwcap_min_current: float = 0.0
    hwcap_max_phase_count: int = 0
    hwcap_min_phase_count: int = 0
    supports_changing_phases_during_charging: bool = False


@dataclass(frozen=True, slots=True)
class McuReset(_Case):
    FIELD = 101
    SCALAR = ("reason", Kind.ENUM)
    ENUMS = {"reason": ResetReason}
    reason: ResetReason


@dataclass(frozen=True, slots=True)
class CpStateReport(_Case):
    FIELD = 102
    SCALAR = ("state", Kind.ENUM)
    ENUMS = {"state": CpState}
    state: CpState


@dataclass(frozen=True, slots=True)
class RelaisState(_Case):
    FIELD = 103
    SCALAR = ("closed", Kind.BOOL)
    closed: bool


@dataclass(frozen=True, slots=True)
class ErrorFlags(_Case):
    FIELD = 104
    SPECS = _specs(
        (1, "diode_fault", Kind.BOOL),
        (2, "rcd_selftest_failed", Kind.BOOL),
        (3, "rcd_triggered", Kind.BOOL),
        (4, "ventilation_not_available", Kind.BOOL),
        (5, "connector_lock_failed", Kind.BOOL),
        (6, "cp_signal_fault", Kind.BOOL),
        (7, "over_current", Kind.BOOL),
    )
    diode_fault: bool = False
    rcd_selftest_failed: bool = False
    rcd_triggered: bool = False
    ventilation_not_available: bool = False
    connector_lock_failed: bool = False
    cp_signal_fault: bool = False
    over_current: bool = False


@dataclass(frozen=True, slots=True)
class Telemetry(_Case):
    FIELD = 105
    SPECS = _specs((1, "cp_voltage_hi", Kind.UINT32), (2, "cp_voltage_lo", Kind.UINT32))
    cp_voltage_hi: int = 0
    cp_voltage_lo: int = 0


@dataclass(frozen=True, slots=True)
class PpStateReport(_Case):
    FIELD = 106
    SCALAR = ("state", Kind.ENUM)
    ENUMS = {"state": PpState}
    state: PpState


@dataclass(frozen=True, slots=True)
class LockStateReport(_Case):
    FIELD = 107
    SCALAR = ("state", Kind.ENUM)
    ENUMS = {"state": YetiLockState}
    state: YetiLockState


_METER_FLOATS = (
    "vrms_l1", "vrms_l2", "vrms_l3",
    "irms_l1", "irms_l2", "irms_l3", "irms_n",
    "watt_hr_l1", "watt_hr_l2", "watt_hr_l3", "total_watt_hr",
    "temp_l1", "temp_l2", "temp_l3", "temp_n",
    "watt_l1", "watt_l2", "watt_l3",
    "freq_l1", "freq_l2", "freq_l3",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class PowerMeterReport(_Case):
    FIELD = 108
    SPECS = (
        FieldSpec(1, "time_stamp", Kind.UINT32),
        *(FieldSpec(i + 2, name, Kind.FLOAT) for i, name in enumerate(_METER_FLOATS)),
        FieldSpec(len(_METER_FLOATS) + 2, "phase_seq_error", Kind.BOOL),
    )
    time_stamp: int = 0
    vrms_l1: float = 0.0
    vrms_l2: float = 0.0
    vrms_l3: float = 0.0
    irms_l1: float = 0.0
    irms_l2: float = 0.0
    irms_l3: float = 0.0
    irms_n: float = 0.0
    watt_hr_l1: float = 0.0
    watt_hr_l2: float = 0.0
    watt_hr_l3: float = 0.0
    total_watt_hr: float = 0.0
    temp_l1: float = 0.0
    temp_l2: float = 0.0
    temp_l3: float = 0.0
    temp_n: float = 0.0
    watt_l1: float = 0.0
    watt_l2: float = 0.0
    watt_l3: float = 0.0
    freq_l1: float = 0.0
    freq_l2: float = 0.0
    freq_l3: float = 0.0
    phase_seq_error: bool = False


McuMessage = (
    McuKeepAlive
    | McuReset
    | CpStateReport
    | RelaisState
    | ErrorFlags
    | Telemetry
    | PpStateReport
    | LockStateReport
    | PowerMeterReport
)

_HOST_CASES: dict[int, type[_Case]] = {
    c.FIELD: c
    for c in (
        HostKeepAlive,
        FirmwareUpdate,
        ConnectorLock,
        PwmDutyCycle,
        AllowPowerOn,
        ResetRequest,
        SetNumberOfPhases,
    )
}
_MCU_CASES: dict[int, type[_Case]] = {
    c.FIELD: c
    for c in (
        McuKeepAlive, McuReset, CpStateReport, RelaisState, ErrorFlags,
        Telemetry, PpStateReport, LockStateReport, PowerMeterReport,
    )
}  # fmt: skip


def _encode_case(msg: _Case) -> bytes:
    values = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}  # type: ignore[arg-type]
    if msg.SCALAR is not None:
        name, kind = msg.SCALAR
        return encode_scalar(msg.FIELD, kind, values[name])
    return encode_message_field(msg.FIELD, encode_fields(values, msg.SPECS))


def _decode_case(cases: dict[int, type[_Case]], payload: bytes) -> Any:
    chosen = None
    for field in iter_fields(payload):
        if field.number in cases:
            # proto3 oneof: the last member on the wire wins.
            chosen = field
    if chosen is None:
        return None
    cls = cases[chosen.number]
    if cls.SCALAR is not None:
        name, kind = cls.SCALAR
        values = {name: decode_scalar(chosen, kind)}
    else:
        if not isinstance(chosen.value, bytes) or chosen.wire_type.name != "LEN":
            raise ProtoDecodeError(f"field {chosen.number}: submessage expected")
        values = decode_fields(chosen.value, cls.SPECS)
    for name, enum_cls in cls.ENUMS.items():
        try:
            values[name] = enum_cls(values[name])
        except ValueError:
            # proto3 enums are open: a value from a newer firmware is not an error, just unknown.
            return None
    return cls(**values)


def encode_host_message(msg: HostMessage) -> bytes:
    """`EverestToMcu` with one oneof case set."""
    return _encode_case(msg)


def encode_mcu_message(msg: McuMessage) -> bytes:
    """`McuToEverest` with one oneof case set."""
    return _encode_case(msg)


def decode_host_message(payload: bytes) -> HostMessage | None:
    """`EverestToMcu` -> its oneof case; None when empty or unknown. Raises `ProtoDecodeError`."""
    result: HostMessage | None = _decode_case(_HOST_CASES, payload)
    return result


def decode_mcu_message(payload: bytes) -> McuMessage | None:
    """`McuToEverest` -> its oneof case; None when empty or unknown. Raises `ProtoDecodeError`."""
    result: McuMessage | None = _decode_case(_MCU_CASES, payload)
    return result

from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ResetReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USER: _ClassVar[ResetReason]
    WATCHDOG: _ClassVar[ResetReason]

class CpState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_A: _ClassVar[CpState]
    STATE_B: _ClassVar[CpState]
    STATE_C: _ClassVar[CpState]
    STATE_D: _ClassVar[CpState]
    STATE_E: _ClassVar[CpState]
    STATE_F: _ClassVar[CpState]

class PpState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_NC: _ClassVar[PpState]
    STATE_13A: _ClassVar[PpState]
    STATE_20A: _ClassVar[PpState]
    STATE_32A: _ClassVar[PpState]
    STATE_70A: _ClassVar[PpState]
    STATE_FAULT: _ClassVar[PpState]

class LockState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    UNDEFINED: _ClassVar[LockState]
    UNLOCKED: _ClassVar[LockState]
    LOCKED: _ClassVar[LockState]
USER: ResetReason
WATCHDOG: ResetReason
STATE_A: CpState
STATE_B: CpState
STATE_C: CpState
STATE_D: CpState
STATE_E: CpState
STATE_F: CpState
STATE_NC: PpState
STATE_13A: PpState
STATE_20A: PpState
STATE_32A: PpState
STATE_70A: PpState
STATE_FAULT: PpState
UNDEFINED: LockState
UNLOCKED: LockState
LOCKED: LockState

class EverestToMcu(_message.Message):
    __slots__ = ("firmware_update", "keep_alive", "connector_lock", "pwm_duty_cycle", "allow_power_on", "reset", "set_number_of_phases")
    FIRMWARE_UPDATE_FIELD_NUMBER: _ClassVar[int]
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_LOCK_FIELD_NUMBER: _ClassVar[int]
    PWM_DUTY_CYCLE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_POWER_ON_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    SET_NUMBER_OF_PHASES_FIELD_NUMBER: _ClassVar[int]
    firmware_update: FirmwareUpdate
    keep_alive: KeepAlive
    connector_lock: bool
    pwm_duty_cycle: int
    allow_power_on: bool
    reset: bool
    set_number_of_phases: bool
    def __init__(self, firmware_update: _Optional[_Union[FirmwareUpdate, _Mapping]] = ..., keep_alive: _Optional[_Union[KeepAlive, _Mapping]] = ..., connector_lock: _Optional[bool] = ..., pwm_duty_cycle: _Optional[int] = ..., allow_power_on: _Optional[bool] = ..., reset: _Optional[bool] = ..., set_number_of_phases: _Optional[bool] = ...) -> None: ...

class FirmwareUpdate(_message.Message):
    __slots__ = ("invoke_rom_bootloader",)
    INVOKE_ROM_BOOTLOADER_FIELD_NUMBER: _ClassVar[int]
    invoke_rom_bootloader: bool
    def __init__(self, invoke_rom_bootloader: _Optional[bool] = ...) -> None: ...

class KeepAlive(_message.Message):
    __slots__ = ("time_stamp", "hw_type", "hw_revision", "sw_version_string")
    TIME_STAMP_FIELD_NUMBER: _ClassVar[int]
    HW_TYPE_FIELD_NUMBER: _ClassVar[int]
    HW_REVISION_FIELD_NUMBER: _ClassVar[int]
    SW_VERSION_STRING_FIELD_NUMBER: _ClassVar[int]
    time_stamp: int
    hw_type: int
    hw_revision: int
    sw_version_string: str
    def __init__(self, time_stamp: _Optional[int] = ..., hw_type: _Optional[int] = ..., hw_revision: _Optional[int] = ..., sw_version_string: _Optional[str] = ...) -> None: ...

class McuToEverest(_message.Message):
    __slots__ = ("keep_alive", "reset", "cp_state", "relais_state", "error_flags", "telemetry", "pp_state", "lock_state", "power_meter")
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    CP_STATE_FIELD_NUMBER: _ClassVar[int]
    RELAIS_STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FLAGS_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    PP_STATE_FIELD_NUMBER: _ClassVar[int]
    LOCK_STATE_FIELD_NUMBER: _ClassVar[int]
    POWER_METER_FIELD_NUMBER: _ClassVar[int]
    keep_alive: KeepAliveLo
    reset: ResetReason
    cp_state: CpState
    relais_state: bool
    error_flags: ErrorFlags
    telemetry: Telemetry
    pp_state: PpState
    lock_state: LockState
    power_meter: PowerMeter
    def __init__(self, keep_alive: _Optional[_Union[KeepAliveLo, _Mapping]] = ..., reset: _Optional[_Union[ResetReason, str]] = ..., cp_state: _Optional[_Union[CpState, str]] = ..., relais_state: _Optional[bool] = ..., error_flags: _Optional[_Union[ErrorFlags, _Mapping]] = ..., telemetry: _Optional[_Union[Telemetry, _Mapping]] = ..., pp_state: _Optional[_Union[PpState, str]] = ..., lock_state: _Optional[_Union[LockState, str]] = ..., power_meter: _Optional[_Union[PowerMeter, _Mapping]] = ...) -> None: ...

class KeepAliveLo(_message.Message):
    __slots__ = ("time_stamp", "hw_type", "hw_revision", "protocol_version_major", "protocol_version_minor", "sw_version_string", "hwcap_max_current", "hwcap_min_current", "hwcap_max_phase_count", "hwcap_min_phase_count", "supports_changing_phases_during_charging")
    TIME_STAMP_FIELD_NUMBER: _ClassVar[int]
    HW_TYPE_FIELD_NUMBER: _ClassVar[int]
    HW_REVISION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_MAJOR_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_MINOR_FIELD_NUMBER: _ClassVar[int]
    SW_VERSION_STRING_FIELD_NUMBER: _ClassVar[int]
    HWCAP_MAX_CURRENT_FIELD_NUMBER: _ClassVar[int]
    HWCAP_MIN_CURRENT_FIELD_NUMBER: _ClassVar[int]
    HWCAP_MAX_PHASE_COUNT_FIELD_NUMBER: _ClassVar[int]
    HWCAP_MIN_PHASE_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_CHANGING_PHASES_DURING_CHARGING_FIELD_NUMBER: _ClassVar[int]
    time_stamp: int
    hw_type: int
    hw_revision: int
    protocol_version_major: int
    protocol_version_minor: int
    sw_version_string: str
    hwcap_max_current: float
    hwcap_min_current: float
    hwcap_max_phase_count: int
    hwcap_min_phase_count: int
    supports_changing_phases_during_charging: bool
    def __init__(self, time_stamp: _Optional[int] = ..., hw_type: _Optional[int] = ..., hw_revision: _Optional[int] = ..., protocol_version_major: _Optional[int] = ..., protocol_version_minor: _Optional[int] = ..., sw_version_string: _Optional[str] = ..., hwcap_max_current: _Optional[float] = ..., hwcap_min_current: _Optional[float] = ..., hwcap_max_phase_count: _Optional[int] = ..., hwcap_min_phase_count: _Optional[int] = ..., supports_changing_phases_during_charging: _Optional[bool] = ...) -> None: ...

class ErrorFlags(_message.Message):
    __slots__ = ("diode_fault", "rcd_selftest_failed", "rcd_triggered", "ventilation_not_available", "connector_lock_failed", "cp_signal_fault", "over_current")
    DIODE_FAULT_FIELD_NUMBER: _ClassVar[int]
    RCD_SELFTEST_FAILED_FIELD_NUMBER: _ClassVar[int]
    RCD_TRIGGERED_FIELD_NUMBER: _ClassVar[int]
    VENTILATION_NOT_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_LOCK_FAILED_FIELD_NUMBER: _ClassVar[int]
    CP_SIGNAL_FAULT_FIELD_NUMBER: _ClassVar[int]
    OVER_CURRENT_FIELD_NUMBER: _ClassVar[int]
    diode_fault: bool
    rcd_selftest_failed: bool
    rcd_triggered: bool
    ventilation_not_available: bool
    connector_lock_failed: bool
    cp_signal_fault: bool
    over_current: bool
    def __init__(self, diode_fault: _Optional[bool] = ..., rcd_selftest_failed: _Optional[bool] = ..., rcd_triggered: _Optional[bool] = ..., ventilation_not_available: _Optional[bool] = ..., connector_lock_failed: _Optional[bool] = ..., cp_signal_fault: _Optional[bool] = ..., over_current: _Optional[bool] = ...) -> None: ...

class Telemetry(_message.Message):
    __slots__ = ("cp_voltage_hi", "cp_voltage_lo")
    CP_VOLTAGE_HI_FIELD_NUMBER: _ClassVar[int]
    CP_VOLTAGE_LO_FIELD_NUMBER: _ClassVar[int]
    cp_voltage_hi: int
    cp_voltage_lo: int
    def __init__(self, cp_voltage_hi: _Optional[int] = ..., cp_voltage_lo: _Optional[int] = ...) -> None: ...

class PowerMeter(_message.Message):
    __slots__ = ("time_stamp", "vrmsL1", "vrmsL2", "vrmsL3", "irmsL1", "irmsL2", "irmsL3", "irmsN", "wattHrL1", "wattHrL2", "wattHrL3", "totalWattHr", "tempL1", "tempL2", "tempL3", "tempN", "wattL1", "wattL2", "wattL3", "freqL1", "freqL2", "freqL3", "phaseSeqError")
    TIME_STAMP_FIELD_NUMBER: _ClassVar[int]
    VRMSL1_FIELD_NUMBER: _ClassVar[int]
    VRMSL2_FIELD_NUMBER: _ClassVar[int]
    VRMSL3_FIELD_NUMBER: _ClassVar[int]
    IRMSL1_FIELD_NUMBER: _ClassVar[int]
    IRMSL2_FIELD_NUMBER: _ClassVar[int]
    IRMSL3_FIELD_NUMBER: _ClassVar[int]
    IRMSN_FIELD_NUMBER: _ClassVar[int]
    WATTHRL1_FIELD_NUMBER: _ClassVar[int]
    WATTHRL2_FIELD_NUMBER: _ClassVar[int]
    WATTHRL3_FIELD_NUMBER: _ClassVar[int]
    TOTALWATTHR_FIELD_NUMBER: _ClassVar[int]
    TEMPL1_FIELD_NUMBER: _ClassVar[int]
    TEMPL2_FIELD_NUMBER: _ClassVar[int]
    TEMPL3_FIELD_NUMBER: _ClassVar[int]
    TEMPN_FIELD_NUMBER: _ClassVar[int]
    WATTL1_FIELD_NUMBER: _ClassVar[int]
    WATTL2_FIELD_NUMBER: _ClassVar[int]
    WATTL3_FIELD_NUMBER: _ClassVar[int]
    FREQL1_FIELD_NUMBER: _ClassVar[int]
    FREQL2_FIELD_NUMBER: _ClassVar[int]
    FREQL3_FIELD_NUMBER: _ClassVar[int]
    PHASESEQERROR_FIELD_NUMBER: _ClassVar[int]
    time_stamp: int
    vrmsL1: float
    vrmsL2: float
    vrmsL3: float
    irmsL1: float
    irmsL2: float
    irmsL3: float
    irmsN: float
    wattHrL1: float
    wattHrL2: float
    wattHrL3: float
    totalWattHr: float
    tempL1: float
    tempL2: float
    tempL3: float
    tempN: float
    wattL1: float
    wattL2: float
    wattL3: float
    freqL1: float
    freqL2: float
    freqL3: float
    phaseSeqError: bool
    def __init__(self, time_stamp: _Optional[int] = ..., vrmsL1: _Optional[float] = ..., vrmsL2: _Optional[float] = ..., vrmsL3: _Optional[float] = ..., irmsL1: _Optional[float] = ..., irmsL2: _Optional[float] = ..., irmsL3: _Optional[float] = ..., irmsN: _Optional[float] = ..., wattHrL1: _Optional[float] = ..., wattHrL2: _Optional[float] = ..., wattHrL3: _Optional[float] = ..., totalWattHr: _Optional[float] = ..., tempL1: _Optional[float] = ..., tempL2: _Optional[float] = ..., tempL3: _Optional[float] = ..., tempN: _Optional[float] = ..., wattL1: _Optional[float] = ..., wattL2: _Optional[float] = ..., wattL3: _Optional[float] = ..., freqL1: _Optional[float] = ..., freqL2: _Optional[float] = ..., freqL3: _Optional[float] = ..., phaseSeqError: _Optional[bool] = ...) -> None: ...

from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CpState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATE_A: _ClassVar[CpState]
    STATE_B: _ClassVar[CpState]
    STATE_C: _ClassVar[CpState]
    STATE_D: _ClassVar[CpState]
    STATE_E: _ClassVar[CpState]
    STATE_F: _ClassVar[CpState]

class ResetReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    USER: _ClassVar[ResetReason]
    WATCHDOG: _ClassVar[ResetReason]

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
    LOCKING: _ClassVar[LockState]
    UNLOCKING: _ClassVar[LockState]

class CoilType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COIL_UNKNOWN: _ClassVar[CoilType]
    COIL_AC: _ClassVar[CoilType]
    COIL_DC1: _ClassVar[CoilType]
    COIL_DC2: _ClassVar[CoilType]
    COIL_DC3: _ClassVar[CoilType]

class ChargePortType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISABLED: _ClassVar[ChargePortType]
    AC: _ClassVar[ChargePortType]
    DC: _ClassVar[ChargePortType]

class GpioPull(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    NONE: _ClassVar[GpioPull]
    UP: _ClassVar[GpioPull]
    DOWN: _ClassVar[GpioPull]

class ConfigHardwareRevision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HW_REV_UNKNOWN: _ClassVar[ConfigHardwareRevision]
    HW_REV_A: _ClassVar[ConfigHardwareRevision]
    HW_REV_B: _ClassVar[ConfigHardwareRevision]

class MotorLockType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MOTOR_LOCK_UNKNOWN: _ClassVar[MotorLockType]
    MOTOR_LOCK_HELLA: _ClassVar[MotorLockType]
    MOTOR_LOCK_DEBUG_VALEO_HVAC: _ClassVar[MotorLockType]
    MOTOR_LOCK_NONE: _ClassVar[MotorLockType]
STATE_A: CpState
STATE_B: CpState
STATE_C: CpState
STATE_D: CpState
STATE_E: CpState
STATE_F: CpState
USER: ResetReason
WATCHDOG: ResetReason
STATE_NC: PpState
STATE_13A: PpState
STATE_20A: PpState
STATE_32A: PpState
STATE_70A: PpState
STATE_FAULT: PpState
UNDEFINED: LockState
UNLOCKED: LockState
LOCKED: LockState
LOCKING: LockState
UNLOCKING: LockState
COIL_UNKNOWN: CoilType
COIL_AC: CoilType
COIL_DC1: CoilType
COIL_DC2: CoilType
COIL_DC3: CoilType
DISABLED: ChargePortType
AC: ChargePortType
DC: ChargePortType
NONE: GpioPull
UP: GpioPull
DOWN: GpioPull
HW_REV_UNKNOWN: ConfigHardwareRevision
HW_REV_A: ConfigHardwareRevision
HW_REV_B: ConfigHardwareRevision
MOTOR_LOCK_UNKNOWN: MotorLockType
MOTOR_LOCK_HELLA: MotorLockType
MOTOR_LOCK_DEBUG_VALEO_HVAC: MotorLockType
MOTOR_LOCK_NONE: MotorLockType

class EverestToMcu(_message.Message):
    __slots__ = ("keep_alive", "firmware_update", "connector_lock", "pwm_duty_cycle", "set_coil_state_request", "reset", "config_response", "set_fan_state", "rcd_cmd", "connector")
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    FIRMWARE_UPDATE_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_LOCK_FIELD_NUMBER: _ClassVar[int]
    PWM_DUTY_CYCLE_FIELD_NUMBER: _ClassVar[int]
    SET_COIL_STATE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    SET_FAN_STATE_FIELD_NUMBER: _ClassVar[int]
    RCD_CMD_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    keep_alive: KeepAlive
    firmware_update: bool
    connector_lock: bool
    pwm_duty_cycle: int
    set_coil_state_request: CoilState
    reset: bool
    config_response: BootConfigResponse
    set_fan_state: FanState
    rcd_cmd: RcdCommand
    connector: int
    def __init__(self, keep_alive: _Optional[_Union[KeepAlive, _Mapping]] = ..., firmware_update: _Optional[bool] = ..., connector_lock: _Optional[bool] = ..., pwm_duty_cycle: _Optional[int] = ..., set_coil_state_request: _Optional[_Union[CoilState, _Mapping]] = ..., reset: _Optional[bool] = ..., config_response: _Optional[_Union[BootConfigResponse, _Mapping]] = ..., set_fan_state: _Optional[_Union[FanState, _Mapping]] = ..., rcd_cmd: _Optional[_Union[RcdCommand, _Mapping]] = ..., connector: _Optional[int] = ...) -> None: ...

class McuToEverest(_message.Message):
    __slots__ = ("keep_alive", "reset", "cp_state", "set_coil_state_response", "error_flags", "telemetry", "pp_state", "fan_state", "lock_state", "config_request", "connector")
    KEEP_ALIVE_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    CP_STATE_FIELD_NUMBER: _ClassVar[int]
    SET_COIL_STATE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FLAGS_FIELD_NUMBER: _ClassVar[int]
    TELEMETRY_FIELD_NUMBER: _ClassVar[int]
    PP_STATE_FIELD_NUMBER: _ClassVar[int]
    FAN_STATE_FIELD_NUMBER: _ClassVar[int]
    LOCK_STATE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_FIELD_NUMBER: _ClassVar[int]
    keep_alive: KeepAlive
    reset: ResetReason
    cp_state: CpState
    set_coil_state_response: CoilState
    error_flags: ErrorFlags
    telemetry: Telemetry
    pp_state: PpState
    fan_state: FanState
    lock_state: LockState
    config_request: BootConfigRequest
    connector: int
    def __init__(self, keep_alive: _Optional[_Union[KeepAlive, _Mapping]] = ..., reset: _Optional[_Union[ResetReason, str]] = ..., cp_state: _Optional[_Union[CpState, str]] = ..., set_coil_state_response: _Optional[_Union[CoilState, _Mapping]] = ..., error_flags: _Optional[_Union[ErrorFlags, _Mapping]] = ..., telemetry: _Optional[_Union[Telemetry, _Mapping]] = ..., pp_state: _Optional[_Union[PpState, str]] = ..., fan_state: _Optional[_Union[FanState, _Mapping]] = ..., lock_state: _Optional[_Union[LockState, str]] = ..., config_request: _Optional[_Union[BootConfigRequest, _Mapping]] = ..., connector: _Optional[int] = ...) -> None: ...

class ErrorFlags(_message.Message):
    __slots__ = ("diode_fault", "rcd_selftest_failed", "rcd_triggered", "ventilation_not_available", "connector_lock_failed", "cp_signal_fault", "heartbeat_timeout", "coil_feedback_diverges", "pp_signal_fault")
    DIODE_FAULT_FIELD_NUMBER: _ClassVar[int]
    RCD_SELFTEST_FAILED_FIELD_NUMBER: _ClassVar[int]
    RCD_TRIGGERED_FIELD_NUMBER: _ClassVar[int]
    VENTILATION_NOT_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    CONNECTOR_LOCK_FAILED_FIELD_NUMBER: _ClassVar[int]
    CP_SIGNAL_FAULT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    COIL_FEEDBACK_DIVERGES_FIELD_NUMBER: _ClassVar[int]
    PP_SIGNAL_FAULT_FIELD_NUMBER: _ClassVar[int]
    diode_fault: bool
    rcd_selftest_failed: bool
    rcd_triggered: bool
    ventilation_not_available: bool
    connector_lock_failed: bool
    cp_signal_fault: bool
    heartbeat_timeout: bool
    coil_feedback_diverges: bool
    pp_signal_fault: bool
    def __init__(self, diode_fault: _Optional[bool] = ..., rcd_selftest_failed: _Optional[bool] = ..., rcd_triggered: _Optional[bool] = ..., ventilation_not_available: _Optional[bool] = ..., connector_lock_failed: _Optional[bool] = ..., cp_signal_fault: _Optional[bool] = ..., heartbeat_timeout: _Optional[bool] = ..., coil_feedback_diverges: _Optional[bool] = ..., pp_signal_fault: _Optional[bool] = ...) -> None: ...

class KeepAlive(_message.Message):
    __slots__ = ("time_stamp", "hw_type", "hw_revision", "sw_version_string", "configuration_done")
    TIME_STAMP_FIELD_NUMBER: _ClassVar[int]
    HW_TYPE_FIELD_NUMBER: _ClassVar[int]
    HW_REVISION_FIELD_NUMBER: _ClassVar[int]
    SW_VERSION_STRING_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_DONE_FIELD_NUMBER: _ClassVar[int]
    time_stamp: int
    hw_type: int
    hw_revision: int
    sw_version_string: str
    configuration_done: bool
    def __init__(self, time_stamp: _Optional[int] = ..., hw_type: _Optional[int] = ..., hw_revision: _Optional[int] = ..., sw_version_string: _Optional[str] = ..., configuration_done: _Optional[bool] = ...) -> None: ...

class Telemetry(_message.Message):
    __slots__ = ("cp_voltage_hi", "cp_voltage_lo")
    CP_VOLTAGE_HI_FIELD_NUMBER: _ClassVar[int]
    CP_VOLTAGE_LO_FIELD_NUMBER: _ClassVar[int]
    cp_voltage_hi: int
    cp_voltage_lo: int
    def __init__(self, cp_voltage_hi: _Optional[int] = ..., cp_voltage_lo: _Optional[int] = ...) -> None: ...

class FanState(_message.Message):
    __slots__ = ("fan_id", "enabled", "duty", "rpm")
    FAN_ID_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    DUTY_FIELD_NUMBER: _ClassVar[int]
    RPM_FIELD_NUMBER: _ClassVar[int]
    fan_id: int
    enabled: bool
    duty: int
    rpm: int
    def __init__(self, fan_id: _Optional[int] = ..., enabled: _Optional[bool] = ..., duty: _Optional[int] = ..., rpm: _Optional[int] = ...) -> None: ...

class CoilState(_message.Message):
    __slots__ = ("coil_type", "coil_state")
    COIL_TYPE_FIELD_NUMBER: _ClassVar[int]
    COIL_STATE_FIELD_NUMBER: _ClassVar[int]
    coil_type: CoilType
    coil_state: bool
    def __init__(self, coil_type: _Optional[_Union[CoilType, str]] = ..., coil_state: _Optional[bool] = ...) -> None: ...

class BootConfigRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BootConfigResponse(_message.Message):
    __slots__ = ("hw_rev", "chargeport_config")
    HW_REV_FIELD_NUMBER: _ClassVar[int]
    CHARGEPORT_CONFIG_FIELD_NUMBER: _ClassVar[int]
    hw_rev: ConfigHardwareRevision
    chargeport_config: _containers.RepeatedCompositeFieldContainer[ChargePortConfig]
    def __init__(self, hw_rev: _Optional[_Union[ConfigHardwareRevision, str]] = ..., chargeport_config: _Optional[_Iterable[_Union[ChargePortConfig, _Mapping]]] = ...) -> None: ...

class ChargePortConfig(_message.Message):
    __slots__ = ("type", "feedback_active_low", "feedback_pull", "lock", "has_socket")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_ACTIVE_LOW_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_PULL_FIELD_NUMBER: _ClassVar[int]
    LOCK_FIELD_NUMBER: _ClassVar[int]
    HAS_SOCKET_FIELD_NUMBER: _ClassVar[int]
    type: ChargePortType
    feedback_active_low: bool
    feedback_pull: GpioPull
    lock: ConfigMotorLockType
    has_socket: bool
    def __init__(self, type: _Optional[_Union[ChargePortType, str]] = ..., feedback_active_low: _Optional[bool] = ..., feedback_pull: _Optional[_Union[GpioPull, str]] = ..., lock: _Optional[_Union[ConfigMotorLockType, _Mapping]] = ..., has_socket: _Optional[bool] = ...) -> None: ...

class ConfigMotorLockType(_message.Message):
    __slots__ = ("type",)
    TYPE_FIELD_NUMBER: _ClassVar[int]
    type: MotorLockType
    def __init__(self, type: _Optional[_Union[MotorLockType, str]] = ...) -> None: ...

class RcdCommand(_message.Message):
    __slots__ = ("test", "reset")
    TEST_FIELD_NUMBER: _ClassVar[int]
    RESET_FIELD_NUMBER: _ClassVar[int]
    test: bool
    reset: bool
    def __init__(self, test: _Optional[bool] = ..., reset: _Optional[bool] = ...) -> None: ...

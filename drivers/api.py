"""The seams between the runtime and the hardware: small Protocols and plain frozen-dataclass events.

A driver reports what the hardware sees and does what it is told. It never knows OCPP message formats;
the runtime maps `FaultCode` to OCPP error codes with `ocpp16_error_code` and `mrec_code`.
Constructors never start tasks or threads: a driver that needs background work exposes
`run(*, task_status)` and the runtime starts it with `nursery.start`.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import field
from datetime import datetime
from typing import NoReturn, Protocol, runtime_checkable

import trio

from evstation.records import record


class PilotState(enum.Enum):
    """IEC 61851-1 control-pilot states as seen by the EVSE."""

    A = "A"  # no EV
    B = "B"  # EV connected, not ready
    C = "C"  # EV ready, charging
    D = "D"  # EV ready, ventilation required
    E = "E"  # CP shorted / EVSE unpowered: error
    F = "F"  # EVSE not available / fault signalled to the EV


class FaultCode(enum.Enum):
    """One catalogue of hardware faults: the ChargeX MREC set plus board conditions MREC lacks.

    The value is the name used on the control API and in logs.
    """

    CONNECTOR_LOCK_FAILURE = "ConnectorLockFailure"  # CX001
    GROUND_FAILURE = "GroundFailure"  # CX002 (RCD / GFCI)
    HIGH_TEMPERATURE = "HighTemperature"  # CX003
    OVER_CURRENT = "OverCurrentFailure"  # CX004
    OVER_VOLTAGE = "OverVoltage"  # CX005
    UNDER_VOLTAGE = "UnderVoltage"  # CX006
    EMERGENCY_STOP = "EmergencyStop"  # CX008
    PILOT_FAULT = "PilotFault"  # CX014
    POWER_LOSS = "PowerLoss"  # CX015
    EVSE_CONTACTOR_FAULT = "EVSEContactorFault"  # CX017
    PROXIMITY_FAULT = "ProximityFault"  # CX023
    DIODE_FAULT = "DiodeFault"  # not in MREC
    VENTILATION_NOT_AVAILABLE = "VentilationNotAvailable"  # not in MREC
    RCD_SELFTEST_FAILED = "RcdSelfTestFailed"  # not in MREC, but a ground-fault device failure
    BOARD_COMMUNICATION = "BoardCommunicationFault"  # keep-alive lost / UART silent
    METER_COMMUNICATION = "MeterCommunicationFault"  # Modbus timeout / CRC error
    METER_ENERGY_BACKWARDS = "MeterEnergyWentBackwards"  # register read lower than before
    READER_FAILURE = "ReaderFailure"
    # Not hardware: the station's database refuses writes (disk full, read-only SD card). Blocking: no
    # energy may flow that the station cannot record (runtime/storage.py, docs/storage.md).
    STORAGE_FAILURE = "StorageFailure"


# (MREC code or None, OCPP 1.6 ChargePointErrorCode). Source: ChargeX MREC report, and
# ../docs/hardware.md "Fault codes" which renders this same table.
_FAULT_TABLE: dict[FaultCode, tuple[str | None, str]] = {
    FaultCode.CONNECTOR_LOCK_FAILURE: ("CX001", "ConnectorLockFailure"),
    FaultCode.GROUND_FAILURE: ("CX002", "GroundFailure"),
    FaultCode.HIGH_TEMPERATURE: ("CX003", "HighTemperature"),
    FaultCode.OVER_CURRENT: ("CX004", "OverCurrentFailure"),
    FaultCode.OVER_VOLTAGE: ("CX005", "OverVoltage"),
    FaultCode.UNDER_VOLTAGE: ("CX006", "UnderVoltage"),
    FaultCode.EMERGENCY_STOP: ("CX008", "OtherError"),
    FaultCode.PILOT_FAULT: ("CX014", "OtherError"),
    FaultCode.POWER_LOSS: ("CX015", "OtherError"),
    FaultCode.EVSE_CONTACTOR_FAULT: ("CX017", "PowerSwitchFailure"),
    FaultCode.PROXIMITY_FAULT: ("CX023", "OtherError"),
    FaultCode.DIODE_FAULT: (None, "OtherError"),
    FaultCode.VENTILATION_NOT_AVAILABLE: (None, "OtherError"),
    FaultCode.RCD_SELFTEST_FAILED: (None, "GroundFailure"),
    FaultCode.BOARD_COMMUNICATION: (None, "InternalError"),
    FaultCode.METER_COMMUNICATION: (None, "PowerMeterFailure"),
    FaultCode.METER_ENERGY_BACKWARDS: (None, "PowerMeterFailure"),
    FaultCode.READER_FAILURE: (None, "ReaderFailure"),
    FaultCode.STORAGE_FAILURE: (None, "InternalError"),
}

MREC_VENDOR_ID = "https://chargex.inl.gov"

# Faults that are reported but leave the EVSE operative: charging may go on (MREC: Faulted only
# when inoperative). Every other fault opens the contactor.
NON_BLOCKING_FAULTS = frozenset(
    {
        FaultCode.HIGH_TEMPERATURE,  # MREC CX003 is a derating condition
        FaultCode.METER_COMMUNICATION,
        FaultCode.METER_ENERGY_BACKWARDS,
        FaultCode.READER_FAILURE,
    }
)


def mrec_code(code: FaultCode) -> str | None:
    """The ChargeX MREC code (`CXnnn`) for a fault, or None when MREC has none."""
    return _FAULT_TABLE[code][0]


def ocpp16_error_code(code: FaultCode) -> str:
    """The OCPP 1.6 `ChargePointErrorCode` a StatusNotification carries for this fault."""
    return _FAULT_TABLE[code][1]


# ---------------------------------------------------------------------------------------------------
# Meter


@record
class PhaseValues:
    """Per-phase values; None where the meter has no such phase or register."""

    l1: float | None = None
    l2: float | None = None
    l3: float | None = None


@record
class SignedReading:
    """A billing-grade signed snapshot (e.g. OCMF text) as produced by the meter."""

    data: str
    encoding: str  # e.g. "OCMF"
    signing_method: str  # e.g. "ECDSA-secp256r1-SHA256"
    public_key: str | None = None


@record
class MeterSample:
    """One reading of a power meter. `timestamp` is UTC, from the runtime's wall clock."""

    timestamp: datetime
    energy_import_wh: float
    energy_export_wh: float | None = None
    power_w: float | None = None  # signed: negative = export
    voltage_v: PhaseValues = field(default_factory=PhaseValues)
    current_a: PhaseValues = field(default_factory=PhaseValues)
    frequency_hz: float | None = None
    signed: SignedReading | None = None


@record
class MeterFault:
    """The meter could not be read (timeout, CRC error, exception response) or read implausibly."""

    code: FaultCode
    detail: str


@record
class MeterRecovered:
    """The meter answers correctly again after a `MeterFault`."""


MeterEvent = MeterSample | MeterFault | MeterRecovered


@runtime_checkable
class PowerMeter(Protocol):
    """A power meter polled by its own task; readings and faults arrive on `events`."""

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Poll forever; faults are events, never exceptions out of this task."""
        ...

    def events(self) -> AsyncIterator[MeterEvent]:
        """The stream of samples and fault changes. One consumer."""
        ...

    def latest(self) -> MeterSample | None:
        """The last good sample, without waiting."""
        ...


# ---------------------------------------------------------------------------------------------------
# Charge controller (the board that drives the control pilot, the contactor and the lock)


class LockState(enum.Enum):
    UNKNOWN = "Unknown"
    UNLOCKED = "Unlocked"
    LOCKED = "Locked"


@record
class PilotChanged:
    state: PilotState


@record
class ContactorChanged:
    closed: bool


@record
class LockChanged:
    state: LockState


@record
class FaultRaised:
    code: FaultCode
    detail: str = ""


@record
class FaultCleared:
    code: FaultCode


@record
class CableRating:
    """The current rating of the plugged cable, read from its Proximity Pilot resistor (IEC 61851-1
    Annex B; `cable_rating_of_pp`). None: no cable in the socket, or a PP fault. Optional: a board
    that cannot read PP never sends it, and the runtime then knows no rating."""

    max_current_a: int | None


@record
class BoardReset:
    """The board restarted on its own (watchdog, brown-out): its state must be re-applied."""

    reason: str


ControllerEvent = (
    PilotChanged | ContactorChanged | LockChanged | FaultRaised | FaultCleared | BoardReset | CableRating
)

# IEC 61851-1 Annex B: the resistor between PP and PE in a Type 2 plug codes the cable's rating
# (drivers-facts.md section 3), nominal ohms -> amperes.
PP_CODING: dict[float, int] = {1500.0: 13, 680.0: 20, 220.0: 32, 100.0: 63}
CABLE_RATINGS_A: frozenset[int] = frozenset(PP_CODING.values())
_PP_TOLERANCE = 0.25  # a board's measurement may miss the nominal value by this share, not more


def cable_rating_of_pp(ohms: float) -> int | None:
    """The cable rating (A) a measured PP resistance codes, or None when it matches no coding (open
    circuit: no cable; anything else: a PP fault)."""
    for nominal, amps in PP_CODING.items():
        if abs(ohms - nominal) <= nominal * _PP_TOLERANCE:
            return amps
    return None


class ControllerError(Exception):
    """A command to the charge controller failed (refused, timed out, board silent)."""

    def __init__(self, code: FaultCode, detail: str) -> None:
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


@runtime_checkable
class ChargeController(Protocol):
    """A charge-controller board for one connector.

    Commands are async (they cross a serial line) and raise `ControllerError` on failure; state
    changes arrive on `events`. When its `run` task is cancelled, a board first puts itself into its
    safe state (drivers/safe_stop.py: offer withdrawn, EV stopped, contactor open, lock released)
    within a bounded time, so whoever stops the station needs nothing more than the cancellation.
    For boards that run the IEC 61851 machine themselves (OpenEVSE RAPI), `offer_current` /
    `allow_power` map onto the board's own enable/current commands.
    """

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn: ...

    def events(self) -> AsyncIterator[ControllerEvent]: ...

    async def offer_current(self, amps: float | None) -> None:
        """Set the PWM duty cycle for `amps`; None stops offering (steady +12 V, state X1)."""
        ...

    async def allow_power(self, allowed: bool) -> None:
        """Permit (or forbid) closing the contactor. Forbidding opens it at once."""
        ...

    async def set_lock(self, locked: bool) -> None: ...

    async def set_unavailable(self, unavailable: bool) -> None:
        """Signal state F to the EV (unavailable) or return to normal."""
        ...


# ---------------------------------------------------------------------------------------------------
# Identification


@record
class TokenPresented:
    id_token: str
    token_type: str = "ISO14443"  # the 2.0.1 IdTokenEnumType name; 1.6 only uses id_token


@runtime_checkable
class IdentificationReader(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn: ...

    def events(self) -> AsyncIterator[TokenPresented]: ...

"""Meter values (2.0.1 J; 1.6 MeterValues / transactionData): which measurands a reading can give, and
how a reading becomes the sampled values of either version. Pure: the runtime passes the reading and
the time in.

Every sampled value carries its measurand, unit (2.0.1 unitOfMeasure, 1.6 unit), location and context;
per-phase quantities carry their phase (current per line L1/L2/L3, voltage line to neutral) and a value
without a phase is the overall one (both specs read it so), so per-phase currents are never sent
without it. A measurand the reading lacks is left out, never sent as 0.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Final

from evstation.protocol.versions import OcppVersion
from evstation.records import record

__all__ = [
    "CLOCK_ALIGNED_MEASURANDS",
    "ENERGY_REGISTER",
    "MEASURANDS",
    "Context",
    "Reading",
    "SignedData",
    "meter_value",
    "parse_measurands",
    "sampled_values",
]

ENERGY_REGISTER: Final = "Energy.Active.Import.Register"
ENERGY_EXPORT_REGISTER: Final = "Energy.Active.Export.Register"
POWER_IMPORT: Final = "Power.Active.Import"
CURRENT_IMPORT: Final = "Current.Import"
CURRENT_OFFERED: Final = "Current.Offered"
VOLTAGE: Final = "Voltage"
FREQUENCY: Final = "Frequency"

# What a meter reading (plus the EVSE's own offer) can give: the valuesList of every Measurands
# variable (SampledDataCtrlr, AlignedDataCtrlr; 1.6 MeterValuesSampledData, MeterValuesAlignedData...).
MEASURANDS: Final = (
    ENERGY_REGISTER,
    ENERGY_EXPORT_REGISTER,
    POWER_IMPORT,
    CURRENT_IMPORT,
    CURRENT_OFFERED,
    VOLTAGE,
    FREQUENCY,
)
# Current.Offered is the EVSE's offer in a transaction, not a quantity of the grid connection.
CLOCK_ALIGNED_MEASURANDS: Final = tuple(m for m in MEASURANDS if m != CURRENT_OFFERED)

# The meter measures what leaves the EVSE: its outlet.
LOCATION: Final = "Outlet"
_PHASES: Final = ("L1", "L2", "L3")
_VOLTAGE_PHASES: Final = ("L1-N", "L2-N", "L3-N")


class Context(enum.Enum):
    """ReadingContextEnumType (the same texts in 1.6)."""

    TRANSACTION_BEGIN = "Transaction.Begin"
    PERIODIC = "Sample.Periodic"
    CLOCK = "Sample.Clock"
    TRANSACTION_END = "Transaction.End"
    TRIGGER = "Trigger"


@record
class SignedData:
    """A billing-grade signed snapshot from the meter (e.g. OCMF)."""

    data: str
    encoding: str
    signing_method: str
    public_key: str | None = None


@record
class Reading:
    """One reading of an EVSE's meter; None where the meter has no such value."""

    energy_import_wh: float | None = None
    energy_export_wh: float | None = None
    power_w: float | None = None
    current_a: tuple[float | None, float | None, float | None] = (None, None, None)
    voltage_v: tuple[float | None, float | None, float | None] = (None, None, None)
    frequency_hz: float | None = None
    current_offered_a: float | None = None
    signed: SignedData | None = None


def parse_measurands(text: str) -> tuple[str, ...]:
    """A comma-separated Measurands value as a tuple, unknown members dropped (validation keeps them out)."""
    return tuple(item for item in (part.strip() for part in text.split(",")) if item in MEASURANDS)


@record
class _Value:
    measurand: str
    value: float
    unit: str | None
    phase: str | None = None


def _values(reading: Reading, measurand: str) -> Iterable[_Value]:
    if measurand == ENERGY_REGISTER and reading.energy_import_wh is not None:
        yield _Value(measurand, reading.energy_import_wh, "Wh")
    elif measurand == ENERGY_EXPORT_REGISTER and reading.energy_export_wh is not None:
        yield _Value(measurand, reading.energy_export_wh, "Wh")
    elif measurand == POWER_IMPORT and reading.power_w is not None:
        # Power.Active.Import is the imported power: an exporting meter imports nothing.
        yield _Value(measurand, max(reading.power_w, 0.0), "W")
    elif measurand == CURRENT_IMPORT:
        for phase, amps in zip(_PHASES, reading.current_a, strict=True):
            if amps is not None:
                yield _Value(measurand, amps, "A", phase)
    elif measurand == CURRENT_OFFERED and reading.current_offered_a is not None:
        yield _Value(measurand, reading.current_offered_a, "A")
    elif measurand == VOLTAGE:
        for phase, volts in zip(_VOLTAGE_PHASES, reading.voltage_v, strict=True):
            if volts is not None:
                yield _Value(measurand, volts, "V", phase)
    elif measurand == FREQUENCY and reading.frequency_hz is not None:
        # 1.6 UnitOfMeasure has no Hz: the unit is left out there (the measurand defines it).
        yield _Value(measurand, reading.frequency_hz, "Hz")


def _text(value: float) -> str:
    """1.6 values are strings: integral values without a fraction, others with at most 3 decimals."""
    rounded = round(value, 3)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:g}"


def sampled_values(
    version: OcppVersion,
    reading: Reading,
    measurands: Sequence[str],
    context: Context,
    *,
    with_signed: bool = False,
) -> list[dict[str, object]]:
    """The sampled values of `reading` for `measurands`, in `version`'s wire format.

    `with_signed`: the meter's signed snapshot rides along (2.0.1: signedMeterValue on the energy
    register value; 1.6: an extra value in format SignedData), for Transaction.Begin / End.
    """
    out: list[dict[str, object]] = []
    for measurand in measurands:
        for item in _values(reading, measurand):
            signed = reading.signed if with_signed and measurand == ENERGY_REGISTER else None
            out.append(_format(version, item, context, signed))
    if with_signed and reading.signed is not None and version is OcppVersion.V16:
        out.append(
            {
                "value": reading.signed.data,
                "context": context.value,
                "format": "SignedData",
                "measurand": ENERGY_REGISTER,
                "location": LOCATION,
                "unit": "Wh",
            }
        )
    return out


def _format(
    version: OcppVersion, item: _Value, context: Context, signed: SignedData | None
) -> dict[str, object]:
    value: dict[str, object]
    if version is OcppVersion.V16:
        value = {
            "value": _text(item.value),
            "context": context.value,
            "format": "Raw",
            "measurand": item.measurand,
        }
        if item.phase is not None:
            value["phase"] = item.phase
        value["location"] = LOCATION
        if item.unit is not None and item.unit != "Hz":
            value["unit"] = item.unit
        return value
    value = {"value": item.value, "context": context.value, "measurand": item.measurand}
    if item.phase is not None:
        value["phase"] = item.phase
    value["location"] = LOCATION
    if item.unit is not None:
        value["unitOfMeasure"] = {"unit": item.unit, "multiplier": 0}
    if signed is not None:
        value["signedMeterValue"] = {
            "signedMeterData": signed.data,
            "signingMethod": signed.signing_method,
            "encodingMethod": signed.encoding,
            "publicKey": signed.public_key or "",
        }
    return value


def meter_value(
    version: OcppVersion,
    timestamp: str,
    reading: Reading,
    measurands: Sequence[str],
    context: Context,
    *,
    with_signed: bool = False,
) -> dict[str, object] | None:
    """One MeterValue (timestamp + sampled values), or None when the reading gives none of them."""
    values = sampled_values(version, reading, measurands, context, with_signed=with_signed)
    return {"timestamp": timestamp, "sampledValue": values} if values else None

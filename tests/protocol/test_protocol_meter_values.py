"""Meter values (2.0.1 J01-J03; 1.6 MeterValues): every sampled value carries its measurand, unit,
location and context, per-phase values their phase, and both versions' schemas accept them."""

from __future__ import annotations

import pytest

from evstation.protocol.messages import parse_request
from evstation.protocol.meter_values import (
    MEASURANDS,
    Context,
    Reading,
    SignedData,
    meter_value,
    parse_measurands,
    sampled_values,
)
from evstation.protocol.versions import OcppVersion

V16, V201 = OcppVersion.V16, OcppVersion.V201
TS = "2025-01-01T00:00:00.000Z"
CHARGING = Reading(
    energy_import_wh=12345.6,
    energy_export_wh=0.0,
    power_w=11040.0,
    current_a=(16.0, 16.0, 16.0),
    voltage_v=(230.0, 230.0, 230.0),
    frequency_hz=50.0,
    current_offered_a=16.0,
)


def _schema_valid(version: OcppVersion, meter: dict[str, object]) -> None:
    if version is V16:
        parse_request(V16, "MeterValues", {"connectorId": 1, "meterValue": [meter]})
    else:
        parse_request(V201, "MeterValues", {"evseId": 1, "meterValue": [meter]})


@pytest.mark.parametrize("version", [V16, V201])
def test_j02_every_value_has_measurand_unit_location_context_and_phase_where_per_phase(
    version: OcppVersion,
) -> None:
    values = sampled_values(version, CHARGING, MEASURANDS, Context.PERIODIC)
    for value in values:
        assert value["measurand"] in MEASURANDS
        assert value["location"] == "Outlet"
        assert value["context"] == "Sample.Periodic"
        unit = value.get("unit") if version is V16 else value["unitOfMeasure"]["unit"]  # type: ignore[index]
        assert unit is not None or (version is V16 and value["measurand"] == "Frequency")
    currents = [v for v in values if v["measurand"] == "Current.Import"]
    assert [v["phase"] for v in currents] == ["L1", "L2", "L3"]  # never an overall value in disguise
    assert [v["phase"] for v in values if v["measurand"] == "Voltage"] == ["L1-N", "L2-N", "L3-N"]
    assert all(
        "phase" not in v for v in values if v["measurand"] in ("Power.Active.Import", "Current.Offered")
    )
    meter = meter_value(version, TS, CHARGING, MEASURANDS, Context.PERIODIC)
    assert meter is not None
    _schema_valid(version, meter)


def test_v201_units_are_unit_of_measure_and_values_numbers() -> None:
    (power,) = sampled_values(V201, CHARGING, ["Power.Active.Import"], Context.TRANSACTION_END)
    assert power == {
        "value": 11040.0,
        "context": "Transaction.End",
        "measurand": "Power.Active.Import",
        "location": "Outlet",
        "unitOfMeasure": {"unit": "W", "multiplier": 0},
    }


def test_v16_values_are_raw_strings_with_unit() -> None:
    (energy,) = sampled_values(V16, CHARGING, ["Energy.Active.Import.Register"], Context.CLOCK)
    assert energy == {
        "value": "12345.6",
        "context": "Sample.Clock",
        "format": "Raw",
        "measurand": "Energy.Active.Import.Register",
        "location": "Outlet",
        "unit": "Wh",
    }


def test_missing_quantities_are_left_out_never_zero() -> None:
    silent = Reading(energy_import_wh=100.0)
    assert [v["measurand"] for v in sampled_values(V201, silent, MEASURANDS, Context.PERIODIC)] == [
        "Energy.Active.Import.Register"
    ]
    assert meter_value(V201, TS, Reading(), MEASURANDS, Context.PERIODIC) is None


@pytest.mark.parametrize("version", [V16, V201])
def test_signed_reading_rides_along_at_begin_and_end(version: OcppVersion) -> None:
    signed = Reading(
        energy_import_wh=1.0, signed=SignedData("OCMF|{}|{}", "OCMF", "ECDSA-secp256r1-SHA256", "ab")
    )
    meter = meter_value(
        version, TS, signed, ["Energy.Active.Import.Register"], Context.TRANSACTION_BEGIN, with_signed=True
    )
    assert meter is not None
    _schema_valid(version, meter)
    values = meter["sampledValue"]
    assert isinstance(values, list)
    if version is V16:
        assert values[-1]["format"] == "SignedData" and values[-1]["value"] == "OCMF|{}|{}"
    else:
        assert values[0]["signedMeterValue"]["encodingMethod"] == "OCMF"


def test_parse_measurands() -> None:
    assert parse_measurands("Energy.Active.Import.Register, Voltage,SoC") == (
        "Energy.Active.Import.Register",
        "Voltage",
    )

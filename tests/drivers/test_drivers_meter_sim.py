"""SimMeter energy integration under MockClock, script(), and the OCMF signed-meter twin."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import ec

from evstation.drivers.api import FaultCode, MeterFault, MeterRecovered, MeterSample, PowerMeter
from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.meter import SimMeter
from evstation.drivers.sim.signed_meter import (
    SIGNING_METHOD,
    OcmfError,
    SignedMeter,
    parse_ocmf,
    verify_ocmf,
)
from evstation.drivers.sim.state import SimStateFile

FIXED_NOW = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
HOUR = 3600.0


def fixed_clock() -> datetime:
    return FIXED_NOW


async def test_16a_three_phase_230v_for_one_hour_is_11040_wh(autojump_clock: trio.testing.MockClock) -> None:
    meter = SimMeter(230.0, poll_interval_s=1.0, wall_clock=fixed_clock)
    assert isinstance(meter, PowerMeter)
    async with trio.open_nursery() as nursery:
        await nursery.start(meter.run)
        meter.set_flow(16.0, 3)
        await trio.sleep(HOUR)
        assert meter.energy_wh == pytest.approx(11_040.0, abs=1e-6)
        meter.set_flow(0.0, 0)
        await trio.sleep(10)
        assert meter.energy_wh == pytest.approx(11_040.0, abs=1e-6)
        latest = meter.latest()
        assert latest is not None
        assert latest.energy_import_wh == pytest.approx(11_040.0, abs=1e-6)
        assert latest.timestamp == FIXED_NOW
        nursery.cancel_scope.cancel()


async def test_line_voltage_and_phases_are_configuration(autojump_clock: trio.testing.MockClock) -> None:
    meter = SimMeter(120.0, supply_phases=1, frequency_hz=60.0)
    meter.set_flow(32.0, 1)
    sample = meter.read()
    assert sample.power_w == pytest.approx(3_840.0)
    assert sample.voltage_v.l1 == 120.0 and sample.voltage_v.l2 is None
    assert sample.current_a.l1 == 32.0 and sample.frequency_hz == 60.0
    await trio.sleep(HOUR / 2)
    assert meter.energy_wh == pytest.approx(1_920.0)
    with pytest.raises(ValueError, match="phases"):
        meter.set_flow(16.0, 3)


async def test_flow_changes_integrate_piecewise(autojump_clock: trio.testing.MockClock) -> None:
    meter = SimMeter(230.0)
    meter.set_flow(10.0, 1)  # 2300 W
    await trio.sleep(HOUR / 2)
    meter.set_flow(10.0, 3)  # 6900 W
    await trio.sleep(HOUR / 4)
    sample = meter.read()
    assert sample.energy_import_wh == pytest.approx(1_150.0 + 1_725.0)
    assert (sample.current_a.l1, sample.current_a.l2, sample.current_a.l3) == (10.0, 10.0, 10.0)


async def test_script_forces_energy_and_power(autojump_clock: trio.testing.MockClock) -> None:
    meter = SimMeter(230.0)
    meter.script(energy_wh=500.0)
    assert meter.energy_wh == pytest.approx(500.0)
    meter.script(power_w=1_000.0)
    assert meter.read().power_w == 1_000.0
    await trio.sleep(HOUR)
    assert meter.energy_wh == pytest.approx(1_500.0)
    meter.set_flow(0.0, 0)  # the wiring's next flow update ends the scripted power
    assert meter.read().power_w == 0.0


async def test_scripted_energy_going_backwards_is_reported(autojump_clock: trio.testing.MockClock) -> None:
    meter = SimMeter(230.0, initial_energy_wh=2_000.0)
    meter.poll_once()
    meter.script(energy_wh=1_000.0)
    meter.poll_once()
    events = meter.events()
    assert isinstance(events.receive_nowait(), MeterSample)
    fault = events.receive_nowait()
    assert isinstance(fault, MeterFault) and fault.code is FaultCode.METER_ENERGY_BACKWARDS
    held = events.receive_nowait()
    assert isinstance(held, MeterSample) and held.energy_import_wh == 2_000.0


async def test_injected_failure_and_recovery(autojump_clock: trio.testing.MockClock) -> None:
    meter = SimMeter(230.0)
    meter.set_failed("bus unplugged")
    meter.poll_once()
    meter.set_failed(None)
    meter.poll_once()
    events = meter.events()
    fault = events.receive_nowait()
    assert isinstance(fault, MeterFault) and fault.code is FaultCode.METER_COMMUNICATION
    assert isinstance(events.receive_nowait(), MeterRecovered)
    assert isinstance(events.receive_nowait(), MeterSample)


# ------------------------------------------------------------------------------------- signed meter


async def test_signed_samples_verify_and_are_shaped_as_ocmf(autojump_clock: trio.testing.MockClock) -> None:
    signed = SignedMeter(SimMeter(230.0, wall_clock=fixed_clock))
    assert isinstance(signed, PowerMeter)
    async with trio.open_nursery() as nursery:
        await nursery.start(signed.run)
        signed.sim.set_flow(16.0, 3)
        await trio.sleep(HOUR)
        sample = signed.latest()
        nursery.cancel_scope.cancel()
    assert sample is not None and sample.signed is not None
    reading = sample.signed
    assert (reading.encoding, reading.signing_method) == ("OCMF", SIGNING_METHOD)
    assert reading.public_key == signed.public_key_hex
    assert verify_ocmf(reading.data, signed.public_key_hex)
    payload, signature = parse_ocmf(reading.data)
    assert signature["SA"] == "ECDSA-secp256r1-SHA256"
    assert re.fullmatch(r"[0-9a-f]+", signature["SD"])
    assert {"FV", "GI", "GS", "PG", "MV", "MS", "RD"} <= payload.keys()
    assert payload["PG"].startswith("F")  # no transaction: fiscal context
    (rd,) = payload["RD"]
    assert rd["TM"] == "2026-01-02T03:04:05,678+0000 U"
    assert (rd["RI"], rd["RU"], rd["ST"]) == ("1-b:1.8.0", "kWh", "G")
    assert rd["RV"] == pytest.approx(sample.energy_import_wh / 1000, abs=0.001)


async def test_transaction_readings_begin_and_end(autojump_clock: trio.testing.MockClock) -> None:
    signed = SignedMeter(SimMeter(230.0, wall_clock=fixed_clock))
    begin = signed.begin_transaction(id_type="ISO14443", id_data="04A1B2C3")
    signed.sim.set_flow(16.0, 3)
    await trio.sleep(HOUR)
    end = signed.end_transaction()
    start_payload, _ = parse_ocmf(begin.data)
    end_payload, _ = parse_ocmf(end.data)
    assert (start_payload["PG"], end_payload["PG"]) == ("T1", "T2")
    assert (start_payload["RD"][0]["TX"], end_payload["RD"][0]["TX"]) == ("B", "E")
    assert start_payload["IS"] is True and start_payload["IT"] == "ISO14443"
    assert end_payload["RD"][0]["RV"] - start_payload["RD"][0]["RV"] == pytest.approx(11.04)
    assert verify_ocmf(begin.data, signed.public_key_hex) and verify_ocmf(end.data, signed.public_key_hex)


async def test_tampered_ocmf_fails_verification(autojump_clock: trio.testing.MockClock) -> None:
    signed = SignedMeter(SimMeter(230.0, initial_energy_wh=12_340.0, wall_clock=fixed_clock))
    text = signed.sign(signed.sim.read()).data
    assert verify_ocmf(text, signed.public_key_hex)

    header, payload_text, signature_text = text.split("|")
    payload = json.loads(payload_text)
    payload["RD"][0]["RV"] = 99.0
    forged_payload = json.dumps(payload, separators=(",", ":"))
    assert not verify_ocmf(f"{header}|{forged_payload}|{signature_text}", signed.public_key_hex)

    signature = json.loads(signature_text)
    signature["SD"] = signature["SD"][:-2] + ("00" if signature["SD"][-2:] != "00" else "01")
    assert not verify_ocmf(f"{header}|{payload_text}|{json.dumps(signature)}", signed.public_key_hex)

    other_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not verify_ocmf(text, other_key)
    assert not verify_ocmf("OCMF|not json|{}", signed.public_key_hex)
    with pytest.raises(OcmfError):
        parse_ocmf("NOTOCMF|{}|{}")


async def test_register_survives_a_restart_through_its_state_file(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Every published reading is stored first, so the next run starts from it: the register never
    goes back to initial_energy_wh (a real meter's does not either), whatever kills the station."""
    state = SimStateFile(tmp_path / "sim-evse-1.json")
    meter = SimMeter(230.0, initial_energy_wh=500.0, poll_interval_s=1.0, state=state)
    async with trio.open_nursery() as nursery:
        await nursery.start(meter.run)
        meter.set_flow(16.0, 3)
        await trio.sleep(60)
        published = meter.latest()
        nursery.cancel_scope.cancel()
    assert published is not None and published.energy_import_wh > 500.0
    again = SimMeter(230.0, initial_energy_wh=500.0, state=SimStateFile(tmp_path / "sim-evse-1.json"))
    assert again.energy_wh == published.energy_import_wh


def test_the_ev_stays_plugged_across_a_restart(tmp_path: Path) -> None:
    board = SimChargeController(state=SimStateFile(tmp_path / "s.json"))
    board.plug_in()
    assert SimChargeController(state=SimStateFile(tmp_path / "s.json")).ev.plugged
    board.unplug()
    assert not SimChargeController(state=SimStateFile(tmp_path / "s.json")).ev.plugged


async def test_an_unreadable_state_file_starts_from_the_configuration(tmp_path: Path) -> None:
    (tmp_path / "s.json").write_text("{not json")
    assert SimMeter(230.0, initial_energy_wh=7.0, state=SimStateFile(tmp_path / "s.json")).energy_wh == 7.0

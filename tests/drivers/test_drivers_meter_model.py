"""Register maps as data: shipped maps load, bad maps are refused naming the key, the codec and read plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evstation.drivers.meters.model import (
    MAX_REGISTERS_PER_READ,
    MeterField,
    MeterModelError,
    available_models,
    decode_registers,
    load_model,
    parse_model,
    read_plan,
)

REQUIRED_MODELS = {"sdm630", "sdm72dm", "abb_b23", "em340"}


def _minimal_map(**overrides: object) -> dict[str, object]:
    raw: dict[str, object] = {
        "id": "test_meter",
        "vendor": "Test",
        "name": "Test meter",
        "source": "unit test",
        "registers": {
            "energy_import": {"address": "0x48", "function": "input", "type": "float32", "unit": "kWh"},
        },
    }
    raw.update(overrides)
    return raw


def test_every_required_model_ships_and_loads_with_a_source() -> None:
    assert set(available_models()) >= REQUIRED_MODELS
    for model_id in available_models():
        model = load_model(model_id)
        assert model.id == model_id
        assert model.source
        assert MeterField.ENERGY_IMPORT in model.registers


def test_sdm630_energy_import_is_input_register_0x48_float32_kwh() -> None:
    spec = load_model("sdm630").registers[MeterField.ENERGY_IMPORT]
    assert (spec.address, spec.function, spec.type, spec.unit) == (0x48, "input", "float32", "kWh")


# Every mapped register, transcribed from shared/reference/drivers-facts.md 1.4-1.6 (not from the JSON):
# function, wire address, type, scale, unit. A map edit that moves one of these must fail here.
_SDM = {
    "voltage_l1": ("input", 0x00, "float32", 1.0, "V"),
    "voltage_l2": ("input", 0x02, "float32", 1.0, "V"),
    "voltage_l3": ("input", 0x04, "float32", 1.0, "V"),
    "current_l1": ("input", 0x06, "float32", 1.0, "A"),
    "current_l2": ("input", 0x08, "float32", 1.0, "A"),
    "current_l3": ("input", 0x0A, "float32", 1.0, "A"),
    "power": ("input", 0x34, "float32", 1.0, "W"),
    "frequency": ("input", 0x46, "float32", 1.0, "Hz"),
    "energy_import": ("input", 0x48, "float32", 1.0, "kWh"),
    "energy_export": ("input", 0x4A, "float32", 1.0, "kWh"),
}
_FACTS: dict[str, tuple[str, dict[str, tuple[str, int, str, float, str]]]] = {
    "sdm630": ("big", _SDM),
    "sdm72dm_v2": ("big", _SDM),
    "sdm72dm": ("big", {k: _SDM[k] for k in ("power", "energy_import", "energy_export")}),
    "abb_b23": (
        "big",
        {
            "energy_import": ("holding", 0x5000, "uint64", 0.01, "kWh"),
            "energy_export": ("holding", 0x5004, "uint64", 0.01, "kWh"),
            "voltage_l1": ("holding", 0x5B00, "uint32", 0.1, "V"),
            "voltage_l2": ("holding", 0x5B02, "uint32", 0.1, "V"),
            "voltage_l3": ("holding", 0x5B04, "uint32", 0.1, "V"),
            "current_l1": ("holding", 0x5B0C, "uint32", 0.01, "A"),
            "current_l2": ("holding", 0x5B0E, "uint32", 0.01, "A"),
            "current_l3": ("holding", 0x5B10, "uint32", 0.01, "A"),
            "power": ("holding", 0x5B14, "int32", 0.01, "W"),
            "frequency": ("holding", 0x5B2C, "uint16", 0.01, "Hz"),
        },
    ),
    "em340": (
        "little",
        {
            "voltage_l1": ("input", 0x00, "int32", 0.1, "V"),
            "voltage_l2": ("input", 0x02, "int32", 0.1, "V"),
            "voltage_l3": ("input", 0x04, "int32", 0.1, "V"),
            "current_l1": ("input", 0x0C, "int32", 0.001, "A"),
            "current_l2": ("input", 0x0E, "int32", 0.001, "A"),
            "current_l3": ("input", 0x10, "int32", 0.001, "A"),
            "power": ("input", 0x28, "int32", 0.1, "W"),
            "frequency": ("input", 0x33, "int16", 0.1, "Hz"),
            "energy_import": ("input", 0x34, "int32", 0.1, "kWh"),
            "energy_export": ("input", 0x4E, "int32", 0.1, "kWh"),
        },
    ),
}


@pytest.mark.parametrize("model_id", sorted(_FACTS))
def test_shipped_maps_match_the_vendor_register_facts(model_id: str) -> None:
    word_order, registers = _FACTS[model_id]
    model = load_model(model_id)
    got = {
        field.value: (spec.function, spec.address, spec.type, spec.scale, spec.unit)
        for field, spec in model.registers.items()
    }
    assert got == registers
    assert {model.word_order_of(field) for field in model.registers} == {word_order}


def test_load_model_by_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(_minimal_map()))
    assert load_model(path).id == "test_meter"


def test_unknown_model_names_the_shipped_ones() -> None:
    with pytest.raises(MeterModelError, match="sdm630"):
        load_model("no_such_meter")


def _energy(**fields: object) -> dict[str, object]:
    spec: dict[str, object] = {"address": "0x48", "function": "input", "type": "float32", "unit": "kWh"}
    spec.update(fields)
    return {"registers": {"energy_import": spec}}


_POWER = {"address": 1, "function": "input", "type": "float32", "unit": "W"}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (_energy(function="coil"), "registers.energy_import.function"),
        (_energy(address="zz"), "registers.energy_import.address"),
        (_energy(unit="V"), "registers.energy_import.unit"),
        ({"registers": {"power": _POWER}}, "registers.energy_import"),
        ({"registers": {"wattage": _POWER}}, "registers.wattage"),
        ({"word_order": "middle"}, "word_order"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_map_error_names_the_key(change: dict[str, object], key: str) -> None:
    with pytest.raises(MeterModelError) as info:
        parse_model(json.dumps(_minimal_map(**change)), label="bad.json")
    assert "bad.json" in str(info.value)
    assert key in str(info.value)


def test_not_json_is_a_model_error() -> None:
    with pytest.raises(MeterModelError, match="not JSON"):
        parse_model("{", label="x.json")


def test_decode_sdm_float32_frame_from_the_datasheet_example() -> None:
    # Reply `01 04 04 43 66 19 9A ..` carries 230.1 V (drivers-facts 1.4).
    assert decode_registers([0x4366, 0x199A], "float32", "big") == pytest.approx(230.1, abs=1e-4)


def test_decode_word_orders_and_signedness() -> None:
    assert decode_registers([0x0001, 0x0002], "uint32", "big") == 0x0001_0002
    assert decode_registers([0x0002, 0x0001], "uint32", "little") == 0x0001_0002
    assert decode_registers([0xFFFF, 0xFFFE], "int32", "big") == -2
    assert decode_registers([0xFFFF], "int16", "big") == -1
    assert decode_registers([0, 0, 0x0001, 0x0000], "uint64", "big") == 0x1_0000
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode_registers([1], "float32", "big")


def test_read_plan_merges_only_adjacent_registers_without_a_gap_source() -> None:
    sdm = read_plan(load_model("sdm630"))
    assert [(b.function, b.address, b.count) for b in sdm] == [
        ("input", 0, 12),
        ("input", 0x34, 2),
        ("input", 0x46, 6),
    ]
    abb = read_plan(load_model("abb_b23"))
    assert [(b.address, b.count) for b in abb] == [
        (0x5000, 8),
        (0x5B00, 6),
        (0x5B0C, 6),
        (0x5B14, 2),
        (0x5B2C, 1),
    ]


@pytest.mark.parametrize("name", available_models())
def test_shipped_maps_read_no_unlisted_register_unless_the_manual_allows_it(name: str) -> None:
    model = load_model(name)
    if model.max_read_gap_source:
        return
    mapped = {
        (spec.function, spec.address + i) for spec in model.registers.values() for i in range(spec.count)
    }
    for block in read_plan(model):
        spanned = {(block.function, block.address + i) for i in range(block.count)}
        assert spanned <= mapped, f"{name}: a read spans unlisted registers {sorted(spanned - mapped)}"


def test_a_read_gap_needs_a_cited_source() -> None:
    with pytest.raises(MeterModelError, match="max_read_gap_source"):
        parse_model(json.dumps(_minimal_map(max_read_gap=4)))
    cited = parse_model(json.dumps(_minimal_map(max_read_gap=4, max_read_gap_source="manual p. 12")))
    assert cited.max_read_gap == 4


def test_read_plan_respects_the_125_register_limit() -> None:
    regs = {
        "energy_import": {"address": 0, "function": "input", "type": "float32", "unit": "kWh"},
        "power": {"address": 200, "function": "input", "type": "float32", "unit": "W"},
    }
    model = parse_model(
        json.dumps(
            _minimal_map(registers=regs, max_read_gap=MAX_REGISTERS_PER_READ, max_read_gap_source="test")
        )
    )
    assert [(b.address, b.count) for b in read_plan(model)] == [(0, 2), (200, 2)]

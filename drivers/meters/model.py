"""Meter register maps as data: the schema of a map file, its loader, the word codec and the read plan.

Pure data and arithmetic: this module never opens a port or a socket, and never reads a clock.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evstation.records import record

# Modbus allows at most 125 registers in one read (FC3/FC4 response length byte).
MAX_REGISTERS_PER_READ = 125

WordOrder = Literal["big", "little"]
RegisterFunction = Literal["input", "holding"]
DataType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]

FUNCTION_CODES: dict[RegisterFunction, int] = {"holding": 3, "input": 4}

# struct format letter and number of 16-bit registers per data type.
_TYPE_LAYOUT: dict[DataType, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "int64": ("q", 4),
    "uint64": ("Q", 4),
    "float32": ("f", 2),
    "float64": ("d", 4),
}


class MeterField(enum.StrEnum):
    """The MeterSample quantities a register can feed (the keys of a map's "registers" object)."""

    ENERGY_IMPORT = "energy_import"
    ENERGY_EXPORT = "energy_export"
    POWER = "power"
    VOLTAGE_L1 = "voltage_l1"
    VOLTAGE_L2 = "voltage_l2"
    VOLTAGE_L3 = "voltage_l3"
    CURRENT_L1 = "current_l1"
    CURRENT_L2 = "current_l2"
    CURRENT_L3 = "current_l3"
    FREQUENCY = "frequency"


# Allowed units per field and the factor that turns one unit into the MeterSample unit (Wh, W, V, A, Hz).
_UNIT_FACTORS: dict[str, dict[str, float]] = {
    "energy": {"Wh": 1.0, "kWh": 1000.0},
    "power": {"W": 1.0, "kW": 1000.0},
    "voltage": {"V": 1.0},
    "current": {"A": 1.0, "mA": 0.001},
    "frequency": {"Hz": 1.0},
}


def _kind(field: MeterField) -> str:
    return field.value.split("_")[0]


class MeterModelError(ValueError):
    """A register-map file is missing, unreadable or invalid; the message names the file and the key."""


class RegisterSpec(BaseModel):
    """Where one quantity lives on the wire and how to turn its registers into a physical value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: int = Field(ge=0, le=0xFFFF, description="0-based wire (PDU) address; hex string allowed")
    function: RegisterFunction
    type: DataType
    word_order: WordOrder | None = None  # None: the map's default
    scale: float = 1.0  # physical value = raw x scale, in `unit`
    unit: str
    not_available: list[int] = Field(default_factory=list)  # raw values meaning "no such value"

    @field_validator("address", mode="before")
    @classmethod
    def _hex_address(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return int(value, 0)
            except ValueError:
                raise ValueError(f'address {value!r} is not a number (use 72 or "0x48")') from None
        return value

    @property
    def count(self) -> int:
        return _TYPE_LAYOUT[self.type][1]


class SerialDefaults(BaseModel):
    """The meter's factory serial settings, used when the station config does not override them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1


class MeterModel(BaseModel):
    """One meter model's register map, as stored in a JSON file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]+$")
    vendor: str
    name: str
    source: str = Field(min_length=1, description="where the register facts come from")
    notes: str = ""
    word_order: WordOrder = "big"
    # Unmapped registers a single read may span: 0 unless the vendor's manual says the meter answers
    # reads across registers it does not list, and `max_read_gap_source` cites where it says so.
    max_read_gap: int = Field(default=0, ge=0, le=MAX_REGISTERS_PER_READ)
    max_read_gap_source: str = ""
    default_unit_id: int = Field(default=1, ge=1, le=247)
    serial: SerialDefaults = Field(default_factory=SerialDefaults)
    registers: dict[MeterField, RegisterSpec]

    @model_validator(mode="after")
    def _check_registers(self) -> MeterModel:
        if self.max_read_gap and not self.max_read_gap_source.strip():
            raise ValueError(
                "max_read_gap > 0 needs max_read_gap_source: the vendor manual's words that the meter "
                "answers reads across unlisted registers (a meter that does not answers an exception)"
            )
        if MeterField.ENERGY_IMPORT not in self.registers:
            raise ValueError("registers.energy_import is required (a meter without it cannot bill)")
        for field, spec in self.registers.items():
            allowed = _UNIT_FACTORS[_kind(field)]
            if spec.unit not in allowed:
                raise ValueError(
                    f"registers.{field.value}.unit {spec.unit!r} must be one of {sorted(allowed)}"
                )
            if spec.address + spec.count > 0x10000:
                raise ValueError(f"registers.{field.value}.address runs past register 0xFFFF")
        return self

    def word_order_of(self, field: MeterField) -> WordOrder:
        return self.registers[field].word_order or self.word_order

    def unit_factor(self, field: MeterField) -> float:
        return _UNIT_FACTORS[_kind(field)][self.registers[field].unit]


# ---------------------------------------------------------------------------------------------------
# Loading


def available_models() -> list[str]:
    """Ids of the register maps shipped with the package (drivers/meters/models/*.json)."""
    folder = resources.files(__package__).joinpath("models")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json"))


def load_model(name_or_path: str | Path) -> MeterModel:
    """Load a shipped map by id ("sdm630") or any map file by path; raise `MeterModelError` naming the key."""
    if isinstance(name_or_path, Path) or name_or_path.endswith(".json") or "/" in name_or_path:
        path = Path(name_or_path)
        label = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise MeterModelError(f"{label}: cannot read map file: {exc.strerror}") from exc
    else:
        label = f"{name_or_path}.json"
        entry = resources.files(__package__).joinpath("models").joinpath(label)
        if not entry.is_file():
            shipped = ", ".join(available_models())
            raise MeterModelError(f"unknown meter model {name_or_path!r}; shipped: {shipped}")
        text = entry.read_text(encoding="utf-8")
    return parse_model(text, label=label)


def parse_model(text: str, *, label: str = "<map>") -> MeterModel:
    """Validate a map file's JSON text."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MeterModelError(f"{label}: not JSON: {exc}") from exc
    try:
        return MeterModel.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(part) for part in err["loc"]) or "(top level)"
            problems.append(f"{label}: {key}: {err['msg']}")
        raise MeterModelError("\n".join(problems)) from None


# ---------------------------------------------------------------------------------------------------
# Word codec


def decode_registers(words: Sequence[int], data_type: DataType, word_order: WordOrder) -> int | float:
    """Registers (16-bit words, bytes big-endian inside a word, as Modbus sends them) to a number."""
    fmt, count = _TYPE_LAYOUT[data_type]
    if len(words) != count:
        raise ValueError(f"{data_type} needs {count} registers, got {len(words)}")
    ordered = list(words) if word_order == "big" else list(reversed(words))
    raw = b"".join(w.to_bytes(2, "big") for w in ordered)
    value: int | float = struct.unpack(">" + fmt, raw)[0]
    return value


def physical_value(model: MeterModel, field: MeterField, words: Sequence[int]) -> float | None:
    """The MeterSample value (Wh, W, V, A, Hz) of `field`, or None for a not-available sentinel or NaN."""
    spec = model.registers[field]
    raw = decode_registers(words, spec.type, model.word_order_of(field))
    if isinstance(raw, int) and raw in spec.not_available:
        return None
    if isinstance(raw, float) and not math.isfinite(raw):
        return None
    return raw * spec.scale * model.unit_factor(field)


# ---------------------------------------------------------------------------------------------------
# Read plan


@record
class ReadBlock:
    """One Modbus read request and the fields it carries (with their register offset inside the reply)."""

    function: RegisterFunction
    address: int
    count: int
    fields: tuple[tuple[MeterField, int], ...]


def read_plan(model: MeterModel) -> list[ReadBlock]:
    """Group the map's registers into as few reads as the gap rule and the 125-register limit allow."""
    blocks: list[ReadBlock] = []
    by_function: dict[RegisterFunction, list[tuple[int, int, MeterField]]] = {}
    for field, spec in model.registers.items():
        by_function.setdefault(spec.function, []).append((spec.address, spec.count, field))
    for function, entries in sorted(by_function.items()):
        entries.sort()
        start, end = entries[0][0], entries[0][0] + entries[0][1]
        members: list[tuple[MeterField, int]] = [(entries[0][2], 0)]
        for address, count, field in entries[1:]:
            new_end = max(end, address + count)
            if address - end <= model.max_read_gap and new_end - start <= MAX_REGISTERS_PER_READ:
                members.append((field, address - start))
                end = new_end
                continue
            blocks.append(ReadBlock(function, start, end - start, tuple(members)))
            start, end, members = address, address + count, [(field, 0)]
        blocks.append(ReadBlock(function, start, end - start, tuple(members)))
    return blocks


def decode_block(
    model: MeterModel, block: ReadBlock, words: Sequence[int]
) -> Mapping[MeterField, float | None]:
    """All field values carried by one read reply."""
    out: dict[MeterField, float | None] = {}
    for field, offset in block.fields:
        count = model.registers[field].count
        out[field] = physical_value(model, field, words[offset : offset + count])
    return out

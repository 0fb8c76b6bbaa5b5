"""Modbus power meters: register maps as data (models/*.json) and one driver that reads any map.

Nothing here knows OCPP; faults leave as `MeterFault` events, never as exceptions out of a poll task.
The names below are loaded on first use (PEP 562): a station whose meters are all simulated imports
`publisher` from here and must not pay for pymodbus and the register-map models.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evstation.drivers.meters.modbus import (
        MeterReadError,
        ModbusBus,
        ModbusMeter,
        RtuTransport,
        TcpTransport,
    )
    from evstation.drivers.meters.model import (
        MeterField,
        MeterModel,
        MeterModelError,
        available_models,
        load_model,
        parse_model,
    )
    from evstation.drivers.meters.publisher import EVENT_BUFFER_SIZE

_HOMES = {
    "EVENT_BUFFER_SIZE": "publisher",
    "MeterField": "model",
    "MeterModel": "model",
    "MeterModelError": "model",
    "MeterReadError": "modbus",
    "ModbusBus": "modbus",
    "ModbusMeter": "modbus",
    "RtuTransport": "modbus",
    "TcpTransport": "modbus",
    "available_models": "model",
    "load_model": "model",
    "parse_model": "model",
}

__all__ = [
    "EVENT_BUFFER_SIZE",
    "MeterField",
    "MeterModel",
    "MeterModelError",
    "MeterReadError",
    "ModbusBus",
    "ModbusMeter",
    "RtuTransport",
    "TcpTransport",
    "available_models",
    "load_model",
    "parse_model",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)

"""Modbus power meters: register maps as data (models/*.json) and one driver that reads any map.

Nothing here knows OCPP; faults leave as `MeterFault` events, never as exceptions out of a poll task.
"""

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

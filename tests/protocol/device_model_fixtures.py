"""Shared station layouts and synthetic definitions for the device-model tests (protocol and runtime)."""

from __future__ import annotations

from dataclasses import replace

from evstation.protocol.device_model import (
    AttributeDefinition,
    AttributeType,
    ComponentKey,
    ConnectorLayout,
    DataType,
    DeviceModelDefinitions,
    EvseLayout,
    Mutability,
    StationLayout,
    VariableDefinition,
    VariableKey,
    build_definitions,
)

# Two EVSEs: a 3-phase Type 2 socket (22 kW), and one with a DC CCS2 and a 1-phase Type 2 connector.
TWO_EVSES = StationLayout(
    (
        EvseLayout(1, (ConnectorLayout(1, "sType2", 3),), max_power_w=22080.0),
        EvseLayout(2, (ConnectorLayout(1, "cCCS2", 0), ConnectorLayout(2, "cType2", 1)), max_power_w=None),
    ),
    network_slots=(1, 2),
)


def controller(name: str, variable: str, instance: str | None = None) -> VariableKey:
    return VariableKey(ComponentKey(name), variable, instance)


HEARTBEAT = controller("OCPPCommCtrlr", "HeartbeatInterval")
PING = controller("OCPPCommCtrlr", "WebSocketPingInterval")
TX_ATTEMPTS = controller("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent")
TX_UPDATED_INTERVAL = controller("SampledDataCtrlr", "TxUpdatedInterval")

# The standard table's WriteOnly variable (A01).
PASSWORD = controller("SecurityCtrlr", "BasicAuthPassword")
# Variables the standard table does not have (yet), to exercise the rules it does not reach.
RATE_UNIT = controller("SmartChargingCtrlr", "RateUnit")
REBOOTING = controller("OCPPCommCtrlr", "VendorRebootSetting")
RANGED = controller("TestCtrlr", "Ranged")


def _definition(
    key: VariableKey, data_type: DataType, mutability: Mutability, **extra: object
) -> VariableDefinition:
    definition = VariableDefinition(key, data_type, (AttributeDefinition(AttributeType.ACTUAL, mutability),))
    return replace(definition, **extra)  # type: ignore[arg-type]


SYNTHETIC = (
    _definition(
        RATE_UNIT, DataType.MEMBER_LIST, Mutability.READ_WRITE, values_list=("A", "W"), default="A,W"
    ),
    _definition(REBOOTING, DataType.BOOLEAN, Mutability.READ_WRITE, reboot_required=True, default="false"),
    VariableDefinition(
        RANGED,
        DataType.DECIMAL,
        (
            AttributeDefinition(AttributeType.ACTUAL, Mutability.READ_WRITE),
            AttributeDefinition(AttributeType.MAX_SET, Mutability.READ_ONLY),
        ),
        min_limit=-1.5,
        max_limit=100,
        default="0",
    ),
)


def standard_definitions() -> DeviceModelDefinitions:
    return build_definitions(TWO_EVSES)


def extended_definitions() -> DeviceModelDefinitions:
    """The standard table plus SYNTHETIC (RebootRequired, a second attribute type, ...)."""
    return DeviceModelDefinitions(TWO_EVSES, [*standard_definitions(), *SYNTHETIC])

"""The OCPP 2.0.1 device model of evstation, the one model behind both OCPP versions. Pure: no I/O.

- `model`: keys (ComponentKey, VariableKey), characteristics (VariableDefinition), the spec's enums,
  the decisions (SetDecision, GetDecision) and the station layout the physical components come from.
- `standard`: the table of standardized components and variables we have (data).
- `definitions`: `build_definitions(layout)` -> `DeviceModelDefinitions` with lookups that tell an
  unknown component, an unknown variable and an unsupported attribute type apart.
- `validation`: `check_set` / `check_get`, the answers to one SetVariables / GetVariables item.
- `v16`: the OCPP 1.6 configuration keys as a projection of the same variables (`V16KeyMap`).

Values live elsewhere (runtime/device_model.py); everything here takes them as arguments.
docs/device-model.md explains the sources, the deviations and how to add a variable.
"""

from evstation.protocol.device_model.definitions import (
    DeviceModelDefinitions,
    Lookup,
    LookupResult,
    build_definitions,
)
from evstation.protocol.device_model.model import (
    AttributeDefinition,
    AttributeType,
    ComponentKey,
    DataType,
    GetDecision,
    GetStatus,
    Mutability,
    ReasonCode,
    SetDecision,
    SetStatus,
    VariableDefinition,
    VariableKey,
)
from evstation.protocol.device_model.validation import (
    check_get,
    check_set,
    check_value,
    parse_bool,
    parse_decimal,
    parse_int,
)
from evstation.protocol.layout import ConnectorLayout, EvseLayout, StationLayout

__all__ = [
    "AttributeDefinition",
    "AttributeType",
    "ComponentKey",
    "ConnectorLayout",
    "DataType",
    "DeviceModelDefinitions",
    "EvseLayout",
    "GetDecision",
    "GetStatus",
    "Lookup",
    "LookupResult",
    "Mutability",
    "ReasonCode",
    "SetDecision",
    "SetStatus",
    "StationLayout",
    "VariableDefinition",
    "VariableKey",
    "build_definitions",
    "check_get",
    "check_set",
    "check_value",
    "parse_bool",
    "parse_decimal",
    "parse_int",
]

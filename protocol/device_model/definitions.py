"""The station's variable definitions: the standard table instantiated for one station layout.

`build_definitions(layout)` gives every controller variable once and the EVSE / Connector variables
once per EVSE / connector, with the layout's facts (phases, connector type, rated power) as defaults,
and a Problem variable for each component an EVSE / connector reports hardware faults on.
Lookups tell an unknown component from an unknown variable from an unsupported attribute type, as
GetVariables / SetVariables must (B06, B05).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import replace

from evstation.protocol.device_model.model import (
    AttributeDefinition,
    AttributeType,
    ComponentKey,
    VariableDefinition,
    VariableKey,
)
from evstation.protocol.device_model.standard import (
    CONNECTOR_ROWS,
    EVSE_ROWS,
    STATION_ROWS,
    Row,
    Scope,
    problem_row,
)
from evstation.protocol.layout import EvseLayout, StationLayout
from evstation.records import record

__all__ = ["DeviceModelDefinitions", "Lookup", "LookupResult", "build_definitions", "definition_from_row"]


class Lookup(enum.Enum):
    FOUND = "Found"
    UNKNOWN_COMPONENT = "UnknownComponent"
    UNKNOWN_VARIABLE = "UnknownVariable"
    UNSUPPORTED_ATTRIBUTE = "NotSupportedAttributeType"


@record
class LookupResult:
    outcome: Lookup
    definition: VariableDefinition | None = None


class DeviceModelDefinitions:
    """Every variable of one station, immutable once built; iterates in a stable report order."""

    def __init__(self, layout: StationLayout, definitions: Iterable[VariableDefinition]) -> None:
        self.layout = layout
        by_component: dict[ComponentKey, dict[tuple[str, str | None], VariableDefinition]] = {}
        for definition in definitions:
            key = definition.key
            variables = by_component.setdefault(key.component, {})
            if (key.name, key.instance) in variables:
                raise ValueError(f"variable {key} is defined twice")
            if not definition.attributes or definition.attributes[0].type is not AttributeType.ACTUAL:
                # ReportData lists Actual first; every variable of ours has one.
                raise ValueError(f"variable {key}: the first attribute must be Actual")
            variables[(key.name, key.instance)] = definition
        self._by_component = by_component
        self._ordered = tuple(
            sorted(
                (d for variables in by_component.values() for d in variables.values()),
                key=lambda d: d.key.sort_key(),
            )
        )

    def __iter__(self) -> Iterator[VariableDefinition]:
        return iter(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, VariableKey) and self.get(key) is not None

    def get(self, key: VariableKey) -> VariableDefinition | None:
        variables = self._by_component.get(key.component)
        return None if variables is None else variables.get((key.name, key.instance))

    def __getitem__(self, key: VariableKey) -> VariableDefinition:
        definition = self.get(key)
        if definition is None:
            raise KeyError(str(key))
        return definition

    def components(self) -> list[ComponentKey]:
        return sorted(self._by_component, key=ComponentKey.sort_key)

    def variables_of(self, component: ComponentKey) -> list[VariableDefinition]:
        variables = self._by_component.get(component, {})
        return sorted(variables.values(), key=lambda d: d.key.sort_key())

    def lookup(self, key: VariableKey, attribute: AttributeType = AttributeType.ACTUAL) -> LookupResult:
        """Exact match on component (name, instance, evse, connector) and variable (name, instance)."""
        variables = self._by_component.get(key.component)
        if variables is None:
            return LookupResult(Lookup.UNKNOWN_COMPONENT)
        definition = variables.get((key.name, key.instance))
        if definition is None:
            return LookupResult(Lookup.UNKNOWN_VARIABLE)
        if definition.attribute(attribute) is None:
            return LookupResult(Lookup.UNSUPPORTED_ATTRIBUTE, definition)
        return LookupResult(Lookup.FOUND, definition)


def definition_from_row(row: Row, component: ComponentKey) -> VariableDefinition:
    """The definition of one table row for one component instance."""
    return VariableDefinition(
        key=VariableKey(component, row.variable, row.instance),
        data_type=row.data_type,
        attributes=(AttributeDefinition(AttributeType.ACTUAL, row.mutability),),
        unit=row.unit,
        min_limit=row.min_limit,
        max_limit=row.max_limit,
        values_list=row.values,
        persistent=row.persistent,
        constant=row.constant,
        reboot_required=row.reboot_required,
        default=row.default,
        note=row.note,
    )


def _evse_definitions(evse: EvseLayout) -> Iterator[VariableDefinition]:
    component = ComponentKey("EVSE", evse_id=evse.id)
    for row in EVSE_ROWS:
        definition = definition_from_row(row, component)
        if row.variable == "SupplyPhases":
            definition = replace(definition, default=str(evse.phases))
        elif row.variable == "Power":
            definition = replace(definition, max_limit=evse.max_power_w)
        yield definition
    for name in evse.problem_components:
        yield definition_from_row(problem_row(name, Scope.EVSE), ComponentKey(name, evse_id=evse.id))
    for connector in evse.connectors:
        for name in connector.problem_components:
            place = ComponentKey(name, evse_id=evse.id, connector_id=connector.id)
            yield definition_from_row(problem_row(name, Scope.CONNECTOR), place)
        component = ComponentKey("Connector", evse_id=evse.id, connector_id=connector.id)
        for row in CONNECTOR_ROWS:
            definition = definition_from_row(row, component)
            if row.variable == "SupplyPhases":
                definition = replace(definition, default=str(connector.phases))
            elif row.variable == "ConnectorType":
                definition = replace(definition, default=connector.connector_type)
            elif row.variable == "PhaseRotation":
                # A DC connector (0 phases) has no phases to rotate.
                definition = replace(definition, default="Unknown" if connector.phases else "NotApplicable")
            yield definition


def build_definitions(layout: StationLayout) -> DeviceModelDefinitions:
    """The standard table for `layout`: controllers and ChargingStation once, EVSE / Connector per unit."""
    definitions: list[VariableDefinition] = []
    slots = tuple(str(slot) for slot in layout.network_slots)
    for row in STATION_ROWS:
        definition = definition_from_row(row, ComponentKey(row.component))
        if (row.component, row.variable) == ("ChargingStation", "SupplyPhases"):
            definition = replace(definition, default=str(layout.phases))
        elif (row.component, row.variable) == ("OCPPCommCtrlr", "NetworkConfigurationPriority"):
            definition = replace(definition, default=",".join(slots), values_list=slots)
        elif (row.component, row.variable) == ("TxCtrlr", "TxStartPoint") and layout.meters_sign:
            # DataSigned only when the meters can sign (a start point only, 2.0.1 TxStartPointValues).
            values = (*(definition.values_list or ()), "DataSigned")
            definition = replace(definition, values_list=values)
        definitions.append(definition)
    for evse in layout.evses:
        definitions.extend(_evse_definitions(evse))
    return DeviceModelDefinitions(layout, definitions)

"""The shapes of the OCPP 2.0.1 device model: keys, characteristics, attributes, decisions.

Data only: no table of variables (standard.py), no validation (validation.py). The enums carry the
spec's wire texts, so `DataType.MEMBER_LIST == "MemberList"`; they are our own so that a 1.6 station,
which uses the same device model, never imports the 2.0.1 message models.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Final

from evstation.records import record

__all__ = [
    "CONFIGURATION_VALUE_SIZE",
    "REPORTING_VALUE_SIZE",
    "AttributeDefinition",
    "AttributeType",
    "ComponentKey",
    "DataType",
    "GetDecision",
    "GetStatus",
    "Mutability",
    "ReasonCode",
    "SetDecision",
    "SetStatus",
    "ValueReader",
    "VariableDefinition",
    "VariableKey",
]

# The schemas' own limits: SetVariableData.attributeValue and valuesList are at most 1000 characters,
# GetVariableResult.attributeValue and VariableAttribute.value at most 2500. DeviceDataCtrlr reports
# them as ConfigurationValueSize / ReportingValueSize.
CONFIGURATION_VALUE_SIZE: Final = 1000
REPORTING_VALUE_SIZE: Final = 2500


class DataType(enum.StrEnum):
    """DataEnumType: how a variable's value is written."""

    STRING = "string"
    DECIMAL = "decimal"
    INTEGER = "integer"
    DATE_TIME = "dateTime"
    BOOLEAN = "boolean"
    OPTION_LIST = "OptionList"  # exactly one of valuesList
    SEQUENCE_LIST = "SequenceList"  # ordered subset of valuesList, comma-separated
    MEMBER_LIST = "MemberList"  # unordered subset of valuesList, comma-separated


class Mutability(enum.StrEnum):
    READ_ONLY = "ReadOnly"
    WRITE_ONLY = "WriteOnly"
    READ_WRITE = "ReadWrite"


class AttributeType(enum.StrEnum):
    ACTUAL = "Actual"
    TARGET = "Target"
    MIN_SET = "MinSet"
    MAX_SET = "MaxSet"


class GetStatus(enum.StrEnum):
    """GetVariableStatusEnumType."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    UNKNOWN_COMPONENT = "UnknownComponent"
    UNKNOWN_VARIABLE = "UnknownVariable"
    NOT_SUPPORTED_ATTRIBUTE_TYPE = "NotSupportedAttributeType"


class SetStatus(enum.StrEnum):
    """SetVariableStatusEnumType."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    UNKNOWN_COMPONENT = "UnknownComponent"
    UNKNOWN_VARIABLE = "UnknownVariable"
    NOT_SUPPORTED_ATTRIBUTE_TYPE = "NotSupportedAttributeType"
    REBOOT_REQUIRED = "RebootRequired"


class ReasonCode(enum.StrEnum):
    """StatusInfoType.reasonCode values we answer with (2.0.1 edition 3, part 2 appendix "Reason codes")."""

    READ_ONLY = "ReadOnly"
    WRITE_ONLY = "WriteOnly"
    INVALID_VALUE = "InvalidValue"
    VALUE_TOO_LOW = "ValueTooLow"
    VALUE_TOO_HIGH = "ValueTooHigh"
    TOO_LARGE_ELEMENT = "TooLargeElement"
    TOO_MANY_ELEMENTS = "TooManyElements"
    # A valid value the station could not store (its database refuses writes: docs/storage.md).
    INTERNAL_ERROR = "InternalError"


@record
class ComponentKey:
    """ComponentType: name, instance and the EVSE / connector it belongs to (None = not scoped)."""

    name: str
    instance: str | None = None
    evse_id: int | None = None
    connector_id: int | None = None

    def sort_key(self) -> tuple[str, str, int, int]:
        return (self.name, self.instance or "", self.evse_id or 0, self.connector_id or 0)

    def __str__(self) -> str:
        text = self.name if self.instance is None else f"{self.name}[{self.instance}]"
        if self.evse_id is not None:
            text += f"@evse{self.evse_id}"
            if self.connector_id is not None:
                text += f".{self.connector_id}"
        return text


@record
class VariableKey:
    """A variable of one component: what GetVariables / SetVariables address (with an attribute type)."""

    component: ComponentKey
    name: str
    instance: str | None = None

    def sort_key(self) -> tuple[tuple[str, str, int, int], str, str]:
        return (self.component.sort_key(), self.name, self.instance or "")

    def __str__(self) -> str:
        text = f"{self.component}.{self.name}"
        return text if self.instance is None else f"{text}[{self.instance}]"


@record
class AttributeDefinition:
    """One VariableAttributeType of a variable: its type and who may read or write it."""

    type: AttributeType
    mutability: Mutability


@record
class VariableDefinition:
    """Everything the station states about one variable, except its value.

    `attributes` are the attribute types the variable has (Actual first), each with its mutability.
    `persistent`: the value survives a reboot. `constant`: the station never changes the value while it
    runs. `reboot_required`: a write is stored but takes effect after a reboot (SetVariables answers
    RebootRequired). `default` is the value before anything else sets it (None: no value until the
    station or station.toml provides one). `note` says why a variable the spec makes writable is
    ReadOnly here (the block that honours it is not built yet): the honest answer to a write.
    """

    key: VariableKey
    data_type: DataType
    attributes: tuple[AttributeDefinition, ...]
    unit: str | None = None
    min_limit: float | None = None
    max_limit: float | None = None
    values_list: tuple[str, ...] | None = None
    supports_monitoring: bool = False
    persistent: bool = True
    constant: bool = False
    reboot_required: bool = False
    default: str | None = None
    note: str | None = None

    def attribute(self, attribute: AttributeType) -> AttributeDefinition | None:
        for candidate in self.attributes:
            if candidate.type is attribute:
                return candidate
        return None

    def mutability(self, attribute: AttributeType = AttributeType.ACTUAL) -> Mutability | None:
        found = self.attribute(attribute)
        return None if found is None else found.mutability

    @property
    def writable(self) -> bool:
        """The CSMS may write at least one attribute (ConfigurationInventory material)."""
        return any(a.mutability is not Mutability.READ_ONLY for a in self.attributes)


@record
class SetDecision:
    """The pure layer's answer to a write: status, the reason when Rejected, the value to store.

    `value` is the normalised text to store (booleans lower-case, lists without spaces); it is set
    for Accepted and RebootRequired only.
    """

    status: SetStatus
    value: str | None = None
    reason_code: ReasonCode | None = None
    info: str | None = None
    definition: VariableDefinition | None = None

    @property
    def applies(self) -> bool:
        """The value is to be stored (Accepted, or RebootRequired: stored, effective after reboot)."""
        return self.status in (SetStatus.ACCEPTED, SetStatus.REBOOT_REQUIRED)


@record
class GetDecision:
    """The pure layer's answer to a read; the value itself comes from the store when Accepted."""

    status: GetStatus
    reason_code: ReasonCode | None = None
    info: str | None = None
    definition: VariableDefinition | None = None


# (variable, attribute) -> its stored value, or None when it has none (or must not be read). The
# store's `get` fits; the 1.6 key map and the report builders read through it.
ValueReader = Callable[[VariableKey, AttributeType], "str | None"]

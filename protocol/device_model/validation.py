"""Is this write allowed, and what exactly is stored? Is this read allowed? Pure decisions on text.

`check_set` answers a SetVariables item (or a ChangeConfiguration projected onto a variable): lookup,
mutability, then the value against its characteristics (type, range, values list, list length), and
gives the normalised text to store. `check_get` answers a GetVariables item without the value, which
the store supplies. Neither raises on any input string: a bad value is a Rejected decision.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Final

from evstation.protocol.device_model.definitions import DeviceModelDefinitions, Lookup
from evstation.protocol.device_model.model import (
    CONFIGURATION_VALUE_SIZE,
    AttributeType,
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

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "check_get",
    "check_set",
    "check_value",
    "parse_bool",
    "parse_decimal",
    "parse_int",
    "split_list",
]

# An OCPP integer is a JSON integer that both sides hold in 32 bits (the schemas' "integer").
INT32_MIN: Final = -(2**31)
INT32_MAX: Final = 2**31 - 1
# A decimal longer than this is not a setting, it is an attack on the parser.
_MAX_NUMBER_TEXT: Final = 50
# additionalInfo of StatusInfoType is at most 512 characters; values echoed in it are cut short.
_ECHO: Final = 40

_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
# 2.0.1 part 2 primitive datatype passwordString: the characters a Basic-auth password may use.
_PASSWORD_STRING: Final = re.compile(r"[A-Za-z0-9*\-_=:+|@.]*")
# (component, variable) of the variables whose values are passwordStrings.
PASSWORD_VARIABLES: Final = frozenset({("SecurityCtrlr", "BasicAuthPassword")})
_DECIMAL: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
# RFC 3339 date-time with seconds and an offset (as protocol/_base.py requires of the messages).
_DATE_TIME: Final = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")

_LOOKUP_SET: Final = {
    Lookup.UNKNOWN_COMPONENT: SetStatus.UNKNOWN_COMPONENT,
    Lookup.UNKNOWN_VARIABLE: SetStatus.UNKNOWN_VARIABLE,
    Lookup.UNSUPPORTED_ATTRIBUTE: SetStatus.NOT_SUPPORTED_ATTRIBUTE_TYPE,
}
_LOOKUP_GET: Final = {
    Lookup.UNKNOWN_COMPONENT: GetStatus.UNKNOWN_COMPONENT,
    Lookup.UNKNOWN_VARIABLE: GetStatus.UNKNOWN_VARIABLE,
    Lookup.UNSUPPORTED_ATTRIBUTE: GetStatus.NOT_SUPPORTED_ATTRIBUTE_TYPE,
}


def _echo(value: str) -> str:
    return repr(value if len(value) <= _ECHO else value[:_ECHO] + "...")


def limit_text(limit: float) -> str:
    """A limit as a person writes it: 16, not 16.0."""
    return str(int(limit)) if float(limit).is_integer() else str(limit)


def _rejected(definition: VariableDefinition, code: ReasonCode, info: str) -> SetDecision:
    return SetDecision(SetStatus.REJECTED, reason_code=code, info=info[:512], definition=definition)


def is_password_string(value: str) -> bool:
    """Only the characters of the 2.0.1 passwordString type (length is the variable's limits' job)."""
    return _PASSWORD_STRING.fullmatch(value) is not None


def split_list(value: str) -> list[str]:
    """The members of a MemberList / SequenceList text ("" is the empty list; spaces around commas go)."""
    if not value.strip():
        return []
    return [item.strip() for item in value.split(",")]


def check_value(definition: VariableDefinition, value: str, *, limits: bool = True) -> SetDecision:
    """The value against the variable's characteristics only (no lookup, no mutability).

    Accepted (or RebootRequired) with the normalised value, or Rejected with a reason code. With
    `limits=False` the numeric minLimit / maxLimit are not applied: a measured value the station
    reports (EVSE.Power above its rating for a moment) is what it is; type and lists still apply.
    """
    if len(value) > CONFIGURATION_VALUE_SIZE:
        return _rejected(
            definition, ReasonCode.TOO_LARGE_ELEMENT, f"longer than {CONFIGURATION_VALUE_SIZE} characters"
        )
    normalised: str
    match definition.data_type:
        case DataType.STRING:
            if definition.max_limit is not None and len(value) > definition.max_limit:
                return _rejected(
                    definition,
                    ReasonCode.TOO_LARGE_ELEMENT,
                    f"at most {limit_text(definition.max_limit)} characters (got {len(value)})",
                )
            if definition.min_limit is not None and len(value) < definition.min_limit:
                return _rejected(
                    definition,
                    ReasonCode.INVALID_VALUE,
                    f"at least {limit_text(definition.min_limit)} characters (got {len(value)})",
                )
            key = definition.key
            if (key.component.name, key.name) in PASSWORD_VARIABLES and not is_password_string(value):
                # Not echoed: the value is a secret.
                return _rejected(
                    definition,
                    ReasonCode.INVALID_VALUE,
                    "a password may only use a-z, A-Z, 0-9 and * - _ = : + | @ .",
                )
            normalised = value
        case DataType.INTEGER:
            if len(value) > _MAX_NUMBER_TEXT or not _INTEGER.fullmatch(value):
                return _rejected(definition, ReasonCode.INVALID_VALUE, f"not an integer: {_echo(value)}")
            number = int(value)
            problem = _range_problem(definition, number, INT32_MIN, INT32_MAX, limits=limits)
            if problem is not None:
                return _rejected(definition, *problem)
            normalised = str(number)
        case DataType.DECIMAL:
            if len(value) > _MAX_NUMBER_TEXT or not _DECIMAL.fullmatch(value):
                return _rejected(
                    definition, ReasonCode.INVALID_VALUE, f"not a decimal number: {_echo(value)}"
                )
            decimal = Decimal(value)
            problem = _range_problem(definition, decimal, None, None, limits=limits)
            if problem is not None:
                return _rejected(definition, *problem)
            # "1.50" and "+1.5" are the same value: store one spelling ("-0" is 0).
            normalised = "0" if decimal == 0 else format(decimal.normalize(), "f")
        case DataType.DATE_TIME:
            if not _DATE_TIME.fullmatch(value) or not _valid_datetime(value):
                return _rejected(
                    definition, ReasonCode.INVALID_VALUE, f"not an RFC 3339 date-time: {_echo(value)}"
                )
            normalised = value
        case DataType.BOOLEAN:
            lowered = value.lower()
            if lowered not in ("true", "false"):
                return _rejected(definition, ReasonCode.INVALID_VALUE, f"not true or false: {_echo(value)}")
            normalised = lowered
        case DataType.OPTION_LIST:
            allowed = definition.values_list
            if allowed is not None and value not in allowed:
                return _rejected(definition, ReasonCode.INVALID_VALUE, f"not one of {','.join(allowed)}")
            normalised = value
        case DataType.MEMBER_LIST | DataType.SEQUENCE_LIST:
            decision = _check_list(definition, value)
            if isinstance(decision, SetDecision):
                return decision
            normalised = decision
    status = SetStatus.REBOOT_REQUIRED if definition.reboot_required else SetStatus.ACCEPTED
    return SetDecision(status, value=normalised, definition=definition)


def _valid_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _range_problem(
    definition: VariableDefinition,
    number: int | Decimal,
    type_min: int | None,
    type_max: int | None,
    *,
    limits: bool,
) -> tuple[ReasonCode, str] | None:
    low = definition.min_limit if limits else None
    high = definition.max_limit if limits else None
    if low is not None and number < Decimal(str(low)):
        return ReasonCode.VALUE_TOO_LOW, f"below the minimum {limit_text(low)}"
    if high is not None and number > Decimal(str(high)):
        return ReasonCode.VALUE_TOO_HIGH, f"above the maximum {limit_text(high)}"
    if type_min is not None and number < type_min:
        return ReasonCode.VALUE_TOO_LOW, "below the 32-bit integer range"
    if type_max is not None and number > type_max:
        return ReasonCode.VALUE_TOO_HIGH, "above the 32-bit integer range"
    return None


def _check_list(definition: VariableDefinition, value: str) -> str | SetDecision:
    items = split_list(value)
    if any(not item for item in items):
        return _rejected(definition, ReasonCode.INVALID_VALUE, "empty list member")
    allowed = definition.values_list
    if allowed is not None:
        unknown = [item for item in items if item not in allowed]
        if unknown:
            return _rejected(
                definition, ReasonCode.INVALID_VALUE, f"{_echo(unknown[0])} is not one of {','.join(allowed)}"
            )
    if len(set(items)) != len(items):
        return _rejected(definition, ReasonCode.INVALID_VALUE, "a member is listed twice")
    # For the list types maxLimit is the largest number of members (appendix, VariableCharacteristics).
    if definition.max_limit is not None and len(items) > definition.max_limit:
        return _rejected(
            definition, ReasonCode.TOO_MANY_ELEMENTS, f"at most {limit_text(definition.max_limit)} members"
        )
    if definition.min_limit is not None and len(items) < definition.min_limit:
        return _rejected(
            definition, ReasonCode.INVALID_VALUE, f"at least {limit_text(definition.min_limit)} members"
        )
    return ",".join(items)


def check_set(
    definitions: DeviceModelDefinitions,
    key: VariableKey,
    attribute: AttributeType,
    value: str,
) -> SetDecision:
    """The answer to one SetVariableData item (B05): status, reason, and the normalised value to store."""
    found = definitions.lookup(key, attribute)
    if found.outcome is not Lookup.FOUND:
        return SetDecision(_LOOKUP_SET[found.outcome], definition=found.definition)
    definition = found.definition
    assert definition is not None
    if definition.mutability(attribute) is Mutability.READ_ONLY:
        return _rejected(definition, ReasonCode.READ_ONLY, definition.note or "the variable is read-only")
    return check_value(definition, value)


def check_get(
    definitions: DeviceModelDefinitions,
    key: VariableKey,
    attribute: AttributeType = AttributeType.ACTUAL,
) -> GetDecision:
    """The answer to one GetVariableData item (B06) before its value: WriteOnly is Rejected, never read."""
    found = definitions.lookup(key, attribute)
    if found.outcome is not Lookup.FOUND:
        return GetDecision(_LOOKUP_GET[found.outcome], definition=found.definition)
    definition = found.definition
    assert definition is not None
    if definition.mutability(attribute) is Mutability.WRITE_ONLY:
        return GetDecision(
            GetStatus.REJECTED, ReasonCode.WRITE_ONLY, "the variable is write-only", definition=definition
        )
    return GetDecision(GetStatus.ACCEPTED, definition=definition)


# --------------------------------------------------------------------------------------------------
# Typed readings of stored (already validated, normalised) values


def parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ValueError(f"not a boolean: {_echo(value)}")
    return lowered == "true"


def parse_int(value: str) -> int:
    if not _INTEGER.fullmatch(value):
        raise ValueError(f"not an integer: {_echo(value)}")
    return int(value)


def parse_decimal(value: str) -> float:
    if not _DECIMAL.fullmatch(value):  # integers included
        raise ValueError(f"not a number: {_echo(value)}")
    try:
        return float(Decimal(value))
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only valid decimals
        raise ValueError(f"not a number: {_echo(value)}") from exc

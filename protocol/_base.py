"""The base class and value types shared by every generated OCPP message model.

Types here must agree with the JSON schemas (no coercion) and validate in pydantic-core, not Python;
this module must never import a version's generated models.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from importlib import import_module
from typing import Annotated, Any, cast

from pydantic import AllowInfNan, BaseModel, ConfigDict, GetCoreSchemaHandler, Strict
from pydantic_core import CoreSchema, PydanticCustomError
from pydantic_core import core_schema as cs

from evstation.records import record

__all__ = [
    "NOT_NULL",
    "ActionModels",
    "IntegerNumber",
    "JsonInteger",
    "Number",
    "OcppModel",
    "UtcDateTime",
]

# RFC 3339 `date-time` (the schemas' "format": "date-time"): seconds and an offset are mandatory.
# pydantic's own parser is more lenient (unix timestamps, missing seconds, "+0100"), so the shape is
# checked first; the calendar and clock ranges are then checked by the parser.
_RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"

DATETIME_ERROR = "ocpp_datetime"
DATETIME_RANGE_ERROR = "ocpp_datetime_range"


def _init_absent_for_none(self: BaseModel, /, **data: Any) -> None:
    # On the wire an optional property is absent, never null; in Python `None` means absent, so a
    # keyword set to None is simply not passed on.
    BaseModel.__init__(self, **{key: value for key, value in data.items() if value is not None})


# Tell pydantic this __init__ behaves like its own, so validating nested models (and model_validate)
# stays entirely in pydantic-core instead of calling back into Python per object.
setattr(_init_absent_for_none, "__pydantic_base_init__", True)  # noqa: B010


class OcppModel(BaseModel):
    """A request or response payload, or an object inside one.

    Attributes are snake_case; the wire names are the aliases. Instances are immutable.
    """

    model_config = ConfigDict(
        defer_build=True,
        extra="forbid",
        frozen=True,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        revalidate_instances="never",
    )

    __init__ = _init_absent_for_none


class ActionModels(Mapping[str, tuple[type[OcppModel], type[OcppModel]]]):
    """A version's registry, action -> (request model, response model).

    Each action's classes live in a generated module of their own (`<package>._actions.<action>`),
    imported on the action's first lookup: a station builds only the classes of the messages it uses.
    """

    def __init__(self, package: str, homes: Mapping[str, str]) -> None:
        self.package = package
        self._homes = homes
        # Lookups sit on every message's path: once imported, an action is one dict read.
        self._loaded: dict[str, tuple[type[OcppModel], type[OcppModel]]] = {}

    def __getitem__(self, action: str) -> tuple[type[OcppModel], type[OcppModel]]:
        try:
            return self._loaded[action]
        except KeyError:
            pass
        module = import_module(f"{self.package}.{self._homes[action]}")
        pair = (getattr(module, f"{action}Request"), getattr(module, f"{action}Response"))
        self._loaded[action] = pair
        return pair

    def __iter__(self) -> Iterator[str]:
        return iter(self._homes)

    def __len__(self) -> int:
        return len(self._homes)

    def __contains__(self, action: object) -> bool:
        return action in self._homes


class _NotNull:
    """Annotated marker: the field may be absent (Python default None) but an explicit null is invalid.

    JSON schema rejects `"field": null` for a typed optional property; pydantic's `X | None` would
    accept it, so the nullable wrapper is dropped from the validation schema.
    """

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        schema = handler(source)
        if schema["type"] != "nullable":
            raise TypeError(f"NOT_NULL needs an `X | None` annotation, got {source!r}")
        return cast(CoreSchema, schema["schema"])

    def __repr__(self) -> str:
        return "NOT_NULL"


NOT_NULL = _NotNull()


@record
class IntegerNumber:
    """Annotated marker for a JSON-schema draft-06 `integer`: an int, or a float with no fraction.

    Draft 6 counts 1.0 as an integer (draft 4 does not: use StrictInt there). Strings and booleans
    are rejected; 1.5 is rejected as a type error. The stored value is always an int.
    """

    ge: int | None = None
    le: int | None = None

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        json_number = cs.union_schema(
            [cs.int_schema(strict=True), cs.float_schema(strict=True, allow_inf_nan=False)],
            mode="left_to_right",
            custom_error_type="int_type",
        )
        return cs.chain_schema(
            [json_number, cs.int_schema(ge=self.ge, le=self.le)],
            serialization=cs.simple_ser_schema("int"),
        )


JsonInteger = Annotated[int, IntegerNumber()]
"""A draft-06 `integer` with no bounds."""

Number = Annotated[float, Strict(), AllowInfNan(False)]
"""A JSON `number`: int or float, never a bool or a string; held as a float (IEEE double)."""


def _to_utc(value: datetime) -> datetime:
    if not value.utcoffset():
        return value
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            DATETIME_RANGE_ERROR, "date-time is outside the range representable in UTC"
        ) from None


class _UtcDateTimeSchema:
    """A timezone-aware datetime, given as an RFC 3339 string or a datetime; held and sent in UTC."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        aware = cs.union_schema(
            [
                # Wire input (a string) first: it is the common case and this order is faster.
                cs.chain_schema(
                    [
                        cs.str_schema(strict=True, pattern=_RFC3339),
                        cs.datetime_schema(tz_constraint="aware"),
                    ]
                ),
                cs.datetime_schema(strict=True, tz_constraint="aware"),
            ],
            mode="left_to_right",
            custom_error_type=DATETIME_ERROR,
            custom_error_message="Input should be an RFC 3339 date-time with a time zone offset",
        )
        # pydantic-core writes a zero UTC offset as "Z", which is what OCPP asks for.
        return cs.no_info_after_validator_function(
            _to_utc, aware, serialization=cs.simple_ser_schema("datetime")
        )


UtcDateTime = Annotated[datetime, _UtcDateTimeSchema()]
"""An OCPP `date-time`: naive datetimes are rejected; values are converted to UTC."""

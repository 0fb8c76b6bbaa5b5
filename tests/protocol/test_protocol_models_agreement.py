"""Every payload the official JSON schema accepts, our model accepts and round-trips unchanged.

hypothesis-jsonschema draws schema-valid payloads for all 206 schemas (a few per schema, derandomised
so CI is repeatable); each must parse, and model -> to_payload -> model must give the same model and
the same JSON (numbers compared as IEEE doubles, date-times as instants).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import hypothesis_jsonschema._from_schema
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from hypothesis.internal.conjecture import utils as conjecture_utils
from hypothesis_jsonschema import from_schema

from evstation.protocol._codegen.generate import SchemaFile, load_schemas
from evstation.protocol.errors import ErrorKind
from evstation.protocol.messages import PayloadError, parse_request, parse_response, to_payload
from evstation.protocol.versions import OcppVersion

Json = Any

VERSIONS = {"v16": OcppVersion.V16, "v201": OcppVersion.V201}
FILES = [(VERSIONS[version], file) for version in VERSIONS for file in load_schemas(version)]
IDS = [f"{version.value}-{file.class_name}" for version, file in FILES]
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class _SteppedMany:
    """hypothesis-jsonschema 0.23 steps `many` with .more(); newer Hypothesis only offers iteration.

    Adapts one to the other so object schemas can still be drawn (the library is otherwise fine).
    """

    _END = object()

    def __init__(self, data: Any, min_size: int, max_size: float, average_size: float) -> None:
        self._many = conjecture_utils.many(
            data, min_size=min_size, max_size=max_size, average_size=average_size
        )
        self._many.__enter__()
        self._elements = iter(self._many)

    def more(self) -> bool:
        if next(self._elements, self._END) is self._END:
            self._many.__exit__(None, None, None)
            return False
        return True

    def reject(self, why: str | None = None) -> None:
        self._many.reject(why)


@pytest.fixture(scope="module", autouse=True)
def _hypothesis_jsonschema_on_current_hypothesis() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        if not hasattr(conjecture_utils.many, "more"):
            patch.setattr(hypothesis_jsonschema._from_schema, "cu", SimpleNamespace(many=_SteppedMany))
        yield


@functools.cache
def payloads(version: OcppVersion, filename: str) -> st.SearchStrategy[Json]:
    (file,) = [file for v, file in FILES if v is version and file.filename == filename]
    # hypothesis-jsonschema cannot resolve "#/definitions/..." against a "urn:" base; $id only
    # names the schema, so dropping it changes nothing the schema accepts.
    schema = {key: value for key, value in file.schema.items() if key != "$id"}
    return from_schema(narrowed(schema))


_GENERATED_ITEMS = 2
_GENERATED_LENGTH = 40


def narrowed(node: Json) -> Json:
    """The schema with arrays and strings capped, so draws stay small and the suite fast.

    Everything it accepts the original accepts too; the limits themselves are exercised by the
    deterministic mutation tests (test_protocol_models_mutations.py).
    """
    if isinstance(node, list):
        return [narrowed(item) for item in node]
    if not isinstance(node, dict):
        return node
    result = {key: narrowed(value) for key, value in node.items()}
    if result.get("type") == "array":
        result["maxItems"] = min(result.get("maxItems", _GENERATED_ITEMS), _GENERATED_ITEMS)
        result["maxItems"] = max(result["maxItems"], result.get("minItems", 0))
    if result.get("type") == "string" and "enum" not in result and "format" not in result:
        result["maxLength"] = min(result.get("maxLength", _GENERATED_LENGTH), _GENERATED_LENGTH)
    return result


def comparable(value: Json) -> Json:
    """A JSON value with the representation choices our models make taken out."""
    if isinstance(value, dict):
        return {key: comparable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [comparable(item) for item in value]
    if isinstance(value, bool | str) and not (isinstance(value, str) and _DATE_TIME.match(value)):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value.upper())
    if isinstance(value, int | float):
        return float(value)
    return value


def parse(version: OcppVersion, file: SchemaFile, payload: Json) -> Json:
    parser = parse_request if file.kind == "Request" else parse_response
    return parser(version, file.action, payload)


@pytest.mark.parametrize(("version", "file"), FILES, ids=IDS)
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(data=st.data())
def test_schema_valid_payloads_parse_and_round_trip(
    version: OcppVersion, file: SchemaFile, data: st.DataObject
) -> None:
    payload = data.draw(payloads(version, file.filename), label="payload")
    try:
        model = parse(version, file, payload)
    except PayloadError as error:
        # The one documented disagreement: a date-time near year 1 or 9999 whose offset pushes it
        # outside the years Python can represent once converted to UTC.
        if error.kind is ErrorKind.PROPERTY_CONSTRAINT and "range representable in UTC" in error.description:
            reject()
        raise
    wire = to_payload(model)
    assert parse(version, file, json.loads(json.dumps(wire))) == model
    assert comparable(wire) == comparable(payload)

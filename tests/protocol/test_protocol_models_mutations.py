"""Models and JSON schemas agree on broken payloads, and the OCPP-J error kind is the specific one.

For every one of the 206 official schemas a valid payload with every optional property is built,
then broken one property at a time (nested ones too): jsonschema must reject each mutant, and so must
parse_request/parse_response, with the expected ErrorKind and the failing property's wire path.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
import pytest

from evstation.protocol._codegen.generate import SchemaFile, load_schemas
from evstation.protocol.errors import ErrorKind
from evstation.protocol.messages import PayloadError, parse_request, parse_response, to_payload
from evstation.protocol.rpc import JsonObject
from evstation.protocol.versions import OcppVersion

Json = Any
Path = tuple[str | int, ...]

VERSIONS = {"v16": OcppVersion.V16, "v201": OcppVersion.V201}
FILES = [(VERSIONS[version], file) for version in VERSIONS for file in load_schemas(version)]
IDS = [f"{version.value}-{file.class_name}" for version, file in FILES]
UNKNOWN = "unknownProperty"
DATE_TIME = "2024-05-06T07:08:09Z"


def resolve(file: SchemaFile, node: Mapping[str, Json]) -> Mapping[str, Json]:
    if "$ref" in node:
        return resolve(file, file.schema["definitions"][node["$ref"].removeprefix("#/definitions/")])
    return node


def example(file: SchemaFile, node: Mapping[str, Json], full: bool) -> Json:
    """A valid value for `node`; with `full`, objects carry every optional property too."""
    node = resolve(file, node)
    if "enum" in node:
        return node["enum"][-1]
    kind = node.get("type")
    if kind == "string":
        return DATE_TIME if node.get("format") == "date-time" else "ab"[: node.get("maxLength", 2)]
    if kind == "integer":
        return int(min(max(3, node.get("minimum", 3)), node.get("maximum", 3)))
    if kind == "number":
        return float(min(max(2.5, node.get("minimum", 2.5)), node.get("maximum", 2.5)))
    if kind == "boolean":
        return True
    if kind == "array":
        return [example(file, node["items"], full) for _ in range(max(1, node.get("minItems", 1)))]
    if kind == "object":
        required = set(node.get("required", ()))
        return {
            name: example(file, sub, full)
            for name, sub in node.get("properties", {}).items()
            if full or name in required
        }
    assert kind is None, node
    return {"free": ["form", 1, None]}


@dataclass(frozen=True)
class Mutation:
    label: str
    path: Path  # where the value changes
    value: Json  # the new value; DELETE removes the property
    kind: ErrorKind
    error_path: Path  # where the error is expected


DELETE = object()


def mutations(file: SchemaFile, node: Mapping[str, Json], value: Json, path: Path) -> Iterator[Mutation]:
    node = resolve(file, node)
    kind = node.get("type")
    if kind is None and "enum" not in node:
        return  # untyped: anything goes
    if path:
        yield Mutation("null", path, None, ErrorKind.TYPE_CONSTRAINT, path)
    if "enum" in node:
        yield Mutation("unknown enum value", path, "NoSuchValue", ErrorKind.PROPERTY_CONSTRAINT, path)
        yield Mutation("enum as number", path, 7, ErrorKind.TYPE_CONSTRAINT, path)
        return
    if kind == "string":
        yield Mutation("number for string", path, 12345, ErrorKind.TYPE_CONSTRAINT, path)
        if "maxLength" in node:
            too_long = "a" * (node["maxLength"] + 1)
            yield Mutation("over-long string", path, too_long, ErrorKind.PROPERTY_CONSTRAINT, path)
    elif kind in ("integer", "number"):
        yield Mutation("numeric string", path, "1", ErrorKind.TYPE_CONSTRAINT, path)
        yield Mutation("boolean for number", path, True, ErrorKind.TYPE_CONSTRAINT, path)
        if kind == "integer":
            yield Mutation("fraction for integer", path, 1.5, ErrorKind.TYPE_CONSTRAINT, path)
        if "minimum" in node:
            below = node["minimum"] - 1
            yield Mutation("below minimum", path, below, ErrorKind.PROPERTY_CONSTRAINT, path)
        if "maximum" in node:
            above = node["maximum"] + 1
            yield Mutation("above maximum", path, above, ErrorKind.PROPERTY_CONSTRAINT, path)
    elif kind == "boolean":
        yield Mutation("string for boolean", path, "true", ErrorKind.TYPE_CONSTRAINT, path)
        yield Mutation("number for boolean", path, 1, ErrorKind.TYPE_CONSTRAINT, path)
    elif kind == "array":
        yield Mutation("string for array", path, "x", ErrorKind.TYPE_CONSTRAINT, path)
        if node.get("minItems", 0) >= 1:
            shorter = value[: node["minItems"] - 1]
            yield Mutation("too few items", path, shorter, ErrorKind.OCCURRENCE_CONSTRAINT, path)
        if "maxItems" in node:
            longer = value + [value[0]] * (node["maxItems"] + 1 - len(value))
            yield Mutation("too many items", path, longer, ErrorKind.OCCURRENCE_CONSTRAINT, path)
        yield from mutations(file, node["items"], value[0], (*path, 0))
    elif kind == "object":
        if path:
            yield Mutation("string for object", path, "x", ErrorKind.TYPE_CONSTRAINT, path)
        else:
            yield Mutation("array for payload", path, [], ErrorKind.FORMAT, path)
        for name in node.get("required", ()):
            yield Mutation(
                "missing required", (*path, name), DELETE, ErrorKind.OCCURRENCE_CONSTRAINT, (*path, name)
            )
        if node.get("additionalProperties", True) is False:
            yield Mutation("extra property", (*path, UNKNOWN), 1, ErrorKind.FORMAT, (*path, UNKNOWN))
        for name, sub in node.get("properties", {}).items():
            yield from mutations(file, sub, value[name], (*path, name))


def mutate(payload: Json, mutation: Mutation) -> Json:
    if not mutation.path:
        return mutation.value
    result = copy.deepcopy(payload)
    parent = result
    for part in mutation.path[:-1]:
        parent = parent[part]
    if mutation.value is DELETE:
        del parent[mutation.path[-1]]
    else:
        parent[mutation.path[-1]] = mutation.value
    return result


def parse(version: OcppVersion, file: SchemaFile, payload: Json) -> Json:
    parser = parse_request if file.kind == "Request" else parse_response
    return parser(version, file.action, payload)


def validator(file: SchemaFile) -> jsonschema.protocols.Validator:
    # 1.6 core schemas are draft 4, the security-whitepaper ones and all of 2.0.1 draft 6.
    cls = jsonschema.validators.validator_for(file.schema)
    assert cls in (jsonschema.Draft4Validator, jsonschema.Draft6Validator)
    return cls(file.schema)


@pytest.mark.parametrize(("version", "file"), FILES, ids=IDS)
def test_minimal_and_full_payloads_are_valid_and_round_trip(version: OcppVersion, file: SchemaFile) -> None:
    check = validator(file)
    for full in (False, True):
        payload = example(file, file.schema, full)
        check.validate(payload)
        model = parse(version, file, payload)
        wire = to_payload(model)
        assert json.loads(json.dumps(wire)) == payload
        assert parse(version, file, wire) == model


@pytest.mark.parametrize(("version", "file"), FILES, ids=IDS)
def test_schema_and_model_reject_the_same_mutants_with_the_right_kind(
    version: OcppVersion, file: SchemaFile
) -> None:
    check = validator(file)
    payload = example(file, file.schema, full=True)
    failures = []
    count = 0
    for mutation in mutations(file, file.schema, payload, ()):
        count += 1
        mutant = mutate(payload, mutation)
        where = f"{mutation.label} at {'.'.join(map(str, mutation.path)) or '<payload>'}"
        if check.is_valid(mutant):
            failures.append(f"{where}: jsonschema accepts it (bad mutation)")
            continue
        try:
            parse(version, file, mutant)
        except PayloadError as error:
            expected_path = ".".join(map(str, mutation.error_path))
            if (error.kind, error.path) != (mutation.kind, expected_path):
                failures.append(f"{where}: got {error.kind.name} at {error.path!r} ({error.description})")
        else:
            failures.append(f"{where}: model accepts it")
    assert count >= 2
    assert not failures, "\n".join(failures)


def integer_paths(file: SchemaFile, node: Mapping[str, Json], value: Json, path: Path) -> Iterator[Path]:
    node = resolve(file, node)
    if node.get("type") == "integer" and "enum" not in node:
        yield path
    elif node.get("type") == "array":
        yield from integer_paths(file, node["items"], value[0], (*path, 0))
    elif node.get("type") == "object":
        for name, sub in node.get("properties", {}).items():
            yield from integer_paths(file, sub, value[name], (*path, name))


@pytest.mark.parametrize(("version", "file"), FILES, ids=IDS)
def test_integral_float_for_integer_follows_the_schema_draft(version: OcppVersion, file: SchemaFile) -> None:
    # Draft 4 (1.6 core) says 3.0 is not an integer; draft 6 (security whitepaper, 2.0.1) says it is.
    check = validator(file)
    payload = example(file, file.schema, full=True)
    for path in integer_paths(file, file.schema, payload, ()):
        parent = mutant = copy.deepcopy(payload)
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = float(parent[path[-1]])
        schema_accepts = check.is_valid(mutant)
        assert schema_accepts == (not file.draft4)
        if schema_accepts:
            wire = to_payload(parse(version, file, mutant))
            assert wire == payload
            assert type(json.loads(json.dumps(wire)) and payload) is dict
        else:
            with pytest.raises(PayloadError) as caught:
                parse(version, file, mutant)
            assert (caught.value.kind, caught.value.path) == (
                ErrorKind.TYPE_CONSTRAINT,
                ".".join(map(str, path)),
            )


def _outcome(version: OcppVersion, file: SchemaFile, payload: object) -> object:
    try:
        return parse(version, file, payload)
    except PayloadError as error:
        # pydantic words some errors after the mode ("an object" / "a valid dictionary"): the kind and
        # the path are what a CALLERROR and a dead letter depend on.
        return (error.kind, error.path)


@pytest.mark.parametrize(("version", "file"), FILES, ids=IDS)
def test_a_json_object_text_is_judged_exactly_as_its_decoded_payload(
    version: OcppVersion, file: SchemaFile
) -> None:
    # A stored message is validated as its JSON text (the bytes then sent), not decoded first: the
    # verdict, down to the error's kind and path, must be the one its decoded values get.
    payload = example(file, file.schema, full=True)
    cases = [example(file, file.schema, full=False), payload]
    cases += [mutate(payload, mutation) for mutation in mutations(file, file.schema, payload, ())]
    for path in integer_paths(file, file.schema, payload, ()):  # 3.0 for an integer, per draft
        parent = integral_float = copy.deepcopy(payload)
        for part in path[:-1]:
            parent = parent[part]
        parent[path[-1]] = float(parent[path[-1]])
        cases.append(integral_float)
    for case in cases:
        text = json.dumps(case, separators=(",", ":"), allow_nan=False)
        assert _outcome(version, file, JsonObject(text)) == _outcome(version, file, case), text

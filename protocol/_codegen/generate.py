"""Generate protocol/v16/messages.py and protocol/v201/messages.py from the official OCPP JSON schemas.

Run `python -m evstation.protocol._codegen.generate` to rewrite them, `--check` to verify them.
Development tool only: the runtime must never import this module (it needs the `ocpp` package).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import keyword
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

VERSIONS: Mapping[str, str] = {"v16": "1.6", "v201": "2.0.1"}
KINDS = ("Request", "Response")
PROTOCOL_DIR = Path(__file__).resolve().parent.parent

_DRAFT4 = "http://json-schema.org/draft-04/schema#"
_DRAFT6 = "http://json-schema.org/draft-06/schema#"
# Keys that do not change what a schema accepts.
_ANNOTATIONS = frozenset({"description", "javaType", "comment", "$comment", "title", "$id", "$schema"})
_RESERVED_FIELD_NAMES = frozenset(dir(BaseModel)) | {"model_config"}

Json = Any


@dataclasses.dataclass(frozen=True)
class SchemaFile:
    """One schema: the payload of `action`'s request or response."""

    action: str
    kind: str
    filename: str
    schema: Mapping[str, Json]

    @property
    def draft4(self) -> bool:
        return bool(self.schema.get("$schema") == _DRAFT4)

    @property
    def class_name(self) -> str:
        return self.action + self.kind


def schema_dir(version: str) -> Path:
    """The folder of JSON schemas shipped in the installed `ocpp` package."""
    return Path(str(resources.files("ocpp").joinpath(version, "schemas")))


def load_schemas(version: str) -> list[SchemaFile]:
    files = []
    for path in sorted(schema_dir(version).glob("*.json")):
        stem = path.stem
        if stem.endswith("Response"):
            action, kind = stem.removesuffix("Response"), "Response"
        elif version == "v16":
            action, kind = stem, "Request"
        else:
            if not stem.endswith("Request"):
                raise ValueError(f"unexpected schema file name {path.name}")
            action, kind = stem.removesuffix("Request"), "Request"
        # utf-8-sig: some of the official files start with a byte-order mark.
        schema = json.loads(path.read_text(encoding="utf-8-sig"))
        files.append(SchemaFile(action, kind, path.name, schema))
    return files


def snake(name: str) -> str:
    """camelCase / PascalCase / dotted wire spelling -> snake_case."""
    text = re.sub(r"[^0-9A-Za-z]+", "_", name)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    return text.strip("_").lower()


def pascal(name: str) -> str:
    return name[:1].upper() + name[1:]


def normalize(node: Json) -> Json:
    """The part of a schema that decides what it accepts, in a canonical order."""
    if isinstance(node, dict):
        return {key: normalize(value) for key, value in sorted(node.items()) if key not in _ANNOTATIONS}
    if isinstance(node, list):
        return [normalize(item) for item in node]
    return node


def canonical(node: Json, draft4: bool) -> str:
    return json.dumps([draft4, normalize(node)], sort_keys=True)


Key = tuple[str, ...]
"""Where a node sits: (action, kind, property, ...) or ("#", definition, property, ...)."""


@dataclasses.dataclass
class Anonymous:
    """An inline enum or object (1.6 schemas), named after the shortest unambiguous property path.

    Identical inline types are shared only where their paths end alike (e.g. every `idTagInfo`);
    two unrelated `status` enums with the same values stay two classes with telling names.
    """

    is_enum: bool
    node: Mapping[str, Json]
    draft4: bool
    occurrences: list[tuple[Key, Key]] = dataclasses.field(default_factory=list)  # (naming path, key)
    name: str = ""

    @property
    def paths(self) -> list[Key]:
        return [path for path, _ in self.occurrences]


@dataclasses.dataclass
class Named:
    """A `definitions` entry, shared by name across every schema of the version."""

    name: str
    node: Mapping[str, Json]
    draft4: bool
    canonical: str


def _common_suffix(paths: Sequence[Key]) -> Key:
    shortest = min(len(path) for path in paths)
    length = 0
    while length < shortest and len({path[-length - 1] for path in paths}) == 1:
        length += 1
    return paths[0][len(paths[0]) - length :]


def _unique_suffix(path: Key, others: Sequence[Key]) -> Key | None:
    for length in range(1, len(path) + 1):
        suffix = path[-length:]
        if all(other[-length:] != suffix for other in others):
            return suffix
    return None


class Version:
    """Everything one version's module needs: enums, models, actions."""

    def __init__(self, version: str, files: Sequence[SchemaFile]) -> None:
        self.version = version
        self.files = files
        self.named: dict[str, Named] = {}
        groups: dict[str, Anonymous] = {}
        for file in files:
            self._collect(file.schema, (file.action,), (file.action, file.kind), file, groups, root=True)
        self.by_key: dict[Key, Anonymous] = {}
        self._name_anonymous(list(groups.values()))

    # -- collecting -------------------------------------------------------------------------------

    def _collect(
        self,
        node: Mapping[str, Json],
        path: Key,
        key: Key,
        file: SchemaFile,
        groups: dict[str, Anonymous],
        root: bool = False,
    ) -> None:
        if "$ref" in node:
            name = self._ref_name(node["$ref"])
            target = file.schema["definitions"][name]
            canon = canonical(target, file.draft4)
            known = self.named.get(name)
            if known is None:
                self.named[name] = Named(name, target, file.draft4, canon)
                if "enum" not in target:
                    self._collect(target, (name,), ("#", name), file, groups, root=True)
            elif known.canonical != canon:
                raise ValueError(f"{self.version}: definition {name} differs in {file.filename}")
            return
        if "enum" in node or (node.get("type") == "object" and not root):
            is_enum = "enum" in node
            canon = canonical(node["enum"] if is_enum else node, file.draft4)
            entry = groups.setdefault(canon, Anonymous(is_enum, node, file.draft4))
            entry.occurrences.append((path, key))
        if node.get("type") == "object":
            for prop, sub in node.get("properties", {}).items():
                self._collect(sub, (*path, prop), (*key, prop), file, groups)
        elif node.get("type") == "array":
            self._collect(node["items"], path, key, file, groups)

    @staticmethod
    def _ref_name(ref: str) -> str:
        if not ref.startswith("#/definitions/"):
            raise ValueError(f"unsupported $ref {ref}")
        return ref.removeprefix("#/definitions/")

    def _name_anonymous(self, groups: list[Anonymous]) -> None:
        all_paths = [(id(group), path) for group in groups for path in group.paths]
        entries: list[tuple[Anonymous, Key]] = []
        for group in groups:
            common = _common_suffix(group.paths)
            others = [path for owner, path in all_paths if owner != id(group)]
            suffix = _unique_suffix(common, others) if common else None
            if suffix is not None:
                entries.append((group, suffix))
                continue
            for occurrence in group.occurrences:
                single = dataclasses.replace(group, occurrences=[occurrence])
                rest = [path for path in group.paths if path != occurrence[0]]
                suffix = _unique_suffix(occurrence[0], others + rest)
                if suffix is None:
                    raise ValueError(f"{self.version}: no unambiguous name for {occurrence[0]}")
                entries.append((single, suffix))
        taken = set(self.named) | {file.class_name for file in self.files}
        for entry, suffix in sorted(entries, key=lambda item: min(item[0].paths)):
            entry.name = "".join(pascal(part) for part in suffix) + ("Enum" if entry.is_enum else "")
            if entry.name in taken:
                raise ValueError(f"{self.version}: generated name {entry.name} is taken")
            taken.add(entry.name)
            for _, key in entry.occurrences:
                self.by_key[key] = entry

    # -- rendering --------------------------------------------------------------------------------

    def type_of(self, node: Mapping[str, Json], draft4: bool, key: Key) -> str:
        """The Python annotation (without `| None`) that accepts exactly what `node` at `key` accepts."""
        base, args = self.type_parts(node, draft4, key)
        return f"Annotated[{base}, Field({args})]" if args else base

    def type_parts(self, node: Mapping[str, Json], draft4: bool, key: Key) -> tuple[str, str]:
        """(type, Field arguments): the constraints stay separate so a field needs one Field() only."""
        if "$ref" in node:
            name = self._ref_name(node["$ref"])
            target = self.named[name].node
            if "enum" in target or target.get("type") == "object":
                return name, ""
            return self.type_parts(target, draft4, ("#", name))
        if "enum" in node:
            return self.by_key[key].name, ""
        kind = node.get("type")
        if kind is None:
            return "JsonValue", ""
        if kind == "string":
            if node.get("format") == "date-time":
                return "UtcDateTime", ""
            return "StrictStr", _args(max_length=node.get("maxLength"))
        if kind == "boolean":
            return "StrictBool", ""
        if kind == "integer":
            args = _args(ge=_integral(node.get("minimum")), le=_integral(node.get("maximum")))
            if draft4:
                return "StrictInt", args
            # The bounds live in the marker so that they are checked inside pydantic-core.
            return (f"Annotated[int, IntegerNumber({args})]" if args else "JsonInteger"), ""
        if kind == "number":
            args = _args(ge=node.get("minimum"), le=node.get("maximum"), multiple_of=node.get("multipleOf"))
            return "Number", args
        if kind == "array":
            item = self.type_of(node["items"], draft4, key)
            return f"list[{item}]", _args(min_length=node.get("minItems"), max_length=node.get("maxItems"))
        if kind == "object":
            return self.by_key[key].name, ""
        raise ValueError(f"unsupported schema node {node}")

    def objects(self) -> dict[str, tuple[Mapping[str, Json], bool, Key]]:
        """class name -> (object schema, draft4, key of the schema node)."""
        found: dict[str, tuple[Mapping[str, Json], bool, Key]] = {}
        for file in self.files:
            found[file.class_name] = (file.schema, file.draft4, (file.action, file.kind))
        for entry in self.by_key.values():
            if not entry.is_enum:
                found.setdefault(entry.name, (entry.node, entry.draft4, entry.occurrences[0][1]))
        for named in self.named.values():
            if named.node.get("type") == "object":
                found[named.name] = (named.node, named.draft4, ("#", named.name))
        return found

    def models(self) -> Iterator[tuple[str, Mapping[str, Json], bool, Key]]:
        """Every object class, dependencies first, otherwise by name."""
        objects = self.objects()
        done: set[str] = set()

        def visit(name: str) -> Iterator[tuple[str, Mapping[str, Json], bool, Key]]:
            if name in done:
                return
            done.add(name)
            node, draft4, key = objects[name]
            for dependency in sorted(self._dependencies(node, key)):
                yield from visit(dependency)
            yield name, node, draft4, key

        for name in sorted(objects):
            yield from visit(name)

    def _dependencies(self, node: Mapping[str, Json], key: Key) -> set[str]:
        found: set[str] = set()
        for prop, sub in node.get("properties", {}).items():
            while sub.get("type") == "array":
                sub = sub["items"]
            if "$ref" in sub and self.named[self._ref_name(sub["$ref"])].node.get("type") == "object":
                found.add(self._ref_name(sub["$ref"]))
            elif sub.get("type") == "object":
                found.add(self.by_key[(*key, prop)].name)
        return found

    def enums(self) -> list[tuple[str, Sequence[str]]]:
        found = {entry.name: entry.node["enum"] for entry in self.by_key.values() if entry.is_enum}
        for named in self.named.values():
            if "enum" in named.node:
                found[named.name] = named.node["enum"]
        return sorted(found.items())


def _integral(bound: float | None) -> int | None:
    # The schemas write integer bounds as 0.0; an int bound keeps the int validator exact.
    if bound is None:
        return None
    if int(bound) != bound:
        raise ValueError(f"fractional bound {bound} on an integer")
    return int(bound)


def _args(**bounds: object) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in bounds.items() if value is not None)


def member_name(value: str) -> str:
    name = snake(value).upper()
    if not name.isidentifier() or keyword.iskeyword(name) or name.startswith("_"):
        raise ValueError(f"enum value {value!r} has no usable member name")
    return name


def field_name(wire: str) -> str:
    name = snake(wire)
    if keyword.iskeyword(name) or name in _RESERVED_FIELD_NAMES:
        name += "_"
    return name


def render_enum(name: str, values: Sequence[str]) -> list[str]:
    lines = [f"class {name}(StrEnum):"]
    seen: set[str] = set()
    for value in values:
        member = member_name(value)
        if member in seen:
            raise ValueError(f"enum {name}: two values map to member {member}")
        seen.add(member)
        lines.append(f"    {member} = {value!r}")
    return lines


def render_model(version: Version, name: str, node: Mapping[str, Json], draft4: bool, key: Key) -> list[str]:
    lines = [f"class {name}(OcppModel):"]
    extra = node.get("additionalProperties", True)
    if extra is not False:
        # Only CustomDataType (2.0.1) leaves additionalProperties open: vendor data passes through.
        lines.append('    model_config = ConfigDict(extra="allow")')
        lines.append("")
    required = set(node.get("required", ()))
    properties: Mapping[str, Json] = node.get("properties", {})
    unknown = required - set(properties)
    if unknown:
        raise ValueError(f"{name}: required but not described: {sorted(unknown)}")
    used: set[str] = set()
    for wire, sub in properties.items():
        attribute = field_name(wire)
        if attribute in used:
            raise ValueError(f"{name}: two properties map to attribute {attribute}")
        used.add(attribute)
        annotation, constraints = version.type_parts(sub, draft4, (*key, wire))
        alias = "" if attribute == wire else f'alias="{wire}"'
        args = ", ".join(part for part in (constraints, alias) if part)
        field = f", Field({args})" if args else ""
        if wire in required or "default" in sub or annotation == "JsonValue":
            line = f"Annotated[{annotation}{field}]" if field else annotation
            if wire in required:
                lines.append(f"    {attribute}: {line}")
            elif "default" in sub:
                lines.append(f"    {attribute}: {line} = {sub['default']!r}")
            else:
                # Untyped: null is a valid value here, distinct from absent.
                lines.append(f"    {attribute}: {line} = None")
        else:
            lines.append(f"    {attribute}: Annotated[{annotation} | None, NOT_NULL{field}] = None")
    if not properties and extra is not False:
        lines.pop()
    if len(lines) == 1:
        lines.append("    pass")
    return lines


HEADER = '''\
"""OCPP {label} message models, generated from the official JSON schemas. DO NOT EDIT.

Regenerate with `python -m evstation.protocol._codegen.generate`; never import the other version here.
"""

# Generated by evstation/protocol/_codegen/generate.py from the `ocpp` package's schemas/*.json.
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Final

from pydantic import ConfigDict, Field, JsonValue, StrictBool, StrictInt, StrictStr

from evstation.protocol._base import NOT_NULL, IntegerNumber, JsonInteger, Number, OcppModel, UtcDateTime

'''


def render(version: str) -> str:
    files = load_schemas(version)
    model = Version(version, files)
    blocks: list[list[str]] = []
    for name, values in model.enums():
        blocks.append(render_enum(name, values))
    for name, node, draft4, key in model.models():
        blocks.append(render_model(model, name, node, draft4, key))
    actions = sorted({file.action for file in files})
    registry = [
        "ACTIONS: Final[MappingProxyType[str, tuple[type[OcppModel], type[OcppModel]]]] = MappingProxyType(",
        "    {",
    ]
    registry += [f'        "{action}": ({action}Request, {action}Response),' for action in actions]
    registry += ["    }", ")"]
    blocks.append(registry)
    body = "\n\n\n".join("\n".join(block) for block in blocks)
    text = HEADER.format(label=VERSIONS[version]) + "\n" + body + "\n"
    return _drop_unused_imports(text)


_OPTIONAL_IMPORTS = (
    "ConfigDict",
    "JsonValue",
    "StrictBool",
    "StrictInt",
    "StrictStr",
    "IntegerNumber",
    "JsonInteger",
    "Number",
    "UtcDateTime",
    "NOT_NULL",
)


def _drop_unused_imports(text: str) -> str:
    header, _, body = text.partition("\n\n\n")
    for name in _OPTIONAL_IMPORTS:
        if not re.search(rf"\b{name}\b", body):
            header = re.sub(rf"\b{name}, |, {name}\b", "", header)
    return header + "\n\n\n" + body


def target(version: str) -> Path:
    return PROTOCOL_DIR / version / "messages.py"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is out of date")
    args = parser.parse_args(argv)
    stale = []
    for version in VERSIONS:
        text = render(version)
        path = target(version)
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        if args.check:
            stale.append(str(path))
        else:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if stale:
        print("out of date (run python -m evstation.protocol._codegen.generate):", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

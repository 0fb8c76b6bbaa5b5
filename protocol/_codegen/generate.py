"""Generate the OCPP message models (protocol/v16/, protocol/v201/) from the official JSON schemas.

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


_GENERATED = (
    "# Generated by evstation/protocol/_codegen/generate.py from the `ocpp` package's schemas/*.json."
)

# Names a generated module may need, in the order ruff's isort writes them.
_PYDANTIC_NAMES = ("ConfigDict", "Field", "JsonValue", "StrictBool", "StrictInt", "StrictStr")
_BASE_NAMES = ("NOT_NULL", "IntegerNumber", "JsonInteger", "Number", "OcppModel", "UtcDateTime")
_LINE_LIMIT = 110  # ruff's line-length (pyproject.toml)
_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")
_NAME = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]*\b")


@dataclasses.dataclass(frozen=True)
class Rendered:
    """One class's source and the generated classes it refers to."""

    name: str
    lines: list[str]
    refers_to: frozenset[str]


def _uses(text: str, names: Sequence[str]) -> list[str]:
    return [name for name in names if re.search(rf"\b{name}\b", text)]


def _module_name(home: str, version: str) -> str:
    return f"evstation.protocol.{version}.{home}"


def _classes(model: Version) -> list[Rendered]:
    """Every class, enums first (by name), then models with their dependencies first."""
    enums = model.enums()
    models = list(model.models())
    known = {name for name, _ in enums} | {name for name, *_ in models}
    found = [Rendered(name, render_enum(name, values), frozenset()) for name, values in enums]
    for name, node, draft4, key in models:
        lines = render_model(model, name, node, draft4, key)
        tokens = set(_NAME.findall(_STRING.sub("", "\n".join(lines[1:]))))
        found.append(Rendered(name, lines, frozenset(tokens & known - {name})))
    return found


def _homes(model: Version, classes: Sequence[Rendered]) -> dict[str, str]:
    """Class name -> its module: its action's if one action uses it, else one of its own.

    A shared class's dependencies are used by at least the same actions, so they are shared too:
    action modules import from `_types` modules only, and those only from each other.
    """
    refers = {rendered.name: rendered.refers_to for rendered in classes}
    users: dict[str, set[str]] = {}

    def reach(name: str, action: str) -> None:
        if action in users.setdefault(name, set()):
            return
        users[name].add(action)
        for dependency in refers[name]:
            reach(dependency, action)

    for file in model.files:
        reach(file.class_name, file.action)
    homes = {}
    for rendered in classes:
        (only, *others) = sorted(users[rendered.name])
        homes[rendered.name] = f"_types.{snake(rendered.name)}" if others else f"_actions.{snake(only)}"
    return homes


def _module_text(docstring: str, version: str, members: Sequence[Rendered], homes: Mapping[str, str]) -> str:
    body = "\n\n\n".join("\n".join(rendered.lines) for rendered in members)
    header = [f'"""{docstring}"""', "", _GENERATED]
    if any(rendered.lines[0].endswith("(StrEnum):") for rendered in members):
        header.append("from enum import StrEnum")
    if "Annotated[" in body:
        header.append("from typing import Annotated")
    pydantic_names = _uses(body, _PYDANTIC_NAMES)
    if pydantic_names:
        header += ["", f"from pydantic import {', '.join(pydantic_names)}"]
    base_names = _uses(body, _BASE_NAMES)
    local = {rendered.name for rendered in members}
    imported = sorted(
        (_module_name(homes[name], version), name)
        for name in set().union(*(rendered.refers_to for rendered in members)) - local
    )
    if base_names or imported:
        header.append("")
    if base_names:
        header.append(f"from evstation.protocol._base import {', '.join(base_names)}")
    header += [_import_line(module, name) for module, name in imported]
    return "\n".join(header) + "\n\n\n" + body + "\n"


_PACKAGE_DOCS = {
    "_actions": "one module per action: its request and response and the classes only they use",
    "_types": "one module per class that several actions use",
}


def render_files(version: str) -> dict[str, str]:
    """Every generated file of a version, by path relative to its package folder."""
    files = load_schemas(version)
    model = Version(version, files)
    label = VERSIONS[version]
    classes = _classes(model)
    homes = _homes(model, classes)
    modules: dict[str, list[Rendered]] = {}
    for rendered in classes:
        modules.setdefault(homes[rendered.name], []).append(rendered)
    out: dict[str, str] = {}
    for package, what in _PACKAGE_DOCS.items():
        out[f"{package}/__init__.py"] = f'"""OCPP {label} message models, {what}. DO NOT EDIT."""\n'
    actions = sorted({file.action for file in files})
    action_of = {f"_actions.{snake(action)}": action for action in actions}
    for home, members in sorted(modules.items()):
        if home in action_of:
            docstring = (
                f"OCPP {label} {action_of[home]}: generated from the official JSON schemas. DO NOT EDIT."
            )
        else:
            docstring = f"OCPP {label} {members[0].name}, shared by several actions: generated. DO NOT EDIT."
        out[home.replace(".", "/") + ".py"] = _module_text(docstring, version, members, homes)
    out["messages.py"] = _facade(version, homes, actions)
    return out


_FACADE = """\
\"\"\"OCPP {label} message models, generated from the official JSON schemas. DO NOT EDIT.

Regenerate with `python -m evstation.protocol._codegen.generate`; never import the other version here.
Each class is defined in the module of the one action that uses it (`_actions/`) or, when several
actions share it, in a module of its own (`_types/`). A name here imports its module on first use, so
a station builds only the classes of the messages it exchanges.
\"\"\"

{generated}
from collections.abc import Mapping
from importlib import import_module
from typing import TYPE_CHECKING, Final

from evstation.protocol._base import ActionModels

if TYPE_CHECKING:
{imports}

_HOMES: Final[Mapping[str, str]] = {{
{homes}
}}

ACTIONS: Final = ActionModels(
    __name__.rpartition(".")[0],
    {{
{actions}
    }},
)


def __getattr__(name: str) -> object:
    # Runs once per name: the class is bound here, so later lookups are plain attribute reads.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {{__name__!r}} has no attribute {{name!r}}")
    value = getattr(import_module(f"{{ACTIONS.package}}.{{home}}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({{*globals(), *_HOMES}})
"""


def _import_line(module: str, names: str, indent: str = "") -> str:
    """An import statement, wrapped the way ruff's isort wraps one longer than the line limit."""
    line = f"{indent}from {module} import {names}"
    if len(line) <= _LINE_LIMIT:
        return line
    return f"{indent}from {module} import (\n{indent}    {names},\n{indent})"


def _facade(version: str, homes: Mapping[str, str], actions: Sequence[str]) -> str:
    # ruff's isort compares names case-insensitively.
    imports = sorted(
        ((_module_name(home, version), name) for name, home in homes.items()),
        key=lambda item: (item[0], item[1].lower()),
    )
    return _FACADE.format(
        label=VERSIONS[version],
        generated=_GENERATED,
        imports="\n".join(_import_line(module, f"{name} as {name}", "    ") for module, name in imports),
        homes="\n".join(f'    "{name}": "{home}",' for name, home in sorted(homes.items())),
        actions="\n".join(f'        "{action}": "_actions.{snake(action)}",' for action in actions),
    )


def render(version: str) -> str:
    """The version's `messages.py` (the other generated files: `render_files`)."""
    return render_files(version)["messages.py"]


def target(version: str) -> Path:
    return PROTOCOL_DIR / version / "messages.py"


def generated_folders(version: str) -> list[Path]:
    """The folders that hold generated files only: a file there the generator no longer makes is stale."""
    return [PROTOCOL_DIR / version / package for package in _PACKAGE_DOCS]


def stale_files(version: str) -> dict[Path, str | None]:
    """Committed files that differ from a fresh generation: path -> the text it should have (None:
    delete it)."""
    wanted = {PROTOCOL_DIR / version / name: text for name, text in render_files(version).items()}
    stale: dict[Path, str | None] = {}
    for path, text in wanted.items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale[path] = text
    for folder in generated_folders(version):
        for path in folder.glob("*.py") if folder.is_dir() else ():
            if path not in wanted:
                stale[path] = None
    return stale


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed file is out of date")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for version in VERSIONS:
        for path, text in sorted(stale_files(version).items()):
            if args.check:
                stale.append(str(path))
            elif text is None:
                path.unlink()
                print(f"removed {path}")
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path}")
    if stale:
        print("out of date (run python -m evstation.protocol._codegen.generate):", *stale, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

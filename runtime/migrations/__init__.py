"""The numbered schema migrations of the station database, discovered from this package's modules.

A released migration is never edited: a schema change is always a new `mNNNN_<name>.py` whose
`STATEMENTS` run, in order, inside one transaction. Nothing here opens a database.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

from evstation.records import record

_NAME = re.compile(r"^m(\d{4})_[a-z0-9_]+$")


@record
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]


def all_migrations() -> list[Migration]:
    """Every migration, ordered by version; versions must be 1..N with no gap or duplicate."""
    found: list[Migration] = []
    for info in pkgutil.iter_modules(__path__):
        match = _NAME.match(info.name)
        if match is None:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        statements = tuple(module.STATEMENTS)
        found.append(Migration(int(match.group(1)), info.name, statements))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must be 1..{len(found)} without gaps (got {versions})")
    return found

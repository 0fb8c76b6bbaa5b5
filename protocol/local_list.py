"""The local authorization list of both versions (2.0.1 D01/D02; 1.6 LocalAuthListManagement): pure.

SendLocalList Full / Differential with its version rules and size limits, and the version
GetLocalListVersion reports. The station keeps the list as given; lookups go through
protocol.authorization (the list takes precedence over the cache). Never does I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from evstation.protocol.authorization import IdToken, TokenInfo, token_key
from evstation.protocol.versions import OcppVersion
from evstation.records import record

__all__ = [
    "ListChange",
    "ListEntry",
    "ListLimits",
    "ListOutcome",
    "ListStatus",
    "LocalList",
    "UpdateType",
    "apply_update",
]


class UpdateType(enum.StrEnum):
    FULL = "Full"
    DIFFERENTIAL = "Differential"


class ListStatus(enum.StrEnum):
    """SendLocalList status; both versions spell these the same (1.6 adds NotSupported, unused here:
    the station supports the list)."""

    ACCEPTED = "Accepted"
    FAILED = "Failed"
    VERSION_MISMATCH = "VersionMismatch"


@record
class ListEntry:
    token: IdToken
    info: TokenInfo


@record
class ListLimits:
    """LocalAuthListCtrlr.Entries maxLimit (1.6 LocalAuthListMaxLength) and ItemsPerMessage
    (1.6 SendLocalListMaxLength)."""

    max_entries: int
    items_per_message: int


@record
class ListChange:
    """What to persist: `full` replaces every stored entry; else `written` / `removed` by key."""

    version: int
    full: bool
    written: tuple[tuple[str, ListEntry], ...] = ()
    removed: tuple[str, ...] = ()


@record
class ListOutcome:
    status: ListStatus
    reason: str
    change: ListChange | None = None  # None: the list is unchanged


@dataclass
class LocalList:
    """The installed list. `version` 0 means no list (or an empty one): GetLocalListVersion answers 0
    then (1.6 5.10; 2.0.1 D02), so an emptied list reports 0 whatever version emptied it."""

    version_: OcppVersion
    version: int = 0
    entries: dict[str, ListEntry] = field(default_factory=dict)

    def key(self, token: IdToken) -> str:
        return token_key(self.version_, token)

    def lookup(self, token: IdToken) -> TokenInfo | None:
        entry = self.entries.get(self.key(token))
        return None if entry is None else entry.info

    def __len__(self) -> int:
        return len(self.entries)

    def apply(self, change: ListChange) -> None:
        """Make the in-memory list what `change` describes (after it is durable)."""
        if change.full:
            self.entries.clear()
        for key, entry in change.written:
            self.entries[key] = entry
        for key in change.removed:
            self.entries.pop(key, None)
        self.version = change.version if self.entries else 0

    @classmethod
    def loaded(cls, version_: OcppVersion, version: int, entries: Iterable[ListEntry]) -> LocalList:
        stored = cls(version_)
        stored.entries = {stored.key(entry.token): entry for entry in entries}
        stored.version = version if stored.entries else 0
        return stored


def apply_update(
    current: LocalList,
    update_type: UpdateType,
    version: int,
    items: Sequence[tuple[IdToken, TokenInfo | None]],
    limits: ListLimits,
) -> ListOutcome:
    """SendLocalList (1.6 5.15; 2.0.1 D01): the answer, and the change to make when Accepted.

    - Full replaces the list; every item must carry its info. An empty Full list clears it.
    - Differential adds or updates the items with info and removes those without; its version must be
      above the installed one, else VersionMismatch.
    - More items than ItemsPerMessage, the same token twice, a non-empty list with version <= 0 or a
      result above Entries maxLimit: Failed, and the list stays as it was.
    """
    if len(items) > limits.items_per_message:
        return ListOutcome(
            ListStatus.FAILED, f"{len(items)} entries in one message; at most {limits.items_per_message}"
        )
    keys = [current.key(token) for token, _ in items]
    if len(set(keys)) != len(keys):
        return ListOutcome(ListStatus.FAILED, "the same idToken appears twice")
    if update_type is UpdateType.DIFFERENTIAL and version <= current.version:
        return ListOutcome(
            ListStatus.VERSION_MISMATCH,
            f"differential update version {version} is not above the installed {current.version}",
        )
    written = tuple(
        (key, ListEntry(token, info)) for key, (token, info) in zip(keys, items, strict=True) if info
    )
    if update_type is UpdateType.FULL:
        missing = [token.value for token, info in items if info is None]
        if missing:
            return ListOutcome(ListStatus.FAILED, f"full update entry without its info: {missing[0]!r}")
        size = len(written)
        change = ListChange(version, True, written)
    else:
        removed = tuple(key for key, (_, info) in zip(keys, items, strict=True) if info is None)
        after = (set(current.entries) | {key for key, _ in written}) - set(removed)
        size = len(after)
        change = ListChange(version, False, written, removed)
    if size > limits.max_entries:
        return ListOutcome(
            ListStatus.FAILED, f"the list would hold {size} entries; at most {limits.max_entries}"
        )
    if size > 0 and version <= 0:
        return ListOutcome(ListStatus.FAILED, f"version {version}: a list needs a version above 0")
    return ListOutcome(ListStatus.ACCEPTED, "installed", change)

"""Authorization rules of both versions (2.0.1 C; 1.6 Core Authorize, cache, offline): pure, `now` passed in.

Token identity (2.0.1 IdTokenType.idToken and 1.6 idTag compare case-insensitively; 2.0.1 also
compares the type), the authorization cache policy (lifetime since last use, expiry date, a size limit
with least-recently-used eviction), the decision for a presented token (local list before cache,
LocalPreAuthorize, LocalAuthorizeOffline, unknown ids offline), group tokens and the master pass.
Never does I/O and never reads a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Final

from evstation.protocol.versions import OcppVersion
from evstation.records import record

__all__ = [
    "MAX_TOKEN_LENGTH",
    "NO_AUTHORIZATION",
    "AskCsms",
    "AuthCache",
    "AuthSettings",
    "AuthStatus",
    "CacheChange",
    "CacheEntry",
    "Decision",
    "IdToken",
    "Source",
    "TokenInfo",
    "TokenMatcher",
    "cache_from",
    "decide_answer",
    "decide_local",
    "is_master_pass",
    "may_stop",
    "same_group",
    "token_key",
    "token_matcher",
    "token_too_long",
]

# 1.6 idTag is CiString20Type; 2.0.1 IdTokenType.idToken is identifierString maxLength 36.
MAX_TOKEN_LENGTH: Final[Mapping[OcppVersion, int]] = {OcppVersion.V16: 20, OcppVersion.V201: 36}

# 2.0.1 token types the station never asks the CSMS about: NoAuthorization needs none; Central tokens
# are issued by the CSMS itself (C05 remote start), so asking it back is pointless (libocpp does the same).
_NO_AUTHORIZE_TYPES: Final = frozenset({"NoAuthorization", "Central"})
# 2.0.1 IdTokenEnumType for a session nobody identified (C02 start button, AuthCtrlr.Enabled false):
# its idToken is the empty string. The station also marks its 1.6 free-vend sessions with it.
NO_AUTHORIZATION: Final = "NoAuthorization"
# Neither are they cached: a Central token is valid for the one remote start it came with.
_NEVER_CACHED_TYPES: Final = _NO_AUTHORIZE_TYPES


class AuthStatus(enum.StrEnum):
    """2.0.1 AuthorizationStatusEnumType; the 1.6 IdTagInfo statuses are a subset with the same texts."""

    ACCEPTED = "Accepted"
    BLOCKED = "Blocked"
    CONCURRENT_TX = "ConcurrentTx"
    EXPIRED = "Expired"
    INVALID = "Invalid"
    NO_CREDIT = "NoCredit"
    NOT_ALLOWED_TYPE_EVSE = "NotAllowedTypeEVSE"
    NOT_AT_THIS_LOCATION = "NotAtThisLocation"
    NOT_AT_THIS_TIME = "NotAtThisTime"
    UNKNOWN = "Unknown"


@record
class IdToken:
    """A token as presented: its text and (2.0.1) IdTokenEnumType text; 1.6 tokens have type ""."""

    value: str
    type: str = ""


def token_key(version: OcppVersion, token: IdToken) -> str:
    """The identity of a token: equal keys are the same token (cache, local list, group comparison).

    1.6 idTag is a CiString; 2.0.1 idToken "is case insensitive" and a token is idToken + type.
    """
    folded = token.value.casefold()
    return folded if version is OcppVersion.V16 else f"{token.type}\x00{folded}"


TokenMatcher = Callable[[str, str, str, str], bool]  # (value, type, other value, other type)


def token_matcher(version: OcppVersion) -> TokenMatcher:
    """Whether two presented tokens are the same token under `version`'s rules (for runtime/evse.py)."""

    def same(value: str, type_: str, other: str, other_type: str) -> bool:
        return token_key(version, IdToken(value, type_)) == token_key(version, IdToken(other, other_type))

    return same


def token_too_long(version: OcppVersion, token: IdToken) -> bool:
    """Longer than the version's field allows: refused, never cut (a cut token is another card)."""
    return len(token.value) > MAX_TOKEN_LENGTH[version]


@record
class TokenInfo:
    """What the CSMS said about a token (2.0.1 IdTokenInfo; 1.6 IdTagInfo, parentIdTag as `group`).

    `expiry` is 2.0.1 cacheExpiryDateTime / 1.6 expiryDate; `evse_ids` restricts 2.0.1 tokens to EVSEs.
    """

    status: AuthStatus
    expiry: datetime | None = None
    group: IdToken | None = None
    evse_ids: tuple[int, ...] = ()

    def valid_at(self, now: datetime) -> bool:
        return self.effective_status(now) is AuthStatus.ACCEPTED

    def effective_status(self, now: datetime) -> AuthStatus:
        """Accepted with its expiry date passed reads as Expired (1.6 3.5.2; 2.0.1 C10.FR.08)."""
        if self.status is AuthStatus.ACCEPTED and self.expiry is not None and now >= self.expiry:
            return AuthStatus.EXPIRED
        return self.status

    def allows_evse(self, evse_id: int | None) -> bool:
        return not self.evse_ids or evse_id is None or evse_id in self.evse_ids


def same_group(version: OcppVersion, a: IdToken | None, b: IdToken | None) -> bool:
    return a is not None and b is not None and token_key(version, a) == token_key(version, b)


def is_master_pass(version: OcppVersion, info: TokenInfo | None, master_pass_group: str | None) -> bool:
    """2.0.1 C16: the token's groupIdToken is AuthCtrlr.MasterPassGroupId (compared like an idToken)."""
    if not master_pass_group or info is None or info.group is None:
        return False
    return info.group.value.casefold() == master_pass_group.casefold() and version is OcppVersion.V201


# --------------------------------------------------------------------------------------------------
# The authorization cache


@record
class CacheEntry:
    token: IdToken
    info: TokenInfo
    last_used: datetime


@record
class CacheChange:
    """What a cache operation changed, for the store to persist: entries written and keys removed."""

    written: tuple[tuple[str, CacheEntry], ...] = ()
    removed: tuple[str, ...] = ()

    def __add__(self, other: CacheChange) -> CacheChange:
        removed = tuple(k for k in self.removed if k not in {key for key, _ in other.written})
        written = tuple((k, e) for k, e in self.written if k not in other.removed)
        return CacheChange(written + other.written, removed + other.removed)

    def __bool__(self) -> bool:
        return bool(self.written or self.removed)


@dataclass
class AuthCache:
    """The authorization cache of one station (2.0.1 C10-C12; 1.6 3.5.2), in memory.

    An entry lives `lifetime` since its last use (AuthCacheCtrlr.LifeTime; then it is removed) and reads
    as Expired once its expiry date passed (kept, so an expired card is not mistaken for an unknown
    one offline). At most `max_entries`: when full, expired entries go first, then entries that are not
    Accepted, then the least recently used (C10.FR.07 / C10.FR.12 as we read them).
    Every mutating call returns the CacheChange to persist.
    """

    version: OcppVersion
    max_entries: int
    entries: dict[str, CacheEntry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_entries < 1:
            raise ValueError("the cache holds at least one entry")

    def key(self, token: IdToken) -> str:
        return token_key(self.version, token)

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(
        self, token: IdToken, now: datetime, lifetime: timedelta
    ) -> tuple[TokenInfo | None, CacheChange]:
        """The cached info (None if absent or past its lifetime), marking the entry used now."""
        change = self.remove_stale(now, lifetime)
        key = self.key(token)
        entry = self.entries.get(key)
        if entry is None:
            return None, change
        used = replace(entry, last_used=now)
        self.entries[key] = used
        return entry.info, change + CacheChange(written=((key, used),))

    def peek(self, token: IdToken, now: datetime, lifetime: timedelta) -> TokenInfo | None:
        """The cached info without marking it used (group lookups for a session's own token)."""
        entry = self.entries.get(self.key(token))
        if entry is None or now - entry.last_used >= lifetime:
            return None
        return entry.info

    def store(self, token: IdToken, info: TokenInfo, now: datetime, lifetime: timedelta) -> CacheChange:
        """Remember what the CSMS said (C10.FR.01/04/05); evicts to stay within `max_entries`."""
        if self.version is OcppVersion.V201 and token.type in _NEVER_CACHED_TYPES:
            return CacheChange()
        change = self.remove_stale(now, lifetime)
        key = self.key(token)
        entry = CacheEntry(token, info, now)
        self.entries[key] = entry
        change = change + CacheChange(written=((key, entry),))
        return change + self._evict(now, keep=key)

    def remove_stale(self, now: datetime, lifetime: timedelta) -> CacheChange:
        """Drop the entries not used within `lifetime` (AuthCacheCtrlr.LifeTime)."""
        stale = [key for key, entry in self.entries.items() if now - entry.last_used >= lifetime]
        for key in stale:
            del self.entries[key]
        return CacheChange(removed=tuple(stale))

    def clear(self) -> CacheChange:
        removed = tuple(self.entries)
        self.entries.clear()
        return CacheChange(removed=removed)

    def _evict(self, now: datetime, keep: str) -> CacheChange:
        over = len(self.entries) - self.max_entries
        if over <= 0:
            return CacheChange()

        def rank(item: tuple[str, CacheEntry]) -> tuple[int, datetime]:
            info = item[1].info
            if info.effective_status(now) is AuthStatus.EXPIRED:
                klass = 0
            elif info.status is not AuthStatus.ACCEPTED:
                klass = 1
            else:
                klass = 2
            return klass, item[1].last_used

        candidates = sorted((item for item in self.entries.items() if item[0] != keep), key=rank)
        removed = tuple(key for key, _ in candidates[:over])
        for key in removed:
            del self.entries[key]
        return CacheChange(removed=removed)


# --------------------------------------------------------------------------------------------------
# Decisions


@record
class AuthSettings:
    """The device-model settings a decision reads (2.0.1 name; 1.6 key in the comment)."""

    local_list_enabled: bool = True  # LocalAuthListCtrlr.Enabled (LocalAuthListEnabled)
    cache_enabled: bool = True  # AuthCacheCtrlr.Enabled (AuthorizationCacheEnabled)
    local_authorize_offline: bool = False  # AuthCtrlr.LocalAuthorizeOffline (same)
    local_pre_authorize: bool = False  # AuthCtrlr.LocalPreAuthorize (same)
    # AuthCtrlr.OfflineTxForUnknownIdEnabled (AllowOfflineTxForUnknownId)
    offline_unknown_allowed: bool = False
    disable_remote_authorization: bool = False  # AuthCtrlr.DisableRemoteAuthorization (2.0.1 only)
    list_disable_post_authorize: bool = False  # LocalAuthListCtrlr.DisablePostAuthorize (2.0.1 only)
    cache_disable_post_authorize: bool = False  # AuthCacheCtrlr.DisablePostAuthorize (2.0.1 only)
    master_pass_group: str | None = None  # AuthCtrlr.MasterPassGroupId (2.0.1 only)
    # AuthCtrlr.Enabled (1.6: station.toml [authorization] enabled); false: free vend
    authorization_enabled: bool = True


class Source(enum.Enum):
    RULE = "rule"  # decided by the token alone (too long, NoAuthorization / Central type)
    LOCAL_LIST = "local list"
    CACHE = "cache"
    CSMS = "CSMS"
    OFFLINE_UNKNOWN = "unknown id offline"


@record
class Decision:
    """Whether the token may start charging, where that came from, and why (for the log)."""

    accepted: bool
    source: Source
    reason: str
    info: TokenInfo | None = None


@record
class AskCsms:
    """Send Authorize; if no answer comes (offline, timeout, CALLERROR), decide again with online=False."""

    reason: str


def decide_local(
    version: OcppVersion,
    token: IdToken,
    *,
    online: bool,
    settings: AuthSettings,
    list_info: TokenInfo | None,
    cache_info: TokenInfo | None,
    now: datetime,
    evse_id: int | None = None,
) -> Decision | AskCsms:
    """The decision for a presented token before (or instead of) asking the CSMS.

    `list_info` / `cache_info` are the token's local-list entry and cache entry, if any. The local list
    takes precedence over the cache (1.6 3.5.3; 2.0.1 C13/C14). Online, a valid local entry starts
    charging without Authorize only with LocalPreAuthorize (C12, C14; 1.6 3.5.1); offline, a valid
    local entry starts charging only with LocalAuthorizeOffline (C13; 1.6 3.5.1); a token known
    locally but not valid is refused offline; an unknown token offline is accepted only with
    OfflineTxForUnknownIdEnabled / AllowOfflineTxForUnknownId (C15; 1.6 9.1.1).
    """
    if token_too_long(version, token):
        limit = MAX_TOKEN_LENGTH[version]
        return Decision(
            False, Source.RULE, f"longer than {limit} characters ({len(token.value)}): refused, not cut"
        )
    if version is OcppVersion.V201 and token.type in _NO_AUTHORIZE_TYPES:
        return Decision(True, Source.RULE, f"type {token.type} is not authorized with the CSMS")
    if not settings.authorization_enabled:
        # AuthCtrlr.Enabled false: no authorization "when reading an idToken"; the token only goes
        # into the transaction's messages.
        return Decision(True, Source.RULE, "AuthCtrlr.Enabled is false: taken without authorization")
    info, source, post_authorize_disabled = None, None, False
    if settings.local_list_enabled and list_info is not None:
        info, source = list_info, Source.LOCAL_LIST
        post_authorize_disabled = settings.list_disable_post_authorize
    elif settings.cache_enabled and cache_info is not None:
        info, source = cache_info, Source.CACHE
        post_authorize_disabled = settings.cache_disable_post_authorize
    if version is OcppVersion.V16:
        post_authorize_disabled = False
    if info is not None and source is not None:
        status = info.effective_status(now)
        valid = info.valid_at(now) and info.allows_evse(evse_id)
        if valid and is_master_pass(version, info, settings.master_pass_group):
            return Decision(False, source, "master pass: may stop transactions, not start one", info)
        if online and not settings.disable_remote_authorization:
            if valid and settings.local_pre_authorize:
                return Decision(True, source, "LocalPreAuthorize: valid entry", info)
            if not valid and post_authorize_disabled:
                return Decision(False, source, f"{status.value} entry, DisablePostAuthorize", info)
            return AskCsms(f"{source.value} entry {status.value}" if not valid else f"{source.value} entry")
        if valid and (settings.local_authorize_offline or settings.disable_remote_authorization):
            return Decision(True, source, "valid entry, authorized locally", info)
        if valid:
            return Decision(False, source, "offline and LocalAuthorizeOffline is false", info)
        reason = status.value if info.allows_evse(evse_id) else f"not for EVSE {evse_id}"
        return Decision(False, source, f"known locally: {reason}", info)
    if online and not settings.disable_remote_authorization:
        return AskCsms("not known locally")
    if settings.offline_unknown_allowed and not settings.disable_remote_authorization:
        return Decision(True, Source.OFFLINE_UNKNOWN, "offline, unknown ids allowed")
    why = "DisableRemoteAuthorization" if settings.disable_remote_authorization else "offline"
    return Decision(False, Source.OFFLINE_UNKNOWN, f"unknown id, {why}")


def decide_answer(
    version: OcppVersion,
    info: TokenInfo,
    *,
    settings: AuthSettings,
    evse_id: int | None = None,
) -> Decision:
    """The decision from the CSMS's answer to Authorize (C01; 1.6 4.1). Only Accepted starts charging,
    only on the EVSEs the answer allows (2.0.1 evseId), and never for a master pass (C16)."""
    if info.status is not AuthStatus.ACCEPTED:
        return Decision(False, Source.CSMS, info.status.value, info)
    if not info.allows_evse(evse_id):
        return Decision(False, Source.CSMS, f"accepted for EVSEs {list(info.evse_ids)} only", info)
    if is_master_pass(version, info, settings.master_pass_group):
        return Decision(False, Source.CSMS, "master pass: may stop transactions, not start one", info)
    return Decision(True, Source.CSMS, "Accepted", info)


def may_stop(
    version: OcppVersion,
    *,
    session: IdToken,
    presented: IdToken,
    session_group: IdToken | None,
    presented_info: TokenInfo | None,
    master_pass_group: str | None,
    now: datetime,
) -> bool:
    """Whether `presented` may end the transaction `session` started: the same token (any letter case),
    a valid token of the same group (2.0.1 C09 groupIdToken; 1.6 3.5.1 parentIdTag), or a master pass
    (2.0.1 C16)."""
    if token_key(version, session) == token_key(version, presented):
        return True
    if presented_info is None or presented_info.effective_status(now) is not AuthStatus.ACCEPTED:
        return False
    if is_master_pass(version, presented_info, master_pass_group):
        return True
    return same_group(version, session_group, presented_info.group)


def cache_from(version: OcppVersion, entries: Iterable[CacheEntry], max_entries: int) -> AuthCache:
    """A cache holding stored entries (as loaded from the database)."""
    cache = AuthCache(version, max_entries)
    for entry in entries:
        cache.entries[cache.key(entry.token)] = entry
    return cache

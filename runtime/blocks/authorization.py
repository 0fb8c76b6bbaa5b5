"""Authorization (2.0.1 C, D; 1.6 Core Authorize / ClearCache and LocalAuthListManagement).

Decides whether a presented token may start charging or may stop another token's session: the local
list, then the authorization cache, then the CSMS (Authorize), with the offline rules of the device
model when there is no connection or the call fails. Keeps the cache and the list in SQLite (migration
6) and in memory. The rules are in protocol.authorization / protocol.local_list; this module does the
I/O. Never imports the transactions block: it calls `decide`, `may_stop` and `learn_from_answer`.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from evstation.protocol.authorization import (
    NO_AUTHORIZATION,
    AskCsms,
    AuthCache,
    AuthSettings,
    AuthStatus,
    CacheChange,
    CacheEntry,
    Decision,
    IdToken,
    Source,
    TokenInfo,
    cache_from,
    decide_answer,
    decide_local,
    token_key,
    token_too_long,
)
from evstation.protocol.authorization import may_stop as may_stop_rule
from evstation.protocol.device_model import VariableKey
from evstation.protocol.device_model.standard import (
    AUTH_CACHE_ENTRIES,
    LOCAL_LIST_ENTRIES,
    LOCAL_LIST_ITEMS_PER_MESSAGE,
)
from evstation.protocol.local_list import (
    ListChange,
    ListEntry,
    ListLimits,
    ListOutcome,
    ListStatus,
    LocalList,
    UpdateType,
    apply_update,
)
from evstation.protocol.messages import OcppModel, VersionModels, enum_text
from evstation.protocol.versions import OcppVersion
from evstation.records import record
from evstation.runtime.blocks.registry import handles
from evstation.runtime.calls import CallFailed
from evstation.runtime.clock import WallClock
from evstation.runtime.config import DEFAULT_FREE_VEND_ID_TAG
from evstation.runtime.device_model import (
    AUTH_CACHE_DISABLE_POST_AUTHORIZE,
    AUTH_CACHE_ENABLED,
    AUTH_CACHE_LIFETIME,
    AUTH_ENABLED,
    DISABLE_REMOTE_AUTHORIZATION,
    LOCAL_AUTHORIZE_OFFLINE,
    LOCAL_LIST_DISABLE_POST_AUTHORIZE,
    LOCAL_LIST_ENABLED,
    LOCAL_LIST_ENTRIES_KEY,
    LOCAL_PRE_AUTHORIZE,
    MASTER_PASS_GROUP_ID,
    OFFLINE_TX_FOR_UNKNOWN_ID,
    DeviceModel,
)
from evstation.runtime.events import Broadcaster
from evstation.runtime.link import LinkDown
from evstation.runtime.storage import (
    Storage,
    StorageWriteError,
    from_db_time,
    read_setting,
    to_db_time,
    write_setting,
)
from evstation.runtime.uplink import Uplink

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["Authorization", "ListConflict"]

log = logging.getLogger(__name__)

V16, V201 = OcppVersion.V16, OcppVersion.V201


LOCAL_LIST_VERSION_SETTING: Final = "auth.local_list_version"
# Expired cache entries are also dropped at every lookup; this sweep keeps an idle station's cache clean.
CACHE_SWEEP_INTERVAL_S: Final = 3600.0
# Groups of tokens seen recently (session token -> its group), for a group stop of a token that is in
# neither the list nor the cache (cache disabled). Bounded: the oldest are forgotten.
_RECENT_GROUPS: Final = 256

_INFO_COLUMNS: Final = "id_token, token_type, status, expiry, group_token, group_type, evse_ids"


# --------------------------------------------------------------------------------------------------
# Rows (run in the database thread)


def _info_row(token: IdToken, info: TokenInfo) -> tuple[object, ...]:
    return (
        token.value,
        token.type,
        info.status.value,
        None if info.expiry is None else to_db_time(info.expiry),
        None if info.group is None else info.group.value,
        None if info.group is None else info.group.type,
        ",".join(str(evse_id) for evse_id in info.evse_ids),
    )


def _token_and_info(row: sqlite3.Row) -> tuple[IdToken, TokenInfo]:
    group = None if row["group_token"] is None else IdToken(row["group_token"], row["group_type"] or "")
    evse_ids = tuple(int(text) for text in row["evse_ids"].split(",") if text)
    try:
        status = AuthStatus(row["status"])
    except ValueError:
        status = AuthStatus.INVALID  # a status we do not know cannot authorize anything
    info = TokenInfo(status, from_db_time(row["expiry"]), group, evse_ids)
    return IdToken(row["id_token"], row["token_type"]), info


def _write_cache(conn: sqlite3.Connection, change: CacheChange) -> None:
    conn.executemany("DELETE FROM auth_cache WHERE token_key = ?", [(key,) for key in change.removed])
    conn.executemany(
        f"INSERT OR REPLACE INTO auth_cache (token_key, {_INFO_COLUMNS}, last_used) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(key, *_info_row(e.token, e.info), to_db_time(e.last_used)) for key, e in change.written],
    )


def _write_list(conn: sqlite3.Connection, change: ListChange) -> None:
    if change.full:
        conn.execute("DELETE FROM local_auth_list")
    conn.executemany("DELETE FROM local_auth_list WHERE token_key = ?", [(key,) for key in change.removed])
    conn.executemany(
        f"INSERT OR REPLACE INTO local_auth_list (token_key, {_INFO_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(key, *_info_row(e.token, e.info)) for key, e in change.written],
    )
    empty = conn.execute("SELECT 1 FROM local_auth_list LIMIT 1").fetchone() is None
    write_setting(conn, LOCAL_LIST_VERSION_SETTING, "0" if empty else str(change.version))


def _clear_cache(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM auth_cache")


def _read_all(conn: sqlite3.Connection) -> tuple[list[CacheEntry], list[ListEntry], int]:
    cache = []
    for row in conn.execute(f"SELECT {_INFO_COLUMNS}, last_used FROM auth_cache"):
        token, info = _token_and_info(row)
        last_used = from_db_time(row["last_used"])
        assert last_used is not None
        cache.append(CacheEntry(token, info, last_used))
    entries = [
        ListEntry(*_token_and_info(row))
        for row in conn.execute(f"SELECT {_INFO_COLUMNS} FROM local_auth_list")
    ]
    version = int(read_setting(conn, LOCAL_LIST_VERSION_SETTING) or "0")
    return cache, entries, version


# --------------------------------------------------------------------------------------------------
# Wire models -> TokenInfo


def info_from_v16(info: v16.IdTagInfo) -> TokenInfo:
    """1.6 IdTagInfo: parentIdTag is the token's group (1.6 3.5.1)."""
    group = None if info.parent_id_tag is None else IdToken(info.parent_id_tag)
    return TokenInfo(AuthStatus(enum_text(info.status)), info.expiry_date, group)


def info_from_v201(info: v201.IdTokenInfoType) -> TokenInfo:
    group = info.group_id_token
    return TokenInfo(
        AuthStatus(enum_text(info.status)),
        info.cache_expiry_date_time,
        None if group is None else IdToken(group.id_token, enum_text(group.type)),
        tuple(info.evse_id or ()),
    )


@record
class ListConflict:
    """The CSMS answered a token on the local list with another status than the list's (published on
    `Authorization.conflicts`; the session reports it, 1.6 3.5.2 LocalListConflict)."""

    id_token: str
    listed: AuthStatus
    answered: AuthStatus


class Authorization:
    """The authorization block: start `run` with `nursery.start` (it loads the cache and the list); the
    entry points also load them on first use, so a block whose `run` was not started still works."""

    def __init__(
        self,
        *,
        version: OcppVersion,
        uplink: Uplink,
        storage: Storage,
        device_model: DeviceModel,
        clock: WallClock,
        free_vend_id_tag: str = DEFAULT_FREE_VEND_ID_TAG,
    ) -> None:
        self.version = version
        # 1.6: the idTag of a session started without a token (AuthCtrlr.Enabled false).
        self.free_vend_id_tag = free_vend_id_tag
        self._uplink = uplink
        self._storage = storage
        self._dm = device_model
        self._clock = clock
        self._cache = AuthCache(version, AUTH_CACHE_ENTRIES)
        self._list = LocalList(version)
        self._groups: OrderedDict[str, IdToken] = OrderedDict()
        self._loaded = False
        # One change of the cache or list at a time: memory and disk change in the same order.
        self._lock = trio.Lock()
        # ClearCaches begun so far: an answer's token info marked before one (`answer_mark`) is not
        # stored after it.
        self._clears = 0
        # Local list / CSMS conflicts, for the session's status sender (it owns StatusNotification).
        self.conflicts: Broadcaster[ListConflict] = Broadcaster()
        if LOCAL_LIST_ENTRIES_KEY in device_model.definitions:
            device_model.provide(LOCAL_LIST_ENTRIES_KEY, lambda: str(len(self._list)))

    # --- lifetime ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Load the cache and the list, then drop expired cache entries every CACHE_SWEEP_INTERVAL_S."""
        await self._ensure_loaded()
        task_status.started()
        while True:
            await trio.sleep(CACHE_SWEEP_INTERVAL_S)
            async with self._lock:
                change = self._cache.remove_stale(self._clock.now(), self._lifetime())
                await self._persist_cache(change)

    async def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        async with self._lock:
            if self._loaded:
                return
            cache, entries, version = await self._storage.read(_read_all)
            self._cache = cache_from(self.version, cache, self._cache.max_entries)
            self._list = LocalList.loaded(self.version, version, entries)
            self._loaded = True

    # --- settings ------------------------------------------------------------------------------

    def settings(self) -> AuthSettings:
        dm = self._dm
        return AuthSettings(
            local_list_enabled=_flag(dm, LOCAL_LIST_ENABLED, False),
            cache_enabled=_flag(dm, AUTH_CACHE_ENABLED, False),
            local_authorize_offline=_flag(dm, LOCAL_AUTHORIZE_OFFLINE, False),
            local_pre_authorize=_flag(dm, LOCAL_PRE_AUTHORIZE, False),
            offline_unknown_allowed=_flag(dm, OFFLINE_TX_FOR_UNKNOWN_ID, False),
            disable_remote_authorization=_flag(dm, DISABLE_REMOTE_AUTHORIZATION, False),
            list_disable_post_authorize=_flag(dm, LOCAL_LIST_DISABLE_POST_AUTHORIZE, False),
            cache_disable_post_authorize=_flag(dm, AUTH_CACHE_DISABLE_POST_AUTHORIZE, False),
            master_pass_group=dm.get(MASTER_PASS_GROUP_ID) or None,
            authorization_enabled=self.required(),
        )

    def required(self) -> bool:
        """AuthCtrlr.Enabled: false is free vend (a session needs no token; read at decision time)."""
        return _flag(self._dm, AUTH_ENABLED, True)

    def untokened(self) -> tuple[str, str]:
        """The token of a session started without one (AuthCtrlr.Enabled false). 2.0.1: idToken "" of
        type NoAuthorization (IdTokenEnumType: the idToken SHALL be left empty). 1.6 has no such type
        and StartTransaction requires an idTag: the configured free-vend idTag, marked with the same
        type inside the station (1.6 messages carry no type)."""
        if self.version is V16:
            return self.free_vend_id_tag, NO_AUTHORIZATION
        return "", NO_AUTHORIZATION

    def _lifetime(self) -> timedelta:
        return timedelta(seconds=self._dm.get_int(AUTH_CACHE_LIFETIME))

    def _limits(self) -> ListLimits:
        definition = self._dm.definitions.get(LOCAL_LIST_ENTRIES_KEY)
        limit = None if definition is None else definition.max_limit
        max_entries = LOCAL_LIST_ENTRIES if limit is None else int(limit)
        return ListLimits(max_entries, LOCAL_LIST_ITEMS_PER_MESSAGE)

    def _token(self, value: str, token_type: str) -> IdToken:
        # 1.6 tokens have no type: whatever the reader says, "abc" is the same idTag.
        return IdToken(value, "" if self.version is V16 else token_type)

    # --- decisions -----------------------------------------------------------------------------

    async def decide(self, id_token: str, token_type: str, evse_id: int | None = None) -> Decision:
        """The decision for a presented token, with its source and reason (logged)."""
        await self._ensure_loaded()
        token = self._token(id_token, token_type)
        settings = self.settings()
        online = self._uplink.calls is not None
        list_info, cache_info = await self._local_infos(token, settings)
        now = self._clock.now()
        step = decide_local(
            self.version,
            token,
            online=online,
            settings=settings,
            list_info=list_info,
            cache_info=cache_info,
            now=now,
            evse_id=evse_id,
        )
        if isinstance(step, AskCsms):
            info = await self._ask_csms(token)
            if info is None:
                step = decide_local(
                    self.version,
                    token,
                    online=False,
                    settings=settings,
                    list_info=list_info,
                    cache_info=cache_info,
                    now=now,
                    evse_id=evse_id,
                )
                assert not isinstance(step, AskCsms)
            else:
                step = decide_answer(self.version, info, settings=settings, evse_id=evse_id)
        decision = step
        if decision.info is not None and decision.info.group is not None:
            self._remember_group(token, decision.info.group)
        if decision.source is Source.RULE and not decision.accepted:
            log.warning("token %r refused: %s", id_token, decision.reason)
        else:
            log.info(
                "token %r %s (%s: %s)",
                id_token,
                "accepted" if decision.accepted else "refused",
                decision.source.value,
                decision.reason,
            )
        return decision

    async def may_stop(
        self, session: tuple[str, str], presented: tuple[str, str], evse_id: int | None = None
    ) -> bool:
        """Whether `presented` may end the session `session` started: the same token in any letter case,
        a token of the same group (2.0.1 groupIdToken, 1.6 parentIdTag) or a master pass (2.0.1 C16).
        A token unknown locally is looked up with Authorize when online."""
        await self._ensure_loaded()
        if session[1] == NO_AUTHORIZATION:
            # A session nobody identified (free vend, start button) belongs to nobody: whoever
            # presents a token may end it, as with a stop button.
            log.info("token %r stops a session started without a token", presented[0])
            return True
        session_token, other = self._token(*session), self._token(*presented)
        now = self._clock.now()
        settings = self.settings()
        same = token_key(self.version, session_token) == token_key(self.version, other)
        if not same and token_too_long(self.version, other):
            log.warning("token %r refused: longer than the version allows, not cut", presented[0])
            return False
        list_info, cache_info = await self._local_infos(other, settings)
        info = list_info if list_info is not None and settings.local_list_enabled else None
        if info is None and settings.cache_enabled:
            info = cache_info
        # AuthCtrlr.Enabled false: no authorization when reading a token, so no Authorize either.
        remote = not settings.disable_remote_authorization and settings.authorization_enabled
        if info is None and not same and remote:
            info = await self._ask_csms(other)
        allowed = may_stop_rule(
            self.version,
            session=session_token,
            presented=other,
            session_group=self._group_of(session_token, settings),
            presented_info=info,
            master_pass_group=settings.master_pass_group,
            now=now,
        )
        log.info(
            "token %r %s stop the session of %r", presented[0], "may" if allowed else "may not", session[0]
        )
        return allowed

    async def _local_infos(
        self, token: IdToken, settings: AuthSettings
    ) -> tuple[TokenInfo | None, TokenInfo | None]:
        list_info = self._list.lookup(token)
        cache_info = None
        if settings.cache_enabled and (list_info is None or not settings.local_list_enabled):
            async with self._lock:
                cache_info, change = self._cache.lookup(token, self._clock.now(), self._lifetime())
                await self._persist_cache(change)
        return list_info, cache_info

    def _group_of(self, token: IdToken, settings: AuthSettings) -> IdToken | None:
        key = token_key(self.version, token)
        info = self._list.lookup(token) if settings.local_list_enabled else None
        if info is None and settings.cache_enabled:
            info = self._cache.peek(token, self._clock.now(), self._lifetime())
        if info is not None and info.group is not None:
            return info.group
        return self._groups.get(key)

    def _remember_group(self, token: IdToken, group: IdToken) -> None:
        key = token_key(self.version, token)
        self._groups[key] = group
        self._groups.move_to_end(key)
        while len(self._groups) > _RECENT_GROUPS:
            self._groups.popitem(last=False)

    async def _ask_csms(self, token: IdToken) -> TokenInfo | None:
        """Authorize; the CSMS's info (also stored in the cache), or None when there is no answer."""
        calls = self._uplink.calls
        if calls is None:
            return None
        marks: list[int] = []

        def mark_answer() -> None:
            marks.append(self.answer_mark())

        try:
            if self.version is V16:
                response = await calls.call("Authorize", {"idTag": token.value}, on_answer=mark_answer)
                assert isinstance(response, v16.AuthorizeResponse)
                info = info_from_v16(response.id_tag_info)
            else:
                answer = await calls.call(
                    "Authorize",
                    {"idToken": {"idToken": token.value, "type": token.type}},
                    on_answer=mark_answer,
                )
                assert isinstance(answer, v201.AuthorizeResponse)
                info = info_from_v201(answer.id_token_info)
        except (CallFailed, LinkDown) as exc:
            # libocpp #895: a call that fails is the same as being offline, not a refusal.
            log.warning("Authorize %r got no answer (%s): deciding offline", token.value, exc)
            return None
        await self.learn(token.value, token.type, info, mark=marks[0])
        return info

    # --- the cache -----------------------------------------------------------------------------

    def answer_mark(self) -> int:
        """Where an answer of the CSMS falls among its ClearCache calls, taken as the answer arrives
        (`CallManager.call(on_answer=...)`), for `learn`."""
        return self._clears

    async def learn(
        self, id_token: str, token_type: str, info: TokenInfo, *, mark: int | None = None
    ) -> None:
        """The hook for every IdTokenInfo / IdTagInfo the CSMS sends (Authorize, TransactionEvent,
        Start/StopTransaction answers): stored in the cache when it is enabled (2.0.1 C10.FR.01/04/05;
        1.6 3.5.2). A token on the local list is not cached: the list takes precedence.

        `mark`: the answer's `answer_mark`. A ClearCache the CSMS sent after that answer empties the
        cache of it too: its info is not stored once that ClearCache has begun, though the task that
        sent the message may store it only after the ClearCache handler ran (C11; 1.6 5.4)."""
        await self._ensure_loaded()
        token = self._token(id_token, token_type)
        if info.group is not None:
            self._remember_group(token, info.group)
        listed = self._list.lookup(token)
        if listed is not None:
            if listed.status is not info.status:
                # The list is the CSMS's to change (SendLocalList only): we keep it, and tell the CSMS
                # (1.6 3.5.2: StatusNotification LocalListConflict; 2.0.1 has no such report).
                log.warning(
                    "local list conflict: %r is %s on the list, the CSMS says %s",
                    id_token,
                    listed.status.value,
                    info.status.value,
                )
                self.conflicts.publish(ListConflict(id_token, listed.status, info.status))
            return
        if not self.settings().cache_enabled:
            return
        async with self._lock:
            if mark is not None and mark != self._clears:
                log.info("info for %r not cached: the CSMS cleared the cache after sending it", id_token)
                return
            change = self._cache.store(token, info, self._clock.now(), self._lifetime())
            await self._persist_cache(change)

    async def learn_from_answer(
        self, request: Mapping[str, object], response: OcppModel, *, mark: int | None = None
    ) -> None:
        """Feed the token info of a transaction message's answer to the cache (the transactions block
        calls this for every delivered message): 1.6 Start/StopTransaction.conf idTagInfo with the
        request's idTag; 2.0.1 TransactionEventResponse idTokenInfo with the request's idToken.
        `mark`: as for `learn`."""
        if self.version is V16:
            id_tag = request.get("idTag")
            tag_info = (
                response.id_tag_info
                if isinstance(response, v16.StartTransactionResponse | v16.StopTransactionResponse)
                else None
            )
            # The free-vend idTag is the station's, not a driver's: never cached (2.0.1 C02.FR.03 does
            # the same for NoAuthorization).
            if isinstance(id_tag, str) and tag_info is not None and id_tag != self.free_vend_id_tag:
                await self.learn(id_tag, "", info_from_v16(tag_info), mark=mark)
            return
        token_info = response.id_token_info if isinstance(response, v201.TransactionEventResponse) else None
        if token_info is None:
            return  # most answers: the request's token is not even looked at
        id_token = request.get("idToken")
        if isinstance(id_token, dict):
            value, token_type = id_token.get("idToken"), id_token.get("type")
            if isinstance(value, str) and isinstance(token_type, str):
                await self.learn(value, token_type, info_from_v201(token_info), mark=mark)

    async def _persist_cache(self, change: CacheChange) -> None:
        """Store what a cache operation changed (an answer learnt, a use, stale entries swept). A cache,
        not a record: a change the database refuses stays in memory only (the failure is logged by
        storage), as a full or read-only disk must fail neither the authorization the cache decides nor
        the sweep. What a restart brings back (an older answer, an older use, a stale entry) is
        checked again at its next lookup or sweep."""
        if change:
            with contextlib.suppress(StorageWriteError):
                await self._storage.write(lambda conn: _write_cache(conn, change))

    def cached(self) -> list[CacheEntry]:
        """The cache entries (for tests and the control API)."""
        return list(self._cache.entries.values())

    async def clear_cache(self) -> bool:
        """ClearCache: False (Rejected) when the cache is disabled (C11; 1.6 5.4) or the clearing cannot
        be stored (the database refuses writes): a cache emptied only in memory would be back after a
        restart, while the CSMS believed it gone."""
        await self._ensure_loaded()
        if not self.settings().cache_enabled:
            return False
        # Counted as it begins, before any wait: an answer that arrived before this ClearCache (its
        # token info not stored yet) is not stored after it.
        self._clears += 1
        async with self._lock:
            try:
                await self._storage.write(_clear_cache)
            except StorageWriteError as exc:
                log.warning("ClearCache rejected: %s", exc)
                return False
            self._cache.clear()
        log.info("authorization cache cleared by the CSMS")
        return True

    # --- the local list ------------------------------------------------------------------------

    @property
    def local_list_version(self) -> int:
        return self._list.version

    async def local_list_entries(self) -> list[ListEntry]:
        await self._ensure_loaded()
        return list(self._list.entries.values())

    async def send_local_list(
        self,
        update_type: UpdateType,
        version: int,
        items: Iterable[tuple[IdToken, TokenInfo | None]],
    ) -> ListStatus:
        """SendLocalList: the answer; the list is durable before an Accepted answer goes out."""
        await self._ensure_loaded()
        items = [(self._token(token.value, token.type), info) for token, info in items]
        async with self._lock:
            outcome = apply_update(self._list, update_type, version, items, self._limits())
            if outcome.change is not None:
                change = outcome.change
                try:
                    await self._storage.write(lambda conn: _write_list(conn, change))
                except StorageWriteError as exc:
                    # The list and its version stay as stored: the CSMS sends the update again.
                    outcome = ListOutcome(ListStatus.FAILED, f"not stored: {exc}")
                else:
                    self._list.apply(change)
        level = logging.INFO if outcome.status is ListStatus.ACCEPTED else logging.WARNING
        log.log(
            level,
            "SendLocalList %s version %d (%d entries): %s, %s; list version now %d, %d entries",
            update_type.value,
            version,
            len(items),
            outcome.status.value,
            outcome.reason,
            self._list.version,
            len(self._list),
        )
        return outcome.status

    # --- 1.6 handlers --------------------------------------------------------------------------

    @handles(V16, "ClearCache")
    async def v16_clear_cache(self, req: v16.ClearCacheRequest) -> v16.ClearCacheResponse:
        status = v16.ClearCacheStatusEnum
        cleared = await self.clear_cache()
        return v16.ClearCacheResponse(status=status.ACCEPTED if cleared else status.REJECTED)

    @handles(V16, "SendLocalList")
    async def v16_send_local_list(self, req: v16.SendLocalListRequest) -> v16.SendLocalListResponse:
        items = [
            (IdToken(item.id_tag), None if item.id_tag_info is None else info_from_v16(item.id_tag_info))
            for item in req.local_authorization_list or ()
        ]
        result = await self.send_local_list(UpdateType(enum_text(req.update_type)), req.list_version, items)
        return v16.SendLocalListResponse(status=v16.SendLocalListStatusEnum(result.value))

    @handles(V16, "GetLocalListVersion")
    async def v16_get_local_list_version(
        self, req: v16.GetLocalListVersionRequest
    ) -> v16.GetLocalListVersionResponse:
        await self._ensure_loaded()
        return v16.GetLocalListVersionResponse(list_version=self._list.version)

    # --- 2.0.1 handlers ------------------------------------------------------------------------

    @handles(V201, "ClearCache")
    async def v201_clear_cache(self, req: v201.ClearCacheRequest) -> v201.ClearCacheResponse:
        status = v201.ClearCacheStatusEnumType
        cleared = await self.clear_cache()
        return v201.ClearCacheResponse(status=status.ACCEPTED if cleared else status.REJECTED)

    @handles(V201, "SendLocalList")
    async def v201_send_local_list(self, req: v201.SendLocalListRequest) -> v201.SendLocalListResponse:
        items = [
            (
                IdToken(item.id_token.id_token, enum_text(item.id_token.type)),
                None if item.id_token_info is None else info_from_v201(item.id_token_info),
            )
            for item in req.local_authorization_list or ()
        ]
        result = await self.send_local_list(UpdateType(enum_text(req.update_type)), req.version_number, items)
        return v201.SendLocalListResponse(status=v201.SendLocalListStatusEnumType(result.value))

    @handles(V201, "GetLocalListVersion")
    async def v201_get_local_list_version(
        self, req: v201.GetLocalListVersionRequest
    ) -> v201.GetLocalListVersionResponse:
        await self._ensure_loaded()
        return v201.GetLocalListVersionResponse(version_number=self._list.version)


def _flag(dm: DeviceModel, key: VariableKey, default: bool) -> bool:
    """A boolean setting; `default` when the station does not have the variable."""
    return dm.get_bool(key) if dm.get(key) is not None else default

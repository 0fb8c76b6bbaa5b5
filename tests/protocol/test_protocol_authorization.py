"""Authorization rules of both versions (protocol/authorization.py): token identity, the cache policy,
offline decisions, group tokens and the master pass. Pure: time is passed in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evstation.protocol.authorization import (
    MAX_TOKEN_LENGTH,
    AskCsms,
    AuthCache,
    AuthSettings,
    AuthStatus,
    Decision,
    IdToken,
    Source,
    TokenInfo,
    decide_answer,
    decide_local,
    may_stop,
    token_key,
    token_matcher,
)
from evstation.protocol.versions import OcppVersion

V16, V201 = OcppVersion.V16, OcppVersion.V201
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
OK = TokenInfo(AuthStatus.ACCEPTED)
BLOCKED = TokenInfo(AuthStatus.BLOCKED)


def rfid(value: str) -> IdToken:
    return IdToken(value, "ISO14443")


def local(
    version: OcppVersion,
    token: IdToken,
    *,
    online: bool,
    list_info: TokenInfo | None = None,
    cache_info: TokenInfo | None = None,
    evse_id: int | None = None,
    **settings: object,
) -> Decision | AskCsms:
    return decide_local(
        version,
        token,
        online=online,
        settings=AuthSettings(**settings),  # type: ignore[arg-type]
        list_info=list_info,
        cache_info=cache_info,
        now=T0,
        evse_id=evse_id,
    )


# --- token identity --------------------------------------------------------------------------------


def test_v16_id_tag_is_a_cistring_and_has_no_type() -> None:
    """1.6 idTag is CiString20Type: "abc" and "ABC" are the same idTag, whatever reader read it."""
    same = token_matcher(V16)
    assert same("AbC-1", "ISO14443", "abc-1", "Central")
    assert token_key(V16, IdToken("ABC")) == token_key(V16, IdToken("abc"))
    assert not same("abc", "", "abd", "")


def test_v201_id_token_is_case_insensitive_and_typed() -> None:
    """2.0.1 IdTokenType.idToken is case insensitive; a token is idToken + type."""
    same = token_matcher(V201)
    assert same("AbC-1", "ISO14443", "abc-1", "ISO14443")
    assert not same("abc", "ISO14443", "abc", "ISO15693")
    assert token_key(V201, rfid("X")) != token_key(V201, IdToken("X", "Central"))


@pytest.mark.parametrize(("version", "limit"), [(V16, 20), (V201, 36)])
def test_a_token_longer_than_the_field_is_refused_not_cut(version: OcppVersion, limit: int) -> None:
    """issue 8: a 1.6 idTag longer than 20 (2.0.1 idToken longer than 36) is refused, never truncated."""
    at_limit = local(version, rfid("A" * limit), online=True)
    assert isinstance(at_limit, AskCsms)
    too_long = local(version, rfid("A" * (limit + 1)), online=True, offline_unknown_allowed=True)
    assert isinstance(too_long, Decision)
    assert (too_long.accepted, too_long.source) == (False, Source.RULE)
    assert "refused, not cut" in too_long.reason
    offline = local(version, rfid("A" * (limit + 1)), online=False, offline_unknown_allowed=True)
    assert isinstance(offline, Decision) and not offline.accepted


# --- online decisions ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V16, V201])
def test_c01_unknown_token_online_asks_the_csms(version: OcppVersion) -> None:
    assert isinstance(local(version, rfid("T"), online=True), AskCsms)


@pytest.mark.parametrize("version", [V16, V201])
def test_c12_c14_valid_local_entry_online_with_local_pre_authorize_starts_at_once(
    version: OcppVersion,
) -> None:
    """C12.FR.02 (cache) / C14.FR.01 (list); 1.6 3.5.1 LocalPreAuthorize."""
    for where in ("list_info", "cache_info"):
        decision = local(version, rfid("T"), online=True, local_pre_authorize=True, **{where: OK})  # type: ignore[arg-type]
        assert isinstance(decision, Decision) and decision.accepted
        without = local(version, rfid("T"), online=True, **{where: OK})  # type: ignore[arg-type]
        assert isinstance(without, AskCsms)


def test_c10_fr_03_c12_fr_05_non_accepted_cache_entry_online_is_asked_unless_disable_post_authorize() -> None:
    asked = local(V201, rfid("T"), online=True, local_pre_authorize=True, cache_info=BLOCKED)
    assert isinstance(asked, AskCsms)
    refused = local(V201, rfid("T"), online=True, cache_info=BLOCKED, cache_disable_post_authorize=True)
    assert isinstance(refused, Decision) and not refused.accepted and refused.source is Source.CACHE
    listed = local(V201, rfid("T"), online=True, list_info=BLOCKED, list_disable_post_authorize=True)
    assert isinstance(listed, Decision) and listed.source is Source.LOCAL_LIST and not listed.accepted


def test_c05_central_and_no_authorization_tokens_are_not_sent_to_the_csms() -> None:
    for token_type in ("Central", "NoAuthorization"):
        decision = local(V201, IdToken("R1", token_type), online=True)
        assert isinstance(decision, Decision) and decision.accepted and decision.source is Source.RULE


@pytest.mark.parametrize("version", [V16, V201])
def test_auth_ctrlr_enabled_false_takes_any_token_without_asking(version: OcppVersion) -> None:
    """AuthCtrlr.Enabled false: "no authorization is done ... when reading an idToken": online or
    offline, known as blocked or not, the token is accepted by rule (no AuthorizeRequest); a token too
    long for the version's field is still refused (it could not be sent)."""
    blocked = TokenInfo(AuthStatus.BLOCKED)
    for online in (True, False):
        for info in (None, blocked):
            decision = local(version, rfid("T"), online=online, cache_info=info, authorization_enabled=False)
            assert isinstance(decision, Decision) and decision.accepted and decision.source is Source.RULE
    too_long = rfid("T" * (MAX_TOKEN_LENGTH[version] + 1))
    decision = local(version, too_long, online=True, authorization_enabled=False)
    assert isinstance(decision, Decision) and not decision.accepted


def test_c01_answer_only_accepted_starts_and_evse_restriction_applies() -> None:
    settings = AuthSettings()
    assert decide_answer(V201, OK, settings=settings).accepted
    assert not decide_answer(V201, BLOCKED, settings=settings).accepted
    only_2 = TokenInfo(AuthStatus.ACCEPTED, evse_ids=(2,))
    assert not decide_answer(V201, only_2, settings=settings, evse_id=1).accepted
    assert decide_answer(V201, only_2, settings=settings, evse_id=2).accepted


def test_disable_remote_authorization_decides_locally_only() -> None:
    assert isinstance(local(V201, rfid("T"), online=True, disable_remote_authorization=True), Decision)
    known = local(V201, rfid("T"), online=True, disable_remote_authorization=True, cache_info=OK)
    assert isinstance(known, Decision) and known.accepted


# --- offline decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize("version", [V16, V201])
def test_c13_c12_offline_valid_local_entry_needs_local_authorize_offline(version: OcppVersion) -> None:
    """C13.FR.01-02 (list), C12 offline cache; 1.6 3.5.1 LocalAuthorizeOffline."""
    for where, source in (("list_info", Source.LOCAL_LIST), ("cache_info", Source.CACHE)):
        allowed = local(version, rfid("T"), online=False, local_authorize_offline=True, **{where: OK})  # type: ignore[arg-type]
        assert isinstance(allowed, Decision) and allowed.accepted and allowed.source is source
        held = local(version, rfid("T"), online=False, **{where: OK})  # type: ignore[arg-type]
        assert isinstance(held, Decision) and not held.accepted


@pytest.mark.parametrize("version", [V16, V201])
def test_local_list_takes_precedence_over_the_cache(version: OcppVersion) -> None:
    decision = local(
        version, rfid("T"), online=False, local_authorize_offline=True, list_info=BLOCKED, cache_info=OK
    )
    assert isinstance(decision, Decision) and not decision.accepted and decision.source is Source.LOCAL_LIST
    disabled_list = local(
        version,
        rfid("T"),
        online=False,
        local_authorize_offline=True,
        local_list_enabled=False,
        list_info=BLOCKED,
        cache_info=OK,
    )
    assert isinstance(disabled_list, Decision) and disabled_list.accepted
    no_cache = local(
        version, rfid("T"), online=False, local_authorize_offline=True, cache_enabled=False, cache_info=OK
    )
    assert isinstance(no_cache, Decision) and not no_cache.accepted


@pytest.mark.parametrize("version", [V16, V201])
def test_c15_unknown_id_offline_is_accepted_only_when_allowed(version: OcppVersion) -> None:
    """C15.FR.01 / 1.6 AllowOfflineTxForUnknownId; a token known locally as not valid is no unknown id."""
    allowed = local(version, rfid("T"), online=False, offline_unknown_allowed=True)
    assert isinstance(allowed, Decision) and allowed.accepted and allowed.source is Source.OFFLINE_UNKNOWN
    refused = local(version, rfid("T"), online=False)
    assert isinstance(refused, Decision) and not refused.accepted
    blocked = local(version, rfid("T"), online=False, offline_unknown_allowed=True, cache_info=BLOCKED)
    assert isinstance(blocked, Decision) and not blocked.accepted


@pytest.mark.parametrize("version", [V16, V201])
def test_c10_fr_08_expired_entry_is_known_and_refused_offline(version: OcppVersion) -> None:
    """An Accepted entry past its expiry date reads as Expired: refused offline, even with unknown ids
    allowed (it is not unknown)."""
    expired = TokenInfo(AuthStatus.ACCEPTED, expiry=T0 - timedelta(seconds=1))
    assert expired.effective_status(T0) is AuthStatus.EXPIRED
    decision = local(
        version,
        rfid("T"),
        online=False,
        local_authorize_offline=True,
        offline_unknown_allowed=True,
        cache_info=expired,
    )
    assert isinstance(decision, Decision) and not decision.accepted and "Expired" in decision.reason


# --- groups and the master pass --------------------------------------------------------------------


def stops(
    session: IdToken,
    presented: IdToken,
    group: IdToken | None,
    info: TokenInfo | None,
    master: str | None = None,
    version: OcppVersion = V201,
) -> bool:
    return may_stop(
        version,
        session=session,
        presented=presented,
        session_group=group,
        presented_info=info,
        master_pass_group=master,
        now=T0,
    )


def test_c09_token_of_the_same_group_may_stop_v201() -> None:
    group = IdToken("FLEET", "Central")
    member = TokenInfo(AuthStatus.ACCEPTED, group=IdToken("fleet", "Central"))
    assert stops(rfid("A"), rfid("B"), group, member)
    other = TokenInfo(AuthStatus.ACCEPTED, group=IdToken("OTHER", "Central"))
    assert not stops(rfid("A"), rfid("B"), group, other)
    assert not stops(rfid("A"), rfid("B"), group, TokenInfo(AuthStatus.BLOCKED, group=group))
    assert not stops(rfid("A"), rfid("B"), None, member)
    # The session's own token, in another case: always.
    assert stops(rfid("abc"), rfid("ABC"), None, None)


def test_v16_parent_id_tag_is_the_group() -> None:
    """1.6 3.5.1: a tag with the same parentIdTag may stop the transaction."""
    parent = IdToken("PARENT")
    info = TokenInfo(AuthStatus.ACCEPTED, group=IdToken("parent"))
    assert may_stop(
        V16,
        session=IdToken("A"),
        presented=IdToken("B"),
        session_group=parent,
        presented_info=info,
        now=T0,
        master_pass_group=None,
    )


def test_c16_master_pass_may_stop_any_transaction_but_not_start_one() -> None:
    master = TokenInfo(AuthStatus.ACCEPTED, group=IdToken("Master", "Central"))
    assert may_stop(
        V201,
        session=rfid("A"),
        presented=rfid("M"),
        session_group=None,
        presented_info=master,
        now=T0,
        master_pass_group="MASTER",
    )
    assert not decide_answer(V201, master, settings=AuthSettings(master_pass_group="master")).accepted
    offline = local(
        V201,
        rfid("M"),
        online=False,
        local_authorize_offline=True,
        master_pass_group="MASTER",
        cache_info=master,
    )
    assert isinstance(offline, Decision) and not offline.accepted and "master pass" in offline.reason
    # Without MasterPassGroupId the group is an ordinary group.
    assert decide_answer(V201, master, settings=AuthSettings()).accepted


# --- the cache -------------------------------------------------------------------------------------


def test_c10_cache_stores_lookups_mark_use_and_lifetime_drops_unused_entries() -> None:
    cache = AuthCache(V201, max_entries=10)
    cache.store(rfid("A"), OK, T0, DAY)
    info, change = cache.lookup(rfid("a"), T0 + timedelta(hours=20), DAY)
    assert info == OK and change.written  # last use moved
    info, _ = cache.lookup(rfid("A"), T0 + timedelta(hours=40), DAY)  # 20 h since the last use
    assert info == OK
    info, change = cache.lookup(rfid("A"), T0 + timedelta(hours=64), DAY)
    assert info is None and change.removed


def test_c10_central_tokens_are_never_cached() -> None:
    cache = AuthCache(V201, max_entries=10)
    assert not cache.store(IdToken("R1", "Central"), OK, T0, DAY)
    assert len(cache) == 0


def test_c02_fr_03_no_authorization_tokens_are_never_cached() -> None:
    """C02.FR.03 (and free vend): the IdTokenInfo answered for a NoAuthorization token is not cached."""
    cache = AuthCache(V201, max_entries=10)
    assert not cache.store(IdToken("", "NoAuthorization"), OK, T0, DAY)
    assert len(cache) == 0


def test_c10_fr_07_full_cache_evicts_expired_then_not_accepted_then_least_recently_used() -> None:
    cache = AuthCache(V201, max_entries=3)
    cache.store(rfid("old-ok"), OK, T0, DAY)
    cache.store(rfid("blocked"), BLOCKED, T0 + timedelta(minutes=1), DAY)
    cache.store(rfid("expired"), TokenInfo(AuthStatus.ACCEPTED, expiry=T0), T0 + timedelta(minutes=2), DAY)
    change = cache.store(rfid("new1"), OK, T0 + timedelta(minutes=3), DAY)
    assert change.removed == (token_key(V201, rfid("expired")),)
    change = cache.store(rfid("new2"), OK, T0 + timedelta(minutes=4), DAY)
    assert change.removed == (token_key(V201, rfid("blocked")),)
    change = cache.store(rfid("new3"), OK, T0 + timedelta(minutes=5), DAY)
    assert change.removed == (token_key(V201, rfid("old-ok")),)
    assert len(cache) == 3


def test_c11_clear_removes_everything() -> None:
    cache = AuthCache(V16, max_entries=3)
    cache.store(IdToken("A"), OK, T0, DAY)
    assert cache.clear().removed == (token_key(V16, IdToken("A")),)
    assert len(cache) == 0


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["store", "lookup"]),
        st.sampled_from([f"T{i}" for i in range(8)]),
        st.integers(min_value=0, max_value=7200),  # seconds since the previous operation
        st.sampled_from([AuthStatus.ACCEPTED, AuthStatus.BLOCKED]),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(
    ops=_OPS,
    limit=st.integers(min_value=1, max_value=5),
    lifetime_s=st.integers(min_value=60, max_value=10800),
)
def test_cache_property_lru_and_lifetime(
    ops: list[tuple[str, str, int, AuthStatus]], limit: int, lifetime_s: int
) -> None:
    """Against a model: the cache never holds more than its limit; an entry is returned only while
    used within the lifetime; a stored entry is present right after; an evicted entry was, among the
    entries of its class (not Accepted before Accepted), the least recently used."""
    lifetime = timedelta(seconds=lifetime_s)
    cache = AuthCache(V16, max_entries=limit)
    last_used: dict[str, datetime] = {}
    now = T0
    for op, name, step_s, status in ops:
        now += timedelta(seconds=step_s)
        key = token_key(V16, IdToken(name))
        if op == "store":
            before = dict(cache.entries)
            change = cache.store(IdToken(name), TokenInfo(status), now, lifetime)
            assert cache.entries[key].info.status is status
            fresh = {k: e for k, e in before.items() if now - e.last_used < lifetime and k != key}
            for removed in change.removed:
                if removed in fresh:
                    gone = fresh[removed]
                    for survivor_key, survivor in cache.entries.items():
                        if survivor_key == key:
                            continue
                        survivor_rank = survivor.info.status is AuthStatus.ACCEPTED
                        gone_rank = gone.info.status is AuthStatus.ACCEPTED
                        assert (gone_rank, gone.last_used) <= (survivor_rank, survivor.last_used)
            last_used[key] = now
        else:
            info, _ = cache.lookup(IdToken(name), now, lifetime)
            if info is not None:
                assert now - last_used[key] < lifetime
                last_used[key] = now
        assert len(cache) <= limit
        for entry in cache.entries.values():
            assert now - entry.last_used < lifetime or op == "store"

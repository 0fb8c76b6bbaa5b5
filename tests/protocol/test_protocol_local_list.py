"""The local authorization list (protocol/local_list.py): SendLocalList Full / Differential, versions,
size limits and their answers, the version GetLocalListVersion reports (2.0.1 D01/D02; 1.6 5.10/5.15)."""

from __future__ import annotations

import pytest

from evstation.protocol.authorization import AuthStatus, IdToken, TokenInfo
from evstation.protocol.local_list import ListLimits, ListStatus, LocalList, UpdateType, apply_update
from evstation.protocol.versions import OcppVersion

V16, V201 = OcppVersion.V16, OcppVersion.V201
OK = TokenInfo(AuthStatus.ACCEPTED)
BLOCKED = TokenInfo(AuthStatus.BLOCKED)
LIMITS = ListLimits(max_entries=3, items_per_message=2)
FULL, DIFF = UpdateType.FULL, UpdateType.DIFFERENTIAL


def installed(
    lst: LocalList, update: UpdateType, version: int, *items: tuple[str, TokenInfo | None]
) -> ListStatus:
    outcome = apply_update(lst, update, version, [(IdToken(v, "ISO14443"), i) for v, i in items], LIMITS)
    if outcome.change is not None:
        lst.apply(outcome.change)
    return outcome.status


@pytest.mark.parametrize("version", [V16, V201])
def test_d02_no_list_reports_version_0(version: OcppVersion) -> None:
    assert LocalList(version).version == 0


@pytest.mark.parametrize("version", [V16, V201])
def test_d01_full_replaces_the_list_and_sets_the_version(version: OcppVersion) -> None:
    lst = LocalList(version)
    assert installed(lst, FULL, 4, ("A", OK), ("B", BLOCKED)) is ListStatus.ACCEPTED
    assert lst.version == 4
    assert installed(lst, FULL, 2, ("C", OK)) is ListStatus.ACCEPTED  # Full may go down
    assert (lst.version, lst.lookup(IdToken("A", "ISO14443")), lst.lookup(IdToken("c", "ISO14443"))) == (
        2,
        None,
        OK,
    )


@pytest.mark.parametrize("version", [V16, V201])
def test_d01_empty_full_update_clears_the_list_and_version_reads_0(version: OcppVersion) -> None:
    lst = LocalList(version)
    installed(lst, FULL, 4, ("A", OK))
    assert installed(lst, FULL, 5) is ListStatus.ACCEPTED
    assert (len(lst), lst.version) == (0, 0)


@pytest.mark.parametrize("version", [V16, V201])
def test_d01_differential_adds_updates_and_removes(version: OcppVersion) -> None:
    lst = LocalList(version)
    installed(lst, FULL, 1, ("A", OK), ("B", OK))
    assert installed(lst, DIFF, 2, ("a", BLOCKED), ("B", None)) is ListStatus.ACCEPTED
    assert lst.lookup(IdToken("A", "ISO14443")) == BLOCKED
    assert lst.lookup(IdToken("B", "ISO14443")) is None
    assert installed(lst, DIFF, 3, ("Z", None)) is ListStatus.ACCEPTED  # removing an absent token: fine
    assert lst.version == 3


@pytest.mark.parametrize("version", [V16, V201])
def test_d01_differential_with_a_version_not_above_the_installed_is_a_version_mismatch(
    version: OcppVersion,
) -> None:
    lst = LocalList(version)
    installed(lst, FULL, 5, ("A", OK))
    for stale in (5, 4):
        assert installed(lst, DIFF, stale, ("B", OK)) is ListStatus.VERSION_MISMATCH
    assert (lst.version, len(lst)) == (5, 1)


@pytest.mark.parametrize("version", [V16, V201])
def test_d01_size_limits_fail_and_leave_the_list_as_it_was(version: OcppVersion) -> None:
    lst = LocalList(version)
    installed(lst, FULL, 1, ("A", OK), ("B", OK))
    # More items than ItemsPerMessage (1.6 SendLocalListMaxLength).
    assert installed(lst, DIFF, 2, ("C", OK), ("D", OK), ("E", OK)) is ListStatus.FAILED
    installed(lst, DIFF, 2, ("C", OK))
    # More entries than Entries maxLimit (1.6 LocalAuthListMaxLength).
    assert installed(lst, DIFF, 3, ("D", OK)) is ListStatus.FAILED
    assert (lst.version, len(lst)) == (2, 3)


@pytest.mark.parametrize("version", [V16, V201])
def test_d01_bad_requests_fail(version: OcppVersion) -> None:
    lst = LocalList(version)
    assert installed(lst, FULL, 1, ("A", OK), ("a", OK)) is ListStatus.FAILED  # the same token twice
    assert installed(lst, FULL, 1, ("A", None)) is ListStatus.FAILED  # a Full entry without its info
    assert installed(lst, FULL, 0, ("A", OK)) is ListStatus.FAILED  # 0 means "no list"
    assert (lst.version, len(lst)) == (0, 0)


def test_v201_list_keys_include_the_type_v16_do_not() -> None:
    v201 = LocalList(V201)
    apply = apply_update(
        v201, FULL, 1, [(IdToken("A", "ISO14443"), OK), (IdToken("A", "KeyCode"), BLOCKED)], LIMITS
    )
    assert apply.status is ListStatus.ACCEPTED
    v16 = LocalList(V16)
    assert (
        apply_update(v16, FULL, 1, [(IdToken("A"), OK), (IdToken("a"), BLOCKED)], LIMITS).status
        is ListStatus.FAILED
    )

"""Reset rules (2.0.1 B11 / B12; 1.6 Core Reset): the answer to a Reset, what it ends, when it is due,
and the boot reason it leaves behind. Pure: no clock, no I/O.

A reset's *scope* is the whole station (`STATION`, no evseId) or one EVSE (its id). 1.6 resets always
address the station.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Final

from evstation.records import record

__all__ = [
    "BOOT_REASON_REMOTE",
    "BOOT_REASON_SCHEDULED",
    "STATION",
    "ResetDecision",
    "ResetKind",
    "ResetStatus",
    "Scope",
    "boot_reason",
    "decide_reset",
    "due_scopes",
    "stop_reason",
]

# None: the reset addresses the whole station (2.0.1 ResetRequest without evseId; every 1.6 Reset).
Scope = int | None
STATION: Final[Scope] = None

# 2.0.1 BootReasonEnumType of the BootNotification after a CSMS Reset. A reset that was answered
# Scheduled and ran once the station went idle reports ScheduledReset (the OCA test TC_B_21 expects
# it after an OnIdle reset with a transaction running); one performed at once reports RemoteReset.
BOOT_REASON_REMOTE: Final = "RemoteReset"
BOOT_REASON_SCHEDULED: Final = "ScheduledReset"


class ResetKind(enum.Enum):
    """ResetEnumType (2.0.1) and ResetType (1.6): the wire texts."""

    IMMEDIATE = "Immediate"
    ON_IDLE = "OnIdle"
    HARD = "Hard"
    SOFT = "Soft"


class ResetStatus(enum.Enum):
    """ResetStatusEnumType; 1.6 uses Accepted / Rejected only."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    SCHEDULED = "Scheduled"


# Stop reason (1.6 Reason / 2.0.1 ReasonEnumType) of a transaction a reset ends.
_STOP_REASON: Final = {
    ResetKind.IMMEDIATE: "ImmediateReset",  # B12.FR.04 / B12.FR.08
    ResetKind.HARD: "HardReset",  # 1.6 5.14
    ResetKind.SOFT: "SoftReset",
}


@record
class ResetDecision:
    """The answer, and what the station does: `end_now` are the EVSEs whose transactions end at once
    (with `stop_reason`), `perform_now` says the reset of `scope` runs right after the answer; a
    Scheduled decision runs when `scope` becomes idle (`due_scopes`)."""

    status: ResetStatus
    scope: Scope = STATION
    end_now: frozenset[int] = frozenset()
    perform_now: bool = False


def stop_reason(kind: ResetKind) -> str | None:
    """The stoppedReason / Reason of a transaction this reset ends; None for OnIdle (it waits)."""
    return _STOP_REASON.get(kind)


def decide_reset(
    kind: ResetKind,
    evse_id: int | None,
    *,
    evses: Iterable[int],
    busy: Iterable[int],
) -> ResetDecision:
    """The answer to a Reset of `kind` for `evse_id` (None: the station), given the station's EVSEs
    and those with a transaction running (`busy`).

    - An evseId the station does not have: Rejected (B11: the EVSE cannot be reset).
    - Immediate / Hard / Soft: Accepted; the scope's transactions end now (B12.FR.02 / .04 / .08,
      1.6 5.14), then the reset runs.
    - OnIdle with a transaction in the scope: Scheduled, run when the scope is idle (B12.FR.01 /
      .03 / .07). OnIdle on an idle scope: Accepted and run now (B11.FR.01 / .03).
    """
    known = frozenset(evses)
    running = frozenset(busy) & known
    if evse_id is not None and evse_id not in known:
        return ResetDecision(ResetStatus.REJECTED)
    in_scope = running if evse_id is None else running & {evse_id}
    if kind is ResetKind.ON_IDLE:
        if in_scope:
            return ResetDecision(ResetStatus.SCHEDULED, evse_id)
        return ResetDecision(ResetStatus.ACCEPTED, evse_id, perform_now=True)
    return ResetDecision(ResetStatus.ACCEPTED, evse_id, end_now=in_scope, perform_now=True)


def due_scopes(scheduled: Iterable[Scope], busy: Iterable[int]) -> list[Scope]:
    """Which scheduled resets may run now: the station's once no EVSE has a transaction, an EVSE's
    once it has none. The station's comes first: it makes the EVSE resets moot."""
    running = frozenset(busy)
    pending = set(scheduled)
    due: list[Scope] = []
    if STATION in pending and not running:
        due.append(STATION)
    due.extend(sorted(s for s in pending if s is not None and s not in running))
    return due


def boot_reason(*, scheduled: bool) -> str:
    """The BootReasonEnumType the station stores before a CSMS-ordered restart."""
    return BOOT_REASON_SCHEDULED if scheduled else BOOT_REASON_REMOTE

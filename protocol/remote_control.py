"""Remote control rules of both versions (2.0.1 F01-F05; 1.6 RemoteStartTransaction 5.11, UnlockConnector
5.18): what to answer, given what the EVSE is doing. Pure: never reads hardware, a clock or storage.
"""

from __future__ import annotations

import enum
from typing import Final

__all__ = ["TX_PROFILE", "UnlockPlan", "profile_purpose_allowed", "v16_unlock_plan", "v201_unlock_plan"]

# The only purpose a charging profile attached to a remote start may have: both versions' field
# description of RequestStartTransaction / RemoteStartTransaction chargingProfile says its purpose
# must be TxProfile.
TX_PROFILE: Final = "TxProfile"


def profile_purpose_allowed(purpose: str | None) -> bool:
    """Whether a remote start's chargingProfile may be accepted: none attached, or a TxProfile."""
    return purpose is None or purpose == TX_PROFILE


class UnlockPlan(enum.Enum):
    UNLOCK = "Unlock"  # move the lock; Unlocked, or UnlockFailed if the motor fails
    STOP_THEN_UNLOCK = "StopThenUnlock"  # 1.6: end the transaction (reason UnlockCommand) first
    REFUSE_TRANSACTION = "OngoingAuthorizedTransaction"  # 2.0.1 F05.FR.02
    UNKNOWN_CONNECTOR = "UnknownConnector"  # 2.0.1: no such connector, or no lock (tethered cable)
    NOT_SUPPORTED = "NotSupported"  # 1.6: no such connector, or no lock (tethered cable)


def v201_unlock_plan(*, known: bool, has_lock: bool, transaction: bool) -> UnlockPlan:
    """2.0.1 F05: a connector the station does not have, or one without a lock to move (a tethered
    cable), is UnknownConnector (UnlockStatusEnumType has no NotSupported); a connector with an
    authorized transaction is not unlocked: OngoingAuthorizedTransaction (the CSMS stops it first)."""
    if not known or not has_lock:
        return UnlockPlan.UNKNOWN_CONNECTOR
    if transaction:
        return UnlockPlan.REFUSE_TRANSACTION
    return UnlockPlan.UNLOCK


def v16_unlock_plan(*, known: bool, has_lock: bool, transaction: bool) -> UnlockPlan:
    """1.6 5.18: NotSupported for an unknown connector or one without a lock (UnlockStatus
    NotSupported; OCTT TC_017_2 for a fixed cable); a running transaction is ended first, with
    StopTransaction reason UnlockCommand, then the connector is unlocked."""
    if not known or not has_lock:
        return UnlockPlan.NOT_SUPPORTED
    if transaction:
        return UnlockPlan.STOP_THEN_UNLOCK
    return UnlockPlan.UNLOCK

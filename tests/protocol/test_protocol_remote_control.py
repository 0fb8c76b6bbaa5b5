"""Remote control rules (protocol.remote_control): UnlockConnector plans of both versions and the
TxProfile rule of a remote start's charging profile."""

from __future__ import annotations

import pytest

from evstation.protocol.remote_control import (
    UnlockPlan,
    profile_purpose_allowed,
    v16_unlock_plan,
    v201_unlock_plan,
)


@pytest.mark.parametrize(
    ("known", "has_lock", "transaction", "v201", "v16"),
    [
        (True, True, False, UnlockPlan.UNLOCK, UnlockPlan.UNLOCK),
        # 2.0.1 F05.FR.02 refuses; 1.6 5.18 ends the transaction first.
        (True, True, True, UnlockPlan.REFUSE_TRANSACTION, UnlockPlan.STOP_THEN_UNLOCK),
        # No lock (tethered cable) or no such connector.
        (True, False, False, UnlockPlan.UNKNOWN_CONNECTOR, UnlockPlan.NOT_SUPPORTED),
        (True, False, True, UnlockPlan.UNKNOWN_CONNECTOR, UnlockPlan.NOT_SUPPORTED),
        (False, True, False, UnlockPlan.UNKNOWN_CONNECTOR, UnlockPlan.NOT_SUPPORTED),
    ],
)
def test_f05_and_v16_5_18_unlock_plans(
    known: bool, has_lock: bool, transaction: bool, v201: UnlockPlan, v16: UnlockPlan
) -> None:
    assert v201_unlock_plan(known=known, has_lock=has_lock, transaction=transaction) is v201
    assert v16_unlock_plan(known=known, has_lock=has_lock, transaction=transaction) is v16


def test_remote_start_profile_must_be_a_tx_profile() -> None:
    assert profile_purpose_allowed(None)
    assert profile_purpose_allowed("TxProfile")
    for purpose in ("TxDefaultProfile", "ChargePointMaxProfile", "ChargingStationMaxProfile"):
        assert not profile_purpose_allowed(purpose)

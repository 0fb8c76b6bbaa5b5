"""Folding the EVSE's 1.6-vocabulary status onto 2.0.1 ConnectorStatusEnumType, pure."""

from __future__ import annotations

import pytest

from evstation.protocol.availability import v201_connector_status


@pytest.mark.parametrize("status", ["Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing"])
def test_in_use_statuses_are_occupied(status: str) -> None:
    assert v201_connector_status(status) == "Occupied"


@pytest.mark.parametrize("status", ["Available", "Reserved", "Unavailable", "Faulted"])
def test_the_other_statuses_are_kept(status: str) -> None:
    assert v201_connector_status(status) == status
    assert v201_connector_status(status, ev_away=True) == status


def test_e10_kept_transaction_without_its_ev_is_available() -> None:
    """OCTT TC_E_26: after the EV-side unplug of a kept transaction the connector reports Available."""
    assert v201_connector_status("SuspendedEV", ev_away=True) == "Available"

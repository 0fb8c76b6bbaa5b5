"""Which OCPP 2.0.1 component a hardware fault is the `Problem` of, and which of those components an EVSE
has: the ones its configured drivers can raise a fault on, each driver declaring its set next to its
fault tables (`FAULTS_RAISED`). The device model's layout (runtime/device_model.py) and the fault-event
block (runtime/blocks/fault_events.py) take their places from here, so a NotifyEvent and the variable
GetVariables reads name the same component instance.

A driver module is imported only for the kind a configuration names (a simulated station never loads
pymodbus or a board's code: tests/runtime/test_runtime_station_imports.py).
"""

from __future__ import annotations

import enum
from typing import Final

from evstation.drivers.api import FaultCode
from evstation.runtime.config import (
    BoardMeterConfig,
    ControllerConfig,
    EvseConfig,
    MeterConfig,
    PhyVersoControllerConfig,
    RapiControllerConfig,
    SimControllerConfig,
    SimMeterConfig,
    YetiControllerConfig,
)

__all__ = [
    "FAULT_COMPONENTS",
    "OWN_PROBLEM_COMPONENTS",
    "Place",
    "Tier",
    "controller_faults",
    "fault_place",
    "faults_raised",
    "meter_faults",
    "problem_places",
]


class Tier(enum.Enum):
    """Where the component sits: the station, the EVSE that reported the fault, or its connector."""

    STATION = "station"
    EVSE = "evse"
    CONNECTOR = "connector"


# The 2.0.1 standardized component (part 2 appendix, "Standardized Components") whose Problem a fault
# is; docs/hardware.md renders this table.
FAULT_COMPONENTS: Final[dict[FaultCode, tuple[str, Tier]]] = {
    FaultCode.CONNECTOR_LOCK_FAILURE: ("ConnectorPlugRetentionLock", Tier.CONNECTOR),
    FaultCode.GROUND_FAILURE: ("RCD", Tier.EVSE),
    FaultCode.RCD_SELFTEST_FAILED: ("RCD", Tier.EVSE),
    FaultCode.OVER_CURRENT: ("OverCurrentProtection", Tier.EVSE),
    FaultCode.OVER_VOLTAGE: ("ElectricalFeed", Tier.EVSE),
    FaultCode.UNDER_VOLTAGE: ("ElectricalFeed", Tier.EVSE),
    FaultCode.POWER_LOSS: ("ElectricalFeed", Tier.EVSE),
    FaultCode.EMERGENCY_STOP: ("EmergencyStopSensor", Tier.EVSE),
    FaultCode.EVSE_CONTACTOR_FAULT: ("PowerContactor", Tier.EVSE),
    # The EVSE's billing meter: FiscalMetering ("Problem: metering fault, e.g. read error").
    FaultCode.METER_COMMUNICATION: ("FiscalMetering", Tier.EVSE),
    FaultCode.METER_ENERGY_BACKWARDS: ("FiscalMetering", Tier.EVSE),
    FaultCode.READER_FAILURE: ("TokenReader", Tier.EVSE),
    # The EVSE's charge-controller board.
    FaultCode.BOARD_COMMUNICATION: ("Controller", Tier.EVSE),
    # The database is the station's, and every EVSE reports it: one event for the station.
    FaultCode.STORAGE_FAILURE: ("ChargingStation", Tier.STATION),
    # TemperatureSensor's Problem is a faulty sensor, not a hot enclosure: the EVSE has the problem.
    FaultCode.HIGH_TEMPERATURE: ("EVSE", Tier.EVSE),
    FaultCode.PILOT_FAULT: ("EVSE", Tier.EVSE),
    FaultCode.PROXIMITY_FAULT: ("EVSE", Tier.EVSE),
    FaultCode.DIODE_FAULT: ("EVSE", Tier.EVSE),
    FaultCode.VENTILATION_NOT_AVAILABLE: ("EVSE", Tier.EVSE),
}

# Components whose Problem row the standard table has already (protocol/device_model/standard.py), kept
# by the fault-event block as "any fault there": no row of their own from here.
OWN_PROBLEM_COMPONENTS: Final = frozenset({"EVSE", "ChargingStation"})

# (component, EVSE id, connector id): one component instance, as a NotifyEvent names it.
Place = tuple[str, int | None, int | None]


def fault_place(code: FaultCode, evse_id: int, connector_ids: tuple[int, ...]) -> Place:
    """The component instance a fault of EVSE `evse_id` (with `connector_ids`) is the Problem of."""
    component, tier = FAULT_COMPONENTS[code]
    if tier is Tier.STATION:
        return (component, None, None)
    # An EVSE knows no connector per fault: a connector-tier fault names the connector only when the
    # EVSE has one (every board drives one connector an EVSE; several are a simulation's).
    connector = connector_ids[0] if tier is Tier.CONNECTOR and len(connector_ids) == 1 else None
    return (component, evse_id, connector)


def controller_faults(config: ControllerConfig) -> frozenset[FaultCode]:
    """The faults the configured board's driver declares it can raise."""
    if isinstance(config, SimControllerConfig):
        from evstation.drivers.sim.board import FAULTS_RAISED as RAISED
    elif isinstance(config, YetiControllerConfig):
        from evstation.drivers.boards.yeti import FAULTS_RAISED as RAISED
    elif isinstance(config, RapiControllerConfig):
        from evstation.drivers.boards.rapi import FAULTS_RAISED as RAISED
    elif isinstance(config, PhyVersoControllerConfig):
        from evstation.drivers.boards.phyverso import FAULTS_RAISED as RAISED
    else:  # pragma: no cover - the config's discriminated union has no other member
        raise AssertionError(f"unknown controller config {config!r}")
    return RAISED


def meter_faults(config: MeterConfig) -> frozenset[FaultCode]:
    """The faults the configured meter's driver declares it can raise."""
    if isinstance(config, SimMeterConfig):
        from evstation.drivers.sim.meter import FAULTS_RAISED as RAISED
    elif isinstance(config, BoardMeterConfig):
        from evstation.drivers.boards.yeti import METER_FAULTS_RAISED as RAISED
    else:
        from evstation.drivers.meters.modbus import FAULTS_RAISED as RAISED
    return RAISED


def faults_raised(config: EvseConfig) -> frozenset[FaultCode]:
    """Every fault the EVSE can report: its drivers' and its own (runtime/evse.py)."""
    from evstation.runtime.evse import EVSE_FAULTS_RAISED

    faults = controller_faults(config.controller) | meter_faults(config.meter) | EVSE_FAULTS_RAISED
    if not config.has_lock:
        # A tethered cable: nothing drives a lock (the EVSE never moves one, a RAPI board refuses to),
        # so no ConnectorPlugRetentionLock.
        faults -= {FaultCode.CONNECTOR_LOCK_FAILURE}
    return faults


def problem_places(config: EvseConfig) -> frozenset[Place]:
    """The component instances of this EVSE that get a `Problem` variable: those its faults name, but
    the EVSE and the station themselves (whose rows the standard table has)."""
    connector_ids = tuple(connector.id for connector in config.connector)
    places = {fault_place(code, config.id, connector_ids) for code in faults_raised(config)}
    return frozenset(place for place in places if place[0] not in OWN_PROBLEM_COMPONENTS)

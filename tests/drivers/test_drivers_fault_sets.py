"""Each driver's declared `FAULTS_RAISED` (which components its EVSE gets a Problem variable for, in 2.0.1)
stays true to its code: it holds every fault its tables map to, and it is exactly the set of faults the
driver's modules name, read from their source (a fault raised in a new place shows up here)."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from types import ModuleType

import pytest

from evstation.drivers.api import FaultCode
from evstation.drivers.boards import framed_mcu, phyverso, rapi, supervised, yeti
from evstation.drivers.meters import modbus, publisher
from evstation.drivers.sim import board as sim_board
from evstation.drivers.sim import meter as sim_meter
from evstation.runtime import evse

# The declarations themselves are not evidence of a raise.
_DECLARATIONS = frozenset(
    {"FAULTS_RAISED", "METER_FAULTS_RAISED", "SUPERVISION_FAULTS", "PUBLISHER_FAULTS", "EVSE_FAULTS_RAISED"}
)


def _named(tree: ast.AST) -> set[FaultCode]:
    """The faults `FaultCode.X` names in `tree`, outside the declarations."""
    found: set[FaultCode] = set()
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in _DECLARATIONS for t in targets):
                skipped.update(id(inner) for inner in ast.walk(node))
    for node in ast.walk(tree):
        if (
            id(node) not in skipped
            and isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "FaultCode"
        ):
            found.add(FaultCode[node.attr])
    return found


def _source(module: ModuleType) -> ast.Module:
    return ast.parse(inspect.getsource(module))


def _class(module: ModuleType, name: str) -> ast.ClassDef:
    [node] = [n for n in _source(module).body if isinstance(n, ast.ClassDef) and n.name == name]
    return node


def _named_in(*modules: ModuleType) -> set[FaultCode]:
    return set().union(*(_named(_source(m)) for m in modules))


@pytest.mark.parametrize(
    ("declared", "named"),
    [
        # The Yeti's board meter lives in yeti.py: its faults are the publisher's, the rest the board's.
        (yeti.FAULTS_RAISED, lambda: _named_in(yeti, framed_mcu, supervised)),
        (yeti.METER_FAULTS_RAISED, lambda: _named(_class(yeti, "YetiPowerMeter")) | _named_in(publisher)),
        (phyverso.FAULTS_RAISED, lambda: _named_in(phyverso, framed_mcu, supervised)),
        (rapi.FAULTS_RAISED, lambda: _named_in(rapi, supervised)),
        (modbus.FAULTS_RAISED, lambda: _named_in(modbus, publisher)),
        (sim_meter.FAULTS_RAISED, lambda: _named_in(sim_meter, publisher)),
    ],
    ids=["yeti", "yeti-board-meter", "phyverso", "rapi", "modbus", "sim-meter"],
)
def test_a_drivers_declared_faults_are_the_ones_its_code_names(
    declared: frozenset[FaultCode], named: Callable[[], set[FaultCode]]
) -> None:
    assert declared == named()


def test_every_fault_a_boards_table_maps_to_is_declared() -> None:
    assert set(yeti.ERROR_FLAG_FAULTS.values()) <= yeti.FAULTS_RAISED
    assert set(phyverso.ERROR_FLAG_FAULTS.values()) <= phyverso.FAULTS_RAISED
    assert {code for code, _ in rapi.STATE_FAULTS.values()} <= rapi.FAULTS_RAISED
    # A lost link for every serial board, the energy check for every meter.
    for board in (yeti, phyverso, rapi):
        assert supervised.SUPERVISION_FAULTS <= board.FAULTS_RAISED
    for meter in (modbus.FAULTS_RAISED, yeti.METER_FAULTS_RAISED, sim_meter.FAULTS_RAISED):
        assert meter >= publisher.PUBLISHER_FAULTS


def test_a_yeti_declares_no_emergency_stop_supply_or_contactor_fault() -> None:
    """Its error_flags have none: its EVSE gets no EmergencyStopSensor, ElectricalFeed, PowerContactor."""
    absent = {
        FaultCode.EMERGENCY_STOP,
        FaultCode.OVER_VOLTAGE,
        FaultCode.POWER_LOSS,
        FaultCode.EVSE_CONTACTOR_FAULT,
    }
    assert not yeti.FAULTS_RAISED & absent


def test_a_simulated_board_can_raise_every_fault() -> None:
    """The control API injects any FaultCode into it."""
    assert frozenset(FaultCode) == sim_board.FAULTS_RAISED


def test_the_evses_own_faults_are_the_ones_it_sets() -> None:
    """runtime/evse.py raises these itself (`_set_fault(FaultCode.X, True, ...)`), whatever its drivers."""
    source = _source(evse)
    raised: set[FaultCode] = set()
    for call in ast.walk(source):
        if (
            isinstance(call, ast.Call)
            and isinstance(call.func, ast.Attribute)
            and call.func.attr == "_set_fault"
        ):
            raised |= _named(call.args[0])  # the others pass on a driver's fault
    assert raised == evse.EVSE_FAULTS_RAISED

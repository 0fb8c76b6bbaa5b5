"""The components a 2.0.1 NotifyEvent names are in the device model: each EVSE (and connector, for the
lock) has the Problem variable of every component its configured drivers can raise a fault on, kept by
the fault-event block as the events' actualValue, so GetVariables and GetReport (criterion Problem) agree
with the events (docs/hardware.md "OCPP 2.0.1: NotifyEvent"). A 1.6 station's keys do not change."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import trio
import trio.testing
from runtime_session_harness import (
    CsmsPeer,
    MemoryConnection,
    board,
    call,
    online,
    open_session_context,
    serving,
    station_config,
    statuses_at_boot,
)
from test_runtime_fault_events import (
    _reported_then_restarted,
    blocks,
    wait_event_data,
    wait_pending,
    with_fault_events,
)

from evstation.drivers.api import FaultCode
from evstation.drivers.boards import yeti
from evstation.drivers.meters import modbus
from evstation.protocol.device_model import (
    ComponentKey,
    DataType,
    Mutability,
    StationLayout,
    VariableKey,
    build_definitions,
)
from evstation.protocol.device_model.v16 import V16KeyMap
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.fault_events import CARRIED_FAULTS_SETTLE_S
from evstation.runtime.config import parse_config
from evstation.runtime.device_model import IMPLEMENTED_V16_PROFILES, definitions_for, layout_from_config
from evstation.runtime.evse import EVSE_FAULTS_RAISED
from evstation.runtime.fault_components import FAULT_COMPONENTS, fault_place, problem_places

V16, V201 = OcppVersion.V16, OcppVersion.V201
YETI = {"controller": {"driver": "yeti", "device": "/dev/ttyS1"}}
MODBUS = {"meter": {"driver": "modbus", "model": "sdm630", "transport": "tcp", "host": "192.0.2.7"}}


def _config(tmp_path: Path, controller: dict[str, Any], meter: dict[str, Any]) -> Any:
    evse = {
        "id": 1,
        "connector": [{"id": 1, "type": "cType2", "max_current_a": 32}],
        "controller": controller,
        "meter": meter,
    }
    data = {
        "station": {
            "id": "CS",
            "vendor": "v",
            "model": "m",
            "ocpp_version": "2.0.1",
            "data_dir": str(tmp_path),
        },
        "csms": {"endpoints": [{"url": "ws://127.0.0.1:9/ocpp", "security_profile": 0}]},
        "evse": [evse],
    }
    return parse_config(data, base_dir=tmp_path)


def _problems(tmp_path: Path, controller: dict[str, Any], meter: dict[str, Any]) -> set[ComponentKey]:
    """The components of the configured station that have a Problem variable."""
    definitions = definitions_for(_config(tmp_path, controller, meter))
    return {d.key.component for d in definitions if d.key.name == "Problem"}


def _key(component: str, evse_id: int | None = 1, connector_id: int | None = None) -> VariableKey:
    return VariableKey(ComponentKey(component, evse_id=evse_id, connector_id=connector_id), "Problem")


def _get(component: str, evse: dict[str, int]) -> dict[str, Any]:
    return {"component": {"name": component, "evse": evse}, "variable": {"name": "Problem"}}


async def _read(
    csms: CsmsPeer, conn: MemoryConnection, component: str, **evse: int
) -> tuple[str, str | None]:
    """GetVariables of one component's Problem: (attributeStatus, attributeValue)."""
    answer = await call(csms, conn, "GetVariables", {"getVariableData": [_get(component, evse)]})
    [result] = answer["getVariableResult"]
    return result["attributeStatus"], result.get("attributeValue")


# --- which components an EVSE has ---------------------------------------------------------------


def test_a_yeti_with_a_modbus_meter_has_exactly_the_components_its_drivers_declare(tmp_path: Path) -> None:
    config = _config(tmp_path, YETI["controller"], MODBUS["meter"])
    declared = yeti.FAULTS_RAISED | modbus.FAULTS_RAISED | EVSE_FAULTS_RAISED
    expected = {fault_place(code, 1, (1,)) for code in declared} - {
        ("EVSE", 1, None),
        ("ChargingStation", None, None),
    }
    assert problem_places(config.evse[0]) == expected
    assert _problems(tmp_path, YETI["controller"], MODBUS["meter"]) == {
        ComponentKey("ChargingStation"),
        ComponentKey("EVSE", evse_id=1),  # the standard rows, once
        ComponentKey("Controller", evse_id=1),
        ComponentKey("FiscalMetering", evse_id=1),
        ComponentKey("OverCurrentProtection", evse_id=1),
        ComponentKey("RCD", evse_id=1),
        ComponentKey("ConnectorPlugRetentionLock", evse_id=1, connector_id=1),
    }  # no EmergencyStopSensor, ElectricalFeed, PowerContactor or TokenReader: a Yeti cannot raise them


def test_a_new_problem_variable_is_read_only_boolean_not_stored_and_false(tmp_path: Path) -> None:
    definitions = definitions_for(_config(tmp_path, YETI["controller"], MODBUS["meter"]))
    rcd, evse = definitions[_key("RCD")], definitions[_key("EVSE")]
    assert (rcd.data_type, rcd.attributes[0].mutability, rcd.persistent, rcd.default) == (
        DataType.BOOLEAN,
        Mutability.READ_ONLY,
        False,
        "false",
    )
    assert (evse.data_type, evse.attributes[0].mutability, evse.persistent, evse.default) == (
        rcd.data_type,
        rcd.attributes[0].mutability,
        rcd.persistent,
        rcd.default,
    )


def test_a_tethered_cable_has_no_lock_component_and_a_rapi_no_rcd_self_test(tmp_path: Path) -> None:
    rapi = {"driver": "rapi", "device": "/dev/ttyS1"}
    components = {c.name for c in _problems(tmp_path, rapi, MODBUS["meter"])}
    assert "ConnectorPlugRetentionLock" not in components  # `lock = false`: nothing drives a lock
    assert {"PowerContactor", "RCD", "Controller", "FiscalMetering"} <= components
    locked = {c.name for c in _problems(tmp_path, {**rapi, "lock": True}, MODBUS["meter"])}
    assert locked == components | {"ConnectorPlugRetentionLock"}
    phyverso = {"driver": "phyverso", "device": "/dev/ttyS1", "connector": 1, "hw_revision": "B"}
    assert "ConnectorPlugRetentionLock" not in {
        c.name for c in _problems(tmp_path, phyverso, MODBUS["meter"])
    }


def test_a_yeti_board_meter_is_fiscal_metering_too(tmp_path: Path) -> None:
    assert ComponentKey("FiscalMetering", evse_id=1) in _problems(
        tmp_path, YETI["controller"], {"driver": "board"}
    )


def test_a_simulated_evse_has_every_component_and_several_connectors_share_the_evses_lock(
    tmp_path: Path,
) -> None:
    """A sim board takes any injected fault. With two connectors a lock fault names no connector
    (docs/hardware.md): the lock's Problem is the EVSE's instance, as the event names it."""
    layout = layout_from_config(station_config(tmp_path, V201, connectors=(1, 2)))
    one, two = layout.evses
    names = {name for name, tier in FAULT_COMPONENTS.values()} - {"EVSE", "ChargingStation"}
    assert set(one.problem_components) == names - {"ConnectorPlugRetentionLock"}
    assert one.connectors[0].problem_components == ("ConnectorPlugRetentionLock",)
    assert set(two.problem_components) == names
    assert [c.problem_components for c in two.connectors] == [(), ()]


# --- kept by the fault-event block ----------------------------------------------------------------


async def test_n07_get_variables_reads_the_rcds_problem_as_its_events_say(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """RCD of EVSE 1: "false", "true" while a ground fault holds it, "false" after its clear; with two
    faults on it (ground fault, self-test) clearing one leaves it "true"."""
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with with_fault_events(tmp_path) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", statuses_at_boot(V201))
        assert await _read(csms, conn, "RCD", id=1) == ("Accepted", "false")
        board(ctx, 1).inject_fault(FaultCode.GROUND_FAILURE, "30 mA")
        await wait_event_data(csms, 1)
        assert await _read(csms, conn, "RCD", id=1) == ("Accepted", "true")
        assert await _read(csms, conn, "RCD", id=2) == ("Accepted", "false")
        board(ctx, 1).clear_fault(FaultCode.GROUND_FAILURE)
        await wait_event_data(csms, 2)
        assert await _read(csms, conn, "RCD", id=1) == ("Accepted", "false")
        board(ctx, 1).inject_fault(FaultCode.GROUND_FAILURE, "30 mA")
        board(ctx, 1).inject_fault(FaultCode.RCD_SELFTEST_FAILED, "self-test")
        await wait_event_data(csms, 4)
        board(ctx, 1).clear_fault(FaultCode.GROUND_FAILURE)
        await wait_event_data(csms, 5)
        assert await _read(csms, conn, "RCD", id=1) == ("Accepted", "true")
        board(ctx, 1).clear_fault(FaultCode.RCD_SELFTEST_FAILED)
        await wait_event_data(csms, 6)
        assert await _read(csms, conn, "RCD", id=1) == ("Accepted", "false")


async def test_n07_the_lock_problem_is_the_connectors(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with with_fault_events(tmp_path) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", statuses_at_boot(V201))
        board(ctx, 1).inject_fault(FaultCode.CONNECTOR_LOCK_FAILURE, "lock stuck")
        await wait_event_data(csms, 1)
        lock = "ConnectorPlugRetentionLock"
        assert await _read(csms, conn, lock, id=1, connectorId=1) == ("Accepted", "true")
        assert await _read(csms, conn, lock, id=2, connectorId=1) == ("Accepted", "false")
        # A one-connector EVSE's lock is its connector's: there is no EVSE-level instance.
        assert await _read(csms, conn, lock, id=1) == ("UnknownComponent", None)
        assert ctx.device_model.get(_key(lock, 1, 1)) == "true"


async def _problem_report(csms: CsmsPeer, conn: MemoryConnection) -> set[tuple[str, int | None, str]]:
    """GetReport criterion Problem: (component, EVSE id, Actual value) of every variable reported."""
    before = len(csms.of("NotifyReport"))
    answer = await call(csms, conn, "GetReport", {"requestId": 5 + before, "componentCriteria": ["Problem"]})
    if answer["status"] != "Accepted":
        return set()
    while True:
        pages: list[dict[str, Any]] = [s.call.payload for s in csms.of("NotifyReport")[before:]]
        if pages and not pages[-1]["tbc"]:
            break
        await csms.wait_for("NotifyReport", before + len(pages) + 1)
    return {
        (d["component"]["name"], d["component"].get("evse", {}).get("id"), d["variableAttribute"][0]["value"])
        for page in pages
        for d in page["reportData"]
    }


async def test_n07_get_report_criterion_problem_includes_the_rcd_while_its_fault_is_active(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with with_fault_events(tmp_path) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", statuses_at_boot(V201))
        before = await _problem_report(csms, conn)
        board(ctx, 2).inject_fault(FaultCode.GROUND_FAILURE, "30 mA")
        await wait_event_data(csms, 1)
        during = await _problem_report(csms, conn)
    assert not {item for item in before if item[0] == "RCD"}
    assert ("RCD", 2, "true") in during
    assert ("EVSE", 2, "true") in during and ("ChargingStation", None, "true") in during
    assert not {item for item in during if item[0] == "RCD" and item[1] == 1}


async def test_n07_full_inventory_lists_the_components_problems(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    csms, conn = CsmsPeer(V201), MemoryConnection(V201)
    async with open_session_context(tmp_path, V201) as ctx, serving(csms, conn, ctx):
        await csms.wait_for("StatusNotification", statuses_at_boot(V201))
        await call(csms, conn, "GetBaseReport", {"requestId": 3, "reportBase": "FullInventory"})
        pages: list[dict[str, Any]] = []
        while not pages or pages[-1]["tbc"]:
            await csms.wait_for("NotifyReport", len(pages) + 1)
            pages = [s.call.payload for s in csms.of("NotifyReport")]
    reported = {
        (d["component"]["name"], d["component"].get("evse", {}).get("id"), d["variable"]["name"])
        for p in pages
        for d in p["reportData"]
    }
    assert {
        ("RCD", 1, "Problem"),
        ("FiscalMetering", 2, "Problem"),
        ("ConnectorPlugRetentionLock", 1, "Problem"),
    } <= reported


async def test_n07_a_carried_fault_holds_its_components_problem_after_a_restart(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """OverCurrentProtection of EVSE 1 was reported faulted before the restart: "true" from the start
    (as EVSE.Problem), "false" once the EVSEs settled without finding it again."""
    await _reported_then_restarted(tmp_path)
    async with with_fault_events(tmp_path) as ctx:
        assert ctx.device_model.get(_key("OverCurrentProtection")) == "true"
        assert ctx.device_model.get(_key("OverCurrentProtection", 2)) == "false"
        await trio.sleep(CARRIED_FAULTS_SETTLE_S + 1)
        await wait_pending(ctx, 1)
        assert ctx.device_model.get(_key("OverCurrentProtection")) == "false"


async def test_n07_a_fault_on_a_component_the_evse_does_not_declare_is_reported_and_not_kept(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The configuration says Yeti (no emergency stop); the board still reports one (here a sim board
    behind it). The event goes out; there is no EmergencyStopSensor to keep; the block goes on."""
    drivers = {1: {"controller": {"driver": "yeti", "device": "/dev/ttyS1"}, "meter": {"driver": "board"}}}
    async with (
        open_session_context(tmp_path, V201, run_evses=True, drivers=drivers) as ctx,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(blocks(ctx).run)
        assert _key("EmergencyStopSensor") not in ctx.device_model.definitions
        board(ctx, 1).inject_fault(FaultCode.EMERGENCY_STOP, "pressed")
        await wait_pending(ctx, 1)
        board(ctx, 1).inject_fault(FaultCode.GROUND_FAILURE, "30 mA")  # still followed after it
        await wait_pending(ctx, 2)
        assert ctx.device_model.get(_key("RCD")) == "true"
        assert ctx.device_model.get(_key("EVSE")) == "true"
        [stop, _] = blocks(ctx).pending
        nursery.cancel_scope.cancel()
    assert (stop.component, stop.evse_id, stop.active) == ("EmergencyStopSensor", 1, True)


# --- 1.6 ---------------------------------------------------------------------------------------------


async def test_16_get_configuration_lists_no_key_of_the_components(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A 1.6 station's device model has the rows too (one model for both versions); no key maps to them:
    GetConfiguration lists exactly the keys of the same station without them."""
    layout = layout_from_config(station_config(tmp_path, V16))
    assert any(evse.problem_components for evse in layout.evses)
    bare = StationLayout(
        tuple(
            replace(
                e,
                problem_components=(),
                connectors=tuple(replace(c, problem_components=()) for c in e.connectors),
            )
            for e in layout.evses
        ),
        network_slots=layout.network_slots,
    )
    expected, _ = V16KeyMap(build_definitions(bare), IMPLEMENTED_V16_PROFILES).get_configuration(
        None, lambda *_: None
    )
    csms = CsmsPeer(V16)
    async with online(tmp_path, V16, csms) as (_, conn):
        answer = await call(csms, conn, "GetConfiguration", {})
    assert sorted(k["key"] for k in answer["configurationKey"]) == sorted(k.key for k in expected)


async def test_n07_a_carried_fault_on_a_component_a_new_configuration_lacks_starts_cleanly_and_clears(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """station.toml changed driver between the runs: EVSE 1 was a sim board (an emergency stop was
    reported) and is now a Yeti (no EmergencyStopSensor). Nothing about the component was stored, so the
    start is clean; the carried fault is reported cleared after the settling, and the EVSE's other
    components are kept as before."""
    async with with_fault_events(tmp_path) as ctx:
        csms = CsmsPeer(V201)
        async with serving(csms, MemoryConnection(V201), ctx):
            board(ctx, 1).inject_fault(FaultCode.EMERGENCY_STOP, "pressed")
            await wait_event_data(csms, 1)
            await blocks(ctx).wait_sent()
    drivers = {1: {"controller": {"driver": "yeti", "device": "/dev/ttyS1"}, "meter": {"driver": "board"}}}
    async with (
        open_session_context(tmp_path, V201, run_evses=True, drivers=drivers) as ctx,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(blocks(ctx).run)
        assert _key("EmergencyStopSensor") not in ctx.device_model.definitions
        assert ctx.device_model.get(_key("EVSE")) == "true"  # carried
        await trio.sleep(CARRIED_FAULTS_SETTLE_S + 1)
        await wait_pending(ctx, 1)
        [cleared] = blocks(ctx).pending
        assert ctx.device_model.get(_key("EVSE")) == "false"
        board(ctx, 1).inject_fault(FaultCode.GROUND_FAILURE, "30 mA")  # the block goes on
        await wait_pending(ctx, 2)
        assert ctx.device_model.get(_key("RCD")) == "true"
        nursery.cancel_scope.cancel()
    assert (cleared.component, cleared.evse_id, cleared.active) == ("EmergencyStopSensor", 1, False)


async def test_n07_on_an_evse_with_two_connectors_the_event_and_the_variable_name_the_evses_lock(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with (
        open_session_context(tmp_path, V201, run_evses=True, connectors=(1, 2)) as ctx,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(blocks(ctx).run)
        board(ctx, 2).inject_fault(FaultCode.CONNECTOR_LOCK_FAILURE, "lock stuck")
        await wait_pending(ctx, 1)
        [event] = blocks(ctx).pending
        lock = "ConnectorPlugRetentionLock"
        assert ctx.device_model.get(_key(lock, 2)) == "true"
        assert _key(lock, 2, 1) not in ctx.device_model.definitions
        assert ctx.device_model.get(_key(lock, 1, 1)) == "false"
        nursery.cancel_scope.cancel()
    assert (event.component, event.evse_id, event.connector_id) == (lock, 2, None)

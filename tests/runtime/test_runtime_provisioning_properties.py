"""Properties of the provisioning handlers, driven directly (no connection) over a real SQLite file:
any schema-valid SetVariables / ChangeConfiguration within the limits is answered item by item and
what was applied reads back; over the limits the answer is the CALLERROR the spec names. Plus the
two versions reading each other's writes through the handlers.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from evstation.protocol.device_model import (
    AttributeDefinition,
    AttributeType,
    ComponentKey,
    DataType,
    DeviceModelDefinitions,
    Mutability,
    VariableDefinition,
    VariableKey,
    check_set,
)
from evstation.protocol.device_model.standard import ITEMS_PER_MESSAGE
from evstation.protocol.device_model.v16 import V16_KEYS, ConfigurationStatus
from evstation.protocol.errors import ErrorKind
from evstation.protocol.messages import PayloadError, parse_request
from evstation.protocol.v16 import messages as v16
from evstation.protocol.v201 import messages as v201
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.provisioning import Provisioning
from evstation.runtime.calls import HandlerError
from evstation.runtime.clock import WallClock
from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.device_model import (
    DATE_TIME,
    IMPLEMENTED_V16_PROFILES,
    definitions_for,
    open_device_model,
    seed_values,
)
from evstation.runtime.storage import open_storage
from evstation.runtime.uplink import Uplink

V201 = OcppVersion.V201
PASSWORD = VariableKey(ComponentKey("SecurityCtrlr"), "BasicAuthPassword")
REBOOTING = VariableKey(ComponentKey("OCPPCommCtrlr"), "VendorRebootSetting")
# The standard table's WriteOnly variable (A01), and what it does not have yet: a reboot-required one.
SYNTHETIC = (
    VariableDefinition(
        REBOOTING,
        DataType.BOOLEAN,
        (AttributeDefinition(AttributeType.ACTUAL, Mutability.READ_WRITE),),
        reboot_required=True,
        default="false",
    ),
)


def make_config(folder: Path) -> StationConfig:
    evse = {
        "connector": [{"id": 1, "type": "cType2", "max_current_a": 32}],
        "controller": {"driver": "sim"},
        "meter": {"driver": "sim"},
    }
    return parse_config(
        {
            "station": {"id": "CS-PROP-1", "vendor": "Acme", "model": "Wallbox", "ocpp_version": "2.0.1"},
            "csms": {"endpoints": [{"url": "ws://127.0.0.1:9/ocpp", "security_profile": 0}]},
            "evse": [{"id": 1, **evse}, {"id": 2, **evse}],
        },
        base_dir=folder,
    )


@asynccontextmanager
async def open_block(folder: Path) -> AsyncIterator[Provisioning]:
    config = make_config(folder)
    standard = definitions_for(config)
    definitions = DeviceModelDefinitions(standard.layout, [*standard, *SYNTHETIC])
    async with open_storage(folder / "station.db") as storage:
        model = await open_device_model(
            storage, definitions, seed_values(config), v16_profiles=IMPLEMENTED_V16_PROFILES
        )
        yield Provisioning(
            version=V201,
            identity=config.station,
            storage=storage,
            clock=WallClock.anchored(datetime(2025, 1, 1, tzinfo=UTC)),
            device_model=model,
            uplink=Uplink(),
        )


def run_in_fresh_station(tmp_path: Path, scenario: Callable[[Provisioning], Awaitable[None]]) -> None:
    async def main(folder: Path) -> None:
        async with open_block(folder) as block:
            await scenario(block)

    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        trio.run(main, Path(folder))


def _definitions() -> list[VariableDefinition]:
    with tempfile.TemporaryDirectory() as folder:
        standard = definitions_for(make_config(Path(folder)))
    return [*standard, *SYNTHETIC]


DEFINITIONS = _definitions()


def _wire(key: VariableKey) -> dict[str, Any]:
    component: dict[str, Any] = {"name": key.component.name}
    if key.component.instance is not None:
        component["instance"] = key.component.instance
    if key.component.evse_id is not None:
        component["evse"] = {"id": key.component.evse_id}
        if key.component.connector_id is not None:
            component["evse"]["connectorId"] = key.component.connector_id
    variable: dict[str, Any] = {"name": key.name}
    if key.instance is not None:
        variable["instance"] = key.instance
    return {"component": component, "variable": variable}


_NAMES = st.text(min_size=1, max_size=12)
_KEYS = st.sampled_from([d.key for d in DEFINITIONS]) | st.builds(
    lambda c, v, e: VariableKey(ComponentKey(c, evse_id=e), v),
    _NAMES,
    _NAMES,
    st.none() | st.integers(0, 3),
)
_VALUES = (
    st.sampled_from(["0", "1", "2", "60", "-1", "1.5", "true", "FALSE", "RST", "Unknown", "", "x" * 20])
    | st.integers(-(2**40), 2**40).map(str)
    | st.text(max_size=60)
)
_ATTRIBUTES = st.none() | st.sampled_from([a.value for a in AttributeType])


@st.composite
def set_variables_payloads(draw: st.DrawFn, min_items: int = 1, max_items: int = 8) -> dict[str, Any]:
    keys = draw(st.lists(_KEYS, min_size=min_items, max_size=max_items, unique=True))
    items = []
    for key in keys:
        entry = {**_wire(key), "attributeValue": draw(_VALUES)}
        attribute = draw(_ATTRIBUTES)
        if attribute is not None:
            entry["attributeType"] = attribute
        items.append(entry)
    return {"setVariableData": items}


def _model(action: str, payload: dict[str, Any]) -> Any:
    try:
        return parse_request(V201, action, payload)
    except PayloadError:
        pytest.skip("not schema-valid")  # pragma: no cover - the strategies only make valid ones


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=set_variables_payloads())
def test_b05_any_valid_set_variables_gets_a_status_per_item_and_applied_values_read_back(
    tmp_path: Path, payload: dict[str, Any]
) -> None:
    request: v201.SetVariablesRequest = _model("SetVariables", payload)

    async def scenario(block: Provisioning) -> None:
        response = await block.set_variables(request)
        assert isinstance(response, v201.SetVariablesResponse)
        assert len(response.set_variable_result) == len(request.set_variable_data)
        reads = [
            v201.GetVariableDataType(
                component=i.component, variable=i.variable, attribute_type=i.attribute_type
            )
            for i in request.set_variable_data
        ]
        read = await block.get_variables(v201.GetVariablesRequest(get_variable_data=reads))
        definitions = block._dm.definitions
        for item, result, got in zip(
            request.set_variable_data, response.set_variable_result, read.get_variable_result, strict=True
        ):
            key = VariableKey(
                ComponentKey(
                    item.component.name,
                    item.component.instance,
                    item.component.evse.id if item.component.evse else None,
                    item.component.evse.connector_id if item.component.evse else None,
                ),
                item.variable.name,
                item.variable.instance,
            )
            attribute = (
                AttributeType(str(item.attribute_type.value)) if item.attribute_type else AttributeType.ACTUAL
            )
            expected = check_set(definitions, key, attribute, item.attribute_value)
            assert str(result.attribute_status.value) == expected.status.value
            if not expected.applies:
                continue
            if key == PASSWORD:
                # WriteOnly: stored, never read back (B06.FR.09).
                assert (str(got.attribute_status.value), got.attribute_value) == ("Rejected", None)
            else:
                assert (str(got.attribute_status.value), got.attribute_value) == ("Accepted", expected.value)

    run_in_fresh_station(tmp_path, scenario)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    payload=set_variables_payloads(min_items=ITEMS_PER_MESSAGE + 1, max_items=ITEMS_PER_MESSAGE + 10),
    blob=st.integers(70_000, 80_000),
)
def test_b06_fr_16_fr_17_over_the_limits_is_the_named_callerror_and_nothing_is_applied(
    tmp_path: Path, payload: dict[str, Any], blob: int
) -> None:
    too_many: v201.SetVariablesRequest = _model("SetVariables", payload)
    too_big: v201.SetVariablesRequest = _model(
        "SetVariables",
        {"setVariableData": payload["setVariableData"][:1], "customData": {"vendorId": "x", "b": "y" * blob}},
    )

    async def scenario(block: Provisioning) -> None:
        stored = [d.key for d in block._dm.definitions if d.key != DATE_TIME]  # DateTime is the clock
        before = {key: block._dm.get(key) for key in stored}
        for request, kind in ((too_many, ErrorKind.OCCURRENCE_CONSTRAINT), (too_big, ErrorKind.FORMAT)):
            with pytest.raises(HandlerError) as raised:
                await block.set_variables(request)
            assert raised.value.kind is kind
            get = v201.GetVariablesRequest(
                get_variable_data=[
                    v201.GetVariableDataType(component=i.component, variable=i.variable)
                    for i in request.set_variable_data
                ],
                custom_data=request.custom_data,
            )
            with pytest.raises(HandlerError) as raised:
                await block.get_variables(get)
            assert raised.value.kind is kind
        assert {key: block._dm.get(key) for key in stored} == before

    run_in_fresh_station(tmp_path, scenario)


_V16_NAMES = (
    st.sampled_from([k.name for k in V16_KEYS])
    | st.sampled_from([k.name.upper() for k in V16_KEYS])
    | st.text(min_size=1, max_size=50)
)
_V16_VALUES = _VALUES | st.sampled_from(["0.RST,1.RTS,2.SRT", "Core", "Energy.Active.Import.Register", " 5 "])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(st.tuples(_V16_NAMES, _V16_VALUES), min_size=1, max_size=5))
@example(changes=[("AuthorizationKey", "x" * 20)])  # write-only: listed without its value
def test_v16_any_valid_change_configuration_gets_a_status_and_applied_values_read_back(
    tmp_path: Path, changes: list[tuple[str, str]]
) -> None:
    async def scenario(block: Provisioning) -> None:
        model = block._dm
        for name, value in changes:
            request = v16.ChangeConfigurationRequest(key=name, value=value)
            predicted = model.v16.change(name, value)
            response = await block.change_configuration(request)
            assert str(response.status.value) == predicted.status.value
            if predicted.status not in (ConfigurationStatus.ACCEPTED, ConfigurationStatus.REBOOT_REQUIRED):
                continue
            for write in predicted.writes:
                assert model.get(write.key, write.attribute) == write.value
            read = await block.get_configuration(v16.GetConfigurationRequest(key=[name]))
            assert read.unknown_key is None and read.configuration_key is not None
            (entry,) = read.configuration_key
            # AuthorizationKey is BasicAuthPassword, WriteOnly: stored, listed without its value.
            write_only = any(write.key == PASSWORD for write in predicted.writes)
            assert entry.readonly is False and (entry.value is None) is write_only

    run_in_fresh_station(tmp_path, scenario)


def test_set_variables_of_a_mapped_variable_reads_back_through_the_1_6_projection_and_back(
    tmp_path: Path,
) -> None:
    """SetVariables of OCPPCommCtrlr.HeartbeatInterval is 1.6 HeartbeatInterval; ChangeConfiguration
    of MeterValueSampleInterval is SampledDataCtrlr.TxUpdatedInterval, both through the handlers."""

    async def scenario(block: Provisioning) -> None:
        write = v201.SetVariableDataType(
            component=v201.ComponentType(name="OCPPCommCtrlr"),
            variable=v201.VariableType(name="HeartbeatInterval"),
            attribute_value="123",
        )
        set_result = await block.set_variables(v201.SetVariablesRequest(set_variable_data=[write]))
        assert str(set_result.set_variable_result[0].attribute_status.value) == "Accepted"
        read = await block.get_configuration(v16.GetConfigurationRequest(key=["HeartbeatInterval"]))
        assert read.configuration_key == [
            v16.ConfigurationKey(key="HeartbeatInterval", readonly=False, value="123")
        ]

        changed = await block.change_configuration(
            v16.ChangeConfigurationRequest(key="MeterValueSampleInterval", value="15")
        )
        assert str(changed.status.value) == "Accepted"
        got = await block.get_variables(
            v201.GetVariablesRequest(
                get_variable_data=[
                    v201.GetVariableDataType(
                        component=v201.ComponentType(name="SampledDataCtrlr"),
                        variable=v201.VariableType(name="TxUpdatedInterval"),
                    )
                ]
            )
        )
        assert got.get_variable_result[0].attribute_value == "15"

    run_in_fresh_station(tmp_path, scenario)

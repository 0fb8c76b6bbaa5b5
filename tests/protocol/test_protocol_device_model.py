"""The device-model definitions and the pure Get/SetVariables decisions (B05 / B06 rules).

Table tests per data type, lookups that tell unknown component / variable / attribute apart, the
station's honesty about what it cannot do, and a property test: check_set never raises.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from device_model_fixtures import (
    HEARTBEAT,
    PASSWORD,
    RANGED,
    REBOOTING,
    TWO_EVSES,
    controller,
    extended_definitions,
    standard_definitions,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from evstation.protocol.device_model import (
    AttributeDefinition,
    AttributeType,
    ComponentKey,
    ConnectorLayout,
    DataType,
    DeviceModelDefinitions,
    EvseLayout,
    GetStatus,
    Mutability,
    ReasonCode,
    SetStatus,
    StationLayout,
    VariableDefinition,
    VariableKey,
    check_get,
    check_set,
    check_value,
)
from evstation.protocol.device_model.standard import (
    CONNECTOR_ROWS,
    EVSE_ROWS,
    ITEMS_PER_MESSAGE,
    STATION_ROWS,
)
from evstation.protocol.device_model.v16 import V16_KEYS

DEFS = standard_definitions()
EXTENDED = extended_definitions()
ACTUAL = AttributeType.ACTUAL


def evse(evse_id: int, name: str) -> VariableKey:
    return VariableKey(ComponentKey("EVSE", evse_id=evse_id), name)


def connector(evse_id: int, connector_id: int, name: str) -> VariableKey:
    return VariableKey(ComponentKey("Connector", evse_id=evse_id, connector_id=connector_id), name)


# --- the definitions -------------------------------------------------------------------------------


def test_physical_components_are_instantiated_per_evse_and_connector_from_the_layout() -> None:
    evse_components = [c for c in DEFS.components() if c.name == "EVSE"]
    connector_components = [c for c in DEFS.components() if c.name == "Connector"]
    assert [c.evse_id for c in evse_components] == [1, 2]
    assert [(c.evse_id, c.connector_id) for c in connector_components] == [(1, 1), (2, 1), (2, 2)]
    assert DEFS[evse(1, "SupplyPhases")].default == "3"
    assert DEFS[evse(2, "SupplyPhases")].default == "1"  # the largest of a DC (0) and a 1-phase connector
    assert DEFS[evse(1, "Power")].max_limit == 22080.0
    assert DEFS[evse(2, "Power")].max_limit is None  # unknown for a DC connector: not claimed
    assert DEFS[connector(2, 1, "ConnectorType")].default == "cCCS2"
    assert DEFS[connector(2, 1, "SupplyPhases")].default == "0"  # DC
    assert DEFS[connector(2, 1, "PhaseRotation")].default == "NotApplicable"
    assert DEFS[connector(1, 1, "PhaseRotation")].default == "Unknown"
    assert DEFS[controller("ChargingStation", "SupplyPhases")].default == "3"
    priority = DEFS[controller("OCPPCommCtrlr", "NetworkConfigurationPriority")]
    assert (priority.default, priority.values_list) == ("1,2", ("1", "2"))


def test_every_default_is_a_valid_value_of_its_own_variable() -> None:
    for definition in EXTENDED:
        if definition.default is not None:
            decision = check_value(definition, definition.default)
            assert decision.applies, (str(definition.key), decision.info)
            assert decision.value == definition.default, str(definition.key)


def test_controllers_of_blocks_not_built_say_they_are_not_available() -> None:
    for name in ("SmartChargingCtrlr",):
        available = DEFS[controller(name, "Available")]
        assert (available.default, available.mutability(), available.constant) == (
            "false",
            Mutability.READ_ONLY,
            True,
        )
    assert DEFS[controller("SampledDataCtrlr", "Available")].default == "true"
    # ISO 15118 and CHAdeMO need hardware we do not have: no component at all.
    assert not [c for c in DEFS.components() if c.name in ("ISO15118Ctrlr", "CHAdeMOCtrlr")]


def test_tx_start_and_stop_points_offer_only_what_the_hardware_detects() -> None:
    for name in ("TxStartPoint", "TxStopPoint"):
        definition = DEFS[controller("TxCtrlr", name)]
        assert definition.values_list is not None
        assert "ParkingBayOccupancy" not in definition.values_list  # no bay detector
        assert "DataSigned" not in definition.values_list  # no signing meter
        assert {"EVConnected", "Authorized"} <= set(definition.values_list)


def test_held_variables_are_read_only_and_say_why() -> None:
    held = [d for d in DEFS if d.note is not None]
    assert held, "the table holds some spec-writable variables until their block lands"
    for definition in held:
        assert definition.mutability() is Mutability.READ_ONLY
    decision = check_set(DEFS, controller("OCPPCommCtrlr", "QueueAllMessages"), ACTUAL, "true")
    assert (decision.status, decision.reason_code) == (SetStatus.REJECTED, ReasonCode.READ_ONLY)
    assert decision.info is not None and "only transaction messages are queued" in decision.info
    # E09 / E10: served now, so writable.
    decision = check_set(DEFS, controller("TxCtrlr", "StopTxOnEVSideDisconnect"), ACTUAL, "false")
    assert decision.status is SetStatus.ACCEPTED
    decision = check_set(DEFS, controller("OCPPCommCtrlr", "UnlockOnEVSideDisconnect"), ACTUAL, "false")
    assert decision.status is SetStatus.ACCEPTED


def test_request_limits_are_reported_for_each_action() -> None:
    for action in ("GetReport", "GetVariables", "SetVariables"):
        items = DEFS[controller("DeviceDataCtrlr", "ItemsPerMessage", action)]
        assert items.default == str(ITEMS_PER_MESSAGE)
        assert (
            DEFS[controller("DeviceDataCtrlr", "BytesPerMessage", action)].mutability()
            is Mutability.READ_ONLY
        )


def test_a_variable_defined_twice_or_without_actual_is_refused() -> None:
    definition = DEFS[HEARTBEAT]
    with pytest.raises(ValueError, match="defined twice"):
        DeviceModelDefinitions(TWO_EVSES, [definition, definition])
    target_only = VariableDefinition(
        controller("X", "Y"),
        DataType.INTEGER,
        (AttributeDefinition(AttributeType.TARGET, Mutability.READ_WRITE),),
    )
    with pytest.raises(ValueError, match="first attribute must be Actual"):
        DeviceModelDefinitions(TWO_EVSES, [target_only])


def test_layouts_must_be_numbered_from_one() -> None:
    with pytest.raises(ValueError, match="EVSE ids"):
        StationLayout((EvseLayout(2, (ConnectorLayout(1, "cType2", 3),)),))
    with pytest.raises(ValueError, match="connector ids"):
        StationLayout((EvseLayout(1, (ConnectorLayout(2, "cType2", 3),)),))


# --- lookups: B05.FR / B06.FR statuses ------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "attribute", "set_status", "get_status"),
    [
        (
            controller("NoSuchCtrlr", "HeartbeatInterval"),
            ACTUAL,
            SetStatus.UNKNOWN_COMPONENT,
            GetStatus.UNKNOWN_COMPONENT,
        ),
        (
            controller("OCPPCommCtrlr", "NoSuchVariable"),
            ACTUAL,
            SetStatus.UNKNOWN_VARIABLE,
            GetStatus.UNKNOWN_VARIABLE,
        ),
        (
            HEARTBEAT,
            AttributeType.TARGET,
            SetStatus.NOT_SUPPORTED_ATTRIBUTE_TYPE,
            GetStatus.NOT_SUPPORTED_ATTRIBUTE_TYPE,
        ),
        # An EVSE-scoped component is a different component on another EVSE, or without one.
        (evse(3, "AvailabilityState"), ACTUAL, SetStatus.UNKNOWN_COMPONENT, GetStatus.UNKNOWN_COMPONENT),
        (
            VariableKey(ComponentKey("EVSE"), "Power"),
            ACTUAL,
            SetStatus.UNKNOWN_COMPONENT,
            GetStatus.UNKNOWN_COMPONENT,
        ),
        # The instance is part of the name: MessageTimeout exists only as instance "Default".
        (
            controller("OCPPCommCtrlr", "MessageTimeout"),
            ACTUAL,
            SetStatus.UNKNOWN_VARIABLE,
            GetStatus.UNKNOWN_VARIABLE,
        ),
    ],
)
def test_lookup_tells_unknown_component_variable_and_attribute_apart(
    key: VariableKey, attribute: AttributeType, set_status: SetStatus, get_status: GetStatus
) -> None:
    assert check_set(DEFS, key, attribute, "60").status is set_status
    assert check_get(DEFS, key, attribute).status is get_status


def test_read_only_is_rejected_for_writes_and_write_only_for_reads() -> None:
    vendor = controller("ChargingStation", "VendorName")
    assert check_set(DEFS, vendor, ACTUAL, "x").reason_code is ReasonCode.READ_ONLY
    assert check_get(DEFS, vendor).status is GetStatus.ACCEPTED
    # WriteOnly (B06: a write-only value is never read back).
    denied = check_get(EXTENDED, PASSWORD)
    assert (denied.status, denied.reason_code) == (GetStatus.REJECTED, ReasonCode.WRITE_ONLY)
    assert check_set(EXTENDED, PASSWORD, ACTUAL, "0123456789abcdef").status is SetStatus.ACCEPTED
    # A second attribute type with its own mutability.
    assert check_set(EXTENDED, RANGED, AttributeType.MAX_SET, "5").reason_code is ReasonCode.READ_ONLY
    assert check_get(EXTENDED, RANGED, AttributeType.MAX_SET).status is GetStatus.ACCEPTED


def test_reboot_required_variable_answers_reboot_required_with_the_value_to_store() -> None:
    decision = check_set(EXTENDED, REBOOTING, ACTUAL, "TRUE")
    assert (decision.status, decision.value, decision.applies) == (SetStatus.REBOOT_REQUIRED, "true", True)


# --- values: type, range, values list ---------------------------------------------------------------

MEASURANDS = controller("SampledDataCtrlr", "TxUpdatedMeasurands")


def _writable(key: VariableKey) -> VariableDefinition:
    """The definition made ReadWrite, to test value rules on variables held read-only."""
    definition = EXTENDED[key]
    return replace(definition, attributes=(AttributeDefinition(ACTUAL, Mutability.READ_WRITE),))


@pytest.mark.parametrize(
    ("key", "value", "expected", "reason"),
    [
        # integer, minLimit 1
        (HEARTBEAT, "60", "60", None),
        (HEARTBEAT, "+60", "60", None),
        (HEARTBEAT, "0060", "60", None),
        (HEARTBEAT, "0", None, ReasonCode.VALUE_TOO_LOW),
        (HEARTBEAT, "-5", None, ReasonCode.VALUE_TOO_LOW),
        (HEARTBEAT, "1.5", None, ReasonCode.INVALID_VALUE),
        (HEARTBEAT, " 60", None, ReasonCode.INVALID_VALUE),
        (HEARTBEAT, "", None, ReasonCode.INVALID_VALUE),
        (HEARTBEAT, "sixty", None, ReasonCode.INVALID_VALUE),
        (HEARTBEAT, "2147483648", None, ReasonCode.VALUE_TOO_HIGH),  # beyond a 32-bit integer
        (HEARTBEAT, "9" * 60, None, ReasonCode.INVALID_VALUE),
        # decimal, -1.5 .. 100
        (RANGED, "1.50", "1.5", None),
        (RANGED, "-1.5", "-1.5", None),
        (RANGED, "-0", "0", None),
        (RANGED, ".5", "0.5", None),
        (RANGED, "100", "100", None),
        (RANGED, "100.01", None, ReasonCode.VALUE_TOO_HIGH),
        (RANGED, "-2", None, ReasonCode.VALUE_TOO_LOW),
        (RANGED, "1e2", None, ReasonCode.INVALID_VALUE),
        (RANGED, "NaN", None, ReasonCode.INVALID_VALUE),
        # boolean: any letter case, stored lower-case
        (REBOOTING, "True", "true", None),
        (REBOOTING, "false", "false", None),
        (REBOOTING, "1", None, ReasonCode.INVALID_VALUE),
        # string: minLimit / maxLimit are lengths
        (PASSWORD, "x" * 16, "x" * 16, None),
        (PASSWORD, "x" * 15, None, ReasonCode.INVALID_VALUE),
        (PASSWORD, "x" * 41, None, ReasonCode.TOO_LARGE_ELEMENT),
        # passwordString: a-z A-Z 0-9 * - _ = : + | @ . only.
        (PASSWORD, "aZ09*-_=:+|@.xyz", "aZ09*-_=:+|@.xyz", None),
        (PASSWORD, "sixteen-chars-ok!", None, ReasonCode.INVALID_VALUE),
        (PASSWORD, "with a space 0123", None, ReasonCode.INVALID_VALUE),
        (PASSWORD, "x" * 1001, None, ReasonCode.TOO_LARGE_ELEMENT),
        # MemberList: a subset of valuesList, at most maxLimit members, no repeats
        (MEASURANDS, "Power.Active.Import, Current.Import", "Power.Active.Import,Current.Import", None),
        (MEASURANDS, "", "", None),
        (MEASURANDS, "SoC", None, ReasonCode.INVALID_VALUE),
        (MEASURANDS, "Current.Import,Current.Import", None, ReasonCode.INVALID_VALUE),
        (MEASURANDS, "Current.Import,,Power.Active.Import", None, ReasonCode.INVALID_VALUE),
        # OptionList: exactly one of valuesList
        (controller("ChargingStation", "PhaseRotation"), "RST", "RST", None),
        (controller("ChargingStation", "PhaseRotation"), "rst", None, ReasonCode.INVALID_VALUE),
        (controller("ChargingStation", "PhaseRotation"), "RST,RTS", None, ReasonCode.INVALID_VALUE),
        # dateTime: RFC 3339 with an offset
        (controller("ClockCtrlr", "DateTime"), "2025-01-02T03:04:05Z", "2025-01-02T03:04:05Z", None),
        (
            controller("ClockCtrlr", "DateTime"),
            "2025-01-02T03:04:05.123+01:00",
            "2025-01-02T03:04:05.123+01:00",
            None,
        ),
        (controller("ClockCtrlr", "DateTime"), "2025-01-02T03:04:05", None, ReasonCode.INVALID_VALUE),
        (controller("ClockCtrlr", "DateTime"), "2025-13-02T03:04:05Z", None, ReasonCode.INVALID_VALUE),
    ],
)
def test_value_rules(key: VariableKey, value: str, expected: str | None, reason: ReasonCode | None) -> None:
    decision = check_value(_writable(key), value)
    assert decision.value == expected
    assert decision.reason_code is reason
    assert decision.applies is (expected is not None)
    if decision.info is not None:
        assert len(decision.info) <= 512


def test_member_list_max_limit_counts_members_and_sequence_list_keeps_order() -> None:
    too_many = VariableDefinition(
        controller("X", "List"),
        DataType.SEQUENCE_LIST,
        (AttributeDefinition(ACTUAL, Mutability.READ_WRITE),),
        values_list=("a", "b", "c"),
        max_limit=2,
    )
    assert check_value(too_many, "c,a").value == "c,a"
    assert check_value(too_many, "a,b,c").reason_code is ReasonCode.TOO_MANY_ELEMENTS


# --- never raises -----------------------------------------------------------------------------------

_keys = st.sampled_from([d.key for d in EXTENDED])
_attributes = st.sampled_from(list(AttributeType))
_texts = st.text(max_size=60) | st.sampled_from(["true", "FALSE", "-0", "1e9", "2147483647", ",", " , "])


@settings(max_examples=400, deadline=None)
@given(key=_keys, attribute=_attributes, value=_texts)
def test_check_set_never_raises_and_normalises_idempotently(
    key: VariableKey, attribute: AttributeType, value: str
) -> None:
    decision = check_set(EXTENDED, key, attribute, value)
    assert decision.status in SetStatus
    if decision.applies:
        assert decision.value is not None and decision.definition is not None
        again = check_value(decision.definition, decision.value)
        assert again.value == decision.value
    else:
        assert decision.value is None
    assert check_get(EXTENDED, key, attribute).status in GetStatus


def test_docs_name_every_variable_and_every_1_6_key() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "device-model.md").read_text(encoding="utf-8")
    for row in (*STATION_ROWS, *EVSE_ROWS, *CONNECTOR_ROWS):
        name = row.variable if row.instance is None else f"{row.variable}[{row.instance}]"
        assert f"| {name} |" in text, f"docs/device-model.md does not list {row.component}.{name}"
    for key in V16_KEYS:
        assert f"| {key.name} |" in text, f"docs/device-model.md does not list the 1.6 key {key.name}"


def test_tx_start_point_offers_data_signed_only_when_every_meter_signs() -> None:
    """TxStartPointValues DataSigned needs a signed start reading: offered when all EVSEs' meters sign
    (TxStartPoint is one for the station), and never for TxStopPoint (a start point only)."""
    from evstation.protocol.device_model import build_definitions

    def start_and_stop(*signs: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
        layout = StationLayout(
            tuple(EvseLayout(i, (ConnectorLayout(1),), meter_signs=s) for i, s in enumerate(signs, 1))
        )
        defs = build_definitions(layout)
        start = defs[controller("TxCtrlr", "TxStartPoint")].values_list
        stop = defs[controller("TxCtrlr", "TxStopPoint")].values_list
        assert start is not None and stop is not None
        return start, stop

    start, stop = start_and_stop(True, True)
    assert "DataSigned" in start and "DataSigned" not in stop
    assert "DataSigned" not in start_and_stop(True, False)[0]
    defs = build_definitions(StationLayout((EvseLayout(1, (ConnectorLayout(1),), meter_signs=True),)))
    assert check_set(defs, controller("TxCtrlr", "TxStartPoint"), ACTUAL, "DataSigned").applies
    assert not check_set(DEFS, controller("TxCtrlr", "TxStartPoint"), ACTUAL, "DataSigned").applies

"""Reports (B07 GetBaseReport, B08 GetReport): which variables, which values, and NotifyReport pages.

Every page is validated against the generated NotifyReportRequest model (the official schema).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from device_model_fixtures import (
    PASSWORD,
    RANGED,
    controller,
    extended_definitions,
    standard_definitions,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from evstation.protocol.device_model import (
    AttributeType,
    ComponentKey,
    Mutability,
    VariableDefinition,
    VariableKey,
)
from evstation.protocol.errors import ErrorKind
from evstation.protocol.provisioning import (
    REPORT_PAGE_BYTES,
    ComponentCriterion,
    ComponentVariableFilter,
    NetworkProfile,
    NetworkProfileReason,
    ReportBase,
    ValueReader,
    base_report,
    check_network_profile,
    custom_report,
    notify_report_pages,
    report_data,
    request_limit_error,
)
from evstation.protocol.v201.messages import (
    ComponentType,
    ComponentVariableType,
    EVSEType,
    NotifyReportRequest,
)

DEFS = standard_definitions()
EXTENDED = extended_definitions()
AT = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def reader(overrides: dict[VariableKey, str] | None = None) -> ValueReader:
    store = {d.key: d.default for d in EXTENDED if d.default is not None}
    store.update(overrides or {})
    return lambda key, attribute: store.get(key) if attribute is AttributeType.ACTUAL else None


def size(payload: object) -> int:
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def names(definitions: list[VariableDefinition]) -> set[str]:
    return {str(d.key) for d in definitions}


def carried(pages: list[dict[str, object]]) -> list[object]:
    out: list[object] = []
    for page in pages:
        data = page["reportData"]
        assert isinstance(data, list)
        out.extend(data)
    return out


# --- GetBaseReport ------------------------------------------------------------------------------------


def test_full_inventory_has_every_variable_and_configuration_inventory_only_the_writable_ones() -> None:
    full = base_report(DEFS, ReportBase.FULL_INVENTORY)
    configuration = base_report(DEFS, ReportBase.CONFIGURATION_INVENTORY)
    assert len(full) == len(DEFS)
    assert configuration and all(d.writable for d in configuration)
    # B07: ReadWrite and WriteOnly (SecurityCtrlr.BasicAuthPassword) variables.
    writable = (Mutability.READ_WRITE, Mutability.WRITE_ONLY)
    assert {d.key for d in configuration} == {d.key for d in DEFS if d.mutability() in writable}
    assert "SecurityCtrlr.BasicAuthPassword" in names(configuration)
    assert "OCPPCommCtrlr.HeartbeatInterval" in names(configuration)
    assert "ChargingStation.VendorName" not in names(configuration)


def test_summary_inventory_is_availability_and_problems() -> None:
    summary = names(base_report(DEFS, ReportBase.SUMMARY_INVENTORY))
    assert "ChargingStation.AvailabilityState" in summary
    assert "EVSE@evse2.AvailabilityState" in summary
    assert "Connector@evse2.2.AvailabilityState" in summary
    assert "EVSE@evse1.Problem" in summary and "ChargingStation.Problem" in summary
    assert "OCPPCommCtrlr.HeartbeatInterval" not in summary
    # Controllers' Available says whether a block exists, not charging availability.
    assert "AuthCacheCtrlr.Available" not in summary


def test_write_only_values_are_never_reported() -> None:
    item = report_data([EXTENDED[PASSWORD]], reader({PASSWORD: "a-secret-of-16-chars"}))[0]
    assert item["variableAttribute"] == [
        {"type": "Actual", "mutability": "WriteOnly", "persistent": True, "constant": False}
    ]


def test_report_items_carry_attributes_and_characteristics() -> None:
    [item] = report_data([EXTENDED[RANGED]], reader({RANGED: "2.5"}))
    assert item == {
        "component": {"name": "TestCtrlr"},
        "variable": {"name": "Ranged"},
        "variableAttribute": [
            {
                "type": "Actual",
                "value": "2.5",
                "mutability": "ReadWrite",
                "persistent": True,
                "constant": False,
            },
            {"type": "MaxSet", "mutability": "ReadOnly", "persistent": True, "constant": False},
        ],
        "variableCharacteristics": {
            "dataType": "decimal",
            "minLimit": -1.5,
            "maxLimit": 100,
            "supportsMonitoring": False,
        },
    }
    connector = VariableKey(ComponentKey("Connector", evse_id=2, connector_id=1), "ConnectorType")
    [item] = report_data([DEFS[connector]], reader())
    assert item["component"] == {"name": "Connector", "evse": {"id": 2, "connectorId": 1}}


# --- GetReport ------------------------------------------------------------------------------------


def test_b08_fr_07_to_09_components_without_the_criterion_variable_are_reported() -> None:
    # Enabled: controllers with Enabled=true and every component that has no Enabled variable.
    chosen = names(custom_report(DEFS, reader(), [ComponentCriterion.ENABLED]))
    assert "SampledDataCtrlr.TxUpdatedInterval" in chosen  # Enabled = true
    assert "OCPPCommCtrlr.HeartbeatInterval" in chosen  # no Enabled variable
    assert "SmartChargingCtrlr.Available" not in chosen  # Enabled = false (smart charging not built)
    chosen = names(custom_report(DEFS, reader(), [ComponentCriterion.AVAILABLE]))
    assert "SmartChargingCtrlr.Enabled" not in chosen  # Available = false
    assert "EVSE@evse1.Power" in chosen


def test_b08_fr_10_problem_reports_only_components_with_a_problem() -> None:
    assert custom_report(DEFS, reader(), [ComponentCriterion.PROBLEM]) == []
    faulted = reader({VariableKey(ComponentKey("EVSE", evse_id=2), "Problem"): "true"})
    chosen = custom_report(DEFS, faulted, [ComponentCriterion.PROBLEM])
    assert {d.key.component for d in chosen} == {ComponentKey("EVSE", evse_id=2)}
    # Criteria are alternatives: Problem or Enabled.
    either = custom_report(DEFS, faulted, [ComponentCriterion.PROBLEM, ComponentCriterion.ENABLED])
    assert ComponentKey("EVSE", evse_id=2) in {d.key.component for d in either}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        # A component without a variable: all its variables.
        ([ComponentVariableFilter("OCPPCommCtrlr")], lambda k: k.component.name == "OCPPCommCtrlr"),
        # One variable; without an instance every instance of it.
        (
            [ComponentVariableFilter("DeviceDataCtrlr", variable="ItemsPerMessage")],
            lambda k: k.component.name == "DeviceDataCtrlr" and k.name == "ItemsPerMessage",
        ),
        (
            [
                ComponentVariableFilter(
                    "DeviceDataCtrlr", variable="ItemsPerMessage", variable_instance="GetReport"
                )
            ],
            lambda k: str(k) == "DeviceDataCtrlr.ItemsPerMessage[GetReport]",
        ),
        # EVSE scoping: every EVSE; one EVSE; one EVSE's connectors; one connector.
        (
            [ComponentVariableFilter("EVSE", variable="Power")],
            lambda k: k.component.name == "EVSE" and k.name == "Power",
        ),
        (
            [ComponentVariableFilter("EVSE", evse_id=2)],
            lambda k: k.component == ComponentKey("EVSE", evse_id=2),
        ),
        (
            [ComponentVariableFilter("Connector", evse_id=2)],
            lambda k: k.component.name == "Connector" and k.component.evse_id == 2,
        ),
        (
            [ComponentVariableFilter("Connector", evse_id=2, connector_id=2, variable="ConnectorType")],
            lambda k: str(k) == "Connector@evse2.2.ConnectorType",
        ),
        ([ComponentVariableFilter("NoSuchCtrlr")], lambda k: False),
    ],
)
def test_component_variable_filters(filters: list[ComponentVariableFilter], expected: object) -> None:
    chosen = {d.key for d in custom_report(DEFS, reader(), filters=filters)}
    assert callable(expected)
    assert chosen == {d.key for d in DEFS if expected(d.key)}


def test_criteria_and_filters_both_apply_tc_b_18() -> None:
    availability = ComponentVariableFilter("EVSE", evse_id=1, variable="AvailabilityState")
    chosen = custom_report(DEFS, reader(), [ComponentCriterion.AVAILABLE], [availability])
    assert [str(d.key) for d in chosen] == ["EVSE@evse1.AvailabilityState"]
    assert custom_report(DEFS, reader(), [ComponentCriterion.PROBLEM], [availability]) == []  # EmptyResultSet


def test_filter_from_the_generated_model() -> None:
    model = ComponentVariableType(
        component=ComponentType(name="Connector", evse=EVSEType(id=2, connector_id=1))
    )
    assert ComponentVariableFilter.from_model(model) == ComponentVariableFilter(
        "Connector", evse_id=2, connector_id=1
    )


# --- NotifyReport pages ---------------------------------------------------------------------------


def test_full_inventory_pages_validate_and_respect_the_budget() -> None:
    items = report_data(base_report(DEFS, ReportBase.FULL_INVENTORY), reader())
    pages = notify_report_pages(items, request_id=7, generated_at=AT)
    assert len(pages) > 1
    assert [p["seqNo"] for p in pages] == list(range(len(pages)))
    assert [p["tbc"] for p in pages] == [True] * (len(pages) - 1) + [False]
    assert carried(pages) == items
    for page in pages:
        assert size(page) <= REPORT_PAGE_BYTES
        model = NotifyReportRequest.model_validate(page)
        assert model.request_id == 7 and model.generated_at == AT


@settings(max_examples=60, deadline=None)
@given(
    budget=st.integers(min_value=700, max_value=6000),
    value=st.text(min_size=0, max_size=400),
    count=st.integers(min_value=1, max_value=40),
)
def test_any_budget_is_respected_with_multibyte_values(budget: int, value: str, count: int) -> None:
    [template] = report_data([DEFS[controller("ChargingStation", "Model")]], reader())
    items = []
    for n in range(count):
        item = dict(template)
        item["variableAttribute"] = [{"type": "Actual", "value": f"{n}é{value}"[:400]}]
        items.append(item)
    pages = notify_report_pages(items, request_id=1, generated_at=AT, budget_bytes=budget)
    assert carried(pages) == items
    for seq_no, page in enumerate(pages):
        assert size(page) <= budget
        assert page["seqNo"] == seq_no and page["tbc"] is (seq_no < len(pages) - 1)
        NotifyReportRequest.model_validate(page)


def test_no_items_no_pages_and_an_item_too_big_for_the_budget_is_a_bug() -> None:
    assert notify_report_pages([], request_id=1, generated_at=AT) == []
    items = report_data(base_report(DEFS, ReportBase.FULL_INVENTORY), reader())
    with pytest.raises(ValueError, match="does not fit"):
        notify_report_pages(items, request_id=1, generated_at=AT, budget_bytes=200)
    with pytest.raises(ValueError, match="timezone-aware"):
        notify_report_pages(items, request_id=1, generated_at=AT.replace(tzinfo=None))


def test_generated_at_is_utc() -> None:
    local = AT.astimezone(timezone(timedelta(hours=2)))
    [page] = notify_report_pages(
        report_data([DEFS[controller("ChargingStation", "Model")]], reader()),
        request_id=1,
        generated_at=local,
    )
    assert page["generatedAt"] == "2025-01-02T03:04:05.000Z"


def test_request_limits_name_the_callerror_of_b08_fr_17_and_18() -> None:
    assert request_limit_error(64, 65536, 64, 65536) is None
    assert request_limit_error(65, 100, 64, 65536) is ErrorKind.OCCURRENCE_CONSTRAINT
    assert request_limit_error(1, 65537, 64, 65536) is ErrorKind.FORMAT


# --- SetNetworkProfile (B09) ------------------------------------------------------------------------


def _profile(url: str = "wss://csms.example/ocpp", security: int = 2, **extra: object) -> NetworkProfile:
    fields: dict[str, object] = {
        "ocpp_version": "OCPP20",
        "ocpp_transport": "JSON",
        "ocpp_csms_url": url,
        "message_timeout": 30,
        "security_profile": security,
        "ocpp_interface": "Wired0",
        **extra,
    }
    return NetworkProfile(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("slot", "profile", "active", "reason"),
    [
        (1, _profile(), 2, None),  # B09.FR.01
        (1, _profile("ws://csms.example/ocpp", 1), 1, None),
        (3, _profile(), 2, NetworkProfileReason.INVALID_CONF_SLOT),  # B09.FR.05
        (
            1,
            _profile("ws://csms.example/ocpp", 1),
            2,
            NetworkProfileReason.NO_SECURITY_DOWNGRADE,
        ),  # B09.FR.04
        (1, _profile("ws://csms.example/ocpp", 2), 0, NetworkProfileReason.INVALID_NETWORK_CONF),  # B09.FR.02
        (1, _profile("wss://", 2), 0, NetworkProfileReason.INVALID_NETWORK_CONF),
        (1, _profile(security=4), 0, NetworkProfileReason.INVALID_NETWORK_CONF),
        (1, _profile(ocpp_version="OCPP16"), 0, NetworkProfileReason.INVALID_NETWORK_CONF),
        (1, _profile(ocpp_transport="SOAP"), 0, NetworkProfileReason.INVALID_NETWORK_CONF),
        (1, _profile(message_timeout=0), 0, NetworkProfileReason.INVALID_NETWORK_CONF),
        (1, _profile(has_apn=True), 0, NetworkProfileReason.INVALID_NETWORK_CONF),
    ],
)
def test_b09_network_profile_slot_downgrade_and_content_rules(
    slot: int, profile: NetworkProfile, active: int, reason: NetworkProfileReason | None
) -> None:
    decision = check_network_profile(slot, profile, (1, 2), active)
    assert decision.reason is reason
    assert decision.accepted is (reason is None)
    assert (decision.info is None) is (reason is None)
    assert len(reason or "") <= 20  # StatusInfoType.reasonCode

"""The 1.6 configuration keys as a projection of the device model (GetConfiguration / ChangeConfiguration).

1.6 section 9 (standard configuration keys), section 5.3 / 5.8 (ChangeConfiguration, GetConfiguration):
readonly keys answer Rejected, unknown keys NotSupported / unknownKey, values follow the 1.6 types.
"""

from __future__ import annotations

import pytest
from device_model_fixtures import (
    PASSWORD,
    RATE_UNIT,
    REBOOTING,
    TWO_EVSES,
    controller,
    extended_definitions,
    standard_definitions,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from evstation.protocol.device_model import AttributeType, ComponentKey, DataType, VariableKey
from evstation.protocol.device_model.v16 import (
    FEATURE_PROFILES,
    GET_CONFIGURATION_MAX_KEYS,
    V16_KEYS,
    ConfigurationStatus,
    Projection,
    V16Key,
    V16KeyMap,
    V16Profile,
    V16Type,
    V201Write,
    ValueReader,
)

DEFS = standard_definitions()
EXTENDED = extended_definitions()
CORE = frozenset({V16Profile.CORE})
ACTUAL = AttributeType.ACTUAL

# The Core keys 1.6 section 9.1 marks required (ocpp16-config-keys.csv, "required" = yes).
REQUIRED_CORE = """\
AuthorizeRemoteTxRequests,ClockAlignedDataInterval,ConnectionTimeOut,ConnectorPhaseRotation,
GetConfigurationMaxKeys,HeartbeatInterval,LocalAuthorizeOffline,LocalPreAuthorize,MeterValuesAlignedData,
MeterValuesSampledData,MeterValueSampleInterval,NumberOfConnectors,ResetRetries,StopTransactionOnInvalidId,
StopTxnAlignedData,StopTxnSampledData,SupportedFeatureProfiles,TransactionMessageAttempts,
TransactionMessageRetryInterval,UnlockConnectorOnEVSideDisconnect"""


def defaults() -> dict[VariableKey, str]:
    return {d.key: d.default for d in EXTENDED if d.default is not None}


def reader(store: dict[VariableKey, str]) -> ValueReader:
    return lambda key, attribute: store.get(key) if attribute is ACTUAL else None


def test_every_required_core_key_is_served() -> None:
    keys = V16KeyMap(DEFS, CORE)
    required = [name.strip() for name in REQUIRED_CORE.split(",")]
    assert len(required) == 20
    missing = [name for name in required if keys.key(name) is None]
    assert missing == []


def test_get_configuration_without_keys_lists_every_key_with_values_and_readonly_flags() -> None:
    store = defaults()
    entries, unknown = V16KeyMap(DEFS, CORE).get_configuration(None, reader(store))
    by_key = {entry.key: entry for entry in entries}
    assert unknown == []
    assert by_key["HeartbeatInterval"].value == "300" and not by_key["HeartbeatInterval"].readonly
    assert by_key["NumberOfConnectors"].value == "3" and by_key["NumberOfConnectors"].readonly
    assert by_key["GetConfigurationMaxKeys"].value == str(GET_CONFIGURATION_MAX_KEYS)
    assert (
        by_key["MeterValuesSampledData"].value
        == "Energy.Active.Import.Register,Power.Active.Import,Current.Import"
    )
    assert by_key["MeterValuesSampledDataMaxLength"].value == "7"
    assert by_key["ConnectorPhaseRotation"].value == "0.Unknown,1.Unknown,2.NotApplicable,3.Unknown"
    assert by_key["ConnectorPhaseRotationMaxLength"].value == "4"
    # Keys of profiles we do not implement, and keys with no counterpart, are not listed.
    assert "LocalAuthListEnabled" not in by_key
    assert "BlinkRepeat" not in by_key and "LightIntensity" not in by_key
    assert len(entries) <= GET_CONFIGURATION_MAX_KEYS
    assert all(entry.value is None or len(entry.value) <= 500 for entry in entries)


def test_get_configuration_with_keys_reports_unknown_ones_and_matches_any_case() -> None:
    entries, unknown = V16KeyMap(DEFS, CORE).get_configuration(
        ["heartbeatinterval", "NoSuchKey", "LightIntensity", "LocalAuthListEnabled"], reader(defaults())
    )
    assert [(e.key, e.value) for e in entries] == [("HeartbeatInterval", "300")]
    assert unknown == ["NoSuchKey", "LightIntensity", "LocalAuthListEnabled"]


@pytest.mark.parametrize(
    ("profiles", "expected"),
    [
        ({V16Profile.CORE}, "Core"),
        ({V16Profile.CORE, V16Profile.REMOTE_TRIGGER, V16Profile.SECURITY}, "Core,RemoteTrigger"),
        (set(V16Profile), ",".join(p.value for p in FEATURE_PROFILES)),
    ],
)
def test_supported_feature_profiles_tells_the_truth(profiles: set[V16Profile], expected: str) -> None:
    entry = V16KeyMap(DEFS, profiles).read("SupportedFeatureProfiles", reader({}))
    assert entry is not None and (entry.value, entry.readonly) == (expected, True)


@pytest.mark.parametrize(
    ("key", "value", "status", "written"),
    [
        ("HeartbeatInterval", "60", ConfigurationStatus.ACCEPTED, "60"),
        ("heartbeatINTERVAL", " 120 ", ConfigurationStatus.ACCEPTED, "120"),
        ("HeartbeatInterval", "sixty", ConfigurationStatus.REJECTED, None),
        ("HeartbeatInterval", "1.5", ConfigurationStatus.REJECTED, None),
        ("HeartbeatInterval", "-1", ConfigurationStatus.REJECTED, None),  # 1.6 range: >= 0
        (
            "HeartbeatInterval",
            "0",
            ConfigurationStatus.REJECTED,
            None,
        ),  # our minLimit 1 (no heartbeat-less mode)
        ("WebSocketPingInterval", "0", ConfigurationStatus.ACCEPTED, "0"),  # 0 = no pings
        ("MeterValueSampleInterval", "15", ConfigurationStatus.ACCEPTED, "15"),
        ("TransactionMessageAttempts", "5", ConfigurationStatus.ACCEPTED, "5"),
        ("TransactionMessageRetryInterval", "20", ConfigurationStatus.ACCEPTED, "20"),
        ("ConnectionTimeOut", "90", ConfigurationStatus.ACCEPTED, "90"),
        # Served by the authorization block (C).
        ("LocalAuthorizeOffline", "TRUE", ConfigurationStatus.ACCEPTED, "true"),
        ("LocalPreAuthorize", "true", ConfigurationStatus.ACCEPTED, "true"),
        ("AllowOfflineTxForUnknownId", "true", ConfigurationStatus.ACCEPTED, "true"),
        ("AuthorizationCacheEnabled", "false", ConfigurationStatus.ACCEPTED, "false"),
        # Read-only keys (facts, derived values, or settings held until their block lands).
        ("NumberOfConnectors", "4", ConfigurationStatus.REJECTED, None),
        ("SupportedFeatureProfiles", "Core", ConfigurationStatus.REJECTED, None),
        ("MeterValuesSampledDataMaxLength", "5", ConfigurationStatus.REJECTED, None),
        (
            "MeterValuesSampledData",
            "Energy.Active.Import.Register",
            ConfigurationStatus.ACCEPTED,
            "Energy.Active.Import.Register",
        ),
        ("MeterValuesSampledData", "SoC", ConfigurationStatus.REJECTED, None),
        ("StopTransactionOnInvalidId", "false", ConfigurationStatus.ACCEPTED, "false"),
        ("UnlockConnectorOnEVSideDisconnect", "false", ConfigurationStatus.ACCEPTED, "false"),
        ("StopTransactionOnEVSideDisconnect", "false", ConfigurationStatus.ACCEPTED, "false"),
        # Held ReadOnly until its block lands.
        ("ResetRetries", "2", ConfigurationStatus.REJECTED, None),
        # Unknown to the station.
        ("NoSuchKey", "1", ConfigurationStatus.NOT_SUPPORTED, None),
        ("LightIntensity", "50", ConfigurationStatus.NOT_SUPPORTED, None),
        ("LocalAuthListEnabled", "true", ConfigurationStatus.NOT_SUPPORTED, None),
    ],
)
def test_change_configuration(key: str, value: str, status: ConfigurationStatus, written: str | None) -> None:
    change = V16KeyMap(DEFS, CORE).change(key, value)
    assert change.status is status, change.info
    assert [w.value for w in change.writes] == ([written] if written is not None else [])
    if status is not ConfigurationStatus.ACCEPTED:
        assert change.info


def test_change_writes_the_mapped_variable() -> None:
    change = V16KeyMap(DEFS, CORE).change("TransactionMessageAttempts", "4")
    assert change.writes == (
        V201Write(controller("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"), ACTUAL, "4"),
    )


def test_booleans_are_case_insensitive_and_stored_lower_case() -> None:
    keys = V16KeyMap(
        EXTENDED,
        CORE,
        keys=(
            *V16_KEYS,
            V16Key("VendorReboot", V16Profile.CORE, V16Type.BOOLEAN, Projection.ATTRIBUTE, REBOOTING),
        ),
    )
    change = keys.change("VendorReboot", "TRUE")
    # A variable whose change needs a reboot answers RebootRequired (and is stored).
    assert change.status is ConfigurationStatus.REBOOT_REQUIRED
    assert change.writes == (V201Write(REBOOTING, ACTUAL, "true"),)
    assert keys.change("VendorReboot", "yes").status is ConfigurationStatus.REJECTED


def test_write_only_key_is_writable_but_never_read_back() -> None:
    keys = V16KeyMap(EXTENDED, {V16Profile.CORE, V16Profile.SECURITY})
    store = {PASSWORD: "a-secret-of-16-chars"}
    entry = keys.read("AuthorizationKey", reader(store))
    assert entry is not None and (entry.readonly, entry.value) == (False, None)
    assert keys.change("AuthorizationKey", "0123456789abcdef0123").status is ConfigurationStatus.ACCEPTED
    assert keys.change("AuthorizationKey", "short").status is ConfigurationStatus.REJECTED
    # Without the security profile the whitepaper's keys are unknown.
    assert V16KeyMap(EXTENDED, CORE).read("AuthorizationKey", reader(store)) is None


def test_list_members_are_translated_between_the_versions() -> None:
    keys = V16KeyMap(EXTENDED, {V16Profile.CORE, V16Profile.SMART_CHARGING})
    entry = keys.read("ChargingScheduleAllowedChargingRateUnit", reader({RATE_UNIT: "A,W"}))
    assert entry is not None and entry.value == "Current,Power"
    change = keys.change("ChargingScheduleAllowedChargingRateUnit", "Power")
    assert change.writes == (V201Write(RATE_UNIT, ACTUAL, "W"),)


def test_connector_phase_rotation_spreads_over_station_and_connectors() -> None:
    keys = V16KeyMap(DEFS, CORE)
    change = keys.change("ConnectorPhaseRotation", "0.RST, 3.TSR")
    assert change.status is ConfigurationStatus.ACCEPTED
    connector_3 = VariableKey(ComponentKey("Connector", evse_id=2, connector_id=2), "PhaseRotation")
    assert change.writes == (
        V201Write(controller("ChargingStation", "PhaseRotation"), ACTUAL, "RST"),
        V201Write(connector_3, ACTUAL, "TSR"),
    )
    for bad in ("", "4.RST", "1.XYZ", "RST", "1.RST,1.RTS", "x.RST"):
        assert keys.change("ConnectorPhaseRotation", bad).status is ConfigurationStatus.REJECTED, bad


def test_every_attribute_key_agrees_with_its_variable_type() -> None:
    expected = {
        V16Type.INTEGER: {DataType.INTEGER},
        V16Type.BOOLEAN: {DataType.BOOLEAN},
        V16Type.CSL: {DataType.MEMBER_LIST, DataType.SEQUENCE_LIST},
        V16Type.STRING: {DataType.STRING},
    }
    for key in V16KeyMap(EXTENDED, set(V16Profile)).keys:
        if key.projection is Projection.ATTRIBUTE:
            assert key.variable is not None
            assert EXTENDED[key.variable].data_type in expected[key.type], key.name


def test_the_key_table_names_each_key_once() -> None:
    names = [key.name.lower() for key in V16_KEYS]
    assert len(names) == len(set(names))
    assert list(TWO_EVSES.connectors()) == [(1, 1), (2, 1), (2, 2)]


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from([key.name for key in V16_KEYS]) | st.text(max_size=20),
    value=st.text(max_size=40) | st.sampled_from(["0", "-1", "TRUE", "0.RST", "1,2", "9" * 30]),
)
def test_change_configuration_never_raises(name: str, value: str) -> None:
    change = V16KeyMap(EXTENDED, set(V16Profile)).change(name, value)
    assert change.status in ConfigurationStatus
    assert bool(change.writes) is (
        change.status in (ConfigurationStatus.ACCEPTED, ConfigurationStatus.REBOOT_REQUIRED)
    )


def test_profiles_may_be_given_by_name_and_an_unknown_name_is_refused() -> None:
    """runtime.device_model names the implemented profiles as strings (so that it need not import
    this module at start); they mean the same profiles, and a misspelt one fails loudly."""
    by_name = V16KeyMap(DEFS, ["Core", "Reservation"])
    assert by_name.profiles == {V16Profile.CORE, V16Profile.RESERVATION}
    with pytest.raises(ValueError, match="Reserve"):
        V16KeyMap(DEFS, ["Core", "Reserve"])

"""OCPP 1.6 configuration keys as a projection of the 2.0.1 device model. Pure decisions, values passed in.

Every standard key of the six 1.6 feature profiles and of the security whitepaper is a row of `V16_KEYS`:
- ATTRIBUTE: the key is the Actual value of one variable (HeartbeatInterval ->
  OCPPCommCtrlr.HeartbeatInterval). Read-only when that attribute is ReadOnly; a WriteOnly attribute is
  writable and never read back. ChangeConfiguration checks the 1.6 type first, then the variable's own
  characteristics (`check_set`), and yields the 2.0.1 write to apply.
- MAX_LIMIT: the key is the maxLimit characteristic of a variable (MeterValuesSampledDataMaxLength ->
  SampledDataCtrlr.TxUpdatedMeasurands maxLimit); always read-only.
- DERIVED: computed here from the layout and the implemented profiles (NumberOfConnectors,
  SupportedFeatureProfiles, GetConfigurationMaxKeys, ...), or spread over several variables
  (ConnectorPhaseRotation -> the PhaseRotation of ChargingStation and of each connector).
- UNSUPPORTED: no 2.0.1 counterpart and no hardware for it (BlinkRepeat, LightIntensity, ...).

A key exists for the station when its profile is implemented and its variable is defined; any other
key is unknown: GetConfiguration lists it in unknownKey, ChangeConfiguration answers NotSupported.
Key names are CiString50: matched case-insensitively, answered in their standard spelling.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from typing import Final

from evstation.protocol.device_model.definitions import DeviceModelDefinitions
from evstation.protocol.device_model.model import (
    AttributeType,
    ComponentKey,
    Mutability,
    SetStatus,
    ValueReader,
    VariableKey,
)
from evstation.protocol.device_model.standard import PHASE_ROTATIONS
from evstation.protocol.device_model.validation import check_set, limit_text, split_list
from evstation.records import record

__all__ = [
    "FEATURE_PROFILES",
    "GET_CONFIGURATION_MAX_KEYS",
    "V16_KEYS",
    "ConfigurationStatus",
    "Projection",
    "V16Change",
    "V16Key",
    "V16KeyMap",
    "V16KeyValue",
    "V16Profile",
    "V16Type",
    "V201Write",
    "ValueReader",
]

# Our answer to GetConfigurationMaxKeys: more than the number of keys we have, so one GetConfiguration
# can name them all.
GET_CONFIGURATION_MAX_KEYS: Final = 100

# 1.6 values are CiString500.
_V16_VALUE_SIZE: Final = 500


class V16Profile(enum.StrEnum):
    """The 1.6 feature profiles (section 3.3), plus the security whitepaper's keys (not a profile)."""

    CORE = "Core"
    FIRMWARE_MANAGEMENT = "FirmwareManagement"
    LOCAL_AUTH_LIST_MANAGEMENT = "LocalAuthListManagement"
    RESERVATION = "Reservation"
    SMART_CHARGING = "SmartCharging"
    REMOTE_TRIGGER = "RemoteTrigger"
    # The whitepaper's configuration keys (SecurityProfile, AuthorizationKey, ...). Never listed in
    # SupportedFeatureProfiles, which names feature profiles only.
    SECURITY = "Security"


FEATURE_PROFILES: Final = tuple(p for p in V16Profile if p is not V16Profile.SECURITY)


class ConfigurationStatus(enum.StrEnum):
    """ChangeConfiguration.conf status."""

    ACCEPTED = "Accepted"
    REJECTED = "Rejected"
    REBOOT_REQUIRED = "RebootRequired"
    NOT_SUPPORTED = "NotSupported"


class V16Type(enum.Enum):
    """The value types of the 1.6 key tables."""

    INTEGER = "integer"
    BOOLEAN = "boolean"
    STRING = "string"
    CSL = "CSL"  # comma-separated list


class Projection(enum.Enum):
    ATTRIBUTE = "VariableAttribute"
    MAX_LIMIT = "VariableCharacteristics.maxLimit"
    DERIVED = "Derived"
    UNSUPPORTED = "Unsupported"


def _v(component: str, name: str, instance: str | None = None) -> VariableKey:
    return VariableKey(ComponentKey(component), name, instance)


@record
class V16Key:
    """One configuration key: its profile, 1.6 type and range, and where its value lives.

    `members` translates list members whose 1.6 spelling differs (2.0.1 text, 1.6 text).
    """

    name: str
    profile: V16Profile
    type: V16Type
    projection: Projection
    variable: VariableKey | None = None
    min_value: int | None = None
    max_value: int | None = None
    members: tuple[tuple[str, str], ...] = ()
    why_unsupported: str | None = None


P, T, J = V16Profile, V16Type, Projection
_CS = _v("ChargingStation", "PhaseRotation")

V16_KEYS: Final[tuple[V16Key, ...]] = (
    # --- Core (1.6 section 9.1) -----------------------------------------------------------------
    V16Key(
        "AllowOfflineTxForUnknownId",
        P.CORE,
        T.BOOLEAN,
        J.ATTRIBUTE,
        _v("AuthCtrlr", "OfflineTxForUnknownIdEnabled"),
    ),
    V16Key("AuthorizationCacheEnabled", P.CORE, T.BOOLEAN, J.ATTRIBUTE, _v("AuthCacheCtrlr", "Enabled")),
    V16Key(
        "AuthorizeRemoteTxRequests", P.CORE, T.BOOLEAN, J.ATTRIBUTE, _v("AuthCtrlr", "AuthorizeRemoteStart")
    ),
    V16Key("BlinkRepeat", P.CORE, T.INTEGER, J.UNSUPPORTED, why_unsupported="no light the station can blink"),
    V16Key("ClockAlignedDataInterval", P.CORE, T.INTEGER, J.ATTRIBUTE, _v("AlignedDataCtrlr", "Interval"), 0),
    V16Key("ConnectionTimeOut", P.CORE, T.INTEGER, J.ATTRIBUTE, _v("TxCtrlr", "EVConnectionTimeOut"), 0),
    V16Key("ConnectorPhaseRotation", P.CORE, T.CSL, J.DERIVED),
    V16Key("ConnectorPhaseRotationMaxLength", P.CORE, T.INTEGER, J.DERIVED),
    V16Key("GetConfigurationMaxKeys", P.CORE, T.INTEGER, J.DERIVED),
    V16Key("HeartbeatInterval", P.CORE, T.INTEGER, J.ATTRIBUTE, _v("OCPPCommCtrlr", "HeartbeatInterval"), 0),
    V16Key("LightIntensity", P.CORE, T.INTEGER, J.UNSUPPORTED, why_unsupported="no dimmable light"),
    V16Key("LocalAuthorizeOffline", P.CORE, T.BOOLEAN, J.ATTRIBUTE, _v("AuthCtrlr", "LocalAuthorizeOffline")),
    V16Key("LocalPreAuthorize", P.CORE, T.BOOLEAN, J.ATTRIBUTE, _v("AuthCtrlr", "LocalPreAuthorize")),
    V16Key("MaxEnergyOnInvalidId", P.CORE, T.INTEGER, J.ATTRIBUTE, _v("TxCtrlr", "MaxEnergyOnInvalidId"), 0),
    V16Key("MeterValuesAlignedData", P.CORE, T.CSL, J.ATTRIBUTE, _v("AlignedDataCtrlr", "Measurands")),
    V16Key(
        "MeterValuesAlignedDataMaxLength",
        P.CORE,
        T.INTEGER,
        J.MAX_LIMIT,
        _v("AlignedDataCtrlr", "Measurands"),
    ),
    V16Key(
        "MeterValuesSampledData", P.CORE, T.CSL, J.ATTRIBUTE, _v("SampledDataCtrlr", "TxUpdatedMeasurands")
    ),
    V16Key(
        "MeterValuesSampledDataMaxLength",
        P.CORE,
        T.INTEGER,
        J.MAX_LIMIT,
        _v("SampledDataCtrlr", "TxUpdatedMeasurands"),
    ),
    V16Key(
        "MeterValueSampleInterval",
        P.CORE,
        T.INTEGER,
        J.ATTRIBUTE,
        _v("SampledDataCtrlr", "TxUpdatedInterval"),
        0,
    ),
    V16Key(
        "MinimumStatusDuration",
        P.CORE,
        T.INTEGER,
        J.UNSUPPORTED,
        why_unsupported="every status change is reported at once",
    ),
    V16Key("NumberOfConnectors", P.CORE, T.INTEGER, J.DERIVED),
    # Not a 1.6 key: evstation's switch for resuming a transaction whose EV is still plugged in.
    V16Key(
        "ResumeTransactionsOnBoot", P.CORE, T.BOOLEAN, J.ATTRIBUTE, _v("TxCtrlr", "ResumeTransactionsOnBoot")
    ),
    V16Key("ResetRetries", P.CORE, T.INTEGER, J.ATTRIBUTE, _v("OCPPCommCtrlr", "ResetRetries"), 0),
    V16Key(
        "StopTransactionOnEVSideDisconnect",
        P.CORE,
        T.BOOLEAN,
        J.ATTRIBUTE,
        _v("TxCtrlr", "StopTxOnEVSideDisconnect"),
    ),
    V16Key("StopTransactionOnInvalidId", P.CORE, T.BOOLEAN, J.ATTRIBUTE, _v("TxCtrlr", "StopTxOnInvalidId")),
    V16Key("StopTxnAlignedData", P.CORE, T.CSL, J.ATTRIBUTE, _v("AlignedDataCtrlr", "TxEndedMeasurands")),
    V16Key(
        "StopTxnAlignedDataMaxLength",
        P.CORE,
        T.INTEGER,
        J.MAX_LIMIT,
        _v("AlignedDataCtrlr", "TxEndedMeasurands"),
    ),
    V16Key("StopTxnSampledData", P.CORE, T.CSL, J.ATTRIBUTE, _v("SampledDataCtrlr", "TxEndedMeasurands")),
    V16Key(
        "StopTxnSampledDataMaxLength",
        P.CORE,
        T.INTEGER,
        J.MAX_LIMIT,
        _v("SampledDataCtrlr", "TxEndedMeasurands"),
    ),
    V16Key("SupportedFeatureProfiles", P.CORE, T.CSL, J.DERIVED),
    V16Key("SupportedFeatureProfilesMaxLength", P.CORE, T.INTEGER, J.DERIVED),
    V16Key(
        "TransactionMessageAttempts",
        P.CORE,
        T.INTEGER,
        J.ATTRIBUTE,
        _v("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"),
        0,
    ),
    V16Key(
        "TransactionMessageRetryInterval",
        P.CORE,
        T.INTEGER,
        J.ATTRIBUTE,
        _v("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"),
        0,
    ),
    V16Key(
        "UnlockConnectorOnEVSideDisconnect",
        P.CORE,
        T.BOOLEAN,
        J.ATTRIBUTE,
        _v("OCPPCommCtrlr", "UnlockOnEVSideDisconnect"),
    ),
    V16Key(
        "WebSocketPingInterval",
        P.CORE,
        T.INTEGER,
        J.ATTRIBUTE,
        _v("OCPPCommCtrlr", "WebSocketPingInterval"),
        0,
    ),
    # --- FirmwareManagement -----------------------------------------------------------------------
    V16Key(
        "SupportedFileTransferProtocols",
        P.FIRMWARE_MANAGEMENT,
        T.CSL,
        J.ATTRIBUTE,
        _v("OCPPCommCtrlr", "FileTransferProtocols"),
    ),
    # --- LocalAuthListManagement ------------------------------------------------------------------
    V16Key(
        "LocalAuthListEnabled",
        P.LOCAL_AUTH_LIST_MANAGEMENT,
        T.BOOLEAN,
        J.ATTRIBUTE,
        _v("LocalAuthListCtrlr", "Enabled"),
    ),
    V16Key(
        "LocalAuthListMaxLength",
        P.LOCAL_AUTH_LIST_MANAGEMENT,
        T.INTEGER,
        J.MAX_LIMIT,
        _v("LocalAuthListCtrlr", "Entries"),
    ),
    V16Key(
        "SendLocalListMaxLength",
        P.LOCAL_AUTH_LIST_MANAGEMENT,
        T.INTEGER,
        J.ATTRIBUTE,
        _v("LocalAuthListCtrlr", "ItemsPerMessage"),
    ),
    # --- Reservation ------------------------------------------------------------------------------
    V16Key(
        "ReserveConnectorZeroSupported",
        P.RESERVATION,
        T.BOOLEAN,
        J.ATTRIBUTE,
        _v("ReservationCtrlr", "NonEvseSpecific"),
    ),
    # --- SmartCharging ----------------------------------------------------------------------------
    V16Key(
        "ChargeProfileMaxStackLevel",
        P.SMART_CHARGING,
        T.INTEGER,
        J.ATTRIBUTE,
        _v("SmartChargingCtrlr", "ProfileStackLevel"),
    ),
    V16Key(
        "ChargingScheduleAllowedChargingRateUnit",
        P.SMART_CHARGING,
        T.CSL,
        J.ATTRIBUTE,
        _v("SmartChargingCtrlr", "RateUnit"),
        members=(("A", "Current"), ("W", "Power")),
    ),
    V16Key(
        "ChargingScheduleMaxPeriods",
        P.SMART_CHARGING,
        T.INTEGER,
        J.ATTRIBUTE,
        _v("SmartChargingCtrlr", "PeriodsPerSchedule"),
    ),
    V16Key(
        "ConnectorSwitch3to1PhaseSupported",
        P.SMART_CHARGING,
        T.BOOLEAN,
        J.ATTRIBUTE,
        _v("SmartChargingCtrlr", "Phases3to1"),
    ),
    V16Key(
        "MaxChargingProfilesInstalled",
        P.SMART_CHARGING,
        T.INTEGER,
        J.MAX_LIMIT,
        _v("SmartChargingCtrlr", "Entries", "ChargingProfiles"),
    ),
    # --- Security whitepaper ----------------------------------------------------------------------
    V16Key(
        "AdditionalRootCertificateCheck",
        P.SECURITY,
        T.BOOLEAN,
        J.ATTRIBUTE,
        _v("SecurityCtrlr", "AdditionalRootCertificateCheck"),
    ),
    V16Key("AuthorizationKey", P.SECURITY, T.STRING, J.ATTRIBUTE, _v("SecurityCtrlr", "BasicAuthPassword")),
    V16Key(
        "CertificateSignedMaxChainSize",
        P.SECURITY,
        T.INTEGER,
        J.ATTRIBUTE,
        _v("SecurityCtrlr", "MaxCertificateChainSize"),
    ),
    V16Key(
        "CertificateStoreMaxLength",
        P.SECURITY,
        T.INTEGER,
        J.MAX_LIMIT,
        _v("SecurityCtrlr", "CertificateEntries"),
    ),
    V16Key(
        "CertSigningRepeatTimes",
        P.SECURITY,
        T.INTEGER,
        J.ATTRIBUTE,
        _v("SecurityCtrlr", "CertSigningRepeatTimes"),
    ),
    V16Key(
        "CertSigningWaitMinimum",
        P.SECURITY,
        T.INTEGER,
        J.ATTRIBUTE,
        _v("SecurityCtrlr", "CertSigningWaitMinimum"),
    ),
    V16Key("CpoName", P.SECURITY, T.STRING, J.ATTRIBUTE, _v("SecurityCtrlr", "OrganizationName")),
    V16Key(
        "DisableSecurityEventNotifications",
        P.SECURITY,
        T.BOOLEAN,
        J.UNSUPPORTED,
        why_unsupported="not a whitepaper key; security events are always sent (runtime/blocks/security.py)",
    ),
    V16Key(
        "SecurityProfile", P.SECURITY, T.INTEGER, J.ATTRIBUTE, _v("SecurityCtrlr", "SecurityProfile"), 0, 3
    ),
)


@record
class V16KeyValue:
    """One GetConfiguration.conf configurationKey entry (value None: not reported, e.g. write-only)."""

    key: str
    readonly: bool
    value: str | None


@record
class V201Write:
    """A write the store applies for a ChangeConfiguration (already validated)."""

    key: VariableKey
    attribute: AttributeType
    value: str


@record
class V16Change:
    """The answer to ChangeConfiguration, and the writes to apply when Accepted / RebootRequired."""

    status: ConfigurationStatus
    writes: tuple[V201Write, ...] = ()
    info: str | None = None


_STATUS: Final = {
    SetStatus.ACCEPTED: ConfigurationStatus.ACCEPTED,
    SetStatus.REBOOT_REQUIRED: ConfigurationStatus.REBOOT_REQUIRED,
    SetStatus.REJECTED: ConfigurationStatus.REJECTED,
}


class V16KeyMap:
    """The 1.6 keys of one station: its definitions, the profiles it implements, and the key table."""

    def __init__(
        self,
        definitions: DeviceModelDefinitions,
        profiles: Iterable[str],
        keys: Sequence[V16Key] = V16_KEYS,
    ) -> None:
        self.definitions = definitions
        self.profiles = frozenset(V16Profile(profile) for profile in profiles)
        self._known: dict[str, V16Key] = {}
        for key in keys:
            if self._exists(key):
                self._known[key.name.lower()] = key
        # The station's connectors in 1.6 numbering: connector n is element n-1.
        self._connectors = list(definitions.layout.connectors())

    def _exists(self, key: V16Key) -> bool:
        if key.profile not in self.profiles or key.projection is Projection.UNSUPPORTED:
            return False
        if key.projection is Projection.DERIVED:
            return True
        assert key.variable is not None
        definition = self.definitions.get(key.variable)
        if definition is None:
            return False
        return key.projection is not Projection.MAX_LIMIT or definition.max_limit is not None

    def key(self, name: str) -> V16Key | None:
        """The key the station has by this name (any letter case), or None."""
        return self._known.get(name.lower())

    @property
    def keys(self) -> list[V16Key]:
        """Every key the station has, in table order."""
        return list(self._known.values())

    # -- GetConfiguration ----------------------------------------------------------------------------

    def read(self, name: str, values: ValueReader) -> V16KeyValue | None:
        """One key's entry, or None when the station does not have the key."""
        key = self.key(name)
        return None if key is None else self._read(key, values)

    def get_configuration(
        self, names: Sequence[str] | None, values: ValueReader
    ) -> tuple[list[V16KeyValue], list[str]]:
        """GetConfiguration.conf: (configurationKey, unknownKey). No names: every key the station has."""
        if not names:
            return [self._read(key, values) for key in self._known.values()], []
        found: list[V16KeyValue] = []
        unknown: list[str] = []
        for name in names:
            entry = self.read(name, values)
            if entry is None:
                unknown.append(name)
            else:
                found.append(entry)
        return found, unknown

    def _read(self, key: V16Key, values: ValueReader) -> V16KeyValue:
        match key.projection:
            case Projection.ATTRIBUTE:
                assert key.variable is not None
                mutability = self.definitions[key.variable].mutability()
                if mutability is Mutability.WRITE_ONLY:
                    return V16KeyValue(key.name, False, None)
                value = values(key.variable, AttributeType.ACTUAL)
                if value is not None:
                    value = self._to_v16(key, value)[:_V16_VALUE_SIZE]
                return V16KeyValue(key.name, mutability is Mutability.READ_ONLY, value)
            case Projection.MAX_LIMIT:
                assert key.variable is not None
                limit = self.definitions[key.variable].max_limit
                assert limit is not None
                return V16KeyValue(key.name, True, limit_text(limit))
            case _:
                return self._derived(key, values)

    def _derived(self, key: V16Key, values: ValueReader) -> V16KeyValue:
        match key.name:
            case "NumberOfConnectors":
                return V16KeyValue(key.name, True, str(len(self._connectors)))
            case "SupportedFeatureProfiles":
                text = ",".join(p.value for p in FEATURE_PROFILES if p in self.profiles)
                return V16KeyValue(key.name, True, text)
            case "SupportedFeatureProfilesMaxLength":
                return V16KeyValue(key.name, True, str(len(FEATURE_PROFILES)))
            case "GetConfigurationMaxKeys":
                return V16KeyValue(key.name, True, str(GET_CONFIGURATION_MAX_KEYS))
            case "ConnectorPhaseRotationMaxLength":
                return V16KeyValue(key.name, True, str(len(self._connectors) + 1))
            case "ConnectorPhaseRotation":
                entries = []
                for number, variable in enumerate(self._rotation_variables()):
                    rotation = values(variable, AttributeType.ACTUAL)
                    if rotation is not None:
                        entries.append(f"{number}.{rotation}")
                return V16KeyValue(key.name, self._rotation_readonly(), ",".join(entries))
        raise AssertionError(f"no derivation for {key.name}")  # pragma: no cover - table and code agree

    def _rotation_variables(self) -> list[VariableKey]:
        """PhaseRotation of 1.6 connector 0 (the station), 1, 2, ..."""
        connectors = [
            VariableKey(ComponentKey("Connector", evse_id=evse_id, connector_id=cid), "PhaseRotation")
            for evse_id, cid in self._connectors
        ]
        return [_CS, *connectors]

    def _rotation_readonly(self) -> bool:
        return any(
            self.definitions.get(v) is None or self.definitions[v].mutability() is not Mutability.READ_WRITE
            for v in self._rotation_variables()
        )

    def _to_v16(self, key: V16Key, value: str) -> str:
        if not key.members or key.type is not V16Type.CSL:
            return value
        names = dict(key.members)
        return ",".join(names.get(item, item) for item in split_list(value))

    def _to_v201(self, key: V16Key, items: list[str]) -> list[str]:
        names = {v16: v201 for v201, v16 in key.members}
        return [names.get(item, item) for item in items]

    # -- ChangeConfiguration -------------------------------------------------------------------------

    def change(self, name: str, value: str) -> V16Change:
        """ChangeConfiguration: NotSupported for an unknown key, Rejected for a read-only key or a bad
        value (1.6 type and range, then the variable's characteristics), else the writes to apply."""
        key = self.key(name)
        if key is None:
            return V16Change(ConfigurationStatus.NOT_SUPPORTED, info=f"unknown key {name[:50]!r}")
        if len(value) > _V16_VALUE_SIZE:
            return V16Change(ConfigurationStatus.REJECTED, info=f"longer than {_V16_VALUE_SIZE} characters")
        if key.projection is Projection.DERIVED:
            if key.name == "ConnectorPhaseRotation" and not self._rotation_readonly():
                return self._change_rotation(value)
            return V16Change(ConfigurationStatus.REJECTED, info=f"{key.name} is read-only")
        if key.projection is not Projection.ATTRIBUTE:
            return V16Change(ConfigurationStatus.REJECTED, info=f"{key.name} is read-only")
        assert key.variable is not None
        if self.definitions[key.variable].mutability() is Mutability.READ_ONLY:
            return V16Change(ConfigurationStatus.REJECTED, info=f"{key.name} is read-only")
        converted = self._convert(key, value)
        if isinstance(converted, V16Change):
            return converted
        decision = check_set(self.definitions, key.variable, AttributeType.ACTUAL, converted)
        if not decision.applies:
            return V16Change(_STATUS.get(decision.status, ConfigurationStatus.REJECTED), info=decision.info)
        assert decision.value is not None
        write = V201Write(key.variable, AttributeType.ACTUAL, decision.value)
        return V16Change(_STATUS[decision.status], (write,))

    def _convert(self, key: V16Key, value: str) -> str | V16Change:
        """The 1.6 type rules (section 9: integer, boolean "true"/"false" in any case, CSL)."""
        text = value.strip()
        match key.type:
            case V16Type.INTEGER:
                digits = text[1:] if text[:1] in "+-" else text
                if not digits.isascii() or not digits.isdigit():
                    return V16Change(ConfigurationStatus.REJECTED, info=f"{key.name} takes an integer")
                number = int(text)
                if key.min_value is not None and number < key.min_value:
                    return V16Change(
                        ConfigurationStatus.REJECTED, info=f"{key.name} is at least {key.min_value}"
                    )
                if key.max_value is not None and number > key.max_value:
                    return V16Change(
                        ConfigurationStatus.REJECTED, info=f"{key.name} is at most {key.max_value}"
                    )
                return str(number)
            case V16Type.BOOLEAN:
                if text.lower() not in ("true", "false"):
                    return V16Change(ConfigurationStatus.REJECTED, info=f"{key.name} takes true or false")
                return text.lower()
            case V16Type.CSL:
                return ",".join(self._to_v201(key, split_list(text)))
            case V16Type.STRING:
                return value

    def _change_rotation(self, value: str) -> V16Change:
        """ "0.RST, 1.RTS": the rotation of 1.6 connector 0 (the station) and of each connector."""
        targets = self._rotation_variables()
        writes: list[V201Write] = []
        seen: set[int] = set()
        items = split_list(value)
        if not items:
            return V16Change(ConfigurationStatus.REJECTED, info="no connector.rotation entry")
        for item in items:
            number_text, dot, rotation = item.partition(".")
            if not dot or not number_text.isascii() or not number_text.isdigit():
                return V16Change(
                    ConfigurationStatus.REJECTED, info=f"{item[:40]!r} is not connector.rotation"
                )
            number = int(number_text)
            if number >= len(targets) or number in seen:
                return V16Change(ConfigurationStatus.REJECTED, info=f"connector {number} unknown or repeated")
            if rotation not in PHASE_ROTATIONS:
                return V16Change(
                    ConfigurationStatus.REJECTED, info=f"rotation must be one of {PHASE_ROTATIONS}"
                )
            seen.add(number)
            decision = check_set(self.definitions, targets[number], AttributeType.ACTUAL, rotation)
            if not decision.applies or decision.value is None:
                return V16Change(ConfigurationStatus.REJECTED, info=decision.info)
            writes.append(V201Write(targets[number], AttributeType.ACTUAL, decision.value))
        return V16Change(ConfigurationStatus.ACCEPTED, tuple(writes))

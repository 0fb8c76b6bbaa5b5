"""Provisioning (2.0.1 block B) rules that need no I/O: which variables a report holds, and its pages.

- `base_report` (GetBaseReport, B07) and `custom_report` (GetReport, B08) choose the variables;
- `report_data` turns them into ReportDataType items with values from a reader passed in (a WriteOnly
  value is never reported);
- `notify_report_pages` splits the items into NotifyReport payloads of at most a byte budget each,
  seqNo from 0, tbc true on all but the last;
- `request_limit_error` says which CALLERROR a too large GetVariables / SetVariables / GetReport earns;
- `check_network_profile` decides a SetNetworkProfile (B09) before anything is stored.

Nothing here reads a clock (generatedAt is passed in) or the store (values come from a callable).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from evstation.protocol.device_model.definitions import DeviceModelDefinitions
from evstation.protocol.device_model.model import (
    REPORTING_VALUE_SIZE,
    AttributeType,
    ComponentKey,
    Mutability,
    ValueReader,
    VariableDefinition,
    VariableKey,
)
from evstation.protocol.errors import ErrorKind
from evstation.records import record

if TYPE_CHECKING:
    from evstation.protocol.v201.messages import ComponentVariableType

__all__ = [
    "REPORT_PAGE_BYTES",
    "SUMMARY_VARIABLES",
    "ComponentCriterion",
    "ComponentVariableFilter",
    "NetworkProfile",
    "NetworkProfileDecision",
    "NetworkProfileReason",
    "ReportBase",
    "ValueReader",
    "base_report",
    "check_network_profile",
    "custom_report",
    "notify_report_pages",
    "payload_size",
    "report_data",
    "request_limit_error",
]

# Our byte budget for one NotifyReport payload (compact JSON, UTF-8). Small enough for any CSMS's
# frame limit, large enough that a FullInventory of a two-EVSE station takes a handful of messages.
REPORT_PAGE_BYTES: Final = 8192

# SummaryInventory: "Components/Variables relating to the Charging Station's current charging
# availability, and to any existing problem conditions" (ReportBaseEnumType). Our reading: the
# availability variables of the physical components, and every Problem variable.
SUMMARY_VARIABLES: Final = frozenset({"AvailabilityState", "Available", "Problem"})
_PHYSICAL: Final = frozenset({"ChargingStation", "EVSE", "Connector"})

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class ReportBase(enum.StrEnum):
    CONFIGURATION_INVENTORY = "ConfigurationInventory"
    FULL_INVENTORY = "FullInventory"
    SUMMARY_INVENTORY = "SummaryInventory"


class ComponentCriterion(enum.StrEnum):
    ACTIVE = "Active"
    AVAILABLE = "Available"
    ENABLED = "Enabled"
    PROBLEM = "Problem"


@record
class ComponentVariableFilter:
    """One GetReport componentVariable entry. An omitted field matches anything (our reading of B08):
    no variable = every variable of the component; no evse = the component on every EVSE / connector;
    evse without connectorId = on every connector of that EVSE; no instance = every instance."""

    component: str
    component_instance: str | None = None
    evse_id: int | None = None
    connector_id: int | None = None
    variable: str | None = None
    variable_instance: str | None = None

    @classmethod
    def from_model(cls, item: ComponentVariableType) -> ComponentVariableFilter:
        component = item.component
        evse = component.evse
        return cls(
            component=component.name,
            component_instance=component.instance,
            evse_id=None if evse is None else evse.id,
            connector_id=None if evse is None else evse.connector_id,
            variable=None if item.variable is None else item.variable.name,
            variable_instance=None if item.variable is None else item.variable.instance,
        )

    def matches(self, key: VariableKey) -> bool:
        component = key.component
        if component.name != self.component:
            return False
        if self.component_instance is not None and component.instance != self.component_instance:
            return False
        if self.evse_id is not None and component.evse_id != self.evse_id:
            return False
        if self.connector_id is not None and component.connector_id != self.connector_id:
            return False
        if self.variable is not None and key.name != self.variable:
            return False
        return self.variable_instance is None or key.instance == self.variable_instance


def base_report(definitions: DeviceModelDefinitions, base: ReportBase) -> list[VariableDefinition]:
    """GetBaseReport (B07): ConfigurationInventory = every variable the CSMS may write (ReadWrite or
    WriteOnly); FullInventory = all; SummaryInventory = see SUMMARY_VARIABLES."""
    match base:
        case ReportBase.FULL_INVENTORY:
            return list(definitions)
        case ReportBase.CONFIGURATION_INVENTORY:
            return [d for d in definitions if d.writable]
        case ReportBase.SUMMARY_INVENTORY:
            return [
                d
                for d in definitions
                if d.key.instance is None
                and (
                    d.key.name == "Problem"
                    or (d.key.component.name in _PHYSICAL and d.key.name in SUMMARY_VARIABLES)
                )
            ]


def _criterion_met(
    definitions: DeviceModelDefinitions,
    component: ComponentKey,
    criterion: ComponentCriterion,
    values: ValueReader,
) -> bool:
    key = VariableKey(component, criterion.value)
    if definitions.get(key) is None:
        # B08.FR.07-09: a component without an Active / Available / Enabled variable meets the
        # criterion; B08.FR.10: only a Problem variable set to true meets Problem.
        return criterion is not ComponentCriterion.PROBLEM
    return (values(key, AttributeType.ACTUAL) or "").lower() == "true"


def custom_report(
    definitions: DeviceModelDefinitions,
    values: ValueReader,
    criteria: Sequence[ComponentCriterion] = (),
    filters: Sequence[ComponentVariableFilter] = (),
) -> list[VariableDefinition]:
    """GetReport (B08): the variables of the components meeting any of `criteria` (all components when
    none is given) that match any of `filters` (all when none is given). Empty: EmptyResultSet."""
    chosen: list[VariableDefinition] = []
    for component in definitions.components():
        if criteria and not any(_criterion_met(definitions, component, c, values) for c in criteria):
            continue
        for definition in definitions.variables_of(component):
            if not filters or any(f.matches(definition.key) for f in filters):
                chosen.append(definition)
    return chosen


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _component(component: ComponentKey) -> dict[str, object]:
    out: dict[str, object] = {"name": component.name}
    if component.instance is not None:
        out["instance"] = component.instance
    if component.evse_id is not None:
        evse: dict[str, object] = {"id": component.evse_id}
        if component.connector_id is not None:
            evse["connectorId"] = component.connector_id
        out["evse"] = evse
    return out


def _item(definition: VariableDefinition, values: ValueReader) -> dict[str, object]:
    key = definition.key
    variable: dict[str, object] = {"name": key.name}
    if key.instance is not None:
        variable["instance"] = key.instance
    attributes: list[dict[str, object]] = []
    for attribute in definition.attributes:
        entry: dict[str, object] = {"type": attribute.type.value}
        if attribute.mutability is not Mutability.WRITE_ONLY:
            value = values(key, attribute.type)
            if value is not None:
                entry["value"] = value[:REPORTING_VALUE_SIZE]
        entry["mutability"] = attribute.mutability.value
        entry["persistent"] = definition.persistent
        entry["constant"] = definition.constant
        attributes.append(entry)
    characteristics: dict[str, object] = {"dataType": definition.data_type.value}
    if definition.unit is not None:
        characteristics["unit"] = definition.unit
    if definition.min_limit is not None:
        characteristics["minLimit"] = _number(definition.min_limit)
    if definition.max_limit is not None:
        characteristics["maxLimit"] = _number(definition.max_limit)
    if definition.values_list is not None:
        characteristics["valuesList"] = ",".join(definition.values_list)
    characteristics["supportsMonitoring"] = definition.supports_monitoring
    return {
        "component": _component(key.component),
        "variable": variable,
        "variableAttribute": attributes,
        "variableCharacteristics": characteristics,
    }


def report_data(definitions: Iterable[VariableDefinition], values: ValueReader) -> list[dict[str, object]]:
    """ReportDataType items (wire shape) for the chosen variables; WriteOnly values are omitted."""
    return [_item(definition, values) for definition in definitions]


def payload_size(payload: object) -> int:
    """The size of a payload in compact UTF-8 JSON: how we measure a request against BytesPerMessage
    (the frame as received may carry whitespace, which is not the CSMS's data) and a report page."""
    return len(_ENCODER.encode(payload).encode("utf-8"))


def _iso(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"generated_at must be timezone-aware (got {value!r})")
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def notify_report_pages(
    items: Sequence[dict[str, object]],
    *,
    request_id: int,
    generated_at: datetime,
    budget_bytes: int = REPORT_PAGE_BYTES,
) -> list[dict[str, object]]:
    """NotifyReport payloads carrying `items` in order: each payload's compact UTF-8 JSON is at most
    `budget_bytes`, seqNo counts from 0, tbc is true on every page but the last.

    No items: no pages (GetReport answers EmptyResultSet instead). Raises ValueError when one item
    alone cannot fit the budget (a budget too small for the station's variables is a bug of ours).
    """
    if not items:
        return []
    stamp = _iso(generated_at)

    def page(seq_no: int, data: list[dict[str, object]], tbc: bool) -> dict[str, object]:
        return {
            "requestId": request_id,
            "generatedAt": stamp,
            "tbc": tbc,
            "seqNo": seq_no,
            "reportData": data,
        }

    sizes = [payload_size(item) for item in items]
    pages: list[list[dict[str, object]]] = []
    current: list[dict[str, object]] = []
    used = 0
    # An empty page of this seqNo (tbc false is the longer spelling); a list of n items adds n-1 commas.
    overhead = payload_size(page(0, [], False))
    for item, size in zip(items, sizes, strict=True):
        if overhead + size > budget_bytes:
            raise ValueError(f"a report item of {size} bytes does not fit a {budget_bytes}-byte page")
        if current and overhead + used + 1 + size > budget_bytes:
            pages.append(current)
            current, used = [], 0
            overhead = payload_size(page(len(pages), [], False))
        used += size + (1 if current else 0)
        current.append(item)
    pages.append(current)
    last = len(pages) - 1
    return [page(seq_no, data, seq_no != last) for seq_no, data in enumerate(pages)]


def request_limit_error(
    item_count: int, payload_bytes: int, items_per_message: int, bytes_per_message: int
) -> ErrorKind | None:
    """The CALLERROR for a GetVariables / SetVariables / GetReport over our DeviceDataCtrlr limits
    (B05, B06, B08.FR.17-18): more bytes than BytesPerMessage -> FormatViolation; more items than
    ItemsPerMessage -> OccurrenceConstraintViolation; within both: None."""
    if payload_bytes > bytes_per_message:
        return ErrorKind.FORMAT
    if item_count > items_per_message:
        return ErrorKind.OCCURRENCE_CONSTRAINT
    return None


# --------------------------------------------------------------------------------------------------
# SetNetworkProfile (B09)

# A security profile needs this URL scheme (2.0.1 part 2 A00: profiles 2 and 3 are TLS; 0 and 1 are
# not). The same rule station.toml's endpoints follow (runtime/config.py).
_SCHEMES: Final = {0: "ws", 1: "ws", 2: "wss", 3: "wss"}


class NetworkProfileReason(enum.StrEnum):
    """statusInfo.reasonCode of a Rejected SetNetworkProfile (the texts the spec's errata use)."""

    INVALID_CONF_SLOT = "InvalidConfSlot"
    NO_SECURITY_DOWNGRADE = "NoSecurityDowngrade"
    INVALID_NETWORK_CONF = "InvalidNetworkConf"


@record
class NetworkProfile:
    """The parts of a NetworkConnectionProfileType the station judges (wire texts for the enums)."""

    ocpp_version: str
    ocpp_transport: str
    ocpp_csms_url: str
    message_timeout: int
    security_profile: int
    ocpp_interface: str
    has_apn: bool = False
    has_vpn: bool = False


@record
class NetworkProfileDecision:
    """None as `reason`: the profile may be stored (Accepted once it is)."""

    reason: NetworkProfileReason | None
    info: str | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is None


def check_network_profile(
    slot: int, profile: NetworkProfile, slots: Sequence[int], active_security_profile: int
) -> NetworkProfileDecision:
    """SetNetworkProfile before storing: B09.FR.05 (the slot is one of NetworkConfigurationPriority's
    valuesList), B09.FR.04 (no lower securityProfile than the one in use), B09.FR.02 (the content is
    one this station can use: OCPP 2.0.1 over JSON, a ws:// or wss:// URL that fits the profile, a
    positive message timeout, no APN / VPN, which the station has no modem or VPN client for)."""
    reject = NetworkProfileReason
    if slot not in slots:
        wanted = ",".join(str(s) for s in slots)
        return NetworkProfileDecision(
            reject.INVALID_CONF_SLOT, f"configurationSlot {slot} is not one of {wanted}"
        )
    if profile.security_profile < active_security_profile:
        return NetworkProfileDecision(
            reject.NO_SECURITY_DOWNGRADE,
            f"securityProfile {profile.security_profile} is lower than {active_security_profile} in use",
        )
    problem: str | None = None
    scheme, _, rest = profile.ocpp_csms_url.partition("://")
    if profile.security_profile not in _SCHEMES:
        problem = f"securityProfile {profile.security_profile} is not 0-3"
    elif profile.ocpp_version != "OCPP20":
        problem = f"ocppVersion {profile.ocpp_version}: this station speaks OCPP 2.0.1 only"
    elif profile.ocpp_transport != "JSON":
        problem = f"ocppTransport {profile.ocpp_transport}: only JSON is supported"
    elif scheme.lower() != _SCHEMES[profile.security_profile] or not rest or rest.startswith("/"):
        problem = (
            f"securityProfile {profile.security_profile} needs a "
            f"{_SCHEMES[profile.security_profile]}://host/... URL"
        )
    elif profile.message_timeout < 1:
        problem = "messageTimeout must be at least 1 s"
    elif profile.has_apn or profile.has_vpn:
        problem = "APN and VPN settings are not supported (no modem, no VPN client)"
    if problem is not None:
        return NetworkProfileDecision(reject.INVALID_NETWORK_CONF, problem)
    return NetworkProfileDecision(None)

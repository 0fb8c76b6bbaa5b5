"""Provisioning (2.0.1 block B; 1.6 Core BootNotification, GetConfiguration, ChangeConfiguration): what
the station says about itself at boot, and the CSMS reading and changing its device model.

- BootNotification content and the boot reason persisted before a restart (the session layer decides
  when to send it);
- GetVariables / SetVariables (B06 / B05) item by item through the device model, within the
  DeviceDataCtrlr ItemsPerMessage / BytesPerMessage limits;
- GetBaseReport / GetReport (B07 / B08): the answer first, then the NotifyReport pages from a task in
  the block's own nursery (`run`), sent whenever `Uplink.wait_requested_sendable` allows, so they also
  go out while the CSMS keeps the station Pending (B02.FR.01 / B02.FR.09) and a page a lost connection
  interrupted goes again, with the rest, on the next connection;
- GetConfiguration / ChangeConfiguration (1.6 section 5.8 / 5.3) through the device model's 1.6 key
  projection;
- SetNetworkProfile (B09): checked, then stored in SQLite and kept in memory (read from SQLite once a
  run); runtime/network_profiles.py makes the link dial it from the next boot or lost connection (B10).

It never decides an OCPP rule itself: validation, the key map, report paging and the network-profile
rule live in protocol/.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from evstation.protocol.boot import V201_CONFIGURATION_GATES
from evstation.protocol.device_model import (
    AttributeType,
    ComponentKey,
    GetStatus,
    VariableDefinition,
    VariableKey,
    check_get,
)
from evstation.protocol.device_model.model import REPORTING_VALUE_SIZE
from evstation.protocol.errors import ErrorKind
from evstation.protocol.messages import OcppModel, VersionModels, enum_text, to_payload
from evstation.protocol.provisioning import (
    ComponentCriterion,
    ComponentVariableFilter,
    NetworkProfile,
    ReportBase,
    base_report,
    check_network_profile,
    custom_report,
    notify_report_pages,
    payload_size,
    report_data,
    request_limit_error,
)
from evstation.protocol.versions import OcppVersion
from evstation.records import record
from evstation.runtime.blocks.after_answer import AfterAnswer
from evstation.runtime.blocks.registry import handles
from evstation.runtime.calls import CallFailed, CallTimeout, HandlerError, InvalidRequest
from evstation.runtime.clock import WallClock, iso
from evstation.runtime.config import StationIdentity
from evstation.runtime.device_model import (
    DATE_TIME,
    NETWORK_CONFIGURATION_PRIORITY,
    SECURITY_PROFILE,
    DeviceModel,
)
from evstation.runtime.link import LinkDown
from evstation.runtime.storage import BootState as StoredBootState
from evstation.runtime.storage import Storage, StorageError, StorageWriteError, to_db_time
from evstation.runtime.uplink import Uplink

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = [
    "POWER_UP",
    "Provisioning",
    "StoredNetworkProfile",
    "limit_keys",
]

log = logging.getLogger(__name__)

V16, V201 = OcppVersion.V16, OcppVersion.V201
ACTUAL: Final = AttributeType.ACTUAL

# Sends of one NotifyReport page that may go unanswered on a live connection before the report is
# given up (a lost connection does not count: the page waits for the next one).
REPORT_PAGE_ATTEMPTS: Final = 3

# 2.0.1 BootReasonEnumType for a first start; a Reset stores e.g. "RemoteReset" before it restarts
# the station (storage boot_state.next_boot_reason).
POWER_UP: Final = "PowerUp"


def limit_keys(action: str) -> tuple[VariableKey, VariableKey]:
    """DeviceDataCtrlr ItemsPerMessage / BytesPerMessage of `action` (GetReport, Get/SetVariables)."""
    component = ComponentKey("DeviceDataCtrlr")
    return VariableKey(component, "ItemsPerMessage", action), VariableKey(
        component, "BytesPerMessage", action
    )


@record
class StoredNetworkProfile:
    """One SetNetworkProfile the station stored: its slot and the connectionData as received."""

    slot: int
    security_profile: int
    connection_data: dict[str, object]


def _component_key(component: v201.ComponentType) -> ComponentKey:
    evse = component.evse
    return ComponentKey(
        component.name,
        component.instance,
        None if evse is None else evse.id,
        None if evse is None else evse.connector_id,
    )


def _variable_key(component: v201.ComponentType, variable: v201.VariableType) -> VariableKey:
    return VariableKey(_component_key(component), variable.name, variable.instance)


def _attribute(value: object | None) -> AttributeType:
    # B05.FR.12 / B06.FR.11: no attributeType means Actual.
    return ACTUAL if value is None else AttributeType(enum_text(value))


def _status_info(reason: object | None, info: str | None) -> v201.StatusInfoType | None:
    if reason is None:
        return None
    if info is None:
        return v201.StatusInfoType(reason_code=enum_text(reason))
    return v201.StatusInfoType(reason_code=enum_text(reason), additional_info=info[:512])


# --- SQLite (run in the database thread) -------------------------------------------------------------


def _write_network_profile(conn: sqlite3.Connection, profile: StoredNetworkProfile, stored_at: str) -> None:
    conn.execute(
        "INSERT OR REPLACE INTO network_profiles (slot, security_profile, profile, stored_at) "
        "VALUES (?, ?, ?, ?)",
        (profile.slot, profile.security_profile, json.dumps(profile.connection_data), stored_at),
    )


def _read_network_profiles(conn: sqlite3.Connection) -> list[StoredNetworkProfile]:
    rows = conn.execute("SELECT slot, security_profile, profile FROM network_profiles ORDER BY slot")
    return [StoredNetworkProfile(r["slot"], r["security_profile"], json.loads(r["profile"])) for r in rows]


class Provisioning:
    """The provisioning block. Start `run` with `nursery.start` for the station's lifetime (reports)."""

    def __init__(
        self,
        *,
        version: OcppVersion,
        identity: StationIdentity,
        storage: Storage,
        clock: WallClock,
        device_model: DeviceModel,
        uplink: Uplink,
    ) -> None:
        self.version = version
        self._identity = identity
        self._storage = storage
        self._clock = clock
        self._dm = device_model
        self._uplink = uplink
        self._after_answer = AfterAnswer("provisioning")
        # The stored SetNetworkProfile slots, read from SQLite once (the link asks at every reconnect)
        # and kept in step by set_network_profile after its write commits. The lock keeps a write
        # that lands during the first read from being lost.
        self._network_profiles: dict[int, StoredNetworkProfile] | None = None
        self._network_profiles_lock = trio.Lock()
        # ClockCtrlr.DateTime is the station's clock, read when asked (GetVariables, reports).
        device_model.provide(DATE_TIME, lambda: iso(clock.now()))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        await self._after_answer.run(task_status=task_status)

    # --- boot ------------------------------------------------------------------------------------

    async def boot_request(self) -> dict[str, object]:
        """The BootNotification payload, with the persisted boot reason (2.0.1 only; 1.6 has none)."""
        identity = self._identity
        if self.version is OcppVersion.V16:
            payload: dict[str, object] = {
                "chargePointVendor": identity.vendor,
                "chargePointModel": identity.model,
            }
            if identity.serial_number is not None:
                payload["chargePointSerialNumber"] = identity.serial_number
            if identity.firmware_version is not None:
                payload["firmwareVersion"] = identity.firmware_version
            return payload
        station: dict[str, object] = {"model": identity.model, "vendorName": identity.vendor}
        if identity.serial_number is not None:
            station["serialNumber"] = identity.serial_number
        if identity.firmware_version is not None:
            station["firmwareVersion"] = identity.firmware_version
        stored = await self._storage.boot_state()
        return {"chargingStation": station, "reason": stored.next_boot_reason or POWER_UP}

    async def accepted(self) -> None:
        """Persist the Accepted registration; the next boot reason is PowerUp unless a Reset says else.
        A database refusing writes keeps the previous state (logged): the session goes on, and the
        next boot reports the reason stored before (nothing reads the registration back)."""
        try:
            await self._storage.save_boot_state(StoredBootState("Accepted", self._clock.now(), None))
        except StorageWriteError as exc:
            log.warning("the accepted boot not stored: %s", exc)

    # --- request limits ----------------------------------------------------------------------------

    def _check_limits(self, action: str, request: OcppModel, items: int) -> None:
        """B06.FR.16 / B06.FR.17, B08.FR.17 / B08.FR.18: a request over our DeviceDataCtrlr limits is
        refused with OccurrenceConstraintViolation (items) or FormatViolation (bytes). SetVariables has
        the same limits (B05.FR.11 forbids the CSMS to exceed them) and earns the same answer."""
        items_key, bytes_key = limit_keys(action)
        kind = request_limit_error(
            items,
            payload_size(to_payload(request)),
            self._dm.get_int(items_key),
            self._dm.get_int(bytes_key),
        )
        if kind is ErrorKind.OCCURRENCE_CONSTRAINT:
            raise HandlerError(kind, f"more than {self._dm.get_int(items_key)} items (ItemsPerMessage)")
        if kind is not None:
            raise HandlerError(kind, f"larger than {self._dm.get_int(bytes_key)} bytes (BytesPerMessage)")

    # --- 2.0.1 GetVariables / SetVariables (B06 / B05) ------------------------------------------------

    @handles(V201, "GetVariables", gates=V201_CONFIGURATION_GATES)
    async def get_variables(self, req: v201.GetVariablesRequest) -> v201.GetVariablesResponse:
        self._check_limits("GetVariables", req, len(req.get_variable_data))
        results: list[v201.GetVariableResultType] = []
        for item in req.get_variable_data:
            attribute = _attribute(item.attribute_type)
            key = _variable_key(item.component, item.variable)
            decision = check_get(self._dm.definitions, key, attribute)
            value: str | None = None
            if decision.status is GetStatus.ACCEPTED:
                # B06.FR.10: Accepted carries the value; an attribute without one reads as "".
                value = (self._dm.get(key, attribute) or "")[:REPORTING_VALUE_SIZE]
            results.append(
                v201.GetVariableResultType(
                    attribute_status=v201.GetVariableStatusEnumType(decision.status.value),
                    attribute_status_info=_status_info(decision.reason_code, decision.info),
                    attribute_type=v201.AttributeEnumType(attribute.value),
                    attribute_value=value,
                    component=item.component,  # B06.FR.02: echoed as received
                    variable=item.variable,
                )
            )
        return v201.GetVariablesResponse(get_variable_result=results)

    @handles(V201, "SetVariables", gates=V201_CONFIGURATION_GATES)
    async def set_variables(self, req: v201.SetVariablesRequest) -> v201.SetVariablesResponse:
        self._check_limits("SetVariables", req, len(req.set_variable_data))
        results: list[v201.SetVariableResultType] = []
        for item in req.set_variable_data:
            attribute = _attribute(item.attribute_type)
            key = _variable_key(item.component, item.variable)
            # Each item on its own (B05.FR.01): durable and told to the watchers before the answer.
            decision = await self._dm.set(key, item.attribute_value, attribute)
            results.append(
                v201.SetVariableResultType(
                    attribute_type=v201.AttributeEnumType(attribute.value),
                    attribute_status=v201.SetVariableStatusEnumType(decision.status.value),
                    attribute_status_info=_status_info(decision.reason_code, decision.info),
                    component=item.component,  # B05.FR.02
                    variable=item.variable,
                )
            )
        return v201.SetVariablesResponse(set_variable_result=results)

    # --- 2.0.1 reports (B07 / B08) ------------------------------------------------------------------

    @handles(V201, "GetBaseReport", gates=V201_CONFIGURATION_GATES)
    async def get_base_report(self, req: v201.GetBaseReportRequest) -> v201.GetBaseReportResponse:
        status = v201.GenericDeviceModelStatusEnumType
        try:
            base = ReportBase(enum_text(req.report_base))
        except ValueError:  # pragma: no cover - the schema admits exactly the three bases we serve
            return v201.GetBaseReportResponse(status=status.NOT_SUPPORTED)
        chosen = base_report(self._dm.definitions, base)
        if not chosen:
            return v201.GetBaseReportResponse(status=status.EMPTY_RESULT_SET)
        self._schedule_report(req.request_id, chosen)
        return v201.GetBaseReportResponse(status=status.ACCEPTED)

    @handles(V201, "GetReport", gates=V201_CONFIGURATION_GATES)
    async def get_report(self, req: v201.GetReportRequest) -> v201.GetReportResponse:
        status = v201.GenericDeviceModelStatusEnumType
        filters = req.component_variable or []
        self._check_limits("GetReport", req, len(filters))
        # Every ComponentCriterionEnumType value is supported (B08.FR.07-10), so never NotSupported.
        criteria = [ComponentCriterion(enum_text(c)) for c in req.component_criteria or []]
        chosen = custom_report(
            self._dm.definitions,
            self._dm.get,
            criteria,
            [ComponentVariableFilter.from_model(f) for f in filters],
        )
        if not chosen:
            return v201.GetReportResponse(status=status.EMPTY_RESULT_SET)
        self._schedule_report(req.request_id, chosen)
        return v201.GetReportResponse(status=status.ACCEPTED)

    def _schedule_report(self, request_id: int, chosen: Sequence[VariableDefinition]) -> None:
        # The values are read now, when generatedAt says the report was made.
        pages = notify_report_pages(
            report_data(chosen, self._dm.get), request_id=request_id, generated_at=self._clock.now()
        )
        self._after_answer.start_soon(self._send_report, request_id, pages)  # after the answer

    async def _send_report(self, request_id: int, pages: list[dict[str, object]]) -> None:
        """Send the pages in order, losing none to a lost connection.

        Part 2 / part 4 name no queueing for NotifyReport (only transaction messages must be queued;
        QueueAllMessages is false here), so the rule is ours: lose no data. A page whose connection
        failed before its answer goes again, unchanged (same seqNo, tbc, generatedAt), on the next
        connection on which the station may send it (Accepted, or Pending: B02.FR.09), and the rest
        follow it. The CSMS may see that page twice; it never misses one. Held in memory: a restart
        ends the report (the CSMS sees no tbc=false and asks again), and so does a switch to another
        network profile (B10.FR.10): the CSMS behind it never asked for this report."""
        registration = self._uplink.boot.registration
        seq_no = 0
        timeouts = 0
        while seq_no < len(pages):
            calls = await self._uplink.wait_requested_sendable("NotifyReport")
            if self._uplink.boot.registration != registration:
                log.warning("report %d dropped at page %d: now connected to another CSMS", request_id, seq_no)
                return
            try:
                await calls.call("NotifyReport", pages[seq_no])
            except LinkDown as exc:
                log.info("report %d: page %d goes again after the reconnect (%s)", request_id, seq_no, exc)
                continue
            except CallTimeout as exc:
                # Unanswered on a live connection: send it again, a few times, then give up rather than
                # hold the call slot forever for a CSMS that never answers NotifyReport.
                timeouts += 1
                if timeouts < REPORT_PAGE_ATTEMPTS:
                    log.warning("report %d: page %d again: %s", request_id, seq_no, exc)
                    continue
                log.warning("report %d stopped at page %d after %d timeouts", request_id, seq_no, timeouts)
                return
            except InvalidRequest as exc:  # pragma: no cover - every page validates (pure tests)
                log.error("report %d stopped at page %d: %s", request_id, seq_no, exc)
                return
            except CallFailed as exc:
                # A CALLERROR or a malformed answer: the CSMS did receive the page; the rest still go.
                log.warning("report %d: page %d refused: %s", request_id, seq_no, exc)
            seq_no += 1
            timeouts = 0
        log.info("report %d sent in %d NotifyReport message(s)", request_id, len(pages))

    # --- 2.0.1 SetNetworkProfile (B09) ------------------------------------------------------------

    @handles(V201, "SetNetworkProfile")
    async def set_network_profile(self, req: v201.SetNetworkProfileRequest) -> v201.SetNetworkProfileResponse:
        status = v201.SetNetworkProfileStatusEnumType
        data = req.connection_data
        profile = NetworkProfile(
            ocpp_version=enum_text(data.ocpp_version),
            ocpp_transport=enum_text(data.ocpp_transport),
            ocpp_csms_url=data.ocpp_csms_url,
            message_timeout=data.message_timeout,
            security_profile=data.security_profile,
            ocpp_interface=enum_text(data.ocpp_interface),
            has_apn=data.apn is not None,
            has_vpn=data.vpn is not None,
        )
        priority = self._dm.definitions[NETWORK_CONFIGURATION_PRIORITY]
        slots = [int(slot) for slot in priority.values_list or ()]
        decision = check_network_profile(
            req.configuration_slot, profile, slots, self._dm.get_int(SECURITY_PROFILE)
        )
        if not decision.accepted:
            log.warning("SetNetworkProfile slot %d rejected: %s", req.configuration_slot, decision.info)
            return v201.SetNetworkProfileResponse(
                status=status.REJECTED, status_info=_status_info(decision.reason, decision.info)
            )
        stored = StoredNetworkProfile(req.configuration_slot, data.security_profile, to_payload(data))
        stored_at = to_db_time(self._clock.now())
        try:
            await self._storage.write(lambda conn: _write_network_profile(conn, stored, stored_at))
        except (StorageError, sqlite3.Error) as exc:
            # B09.FR.03: a valid profile the station could not store.
            log.error("SetNetworkProfile slot %d not stored: %s", req.configuration_slot, exc)
            return v201.SetNetworkProfileResponse(status=status.FAILED)
        async with self._network_profiles_lock:
            if self._network_profiles is not None:  # else the first read finds it in SQLite
                self._network_profiles[stored.slot] = stored
        log.info(
            "network profile stored in slot %d (%s, security profile %d); the link dials it from the next "
            "boot or lost connection when NetworkConfigurationPriority names the slot",
            stored.slot,
            data.ocpp_csms_url,
            stored.security_profile,
        )
        return v201.SetNetworkProfileResponse(status=status.ACCEPTED)

    async def network_profiles(self) -> list[StoredNetworkProfile]:
        """Every stored SetNetworkProfile, by slot: from SQLite on the first call, then from memory."""
        async with self._network_profiles_lock:
            if self._network_profiles is None:
                stored = await self._storage.read(_read_network_profiles)
                self._network_profiles = {profile.slot: profile for profile in stored}
            return [self._network_profiles[slot] for slot in sorted(self._network_profiles)]

    # --- 1.6 GetConfiguration / ChangeConfiguration (sections 5.8, 5.3) -----------------------------

    @handles(V16, "GetConfiguration")
    async def get_configuration(self, req: v16.GetConfigurationRequest) -> v16.GetConfigurationResponse:
        from evstation.protocol.device_model.v16 import GET_CONFIGURATION_MAX_KEYS

        names = req.key or []
        if len(names) > GET_CONFIGURATION_MAX_KEYS:
            # 1.6 names no answer for this; the RPC framework's code for "too many elements".
            raise HandlerError(
                ErrorKind.OCCURRENCE_CONSTRAINT, f"more than {GET_CONFIGURATION_MAX_KEYS} keys"
            )
        entries, unknown = self._dm.v16_get_configuration(names or None)
        keys = [v16.ConfigurationKey(key=e.key, readonly=e.readonly, value=e.value) for e in entries]
        return v16.GetConfigurationResponse(configuration_key=keys or None, unknown_key=unknown or None)

    @handles(V16, "ChangeConfiguration")
    async def change_configuration(
        self, req: v16.ChangeConfigurationRequest
    ) -> v16.ChangeConfigurationResponse:
        change = await self._dm.v16_change_configuration(req.key, req.value)
        if change.info is not None:
            log.info("ChangeConfiguration %s: %s (%s)", req.key, change.status.value, change.info)
        return v16.ChangeConfigurationResponse(status=v16.ChangeConfigurationStatusEnum(change.status.value))

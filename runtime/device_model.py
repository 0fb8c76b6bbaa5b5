"""The device model's values: one store for both OCPP versions, in memory for reads, written through.

- Reads (`get`, `get_int`, `get_float`, `get_bool`) are synchronous, from memory: never a wait on SQLite.
- `set` is the CSMS's write (SetVariables; ChangeConfiguration through `v16_change_configuration`):
  validated by the pure layer first (protocol/device_model), then committed to SQLite, then the memory
  is updated and watchers are told. A write that changes nothing still answers Accepted. A value the
  database refuses to store is Rejected (reasonCode InternalError) and changes nothing.
- `update` is the station's own write of state it maintains (AvailabilityState, ActiveNetworkProfile):
  any mutability, type-checked; a bad value is a bug and raises. A value the database refuses to
  store applies in memory anyway (logged): it is the station's own view of now, re-made after a restart.
- `watch(*keys)` is the one subscription mechanism: a context manager yielding a memory channel of
  `VariableChange`s, delivered after the write is durable. "Wait for the interval or for a change of
  it" is `sleep_or_change(changes, deadline)`.
- Seeding (`open_device_model`): on the first start every value comes from station.toml (`seed_values`)
  or the definition's default; afterwards the CSMS owns the writable values, except that a value whose
  station.toml entry changed since the last start is overridden by the file (and logged). ReadOnly
  values always follow the file / the definitions (docs/device-model.md, "Seeding").

It never decides OCPP rules itself: validation, the 1.6 key map and reports are in protocol/.
"""

from __future__ import annotations

import functools
import logging
import math
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from evstation.protocol.device_model import (
    AttributeType,
    ComponentKey,
    DeviceModelDefinitions,
    Mutability,
    ReasonCode,
    SetDecision,
    SetStatus,
    VariableDefinition,
    VariableKey,
    build_definitions,
    check_set,
    check_value,
    parse_bool,
    parse_decimal,
    parse_int,
)
from evstation.protocol.device_model.validation import is_password_string
from evstation.protocol.layout import ConnectorLayout, EvseLayout, StationLayout
from evstation.protocol.retry import TransactionRetryPolicy
from evstation.records import record
from evstation.runtime.config import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH, SimMeterConfig, StationConfig
from evstation.runtime.fault_components import Place, problem_places
from evstation.runtime.storage import Storage, StorageWriteError

if TYPE_CHECKING:
    # The 1.6 key map is built on its first use (GetConfiguration, ChangeConfiguration): a 2.0.1
    # station never loads it, a 1.6 one not before the CSMS asks (start-up time, issue 9).
    from evstation.protocol.device_model.v16 import V16Change, V16KeyMap, V16KeyValue

__all__ = [
    "ACTIVE_NETWORK_PROFILE",
    "ALIGNED_DATA_ENABLED",
    "ALIGNED_DATA_INTERVAL",
    "ALIGNED_DATA_MEASURANDS",
    "ALIGNED_DATA_SEND_DURING_IDLE",
    "ALIGNED_DATA_TX_ENDED_INTERVAL",
    "ALIGNED_DATA_TX_ENDED_MEASURANDS",
    "AUTHORIZE_REMOTE_START",
    "AUTH_CACHE_DISABLE_POST_AUTHORIZE",
    "AUTH_CACHE_ENABLED",
    "AUTH_CACHE_LIFETIME",
    "AUTH_ENABLED",
    "BASIC_AUTH_PASSWORD",
    "DATE_TIME",
    "DISABLE_REMOTE_AUTHORIZATION",
    "EV_CONNECTION_TIMEOUT",
    "HEARTBEAT_INTERVAL",
    "IDENTITY",
    "LOCAL_AUTHORIZE_OFFLINE",
    "LOCAL_LIST_DISABLE_POST_AUTHORIZE",
    "LOCAL_LIST_ENABLED",
    "LOCAL_LIST_ENTRIES_KEY",
    "LOCAL_PRE_AUTHORIZE",
    "MASTER_PASS_GROUP_ID",
    "MAX_ENERGY_ON_INVALID_ID",
    "MESSAGE_ATTEMPTS_TRANSACTION_EVENT",
    "MESSAGE_ATTEMPT_INTERVAL_TRANSACTION_EVENT",
    "MESSAGE_TIMEOUT",
    "MODEL",
    "NETWORK_CONFIGURATION_PRIORITY",
    "NETWORK_PROFILE_CONNECTION_ATTEMPTS",
    "NOT_STORED_INFO",
    "OFFLINE_THRESHOLD",
    "OFFLINE_TX_FOR_UNKNOWN_ID",
    "RESERVATION_ENABLED",
    "RESERVATION_NON_EVSE_SPECIFIC",
    "RESUME_TRANSACTIONS_ON_BOOT",
    "RETRY_BACK_OFF_RANDOM_RANGE",
    "RETRY_BACK_OFF_REPEAT_TIMES",
    "RETRY_BACK_OFF_WAIT_MINIMUM",
    "SAMPLED_DATA_ENABLED",
    "SECURITY_PROFILE",
    "STOP_TX_ON_EV_SIDE_DISCONNECT",
    "STOP_TX_ON_INVALID_ID",
    "TIME_ADJUSTMENT_REPORTING_THRESHOLD",
    "TX_ENDED_INTERVAL",
    "TX_ENDED_MEASURANDS",
    "TX_STARTED_MEASURANDS",
    "TX_START_POINT",
    "TX_STOP_POINT",
    "TX_UPDATED_INTERVAL",
    "TX_UPDATED_MEASURANDS",
    "UNLOCK_ON_EV_SIDE_DISCONNECT",
    "VENDOR_NAME",
    "WEB_SOCKET_PING_INTERVAL",
    "DeviceModel",
    "VariableChange",
    "definitions_for",
    "layout_from_config",
    "open_device_model",
    "seed_values",
    "sleep_or_change",
]

log = logging.getLogger(__name__)

ACTUAL: Final = AttributeType.ACTUAL
# StatusInfo additionalInfo (1.6: the log's reason) of a CSMS request refused because the database
# refuses writes (docs/storage.md "When writes fail").
NOT_STORED_INFO: Final = "not stored: the station's database refuses writes"


def _controller(name: str, variable: str, instance: str | None = None) -> VariableKey:
    return VariableKey(ComponentKey(name), variable, instance)


# The variables the runtime's timers and retry policies read (the consumers watch them).
HEARTBEAT_INTERVAL: Final = _controller("OCPPCommCtrlr", "HeartbeatInterval")
WEB_SOCKET_PING_INTERVAL: Final = _controller("OCPPCommCtrlr", "WebSocketPingInterval")
MESSAGE_TIMEOUT: Final = _controller("OCPPCommCtrlr", "MessageTimeout", "Default")
RETRY_BACK_OFF_WAIT_MINIMUM: Final = _controller("OCPPCommCtrlr", "RetryBackOffWaitMinimum")
RETRY_BACK_OFF_RANDOM_RANGE: Final = _controller("OCPPCommCtrlr", "RetryBackOffRandomRange")
RETRY_BACK_OFF_REPEAT_TIMES: Final = _controller("OCPPCommCtrlr", "RetryBackOffRepeatTimes")
NETWORK_PROFILE_CONNECTION_ATTEMPTS: Final = _controller("OCPPCommCtrlr", "NetworkProfileConnectionAttempts")
MESSAGE_ATTEMPTS_TRANSACTION_EVENT: Final = _controller(
    "OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"
)
MESSAGE_ATTEMPT_INTERVAL_TRANSACTION_EVENT: Final = _controller(
    "OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"
)
ACTIVE_NETWORK_PROFILE: Final = _controller("OCPPCommCtrlr", "ActiveNetworkProfile")
TX_UPDATED_INTERVAL: Final = _controller("SampledDataCtrlr", "TxUpdatedInterval")
# Meter values and transactions (runtime/blocks/transactions): read at each decision.
SAMPLED_DATA_ENABLED: Final = _controller("SampledDataCtrlr", "Enabled")
TX_STARTED_MEASURANDS: Final = _controller("SampledDataCtrlr", "TxStartedMeasurands")
TX_UPDATED_MEASURANDS: Final = _controller("SampledDataCtrlr", "TxUpdatedMeasurands")
TX_ENDED_MEASURANDS: Final = _controller("SampledDataCtrlr", "TxEndedMeasurands")
TX_ENDED_INTERVAL: Final = _controller("SampledDataCtrlr", "TxEndedInterval")
ALIGNED_DATA_ENABLED: Final = _controller("AlignedDataCtrlr", "Enabled")
ALIGNED_DATA_INTERVAL: Final = _controller("AlignedDataCtrlr", "Interval")
ALIGNED_DATA_MEASURANDS: Final = _controller("AlignedDataCtrlr", "Measurands")
ALIGNED_DATA_SEND_DURING_IDLE: Final = _controller("AlignedDataCtrlr", "SendDuringIdle")
ALIGNED_DATA_TX_ENDED_INTERVAL: Final = _controller("AlignedDataCtrlr", "TxEndedInterval")
ALIGNED_DATA_TX_ENDED_MEASURANDS: Final = _controller("AlignedDataCtrlr", "TxEndedMeasurands")
TX_START_POINT: Final = _controller("TxCtrlr", "TxStartPoint")
TX_STOP_POINT: Final = _controller("TxCtrlr", "TxStopPoint")
STOP_TX_ON_INVALID_ID: Final = _controller("TxCtrlr", "StopTxOnInvalidId")
MAX_ENERGY_ON_INVALID_ID: Final = _controller("TxCtrlr", "MaxEnergyOnInvalidId")
RESUME_TRANSACTIONS_ON_BOOT: Final = _controller("TxCtrlr", "ResumeTransactionsOnBoot")
OFFLINE_THRESHOLD: Final = _controller("OCPPCommCtrlr", "OfflineThreshold")
EV_CONNECTION_TIMEOUT: Final = _controller("TxCtrlr", "EVConnectionTimeOut")
STOP_TX_ON_EV_SIDE_DISCONNECT: Final = _controller("TxCtrlr", "StopTxOnEVSideDisconnect")
UNLOCK_ON_EV_SIDE_DISCONNECT: Final = _controller("OCPPCommCtrlr", "UnlockOnEVSideDisconnect")
SECURITY_PROFILE: Final = _controller("SecurityCtrlr", "SecurityProfile")
IDENTITY: Final = _controller("SecurityCtrlr", "Identity")
BASIC_AUTH_PASSWORD: Final = _controller("SecurityCtrlr", "BasicAuthPassword")
VENDOR_NAME: Final = _controller("ChargingStation", "VendorName")
MODEL: Final = _controller("ChargingStation", "Model")
DATE_TIME: Final = _controller("ClockCtrlr", "DateTime")
TIME_ADJUSTMENT_REPORTING_THRESHOLD: Final = _controller("ClockCtrlr", "TimeAdjustmentReportingThreshold")
NETWORK_CONFIGURATION_PRIORITY: Final = _controller("OCPPCommCtrlr", "NetworkConfigurationPriority")

# The authorization block's settings (C, D; 1.6 Core and LocalAuthListManagement).
AUTH_CACHE_ENABLED: Final = _controller("AuthCacheCtrlr", "Enabled")
AUTH_CACHE_LIFETIME: Final = _controller("AuthCacheCtrlr", "LifeTime")
AUTH_CACHE_DISABLE_POST_AUTHORIZE: Final = _controller("AuthCacheCtrlr", "DisablePostAuthorize")
# false: no authorization (free vend); seeded from station.toml [authorization] enabled.
AUTH_ENABLED: Final = _controller("AuthCtrlr", "Enabled")
LOCAL_AUTHORIZE_OFFLINE: Final = _controller("AuthCtrlr", "LocalAuthorizeOffline")
LOCAL_PRE_AUTHORIZE: Final = _controller("AuthCtrlr", "LocalPreAuthorize")
OFFLINE_TX_FOR_UNKNOWN_ID: Final = _controller("AuthCtrlr", "OfflineTxForUnknownIdEnabled")
DISABLE_REMOTE_AUTHORIZATION: Final = _controller("AuthCtrlr", "DisableRemoteAuthorization")
MASTER_PASS_GROUP_ID: Final = _controller("AuthCtrlr", "MasterPassGroupId")
LOCAL_LIST_ENABLED: Final = _controller("LocalAuthListCtrlr", "Enabled")
LOCAL_LIST_ENTRIES_KEY: Final = _controller("LocalAuthListCtrlr", "Entries")
LOCAL_LIST_DISABLE_POST_AUTHORIZE: Final = _controller("LocalAuthListCtrlr", "DisablePostAuthorize")
# 1.6 AuthorizeRemoteTxRequests projects onto this variable.
AUTHORIZE_REMOTE_START: Final = _controller("AuthCtrlr", "AuthorizeRemoteStart")

# The reservation block's settings (H).
RESERVATION_ENABLED: Final = _controller("ReservationCtrlr", "Enabled")
# 1.6 ReserveConnectorZeroSupported projects onto this variable.
RESERVATION_NON_EVSE_SPECIFIC: Final = _controller("ReservationCtrlr", "NonEvseSpecific")

_Slot = tuple[VariableKey, AttributeType]


@record
class VariableChange:
    """A value that changed, after it is durable (what `watch` delivers)."""

    key: VariableKey
    attribute: AttributeType
    value: str


@dataclass(slots=True)
class _Watcher:
    """A `watch` subscription: the variables it follows and where their changes go."""

    keys: frozenset[VariableKey]  # empty: every variable
    send: trio.MemorySendChannel[VariableChange]


# --------------------------------------------------------------------------------------------------
# station.toml -> layout, definitions, seed


def _seconds(value: float) -> str:
    """Whole seconds for an integer variable: fractions round up, so a positive value never becomes 0."""
    return str(math.ceil(value))


# SupportedFeatureProfiles: only what the station serves. protocol.device_model.v16.V16Profile values,
# spelled out so that importing this module does not load the 1.6 key table. "Security" is not a
# feature profile (never listed in SupportedFeatureProfiles): it makes the whitepaper's keys whose
# variable the device model defines known (AuthorizationKey; SecurityProfile and
# AdditionalRootCertificateCheck read-only); the others stay unknown (docs/status/v16-core-keys.md).
IMPLEMENTED_V16_PROFILES: Final[tuple[str, ...]] = (
    "Core",
    "LocalAuthListManagement",
    "RemoteTrigger",
    "Reservation",
    "Security",
)


def layout_from_config(config: StationConfig) -> StationLayout:
    """EVSEs and connectors as station.toml describes them; rated power from current, phases and voltage;
    the components each reports faults on from its drivers (runtime/fault_components.py)."""
    voltage = config.electrical.line_voltage_v
    station_limit_a = config.electrical.max_current_a
    evses: list[EvseLayout] = []
    for evse in config.evse:
        places = problem_places(evse)
        connectors = tuple(
            ConnectorLayout(c.id, c.type, 0 if c.current_type == "DC" else c.phases, _named(places, c.id))
            for c in evse.connector
        )
        ac_powers = [
            min(c.max_current_a, station_limit_a or c.max_current_a) * c.phases * voltage
            for c in evse.connector
            if c.current_type == "AC"
        ]
        signs = isinstance(evse.meter, SimMeterConfig) and evse.meter.signed
        power = max(ac_powers) if ac_powers else None
        named = _named(places, None)
        evses.append(EvseLayout(evse.id, connectors, power, meter_signs=signs, problem_components=named))
    slots = tuple(endpoint.priority for endpoint in config.csms.endpoints_by_priority)
    return StationLayout(tuple(evses), network_slots=slots)


def _named(places: frozenset[Place], connector_id: int | None) -> tuple[str, ...]:
    """The components of `places` on that connector (None: on the EVSE itself)."""
    return tuple(sorted(name for name, _, connector in places if connector == connector_id))


def definitions_for(config: StationConfig) -> DeviceModelDefinitions:
    return build_definitions(layout_from_config(config))


def seed_values(config: StationConfig) -> dict[VariableKey, str]:
    """The Actual values station.toml gives: the [csms] OCPP settings and the station's identity.

    Physical facts (connector types, phases, rated power) come through `layout_from_config` as the
    definitions' defaults. Seconds are whole seconds in the device model (fractions round up).
    """
    csms = config.csms
    first = csms.endpoints_by_priority[0]
    seed = {
        HEARTBEAT_INTERVAL: _seconds(csms.heartbeat_interval_s),
        WEB_SOCKET_PING_INTERVAL: _seconds(csms.ping_interval_s),
        MESSAGE_TIMEOUT: _seconds(csms.message_timeout_s),
        RETRY_BACK_OFF_WAIT_MINIMUM: _seconds(csms.retry_backoff_wait_minimum_s),
        RETRY_BACK_OFF_RANDOM_RANGE: _seconds(csms.retry_backoff_random_range_s),
        RETRY_BACK_OFF_REPEAT_TIMES: str(csms.retry_backoff_repeat_times),
        NETWORK_PROFILE_CONNECTION_ATTEMPTS: str(csms.connection_attempts_per_endpoint),
        MESSAGE_ATTEMPTS_TRANSACTION_EVENT: str(csms.transaction_message_attempts),
        MESSAGE_ATTEMPT_INTERVAL_TRANSACTION_EVENT: _seconds(csms.transaction_message_retry_interval_s),
        TX_UPDATED_INTERVAL: _seconds(csms.meter_value_sample_interval_s),
        AUTH_ENABLED: "true" if config.authorization.enabled else "false",
        IDENTITY: config.station.id,
        VENDOR_NAME: config.station.vendor,
        MODEL: config.station.model,
        SECURITY_PROFILE: str(first.security_profile),
        ACTIVE_NETWORK_PROFILE: str(first.priority),
        # Seeded, so that a change of station.toml's endpoints replaces a priority the CSMS set.
        NETWORK_CONFIGURATION_PRIORITY: ",".join(str(e.priority) for e in csms.endpoints_by_priority),
    }
    password = basic_auth_seed(
        e.password.get_secret_value() for e in csms.endpoints_by_priority if e.password is not None
    )
    if password is not None:
        seed[BASIC_AUTH_PASSWORD] = password
    return seed


def basic_auth_seed(passwords: Iterable[str]) -> str | None:
    """SecurityCtrlr.BasicAuthPassword's seed: station.toml's first Basic-auth password (endpoints in
    priority order), when it is a valid passwordString. A password with other characters (station.toml
    checks the length only) is not seeded: the endpoints then use their own as before, and the variable
    has no value until the CSMS sets one."""
    first = next(iter(passwords), None)
    return first if first is not None and valid_basic_auth_password(first) else None


def valid_basic_auth_password(password: str) -> bool:
    """SecurityCtrlr.BasicAuthPassword's rule: 16-40 characters of the spec's passwordString."""
    return PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH and is_password_string(password)


# --------------------------------------------------------------------------------------------------
# SQLite rows (run in the database thread)

_COLUMNS: Final = (
    "component, component_instance, evse_id, connector_id, variable, variable_instance, attribute, "
    "value, seeded"
)


def _row_key(key: VariableKey, attribute: AttributeType) -> tuple[str, str, int, int, str, str, str]:
    c = key.component
    return (
        c.name,
        c.instance or "",
        c.evse_id or 0,
        c.connector_id or 0,
        key.name,
        key.instance or "",
        attribute.value,
    )


def _read_rows(conn: sqlite3.Connection) -> dict[_Slot, tuple[str, str | None]]:
    rows: dict[_Slot, tuple[str, str | None]] = {}
    for row in conn.execute(f"SELECT {_COLUMNS} FROM device_variables"):
        try:
            attribute = AttributeType(row["attribute"])
        except ValueError:
            continue  # not an attribute type we know: left as it is
        component = ComponentKey(
            row["component"],
            row["component_instance"] or None,
            row["evse_id"] or None,
            row["connector_id"] or None,
        )
        key = VariableKey(component, row["variable"], row["variable_instance"] or None)
        rows[(key, attribute)] = (row["value"], row["seeded"])
    return rows


def _write_rows(conn: sqlite3.Connection, rows: Iterable[tuple[_Slot, str, str | None]]) -> None:
    conn.executemany(
        f"INSERT OR REPLACE INTO device_variables ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(*_row_key(key, attribute), value, seeded) for (key, attribute), value, seeded in rows],
    )


def _update_values(conn: sqlite3.Connection, rows: Iterable[tuple[_Slot, str]]) -> None:
    """Change values, keeping each row's `seeded` (what the file said at the last start)."""
    for (key, attribute), value in rows:
        values = _row_key(key, attribute)
        updated = conn.execute(
            "UPDATE device_variables SET value = ? WHERE component = ? AND component_instance = ? AND "
            "evse_id = ? AND connector_id = ? AND variable = ? AND variable_instance = ? AND attribute = ?",
            (value, *values),
        )
        if updated.rowcount == 0:
            _write_rows(conn, [((key, attribute), value, None)])


# --------------------------------------------------------------------------------------------------
# The store


class DeviceModel:
    """Values of one station's variables. Build it with `open_device_model`, never directly."""

    def __init__(
        self,
        storage: Storage,
        definitions: DeviceModelDefinitions,
        values: dict[_Slot, str],
        v16_profiles: Iterable[str],
    ) -> None:
        self.definitions = definitions
        self._v16_profiles = tuple(v16_profiles)
        self._storage = storage
        self._values = values
        self._sources: dict[_Slot, Callable[[], str | None]] = {}
        self._watchers: list[_Watcher] = []
        # One write at a time: the memory must end up equal to the last commit.
        self._lock = trio.Lock()

    # -- reads (synchronous, from memory) ---------------------------------------------------------------

    def get(self, key: VariableKey, attribute: AttributeType = ACTUAL) -> str | None:
        """The value, or None when the variable has none. WriteOnly values are returned too: the
        protocol handlers decide what may go on the wire (`check_get`)."""
        source = self._sources.get((key, attribute))
        if source is not None:
            return source()
        return self._values.get((key, attribute))

    def _required(self, key: VariableKey, attribute: AttributeType) -> str:
        value = self.get(key, attribute)
        if value is None:
            if key not in self.definitions:
                raise KeyError(f"no variable {key}")
            raise LookupError(f"{key} ({attribute.value}) has no value")
        return value

    def get_int(self, key: VariableKey, attribute: AttributeType = ACTUAL) -> int:
        return parse_int(self._required(key, attribute))

    def get_float(self, key: VariableKey, attribute: AttributeType = ACTUAL) -> float:
        return parse_decimal(self._required(key, attribute))

    def get_bool(self, key: VariableKey, attribute: AttributeType = ACTUAL) -> bool:
        return parse_bool(self._required(key, attribute))

    def provide(self, key: VariableKey, source: Callable[[], str | None]) -> None:
        """Compute a value on every read instead of storing it (ClockCtrlr.DateTime from the clock).

        Only for ReadOnly variables that are not persistent: nothing can write them.
        """
        definition = self.definitions[key]
        if definition.persistent or definition.writable:
            raise ValueError(f"{key}: only a non-persistent ReadOnly variable can be provided")
        self._sources[(key, ACTUAL)] = source

    # -- writes ----------------------------------------------------------------------------------------

    async def set(self, key: VariableKey, value: str, attribute: AttributeType = ACTUAL) -> SetDecision:
        """The CSMS's write (one SetVariableData item): the pure decision, and the value stored when it
        applies (Accepted or RebootRequired). Returns when the value is durable and watchers are told."""
        decision = check_set(self.definitions, key, attribute, value)
        if decision.applies:
            assert decision.value is not None
            try:
                await self._apply([((key, attribute), decision.value)], by="CSMS")
            except StorageWriteError as exc:
                log.warning("device model: %s not set by the CSMS: %s", _describe(key, attribute), exc)
                return SetDecision(
                    SetStatus.REJECTED, reason_code=ReasonCode.INTERNAL_ERROR, info=NOT_STORED_INFO
                )
        return decision

    async def update(self, key: VariableKey, value: str, attribute: AttributeType = ACTUAL) -> None:
        """The station's own write of a value it maintains (any mutability). The value is type-checked
        but not held to minLimit / maxLimit (a measurement is what it is); a value of the wrong type or
        outside the values list is a bug of the caller: ValueError."""
        definition = self.definitions[key]
        if definition.attribute(attribute) is None:
            raise ValueError(f"{key} has no {attribute.value} attribute")
        decision = check_value(definition, value, limits=False)
        if not decision.applies or decision.value is None:
            raise ValueError(f"{key}: {value!r} rejected: {decision.info}")
        await self._apply([((key, attribute), decision.value)], by="station")

    async def _apply(self, writes: Sequence[tuple[_Slot, str]], *, by: str) -> None:
        async with self._lock:
            changed = [(slot, value) for slot, value in writes if self._values.get(slot) != value]
            if not changed:
                return
            durable = [(slot, value) for slot, value in changed if self.definitions[slot[0]].persistent]
            if durable:
                try:
                    await self._storage.write(lambda conn: _update_values(conn, durable))
                except StorageWriteError:
                    if by == "CSMS":
                        raise  # the CSMS is told (Rejected) and its value never applies
                    # The station's own value (an interval the CSMS gave at boot, the profile in use) is
                    # true now and is made again after a restart: it applies, unstored.
                    log.warning(
                        "device model: %s not stored (the database refuses writes); applies until a restart",
                        ", ".join(_describe(*slot) for slot, _ in durable),
                    )
            # No checkpoint from here on: memory and watchers follow the commit atomically.
            for slot, value in changed:
                previous = self._values.get(slot)
                self._values[slot] = value
                if by == "CSMS":
                    log.info(
                        "device model: %s set to %s by the CSMS (was %s)",
                        _describe(*slot),
                        _shown(self.definitions[slot[0]], value),
                        _shown(self.definitions[slot[0]], previous),
                    )
                self._notify(VariableChange(slot[0], slot[1], value))

    def _notify(self, change: VariableChange) -> None:
        for watcher in list(self._watchers):
            if watcher.keys and change.key not in watcher.keys:
                continue
            try:
                watcher.send.send_nowait(change)
            except trio.BrokenResourceError:
                # The consumer closed its end inside its watch block: it wants nothing more.
                self._watchers.remove(watcher)

    # -- subscriptions -----------------------------------------------------------------------------

    @contextmanager
    def watch(self, *keys: VariableKey) -> Iterator[trio.MemoryReceiveChannel[VariableChange]]:
        """Changes of `keys` (of every variable when none is given) for the duration of the block.

        Each change is delivered once, in commit order, after it is durable; the buffer is unbounded
        because a CSMS writes rarely and a setter must never wait for a slow consumer.
        """
        for key in keys:
            if key not in self.definitions:
                raise KeyError(f"no variable {key}")
        send, receive = trio.open_memory_channel[VariableChange](math.inf)
        watcher = _Watcher(frozenset(keys), send)
        self._watchers.append(watcher)
        try:
            with receive:
                yield receive
        finally:
            if watcher in self._watchers:
                self._watchers.remove(watcher)
            send.close()

    # -- the 1.6 projection --------------------------------------------------------------------------

    @functools.cached_property
    def v16(self) -> V16KeyMap:
        """The station's 1.6 keys, built on first use."""
        from evstation.protocol.device_model.v16 import V16KeyMap

        return V16KeyMap(self.definitions, self._v16_profiles)

    def v16_get_configuration(self, keys: Sequence[str] | None = None) -> tuple[list[V16KeyValue], list[str]]:
        """GetConfiguration.conf: (configurationKey entries, unknownKey names). No keys: every key."""
        return self.v16.get_configuration(keys, self.get)

    async def v16_change_configuration(self, key: str, value: str) -> V16Change:
        """ChangeConfiguration: the status (Accepted / Rejected / RebootRequired / NotSupported) with a
        reason in `info`; the mapped variables are written, durably, before it returns."""
        change = self.v16.change(key, value)
        if change.writes:
            try:
                await self._apply([((w.key, w.attribute), w.value) for w in change.writes], by="CSMS")
            except StorageWriteError:
                from evstation.protocol.device_model.v16 import ConfigurationStatus, V16Change

                return V16Change(ConfigurationStatus.REJECTED, info=NOT_STORED_INFO)  # logged by the caller
        return change


def _describe(key: VariableKey, attribute: AttributeType) -> str:
    return str(key) if attribute is ACTUAL else f"{key} ({attribute.value})"


def _shown(definition: VariableDefinition, value: str | None) -> str:
    """A value for a log line: a WriteOnly value (a password) is a secret and never written out."""
    if value is not None and definition.mutability() is Mutability.WRITE_ONLY:
        return "(hidden)"
    return repr(value)


async def sleep_or_change(
    changes: trio.MemoryReceiveChannel[VariableChange], deadline: float
) -> VariableChange | None:
    """Wait until the Trio time `deadline` unless a change arrives first: the change, or None.

    A timer that must follow its interval variable loops: read the interval, compute the deadline
    from the last tick, `sleep_or_change`; on a change recompute the deadline, on None tick.
    """
    with trio.move_on_at(deadline):
        return await changes.receive()
    return None


# --------------------------------------------------------------------------------------------------
# Opening: stored values, seeding, the station.toml edit rule


def _start_value(
    definition: VariableDefinition,
    attribute: AttributeType,
    seed: str | None,
    stored: str | None,
    seeded: str | None,
) -> str | None:
    """The value a variable attribute has at start (docs/device-model.md, "Seeding")."""
    writable = definition.mutability(attribute) is not Mutability.READ_ONLY
    fallback = seed if seed is not None else definition.default
    if stored is not None and not check_value(definition, stored).applies:
        log.warning(
            "device model: stored %s = %s is not valid any more; using %s",
            definition.key,
            _shown(definition, stored),
            _shown(definition, fallback),
        )
        stored = None
    if not writable:
        # Facts of the station and of this build: the file / the definitions win at every start.
        return fallback if fallback is not None else stored
    if stored is None:
        return fallback
    if seed is not None and seeded is not None and seed != seeded:
        log.warning(
            "device model: station.toml changed %s from %s to %s since the last start; "
            "it overrides the stored value %s",
            definition.key,
            _shown(definition, seeded),
            _shown(definition, seed),
            _shown(definition, stored),
        )
        return seed
    return stored


async def load_device_model(storage: Storage, config: StationConfig) -> DeviceModel:
    """The station's device model: definitions from station.toml's layout, seeded from its settings,
    with the 1.6 feature profiles the station implements."""
    return await open_device_model(
        storage, definitions_for(config), seed_values(config), v16_profiles=IMPLEMENTED_V16_PROFILES
    )


async def open_device_model(
    storage: Storage,
    definitions: DeviceModelDefinitions,
    seed: Mapping[VariableKey, str],
    *,
    v16_profiles: Iterable[str] = ("Core",),
) -> DeviceModel:
    """Load the stored values, apply the seeding rule, persist the result in one transaction.

    `seed` holds station.toml's Actual values (`seed_values(config)`); `v16_profiles` the 1.6 feature
    profiles the station implements (SupportedFeatureProfiles, and which keys exist).
    """
    for key, value in seed.items():
        definition = definitions.get(key)
        if definition is None:
            raise ValueError(f"seed for unknown variable {key}")
        if not check_value(definition, value).applies:
            raise ValueError(f"seed {key} = {value!r} is not a valid value of the variable")
    stored_rows = await storage.read(_read_rows)
    values: dict[_Slot, str] = {}
    rows: list[tuple[_Slot, str, str | None]] = []
    for definition in definitions:
        for attribute_definition in definition.attributes:
            attribute = attribute_definition.type
            slot = (definition.key, attribute)
            given = seed.get(definition.key) if attribute is ACTUAL else None
            stored, seeded = stored_rows.get(slot, (None, None))
            start = _start_value(definition, attribute, given, stored, seeded)
            if start is None:
                continue
            # One spelling in memory and on disk (a seed may say "TRUE").
            value = check_value(definition, start).value or start
            values[slot] = value
            if definition.persistent and (value, given) != (stored, seeded):
                rows.append((slot, value, given))
    if rows:
        try:
            await storage.write(lambda conn: _write_rows(conn, rows))
        except StorageWriteError:
            # A database refusing writes must not stop the start (docs/storage.md "When writes fail"):
            # these values are made from station.toml and what is stored, so the next start makes
            # them again.
            log.warning("device model: %d value(s) from station.toml not stored; they apply", len(rows))
    return DeviceModel(storage, definitions, values, v16_profiles)


def transaction_retry_policy(dm: DeviceModel) -> TransactionRetryPolicy:
    """The retries of a message the CSMS failed to answer (1.6 TransactionMessageAttempts /
    RetryInterval, 2.0.1 MessageAttempts / MessageAttemptInterval of the TransactionEvent instance),
    as the device model says now: a CSMS's change applies to the next retry."""
    return TransactionRetryPolicy(
        dm.get_int(MESSAGE_ATTEMPTS_TRANSACTION_EVENT),
        dm.get_float(MESSAGE_ATTEMPT_INTERVAL_TRANSACTION_EVENT),
    )

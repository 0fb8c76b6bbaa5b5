"""The standardized components and variables evstation has, as a table (data, not code per variable).

Written from the OCPP 2.0.1 part 2 appendix "Components and Variables" (edition 3), checked against the
reference station's list (docs/device-model.md lists every deviation). A Python table rather than a
CSV file: protocol/ never opens files, and mypy checks every cell.

Three kinds of row:
- CSMS-owned configuration: ReadWrite, persistent; the runtime honours a change (docs/device-model.md
  names the consumer of each).
- Facts of this build or of the hardware: ReadOnly and constant (VendorName, ItemsPerMessage, the
  `Available` of a controller whose functional block is not built: false).
- Settings the spec makes writable but whose functional block is not built yet: ReadOnly, with the
  value that describes what the station does today and a `note` naming the block. A write answers
  Rejected/ReadOnly (1.6: Rejected) instead of being stored and ignored. When the block lands, its row
  becomes ReadWrite.

A row is scoped to the station (controllers and ChargingStation), to each EVSE, or to each connector;
definitions.py instantiates the EVSE and connector rows from the station layout.
"""

from __future__ import annotations

import enum
from typing import Final

from evstation.protocol.device_model.model import DataType, Mutability
from evstation.protocol.meter_values import CLOCK_ALIGNED_MEASURANDS, MEASURANDS
from evstation.records import record

__all__ = [
    "AUTH_CACHE_ENTRIES",
    "AUTH_CACHE_LIFETIME_S",
    "BYTES_PER_MESSAGE",
    "CONNECTOR_ROWS",
    "EVSE_ROWS",
    "ITEMS_PER_MESSAGE",
    "LOCAL_LIST_ENTRIES",
    "LOCAL_LIST_ITEMS_PER_MESSAGE",
    "PHASE_ROTATIONS",
    "SAMPLED_MEASURANDS",
    "STATION_ROWS",
    "TX_POINTS",
    "Row",
    "Scope",
    "problem_row",
]

# Our limits for GetVariables / SetVariables / GetReport requests (DeviceDataCtrlr): larger requests
# are answered with the CALLERROR the spec names (B06.FR.?/B05/B08.FR.17-18: handled by the block).
ITEMS_PER_MESSAGE: Final = 64
BYTES_PER_MESSAGE: Final = 65536

# Authorization cache and local list sizes (runtime/blocks/authorization.py enforces them).
AUTH_CACHE_ENTRIES: Final = 1000
AUTH_CACHE_LIFETIME_S: Final = 86400
LOCAL_LIST_ENTRIES: Final = 10000
LOCAL_LIST_ITEMS_PER_MESSAGE: Final = 250

# What a meter reading can give (protocol/meter_values.py): the valuesList of the Measurands variables.
SAMPLED_MEASURANDS: Final = MEASURANDS
ALIGNED_MEASURANDS: Final = CLOCK_ALIGNED_MEASURANDS
_ENERGY: Final = "Energy.Active.Import.Register"

# TxStartPoint / TxStopPoint values the hardware can detect: the control pilot (EVConnected), a token
# reader or the CSMS (Authorized), both together (PowerPathClosed), energy flowing (EnergyTransfer).
# No ParkingBayOccupancy (no bay detector); DataSigned is added to TxStartPoint's list by
# build_definitions when every EVSE's configured meter signs.
TX_POINTS: Final = ("EVConnected", "Authorized", "PowerPathClosed", "EnergyTransfer")

# 1.6 ConnectorPhaseRotation values; the 2.0.1 PhaseRotation variable takes the same texts.
PHASE_ROTATIONS: Final = ("NotApplicable", "Unknown", "RST", "RTS", "SRT", "STR", "TRS", "TSR")

AVAILABILITY_STATES: Final = ("Available", "Occupied", "Reserved", "Unavailable", "Faulted")

# Why a spec-writable variable is ReadOnly here (the block that will make it writable).


class Scope(enum.Enum):
    STATION = "station"  # one instance (controllers, ChargingStation)
    EVSE = "evse"  # one instance per EVSE (component.evse.id)
    CONNECTOR = "connector"  # one instance per connector (component.evse.id + connectorId)


@record
class Row:
    """One variable of the table; `values` is the valuesList, `instance` the variable instance."""

    component: str
    variable: str
    data_type: DataType
    mutability: Mutability = Mutability.READ_ONLY
    instance: str | None = None
    unit: str | None = None
    min_limit: float | None = None
    max_limit: float | None = None
    values: tuple[str, ...] | None = None
    default: str | None = None
    persistent: bool = True
    constant: bool = False
    reboot_required: bool = False
    note: str | None = None
    scope: Scope = Scope.STATION


BOOL, INT, DEC, STR, TIME = (
    DataType.BOOLEAN,
    DataType.INTEGER,
    DataType.DECIMAL,
    DataType.STRING,
    DataType.DATE_TIME,
)
OPTIONS, MEMBERS, SEQUENCE = DataType.OPTION_LIST, DataType.MEMBER_LIST, DataType.SEQUENCE_LIST
RO, RW = Mutability.READ_ONLY, Mutability.READ_WRITE


def _absent(component: str, *instances: str | None) -> tuple[Row, ...]:
    """A controller whose functional block is not built: it says so (Available = false, constant)."""
    return tuple(
        Row(component, "Available", BOOL, instance=instance, default="false", constant=True)
        for instance in (instances or (None,))
    )


def _held(
    component: str,
    variable: str,
    data_type: DataType,
    default: str,
    note: str,
    *,
    unit: str | None = None,
    min_limit: float | None = None,
    max_limit: float | None = None,
    values: tuple[str, ...] | None = None,
) -> Row:
    """A setting the spec makes writable, held ReadOnly at today's behaviour until its block lands."""
    return Row(
        component,
        variable,
        data_type,
        RO,
        unit=unit,
        min_limit=min_limit,
        max_limit=max_limit,
        values=values,
        default=default,
        constant=True,
        note=note,
    )


# The station-level rows: controllers, then the ChargingStation component.
STATION_ROWS: Final[tuple[Row, ...]] = (
    # --- AlignedDataCtrlr (J01, J03: clock-aligned meter values; runtime/blocks/transactions) --------
    Row("AlignedDataCtrlr", "Available", BOOL, default="true", constant=True),
    Row("AlignedDataCtrlr", "Enabled", BOOL, RW, default="true"),
    # 0: no clock-aligned values (1.6 ClockAlignedDataInterval 0).
    Row("AlignedDataCtrlr", "Interval", INT, RW, unit="s", min_limit=0, default="0"),
    Row(
        "AlignedDataCtrlr",
        "Measurands",
        MEMBERS,
        RW,
        values=ALIGNED_MEASURANDS,
        max_limit=len(ALIGNED_MEASURANDS),
        default=_ENERGY,
    ),
    # true: clock-aligned MeterValues only while no transaction runs (inside one they ride in
    # TransactionEvent). false: sent in both cases.
    Row("AlignedDataCtrlr", "SendDuringIdle", BOOL, RW, default="false"),
    Row("AlignedDataCtrlr", "TxEndedInterval", INT, RW, unit="s", min_limit=0, default="0"),
    Row(
        "AlignedDataCtrlr",
        "TxEndedMeasurands",
        MEMBERS,
        RW,
        values=ALIGNED_MEASURANDS,
        max_limit=len(ALIGNED_MEASURANDS),
        default=_ENERGY,
    ),
    # --- AuthCacheCtrlr, AuthCtrlr (C: runtime/blocks/authorization.py) -------------------------------
    Row("AuthCacheCtrlr", "Available", BOOL, default="true", constant=True),
    Row("AuthCacheCtrlr", "Enabled", BOOL, RW, default="true"),
    # Entries not used for this long are dropped (protocol/authorization.py AuthCache).
    Row("AuthCacheCtrlr", "LifeTime", INT, RW, unit="s", min_limit=1, default=str(AUTH_CACHE_LIFETIME_S)),
    # The only replacement policy built; the cache holds AUTH_CACHE_ENTRIES entries.
    Row("AuthCacheCtrlr", "Policy", OPTIONS, values=("LRU",), default="LRU", constant=True),
    Row("AuthCacheCtrlr", "DisablePostAuthorize", BOOL, RW, default="false"),
    # false: free vend. An EV plugged in is authorized without a token (2.0.1 idToken "" of type
    # NoAuthorization; 1.6 the station.toml [authorization] free_vend_id_tag) and a presented token is
    # taken without Authorize (runtime/blocks/transactions/, runtime/blocks/authorization.py).
    Row("AuthCtrlr", "Enabled", BOOL, RW, default="true"),
    # F01.FR.01 / 1.6 AuthorizeRemoteTxRequests: true sends the remote token in Authorize (and
    # applies the reservation rules to the answer) before the EVSE is authorized
    # (runtime/blocks/remote_control.py).
    Row("AuthCtrlr", "AuthorizeRemoteStart", BOOL, RW, default="false"),
    Row("AuthCtrlr", "LocalAuthorizeOffline", BOOL, RW, default="false"),
    Row("AuthCtrlr", "LocalPreAuthorize", BOOL, RW, default="false"),
    Row("AuthCtrlr", "OfflineTxForUnknownIdEnabled", BOOL, RW, default="false"),
    Row("AuthCtrlr", "DisableRemoteAuthorization", BOOL, RW, default="false"),
    # No value: no master pass. Compared with a token's groupIdToken case-insensitively (C16).
    Row("AuthCtrlr", "MasterPassGroupId", STR, RW, max_limit=36),
    # --- ClockCtrlr ----------------------------------------------------------------------------------
    # DateTime is the station clock, read live by the runtime (no stored value).
    Row("ClockCtrlr", "DateTime", TIME, persistent=False),
    _held(
        "ClockCtrlr",
        "TimeSource",
        SEQUENCE,
        "Heartbeat",
        "ReadOnly: the clock follows the CSMS's currentTime (BootNotification, Heartbeat) only",
        values=("Heartbeat",),
    ),
    # A CSMS currentTime that moves the clock by more than this is a SettingSystemTime security event
    # (A04; runtime/blocks/security.py). Ours: the spec gives no default.
    Row("ClockCtrlr", "TimeAdjustmentReportingThreshold", INT, RW, unit="s", min_limit=0, default="60"),
    # --- DeviceDataCtrlr: our request limits -------------------------------------------------------
    *(
        Row("DeviceDataCtrlr", variable, INT, instance=action, default=str(limit), constant=True)
        for variable, limit in (
            ("ItemsPerMessage", ITEMS_PER_MESSAGE),
            ("BytesPerMessage", BYTES_PER_MESSAGE),
        )
        for action in ("GetReport", "GetVariables", "SetVariables")
    ),
    Row("DeviceDataCtrlr", "ConfigurationValueSize", INT, default="1000", constant=True),
    Row("DeviceDataCtrlr", "ReportingValueSize", INT, default="2500", constant=True),
    Row("DeviceDataCtrlr", "ValueSize", INT, default="1000", constant=True),
    # --- Blocks not built ----------------------------------------------------------------------------
    *_absent("DisplayMessageCtrlr"),
    # --- LocalAuthListCtrlr (D: runtime/blocks/authorization.py) ------------------------------------
    Row("LocalAuthListCtrlr", "Available", BOOL, default="true", constant=True),
    Row("LocalAuthListCtrlr", "Enabled", BOOL, RW, default="true"),
    # Actual: the entries installed now (read live from the block); maxLimit: how many it may hold.
    Row("LocalAuthListCtrlr", "Entries", INT, min_limit=0, max_limit=LOCAL_LIST_ENTRIES, persistent=False),
    Row(
        "LocalAuthListCtrlr",
        "ItemsPerMessage",
        INT,
        default=str(LOCAL_LIST_ITEMS_PER_MESSAGE),
        constant=True,
    ),
    Row("LocalAuthListCtrlr", "DisablePostAuthorize", BOOL, RW, default="false"),
    *_absent("MonitoringCtrlr"),
    # --- ReservationCtrlr (H; runtime/blocks/reservation.py) ------------------------------------
    Row("ReservationCtrlr", "Available", BOOL, default="true", constant=True),
    Row("ReservationCtrlr", "Enabled", BOOL, RW, default="true"),
    # Reservations of no particular EVSE are served (H01.FR.06-09); 1.6 ReserveConnectorZeroSupported.
    Row("ReservationCtrlr", "NonEvseSpecific", BOOL, default="true", constant=True),
    *_absent("SmartChargingCtrlr"),
    _held("SmartChargingCtrlr", "Enabled", BOOL, "false", "ReadOnly until smart charging (K) is built"),
    *_absent("TariffCostCtrlr", "Tariff", "Cost"),
    # --- OCPPCommCtrlr -------------------------------------------------------------------------------
    # The slot of the network profile of the open (or last) connection; runtime/network_profiles.py
    # keeps it current.
    Row("OCPPCommCtrlr", "ActiveNetworkProfile", INT, persistent=False),
    Row("OCPPCommCtrlr", "HeartbeatInterval", INT, RW, unit="s", min_limit=1, default="300"),
    Row(
        "OCPPCommCtrlr",
        "MessageTimeout",
        INT,
        instance="Default",
        unit="s",
        min_limit=1,
        default="30",
        constant=True,
    ),
    Row(
        "OCPPCommCtrlr",
        "MessageAttemptInterval",
        INT,
        RW,
        instance="TransactionEvent",
        unit="s",
        min_limit=0,
        default="60",
    ),
    # 0 behaves like 1 (protocol/retry.py): the message is sent once and never retried.
    Row("OCPPCommCtrlr", "MessageAttempts", INT, RW, instance="TransactionEvent", min_limit=0, default="3"),
    # B10: the slots the link dials, in order; valuesList = the slots of station.toml's endpoints (the
    # ones SetNetworkProfile may fill, B09.FR.05). The link follows a change at the next reboot
    # (B10.FR.04), or when the connection is lost (B10.FR.03): RebootRequired.
    Row(
        "OCPPCommCtrlr",
        "NetworkConfigurationPriority",
        SEQUENCE,
        RW,
        min_limit=1,
        reboot_required=True,
    ),
    Row("OCPPCommCtrlr", "NetworkProfileConnectionAttempts", INT, RW, min_limit=1, default="3"),
    # B04: offline longer than this, every connector's status is sent after the reconnect; shorter,
    # only those that changed (0: always every connector).
    Row("OCPPCommCtrlr", "OfflineThreshold", INT, RW, unit="s", min_limit=0, default="0"),
    _held(
        "OCPPCommCtrlr", "QueueAllMessages", BOOL, "false", "ReadOnly: only transaction messages are queued"
    ),
    _held(
        "OCPPCommCtrlr",
        "ResetRetries",
        INT,
        "0",
        "ReadOnly until Reset (B11/B12) retries are built",
        min_limit=0,
    ),
    Row("OCPPCommCtrlr", "RetryBackOffRandomRange", INT, RW, unit="s", min_limit=0, default="10"),
    Row("OCPPCommCtrlr", "RetryBackOffRepeatTimes", INT, RW, min_limit=0, default="5"),
    Row("OCPPCommCtrlr", "RetryBackOffWaitMinimum", INT, RW, unit="s", min_limit=0, default="3"),
    # false: the connector lock stays locked while a session whose EV side was unplugged is kept
    # (StopTxOnEVSideDisconnect false); runtime/evse.py Evse.unlock_on_ev_side_disconnect.
    Row("OCPPCommCtrlr", "UnlockOnEVSideDisconnect", BOOL, RW, default="true"),
    Row("OCPPCommCtrlr", "WebSocketPingInterval", INT, RW, unit="s", min_limit=0, default="30"),
    # --- SampledDataCtrlr (meter values during a transaction) --------------------------------------
    Row("SampledDataCtrlr", "Available", BOOL, default="true", constant=True),
    Row("SampledDataCtrlr", "Enabled", BOOL, RW, default="true"),
    # 0: only the Transaction.Begin and Transaction.End values go into the end message.
    Row("SampledDataCtrlr", "TxEndedInterval", INT, RW, unit="s", min_limit=0, default="0"),
    *(
        Row(
            "SampledDataCtrlr",
            variable,
            MEMBERS,
            RW,
            values=SAMPLED_MEASURANDS,
            max_limit=len(SAMPLED_MEASURANDS),
            default=default,
        )
        for variable, default in (
            ("TxEndedMeasurands", _ENERGY),
            ("TxStartedMeasurands", _ENERGY),
            ("TxUpdatedMeasurands", f"{_ENERGY},Power.Active.Import,Current.Import"),
        )
    ),
    # 0: no periodic meter values during a transaction (1.6 MeterValueSampleInterval 0 = no data).
    Row("SampledDataCtrlr", "TxUpdatedInterval", INT, RW, unit="s", min_limit=0, default="60"),
    # --- SecurityCtrlr (profiles 0-3 on the link, A01 password update; certificates not built) ----
    _held("SecurityCtrlr", "AdditionalRootCertificateCheck", BOOL, "false", "ReadOnly: not supported"),
    # A01: the CSMS rotates the Basic-auth password; never read back (WriteOnly), seeded from
    # station.toml; the link redials with it (runtime/network_profiles.py). passwordString: 16-40.
    Row("SecurityCtrlr", "BasicAuthPassword", STR, Mutability.WRITE_ONLY, min_limit=16, max_limit=40),
    Row("SecurityCtrlr", "Identity", STR, max_limit=48, constant=True),
    # The profile of the endpoint in use (seeded with the first one); the link keeps it current.
    Row("SecurityCtrlr", "SecurityProfile", INT, min_limit=0, max_limit=3, persistent=False),
    # --- TxCtrlr ---------------------------------------------------------------------------------------
    # Auth-first sessions wait this long for the EV (runtime/evse.py connection_timeout_s).
    Row("TxCtrlr", "EVConnectionTimeOut", INT, RW, unit="s", min_limit=1, default="60"),
    # E09 / E10: false keeps the session (and a transaction whose stop points allow it) when the
    # cable leaves the EV; replugging continues it (runtime/evse.py Phase.EV_DISCONNECTED).
    Row("TxCtrlr", "StopTxOnEVSideDisconnect", BOOL, RW, default="true"),
    # E05 / 1.6 StopTransactionOnInvalidId: a non-Accepted idTokenInfo in the answer to a transaction
    # message stops the transaction (true), or stops the energy after MaxEnergyOnInvalidId Wh (false).
    Row("TxCtrlr", "StopTxOnInvalidId", BOOL, RW, default="true"),
    Row("TxCtrlr", "MaxEnergyOnInvalidId", INT, RW, unit="Wh", min_limit=0, default="0"),
    # E01-E03: where a transaction starts and stops (protocol/transactions.py step_points).
    Row("TxCtrlr", "TxStartPoint", MEMBERS, RW, values=TX_POINTS, default="PowerPathClosed"),
    Row("TxCtrlr", "TxStopPoint", MEMBERS, RW, values=TX_POINTS, default="EVConnected,Authorized"),
    # Not a standard variable (docs/device-model.md): a transaction whose EV is still plugged in after
    # a restart continues under the same id; false ends it (PowerLoss / Reboot) like the others.
    Row("TxCtrlr", "ResumeTransactionsOnBoot", BOOL, RW, default="true"),
    # --- ChargingStation (the physical top-level component) ---------------------------------------
    Row(
        "ChargingStation",
        "AvailabilityState",
        OPTIONS,
        values=AVAILABILITY_STATES,
        default="Available",
        persistent=False,
    ),
    Row("ChargingStation", "Available", BOOL, default="true", constant=True),
    Row("ChargingStation", "Model", STR, max_limit=20, constant=True),
    Row("ChargingStation", "PhaseRotation", OPTIONS, RW, values=PHASE_ROTATIONS, default="Unknown"),
    Row("ChargingStation", "Problem", BOOL, default="false", persistent=False),
    Row("ChargingStation", "SupplyPhases", INT, min_limit=0, max_limit=3, constant=True),
    Row("ChargingStation", "VendorName", STR, max_limit=20, constant=True),
)

# One set per EVSE (component "EVSE", evse.id = n). Defaults that depend on the layout (phases,
# rated power) are filled in by definitions.py.
EVSE_ROWS: Final[tuple[Row, ...]] = (
    Row(
        "EVSE",
        "AllowReset",
        BOOL,
        default="false",
        constant=True,
        note="false until per-EVSE Reset (B11/B12) is built",
        scope=Scope.EVSE,
    ),
    Row(
        "EVSE",
        "AvailabilityState",
        OPTIONS,
        values=AVAILABILITY_STATES,
        default="Available",
        persistent=False,
        scope=Scope.EVSE,
    ),
    Row("EVSE", "Available", BOOL, default="true", constant=True, scope=Scope.EVSE),
    Row("EVSE", "Power", DEC, unit="W", min_limit=0, default="0", persistent=False, scope=Scope.EVSE),
    Row("EVSE", "Problem", BOOL, default="false", persistent=False, scope=Scope.EVSE),
    Row("EVSE", "SupplyPhases", INT, min_limit=0, max_limit=3, constant=True, scope=Scope.EVSE),
)


def problem_row(component: str, scope: Scope) -> Row:
    """The Problem of a component the station reports hardware faults on (RCD, FiscalMetering, ...), as
    EVSE.Problem: true while a fault holds it, kept by the fault-event block, never stored."""
    return Row(component, "Problem", BOOL, default="false", persistent=False, scope=scope)


# One set per connector (component "Connector", evse.id = n, evse.connectorId = m).
CONNECTOR_ROWS: Final[tuple[Row, ...]] = (
    Row(
        "Connector",
        "AvailabilityState",
        OPTIONS,
        values=AVAILABILITY_STATES,
        default="Available",
        persistent=False,
        scope=Scope.CONNECTOR,
    ),
    Row("Connector", "Available", BOOL, default="true", constant=True, scope=Scope.CONNECTOR),
    Row("Connector", "ConnectorType", STR, constant=True, scope=Scope.CONNECTOR),
    Row("Connector", "PhaseRotation", OPTIONS, RW, values=PHASE_ROTATIONS, scope=Scope.CONNECTOR),
    Row("Connector", "SupplyPhases", INT, min_limit=0, max_limit=3, constant=True, scope=Scope.CONNECTOR),
)

"""What the transactions block hands a version's formatter (v16.py / v201.py): plain data computed in
Trio before any SQLite work, so nothing that runs in the database thread reads Trio-owned state (the
online flag, the EVSE, the clock).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from datetime import datetime
from typing import Final, Protocol, final

from evstation.protocol.messages import OcppModel
from evstation.protocol.meter_values import ENERGY_REGISTER
from evstation.protocol.versions import OcppVersion
from evstation.records import record
from evstation.runtime.blocks.transactions.services import TxServices
from evstation.runtime.outbox import OutboxEntry
from evstation.runtime.storage import TransactionRecord

__all__ = [
    "ALREADY_DELIVERED",
    "AlreadyDelivered",
    "IdTokenVerdict",
    "StartData",
    "StopData",
    "TransactionMessages",
    "UpdateData",
    "with_energy_floor",
]

MeterValue = dict[str, object]


def with_energy_floor(meter: MeterValue, energy_wh: float) -> MeterValue:
    """The meter value with its unsigned energy register raised to `energy_wh` (never backwards). The
    value keeps its version's spelling: 1.6 text of whole Wh, 2.0.1 a number. A signed value (1.6
    format SignedData, 2.0.1 signedMeterValue) is the meter's own and is left as it is."""
    values = meter.get("sampledValue")
    if not isinstance(values, list):
        return meter
    fixed = [
        {**v, "value": f"{energy_wh:.0f}" if isinstance(v["value"], str) else energy_wh}
        if isinstance(v, dict)
        and v.get("measurand") == ENERGY_REGISTER
        and v.get("format") != "SignedData"
        and "signedMeterValue" not in v
        and float(str(v["value"])) < energy_wh
        else v
        for v in values
    ]
    return {**meter, "sampledValue": fixed}


@record
class StartData:
    evse_id: int
    connector_id: int
    id_token: str | None
    token_type: str | None
    trigger: str
    at: datetime
    offline: bool
    meter_wh: float | None  # None only for an EVSE without a meter
    begin: MeterValue | None  # TxStartedMeasurands, context Transaction.Begin
    ended_begin: MeterValue | None  # the Transaction.Begin value of the end message's measurands
    charging_state: str = "EVConnected"
    remote_start_id: int | None = None
    reservation_id: int | None = None
    number_of_phases: int | None = None
    cable_max_current: int | None = None
    signed_start: str | None = None


@record
class UpdateData:
    trigger: str
    at: datetime
    offline: bool
    meter: MeterValue | None = None  # None: no meter values in this event
    energy_wh: float | None = None  # the register in `meter`, persisted as the last known reading
    charging_state: str | None = None
    id_token: tuple[str, str] | None = None  # 2.0.1: the token that authorized a started transaction
    ended: list[MeterValue] = field(default_factory=list)  # values for the end message, kept only
    number_of_phases: int | None = None
    cable_max_current: int | None = None  # 2.0.1: the cable's rating, once it is known


@record
class StopData:
    reason: str
    trigger: str
    at: datetime | None  # None: a transaction recovered at start-up (its last persisted reading)
    offline: bool
    meter_wh: float | None = None
    end: MeterValue | None = None  # TxEndedMeasurands, context Transaction.End
    with_token: bool = True
    signed_stop: str | None = None
    charging_state: str | None = None  # 2.0.1: Idle once the EV has left, EVConnected while it is plugged


@record
class IdTokenVerdict:
    """The CSMS's idTokenInfo / idTagInfo status in the answer to a transaction message."""

    transaction_id: str  # the station's id (1.6: the local id)
    status: str


@final
class AlreadyDelivered:
    """`prepare`'s answer for an entry whose CSMS answer is already stored: the station stopped after
    `delivered` committed and before the entry's removal did (removals are committed in batches).
    The entry is removed unsent."""


ALREADY_DELIVERED: Final = AlreadyDelivered()


class TransactionMessages(Protocol):
    """One version's transaction messages (V16Transactions, V201Transactions). Formats and their
    storage writes only; never sends."""

    version: OcppVersion

    async def start(self, tx: TxServices, data: StartData) -> TransactionRecord: ...

    async def updated(self, tx: TxServices, record: TransactionRecord, data: UpdateData) -> bool:
        """Queue what `data` holds; False when nothing was queued (ended meanwhile, nothing to send)."""
        ...

    async def stop(self, tx: TxServices, record: TransactionRecord, data: StopData) -> OutboxEntry | None:
        """Queue the end; the queued entry, None if it had already ended."""
        ...

    async def idle_meter_values(self, tx: TxServices, evse_id: int, meter: MeterValue) -> None:
        """Clock-aligned values outside a transaction: sent if online, not queued."""
        ...

    async def prepare(
        self, tx: TxServices, entry: OutboxEntry
    ) -> Mapping[str, object] | AlreadyDelivered | None:
        """The payload to send for an outbox entry (None: it cannot be sent, give it up)."""
        ...

    async def delivered(
        self, tx: TxServices, entry: OutboxEntry, response: OcppModel
    ) -> IdTokenVerdict | None: ...

    def is_end(self, entry: OutboxEntry) -> bool:
        """Whether the entry is its transaction's last message (1.6 StopTransaction, 2.0.1 Ended)."""
        ...

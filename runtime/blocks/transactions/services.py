"""What the transaction messages of either version need: the services, and the EVSE -> transaction id
map the control API and the 1.6 status ordering read."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from evstation.drivers.api import MeterSample
from evstation.protocol.layout import StationLayout
from evstation.protocol.meter_values import Reading, SignedData
from evstation.runtime.clock import WallClock
from evstation.runtime.evse import Evse, Evses
from evstation.runtime.outbox import Outbox
from evstation.runtime.storage import Storage
from evstation.runtime.uplink import Uplink

__all__ = ["TransactionIds", "TxServices", "reading_of"]


class TransactionIds:
    """EVSE id -> the id of its running transaction as the CSMS knows it (1.6: the local negative
    placeholder until StartTransaction.conf arrives)."""

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}
        # EVSE id -> how many of its transactions ended in this run: a count, not a flag, so that a
        # reader that wakes late still sees every end (the remote-control block's TxProfiles).
        self._ends: dict[int, int] = {}
        self._changed = trio.Event()
        # Set once the transactions the previous run left open are resumed or ended (at start-up):
        # until then an EVSE with one may still have a transaction (the availability block waits).
        self.recovered = trio.Event()

    def get(self, evse_id: int) -> str | None:
        return self._ids.get(evse_id)

    def set(self, evse_id: int, transaction_id: str | None) -> None:
        """Record (or, with None, forget) the id of the EVSE's running transaction."""
        if transaction_id is None:
            if self._ids.pop(evse_id, None) is not None:
                self._ends[evse_id] = self._ends.get(evse_id, 0) + 1
        else:
            self._ids[evse_id] = transaction_id
        self._changed.set()
        self._changed = trio.Event()

    async def wait_known(self, evse_id: int) -> None:
        """Wait until the EVSE's transaction carries an id the CSMS gave or knows."""
        while True:
            changed = self._changed
            transaction_id = self._ids.get(evse_id)
            if transaction_id is not None and not transaction_id.startswith("-"):
                return
            await changed.wait()

    async def wait_none(self, evse_ids: frozenset[int]) -> None:
        """Wait until none of `evse_ids` has a running transaction. An id is forgotten only after the
        transaction's end was queued in the outbox, so the ends are durable when this returns."""
        while True:
            changed = self._changed
            if all(evse_id not in self._ids for evse_id in evse_ids):
                return
            await changed.wait()

    def ends(self, evse_id: int) -> int:
        """How many transactions of the EVSE ended (their end queued) in this run."""
        return self._ends.get(evse_id, 0)

    def running(self) -> frozenset[int]:
        """The EVSEs with a running transaction."""
        return frozenset(self._ids)

    @property
    def changed(self) -> trio.Event:
        """Set at the next start or end of a transaction (take it before checking `running`)."""
        return self._changed


@dataclass(eq=False)
class TxServices:
    """What the transactions block works with: storage, outbox, EVSEs, clock, link and layout."""

    storage: Storage
    outbox: Outbox
    evses: Evses
    clock: WallClock
    uplink: Uplink
    layout: StationLayout
    ids: TransactionIds = field(default_factory=TransactionIds)

    @property
    def online(self) -> bool:
        return self.uplink.online


def reading_of(evse: Evse, sample: MeterSample | None, *, instantaneous: bool = True) -> Reading:
    """The protocol layer's view of a meter sample, with the EVSE's own offer. `instantaneous` False
    leaves out power, current and voltage: a sample from before the contactor opened must not report
    them as the values at the end of the transaction."""
    offered = evse.offered_current_a()
    if sample is None:
        return Reading(current_offered_a=offered if instantaneous else None)
    signed = sample.signed
    return Reading(
        energy_import_wh=sample.energy_import_wh,
        energy_export_wh=sample.energy_export_wh,
        power_w=sample.power_w if instantaneous else None,
        current_a=(sample.current_a.l1, sample.current_a.l2, sample.current_a.l3)
        if instantaneous
        else (None, None, None),
        voltage_v=(sample.voltage_v.l1, sample.voltage_v.l2, sample.voltage_v.l3)
        if instantaneous
        else (None, None, None),
        frequency_hz=sample.frequency_hz if instantaneous else None,
        current_offered_a=offered if instantaneous else None,
        signed=None
        if signed is None
        else SignedData(signed.data, signed.encoding, signed.signing_method, signed.public_key),
    )

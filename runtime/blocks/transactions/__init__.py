"""Transactions (2.0.1 E; 1.6 Core Start/StopTransaction, MeterValues): EVSE events become transaction
messages in the durable outbox, for both versions.

Runs for the station's lifetime, connected or not. Never sends a transaction message directly: the
session's outbox sender does, once the station is online, through `prepare` / `delivered` here. The
version formats are in v16.py / v201.py; the rules shared by both in protocol.transactions.
"""

from __future__ import annotations

import logging
import math
import sqlite3
from dataclasses import dataclass
from typing import Final, NoReturn, Protocol

import trio

from evstation.protocol.messages import OcppModel, enum_text
from evstation.protocol.transactions import REASON_POWER_LOSS, REASON_REBOOT
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.authorization import Authorization
from evstation.runtime.blocks.reservation import Reservations
from evstation.runtime.blocks.transactions.services import TransactionIds, TxServices
from evstation.runtime.blocks.transactions.v16 import V16Transactions
from evstation.runtime.blocks.transactions.v201 import V201Transactions
from evstation.runtime.clock import iso
from evstation.runtime.device_model import (
    EV_CONNECTION_TIMEOUT,
    TX_UPDATED_INTERVAL,
    DeviceModel,
    sleep_or_change,
)
from evstation.runtime.evse import (
    AuthorizationRequested,
    Authorized,
    EnergyFlowStarted,
    EnergyFlowSuspended,
    EvPlugged,
    EvUnplugged,
    SessionEnded,
)
from evstation.runtime.outbox import OutboxEntry
from evstation.runtime.storage import TransactionRecord, write_last_meter, write_setting

__all__ = ["CLEAN_SHUTDOWN_KEY", "TransactionIds", "TransactionMessages", "Transactions", "TxServices"]

log = logging.getLogger(__name__)

# Setting written when the station stops through its own shutdown path (SIGTERM / SIGINT, or leaving
# open_station); its absence at start means the last run ended without it: SIGKILL, crash, power cut.
CLEAN_SHUTDOWN_KEY: Final = "session.clean_shutdown_at"


class TransactionMessages(Protocol):
    """One version's transaction messages (V16Transactions, V201Transactions)."""

    version: OcppVersion

    async def start(
        self,
        tx: TxServices,
        evse_id: int,
        connector_id: int,
        id_token: str,
        token_type: str,
        trigger: str,
        remote_start_id: int | None = None,
        reservation_id: int | None = None,
    ) -> TransactionRecord: ...

    async def meter_values(self, tx: TxServices, record: TransactionRecord) -> None: ...

    async def charging_state(self, tx: TxServices, record: TransactionRecord, state: str) -> None: ...

    async def stop(self, tx: TxServices, record: TransactionRecord, reason: str) -> None: ...

    async def end_interrupted(self, tx: TxServices, record: TransactionRecord, reason: str) -> bool:
        """Queue the end of a transaction left open by the previous run; False if it had already ended."""
        ...

    async def prepare(self, tx: TxServices, entry: OutboxEntry) -> dict[str, object] | None:
        """The payload to send for an outbox entry (None: it cannot be sent, give it up)."""
        ...

    async def delivered(self, tx: TxServices, entry: OutboxEntry, response: OcppModel) -> None: ...


def messages_for(version: OcppVersion) -> TransactionMessages:
    return V16Transactions() if version is OcppVersion.V16 else V201Transactions()


@dataclass
class _EvseState:
    plugged_connector: int | None = None
    token: tuple[str, str] | None = None  # (id_token, token_type) once authorized
    record: TransactionRecord | None = None
    meter_scope: trio.CancelScope | None = None
    # The 2.0.1 chargingState last reported for the running transaction (a triggered event repeats it).
    charging_state: str = "EVConnected"


class Transactions:
    """The transactions block. Start `run` with `nursery.start` for the station's lifetime.

    A transaction starts when its EVSE is both plugged and authorized (trigger: whichever came last),
    sends meter values every SampledDataCtrlr.TxUpdatedInterval (1.6 MeterValueSampleInterval; 0: none),
    and ends on SessionEnded.
    """

    def __init__(
        self,
        *,
        version: OcppVersion,
        services: TxServices,
        authorization: Authorization,
        device_model: DeviceModel,
        reservations: Reservations | None = None,
    ) -> None:
        self.version = version
        self.services = services
        self._device_model = device_model
        self._authorization = authorization
        self._reservations = reservations
        self._messages = messages_for(version)
        # EVSE id -> 2.0.1 remoteStartId of a RequestStartTransaction whose transaction has not started.
        self.remote_starts: dict[int, int] = {}
        self._states: dict[int, _EvseState] = {}  # per EVSE, as `run` follows its events

    @property
    def ids(self) -> TransactionIds:
        return self.services.ids

    # --- the outbox sender's hooks -------------------------------------------------------------

    async def prepare(self, entry: OutboxEntry) -> dict[str, object] | None:
        return await self._messages.prepare(self.services, entry)

    async def delivered(self, entry: OutboxEntry, response: OcppModel) -> None:
        await self._messages.delivered(self.services, entry, response)
        # C10.FR.04/05, 1.6 3.5.2: every idTokenInfo / idTagInfo the CSMS sends updates the cache.
        await self._authorization.learn_from_answer(entry.payload, response)

    # --- queries for other blocks --------------------------------------------------------------

    def running_evses(self, evse_id: int | None = None) -> list[int]:
        """The EVSEs with a running transaction, in id order; only `evse_id` when given (0: all)."""
        running = sorted(self.ids.running())
        return running if not evse_id else [e for e in running if e == evse_id]

    async def send_triggered_event(self, evse_id: int) -> bool:
        """2.0.1 F06.FR.07: a TransactionEvent Updated with triggerReason Trigger for the transaction
        running on `evse_id`, carrying its chargingState and the current meter reading (context
        Trigger), queued in the outbox like every other event so its seqNo is the next one, persisted
        with it. False (nothing queued) when no transaction runs there, or it ended meanwhile."""
        state = self._states.get(evse_id)
        if state is None or state.record is None or not isinstance(self._messages, V201Transactions):
            return False
        return await self._messages.triggered(self.services, state.record, state.charging_state)

    async def evse_of_transaction(self, transaction_id: str) -> int | None:
        """The EVSE of the open transaction the CSMS calls `transaction_id` (ours or its 1.6 id)."""
        for record in await self.services.storage.transactions():
            if record.state == "Started" and transaction_id in (record.id, str(record.csms_transaction_id)):
                return record.evse_id
        return None

    # --- the block's task ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Turn EVSE events into outbox entries. Before it reports started, transactions left open by
        the previous run are ended (`end_interrupted`); when it stops, it records a clean shutdown."""
        await self.end_interrupted()
        try:
            await self._run(task_status)
        finally:
            # Shielded: this runs because we are being cancelled, and the marker must still be written.
            with trio.CancelScope(shield=True):
                await self.record_clean_shutdown()

    async def end_interrupted(self) -> int:
        """At start-up: queue the end of every transaction the previous run left open; returns how many.

        Reason PowerLoss if that run did not shut down cleanly (SIGKILL, crash, power cut), Reboot if it
        did (1.6 Reason / 2.0.1 stoppedReason). We never resume a transaction: nothing of the session
        (EV, token, contactor) survives the restart, and ending it reports every Wh metered. Each end and
        its record's Ended state commit together, so a restart in the middle of this never queues an end
        twice; the marker is cleared only after all ends are queued.
        """
        storage = self.services.storage
        clean_at = await storage.get_setting(CLEAN_SHUTDOWN_KEY)
        reason = REASON_REBOOT if clean_at is not None else REASON_POWER_LOSS
        ended = 0
        for record in await storage.transactions():
            if record.is_open and await self._messages.end_interrupted(self.services, record, reason):
                ended += 1
                log.warning("transaction %s was open at the last shutdown: ended (%s)", record.id, reason)
        if clean_at is not None:
            await storage.delete_setting(CLEAN_SHUTDOWN_KEY)
        return ended

    async def record_clean_shutdown(self) -> None:
        """Remember that this run stopped cleanly, with each open transaction's current energy reading
        and time as its last known values, in one SQLite transaction."""
        services = self.services
        now = services.clock.now()
        readings: dict[str, float] = {}
        for record in await services.storage.transactions():
            if not record.is_open:
                continue
            try:
                energy = services.evses[record.evse_id].energy_wh()
            except LookupError:
                energy = None  # the EVSE is no longer configured; keep the last persisted reading
            if energy is not None:
                readings[record.id] = energy

        def work(conn: sqlite3.Connection) -> None:
            for transaction_id, energy in readings.items():
                write_last_meter(conn, transaction_id, energy, now)
            write_setting(conn, CLEAN_SHUTDOWN_KEY, iso(now))

        await services.storage.write(work)

    async def _run(self, task_status: trio.TaskStatus[None]) -> NoReturn:
        states = self._states
        messages = self._messages
        services = self.services
        async with trio.open_nursery() as nursery:
            await nursery.start(self._follow_connection_timeout)
            with services.evses.subscribe() as events:
                task_status.started()
                async for event in events:
                    if isinstance(event, AuthorizationRequested):
                        nursery.start_soon(self._authorize, event)
                        continue
                    evse_id = getattr(event, "evse_id", None)
                    if evse_id is None:
                        continue  # e.g. an events.Dropped marker: nothing a transaction can act on
                    state = states.setdefault(evse_id, _EvseState())
                    if isinstance(event, EvPlugged):
                        state.plugged_connector = event.connector_id
                        await self._maybe_start(nursery, evse_id, state, "CablePluggedIn")
                    elif isinstance(event, EvUnplugged):
                        state.plugged_connector = None
                    elif isinstance(event, Authorized):
                        state.token = (event.id_token, event.token_type)
                        await self._maybe_start(nursery, evse_id, state, "Authorized")
                    elif isinstance(event, EnergyFlowStarted) and state.record is not None:
                        state.charging_state = "Charging"
                        await messages.charging_state(services, state.record, state.charging_state)
                    elif isinstance(event, EnergyFlowSuspended) and state.record is not None:
                        state.charging_state = "SuspendedEV" if event.by_ev else "SuspendedEVSE"
                        await messages.charging_state(services, state.record, state.charging_state)
                    elif isinstance(event, SessionEnded):
                        if state.meter_scope is not None:
                            state.meter_scope.cancel()
                        if state.record is not None:
                            await messages.stop(services, state.record, enum_text(event.reason))
                        state.record = None
                        self.ids.set(evse_id, None)
                        state.token = None
                        state.meter_scope = None
        raise AssertionError("the EVSE event stream ended")  # pragma: no cover - subscriptions never end

    async def _follow_connection_timeout(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """TxCtrlr.EVConnectionTimeOut (1.6 ConnectionTimeOut): how long an authorized EVSE waits for
        the cable; a change applies to the next authorization."""
        dm = self._device_model
        with dm.watch(EV_CONNECTION_TIMEOUT) as changes:
            self._apply_connection_timeout()
            task_status.started()
            async for _ in changes:
                self._apply_connection_timeout()

    def _apply_connection_timeout(self) -> None:
        for evse in self.services.evses:
            evse.connection_timeout_s = float(self._device_model.get_int(EV_CONNECTION_TIMEOUT))

    async def _maybe_start(
        self, nursery: trio.Nursery, evse_id: int, state: _EvseState, trigger: str
    ) -> None:
        if state.record is not None or state.token is None or state.plugged_connector is None:
            return
        id_token, token_type = state.token
        remote_start_id = self.remote_starts.pop(evse_id, None)
        if remote_start_id is not None and trigger == "Authorized":
            trigger = "RemoteStart"
        # H03 / 1.6 5.13: the reservation the token uses ends, and the transaction names it.
        reservation_id = (
            None if self._reservations is None else await self._reservations.consume(evse_id, id_token)
        )
        record = await self._messages.start(
            self.services,
            evse_id,
            state.plugged_connector,
            id_token,
            token_type,
            trigger,
            remote_start_id,
            reservation_id,
        )
        state.record = record
        state.charging_state = "EVConnected"  # as the Started event says
        self.ids.set(evse_id, record.id)
        state.meter_scope = trio.CancelScope()
        nursery.start_soon(self._sample_meter, record, state.meter_scope)

    async def _sample_meter(self, record: TransactionRecord, scope: trio.CancelScope) -> None:
        """1.6 MeterValueSampleInterval / 2.0.1 TxUpdatedInterval: periodic meter values while the
        transaction lasts; cancelled by SessionEnded."""
        dm = self._device_model
        with scope, dm.watch(TX_UPDATED_INTERVAL) as changes:
            since = trio.current_time()
            while True:
                interval = dm.get_int(TX_UPDATED_INTERVAL)
                deadline = since + interval if interval > 0 else math.inf
                if await sleep_or_change(changes, deadline) is None:
                    await self._messages.meter_values(self.services, record)
                    since = deadline

    async def _authorize(self, event: AuthorizationRequested) -> None:
        group: str | None = None
        if event.session_token is not None:
            # Another token at an EVSE in a session: may it stop it (group, master pass)?
            presented = (event.id_token, event.token_type)
            allowed = await self._authorization.may_stop(event.session_token, presented, event.evse_id)
        else:
            decision = await self._authorization.decide(event.id_token, event.token_type, event.evse_id)
            allowed = decision.accepted
            if decision.info is not None and decision.info.group is not None:
                group = decision.info.group.value
        evses = self.services.evses
        targets = [evses[event.evse_id]] if event.evse_id is not None else list(evses)
        reservations = self._reservations
        for evse in targets:
            # H03 / 1.6 5.13: an EVSE held by a reservation admits only its token or group.
            accepted = allowed and (
                event.session_token is not None
                or reservations is None
                or reservations.admit(evse.id, event.id_token, group)
            )
            if not accepted:
                self.remote_starts.pop(evse.id, None)  # a refused remote start leaves no remoteStartId
            evse.resolve_authorization(event.id_token, accepted)

"""Transactions and meter values (2.0.1 E, J; 1.6 Core Start/StopTransaction, MeterValues): EVSE events
become transaction messages in the durable outbox, for both versions.

Runs for the station's lifetime, connected or not. One task per EVSE applies that EVSE's events in
order to the start/stop point machine (protocol.transactions.step_points) and asks the version's
formatter (v16.py / v201.py) for the messages; the 1.6 formatter translates the same decisions. Never
sends a transaction message directly: the session's outbox sender does, through `prepare` /
`delivered` here.

For other blocks (remote control, reservation, authorization), the entry points are:
- `remote_starts[evse_id] = remote_start_id` before authorizing an EVSE for a remote start, so the
  Started event carries it (and the trigger says RemoteStart); the reservation a start uses is taken
  from the reservation block (`consume`);
- `ids.get(evse_id)` (the id the CSMS knows) and `evse_of_transaction(transaction_id)`;
- `forbid_resume(evse_ids)` before a Reset ends sessions (they are never resumed after the restart).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, NoReturn, TypeVar

import trio

from evstation.drivers.api import MeterSample
from evstation.protocol.authorization import MAX_TOKEN_LENGTH, IdToken, token_too_long
from evstation.protocol.boot import V201_REMOTE_TX_GATES
from evstation.protocol.device_model import VariableKey
from evstation.protocol.messages import OcppModel, VersionModels, enum_text
from evstation.protocol.meter_values import Context, meter_value, parse_measurands
from evstation.protocol.transactions import (
    INTERRUPTED_TRIGGER,
    REASON_POWER_LOSS,
    REASON_REBOOT,
    V16_START_POINTS,
    Conditions,
    TxAction,
    TxPoint,
    TxPoints,
    TxStep,
    ended_trigger,
    parse_points,
    step_points,
    stop_reason_for,
    v16_stop_points,
)
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.authorization import Authorization
from evstation.runtime.blocks.registry import handles
from evstation.runtime.blocks.reservation import Reservations
from evstation.runtime.blocks.transactions.formats import (
    ALREADY_DELIVERED,
    AlreadyDelivered,
    IdTokenVerdict,
    MeterValue,
    StartData,
    StopData,
    TransactionMessages,
    UpdateData,
)
from evstation.runtime.blocks.transactions.services import TransactionIds, TxServices, reading_of
from evstation.runtime.blocks.transactions.v16 import V16Transactions
from evstation.runtime.blocks.transactions.v201 import V201Transactions
from evstation.runtime.clock import MeterTimestamps, iso
from evstation.runtime.device_model import (
    ALIGNED_DATA_ENABLED,
    ALIGNED_DATA_INTERVAL,
    ALIGNED_DATA_MEASURANDS,
    ALIGNED_DATA_SEND_DURING_IDLE,
    ALIGNED_DATA_TX_ENDED_INTERVAL,
    ALIGNED_DATA_TX_ENDED_MEASURANDS,
    AUTH_ENABLED,
    EV_CONNECTION_TIMEOUT,
    MAX_ENERGY_ON_INVALID_ID,
    RESUME_TRANSACTIONS_ON_BOOT,
    SAMPLED_DATA_ENABLED,
    STOP_TX_ON_EV_SIDE_DISCONNECT,
    STOP_TX_ON_INVALID_ID,
    TX_ENDED_INTERVAL,
    TX_ENDED_MEASURANDS,
    TX_START_POINT,
    TX_STARTED_MEASURANDS,
    TX_STOP_POINT,
    TX_UPDATED_INTERVAL,
    TX_UPDATED_MEASURANDS,
    UNLOCK_ON_EV_SIDE_DISCONNECT,
    DeviceModel,
    sleep_or_change,
)
from evstation.runtime.events import Dropped
from evstation.runtime.evse import (
    AuthorizationRequested,
    Authorized,
    CableRatingChanged,
    EnergyFlowStarted,
    EnergyFlowSuspended,
    EvPlugged,
    Evse,
    EvseEvent,
    EvUnplugged,
    Phase,
    SessionEnded,
    StatusChanged,
    StopReason,
)
from evstation.runtime.outbox import OutboxEntry
from evstation.runtime.storage import (
    StorageWriteError,
    TransactionRecord,
    UnknownEntryError,
    write_last_meter,
    write_setting,
)

if TYPE_CHECKING:
    from evstation.protocol.v201 import messages as v201
else:
    v201 = VersionModels(OcppVersion.V201)

__all__ = [
    "CLEAN_SHUTDOWN_KEY",
    "END_READING_WAIT_S",
    "START_READING_WAIT_S",
    "AlreadyDelivered",
    "TransactionIds",
    "TransactionMessages",
    "Transactions",
    "TxServices",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

V201 = OcppVersion.V201

# Setting written when the station stops through its own shutdown path (SIGTERM / SIGINT, or leaving
# open_station); its absence at start means the last run ended without it: SIGKILL, crash, power cut.
CLEAN_SHUTDOWN_KEY: Final = "session.clean_shutdown_at"

# Billing rule: how long a start point waits for a meter reading before the session is refused. A
# meter polled every second has answered several times by then; a silent one is a fault.
START_READING_WAIT_S: Final = 10.0
# While database writes fail, a probe write is tried this often: the first that commits clears the
# storage fault (a full disk may be freed, a read-only card remounted, with no transaction to retry).
# It needs room, as a start does (a small update fits in a page's free space even on a full disk): it
# writes STORAGE_PROBE_BYTES and removes them in the same commit.
STORAGE_PROBE_S: Final = 30.0
STORAGE_PROBE_KEY: Final = "storage.write_probe"
STORAGE_PROBE_BYTES: Final = 16384
# At the end: how long to wait for a reading taken after the stop (power and current are then the real
# last values, not those of the sample before the contactor opened).
END_READING_WAIT_S: Final = 3.0
# Clock-aligned values: the longest sleep before the next boundary is computed again from the clock.
ALIGN_CHECK_S: Final = 60.0
# At start-up: how long to wait for the board to say whether an EV is plugged in (resume or end).
BOARD_STATE_WAIT_S: Final = 5.0
# While database writes fail, a running transaction's meter-value messages (periodic, clock-aligned,
# 2.0.1 Updated events) are held in memory and queued in order once writes succeed: at most this many
# per transaction (an hour of 1-minute values and its events), the oldest dropped first.
HELD_UPDATES_MAX: Final = 100


def messages_for(version: OcppVersion) -> TransactionMessages:
    return V16Transactions() if version is OcppVersion.V16 else V201Transactions()


@dataclass
class _EvseTx:
    """One EVSE's transaction state, owned by its task."""

    step: TxStep = field(default_factory=TxStep)
    connector_id: int | None = None
    token: tuple[str, str] | None = None
    record: TransactionRecord | None = None
    scope: trio.CancelScope | None = None  # the running transaction's meter tasks
    invalid_id: trio.Event = field(default_factory=trio.Event)
    # The 2.0.1 chargingState last reported for the running transaction (a triggered event repeats it).
    charging_state: str = "EVConnected"
    # The numberOfPhasesUsed last reported for the running transaction (None: not yet known).
    phases_reported: int | None = None
    # The cableMaxCurrent the CSMS was last told for the running 2.0.1 transaction.
    cable_reported: int | None = None


class Transactions:
    """The transactions block. Start `run` with `nursery.start` for the station's lifetime."""

    def __init__(
        self,
        *,
        version: OcppVersion,
        services: TxServices,
        authorization: Authorization,
        device_model: DeviceModel,
        reservations: Reservations | None = None,
        meter_timestamps: MeterTimestamps | None = None,
    ) -> None:
        self.version = version
        # The fake-meter-timestamps test aid ([test_aids] in station.toml) lives in there.
        self._meter_timestamps = meter_timestamps if meter_timestamps is not None else MeterTimestamps()
        self.services = services
        self._device_model = device_model
        self._authorization = authorization
        self._reservation_block = reservations
        self._messages = messages_for(version)
        # EVSE id -> 2.0.1 remoteStartId of a RequestStartTransaction whose transaction has not started.
        self.remote_starts: dict[int, int] = {}
        self._evse_tx: dict[int, _EvseTx] = {}
        # For the status sender's order (docs/session.md): per EVSE, the outbox id of the last end
        # message queued in this run; the event queues, the EVSEs whose task is applying an event, and
        # a wake-up after each event handled (`wait_caught_up`).
        self._end_entries: dict[int, int] = {}
        self._inbox: trio.MemoryReceiveChannel[EvseEvent | Dropped] | None = None
        self._listening = trio.Event()  # set once `_dispatch` hears the EVSEs' events
        self._evse_inboxes: dict[int, trio.MemoryReceiveChannel[EvseEvent | None]] = {}
        self._applying: set[int] = set()
        self._handled = trio.Event()
        # While the start-up recovery waits for refused writes: the EVSEs whose previous transaction's
        # end is not queued yet (their events wait for it), and the outbox entries answered before the
        # restart whose removal is not committed yet (never sent again meanwhile).
        self._ends_pending: frozenset[int] = frozenset()
        self._gone_entries: set[int] = set()
        # Transaction id -> its messages refused while writes fail, oldest first (`_queue_update`);
        # one lock for queueing them, so none goes out twice or out of order.
        self._held: dict[str, deque[UpdateData]] = {}
        self._held_lock = trio.Lock()

    @property
    def ids(self) -> TransactionIds:
        return self.services.ids

    # --- for other blocks ----------------------------------------------------------------------

    def running_evses(self, evse_id: int | None = None) -> list[int]:
        """The EVSEs with a running transaction, in id order; only `evse_id` when given (0: all)."""
        running = sorted(self.ids.running())
        return running if not evse_id else [e for e in running if e == evse_id]

    def end_entry(self, evse_id: int) -> int | None:
        """The outbox id of the last end message (StopTransaction / TransactionEvent Ended) queued in
        this run for a transaction on the EVSE; None if none was."""
        return self._end_entries.get(evse_id)

    def end_entries(self) -> list[int]:
        """The outbox ids of every EVSE's last end message queued in this run."""
        return list(self._end_entries.values())

    async def wait_caught_up(self, evse_id: int) -> None:
        """Until this block has applied every event the EVSEs published so far for `evse_id`: then an
        end message that a SessionEnded published before now causes is queued (`end_entry`). At once
        when the block does not run."""
        while True:
            handled = self._handled
            inbox = self._inbox
            evse_inbox = self._evse_inboxes.get(evse_id)
            if (
                inbox is None
                or evse_inbox is None
                or (
                    inbox.statistics().current_buffer_used == 0
                    and evse_inbox.statistics().current_buffer_used == 0
                    and evse_id not in self._applying
                )
            ):
                return
            await handled.wait()

    def _note_handled(self) -> None:
        self._handled.set()
        self._handled = trio.Event()

    async def send_triggered_event(self, evse_id: int) -> bool:
        """2.0.1 F06.FR.07: a TransactionEvent Updated with triggerReason Trigger for the transaction
        running on `evse_id`, carrying its chargingState and the current meter reading (context
        Trigger), queued in the outbox like every other event so its seqNo is the next one, persisted
        with it; while writes fail, held with the meter values (`_queue_update`), as the Accepted
        answer promised it. False (nothing queued) when no transaction runs there, or it ended
        meanwhile."""
        state = self._evse_tx.get(evse_id)
        if state is None or state.record is None or self.version is not V201:
            return False
        evse = self.services.evses[evse_id]
        sample = evse.reading()
        at = self._now()
        meter = (
            None
            if sample is None
            else meter_value(
                self.version,
                self.meter_stamp(at),
                reading_of(evse, sample),
                self._measurands(TX_UPDATED_MEASURANDS),
                Context.TRIGGER,
            )
        )
        data = UpdateData(
            "Trigger",
            at,
            self._offline(),
            meter=meter,
            energy_wh=None if sample is None else sample.energy_import_wh,
            charging_state=state.charging_state,
        )
        # Not `_messages.updated`: a refused write must not end the trigger block's task, and the
        # event goes after the values still held (seqNo and time in one order).
        record = state.record
        await self._queue_update(record, data)
        return state.record is record  # else it ended meanwhile: nothing follows its end

    def triggered_meter_value(self, evse_id: int) -> dict[str, object] | None:
        """The MeterValue a TriggerMessage(MeterValues) sends for `evse_id`: its current reading,
        context Trigger, for the measurands the spec names: 2.0.1 F06.FR.06 AlignedDataCtrlr.Measurands;
        1.6 section 5.17 (errata 3.46: SHALL) MeterValuesSampledData, which is our
        SampledDataCtrlr.TxUpdatedMeasurands. None without a reading (the meter is silent or faulted)
        or when it gives none of those measurands: nothing true to send."""
        evse = self.services.evses[evse_id]
        sample = evse.reading()
        if sample is None:
            return None
        key = ALIGNED_DATA_MEASURANDS if self.version is V201 else TX_UPDATED_MEASURANDS
        return meter_value(
            self.version,
            self.meter_stamp(self._now()),
            reading_of(evse, sample),
            self._measurands(key),
            Context.TRIGGER,
        )

    async def forbid_resume(self, evse_ids: frozenset[int]) -> None:
        """A Reset is ending these EVSEs' sessions: their transactions are never resumed after it."""
        ids = [
            record.id
            for record in await self.services.storage.transactions()
            if record.is_open and record.evse_id in evse_ids
        ]
        if ids:
            await self.services.storage.forbid_resume(ids)

    async def evse_of_transaction(self, transaction_id: str) -> int | None:
        """The EVSE of the open transaction the CSMS calls `transaction_id` (ours or its 1.6 id)."""
        for record in await self.services.storage.transactions():
            if record.state == "Started" and transaction_id in (record.id, str(record.csms_transaction_id)):
                return record.evse_id
        return None

    # --- GetTransactionStatus (E14) ----------------------------------------------------------------

    @handles(V201, "GetTransactionStatus", gates=V201_REMOTE_TX_GATES)
    async def get_transaction_status(
        self, req: v201.GetTransactionStatusRequest
    ) -> v201.GetTransactionStatusResponse:
        """E14.FR.01-04: without an id, whether any transaction message is queued; with one, also
        whether it is still ongoing (unknown ids: not ongoing, nothing queued)."""
        outbox = self.services.outbox
        if req.transaction_id is None:
            return v201.GetTransactionStatusResponse(messages_in_queue=await outbox.has_messages_of(None))
        record = await self.services.storage.get_transaction(req.transaction_id)
        return v201.GetTransactionStatusResponse(
            ongoing_indicator=record is not None and record.is_open,
            messages_in_queue=await outbox.has_messages_of(req.transaction_id),
        )

    # --- the outbox sender's hooks -------------------------------------------------------------

    async def prepare(self, entry: OutboxEntry) -> Mapping[str, object] | AlreadyDelivered | None:
        if entry.id in self._gone_entries:
            return ALREADY_DELIVERED  # answered before the restart; its removal waits for writes
        return await self._messages.prepare(self.services, entry)

    def answer_mark(self) -> int:
        """Take as a transaction message's answer arrives, for `delivered` (`Authorization.answer_mark`)."""
        return self._authorization.answer_mark()

    async def delivered(self, entry: OutboxEntry, response: OcppModel, *, mark: int | None = None) -> None:
        # C10.FR.04/05, 1.6 3.5.2: every idTokenInfo / idTagInfo the CSMS sends updates the cache.
        await self._authorization.learn_from_answer(entry.payload, response, mark=mark)
        verdict = await self._messages.delivered(self.services, entry, response)
        if verdict is not None and verdict.status != "Accepted":
            self._on_invalid_id(verdict)

    async def given_up(self, entry: OutboxEntry) -> None:
        """The outbox sender moved `entry` to the dead letters. The last message of a transaction
        leaving the queue so (every earlier one has left before it, head first) is the end of its
        record too: kept, it would stay Ended for ever, read at every start."""
        if self._messages.is_end(entry) and entry.transaction_id is not None:
            await self.services.storage.delete_transaction(entry.transaction_id)

    def _on_invalid_id(self, verdict: IdTokenVerdict) -> None:
        """E05 / 1.6 StopTransactionOnInvalidId: the CSMS refused the token of a running transaction."""
        for state in self._evse_tx.values():
            if state.record is not None and state.record.id == verdict.transaction_id:
                log.warning("transaction %s: token %s by the CSMS", verdict.transaction_id, verdict.status)
                state.invalid_id.set()

    # --- the block's task ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Turn EVSE events into outbox entries. Before it reports started, transactions left open by
        the previous run are resumed or ended (`recover`; while the database refuses writes, their ends
        wait for it after the start); when it stops, it records a clean shutdown."""
        try:
            async with trio.open_nursery() as nursery:
                # Known before the first StatusNotification: a database that refuses writes from the
                # start faults every EVSE from their first status on.
                with contextlib.suppress(StorageWriteError):  # logged by storage, followed below
                    await self.services.storage.write(_probe_room)
                await nursery.start(self._follow_storage)
                await self.recover(nursery)
                await nursery.start(self._follow_connection_timeout)
                await nursery.start(self._dispatch)
                await nursery.start(self._follow_authorization_enabled)
                nursery.start_soon(self._clock_aligned)
                task_status.started()
        finally:
            # Shielded: this runs because we are being cancelled, and the marker must still be written.
            # A refused write is logged by storage; the next start ends what was open, as after a
            # power cut. Not before the recovery is complete: the ends it has not queued yet are
            # queued at the next start, with the reason of the run they belong to.
            if self.ids.recovered.is_set():
                with trio.CancelScope(shield=True), contextlib.suppress(StorageWriteError):
                    await self.record_clean_shutdown()
        raise AssertionError("the transactions block stopped")  # pragma: no cover

    async def end_interrupted(self) -> int:
        """End every open transaction the previous run left (no resume); returns how many."""
        async with trio.open_nursery() as nursery:
            ended = await self._recover(nursery, allow_resume=False, waiting=lambda: None)
        return ended

    async def recover(self, nursery: trio.Nursery) -> None:
        """At start-up: resume or end each transaction the previous run left open. Resumed (same id,
        seqNo and meter register continue) when ResumeTransactionsOnBoot is true, no Reset ended it and
        its EVSE's board reports the EV still plugged in. Every other one is ended with its last stored
        reading: PowerLoss if the previous run did not shut down cleanly (SIGKILL, crash, power cut),
        Reboot if it did. Each end and its record's Ended state commit together, so a restart in the
        middle never queues an end twice; the clean-shutdown marker is cleared only after all ends are
        queued. `ids.recovered` is set once all of it is done.

        First, the messages answered before the stop whose removal was lost (removals commit in
        0.1 s batches, a kill can fall in between) leave the queue unsent: those of a transaction
        whose record is gone. Only a transaction's last message leaving the queue (answered, or
        given up to the dead letters) deletes its record, and every earlier message left before that
        one went out (head first), so sending any of them again would only repeat it: a second
        StopTransaction, or a 1.6 StartTransaction that opens a transaction at the CSMS never
        stopped.

        Returns once it is complete, or, when the database refuses one of its writes (disk full,
        read-only card), at once: the station starts (its EVSEs Faulted by `_follow_storage`, the
        messages already queued sent) and the rest runs in `nursery` when writes succeed again. Until
        then an EVSE whose transaction is still to be ended applies no event (a new transaction there
        comes after that end), and the entries to remove are never sent (`prepare`).
        """
        await nursery.start(self._recovery, nursery)

    async def _recovery(self, nursery: trio.Nursery, *, task_status: trio.TaskStatus[None]) -> None:
        reported = False

        def waiting() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started()

        await self._recover(nursery, allow_resume=True, waiting=waiting)
        waiting()

    async def _recover(
        self, nursery: trio.Nursery, *, allow_resume: bool, waiting: Callable[[], None]
    ) -> int:
        """The recovery; calls `waiting` when one of its writes is refused, then waits for writes."""
        storage = self.services.storage
        outbox = self.services.outbox
        gone = await outbox.entries_of_gone_transactions()
        clean_at = await storage.get_setting(CLEAN_SHUTDOWN_KEY)
        reason = REASON_REBOOT if clean_at is not None else REASON_POWER_LOSS
        resume = allow_resume and self._device_model.get_bool(RESUME_TRANSACTIONS_ON_BOOT)
        to_end: list[TransactionRecord] = []
        for record in await storage.transactions():
            if not record.is_open:
                continue
            if resume and record.resumable and await self._ev_still_plugged(record.evse_id):
                await self._resume(nursery, record)
            else:
                to_end.append(record)
        self._gone_entries = {entry.id for entry in gone}
        self._ends_pending = frozenset(record.evse_id for record in to_end)

        refused = False

        async def written(write: Callable[[], Awaitable[_T]]) -> _T:
            nonlocal refused
            try:
                return await write()
            except StorageWriteError:
                if not refused:
                    refused = True
                    log.warning(
                        "the database refuses writes: the recovery of the previous run's transactions "
                        "waits for them; the station starts meanwhile"
                    )
                    waiting()
                return await storage.until_written(write)

        for answered in gone:
            log.info(
                "%s #%d answered before the restart: removed, not sent again", answered.action, answered.id
            )
            # Already gone if the sender met it first (`prepare`) and its removal committed.
            with contextlib.suppress(UnknownEntryError):
                await written(functools.partial(outbox.remove, answered.id))
        self._gone_entries = set()
        ended = 0
        for record in to_end:
            if record.stop_reason is not None:
                # Stopped before the restart, its end not queued yet (`_stop`): ended as it was.
                noted = record.stop_reason
                data = StopData(noted, ended_trigger(noted), record.stopped_at, offline=True)
            else:
                data = StopData(reason, INTERRUPTED_TRIGGER, None, offline=True, with_token=False)
            # None: already Ended (read again in the same SQLite transaction), never queued twice.
            entry = await written(functools.partial(self._messages.stop, self.services, record, data))
            if entry is not None:
                self._end_entries[record.evse_id] = entry.id
                ended += 1
                log.warning(
                    "transaction %s was open at the last shutdown: ended (%s)", record.id, data.reason
                )
        if clean_at is not None:
            await written(functools.partial(storage.delete_setting, CLEAN_SHUTDOWN_KEY))
        self._ends_pending = frozenset()
        self.ids.recovered.set()
        if refused:
            log.warning("the recovery of the previous run's transactions is complete")
        return ended

    async def _ev_still_plugged(self, evse_id: int) -> bool:
        if evse_id not in self.services.evses:
            return False
        evse = self.services.evses[evse_id]
        with trio.move_on_after(BOARD_STATE_WAIT_S):
            await evse.wait_board_state()
        return evse.ev_present

    async def _resume(self, nursery: trio.Nursery, record: TransactionRecord) -> None:
        """Continue `record` on its EVSE: the CSMS sees the same transaction go on (no message says it
        was interrupted; its meter values continue from the register, which never went backwards)."""
        evse = self.services.evses[record.evse_id]
        state = self._state(record.evse_id)
        state.record = record
        state.connector_id = record.connector_id
        token = (record.id_token, record.id_token_type or "ISO14443") if record.id_token else None
        state.token = token
        conditions = Conditions(ev_connected=True, authorized=token is not None)
        # The stop points that hold now held during the transaction: losing one ends it (a remote or
        # local stop, a Reset). Left empty, only the EV leaving could end a resumed transaction.
        held = frozenset(p for p in self._points().stop if conditions.holds(p))
        state.step = TxStep(conditions, True, held)
        self.ids.set(record.evse_id, _wire_id(record))
        log.warning(
            "transaction %s resumed on EVSE %d: the EV is still plugged in", record.id, record.evse_id
        )
        await evse.set_transaction_recorded(True)
        if token is not None and not await evse.authorize_remote(*token):
            log.error("transaction %s: EVSE %d cannot be energized again", record.id, record.evse_id)
        if record.token_status not in (None, "Accepted"):
            # Refused before the restart: its answer is not heard again (the message was answered), so
            # the stored verdict acts, as the answer did (E05 / 1.6 StopTransactionOnInvalidId).
            log.warning("transaction %s: token %s before the restart", record.id, record.token_status)
            state.invalid_id.set()
        state.scope = trio.CancelScope()
        nursery.start_soon(self._meter_tasks, state, record, state.scope)

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
            if energy is not None and (record.last_meter_wh is None or energy >= record.last_meter_wh):
                readings[record.id] = energy

        def work(conn: sqlite3.Connection) -> None:
            for transaction_id, energy in readings.items():
                write_last_meter(conn, transaction_id, energy, now)
            write_setting(conn, CLEAN_SHUTDOWN_KEY, iso(now))

        await services.storage.write(work)

    # --- events ------------------------------------------------------------------------------------

    async def _follow_storage(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every EVSE Faulted while database writes fail (no transaction could be recorded), cleared by
        the first write that commits again: anyone's, or the probe written here every STORAGE_PROBE_S."""
        storage = self.services.storage
        started = False
        while True:
            failing = storage.write_failure is not None
            for evse in self.services.evses:
                await evse.set_storage_failure(failing)
            if (storage.write_failure is not None) != failing:
                continue  # it changed while the EVSEs were told
            # Started once the EVSEs know: a database refusing writes at start-up faults them from
            # their first StatusNotification on.
            if not started:
                started = True
                task_status.started()
            if not failing:
                await storage.wait_write_health_change()
                continue
            with trio.move_on_after(STORAGE_PROBE_S):
                await storage.wait_write_health_change()
            if storage.write_failure is not None:
                with contextlib.suppress(StorageWriteError):  # still failing: logged by storage
                    await storage.write(_probe_room)

    def _state(self, evse_id: int) -> _EvseTx:
        return self._evse_tx.setdefault(evse_id, _EvseTx())

    async def _dispatch(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One ordered event stream per EVSE, each applied by its own task (a start waiting for a meter
        reading on one EVSE holds no other EVSE back)."""
        services = self.services
        async with trio.open_nursery() as nursery:
            channels: dict[int, trio.MemorySendChannel[EvseEvent | None]] = {}
            for evse in services.evses:
                # Unbounded: the dispatcher never blocks; an EVSE produces a handful of events per
                # session, consumed as fast as SQLite commits.
                send, receive = trio.open_memory_channel[EvseEvent | None](math.inf)
                channels[evse.id] = send
                nursery.start_soon(self._evse_task, evse, receive)
            with services.evses.subscribe() as events:
                # What the EVSEs reported before the subscription (an EV plugged in at boot) is their
                # state now; what they report after it arrives as events.
                for evse in services.evses:
                    state = self._state(evse.id)
                    if state.record is None:
                        state.step = TxStep(Conditions(ev_connected=evse.ev_present), False, frozenset())
                self._inbox = events
                self._listening.set()
                task_status.started()
                try:
                    async for event in events:
                        if isinstance(event, AuthorizationRequested):
                            nursery.start_soon(self._authorize, event)
                        elif isinstance(event, Dropped):
                            for send in channels.values():
                                send.send_nowait(None)  # fell behind: each EVSE re-reads its state
                        else:
                            channel = channels.get(getattr(event, "evse_id", -1))
                            if channel is not None:
                                channel.send_nowait(event)
                        self._note_handled()
                finally:
                    self._inbox = None
                    self._evse_inboxes.clear()

    async def _evse_task(self, evse: Evse, events: trio.MemoryReceiveChannel[EvseEvent | None]) -> None:
        state = self._state(evse.id)
        self._evse_inboxes[evse.id] = events
        if evse.id in self._ends_pending:
            # The previous run's transaction here is not ended yet (its write refused at start-up):
            # what happens next on this EVSE (a new transaction) comes after that end. Its events
            # wait in the channel, in order.
            await self.ids.recovered.wait()
        async with trio.open_nursery() as nursery:
            async for event in events:
                self._applying.add(evse.id)
                try:
                    await self._apply(nursery, evse, state, event)
                except StorageWriteError as exc:
                    # Never a crash (a restart would meet the same disk): what was not recorded is
                    # lost to this run only; an open transaction stays open in the file and the next
                    # start ends it from its last persisted reading.
                    log.error("EVSE %d: %s not recorded: %s", evse.id, type(event).__name__, exc)
                finally:
                    self._applying.discard(evse.id)
                    self._note_handled()

    def _points(self) -> TxPoints:
        if self.version is OcppVersion.V16:
            stop = v16_stop_points(self._device_model.get_bool(STOP_TX_ON_EV_SIDE_DISCONNECT))
            return TxPoints(V16_START_POINTS, stop)
        dm = self._device_model
        start = parse_points(dm.get(TX_START_POINT) or "", allow_data_signed=self.services.layout.meters_sign)
        return TxPoints(start, parse_points(dm.get(TX_STOP_POINT) or ""))

    async def _apply(
        self, nursery: trio.Nursery, evse: Evse, state: _EvseTx, event: EvseEvent | None
    ) -> None:
        before = state.step.conditions
        after = before
        session_reason: str | None = None
        trigger = "Trigger"
        if event is None:  # resynchronise after lost events
            after = Conditions(
                ev_connected=evse.ev_present,
                authorized=evse.session_active() and evse.session_token() is not None,
                energy_transfer=evse.phase is Phase.CHARGING,
            )
        elif isinstance(event, EvPlugged):
            state.connector_id = event.connector_id
            after = Conditions(True, before.authorized, before.energy_transfer, before.data_signed)
            trigger = "CablePluggedIn"
        elif isinstance(event, EvUnplugged):
            after = Conditions(False, before.authorized, False, before.data_signed)
            trigger = "EVCommunicationLost"
        elif isinstance(event, Authorized):
            if state.record is not None and state.token == (event.id_token, event.token_type):
                return  # a resumed transaction re-authorizing its own EVSE: nothing new
            state.token = (event.id_token, event.token_type)
            after = Conditions(before.ev_connected, True, before.energy_transfer, before.data_signed)
            trigger = "RemoteStart" if evse.id in self.remote_starts else "Authorized"
            if state.record is not None and self.version is V201:
                # Started before authorization (TxStartPoint EVConnected): E02 Updated with the token.
                await self._update(
                    state, UpdateData("Authorized", self._now(), self._offline(), id_token=state.token)
                )
        elif isinstance(event, EnergyFlowStarted):
            after = Conditions(before.ev_connected, before.authorized, True, before.data_signed)
            trigger = "ChargingStateChanged"
            await self._charging_state(state, "Charging")
        elif isinstance(event, EnergyFlowSuspended):
            after = Conditions(before.ev_connected, before.authorized, False, before.data_signed)
            trigger = "ChargingStateChanged"
            await self._charging_state(state, "SuspendedEV" if event.by_ev else "SuspendedEVSE")
        elif isinstance(event, SessionEnded):
            session_reason = enum_text(event.reason)
            after = Conditions(before.ev_connected, False, False, before.data_signed)
            trigger = ended_trigger(session_reason)
        elif isinstance(event, CableRatingChanged):
            await self._report_cable(state, event.max_current_a)
            return
        else:
            if isinstance(event, StatusChanged):
                # Free vend: an EV left waiting while the EVSE could not start (Unavailable, a fault)
                # is authorized once it can.
                await self._authorize_without_token(evse)
            return
        # DataSigned (2.0.1 TxStartPoint): the power path is closed and the meter's reading is signed,
        # i.e. the signed start value the transaction will carry exists.
        signed = after.ev_connected and after.authorized and _signed_reading(evse)
        if signed != after.data_signed:
            after = Conditions(after.ev_connected, after.authorized, after.energy_transfer, signed)
        decision = step_points(state.step, after, self._points())
        state.step = decision.step
        if decision.action is TxAction.START:
            if decision.point is TxPoint.DATA_SIGNED:
                trigger = "SignedDataReceived"  # TriggerReasonEnumType: the signed start reading came
            await self._start(nursery, evse, state, trigger)
        elif decision.action is TxAction.STOP and decision.point is not None:
            reason = stop_reason_for(decision.point, after, session_reason)
            # A stop point ended the transaction while the EVSE's session goes on (as far as its events
            # say; also a session kept after an EV-side unplug): end that session too, so no energy
            # flows outside a transaction.
            end_session = (
                session_reason is None
                and after.authorized
                and (after.ev_connected or evse.phase is Phase.EV_DISCONNECTED)
            )
            await self._stop(evse, state, reason, after, end_session=end_session)
        elif (
            isinstance(event, EvUnplugged)
            and event.session_kept
            and state.record is not None
            and self.version is V201
        ):
            # E10.FR.01: the transaction outlives an EV-side unplug (StopTxOnEVSideDisconnect false):
            # the CSMS sees the cable leave (chargingState Idle); its return is the plug below.
            state.charging_state = "Idle"
            await self._update(
                state, UpdateData(trigger, self._now(), self._offline(), charging_state="Idle")
            )
        elif isinstance(event, EvPlugged) and state.record is not None and self.version is V201:
            # E03 (started at Authorized, before the cable) and E10.FR.03 (the EV back to its kept
            # transaction): the EV's arrival is its own Updated event.
            state.charging_state = "EVConnected"
            await self._update(
                state,
                UpdateData(
                    "CablePluggedIn",
                    self._now(),
                    self._offline(),
                    charging_state="EVConnected",
                    cable_max_current=self._cable_news(state, evse),
                ),
            )
        if isinstance(event, SessionEnded):
            state.token = None
        if event is None or isinstance(event, EvPlugged):
            await self._authorize_without_token(evse)

    async def _report_cable(self, state: _EvseTx, amps: int | None) -> None:
        """2.0.1 cableMaxCurrent: in the Started event when the rating is known by then, else in an
        Updated event as soon as the board reads it (the PP is read as the cable goes in, hence
        CablePluggedIn). A rating already told, or none, is not sent again. 1.6 has no such field."""
        if self.version is not V201 or state.record is None or amps is None or amps == state.cable_reported:
            return
        if not state.step.conditions.ev_connected:
            return  # the board reads the PP before the pilot: the plug's own Updated event carries it
        state.cable_reported = amps
        await self._update(
            state, UpdateData("CablePluggedIn", self._now(), self._offline(), cable_max_current=amps)
        )

    def _cable_news(self, state: _EvseTx, evse: Evse) -> int | None:
        """The cable rating to add to an event: known, and not told to the CSMS yet."""
        amps = evse.cable_max_current_a()
        if amps is None or amps == state.cable_reported:
            return None
        state.cable_reported = amps
        return amps

    def _now(self) -> datetime:
        return self.services.clock.now()

    def meter_stamp(self, at: datetime) -> str:
        """The timestamp a meter value taken at `at` carries (shifted only by the test aid)."""
        return self._meter_timestamps.stamp(at)

    def _offline(self) -> bool:
        # Read here, in Trio, and passed into the SQLite work (never read there).
        return not self.services.online

    async def _update(self, state: _EvseTx, data: UpdateData) -> None:
        if state.record is not None:
            await self._queue_update(state.record, data)

    async def _queue_update(self, record: TransactionRecord, data: UpdateData) -> None:
        """Queue an Updated event / MeterValues of a running transaction, after those still held. A
        database refusing the write holds it in memory (`HELD_UPDATES_MAX`, the oldest dropped first);
        they are queued, in order, once writes succeed (`_release_when_written`, and before the end).
        Lost only at a shutdown meanwhile."""
        held = self._held.setdefault(record.id, deque())
        held.append(data)
        if len(held) > HELD_UPDATES_MAX:
            dropped = held.popleft()
            log.error(
                "transaction %s: more than %d messages held while writes fail: %s of %s dropped",
                record.id,
                HELD_UPDATES_MAX,
                dropped.trigger,
                iso(dropped.at),
            )
        with contextlib.suppress(StorageWriteError):  # kept: logged by storage, the EVSEs Faulted
            await self._release_held(record)

    async def _release_held(self, record: TransactionRecord) -> None:
        """Queue the transaction's held messages, oldest first; `StorageWriteError` if refused (the
        rest stays held)."""
        async with self._held_lock:
            held = self._held.get(record.id)
            while held:
                # Shielded: a message committed must leave the deque, or a later release sends it twice.
                with trio.CancelScope(shield=True):
                    oldest = held[0]
                    await self._messages.updated(self.services, record, oldest)
                    # Gone already if a message held meanwhile dropped it to make room: then the one
                    # in front now is not queued yet and stays.
                    if held and held[0] is oldest:
                        held.popleft()
            self._held.pop(record.id, None)

    async def _release_when_written(self, record: TransactionRecord) -> NoReturn:
        """While the transaction runs: queue what was held as soon as writes succeed again."""
        storage = self.services.storage
        while True:
            await storage.wait_write_health_change()
            if storage.write_failure is None and self._held.get(record.id):
                with contextlib.suppress(StorageWriteError):
                    await self._release_held(record)

    async def _charging_state(self, state: _EvseTx, charging_state: str) -> None:
        state.charging_state = charging_state
        if state.record is not None and self.version is V201:
            await self._update(
                state,
                UpdateData(
                    "ChargingStateChanged", self._now(), self._offline(), charging_state=charging_state
                ),
            )

    # --- start ---------------------------------------------------------------------------------------

    def _measurands(self, key: VariableKey) -> tuple[str, ...]:
        return parse_measurands(self._device_model.get(key) or "")

    async def _start_reading(self, evse: Evse) -> MeterSample | None:
        """Billing rule: the reading a transaction starts from, waiting a bounded time for one."""
        sample = evse.reading()
        if sample is None:
            with trio.move_on_after(START_READING_WAIT_S):
                sample = await evse.wait_reading()
        return sample

    async def _start(self, nursery: trio.Nursery, evse: Evse, state: _EvseTx, trigger: str) -> None:
        if state.token is not None and token_too_long(self.version, IdToken(*state.token)):
            limit = MAX_TOKEN_LENGTH[self.version]
            log.error("EVSE %d: token longer than %d characters refused, not cut", evse.id, limit)
            state.step = TxStep(state.step.conditions, False, frozenset())
            await evse.stop_session(StopReason.DE_AUTHORIZED)
            return
        sample: MeterSample | None = None
        if evse.has_meter:
            sample = await self._start_reading(evse)
            if sample is None:
                log.error(
                    "EVSE %d: no meter reading within %.0f s at the transaction start: session refused",
                    evse.id,
                    START_READING_WAIT_S,
                )
                state.step = TxStep(state.step.conditions, False, frozenset())
                await evse.refuse_unmetered()
                return
        at = self._now()
        stamp = self.meter_stamp(at)
        reading = reading_of(evse, sample)
        signed = sample is not None and sample.signed is not None
        remote_start_id = self.remote_starts.pop(evse.id, None)
        reservation_id = None
        token = state.token
        if self._reservation_block is not None and token is not None:
            # H03 / 1.6 5.13: the reservation the token uses ends, and the transaction names it.
            reservation_id = await self._reservation_block.consume(evse.id, *token)
        data = StartData(
            evse_id=evse.id,
            connector_id=state.connector_id if state.connector_id is not None else evse.connector_in_use,
            id_token=None if token is None else token[0],
            token_type=None if token is None else token[1],
            trigger=trigger,
            at=at,
            offline=self._offline(),
            meter_wh=None if sample is None else sample.energy_import_wh,
            begin=meter_value(
                self.version,
                stamp,
                reading,
                self._measurands(TX_STARTED_MEASURANDS),
                Context.TRANSACTION_BEGIN,
                with_signed=signed,
            )
            if self.version is V201
            else None,
            ended_begin=meter_value(
                self.version,
                stamp,
                reading,
                self._measurands(TX_ENDED_MEASURANDS),
                Context.TRANSACTION_BEGIN,
                with_signed=signed,
            ),
            charging_state=_charging_state(state.step.conditions),
            remote_start_id=remote_start_id,
            reservation_id=reservation_id,
            number_of_phases=_phases_used(sample),
            cable_max_current=evse.cable_max_current_a() if self.version is V201 else None,
            signed_start=None if sample is None or sample.signed is None else sample.signed.data,
        )
        if self.version is OcppVersion.V16 and data.id_token is None:
            # Not with the 1.6 points (PowerPathClosed needs the token): never an idTag-less Start.
            state.step = TxStep(state.step.conditions, False, frozenset())
            return
        try:
            record = await self._messages.start(self.services, data)
        except StorageWriteError:
            # Nothing committed: no transaction, so no energy. The EVSE is Faulted by `_follow_storage`.
            log.error("EVSE %d: the transaction start could not be recorded: session refused", evse.id)
            state.step = TxStep(state.step.conditions, False, frozenset())
            await evse.stop_session(StopReason.OTHER)
            return
        state.record = record
        state.cable_reported = data.cable_max_current
        state.charging_state = data.charging_state
        state.phases_reported = data.number_of_phases
        state.invalid_id = trio.Event()
        self.ids.set(evse.id, record.id)
        state.scope = trio.CancelScope()
        nursery.start_soon(self._meter_tasks, state, record, state.scope)
        # Last: the block's own state is in place before this first checkpoint after the commit.
        await evse.set_transaction_recorded(True)

    # --- stop ------------------------------------------------------------------------------------------

    async def _stop(
        self, evse: Evse, state: _EvseTx, reason: str, after: Conditions, *, end_session: bool
    ) -> None:
        record = state.record
        if record is None:
            return
        if state.scope is not None:
            state.scope.cancel()
        at = self._now()
        # Before the wait for the last reading: a restart in it must neither resume this transaction
        # (the EV may still be plugged in) nor forget why it stopped.
        # While writes are refused (the EVSE Faulted, so no energy flows) the end waits for them: it is
        # one SQLite transaction, so never recorded twice, and keeps the time and reading of the stop.
        storage = self.services.storage
        await storage.until_written(lambda: storage.note_stop(record.id, reason, at))
        end = None
        energy = None
        signed_stop = None
        if evse.has_meter:
            seen = evse.readings_received
            sample = None
            with trio.move_on_after(END_READING_WAIT_S):
                sample = await evse.wait_reading(after=seen)
            fresh = sample is not None
            if sample is None:
                sample = evse.reading()
            if sample is not None:
                energy = sample.energy_import_wh
                signed_stop = None if sample.signed is None else sample.signed.data
                reading = reading_of(evse, sample, instantaneous=fresh)
                end = meter_value(
                    self.version,
                    self.meter_stamp(at),
                    reading,
                    self._measurands(TX_ENDED_MEASURANDS),
                    Context.TRANSACTION_END,
                    with_signed=sample.signed is not None,
                )
        data = StopData(
            reason=reason,
            trigger=ended_trigger(reason),
            at=at,
            offline=self._offline(),
            meter_wh=energy,
            end=end,
            signed_stop=signed_stop,
            charging_state="EVConnected" if after.ev_connected else "Idle",
        )
        # What was held while writes failed goes first: nothing of the transaction follows its end.
        await storage.until_written(functools.partial(self._release_held, record))
        entry = await storage.until_written(lambda: self._messages.stop(self.services, record, data))
        if entry is not None:
            self._end_entries[evse.id] = entry.id
        state.record = None
        state.scope = None
        state.cable_reported = None
        self.ids.set(evse.id, None)
        await evse.set_transaction_recorded(False)
        if end_session:
            await evse.stop_session(StopReason.OTHER)

    # --- meter values during a transaction ----------------------------------------------------------------

    async def _meter_tasks(self, state: _EvseTx, record: TransactionRecord, scope: trio.CancelScope) -> None:
        # Each starts over once refused writes succeed again; a refused meter message is held.
        until_written = self.services.storage.until_written
        with scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._release_when_written, record)
                nursery.start_soon(until_written, functools.partial(self._sample_periodic, record))
                if self.version is V201:  # 1.6 takes them with the periodic values
                    nursery.start_soon(until_written, functools.partial(self._sample_ended, record))
                nursery.start_soon(until_written, functools.partial(self._watch_invalid_id, state, record))

    def _evse(self, record: TransactionRecord) -> Evse:
        return self.services.evses[record.evse_id]

    async def _sample_periodic(self, record: TransactionRecord) -> None:
        """J02 / 1.6 MeterValueSampleInterval: TxUpdatedMeasurands every TxUpdatedInterval (0: none).
        1.6 also takes its StopTxnSampledData values here, at the same interval (4.10 / 9.1)."""
        dm = self._device_model
        with dm.watch(TX_UPDATED_INTERVAL, SAMPLED_DATA_ENABLED) as changes:
            since = trio.current_time()
            while True:
                interval = dm.get_int(TX_UPDATED_INTERVAL)
                enabled = dm.get_bool(SAMPLED_DATA_ENABLED)
                deadline = since + interval if interval > 0 and enabled else math.inf
                if await sleep_or_change(changes, deadline) is not None:
                    continue
                since = deadline
                evse = self._evse(record)
                sample = evse.reading()
                if sample is None:
                    continue  # the meter is silent: nothing to report, never a made-up value
                at = self._now()
                meter = meter_value(
                    self.version,
                    self.meter_stamp(at),
                    reading_of(evse, sample),
                    self._measurands(TX_UPDATED_MEASURANDS),
                    Context.PERIODIC,
                )
                # 1.6: the values kept for StopTransaction ride in the same SQLite transaction as the
                # MeterValues they were sampled with: one commit per interval, not two.
                ended = self._ended_values(evse, sample, at) if self.version is not V201 else []
                if meter is None and not ended:
                    continue
                await self._queue_update(
                    record,
                    UpdateData(
                        "MeterValuePeriodic",
                        at,
                        self._offline(),
                        meter=meter,
                        energy_wh=sample.energy_import_wh,
                        number_of_phases=self._phases_news(record, sample),
                        ended=ended,
                    ),
                )

    def _ended_values(self, evse: Evse, sample: MeterSample, at: datetime) -> list[MeterValue]:
        """The TxEndedMeasurands (1.6 StopTxnSampledData) of a sample, kept for the end message."""
        measurands = self._measurands(TX_ENDED_MEASURANDS)
        if not measurands:
            return []
        kept = meter_value(
            self.version, self.meter_stamp(at), reading_of(evse, sample), measurands, Context.PERIODIC
        )
        return [] if kept is None else [kept]

    def _phases_news(self, record: TransactionRecord, sample: MeterSample) -> int | None:
        """2.0.1 numberOfPhasesUsed for an Updated event: the phases the reading shows carrying current,
        when that is known and not yet reported for this transaction (the start reading rarely shows
        any current: the contactor closes after the start point), else None (field left out)."""
        state = self._evse_tx.get(record.evse_id)
        phases = _phases_used(sample)
        if self.version is not V201 or state is None or phases is None or phases == state.phases_reported:
            return None
        state.phases_reported = phases
        return phases

    async def _sample_ended(self, record: TransactionRecord) -> None:
        """2.0.1 TxEndedInterval: values kept for the end message (1.6 takes them in _sample_periodic).
        Like the periodic values, not while SampledDataCtrlr.Enabled is false."""
        dm = self._device_model
        with dm.watch(TX_ENDED_INTERVAL, SAMPLED_DATA_ENABLED) as changes:
            since = trio.current_time()
            while True:
                interval = dm.get_int(TX_ENDED_INTERVAL)
                enabled = dm.get_bool(SAMPLED_DATA_ENABLED)
                deadline = since + interval if interval > 0 and enabled else math.inf
                if await sleep_or_change(changes, deadline) is not None:
                    continue
                since = deadline
                evse = self._evse(record)
                sample = evse.reading()
                if sample is None:
                    continue
                at = self._now()
                ended = self._ended_values(evse, sample, at)
                if ended:
                    await self._queue_update(record, UpdateData("MeterValuePeriodic", at, False, ended=ended))

    async def _watch_invalid_id(self, state: _EvseTx, record: TransactionRecord) -> None:
        """E05 / 1.6: StopTxOnInvalidId true stops the transaction (DeAuthorized); false lets at most
        MaxEnergyOnInvalidId Wh more flow, then suspends the energy (SuspendedEVSE)."""
        await state.invalid_id.wait()
        # A verdict applied at resume comes before `_dispatch` listens: the stop it causes must be heard.
        await self._listening.wait()
        evse = self._evse(record)
        dm = self._device_model
        if dm.get_bool(STOP_TX_ON_INVALID_ID):
            await evse.stop_session(StopReason.DE_AUTHORIZED)
            return
        allowance = dm.get_int(MAX_ENERGY_ON_INVALID_ID)
        # Counted from the register at the refusal, stored: a transaction resumed after a restart gets
        # only the rest of the allowance, never a fresh one per restart.
        start = record.invalid_id_from_wh
        if start is None and (now := evse.energy_wh()) is not None:
            start = await self.services.storage.count_invalid_id_from(record.id, now)
        if allowance > 0 and start is not None:
            seen = evse.readings_received
            energy = evse.energy_wh()
            while energy is None or energy - start < allowance:
                sample = await evse.wait_reading(after=seen)
                seen = evse.readings_received
                energy = sample.energy_import_wh
        await evse.suspend_energy(True)

    # --- clock-aligned values (J01, J03) ---------------------------------------------------------------

    async def _clock_aligned(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._aligned_loop, ALIGNED_DATA_INTERVAL, False)
            if self.version is V201:
                nursery.start_soon(self._aligned_loop, ALIGNED_DATA_TX_ENDED_INTERVAL, True)

    async def _aligned_loop(self, key: VariableKey, ended_only: bool) -> None:
        """At every multiple of the interval since midnight (UTC, station clock). 1.6 uses one interval
        (ClockAlignedDataInterval) for MeterValuesAlignedData and StopTxnAlignedData; 2.0.1 has a
        separate AlignedDataCtrlr.TxEndedInterval for the latter."""
        dm = self._device_model
        last: datetime | None = None  # the boundary ticked last: never twice for one
        with dm.watch(key, ALIGNED_DATA_ENABLED) as changes:
            while True:
                interval = dm.get_int(key)
                if interval <= 0 or not dm.get_bool(ALIGNED_DATA_ENABLED):
                    await sleep_or_change(changes, math.inf)
                    continue
                # Re-aligned at least every ALIGN_CHECK_S: the station clock may be set meanwhile (the
                # CSMS's time in BootNotification / Heartbeat answers).
                boundary = next_aligned(self._now(), interval, after=last)
                wait = (boundary - self._now()).total_seconds()
                deadline = trio.current_time() + max(min(wait, ALIGN_CHECK_S), 0.0)
                if await sleep_or_change(changes, deadline) is not None or wait > ALIGN_CHECK_S:
                    continue
                last = boundary
                await self._aligned_tick(
                    ended_only=ended_only, with_ended=ended_only or self.version is not V201
                )

    async def _aligned_tick(self, *, ended_only: bool, with_ended: bool) -> None:
        dm = self._device_model
        at = self._now()
        stamp = self.meter_stamp(at)
        # AlignedDataCtrlr.SendDuringIdle (J01.FR.20 as libocpp reads it): clock-aligned values only
        # while no transaction runs anywhere on the station; the values kept for end messages
        # (TxEndedMeasurands) are not sent now and are still taken.
        quiet = dm.get_bool(ALIGNED_DATA_SEND_DURING_IDLE) and any(
            state.record is not None for state in self._evse_tx.values()
        )
        for evse in self.services.evses:
            sample = evse.reading()
            if sample is None:
                continue
            reading = reading_of(evse, sample)
            state = self._evse_tx.get(evse.id)
            record = None if state is None else state.record
            ended: list[dict[str, object]] = []
            if with_ended and record is not None:
                kept = meter_value(
                    self.version,
                    stamp,
                    reading,
                    self._measurands(ALIGNED_DATA_TX_ENDED_MEASURANDS),
                    Context.CLOCK,
                )
                ended = [kept] if kept is not None else []
            meter = None
            if not ended_only and not quiet:
                meter = meter_value(
                    self.version, stamp, reading, self._measurands(ALIGNED_DATA_MEASURANDS), Context.CLOCK
                )
            if record is None:
                if meter is not None:
                    await self._messages.idle_meter_values(self.services, evse.id, meter)
                continue
            if meter is None and not ended:
                continue
            await self._queue_update(
                record,
                UpdateData(
                    "MeterValueClock",
                    at,
                    self._offline(),
                    meter=meter,
                    energy_wh=sample.energy_import_wh if meter is not None else None,
                    ended=ended,
                ),
            )

    # --- authorization and the connection timeout -----------------------------------------------------

    async def _follow_connection_timeout(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """TxCtrlr.EVConnectionTimeOut (1.6 ConnectionTimeOut): how long an authorized EVSE waits for
        the cable; a change applies to the next authorization. Also StopTxOnEVSideDisconnect and
        UnlockOnEVSideDisconnect, which the EVSE reads at the unplug, and whether energy waits for the
        transaction's record (TxStartPoint)."""
        dm = self._device_model
        with dm.watch(
            EV_CONNECTION_TIMEOUT,
            STOP_TX_ON_EV_SIDE_DISCONNECT,
            UNLOCK_ON_EV_SIDE_DISCONNECT,
            TX_START_POINT,
        ) as changes:
            self._apply_connection_timeout()
            task_status.started()
            async for _ in changes:
                self._apply_connection_timeout()

    def _apply_connection_timeout(self) -> None:
        dm = self._device_model
        for evse in self.services.evses:
            evse.connection_timeout_s = float(dm.get_int(EV_CONNECTION_TIMEOUT))
            evse.stop_on_ev_side_disconnect = dm.get_bool(STOP_TX_ON_EV_SIDE_DISCONNECT)
            evse.unlock_on_ev_side_disconnect = dm.get_bool(UNLOCK_ON_EV_SIDE_DISCONNECT)
            evse.energy_waits_for_record = TxPoint.ENERGY_TRANSFER not in self._points().start

    async def _follow_authorization_enabled(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """AuthCtrlr.Enabled set to false (SetVariables, or station.toml at start): EVs already plugged
        in and waiting for a token are authorized without one. Set to true, the next plug waits for a
        token again; sessions already running go on (the spec names no end for them)."""
        with self._device_model.watch(AUTH_ENABLED) as changes:
            for evse in self.services.evses:
                await self._authorize_without_token(evse)
            task_status.started()
            async for _ in changes:
                for evse in self.services.evses:
                    await self._authorize_without_token(evse)

    async def _authorize_without_token(self, evse: Evse) -> None:
        """Free vend (AuthCtrlr.Enabled false: "no authorization is done before starting a
        transaction"): an EV plugged in at an EVSE waiting for a token is authorized with the token of
        nobody (2.0.1 idToken "" type NoAuthorization; 1.6 the free-vend idTag), without Authorize.
        A reserved EVSE still waits for its reservation's token (H03: a reservation admits only its
        token or group, and nobody's token is neither); Unavailable or faulted EVSEs start nothing."""
        authorization = self._authorization
        if authorization.required() or evse.phase is not Phase.PLUGGED:
            return
        id_token, token_type = authorization.untokened()
        reservations = self._reservation_block
        if reservations is not None and not reservations.admit(
            evse.id, id_token, None, token_type=token_type
        ):
            log.info("EVSE %d: reserved, free vend waits for the reservation's token", evse.id)
            return
        if await evse.authorize_plugged(id_token, token_type):
            log.info("EVSE %d: authorized without a token (AuthCtrlr.Enabled is false)", evse.id)

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
        reservations = self._reservation_block
        for evse in targets:
            # H03 / 1.6 5.13: an EVSE held by a reservation admits only its token or group.
            accepted = allowed and (
                event.session_token is not None
                or reservations is None
                or reservations.admit(evse.id, event.id_token, group, token_type=event.token_type)
            )
            if not accepted:
                self.remote_starts.pop(evse.id, None)  # a refused remote start leaves no remoteStartId
            evse.resolve_authorization(event.id_token, accepted)


def _probe_room(conn: sqlite3.Connection) -> None:
    write_setting(conn, STORAGE_PROBE_KEY, "x" * STORAGE_PROBE_BYTES)
    conn.execute("DELETE FROM settings WHERE key = ?", (STORAGE_PROBE_KEY,))


def _signed_reading(evse: Evse) -> bool:
    sample = evse.reading()
    return sample is not None and sample.signed is not None


def _wire_id(record: TransactionRecord) -> str:
    return str(record.csms_transaction_id) if record.csms_transaction_id is not None else record.id


def _charging_state(conditions: Conditions) -> str:
    """The Started event's chargingState: Idle when the transaction starts before the cable is in."""
    if conditions.energy_transfer:
        return "Charging"
    return "EVConnected" if conditions.ev_connected else "Idle"


def _phases_used(sample: MeterSample | None) -> int | None:
    """numberOfPhasesUsed: the phases carrying current, when the meter reports per-phase current."""
    if sample is None:
        return None
    currents: Sequence[float | None] = (sample.current_a.l1, sample.current_a.l2, sample.current_a.l3)
    if all(c is None for c in currents):
        return None
    used = sum(1 for c in currents if c is not None and c > 0.0)
    return used or None


def next_aligned(now: datetime, interval_s: int, *, after: datetime | None = None) -> datetime:
    """The next multiple of `interval_s` since midnight (of `now`'s day) after `now`, and after the
    boundary `after` already ticked (J01: clock-aligned values at whole multiples of the interval)."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    elapsed = (now - midnight).total_seconds()
    boundary = midnight + timedelta(seconds=(math.floor(elapsed / interval_s) + 1) * interval_s)
    if after is not None and boundary <= after:
        boundary = after + timedelta(seconds=interval_s)
    return boundary

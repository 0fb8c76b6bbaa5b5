"""The connection-level session: boot, heartbeat, StatusNotification and the outbox sender, and the
functional blocks' handlers merged into one gated table per connection.

It never sends anything but BootNotification (and what the CSMS asks for) before the CSMS accepted the
station, and never drops an outbox entry unless the CSMS answered it or the retry policy gave up on it.
Message contents come from the blocks (runtime/blocks/); this module only sequences them.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import trio

from evstation.protocol.boot import BootState, Gate, gate_for
from evstation.protocol.errors import ErrorKind
from evstation.protocol.messages import OcppModel, VersionModels, enum_text
from evstation.protocol.retry import TransactionRetryPolicy
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.assembly import StationBlocks, build_blocks
from evstation.runtime.blocks.authorization import ListConflict
from evstation.runtime.blocks.registry import Route, routing_table
from evstation.runtime.blocks.transactions import AlreadyDelivered, Transactions
from evstation.runtime.calls import (
    CallFailed,
    CallManager,
    FrameConnection,
    Handler,
    HandlerError,
    InvalidRequest,
    MessageLog,
    NoAnswer,
)
from evstation.runtime.clock import WallClock
from evstation.runtime.config import StationConfig
from evstation.runtime.device_model import (
    HEARTBEAT_INTERVAL,
    MESSAGE_TIMEOUT,
    OFFLINE_THRESHOLD,
    WEB_SOCKET_PING_INTERVAL,
    DeviceModel,
    sleep_or_change,
    transaction_retry_policy,
)
from evstation.runtime.events import Dropped
from evstation.runtime.evse import EvseEvent, Evses, StatusChanged
from evstation.runtime.lifecycle import StopRequests
from evstation.runtime.outbox import Outbox, OutboxEntry
from evstation.runtime.storage import Storage, StorageWriteError
from evstation.runtime.uplink import Uplink

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["OutboxProgress", "SessionContext", "new_session", "serve_session"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class OutboxProgress:
    """How far the outbox sender got, for the status sender: a status that a transaction's end caused
    goes out only once that end message has (docs/session.md, "Status order").

    Outbox ids grow and the sender takes them strictly in order, so two numbers say it all.
    """

    left_through: int = 0  # every entry up to this id has left the queue (delivered or given up)
    sent_through: int = 0  # every entry up to this id went out on the current connection
    # Made by a waiter, set and dropped by the next change: no Event per change (three per replayed
    # message) while nobody waits.
    _changed: trio.Event | None = None

    def passed(self, entry_id: int) -> bool:
        return max(self.left_through, self.sent_through) >= entry_id

    def connected(self) -> None:
        """A new connection: what went out on the last one, unanswered, goes out again."""
        self.sent_through = 0

    def sent(self, entry_id: int) -> None:
        self.sent_through = max(self.sent_through, entry_id)
        self._notify()

    def left(self, entry_id: int) -> None:
        self.left_through = max(self.left_through, entry_id)
        self._notify()

    async def wait_passed(self, entry_id: int) -> None:
        while not self.passed(entry_id):
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


@dataclass(eq=False)
class SessionContext:
    """What the session layer keeps across connections: one per station; survives reconnects.

    The blocks are built once per station (`new_session`); the session merges their handlers for each
    connection and sends what they format.
    """

    config: StationConfig
    outbox: Outbox
    evses: Evses
    clock: WallClock
    uplink: Uplink
    blocks: StationBlocks
    device_model: DeviceModel
    message_log: MessageLog | None = None
    # B04 / OfflineThreshold: the statuses the CSMS was last told, and (trio time) when the last
    # accepted connection ended; None before the first one.
    sent_statuses: dict[tuple[object, object], dict[str, object]] = field(default_factory=dict)
    offline_since: float | None = None
    outbox_progress: OutboxProgress = field(default_factory=OutboxProgress)

    @property
    def version(self) -> OcppVersion:
        return self.config.station.ocpp_version

    @property
    def retry_policy(self) -> TransactionRetryPolicy:
        """Read at each decision, so a CSMS's change applies to the next retry (1.6
        TransactionMessageAttempts / RetryInterval, 2.0.1 MessageAttempts / MessageAttemptInterval
        of the TransactionEvent instance)."""
        return transaction_retry_policy(self.device_model)


def new_session(
    config: StationConfig,
    *,
    storage: Storage,
    outbox: Outbox,
    evses: Evses,
    clock: WallClock,
    device_model: DeviceModel,
    message_log: MessageLog | None = None,
    stop: StopRequests | None = None,
) -> SessionContext:
    """The station's session context with its functional blocks built. `stop` is how a block (Reset)
    asks the station supervisor to stop; a fresh one when the caller has no supervisor (tests)."""
    uplink = Uplink()
    blocks = build_blocks(
        config=config,
        storage=storage,
        outbox=outbox,
        evses=evses,
        clock=clock,
        uplink=uplink,
        device_model=device_model,
        stop=stop if stop is not None else StopRequests(),
    )
    return SessionContext(config, outbox, evses, clock, uplink, blocks, device_model, message_log)


def handler_table(ctx: SessionContext, version: OcppVersion) -> dict[str, Handler]:
    """Every block's handlers for `version`, each wrapped in its boot gate (B02 / B03; 1.6 4.2)."""
    return {
        action: _gated(ctx, route) for action, route in routing_table(ctx.blocks.serving(), version).items()
    }


async def serve_session(conn: FrameConnection, ctx: SessionContext) -> None:
    """Run the OCPP session over one connection until it fails (LinkDown propagates) or is cancelled.

    Pass it to `run_link` as `functools.partial(serve_session, ctx=ctx)`. Boots if the station has
    not been Accepted yet (a reconnect after Accepted does not boot again), then runs heartbeat,
    StatusNotification and the outbox sender side by side.
    """
    calls = CallManager(
        conn,
        handler_table(ctx, conn.version),
        timeout_s=ctx.device_model.get_float(MESSAGE_TIMEOUT),
        message_log=ctx.message_log,
    )
    uplink = ctx.uplink
    uplink.boot.reconnected()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(calls.run)
            nursery.start_soon(_follow_ping_interval, ctx, conn)
            uplink.connected(calls)
            await _boot(ctx, calls)
            uplink.accepted()
            ctx.outbox_progress.connected()
            nursery.start_soon(_heartbeat, ctx, calls)
            nursery.start_soon(_statuses, ctx, calls)
            nursery.start_soon(_send_outbox, ctx, calls)
    finally:
        if uplink.online:
            ctx.offline_since = trio.current_time()
        uplink.disconnected(calls)


def _gated(ctx: SessionContext, route: Route) -> Handler:
    async def gated(request: OcppModel) -> OcppModel | dict[str, object]:
        state = ctx.uplink.boot.state
        gate = gate_for(state, route.gates)
        if gate is Gate.SERVE:
            return await route.handler(request)
        if gate is Gate.REJECT:
            return {"status": "Rejected"}
        if gate is Gate.IGNORE:
            raise NoAnswer(f"{route.action} while boot is {state.value}")
        # B02.FR.09 / B03.FR.07: the CSMS may not drive a station it has not accepted.
        raise HandlerError(ErrorKind.SECURITY, f"{route.action} not allowed while boot is {state.value}")

    return gated


def _follow_csms_clock(ctx: SessionContext, response: OcppModel) -> None:
    """Heartbeat currentTime: follow the CSMS's clock for message timestamps."""
    if ctx.version is OcppVersion.V16:
        assert isinstance(response, v16.HeartbeatResponse)
        moved_s = ctx.clock.set(response.current_time)
    else:
        assert isinstance(response, v201.HeartbeatResponse)
        moved_s = ctx.clock.set(response.current_time)
    ctx.blocks.security.clock_set(moved_s)  # SettingSystemTime past the reporting threshold


def _boot_answer(version: OcppVersion, response: OcppModel) -> tuple[str, float, datetime]:
    """(status, interval, currentTime) of a BootNotification response of either version."""
    if version is OcppVersion.V16:
        assert isinstance(response, v16.BootNotificationResponse)
        return enum_text(response.status), float(response.interval), response.current_time
    assert isinstance(response, v201.BootNotificationResponse)
    return enum_text(response.status), float(response.interval), response.current_time


async def _boot(ctx: SessionContext, calls: CallManager) -> None:
    """B01-B03 / 1.6 4.2: BootNotification until Accepted, at the interval the CSMS asks for."""
    machine = ctx.uplink.boot
    provisioning = ctx.blocks.provisioning
    while machine.state is not BootState.ACCEPTED:
        if not machine.boot_due(trio.current_time()):
            await ctx.uplink.wait_boot_due()
            continue
        request = await provisioning.boot_request()
        if ctx.uplink.boot_triggered and ctx.version is OcppVersion.V201:
            request["reason"] = "Triggered"  # BootReasonEnumType: F06 TriggerMessage
        ctx.uplink.boot_triggered = False
        machine.sent()
        try:
            response = await calls.call("BootNotification", request)
        except CallFailed as exc:
            decision = machine.failed(trio.current_time())
            log.warning("BootNotification failed (%s); next try at %.0f", exc, decision.next_boot_at or 0)
            continue
        status, interval, current_time = _boot_answer(ctx.version, response)
        moved_s = ctx.clock.set(current_time)
        decision = machine.answered(status, interval, trio.current_time())
        ctx.uplink.boot_answered()
        log.info("BootNotification %s (interval %g s)", status, interval)
        ctx.blocks.security.clock_set(moved_s)
        if decision.heartbeat_interval_s is not None:
            # B01.FR.04: the CSMS's interval becomes the variable (a 1.6 HeartbeatInterval key read).
            await ctx.device_model.update(HEARTBEAT_INTERVAL, str(round(decision.heartbeat_interval_s)))
    # A database refusing writes (logged there; the EVSEs Faulted) must not end the session: the
    # station still reports and sends what is queued. Unrecorded, the stored boot state stays as it was.
    with contextlib.suppress(StorageWriteError):
        await provisioning.accepted()


async def _follow_ping_interval(ctx: SessionContext, conn: FrameConnection) -> None:
    """WebSocketPingInterval set while connected applies to this connection at once; the next one
    reads it with the dial plan (runtime/network_profiles.py)."""
    dm = ctx.device_model
    with dm.watch(WEB_SOCKET_PING_INTERVAL) as changes:
        async for _change in changes:
            conn.set_ping_interval(float(dm.get_int(WEB_SOCKET_PING_INTERVAL)))


async def _heartbeat(ctx: SessionContext, calls: CallManager) -> None:
    """1.6 4.6 / 2.0.1 G02: a Heartbeat every HeartbeatInterval; a change restarts the wait at once.

    0 (or less) sends no heartbeats until the interval changes.
    """
    dm = ctx.device_model
    with dm.watch(HEARTBEAT_INTERVAL) as changes:
        since = trio.current_time()
        while True:
            interval = dm.get_int(HEARTBEAT_INTERVAL)
            deadline = since + interval if interval > 0 else math.inf
            if await sleep_or_change(changes, deadline) is not None:
                since = trio.current_time()
                continue
            try:
                response = await calls.call("Heartbeat", {})
            except CallFailed as exc:
                log.warning("Heartbeat failed: %s", exc)
            else:
                _follow_csms_clock(ctx, response)
            since = trio.current_time()


_StatusInput = EvseEvent | ListConflict | Dropped


async def _statuses(ctx: SessionContext, calls: CallManager) -> None:
    """B01.FR.08 / 1.6 4.9: every connector's status after boot, then each change. After a reconnect
    (B04): every connector's if the station was offline longer than OfflineThreshold, else only those
    that changed meanwhile. 1.6 3.5.2: a local list conflict the authorization block found goes out as
    connector 0's status with errorCode LocalListConflict, in line with the others."""
    availability = ctx.blocks.availability
    sent = ctx.sent_statuses
    offline_since = ctx.offline_since
    threshold = ctx.device_model.get_int(OFFLINE_THRESHOLD)
    only_changed = offline_since is not None and trio.current_time() - offline_since < threshold
    with (
        ctx.evses.subscribe() as evse_events,
        ctx.blocks.authorization.conflicts.subscribe() as conflicts,
    ):
        async with trio.open_nursery() as nursery:
            events = _merged(nursery, evse_events, conflicts)
            await _after_transaction_ends(ctx)
            for payload in availability.status_requests(None):
                await _send_status(calls, payload, sent, only_if_changed=only_changed)
            async for event in events:
                if isinstance(event, StatusChanged):
                    await _after_transaction_start(ctx, event)
                    await _after_transaction_end(ctx, event)
                    for payload in availability.status_requests(event):
                        await _send_status(calls, payload, sent, only_if_changed=True)
                elif isinstance(event, ListConflict):
                    # Sent even if connector 0 was told the same before: each conflict is news. The
                    # next status change re-sends connector 0 with NoError (it differs from this).
                    for payload in availability.list_conflict_requests():
                        await _send_status(calls, payload, sent)
                elif isinstance(event, Dropped):
                    # We fell behind and lost changes: the current state of every connector replaces
                    # them.
                    await _after_transaction_ends(ctx)
                    for payload in availability.status_requests(None):
                        await _send_status(calls, payload, sent)


def _merged(
    nursery: trio.Nursery, *sources: trio.MemoryReceiveChannel[_StatusInput]
) -> trio.MemoryReceiveChannel[_StatusInput]:
    """One stream of the status sender's inputs, so one task sends every StatusNotification in order.

    Unbuffered: while the sender is busy, the backlog stays in each subscription's bounded buffer,
    whose overflow still arrives as `Dropped`."""
    send, receive = trio.open_memory_channel[_StatusInput](0)

    async def forward(source: trio.MemoryReceiveChannel[_StatusInput]) -> None:
        async for item in source:
            await send.send(item)

    for source in sources:
        nursery.start_soon(forward, source)
    return receive


# The 1.6 statuses that only exist inside a transaction.
_IN_TRANSACTION = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE"})


async def _after_transaction_start(ctx: SessionContext, event: StatusChanged) -> None:
    """1.6: hold a Charging / Suspended* StatusNotification until StartTransaction is answered.

    The status and the outbox go out from separate tasks that take turns for the one call in flight,
    so a CSMS could otherwise see Charging before the transaction it belongs to (the order of the
    spec's sequence diagrams, and the one CSMSs expect, is Preparing, StartTransaction, Charging).
    Bounded by the message timeout so a CSMS that never answers cannot freeze the status stream, and
    over as soon as the EVSE has left the transaction (a status we are late to send would otherwise
    hold every later one for the whole timeout; seen with UnlockConnector ending a fresh transaction).
    """
    if ctx.version is not OcppVersion.V16 or event.status.value not in _IN_TRANSACTION:
        return
    ids = ctx.blocks.transactions.ids
    evse = ctx.evses[event.evse_id]
    with trio.move_on_after(ctx.device_model.get_float(MESSAGE_TIMEOUT)):
        while True:
            changed = ids.changed
            known = ids.get(event.evse_id)
            if known is not None and not known.startswith("-"):
                return
            if evse.status(event.connector_id).value not in _IN_TRANSACTION:
                return
            await changed.wait()


async def _after_transaction_end(ctx: SessionContext, event: StatusChanged) -> None:
    """Hold a status change of an EVSE until the end message of a transaction that ended there before
    it has gone out on this connection (G03 / G04: a scheduled Unavailable after StopTransaction /
    Ended; the Available or Finishing that follows an end alike).

    The transactions block queues the end message only after it has applied the EVSE's SessionEnded
    (and waited for a last meter reading), while the EVSE publishes its new status at once; so with a
    transaction on the EVSE we first wait until the block has caught up (bounded by the message
    timeout, as a stuck block must not freeze the status stream), then for the outbox sender. The
    second wait is unbounded: it ends with the connection, and the reconnect sends statuses again.
    """
    transactions = ctx.blocks.transactions
    if transactions.ids.get(event.evse_id) is not None:
        with trio.move_on_after(ctx.device_model.get_float(MESSAGE_TIMEOUT)):
            await transactions.wait_caught_up(event.evse_id)
    end = transactions.end_entry(event.evse_id)
    if end is not None:
        await ctx.outbox_progress.wait_passed(end)


async def _after_transaction_ends(ctx: SessionContext) -> None:
    """Before every connector's status (after boot, a reconnect, lost events): the end messages queued
    for transactions that ended in this run go out first."""
    ends = ctx.blocks.transactions.end_entries()
    if ends:
        await ctx.outbox_progress.wait_passed(max(ends))


async def _send_status(
    calls: CallManager,
    payload: Mapping[str, object],
    sent: dict[tuple[object, object], dict[str, object]],
    *,
    only_if_changed: bool = False,
) -> None:
    # 2.0.1 folds Preparing/Charging/Suspended*/Finishing into Occupied: a change between those is
    # no change on the wire, and is not sent again.
    key = (payload.get("evseId"), payload.get("connectorId"))
    content = {k: v for k, v in payload.items() if k != "timestamp"}
    if only_if_changed and sent.get(key) == content:
        return

    def told() -> None:
        # Counted once on the wire (B04): a status held back until the connection dropped never was,
        # and is sent again after a short outage too.
        sent[key] = content

    try:
        await calls.call("StatusNotification", dict(payload), on_sent=told)
    except CallFailed as exc:
        # Not a transaction message: not queued (DESIGN.md); the next change or reconnect re-sends.
        log.warning("StatusNotification failed: %s", exc)
        sent.pop(key, None)
    except BaseException:
        # Unanswered when the link went (LinkDown, or this connection's tasks cancelled because a ping
        # went unanswered): on a link that died silently the frame went nowhere, so it is not told; the
        # reconnect sends it again (B04, short outage too).
        sent.pop(key, None)
        raise


def _sent(ctx: SessionContext, calls: CallManager, entry: OutboxEntry) -> None:
    """An outbox entry is on the wire. While its answer is on the way (the CSMS busy, this station
    idle) its payload is decoded for `delivered`, and the next entry is built and validated, which its
    turn then needs not do (docs/storage.md): the same work, off the round trip."""
    ctx.outbox_progress.sent(entry.id)
    entry.payload.load()
    following = ctx.outbox.queued_after(entry.id)
    if following is not None:
        calls.validate_ahead(following.action, following.payload)


def _mark_answer(transactions: Transactions, marks: list[int]) -> None:
    """An outbox entry's answer arrives (in the reading task, before the CSMS calls that follow it)."""
    marks.append(transactions.answer_mark())


async def _send_outbox(ctx: SessionContext, calls: CallManager) -> None:
    """Transaction messages, strictly head first, each removed only when its CALLRESULT arrives.

    Retried after a timeout or CALLERROR per the version's policy (1.6 TransactionMessageAttempts /
    RetryInterval, 2.0.1 MessageAttemptsTransactionEvent / MessageAttemptIntervalTransactionEvent),
    then moved to the dead letters with the reason (never dropped silently).
    """
    outbox = ctx.outbox
    transactions = ctx.blocks.transactions
    progress = ctx.outbox_progress
    # A database refusing writes (logged there) must not end the sender: its bookkeeping waits for
    # writes to succeed, the head staying where it is.
    until_written = transactions.services.storage.until_written

    async def give_up(entry: OutboxEntry, reason: str) -> None:
        await until_written(functools.partial(outbox.give_up, entry.id, reason))
        await until_written(functools.partial(transactions.given_up, entry))
        progress.left(entry.id)

    while True:
        await outbox.wait_not_empty()
        entry = await outbox.head()
        if entry is None:
            continue
        progress.left(entry.id - 1)  # the head: everything before it has left the queue
        payload = await transactions.prepare(entry)
        if isinstance(payload, AlreadyDelivered):
            log.info("%s #%d answered before the restart: removed, not sent again", entry.action, entry.id)
            await outbox.acknowledge(entry.id)
            progress.left(entry.id)
            continue
        if payload is None:
            await give_up(entry, "cannot be sent: its transaction never started at the CSMS")
            continue
        marks: list[int] = []
        try:
            response = await calls.call(
                entry.action,
                payload,
                on_sent=functools.partial(_sent, ctx, calls, entry),
                on_answer=functools.partial(_mark_answer, transactions, marks),
            )
        except CallFailed as exc:
            if isinstance(exc, InvalidRequest):
                # Our own payload breaking the schema is not the CSMS failing to process it: the same
                # bytes would be refused again, so it goes to the dead letters at once.
                delay = None
            else:
                # Counted only now: a CSMS that failed to answer on a live connection. A drop while
                # the message awaits its answer raises LinkDown instead and costs no attempt.
                entry = await until_written(functools.partial(outbox.record_attempt, entry.id))
                # Read now, not once per connection: a CSMS's new attempts / interval apply from
                # the next failure on this very connection.
                delay = ctx.retry_policy.delay_after(entry.attempts)
            if delay is None:
                log.error(
                    "giving up %s #%d after %d attempts: %s", entry.action, entry.id, entry.attempts, exc
                )
                await give_up(entry, str(exc))
            else:
                log.warning("%s #%d failed (%s); retry in %g s", entry.action, entry.id, exc, delay)
                await trio.sleep(delay)
            continue
        # A database that refuses writes (logged there): the answer is kept and recorded once writes
        # succeed again; sending the message again could open a second transaction at the CSMS.
        await until_written(
            functools.partial(_record_delivery, transactions, outbox, entry, response, marks[0])
        )
        progress.left(entry.id)


async def _record_delivery(
    transactions: Transactions, outbox: Outbox, entry: OutboxEntry, response: OcppModel, mark: int
) -> None:
    # Shielded: the CSMS has acknowledged it, so a drop at this very moment must not leave it
    # queued to be sent (and acknowledged) again. Its delete commits while the next one goes out.
    with trio.CancelScope(shield=True):
        await transactions.delivered(entry, response, mark=mark)
        await outbox.acknowledge(entry.id)

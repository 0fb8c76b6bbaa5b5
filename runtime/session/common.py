"""The version-neutral session: boot, heartbeat, StatusNotification and the outbox sender per connection.

Message formats live in v16.py / v201.py; this module only sequences them. It never sends anything
but BootNotification before the CSMS accepted the station, and never drops an outbox entry unless the
CSMS answered it or the retry policy gave up on it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import trio

from evstation.drivers.api import FaultCode
from evstation.protocol.boot import BootMachine, BootState, Gate, gate_csms_request
from evstation.protocol.errors import ErrorKind
from evstation.protocol.messages import OcppModel
from evstation.protocol.retry import TransactionRetryPolicy
from evstation.protocol.versions import OcppVersion
from evstation.runtime.calls import (
    CallFailed,
    CallManager,
    FrameConnection,
    Handler,
    HandlerError,
    InvalidRequest,
    MessageLog,
)
from evstation.runtime.config import StationConfig
from evstation.runtime.events import Dropped
from evstation.runtime.outbox import Outbox, OutboxEntry
from evstation.runtime.storage import BootState as StoredBootState
from evstation.runtime.storage import Storage

if TYPE_CHECKING:
    from evstation.runtime.evse import StatusChanged

__all__ = [
    "DEFAULT_METER_INTERVAL_S",
    "EvseView",
    "EvsesView",
    "SessionContext",
    "VersionAdapter",
    "WallClock",
    "enum_text",
    "serve_session",
]

log = logging.getLogger(__name__)

# 1.6 MeterValueSampleInterval / 2.0.1 SampledDataCtrlr.TxUpdatedInterval when nothing configures it.
DEFAULT_METER_INTERVAL_S = 60.0
# 2.0.1 BootReasonEnumType for a first start; a Reset handler stores e.g. "RemoteReset" before it
# restarts the station (storage boot_state.next_boot_reason).
POWER_UP = "PowerUp"


class WallClock:
    """UTC time for OCPP timestamps: trio's clock plus an offset that follows the CSMS's currentTime.

    Runtime timers use trio time; only message timestamps use this. Tests anchor it to the MockClock.
    """

    def __init__(self, offset_s: float) -> None:
        self._offset_s = offset_s

    @classmethod
    def anchored(cls, at: datetime) -> WallClock:
        """A clock that reads `at` now (call inside trio.run)."""
        return cls(at.timestamp() - trio.current_time())

    @classmethod
    def system(cls) -> WallClock:
        return cls.anchored(datetime.now(UTC))

    def now(self) -> datetime:
        return datetime.fromtimestamp(trio.current_time() + self._offset_s, UTC)

    def set(self, now: datetime) -> None:
        """Follow the CSMS's clock (BootNotification / Heartbeat currentTime)."""
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        self._offset_s = now.timestamp() - trio.current_time()

    def iso(self) -> str:
        return iso(self.now())


def iso(value: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a Z, as both versions' date-time fields want."""
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def enum_text(value: object) -> str:
    """A model field that may be an Enum or a plain string, as its wire text."""
    return str(value.value) if isinstance(value, enum.Enum) else str(value)


def as_datetime(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


class EvseView(Protocol):
    """What the session reads of runtime.evse.Evse."""

    @property
    def id(self) -> int: ...

    @property
    def connector_ids(self) -> tuple[int, ...]: ...

    def status(self, connector_id: int = 1) -> Any: ...  # runtime.evse.ConnectorStatus

    def active_faults(self) -> frozenset[FaultCode]: ...

    def energy_wh(self) -> float | None: ...


class EvsesView(Protocol):
    def __iter__(self) -> Iterator[Any]: ...  # runtime.evse.Evse

    def __getitem__(self, evse_id: int) -> Any: ...

    def subscribe(self) -> AbstractContextManager[Any]: ...  # yields a MemoryReceiveChannel[EvseEvent]


class VersionAdapter(Protocol):
    """The message formats of one OCPP version, for the version-neutral sequencing here."""

    version: OcppVersion

    def handlers(self, ctx: SessionContext) -> dict[str, Handler]: ...

    def boot_request(self, ctx: SessionContext, reason: str) -> dict[str, object]: ...

    def status_requests(self, ctx: SessionContext, event: Any | None) -> list[dict[str, object]]:
        """StatusNotification payloads: for every connector when `event` is None, else for the
        connector of the StatusChanged `event`."""
        ...

    async def prepare(self, ctx: SessionContext, entry: OutboxEntry) -> dict[str, object] | None:
        """The payload to send for an outbox entry (None: it cannot be sent, give it up)."""
        ...

    async def delivered(self, ctx: SessionContext, entry: OutboxEntry, response: OcppModel) -> None: ...


@dataclass(eq=False)
class SessionContext:
    """Everything the session layer shares across connections. One per station; survives reconnects.

    `handlers` holds the CSMS actions other functional blocks answer; the session adds its own and
    gates them all by boot state (B02.FR.09).
    """

    config: StationConfig
    storage: Storage
    outbox: Outbox
    evses: EvsesView
    clock: WallClock
    message_log: MessageLog | None = None
    handlers: dict[str, Handler] = field(default_factory=dict)
    meter_interval_s: float = DEFAULT_METER_INTERVAL_S
    boot: BootMachine = field(default_factory=BootMachine)
    calls: CallManager | None = None  # the current connection's, once it is Accepted
    # EVSE id -> 2.0.1 remoteStartId of a RequestStartTransaction whose transaction has not started yet.
    remote_starts: dict[int, int] = field(default_factory=dict)
    # EVSE id -> the id of its running transaction as the CSMS knows it (1.6: the local placeholder
    # until StartTransaction.conf arrives). For the control API.
    transaction_ids: dict[int, str] = field(default_factory=dict)
    heartbeat_interval_s: float = 0.0
    _transactions_changed: trio.Event = field(default_factory=trio.Event)
    _heartbeat_changed: trio.Event = field(default_factory=trio.Event)
    _online_changed: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        if self.heartbeat_interval_s <= 0:
            self.heartbeat_interval_s = float(self.config.csms.heartbeat_interval_s)

    @property
    def version(self) -> OcppVersion:
        return self.config.station.ocpp_version

    @property
    def online(self) -> bool:
        """Connected and Accepted: transaction messages may go out now."""
        return self.calls is not None

    @property
    def retry_policy(self) -> TransactionRetryPolicy:
        csms = self.config.csms
        return TransactionRetryPolicy(
            csms.transaction_message_attempts, csms.transaction_message_retry_interval_s
        )

    def set_heartbeat_interval(self, seconds: float) -> None:
        """Change the heartbeat interval (1.6 HeartbeatInterval key, 2.0.1 OCPPCommCtrlr.HeartbeatInterval);
        the running heartbeat restarts its wait at once."""
        self.heartbeat_interval_s = seconds
        self._heartbeat_changed.set()
        self._heartbeat_changed = trio.Event()

    def set_transaction_id(self, evse_id: int, transaction_id: str | None) -> None:
        """Record (or, with None, forget) the id of the EVSE's running transaction."""
        if transaction_id is None:
            self.transaction_ids.pop(evse_id, None)
        else:
            self.transaction_ids[evse_id] = transaction_id
        self._transactions_changed.set()
        self._transactions_changed = trio.Event()

    async def wait_transaction_known(self, evse_id: int) -> None:
        """Wait until the EVSE's transaction carries an id the CSMS gave or knows.

        1.6 transactions run under a negative placeholder until StartTransaction.conf arrives.
        """
        while True:
            event = self._transactions_changed
            transaction_id = self.transaction_ids.get(evse_id)
            if transaction_id is not None and not transaction_id.startswith("-"):
                return
            await event.wait()

    async def wait_online(self) -> CallManager:
        while self.calls is None:
            await self._online_changed.wait()
        return self.calls

    def _set_calls(self, calls: CallManager | None) -> None:
        self.calls = calls
        self._online_changed.set()
        self._online_changed = trio.Event()


def adapter_for(version: OcppVersion) -> VersionAdapter:
    # Lazy: a 1.6 station never imports the 2.0.1 adapter (nor its models).
    if version is OcppVersion.V16:
        from evstation.runtime.session.v16 import V16Adapter

        return V16Adapter()
    from evstation.runtime.session.v201 import V201Adapter

    return V201Adapter()


async def serve_session(conn: FrameConnection, ctx: SessionContext) -> None:
    """Run the OCPP session over one connection until it fails (LinkDown propagates) or is cancelled.

    Pass it to `run_link` as `functools.partial(serve_session, ctx=ctx)`. Boots if the station has
    not been Accepted yet (a reconnect after Accepted does not boot again), then runs heartbeat,
    StatusNotification and the outbox sender side by side.
    """
    adapter = adapter_for(conn.version)
    own = adapter.handlers(ctx)
    handlers = {
        action: _gated(ctx, conn.version, action, handler)
        for action, handler in {**own, **ctx.handlers}.items()
    }
    calls = CallManager(
        conn, handlers, timeout_s=float(ctx.config.csms.message_timeout_s), message_log=ctx.message_log
    )
    ctx.boot.reconnected()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(calls.run)
            await _boot(ctx, adapter, calls)
            ctx._set_calls(calls)
            nursery.start_soon(_heartbeat, ctx, calls)
            nursery.start_soon(_statuses, ctx, adapter, calls)
            nursery.start_soon(_send_outbox, ctx, adapter, calls)
    finally:
        if ctx.calls is calls:
            ctx._set_calls(None)


def _gated(ctx: SessionContext, version: OcppVersion, action: str, handler: Handler) -> Handler:
    async def gated(request: OcppModel) -> OcppModel | dict[str, object]:
        gate = gate_csms_request(ctx.boot.state, action, version)
        if gate is Gate.REJECT:
            return {"status": "Rejected"}
        if gate is Gate.SECURITY_ERROR:
            # B02.FR.09 / B03.FR.04: the CSMS may not drive a station it has not accepted.
            raise HandlerError(
                ErrorKind.SECURITY, f"{action} not allowed while boot is {ctx.boot.state.value}"
            )
        return await handler(request)

    return gated


async def _boot_reason(ctx: SessionContext) -> str:
    stored = await ctx.storage.boot_state()
    return stored.next_boot_reason or POWER_UP


async def _boot(ctx: SessionContext, adapter: VersionAdapter, calls: CallManager) -> None:
    """B01-B03 / 1.6 4.2: BootNotification until Accepted, at the interval the CSMS asks for."""
    machine = ctx.boot
    while machine.state is not BootState.ACCEPTED:
        if not machine.boot_due(trio.current_time()):
            assert machine.next_boot_at is not None
            await trio.sleep_until(machine.next_boot_at)
            continue
        request = adapter.boot_request(ctx, await _boot_reason(ctx))
        machine.sent()
        try:
            response = await calls.call("BootNotification", request)
        except CallFailed as exc:
            decision = machine.failed(trio.current_time())
            log.warning("BootNotification failed (%s); next try at %.0f", exc, decision.next_boot_at or 0)
            continue
        current_time = as_datetime(getattr(response, "current_time", None))
        if current_time is not None:
            ctx.clock.set(current_time)
        status = enum_text(getattr(response, "status"))  # noqa: B009 - models differ per version
        interval = float(getattr(response, "interval"))  # noqa: B009
        decision = machine.answered(status, interval, trio.current_time())
        log.info("BootNotification %s (interval %g s)", status, interval)
        if decision.heartbeat_interval_s is not None:
            ctx.set_heartbeat_interval(decision.heartbeat_interval_s)
    await ctx.storage.save_boot_state(StoredBootState("Accepted", ctx.clock.now(), None))


async def _heartbeat(ctx: SessionContext, calls: CallManager) -> None:
    """1.6 4.6 / 2.0.1 G02: a Heartbeat every interval; a changed interval takes effect at once."""
    while True:
        changed = ctx._heartbeat_changed
        with trio.move_on_after(ctx.heartbeat_interval_s):
            await changed.wait()
            continue
        try:
            response = await calls.call("Heartbeat", {})
        except CallFailed as exc:
            log.warning("Heartbeat failed: %s", exc)
            continue
        current_time = as_datetime(getattr(response, "current_time", None))
        if current_time is not None:
            ctx.clock.set(current_time)


async def _statuses(ctx: SessionContext, adapter: VersionAdapter, calls: CallManager) -> None:
    """B01.FR.08 / 1.6 4.9: every connector's status after boot, then each change."""
    from evstation.runtime.evse import StatusChanged

    sent: dict[tuple[object, object], dict[str, object]] = {}
    with ctx.evses.subscribe() as events:
        for payload in adapter.status_requests(ctx, None):
            await _send_status(calls, payload, sent)
        async for event in events:
            if isinstance(event, StatusChanged):
                await _after_transaction_start(ctx, event)
                for payload in adapter.status_requests(ctx, event):
                    await _send_status(calls, payload, sent, only_if_changed=True)
            elif isinstance(event, Dropped):
                # We fell behind and lost changes: the current state of every connector replaces them.
                for payload in adapter.status_requests(ctx, None):
                    await _send_status(calls, payload, sent)


# The 1.6 statuses that only exist inside a transaction.
_IN_TRANSACTION = frozenset({"Charging", "SuspendedEV", "SuspendedEVSE"})


async def _after_transaction_start(ctx: SessionContext, event: StatusChanged) -> None:
    """1.6: hold a Charging / Suspended* StatusNotification until StartTransaction is answered.

    The status and the outbox go out from separate tasks that take turns for the one call in flight,
    so a CSMS could otherwise see Charging before the transaction it belongs to (the order of the
    spec's sequence diagrams, and the one CSMSs expect, is Preparing, StartTransaction, Charging).
    Bounded by the message timeout so a CSMS that never answers cannot freeze the status stream.
    """
    if ctx.version is not OcppVersion.V16 or event.status.value not in _IN_TRANSACTION:
        return
    with trio.move_on_after(float(ctx.config.csms.message_timeout_s)):
        await ctx.wait_transaction_known(event.evse_id)


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
    sent[key] = content
    try:
        await calls.call("StatusNotification", dict(payload))
    except CallFailed as exc:
        # Not a transaction message: not queued (DESIGN.md); the next change or reconnect re-sends.
        log.warning("StatusNotification failed: %s", exc)


async def _send_outbox(ctx: SessionContext, adapter: VersionAdapter, calls: CallManager) -> None:
    """Transaction messages, strictly head first, each removed only when its CALLRESULT arrives.

    Retried after a timeout or CALLERROR per the version's policy (1.6 TransactionMessageAttempts /
    RetryInterval, 2.0.1 MessageAttemptsTransactionEvent / MessageAttemptIntervalTransactionEvent),
    then moved to the dead letters with the reason (never dropped silently).
    """
    outbox = ctx.outbox
    policy = ctx.retry_policy
    while True:
        await outbox.wait_not_empty()
        entry = await outbox.head()
        if entry is None:
            continue
        payload = await adapter.prepare(ctx, entry)
        if payload is None:
            await outbox.give_up(entry.id, "cannot be sent: its transaction never started at the CSMS")
            continue
        try:
            response = await calls.call(entry.action, payload)
        except CallFailed as exc:
            if isinstance(exc, InvalidRequest):
                # Our own payload breaking the schema is not the CSMS failing to process it: the same
                # bytes would be refused again, so it goes to the dead letters at once.
                delay = None
            else:
                # Counted only now: a CSMS that failed to answer on a live connection. A drop while
                # the message awaits its answer raises LinkDown instead and costs no attempt.
                entry = await outbox.record_attempt(entry.id)
                delay = policy.delay_after(entry.attempts)
            if delay is None:
                log.error(
                    "giving up %s #%d after %d attempts: %s", entry.action, entry.id, entry.attempts, exc
                )
                await outbox.give_up(entry.id, str(exc))
            else:
                log.warning("%s #%d failed (%s); retry in %g s", entry.action, entry.id, exc, delay)
                await trio.sleep(delay)
            continue
        # Shielded: the CSMS has acknowledged it, so a drop at this very moment must not leave it
        # queued to be sent (and acknowledged) again. Its delete commits while the next one goes out.
        with trio.CancelScope(shield=True):
            await adapter.delivered(ctx, entry, response)
            await outbox.acknowledge(entry.id)

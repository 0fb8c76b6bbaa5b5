"""Minimal transactions from EVSE events, for both versions: Authorize, start, periodic meter values,
charging-state changes and stop, all transaction messages going through the durable outbox.

Runs for the station's lifetime, connected or not. Never sends a transaction message directly: the
outbox sender in common.py does, once the station is online and Accepted.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from typing import Final, NoReturn, Protocol

import trio

from evstation.protocol.versions import OcppVersion
from evstation.runtime.calls import CallFailed, CallManager
from evstation.runtime.evse import (
    AuthorizationRequested,
    Authorized,
    EnergyFlowStarted,
    EnergyFlowSuspended,
    EvPlugged,
    EvUnplugged,
    SessionEnded,
)
from evstation.runtime.link import LinkDown
from evstation.runtime.session.common import SessionContext, enum_text, iso
from evstation.runtime.storage import TransactionRecord, write_last_meter, write_setting

__all__ = [
    "CLEAN_SHUTDOWN_KEY",
    "TransactionMessages",
    "end_interrupted_transactions",
    "record_clean_shutdown",
    "run_transactions",
]

log = logging.getLogger(__name__)

# Setting written when the station stops through its own shutdown path (SIGTERM / SIGINT, or leaving
# open_station); its absence at start means the last run ended without it: SIGKILL, crash, power cut.
CLEAN_SHUTDOWN_KEY: Final = "session.clean_shutdown_at"
# Reason values shared by 1.6 Reason and 2.0.1 ReasonEnumType.
REASON_POWER_LOSS: Final = "PowerLoss"
REASON_REBOOT: Final = "Reboot"


class TransactionMessages(Protocol):
    """One version's transaction messages (v16.V16Transactions, v201.V201Transactions)."""

    version: OcppVersion

    async def authorize(self, calls: CallManager, id_token: str, token_type: str) -> bool: ...

    async def start(
        self,
        ctx: SessionContext,
        evse_id: int,
        connector_id: int,
        id_token: str,
        token_type: str,
        trigger: str,
        remote_start_id: int | None = None,
    ) -> TransactionRecord: ...

    async def meter_values(self, ctx: SessionContext, record: TransactionRecord) -> None: ...

    async def charging_state(self, ctx: SessionContext, record: TransactionRecord, state: str) -> None: ...

    async def stop(self, ctx: SessionContext, record: TransactionRecord, reason: str) -> None: ...

    async def end_interrupted(self, ctx: SessionContext, record: TransactionRecord, reason: str) -> bool:
        """Queue the end of a transaction left open by the previous run; False if it had already ended."""
        ...


def messages_for(version: OcppVersion) -> TransactionMessages:
    if version is OcppVersion.V16:
        from evstation.runtime.session.v16 import V16Transactions

        return V16Transactions()
    from evstation.runtime.session.v201 import V201Transactions

    return V201Transactions()


@dataclass
class _EvseState:
    plugged_connector: int | None = None
    token: tuple[str, str] | None = None  # (id_token, token_type) once authorized
    record: TransactionRecord | None = None
    meter_scope: trio.CancelScope | None = None


async def run_transactions(
    ctx: SessionContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> NoReturn:
    """Turn EVSE events into Authorize calls and outbox entries. Start with `nursery.start`.

    A transaction starts when its EVSE is both plugged and authorized (trigger: whichever came last),
    sends meter values every `ctx.meter_interval_s`, and ends on SessionEnded. Before it reports
    started, transactions left open by the previous run are ended (`end_interrupted_transactions`);
    when it stops, it records a clean shutdown (`record_clean_shutdown`).
    """
    messages = messages_for(ctx.version)
    await end_interrupted_transactions(ctx, messages)
    try:
        await _run(ctx, messages, task_status)
    finally:
        # Shielded: this runs because we are being cancelled, and the marker must still be written.
        with trio.CancelScope(shield=True):
            await record_clean_shutdown(ctx)


async def end_interrupted_transactions(
    ctx: SessionContext, messages: TransactionMessages | None = None
) -> int:
    """At start-up: queue the end of every transaction the previous run left open; returns how many.

    Reason PowerLoss if that run did not shut down cleanly (SIGKILL, crash, power cut), Reboot if it
    did (1.6 Reason / 2.0.1 stoppedReason). We never resume a transaction: nothing of the session
    (EV, token, contactor) survives the restart, and ending it reports every Wh metered. Each end and
    its record's Ended state commit together, so a restart in the middle of this never queues an end
    twice; the marker is cleared only after all ends are queued.
    """
    messages = messages if messages is not None else messages_for(ctx.version)
    clean_at = await ctx.storage.get_setting(CLEAN_SHUTDOWN_KEY)
    reason = REASON_REBOOT if clean_at is not None else REASON_POWER_LOSS
    ended = 0
    for record in await ctx.storage.transactions():
        if record.is_open and await messages.end_interrupted(ctx, record, reason):
            ended += 1
            log.warning("transaction %s was open at the last shutdown: ended (%s)", record.id, reason)
    if clean_at is not None:
        await ctx.storage.delete_setting(CLEAN_SHUTDOWN_KEY)
    return ended


async def record_clean_shutdown(ctx: SessionContext) -> None:
    """Remember that this run stopped cleanly, with each open transaction's current energy reading and
    time as its last known values, in one SQLite transaction."""
    now = ctx.clock.now()
    readings: dict[str, float] = {}
    for record in await ctx.storage.transactions():
        if not record.is_open:
            continue
        try:
            energy = ctx.evses[record.evse_id].energy_wh()
        except LookupError:
            energy = None  # the EVSE is no longer configured; keep the last persisted reading
        if energy is not None:
            readings[record.id] = energy

    def work(conn: sqlite3.Connection) -> None:
        for transaction_id, energy in readings.items():
            write_last_meter(conn, transaction_id, energy, now)
        write_setting(conn, CLEAN_SHUTDOWN_KEY, iso(now))

    await ctx.storage.write(work)


async def _run(
    ctx: SessionContext, messages: TransactionMessages, task_status: trio.TaskStatus[None]
) -> NoReturn:
    states: dict[int, _EvseState] = {}
    async with trio.open_nursery() as nursery:
        with ctx.evses.subscribe() as events:
            task_status.started()
            async for event in events:
                if isinstance(event, AuthorizationRequested):
                    nursery.start_soon(_authorize, ctx, messages, event)
                    continue
                evse_id = getattr(event, "evse_id", None)
                if evse_id is None:
                    continue  # e.g. an events.Dropped marker: nothing a transaction can act on
                state = states.setdefault(evse_id, _EvseState())
                if isinstance(event, EvPlugged):
                    state.plugged_connector = event.connector_id
                    await _maybe_start(ctx, messages, nursery, evse_id, state, "CablePluggedIn")
                elif isinstance(event, EvUnplugged):
                    state.plugged_connector = None
                elif isinstance(event, Authorized):
                    state.token = (event.id_token, event.token_type)
                    await _maybe_start(ctx, messages, nursery, evse_id, state, "Authorized")
                elif isinstance(event, EnergyFlowStarted) and state.record is not None:
                    await messages.charging_state(ctx, state.record, "Charging")
                elif isinstance(event, EnergyFlowSuspended) and state.record is not None:
                    await messages.charging_state(
                        ctx, state.record, "SuspendedEV" if event.by_ev else "SuspendedEVSE"
                    )
                elif isinstance(event, SessionEnded):
                    if state.meter_scope is not None:
                        state.meter_scope.cancel()
                    if state.record is not None:
                        await messages.stop(ctx, state.record, enum_text(event.reason))
                    state.record = None
                    ctx.set_transaction_id(evse_id, None)
                    state.token = None
                    state.meter_scope = None
    raise AssertionError("the EVSE event stream ended")  # pragma: no cover - subscriptions never end


async def _maybe_start(
    ctx: SessionContext,
    messages: TransactionMessages,
    nursery: trio.Nursery,
    evse_id: int,
    state: _EvseState,
    trigger: str,
) -> None:
    if state.record is not None or state.token is None or state.plugged_connector is None:
        return
    id_token, token_type = state.token
    remote_start_id = ctx.remote_starts.pop(evse_id, None)
    if remote_start_id is not None and trigger == "Authorized":
        trigger = "RemoteStart"
    record = await messages.start(
        ctx, evse_id, state.plugged_connector, id_token, token_type, trigger, remote_start_id
    )
    state.record = record
    ctx.set_transaction_id(evse_id, record.id)
    state.meter_scope = trio.CancelScope()
    nursery.start_soon(_sample_meter, ctx, messages, record, state.meter_scope)


async def _sample_meter(
    ctx: SessionContext, messages: TransactionMessages, record: TransactionRecord, scope: trio.CancelScope
) -> None:
    """1.6 MeterValueSampleInterval / 2.0.1 TxUpdatedInterval: periodic meter values while the
    transaction lasts; cancelled by SessionEnded."""
    with scope:
        while True:
            await trio.sleep(ctx.meter_interval_s)
            await messages.meter_values(ctx, record)


async def _authorize(
    ctx: SessionContext, messages: TransactionMessages, event: AuthorizationRequested
) -> None:
    """1.6 Authorize / 2.0.1 C01: ask the CSMS; offline (or no answer) the token is refused, since the
    local authorization list and cache are a later issue (docs/status/E-transactions.md)."""
    accepted = False
    calls = ctx.calls
    if calls is not None:
        try:
            accepted = await messages.authorize(calls, event.id_token, event.token_type)
        except (CallFailed, LinkDown) as exc:
            log.warning("Authorize %s failed: %s", event.id_token, exc)
    targets = [ctx.evses[event.evse_id]] if event.evse_id is not None else list(ctx.evses)
    for evse in targets:
        evse.resolve_authorization(event.id_token, accepted)

"""Minimal transactions from EVSE events, for both versions: Authorize, start, periodic meter values,
charging-state changes and stop, all transaction messages going through the durable outbox.

Runs for the station's lifetime, connected or not. Never sends a transaction message directly: the
outbox sender in common.py does, once the station is online and Accepted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NoReturn, Protocol

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
from evstation.runtime.session.common import SessionContext, enum_text
from evstation.runtime.storage import TransactionRecord

__all__ = ["TransactionMessages", "run_transactions"]

log = logging.getLogger(__name__)


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
    sends meter values every `ctx.meter_interval_s`, and ends on SessionEnded.
    """
    messages = messages_for(ctx.version)
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
                    ctx.transaction_ids.pop(evse_id, None)
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
    ctx.transaction_ids[evse_id] = record.id
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

"""Reset (2.0.1 B11 / B12; 1.6 Core Reset): answer the CSMS, end or wait for the transactions, then
restart the station (or reset one EVSE).

A station reset never restarts anything itself: it stores the next boot reason, waits until the
transactions' ends are durable in the outbox and the Reset answer has gone out, gives the CSMS a
bounded moment to take the queued ends, and then asks the station supervisor to stop with
`StationOutcome.RESET` (`evstation run` exits with EXIT_RESET; docs/session.md). Transactions a reset
ended are stored Ended, so the next start never resumes or ends them again. The rules are in
protocol.reset.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from evstation.protocol.messages import VersionModels
from evstation.protocol.reset import (
    STATION,
    ResetDecision,
    ResetKind,
    ResetStatus,
    Scope,
    boot_reason,
    decide_reset,
    due_scopes,
    stop_reason,
)
from evstation.protocol.security_events import SecurityEvent
from evstation.protocol.versions import OcppVersion
from evstation.records import record
from evstation.runtime.blocks.fault_events import FaultEvents
from evstation.runtime.blocks.registry import handles
from evstation.runtime.blocks.security import Security
from evstation.runtime.blocks.transactions import Transactions
from evstation.runtime.events import first_of
from evstation.runtime.evse import Evses, StopReason
from evstation.runtime.lifecycle import StationOutcome, StopRequests
from evstation.runtime.outbox import Outbox
from evstation.runtime.storage import Storage, StorageWriteError
from evstation.runtime.uplink import Uplink

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["ENDS_QUEUED_TIMEOUT_S", "Reset"]

log = logging.getLogger(__name__)

V16, V201 = OcppVersion.V16, OcppVersion.V201

# Orders waiting for the reset task; more than this at once is not a CSMS we can serve (Rejected).
_ORDER_BUFFER: Final = 16
# How long a reset waits for the transactions block to queue the ends of the transactions it stopped.
# Queuing is a local SQLite write: this only bounds a bug, it is never reached in normal operation.
ENDS_QUEUED_TIMEOUT_S: Final = 30.0


@record
class _Order:
    decision: ResetDecision
    kind: ResetKind


class Reset:
    """The Reset block. Start `run` with `nursery.start` for the station's lifetime: it performs the
    resets the handlers accepted or scheduled, in the order they came."""

    def __init__(
        self,
        *,
        version: OcppVersion,
        evses: Evses,
        transactions: Transactions,
        storage: Storage,
        outbox: Outbox,
        uplink: Uplink,
        stop: StopRequests,
        flush_timeout_s: float,
        security: Security,
        fault_events: FaultEvents | None,  # 2.0.1 only
    ) -> None:
        self.version = version
        self._evses = evses
        self._transactions = transactions
        self._storage = storage
        self._outbox = outbox
        self._uplink = uplink
        self._stop = stop
        self._flush_timeout_s = flush_timeout_s
        self._security = security
        self._fault_events = fault_events
        self._orders: deque[_Order] = deque()
        self._order_added = trio.Event()
        self.scheduled: set[Scope] = set()  # scopes answered Scheduled and not reset yet

    @property
    def stop_requests(self) -> StopRequests:
        """Where this block asks the station supervisor to stop (read by tests and the supervisor)."""
        return self._stop

    # --- handlers ----------------------------------------------------------------------------------

    def _accept(self, kind: ResetKind, evse_id: int | None) -> ResetStatus:
        decision = decide_reset(
            kind,
            evse_id,
            evses=(evse.id for evse in self._evses),
            busy=self._transactions.ids.running(),
        )
        if decision.status is ResetStatus.REJECTED:
            return decision.status
        if len(self._orders) >= _ORDER_BUFFER:
            log.warning("Reset rejected: %d resets already waiting", _ORDER_BUFFER)
            return ResetStatus.REJECTED  # B12.FR.10: not able to reset at this moment
        self._orders.append(_Order(decision, kind))
        self._order_added.set()
        self._order_added = trio.Event()
        if decision.status is ResetStatus.SCHEDULED:
            # Recorded at once, so a second Reset before the task ran sees it.
            self.scheduled.add(decision.scope)
        return decision.status

    @handles(V16, "Reset")
    async def reset_v16(self, req: v16.ResetRequest) -> v16.ResetResponse:
        kind = ResetKind(req.type.value)
        status = self._accept(kind, None)
        return v16.ResetResponse(status=v16.ResetStatusEnum(status.value))

    @handles(V201, "Reset")
    async def reset_v201(self, req: v201.ResetRequest) -> v201.ResetResponse:
        kind = ResetKind(req.type.value)
        status = self._accept(kind, req.evse_id)
        return v201.ResetResponse(status=v201.ResetStatusEnumType(status.value))

    # --- the block's task --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Perform accepted resets at once and scheduled ones when their scope goes idle."""
        ids = self._transactions.ids
        task_status.started()
        while True:
            for scope in due_scopes(self.scheduled, ids.running()):
                self.scheduled.discard(scope)
                await self._perform(scope, ResetKind.ON_IDLE, frozenset(), scheduled=True)
            if not self._orders:
                await first_of(ids.changed, self._order_added)
                continue
            order = self._orders.popleft()
            decision = order.decision
            if decision.perform_now:
                if decision.scope is STATION:
                    self.scheduled.clear()  # this reset makes them all moot
                else:
                    self.scheduled.discard(decision.scope)
                await self._perform(decision.scope, order.kind, decision.end_now, scheduled=False)

    async def _perform(
        self, scope: Scope, kind: ResetKind, end_now: frozenset[int], *, scheduled: bool
    ) -> None:
        reason = stop_reason(kind)
        if scope is STATION:
            # Stored before anything ends, so a power cut in the middle still boots with this reason.
            await self._store_boot_reason(boot_reason(scheduled=scheduled))
            # A04 / 1.6 whitepaper: a critical event, queued durably; sent now or after the restart.
            await self._security.record(SecurityEvent.RESET_OR_REBOOT, f"{kind.value} Reset by the CSMS")
        if reason is not None and end_now:
            await self._end_transactions(end_now, StopReason(reason))
        if scope is None:
            await self._flush()
            log.warning("Reset (%s): stopping the station for a restart", kind.value)
            self._stop.request(StationOutcome.RESET)
            await trio.sleep_forever()  # the supervisor cancels us
        else:
            await self._reset_evse(scope)

    async def _end_transactions(self, evse_ids: frozenset[int], reason: StopReason) -> None:
        # Marked first: if the restart comes before the ends are queued, the EVs still plugged in do
        # not get these transactions resumed (a Reset ended them).
        try:
            await self._transactions.forbid_resume(evse_ids)
        except StorageWriteError as exc:
            # Their ends cannot be recorded either (the transactions block keeps them until writes
            # succeed); a restart before that finds them open and resumable, as after a power cut.
            log.warning("Reset: transactions on EVSEs %s not marked ended (%s)", sorted(evse_ids), exc)
        for evse_id in sorted(evse_ids):
            await self._evses[evse_id].stop_session(reason)
        with trio.move_on_after(ENDS_QUEUED_TIMEOUT_S) as waited:
            await self._transactions.ids.wait_none(evse_ids)
        if waited.cancelled_caught:
            log.error("Reset: the ends of the transactions on EVSEs %s were not queued in time", evse_ids)

    async def _flush(self) -> None:
        """Let the Reset answer go out, and (online) the queued ends reach the CSMS, within the
        message timeout. What stays queued is sent after the restart."""
        with trio.move_on_after(self._flush_timeout_s):
            await self._uplink.wait_answers_sent()
            if self._uplink.online:
                await self._outbox.wait_empty()
                await self._security.wait_sent()
                if self._fault_events is not None:
                    await self._fault_events.wait_sent()

    async def _reset_evse(self, evse_id: int) -> None:
        """B11 / B12 per EVSE: no process restart; the EVSE goes Unavailable and back. An EVSE the CSMS
        made Inoperative stays so (a persistent state survives a reset)."""
        evse = self._evses[evse_id]
        await self._uplink.wait_answers_sent()  # the status change follows the answer
        if evse.available():
            await evse.set_available(False)
            await evse.set_available(True)
        log.info("Reset: EVSE %d reset", evse_id)

    async def _store_boot_reason(self, reason: str) -> None:
        stored = await self._storage.boot_state()
        try:
            await self._storage.save_boot_state(replace(stored, next_boot_reason=reason))
        except StorageWriteError as exc:
            # The CSMS was told Accepted and a restart may be what clears the disk's trouble: reset
            # anyway; the next BootNotification gives the reason stored before (PowerUp).
            log.warning("Reset: the boot reason %s not stored (%s); resetting anyway", reason, exc)

"""The safe-stop sequence a charge controller runs when the station stops, in the order IEC 61851-1 wants.

1. withdraw the current offer (PWM off: steady +12 V, "X1"; OpenEVSE: sleep),
2. wait a bounded time for the EV to stop drawing current (it opens S2 and goes to state B),
3. open the contactor,
4. release the connector lock, only once the contactor is known open.

State F is used only as a fault answer: a contactor still reported closed after its permission was
withdrawn. The board drivers call `run_safe_stop` from their `run` task when it is cancelled (SIGTERM,
a crashed sibling task, the station giving up), inside a shielded cancel scope with a deadline, while
their port and reader are still up. It never knows OCPP; it never raises `ControllerError`: a command
that fails is logged and the sequence goes on with what it can still do.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from evstation.drivers.api import ControllerError
from evstation.records import record

log = logging.getLogger(__name__)

# IEC 61851-1 Table A.6 (sequence 10.2): an EV that keeps drawing after the PWM stopped is switched off
# under load within 6 s (drivers-facts.md section 3; the Yeti firmware itself forces it after 7 s).
EV_STOP_TIMEOUT_S = 6.0
CONTACTOR_TIMEOUT_S = 1.0  # relay feedback follows a command within a few hundred ms on every board
SAFE_STOP_DEADLINE_S = 10.0  # the whole sequence; systemd's default stop timeout is 90 s


@record
class SafeStopTimeouts:
    ev_stop_s: float = EV_STOP_TIMEOUT_S
    contactor_s: float = CONTACTOR_TIMEOUT_S
    deadline_s: float = SAFE_STOP_DEADLINE_S


class Step(enum.Enum):
    OFFER_WITHDRAWN = "offer withdrawn"
    EV_STOPPED = "EV stopped drawing current"
    EV_STOP_TIMED_OUT = "EV still drawing current at the time limit"
    CONTACTOR_OPEN_SENT = "contactor opened"
    CONTACTOR_CONFIRMED_OPEN = "contactor reported open"
    CONTACTOR_STUCK = "contactor still reported closed"
    STATE_F = "state F signalled (fault)"
    LOCK_RELEASED = "lock released"
    LOCK_KEPT = "lock kept: the contactor is not known open"
    DEADLINE = "deadline reached"


@dataclass(slots=True)
class SafeStopReport:
    """What the sequence did, in order; `complete` when it got to the end within its deadline."""

    steps: list[Step] = field(default_factory=list)
    failed_commands: list[str] = field(default_factory=list)
    complete: bool = False


class SafeStopBoard(Protocol):
    """What a driver offers the sequence. Each `wait_*` returns once the board's reports show the
    condition, re-sending the last command meanwhile where the board acknowledges nothing."""

    name: str

    async def withdraw_offer(self) -> None: ...

    async def wait_ev_stopped(self) -> None: ...

    async def open_contactor(self) -> None: ...

    async def wait_contactor_open(self) -> None: ...

    async def signal_fault(self) -> None: ...

    async def release_lock(self) -> None: ...


async def run_safe_stop(board: SafeStopBoard, timeouts: SafeStopTimeouts | None = None) -> SafeStopReport:
    """Run the sequence within `timeouts.deadline_s`; call it inside a shielded cancel scope."""
    t = timeouts or SafeStopTimeouts()
    report = SafeStopReport()

    async def command(step: Step, call: Callable[[], Awaitable[None]]) -> bool:
        try:
            await call()
        except ControllerError as exc:
            report.failed_commands.append(f"{step.value}: {exc}")
            log.warning("%s: safe stop: %s failed: %s", board.name, step.value, exc)
            return False
        report.steps.append(step)
        return True

    async def wait(call: Callable[[], Awaitable[None]], limit_s: float) -> bool:
        with trio.move_on_after(limit_s):
            try:
                await call()
            except ControllerError as exc:
                report.failed_commands.append(str(exc))
                return False
            return True
        return False

    with trio.move_on_after(t.deadline_s) as scope:
        await command(Step.OFFER_WITHDRAWN, board.withdraw_offer)
        stopped = await wait(board.wait_ev_stopped, t.ev_stop_s)
        report.steps.append(Step.EV_STOPPED if stopped else Step.EV_STOP_TIMED_OUT)
        await command(Step.CONTACTOR_OPEN_SENT, board.open_contactor)
        opened = await wait(board.wait_contactor_open, t.contactor_s)
        if not opened:
            # The permission is gone but the relay still reads closed: a fault, so state F, which
            # every supported board answers by dropping the relay at once.
            report.steps.append(Step.CONTACTOR_STUCK)
            await command(Step.STATE_F, board.signal_fault)
            opened = await wait(board.wait_contactor_open, t.contactor_s)
        if opened:
            report.steps.append(Step.CONTACTOR_CONFIRMED_OPEN)
            await command(Step.LOCK_RELEASED, board.release_lock)
        else:
            # Releasing the connector of a live cable would let it be pulled under load.
            report.steps.append(Step.LOCK_KEPT)
        report.complete = True
    if scope.cancelled_caught:
        report.steps.append(Step.DEADLINE)
    level = logging.INFO if report.complete and not report.failed_commands else logging.WARNING
    log.log(level, "%s: safe stop: %s", board.name, ", ".join(step.value for step in report.steps))
    return report

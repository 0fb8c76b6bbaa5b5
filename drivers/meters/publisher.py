"""The event side every meter shares: a bounded drop-oldest event channel, `latest()`, fault/recovery edges
and the rule that energy never goes backwards. It never does I/O and never blocks its caller.
"""

from __future__ import annotations

import dataclasses
from typing import Final

import trio

from evstation.drivers.api import FaultCode, MeterEvent, MeterFault, MeterRecovered, MeterSample

# Events a slow consumer may fall behind by before the oldest are dropped. At a 1 s poll this is a minute
# of samples; `latest()` always holds the newest good sample regardless.
EVENT_BUFFER_SIZE = 64
# What the publisher's own check raises for every meter behind it (a register read lower than before);
# part of each meter's FAULTS_RAISED.
PUBLISHER_FAULTS: Final[frozenset[FaultCode]] = frozenset({FaultCode.METER_ENERGY_BACKWARDS})


class MeterEventPublisher:
    """Owns a meter's event channel; the polling task calls `sample` / `fault`, the consumer reads `events`.

    Drop-oldest rather than back-pressure: the poll task talks to hardware on a fixed cadence and must
    never stall behind a slow consumer.
    """

    def __init__(self, buffer_size: int = EVENT_BUFFER_SIZE) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        self._send, self._receive = trio.open_memory_channel[MeterEvent](buffer_size)
        self._latest: MeterSample | None = None
        self._fault: FaultCode | None = None
        self.dropped = 0  # events lost to a slow consumer, for diagnostics

    def events(self) -> trio.MemoryReceiveChannel[MeterEvent]:
        return self._receive

    def latest(self) -> MeterSample | None:
        return self._latest

    @property
    def active_fault(self) -> FaultCode | None:
        return self._fault

    def fault(self, code: FaultCode, detail: str) -> None:
        """Report a fault once per change of fault code (not on every failed poll)."""
        if self._fault is not code:
            self._fault = code
            self._emit(MeterFault(code, detail))

    def sample(self, sample: MeterSample) -> MeterSample:
        """Publish a reading; an energy register lower than the last trusted one is reported, not trusted.

        Returns the sample as published (energy held at the last trusted value when it went backwards).
        """
        trusted = self._latest
        backwards = self._backwards(trusted, sample)
        if trusted is not None and backwards:
            sample = dataclasses.replace(
                sample,
                energy_import_wh=max(sample.energy_import_wh, trusted.energy_import_wh),
                energy_export_wh=_max_or_none(sample.energy_export_wh, trusted.energy_export_wh),
            )
            self.fault(FaultCode.METER_ENERGY_BACKWARDS, "; ".join(backwards))
        elif self._fault is not None:
            self._fault = None
            self._emit(MeterRecovered())
        self._latest = sample
        self._emit(sample)
        return sample

    @staticmethod
    def _backwards(trusted: MeterSample | None, sample: MeterSample) -> list[str]:
        if trusted is None:
            return []
        problems = []
        new, old = sample.energy_import_wh, trusted.energy_import_wh
        if new < old:
            problems.append(f"import {new:.3f} Wh < trusted {old:.3f} Wh")
        if (
            sample.energy_export_wh is not None
            and trusted.energy_export_wh is not None
            and sample.energy_export_wh < trusted.energy_export_wh
        ):
            new, old = sample.energy_export_wh, trusted.energy_export_wh
            problems.append(f"export {new:.3f} Wh < trusted {old:.3f} Wh")
        return problems

    def _emit(self, event: MeterEvent) -> None:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self._receive.receive_nowait()
            self.dropped += 1
            self._send.send_nowait(event)
        except trio.BrokenResourceError:
            # The consumer closed its end: nobody listens, `latest()` still serves readers.
            pass


def _max_or_none(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)

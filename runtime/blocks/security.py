"""Security events (2.0.1 A04 and part 2 appendix "Security Events"; 1.6 security whitepaper, security
events): detect them, keep them durably, and send SecurityEventNotification once the CSMS accepted us.

Events this station detects (names and criticality in protocol.security_events):
- StartupOfTheDevice: once per process, after the first Accepted boot, with the boot reason.
- ResetOrReboot: a station Reset the reset block carries out, recorded before it stops the station.
- SettingSystemTime: a CSMS currentTime (boot, heartbeat) that moves the clock by more than
  ClockCtrlr.TimeAdjustmentReportingThreshold seconds.
- ReconfigurationOfSecurityParameters: SecurityCtrlr.SecurityProfile changing while we run (a
  connection through a network profile of another security profile), and a new Basic-auth password
  (SecurityCtrlr.BasicAuthPassword / 1.6 AuthorizationKey, A01; also when the station goes back to the
  previous one because the CSMS refused the new one).
- InvalidCsmsCertificate, FailedToAuthenticateAtCsms (HTTP 401 or a TLS alert refusing our certificate),
  InvalidTLSVersion, InvalidTLSCipherSuite: told by the link (runtime/link.py) when a dial fails; one
  of each kind per outage, so a station dialling a misconfigured CSMS for days queues one, not thousands.

Delivery (runtime/pending_queue.py, shared with the fault-event block): every event is appended to a small
queue persisted in the settings table (key
`security.pending_events`) before anything else happens, so neither an outage nor a restart loses it;
a task sends the queue head first while online and drops an entry only when the CSMS answered it, or
after the transaction-message retry policy gave up on it (logged). Not the transaction outbox: a
security event must not hold up (or be held up by) transaction messages and their retries, and the
outbox's readers (transactions block, status ordering) need not know it. Every event is also logged
(logger `evstation.runtime.blocks.security`): the station's security log is its journal.
"""

from __future__ import annotations

import logging
from typing import Final, NoReturn

import trio

from evstation.protocol.security_events import (
    PendingEvent,
    SecurityEvent,
    decode_pending,
    encode_pending,
    event_type,
    is_critical,
    trim,
)
from evstation.protocol.versions import OcppVersion
from evstation.runtime.calls import CallManager
from evstation.runtime.clock import WallClock
from evstation.runtime.device_model import (
    BASIC_AUTH_PASSWORD,
    SECURITY_PROFILE,
    TIME_ADJUSTMENT_REPORTING_THRESHOLD,
    DeviceModel,
)
from evstation.runtime.pending_queue import PendingQueue
from evstation.runtime.storage import Storage
from evstation.runtime.tls import SecurityFailure
from evstation.runtime.uplink import Uplink

__all__ = ["PENDING_EVENTS_KEY", "Security"]

log = logging.getLogger(__name__)

# storage `settings` key: the events not yet acknowledged by the CSMS, oldest first (JSON).
PENDING_EVENTS_KEY: Final = "security.pending_events"
# Events reported synchronously (link, clock) wait here for the task that stores them.
_REPORT_BUFFER: Final = 32

_LINK_EVENTS: Final = {
    SecurityFailure.CSMS_CERTIFICATE: SecurityEvent.INVALID_CSMS_CERTIFICATE,
    SecurityFailure.CREDENTIALS_REFUSED: SecurityEvent.FAILED_TO_AUTHENTICATE_AT_CSMS,
    SecurityFailure.TLS_VERSION: SecurityEvent.INVALID_TLS_VERSION,
    SecurityFailure.TLS_CIPHER: SecurityEvent.INVALID_TLS_CIPHER_SUITE,
}


class Security:
    """The security-event block. Start `run` with `nursery.start` for the station's lifetime, before
    the link: events reported while it does not run are logged only."""

    def __init__(
        self,
        *,
        version: OcppVersion,
        storage: Storage,
        clock: WallClock,
        uplink: Uplink,
        device_model: DeviceModel,
    ) -> None:
        self.version = version
        self._storage = storage
        self._clock = clock
        self._uplink = uplink
        self._dm = device_model
        self._queue = PendingQueue[PendingEvent](
            name="security events",
            storage=storage,
            key=PENDING_EVENTS_KEY,
            encode=encode_pending,
            decode=decode_pending,
            trim=trim,
        )
        self._reports, self._report_queue = trio.open_memory_channel[tuple[SecurityEvent, str | None, str]](
            _REPORT_BUFFER
        )
        self._link_reported: set[SecurityEvent] = set()  # link events queued in the current outage

    # --- reporting ---------------------------------------------------------------------------------

    async def record(self, event: SecurityEvent, tech_info: str | None = None) -> None:
        """Log `event` and queue it durably (stored when this returns; when the database refuses
        writes, queued in memory and stored once writes succeed)."""
        await self._store(event, tech_info, self._clock.iso())

    def report(self, event: SecurityEvent, tech_info: str | None = None) -> None:
        """`record` for synchronous callers: stored shortly after by the block's task, with the time
        of this call. Never blocks; a backlog beyond the buffer is logged and lost."""
        try:
            self._reports.send_nowait((event, tech_info, self._clock.iso()))
        except trio.WouldBlock:
            log.error("security event %s (%s) lost: too many at once", event.value, tech_info or "")

    def link_failed(self, failure: SecurityFailure, description: str) -> None:
        """The link's hook (Link(on_security_failure=...)): a dial failed for a security reason."""
        event = _LINK_EVENTS[failure]
        if event in self._link_reported:
            log.debug("security event %s already queued during this outage", event.value)
            return
        self._link_reported.add(event)
        self.report(event, description)

    def clock_set(self, moved_s: float) -> None:
        """The station clock followed the CSMS's currentTime, moving by `moved_s` seconds."""
        threshold = self._dm.get_int(TIME_ADJUSTMENT_REPORTING_THRESHOLD)
        if abs(moved_s) > threshold:
            self.report(SecurityEvent.SETTING_SYSTEM_TIME, f"clock moved {moved_s:+.0f} s to the CSMS's time")

    @property
    def pending(self) -> list[PendingEvent]:
        """The events not yet acknowledged, oldest first (a copy)."""
        return self._queue.entries

    async def wait_sent(self) -> None:
        """Until the queue is empty (the reset block's flush before a restart); at once when the
        block's task does not run (nobody would empty it)."""
        await self._queue.wait_empty()

    # --- the block's task --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        """Load the stored queue, then store reported events, follow the security profile, and send."""
        await self._queue.load()
        boot_reason = (await self._storage.boot_state()).next_boot_reason or "PowerUp"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._store_reports)
            await nursery.start(self._follow_security_profile)
            nursery.start_soon(self._startup, boot_reason)
            nursery.start_soon(self._send)
            nursery.start_soon(self._queue.run_saver)
            self._queue.delivering = True
            task_status.started()
        raise AssertionError("the security block's tasks never return")

    async def _store_reports(self) -> None:
        async for event, tech_info, at in self._report_queue:
            await self._store(event, tech_info, at)

    async def _startup(self, boot_reason: str) -> None:
        # After the boot was accepted, so the event carries the CSMS-set time (2.0.1 B01: nothing but
        # BootNotification goes out before).
        await self._uplink.wait_online()
        await self.record(SecurityEvent.STARTUP_OF_THE_DEVICE, f"boot reason {boot_reason}")

    async def _follow_security_profile(self, *, task_status: trio.TaskStatus[None]) -> None:
        previous = self._dm.get(SECURITY_PROFILE)
        with self._dm.watch(SECURITY_PROFILE, BASIC_AUTH_PASSWORD) as changes:
            task_status.started()
            async for change in changes:
                if change.key == BASIC_AUTH_PASSWORD:
                    # A01 (1.6: AuthorizationKey): a new Basic-auth password. Never its value.
                    await self.record(
                        SecurityEvent.RECONFIGURATION_OF_SECURITY_PARAMETERS, "BasicAuthPassword changed"
                    )
                    continue
                if change.value != previous:
                    await self.record(
                        SecurityEvent.RECONFIGURATION_OF_SECURITY_PARAMETERS,
                        f"SecurityProfile {previous} -> {change.value}",
                    )
                previous = change.value

    async def _store(self, event: SecurityEvent, tech_info: str | None, at: str) -> None:
        critical = is_critical(event)
        log.warning(
            "security event %s%s%s",
            event.value,
            " (critical)" if critical else "",
            f": {tech_info}" if tech_info else "",
        )
        entry = PendingEvent(event_type(self.version, event), at, tech_info, critical)
        for lost in await self._queue.append(entry):
            log.error("security event %s of %s dropped: queue full", lost.type, lost.timestamp)

    async def _send(self) -> NoReturn:
        await self._queue.deliver(
            uplink=self._uplink,
            device_model=self._dm,
            send=self._notify,
            describe=lambda head: f"SecurityEventNotification {head[0].type} of {head[0].timestamp}",
            # A connection the CSMS accepted ends the outage: the next link failure is news again. (The
            # set only fills through a report, which wakes the queue's loop, so it is cleared in time.)
            on_online=self._link_reported.clear,
        )

    @staticmethod
    async def _notify(calls: CallManager, head: list[PendingEvent]) -> None:
        await calls.call("SecurityEventNotification", head[0].payload())

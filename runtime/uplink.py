"""The station's CSMS connection as the functional blocks see it: boot state and the current CallManager.

One per station; survives reconnects. The session layer attaches each connection's CallManager and
marks it online once the CSMS has accepted the boot; blocks only read it, and never hold on to a
CallManager beyond one call.
"""

from __future__ import annotations

import trio

from evstation.protocol.boot import BootMachine, BootState
from evstation.protocol.messages import OcppModel
from evstation.runtime.calls import CallManager
from evstation.runtime.link import LinkDown

__all__ = ["Uplink"]


class Uplink:
    def __init__(self, boot: BootMachine | None = None) -> None:
        self.boot = boot if boot is not None else BootMachine()
        self._connection: CallManager | None = None
        self._online = False
        self._changed = trio.Event()
        self.boot_triggered = False  # a TriggerMessage(BootNotification) waits for the boot loop
        self._boot_wakeup = trio.Event()

    @property
    def calls(self) -> CallManager | None:
        """The connection's CallManager once the CSMS accepted the station, else None."""
        return self._connection if self._online else None

    @property
    def online(self) -> bool:
        """Connected and Accepted: heartbeats, statuses and transaction messages may go out."""
        return self._online

    async def wait_online(self) -> CallManager:
        while True:
            changed = self._changed
            calls = self.calls
            if calls is not None:
                return calls
            await changed.wait()

    async def wait_offline(self) -> None:
        """Return once the station is not connected-and-Accepted (at once if it is not now)."""
        while self._online:
            changed = self._changed
            await changed.wait()

    async def call_requested(self, action: str, payload: OcppModel | dict[str, object]) -> OcppModel:
        """Send a message the CSMS asked for (a NotifyReport for its GetBaseReport, a triggered
        message): allowed while Pending too (B02.FR.09).

        Raises LinkDown when there is no connection or the boot state forbids it, and whatever
        `CallManager.call` raises."""
        connection = self._requested_connection(action)
        if connection is None:
            raise LinkDown(f"{action} not sent: no connection the CSMS accepted or kept pending")
        return await connection.call(action, payload)

    async def wait_requested_sendable(self, action: str) -> CallManager:
        """The current connection, once there is one on which `action`, a message the CSMS asked for,
        may go out: Accepted, or Pending (B02.FR.09). Waits through disconnects and a boot in flight."""
        while True:
            changed = self._changed
            connection = self._requested_connection(action)
            if connection is not None:
                return connection
            await changed.wait()

    def _requested_connection(self, action: str) -> CallManager | None:
        """The current connection if `action`, a message the CSMS asked for, may go out on it now."""
        connection = self._connection
        if connection is None or not self.boot.may_send(action, requested=True):
            return None
        return connection

    def trigger_boot(self) -> bool:
        """TriggerMessage(BootNotification) while Pending / Rejected: the boot loop sends one now.
        False when the boot state has no wait to cut short."""
        if not self.boot.triggered(trio.current_time()):
            return False
        self.boot_triggered = True
        self._boot_wakeup.set()
        self._boot_wakeup = trio.Event()
        return True

    async def wait_answers_sent(self) -> None:
        """Wait until the current connection (if any) has answered every CSMS call it received."""
        connection = self._connection
        if connection is not None:
            await connection.wait_answers_sent()

    # --- the session layer's side --------------------------------------------------------------

    async def wait_boot_due(self) -> None:
        """Sleep until the boot machine's next BootNotification is due or a trigger cuts it short."""
        wakeup = self._boot_wakeup
        next_boot_at = self.boot.next_boot_at
        assert next_boot_at is not None
        with trio.move_on_at(next_boot_at):
            await wakeup.wait()

    def connected(self, calls: CallManager) -> None:
        self._connection = calls
        self._notify()

    def boot_answered(self) -> None:
        """The CSMS answered a BootNotification: a message waiting for a Pending station may go now."""
        self._notify()

    def accepted(self) -> None:
        """The CSMS accepted the boot on the current connection."""
        self._online = self._connection is not None and self.boot.state is BootState.ACCEPTED
        self._notify()

    def disconnected(self, calls: CallManager) -> None:
        if self._connection is calls:
            self._connection = None
            self._online = False
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

"""Which CSMS endpoints the link dials, and in which order (2.0.1 B09 / B10), and what the station records
when a connection comes up.

- The dial plan: the slots of OCPPCommCtrlr.NetworkConfigurationPriority in order; a slot's stored
  SetNetworkProfile (URL, securityProfile, messageTimeout) replaces station.toml's endpoint of that slot,
  whose credentials (Basic-auth password, CA bundle, client certificate) it keeps; then the slot of the
  last connection that came up when the list does not name it (the fallback of B10.FR.07);
  OCPPCommCtrlr.NetworkProfileConnectionAttempts failed dials on one before the next (B10.FR.03).
- On every connection: ActiveNetworkProfile, SecurityCtrlr.SecurityProfile and MessageTimeout follow the
  endpoint in use; the slot is remembered in SQLite for the next start; a connection through another
  profile than the previous one in this run boots again (B10.FR.10).
- The Basic-auth password (A01; 1.6 AuthorizationKey): once the CSMS set SecurityCtrlr.BasicAuthPassword
  (its value differs from station.toml's seed), every profile 1-2 endpoint dials with it; the open
  connection ends (politely) when it changes, so the link redials with the new one. The password of the
  last connection the CSMS accepted is kept (SQLite) and dialled after the new one on each endpoint:
  a CSMS that refuses the new password does not lock the station out (docs/link.md).

It never decides whether a profile may be stored (protocol/provisioning.py) and never dials (runtime/link.py).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final

import trio

from evstation.protocol.backoff import BackoffSettings
from evstation.protocol.device_model.validation import split_list
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.provisioning import StoredNetworkProfile
from evstation.runtime.device_model import (
    ACTIVE_NETWORK_PROFILE,
    BASIC_AUTH_PASSWORD,
    MESSAGE_TIMEOUT,
    NETWORK_CONFIGURATION_PRIORITY,
    NETWORK_PROFILE_CONNECTION_ATTEMPTS,
    RETRY_BACK_OFF_RANDOM_RANGE,
    RETRY_BACK_OFF_REPEAT_TIMES,
    RETRY_BACK_OFF_WAIT_MINIMUM,
    SECURITY_PROFILE,
    WEB_SOCKET_PING_INTERVAL,
    basic_auth_seed,
    valid_basic_auth_password,
)
from evstation.runtime.link import BASIC_AUTH_PROFILES, TLS_PROFILES, Connection, CsmsEndpoint, DialPlan
from evstation.runtime.session import SessionContext, serve_session
from evstation.runtime.storage import Storage, StorageWriteError

__all__ = ["LAST_CONNECTED_SLOT_KEY", "LAST_GOOD_PASSWORD_KEY", "NetworkProfiles"]

log = logging.getLogger(__name__)

# storage `settings` key: the slot of the last connection that came up, across restarts (B10.FR.07).
LAST_CONNECTED_SLOT_KEY: Final = "network.last_connected_slot"
# storage `settings` key: the Basic-auth password of the last connection the CSMS accepted (the
# fallback when it refuses a new one). A secret, like the device model's BasicAuthPassword row.
LAST_GOOD_PASSWORD_KEY: Final = "security.last_good_basic_auth_password"
# After a new password: time for the SetVariables / ChangeConfiguration answer to leave before the
# connection closes (the station answers first, then reconnects; libocpp waits 1 s as well).
PASSWORD_RECONNECT_DELAY_S: Final = 1.0

ProfileReader = Callable[[], Awaitable[list[StoredNetworkProfile]]]


class NetworkProfiles:
    """The link's `plan_source` (`dial_plan`) and the `serve` it runs on each connection."""

    def __init__(
        self,
        *,
        endpoints: Sequence[CsmsEndpoint],
        session: SessionContext,
        storage: Storage,
        stored_profiles: ProfileReader | None = None,
    ) -> None:
        """`endpoints`: station.toml's, with their credentials; `stored_profiles`: the provisioning
        block's reader of the SetNetworkProfile slots (default: the session's provisioning block)."""
        self._endpoints = tuple(sorted(endpoints, key=lambda e: e.priority))
        self._by_slot = {endpoint.priority: endpoint for endpoint in self._endpoints}
        self._session = session
        self._storage = storage
        self._stored_profiles = stored_profiles or session.blocks.provisioning.network_profiles
        self._in_use: CsmsEndpoint | None = None  # the last connection's endpoint in this run
        self._remembered_slot: int | None = None
        # What station.toml seeds BasicAuthPassword with: while the variable holds it, each endpoint
        # keeps its own station.toml password.
        self._seed_password = basic_auth_seed(e.password for e in self._endpoints if e.password is not None)
        self._last_good: str | None = None
        self._last_good_loaded = False

    # --- the dial plan (read at start and after each lost connection) ----------------------------

    async def dial_plan(self) -> DialPlan:
        dm = self._session.device_model
        stored = {profile.slot: profile for profile in await self._stored_profiles()}
        slots = [int(slot) for slot in split_list(dm.get(NETWORK_CONFIGURATION_PRIORITY) or "")]
        last = await self._last_connected_slot()
        if last is not None and last not in slots and last in self._by_slot:
            # B10.FR.07: when every slot of the list failed, the profile that worked last.
            slots.append(last)
        endpoints = tuple(
            endpoint for endpoint in (self._endpoint(slot, stored.get(slot)) for slot in slots) if endpoint
        )
        if not endpoints:  # pragma: no cover - the variable's valuesList and minLimit prevent it
            endpoints = self._endpoints
        endpoints = await self._with_passwords(endpoints)
        attempts = dm.get_int(NETWORK_PROFILE_CONNECTION_ATTEMPTS)
        # RetryBackOff*: a value the CSMS set applies from the next lost connection on.
        backoff = BackoffSettings(
            wait_minimum_s=float(dm.get_int(RETRY_BACK_OFF_WAIT_MINIMUM)),
            random_range_s=float(dm.get_int(RETRY_BACK_OFF_RANDOM_RANGE)),
            repeat_times=dm.get_int(RETRY_BACK_OFF_REPEAT_TIMES),
            attempts_per_endpoint=attempts,
        )
        # WebSocketPingInterval: a value the CSMS set applies from the next connection on.
        return DialPlan(endpoints, attempts, backoff, float(dm.get_int(WEB_SOCKET_PING_INTERVAL)))

    async def _last_connected_slot(self) -> int | None:
        if self._remembered_slot is None:
            text = await self._storage.get_setting(LAST_CONNECTED_SLOT_KEY)
            if text is not None and text.isdigit():
                self._remembered_slot = int(text)
        return self._remembered_slot

    def _csms_password(self) -> str | None:
        """The Basic-auth password the CSMS set (A01), or None while BasicAuthPassword is the seed."""
        value = self._session.device_model.get(BASIC_AUTH_PASSWORD)
        return None if value is None or value == self._seed_password else value

    async def _last_good_password(self) -> str | None:
        if not self._last_good_loaded:
            self._last_good = await self._storage.get_setting(LAST_GOOD_PASSWORD_KEY)
            self._last_good_loaded = True
        return self._last_good

    async def _with_passwords(self, endpoints: tuple[CsmsEndpoint, ...]) -> tuple[CsmsEndpoint, ...]:
        """Each Basic-auth endpoint with the CSMS's password, then (when it differs) with the password of
        the last accepted connection: the new one first, the old one if the CSMS refuses it."""
        new = self._csms_password()
        if new is None:
            return endpoints
        old = await self._last_good_password()
        planned: list[CsmsEndpoint] = []
        for endpoint in endpoints:
            if endpoint.security_profile not in BASIC_AUTH_PROFILES:
                planned.append(endpoint)
                continue
            planned.append(dataclasses.replace(endpoint, password=new))
            if old is not None and old != new:
                planned.append(dataclasses.replace(endpoint, password=old))
        return tuple(planned)

    def _endpoint(self, slot: int, stored: StoredNetworkProfile | None) -> CsmsEndpoint | None:
        base = self._by_slot.get(slot)
        if stored is None:
            return base
        data = stored.connection_data
        security = stored.security_profile
        client = self._credentials(base, lambda e: e.client_cert is not None and e.client_key is not None)
        try:
            return CsmsEndpoint(
                url=str(data["ocppCsmsUrl"]),
                priority=slot,
                security_profile=security,
                password=self._password(base) if security in BASIC_AUTH_PROFILES else None,
                ca_bundle=self._ca_bundle(base) if security in TLS_PROFILES else None,
                client_cert=client.client_cert if client is not None and security == 3 else None,
                client_key=client.client_key if client is not None and security == 3 else None,
                message_timeout_s=float(str(data["messageTimeout"])),
            )
        except (KeyError, ValueError) as exc:
            # e.g. security profile 1 stored, but station.toml has no Basic-auth password to send.
            log.warning(
                "network profile of slot %d cannot be used (%s); dialling station.toml's endpoint instead",
                slot,
                exc,
            )
            return base

    def _credentials(
        self, base: CsmsEndpoint | None, has: Callable[[CsmsEndpoint], bool]
    ) -> CsmsEndpoint | None:
        """The station.toml endpoint whose credential a stored profile uses: the slot's own when it has
        one, else the first (by priority) that has."""
        for endpoint in (base, *self._endpoints):
            if endpoint is not None and has(endpoint):
                return endpoint
        return None

    def _password(self, base: CsmsEndpoint | None) -> str | None:
        source = self._credentials(base, lambda e: e.password is not None)
        return None if source is None else source.password

    def _ca_bundle(self, base: CsmsEndpoint | None) -> Path | None:
        # None: the system's trust store, as for a station.toml endpoint without ca_bundle.
        source = self._credentials(base, lambda e: e.ca_bundle is not None)
        return None if source is None else source.ca_bundle

    # --- each connection -------------------------------------------------------------------------

    async def serve(self, conn: Connection) -> None:
        """`run_link`'s serve: record the endpoint in use, then run the session over the connection
        until it ends or a new Basic-auth password needs a new connection (A01)."""
        await self.connected(conn.endpoint)
        async with trio.open_nursery() as nursery:
            await nursery.start(self._end_on_new_password, conn, nursery.cancel_scope)
            await serve_session(conn, self._session)
            nursery.cancel_scope.cancel()

    async def _end_on_new_password(
        self, conn: Connection, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        endpoint = conn.endpoint
        with self._session.device_model.watch(BASIC_AUTH_PASSWORD) as changes:
            task_status.started()
            async for change in changes:
                if endpoint.security_profile in BASIC_AUTH_PROFILES and change.value != endpoint.password:
                    break
            else:  # pragma: no cover - the watch channel never closes while we hold it
                return
        # A01: answer Accepted first, then disconnect and reconnect with the new password.
        await trio.sleep(PASSWORD_RECONNECT_DELAY_S)
        log.info("new Basic-auth password: closing connection %d to reconnect with it", conn.generation)
        scope.cancel()

    async def connected(self, endpoint: CsmsEndpoint) -> None:
        ctx = self._session
        dm = ctx.device_model
        await dm.update(ACTIVE_NETWORK_PROFILE, str(endpoint.priority))
        await dm.update(SECURITY_PROFILE, str(endpoint.security_profile))
        timeout_s = endpoint.message_timeout_s
        if timeout_s is None:
            timeout_s = float(ctx.config.csms.message_timeout_s)
        await dm.update(MESSAGE_TIMEOUT, str(math.ceil(timeout_s)))
        await self._password_accepted(endpoint)
        previous, self._in_use = self._in_use, endpoint
        switched = previous is not None and _profile(previous) != _profile(endpoint)
        if switched and previous is not None and ctx.version is OcppVersion.V201:
            # B10.FR.10: the CSMS behind this profile may never have seen the station: register again,
            # and tell it every connector's status (B01) rather than the changes since the last one.
            log.info(
                "connected through network profile slot %d (%s) after slot %d: BootNotification again",
                endpoint.priority,
                endpoint.url,
                previous.priority,
            )
            ctx.uplink.boot.profile_switched()
            ctx.sent_statuses.clear()
            ctx.offline_since = None
        if self._remembered_slot != endpoint.priority:
            try:
                await self._storage.set_setting(LAST_CONNECTED_SLOT_KEY, str(endpoint.priority))
            except StorageWriteError as exc:
                # Only where the next start dials first: tried again at the next connection.
                log.warning("the network profile slot in use not stored: %s", exc)
            else:
                self._remembered_slot = endpoint.priority

    async def _password_accepted(self, endpoint: CsmsEndpoint) -> None:
        """The CSMS accepted `endpoint.password`: remember it as the fallback; if it is the old one
        (the CSMS refused the new), BasicAuthPassword goes back to it."""
        password = endpoint.password
        if endpoint.security_profile not in BASIC_AUTH_PROFILES or password is None:
            return
        new = self._csms_password()
        if new is not None and password != new:
            valid = valid_basic_auth_password(password)
            log.warning(
                "the CSMS refused the new Basic-auth password and accepted the previous one%s",
                ": using the previous one from now on" if valid else "",
            )
            if valid:
                await self._session.device_model.update(BASIC_AUTH_PASSWORD, password)
        if await self._last_good_password() != password:
            try:
                await self._storage.set_setting(LAST_GOOD_PASSWORD_KEY, password)
            except StorageWriteError as exc:
                # Tried again at the next connection; until then the fallback is the one stored before.
                log.warning("the accepted Basic-auth password not stored as the fallback: %s", exc)
            else:
                self._last_good = password


def _profile(endpoint: CsmsEndpoint) -> tuple[int, str, int]:
    return endpoint.priority, endpoint.url, endpoint.security_profile

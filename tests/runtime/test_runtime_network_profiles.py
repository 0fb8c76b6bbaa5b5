"""The link and the network connection profiles (2.0.1 B09 / B10), with the whole station against test
CSMSs on 127.0.0.1: SetNetworkProfile + NetworkConfigurationPriority + Reset moves the station to another
CSMS; a dead profile falls back after NetworkProfileConnectionAttempts; a switch of profile without a
restart boots again; a priority naming an unknown slot is Rejected.

Real time (opening SQLite in its worker thread can outlast a MockClock's autojump) with zero back-off
waits: a refused dial on 127.0.0.1 fails at once, so each test is over in a fraction of a second.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import open_session_context

from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.provisioning import StoredNetworkProfile
from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.device_model import (
    MESSAGE_TIMEOUT,
    RETRY_BACK_OFF_RANDOM_RANGE,
    RETRY_BACK_OFF_REPEAT_TIMES,
    RETRY_BACK_OFF_WAIT_MINIMUM,
    WEB_SOCKET_PING_INTERVAL,
)
from evstation.runtime.lifecycle import StationOutcome
from evstation.runtime.network_profiles import LAST_CONNECTED_SLOT_KEY, NetworkProfiles
from evstation.runtime.station import Station, link_settings, open_station
from evstation.runtime.testcsms import JsonObject, TestCsms, serve_test_csms

STATION = "NETPROF-1"
IO_TIMEOUT_S = 20.0  # real seconds; each test takes well under one


@pytest.fixture
def folder() -> Iterator[Path]:
    # A short path: the control socket's folder lives under it (AF_UNIX paths are short).
    path = Path(tempfile.mkdtemp(prefix="evs-np-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def closed_port() -> int:
    """A port nothing listens on (bound, then released): a dial to it is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def url(port: int) -> str:
    return f"ws://127.0.0.1:{port}/ocpp"


def station_config(data_dir: Path, *slots: tuple[int, str], attempts: int = 3) -> StationConfig:
    data: dict[str, Any] = {
        "station": {
            "id": STATION,
            "vendor": "Acme",
            "model": "Wallbox",
            "ocpp_version": "2.0.1",
            "data_dir": str(data_dir),
        },
        "csms": {
            "endpoints": [
                {"url": address, "priority": slot, "security_profile": 0} for slot, address in slots
            ],
            "retry_backoff_wait_minimum_s": 0,
            "retry_backoff_random_range_s": 0,
            "connection_attempts_per_endpoint": attempts,
        },
        "evse": [
            {
                "id": 1,
                "connector": [{"id": 1, "type": "cType2", "max_current_a": 32}],
                "controller": {"driver": "sim"},
                "meter": {"driver": "sim"},
            }
        ],
    }
    return parse_config(data, base_dir=data_dir)


def comm_variable(name: str, value: str | None = None) -> JsonObject:
    item: JsonObject = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": name}}
    if value is not None:
        item["attributeValue"] = value
    return item


async def set_variable(csms: TestCsms, name: str, value: str) -> dict[str, Any]:
    answer: dict[str, Any] = await csms.call(
        STATION, "SetVariables", {"setVariableData": [comm_variable(name, value)]}
    )
    [result] = answer["setVariableResult"]
    assert isinstance(result, dict)
    return result


async def get_variable(csms: TestCsms, name: str) -> object:
    answer: dict[str, Any] = await csms.call(
        STATION, "GetVariables", {"getVariableData": [comm_variable(name)]}
    )
    [result] = answer["getVariableResult"]
    assert isinstance(result, dict)
    return result.get("attributeValue")


async def accepted_at(csms: TestCsms, boots: int = 1) -> JsonObject:
    """The `boots`-th BootNotification at `csms`, once the station is Accepted there (its statuses follow
    the Accepted answer, and the CSMS's requests are served only then)."""
    boot = await csms.wait_for(STATION, "BootNotification", boots)
    await csms.wait_for(STATION, "StatusNotification", len(csms.received(STATION, "StatusNotification")) + 1)
    return boot


@asynccontextmanager
async def two_csms() -> AsyncIterator[tuple[TestCsms, TestCsms, trio.Nursery]]:
    async with trio.open_nursery() as nursery:
        first = await nursery.start(serve_test_csms)
        second = await nursery.start(serve_test_csms)
        yield first, second, nursery
        nursery.cancel_scope.cancel()


async def run_until_reset(station: Station) -> None:
    assert await station.stop.wait() is StationOutcome.RESET


def network_profile(slot: int, address: str) -> JsonObject:
    return {
        "configurationSlot": slot,
        "connectionData": {
            "ocppVersion": "OCPP20",
            "ocppTransport": "JSON",
            "ocppCsmsUrl": address,
            "messageTimeout": 20,
            "securityProfile": 0,
            "ocppInterface": "Wired0",
        },
    }


async def test_b10_profile_priority_and_reset_move_the_station_to_the_new_csms(folder: Path) -> None:
    """B10 as the spec draws it: the CSMS stores a profile for slot 2 that points at another CSMS (B09),
    puts slot 2 first in NetworkConfigurationPriority (RebootRequired: it applies from the next boot,
    B10.FR.04) and resets the station; the restarted station dials slot 2 first and boots there, with
    that profile's messageTimeout. A priority naming a slot the station does not have is Rejected."""
    with trio.fail_after(IO_TIMEOUT_S):
        async with two_csms() as (old, new, _):
            config = station_config(folder, (1, url(old.port)), (2, url(closed_port())))
            async with open_station(config) as station:
                await accepted_at(old)
                unknown = await set_variable(old, "NetworkConfigurationPriority", "3,1")
                assert unknown["attributeStatus"] == "Rejected"
                assert unknown["attributeStatusInfo"]["reasonCode"] == "InvalidValue"
                twice = await set_variable(old, "NetworkConfigurationPriority", "2,2")
                assert twice["attributeStatus"] == "Rejected"
                stored = await old.call(STATION, "SetNetworkProfile", network_profile(2, url(new.port)))
                assert stored == {"status": "Accepted"}
                changed = await set_variable(old, "NetworkConfigurationPriority", "2,1")
                assert changed["attributeStatus"] == "RebootRequired"
                # Until the reboot the station stays where it is.
                assert await get_variable(old, "ActiveNetworkProfile") == "1"
                assert await old.call(STATION, "Reset", {"type": "OnIdle"}) == {"status": "Accepted"}
                await run_until_reset(station)
            assert new.received(STATION) == []
            async with open_station(config) as station:
                boot = await accepted_at(new)
                assert boot["reason"] == "RemoteReset"
                assert await get_variable(new, "ActiveNetworkProfile") == "2"
                assert await get_variable(new, "NetworkConfigurationPriority") == "2,1"
                assert station.session.device_model.get(MESSAGE_TIMEOUT) == "20"
                assert station.link.statistics().failed_dials == 0
            assert len(old.received(STATION, "BootNotification")) == 1


async def test_b10_fr_03_fr_07_a_dead_profile_falls_back_after_its_attempts_to_the_last_good_slot(
    folder: Path,
) -> None:
    """The new profile's CSMS is unreachable: after NetworkProfileConnectionAttempts (set by the CSMS,
    2; station.toml says 3) failed dials on slot 2, the link falls back to slot 1, the profile of the
    last connection that came up, though the priority list names slot 2 only (B10.FR.07)."""
    with trio.fail_after(IO_TIMEOUT_S):
        async with two_csms() as (old, _, _):
            config = station_config(folder, (1, url(old.port)), (2, url(closed_port())), attempts=3)
            async with open_station(config) as station:
                await accepted_at(old)
                dead = network_profile(2, url(closed_port()))
                assert await old.call(STATION, "SetNetworkProfile", dead) == {"status": "Accepted"}
                attempts = await set_variable(old, "NetworkProfileConnectionAttempts", "2")
                assert attempts["attributeStatus"] == "Accepted"
                only_new = await set_variable(old, "NetworkConfigurationPriority", "2")
                assert only_new["attributeStatus"] == "RebootRequired"
                assert await station.storage.get_setting(LAST_CONNECTED_SLOT_KEY) == "1"
                assert await old.call(STATION, "Reset", {"type": "Immediate"}) == {"status": "Accepted"}
                await run_until_reset(station)
            async with open_station(config) as station:
                boot = await accepted_at(old, boots=2)
                assert boot["reason"] == "RemoteReset"
                stats = station.link.statistics()
                assert (stats.failed_dials, stats.connections) == (2, 1)
                assert await get_variable(old, "ActiveNetworkProfile") == "1"


async def test_b10_fr_10_a_switch_of_profile_without_a_restart_boots_again_at_the_new_csms(
    folder: Path,
) -> None:
    """Accepted at the CSMS of slot 1, which then goes away for good: after 2 refused dials the link
    moves to slot 2 and the station, not restarted, sends BootNotification there (B10.FR.10), then
    every connector's status; SecurityProfile and ActiveNetworkProfile follow the connection."""
    with trio.fail_after(IO_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            first_scope = trio.CancelScope()

            async def run_first(task_status: trio.TaskStatus[TestCsms]) -> None:
                with first_scope:
                    await serve_test_csms(task_status=task_status)

            first: TestCsms = await nursery.start(run_first)
            second: TestCsms = await nursery.start(serve_test_csms)
            config = station_config(folder, (1, url(first.port)), (2, url(second.port)), attempts=2)
            async with open_station(config) as station:
                await accepted_at(first)
                first_scope.cancel()  # the CSMS and its listener are gone: every dial is refused
                boot = await accepted_at(second)
                assert boot["reason"] == "PowerUp"  # no reboot happened; the stored reason stands
                assert len(second.received(STATION, "StatusNotification")) >= 1
                assert await get_variable(second, "ActiveNetworkProfile") == "2"
                stats = station.link.statistics()
                assert (stats.failed_dials, stats.connections) == (2, 2)
            nursery.cancel_scope.cancel()


async def test_without_stored_profiles_a_reconnect_to_the_same_csms_boots_no_more(folder: Path) -> None:
    """B01 stays as it was: the same profile after a lost connection means no second BootNotification."""
    with trio.fail_after(IO_TIMEOUT_S):
        async with two_csms() as (csms, _, _):
            config = station_config(folder, (1, url(csms.port)))
            async with open_station(config) as station:
                await accepted_at(csms)
                csms.drop(STATION)
                await csms.wait_connected(STATION, 2)
                await csms.call(
                    STATION, "GetVariables", {"getVariableData": [comm_variable("HeartbeatInterval")]}
                )
                assert len(csms.received(STATION, "BootNotification")) == 1
                assert station.link.statistics().connections == 2


async def test_a_stored_profile_keeps_station_toml_credentials_and_an_unusable_one_is_skipped(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The dial plan's endpoint for a slot with a stored profile: the profile's URL, security profile
    and messageTimeout, with station.toml's Basic-auth password (the slot's own, else the first
    endpoint's). A profile the station has no credential for (3 without a client certificate) is
    skipped for the slot's station.toml endpoint."""
    endpoints = [
        {"url": "ws://one.test/ocpp", "priority": 1, "security_profile": 1, "password": "p" * 20},
        {"url": "ws://two.test/ocpp", "priority": 2, "security_profile": 0},
    ]
    stored: list[StoredNetworkProfile] = []

    async def reader() -> list[StoredNetworkProfile]:
        await trio.lowlevel.checkpoint()
        return list(stored)

    async with open_session_context(tmp_path, OcppVersion.V201, endpoints=endpoints) as ctx:
        profiles = NetworkProfiles(
            endpoints=link_settings(ctx.config).endpoints,
            session=ctx,
            storage=ctx.blocks.transactions.services.storage,
            stored_profiles=reader,
        )
        stored.append(StoredNetworkProfile(2, 1, {"ocppCsmsUrl": "ws://new.test/ocpp", "messageTimeout": 15}))
        one, two = (await profiles.dial_plan()).endpoints
        assert (two.url, two.priority, two.security_profile) == ("ws://new.test/ocpp", 2, 1)
        assert two.password == one.password == "p" * 20
        assert two.message_timeout_s == 15
        stored[0] = StoredNetworkProfile(2, 3, {"ocppCsmsUrl": "wss://new.test/ocpp", "messageTimeout": 15})
        plan = await profiles.dial_plan()
        assert [e.url for e in plan.endpoints] == ["ws://one.test/ocpp", "ws://two.test/ocpp"]
        assert plan.attempts_per_endpoint == 3


async def test_the_dial_plan_carries_the_retry_back_off_the_csms_set(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """OCPPCommCtrlr.RetryBackOffWaitMinimum / RandomRange / RepeatTimes are ReadWrite: the plan read
    after each lost connection carries the values the CSMS set, not station.toml's."""
    async with open_session_context(tmp_path, OcppVersion.V201) as ctx:
        profiles = NetworkProfiles(
            endpoints=link_settings(ctx.config).endpoints,
            session=ctx,
            storage=ctx.blocks.transactions.services.storage,
        )
        before = (await profiles.dial_plan()).backoff
        assert before is not None
        assert (before.wait_minimum_s, before.random_range_s, before.repeat_times) == (
            ctx.config.csms.retry_backoff_wait_minimum_s,
            ctx.config.csms.retry_backoff_random_range_s,
            ctx.config.csms.retry_backoff_repeat_times,
        )
        await ctx.device_model.set(RETRY_BACK_OFF_WAIT_MINIMUM, "42")
        await ctx.device_model.set(RETRY_BACK_OFF_RANDOM_RANGE, "7")
        await ctx.device_model.set(RETRY_BACK_OFF_REPEAT_TIMES, "2")
        after = (await profiles.dial_plan()).backoff
    assert after is not None
    assert (after.wait_minimum_s, after.random_range_s, after.repeat_times) == (42.0, 7.0, 2)


async def test_the_dial_plan_carries_the_web_socket_ping_interval_the_csms_set(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """OCPPCommCtrlr.WebSocketPingInterval (1.6 WebSocketPingInterval) is ReadWrite: the plan read after
    each lost connection carries the CSMS's value, which the next connection pings at."""
    async with open_session_context(tmp_path, OcppVersion.V201) as ctx:
        profiles = NetworkProfiles(
            endpoints=link_settings(ctx.config).endpoints,
            session=ctx,
            storage=ctx.blocks.transactions.services.storage,
        )
        before = (await profiles.dial_plan()).ping_interval_s
        await ctx.device_model.set(WEB_SOCKET_PING_INTERVAL, "90")
        after = (await profiles.dial_plan()).ping_interval_s
    assert (before, after) == (float(ctx.config.csms.ping_interval_s), 90.0)


async def test_b09_a_profile_set_now_is_dialled_at_the_next_reconnect_from_memory_and_after_a_restart(
    folder: Path,
) -> None:
    """SetNetworkProfile rewrites slot 1, the slot in use, to point at another CSMS: the write is durable
    first, then kept in memory, so the next reconnect (no restart) dials it without reading the
    network_profiles table again; a restarted station reads it from SQLite and dials it too."""
    with trio.fail_after(IO_TIMEOUT_S):
        async with two_csms() as (old, new, _):
            config = station_config(folder, (1, url(old.port)), attempts=1)
            async with open_station(config) as station:
                await accepted_at(old)
                statements: list[str] = []
                await station.storage.read(lambda conn: conn.set_trace_callback(statements.append))
                stored = await old.call(STATION, "SetNetworkProfile", network_profile(1, url(new.port)))
                assert stored == {"status": "Accepted"}
                old.drop(STATION)
                await accepted_at(new)  # the other profile: BootNotification again (B10.FR.10)
                await station.storage.read(lambda conn: conn.set_trace_callback(None))
                assert await get_variable(new, "ActiveNetworkProfile") == "1"
            assert any("INSERT OR REPLACE INTO network_profiles" in s for s in statements)
            assert not any("FROM network_profiles" in s for s in statements)
            async with open_station(config) as station:
                await accepted_at(new, boots=2)
                assert station.link.statistics().failed_dials == 0
            assert len(old.received(STATION, "BootNotification")) == 1

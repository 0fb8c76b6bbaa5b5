"""A01 (1.6 security whitepaper: AuthorizationKey): the CSMS rotates the station's Basic-auth password.

The whole station against a test CSMS on 127.0.0.1 that checks Basic auth (security profile 1): the
station answers Accepted, closes the connection and dials again with the new password, also after a
restart; the password is never read back (GetVariables, GetConfiguration) nor logged; a bad one is
Rejected; a CSMS that refuses the new one gets the previous one (docs/link.md).

Real time (SQLite in its worker thread) with zero back-off waits; each test takes about a second
(the station lets its answer leave before it closes: PASSWORD_RECONNECT_DELAY_S).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.device_model import BASIC_AUTH_PASSWORD
from evstation.runtime.network_profiles import LAST_GOOD_PASSWORD_KEY
from evstation.runtime.station import open_station
from evstation.runtime.testcsms import JsonObject, TestCsms, TimelineKind, serve_test_csms

STATION = "PWD-1"
OLD = "old-password-0123456789"
NEW = "new-Password_0123456789+|@.:="
IO_TIMEOUT_S = 20.0  # real seconds; each test takes about one


@pytest.fixture
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="evs-pw-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def station_config(data_dir: Path, port: int, version: str = "2.0.1") -> StationConfig:
    data: dict[str, Any] = {
        "station": {
            "id": STATION,
            "vendor": "Acme",
            "model": "Wallbox",
            "ocpp_version": version,
            "data_dir": str(data_dir),
        },
        "csms": {
            "endpoints": [
                {"url": f"ws://127.0.0.1:{port}/ocpp", "priority": 1, "security_profile": 1, "password": OLD}
            ],
            "retry_backoff_wait_minimum_s": 0,
            "retry_backoff_random_range_s": 0,
            "connection_attempts_per_endpoint": 1,
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


@asynccontextmanager
async def csms_checking(passwords: dict[str, str]) -> AsyncIterator[TestCsms]:
    """A test CSMS answering 401 unless the station sends passwords[STATION] (read at each dial)."""
    async with trio.open_nursery() as nursery:
        csms: TestCsms = await nursery.start(
            lambda task_status: serve_test_csms(task_status=task_status, passwords=passwords)
        )
        yield csms
        nursery.cancel_scope.cancel()


def password_item(value: str | None = None) -> JsonObject:
    item: JsonObject = {"component": {"name": "SecurityCtrlr"}, "variable": {"name": "BasicAuthPassword"}}
    if value is not None:
        item["attributeValue"] = value
    return item


async def set_password(csms: TestCsms, value: str) -> dict[str, Any]:
    answer: dict[str, Any] = await csms.call(
        STATION, "SetVariables", {"setVariableData": [password_item(value)]}
    )
    [result] = answer["setVariableResult"]
    assert isinstance(result, dict)
    return result


async def accepted(csms: TestCsms, boots: int = 1) -> None:
    await csms.wait_for(STATION, "BootNotification", boots)
    await csms.wait_for(STATION, "StatusNotification", len(csms.received(STATION, "StatusNotification")) + 1)


def refusals(csms: TestCsms) -> int:
    return sum(1 for entry in csms.timeline(STATION) if entry.kind is TimelineKind.REJECTED)


async def security_event(csms: TestCsms, event: str) -> None:
    """Wait for a SecurityEventNotification of `event` at the CSMS."""
    count = 1
    while True:
        call = await csms.wait_for(STATION, "SecurityEventNotification", count)
        if call["type"] == event:
            return
        count += 1


async def test_a01_new_password_is_accepted_then_used_on_the_next_connection_and_after_a_restart(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    passwords = {STATION: OLD}
    with trio.fail_after(IO_TIMEOUT_S):
        async with csms_checking(passwords) as csms:
            config = station_config(folder, csms.port)
            async with open_station(config) as station:
                await accepted(csms)
                # Write-only: GetVariables never shows it (B06 / A01).
                read: dict[str, Any] = await csms.call(
                    STATION, "GetVariables", {"getVariableData": [password_item()]}
                )
                [got] = read["getVariableResult"]
                assert got["attributeStatus"] == "Rejected" and "attributeValue" not in got
                # 16-40 passwordString characters, else Rejected and nothing changes.
                assert (await set_password(csms, "too-short"))["attributeStatus"] == "Rejected"
                assert (await set_password(csms, "has a space 0123456"))["attributeStatus"] == "Rejected"
                assert (await set_password(csms, "x" * 41))["attributeStatus"] == "Rejected"
                assert csms.connections_total(STATION) == 1
                passwords[STATION] = NEW  # the CSMS expects the new one from now on
                assert (await set_password(csms, NEW))["attributeStatus"] == "Accepted"
                await csms.wait_connected(STATION, 2)  # the test CSMS checked NEW
                # Served once the station has recorded the new connection.
                await csms.call(STATION, "GetVariables", {"getVariableData": [password_item()]})
                await security_event(csms, "ReconfigurationOfSecurityParameters")
                assert refusals(csms) == 0
                assert station.session.device_model.get(BASIC_AUTH_PASSWORD) == NEW
                assert await station.storage.get_setting(LAST_GOOD_PASSWORD_KEY) == NEW
                # The same connection stays: no BootNotification again (B01).
                assert len(csms.received(STATION, "BootNotification")) == 1
            async with open_station(config):
                await accepted(csms, boots=2)
                assert refusals(csms) == 0
                assert csms.connections_total(STATION) == 3
    assert NEW not in caplog.text


async def test_a01_a_refused_new_password_falls_back_to_the_one_that_worked(folder: Path) -> None:
    """The CSMS does not take the password it sent (its commit failed): after the refused dial the
    station dials with the previous password, and keeps that one; the refusal is a security event."""
    passwords = {STATION: OLD}
    with trio.fail_after(IO_TIMEOUT_S):
        async with (
            csms_checking(passwords) as csms,
            open_station(station_config(folder, csms.port)) as station,
        ):
            await accepted(csms)
            assert (await set_password(csms, NEW))["attributeStatus"] == "Accepted"
            await csms.wait_connected(STATION, 2)
            await csms.call(STATION, "GetVariables", {"getVariableData": [password_item()]})
            assert refusals(csms) == 1
            assert station.session.device_model.get(BASIC_AUTH_PASSWORD) == OLD
            await security_event(csms, "FailedToAuthenticateAtCsms")


async def test_v16_authorization_key_reconnects_with_the_new_password(
    folder: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """1.6 security whitepaper: ChangeConfiguration AuthorizationKey, then a new connection with it;
    GetConfiguration lists the key without its value; SupportedFeatureProfiles does not grow."""
    caplog.set_level(logging.DEBUG)
    passwords = {STATION: OLD}
    with trio.fail_after(IO_TIMEOUT_S):
        async with csms_checking(passwords) as csms, open_station(station_config(folder, csms.port, "1.6")):
            await accepted(csms)
            short = await csms.call(STATION, "ChangeConfiguration", {"key": "AuthorizationKey", "value": "x"})
            assert short == {"status": "Rejected"}
            passwords[STATION] = NEW
            changed = await csms.call(
                STATION, "ChangeConfiguration", {"key": "AuthorizationKey", "value": NEW}
            )
            assert changed == {"status": "Accepted"}
            await csms.wait_connected(STATION, 2)
            assert refusals(csms) == 0
            await security_event(csms, "ReconfigurationOfSecurityParameters")
            conf: dict[str, Any] = await csms.call(
                STATION, "GetConfiguration", {"key": ["AuthorizationKey", "SupportedFeatureProfiles"]}
            )
    key, profiles = conf["configurationKey"]
    assert key == {"key": "AuthorizationKey", "readonly": False}
    assert "Security" not in profiles["value"]
    assert NEW not in caplog.text

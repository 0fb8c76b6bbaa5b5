"""The device-model store: seeding from station.toml, the file-edit rule, persistence in a real SQLite
file, both versions' writes reading back through the other's projection, and change subscriptions.
"""

from __future__ import annotations

import logging
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evstation.protocol.device_model import (
    AttributeType,
    ComponentKey,
    GetStatus,
    SetStatus,
    VariableKey,
    check_get,
)
from evstation.protocol.device_model.v16 import ConfigurationStatus, V16Profile
from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.device_model import (
    ACTIVE_NETWORK_PROFILE,
    AUTH_ENABLED,
    BASIC_AUTH_PASSWORD,
    HEARTBEAT_INTERVAL,
    IDENTITY,
    MESSAGE_ATTEMPT_INTERVAL_TRANSACTION_EVENT,
    MESSAGE_ATTEMPTS_TRANSACTION_EVENT,
    MESSAGE_TIMEOUT,
    NETWORK_CONFIGURATION_PRIORITY,
    NETWORK_PROFILE_CONNECTION_ATTEMPTS,
    RETRY_BACK_OFF_RANDOM_RANGE,
    RETRY_BACK_OFF_REPEAT_TIMES,
    RETRY_BACK_OFF_WAIT_MINIMUM,
    SECURITY_PROFILE,
    TX_UPDATED_INTERVAL,
    VENDOR_NAME,
    WEB_SOCKET_PING_INTERVAL,
    DeviceModel,
    VariableChange,
    definitions_for,
    layout_from_config,
    open_device_model,
    seed_values,
    sleep_or_change,
)
from evstation.runtime.storage import Storage, open_storage

ACTUAL = AttributeType.ACTUAL
STATION_PHASE_ROTATION = VariableKey(ComponentKey("ChargingStation"), "PhaseRotation")
EVSE1_STATE = VariableKey(ComponentKey("EVSE", evse_id=1), "AvailabilityState")
CLOCK = VariableKey(ComponentKey("ClockCtrlr"), "DateTime")


def make_config(tmp_path: Path, *, vendor: str = "Acme", **csms: Any) -> StationConfig:
    data: dict[str, Any] = {
        "station": {"id": "CS-DM-1", "vendor": vendor, "model": "Wallbox", "ocpp_version": "2.0.1"},
        "csms": {
            "endpoints": [
                {"url": "ws://127.0.0.1:9/b", "priority": 5, "security_profile": 0},
                {"url": "ws://127.0.0.1:9/a", "priority": 2, "security_profile": 1, "password": "p" * 16},
            ],
            **csms,
        },
        "evse": [
            {
                "id": 1,
                "connector": [{"id": 1, "type": "sType2", "max_current_a": 32}],
                "controller": {"driver": "sim"},
                "meter": {"driver": "sim"},
            },
            {
                "id": 2,
                "connector": [
                    {"id": 1, "type": "cCCS2", "current_type": "DC", "max_current_a": 125},
                    {"id": 2, "type": "cType2", "phases": 1, "max_current_a": 16},
                ],
                "controller": {"driver": "sim"},
                "meter": {"driver": "sim"},
            },
        ],
        "electrical": {"line_voltage_v": 230, "max_current_a": 25},
    }
    return parse_config(data, base_dir=tmp_path)


async def open_model(storage: Storage, config: StationConfig) -> DeviceModel:
    return await open_device_model(
        storage, definitions_for(config), seed_values(config), v16_profiles=(V16Profile.CORE,)
    )


def stored_rows(path: Path) -> dict[tuple[str, str, str], tuple[str, str | None]]:
    """(component, variable, variable_instance) -> (value, seeded), read with a separate connection."""
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT component, variable, variable_instance, value, seeded FROM device_variables "
            "WHERE evse_id = 0 AND attribute = 'Actual'"
        ).fetchall()
    finally:
        conn.close()
    return {(c, v, i): (value, seeded) for c, v, i, value, seeded in rows}


# --- station.toml -> seed ---------------------------------------------------------------------------


def test_seed_values_map_the_csms_section_and_identity(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        heartbeat_interval_s=120,
        ping_interval_s=0,
        message_timeout_s=12.5,
        retry_backoff_wait_minimum_s=0.2,
        retry_backoff_random_range_s=7,
        retry_backoff_repeat_times=4,
        connection_attempts_per_endpoint=2,
        transaction_message_attempts=6,
        transaction_message_retry_interval_s=20,
        meter_value_sample_interval_s=0.5,
    )
    assert seed_values(config) == {
        HEARTBEAT_INTERVAL: "120",
        WEB_SOCKET_PING_INTERVAL: "0",
        MESSAGE_TIMEOUT: "13",  # whole seconds; fractions round up
        RETRY_BACK_OFF_WAIT_MINIMUM: "1",  # a positive wait never becomes 0
        RETRY_BACK_OFF_RANDOM_RANGE: "7",
        RETRY_BACK_OFF_REPEAT_TIMES: "4",
        NETWORK_PROFILE_CONNECTION_ATTEMPTS: "2",
        MESSAGE_ATTEMPTS_TRANSACTION_EVENT: "6",
        MESSAGE_ATTEMPT_INTERVAL_TRANSACTION_EVENT: "20",
        TX_UPDATED_INTERVAL: "1",
        IDENTITY: "CS-DM-1",
        VENDOR_NAME: "Acme",
        VariableKey(ComponentKey("ChargingStation"), "Model"): "Wallbox",
        # The endpoint tried first (lowest priority number) is the active profile.
        SECURITY_PROFILE: "1",
        ACTIVE_NETWORK_PROFILE: "2",
        NETWORK_CONFIGURATION_PRIORITY: "2,5",  # B10: the slots in the order they are dialled
        AUTH_ENABLED: "true",  # [authorization] enabled, default true
        # A01: the first (by priority) Basic-auth password seeds BasicAuthPassword.
        BASIC_AUTH_PASSWORD: "p" * 16,
    }


def test_layout_from_config(tmp_path: Path) -> None:
    layout = layout_from_config(make_config(tmp_path))
    evse1, evse2 = layout.evses
    assert [(c.connector_type, c.phases) for c in evse2.connectors] == [("cCCS2", 0), ("cType2", 1)]
    assert evse1.max_power_w == 25 * 3 * 230  # the station's 25 A caps the 32 A connector
    assert evse2.max_power_w == 16 * 1 * 230  # AC connectors only: no claim for DC
    assert layout.network_slots == (2, 5)


# --- seeding and the station.toml edit rule -------------------------------------------------------------


async def test_first_start_seeds_every_value_and_persists_it(tmp_path: Path) -> None:
    config = make_config(tmp_path, heartbeat_interval_s=240)
    path = tmp_path / "station.db"
    async with open_storage(path) as storage:
        model = await open_model(storage, config)
        assert model.get_int(HEARTBEAT_INTERVAL) == 240
        assert model.get(VENDOR_NAME) == "Acme"
        assert (
            model.get(VariableKey(ComponentKey("Connector", evse_id=2, connector_id=1), "ConnectorType"))
            == "cCCS2"
        )
        assert model.get_float(VariableKey(ComponentKey("EVSE", evse_id=1), "Power")) == 0.0
        assert model.get_bool(VariableKey(ComponentKey("SampledDataCtrlr"), "Available")) is True
        assert model.get(EVSE1_STATE) == "Available"
    rows = stored_rows(path)
    assert rows[("OCPPCommCtrlr", "HeartbeatInterval", "")] == ("240", "240")
    assert rows[("DeviceDataCtrlr", "ItemsPerMessage", "GetVariables")] == ("64", None)
    # Live state is not persistent: never written.
    assert ("ChargingStation", "AvailabilityState", "") not in rows


async def test_values_set_by_the_csms_survive_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    path = tmp_path / "station.db"
    async with open_storage(path) as storage:
        model = await open_model(storage, config)
        assert (await model.set(HEARTBEAT_INTERVAL, "60")).status is SetStatus.ACCEPTED
        assert (await model.set(WEB_SOCKET_PING_INTERVAL, "0")).status is SetStatus.ACCEPTED
        assert (await model.set(STATION_PHASE_ROTATION, "RST")).status is SetStatus.ACCEPTED
        await model.update(EVSE1_STATE, "Unavailable")
    async with open_storage(path) as storage:
        model = await open_model(storage, config)
        assert model.get(HEARTBEAT_INTERVAL) == "60"
        assert model.get(WEB_SOCKET_PING_INTERVAL) == "0"
        assert model.get(STATION_PHASE_ROTATION) == "RST"
        assert model.get(EVSE1_STATE) == "Available"  # live state starts from its default


async def test_station_toml_edit_overrides_the_stored_value_only_when_the_file_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "station.db"
    caplog.set_level(logging.WARNING, logger="evstation.runtime.device_model")
    async with open_storage(path) as storage:
        model = await open_model(storage, make_config(tmp_path, heartbeat_interval_s=300))
        await model.set(HEARTBEAT_INTERVAL, "60")  # the CSMS owns it from now on
    async with open_storage(path) as storage:
        # Same file: the CSMS's value stands.
        assert (await open_model(storage, make_config(tmp_path, heartbeat_interval_s=300))).get(
            HEARTBEAT_INTERVAL
        ) == "60"
    assert not caplog.records
    async with open_storage(path) as storage:
        # The operator edited station.toml: the file wins, once, and says so.
        model = await open_model(storage, make_config(tmp_path, heartbeat_interval_s=120, vendor="NewCo"))
        assert model.get(HEARTBEAT_INTERVAL) == "120"
        assert model.get(VENDOR_NAME) == "NewCo"  # ReadOnly facts follow the file at every start
        await model.set(HEARTBEAT_INTERVAL, "90")
    [record] = caplog.records
    assert "HeartbeatInterval" in record.getMessage() and "'300' to '120'" in record.getMessage()
    assert "overrides the stored value '60'" in record.getMessage()
    async with open_storage(path) as storage:
        # The file did not change again: the CSMS's newer value stands.
        assert (await open_model(storage, make_config(tmp_path, heartbeat_interval_s=120))).get(
            HEARTBEAT_INTERVAL
        ) == "90"
    assert len(caplog.records) == 1


async def test_a_stored_value_the_variable_cannot_take_any_more_falls_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "station.db"
    config = make_config(tmp_path)
    async with open_storage(path) as storage:
        await open_model(storage, config)
        await storage.write(
            lambda conn: conn.execute(
                "UPDATE device_variables SET value = 'often' WHERE variable = 'HeartbeatInterval'"
            )
        )
    async with open_storage(path) as storage:
        model = await open_model(storage, config)
        assert model.get(HEARTBEAT_INTERVAL) == "300"
    assert "not valid any more" in caplog.text


# --- writes ----------------------------------------------------------------------------------------


async def test_rejected_or_unknown_writes_change_nothing(tmp_path: Path) -> None:
    async with open_storage(tmp_path / "station.db") as storage:
        model = await open_model(storage, make_config(tmp_path))
        with model.watch() as changes:
            assert (await model.set(HEARTBEAT_INTERVAL, "0")).status is SetStatus.REJECTED
            assert (await model.set(VENDOR_NAME, "Evil")).status is SetStatus.REJECTED
            unknown = VariableKey(ComponentKey("NoSuchCtrlr"), "X")
            assert (await model.set(unknown, "1")).status is SetStatus.UNKNOWN_COMPONENT
            # A write of the value it already has is Accepted and changes nothing.
            assert (await model.set(HEARTBEAT_INTERVAL, "300")).status is SetStatus.ACCEPTED
            with pytest.raises(trio.WouldBlock):
                changes.receive_nowait()
        assert model.get(HEARTBEAT_INTERVAL) == "300" and model.get(VENDOR_NAME) == "Acme"
        with pytest.raises(ValueError, match="rejected"):
            await model.update(EVSE1_STATE, "Sleeping")
        # A measurement above the rating (or below 0) is reported as measured.
        power = VariableKey(ComponentKey("EVSE", evse_id=1), "Power")
        await model.update(power, "17300.5")
        assert model.get_float(power) == 17300.5
        with pytest.raises(ValueError, match="rejected"):
            await model.update(power, "lots")
        with pytest.raises(KeyError):
            await model.update(VariableKey(ComponentKey("EVSE", evse_id=9), "AvailabilityState"), "Available")
        with pytest.raises(LookupError, match="has no value"):
            model.get_int(CLOCK)


async def test_a_provided_value_is_computed_on_read(tmp_path: Path) -> None:
    async with open_storage(tmp_path / "station.db") as storage:
        model = await open_model(storage, make_config(tmp_path))
        model.provide(CLOCK, lambda: "2025-01-02T03:04:05.000Z")
        assert model.get(CLOCK) == "2025-01-02T03:04:05.000Z"
        assert check_get(model.definitions, CLOCK).status is GetStatus.ACCEPTED
        with pytest.raises(ValueError, match="non-persistent ReadOnly"):
            model.provide(HEARTBEAT_INTERVAL, lambda: "1")


# --- one store, two versions --------------------------------------------------------------------------


async def test_set_variables_reads_back_through_1_6_and_change_configuration_through_2_0_1(
    tmp_path: Path,
) -> None:
    async with open_storage(tmp_path / "station.db") as storage:
        model = await open_model(storage, make_config(tmp_path))
        # 2.0.1 SetVariables -> 1.6 GetConfiguration
        await model.set(HEARTBEAT_INTERVAL, "45")
        await model.set(MESSAGE_ATTEMPTS_TRANSACTION_EVENT, "7")
        entries, unknown = model.v16_get_configuration(
            ["HeartbeatInterval", "TransactionMessageAttempts", "Nope"]
        )
        assert [(e.key, e.value, e.readonly) for e in entries] == [
            ("HeartbeatInterval", "45", False),
            ("TransactionMessageAttempts", "7", False),
        ]
        assert unknown == ["Nope"]
        # 1.6 ChangeConfiguration -> 2.0.1 GetVariables
        change = await model.v16_change_configuration("MeterValueSampleInterval", "15")
        assert change.status is ConfigurationStatus.ACCEPTED
        assert model.get(TX_UPDATED_INTERVAL) == "15"
        assert (await model.v16_change_configuration("TransactionMessageRetryInterval", "25")).status is (
            ConfigurationStatus.ACCEPTED
        )
        assert model.get_int(MESSAGE_ATTEMPT_INTERVAL_TRANSACTION_EVENT) == 25
        assert (await model.v16_change_configuration("ConnectorPhaseRotation", "0.RST,3.RTS")).status is (
            ConfigurationStatus.ACCEPTED
        )
        assert model.get(STATION_PHASE_ROTATION) == "RST"
        assert (
            model.get(VariableKey(ComponentKey("Connector", evse_id=2, connector_id=2), "PhaseRotation"))
            == "RTS"
        )
        # The 1.6 rules hold on the same store.
        assert (
            await model.v16_change_configuration("NumberOfConnectors", "9")
        ).status is ConfigurationStatus.REJECTED
        assert (
            await model.v16_change_configuration("HeartbeatInterval", "x")
        ).status is ConfigurationStatus.REJECTED
        assert (await model.v16_change_configuration("Nope", "1")).status is ConfigurationStatus.NOT_SUPPORTED
        assert model.get(HEARTBEAT_INTERVAL) == "45"
        everything, none_unknown = model.v16_get_configuration()
        assert (
            none_unknown == [] and {e.key: e.value for e in everything}["SupportedFeatureProfiles"] == "Core"
        )


# --- subscriptions ---------------------------------------------------------------------------------


async def test_watchers_are_told_after_the_write_is_durable(tmp_path: Path) -> None:
    path = tmp_path / "station.db"
    async with open_storage(path) as storage:
        model = await open_model(storage, make_config(tmp_path))
        seen: list[tuple[VariableChange, str]] = []

        async def consumer(changes: trio.MemoryReceiveChannel[VariableChange]) -> None:
            async for change in changes:
                # What a consumer sees is already on disk (read with another connection).
                seen.append((change, stored_rows(path)[("OCPPCommCtrlr", change.key.name, "")][0]))
                if len(seen) == 2:
                    return

        with (
            model.watch(HEARTBEAT_INTERVAL, WEB_SOCKET_PING_INTERVAL) as changes,
            model.watch() as everything,
        ):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(consumer, changes)
                await model.set(TX_UPDATED_INTERVAL, "10")  # not watched by `changes`
                await model.set(HEARTBEAT_INTERVAL, "30")
                await model.v16_change_configuration("WebSocketPingInterval", "5")
            assert [(c.key, c.value, on_disk) for c, on_disk in seen] == [
                (HEARTBEAT_INTERVAL, "30", "30"),
                (WEB_SOCKET_PING_INTERVAL, "5", "5"),
            ]
            assert [everything.receive_nowait().key for _ in range(3)] == [
                TX_UPDATED_INTERVAL,
                HEARTBEAT_INTERVAL,
                WEB_SOCKET_PING_INTERVAL,
            ]
        # Outside the block nobody is registered any more.
        await model.set(HEARTBEAT_INTERVAL, "31")
        with pytest.raises(KeyError), model.watch(VariableKey(ComponentKey("NoSuchCtrlr"), "X")):
            pass


async def test_an_interval_change_in_the_middle_of_an_interval_applies_at_once(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """The pattern for the heartbeat, ping and meter timers: wait for the interval OR its change.

    pytest-trio's `mock_clock` has no autojump: the SQLite writes run in a worker thread, and virtual
    time must not move while they do; it moves only by `jump`.
    """
    ticks: list[float] = []

    async def heartbeat_like(model: DeviceModel, task_status: trio.TaskStatus[None]) -> None:
        with model.watch(HEARTBEAT_INTERVAL) as changes:
            task_status.started()
            last = trio.current_time()
            while True:
                change = await sleep_or_change(changes, last + model.get_int(HEARTBEAT_INTERVAL))
                if change is None:  # the interval elapsed; a change just recomputes the deadline
                    last = trio.current_time()
                    ticks.append(last)

    async with open_storage(tmp_path / "station.db") as storage:
        model = await open_model(storage, make_config(tmp_path, heartbeat_interval_s=100))
        async with trio.open_nursery() as nursery:
            await nursery.start(heartbeat_like, model)
            start = trio.current_time()
            mock_clock.jump(50)
            await trio.testing.wait_all_tasks_blocked()
            assert ticks == []
            await model.set(HEARTBEAT_INTERVAL, "20")  # 50 s into a 100 s interval
            await trio.testing.wait_all_tasks_blocked()
            assert [t - start for t in ticks] == [50]  # 20 s had already passed: at once
            mock_clock.jump(20)
            await trio.testing.wait_all_tasks_blocked()
            await model.set(HEARTBEAT_INTERVAL, "200")  # a longer one counts from the last beat
            mock_clock.jump(150)
            await trio.testing.wait_all_tasks_blocked()
            assert [t - start for t in ticks] == [50, 70]
            mock_clock.jump(50)
            await trio.testing.wait_all_tasks_blocked()
            assert [t - start for t in ticks] == [50, 70, 270]
            nursery.cancel_scope.cancel()


async def test_a_seed_the_definitions_cannot_take_is_a_bug(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with open_storage(tmp_path / "station.db") as storage:
        with pytest.raises(ValueError, match="unknown variable"):
            await open_device_model(
                storage, definitions_for(config), {VariableKey(ComponentKey("X"), "Y"): "1"}
            )
        with pytest.raises(ValueError, match="not a valid value"):
            await open_device_model(storage, definitions_for(config), {HEARTBEAT_INTERVAL: "0"})


_WRITABLE_KEYS = [HEARTBEAT_INTERVAL, WEB_SOCKET_PING_INTERVAL, TX_UPDATED_INTERVAL, STATION_PHASE_ROTATION]
_ANY_KEYS = st.sampled_from(
    [*_WRITABLE_KEYS, VENDOR_NAME, EVSE1_STATE, VariableKey(ComponentKey("Nope"), "X")]
)
_VALUES = st.sampled_from(["0", "1", "60", "-3", "RST", "true", "", " 5"]) | st.text(max_size=12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    writes=st.lists(st.tuples(_ANY_KEYS, _VALUES), max_size=6),
    v16=st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "HeartbeatInterval",
                    "WebSocketPingInterval",
                    "MeterValueSampleInterval",
                    "NumberOfConnectors",
                    "Nope",
                ]
            ),
            _VALUES,
        ),
        max_size=4,
    ),
)
def test_any_write_is_answered_reads_back_and_survives_a_restart(
    tmp_path: Path, writes: list[tuple[VariableKey, str]], v16: list[tuple[str, str]]
) -> None:
    """Every write gets a status; an applied one reads back normalised, a refused one changes nothing;
    after a restart every CSMS-owned value is what it was (the file did not change)."""

    async def scenario(folder: Path) -> None:
        config = make_config(folder)
        async with open_storage(folder / "station.db") as storage:
            model = await open_model(storage, config)
            for key, value in writes:
                before = model.get(key)
                decision = await model.set(key, value)
                assert decision.status in SetStatus
                assert model.get(key) == (decision.value if decision.applies else before)
            for name, value in v16:
                change = await model.v16_change_configuration(name, value)
                assert change.status in ConfigurationStatus
            remembered = {key: model.get(key) for key in _WRITABLE_KEYS}
        async with open_storage(folder / "station.db") as storage:
            model = await open_model(storage, config)
            assert {key: model.get(key) for key in _WRITABLE_KEYS} == remembered

    with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
        trio.run(scenario, Path(folder))


async def test_a_changed_seed_on_a_database_refusing_writes_applies_unstored(tmp_path: Path) -> None:
    """station.toml changed while the database refuses writes (full disk, read-only card): the station
    still starts with the new value (it is not stored, so the next start decides the same again)
    instead of the refused seeding write stopping it (docs/storage.md "When writes fail")."""
    path = tmp_path / "station.db"
    async with open_storage(path) as storage:
        await open_model(storage, make_config(tmp_path, heartbeat_interval_s=240))
        await storage.write(lambda conn: conn.execute("PRAGMA query_only = ON"))
        model = await open_model(storage, make_config(tmp_path, heartbeat_interval_s=120))
        assert model.get_int(HEARTBEAT_INTERVAL) == 120
    assert stored_rows(path)[("OCPPCommCtrlr", "HeartbeatInterval", "")] == ("240", "240")

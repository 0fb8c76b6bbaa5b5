"""A whole station on the real driver code: Yeti + Modbus RTU SDM630 on EVSE 1, RAPI + Modbus TCP EM340 on
EVSE 2, each on its emulator (pseudo-terminals, a real pymodbus server), against the test CSMS.

Meter values set on the emulators must travel through the real Modbus driver into the OCPP messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from evstation.drivers.api import FaultCode
from evstation.drivers.meters import load_model
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.modbus_emulator import EmulatorFault, ModbusMeterEmulator
from evstation.drivers.sim.rapi_emulator import RapiEmulator, open_rapi_emulator
from evstation.drivers.sim.yeti_emulator import YetiEmulator, open_yeti_emulator
from evstation.runtime.config import parse_config
from evstation.runtime.evse import ConnectorStatus, FaultChanged
from evstation.runtime.link import LinkState
from evstation.runtime.station import Station, open_station
from evstation.runtime.testcsms import TestCsms, serve_test_csms

STATION = "HIL-E2E-1"
TIMEOUT_S = 15.0  # the whole scenario; each version runs in a few seconds
METER_INTERVAL_S = 0.3  # MeterValueSampleInterval / TxUpdatedInterval for the test
POLL_S = 0.1  # Modbus poll interval
# Initial registers: exact in float32 kWh (SDM630) and in 0.1 kWh steps (EM340).
SDM_START_WH = 1_234_500.0
EM_START_WH = 20_000.0

Payload = dict[str, Any]


@dataclass(eq=False)
class Rig:
    version: str
    csms: TestCsms
    station: Station
    yeti: YetiEmulator
    rapi: RapiEmulator
    sdm: ModbusMeterEmulator
    em: ModbusMeterEmulator

    def mark(self, action: str) -> int:
        """How many `action` CALLs the CSMS has received so far: later waits look past these."""
        return len(self.csms.received(STATION, action))

    async def next_call(self, action: str, after: int, matches: Callable[[Payload], bool]) -> Payload:
        """The first `action` CALL after the first `after` ones that matches."""
        n = after
        while True:
            n += 1
            payload = await self.csms.wait_for(STATION, action, n)
            if matches(payload):
                return payload

    async def status(self, evse_id: int, after: int, status: str, **fields: object) -> Payload:
        """The next StatusNotification of the EVSE's (only) connector with this status (2.0.1 names)."""

        def matches(p: Payload) -> bool:
            if self.version == "1.6":
                wanted = {"connectorId": evse_id, "status": status, **fields}
            else:
                wanted = {"evseId": evse_id, "connectorId": 1, "connectorStatus": status, **fields}
            return all(p.get(k) == v for k, v in wanted.items())

        return await self.next_call("StatusNotification", after, matches)


def _config(
    tmp_path: Path, version: str, port: int, yeti: str, sdm: str, em: tuple[str, int], rapi: str
) -> Any:
    connector = {"id": 1, "type": "cType2", "phases": 3, "max_current_a": 16}
    meter_timing = {"poll_interval_s": POLL_S, "timeout_s": 0.3}
    data: Payload = {
        "station": {
            "id": STATION,
            "vendor": "evstation",
            "model": "hil-e2e",
            "ocpp_version": version,
            "data_dir": str(tmp_path / "data"),
        },
        "csms": {
            "endpoints": [{"url": f"ws://127.0.0.1:{port}/ocpp", "security_profile": 0}],
            "retry_backoff_wait_minimum_s": 0.2,
            "retry_backoff_random_range_s": 0,
            "ping_interval_s": 0,
            "meter_value_sample_interval_s": METER_INTERVAL_S,
        },
        "evse": [
            {
                "id": 1,
                "connector": [connector],
                "controller": {"driver": "yeti", "device": yeti, "keepalive_timeout_s": 3},
                "meter": {
                    "driver": "modbus",
                    "model": "sdm630",
                    "transport": "rtu",
                    "device": sdm,
                    **meter_timing,
                },
            },
            {
                "id": 2,
                "connector": [connector],
                "controller": {"driver": "rapi", "device": rapi, "command_timeout_s": 1},
                "meter": {
                    "driver": "modbus",
                    "model": "em340",
                    "transport": "tcp",
                    "host": em[0],
                    "port": em[1],
                    **meter_timing,
                },
            },
        ],
        "control": {"socket_path": None},
    }
    return parse_config(data, base_dir=tmp_path)


def _ev() -> SimEv:
    return SimEv(plugged=False, wants_energy=True, max_current_a=16.0, phases=3)


@asynccontextmanager
async def open_rig(version: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with AsyncExitStack() as stack:
        nursery = await stack.enter_async_context(trio.open_nursery())
        stack.callback(nursery.cancel_scope.cancel)
        csms: TestCsms = await nursery.start(serve_test_csms)
        yeti = await stack.enter_async_context(open_yeti_emulator(_ev()))
        rapi = await stack.enter_async_context(open_rapi_emulator(_ev()))
        sdm = ModbusMeterEmulator(load_model("sdm630"))
        em = ModbusMeterEmulator(load_model("em340"))
        sdm.set_energy(SDM_START_WH)
        em.set_energy(EM_START_WH)
        sdm_path = stack.enter_context(sdm.serve_rtu_pty())
        em_address = stack.enter_context(em.serve_tcp())
        config = _config(tmp_path, version, csms.port, yeti.port_path, sdm_path, em_address, rapi.port_path)
        station = await stack.enter_async_context(open_station(config))
        rig = Rig(version, csms, station, yeti, rapi, sdm, em)
        # Boot + the first StatusNotification of each connector: the station is online.
        await rig.status(1, 0, "Available")
        await rig.status(2, 0, "Available")
        yield rig


def _energy(values: list[Payload]) -> float:
    return float(next(v["value"] for v in values if v.get("measurand") == "Energy.Active.Import.Register"))


def _power(values: list[Payload]) -> float:
    return float(next(v["value"] for v in values if v.get("measurand") == "Power.Active.Import"))


def _sampled(payload: Payload) -> list[Payload]:
    values: list[Payload] = []
    for meter_value in payload.get("meterValue", []):
        values.extend(meter_value["sampledValue"])
    return values


async def _session(
    rig: Rig, evse_id: int, emulator: YetiEmulator | RapiEmulator, meter: ModbusMeterEmulator
) -> None:
    """Plug, authorize, charge with meter values from the emulator, unplug; check every OCPP message."""
    v16 = rig.version == "1.6"
    start_wh = rig.station.evses[evse_id].energy_wh()
    assert start_wh == (SDM_START_WH if evse_id == 1 else EM_START_WH)  # read at start-up
    token = f"HIL-TOKEN-{evse_id}"
    status_mark = rig.mark("StatusNotification")
    tx_action = "StartTransaction" if v16 else "TransactionEvent"
    tx_mark = rig.mark(tx_action)
    mv_mark = rig.mark("MeterValues" if v16 else "TransactionEvent")

    emulator.update_ev(plugged=True)
    await rig.status(evse_id, status_mark, "Preparing" if v16 else "Occupied")
    assert await rig.station.evses.present_token(token, evse_id=evse_id) == evse_id

    if v16:
        await rig.status(evse_id, status_mark, "Charging")
        start = await rig.next_call("StartTransaction", tx_mark, lambda p: p["connectorId"] == evse_id)
        assert start["idTag"] == token
        assert start["meterStart"] == round(start_wh)
    else:
        started = await rig.next_call(
            "TransactionEvent", tx_mark, lambda p: p["eventType"] == "Started" and p["evse"]["id"] == evse_id
        )
        assert _energy(_sampled(started)) == start_wh
        await rig.next_call(
            "TransactionEvent",
            tx_mark,
            lambda p: (
                p["transactionInfo"].get("chargingState") == "Charging"
                and p["transactionInfo"]["transactionId"] == started["transactionInfo"]["transactionId"]
            ),
        )
    assert rig.station.evses[evse_id].status() is ConnectorStatus.CHARGING

    # The meter's registers move during the session: the values must reach the CSMS, scaled to Wh / W.
    charged_wh = start_wh + 7_500.0  # 7.5 kWh: exact in both encodings
    meter.set_power(11_040.0)
    meter.set_energy(charged_wh)

    def carries_new_energy(p: Payload) -> bool:
        values = _sampled(p)
        has_energy = any(v.get("measurand") == "Energy.Active.Import.Register" for v in values)
        ours = p.get("connectorId") == evse_id if v16 else p.get("eventType") == "Updated"
        return ours and has_energy and _energy(values) == charged_wh

    update = await rig.next_call("MeterValues" if v16 else "TransactionEvent", mv_mark, carries_new_energy)
    assert _power(_sampled(update)) == 11_040.0

    stop_mark = rig.mark("StopTransaction" if v16 else "TransactionEvent")
    status_mark = rig.mark("StatusNotification")
    emulator.update_ev(plugged=False)
    if v16:
        stop = await rig.next_call("StopTransaction", stop_mark, lambda p: True)
        assert stop["meterStop"] == round(charged_wh)
        assert stop["reason"] == "EVDisconnected"
    else:
        ended = await rig.next_call("TransactionEvent", stop_mark, lambda p: p["eventType"] == "Ended")
        assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
        at_end = [v for v in _sampled(ended) if v.get("context") == "Transaction.End"]
        assert _energy(at_end) == charged_wh
    await rig.status(evse_id, status_mark, "Available")
    assert rig.station.evses[evse_id].status() is ConnectorStatus.AVAILABLE


async def _board_fault(rig: Rig, evse_id: int, emulator: YetiEmulator | RapiEmulator, fault: str) -> None:
    """A ground fault on the board: Faulted (1.6 GroundFailure / MREC CX002), the EVSE refuses tokens,
    then Available again once it clears."""
    mark = rig.mark("StatusNotification")
    emulator.inject(**{fault: True})
    if rig.version == "1.6":
        faulted = await rig.status(evse_id, mark, "Faulted")
        assert faulted["errorCode"] == "GroundFailure"
        assert faulted["vendorErrorCode"] == "CX002"
        assert faulted["vendorId"] == "https://chargex.inl.gov"
    else:
        await rig.status(evse_id, mark, "Faulted")
    assert await rig.station.evses.present_token("HIL-FAULTED", evse_id=evse_id) is None
    mark = rig.mark("StatusNotification")
    emulator.inject(**{fault: False})
    if rig.version == "1.6":
        await rig.status(evse_id, mark, "Available", errorCode="NoError")
    else:
        await rig.status(evse_id, mark, "Available")


async def _meter_silent(rig: Rig) -> None:
    """The RS-485 meter stops answering: a meter communication fault (1.6 PowerMeterFailure) that
    leaves the EVSE operative and the station online; it recovers when the meter answers again."""
    with rig.station.evses.subscribe() as events:
        mark = rig.mark("StatusNotification")
        rig.sdm.set_fault(EmulatorFault.SILENT)
        async for event in events:
            if isinstance(event, FaultChanged) and event.evse_id == 1:
                assert event == FaultChanged(1, FaultCode.METER_COMMUNICATION, True)
                break
        if rig.version == "1.6":
            await rig.status(1, mark, "Available", errorCode="PowerMeterFailure")
        # Non-blocking: the EVSE stays Available, the link stays up, EVSE 2 keeps its readings.
        assert rig.station.evses[1].status() is ConnectorStatus.AVAILABLE
        assert (await rig.station.status())["link"] == LinkState.CONNECTED.value
        mark = rig.mark("StatusNotification")
        rig.sdm.set_energy(SDM_START_WH + 9_000.0)
        rig.sdm.clear_fault()
        async for event in events:
            if isinstance(event, FaultChanged) and event.evse_id == 1:
                assert event == FaultChanged(1, FaultCode.METER_COMMUNICATION, False)
                break
        if rig.version == "1.6":
            await rig.status(1, mark, "Available", errorCode="NoError")
    # The recovering poll published its sample right behind MeterRecovered.
    await trio.testing.wait_all_tasks_blocked()
    assert rig.station.evses[1].energy_wh() == SDM_START_WH + 9_000.0


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_e2e_hil_station_on_real_drivers_and_emulators(version: str, tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT_S):
        async with open_rig(version, tmp_path) as rig:
            await _session(rig, 1, rig.yeti, rig.sdm)
            await _session(rig, 2, rig.rapi, rig.em)
            await _board_fault(rig, 1, rig.yeti, "rcd_tripped")
            await _board_fault(rig, 2, rig.rapi, "gfci_tripped")
            await _meter_silent(rig)

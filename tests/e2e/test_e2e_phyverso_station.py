"""A station with two phyVERSO EVSEs on ONE emulated board (one pseudo-terminal, one link), against the
test CSMS, OCPP 1.6 and 2.0.1: a charging session on connector 2 leaves connector 1 alone, and stopping
the station puts the charging port into its safe state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from evstation.drivers.boards.proto import phyverso_pb2 as pb
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.phyverso_emulator import PWM_X1, open_phyverso_emulator
from evstation.runtime.config import parse_config
from evstation.runtime.evse import ConnectorStatus
from evstation.runtime.station import open_station
from evstation.runtime.testcsms import TestCsms, serve_test_csms

STATION = "VERSO-E2E-1"
TIMEOUT_S = 20.0

Payload = dict[str, Any]


def _config(tmp_path: Path, port: int, device: str, version: str) -> Any:
    def evse(number: int, **controller: object) -> Payload:
        return {
            "id": number,
            "connector": [{"id": 1, "type": "cType2", "phases": 3, "max_current_a": 16}],
            "controller": {"driver": "phyverso", "device": device, "hw_revision": "B", **controller},
            "meter": {"driver": "sim"},
        }

    data: Payload = {
        "station": {
            "id": STATION,
            "vendor": "evstation",
            "model": "verso-e2e",
            "ocpp_version": version,
            "data_dir": str(tmp_path / "data"),
        },
        "csms": {
            "endpoints": [{"url": f"ws://127.0.0.1:{port}/ocpp", "security_profile": 0}],
            "retry_backoff_wait_minimum_s": 0.2,
            "retry_backoff_random_range_s": 0,
            "ping_interval_s": 0,
        },
        "evse": [evse(1, connector=1, lock="hella", has_socket=True), evse(2, connector=2)],
        "control": {"socket_path": None},
    }
    return parse_config(data, base_dir=tmp_path)


async def _next(csms: TestCsms, action: str, after: int, matches: Any) -> Payload:
    n = after
    while True:
        n += 1
        payload = await csms.wait_for(STATION, action, n)
        if matches(payload):
            return payload


def _available(version: str, evse_id: int) -> Any:
    if version == "1.6":
        return lambda p: p["connectorId"] == evse_id and p["status"] == "Available"
    return lambda p: p["evseId"] == evse_id and p["connectorStatus"] == "Available"


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
async def test_e2e_two_phyverso_evses_on_one_board_charge_on_connector_2(
    tmp_path: Path, version: str
) -> None:
    ev = SimEv(plugged=False, wants_energy=True, max_current_a=16.0, phases=3)
    with trio.fail_after(TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            async with open_phyverso_emulator(None, ev) as emulator:
                config = _config(tmp_path, csms.port, emulator.port_path, version)
                async with open_station(config) as station:
                    for evse_id in (1, 2):
                        await _next(csms, "StatusNotification", 0, _available(version, evse_id))
                    assert emulator.configured
                    assert emulator.config is not None
                    assert [c.type for c in emulator.config.chargeport_config] == [pb.AC, pb.AC]
                    start = "StartTransaction" if version == "1.6" else "TransactionEvent"
                    mark = len(csms.received(STATION, start))
                    statuses = len(csms.received(STATION, "StatusNotification"))
                    emulator.update_ev(2, plugged=True)
                    assert await station.evses.present_token("VERSO-TOKEN", evse_id=2) == 2
                    if version == "1.6":
                        started = await _next(csms, start, mark, lambda p: True)
                        assert started["connectorId"] == 2
                        await _next(
                            csms,
                            "StatusNotification",
                            statuses,
                            lambda p: p["connectorId"] == 2 and p["status"] == "Charging",
                        )
                    else:
                        started = await _next(csms, start, mark, lambda p: p["eventType"] == "Started")
                        assert started["evse"]["id"] == 2
                        await _next(
                            csms,
                            start,
                            mark,
                            lambda p: p["transactionInfo"].get("chargingState") == "Charging",
                        )
                    await emulator.wait_until(lambda: emulator.coil_closed(2))
                    assert station.evses[2].status() is ConnectorStatus.CHARGING
                    assert emulator.current_a(2) > 15.9
                    # Connector 1 heard nothing but its idle state: no PWM, coil open.
                    assert emulator.ports[1].duty == PWM_X1
                    assert not emulator.coil_closed(1)
                    assert station.evses[1].status() is ConnectorStatus.AVAILABLE
                # The station stopped with EV 2 charging: its port was stopped in the IEC 61851 order.
                assert not emulator.coil_closed(2)
                assert emulator.ports[2].duty == PWM_X1
                assert emulator.current_a(2) == 0.0
            nursery.cancel_scope.cancel()

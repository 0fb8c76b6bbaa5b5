"""1.6: a connector's Charging status never reaches the CSMS before the transaction it belongs to."""

from __future__ import annotations

from pathlib import Path

import trio

from evstation.runtime.demo import STATION_ID, demo_config
from evstation.runtime.evse import ConnectorStatus
from evstation.runtime.station import open_station
from evstation.runtime.testcsms import TestCsms, serve_test_csms


async def test_v16_charging_status_follows_the_answered_start_transaction(tmp_path: Path) -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            csms: TestCsms = await nursery.start(serve_test_csms)
            # A slow CSMS: the EVSE reaches Charging long before StartTransaction is answered.
            csms.delay_results(0.5, "StartTransaction")
            async with open_station(demo_config("1.6", csms.port, tmp_path)) as station:
                await station.session.uplink.wait_online()
                station.sims[1].controller.plug_in()
                await station.evses.present_token("CARD-1", "ISO14443", 1)
                await csms.wait_for(STATION_ID, "StartTransaction")
                assert station.evses[1].status() is ConnectorStatus.CHARGING
                while not any(
                    call.payload.get("status") == "Charging"
                    for call in csms.received(STATION_ID, "StatusNotification")
                ):
                    await csms.wait_for(
                        STATION_ID,
                        "StatusNotification",
                        len(csms.received(STATION_ID, "StatusNotification")) + 1,
                    )
            nursery.cancel_scope.cancel()
    order = [
        call.payload.get("status") if call.action == "StatusNotification" else call.action
        for call in csms.received(STATION_ID)
        if call.payload.get("connectorId") == 1 or call.action == "StartTransaction"
    ]
    assert order.index("StartTransaction") < order.index("Charging"), order

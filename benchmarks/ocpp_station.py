"""The `ocpp` package's side of the start-up comparison: a minimal 2.0.1 charge point on asyncio +
websockets that sends BootNotification and then idles.

Run as a subprocess by bench_station.py: `python -m benchmarks.ocpp_station PORT STATION_ID`. It has
no configuration, storage, hardware or control API: what it measures is the library's own floor.
"""

from __future__ import annotations

import asyncio
import sys

import websockets
from ocpp.v201 import ChargePoint, call


async def main(port: int, station_id: str) -> None:
    url = f"ws://127.0.0.1:{port}/ocpp/{station_id}"
    async with websockets.connect(url, subprotocols=["ocpp2.0.1"]) as ws:  # type: ignore[list-item]
        cp = ChargePoint(station_id, ws)
        reader = asyncio.create_task(cp.start())
        await cp.call(
            call.BootNotification(
                charging_station={"model": "ocpp-package", "vendor_name": "evstation"}, reason="PowerUp"
            )
        )
        await reader


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))

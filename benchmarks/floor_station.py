"""The start-up floor: trio + trio-websocket + pydantic imported, one websocket, one BootNotification.

Run as a subprocess by bench_station.py: `python -m benchmarks.floor_station PORT STATION_ID`. It does
what any station on our stack must do before the CSMS hears from it, and nothing else, then idles
(for its resident memory).
"""

from __future__ import annotations

import sys

import pydantic  # noqa: F401 - part of the floor: every station on this stack loads it
import trio
import trio_websocket

_BOOT = (
    '[2,"1","BootNotification",'
    '{"reason":"PowerUp","chargingStation":{"model":"floor","vendorName":"evstation"}}]'
)


async def main(port: int, station_id: str) -> None:
    url = f"ws://127.0.0.1:{port}/ocpp/{station_id}"
    async with trio_websocket.open_websocket_url(url, subprotocols=["ocpp2.0.1"]) as ws:
        await ws.send_message(_BOOT)
        await ws.get_message()
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), sys.argv[2])

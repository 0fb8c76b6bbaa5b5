"""A second start-up floor: the first one plus the message models of our design.

As benchmarks/floor_station.py, but the BootNotification is built from our generated pydantic model
and checked on the way out, and the CSMS's answer is validated by its model, as every station on this
design must. The difference from the first floor is what choosing pydantic message models costs
before the CSMS hears from a station. Run by bench_station.py: `python -m
benchmarks.floor_pydantic_station PORT STATION_ID`.
"""

from __future__ import annotations

import json
import sys

import trio
import trio_websocket

from evstation.protocol.messages import parse_response, request_model, to_payload
from evstation.protocol.versions import OcppVersion


async def main(port: int, station_id: str) -> None:
    version = OcppVersion.V201
    boot = request_model(version, "BootNotification").model_validate(
        {"reason": "PowerUp", "chargingStation": {"model": "floor", "vendorName": "evstation"}}
    )
    frame = json.dumps([2, "1", "BootNotification", to_payload(boot)], separators=(",", ":"))
    url = f"ws://127.0.0.1:{port}/ocpp/{station_id}"
    async with trio_websocket.open_websocket_url(url, subprotocols=["ocpp2.0.1"]) as ws:
        await ws.send_message(frame)
        answer = json.loads(await ws.get_message())
        parse_response(version, "BootNotification", answer[2])
        # For the smoke test: the answer passed its model (the bench discards this).
        print("answer validated", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), sys.argv[2])

"""A bare CSMS for round-trip benchmarks: answers Heartbeat (and BootNotification) without validating.

Run as a subprocess: `python -m benchmarks.bare_csms`; prints the port on its first line. It accepts
both OCPP subprotocols and answers from prebuilt text, so it measures the station side only.
"""

from __future__ import annotations

import json
import sys

import trio
from trio_websocket import ConnectionClosed, WebSocketRequest, serve_websocket

_NOW = "2026-01-01T00:00:00Z"


async def _handle(request: WebSocketRequest) -> None:
    offered = request.proposed_subprotocols
    ws = await request.accept(subprotocol=offered[0] if offered else None)
    try:
        while True:
            frame = json.loads(await ws.get_message())
            if frame[0] != 2:
                continue
            if frame[2] == "BootNotification":
                payload = {"currentTime": _NOW, "interval": 3600, "status": "Accepted"}
            elif frame[2] == "Heartbeat":
                payload = {"currentTime": _NOW}
            else:
                payload = {}
            await ws.send_message(json.dumps([3, frame[1], payload], separators=(",", ":")))
    except ConnectionClosed:
        pass


async def main() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, _handle, "127.0.0.1", 0, None)
        print(server.port, flush=True)


if __name__ == "__main__":
    try:
        trio.run(main)
    except KeyboardInterrupt:
        sys.exit(0)

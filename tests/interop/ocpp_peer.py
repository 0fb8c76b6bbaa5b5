# The `ocpp` package ships no type information: its base classes and decorators are Any here.
# mypy: disable-error-code="misc,untyped-decorator"
"""A CSMS built on the independent `ocpp` package (asyncio + websockets), for interop tests.

Run as a subprocess: `python ocpp_peer.py VERSION`. It prints one JSON object per line on stdout:
`{"event": "listening", "port": N}` first, then `{"event": "recv"|"sent", "frame": [...]}` for every
frame. The `ocpp` package validates every payload against the official schemas in both directions;
a payload that fails validation is answered with a CALLERROR, which the test sees as a "sent" frame
of message type 4.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v16.enums import RegistrationStatus as Registration16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from ocpp.v201.enums import RegistrationStatusEnumType as Registration201

HEARTBEAT_INTERVAL_S = 1


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Recording:
    """Mixed into the ocpp ChargePoint classes to log every frame in both directions."""

    async def route_message(self, raw_msg: str) -> None:
        emit("recv", frame=json.loads(raw_msg))
        await super().route_message(raw_msg)

    async def _send(self, message: str) -> None:
        emit("sent", frame=json.loads(message))
        await super()._send(message)


class Peer16(Recording, ChargePoint16):
    @on(Action16.boot_notification)
    def on_boot(self, **_: Any) -> result16.BootNotification:
        return result16.BootNotification(
            current_time=now(), interval=HEARTBEAT_INTERVAL_S, status=Registration16.accepted
        )

    @on(Action16.heartbeat)
    def on_heartbeat(self) -> result16.Heartbeat:
        return result16.Heartbeat(current_time=now())

    @on(Action16.status_notification)
    def on_status(self, **_: Any) -> result16.StatusNotification:
        return result16.StatusNotification()


class Peer201(Recording, ChargePoint201):
    @on(Action201.boot_notification)
    def on_boot(self, **_: Any) -> result201.BootNotification:
        return result201.BootNotification(
            current_time=now(), interval=HEARTBEAT_INTERVAL_S, status=Registration201.accepted
        )

    @on(Action201.heartbeat)
    def on_heartbeat(self) -> result201.Heartbeat:
        return result201.Heartbeat(current_time=now())

    @on(Action201.status_notification)
    def on_status(self, **_: Any) -> result201.StatusNotification:
        return result201.StatusNotification()


async def main(version: str) -> None:
    subprotocol = "ocpp" + version
    peer_class = Peer16 if version == "1.6" else Peer201

    async def handler(connection: Any) -> None:
        if connection.subprotocol != subprotocol:
            await connection.close()
            return
        station_id = connection.request.path.rstrip("/").rsplit("/", 1)[-1]
        emit("connected", station=station_id)
        try:
            await peer_class(station_id, connection).start()
        except websockets.ConnectionClosed:
            emit("closed", station=station_id)

    async with websockets.serve(
        handler, "127.0.0.1", 0, subprotocols=[websockets.Subprotocol(subprotocol)]
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        emit("listening", port=port)
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

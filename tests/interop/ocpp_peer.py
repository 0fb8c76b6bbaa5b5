# The `ocpp` package ships no type information: its base classes and decorators are Any here.
# mypy: disable-error-code="misc,untyped-decorator"
"""A CSMS built on the independent `ocpp` package (asyncio + websockets), for interop tests.

Run as a subprocess: `python ocpp_peer.py VERSION`. It prints one JSON object per line on stdout:
`{"event": "listening", "port": N}` first, then `{"event": "recv"|"sent", "frame": [...]}` for every
frame. The `ocpp` package validates every payload against the official schemas in both directions;
a payload that fails validation is answered with a CALLERROR, which the test sees as a "sent" frame
of message type 4.

Once the station reports its first status (so it has been Accepted), the peer sends its own CALLs
(remote start on connector/EVSE 2, remote stop of an unknown transaction; with the optional second
argument `local-list`: SendLocalList Full version 1 with LIST-1 Accepted and LIST-2 Blocked, then
GetLocalListVersion) with validation of the station's answers on, and reports each as
`{"event": "peer_call", "action", "ok", "result"|"error"}`.

`python ocpp_peer.py VERSION driven` sends none of its own: it reads one JSON object per line on
stdin, `{"id": ..., "action": "ChangeAvailability", "args": {...}}` (args are the `ocpp` package's
snake_case call fields), sends that CALL to the connected station with validation on, and reports
the outcome as a `peer_call` event carrying the same id.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16.enums import Action as Action16
from ocpp.v16.enums import RegistrationStatus as Registration16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from ocpp.v201.enums import RegistrationStatusEnumType as Registration201

HEARTBEAT_INTERVAL_S = 1
ACCEPTED = {"status": "Accepted"}
# The one vendorId this CSMS knows in a station's DataTransfer: it answers Accepted with the data
# echoed; any other vendorId is answered UnknownVendorId (1.6 4.3; 2.0.1 P01).
PEER_VENDOR_ID = "org.interop.peer"


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class Recording:
    """Mixed into the ocpp ChargePoint classes to log every frame in both directions, and to send the
    peer's own CALLs once, after the station's first StatusNotification (or, driven, the CALLs the
    test writes to stdin)."""

    _own_calls: asyncio.Task[None] | None = None
    scenario = "remote"
    driven = False  # the test sends the CALLs (stdin); no own calls

    def own_calls(self) -> list[Any]:
        raise NotImplementedError

    def start_own_calls(self) -> None:
        # A task, not inline: the ocpp package reads the answers in the loop that runs this hook.
        if self._own_calls is None and not self.driven:
            self._own_calls = asyncio.get_running_loop().create_task(self._send_own_calls())

    async def _send_own_calls(self) -> None:
        for payload in self.own_calls():
            await self.send_call(payload)

    async def send_call(self, payload: Any, call_id: object = None) -> None:
        action = type(payload).__name__
        try:
            # suppress=False: a CALLERROR raises; the package validates the answer against the schema.
            result = await self.call(payload, suppress=False)  # type: ignore[attr-defined]
        except Exception as exc:  # every failure, validation ones included, is reported to the test
            emit("peer_call", id=call_id, action=action, ok=False, error=f"{type(exc).__name__}: {exc}")
        else:
            emit("peer_call", id=call_id, action=action, ok=True, result=vars(result))

    async def route_message(self, raw_msg: str) -> None:
        emit("recv", frame=json.loads(raw_msg))
        await super().route_message(raw_msg)

    async def _send(self, message: str) -> None:
        emit("sent", frame=json.loads(message))
        await super()._send(message)


class Peer16(Recording, ChargePoint16):
    _transaction_ids = itertools.count(1001)

    def own_calls(self) -> list[Any]:
        if self.scenario == "local-list":
            entries = [
                {"idTag": "LIST-1", "idTagInfo": {"status": "Accepted"}},
                {"idTag": "LIST-2", "idTagInfo": {"status": "Blocked"}},
            ]
            return [
                call16.SendLocalList(list_version=1, update_type="Full", local_authorization_list=entries),
                call16.GetLocalListVersion(),
            ]
        return [
            call16.RemoteStartTransaction(id_tag="REMOTE-1", connector_id=2),
            call16.RemoteStopTransaction(transaction_id=999999),
        ]

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

    @after(Action16.status_notification)
    def after_status(self, **_: Any) -> None:
        self.start_own_calls()

    @on(Action16.authorize)
    def on_authorize(self, **_: Any) -> result16.Authorize:
        return result16.Authorize(id_tag_info=ACCEPTED)

    @on(Action16.start_transaction)
    def on_start(self, **_: Any) -> result16.StartTransaction:
        return result16.StartTransaction(transaction_id=next(self._transaction_ids), id_tag_info=ACCEPTED)

    @on(Action16.meter_values)
    def on_meter_values(self, **_: Any) -> result16.MeterValues:
        return result16.MeterValues()

    @on(Action16.stop_transaction)
    def on_stop(self, **_: Any) -> result16.StopTransaction:
        return result16.StopTransaction(id_tag_info=ACCEPTED)

    @on(Action16.security_event_notification)
    def on_security_event(self, **_: Any) -> result16.SecurityEventNotification:
        return result16.SecurityEventNotification()

    @on(Action16.data_transfer)
    def on_data_transfer(self, vendor_id: str, data: str | None = None, **_: Any) -> result16.DataTransfer:
        if vendor_id != PEER_VENDOR_ID:
            return result16.DataTransfer(status="UnknownVendorId")
        return result16.DataTransfer(status="Accepted", data=data)


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

    @after(Action201.status_notification)
    def after_status(self, **_: Any) -> None:
        self.start_own_calls()

    @on(Action201.authorize)
    def on_authorize(self, **_: Any) -> result201.Authorize:
        return result201.Authorize(id_token_info=ACCEPTED)

    @on(Action201.transaction_event)
    def on_transaction_event(self, **_: Any) -> result201.TransactionEvent:
        return result201.TransactionEvent()

    @on(Action201.meter_values)
    def on_meter_values(self, **_: Any) -> result201.MeterValues:
        return result201.MeterValues()

    @on(Action201.security_event_notification)
    def on_security_event(self, **_: Any) -> result201.SecurityEventNotification:
        return result201.SecurityEventNotification()

    @on(Action201.notify_event)
    def on_notify_event(self, **_: Any) -> result201.NotifyEvent:
        return result201.NotifyEvent()

    @on(Action201.data_transfer)
    def on_data_transfer(self, vendor_id: str, data: Any = None, **_: Any) -> result201.DataTransfer:
        if vendor_id != PEER_VENDOR_ID:
            return result201.DataTransfer(status="UnknownVendorId")
        return result201.DataTransfer(status="Accepted", data=data)

    @on(Action201.notify_report)
    def on_notify_report(self, **_: Any) -> result201.NotifyReport:
        return result201.NotifyReport()

    @on(Action201.reservation_status_update)
    def on_reservation_status_update(self, **_: Any) -> result201.ReservationStatusUpdate:
        return result201.ReservationStatusUpdate()

    def own_calls(self) -> list[Any]:
        if self.scenario == "local-list":
            entries = [
                {"idToken": {"idToken": "LIST-1", "type": "ISO14443"}, "idTokenInfo": {"status": "Accepted"}},
                {"idToken": {"idToken": "LIST-2", "type": "ISO14443"}, "idTokenInfo": {"status": "Blocked"}},
            ]
            return [
                call201.SendLocalList(version_number=1, update_type="Full", local_authorization_list=entries),
                call201.GetLocalListVersion(),
            ]
        return [
            call201.RequestStartTransaction(
                id_token={"idToken": "REMOTE-1", "type": "Central"}, remote_start_id=7, evse_id=2
            ),
            call201.RequestStopTransaction(transaction_id="no-such-transaction"),
        ]


async def drive(version: str, current: dict[str, Recording], connected: asyncio.Event) -> None:
    """Send the CALLs the test writes on stdin to the connected station, one at a time."""
    calls = call16 if version == "1.6" else call201
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        await connected.wait()
        payload = getattr(calls, command["action"])(**command.get("args", {}))
        await current["peer"].send_call(payload, command.get("id"))


async def serve(
    version: str,
    make_peer: Callable[[str, Any], Peer16 | Peer201],
    while_serving: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Listen on a free port (announced as the "listening" event) and run `make_peer(station id,
    connection)` for every station that connects with `version`'s subprotocol; for ever."""
    subprotocol = "ocpp" + version

    async def handler(connection: Any) -> None:
        if connection.subprotocol != subprotocol:
            await connection.close()
            return
        station_id = connection.request.path.rstrip("/").rsplit("/", 1)[-1]
        emit("connected", station=station_id)
        peer = make_peer(station_id, connection)
        try:
            await peer.start()
        except websockets.ConnectionClosed:
            emit("closed", station=station_id)

    async with websockets.serve(
        handler, "127.0.0.1", 0, subprotocols=[websockets.Subprotocol(subprotocol)]
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        emit("listening", port=port)
        if while_serving is not None:
            await while_serving()
        await asyncio.Future()


async def main(version: str, scenario: str) -> None:
    peer_class = Peer16 if version == "1.6" else Peer201
    current: dict[str, Recording] = {}
    connected = asyncio.Event()

    def make_peer(station_id: str, connection: Any) -> Peer16 | Peer201:
        peer = peer_class(station_id, connection)
        peer.driven = scenario == "driven"
        peer.scenario = scenario
        current["peer"] = peer
        connected.set()
        return peer

    async def driven() -> None:
        await drive(version, current, connected)

    await serve(version, make_peer, driven if scenario == "driven" else None)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "remote"))

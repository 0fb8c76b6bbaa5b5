# The `ocpp` package ships no type information: its base classes and decorators are Any here.
# mypy: disable-error-code="misc,untyped-decorator"
"""The `ocpp`-package CSMS of ocpp_peer.py with provisioning calls of its own, for interop tests.

Run as `python ocpp_provisioning_peer.py VERSION SCENARIO`; the output is ocpp_peer.py's, plus a
`t` (the peer's monotonic seconds) on every "recv" event, so a test can time the heartbeats.
Scenarios (the peer's CALLs once the station reported its first status):
- 2.0.1 `report`: GetBaseReport FullInventory; every NotifyReport is validated by the package and
  answered.
- 2.0.1 `report-stalled`: the same on the first connection only, but the first NotifyReport with
  seqNo 1 is answered only after STALL_S (a test cuts the network meanwhile); every later one at once.
- 2.0.1 `variables`: SetVariables on the station, an EVSE and a connector, then GetVariables of the same.
- 1.6 `configuration`: GetConfiguration without keys, with keys (one unknown), then
  ChangeConfiguration HeartbeatInterval = 2.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call as call16
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201.enums import Action as Action201
from ocpp_peer import Peer16, Peer201, Recording, serve

SCENARIO = sys.argv[2] if len(sys.argv) > 2 else ""


def _variable(component: dict[str, Any], name: str, value: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"component": component, "variable": {"name": name}}
    if value is not None:
        data["attribute_value"] = value
    return data


STATION = {"name": "OCPPCommCtrlr"}
EVSE_2 = {"name": "EVSE", "evse": {"id": 2}}
CONNECTOR_2_1 = {"name": "Connector", "evse": {"id": 2, "connector_id": 1}}
WRITES = [
    _variable(STATION, "WebSocketPingInterval", "45"),
    _variable({"name": "ChargingStation"}, "PhaseRotation", "RST"),
    _variable(CONNECTOR_2_1, "PhaseRotation", "TSR"),
    _variable(EVSE_2, "AvailabilityState", "Faulted"),  # ReadOnly: Rejected
]


class Timed:
    async def route_message(self, raw_msg: str) -> None:
        print(json.dumps({"event": "recv", "frame": json.loads(raw_msg), "t": time.monotonic()}), flush=True)
        # Past ocpp_peer's Recording (its "recv" event is the one above, without the time).
        await super(Recording, self).route_message(raw_msg)


STALL_S = 30.0


class Provisioning201(Timed, Peer201):
    # One per peer process, shared by the peers of its connections: which seqNo were stalled already,
    # and whether a connection asked for the report already.
    stalled: set[int]
    asked: list[bool]

    def own_calls(self) -> list[Any]:
        if SCENARIO == "report-stalled":
            if self.asked:
                return []
            self.asked.append(True)
        if SCENARIO.startswith("report"):
            return [call201.GetBaseReport(request_id=42, report_base="FullInventory")]
        reads = [{k: v for k, v in w.items() if k != "attribute_value"} for w in WRITES]
        return [call201.SetVariables(set_variable_data=WRITES), call201.GetVariables(get_variable_data=reads)]

    @on(Action201.notify_report)
    async def on_notify_report(self, seq_no: int, **_: Any) -> result201.NotifyReport:
        if SCENARIO == "report-stalled" and seq_no == 1 and seq_no not in self.stalled:
            self.stalled.add(seq_no)
            await asyncio.sleep(STALL_S)
        return result201.NotifyReport()


class Provisioning16(Timed, Peer16):
    def own_calls(self) -> list[Any]:
        return [
            call16.GetConfiguration(),
            call16.GetConfiguration(key=["HeartbeatInterval", "NumberOfConnectors", "NoSuchKey"]),
            call16.ChangeConfiguration(key="HeartbeatInterval", value="2"),
        ]


def _peer201_factory() -> Any:
    stalled: set[int] = set()
    asked: list[bool] = []

    def make_peer(station_id: str, connection: Any) -> Provisioning201:
        peer = Provisioning201(station_id, connection)
        peer.stalled, peer.asked = stalled, asked
        return peer

    return make_peer


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], Provisioning16 if sys.argv[1] == "1.6" else _peer201_factory()))

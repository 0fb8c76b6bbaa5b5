"""Property test over random sessions (plug, unplug, token, remote start/stop, network down/up, meter
silent, board fault): every started transaction is ended exactly once, 2.0.1 seqNos are contiguous,
the energy register reported never goes backwards, and no message is lost (outbox drained, nothing
dead-lettered). Real EVSE on a sim board and meter, real SQLite, scripted CSMS, virtual time."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_session_harness import EPOCH, CsmsPeer, MemoryConnection, serve_until_link_down, station_config

from evstation.drivers.api import FaultCode
from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.meter import SimMeter
from evstation.protocol.versions import OcppVersion
from evstation.runtime.clock import WallClock
from evstation.runtime.device_model import TX_UPDATED_INTERVAL, load_device_model
from evstation.runtime.evse import Evses, StopReason
from evstation.runtime.outbox import Outbox
from evstation.runtime.session import new_session
from evstation.runtime.storage import open_storage

V16, V201 = OcppVersion.V16, OcppVersion.V201
ACTIONS = (
    "plug",
    "unplug",
    "token",
    "remote_start",
    "remote_stop",
    "network_down",
    "network_up",
    "meter_silent",
    "meter_back",
    "fault",
    "fault_cleared",
    "wait",
)
STEP_S = 4.0


def _own(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The event's meter values taken at its time (an Ended event also carries the earlier ones)."""
    meters: list[dict[str, Any]] = event.get("meterValue", [])
    if event["eventType"] != "Ended":
        return meters
    return [
        {**m, "sampledValue": [v for v in m["sampledValue"] if v.get("context") == "Transaction.End"]}
        for m in meters
    ]


def _energies(meter_values: list[dict[str, Any]]) -> list[float]:
    return [
        float(v["value"])
        for m in meter_values
        for v in m["sampledValue"]
        if v.get("measurand") == "Energy.Active.Import.Register" and v.get("format") != "SignedData"
    ]


async def _scenario(path: Path, version: OcppVersion, actions: list[str]) -> None:
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=1.0)
    board = SimChargeController(SimEv(), flow=meter)
    csms = CsmsPeer(version)
    if version is V16:
        ids = itertools.count(100)
        csms.then(
            "StartTransaction",
            *({"transactionId": next(ids), "idTagInfo": {"status": "Accepted"}} for _ in range(60)),
        )
    async with open_storage(path / "station.db") as storage, trio.open_nursery() as nursery:
        evses = Evses()
        await nursery.start(evses.add(1, board, meter).run)
        await nursery.start(evses.add(2, SimChargeController(), None).run)  # the config has two EVSEs
        config = station_config(path, version)
        ctx = new_session(
            config,
            storage=storage,
            outbox=Outbox(storage),
            evses=evses,
            clock=WallClock.anchored(EPOCH),
            device_model=await load_device_model(storage, config),
        )
        await ctx.device_model.set(TX_UPDATED_INTERVAL, "5")
        await nursery.start(ctx.blocks.availability.run)
        await nursery.start(ctx.blocks.transactions.run)
        generation = itertools.count(1)
        link: trio.CancelScope | None = None

        async def connect() -> trio.CancelScope:
            conn = MemoryConnection(version, next(generation))
            scope = trio.CancelScope()

            async def serve() -> None:
                with scope:
                    async with trio.open_nursery() as both:
                        both.start_soon(csms.serve, conn)
                        both.start_soon(serve_until_link_down, conn, ctx)
                conn.close()

            nursery.start_soon(serve)
            return scope

        link = await connect()
        evse = evses[1]
        for action in actions:
            if action == "plug":
                board.plug_in()
            elif action == "unplug":
                board.unplug()
            elif action == "token":
                await evses.present_token("TOKEN-1", "ISO14443", 1)
            elif action == "remote_start":
                await evse.authorize_remote("REMOTE-1", "Central")
            elif action == "remote_stop":
                await evse.stop_session(StopReason.REMOTE)
            elif action == "network_down" and link is not None:
                link.cancel()
                link = None
            elif action == "network_up" and link is None:
                link = await connect()
            elif action == "meter_silent":
                meter.set_failed("silent")
            elif action == "meter_back":
                meter.set_failed(None)
            elif action == "fault":
                board.inject_fault(FaultCode.GROUND_FAILURE)
            elif action == "fault_cleared":
                board.clear_fault(FaultCode.GROUND_FAILURE)
            await trio.sleep(STEP_S)
        # Wind down: the EV leaves, everything recovers, the queue drains.
        board.unplug()
        await evse.stop_session(StopReason.LOCAL)
        meter.set_failed(None)
        board.clear_fault(FaultCode.GROUND_FAILURE)
        if link is None:
            link = await connect()
        await ctx.blocks.transactions.ids.wait_none(frozenset({1}))
        await ctx.outbox.wait_empty()
        dead = await ctx.outbox.dead_letters()
        nursery.cancel_scope.cancel()
    assert dead == []
    _check(csms, version)


def _check(csms: CsmsPeer, version: OcppVersion) -> None:
    if version is V201:
        by_tx: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for seen in csms.of("TransactionEvent"):
            payload: dict[str, Any] = seen.call.payload
            events = by_tx[payload["transactionInfo"]["transactionId"]]
            seq_no = payload["seqNo"]
            assert seq_no not in events or events[seq_no] == payload  # a re-send is the same message
            events[seq_no] = payload
        for events in by_tx.values():
            seq = sorted(events)
            assert seq == list(range(len(seq)))
            kinds = [events[s]["eventType"] for s in seq]
            assert kinds[0] == "Started" and kinds[-1] == "Ended" and kinds.count("Ended") == 1
            # The Ended event repeats the Transaction.Begin (and periodic) end values: its own is End.
            energies = [e for s in seq for e in _energies(_own(events[s]))]
            assert energies == sorted(energies)
        return
    starts = {s.call.payload["timestamp"] for s in csms.of("StartTransaction")}
    stops: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for seen in csms.of("StopTransaction"):
        stop: dict[str, Any] = seen.call.payload
        stops[stop["transactionId"]].append(stop)
    assert len(stops) == len(starts)
    values: dict[int, list[float]] = defaultdict(list)
    for seen in csms.of("MeterValues"):
        sample: dict[str, Any] = seen.call.payload
        tx_id = sample.get("transactionId")
        if tx_id is not None:
            assert tx_id >= 100  # never a local placeholder on the wire
            values[tx_id].extend(_energies(sample["meterValue"]))
    for tx_id, payloads in stops.items():
        assert all(p == payloads[0] for p in payloads)
        energies = [*values[tx_id], float(payloads[0]["meterStop"])]
        assert all(b >= a - 0.5 for a, b in itertools.pairwise(energies))  # 1.6 values are whole Wh


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([V16, V201]), st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=10))
def test_every_started_transaction_ends_once_contiguous_monotonic_nothing_lost(
    tmp_path_factory: Any, version: OcppVersion, actions: list[str]
) -> None:
    path = tmp_path_factory.mktemp("prop")
    trio.run(_scenario, path, version, actions, clock=trio.testing.MockClock(autojump_threshold=0))

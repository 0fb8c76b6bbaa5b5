"""The transactions block with real EVSEs on sim boards whose EV draws through a sim meter, a real SQLite
file and a scripted CSMS: the billing rule, the real last readings, E05 invalid ids, E14
GetTransactionStatus, J01 clock-aligned values while idle, and resuming a transaction after a restart."""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    EPOCH,
    CsmsPeer,
    MemoryConnection,
    NoAnswer,
    call,
    online,
    serve_until_link_down,
    start_transaction,
    station_config,
)
from runtime_session_harness import board as board_of

from evstation.drivers.api import LockState
from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.ev import SimEv
from evstation.drivers.sim.meter import SimMeter
from evstation.drivers.sim.signed_meter import SignedMeter, verify_ocmf
from evstation.protocol.device_model import VariableKey
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.transactions import START_READING_WAIT_S
from evstation.runtime.clock import WallClock
from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.device_model import (
    ALIGNED_DATA_ENABLED,
    ALIGNED_DATA_INTERVAL,
    ALIGNED_DATA_MEASURANDS,
    ALIGNED_DATA_SEND_DURING_IDLE,
    ALIGNED_DATA_TX_ENDED_INTERVAL,
    ALIGNED_DATA_TX_ENDED_MEASURANDS,
    MAX_ENERGY_ON_INVALID_ID,
    SAMPLED_DATA_ENABLED,
    STOP_TX_ON_EV_SIDE_DISCONNECT,
    STOP_TX_ON_INVALID_ID,
    TX_ENDED_INTERVAL,
    TX_START_POINT,
    TX_STARTED_MEASURANDS,
    TX_STOP_POINT,
    TX_UPDATED_INTERVAL,
    TX_UPDATED_MEASURANDS,
    UNLOCK_ON_EV_SIDE_DISCONNECT,
    load_device_model,
)
from evstation.runtime.evse import ConnectorStatus, Evses
from evstation.runtime.outbox import Outbox
from evstation.runtime.session import SessionContext, new_session
from evstation.runtime.storage import open_storage

V16, V201 = OcppVersion.V16, OcppVersion.V201
# The keys of a flattened meter value with the register and per-phase currents (see _meter_values_of).
ENERGY_AND_CURRENTS = {
    "timestamp",
    "Energy.Active.Import.Register",
    "Current.Import/L1",
    "Current.Import/L2",
    "Current.Import/L3",
}
BOTH = pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])
POLL_S = 1.0
START, STOP = (
    {V16: "StartTransaction", V201: "TransactionEvent"},
    {V16: "StopTransaction", V201: "TransactionEvent"},
)


@dataclass
class Rig:
    ctx: SessionContext
    csms: CsmsPeer
    conn: MemoryConnection
    board: SimChargeController
    meter: SimMeter
    nursery: trio.Nursery

    async def plug_and_authorize(self, token: str = "TOKEN-1") -> None:
        self.board.plug_in()
        await trio.sleep(0.5)
        assert await self.ctx.evses[1].authorize_remote(token, "ISO14443")

    def tx_events(self) -> list[dict[str, Any]]:
        return [s.call.payload for s in self.csms.of("TransactionEvent")]

    async def ended(self, version: OcppVersion) -> dict[str, Any]:
        if version is V16:
            return (await self.csms.wait_for("StopTransaction"))[0].call.payload
        while True:
            for payload in self.tx_events():
                if payload["eventType"] == "Ended":
                    return payload
            await self.csms.wait_for("TransactionEvent", len(self.tx_events()) + 1)


@asynccontextmanager
async def rig(
    tmp_path: Path,
    version: OcppVersion,
    *,
    csms: CsmsPeer | None = None,
    meter: SimMeter | None = None,
    plugged: bool = False,
    settings: dict[VariableKey, str] | None = None,
    connect: bool = True,
    signed: bool = False,
    config: StationConfig | None = None,
    ev_phases: int = 3,
) -> AsyncIterator[Rig]:
    """One run of a station over `tmp_path`'s SQLite file; EVSE 1 has a sim EV drawing through `meter`
    (on `ev_phases` phases)."""
    meter = meter if meter is not None else SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    board = SimChargeController(SimEv(plugged=plugged, phases=ev_phases), flow=meter)
    async with open_storage(tmp_path / "station.db") as storage, trio.open_nursery() as nursery:
        evses = Evses()
        await nursery.start(evses.add(1, board, SignedMeter(meter) if signed else meter).run)
        await nursery.start(evses.add(2, SimChargeController(), None).run)
        config = config if config is not None else station_config(tmp_path, version)
        ctx = new_session(
            config,
            storage=storage,
            outbox=Outbox(storage),
            evses=evses,
            clock=WallClock.anchored(EPOCH),
            device_model=await load_device_model(storage, config),
        )
        for key, value in (settings or {}).items():
            await ctx.device_model.set(key, value)
        await nursery.start(ctx.blocks.availability.run)
        await nursery.start(ctx.blocks.transactions.run)
        peer = csms if csms is not None else CsmsPeer(version)
        conn = MemoryConnection(version)
        if connect:
            nursery.start_soon(peer.serve, conn)
            nursery.start_soon(serve_until_link_down, conn, ctx)
            await peer.wait_for("StatusNotification", 2)
        yield Rig(ctx, peer, conn, board, meter, nursery)
        nursery.cancel_scope.cancel()


def _values(payload: dict[str, Any], version: OcppVersion, context: str) -> dict[str, Any]:
    """measurand(/phase) -> value of the sampled values with `context` in an end message."""
    meters = payload["transactionData"] if version is V16 else payload["meterValue"]
    out: dict[str, Any] = {}
    for meter in meters:
        for value in meter["sampledValue"]:
            if value.get("context") == context and value.get("format") != "SignedData":
                key = value["measurand"] + ("/" + value["phase"] if "phase" in value else "")
                out[key] = float(value["value"])
    return out


def _faulted(payload: dict[str, Any], version: OcppVersion) -> bool:
    if version is V16:
        return bool(payload["status"] == "Faulted" and payload["errorCode"] == "PowerMeterFailure")
    return bool(payload["connectorStatus"] == "Faulted")


@BOTH
async def test_a_remote_token_longer_than_the_field_starts_no_transaction(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion, caplog: pytest.LogCaptureFixture
) -> None:
    """issue 8, the transactions block's own guard (a remote or resumed token skips the authorization
    block): a token over the version's limit (1.6 20, 2.0.1 36) starts no transaction, is never cut,
    and the session ends unenergized with a log line."""
    too_long = "R" * (21 if version is V16 else 37)
    caplog.set_level(logging.ERROR, logger="evstation.runtime.blocks.transactions")
    async with rig(tmp_path, version) as r:
        r.board.plug_in()
        await trio.sleep(0.5)
        assert await r.ctx.evses[1].authorize_remote(too_long, "Central")
        await trio.sleep(START_READING_WAIT_S + 5)
        assert not r.ctx.evses[1].session_active()
        assert r.ctx.blocks.transactions.ids.get(1) is None
    assert not r.csms.of(START[version])
    assert any("refused, not cut" in rec.getMessage() for rec in caplog.records)


@BOTH
async def test_billing_rule_a_silent_meter_refuses_the_session_with_a_fault(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """No reading within START_READING_WAIT_S at the start point: no transaction, no energy, the EVSE
    Faulted (1.6 PowerMeterFailure) until the meter answers again."""
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    meter.set_failed("no answer")
    async with rig(tmp_path, version, meter=meter) as r:
        await r.plug_and_authorize()
        assert r.board.offered_current_a is None  # not energized while waiting
        await trio.sleep(START_READING_WAIT_S + 1)
        assert r.ctx.evses[1].status() is ConnectorStatus.FAULTED
        assert r.board.offered_current_a is None and r.meter.energy_wh == 1000
        # 1.6 holds an in-transaction status until StartTransaction is answered (bounded by the
        # message timeout): the Faulted one follows.
        while not any(_faulted(s.call.payload, version) for s in r.csms.of("StatusNotification")):
            await r.csms.wait_for("StatusNotification", len(r.csms.of("StatusNotification")) + 1)
        assert not r.csms.of(START[version])
        assert await r.ctx.outbox.depth() == 0
        meter.set_failed(None)
        await trio.sleep(2 * POLL_S)
        assert r.ctx.evses[1].status() is not ConnectorStatus.FAULTED


@BOTH
async def test_billing_rule_start_waits_for_a_late_reading(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    meter.set_failed("starting up")
    async with rig(tmp_path, version, meter=meter) as r:
        await r.plug_and_authorize()
        await trio.sleep(3)
        meter.set_failed(None)
        start: dict[str, Any] = (await r.csms.wait_for(START[version]))[0].call.payload
        if version is V16:
            assert start["meterStart"] == 1000
        else:
            (value,) = start["meterValue"][0]["sampledValue"]
            assert value["value"] == 1000 and value["context"] == "Transaction.Begin"


@BOTH
async def test_j02_end_values_are_the_real_last_readings_after_the_ev_left(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The end message's power and current are read after the contactor opened (0), not the sample
    taken while charging; the register is the one the CSMS bills."""
    from evstation.runtime.device_model import TX_ENDED_MEASURANDS

    settings = {TX_ENDED_MEASURANDS: "Energy.Active.Import.Register,Power.Active.Import,Current.Import"}
    async with rig(tmp_path, version, settings=settings) as r:
        await r.plug_and_authorize()
        await trio.sleep(60)  # a minute at 3 x 32 A
        charging_power = r.meter.read().power_w
        assert charging_power is not None and charging_power > 20000
        # Mid-way between two polls (they run on whole seconds): the last sample still says 22 kW. A
        # fixed sleep could land the unplug on a poll's instant, where the order of the two is open.
        await trio.sleep_until(math.ceil(trio.current_time()) + 0.5)
        r.board.unplug()
        ended = await r.ended(version)
        register = r.meter.energy_wh
    end = _values(ended, version, "Transaction.End")
    assert end["Power.Active.Import"] == 0
    assert end["Current.Import/L1"] == end["Current.Import/L2"] == end["Current.Import/L3"] == 0
    assert end["Energy.Active.Import.Register"] == pytest.approx(register, abs=1)
    begin = _values(ended, version, "Transaction.Begin")
    assert begin["Energy.Active.Import.Register"] == 1000
    if version is V16:
        assert ended["meterStop"] == round(register)
        assert ended["reason"] == "EVDisconnected"
    else:
        assert ended["triggerReason"] == "EVCommunicationLost"
        assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
        seq = [e["seqNo"] for e in r.tx_events()]
        assert seq == list(range(len(seq)))


@BOTH
async def test_e05_invalid_id_in_the_answer_stops_the_transaction(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """StopTxOnInvalidId / 1.6 StopTransactionOnInvalidId true: DeAuthorized."""
    csms = CsmsPeer(version)
    if version is V16:
        csms.then("StartTransaction", {"transactionId": 7, "idTagInfo": {"status": "Invalid"}})
    else:
        csms.then("TransactionEvent", {"idTokenInfo": {"status": "Invalid"}})
    async with rig(tmp_path, version, csms=csms) as r:
        await r.plug_and_authorize()
        ended = await r.ended(version)
    if version is V16:
        assert (ended["transactionId"], ended["reason"]) == (7, "DeAuthorized")
    else:
        assert ended["transactionInfo"]["stoppedReason"] == "DeAuthorized"
        assert ended["triggerReason"] == "Deauthorized"


@BOTH
async def test_e05_invalid_id_without_stop_suspends_the_energy(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """StopTxOnInvalidId false, MaxEnergyOnInvalidId 0: the session stays, its energy stops."""
    csms = CsmsPeer(version)
    if version is V16:
        csms.then("StartTransaction", {"transactionId": 7, "idTagInfo": {"status": "Blocked"}})
    else:
        csms.then("TransactionEvent", {"idTokenInfo": {"status": "Blocked"}})
    async with rig(tmp_path, version, csms=csms, settings={STOP_TX_ON_INVALID_ID: "false"}) as r:
        await r.plug_and_authorize()
        await trio.sleep(5)
        assert r.ctx.evses[1].status() is ConnectorStatus.SUSPENDED_EVSE
        assert r.board.current_draw_a == 0
        assert not r.csms.of("StopTransaction")


@BOTH
async def test_e05_a_refused_token_stays_refused_when_the_transaction_resumes_after_a_restart(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """StopTxOnInvalidId false: the refused transaction goes on with its energy suspended. After a
    restart with the EV still plugged in it resumes, and must stay suspended: the answer that refused
    the token was delivered and is not heard again, so the stored verdict has to act."""
    csms = CsmsPeer(version)
    if version is V16:
        csms.then("StartTransaction", {"transactionId": 7, "idTagInfo": {"status": "Blocked"}})
    else:
        csms.then("TransactionEvent", {"idTokenInfo": {"status": "Blocked"}})
    settings = {STOP_TX_ON_INVALID_ID: "false"}
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    async with rig(tmp_path, version, csms=csms, meter=meter, settings=settings) as r:
        await r.plug_and_authorize()
        await trio.sleep(5)
        assert r.ctx.evses[1].status() is ConnectorStatus.SUSPENDED_EVSE
        await r.ctx.outbox.wait_empty()
    async with rig(tmp_path, version, meter=meter, plugged=True, settings=settings) as r:
        await trio.sleep(5)
        assert r.ctx.blocks.transactions.ids.get(1) is not None  # resumed
        assert r.ctx.evses[1].status() is ConnectorStatus.SUSPENDED_EVSE
        assert r.board.current_draw_a == 0
        if version is V16:
            assert not r.csms.of("StartTransaction")
        else:
            assert [e["eventType"] for e in r.tx_events()] == ["Updated"]  # chargingState SuspendedEVSE


@BOTH
async def test_e05_invalid_id_without_stop_lets_max_energy_on_invalid_id_flow_first(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """StopTxOnInvalidId false, MaxEnergyOnInvalidId 500 Wh: after the refusal the EV may still take
    500 Wh (at 3 x 32 A, about 80 s), then the energy stops (SuspendedEVSE); the transaction stays."""
    csms = CsmsPeer(version)
    if version is V16:
        csms.then("StartTransaction", {"transactionId": 7, "idTagInfo": {"status": "Blocked"}})
    else:
        csms.then("TransactionEvent", {"idTokenInfo": {"status": "Blocked"}})
    settings = {STOP_TX_ON_INVALID_ID: "false", MAX_ENERGY_ON_INVALID_ID: "500"}
    async with rig(tmp_path, version, csms=csms, settings=settings) as r:
        await r.plug_and_authorize()
        await trio.sleep(30)
        evse = r.ctx.evses[1]
        assert evse.status() is ConnectorStatus.CHARGING and r.board.current_draw_a > 0
        await trio.sleep(120)
        assert evse.status() is ConnectorStatus.SUSPENDED_EVSE
        assert r.board.current_draw_a == 0
        delivered = r.meter.energy_wh - 1000
        # The allowance, plus at most one meter poll of 22 kW (about 6 Wh) before the check saw it.
        assert 500 <= delivered <= 500 + 22080 * POLL_S / 3600 + 1
        assert evse.session_active()
        assert not r.csms.of("StopTransaction")
        if version is V201:
            assert all(e["eventType"] != "Ended" for e in r.tx_events())


async def test_e14_get_transaction_status(clock: trio.testing.MockClock, tmp_path: Path) -> None:
    async with rig(tmp_path, V201) as r:
        await r.plug_and_authorize()
        started: dict[str, Any] = (await r.csms.wait_for("TransactionEvent"))[0].call.payload
        tx_id = started["transactionInfo"]["transactionId"]
        # The Started event's answer can empty the queue before the Updated (Charging) that follows
        # the energy is queued: wait for that one too.
        await r.csms.wait_for("TransactionEvent", 2)
        await r.ctx.outbox.wait_empty()
        asked = await r.csms.send_call(r.conn, "GetTransactionStatus", {"transactionId": tx_id})
        answer = await r.csms.wait_answer(asked)
        assert answer.payload == {"ongoingIndicator": True, "messagesInQueue": False}  # type: ignore[union-attr]
        r.board.unplug()
        await r.ended(V201)
        await r.ctx.outbox.wait_empty()
        asked = await r.csms.send_call(r.conn, "GetTransactionStatus", {"transactionId": tx_id})
        answer = await r.csms.wait_answer(asked)
        assert answer.payload == {"ongoingIndicator": False, "messagesInQueue": False}  # type: ignore[union-attr]
        asked = await r.csms.send_call(r.conn, "GetTransactionStatus", {})
        answer = await r.csms.wait_answer(asked)
        assert answer.payload == {"messagesInQueue": False}  # type: ignore[union-attr]


@BOTH
async def test_j01_clock_aligned_values_are_sent_while_idle(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    async with rig(tmp_path, version, settings={ALIGNED_DATA_INTERVAL: "60"}) as r:
        values = await r.csms.wait_for("MeterValues")
        payload: dict[str, Any] = values[0].call.payload
        assert "transactionId" not in payload
        (sampled,) = payload["meterValue"][0]["sampledValue"]
        assert (
            sampled["context"] == "Sample.Clock" and sampled["measurand"] == "Energy.Active.Import.Register"
        )
        # Aligned to the whole minute of the station clock (the scripted CSMS's time).
        assert payload["meterValue"][0]["timestamp"][17:23] == "00.000"


@BOTH
async def test_a_stop_point_that_is_not_the_session_end_ends_the_session_too(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """2.0.1 TxStopPoint EnergyTransfer: the EV pausing ends the transaction, and the EVSE stops
    offering energy (none flows outside a transaction). 1.6 ignores the setting."""
    async with rig(tmp_path, version, settings={TX_STOP_POINT: "EnergyTransfer"}) as r:
        await r.plug_and_authorize()
        await trio.sleep(60)
        r.board.set_ev(wants_energy=False)
        await trio.sleep(10)
        if version is V201:
            ended = await r.ended(version)
            assert ended["transactionInfo"]["stoppedReason"] == "StoppedByEV"
            # E06: the EV is still plugged in at the end (Idle only once the cable left).
            assert ended["transactionInfo"]["chargingState"] == "EVConnected"
            assert r.ctx.evses[1].status() is ConnectorStatus.FINISHING
        else:
            assert not r.csms.of("StopTransaction")


@BOTH
async def test_e05_max_energy_on_invalid_id_is_counted_from_the_refusal_across_a_restart(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """StopTxOnInvalidId false, MaxEnergyOnInvalidId 500 Wh, and a restart after about 180 Wh of it.
    The resumed transaction may take only the rest: the allowance counts from the refusal, not from the
    resume (else every restart would give the refused token another 500 Wh)."""
    csms = CsmsPeer(version)
    if version is V16:
        csms.then("StartTransaction", {"transactionId": 7, "idTagInfo": {"status": "Blocked"}})
    else:
        csms.then("TransactionEvent", {"idTokenInfo": {"status": "Blocked"}})
    settings = {STOP_TX_ON_INVALID_ID: "false", MAX_ENERGY_ON_INVALID_ID: "500"}
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    async with rig(tmp_path, version, csms=csms, meter=meter, settings=settings) as r:
        await r.plug_and_authorize()
        await trio.sleep(30)
        assert r.ctx.evses[1].status() is ConnectorStatus.CHARGING
        await r.ctx.outbox.wait_empty()
    assert 100 < meter.energy_wh - 1000 < 400  # part of the allowance used before the restart
    async with rig(tmp_path, version, meter=meter, plugged=True, settings=settings) as r:
        await trio.sleep(150)
        evse = r.ctx.evses[1]
        assert r.ctx.blocks.transactions.ids.get(1) is not None  # resumed
        assert evse.status() is ConnectorStatus.SUSPENDED_EVSE
        assert r.board.current_draw_a == 0
        # The allowance, plus at most one meter poll of 22 kW (about 6 Wh) before the check saw it.
        assert 500 <= meter.energy_wh - 1000 <= 500 + 22080 * POLL_S / 3600 + 1


@BOTH
async def test_a_transaction_whose_ev_is_still_plugged_resumes_after_a_restart(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Same transaction id, seqNo and register continue; the CSMS sees no end and no second start."""
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    first = CsmsPeer(version)
    settings = {TX_UPDATED_INTERVAL: "10"}
    async with rig(tmp_path, version, csms=first, meter=meter, settings=settings) as r:
        await r.plug_and_authorize()
        await first.wait_for(START[version])
        await trio.sleep(25)
        await r.ctx.outbox.wait_empty()
    second = CsmsPeer(version)
    async with rig(tmp_path, version, csms=second, meter=meter, plugged=True, settings=settings) as r:
        await trio.sleep(25)
        assert r.ctx.evses[1].status() is ConnectorStatus.CHARGING
        r.board.unplug()
        ended = await r.ended(version)
    assert not second.of("StartTransaction")
    if version is V16:
        assert ended["transactionId"] == 42 and ended["reason"] == "EVDisconnected"
        assert second.of("MeterValues")
        assert all(m.call.payload["transactionId"] == 42 for m in second.of("MeterValues"))
        assert ended["meterStop"] > 1000
    else:
        before: list[dict[str, Any]] = [s.call.payload for s in first.of("TransactionEvent")]
        after: list[dict[str, Any]] = [s.call.payload for s in second.of("TransactionEvent")]
        ids = {e["transactionInfo"]["transactionId"] for e in before + after}
        assert len(ids) == 1
        assert [e["seqNo"] for e in before + after] == list(range(len(before) + len(after)))
        assert [e["eventType"] for e in after].count("Started") == 0
        assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"


async def _started_before_a_restart(tmp_path: Path, version: OcppVersion, meter: SimMeter) -> int | str:
    """A transaction started and delivered, then the station stops with the EV plugged in; its id as
    the CSMS knows it (the 1.6 scripted CSMS answers StartTransaction with 42)."""
    async with rig(tmp_path, version, meter=meter) as r:
        await r.plug_and_authorize()
        started: dict[str, Any] = (await r.csms.wait_for(START[version]))[0].call.payload
        await r.ctx.outbox.wait_empty()
    return 42 if version is V16 else started["transactionInfo"]["transactionId"]


@BOTH
async def test_a_resumed_transaction_can_be_stopped_remotely_by_the_id_the_csms_knows(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """After the restart the station answers to the transaction's id as before: the CSMS's
    RemoteStopTransaction / RequestStopTransaction for it is Accepted and ends it (reason Remote).
    Without this the CSMS could not stop a resumed transaction and the EV would charge on."""
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    tx_id = await _started_before_a_restart(tmp_path, version, meter)
    async with rig(tmp_path, version, meter=meter, plugged=True) as r:
        await trio.sleep(5)
        assert r.ctx.evses[1].status() is ConnectorStatus.CHARGING
        action = "RemoteStopTransaction" if version is V16 else "RequestStopTransaction"
        answer = await call(r.csms, r.conn, action, {"transactionId": tx_id})
        assert answer["status"] == "Accepted"
        await trio.sleep(10)  # the EV stays plugged: only the stop itself can end the transaction
        ended: dict[str, Any]
        if version is V16:
            (stop,) = r.csms.of("StopTransaction")
            ended = stop.call.payload
        else:
            (ended,) = [e for e in r.tx_events() if e["eventType"] == "Ended"]
    if version is V16:
        assert (ended["transactionId"], ended["reason"]) == (42, "Remote")
    else:
        info = ended["transactionInfo"]
        assert isinstance(info, dict)
        assert (info["transactionId"], info["stoppedReason"]) == (tx_id, "Remote")


async def test_v16_a_refusal_answered_before_a_kill_still_ends_the_resumed_transaction(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """StartTransaction.conf refused the idTag and the station was killed before acting on it (no stop
    queued yet). After the restart that StartTransaction is not sent again (it would open a second
    transaction at the CSMS), so its answer is not heard again: the stored verdict must stop the resumed
    transaction (StopTransactionOnInvalidId true: DeAuthorized), or the EV would charge on a refused idTag."""
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    async with rig(tmp_path, V16, meter=meter, connect=False) as r:
        await r.plug_and_authorize()
        ids = r.ctx.blocks.transactions.ids
        while (local_id := ids.get(1)) is None:
            await ids.changed.wait()
        # What the StartTransaction's delivery committed before the kill.
        await r.ctx.blocks.transactions.services.storage.set_csms_transaction_id(local_id, 42, "Invalid")
    async with rig(tmp_path, V16, meter=meter, plugged=True) as r:
        with trio.fail_after(600):
            ended = await r.ended(V16)
        assert r.csms.of("StartTransaction") == []
    assert (ended["transactionId"], ended["reason"]) == (42, "DeAuthorized")


@BOTH
async def test_a_transaction_stopped_just_before_a_restart_is_not_resumed_and_ends_with_its_reason(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The CSMS stops a transaction (Accepted) and the station restarts while the end message waits for
    its last reading (up to 3 s): the EV is still plugged in, but the transaction must not resume and
    charge again. It ends after the restart with the reason it was stopped for (Remote)."""
    # A slow meter: the stop waits the whole END_READING_WAIT_S for a reading after it.
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=20)
    async with rig(tmp_path, version, meter=meter) as r:
        await r.plug_and_authorize()
        started: dict[str, Any] = (await r.csms.wait_for(START[version]))[0].call.payload
        await r.ctx.outbox.wait_empty()
        if version is V16:
            action, tx_id = "RemoteStopTransaction", 42
        else:
            action, tx_id = "RequestStopTransaction", started["transactionInfo"]["transactionId"]
        answer = await call(r.csms, r.conn, action, {"transactionId": tx_id})
        assert answer == {"status": "Accepted"}
        assert not r.ctx.evses[1].session_active()  # the handler stops the session before answering
        await trio.sleep(0.5)
        assert await r.ctx.outbox.depth() == 0  # the end is not queued yet: the restart comes now
    async with rig(tmp_path, version, meter=meter, plugged=True) as r:
        await trio.sleep(10)
        assert r.ctx.blocks.transactions.ids.get(1) is None  # not resumed
        assert not r.ctx.evses[1].session_active()
        assert r.board.current_draw_a == 0
        ended = await r.ended(version)
    if version is V16:
        assert (ended["transactionId"], ended["reason"]) == (42, "Remote")
    else:
        assert ended["transactionInfo"]["stoppedReason"] == "Remote"
        assert ended["triggerReason"] == "RemoteStop"


async def _inoperative_scheduled_before_a_restart(tmp_path: Path, version: OcppVersion) -> SimMeter:
    """A run in which EVSE 1's transaction is delivered and ChangeAvailability Inoperative for it is
    answered Scheduled; the meter, for the run after the restart."""
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    async with rig(tmp_path, version, meter=meter) as r:
        await r.plug_and_authorize()
        await r.csms.wait_for(START[version])
        if version is V16:
            request: dict[str, Any] = {"connectorId": 1, "type": "Inoperative"}
        else:
            request = {"operationalStatus": "Inoperative", "evse": {"id": 1}}
        assert await call(r.csms, r.conn, "ChangeAvailability", request) == {"status": "Scheduled"}
        await r.ctx.outbox.wait_empty()
    return meter


@BOTH
async def test_g03_inoperative_scheduled_before_a_restart_still_waits_for_the_resumed_transaction(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """ChangeAvailability Inoperative for EVSE 1 during its transaction is Scheduled (G03.FR.03 / 1.6
    5.2). After a restart with the EV still plugged in the transaction resumes, so the change still
    waits for its end: applied at start-up, it would leave a resumed transaction on an Unavailable EVSE
    that cannot be energized again."""
    meter = await _inoperative_scheduled_before_a_restart(tmp_path, version)
    async with rig(tmp_path, version, meter=meter, plugged=True) as r:
        await trio.sleep(10)
        evse = r.ctx.evses[1]
        assert r.ctx.blocks.transactions.ids.get(1) is not None  # resumed
        assert evse.status() is ConnectorStatus.CHARGING
        assert r.board.current_draw_a > 0
        r.board.unplug()
        await r.ended(version)
        await trio.sleep(1)
        assert evse.status() is ConnectorStatus.UNAVAILABLE  # applied at the end, as scheduled


@BOTH
async def test_g03_inoperative_scheduled_before_a_restart_applies_once_the_transaction_is_not_resumed(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """As above, but the EV left during the restart: the transaction is ended at start-up (PowerLoss),
    and the scheduled Inoperative applies then, not at some later event."""
    meter = await _inoperative_scheduled_before_a_restart(tmp_path, version)
    async with rig(tmp_path, version, meter=meter) as r:
        await r.ended(version)
        await trio.sleep(1)
        assert r.ctx.blocks.transactions.ids.get(1) is None
        assert r.ctx.evses[1].status() is ConnectorStatus.UNAVAILABLE


@BOTH
async def test_a_resumed_transaction_is_the_one_a_triggered_message_reports(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """After the restart the EVSE's transaction is the resumed one: a triggered 1.6 MeterValues carries
    its transactionId, a 2.0.1 TriggerMessage(TransactionEvent) is Accepted and reports it. Without the
    id restored the CSMS would get meter values it cannot bill, or a TxNotFound."""
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    tx_id = await _started_before_a_restart(tmp_path, version, meter)
    async with rig(tmp_path, version, meter=meter, plugged=True) as r:
        await r.nursery.start(r.ctx.blocks.trigger.run)
        await trio.sleep(5)
        if version is V16:
            request = {"requestedMessage": "MeterValues", "connectorId": 1}
        else:
            request = {"requestedMessage": "TransactionEvent", "evse": {"id": 1}}
        assert await call(r.csms, r.conn, "TriggerMessage", request) == {"status": "Accepted"}
        await trio.sleep(5)
        if version is V16:
            payloads: list[dict[str, Any]] = [dict(m.call.payload) for m in r.csms.of("MeterValues")]
            triggered = [p for p in payloads if p["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"]
            assert [p["transactionId"] for p in triggered] == [42]
        else:
            [event] = [e for e in r.tx_events() if e["triggerReason"] == "Trigger"]
            info = event["transactionInfo"]
            assert isinstance(info, dict) and info["transactionId"] == tx_id


@BOTH
async def test_a_transaction_a_reset_ended_is_never_resumed(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """forbid_resume (called by the Reset block before it stops sessions) keeps a plugged EV's
    transaction from being resumed: it is ended (Reboot after this clean stop)."""
    meter = SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)
    async with rig(tmp_path, version, meter=meter, connect=False) as r:
        await r.plug_and_authorize()
        await trio.sleep(5)
        await r.ctx.blocks.transactions.forbid_resume(frozenset({1}))
    async with rig(tmp_path, version, meter=meter, plugged=True) as r:
        ended = await r.ended(version)
    reason = ended["reason"] if version is V16 else ended["transactionInfo"]["stoppedReason"]
    assert reason == "Reboot"


@BOTH
async def test_signed_meter_values_at_start_and_end_are_sent_and_stored(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """A meter that signs: its OCMF readings ride along at Transaction.Begin and End (2.0.1
    signedMeterValue on the register; 1.6 a SignedData value in transactionData) and the record keeps
    them (signed_start / signed_stop)."""
    async with rig(tmp_path, version, signed=True) as r:
        meter = r.ctx.evses[1].power_meter
        assert isinstance(meter, SignedMeter)
        await r.plug_and_authorize()
        await r.csms.wait_for(START[version])
        await trio.sleep(5)
        (record,) = await r.ctx.blocks.transactions.services.storage.transactions()
        assert record.signed_start is not None and verify_ocmf(record.signed_start, meter.public_key_hex)
        r.board.unplug()
        ended = await r.ended(version)
    meters = ended["transactionData"] if version is V16 else ended["meterValue"]
    signed: dict[str, str] = {}
    for value in (v for m in meters for v in m["sampledValue"]):
        if version is V16 and value.get("format") == "SignedData":
            signed[value["context"]] = value["value"]
        elif version is V201 and "signedMeterValue" in value:
            signed[value["context"]] = value["signedMeterValue"]["signedMeterData"]
    assert set(signed) == {"Transaction.Begin", "Transaction.End"}
    assert all(verify_ocmf(text, meter.public_key_hex) for text in signed.values())


def _statuses(r: Rig, version: OcppVersion) -> list[str]:
    key = "status" if version is V16 else "connectorStatus"
    payloads = [s.call.payload for s in r.csms.of("StatusNotification")]
    return [str(p[key]) for p in payloads if p["connectorId"] == 1]


@BOTH
async def test_e10_fr_01_fr_03_ev_side_unplug_suspends_and_replug_continues_the_transaction(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """StopTxOnEVSideDisconnect / 1.6 StopTransactionOnEVSideDisconnect false, UnlockOnEVSideDisconnect
    false, TxStopPoint Authorized: the cable leaving the EV keeps the transaction (2.0.1 Updated
    EVCommunicationLost / Idle; 1.6 SuspendedEV), the lock stays closed, the EV coming back charges in
    the same transaction (2.0.1 Updated CablePluggedIn / EVConnected), and the token ends it."""
    settings = {STOP_TX_ON_EV_SIDE_DISCONNECT: "false", UNLOCK_ON_EV_SIDE_DISCONNECT: "false"}
    if version is V201:
        settings[TX_STOP_POINT] = "Authorized"
    async with rig(tmp_path, version, settings=settings) as r:
        await r.plug_and_authorize()
        await trio.sleep(60)
        evse = r.ctx.evses[1]
        assert evse.status() is ConnectorStatus.CHARGING
        r.board.unplug()
        await trio.sleep(30)
        assert evse.session_active() and evse.status() is ConnectorStatus.SUSPENDED_EV
        assert r.board.lock_state.value == LockState.LOCKED.value
        assert not r.csms.of("StopTransaction")
        if version is V16:
            assert _statuses(r, version)[-1] == "SuspendedEV"
        else:
            last = r.tx_events()[-1]
            assert (last["eventType"], last["triggerReason"]) == ("Updated", "EVCommunicationLost")
            assert last["transactionInfo"]["chargingState"] == "Idle"
            # TC_E_26: the connector is Available while the kept transaction's EV is away.
            assert _statuses(r, version)[-1] == "Available"
        r.board.plug_in()
        await trio.sleep(60)
        assert evse.status() is ConnectorStatus.CHARGING
        assert _statuses(r, version)[-1] == ("Charging" if version is V16 else "Occupied")
        if version is V201:
            events = r.tx_events()
            replugged = [e for e in events if e["triggerReason"] == "CablePluggedIn"]
            assert replugged and replugged[-1]["transactionInfo"]["chargingState"] == "EVConnected"
            assert len({e["transactionInfo"]["transactionId"] for e in events}) == 1
        assert await evse.present_token("TOKEN-1")
        ended = await r.ended(version)
    if version is V16:
        assert ended["reason"] == "Local"
        assert len(r.csms.of("StartTransaction")) == 1
    else:
        assert ended["transactionInfo"]["stoppedReason"] == "Local"
        seq = [e["seqNo"] for e in r.tx_events()]
        assert seq == list(range(len(seq)))


@BOTH
async def test_e09_fr_03_unlock_false_keeps_the_cable_locked_after_the_ev_side_unplug_ended_it(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """StopTxOnEVSideDisconnect / 1.6 StopTransactionOnEVSideDisconnect true (default) with
    UnlockOnEVSideDisconnect / UnlockConnectorOnEVSideDisconnect false: the EV-side unplug ends the
    transaction (EVDisconnected), the cable stays locked in the socket (1.6 Finishing, 2.0.1 Occupied)
    until the token that started it is presented again; then Available (OCTT TC_E_25 / TC_005_2)."""
    async with rig(tmp_path, version, settings={UNLOCK_ON_EV_SIDE_DISCONNECT: "false"}) as r:
        await r.plug_and_authorize()
        await trio.sleep(60)
        r.board.unplug()
        ended = await r.ended(version)
        await trio.sleep(30)
        evse = r.ctx.evses[1]
        assert not evse.session_active()
        assert r.board.lock_state.value == LockState.LOCKED.value
        assert _statuses(r, version)[-1] == ("Finishing" if version is V16 else "Occupied")
        # Routed by the token alone (no EVSE named), as a card on a station-wide reader would be.
        assert await r.ctx.evses.present_token("token-1") == 1
        await trio.sleep(5)
        assert r.board.lock_state.value == LockState.UNLOCKED.value
        assert _statuses(r, version)[-1] == "Available"
        assert not evse.session_active()
    if version is V16:
        assert ended["reason"] == "EVDisconnected"
        assert len(r.csms.of("StartTransaction")) == 1
    else:
        assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
        assert len([e for e in r.tx_events() if e["eventType"] == "Started"]) == 1


@BOTH
async def test_cable_max_current_is_sent_in_the_started_event_when_known(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """2.0.1 TransactionEventRequest.cableMaxCurrent: the rating the board read from the cable's PP
    goes in the Started event, once; 1.6 StartTransaction has no such field. The offer follows it."""
    async with rig(tmp_path, version) as r:
        r.board.plug_in(cable_max_current_a=20)
        await trio.sleep(0.5)
        assert await r.ctx.evses[1].authorize_remote("TOKEN-1", "ISO14443")
        await trio.sleep(60)
        assert r.board.offered_current_a == 20.0
        if version is V16:
            start = (await r.csms.wait_for("StartTransaction"))[0].call.payload
            assert "cableMaxCurrent" not in start
            return
        events = r.tx_events()
        assert events[0]["eventType"] == "Started" and events[0]["cableMaxCurrent"] == 20
        assert all("cableMaxCurrent" not in e for e in events[1:])


async def test_cable_max_current_learnt_after_the_start_goes_in_the_next_updated_event(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """TxStartPoint Authorized: the transaction starts before any cable is in; the rating read when
    the cable goes in is sent in an Updated event (CablePluggedIn), and not again."""
    async with rig(tmp_path, V201, settings={TX_START_POINT: "Authorized"}) as r:
        assert await r.ctx.evses[1].authorize_remote("TOKEN-1", "ISO14443")
        await r.csms.wait_for("TransactionEvent")
        assert "cableMaxCurrent" not in r.tx_events()[0]
        r.board.plug_in(cable_max_current_a=32)
        await trio.sleep(60)
        with_cable = [e for e in r.tx_events() if "cableMaxCurrent" in e]
        assert len(with_cable) == 1
        (event,) = with_cable
        assert (event["eventType"], event["triggerReason"], event["cableMaxCurrent"]) == (
            "Updated",
            "CablePluggedIn",
            32,
        )


async def test_e02_started_at_the_cable_then_the_token_is_an_updated_authorized_event(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """E02 (cable first, TxStartPoint EVConnected): the Started event carries no idToken (nobody is
    known yet); the token presented later is one Updated event, triggerReason Authorized, with the
    idToken, under the same transaction id and the next seqNo."""
    async with rig(tmp_path, V201, settings={TX_START_POINT: "EVConnected"}) as r:
        r.board.plug_in()
        await r.csms.wait_for("TransactionEvent")
        started = r.tx_events()[0]
        assert started["eventType"] == "Started" and "idToken" not in started
        assert await r.ctx.evses[1].authorize_remote("TOKEN-1", "ISO14443")
        await trio.sleep(5)
        authorized = [e for e in r.tx_events() if e["triggerReason"] == "Authorized"]
    assert len(authorized) == 1
    (event,) = authorized
    assert event["eventType"] == "Updated"
    assert event["idToken"] == {"idToken": "TOKEN-1", "type": "ISO14443"}
    assert event["transactionInfo"]["transactionId"] == started["transactionInfo"]["transactionId"]
    assert event["seqNo"] == started["seqNo"] + 1


async def test_e03_started_before_the_cable_is_idle_then_the_plug_is_one_updated_event(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """E03 (IdToken first, TxStartPoint Authorized): no EV yet, so the Started event's chargingState is
    Idle (ChargingStateEnumType: no connection between EV and EVSE); the cable going in is one Updated
    event, CablePluggedIn / EVConnected, carrying the cable rating read with it."""
    async with rig(tmp_path, V201, settings={TX_START_POINT: "Authorized"}) as r:
        assert await r.ctx.evses[1].authorize_remote("TOKEN-1", "ISO14443")
        await r.csms.wait_for("TransactionEvent")
        started = r.tx_events()[0]
        assert (started["eventType"], started["transactionInfo"]["chargingState"]) == ("Started", "Idle")
        r.board.plug_in(cable_max_current_a=20)
        await trio.sleep(60)
        plugged = [e for e in r.tx_events() if e["triggerReason"] == "CablePluggedIn"]
        assert len(plugged) == 1
        (event,) = plugged
        assert event["transactionInfo"]["chargingState"] == "EVConnected"
        assert event["cableMaxCurrent"] == 20


@BOTH
async def test_e10_stop_point_ev_connected_still_ends_the_transaction(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """2.0.1: StopTxOnEVSideDisconnect false with TxStopPoint EVConnected (the default): the stop
    point ends the transaction with EVDisconnected, and the kept session with it (no energy outside a
    transaction). 1.6 StopTransactionOnEVSideDisconnect true (the default) is the 1.6 counterpart."""
    settings = {STOP_TX_ON_EV_SIDE_DISCONNECT: "false"} if version is V201 else {}
    async with rig(tmp_path, version, settings=settings) as r:
        await r.plug_and_authorize()
        await trio.sleep(60)
        r.board.unplug()
        ended = await r.ended(version)
        await trio.sleep(5)
        evse = r.ctx.evses[1]
        assert not evse.session_active() and evse.status() is ConnectorStatus.AVAILABLE
        assert r.board.lock_state.value == LockState.UNLOCKED.value
    if version is V16:
        assert ended["reason"] == "EVDisconnected"
    else:
        assert ended["transactionInfo"]["stoppedReason"] == "EVDisconnected"
        assert ended["triggerReason"] == "EVCommunicationLost"


@BOTH
async def test_e03_connection_timeout_ends_with_reason_timeout(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Authorized, no EV within EVConnectionTimeOut (60 s). 2.0.1 TxStartPoint Authorized: the
    transaction started at the authorization ends with stoppedReason Timeout, triggerReason
    EVConnectTimeout. 1.6: no StartTransaction without the EV, so nothing but the statuses."""
    settings = {TX_START_POINT: "Authorized"} if version is V201 else {}
    async with rig(tmp_path, version, settings=settings) as r:
        assert await r.ctx.evses[1].authorize_remote("TOKEN-1", "ISO14443")
        if version is V201:
            ended = await r.ended(version)
            assert ended["transactionInfo"]["stoppedReason"] == "Timeout"
            assert ended["triggerReason"] == "EVConnectTimeout"
        else:
            await trio.sleep(90)
            assert not r.csms.of("StartTransaction") and not r.csms.of("StopTransaction")
            assert _statuses(r, version)[-2:] == ["Preparing", "Available"]
        assert r.ctx.evses[1].status() is ConnectorStatus.AVAILABLE


def _config_with(tmp_path: Path, version: OcppVersion, **sections: Any) -> StationConfig:
    """The harness's station with `sections` merged in (e.g. test_aids, or a signing meter)."""
    data = station_config(tmp_path, version).model_dump(mode="json", exclude={"control"})
    data["csms"]["endpoints"][0]["url"] = "ws://127.0.0.1:9/ocpp"
    for key, value in sections.items():
        data[key] = value
    return parse_config(data, base_dir=tmp_path)


def _meter_stamps(payload: dict[str, Any], version: OcppVersion) -> list[datetime]:
    meters = payload.get("transactionData" if version is V16 else "meterValue", [])
    if version is V16 and "meterValue" in payload:
        meters = payload["meterValue"]
    return [datetime.fromisoformat(m["timestamp"]) for m in meters]


@BOTH
async def test_fake_meter_timestamps_start_stamps_meter_values_only(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """[test_aids] fake_meter_timestamps_start: every meter value (begin, periodic, end) carries the
    configured instant plus the real time since the station started, whatever the CSMS sets the
    station clock to; the messages' own timestamps (Start, Stop, TransactionEvent) keep the station
    clock."""
    fake = datetime.fromisoformat("2040-01-01T08:00:00+00:00")
    config = _config_with(tmp_path, version, test_aids={"fake_meter_timestamps_start": fake.isoformat()})
    async with rig(tmp_path, version, config=config, settings={TX_UPDATED_INTERVAL: "10"}) as r:
        await r.plug_and_authorize()
        await r.csms.wait_for(START[version])
        await trio.sleep(25)
        r.board.unplug()
        await r.ended(version)
        elapsed = trio.current_time()
        meter_at, message_at = _stamps(r.csms, version)
    assert message_at and all(at.year < fake.year for at in message_at)  # station clock
    assert len(meter_at) >= 3  # begin, periodic values, end
    assert all(fake <= at <= fake + timedelta(seconds=elapsed) for at in meter_at)
    # The real elapsed time between the values is kept: begin to end as Start to Stop.
    assert max(meter_at) - min(meter_at) == max(message_at) - min(message_at)


@BOTH
async def test_fake_meter_timestamps_offset_shifts_meter_values(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """[test_aids] fake_meter_timestamps_offset_s: meter values carry the station clock shifted."""
    config = _config_with(tmp_path, version, test_aids={"fake_meter_timestamps_offset_s": -7200})
    async with rig(tmp_path, version, config=config) as r:
        await r.plug_and_authorize()
        await r.csms.wait_for(START[version])
        await trio.sleep(5)
        r.board.unplug()
        ended = await r.ended(version)
        meter_at, _ = _stamps(r.csms, version)
    stopped_at = datetime.fromisoformat(ended["timestamp"])
    assert max(meter_at) == stopped_at - timedelta(hours=2)


@BOTH
async def test_fake_meter_timestamps_offset_shifts_clock_aligned_and_triggered_values(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The test aid reaches every meter value: the clock-aligned MeterValues carry the boundary shifted
    (still a whole minute), a triggered MeterValues the station's now shifted."""
    config = _config_with(tmp_path, version, test_aids={"fake_meter_timestamps_offset_s": -7200})
    async with rig(tmp_path, version, config=config, settings={ALIGNED_DATA_INTERVAL: "60"}) as r:
        await r.nursery.start(r.ctx.blocks.trigger.run)
        [aligned] = await r.csms.wait_for("MeterValues")
        aligned_payload: dict[str, Any] = aligned.call.payload
        aligned_at = datetime.fromisoformat(aligned_payload["meterValue"][0]["timestamp"])
        station_at = r.ctx.clock.now()
        target = {"connectorId": 1} if version is V16 else {"evse": {"id": 1}}
        answer = await call(r.csms, r.conn, "TriggerMessage", {"requestedMessage": "MeterValues", **target})
        assert answer == {"status": "Accepted"}
        [_, triggered] = await r.csms.wait_for("MeterValues", 2)
    triggered_payload: dict[str, Any] = triggered.call.payload
    [meter] = triggered_payload["meterValue"]
    assert meter["sampledValue"][0]["context"] == "Trigger"
    assert datetime.fromisoformat(meter["timestamp"]) == station_at - timedelta(hours=2)
    assert aligned_at.second == 0 and aligned_at.microsecond == 0
    assert timedelta(0) <= station_at - timedelta(hours=2) - aligned_at < timedelta(seconds=1)


def _stamps(csms: CsmsPeer, version: OcppVersion) -> tuple[list[datetime], set[datetime]]:
    """(the timestamps of every meter value sent, those of the transaction messages themselves)."""
    meter_at: list[datetime] = []
    message_at: set[datetime] = set()
    for seen in csms.seen:
        action, payload = seen.call.action, dict(seen.call.payload)
        if action not in ("TransactionEvent", "StartTransaction", "StopTransaction", "MeterValues"):
            continue
        if "timestamp" in payload:
            message_at.add(datetime.fromisoformat(str(payload["timestamp"])))
        meter_at.extend(_meter_stamps(payload, version))
    return meter_at, message_at


def _signing_config(tmp_path: Path, version: OcppVersion) -> StationConfig:
    data = station_config(tmp_path, version).model_dump(mode="json", exclude={"control"})
    for evse in data["evse"]:
        evse["meter"] = {"driver": "sim", "signed": True}
    return parse_config(data, base_dir=tmp_path)


def test_a_signed_sim_meter_from_station_toml_is_the_signing_twin(tmp_path: Path) -> None:
    """[evse.meter] driver = "sim", signed = true: the EVSE reads a SignedMeter around the SimMeter the
    control API drives; without `signed` it reads the plain SimMeter."""
    from evstation.runtime.station import build_evses

    evses, sims = build_evses(_signing_config(tmp_path, V201))
    meter = evses[1].power_meter
    assert isinstance(meter, SignedMeter) and meter.sim is sims[1].meter
    evses, sims = build_evses(station_config(tmp_path, V201))
    assert isinstance(evses[1].power_meter, SimMeter) and evses[1].power_meter is sims[1].meter


async def test_data_signed_start_point_starts_with_a_signed_begin_value(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """E01 with TxStartPoint DataSigned (offered because the configured meters sign): the transaction
    starts once the power path is closed and the meter has given a signed reading, and the Started
    event carries that signed value."""
    config = _signing_config(tmp_path, V201)
    async with rig(tmp_path, V201, config=config, signed=True) as r:
        decision = await r.ctx.device_model.set(TX_START_POINT, "DataSigned")
        assert decision.applies
        r.board.plug_in()
        await trio.sleep(3)
        assert not r.tx_events()  # plugged, not authorized: no signed start reading yet
        assert await r.ctx.evses[1].authorize_remote("TOKEN-1", "ISO14443")
        await r.csms.wait_for("TransactionEvent")
        started = r.tx_events()[0]
    assert started["eventType"] == "Started" and started["triggerReason"] == "SignedDataReceived"
    signed = [v for m in started["meterValue"] for v in m["sampledValue"] if "signedMeterValue" in v]
    assert signed and signed[0]["context"] == "Transaction.Begin"


async def test_data_signed_is_refused_without_a_signing_meter(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with rig(tmp_path, V201, connect=False) as r:
        decision = await r.ctx.device_model.set(TX_START_POINT, "DataSigned")
    assert not decision.applies


def _payloads(csms: CsmsPeer, action: str) -> list[dict[str, Any]]:
    return [s.call.payload for s in csms.of(action)]


def _meter_values_of(payload: dict[str, Any], version: OcppVersion, context: str) -> list[dict[str, Any]]:
    """The MeterValues of an end message (1.6 transactionData, 2.0.1 meterValue) whose values have
    `context`, each as {"timestamp": ..., measurand(/phase): value...}."""
    meters = payload["transactionData"] if version is V16 else payload["meterValue"]
    out: list[dict[str, Any]] = []
    for meter in meters:
        values = [v for v in meter["sampledValue"] if v.get("context") == context]
        if values:
            row: dict[str, Any] = {"timestamp": meter["timestamp"]}
            for value in values:
                row[value["measurand"] + ("/" + value["phase"] if "phase" in value else "")] = float(
                    value["value"]
                )
            out.append(row)
    return out


@BOTH
async def test_j03_aligned_tx_ended_values_go_into_the_end_message(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """AlignedDataCtrlr.TxEndedMeasurands every AlignedDataCtrlr.TxEndedInterval (1.6 StopTxnAlignedData
    every ClockAlignedDataInterval): kept during the transaction and sent in its end message (2.0.1
    Ended meterValue, 1.6 StopTransaction transactionData) with context Sample.Clock, at whole
    multiples of the interval, next to the Transaction.Begin / End values. 2.0.1 sends nothing for
    them meanwhile (AlignedDataCtrlr.Interval 0); 1.6 sends its MeterValuesAlignedData meanwhile, as
    MeterValues with the transactionId."""
    measurands = "Energy.Active.Import.Register,Current.Import"
    interval = ALIGNED_DATA_TX_ENDED_INTERVAL if version is V201 else ALIGNED_DATA_INTERVAL
    settings = {interval: "60", ALIGNED_DATA_TX_ENDED_MEASURANDS: measurands}
    async with rig(tmp_path, version, settings=settings) as r:
        await r.plug_and_authorize()
        await trio.sleep(150)
        r.board.unplug()
        ended = await r.ended(version)
        aligned_sent = [
            p
            for p in _payloads(r.csms, "MeterValues")
            if p["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock"
        ]
        updated = [e["triggerReason"] for e in r.tx_events() if e["eventType"] == "Updated"]
    kept = _meter_values_of(ended, version, "Sample.Clock")
    assert len(kept) in (2, 3)  # every whole minute of the 150 s
    assert all(row["timestamp"].endswith(":00.000Z") for row in kept)
    assert all(set(row) == ENERGY_AND_CURRENTS for row in kept)
    energies = [row["Energy.Active.Import.Register"] for row in kept]
    assert energies == sorted(energies) and energies[-1] > energies[0]  # real readings while charging
    assert all(row["Current.Import/L1"] > 30 for row in kept)  # 32 A offered, drawn on every phase
    assert _meter_values_of(ended, version, "Transaction.Begin")
    assert _meter_values_of(ended, version, "Transaction.End")
    if version is V201:
        assert "MeterValueClock" not in updated and not aligned_sent
    else:
        assert len(aligned_sent) == len(kept)
        assert all(p["transactionId"] == 42 and p["connectorId"] == 1 for p in aligned_sent)


async def test_j01_fr_20_send_during_idle_holds_clock_aligned_values_while_any_transaction_runs(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """AlignedDataCtrlr.SendDuringIdle false: clock-aligned values go out during a transaction
    (TransactionEvent Updated MeterValueClock) and for the idle EVSE (MeterValues). True: none at all
    while a transaction runs anywhere on the station (J01.FR.20 as libocpp reads it), again once it
    ended."""
    csms = CsmsPeer(V201)
    async with online(tmp_path, V201, csms) as (ctx, _):
        await ctx.device_model.set(ALIGNED_DATA_INTERVAL, "60")
        await ctx.device_model.set(ALIGNED_DATA_MEASURANDS, "Energy.Active.Import.Register,Voltage")

        def clock_events() -> list[dict[str, Any]]:
            events = [s.call.payload for s in csms.of("TransactionEvent")]
            return [e for e in events if e["triggerReason"] == "MeterValueClock"]

        def idle_evses() -> list[int]:
            return [int(p["evseId"]) for p in _payloads(csms, "MeterValues")]

        await start_transaction(ctx, 1)
        await trio.sleep(125)
        [first, *_] = clock_events()
        assert first["eventType"] == "Updated" and first["evse"]["id"] == 1
        [meter] = first["meterValue"]
        assert meter["timestamp"].endswith(":00.000Z")
        assert {(v["context"], v["measurand"]) for v in meter["sampledValue"]} == {
            ("Sample.Clock", "Energy.Active.Import.Register"),
            ("Sample.Clock", "Voltage"),
        }
        assert 2 in idle_evses() and 1 not in idle_evses()  # EVSE 1 reports in its transaction
        events, idle = len(clock_events()), len(idle_evses())
        await ctx.device_model.set(ALIGNED_DATA_SEND_DURING_IDLE, "true")
        await trio.sleep(125)
        assert len(clock_events()) == events and len(idle_evses()) == idle  # nothing while EVSE 1 charges
        board_of(ctx, 1).unplug()
        while ctx.blocks.transactions.ids.get(1) is not None:
            await ctx.blocks.transactions.ids.changed.wait()
        await trio.sleep(65)
        assert sorted(idle_evses()[idle:]) == [1, 2]  # idle again: both EVSEs, once each


async def test_sampled_and_aligned_data_enabled_switch_their_meter_values_off_and_on(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """SampledDataCtrlr.Enabled false: no periodic values (TxUpdatedInterval) and none kept for the
    end message (TxEndedInterval); AlignedDataCtrlr.Enabled false: no clock-aligned values, idle or in
    a transaction. Set true, they start at once (followed, not polled)."""
    settings = {
        TX_UPDATED_INTERVAL: "10",
        TX_ENDED_INTERVAL: "10",
        ALIGNED_DATA_INTERVAL: "60",
        SAMPLED_DATA_ENABLED: "false",
        ALIGNED_DATA_ENABLED: "false",
    }
    async with rig(tmp_path, V201, settings=settings) as r:
        await trio.sleep(65)
        assert not r.csms.of("MeterValues")
        await r.plug_and_authorize()
        await trio.sleep(65)
        reasons = {e["triggerReason"] for e in r.tx_events()}
        assert not reasons & {"MeterValuePeriodic", "MeterValueClock"}
        enabled_at = r.ctx.clock.now()
        await r.ctx.device_model.set(SAMPLED_DATA_ENABLED, "true")
        await r.ctx.device_model.set(ALIGNED_DATA_ENABLED, "true")
        await trio.sleep(65)
        reasons = {e["triggerReason"] for e in r.tx_events()}
        assert {"MeterValuePeriodic", "MeterValueClock"} <= reasons
        r.board.unplug()
        ended = await r.ended(V201)
    kept = _meter_values_of(ended, V201, "Sample.Periodic")
    assert len(kept) >= 5  # every 10 s since enabled
    assert all(datetime.fromisoformat(row["timestamp"]) >= enabled_at for row in kept)


async def test_number_of_phases_used_from_the_per_phase_currents(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """2.0.1 numberOfPhasesUsed: the phases the meter shows carrying current. In the Started event when
    the start reading shows current; otherwise (the usual case: the contactor closes after the start
    point) in the first Updated event whose reading shows it, and again only when it changes."""
    async with rig(tmp_path, V201, ev_phases=2, settings={TX_UPDATED_INTERVAL: "10"}) as r:
        r.board.plug_in()
        r.meter.set_flow(6, 1)  # a reading with current on L1 only before the start point
        await trio.sleep(2 * POLL_S)
        assert await r.ctx.evses[1].authorize_remote("TOKEN-1", "ISO14443")
        await trio.sleep(45)
        events = r.tx_events()
    started, *updates = events
    assert started["eventType"] == "Started" and started["numberOfPhasesUsed"] == 1
    reported = [(e["triggerReason"], e["numberOfPhasesUsed"]) for e in updates if "numberOfPhasesUsed" in e]
    assert reported == [("MeterValuePeriodic", 2)]  # the EV charges on two phases; said once


async def test_number_of_phases_used_comes_with_the_first_reading_that_shows_current(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with rig(tmp_path, V201, settings={TX_UPDATED_INTERVAL: "10"}) as r:
        await r.plug_and_authorize()
        await trio.sleep(45)
        started, *updates = r.tx_events()
    assert "numberOfPhasesUsed" not in started  # no current at the start point
    periodic = [e for e in updates if e["triggerReason"] == "MeterValuePeriodic"]
    assert len(periodic) >= 3
    assert periodic[0]["numberOfPhasesUsed"] == 3 and all("numberOfPhasesUsed" not in e for e in periodic[1:])


def _write_transactions(statements: list[str]) -> list[list[str]]:
    """The statements of each committed SQLite write transaction (BEGIN IMMEDIATE ... COMMIT) traced."""
    done: list[list[str]] = []
    current: list[str] | None = None
    for statement in statements:
        if statement.startswith("BEGIN"):
            current = []
        elif statement == "COMMIT" and current is not None:
            done.append(current)
            current = None
        elif current is not None:
            current.append(statement)
    return done


async def test_v16_sampled_values_and_stop_txn_sampled_data_of_one_interval_are_one_commit(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6: the MeterValues of an interval and the StopTxnSampledData values taken with it are written
    in one SQLite transaction (was two: one commit, one fsync, per interval saved), and both still
    arrive: three MeterValues, three kept rows in StopTransaction.transactionData."""
    async with rig(tmp_path, V16) as r:
        for key, value in (
            ("MeterValueSampleInterval", "20"),
            ("StopTxnSampledData", "Energy.Active.Import.Register"),
        ):
            answer = await call(r.csms, r.conn, "ChangeConfiguration", {"key": key, "value": value})
            assert answer == {"status": "Accepted"}
        await r.plug_and_authorize()
        await r.csms.wait_for("StartTransaction")
        storage = r.ctx.blocks.transactions.services.storage
        statements: list[str] = []
        await storage.read(lambda conn: conn.set_trace_callback(statements.append))
        await r.csms.wait_for("MeterValues", 3)
        await storage.read(lambda conn: conn.set_trace_callback(None))
        r.board.unplug()
        stop = await r.ended(V16)
    sampling = [
        tx
        for tx in _write_transactions(statements)
        if any("ended_values" in s or "INSERT INTO outbox" in s for s in tx)
    ]
    assert len(sampling) == 3  # one commit per interval
    for tx in sampling:
        assert any(s.startswith("UPDATE transactions SET ended_values") for s in tx)
        assert any(s.startswith("INSERT INTO outbox") and "'MeterValues'" in s for s in tx)
    assert len(_meter_values_of(stop, V16, "Sample.Periodic")) == 3


async def test_v16_meter_values_every_meter_value_sample_interval_and_stop_txn_sampled_data(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """1.6 4.7: MeterValues (transactionId, context Sample.Periodic) every MeterValueSampleInterval as
    the CSMS sets the key, with the MeterValuesSampledData measurands (default: the register, the
    power, the current of each phase); 0 stops them. 4.10 / 9.1: StopTxnSampledData taken at the same
    interval rides in StopTransaction.transactionData with the Transaction.Begin / End values."""
    async with rig(tmp_path, V16) as r:
        for key, value in (
            ("MeterValueSampleInterval", "20"),
            ("StopTxnSampledData", "Energy.Active.Import.Register,Current.Import"),
        ):
            answer = await call(r.csms, r.conn, "ChangeConfiguration", {"key": key, "value": value})
            assert answer == {"status": "Accepted"}
        await r.plug_and_authorize()
        await r.csms.wait_for("StartTransaction")
        await trio.sleep(70)
        sent = r.csms.of("MeterValues")
        answer = await call(
            r.csms, r.conn, "ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "0"}
        )
        assert answer == {"status": "Accepted"}
        await trio.sleep(60)
        assert len(r.csms.of("MeterValues")) == len(sent)  # 0: no more sampled values
        r.board.unplug()
        stop = await r.ended(V16)
    assert len(sent) == 3
    assert [b.at - a.at for a, b in itertools.pairwise(sent)] == [20, 20]
    for seen in sent:
        payload: dict[str, Any] = seen.call.payload
        assert payload["transactionId"] == 42 and payload["connectorId"] == 1
        [meter] = payload["meterValue"]
        values = {
            v["measurand"] + ("/" + v["phase"] if "phase" in v else ""): v for v in meter["sampledValue"]
        }
        assert set(values) == {
            "Energy.Active.Import.Register",
            "Power.Active.Import",
            "Current.Import/L1",
            "Current.Import/L2",
            "Current.Import/L3",
        }
        assert {v["context"] for v in values.values()} == {"Sample.Periodic"}
        assert values["Current.Import/L3"]["unit"] == "A" and float(values["Current.Import/L3"]["value"]) > 30
        assert values["Power.Active.Import"]["unit"] == "W"
    kept = _meter_values_of(stop, V16, "Sample.Periodic")
    assert len(kept) == 3 and all(set(row) == ENERGY_AND_CURRENTS for row in kept)
    assert _meter_values_of(stop, V16, "Transaction.Begin") and _meter_values_of(stop, V16, "Transaction.End")


def _registers(payloads: list[dict[str, Any]]) -> list[float]:
    """Every Energy.Active.Import.Register value in these messages (meterValue / transactionData) but
    the Transaction.Begin ones (the start value, lower by nature)."""
    return [
        float(value["value"])
        for payload in payloads
        for meter in [*payload.get("meterValue", []), *payload.get("transactionData", [])]
        for value in meter["sampledValue"]
        if value.get("measurand") == "Energy.Active.Import.Register"
        and value.get("format") != "SignedData"
        and value.get("context") != "Transaction.Begin"
    ]


@BOTH
async def test_billing_rule_a_resumed_transaction_never_reports_less_than_before_the_restart(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The meter reads less after the restart than the register the transaction already reported (a
    swapped or reset meter; the driver's own backwards check starts afresh with the process): the
    resumed transaction's periodic values and its end message carry the highest value already
    reported, never less (audit: dropping the check in the 1.6 MeterValues or the 2.0.1 Ended event
    went unnoticed)."""
    settings = {TX_UPDATED_INTERVAL: "10"}
    first = CsmsPeer(version)
    async with rig(tmp_path, version, csms=first, settings=settings) as r:
        await r.plug_and_authorize()
        await first.wait_for(START[version])
        await trio.sleep(60)
        await r.ctx.outbox.wait_empty()
    before = _registers(_payloads(first, "MeterValues") + _payloads(first, "TransactionEvent"))
    floor = max(before)
    assert floor > 1200  # a minute at 22 kW on top of the 1000 Wh start
    swapped = SimMeter(230, initial_energy_wh=500, poll_interval_s=POLL_S)
    second = CsmsPeer(version)
    async with rig(tmp_path, version, csms=second, meter=swapped, plugged=True, settings=settings) as r:
        await trio.sleep(25)
        assert swapped.energy_wh < floor
        r.board.unplug()
        ended = await r.ended(version)
    after = _registers(_payloads(second, "MeterValues") + _payloads(second, "TransactionEvent"))
    assert len(after) >= 2 and min(after) >= floor
    if version is V16:
        assert ended["meterStop"] >= round(floor)
    else:
        end = _values(ended, version, "Transaction.End")
        assert end["Energy.Active.Import.Register"] >= floor


async def test_j02_v201_periodic_values_are_the_tx_updated_measurands_every_tx_updated_interval(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """2.0.1 J02: an Updated event, triggerReason MeterValuePeriodic, every TxUpdatedInterval with the
    TxUpdatedMeasurands (context Sample.Periodic); the Started event's Transaction.Begin value has the
    TxStartedMeasurands. The three lists differ here, so taking one for another fails (audit: with
    the defaults, Started / Ended / Aligned measurands are all the register alone)."""
    settings = {
        TX_UPDATED_INTERVAL: "20",
        TX_UPDATED_MEASURANDS: "Energy.Active.Import.Register,Power.Active.Import",
        TX_STARTED_MEASURANDS: "Energy.Active.Import.Register,Voltage",
    }
    async with rig(tmp_path, V201, settings=settings) as r:
        await r.plug_and_authorize()
        await r.csms.wait_for("TransactionEvent")
        await trio.sleep(70)
        started, *updates = r.tx_events()
    [begin] = started["meterValue"]
    assert {(v["context"], v["measurand"], v.get("phase")) for v in begin["sampledValue"]} == {
        ("Transaction.Begin", "Energy.Active.Import.Register", None),
        ("Transaction.Begin", "Voltage", "L1-N"),
        ("Transaction.Begin", "Voltage", "L2-N"),
        ("Transaction.Begin", "Voltage", "L3-N"),
    }
    periodic = [e for e in updates if e["triggerReason"] == "MeterValuePeriodic"]
    assert len(periodic) == 3
    stamps = [datetime.fromisoformat(e["meterValue"][0]["timestamp"]) for e in periodic]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)] == [20, 20]
    for event in periodic:
        [meter] = event["meterValue"]
        assert {(v["context"], v["measurand"]) for v in meter["sampledValue"]} == {
            ("Sample.Periodic", "Energy.Active.Import.Register"),
            ("Sample.Periodic", "Power.Active.Import"),
        }


async def test_e02_charging_state_changes_are_updated_events_with_the_new_state(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """E02: each change of a running transaction's charging state is an Updated event, triggerReason
    ChargingStateChanged, with the new chargingState: Charging when energy flows, SuspendedEV when the
    EV stops drawing, SuspendedEVSE when the station withholds its offer (audit: only Charging was
    checked, in the HIL end-to-end test)."""
    async with rig(tmp_path, V201) as r:
        await r.plug_and_authorize()
        await trio.sleep(10)
        r.board.set_ev(wants_energy=False)
        await trio.sleep(10)
        r.board.set_ev(wants_energy=True)
        await trio.sleep(10)
        await r.ctx.evses[1].suspend_energy(True)
        await trio.sleep(10)
        changes = [e for e in r.tx_events() if e["triggerReason"] == "ChargingStateChanged"]
    assert all(e["eventType"] == "Updated" for e in changes)
    assert [e["transactionInfo"]["chargingState"] for e in changes] == [
        "Charging",
        "SuspendedEV",
        "Charging",
        "SuspendedEVSE",
    ]


async def test_e14_an_ended_transaction_is_not_ongoing_while_its_ended_event_waits_in_the_queue(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """E14: once ended, a transaction is not ongoing, even while its Ended event still waits in the
    queue for the CSMS's answer, and messagesInQueue says the event is there (audit: the test asked
    only after the Ended event was delivered, when the record is gone whatever the check says)."""
    csms = CsmsPeer(V201).then("TransactionEvent", {}, {}, NoAnswer())  # Started, Charging, Ended
    async with rig(tmp_path, V201, csms=csms, settings={TX_UPDATED_INTERVAL: "0"}) as r:
        await r.plug_and_authorize()
        await trio.sleep(10)
        r.board.unplug()
        ended = await r.ended(V201)
        assert [e["eventType"] for e in r.tx_events()] == ["Started", "Updated", "Ended"]
        asked = await r.csms.send_call(
            r.conn, "GetTransactionStatus", {"transactionId": ended["transactionInfo"]["transactionId"]}
        )
        answer = await r.csms.wait_answer(asked)
        assert answer.payload == {"ongoingIndicator": False, "messagesInQueue": True}  # type: ignore[union-attr]

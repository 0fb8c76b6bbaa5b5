"""Transactions left open by a previous run are ended at the next start, through the outbox, exactly once.

1.6: StopTransaction with reason PowerLoss (no clean shutdown) or Reboot (clean shutdown), meterStop =
the last persisted reading. 2.0.1: TransactionEvent Ended, stoppedReason PowerLoss / Reboot, the next
seqNo (use case E "stop transaction"; FR ids not checked line by line). Real SQLite file, sim meters.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from runtime_session_harness import (
    EPOCH,
    CsmsPeer,
    MemoryConnection,
    is_end_message,
    serve_until_link_down,
    station_config,
)

from evstation.drivers.sim.board import SimChargeController
from evstation.drivers.sim.meter import SimMeter
from evstation.protocol.meter_values import Context, Reading, meter_value
from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.transactions import CLEAN_SHUTDOWN_KEY, messages_for
from evstation.runtime.blocks.transactions.formats import StartData, UpdateData
from evstation.runtime.clock import WallClock, iso
from evstation.runtime.device_model import load_device_model
from evstation.runtime.evse import Evses
from evstation.runtime.outbox import Outbox
from evstation.runtime.session import SessionContext, new_session
from evstation.runtime.storage import TransactionRecord, open_storage

V16, V201 = OcppVersion.V16, OcppVersion.V201
POLL_S = 1.0  # sim meter poll interval


@asynccontextmanager
async def station_run(tmp_path: Path, version: OcppVersion, meter: SimMeter) -> AsyncIterator[SessionContext]:
    """One run of the station over the same SQLite file: EVSE 1 metered by `meter`.

    Leaving the block without `run_transactions` is a run that was killed: nothing more is written.
    """
    async with open_storage(tmp_path / "station.db") as storage, trio.open_nursery() as nursery:
        evses = Evses()
        await nursery.start(evses.add(1, SimChargeController(), meter).run)
        await nursery.start(evses.add(2, SimChargeController(), None).run)
        await trio.sleep(2 * POLL_S)  # the first readings are in
        config = station_config(tmp_path, version)
        yield new_session(
            config,
            storage=storage,
            outbox=Outbox(storage),
            evses=evses,
            clock=WallClock.anchored(EPOCH),
            device_model=await load_device_model(storage, config),
        )
        nursery.cancel_scope.cancel()


def sim_meter() -> SimMeter:
    return SimMeter(230, initial_energy_wh=1000, poll_interval_s=POLL_S)


async def set_energy(meter: SimMeter, energy_wh: float) -> None:
    meter.script(energy_wh=energy_wh)
    await trio.sleep(2 * POLL_S)  # polled and followed by the EVSE


async def start_transaction(ctx: SessionContext, version: OcppVersion) -> TransactionRecord:
    """A transaction on EVSE 1 started from the meter's current reading, as the block starts one."""
    services = ctx.blocks.transactions.services
    energy = services.evses[1].energy_wh()
    data = StartData(1, 1, "TOKEN-1", "ISO14443", "Authorized", ctx.clock.now(), False, energy, None, None)
    return await messages_for(version).start(services, data)


async def sample(ctx: SessionContext, version: OcppVersion, record: TransactionRecord) -> None:
    """One periodic meter value of the transaction, from the meter's current reading."""
    services = ctx.blocks.transactions.services
    energy = services.evses[1].energy_wh()
    at = ctx.clock.now()
    reading = Reading(energy_import_wh=energy)
    meter = meter_value(version, iso(at), reading, ["Energy.Active.Import.Register"], Context.PERIODIC)
    data = UpdateData("MeterValuePeriodic", at, False, meter=meter, energy_wh=energy)
    await messages_for(version).updated(services, record, data)


async def killed_run_with_open_transaction(tmp_path: Path, version: OcppVersion) -> str:
    """Start a transaction and persist one sample at 1500 Wh; the meter moves on to 1700 Wh, then the
    process dies (no clean shutdown, never connected). Returns the sample's timestamp."""
    meter = sim_meter()
    async with station_run(tmp_path, version, meter) as ctx:
        record = await start_transaction(ctx, version)
        await set_energy(meter, 1500)
        sampled_at = iso(ctx.clock.now())
        await sample(ctx, version, record)
        if version is V201:
            data = UpdateData("ChargingStateChanged", ctx.clock.now(), False, charging_state="Charging")
            await messages_for(version).updated(ctx.blocks.transactions.services, record, data)
        await set_energy(meter, 1700)  # never persisted: lost with the power
    return sampled_at


async def restart_and_deliver(tmp_path: Path, version: OcppVersion) -> CsmsPeer:
    """A run with transactions running and a CSMS: returns once the outbox is empty."""
    csms = CsmsPeer(version)
    conn = MemoryConnection(version)
    async with station_run(tmp_path, version, sim_meter()) as ctx, trio.open_nursery() as nursery:
        await nursery.start(ctx.blocks.transactions.run)
        nursery.start_soon(csms.serve, conn)
        nursery.start_soon(serve_until_link_down, conn, ctx)
        await csms.wait_for("StatusNotification")
        await ctx.outbox.wait_empty()
        assert (
            await ctx.blocks.transactions.services.storage.transactions() == []
        )  # forgotten once the end was acknowledged
        nursery.cancel_scope.cancel()
    return csms


async def test_v16_power_loss_stop_transaction_powerloss_follows_unconfirmed_start_once(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """StopTransaction(PowerLoss), meterStop = last persisted reading, queued behind the never-confirmed
    StartTransaction and rewritten with the CSMS's id; a second kill before it was sent queues no other."""
    sampled_at = await killed_run_with_open_transaction(tmp_path, V16)
    # Second run: ends the transaction, then dies too before connecting.
    async with station_run(tmp_path, V16, sim_meter()) as ctx:
        assert await ctx.blocks.transactions.end_interrupted() == 1
        assert [e.action for e in await ctx.outbox.entries()] == [
            "StartTransaction",
            "MeterValues",
            "StopTransaction",
        ]
    csms = await restart_and_deliver(tmp_path, V16)
    transactional = [a for a in csms.actions() if a in ("StartTransaction", "MeterValues", "StopTransaction")]
    assert transactional == ["StartTransaction", "MeterValues", "StopTransaction"]
    stop = csms.of("StopTransaction")[0].call.payload
    assert stop == {"transactionId": 42, "meterStop": 1500, "timestamp": sampled_at, "reason": "PowerLoss"}


async def test_v201_power_loss_ended_powerloss_next_seq_no_queued_once_across_two_restarts(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    sampled_at = await killed_run_with_open_transaction(tmp_path, V201)
    async with station_run(tmp_path, V201, sim_meter()) as ctx:
        assert await ctx.blocks.transactions.end_interrupted() == 1
    csms = await restart_and_deliver(tmp_path, V201)
    events: list[dict[str, Any]] = [s.call.payload for s in csms.of("TransactionEvent")]
    assert [(e["eventType"], e["seqNo"]) for e in events] == [
        ("Started", 0),
        ("Updated", 1),
        ("Updated", 2),
        ("Ended", 3),
    ]
    ended = events[-1]
    assert ended["triggerReason"] == "AbnormalCondition"
    assert ended["transactionInfo"]["stoppedReason"] == "PowerLoss"
    assert ended["transactionInfo"]["transactionId"] == events[0]["transactionInfo"]["transactionId"]
    assert ended["timestamp"] == sampled_at
    assert ended["offline"] is True
    assert ended["meterValue"][0]["sampledValue"][0]["value"] == 1500


@pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])
async def test_clean_shutdown_ends_open_transaction_with_reason_reboot(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """SIGTERM / SIGINT leave the transaction open in storage with the reading at shutdown; the next
    start ends it with reason Reboot. The marker is cleared, so a later kill reads as PowerLoss."""
    meter = sim_meter()
    async with station_run(tmp_path, version, meter) as ctx, trio.open_nursery() as nursery:
        await nursery.start(ctx.blocks.transactions.run)
        await start_transaction(ctx, version)
        await set_energy(meter, 1800)
        shutdown_at = iso(ctx.clock.now())
        nursery.cancel_scope.cancel()
    csms = await restart_and_deliver(tmp_path, version)
    async with open_storage(tmp_path / "station.db") as storage:
        # restart_and_deliver shut down cleanly itself; before that its start had cleared the marker.
        assert await storage.get_setting(CLEAN_SHUTDOWN_KEY) is not None
    if version is V16:
        stop = csms.of("StopTransaction")[0].call.payload
        assert (stop["reason"], stop["meterStop"], stop["timestamp"]) == ("Reboot", 1800, shutdown_at)
        assert len(csms.of("StopTransaction")) == 1
    else:
        ended: list[dict[str, Any]] = [
            s.call.payload for s in csms.of("TransactionEvent") if s.call.payload["eventType"] == "Ended"
        ]
        assert len(ended) == 1
        assert ended[0]["transactionInfo"]["stoppedReason"] == "Reboot"
        assert ended[0]["meterValue"][0]["sampledValue"][0]["value"] == 1800
        assert ended[0]["timestamp"] == shutdown_at


async def test_power_loss_after_a_clean_restart_reads_as_power_loss(
    clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The clean-shutdown marker applies to the next start only."""
    async with station_run(tmp_path, V16, sim_meter()) as ctx, trio.open_nursery() as nursery:
        await nursery.start(ctx.blocks.transactions.run)
        nursery.cancel_scope.cancel()  # clean shutdown, no transaction
    async with station_run(tmp_path, V16, sim_meter()) as ctx:
        assert await ctx.blocks.transactions.end_interrupted() == 0  # clears the marker
        await start_transaction(ctx, V16)
        # killed here
    async with station_run(tmp_path, V16, sim_meter()) as ctx:
        assert await ctx.blocks.transactions.end_interrupted() == 1
        stops = [e.payload for e in await ctx.outbox.entries() if e.action == "StopTransaction"]
    assert [s["reason"] for s in stops] == ["PowerLoss"]


@pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])
async def test_the_power_loss_end_goes_out_before_the_statuses_at_boot(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """The end that the start-up recovery queues for a transaction the kill left open reaches the CSMS
    before the connectors' first StatusNotifications (Available after an end, as in the session's
    status ordering): a CSMS must not see EVSE 1 Available while its transaction still runs. Fails if
    the recovery does not record its ends for the status sender (checked, both versions)."""
    await killed_run_with_open_transaction(tmp_path, version)
    csms = await restart_and_deliver(tmp_path, version)
    actions = csms.actions()
    end = next(i for i, seen in enumerate(csms.seen) if is_end_message(seen.call))
    assert "StatusNotification" not in actions[:end]
    assert actions.count("StatusNotification") >= 2

"""A transaction's end is queued at most once, whatever races or retries reach it (libocpp #907 sent an
end twice): the end's build reads the record again in its own SQLite transaction. Real SQLite file, sim
meter, the formats' own `stop` as the transactions block calls it."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio.testing
from test_runtime_session_restart import V16, V201, sim_meter, start_transaction, station_run

from evstation.protocol.versions import OcppVersion
from evstation.runtime.blocks.transactions import messages_for
from evstation.runtime.blocks.transactions.formats import StopData


@pytest.mark.parametrize("version", [V16, V201], ids=["v16", "v201"])
async def test_a_second_stop_of_an_ended_transaction_queues_nothing(
    clock: trio.testing.MockClock, tmp_path: Path, version: OcppVersion
) -> None:
    """Two ends of one transaction that both took it for open (the recovery and the EVSE's own stop,
    or a write retried): the second finds the record Ended and queues no second StopTransaction /
    Ended event, nor bumps the seqNo. Fails if `stop` skips its is-open check (checked, both versions)."""
    async with station_run(tmp_path, version, sim_meter()) as ctx:
        services = ctx.blocks.transactions.services
        messages = messages_for(version)
        record = await start_transaction(ctx, version)
        data = StopData("Local", "StopAuthorized", ctx.clock.now(), offline=False, meter_wh=1200.0)
        first = await messages.stop(services, record, data)
        second = await messages.stop(services, record, data)  # `record` as read before the first
        assert first is not None and second is None
        entries = await ctx.outbox.entries()
        assert [messages.is_end(entry) for entry in entries] == [False, True]
        stored = await services.storage.get_transaction(record.id)
        assert stored is not None and not stored.is_open
        if version is V201:
            assert entries[-1].payload["seqNo"] == 1
            assert stored.seq_no == 1

"""`evstation demo`: a simulated two-EVSE station against the project's test CSMS on 127.0.0.1.

It prints a live timeline of every OCPP message and EVSE event while a scripted charging session
runs, then stops by itself. It uses only public pieces (config, station, test CSMS, sim drivers), so
it is also a worked example of embedding the runtime: like every user of `open_station`, it waits on
`Station.stop` beside its own work, and ends when a block asks the station to stop (a CSMS Reset),
since nothing would restart it. It must never need hardware or a network.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TextIO, TypeVar

import trio

from evstation.runtime.calls import Direction, MessageLogEntry
from evstation.runtime.config import StationConfig, parse_config
from evstation.runtime.events import Broadcaster, Dropped
from evstation.runtime.evse import ConnectorStatus, EvseEvent, Evses, StatusChanged
from evstation.runtime.lifecycle import StationOutcome
from evstation.runtime.station import Station, open_station
from evstation.runtime.testcsms import TestCsms, serve_test_csms

STATION_ID = "DEMO-0001"
DEMO_TOKEN = "04A2B3C4D5E6F7"
# How long the EV charges, and the meter-value interval while it does, in seconds of real time.
CHARGE_S = 6.0
METER_INTERVAL_S = 2.0
# A breath between scripted steps, so the timeline reads in order.
PAUSE_S = 1.0
# The whole demo must finish even if something hangs.
DEMO_DEADLINE_S = 60.0
_MAX_PAYLOAD_CHARS = 110

T = TypeVar("T")


def demo_config(
    version: str, port: int, data_dir: Path, meter_interval_s: float = METER_INTERVAL_S
) -> StationConfig:
    """Two simulated AC EVSEs, plain ws:// (security profile 0: development only)."""
    evse = [
        {
            "id": evse_id,
            "connector": [{"id": 1, "type": "cType2", "phases": 3, "max_current_a": 32}],
            "controller": {"driver": "sim"},
            "meter": {"driver": "sim", "initial_energy_wh": initial_wh},
        }
        for evse_id, initial_wh in ((1, 0), (2, 125_000))
    ]
    data = {
        "station": {
            "id": STATION_ID,
            "vendor": "evstation",
            "model": "demo-2x22",
            "serial_number": STATION_ID,
            "firmware_version": "demo",
            "ocpp_version": version,
            "data_dir": str(data_dir),
        },
        "csms": {
            "heartbeat_interval_s": 300,
            "meter_value_sample_interval_s": meter_interval_s,
            "retry_backoff_wait_minimum_s": 1,
            "retry_backoff_random_range_s": 1,
            "endpoints": [{"url": f"ws://127.0.0.1:{port}/ocpp", "security_profile": 0}],
        },
        "evse": evse,
        "control": {"socket_path": str(data_dir / "control.sock")},
        "logging": {"level": "WARNING"},
    }
    return parse_config(data, base_dir=data_dir)


class Timeline:
    """Prints one aligned line per message or event, with seconds since the demo started."""

    def __init__(self, out: TextIO, started_at: float) -> None:
        self._out = out
        self._t0 = started_at

    def line(self, who: str, what: str, detail: str = "") -> None:
        elapsed = trio.current_time() - self._t0
        if len(detail) > _MAX_PAYLOAD_CHARS:
            detail = detail[: _MAX_PAYLOAD_CHARS - 1] + "…"
        print(f"{elapsed:7.2f}s  {who:<16} {what:<28} {detail}", file=self._out, flush=True)

    def message(self, entry: MessageLogEntry | Dropped) -> None:
        if isinstance(entry, Dropped):
            self.line("timeline", f"({entry.count} messages not shown)")
            return
        arrow = "station → CSMS" if entry.direction is Direction.OUT else "CSMS → station"
        try:
            frame = json.loads(entry.frame)
        except ValueError:
            self.line(arrow, "(unreadable frame)", entry.frame)
            return
        kind = {2: "", 3: ".result", 4: ".error"}.get(frame[0], "?")
        payload = frame[-1] if frame[0] in (2, 3) else frame[2:]
        self.line(arrow, f"{entry.action or '?'}{kind}", json.dumps(payload, separators=(",", ":")))

    def evse_event(self, event: EvseEvent | Dropped) -> None:
        if isinstance(event, Dropped):
            self.line("timeline", f"({event.count} events not shown)")
            return
        detail = " ".join(
            f"{f.name}={getattr(getattr(event, f.name), 'value', getattr(event, f.name))}"
            for f in dataclasses.fields(event)
            if f.name != "evse_id"
        )
        self.line(f"EVSE {event.evse_id}", type(event).__name__, detail)


async def wait_status(evses: Evses, evse_id: int, wanted: ConnectorStatus) -> None:
    """Until EVSE `evse_id` has published `wanted` (at once if it already has)."""
    with evses.subscribe() as events:
        if evses[evse_id].published_status() is wanted:
            return
        async for event in events:
            if isinstance(event, StatusChanged) and event.evse_id == evse_id and event.status is wanted:
                return
            if isinstance(event, Dropped) and evses[evse_id].published_status() is wanted:
                return  # the change we wait for may be among the lost events: read the state instead


async def _script(station: Station, timeline: Timeline, pace: Pace) -> None:
    """Plug in, present a card, charge, let the EV finish, unplug."""
    await station.session.uplink.wait_online()
    await trio.sleep(pace.pause_s)  # let the boot-time StatusNotifications show before the EV arrives
    sim = station.sims[1]
    timeline.line("demo", "EV plugs into EVSE 1")
    sim.controller.plug_in()
    await wait_status(station.evses, 1, ConnectorStatus.PREPARING)
    timeline.line("demo", "driver taps card", DEMO_TOKEN)
    await station.evses.present_token(DEMO_TOKEN, "ISO14443", 1)
    await wait_status(station.evses, 1, ConnectorStatus.CHARGING)
    await trio.sleep(pace.charge_s)
    timeline.line("demo", "EV battery full")
    sim.controller.set_ev(wants_energy=False)
    await wait_status(station.evses, 1, ConnectorStatus.SUSPENDED_EV)
    await trio.sleep(pace.pause_s)
    timeline.line("demo", "driver unplugs")
    sim.controller.unplug()
    await wait_status(station.evses, 1, ConnectorStatus.AVAILABLE)
    # Let the last transaction message be queued (after the meter's reading at the end) and reach the
    # CSMS before stopping.
    await station.session.blocks.transactions.ids.wait_none(frozenset({1}))
    await station.outbox.wait_empty()


@dataclasses.dataclass(frozen=True)
class Pace:
    """How long the scripted steps last, in seconds of real time (tests run it faster)."""

    charge_s: float = CHARGE_S
    pause_s: float = PAUSE_S
    meter_interval_s: float = METER_INTERVAL_S


async def run_demo(
    version: str,
    out: TextIO = sys.stdout,
    pace: Pace = Pace(),
    *,
    csms_script: Callable[[TestCsms], Awaitable[None]] | None = None,
) -> StationOutcome | None:
    """Run the demo; returns None when the scripted session ran to its end, or why the station
    stopped first (RESET: the CSMS reset it, and the demo ends rather than restart it).

    `csms_script`, if given, runs beside the session with the test CSMS (what the CSMS does
    meanwhile, e.g. a Reset); it is cancelled when the demo ends."""
    with tempfile.TemporaryDirectory(prefix="evstation-demo-") as tmp:
        async with trio.open_nursery() as nursery:
            csms = await nursery.start(serve_test_csms)
            config = demo_config(version, csms.port, Path(tmp), pace.meter_interval_s)
            timeline = Timeline(out, trio.current_time())
            timeline.line("demo", f"OCPP {version}, test CSMS on 127.0.0.1:{csms.port}")
            if csms_script is not None:
                nursery.start_soon(csms_script, csms)
            # Subscribed before the station starts: its BootNotification may go out before
            # open_station returns.
            message_log: Broadcaster[MessageLogEntry] = Broadcaster()
            with message_log.subscribe() as messages:
                async with open_station(config, message_log=message_log) as station:
                    with station.evses.subscribe() as events:
                        async with trio.open_nursery() as printers:
                            printers.start_soon(_print_all, messages, timeline.message)
                            printers.start_soon(_print_all, events, timeline.evse_event)
                            outcome = await _until_stop_requested(station, _script(station, timeline, pace))
                            await trio.sleep(0.2)  # let the printers catch up with the last frames
                            printers.cancel_scope.cancel()
            if outcome is StationOutcome.RESET:
                timeline.line(
                    "demo",
                    "the CSMS reset the station: the demo ends",
                    "(evstation run exits with code 75 here, for its supervisor to start it again)",
                )
            timeline.line("demo", "done")
            nursery.cancel_scope.cancel()
    return outcome


async def _until_stop_requested(station: Station, work: Awaitable[None]) -> StationOutcome | None:
    """Await `work` unless a block asks the station to stop first (`Station.stop`, e.g. a CSMS
    Reset): then `work` is cancelled and the outcome returned. None: `work` finished."""
    outcome: StationOutcome | None = None
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            nonlocal outcome
            outcome = await station.stop.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch)
        await work
        nursery.cancel_scope.cancel()
    return outcome


async def _print_all(receive: trio.MemoryReceiveChannel[T], show: Callable[[T], None]) -> None:
    async for item in receive:
        show(item)


def demo_main(version: str) -> int:
    try:
        trio.run(_bounded_demo, version)
    except trio.TooSlowError:
        print(f"demo did not finish within {DEMO_DEADLINE_S:.0f} s", file=sys.stderr)
        return 1
    return 0


async def _bounded_demo(version: str) -> None:
    with trio.fail_after(DEMO_DEADLINE_S):
        await run_demo(version)

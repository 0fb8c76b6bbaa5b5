"""The station supervisor: builds the nursery tree of DESIGN.md from a StationConfig and runs it.

Services start in order with `nursery.start` (storage, hardware + EVSEs, session, link, control), so
each one is up before the next needs it. It never holds OCPP message formats or driver wire details.
"""

from __future__ import annotations

import functools
import logging
import random
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from evstation.drivers.api import ChargeController, PowerMeter
from evstation.protocol.backoff import BackoffSettings
from evstation.runtime.calls import MessageLogEntry
from evstation.runtime.config import (
    BoardMeterConfig,
    EvseConfig,
    ModbusRtuMeterConfig,
    ModbusTcpMeterConfig,
    RapiControllerConfig,
    SimControllerConfig,
    SimMeterConfig,
    StationConfig,
    YetiControllerConfig,
)
from evstation.runtime.control import serve_control
from evstation.runtime.events import Broadcaster
from evstation.runtime.evse import Evses
from evstation.runtime.link import CsmsEndpoint, Link, LinkSettings, run_link
from evstation.runtime.outbox import Outbox
from evstation.runtime.session.common import SessionContext, WallClock, serve_session
from evstation.runtime.session.transactions import run_transactions
from evstation.runtime.storage import Storage, open_storage

if TYPE_CHECKING:
    from evstation.drivers.meters.modbus import ModbusBus, RtuTransport, TcpTransport
    from evstation.drivers.sim.board import SimChargeController
    from evstation.drivers.sim.meter import SimMeter

log = logging.getLogger(__name__)


@dataclass(eq=False)
class SimHardware:
    """The simulated parts behind one EVSE, for the control API's simulation-only ops."""

    controller: SimChargeController
    meter: SimMeter | None


@dataclass(eq=False)
class Station:
    """The running station's parts, handed to the control API, the demo and tests."""

    config: StationConfig
    storage: Storage
    outbox: Outbox
    evses: Evses
    link: Link
    session: SessionContext
    message_log: Broadcaster[MessageLogEntry]
    sims: dict[int, SimHardware] = field(default_factory=dict)

    # --- the control API's view (runtime.control.ControlTarget) ------------------------------------

    async def status(self) -> dict[str, object]:
        stats = self.link.statistics()
        return {
            "ocpp_version": self.config.station.ocpp_version.value,
            "station_id": self.config.station.id,
            "link": stats.state.value,
            "network_up": stats.network_up,
            "boot": self.session.boot.state.value,
            "outbox_depth": await self.outbox.depth(),
        }

    def transaction_id(self, evse_id: int) -> str | None:
        return self.session.transaction_ids.get(evse_id)

    def set_network(self, up: bool) -> None:
        self.link.set_network(up)

    def sim_board(self, evse_id: int) -> SimChargeController | None:
        sim = self.sims.get(evse_id)
        return sim.controller if sim is not None else None

    def sim_meter(self, evse_id: int) -> SimMeter | None:
        sim = self.sims.get(evse_id)
        return sim.meter if sim is not None else None

    def ocpp_messages(self) -> Broadcaster[MessageLogEntry]:
        return self.message_log


def link_settings(config: StationConfig) -> LinkSettings:
    """Map station.toml's CSMS section onto the link supervisor's settings."""
    csms = config.csms
    endpoints = tuple(
        CsmsEndpoint(
            url=endpoint.url,
            priority=endpoint.priority,
            security_profile=endpoint.security_profile,
            password=endpoint.password.get_secret_value() if endpoint.password is not None else None,
            ca_bundle=endpoint.ca_bundle,
            client_cert=endpoint.client_cert,
            client_key=endpoint.client_key,
        )
        for endpoint in csms.endpoints
    )
    return LinkSettings(
        station_id=config.station.id,
        version=config.station.ocpp_version,
        endpoints=endpoints,
        backoff=BackoffSettings(
            wait_minimum_s=float(csms.retry_backoff_wait_minimum_s),
            random_range_s=float(csms.retry_backoff_random_range_s),
            repeat_times=csms.retry_backoff_repeat_times,
            attempts_per_endpoint=csms.connection_attempts_per_endpoint,
        ),
        ping_interval_s=float(csms.ping_interval_s),
    )


@dataclass(eq=False)
class _EvseParts:
    controller: ChargeController
    meter: PowerMeter | None
    sim: SimHardware | None
    has_lock: bool = True


class ModbusLines:
    """One `ModbusBus` per physical line (serial device or TCP endpoint), shared by the meters on it.

    RS-485 is half-duplex and a serial port has one owner: two meters on one line must share a bus,
    which serialises their requests. `close()` once the meters have stopped.
    """

    def __init__(self) -> None:
        self._buses: dict[tuple[object, ...], ModbusBus] = {}

    def bus_for(self, transport: TcpTransport | RtuTransport) -> ModbusBus:
        from evstation.drivers.meters.modbus import ModbusBus, TcpTransport

        key: tuple[object, ...] = (
            ("tcp", transport.host, transport.port)
            if isinstance(transport, TcpTransport)
            else ("rtu", transport.device)
        )
        bus = self._buses.get(key)
        if bus is None:
            bus = self._buses[key] = ModbusBus(transport)
        elif bus.transport != transport:
            raise ValueError(
                f"meters on {key[1]} disagree on the line settings ({bus.transport} vs {transport}): "
                "one line has one baud rate, parity and timeout"
            )
        return bus

    def close(self) -> None:
        for bus in self._buses.values():
            bus.close()
        self._buses.clear()


def _build_evse_parts(config: StationConfig, evse: EvseConfig, lines: ModbusLines) -> _EvseParts:
    """The drivers one EVSE's configuration asks for. Constructors start nothing.

    Each driver module is imported here, when a configuration names it: a simulated station never
    loads pymodbus or a serial board's code, a real one never loads the simulators.
    """
    voltage = float(config.electrical.line_voltage_v)
    phases = max(connector.phases for connector in evse.connector)
    meter_cfg = evse.meter
    sim_meter: SimMeter | None = None
    meter: PowerMeter | None = None
    if isinstance(meter_cfg, SimMeterConfig):
        from evstation.drivers.sim.meter import SimMeter

        sim_meter = SimMeter(
            voltage,
            supply_phases=phases,
            frequency_hz=float(config.electrical.frequency_hz),
            initial_energy_wh=float(meter_cfg.initial_energy_wh),
        )
        meter = sim_meter
    elif isinstance(meter_cfg, ModbusTcpMeterConfig | ModbusRtuMeterConfig):
        meter = _modbus_meter(meter_cfg, lines)

    controller_cfg = evse.controller
    controller: ChargeController
    sim: SimHardware | None = None
    if isinstance(controller_cfg, SimControllerConfig):
        from evstation.drivers.sim.board import SimChargeController
        from evstation.drivers.sim.ev import SimEv

        sim_controller = SimChargeController(
            SimEv(plugged=False, wants_energy=True, max_current_a=32.0, phases=phases), flow=sim_meter
        )
        controller = sim_controller
        sim = SimHardware(sim_controller, sim_meter)
    elif isinstance(controller_cfg, YetiControllerConfig):
        from evstation.drivers.boards.yeti import YetiBoard

        yeti = YetiBoard(
            controller_cfg.device,
            baudrate=controller_cfg.baud,
            keepalive_timeout=float(controller_cfg.keepalive_timeout_s),
        )
        controller = yeti
        if isinstance(meter_cfg, BoardMeterConfig):
            meter = yeti.power_meter()
    elif isinstance(controller_cfg, RapiControllerConfig):
        from evstation.drivers.boards.rapi import RapiBoard

        controller = RapiBoard(
            controller_cfg.device,
            baudrate=controller_cfg.baud,
            command_timeout=float(controller_cfg.command_timeout_s),
            poll_interval=float(controller_cfg.poll_interval_s),
        )
    else:  # pragma: no cover - the config's discriminated union has no other member
        raise AssertionError(f"unknown controller config {controller_cfg!r}")
    if isinstance(meter_cfg, BoardMeterConfig) and meter is None:
        raise ValueError(f"evse[{evse.id}].meter: driver 'board' needs a board with a meter (yeti)")
    # RAPI has no connector-lock command: such boards serve tethered cables (docs/boards.md).
    return _EvseParts(controller, meter, sim, has_lock=not isinstance(controller_cfg, RapiControllerConfig))


def _modbus_meter(cfg: ModbusTcpMeterConfig | ModbusRtuMeterConfig, lines: ModbusLines) -> PowerMeter:
    from evstation.drivers.meters import load_model
    from evstation.drivers.meters.modbus import ModbusMeter, RtuTransport, TcpTransport

    transport: TcpTransport | RtuTransport
    if isinstance(cfg, ModbusTcpMeterConfig):
        transport = TcpTransport(cfg.host, cfg.port, timeout_s=float(cfg.timeout_s))
    else:
        transport = RtuTransport(
            cfg.device,
            baudrate=cfg.baud,
            parity=cfg.parity,
            stopbits=cfg.stopbits,
            timeout_s=float(cfg.timeout_s),
        )
    return ModbusMeter(
        load_model(cfg.model),
        lines.bus_for(transport),
        unit_id=cfg.unit_id,
        poll_interval_s=float(cfg.poll_interval_s),
    )


def build_evses(
    config: StationConfig, lines: ModbusLines | None = None
) -> tuple[Evses, dict[int, SimHardware]]:
    """The EVSEs with their drivers; Modbus meters get their buses from `lines` (close it after use)."""
    evses = Evses()
    sims: dict[int, SimHardware] = {}
    lines = lines if lines is not None else ModbusLines()
    for evse_cfg in config.evse:
        parts = _build_evse_parts(config, evse_cfg, lines)
        max_current = max(connector.max_current_a for connector in evse_cfg.connector)
        if config.electrical.max_current_a is not None:
            max_current = min(max_current, float(config.electrical.max_current_a))
        evses.add(
            evse_cfg.id,
            parts.controller,
            parts.meter,
            connector_ids=tuple(connector.id for connector in evse_cfg.connector),
            max_current_a=max_current,
            has_lock=parts.has_lock,
        )
        if parts.sim is not None:
            sims[evse_cfg.id] = parts.sim
    return evses, sims


@asynccontextmanager
async def open_station(
    config: StationConfig,
    *,
    rng: random.Random | None = None,
    clock: WallClock | None = None,
    message_log: Broadcaster[MessageLogEntry] | None = None,
) -> AsyncIterator[Station]:
    """Start every service of the station; leaving the block shuts them all down.

    Open transactions stay in storage across a shutdown: they are resumed or ended after the restart.
    Pass `message_log` (already subscribed to) to see every frame, BootNotification included: the
    link dials as soon as it starts, possibly before this block is entered.
    """
    config.station.data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        storage = await stack.enter_async_context(open_storage(config.database_path))
        outbox = Outbox(storage)
        # Registered before the nursery below opens, so the buses close after the meters stopped.
        lines = ModbusLines()
        stack.callback(lines.close)
        evses, sims = build_evses(config, lines)
        if message_log is None:
            message_log = Broadcaster()
        session = SessionContext(
            config=config,
            storage=storage,
            outbox=outbox,
            evses=evses,
            clock=clock if clock is not None else WallClock.system(),
            message_log=message_log,
            meter_interval_s=float(config.csms.meter_value_sample_interval_s),
        )
        link = Link()
        station = Station(config, storage, outbox, evses, link, session, message_log, sims)
        async with trio.open_nursery() as nursery:
            await nursery.start(outbox.run)
            await nursery.start(evses.run)
            await nursery.start(run_transactions, session)
            await nursery.start(
                functools.partial(
                    run_link,
                    link_settings(config),
                    link,
                    functools.partial(serve_session, ctx=session),
                    rng=rng if rng is not None else random.Random(),
                )
            )
            control = config.control
            if control.socket_path is not None or control.tcp_port is not None:
                await nursery.start(
                    functools.partial(serve_control, station, control.socket_path, tcp_port=control.tcp_port)
                )
            try:
                yield station
            finally:
                nursery.cancel_scope.cancel()


async def run_station(
    config: StationConfig,
    *,
    ready: Callable[[Station], None] | None = None,
) -> None:
    """`evstation run`: run until SIGTERM or SIGINT, then shut down cleanly.

    A signal also stops a start-up that is still in progress (a board or meter slow to answer).
    """
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_shut_down_on_signal, signals, nursery.cancel_scope)
            async with open_station(config) as station:
                if ready is not None:
                    ready(station)
                await trio.sleep_forever()


async def _shut_down_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for signum in signals:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        scope.cancel()
        return

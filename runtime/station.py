"""The station supervisor: builds the nursery tree of DESIGN.md from a StationConfig and runs it.

Services start in order with `nursery.start` (storage, hardware + EVSEs, session, link, control), so
each one is up before the next needs it. It never holds OCPP message formats or driver wire details.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from evstation import __version__
from evstation.drivers.api import ChargeController, PowerMeter
from evstation.protocol.authorization import token_matcher
from evstation.protocol.backoff import BackoffSettings
from evstation.runtime.calls import MessageLogEntry
from evstation.runtime.clock import WallClock
from evstation.runtime.config import (
    BoardMeterConfig,
    EvseConfig,
    ModbusRtuMeterConfig,
    ModbusTcpMeterConfig,
    PhyVersoControllerConfig,
    RapiControllerConfig,
    SimControllerConfig,
    SimMeterConfig,
    StationConfig,
    YetiControllerConfig,
)
from evstation.runtime.control import serve_control
from evstation.runtime.device_model import load_device_model
from evstation.runtime.events import Broadcaster
from evstation.runtime.evse import Evses
from evstation.runtime.lifecycle import StationOutcome, StopRequests
from evstation.runtime.link import Connector, CsmsEndpoint, Link, LinkSettings, open_csms_stream, run_link
from evstation.runtime.network_profiles import NetworkProfiles
from evstation.runtime.notify import Notifier, open_notifier
from evstation.runtime.outbox import Outbox
from evstation.runtime.session import SessionContext, new_session
from evstation.runtime.storage import Storage, open_storage

if TYPE_CHECKING:
    from evstation.drivers.boards.phyverso import PhyVersoConnector, PhyVersoLink
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
    # Set by a block that needs the station stopped (Reset); `run_station` waits on it.
    stop: StopRequests = field(default_factory=StopRequests)

    # --- the control API's view (runtime.control.ControlTarget) ------------------------------------

    async def status(self) -> dict[str, object]:
        stats = self.link.statistics()
        return {
            "ocpp_version": self.config.station.ocpp_version.value,
            "station_id": self.config.station.id,
            "link": stats.state.value,
            "network_up": stats.network_up,
            "boot": self.session.uplink.boot.state.value,
            "outbox_depth": await self.outbox.depth(),
        }

    def transaction_id(self, evse_id: int) -> str | None:
        return self.session.blocks.transactions.ids.get(evse_id)

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
    """The drivers configured for one EVSE (and the simulated hardware behind them, if any)."""

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


class BoardLinks:
    """One `PhyVersoLink` per serial device, shared by the EVSEs whose controllers are its connectors.

    The links are started in the station's nursery before the EVSEs (`run`), so a link outlives the
    EVSE tasks of its connectors and can run each connector's safe stop when the station stops.
    """

    def __init__(self) -> None:
        self._links: dict[str, PhyVersoLink] = {}

    def connector_for(self, cfg: PhyVersoControllerConfig) -> PhyVersoConnector:
        """Charge port `cfg.connector` of the board on `cfg.device`, its link made on first use."""
        from evstation.drivers.boards.phyverso import HW_REVISIONS, LOCK_TYPES, PhyVersoLink

        link = self._links.get(cfg.device)
        if link is None:
            # The config refuses EVSEs that share a device but not these settings (config.py).
            link = self._links[cfg.device] = PhyVersoLink(
                cfg.device,
                baudrate=cfg.baud,
                hw_revision=HW_REVISIONS[cfg.hw_revision],
                keepalive_timeout=float(cfg.keepalive_timeout_s),
            )
        return link.connector(cfg.connector, lock=LOCK_TYPES[cfg.lock], has_socket=cfg.has_socket)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every link until cancelled; started once each link has opened (or failed to open) its port."""
        async with trio.open_nursery() as nursery:
            for link in self._links.values():
                await nursery.start(link.run)
            task_status.started()


def _build_evse_parts(
    config: StationConfig, evse: EvseConfig, lines: ModbusLines, boards: BoardLinks | None = None
) -> _EvseParts:
    """The drivers one EVSE's configuration asks for. Constructors start nothing.

    Each driver module is imported here, when a configuration names it: a simulated station never
    loads pymodbus or a serial board's code, a real one never loads the simulators.
    """
    voltage = float(config.electrical.line_voltage_v)
    phases = max(connector.phases for connector in evse.connector)
    meter_cfg = evse.meter
    sim_meter: SimMeter | None = None
    meter: PowerMeter | None = None
    sim_state = None
    if isinstance(meter_cfg, SimMeterConfig) or isinstance(evse.controller, SimControllerConfig):
        from evstation.drivers.sim.state import SimStateFile

        # The simulated physical world of this EVSE (meter register, EV plugged) outlives the process.
        sim_state = SimStateFile(config.station.data_dir / f"sim-evse-{evse.id}.json")
    if isinstance(meter_cfg, SimMeterConfig):
        from evstation.drivers.sim.meter import SimMeter

        sim_meter = SimMeter(
            voltage,
            supply_phases=phases,
            frequency_hz=float(config.electrical.frequency_hz),
            initial_energy_wh=float(meter_cfg.initial_energy_wh),
            state=sim_state,
        )
        meter = sim_meter
        if meter_cfg.signed:
            from evstation.drivers.sim.signed_meter import OcmfIdentity, SignedMeter

            # The same simulated register, every sample signed (OCMF); the control API still drives
            # the inner SimMeter. The key is made per process: a simulation aid, no calibrated meter.
            meter = SignedMeter(sim_meter, identity=OcmfIdentity(meter_serial=f"SIM-{evse.id:04d}"))
    elif isinstance(meter_cfg, ModbusTcpMeterConfig | ModbusRtuMeterConfig):
        meter = _modbus_meter(meter_cfg, lines)

    controller_cfg = evse.controller
    controller: ChargeController
    sim: SimHardware | None = None
    if isinstance(controller_cfg, SimControllerConfig):
        from evstation.drivers.sim.board import SimChargeController
        from evstation.drivers.sim.ev import SimEv

        sim_controller = SimChargeController(
            SimEv(plugged=False, wants_energy=True, max_current_a=32.0, phases=phases),
            flow=sim_meter,
            state=sim_state,
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
            has_lock=controller_cfg.lock,
            heartbeat_interval=controller_cfg.heartbeat_interval_s,
        )
    elif isinstance(controller_cfg, PhyVersoControllerConfig):
        if boards is None:
            raise ValueError(f"evse[{evse.id}].controller: a phyVERSO connector needs BoardLinks")
        controller = boards.connector_for(controller_cfg)
    else:  # pragma: no cover - the config's discriminated union has no other member
        raise AssertionError(f"unknown controller config {controller_cfg!r}")
    if isinstance(meter_cfg, BoardMeterConfig) and meter is None:
        raise ValueError(f"evse[{evse.id}].meter: driver 'board' needs a board with a meter (yeti)")
    return _EvseParts(controller, meter, sim, has_lock=evse.has_lock)


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
            rs485_direction=cfg.rs485_direction,
            rs485_gpio=cfg.rs485_gpio,
        )
    return ModbusMeter(
        load_model(cfg.model),
        lines.bus_for(transport),
        unit_id=cfg.unit_id,
        poll_interval_s=float(cfg.poll_interval_s),
    )


def build_evses(
    config: StationConfig, lines: ModbusLines | None = None, boards: BoardLinks | None = None
) -> tuple[Evses, dict[int, SimHardware]]:
    """The EVSEs with their drivers; Modbus meters get their buses from `lines` (close it after use),
    phyVERSO connectors their link from `boards` (run it before the EVSEs)."""
    evses = Evses(same_token=token_matcher(config.station.ocpp_version))
    sims: dict[int, SimHardware] = {}
    lines = lines if lines is not None else ModbusLines()
    for evse_cfg in config.evse:
        parts = _build_evse_parts(config, evse_cfg, lines, boards)
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
    connector: Connector = open_csms_stream,
) -> AsyncIterator[Station]:
    """Start every service of the station; leaving the block shuts them all down.

    Open transactions stay in storage across a shutdown: they are resumed or ended after the restart.
    Folders are made (or refused with a `StartupError` naming the path) and the control socket is
    listening before the link dials the CSMS.

    Pass `message_log` (already subscribed to) to see every frame, BootNotification included: the
    link dials as soon as it starts, possibly before this block is entered. `connector` opens the
    link's byte streams (tests and the long-run benchmark pass the test CSMS's in-memory streams).
    """
    prepare_directories(config)
    log.info("%s", startup_line(config))
    aid_warning = config.test_aids.warning()
    if aid_warning is not None:
        log.warning("%s", aid_warning)
    async with AsyncExitStack() as stack:
        storage = await stack.enter_async_context(open_storage(config.database_path))
        outbox = Outbox(storage)
        # Registered before the nursery below opens, so the buses close after the meters stopped.
        lines = ModbusLines()
        stack.callback(lines.close)
        boards = BoardLinks()
        evses, sims = build_evses(config, lines, boards)
        if message_log is None:
            message_log = Broadcaster()
        stop = StopRequests()
        session = new_session(
            config,
            storage=storage,
            outbox=outbox,
            evses=evses,
            clock=clock if clock is not None else WallClock.system(),
            message_log=message_log,
            device_model=await load_device_model(storage, config),
            stop=stop,
        )
        # Failed dials that are security events (a CSMS certificate that does not verify, HTTP 401)
        # go to the security block, which sends them once a connection comes up.
        link = Link(on_security_failure=session.blocks.security.link_failed)
        station = Station(config, storage, outbox, evses, link, session, message_log, sims, stop)
        async with trio.open_nursery() as nursery:
            await nursery.start(outbox.run)
            # The persisted availability is applied before the EVSEs drive their boards and long
            # before the first StatusNotification can go out.
            await nursery.start(session.blocks.availability.run)
            # Stored reservations show Reserved before the first status goes out.
            await nursery.start(session.blocks.reservation.run)
            if session.blocks.fault_events is not None:
                # Before the EVSEs, so a fault they find as they start becomes an event.
                await nursery.start(session.blocks.fault_events.run)
            # A phyVERSO link serves the boards of several EVSEs: it runs beside them, not inside one.
            await nursery.start(boards.run)
            await nursery.start(evses.run)
            await nursery.start(session.blocks.authorization.run)
            await nursery.start(session.blocks.transactions.run)
            await nursery.start(session.blocks.remote_control.run)
            await nursery.start(session.blocks.trigger.run)
            await nursery.start(session.blocks.provisioning.run)
            await nursery.start(session.blocks.reset.run)
            await nursery.start(session.blocks.security.run)
            control = config.control
            if control.socket_path is not None or control.tcp_port is not None:
                await nursery.start(
                    functools.partial(
                        serve_control,
                        station,
                        control.socket_path,
                        tcp_port=control.tcp_port,
                        tcp_token=control.tcp_token.get_secret_value() if control.tcp_token else None,
                        allow_network=control.allow_network_op,
                    )
                )
            settings = link_settings(config)
            # B09 / B10: the link dials NetworkConfigurationPriority's slots, stored profiles first.
            profiles = NetworkProfiles(endpoints=settings.endpoints, session=session, storage=storage)
            await nursery.start(
                functools.partial(
                    run_link,
                    settings,
                    link,
                    profiles.serve,
                    rng=rng if rng is not None else random.Random(),
                    connector=connector,
                    plan_source=profiles.dial_plan,
                )
            )
            try:
                yield station
            finally:
                nursery.cancel_scope.cancel()


async def run_station(
    config: StationConfig,
    *,
    ready: Callable[[Station], None] | None = None,
    environ: Mapping[str, str] | None = None,
) -> StationOutcome:
    """`evstation run`: run until SIGTERM or SIGINT, or until a block asks the station to stop (a
    CSMS Reset); shut down cleanly either way and say which.

    A signal also stops a start-up that is still in progress (a board or meter slow to answer). Under
    systemd (`environ` has NOTIFY_SOCKET, see deploy/evstation.service) it reports READY=1 once every
    service is up, WATCHDOG=1 from the event loop, and STOPPING=1 when it shuts down.
    """
    outcome = StationOutcome.SIGNALLED
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with open_notifier(environ) as notifier, trio.open_nursery() as nursery:
            nursery.start_soon(_shut_down_on_signal, signals, nursery.cancel_scope, notifier)
            if notifier is not None:
                # Pings from the start: a start-up that hangs is a blocked station too.
                await nursery.start(notifier.run_watchdog)
            async with open_station(config) as station:
                if notifier is not None:
                    await notifier.notify("READY=1", f"STATUS=running: {startup_line(config)}")
                if ready is not None:
                    ready(station)
                outcome = await station.stop.wait()
            nursery.cancel_scope.cancel()
    return outcome


async def _shut_down_on_signal(
    signals: AsyncIterator[int], scope: trio.CancelScope, notifier: Notifier | None
) -> None:
    async for signum in signals:
        log.info("received %s: shutting down", signal.Signals(signum).name)
        if notifier is not None:
            await notifier.notify("STOPPING=1")
        scope.cancel()
        return


class StartupError(Exception):
    """The station cannot start for a reason the operator fixes (a folder it may not create or write)."""


def startup_line(config: StationConfig) -> str:
    """The one line that says which station this process is: logged at start, shown in systemctl status."""
    control = config.control
    tcp = f" (and 127.0.0.1:{control.tcp_port})" if control.tcp_port is not None else ""
    return (
        f"evstation {__version__}: station {config.station.id}, OCPP {config.station.ocpp_version.value}, "
        f"data dir {config.station.data_dir}, control socket {config.control_socket_path}{tcp}"
    )


def prepare_directories(config: StationConfig) -> None:
    """Create the data dir and the control socket's folder where missing (with parents, as far as the
    file system allows); a `StartupError` names the path that cannot be made or written."""
    folders: dict[Path, str] = {config.station.data_dir: "data dir"}
    folders.setdefault(config.control_socket_path.parent, "control socket's folder")
    for folder, what in folders.items():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StartupError(f"cannot use {folder} as the {what}: it exists and is not a folder") from None
        except OSError as exc:
            raise StartupError(f"cannot create the {what} {folder}: {exc.strerror or exc}") from exc
        # The station writes there (database, socket); say so now rather than in a SQLite error later.
        if not os.access(folder, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
            raise StartupError(f"the {what} {folder} is not writable by this user (uid {os.geteuid()})")

"""ModbusMeter against the real pymodbus server emulator, over Modbus TCP on 127.0.0.1 and RTU on a pty pair.

Real sockets and threads: bounded by trio.fail_after on the real clock, short poll intervals and timeouts.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import trio

from evstation.drivers.api import FaultCode, MeterEvent, MeterFault, MeterRecovered, MeterSample, PowerMeter
from evstation.drivers.meters import ModbusBus, ModbusMeter, RtuTransport, TcpTransport, load_model
from evstation.drivers.meters.model import MeterField, read_plan
from evstation.drivers.meters.rs485 import GpioLine
from evstation.drivers.sim.modbus_emulator import EmulatorFault, ModbusMeterEmulator

MODELS = ["sdm630", "sdm72dm", "sdm72dm_v2", "abb_b23", "em340"]
TRANSPORTS = ["tcp", "rtu"]
IO_TIMEOUT_S = 0.25
POLL_S = 0.05
FIXED_NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

# Distinct per register (an off-by-one reads a neighbour) and representable at every map's resolution.
VALUES: dict[MeterField, float] = {
    MeterField.ENERGY_IMPORT: 1_234_500.0,
    MeterField.ENERGY_EXPORT: 6_700.0,
    MeterField.POWER: -1_234.5,
    MeterField.VOLTAGE_L1: 230.1,
    MeterField.VOLTAGE_L2: 231.2,
    MeterField.VOLTAGE_L3: 229.3,
    MeterField.CURRENT_L1: 16.01,
    MeterField.CURRENT_L2: 15.5,
    MeterField.CURRENT_L3: 0.25,
    MeterField.FREQUENCY: 50.1,
}


@contextlib.contextmanager
def serving(emulator: ModbusMeterEmulator, transport: str) -> Iterator[ModbusBus]:
    """The emulator served over `transport`, and a bus the driver reads it through."""
    if transport == "tcp":
        with emulator.serve_tcp() as (host, port), ModbusBus(TcpTransport(host, port, IO_TIMEOUT_S)) as bus:
            yield bus
    else:
        with emulator.serve_rtu_pty() as device, ModbusBus(RtuTransport(device, timeout_s=IO_TIMEOUT_S)) as b:
            yield b


def sample_field(sample: MeterSample, field: MeterField) -> float | None:
    match field:
        case MeterField.ENERGY_IMPORT:
            return sample.energy_import_wh
        case MeterField.ENERGY_EXPORT:
            return sample.energy_export_wh
        case MeterField.POWER:
            return sample.power_w
        case MeterField.FREQUENCY:
            return sample.frequency_hz
    group = sample.voltage_v if field.value.startswith("voltage") else sample.current_a
    value: float | None = getattr(group, field.value.rsplit("_", 1)[1])
    return value


async def next_event(meter: ModbusMeter, kind: type[MeterEvent]) -> MeterEvent:
    async for event in meter.events():
        if isinstance(event, kind):
            return event
    raise AssertionError("event stream ended")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("model_id", MODELS)
async def test_driver_reads_every_mapped_field_with_scaling(model_id: str, transport: str) -> None:
    model = load_model(model_id)
    emulator = ModbusMeterEmulator(model)
    for field in model.registers:
        emulator.set(field, VALUES[field])
    with trio.fail_after(10), serving(emulator, transport) as bus:
        meter = ModbusMeter(model, bus, poll_interval_s=POLL_S, wall_clock=lambda: FIXED_NOW)
        assert isinstance(meter, PowerMeter)
        await meter.poll_once()
    sample = meter.latest()
    assert sample is not None
    assert sample.timestamp == FIXED_NOW
    for field in MeterField:
        if field in model.registers:
            assert sample_field(sample, field) == pytest.approx(VALUES[field], rel=1e-6), field
        else:
            assert sample_field(sample, field) is None, field


def test_emulator_encodes_like_the_datasheets() -> None:
    sdm = ModbusMeterEmulator(load_model("sdm630"))
    sdm.set(MeterField.VOLTAGE_L1, 230.1)
    assert sdm.words("input", 0x0000, 2) == [0x4366, 0x199A]  # float32, high word first
    em = ModbusMeterEmulator(load_model("em340"))
    em.set(MeterField.VOLTAGE_L1, 230.1)
    assert em.words("input", 0x0000, 2) == [0x08FD, 0x0000]  # int32 x0.1 V, low word first
    abb = ModbusMeterEmulator(load_model("abb_b23"))
    abb.set(MeterField.ENERGY_IMPORT, 1_234_500.0)
    assert abb.words("holding", 0x5000, 4) == [0, 0, 0x0001, 0xE23A]  # uint64 x0.01 kWh = 123450


async def test_not_available_sentinel_reads_as_none() -> None:
    model = load_model("abb_b23")
    emulator = ModbusMeterEmulator(model)
    emulator.set_energy(1000.0)
    emulator.set(MeterField.VOLTAGE_L2, None)
    assert emulator.words("holding", 0x5B02, 2) == [0xFFFF, 0xFFFF]
    with trio.fail_after(10), serving(emulator, "tcp") as bus:
        meter = ModbusMeter(model, bus)
        await meter.poll_once()
    sample = meter.latest()
    assert sample is not None
    assert sample.voltage_v.l2 is None


@pytest.mark.parametrize(
    ("transport", "fault"),
    [
        ("tcp", EmulatorFault.SILENT),
        ("rtu", EmulatorFault.SILENT),
        ("rtu", EmulatorFault.CORRUPT_CRC),
        ("tcp", EmulatorFault.EXCEPTION),
        ("rtu", EmulatorFault.EXCEPTION),
    ],
)
async def test_fault_then_recovery_while_the_poll_task_keeps_running(
    transport: str, fault: EmulatorFault
) -> None:
    model = load_model("sdm630")
    emulator = ModbusMeterEmulator(model)
    emulator.set_energy(5_000.0)
    with trio.fail_after(15), serving(emulator, transport) as bus:
        meter = ModbusMeter(model, bus, poll_interval_s=POLL_S)
        async with trio.open_nursery() as nursery:
            await nursery.start(meter.run)
            assert isinstance(await next_event(meter, MeterSample), MeterSample)

            emulator.set_fault(fault)
            event = await next_event(meter, MeterFault)
            assert isinstance(event, MeterFault)
            assert event.code is FaultCode.METER_COMMUNICATION
            if fault is EmulatorFault.EXCEPTION:
                assert "exception response" in event.detail

            emulator.set_energy(5_100.0)
            emulator.clear_fault()
            await next_event(meter, MeterRecovered)
            after = await next_event(meter, MeterSample)
            assert isinstance(after, MeterSample)
            assert after.energy_import_wh == pytest.approx(5_100.0)
            nursery.cancel_scope.cancel()


async def test_connection_loss_is_a_fault_and_a_new_server_recovers() -> None:
    model = load_model("em340")
    emulator = ModbusMeterEmulator(model)
    emulator.set_energy(1_000.0)
    with trio.fail_after(15):
        with emulator.serve_tcp() as (host, port):
            bus = ModbusBus(TcpTransport(host, port, timeout_s=IO_TIMEOUT_S))
            meter = ModbusMeter(model, bus, poll_interval_s=POLL_S)
            await meter.poll_once()
        await meter.poll_once()  # server gone: connection refused or closed
        events = meter.events()
        assert isinstance(events.receive_nowait(), MeterSample)
        lost = events.receive_nowait()
        assert isinstance(lost, MeterFault)
        assert lost.code is FaultCode.METER_COMMUNICATION
        with emulator.serve_tcp(host, port):
            await meter.poll_once()
        bus.close()
    assert isinstance(events.receive_nowait(), MeterRecovered)
    assert isinstance(events.receive_nowait(), MeterSample)


async def test_energy_going_backwards_is_reported_and_not_trusted() -> None:
    model = load_model("sdm630")
    emulator = ModbusMeterEmulator(model)
    events: list[MeterEvent] = []
    with trio.fail_after(10), serving(emulator, "tcp") as bus:
        meter = ModbusMeter(model, bus)
        for energy in (5_000.0, 4_000.0, 4_500.0, 5_200.0):
            emulator.set_energy(energy, export_wh=10.0)
            await meter.poll_once()
        receive = meter.events()
        while True:
            try:
                events.append(receive.receive_nowait())
            except trio.WouldBlock:
                break
    kinds = [type(e) for e in events]
    assert kinds == [MeterSample, MeterFault, MeterSample, MeterSample, MeterRecovered, MeterSample]
    fault = events[1]
    assert isinstance(fault, MeterFault)
    assert fault.code is FaultCode.METER_ENERGY_BACKWARDS
    published = [e.energy_import_wh for e in events if isinstance(e, MeterSample)]
    assert published == pytest.approx([5_000.0, 5_000.0, 5_000.0, 5_200.0])
    latest = meter.latest()
    assert latest is not None and latest.energy_import_wh == pytest.approx(5_200.0)


async def test_two_meters_share_one_rtu_bus() -> None:
    model = load_model("sdm630")
    first = ModbusMeterEmulator(model, unit_id=1)
    first.set_energy(1_000.0)
    with trio.fail_after(10), serving(first, "rtu") as bus:
        meters = [ModbusMeter(model, bus, unit_id=1, poll_interval_s=POLL_S) for _ in range(2)]
        async with trio.open_nursery() as nursery:
            for meter in meters:
                nursery.start_soon(meter.poll_once)
    for meter in meters:
        sample = meter.latest()
        assert sample is not None and sample.energy_import_wh == pytest.approx(1_000.0)


def test_event_buffer_drops_oldest_when_nobody_reads() -> None:
    from evstation.drivers.meters.publisher import MeterEventPublisher

    publisher = MeterEventPublisher(buffer_size=2)
    for energy in (1.0, 2.0, 3.0):
        publisher.sample(MeterSample(timestamp=FIXED_NOW, energy_import_wh=energy))
    receive = publisher.events()
    first, second = receive.receive_nowait(), receive.receive_nowait()
    assert isinstance(first, MeterSample) and isinstance(second, MeterSample)
    assert (first.energy_import_wh, second.energy_import_wh) == (2.0, 3.0)
    assert publisher.dropped == 1


# ------------------------------------------------------------------------ RS-485 direction control


class RecordingLine:
    """A DE/RE line (hardware stand-in) that records each switch and what the port had sent by then."""

    def __init__(self, port: Any) -> None:
        self.port = port
        self.switches: list[bool] = []

    def set_transmit(self, on: bool) -> None:
        self.switches.append(on)

    def close(self) -> None:
        self.switches.append(False)


async def test_rts_direction_wraps_every_request_in_transmit_on_off() -> None:
    model = load_model("sdm72dm")
    emulator = ModbusMeterEmulator(model)
    emulator.set_energy(2_000.0)
    lines: list[RecordingLine] = []

    def line(port: Any) -> RecordingLine:
        lines.append(RecordingLine(port))
        return lines[-1]

    with trio.fail_after(10), emulator.serve_rtu_pty() as device:
        transport = RtuTransport(device, timeout_s=IO_TIMEOUT_S, rs485_direction="rts")
        with ModbusBus(transport, direction_line=line) as bus:
            meter = ModbusMeter(model, bus, poll_interval_s=POLL_S)
            await meter.poll_once()
    sample = meter.latest()
    assert sample is not None and sample.energy_import_wh == pytest.approx(2_000.0)
    (recorded,) = lines
    requests = len(read_plan(model))
    # Receive at open, then on/off around each request; the line is let go when the bus closes.
    assert recorded.switches == [False] + [True, False] * requests + [False]


async def test_rts_direction_on_a_port_without_rts_is_a_meter_fault_that_says_why() -> None:
    model = load_model("sdm72dm")
    emulator = ModbusMeterEmulator(model)
    # A pseudo-terminal has neither the kernel's RS-485 mode nor an RTS line.
    with (
        trio.fail_after(10),
        emulator.serve_rtu_pty() as device,
        ModbusBus(RtuTransport(device, timeout_s=IO_TIMEOUT_S, rs485_direction="rts")) as bus,
    ):
        meter = ModbusMeter(model, bus, poll_interval_s=POLL_S)
        await meter.poll_once()
        fault = await next_event(meter, MeterFault)
    assert isinstance(fault, MeterFault) and fault.code is FaultCode.METER_COMMUNICATION
    assert "RS-485 direction control" in fault.detail and "ioctl" in fault.detail


async def test_gpio_direction_without_gpiod_installed_says_how_to_get_it() -> None:
    if importlib.util.find_spec("gpiod") is not None:
        pytest.skip("gpiod is installed here")
    model = load_model("sdm72dm")
    emulator = ModbusMeterEmulator(model)
    with trio.fail_after(10), emulator.serve_rtu_pty() as device:
        transport = RtuTransport(
            device, timeout_s=IO_TIMEOUT_S, rs485_direction="gpio", rs485_gpio="gpiochip0:17"
        )
        with ModbusBus(transport) as bus:
            meter = ModbusMeter(model, bus, poll_interval_s=POLL_S)
            await meter.poll_once()
            fault = await next_event(meter, MeterFault)
    assert isinstance(fault, MeterFault) and "evstation[gpio]" in fault.detail


def test_gpio_line_names_parse() -> None:
    assert GpioLine.parse("gpiochip0:17") == GpioLine("gpiochip0", 17)
    with pytest.raises(ValueError, match="CHIP:LINE"):
        GpioLine.parse("GPIO17")

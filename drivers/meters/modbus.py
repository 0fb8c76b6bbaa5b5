"""`ModbusMeter`: reads any register map over Modbus TCP or RTU with pymodbus's synchronous clients.

The blocking client runs only in a worker thread (trio.to_thread), one request at a time per bus. A read
failure is a `MeterFault` event, never an exception out of the polling task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final, Literal, NoReturn, cast

import serial
import trio
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusException

from evstation.drivers.api import FaultCode, MeterEvent, MeterSample, PhaseValues
from evstation.drivers.meters.model import (
    MeterField,
    MeterModel,
    ReadBlock,
    RegisterFunction,
    decode_block,
    read_plan,
)
from evstation.drivers.meters.publisher import EVENT_BUFFER_SIZE, PUBLISHER_FAULTS, MeterEventPublisher
from evstation.drivers.meters.rs485 import DirectionLine, Rs485Direction, Rs485Error, open_rs485_port
from evstation.records import record

# Every fault a Modbus meter can raise: no answer / a bad frame / "not available" (METER_COMMUNICATION,
# `_poll`), and the publisher's energy check. The station gives its EVSE's FiscalMetering a Problem
# variable from this (runtime/fault_components.py); tests/drivers/test_drivers_fault_sets.py keeps it
# true to the code.
FAULTS_RAISED: Final[frozenset[FaultCode]] = frozenset({FaultCode.METER_COMMUNICATION}) | PUBLISHER_FAULTS


@record
class TcpTransport:
    """Modbus TCP (MBAP framing), e.g. a meter with Ethernet or an RS-485 gateway."""

    host: str
    port: int = 502
    timeout_s: float = 1.0
    retries: int = 0  # the next poll is the retry


@record
class RtuTransport:
    """Modbus RTU on a serial device (RS-485 adapter: /dev/ttyUSB0, or a pty in tests)."""

    device: str
    baudrate: int = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout_s: float = 0.5
    retries: int = 0
    handle_local_echo: bool = False  # adapters that read back their own transmission
    rs485_direction: Rs485Direction = "auto"  # who switches DE/RE (drivers/meters/rs485.py)
    rs485_gpio: str | None = None  # "gpiochip0:17" with rs485_direction = "gpio"


class MeterReadError(Exception):
    """One Modbus request failed: timeout, CRC error, exception response, connection loss."""


_Client = ModbusTcpClient | ModbusSerialClient


class ModbusBus:
    """One Modbus line (a serial port or a TCP endpoint) shared by every meter on it.

    Requests are serialised by a `trio.CapacityLimiter(1)` because RS-485 is half-duplex with one
    outstanding request. The client is opened lazily and dropped after a transport failure, so the next
    request starts from a clean connection. `close()` once no meter on the bus polls any more.
    """

    def __init__(
        self,
        transport: TcpTransport | RtuTransport,
        *,
        direction_line: Callable[[Any], DirectionLine] | None = None,
    ) -> None:
        """`direction_line` replaces the RTS/GPIO line of `transport.rs485_direction` (tests)."""
        self.transport = transport
        self._direction_line = direction_line
        self._limiter = trio.CapacityLimiter(1)
        self._client: _Client | None = None
        # Only the worker thread holding the limiter touches the client; the lock covers `close()`.
        self._lock = threading.Lock()

    def __enter__(self) -> ModbusBus:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def read(self, function: RegisterFunction, address: int, count: int, unit_id: int) -> list[int]:
        """Read `count` registers; raise `MeterReadError` on any failure."""
        return await trio.to_thread.run_sync(
            self._read_blocking, function, address, count, unit_id, limiter=self._limiter
        )

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                _close(self._client)
                self._client = None

    def _open(self) -> _Client:
        t = self.transport
        client: _Client
        if isinstance(t, TcpTransport):
            client = ModbusTcpClient(t.host, port=t.port, timeout=t.timeout_s, retries=t.retries)
            where = f"{t.host}:{t.port}"
        else:
            client = ModbusSerialClient(
                t.device,
                baudrate=t.baudrate,
                parity=t.parity,
                stopbits=t.stopbits,
                bytesize=t.bytesize,
                timeout=t.timeout_s,
                retries=t.retries,
                handle_local_echo=t.handle_local_echo,
            )
            where = t.device
            if t.rs485_direction != "auto":
                # pymodbus uses a port it finds already set instead of opening its own.
                try:
                    client.socket = open_rs485_port(
                        t.device,
                        direction=t.rs485_direction,
                        gpio=t.rs485_gpio,
                        baudrate=t.baudrate,
                        parity=t.parity,
                        stopbits=t.stopbits,
                        bytesize=t.bytesize,
                        timeout=t.timeout_s,
                        line_factory=self._direction_line,
                    )
                except (Rs485Error, serial.SerialException, OSError, ValueError) as exc:
                    raise MeterReadError(f"cannot open {where} with RS-485 direction control: {exc}") from exc
        if not client.connect():
            _close(client)
            raise MeterReadError(f"cannot connect to {where}")
        return client

    def _read_blocking(self, function: RegisterFunction, address: int, count: int, unit_id: int) -> list[int]:
        with self._lock:
            try:
                if self._client is None:
                    self._client = self._open()
                reader = (
                    self._client.read_input_registers
                    if function == "input"
                    else self._client.read_holding_registers
                )
                reply = reader(address, count=count, device_id=unit_id)
            except (ModbusException, OSError, serial.SerialException) as exc:
                if self._client is not None:
                    _close(self._client)
                    self._client = None
                raise MeterReadError(f"{function} 0x{address:04X}+{count} unit {unit_id}: {exc}") from exc
        if reply.isError():
            code = getattr(reply, "exception_code", None)
            raise MeterReadError(
                f"{function} 0x{address:04X}+{count} unit {unit_id}: exception response, code {code}"
            )
        registers = list(reply.registers)
        if len(registers) != count:
            raise MeterReadError(f"{function} 0x{address:04X}: {len(registers)} registers, expected {count}")
        return registers


def _close(client: _Client) -> None:
    # pymodbus leaves close() unannotated.
    cast(Any, client).close()


def utc_now() -> datetime:
    return datetime.now(UTC)


class ModbusMeter:
    """A `PowerMeter` that polls one meter (one unit id on a `ModbusBus`) with a register map.

    `run` signals started after the first poll attempt, so `latest()` is filled then if the meter answers.
    """

    def __init__(
        self,
        model: MeterModel,
        bus: ModbusBus,
        *,
        unit_id: int | None = None,
        poll_interval_s: float = 1.0,
        wall_clock: Callable[[], datetime] = utc_now,
        event_buffer: int = EVENT_BUFFER_SIZE,
    ) -> None:
        if poll_interval_s <= 0:
            raise ValueError("poll_interval_s must be positive")
        self.model = model
        self.bus = bus
        self.unit_id = model.default_unit_id if unit_id is None else unit_id
        self.poll_interval_s = poll_interval_s
        self._wall_clock = wall_clock
        self._plan: list[ReadBlock] = read_plan(model)
        self._publisher = MeterEventPublisher(event_buffer)

    def events(self) -> trio.MemoryReceiveChannel[MeterEvent]:
        return self._publisher.events()

    def latest(self) -> MeterSample | None:
        return self._publisher.latest()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> NoReturn:
        next_poll = trio.current_time()
        await self.poll_once()
        task_status.started()
        while True:
            # Fixed cadence: a slow read shortens the following sleep instead of drifting the schedule.
            next_poll += self.poll_interval_s
            now = trio.current_time()
            if next_poll < now:
                next_poll = now
            await trio.sleep_until(next_poll)
            await self.poll_once()

    async def poll_once(self) -> None:
        """Read every block once and publish one sample or one fault."""
        values: dict[MeterField, float | None] = {}
        for block in self._plan:
            try:
                words = await self.bus.read(block.function, block.address, block.count, self.unit_id)
            except MeterReadError as exc:
                self._publisher.fault(FaultCode.METER_COMMUNICATION, str(exc))
                return
            values.update(decode_block(self.model, block, words))
        energy = values.get(MeterField.ENERGY_IMPORT)
        if energy is None:
            self._publisher.fault(FaultCode.METER_COMMUNICATION, "energy import reads 'not available'")
            return
        self._publisher.sample(
            MeterSample(
                timestamp=self._wall_clock(),
                energy_import_wh=energy,
                energy_export_wh=values.get(MeterField.ENERGY_EXPORT),
                power_w=values.get(MeterField.POWER),
                voltage_v=PhaseValues(
                    values.get(MeterField.VOLTAGE_L1),
                    values.get(MeterField.VOLTAGE_L2),
                    values.get(MeterField.VOLTAGE_L3),
                ),
                current_a=PhaseValues(
                    values.get(MeterField.CURRENT_L1),
                    values.get(MeterField.CURRENT_L2),
                    values.get(MeterField.CURRENT_L3),
                ),
                frequency_hz=values.get(MeterField.FREQUENCY),
            )
        )

"""A Modbus meter emulator for tests, CI and the HIL rig: a real pymodbus server serving a model's register
map over TCP on 127.0.0.1 or over RTU on a pseudo-terminal, with values set from Python and injectable faults.

It runs pymodbus's asyncio server in its own thread (it stands in for hardware); never use it in the
station's production path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import math
import os
import sys
import threading
import tty
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, cast

from pymodbus.client.mixin import ModbusClientMixin
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from evstation.drivers.meters.model import (
    FUNCTION_CODES,
    MeterField,
    MeterModel,
    RegisterFunction,
    load_model,
    read_plan,
)

_START_TIMEOUT_S = 10.0

# The emulator encodes with pymodbus's own converter, so driver decoding is checked against an
# independent implementation of the same word layouts.
_PYMODBUS_TYPES = {
    "int16": ModbusClientMixin.DATATYPE.INT16,
    "uint16": ModbusClientMixin.DATATYPE.UINT16,
    "int32": ModbusClientMixin.DATATYPE.INT32,
    "uint32": ModbusClientMixin.DATATYPE.UINT32,
    "int64": ModbusClientMixin.DATATYPE.INT64,
    "uint64": ModbusClientMixin.DATATYPE.UINT64,
    "float32": ModbusClientMixin.DATATYPE.FLOAT32,
    "float64": ModbusClientMixin.DATATYPE.FLOAT64,
}


class EmulatorFault(enum.Enum):
    """Faults the emulator can inject into its answers."""

    SILENT = "silent"  # receive requests, answer nothing: the client times out
    CORRUPT_CRC = "corrupt_crc"  # RTU only: flip the last CRC byte of every reply
    EXCEPTION = "exception"  # answer with a Modbus exception response (`exception_code`)


class ModbusMeterEmulator:
    """Holds a meter's register memory and serves it; thread-safe setters, context-managed servers.

    Every register the driver's read plan covers exists (gap registers read 0), like a real meter that
    answers its whole register table; anything else gets an "illegal data address" exception.
    """

    def __init__(self, model: MeterModel, *, unit_id: int | None = None) -> None:
        self.model = model
        self.unit_id = model.default_unit_id if unit_id is None else unit_id
        self._lock = threading.Lock()
        self._memory: dict[RegisterFunction, dict[int, int]] = {"input": {}, "holding": {}}
        for block in read_plan(model):
            for address in range(block.address, block.address + block.count):
                self._memory[block.function][address] = 0
        self._fault: EmulatorFault | None = None
        self._exception_code = int(ExcCodes.DEVICE_FAILURE)
        self.requests = 0  # requests received, for tests that wait for the driver to have polled

    # ------------------------------------------------------------------ values

    def set(self, field: MeterField | str, value: float | None) -> None:
        """Store a physical value (Wh, W, V, A, Hz) encoded as the real meter would; None = not available."""
        field = MeterField(field)
        if field not in self.model.registers:
            raise KeyError(f"model {self.model.id} has no register for {field.value}")
        spec = self.model.registers[field]
        raw: int | float
        if value is None:
            if spec.not_available:
                raw = spec.not_available[0]
            elif spec.type.startswith("float"):
                raw = math.nan
            else:
                raise ValueError(f"{self.model.id}.{field.value} has no 'not available' encoding")
        else:
            scaled = value / (spec.scale * self.model.unit_factor(field))
            raw = scaled if spec.type.startswith("float") else round(scaled)
        words = ModbusClientMixin.convert_to_registers(
            raw, _PYMODBUS_TYPES[spec.type], word_order=self.model.word_order_of(field)
        )
        with self._lock:
            for i, word in enumerate(words):
                self._memory[spec.function][spec.address + i] = word

    def set_energy(self, import_wh: float, export_wh: float | None = None) -> None:
        self.set(MeterField.ENERGY_IMPORT, import_wh)
        if export_wh is not None:
            self.set(MeterField.ENERGY_EXPORT, export_wh)

    def set_power(self, watts: float) -> None:
        self.set(MeterField.POWER, watts)

    def set_voltages(self, l1: float, l2: float, l3: float) -> None:
        for field, value in zip(
            (MeterField.VOLTAGE_L1, MeterField.VOLTAGE_L2, MeterField.VOLTAGE_L3), (l1, l2, l3), strict=True
        ):
            self.set(field, value)

    def set_currents(self, l1: float, l2: float, l3: float) -> None:
        for field, value in zip(
            (MeterField.CURRENT_L1, MeterField.CURRENT_L2, MeterField.CURRENT_L3), (l1, l2, l3), strict=True
        ):
            self.set(field, value)

    def set_frequency(self, hz: float) -> None:
        self.set(MeterField.FREQUENCY, hz)

    def set_words(self, function: RegisterFunction, address: int, words: list[int]) -> None:
        """Write raw registers (for tests of exact encodings)."""
        with self._lock:
            for i, word in enumerate(words):
                self._memory[function][address + i] = word

    def words(self, function: RegisterFunction, address: int, count: int) -> list[int]:
        with self._lock:
            return [self._memory[function][address + i] for i in range(count)]

    # ------------------------------------------------------------------ faults

    def set_fault(
        self, fault: EmulatorFault | None, *, exception_code: int = int(ExcCodes.DEVICE_FAILURE)
    ) -> None:
        """Inject a fault (None clears it). Takes effect from the next request."""
        with self._lock:
            self._fault = fault
            self._exception_code = exception_code

    def clear_fault(self) -> None:
        self.set_fault(None)

    # ------------------------------------------------------------------ serving

    @contextlib.contextmanager
    def serve_tcp(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[tuple[str, int]]:
        """Serve Modbus TCP; yields the bound (host, port)."""
        bound: list[tuple[str, int]] = []

        async def start() -> Callable[[], Coroutine[Any, Any, None]]:
            server = ModbusTcpServer(self._device(), address=(host, port), trace_packet=self._trace_packet)
            await server.serve_forever(background=True)
            listener: Any = server.transport  # an asyncio.Server once listening
            bound.append(listener.sockets[0].getsockname()[:2])
            shutdown: Callable[[], Coroutine[Any, Any, None]] = cast(Any, server).shutdown
            return shutdown

        with self._server_thread(start):
            yield bound[0]

    @contextlib.contextmanager
    def serve_rtu_pty(self, *, baudrate: int = 9600) -> Iterator[str]:
        """Serve Modbus RTU on a pseudo-terminal; yields the device path the driver opens (like /dev/ttyUSB0).

        Two pty pairs joined by a byte pump (what `socat pty pty` does): the server opens one slave, the
        driver the other. The emulator keeps both slaves open too, so a driver closing and reopening its
        port never makes the masters read EOF.
        """
        server_master, server_slave = os.openpty()
        driver_master, driver_slave = os.openpty()
        fds = [server_master, server_slave, driver_master, driver_slave]
        try:
            # Raw at once: a cooked pty echoes and rewrites CR/NL, which corrupts binary RTU frames.
            tty.setraw(server_slave)
            tty.setraw(driver_slave)
            server_path = os.ttyname(server_slave)
            driver_path = os.ttyname(driver_slave)

            async def start() -> Callable[[], Coroutine[Any, Any, None]]:
                loop = asyncio.get_running_loop()

                def pump(src: int, dst: int) -> None:
                    try:
                        data = os.read(src, 4096)
                    except BlockingIOError:
                        return
                    os.write(dst, data)

                loop.add_reader(server_master, pump, server_master, driver_master)
                loop.add_reader(driver_master, pump, driver_master, server_master)
                server = ModbusSerialServer(
                    self._device(),
                    framer=FramerType.RTU,
                    port=server_path,
                    baudrate=baudrate,
                    trace_packet=self._trace_packet,
                )
                await server.serve_forever(background=True)

                async def stop() -> None:
                    await cast(Any, server).shutdown()
                    loop.remove_reader(server_master)
                    loop.remove_reader(driver_master)

                return stop

            with self._server_thread(start):
                yield driver_path
        finally:
            for fd in fds:
                os.close(fd)

    # ------------------------------------------------------------------ internals

    @contextlib.contextmanager
    def _server_thread(
        self, start: Callable[[], Coroutine[Any, Any, Callable[[], Coroutine[Any, Any, None]]]]
    ) -> Iterator[None]:
        ready = threading.Event()
        state: dict[str, Any] = {}

        async def main() -> None:
            stop_requested = asyncio.Event()
            state["loop"] = asyncio.get_running_loop()
            state["stop"] = stop_requested
            try:
                shutdown = await start()
            except BaseException as exc:
                state["error"] = exc
                ready.set()
                raise
            ready.set()
            await stop_requested.wait()
            await shutdown()

        def body() -> None:
            with contextlib.suppress(BaseException):
                asyncio.run(main())

        thread = threading.Thread(target=body, name=f"modbus-emulator-{self.model.id}", daemon=True)
        thread.start()
        if not ready.wait(_START_TIMEOUT_S) or "error" in state:
            self._stop_thread(thread, state)
            raise RuntimeError(f"modbus emulator did not start: {state.get('error')!r}")
        try:
            yield
        finally:
            self._stop_thread(thread, state)

    @staticmethod
    def _stop_thread(thread: threading.Thread, state: dict[str, Any]) -> None:
        loop: asyncio.AbstractEventLoop | None = state.get("loop")
        if loop is not None and "stop" in state:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(state["stop"].set)
        thread.join(_START_TIMEOUT_S)

    def _device(self) -> SimDevice:
        blocks: dict[RegisterFunction, list[SimData]] = {"input": [], "holding": []}
        for block in read_plan(self.model):
            blocks[block.function].append(
                SimData(block.address, count=block.count, values=0, datatype=DataType.REGISTERS)
            )
        for entries in blocks.values():
            if not entries:
                # pymodbus wants at least one entry per table; an invalid one answers "illegal address".
                entries.append(SimData(0, datatype=DataType.INVALID))
        no_bits = [SimData(0, values=[False] * 16, datatype=DataType.BITS)]
        return SimDevice(
            self.unit_id,
            simdata=(no_bits, list(no_bits), blocks["holding"], blocks["input"]),
            action=self._action,
        )

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        function: RegisterFunction = "input" if function_code == FUNCTION_CODES["input"] else "holding"
        with self._lock:
            if self._fault is EmulatorFault.EXCEPTION:
                return ExcCodes(self._exception_code)
            if set_values is None:
                memory = self._memory[function]
                for i in range(count):
                    registers[address - start_address + i] = memory.get(address + i, 0)
        return None

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        with self._lock:
            fault = self._fault
            if not sending:
                self.requests += 1
                return data
        if fault is EmulatorFault.SILENT:
            return b""
        if fault is EmulatorFault.CORRUPT_CRC and data:
            return data[:-1] + bytes([data[-1] ^ 0xFF])
        return data


_CONSOLE_HELP = "commands (one per line): energy WH | power W | silent | answer | help"


def apply_console_command(emulator: ModbusMeterEmulator, line: str) -> str:
    """One line of the HIL console; returns what to print (bad input gets an answer, not an exception)."""
    words = line.split()
    try:
        match words:
            case []:
                return ""
            case ["energy", wh]:
                emulator.set_energy(float(wh))
            case ["power", watts]:
                emulator.set_power(float(watts))
            case ["silent"]:
                emulator.set_fault(EmulatorFault.SILENT)
            case ["answer"]:
                emulator.clear_fault()
            case ["help"]:
                return _CONSOLE_HELP
            case _:
                return f"unknown command {line.strip()!r}; try help"
    except (ValueError, KeyError) as exc:
        return f"error: {exc}"
    return "ok"


def main() -> None:
    """Serve a model for the HIL rig: `python -m evstation.drivers.sim.modbus_emulator sdm630 [--rtu]`.

    Over TCP (default) or RTU on a pseudo-terminal (`--rtu`, prints the device path); then reads
    console commands from stdin until Ctrl-C.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", help="map id (e.g. sdm630) or path to a map file")
    parser.add_argument("--port", type=int, default=5020)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--rtu", action="store_true", help="serve Modbus RTU on a pty instead of TCP")
    parser.add_argument("--unit-id", type=int, default=None)
    parser.add_argument("--energy-wh", type=float, default=0.0)
    parser.add_argument("--power-w", type=float, default=None)
    args = parser.parse_args()
    emulator = ModbusMeterEmulator(load_model(args.model), unit_id=args.unit_id)
    emulator.set_energy(args.energy_wh)
    if args.power_w is not None:
        emulator.set_power(args.power_w)
    with contextlib.ExitStack() as stack:
        if args.rtu:
            where = stack.enter_context(emulator.serve_rtu_pty())
        else:
            host, port = stack.enter_context(emulator.serve_tcp(args.host, args.port))
            where = f"{host}:{port}"
        print(f"serving {emulator.model.id} unit {emulator.unit_id} on {where}", flush=True)
        print(_CONSOLE_HELP, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            for line in sys.stdin:
                answer = apply_console_command(emulator, line)
                if answer:
                    print(answer, flush=True)
            threading.Event().wait()  # stdin closed (started in the background): serve until Ctrl-C


if __name__ == "__main__":
    main()

"""RS-485 direction control for adapters that do not switch their driver (DE/RE) by themselves.

`rts`: the UART's RTS line drives DE/RE. The kernel's RS-485 mode (TIOCSRS485) is asked first: it
switches RTS with the UART's own timing; where the UART driver lacks it, RTS is switched around each
frame from this process (good at 9600 baud, less so at high rates: it depends on the OS scheduler).
`gpio`: a GPIO line (character device, e.g. `gpiochip0:17`) drives DE/RE, switched from this process;
it needs the optional `gpiod` package. Used by `ModbusBus` in its worker thread only: blocking calls.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

import serial
import serial.rs485

from evstation.records import record

log = logging.getLogger(__name__)

Rs485Direction = Literal["auto", "rts", "gpio"]
_GPIO = re.compile(r"^(gpiochip\d+):(\d+)$")
# Bits per character on the line (start + 8 data + parity + stop, worst case): the last byte may still
# be in the UART's shift register when the kernel reports the output queue drained.
_BITS_PER_CHAR = 11


class Rs485Error(Exception):
    """The direction line cannot be set up (no such GPIO, gpiod missing, UART refusing RTS)."""


@record
class GpioLine:
    """A GPIO line on a character device: `gpiochip0:17` = line 17 of /dev/gpiochip0."""

    chip: str
    offset: int

    @classmethod
    def parse(cls, text: str) -> GpioLine:
        match = _GPIO.match(text)
        if match is None:
            raise ValueError(f"{text!r} is not CHIP:LINE (for example gpiochip0:17)")
        return cls(match[1], int(match[2]))


class DirectionLine(Protocol):
    """What drives DE/RE: on while we transmit, off (receive) otherwise."""

    def set_transmit(self, on: bool) -> None: ...

    def close(self) -> None: ...


class RtsLine:
    """DE/RE on the UART's RTS output, switched from this process."""

    def __init__(self, port: Any) -> None:
        self._port = port

    def set_transmit(self, on: bool) -> None:
        self._port.rts = on

    def close(self) -> None:
        pass


class GpiodLine:
    """DE/RE on a GPIO line through libgpiod 2 (the `gpiod` package), held as an output."""

    def __init__(self, line: GpioLine) -> None:
        try:
            import gpiod  # optional dependency (extra "gpio"): only stations that need it install it
            from gpiod.line import Direction, Value
        except ImportError as exc:
            raise Rs485Error(
                "rs485_direction = 'gpio' needs the gpiod package: pip install 'evstation[gpio]'"
            ) from exc
        self._active, self._inactive = Value.ACTIVE, Value.INACTIVE
        self._offset = line.offset
        settings = gpiod.LineSettings(direction=Direction.OUTPUT, output_value=Value.INACTIVE)
        try:
            self._request = gpiod.request_lines(
                f"/dev/{line.chip}", consumer="evstation-rs485", config={line.offset: settings}
            )
        except OSError as exc:
            raise Rs485Error(f"cannot claim {line.chip}:{line.offset}: {exc.strerror or exc}") from exc

    def set_transmit(self, on: bool) -> None:
        self._request.set_value(self._offset, self._active if on else self._inactive)

    def close(self) -> None:
        self._request.release()


class DirectionControlledPort:
    """A pyserial port whose writes raise the direction line first and drop it once sent.

    Everything else is the wrapped port's: pymodbus uses it as its `socket`.
    """

    def __init__(self, port: Any, line: DirectionLine) -> None:
        self._port = port
        self._line = line
        self._char_time = _BITS_PER_CHAR / float(port.baudrate or 9600)
        line.set_transmit(False)

    def write(self, data: bytes) -> int | None:
        self._line.set_transmit(True)
        try:
            written: int | None = self._port.write(data)
            self._port.flush()  # tcdrain: the kernel's queue is on the wire, but the UART's FIFO ...
            time.sleep(self._char_time)  # ... may hold the last character for one more char time
        finally:
            self._line.set_transmit(False)
        return written

    def close(self) -> None:
        try:
            self._port.close()
        finally:
            self._line.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._port, name)


def open_rs485_port(
    device: str,
    *,
    direction: Rs485Direction,
    gpio: str | None,
    baudrate: int,
    parity: str,
    stopbits: int,
    bytesize: int,
    timeout: float,
    line_factory: Callable[[Any], DirectionLine] | None = None,
) -> Any:
    """The opened port for pymodbus, with DE/RE handled as `direction` says (`auto`: not at all).

    `line_factory` replaces the RTS or GPIO line (tests: a line that records its switching).
    Raises `Rs485Error` (or pyserial's errors) when the port or the line cannot be set up.
    """
    port = serial.serial_for_url(
        device,
        baudrate=baudrate,
        parity=parity,
        stopbits=stopbits,
        bytesize=bytesize,
        timeout=timeout,
        write_timeout=timeout,
        exclusive=True,
    )
    try:
        if direction == "auto":
            return port
        if line_factory is not None:
            return DirectionControlledPort(port, line_factory(port))
        if direction == "gpio":
            if gpio is None:
                raise Rs485Error("rs485_direction = 'gpio' needs rs485_gpio")
            return DirectionControlledPort(port, GpiodLine(GpioLine.parse(gpio)))
        try:
            port.rs485_mode = serial.rs485.RS485Settings(rts_level_for_tx=True, rts_level_for_rx=False)
            return port
        except (ValueError, OSError, AttributeError) as exc:
            log.warning(
                "%s: the UART driver has no RS-485 mode (%s): switching RTS from user space", device, exc
            )
        return DirectionControlledPort(port, RtsLine(port))
    except BaseException:
        port.close()
        raise

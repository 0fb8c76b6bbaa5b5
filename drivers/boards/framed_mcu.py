"""What the COBS + CRC-32 + protobuf boards (yeti.py, phyverso.py) share on the host side: the receive
loop and its counters, the frame writer, the MCU's silence watchdog, the reset the host asks for, and the
meaning of what both schemas spell alike (phyverso.proto grew out of yeti.proto): `pwm_duty_cycle`, the
CpState names, error_flags as faults.

The framing itself is yeti_framing.py; handshakes, field numbers and per-connector logic stay in each
board's module.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import trio
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
from google.protobuf.message import DecodeError, Message

from evstation.drivers.api import ControllerError, FaultCleared, FaultCode, FaultRaised, PilotState
from evstation.drivers.boards.serial_port import SerialPort, SerialPortError
from evstation.drivers.boards.yeti_framing import (
    MAX_HOST_PAYLOAD_BYTES,
    FrameDecoder,
    FrameError,
    FrameErrorKind,
    encode_frame,
)
from evstation.drivers.pilot import X1_DUTY_PCT, amps_to_duty

MessageT = TypeVar("MessageT", bound=Message)
PWM_STATE_F = 0  # `pwm_duty_cycle` 0: the MCU drives state F (-12 V)
# The error_flags both schemas have -> fault (YetiDriver.cpp's mapping, used for the phyVERSO's too).
# Each board adds its own flags after these.
ERROR_FLAG_FAULTS: dict[str, FaultCode] = {
    "diode_fault": FaultCode.DIODE_FAULT,
    "rcd_triggered": FaultCode.GROUND_FAILURE,
    "rcd_selftest_failed": FaultCode.RCD_SELFTEST_FAILED,
    "ventilation_not_available": FaultCode.VENTILATION_NOT_AVAILABLE,
    "connector_lock_failed": FaultCode.CONNECTOR_LOCK_FAILURE,
    "cp_signal_fault": FaultCode.PILOT_FAULT,
}


def one_payload(msg: MessageT, payload: Mapping[str, object]) -> MessageT:
    """`msg`, built from `payload`, if that set exactly one member of its `payload` oneof."""
    if len(payload) != 1 or msg.WhichOneof("payload") is None:
        raise ValueError(f"one payload member expected, got {sorted(payload)}")
    return msg


def duty_units(amps: float | None, *, unavailable: bool, x1: int) -> int:
    """The `pwm_duty_cycle` value (0.01 % units) for an offer; state F wins over any offer, and no offer
    is `x1` (steady +12 V: each driver sends the value its board's host module sends)."""
    if unavailable:
        return PWM_STATE_F
    pct = amps_to_duty(amps)
    if pct >= X1_DUTY_PCT:
        return x1
    # Round down (never offer more than asked); the epsilon absorbs float error like 10.0 -> 999.99...
    return math.floor(pct * 100 + 1e-6)


def pilot_states(cp_state: EnumTypeWrapper) -> dict[int, PilotState]:
    """A schema's CpState value -> `PilotState`: both schemas name the states STATE_A ... STATE_F."""
    return {cp_state.Value(f"STATE_{pilot.value}"): pilot for pilot in PilotState}


def flag_faults(
    old: Message, new: Message, faults: Mapping[str, FaultCode]
) -> list[FaultRaised | FaultCleared]:
    """The fault events between two error_flags reports: one per flag of `faults` that changed, in the
    order of `faults`."""
    events: list[FaultRaised | FaultCleared] = []
    for name, code in faults.items():
        was, now = getattr(old, name), getattr(new, name)
        if now and not was:
            events.append(FaultRaised(code, f"error_flags.{name}"))
        elif was and not now:
            events.append(FaultCleared(code))
    return events


def time_stamp_ms() -> int:
    """A keep-alive or meter `time_stamp`: milliseconds of the monotonic clock in a uint32 (wraps)."""
    return int(trio.current_time() * 1000) & 0xFFFFFFFF


@dataclass
class FrameStats:
    """The counters of one framed link; bad input is counted, never fatal. Boards add their own."""

    frames_ok: int = 0
    frames_sent: int = 0
    crc_errors: int = 0
    cobs_errors: int = 0
    length_errors: int = 0
    decode_errors: int = 0
    unknown_messages: int = 0
    state_resends: int = 0  # the wanted state re-sent because the MCU's reports did not confirm it
    unrequested_resets: int = 0
    reconnects: int = 0

    def count_frame_error(self, error: FrameError) -> None:
        if error.kind is FrameErrorKind.CRC:
            self.crc_errors += 1
        elif error.kind is FrameErrorKind.COBS:
            self.cobs_errors += 1
        else:
            self.length_errors += 1


async def receive_messages(
    chunks: trio.MemoryReceiveChannel[bytes],
    message_type: type[MessageT],
    handle: Callable[[MessageT], Awaitable[bool]],
    stats: FrameStats,
) -> None:
    """Decode the MCU's byte stream into `message_type` messages and apply each with `handle`, which
    says False for one it does not understand (counted in `unknown_messages`, as bad frames are)."""
    decoder = FrameDecoder()
    async for chunk in chunks:
        for item in decoder.feed(chunk):
            if isinstance(item, FrameError):
                stats.count_frame_error(item)
                continue
            msg = message_type()
            try:
                msg.ParseFromString(item)
            except DecodeError:
                stats.decode_errors += 1
                continue
            if await handle(msg):
                stats.frames_ok += 1
            else:
                stats.unknown_messages += 1


class FrameWriter:
    """Writes one message a frame to the session's port, one writer at a time, `frame_gap` s apart."""

    def __init__(self, path: str, stats: FrameStats, *, frame_gap: float = 0.0) -> None:
        self._path = path
        self._stats = stats
        self._frame_gap = frame_gap
        self._lock = trio.Lock()
        self._last_tx = -math.inf

    async def send(self, port: SerialPort | None, msg: Message) -> None:
        """Frame and write `msg`; `ControllerError` when the port is closed or fails, `ValueError` when
        the message is larger than the MCU can take."""
        if port is None:
            raise ControllerError(FaultCode.BOARD_COMMUNICATION, f"{self._path}: port not open")
        payload = msg.SerializeToString()
        if len(payload) > MAX_HOST_PAYLOAD_BYTES:
            raise ValueError(f"{msg.WhichOneof('payload')}: {len(payload)} bytes exceed the MCU's buffer")
        async with self._lock:
            gap = self._last_tx + self._frame_gap - trio.current_time()
            if gap > 0:
                await trio.sleep(gap)
            try:
                await port.write(encode_frame(payload))
            except SerialPortError as exc:
                raise ControllerError(FaultCode.BOARD_COMMUNICATION, str(exc)) from exc
            finally:
                self._last_tx = trio.current_time()
            self._stats.frames_sent += 1


async def resend_until(
    condition: Callable[[], bool],
    send: Callable[[], Awaitable[None]],
    *,
    next_report: Callable[[], Awaitable[None]],
    interval: float,
    check_port: Callable[[], None] = lambda: None,
) -> None:
    """Re-send every `interval` (the MCU acknowledges commands only through its reports) until its reports
    satisfy `condition`; `check_port` raises before each wait when there is no port to send on."""
    while not condition():
        check_port()
        with trio.move_on_after(interval):
            while not condition():
                await next_report()
        if not condition():
            await send()


class SilenceWatchdog:
    """Mixin of a board driver whose MCU must be heard at least every `keepalive_timeout` s.

    The board calls `_mcu_heard` for what proves the MCU alive, starts `_watchdog` in each session (after
    setting `_last_heard`) and implements `_mcu_silent`, which reports the silence once until heard again.
    """

    def __init__(self, keepalive_timeout: float) -> None:
        self._keepalive_timeout = keepalive_timeout
        self._last_heard = 0.0
        self._alive = trio.Event()

    def _mcu_heard(self) -> None:
        self._last_heard = trio.current_time()
        self._alive.set()

    async def _mcu_silent(self) -> None:
        raise NotImplementedError

    async def _watchdog(self) -> None:
        while True:
            deadline = self._last_heard + self._keepalive_timeout
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)
                continue
            # A fresh event before the report: a frame handled while the report waits must wake us, or
            # an MCU that falls silent again afterwards would never be reported.
            self._alive = trio.Event()
            await self._mcu_silent()
            await self._alive.wait()


class RequestedReset:
    """Tells the reset the host asked for (no news) from one the MCU did on its own (it forgot its state)."""

    def __init__(self) -> None:
        self._seen = trio.Event()
        self._expecting = False

    async def request(self, send_reset: Callable[[], Awaitable[None]], wait: float) -> None:
        """Send the reset and wait (at most `wait` s) for the MCU to announce it."""
        self._seen = trio.Event()
        self._expecting = True
        await send_reset()
        with trio.move_on_after(wait):
            await self._seen.wait()
        self._expecting = False

    def unrequested(self) -> bool:
        """Whether an announced reset is news: False for the first one while `request` waits for it."""
        if self._expecting and not self._seen.is_set():
            self._seen.set()
            return False
        return True

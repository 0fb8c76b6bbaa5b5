#!/usr/bin/env python3
"""Drive one charging session on a running station through its control API and print the timeline.

Works against real hardware (plug and unplug are physical: the script waits for them) and against the
simulator (`--sim`: it plugs and unplugs through the API). Exit status: 0 when the session reached
Charging and then Available, 1 when a step timed out or the station refused, 2 when the control API
cannot be reached. It only talks to the control API; it never touches the station's files or devices.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import trio

Event = dict[str, Any]
EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE = 0, 1, 2


class StepFailed(Exception):
    """The session did not get where it should (timeout, refused op)."""


class Control:
    """One control-API connection: requests with replies, events (after `subscribe`) printed as they come."""

    def __init__(self, stream: trio.abc.Stream, show_ocpp: bool) -> None:
        self._stream = stream
        self._buffer = b""
        self._next_id = 0
        self._show_ocpp = show_ocpp
        self._t0 = trio.current_time()
        self._seen: list[Event] = []

    def say(self, text: str) -> None:
        print(f"{trio.current_time() - self._t0:8.3f}s  {text}", flush=True)

    async def _message(self) -> Event:
        while b"\n" not in self._buffer:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise StepFailed("the station closed the control connection")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        message: Event = json.loads(line)
        if "event" in message:
            self._print_event(message)
            self._seen.append(message)
        return message

    def _print_event(self, event: Event) -> None:
        kind = event["event"]
        if kind == "OcppMessage":
            if self._show_ocpp:
                self.say(f"ocpp {event['direction']:>3} {json.dumps(event['message'])[:160]}")
            return
        details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("event", "evse_id"))
        where = f"EVSE {event['evse_id']} " if "evse_id" in event else ""
        self.say(f"{where}{kind} {details}".rstrip())

    async def request(self, op: str, **args: Any) -> Any:
        self._next_id += 1
        request_id = self._next_id
        await self._stream.send_all((json.dumps({"id": request_id, "op": op, **args}) + "\n").encode())
        while True:
            message = await self._message()
            if message.get("id") == request_id:
                if not message.get("ok"):
                    raise StepFailed(f"{op}: {message.get('error')}")
                return message["result"]

    async def wait_for(self, what: str, matches: Callable[[Event], bool], timeout_s: float) -> Event:
        """The first event since the last wait that matches, within `timeout_s`."""
        with trio.move_on_after(timeout_s):
            while True:
                while self._seen:
                    event = self._seen.pop(0)
                    if matches(event):
                        return event
                await self._message()
        raise StepFailed(f"timed out after {timeout_s:g} s waiting for {what}")


def _status(evse: int, status: str) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "StatusChanged" and e["evse_id"] == evse and e["status"] == status


def _is(kind: str, evse: int) -> Callable[[Event], bool]:
    return lambda e: e["event"] == kind and e.get("evse_id") == evse


async def run_session(control: Control, args: argparse.Namespace) -> None:
    evse: int = args.evse
    await control.request("subscribe")
    status = await control.request("status")
    control.say(f"station {status['station_id']} OCPP {status['ocpp_version']}")
    control.say(f"link {status['link']}, boot {status['boot']}")
    found = [e for e in status["evses"] if e["id"] == evse]
    if not found:
        raise StepFailed(f"the station has no EVSE {evse}")
    connector = found[0]["connectors"][0]["status"]
    if connector != "Available":
        control.say(f"EVSE {evse} is {connector}; waiting for Available (unplug the EV?)")
        await control.wait_for("Available", _status(evse, "Available"), args.plug_timeout)

    if args.sim:
        await control.request("plug_in", evse=evse)
    else:
        control.say(f">>> plug the EV into EVSE {evse}")
    await control.wait_for("the EV to be plugged in", _is("EvPlugged", evse), args.plug_timeout)
    went_to = await control.request("present_id_token", id_token=args.token, evse=evse)
    control.say(f"token {args.token} presented at EVSE {went_to['evse']}")
    await control.wait_for("Charging", _status(evse, "Charging"), args.timeout)
    control.say(f"CHARGING on EVSE {evse}")

    with trio.move_on_after(args.charge_s):
        while True:
            # A reading per second so the rig operator sees the meter's numbers move.
            now = next(e for e in (await control.request("status"))["evses"] if e["id"] == evse)
            control.say(f"power {now['power_w']} W, energy {now['energy_wh']} Wh, tx {now['transaction_id']}")
            await trio.sleep(1.0)

    if args.sim:
        await control.request("unplug", evse=evse)
    else:
        control.say(f">>> unplug the EV from EVSE {evse}")
    await control.wait_for("the EV to be unplugged", _is("EvUnplugged", evse), args.plug_timeout)
    await control.wait_for("Available", _status(evse, "Available"), args.timeout)
    control.say(f"AVAILABLE again on EVSE {evse}: session complete")


async def _open(args: argparse.Namespace) -> trio.abc.Stream:
    if args.tcp_port is not None:
        return await trio.open_tcp_stream("127.0.0.1", args.tcp_port)
    return await trio.open_unix_socket(args.socket)


def _control_token(args: argparse.Namespace) -> str | None:
    """The TCP listener's token ([control] tcp_token / tcp_token_file), read before connecting."""
    if args.tcp_port is None:
        return None
    if args.control_token_file is None:
        raise StepFailed("--tcp-port needs --control-token-file (the station's [control] tcp_token)")
    with open(args.control_token_file, encoding="utf-8") as file:
        return file.read().strip()


async def main_async(args: argparse.Namespace) -> int:
    try:
        token = _control_token(args)
        stream = await _open(args)
    except (OSError, StepFailed) as exc:
        print(f"cannot reach the control API: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    async with stream:
        control = Control(stream, args.ocpp)
        try:
            if token is not None:
                await control.request("auth", token=token)
            await run_session(control, args)
        except StepFailed as exc:
            control.say(f"FAILED: {exc}")
            return EXIT_FAILED
    return EXIT_OK


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="the station's control socket ([control] socket_path)")
    where.add_argument("--tcp-port", type=int, help="the station's control TCP port on 127.0.0.1")
    parser.add_argument(
        "--control-token-file", help="file holding the station's [control] tcp_token (with --tcp-port)"
    )
    parser.add_argument("--evse", type=int, default=1)
    parser.add_argument("--token", default="HIL-TOKEN-1", help="id token (the CSMS must accept it)")
    parser.add_argument("--sim", action="store_true", help="plug and unplug through the API (sim drivers)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for each automatic step")
    parser.add_argument("--plug-timeout", type=float, default=300.0, help="seconds to wait for a person")
    parser.add_argument("--charge-s", type=float, default=0.0, help="seconds to stay in Charging")
    parser.add_argument("--ocpp", action="store_true", help="also print every OCPP frame")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(trio.run(main_async, parse_args()))

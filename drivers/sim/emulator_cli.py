"""The command line of the board emulators (`python -m evstation.drivers.sim.yeti_emulator` /
`rapi_emulator` / `phyverso_emulator`): print the pty path, then take EV and fault commands on stdin,
one per line. A board with two ports (phyVERSO) takes the port first: `2 plug`; without one, port 1.

A development and HIL tool standing in for hardware; production code never imports it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol

import trio

HELP = """commands (one per line; a two-port board takes its port first, e.g. `2 plug`):
  plug | unplug                  the EV's cable
  charge on|off                  the EV wants energy (closes S2) or is full
  fault NAME on|off              inject or clear a board fault ({faults})
  silent on|off                  the board stops / resumes talking
  help"""


class BoardEmulator(Protocol):
    @property
    def port_path(self) -> str: ...

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> object: ...

    def update_ev(self, **changes: Any) -> None: ...

    def inject(self, **faults: bool) -> None: ...

    def go_silent(self, silent: bool = True) -> None: ...


def _switch(word: str) -> bool:
    if word not in ("on", "off"):
        raise ValueError(f"expected on or off, got {word!r}")
    return word == "on"


def apply_command(emulator: BoardEmulator, line: str) -> str:
    """Apply one console line; returns what to print. Bad input gets an answer, never an exception."""
    words = line.split()
    port: dict[str, Any] = {}
    if words and words[0].isdigit():
        if getattr(emulator, "ports", None) is None:
            return "error: this board has one port: give no port number"
        port = {"connector": int(words[0])}
        words = words[1:]
    try:
        match words:
            case []:
                return ""
            case ["plug"]:
                emulator.update_ev(**port, plugged=True)
            case ["unplug"]:
                emulator.update_ev(**port, plugged=False)
            case ["charge", state]:
                emulator.update_ev(**port, wants_energy=_switch(state))
            case ["fault", name, state]:
                emulator.inject(**port, **{name: _switch(state)})
            case ["silent", state] if not port:
                emulator.go_silent(_switch(state))
            case ["help"]:
                return "see the command list printed at start"
            case _:
                return f"unknown command {line.strip()!r}; try help"
    except (ValueError, AttributeError) as exc:
        return f"error: {exc}"
    except KeyError as exc:
        return f"error: no port {exc}"
    return "ok"


async def _console(emulator: BoardEmulator) -> None:
    # A dup so closing the stream never closes the process's own stdin.
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buffer = b""
    async with stream:
        while chunk := await stream.receive_some(4096):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                answer = apply_command(emulator, raw.decode("utf-8", "replace"))
                if answer:
                    print(answer, flush=True)
    # stdin closed (e.g. started in the background): keep emulating until interrupted.
    await trio.sleep_forever()


async def serve_emulator(emulator: BoardEmulator, name: str, fault_names: list[str]) -> None:
    async with trio.open_nursery() as nursery:
        path = await nursery.start(emulator.run)
        print(f"{name} emulator on {path}", flush=True)
        print(HELP.format(faults=", ".join(fault_names)), flush=True)
        await _console(emulator)


def main(name: str, make: Callable[[], BoardEmulator], fault_names: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog=f"python -m evstation.drivers.sim.{name}_emulator",
        description=f"A {name} board on a pseudo-terminal; point the station's device at the printed path.",
    )
    parser.parse_args()
    try:
        trio.run(serve_emulator, make(), name, fault_names)
    except* KeyboardInterrupt:
        # Ctrl-C is how the tool is stopped; it arrives wrapped by the nursery.
        print(f"{name} emulator stopped", file=sys.stderr)

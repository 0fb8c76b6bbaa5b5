"""`evstation ctl OP [--key value ...]`: a one-shot client of the local control API.

Prints the reply (or, for `subscribe`, every streamed event) as JSON lines; never changes anything
itself, it only relays one request.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import trio

EXIT_OK = 0
EXIT_ERROR_REPLY = 1
EXIT_USAGE = 2
DEFAULT_SOCKET = "evstation.sock"
_RECEIVE_CHUNK = 65536

USAGE = """usage: evstation ctl [--socket PATH] OP [--key value ...]
       evstation ctl --help
values are parsed as JSON when possible (1, true, null, "x"), else taken as strings.
example: evstation ctl --socket /run/evstation/control.sock plug_in --evse 1"""


class UsageError(ValueError):
    pass


class HelpRequested(Exception):
    """`-h` / `--help` in place of the OP."""


def help_text() -> str:
    """The usage and every op with its arguments, generated from the control API's request models."""
    from evstation.runtime.control_requests import OP_SUMMARIES, op_arguments

    lines = [USAGE, "", "ops (docs/control-api.md has the replies):"]
    for op, summary in OP_SUMMARIES.items():
        words = [op]
        for name, required, default in op_arguments(op):
            flag = f"--{name.replace('_', '-')}"
            if required:
                words.append(f"{flag} VALUE")
            else:
                shown = "VALUE" if default is None else default
                words.append(f"[{flag} {shown if isinstance(shown, str) else json.dumps(shown)}]")
        lines.append(f"  {' '.join(words)}")
        lines.append(f"      {summary}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> tuple[Path, str, dict[str, Any]]:
    """(socket path, op, arguments) from `[--socket PATH] OP [--key value ...]`."""
    args = list(argv)
    socket_path = Path(DEFAULT_SOCKET)
    if len(args) >= 2 and args[0] == "--socket":
        socket_path = Path(args[1])
        args = args[2:]
    if args and args[0] in ("-h", "--help"):
        raise HelpRequested
    if not args or args[0].startswith("-"):
        raise UsageError("missing OP")
    op, rest = args[0], args[1:]
    values: dict[str, Any] = {}
    while rest:
        key = rest.pop(0)
        if not key.startswith("--") or len(key) == 2:
            raise UsageError(f"expected --key, got {key!r}")
        if not rest:
            raise UsageError(f"{key} needs a value")
        raw = rest.pop(0)
        try:
            values[key[2:].replace("-", "_")] = json.loads(raw)
        except ValueError:
            values[key[2:].replace("-", "_")] = raw
    return socket_path, op, values


async def run_ctl(socket_path: Path | str, op: str, args: dict[str, Any], out: TextIO | None = None) -> int:
    """Send one request and print the reply; `subscribe` then prints events until the server closes."""
    out = sys.stdout if out is None else out
    stream = await trio.open_unix_socket(str(socket_path))
    async with stream:
        request = {"id": 1, "op": op, **args}
        await stream.send_all((json.dumps(request) + "\n").encode())
        buffer = bytearray()
        status: int | None = None
        while True:
            chunk = await stream.receive_some(_RECEIVE_CHUNK)
            if not chunk:
                return EXIT_ERROR_REPLY if status is None else status
            buffer += chunk
            while (newline := buffer.find(b"\n")) >= 0:
                line = bytes(buffer[:newline]).decode()
                del buffer[: newline + 1]
                print(line, file=out, flush=True)
                if status is None:
                    reply = json.loads(line)
                    status = EXIT_OK if reply.get("ok") else EXIT_ERROR_REPLY
                    if op != "subscribe" or status != EXIT_OK:
                        return status


def ctl_main(argv: Sequence[str]) -> int:
    """Entry point for `evstation ctl ...` (argv without the `ctl`)."""
    try:
        socket_path, op, args = parse_args(argv)
    except HelpRequested:
        print(help_text())
        return EXIT_OK
    except UsageError as exc:
        print(f"evstation ctl: {exc}\n{USAGE}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return trio.run(run_ctl, socket_path, op, args)
    except KeyboardInterrupt:
        return EXIT_OK  # Ctrl-C is how a `subscribe` ends
    except OSError as exc:
        print(f"evstation ctl: cannot reach {socket_path}: {exc}", file=sys.stderr)
        return EXIT_ERROR_REPLY

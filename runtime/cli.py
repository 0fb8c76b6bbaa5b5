"""The `evstation` command line: argument parsing and dispatch to the runtime entry points."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from evstation import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evstation", description=__doc__)
    parser.add_argument("--version", action="version", version=f"evstation {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("info", help="show the OCPP versions and actions this build supports")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "info":
        print(f"evstation {__version__}")
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

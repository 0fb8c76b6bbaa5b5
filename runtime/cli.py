"""The `evstation` command line: argument parsing and dispatch to the runtime entry points.

It never holds station logic: each command calls one runtime entry point and turns its outcome into
an exit code (0 ok, 1 runtime failure / error reply, 2 usage or configuration error, 75 `run` stopped
for a CSMS Reset: start it again).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from evstation import __version__

if TYPE_CHECKING:
    from evstation.runtime.config import StationConfig

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
# `evstation run` stopped because the CSMS ordered a Reset: the station must be started again. 75 is
# sysexits' EX_TEMPFAIL; systemd's Restart=always (or on-failure) restarts it (docs/session.md).
EXIT_RESET = 75


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evstation", description="OCPP 1.6J / 2.0.1 charging-station runtime on Trio."
    )
    parser.add_argument("--version", action="version", version=f"evstation {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the station described by a station.toml")
    run.add_argument("--config", type=Path, required=True, help="path to station.toml")
    run.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        default=None,
        help="override [logging] level",
    )

    check = sub.add_parser("check-config", help="validate a station.toml and exit")
    check.add_argument("config", type=Path)

    demo = sub.add_parser("demo", help="a simulated charger against a local test CSMS, with a timeline")
    demo.add_argument("--ocpp", choices=("1.6", "2.0.1"), default="2.0.1", help="OCPP version")

    ctl = sub.add_parser(
        "ctl",
        help="talk to a running station's control API",
        description="evstation ctl [--socket PATH] OP [--key value ...]  (see docs/control-api.md)",
    )
    ctl.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _load(path: Path) -> StationConfig | None:
    from evstation.runtime.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as error:
        for line in error.problems:
            print(f"{path}: {line}", file=sys.stderr)
        return None


def _run(config_path: Path, log_level: str | None) -> int:
    import trio

    from evstation.runtime.lifecycle import StationOutcome
    from evstation.runtime.logs import configure_logging
    from evstation.runtime.notify import NotifyConfigError
    from evstation.runtime.station import StartupError, run_station
    from evstation.runtime.storage import StorageError

    config = _load(config_path)
    if config is None:
        return EXIT_USAGE
    try:
        configure_logging(config.logging, log_level)
    except OSError as exc:
        print(f"{config_path}: cannot open log file {config.logging.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILURE
    started = False

    def ready(_station: object) -> None:
        nonlocal started
        started = True

    failures: list[BaseException] = []
    outcome = StationOutcome.SIGNALLED
    try:
        outcome = trio.run(functools.partial(run_station, config, ready=ready))
    except* (OSError, StorageError, StartupError, NotifyConfigError) as group:
        if started:
            raise  # after start-up these are bugs: keep the traceback
        failures.extend(_leaves(group))
    # The station could not start (data dir not writable, database unusable, socket in the way, a bad
    # NOTIFY_SOCKET): an operator problem, told in one line each rather than a traceback.
    for error in failures:
        print(f"{config_path}: cannot start: {error}", file=sys.stderr)
    if failures:
        return EXIT_FAILURE
    return EXIT_RESET if outcome is StationOutcome.RESET else EXIT_OK


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ctl"]:
        # Not through argparse: REMAINDER refuses a leading option (`ctl --socket PATH status`).
        from evstation.runtime.ctl import ctl_main

        return ctl_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    if args.command == "run":
        return _run(args.config, args.log_level)
    if args.command == "check-config":
        if _load(args.config) is None:
            return EXIT_USAGE
        print(f"{args.config}: ok")
        return EXIT_OK
    if args.command == "demo":
        from evstation.runtime.demo import demo_main

        return demo_main(args.ocpp)
    parser.error(f"unknown command {args.command!r}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())

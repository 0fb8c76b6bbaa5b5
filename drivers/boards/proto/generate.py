"""Generate the committed `*_pb2.py` / `*_pb2.pyi` modules from this folder's `.proto` files.

Run `python -m evstation.drivers.boards.proto.generate` to rewrite them, `--check` to verify them. It runs
the protoc bundled with the pinned `grpcio-tools` dev dependency, so the output is the same on every
machine. Development tool only: the runtime never imports it (grpcio-tools is not a runtime dependency).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
SCHEMAS = ("yeti.proto", "phyverso.proto")
SUFFIXES = ("_pb2.py", "_pb2.pyi")


class GenerationError(Exception):
    """protoc refused a schema; the message carries its diagnostics."""


def outputs(schema: str) -> list[Path]:
    stem = schema.removesuffix(".proto")
    return [PROTO_DIR / f"{stem}{suffix}" for suffix in SUFFIXES]


def render(schema: str) -> dict[str, bytes]:
    """The generated files for one schema, by file name, without touching the committed ones."""
    from grpc_tools import protoc  # dev dependency: imported only when generating

    with tempfile.TemporaryDirectory() as out:
        # protoc takes argv-style arguments; the first one is the program name it ignores.
        status = protoc.main(
            ["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--pyi_out={out}", str(PROTO_DIR / schema)]
        )
        if status != 0:
            raise GenerationError(f"protoc failed on {schema} (exit {status})")
        return {path.name: (Path(out) / path.name).read_bytes() for path in outputs(schema)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs")
    args = parser.parse_args(argv)
    stale: list[str] = []
    for schema in SCHEMAS:
        for name, content in render(schema).items():
            target = PROTO_DIR / name
            if args.check:
                if not target.exists() or target.read_bytes() != content:
                    stale.append(name)
            else:
                target.write_bytes(content)
    if stale:
        print(f"stale generated files: {', '.join(stale)}; run the generator", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

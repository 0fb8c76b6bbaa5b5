#!/usr/bin/env python3
"""A bench CSMS for the HIL rig: the project's test CSMS on ws://HOST:PORT, printing every frame.

It accepts every station and token (schema-valid default answers); never use it outside a test bench.
"""

from __future__ import annotations

import argparse
import sys

import trio

from evstation.runtime.testcsms import TestCsms, serve_test_csms


async def serve(host: str, port: int) -> None:
    async with trio.open_nursery() as nursery:
        csms: TestCsms = await nursery.start(serve_test_csms, host, port)
        print(f"test CSMS on ws://{host}:{csms.port}/<path>/<station id>", flush=True)
        with csms.subscribe() as timeline:
            async for entry in timeline:
                who = entry.station_id or "-"
                print(f"{entry.time:10.3f} {who} {entry.kind.value}: {entry.text}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args()
    try:
        trio.run(serve, args.host, args.port)
    except* KeyboardInterrupt:
        print("test CSMS stopped", file=sys.stderr)


if __name__ == "__main__":
    main()

"""The board side of a pseudo-terminal: what a real UART adapter would be for the emulators.

The emulator owns the master fd; drivers open the slave path with pyserial, exactly as /dev/ttyUSB0.
Never used by production code paths.
"""

from __future__ import annotations

import os
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def open_pty_master() -> AsyncIterator[tuple[trio.lowlevel.FdStream, str]]:
    """(stream on the master side, slave path). The slave fd stays open here for the lifetime, so the
    master never sees EIO while the driver closes and reopens the port."""
    master, slave = os.openpty()
    # Raw before anyone writes: a cooked slave would echo the board's own frames back to it.
    tty.setraw(slave)
    path = os.ttyname(slave)
    try:
        stream = trio.lowlevel.FdStream(master)  # takes ownership of the master fd
    except BaseException:
        os.close(master)
        os.close(slave)
        raise
    try:
        async with stream:
            yield stream, path
    finally:
        os.close(slave)

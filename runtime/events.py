"""Fan-out of station events to many subscribers, each with its own bounded queue.

Publishing never blocks and never fails: a subscriber that falls behind loses events (counted, and
told with a `Dropped` marker) instead of slowing the station down.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar, final

import trio

from evstation.records import record

T = TypeVar("T")

DEFAULT_SUBSCRIBER_BUFFER = 256  # events a subscriber may lag behind before it starts losing some


@record
class Dropped:
    """Marker in a subscriber's stream: `count` events were lost here because it read too slowly."""

    count: int


@dataclass(slots=True)
class _Subscriber(Generic[T]):
    """One subscription's channel and what it lost to a full buffer."""

    send: trio.MemorySendChannel[T | Dropped]
    dropped: int = 0  # lost since the last marker was delivered


@final
class Broadcaster(Generic[T]):
    """Delivers every published item to every current subscriber.

    Overflow policy: each subscriber has a bounded buffer. When it is full, the new item is dropped for
    that subscriber only and counted; before the next item that fits, the subscriber receives
    `Dropped(n)` so it knows where and how much it missed. Other subscribers are unaffected and
    `publish` never waits.
    """

    def __init__(self) -> None:
        self._subscribers: list[_Subscriber[T]] = []
        self.total_dropped = 0

    def publish(self, item: T) -> None:
        """Hand `item` to every subscriber; not a checkpoint, never blocks."""
        for sub in self._subscribers:
            if sub.dropped:
                try:
                    sub.send.send_nowait(Dropped(sub.dropped))
                except trio.WouldBlock:
                    self._drop(sub)
                    continue
                except trio.BrokenResourceError:
                    continue  # closed its end early; "publish never fails" holds for the marker too
                sub.dropped = 0
            try:
                sub.send.send_nowait(item)
            except trio.WouldBlock:
                self._drop(sub)
            except trio.BrokenResourceError:
                pass  # the subscriber closed its end; it is removed when its block exits

    def _drop(self, sub: _Subscriber[T]) -> None:
        sub.dropped += 1
        self.total_dropped += 1

    @contextmanager
    def subscribe(
        self, max_buffer: int = DEFAULT_SUBSCRIBER_BUFFER
    ) -> Iterator[trio.MemoryReceiveChannel[T | Dropped]]:
        """Receive everything published while the block is open (nothing from before)."""
        send, receive = trio.open_memory_channel[T | Dropped](max_buffer)
        sub: _Subscriber[T] = _Subscriber(send)
        self._subscribers.append(sub)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.remove(sub)
            send.close()

    def subscriber_count(self) -> int:
        return len(self._subscribers)

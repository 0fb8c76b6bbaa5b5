"""Fan-out of station events to many subscribers, each with its own bounded queue; and waiting for the
first of several one-shot events.

Publishing never blocks and never fails: a subscriber that falls behind loses events (counted, and
told with a `Dropped` marker) instead of slowing the station down.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar, final

import trio

T = TypeVar("T")

DEFAULT_SUBSCRIBER_BUFFER = 256  # events a subscriber may lag behind before it starts losing some


@dataclass(slots=True)
class Dropped:
    """Marker in a subscriber's stream: `count` events were lost here because it read too slowly.

    Not frozen: the marker is queued at the first loss and counts the losses that follow while it waits
    at the end of the queue; once received it is final (see `Broadcaster`).
    """

    count: int


@dataclass(slots=True)
class _Subscriber(Generic[T]):
    """One subscription's channel, and its marker while that is still the last thing queued."""

    send: trio.MemorySendChannel[T | Dropped]
    max_buffer: int
    open_marker: Dropped | None = None


@final
class Broadcaster(Generic[T]):
    """Delivers every published item to every current subscriber.

    Overflow policy: each subscriber has a bounded buffer. When it is full, the new item is dropped for
    that subscriber only and counted, and the subscriber's queue ends with `Dropped(n)` so it learns
    where and how much it missed as soon as it has read what came before, even if nothing is ever
    published again (a consumer that re-reads state on `Dropped` is never left behind). The marker
    has a slot of its own, beyond the buffer. Other subscribers are unaffected and `publish` never
    waits.
    """

    def __init__(self) -> None:
        self._subscribers: list[_Subscriber[T]] = []
        self.total_dropped = 0

    def publish(self, item: T) -> None:
        """Hand `item` to every subscriber; not a checkpoint, never blocks."""
        for sub in self._subscribers:
            if sub.send.statistics().current_buffer_used < sub.max_buffer:
                try:
                    sub.send.send_nowait(item)
                except trio.BrokenResourceError:
                    continue  # the subscriber closed its end; it is removed when its block exits
                sub.open_marker = None
                continue
            self.total_dropped += 1
            if sub.open_marker is not None:
                # Still queued last (nothing fitted since): it stands for this loss too.
                sub.open_marker.count += 1
                continue
            marker = Dropped(1)
            try:
                sub.send.send_nowait(marker)  # the marker's own slot: free whenever no marker is last
            except trio.BrokenResourceError:
                continue  # closed its end early; "publish never fails" holds for the marker too
            sub.open_marker = marker

    @contextmanager
    def subscribe(
        self, max_buffer: int = DEFAULT_SUBSCRIBER_BUFFER
    ) -> Iterator[trio.MemoryReceiveChannel[T | Dropped]]:
        """Receive everything published while the block is open (nothing from before)."""
        if max_buffer < 1:
            # A marker received from an empty buffer must be final: the next item has to fit.
            raise ValueError(f"max_buffer must be at least 1, not {max_buffer}")
        send, receive = trio.open_memory_channel[T | Dropped](max_buffer + 1)
        sub: _Subscriber[T] = _Subscriber(send, max_buffer)
        self._subscribers.append(sub)
        try:
            with receive:
                yield receive
        finally:
            self._subscribers.remove(sub)
            send.close()

    def subscriber_count(self) -> int:
        return len(self._subscribers)


async def first_of(*events: trio.Event) -> None:
    """Return as soon as one of `events` is set."""
    async with trio.open_nursery() as nursery:

        async def wait(event: trio.Event) -> None:
            await event.wait()
            nursery.cancel_scope.cancel()

        for event in events:
            nursery.start_soon(wait, event)

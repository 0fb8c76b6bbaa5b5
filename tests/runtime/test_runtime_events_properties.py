"""Property test of `Broadcaster`'s overflow policy over random interleavings of publishes, receives
(from the buffer, and by a task parked in `receive()` that takes a direct hand-off) and a subscriber
closing its end, against a model queue: every item is delivered in order or counted in the marker that
stands exactly where it was lost, the last loss is always followed by a marker, a received marker's
count never changes, `publish` never raises, and `total_dropped` is the sum of the received counts."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from evstation.runtime.events import Broadcaster, Dropped

# (what, which subscriber): mostly publishes and receives, so that buffers fill and drain; a close
# is rare, as it ends what can be checked of that subscriber.
OPS = st.lists(
    st.tuples(
        st.sampled_from(["publish"] * 6 + ["receive"] * 4 + ["drain"] + ["park"] * 2 + ["close"]),
        st.integers(0, 1),
    ),
    max_size=80,
)


@dataclass
class _Model:
    """What one subscriber's queue should hold: items and `["lost", n]` markers, bounded as specified."""

    max_buffer: int
    queue: list[int | list[int]] = field(default_factory=list)
    closed: bool = False
    lost: int = 0

    def publish(self, item: int) -> None:
        if self.closed:
            return
        if len(self.queue) < self.max_buffer:
            self.queue.append(item)
            return
        self.lost += 1
        last = self.queue[-1]
        if isinstance(last, list):
            last[0] += 1
        else:
            self.queue.append([1])


def _as_model(received: int | Dropped) -> int | list[int]:
    return [received.count] if isinstance(received, Dropped) else received


async def _run(ops: list[tuple[str, int]], max_buffers: tuple[int, int]) -> None:
    hub = Broadcaster[int]()
    models = [_Model(size) for size in max_buffers]
    received: list[list[int | Dropped]] = [[], []]
    seen_counts: list[tuple[Dropped, int]] = []  # each received marker and its count when received
    parked: list[bool] = [False, False]

    def took(index: int, value: int | Dropped) -> None:
        received[index].append(value)
        if isinstance(value, Dropped):
            seen_counts.append((value, value.count))

    async with trio.open_nursery() as nursery:
        with hub.subscribe(max_buffers[0]) as first, hub.subscribe(max_buffers[1]) as second:
            channels = (first, second)

            async def park(index: int) -> None:
                value = await channels[index].receive()
                parked[index] = False
                took(index, value)

            published = 0
            for op, index in ops:
                model = models[index]
                if op == "publish":
                    hub.publish(published)  # must never raise
                    for m, was_parked in zip(models, parked, strict=True):
                        m.publish(published)
                        if was_parked and m.queue == [published]:
                            m.queue.pop(0)  # handed to the parked receiver directly
                    published += 1
                elif op == "receive" and not model.closed and not parked[index]:
                    try:
                        value = channels[index].receive_nowait()
                    except trio.WouldBlock:
                        assert model.queue == []
                    else:
                        assert _as_model(value) == model.queue.pop(0)
                        took(index, value)
                elif op == "drain" and not model.closed and not parked[index]:
                    while model.queue:
                        value = channels[index].receive_nowait()
                        assert _as_model(value) == model.queue.pop(0)
                        took(index, value)
                elif op == "park" and not model.closed and not parked[index] and not model.queue:
                    parked[index] = True
                    nursery.start_soon(park, index)
                elif op == "close" and not parked[index]:
                    channels[index].close()
                    model.closed = True
                    model.queue.clear()
                await trio.testing.wait_all_tasks_blocked()
                for value, count in seen_counts:
                    assert value.count == count, "a received marker's count changed"
            # Drain: what is left must be exactly the model's queue.
            for index, channel in enumerate(channels):
                if parked[index]:
                    continue
                while not models[index].closed:
                    try:
                        value = channel.receive_nowait()
                    except trio.WouldBlock:
                        break
                    assert _as_model(value) == models[index].queue.pop(0)
                    took(index, value)
                assert models[index].queue == []
            nursery.cancel_scope.cancel()

    for index, model in enumerate(models):
        stream = received[index]
        if model.closed:
            continue
        # Items in order; each marker stands where its items would have been; nothing unaccounted.
        position = 0
        for value in stream:
            if isinstance(value, Dropped):
                assert value.count >= 1
                position += value.count
            else:
                assert value == position
                position += 1
        assert position == published, "a loss is not followed by a marker"
        assert not any(
            isinstance(a, Dropped) and isinstance(b, Dropped) for a, b in itertools.pairwise(stream)
        )
    assert hub.total_dropped == sum(m.lost for m in models)
    if not any(m.closed for m in models):
        assert hub.total_dropped == sum(v.count for s in received for v in s if isinstance(v, Dropped))


@settings(max_examples=300, deadline=None)
@given(ops=OPS, max_buffers=st.tuples(st.integers(1, 3), st.integers(1, 3)))
def test_every_item_is_delivered_or_counted_where_it_was_lost(
    ops: list[tuple[str, int]], max_buffers: tuple[int, int]
) -> None:
    trio.run(_run, ops, max_buffers)

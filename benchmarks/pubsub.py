"""The pub/sub workload: one publisher, `SUBSCRIBERS` subscribers on a wildcard topic filter.

The publisher cycles over `TOPICS`, all matched by `FILTER`. The raw-Trio
versions route with a dict from topic to the subscribers' channels, as a
program without wildcards would precompute it; wactorz answers the same question
from its subscription table's cache.
"""

from __future__ import annotations

import time
from typing import Any, Final

import trio

from benchmarks.harness import BATCH, CHANNEL_SIZE, Countdown
from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem

__all__ = ["pubsub_raw_await", "pubsub_raw_batched", "pubsub_wactorz"]

SUBSCRIBERS: Final = 100
FILTER: Final = "sensors/+/reading"
TOPICS: Final = tuple(f"sensors/s{n}/reading" for n in range(10))


class Subscriber(Actor):
    """Subscribes to `FILTER` when it starts and counts what it is delivered."""

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        deliveries: Countdown,
    ) -> None:
        super().__init__(system, name=name)
        self.deliveries = deliveries

    async def on_start(self) -> None:
        self.subscribe(FILTER)

    async def _process(self, message: dict[str, Any]) -> object:
        self.deliveries.hit()
        return None


def _figures(messages: int, elapsed: float) -> dict[str, float]:
    return {"deliveries_per_s": messages * SUBSCRIBERS / elapsed}


async def pubsub_wactorz(size: int) -> dict[str, float]:
    """``await system.publish`` of ``size`` messages, each delivered to every subscriber."""
    deliveries = Countdown(size * SUBSCRIBERS)
    async with ActorSystem() as system:
        for _ in range(SUBSCRIBERS):
            await system.spawn(Subscriber, deliveries=deliveries)
        start = time.perf_counter()
        for seq in range(size):
            await system.publish(TOPICS[seq % len(TOPICS)], {"kind": "reading", "seq": seq})
        await deliveries.done.wait()
        return _figures(size, time.perf_counter() - start)


async def pubsub_raw_await(size: int) -> dict[str, float]:
    deliveries = Countdown(size * SUBSCRIBERS)

    async def subscriber(receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async for _ in receive:
            deliveries.hit()

    async with trio.open_nursery() as nursery:
        channels = []
        for _ in range(SUBSCRIBERS):
            send, receive = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)
            nursery.start_soon(subscriber, receive)
            channels.append(send)
        routes = {topic: tuple(channels) for topic in TOPICS}
        start = time.perf_counter()
        for seq in range(size):
            message = {"kind": "reading", "seq": seq}
            for channel in routes[TOPICS[seq % len(TOPICS)]]:
                await channel.send(message)
        await deliveries.done.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return _figures(size, elapsed)


async def pubsub_raw_batched(size: int) -> dict[str, float]:
    deliveries = Countdown(size * SUBSCRIBERS)

    async def subscriber(receive: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        left = BATCH
        while True:
            try:
                receive.receive_nowait()
            except trio.WouldBlock:
                await receive.receive()
                left = BATCH
            deliveries.hit()
            left -= 1
            if not left:
                left = BATCH
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        channels = []
        for _ in range(SUBSCRIBERS):
            send, receive = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)
            nursery.start_soon(subscriber, receive)
            channels.append(send)
        routes = {topic: tuple(channels) for topic in TOPICS}
        start = time.perf_counter()
        left = BATCH
        for seq in range(size):
            message = {"kind": "reading", "seq": seq}
            for channel in routes[TOPICS[seq % len(TOPICS)]]:
                try:
                    channel.send_nowait(message)
                except trio.WouldBlock:
                    await channel.send(message)
                    left = BATCH
            left -= 1  # a publish is one operation, as it is for the wactorz publisher
            if not left:
                left = BATCH
                await trio.lowlevel.checkpoint()
        await deliveries.done.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return _figures(size, elapsed)

"""The fairness workload: does one flooded actor slow down everybody else's asks?

An echo actor is asked ``size`` times in a row while the system is otherwise
idle, then ``size`` times more while another task floods a second actor with
tells as fast as the API lets it. The figure is the ratio of the median ask
latency under the flood to the idle one, measured within the same round; the
issue wants it within 2 times. The raw-Trio versions run the same scene with their
own idioms, to show what Trio's scheduler gives for free.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from benchmarks.harness import BATCH, CHANNEL_SIZE, Countdown, percentile
from benchmarks.messaging import Echo, Request, Sink, echo_raw_await, echo_raw_batched
from wactorz.core.registry import ActorSystem

__all__ = ["fairness_raw_await", "fairness_raw_batched", "fairness_wactorz"]

_WARM_UP_S = 0.05
"""How long the flood runs before the asks start, to reach its steady state."""


async def _timed(ask: Callable[[int], Awaitable[object]], size: int) -> list[float]:
    samples: list[float] = []
    for seq in range(size):
        start = time.perf_counter()
        await ask(seq)
        samples.append(time.perf_counter() - start)
    return samples


async def _under_flood(
    ask: Callable[[int], Awaitable[object]], size: int, flooded: Countdown
) -> tuple[list[float], float]:
    """Time ``size`` asks once the flood is warm; also return the flood's rate meanwhile."""
    await trio.sleep(_WARM_UP_S)
    before, start = flooded.count, time.perf_counter()
    samples = await _timed(ask, size)
    return samples, (flooded.count - before) / (time.perf_counter() - start)


def _figures(idle: list[float], flooded: list[float], flood_rate: float) -> dict[str, float]:
    idle_median = percentile(idle, 0.5)
    flooded_median = percentile(flooded, 0.5)
    return {
        "slowdown": flooded_median / idle_median,
        "idle_us": idle_median * 1e6,
        "flooded_us": flooded_median * 1e6,
        "flooded_p99_us": percentile(flooded, 0.99) * 1e6,
        "flood_msgs_per_s": flood_rate,
    }


async def fairness_wactorz(size: int) -> dict[str, float]:
    async with ActorSystem() as system:
        flooded = Countdown(-1)  # counts for ever: the flood has no end
        sink = await system.spawn(Sink, name="flooded", tally=flooded)
        echo = await system.spawn(Echo, name="echo")

        async def ask(seq: int) -> object:
            return await system.ask(echo.id, {"kind": "ping", "seq": seq}, timeout=5)

        async def flood() -> None:
            seq = 0
            while True:
                await system.send(sink.id, {"kind": "flood", "seq": seq})
                seq += 1

        idle = await _timed(ask, size)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            busy, flood_rate = await _under_flood(ask, size, flooded)
            nursery.cancel_scope.cancel()
        return _figures(idle, busy, flood_rate)


async def _fairness_raw(size: int, batched: bool) -> dict[str, float]:
    requests_send, requests = trio.open_memory_channel[Request](CHANNEL_SIZE)
    reply_send, replies = trio.open_memory_channel[Any](1)
    flood_send, flood_receive = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)
    flooded = Countdown(-1)

    async def ask(seq: int) -> object:
        request = ({"kind": "ping", "seq": seq}, reply_send)
        if batched:
            try:
                requests_send.send_nowait(request)
            except trio.WouldBlock:
                await requests_send.send(request)
        else:
            await requests_send.send(request)
        return await replies.receive()

    async def sink() -> None:
        left = BATCH
        while True:
            if batched:
                try:
                    flood_receive.receive_nowait()
                except trio.WouldBlock:
                    await flood_receive.receive()
                    left = BATCH
                left -= 1
                if not left:
                    left = BATCH
                    await trio.lowlevel.checkpoint()
            else:
                await flood_receive.receive()
            flooded.hit()

    async def flood() -> None:
        seq = 0
        left = BATCH
        while True:
            message = {"kind": "flood", "seq": seq}
            seq += 1
            if not batched:
                await flood_send.send(message)
                continue
            try:
                flood_send.send_nowait(message)
            except trio.WouldBlock:
                await flood_send.send(message)
                left = BATCH
            left -= 1
            if not left:
                left = BATCH
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_raw_batched if batched else echo_raw_await, requests)
        nursery.start_soon(sink)
        idle = await _timed(ask, size)
        nursery.start_soon(flood)
        busy, flood_rate = await _under_flood(ask, size, flooded)
        nursery.cancel_scope.cancel()
    return _figures(idle, busy, flood_rate)


async def fairness_raw_await(size: int) -> dict[str, float]:
    return await _fairness_raw(size, batched=False)


async def fairness_raw_batched(size: int) -> dict[str, float]:
    return await _fairness_raw(size, batched=True)

"""The spawn workload: start many idle actors, weigh them, stop them all.

Each version reports microseconds per actor to spawn, RSS bytes per actor
(the growth of the process's resident set across the spawns, after
`gc.collect`) and microseconds per actor to stop them all. The harness runs
every round in a fresh interpreter so RSS starts from the same place.

The raw-Trio versions hold, per task, what an idle actor needs at the least:
a task blocked receiving on its own channel, whose send side the parent keeps.
raw-await starts each with ``await nursery.start`` (returning once it runs, as
`ActorSystem.spawn` does) and stops each by closing its channel; raw-batched
starts them all with ``start_soon`` and stops them by cancelling the nursery.
"""

from __future__ import annotations

import gc
import time
from typing import Any

import psutil
import trio

from benchmarks.harness import CHANNEL_SIZE, Countdown
from wactorz.core.actor import Actor, ActorState
from wactorz.core.registry import ActorSystem

__all__ = ["spawn_raw_await", "spawn_raw_batched", "spawn_wactorz"]


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _figures(size: int, spawn_s: float, grown: int, stop_s: float) -> dict[str, float]:
    return {
        "spawn_us": spawn_s / size * 1e6,
        "bytes_per_actor": grown / size,
        "stop_us": stop_s / size * 1e6,
    }


class Idle(Actor):
    """Does nothing; it only waits for mail."""

    async def _process(self, message: dict[str, Any]) -> object:
        return None


async def spawn_wactorz(size: int) -> dict[str, float]:
    """``await system.spawn`` in a loop, then ``await system.stop()``."""
    system = ActorSystem()
    await system.start()
    try:
        before = _rss()
        start = time.perf_counter()
        actors = [await system.spawn(Idle) for _ in range(size)]
        spawn_s = time.perf_counter() - start
        grown = _rss() - before
        running = sum(actor.state is ActorState.RUNNING for actor in actors)
        if running != size:
            raise RuntimeError(f"only {running} of {size} actors are running after spawn")
    finally:
        start = time.perf_counter()
        await system.stop()
        stop_s = time.perf_counter() - start
    stopped = sum(actor.state is ActorState.STOPPED for actor in actors)
    if stopped != size:
        raise RuntimeError(f"only {stopped} of {size} actors stopped cleanly")
    return _figures(size, spawn_s, grown, stop_s)


async def _idle_task(
    *, task_status: trio.TaskStatus[trio.MemorySendChannel[Any]] = trio.TASK_STATUS_IGNORED
) -> None:
    send, receive = trio.open_memory_channel[Any](CHANNEL_SIZE)
    task_status.started(send)
    async for _ in receive:
        pass


async def spawn_raw_await(size: int) -> dict[str, float]:
    before = _rss()
    async with trio.open_nursery() as nursery:
        start = time.perf_counter()
        channels = [await nursery.start(_idle_task) for _ in range(size)]
        spawn_s = time.perf_counter() - start
        grown = _rss() - before
        start = time.perf_counter()
        for channel in reversed(channels):
            await channel.aclose()
    stop_s = time.perf_counter() - start
    return _figures(size, spawn_s, grown, stop_s)


async def spawn_raw_batched(size: int) -> dict[str, float]:
    channels: list[trio.MemorySendChannel[Any]] = []
    running = Countdown(size)

    async def idle() -> None:
        send, receive = trio.open_memory_channel[Any](CHANNEL_SIZE)
        channels.append(send)
        running.hit()
        async for _ in receive:
            pass

    before = _rss()
    async with trio.open_nursery() as nursery:
        start = time.perf_counter()
        for _ in range(size):
            nursery.start_soon(idle)
        await running.done.wait()
        spawn_s = time.perf_counter() - start
        grown = _rss() - before
        start = time.perf_counter()
        nursery.cancel_scope.cancel()
    stop_s = time.perf_counter() - start
    return _figures(size, spawn_s, grown, stop_s)

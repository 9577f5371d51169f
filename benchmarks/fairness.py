"""The fairness workload: does one flooded actor slow down everybody else's asks and tells?

An echo actor is asked ``size`` times in a row while the system is otherwise
idle, then ``size`` times more while another task floods a second actor with
tells as fast as the API lets it. The figure is the ratio of the median ask
latency under the flood to the idle one, measured within the same round; the
issue wants it within 2 times. In each phase a third actor is also sent
``size`` tells, one at a time, and notes how long each took to reach it: asks
get priority over a busy actor's turn and tells do not, and these figures show
what that costs. The raw-Trio versions run the same scene with their own
idioms, to show what Trio's scheduler gives for free.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from benchmarks.harness import BATCH, CHANNEL_SIZE, Countdown, percentile
from benchmarks.messaging import Echo, Request, Sink, echo_raw_await, echo_raw_batched
from wactorz.core.actor import Actor
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


class _Arrivals:
    """How long each stamped tell took to reach its receiver; ``next`` is set on each arrival."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.next = trio.Event()

    def note(self, message: dict[str, Any]) -> None:
        self.samples.append(time.perf_counter() - message["sent"])
        self.next.set()

    async def collect(self, tell: Callable[[dict[str, Any]], Awaitable[None]], size: int) -> None:
        """Send ``size`` stamped tells with ``tell``, each once the one before has arrived."""
        for _ in range(size):
            self.next = trio.Event()
            await tell({"kind": "stamp", "sent": time.perf_counter()})
            await self.next.wait()


class Stamp(Actor):
    """Notes in ``arrivals`` how long each tell took to reach it."""

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, arrivals: _Arrivals
    ) -> None:
        super().__init__(system, name=name)
        self.arrivals = arrivals

    async def _process(self, message: dict[str, Any]) -> object:
        self.arrivals.note(message)
        return None


class _Phase:
    """What one phase (idle or flooded) measured."""

    def __init__(self) -> None:
        self.asks: list[float] = []
        self.tells = _Arrivals()
        self.flood_rate = 0.0

    async def run(
        self,
        ask: Callable[[int], Awaitable[object]],
        tell: Callable[[dict[str, Any]], Awaitable[None]],
        size: int,
        flooded: Countdown | None = None,
    ) -> None:
        if flooded is not None:
            await trio.sleep(_WARM_UP_S)  # the flood reaches its steady state
            before, start = flooded.count, time.perf_counter()
        self.asks = await _timed(ask, size)
        await self.tells.collect(tell, size)
        if flooded is not None:
            self.flood_rate = (flooded.count - before) / (time.perf_counter() - start)


def _figures(idle: _Phase, flooded: _Phase) -> dict[str, float]:
    idle_median = percentile(idle.asks, 0.5)
    flooded_median = percentile(flooded.asks, 0.5)
    return {
        "slowdown": flooded_median / idle_median,
        "idle_us": idle_median * 1e6,
        "flooded_us": flooded_median * 1e6,
        "flooded_p99_us": percentile(flooded.asks, 0.99) * 1e6,
        "idle_tell_us": percentile(idle.tells.samples, 0.5) * 1e6,
        "flooded_tell_us": percentile(flooded.tells.samples, 0.5) * 1e6,
        "flooded_tell_p99_us": percentile(flooded.tells.samples, 0.99) * 1e6,
        "flood_msgs_per_s": flooded.flood_rate,
    }


async def fairness_wactorz(size: int) -> dict[str, float]:
    async with ActorSystem() as system:
        flooded = Countdown(-1)  # counts for ever: the flood has no end
        sink = await system.spawn(Sink, name="flooded", tally=flooded)
        echo = await system.spawn(Echo, name="echo")
        idle, busy = _Phase(), _Phase()
        stamps = [
            (await system.spawn(Stamp, name=f"stamp-{n}", arrivals=phase.tells)).id
            for n, phase in enumerate((idle, busy))
        ]

        async def ask(seq: int) -> object:
            return await system.ask(echo.id, {"kind": "ping", "seq": seq}, timeout=5)

        def teller(stamp: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
            async def tell(message: dict[str, Any]) -> None:
                await system.send(stamp, message)

            return tell

        async def flood() -> None:
            seq = 0
            while True:
                await system.send(sink.id, {"kind": "flood", "seq": seq})
                seq += 1

        await idle.run(ask, teller(stamps[0]), size)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            await busy.run(ask, teller(stamps[1]), size, flooded)
            nursery.cancel_scope.cancel()
        return _figures(idle, busy)


async def _fairness_raw(size: int, batched: bool) -> dict[str, float]:
    requests_send, requests = trio.open_memory_channel[Request](CHANNEL_SIZE)
    reply_send, replies = trio.open_memory_channel[Any](1)
    flood_send, flood_receive = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)
    stamp_send, stamp_receive = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)
    flooded = Countdown(-1)
    idle, busy = _Phase(), _Phase()
    phase = idle

    async def put(channel: trio.MemorySendChannel[Any], item: Any) -> None:
        """One send, in this version's idiom (asks and tells go one at a time)."""
        if batched:
            try:
                channel.send_nowait(item)
                return
            except trio.WouldBlock:
                pass
        await channel.send(item)

    async def tell(message: dict[str, Any]) -> None:
        await put(stamp_send, message)

    async def stamp() -> None:
        while True:  # one tell at a time: there is never a batch to take without waiting
            message = await stamp_receive.receive()
            phase.tells.note(message)  # the phase of now, not of when the wait began

    async def ask(seq: int) -> object:
        await put(requests_send, ({"kind": "ping", "seq": seq}, reply_send))
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
        nursery.start_soon(stamp)
        await idle.run(ask, tell, size)
        phase = busy
        nursery.start_soon(flood)
        await busy.run(ask, tell, size, flooded)
        nursery.cancel_scope.cancel()
    return _figures(idle, busy)


async def fairness_raw_await(size: int) -> dict[str, float]:
    return await _fairness_raw(size, batched=False)


async def fairness_raw_batched(size: int) -> dict[str, float]:
    return await _fairness_raw(size, batched=True)

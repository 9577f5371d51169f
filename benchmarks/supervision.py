"""Supervision workloads: a restart storm, and message accounting under crashes.

Restart storm: a supervised child crashes on every message it gets; the figure
is restarts per second of that child. It runs between two idle siblings, so
the three strategies do different work: one_for_one restarts the child alone,
rest_for_one also the sibling after it, one_for_all both siblings. The
baseline is the bare loop a raw-Trio program would write: start the task in a
nursery, catch its crash, start it again.

No loss: `NO_LOSS_POISON` of the messages sent to a supervised actor make it
crash; every other message must be handled exactly once, across the restarts.
"""

from __future__ import annotations

import functools
import random
import time
from typing import Any, Final

import trio

from benchmarks.harness import BATCH, CHANNEL_SIZE, Countdown
from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem, Supervisor

__all__ = [
    "NO_LOSS_POISON",
    "no_loss_raw_await",
    "no_loss_raw_batched",
    "no_loss_wactorz",
    "restart_raw_await",
    "restart_wactorz",
    "restart_wactorz_for",
]

NO_LOSS_POISON: Final = 0.01
"""Share of the messages in the no-loss workload that crash the actor handling them."""

_SETTLE_S: Final = 2.0
"""How long the no-loss workload waits without progress before counting what is missing."""


class Poisoned(Exception):
    """What a benchmark actor raises to crash on purpose."""


# ---- restart storm -------------------------------------------------------------------------


class Crasher(Actor):
    """Counts its starts and crashes on every message."""

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, starts: Countdown
    ) -> None:
        super().__init__(system, name=name)
        self.starts = starts

    async def on_start(self) -> None:
        self.starts.hit()

    async def _process(self, message: dict[str, Any]) -> object:
        raise Poisoned(f"crash #{message['seq']}")


class Idle(Actor):
    """A sibling that only waits for mail."""

    async def _process(self, message: dict[str, Any]) -> object:
        return None


async def restart_wactorz(size: int, strategy: str = "one_for_one") -> dict[str, float]:
    """``size`` messages to a child that crashes on each, under a ``strategy`` supervisor."""
    starts = Countdown(size + 1)  # the first start, then one per crash
    async with ActorSystem() as system:
        supervisor = Supervisor(system, strategy, max_restarts=size + 10, window_s=60)
        supervisor.add("before", Idle)
        supervisor.add("crasher", Crasher, starts=starts)
        supervisor.add("after", Idle)
        await supervisor.start()
        start = time.perf_counter()
        for seq in range(size):
            await system.send("crasher", {"kind": "crash", "seq": seq})
        await starts.done.wait()
        return {"restarts_per_s": size / (time.perf_counter() - start)}


def restart_wactorz_for(strategy: str) -> functools.partial[Any]:
    """The restart-storm runner for one strategy (picklable, like every runner)."""
    return functools.partial(restart_wactorz, strategy=strategy)


async def _crash_on_first(
    receive: trio.MemoryReceiveChannel[dict[str, Any]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    message = await receive.receive()
    raise Poisoned(f"crash #{message['seq']}")


async def restart_raw_await(size: int) -> dict[str, float]:
    """The bare restart loop: ``await nursery.start(child)``, catch the crash, again."""
    send, receive = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)
    restarts = 0

    async def feed() -> None:
        for seq in range(size):
            await send.send({"kind": "crash", "seq": seq})

    start = time.perf_counter()
    async with trio.open_nursery() as outer:
        outer.start_soon(feed)
        while restarts < size:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(_crash_on_first, receive)
            except* Poisoned:
                restarts += 1
    return {"restarts_per_s": size / (time.perf_counter() - start)}


# ---- no loss under crashes --------------------------------------------------------------------


class Ledger:
    """How many times each message was handled, and how many crashed the handler."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.handled = [0] * size
        self.crashes = 0
        self.all_done = Countdown(size)

    def record(self, message: dict[str, Any]) -> None:
        """Count ``message`` as handled; raise `Poisoned` for a poison message."""
        self.all_done.hit()
        if message["poison"]:
            self.crashes += 1
            raise Poisoned(f"poison message #{message['seq']}")
        self.handled[message["seq"]] += 1

    async def settle(self) -> None:
        """Wait until every message was seen, or nothing happened for `_SETTLE_S`."""
        while not self.all_done.done.is_set():
            seen = self.all_done.count
            with trio.move_on_after(_SETTLE_S):
                await self.all_done.done.wait()
            if self.all_done.count == seen:
                return

    def figures(self, poison: set[int], elapsed: float) -> dict[str, float]:
        lost = sum(1 for seq, n in enumerate(self.handled) if n == 0 and seq not in poison)
        duplicated = sum(n - 1 for n in self.handled if n > 1)
        return {
            "msgs_per_s": self.size / elapsed,
            "lost": lost,
            "duplicated": duplicated,
            "crashes": self.crashes,
        }


def _messages(size: int) -> tuple[list[dict[str, Any]], set[int]]:
    poison = set(random.Random(size).sample(range(size), round(size * NO_LOSS_POISON)))
    return [{"kind": "job", "seq": n, "poison": n in poison} for n in range(size)], poison


class Flaky(Actor):
    """Records each message in the ledger; a poison message crashes it."""

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, ledger: Ledger
    ) -> None:
        super().__init__(system, name=name)
        self.ledger = ledger

    async def _process(self, message: dict[str, Any]) -> object:
        self.ledger.record(message)
        return None


async def no_loss_wactorz(size: int) -> dict[str, float]:
    """``await system.send`` of every message to a one_for_one-supervised `Flaky`."""
    messages, poison = _messages(size)
    ledger = Ledger(size)
    async with ActorSystem() as system:
        supervisor = Supervisor(system, "one_for_one", max_restarts=size, window_s=60)
        supervisor.add("flaky", Flaky, ledger=ledger)
        await supervisor.start()
        target = system.lookup("flaky")
        assert target is not None
        start = time.perf_counter()
        for message in messages:
            await system.send(target.id, message)
        await ledger.settle()
        elapsed = time.perf_counter() - start
    return ledger.figures(poison, elapsed)


async def _consume_await(
    receive: trio.MemoryReceiveChannel[dict[str, Any]],
    ledger: Ledger,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    async for message in receive:
        ledger.record(message)


async def _consume_batched(
    receive: trio.MemoryReceiveChannel[dict[str, Any]],
    ledger: Ledger,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    task_status.started()
    left = BATCH
    while True:
        try:
            message = receive.receive_nowait()
        except trio.WouldBlock:
            message = await receive.receive()
            left = BATCH
        ledger.record(message)
        left -= 1
        if not left:
            left = BATCH
            await trio.lowlevel.checkpoint()


async def _no_loss_raw(size: int, batched: bool) -> dict[str, float]:
    messages, poison = _messages(size)
    ledger = Ledger(size)
    send, receive = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)
    consume = _consume_batched if batched else _consume_await

    async def supervise() -> None:
        while True:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(consume, receive, ledger)
            except* Poisoned:
                pass

    async def feed() -> None:
        left = BATCH
        for message in messages:
            if not batched:
                await send.send(message)
                continue
            try:
                send.send_nowait(message)
            except trio.WouldBlock:
                await send.send(message)
                left = BATCH
            left -= 1
            if not left:
                left = BATCH
                await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervise)
        start = time.perf_counter()
        nursery.start_soon(feed)
        await ledger.settle()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return ledger.figures(poison, elapsed)


async def no_loss_raw_await(size: int) -> dict[str, float]:
    return await _no_loss_raw(size, batched=False)


async def no_loss_raw_batched(size: int) -> dict[str, float]:
    return await _no_loss_raw(size, batched=True)

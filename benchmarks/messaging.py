"""Point-to-point messaging workloads: tell throughput, ask round-trip and fan-out/fan-in.

Each workload is written three times, doing the same work: on wactorz through
its public API, on raw Trio channels used the idiomatic awaited way
(``raw_await_*``), and on the same channels fed with ``send_nowait`` and drained
with ``receive_nowait``, yielding only every `BATCH` operations or when blocked
(``raw_batched_*``). The batched loops are written inline on purpose: a helper
call per message would slow the baseline down and flatter the ratio.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing

from benchmarks.harness import BATCH, CHANNEL_SIZE, Countdown, percentile
from wactorz.core.actor import Actor
from wactorz.core.errors import MailboxFull
from wactorz.core.registry import ActorSystem

__all__ = [
    "ask_raw_await",
    "ask_raw_batched",
    "ask_wactorz",
    "ask_wactorz_in_scope",
    "ask_wactorz_no_timeout",
    "fan_raw_await",
    "fan_raw_batched",
    "fan_wactorz",
    "fan_wactorz_unchecked",
    "tell_raw_await",
    "tell_raw_batched",
    "tell_wactorz",
    "tell_wactorz_nowait",
    "tell_wactorz_unchecked",
]

FAN_WORKERS = 1_000
"""Workers the fan-out/fan-in coordinator spreads its messages over."""


def _latencies(samples: list[float]) -> dict[str, float]:
    return {
        "median_us": percentile(samples, 0.5) * 1e6,
        "p99_us": percentile(samples, 0.99) * 1e6,
    }


# ---- tell throughput: one sender, one receiver ------------------------------------------------


class Sink(Actor):
    """Counts what it receives; ``done`` is set at the ``expected``-th message."""

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, tally: Countdown
    ) -> None:
        super().__init__(system, name=name)
        self.tally = tally

    async def _process(self, message: dict[str, Any]) -> object:
        tally = self.tally  # counted inline, as cheaply as the raw consumers' loops count
        tally.count += 1
        if tally.count == tally.expected:
            tally.done.set()
        return None


async def _tell(system: ActorSystem, size: int) -> dict[str, float]:
    tally = Countdown(size)
    sink = (await system.spawn(Sink, name="sink", tally=tally)).id
    start = time.perf_counter()
    for seq in range(size):
        await system.send(sink, {"kind": "tick", "seq": seq})
    await tally.done.wait()
    return {"msgs_per_s": size / (time.perf_counter() - start)}


async def tell_wactorz(size: int) -> dict[str, float]:
    """``await system.send`` in a loop, as a user writes it."""
    async with ActorSystem() as system:
        return await _tell(system, size)


async def tell_wactorz_unchecked(size: int) -> dict[str, float]:
    """As `tell_wactorz`, on a system built with ``check_messages=False`` (no validation)."""
    async with ActorSystem(check_messages=False) as system:
        return await _tell(system, size)


async def tell_wactorz_nowait(size: int) -> dict[str, float]:
    """``system.send_nowait``, falling back to ``await system.send`` when the mailbox is full."""
    async with ActorSystem() as system:
        tally = Countdown(size)
        sink = (await system.spawn(Sink, name="sink", tally=tally)).id
        start = time.perf_counter()
        for seq in range(size):
            message = {"kind": "tick", "seq": seq}
            try:
                system.send_nowait(sink, message)
            except MailboxFull:
                await system.send(sink, message)
        await tally.done.wait()
        return {"msgs_per_s": size / (time.perf_counter() - start)}


async def tell_raw_await(size: int) -> dict[str, float]:
    send, receive = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)

    async def consume() -> None:
        for _ in range(size):
            await receive.receive()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        for seq in range(size):
            await send.send({"kind": "tick", "seq": seq})
    return {"msgs_per_s": size / (time.perf_counter() - start)}


async def tell_raw_batched(size: int) -> dict[str, float]:
    send, receive = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)

    async def consume() -> None:
        left = BATCH
        for _ in range(size):
            try:
                receive.receive_nowait()
            except trio.WouldBlock:
                await receive.receive()
                left = BATCH
            left -= 1
            if not left:
                left = BATCH
                await trio.lowlevel.checkpoint()

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        left = BATCH
        for seq in range(size):
            message = {"kind": "tick", "seq": seq}
            try:
                send.send_nowait(message)
            except trio.WouldBlock:
                await send.send(message)
                left = BATCH
            left -= 1
            if not left:
                left = BATCH
                await trio.lowlevel.checkpoint()
    return {"msgs_per_s": size / (time.perf_counter() - start)}


# ---- ask round-trip: sequential asks, each timed --------------------------------------------


class Echo(Actor):
    """Answers every ask with the message it was asked."""

    async def _process(self, message: dict[str, Any]) -> object:
        return message


async def ask_wactorz(size: int) -> dict[str, float]:
    """``await system.ask(..., timeout=5)`` in a loop."""
    return await _ask_echo(size, 5.0)


async def ask_wactorz_no_timeout(size: int) -> dict[str, float]:
    """``await system.ask(..., timeout=None)`` in a loop: what the timeout costs, by difference."""
    return await _ask_echo(size, None)


async def ask_wactorz_in_scope(size: int) -> dict[str, float]:
    """``ask(..., timeout=5)`` inside a cancel scope of the caller's with a deadline of its own
    (as code bounding a whole exchange does): what the caller's scope costs each ask."""
    with trio.move_on_after(3600):
        return await _ask_echo(size, 5.0)
    raise RuntimeError("an hour's cancel scope expired during the benchmark")


async def _ask_echo(size: int, timeout: float | None) -> dict[str, float]:
    samples = []
    async with ActorSystem() as system:
        echo = await system.spawn(Echo, name="echo")
        for seq in range(size):
            start = time.perf_counter()
            await system.ask(echo.id, {"kind": "ping", "seq": seq}, timeout=timeout)
            samples.append(time.perf_counter() - start)
    return _latencies(samples)


Request = tuple[dict[str, Any], trio.MemorySendChannel[Any]]


async def echo_raw_await(requests: trio.MemoryReceiveChannel[Request]) -> None:
    """Answer each request on the reply channel that came with it."""
    async for message, reply in requests:
        await reply.send(message)


async def echo_raw_batched(requests: trio.MemoryReceiveChannel[Request]) -> None:
    """Answer requests back to back, yielding every `BATCH` of them or when none is waiting."""
    left = BATCH
    while True:
        try:
            message, reply = requests.receive_nowait()
        except trio.WouldBlock:
            message, reply = await requests.receive()
            left = BATCH
        try:
            reply.send_nowait(message)
        except trio.WouldBlock:
            await reply.send(message)
            left = BATCH
        left -= 1
        if not left:
            left = BATCH
            await trio.lowlevel.checkpoint()


async def ask_raw_await(size: int) -> dict[str, float]:
    """A request carries the asker's reply channel (one per asker, reused for every ask)."""
    send, receive = trio.open_memory_channel[Request](CHANNEL_SIZE)
    reply_send, reply_receive = trio.open_memory_channel[Any](1)
    samples = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_raw_await, receive)
        for seq in range(size):
            start = time.perf_counter()
            await send.send(({"kind": "ping", "seq": seq}, reply_send))
            await reply_receive.receive()
            samples.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return _latencies(samples)


async def ask_raw_batched(size: int) -> dict[str, float]:
    send, receive = trio.open_memory_channel[Request](CHANNEL_SIZE)
    reply_send, reply_receive = trio.open_memory_channel[Any](1)
    samples = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_raw_batched, receive)
        for seq in range(size):
            start = time.perf_counter()
            request = ({"kind": "ping", "seq": seq}, reply_send)
            try:
                send.send_nowait(request)
            except trio.WouldBlock:
                await send.send(request)
            await reply_receive.receive()
            samples.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return _latencies(samples)


# ---- fan-out/fan-in: one coordinator, many workers, a reply for every message ---------------
#
# The coordinator hands each worker its share of jobs in turn (all 100 of worker 0's,
# then worker 1's, ...) from one task, and collects the replies in another as they come,
# in all three versions. The collector drains as the workers reply, so replies wait for
# room only when the workers outpace it, and a worker that finds several jobs queued
# handles them in one turn.


class FanWorker(Actor):
    """Replies to every job, with a tell back to whoever sent it."""

    async def _process(self, message: dict[str, Any]) -> object:
        assert self.sender is not None
        await self.send(self.sender, {"kind": "done", "seq": message["seq"]})
        return None


class Coordinator(Actor):
    """Once ``go`` is set, sends each worker its ``per_worker`` jobs; counts the replies."""

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        workers: list[str],
        per_worker: int,
        go: trio.Event,
        replies: Countdown,
    ) -> None:
        super().__init__(system, name=name)
        self.workers = workers
        self.per_worker = per_worker
        self.go = go
        self.replies = replies

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        await self.go.wait()
        for worker in self.workers:
            for seq in range(self.per_worker):
                await self.send(worker, {"kind": "job", "seq": seq})

    async def _process(self, message: dict[str, Any]) -> object:
        self.replies.hit()
        return None


def _fan_figures(jobs: int, elapsed: float) -> dict[str, float]:
    return {"msgs_per_s": 2 * jobs / elapsed}  # every job and every reply is a message


async def _fan(system: ActorSystem, size: int) -> dict[str, float]:
    per_worker = size // FAN_WORKERS
    jobs = per_worker * FAN_WORKERS
    workers = [(await system.spawn(FanWorker)).id for _ in range(FAN_WORKERS)]
    go, replies = trio.Event(), Countdown(jobs)
    await system.spawn(
        Coordinator,
        name="coordinator",
        workers=workers,
        per_worker=per_worker,
        go=go,
        replies=replies,
    )
    start = time.perf_counter()
    go.set()
    await replies.done.wait()
    return _fan_figures(jobs, time.perf_counter() - start)


async def fan_wactorz(size: int) -> dict[str, float]:
    """``size`` jobs in all, spread over `FAN_WORKERS` workers; counts jobs plus replies."""
    async with ActorSystem() as system:
        return await _fan(system, size)


async def fan_wactorz_unchecked(size: int) -> dict[str, float]:
    """As `fan_wactorz`, on a system built with ``check_messages=False`` (no validation)."""
    async with ActorSystem(check_messages=False) as system:
        return await _fan(system, size)


async def _start_raw_workers(
    nursery: trio.Nursery,
    work: Callable[[trio.MemoryReceiveChannel[dict[str, Any]]], Awaitable[None]],
) -> list[trio.MemorySendChannel[dict[str, Any]]]:
    """Start `FAN_WORKERS` raw workers, each on its own job channel; return those channels."""
    workers = []
    for _ in range(FAN_WORKERS):
        job_send, job_receive = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)
        nursery.start_soon(work, job_receive)
        workers.append(job_send)
    await trio.testing.wait_all_tasks_blocked()
    return workers


async def fan_raw_await(size: int) -> dict[str, float]:
    per_worker = size // FAN_WORKERS
    jobs = per_worker * FAN_WORKERS
    inbox_send, inbox = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)

    async def work(jobs_in: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        for _ in range(per_worker):
            job = await jobs_in.receive()
            await inbox_send.send({"kind": "done", "seq": job["seq"]})

    async def scatter(workers: list[trio.MemorySendChannel[dict[str, Any]]]) -> None:
        for worker in workers:
            for seq in range(per_worker):
                await worker.send({"kind": "job", "seq": seq})

    async with trio.open_nursery() as nursery:
        workers = await _start_raw_workers(nursery, work)
        start = time.perf_counter()
        nursery.start_soon(scatter, workers)
        for _ in range(jobs):
            await inbox.receive()
        elapsed = time.perf_counter() - start
    return _fan_figures(jobs, elapsed)


async def fan_raw_batched(size: int) -> dict[str, float]:
    per_worker = size // FAN_WORKERS
    jobs = per_worker * FAN_WORKERS
    inbox_send, inbox = trio.open_memory_channel[dict[str, Any]](CHANNEL_SIZE)

    async def work(jobs_in: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        left = BATCH
        for _ in range(per_worker):
            try:
                job = jobs_in.receive_nowait()
            except trio.WouldBlock:
                job = await jobs_in.receive()
                left = BATCH
            reply = {"kind": "done", "seq": job["seq"]}
            try:
                inbox_send.send_nowait(reply)
            except trio.WouldBlock:
                await inbox_send.send(reply)
                left = BATCH
            left -= 1
            if not left:
                left = BATCH
                await trio.lowlevel.checkpoint()

    async def scatter(workers: list[trio.MemorySendChannel[dict[str, Any]]]) -> None:
        left = BATCH
        for worker in workers:
            for seq in range(per_worker):
                job = {"kind": "job", "seq": seq}
                try:
                    worker.send_nowait(job)
                except trio.WouldBlock:
                    await worker.send(job)
                    left = BATCH
                left -= 1
                if not left:
                    left = BATCH
                    await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        workers = await _start_raw_workers(nursery, work)
        start = time.perf_counter()
        nursery.start_soon(scatter, workers)
        left = BATCH
        for _ in range(jobs):
            try:
                inbox.receive_nowait()
            except trio.WouldBlock:
                await inbox.receive()
                left = BATCH
            left -= 1
            if not left:
                left = BATCH
                await trio.lowlevel.checkpoint()
        elapsed = time.perf_counter() - start
    return _fan_figures(jobs, elapsed)

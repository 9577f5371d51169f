"""Fixtures and small test actors shared by the core runtime tests.

Append new helpers at the end; several test modules rely on what is here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from wactorz.core.actor import Actor
from wactorz.core.events import ActorEvent, EventKind, EventStream
from wactorz.core.registry import ActorSystem
from wactorz.core.strategy import ChildStatus
from wactorz.core.supervisor import Supervisor

Log = list[tuple[Any, ...]]
"""What `Worker`s record, in the order it happened: ``("start", name)``, ``("stop", name)``, ..."""


class Boom(Exception):
    """The failure test actors raise on purpose."""


class Worker(Actor):
    """An actor that records its lifecycle in a shared log and does what its messages say.

    Messages: ``{"op": "crash"}`` raises `Boom`; ``{"op": "exit"}`` makes a normal
    exit (`stop` from inside); ``{"op": "incr"}`` / ``{"op": "get"}`` bump / read a
    counter held by this incarnation; ``{"op": "record", "value": v}`` logs
    ``("got", name, v)``; ``{"op": "sleep", "s": s}`` sleeps, then logs ``("slept", name)``.

    ``fail_starts`` maps names to how many of their next `on_start` calls raise
    (shared and decremented, so a test can script start failures). ``stop_s``
    makes `on_stop` take that long; ``stop_error`` makes it raise after logging.
    ``restart_s`` makes `on_start` take that long in every incarnation but the first.
    """

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        log: Log | None = None,
        fail_starts: dict[str, float] | None = None,
        stop_s: float = 0.0,
        stop_error: bool = False,
        restart_s: float = 0.0,
    ) -> None:
        super().__init__(system, name=name)
        self.log: Log = log if log is not None else []
        self.fail_starts = fail_starts if fail_starts is not None else {}
        self.stop_s = stop_s
        self.stop_error = stop_error
        self.restart_s = restart_s
        self.count = 0

    async def on_start(self) -> None:
        if self.restart_s and self.statistics().incarnation > 0:
            await trio.sleep(self.restart_s)
        if self.fail_starts.get(self.name, 0) > 0:
            self.fail_starts[self.name] -= 1
            self.log.append(("start-failed", self.name))
            raise Boom(f"{self.name} refuses to start")
        self.log.append(("start", self.name))

    async def on_stop(self) -> None:
        if self.stop_s:
            await trio.sleep(self.stop_s)
        self.log.append(("stop", self.name))
        if self.stop_error:
            raise Boom(f"{self.name} fails in on_stop")

    async def _process(self, message: dict[str, Any]) -> object:
        op = message["op"]
        if op == "crash":
            raise Boom(message.get("why", f"{self.name} crashed"))
        if op == "exit":
            await self.stop()
        elif op == "incr":
            self.count += 1
        elif op == "record":
            self.log.append(("got", self.name, message["value"]))
            return message["value"]
        elif op == "sleep":
            await trio.sleep(message["s"])
            self.log.append(("slept", self.name))
        return self.count


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    """A running actor system, stopped when the test ends."""
    async with ActorSystem(node="test") as running:
        yield running


async def next_event(
    events: EventStream,
    kind: EventKind | str,
    name: str | None = None,
    *,
    where: Callable[[ActorEvent], bool] | None = None,
    timeout: float = 10.0,
) -> ActorEvent:
    """Skip events until one of ``kind`` (for actor ``name``, matching ``where``) arrives."""
    with trio.fail_after(timeout):
        async for event in events:
            if event.kind == kind and (name is None or event.actor_name == name):
                if where is None or where(event):
                    return event
    raise AssertionError("the event stream ended")  # pragma: no cover


async def failed_starts(events: EventStream, name: str, count: int) -> None:
    """Wait until ``name`` has failed to (re)start ``count`` more times."""
    for _ in range(count):
        await next_event(
            events, EventKind.CRASHED, name, where=lambda e: e.reason == "failed to start"
        )


def drain(events: EventStream) -> list[ActorEvent]:
    """Every event already buffered in ``events``, without waiting."""
    seen: list[ActorEvent] = []
    while True:
        try:
            seen.append(events.receive_nowait())
        except trio.WouldBlock:
            return seen


async def start_supervisor(
    system: ActorSystem,
    children: list[str],
    log: Log,
    *,
    restart: str = "permanent",
    name: str = "sup",
    fail_starts: dict[str, float] | None = None,
    **options: Any,
) -> Supervisor:
    """Start a top-level supervisor ``name`` over `Worker` children (in the given order)."""
    sup = Supervisor(system, name=name, **options)
    for child in children:
        sup.add(child, Worker, restart=restart, log=log, fail_starts=fail_starts)
    await sup.start()
    return sup


CRASH = {"op": "crash"}
EXIT = {"op": "exit"}
GET = {"op": "get"}
INCR = {"op": "incr"}


def starts(log: Log) -> list[str]:
    """Names in the order they started."""
    return [entry[1] for entry in log if entry[0] == "start"]


def stops(log: Log) -> list[str]:
    """Names in the order they ran `on_stop`."""
    return [entry[1] for entry in log if entry[0] == "stop"]


def statuses(sup: Supervisor) -> dict[str, ChildStatus]:
    """Each child's status, in start order."""
    return {child.name: child.status for child in sup.which_children()}


def worker(system: ActorSystem, name: str) -> Worker:
    """The running `Worker` named ``name`` (fails the test if there is none)."""
    actor = system.lookup(name)
    assert isinstance(actor, Worker), f"{name!r} is not running"
    return actor


async def events_until(
    events: EventStream, kind: EventKind, name: str, *, timeout: float = 10.0
) -> list[ActorEvent]:
    """Every event up to and including the first ``kind`` event of ``name``."""
    seen: list[ActorEvent] = []
    with trio.fail_after(timeout):
        async for event in events:
            seen.append(event)
            if event.kind == kind and event.actor_name == name:
                break
    return seen


async def crash_and_wait(system: ActorSystem, name: str, until: str | None = None) -> None:
    """Crash ``name`` and return once ``until`` (default: ``name``) has been restarted."""
    async with system.events() as events:
        await system.send(name, CRASH)
        await next_event(events, EventKind.RESTARTED, until or name)

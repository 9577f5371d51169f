"""Lifecycle events: each field means one thing, whatever the kind of event."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from tests.core.conftest import Boom, Worker, next_event
from wactorz.core.actor import Actor
from wactorz.core.errors import ActorStartFailed, SupervisorGaveUp
from wactorz.core.events import EventKind
from wactorz.core.registry import ActorSystem, Supervisor


async def test_supervisor_is_always_the_one_it_runs_under_gave_up_included() -> None:
    async with ActorSystem() as system, system.events() as events:
        outer = Supervisor(system, "one_for_one", max_restarts=0, window_s=60, name="outer")
        inner = Supervisor(system, "one_for_one", max_restarts=0, window_s=60, name="inner")
        inner.add("w", Worker, log=[])
        outer.add("inner", inner)
        await outer.start()
        started = await next_event(events, EventKind.STARTED, "w")
        assert started.supervisor == "inner"
        await system.send("w", {"op": "crash"})
        crashed = await next_event(events, EventKind.CRASHED, "w")
        assert crashed.supervisor == "inner" and crashed.exception is not None
        inner_gave_up = await next_event(events, EventKind.GAVE_UP, "inner")
        assert inner_gave_up.supervisor == "outer"
        assert inner_gave_up.reason and inner_gave_up.exception is not None
        outer_gave_up = await next_event(events, EventKind.GAVE_UP, "outer")
        assert outer_gave_up.supervisor == "root"


# ---- reason: where a crash happened (the exception says what) ------------------------------


class _Background(Actor):
    """Its background task raises on the first message's say-so, or before it is ready."""

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, early: bool = False
    ) -> None:
        super().__init__(system, name=name)
        self.early = early
        self.go = trio.Event()

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        if self.early:
            raise Boom("not ready")
        task_status.started()
        await self.go.wait()
        raise Boom("in the background")

    async def _process(self, message: dict[str, Any]) -> object:
        self.go.set()
        return None


async def test_a_crash_while_handling_a_message_says_so() -> None:
    async with ActorSystem() as system, system.events() as events:
        await system.spawn(Worker, name="w")
        await system.send("w", {"op": "crash", "why": "oops"})
        crashed = await next_event(events, EventKind.CRASHED, "w")
    assert crashed.reason == "raised while handling a message"
    assert isinstance(crashed.exception, Boom) and str(crashed.exception) == "oops"
    assert crashed.describe().endswith("— raised while handling a message [Boom: oops]")


async def test_a_crash_in_the_background_task_says_so() -> None:
    async with ActorSystem() as system, system.events() as events:
        await system.spawn(_Background, name="b")
        await system.send("b", {})
        crashed = await next_event(events, EventKind.CRASHED, "b")
    assert crashed.reason == "raised in its background task"
    assert isinstance(crashed.exception, Boom) and str(crashed.exception) == "in the background"


@pytest.mark.parametrize(
    ("cls", "options"),
    [(Worker, {"fail_starts": {"a": 1}}), (_Background, {"early": True})],
    ids=["on_start", "background"],
)
async def test_a_failure_before_the_actor_is_ready_is_a_failure_to_start(
    cls: type[Actor], options: dict[str, Any]
) -> None:
    async with ActorSystem() as system, system.events() as events:
        with pytest.raises(ActorStartFailed):
            await system.spawn(cls, name="a", **options)
        crashed = await next_event(events, EventKind.CRASHED, "a")
    assert crashed.reason == "failed to start"
    assert isinstance(crashed.exception, Boom)


async def test_a_nested_supervisor_that_gave_up_crashed_by_giving_up() -> None:
    async with ActorSystem() as system, system.events() as events:
        outer = Supervisor(system, "one_for_one", max_restarts=0, window_s=60, name="outer")
        inner = Supervisor(system, "one_for_one", max_restarts=0, window_s=60, name="inner")
        inner.add("w", Worker, log=[])
        outer.add("inner", inner)
        await outer.start()
        await system.send("w", {"op": "crash"})
        crashed = await next_event(events, EventKind.CRASHED, "inner")
    assert crashed.reason == "gave up"
    assert isinstance(crashed.exception, SupervisorGaveUp)

"""Lifecycle events: each field means one thing, whatever the kind of event."""

from __future__ import annotations

from tests.core.conftest import Worker, next_event
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

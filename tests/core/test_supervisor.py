"""Supervisor behaviour, one example per rule: strategies, restart types, intensity, shutdown.

The runtime is observed from outside: the order actors record their starts and
stops in, `which_children`, actor instances and ids from `system.lookup`, and the
events stream. Tests that depend on time run on the autojump clock, so restart
windows and delays are exact and cost no real time.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from tests.core.conftest import Boom, Log, Worker, drain, next_event, start_supervisor
from wactorz.core.errors import (
    ActorCrashed,
    ActorStartFailed,
    ActorStopped,
    DuplicateName,
    SupervisorError,
)
from wactorz.core.events import ActorEvent, EventKind, EventStream
from wactorz.core.registry import ActorSystem
from wactorz.core.strategy import AutoShutdown, ChildStatus, RestartType, Strategy
from wactorz.core.supervisor import ChildCounts, ChildInfo, Supervisor

CRASH = {"op": "crash"}
EXIT = {"op": "exit"}
GET = {"op": "get"}
INCR = {"op": "incr"}


def starts(log: Log) -> list[str]:
    return [entry[1] for entry in log if entry[0] == "start"]


def stops(log: Log) -> list[str]:
    return [entry[1] for entry in log if entry[0] == "stop"]


def statuses(sup: Supervisor) -> dict[str, ChildStatus]:
    return {child.name: child.status for child in sup.which_children()}


def worker(system: ActorSystem, name: str) -> Worker:
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


# ---- construction ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("one_for_one", Strategy.ONE_FOR_ONE),
        ("one_for_all", Strategy.ONE_FOR_ALL),
        ("rest_for_one", Strategy.REST_FOR_ONE),
        (Strategy.ONE_FOR_ALL, Strategy.ONE_FOR_ALL),
    ],
)
async def test_strategy_is_accepted_as_string_or_enum(
    system: ActorSystem, given: str, expected: Strategy
) -> None:
    sup = Supervisor(system, given)
    assert sup.strategy is expected


async def test_unknown_strategy_is_rejected_naming_the_choices(system: ActorSystem) -> None:
    with pytest.raises(ValueError, match="one_for_one") as info:
        Supervisor(system, "none_for_one")
    assert "none_for_one" in str(info.value)


@pytest.mark.parametrize(
    ("options", "mentions"),
    [
        ({"max_restarts": -1}, "max_restarts"),
        ({"max_restarts": 1.5}, "max_restarts"),
        ({"window_s": 0}, "window_s"),
        ({"window_s": -5.0}, "window_s"),
        ({"restart_delay_s": -1.0}, "restart_delay_s"),
        ({"max_restart_delay_s": -1.0}, "max_restart_delay_s"),
        ({"restart_backoff": 0.5}, "restart_backoff"),
        ({"auto_shutdown": "sometimes"}, "auto_shutdown"),
    ],
)
async def test_invalid_limits_are_rejected_at_construction(
    system: ActorSystem, options: dict[str, object], mentions: str
) -> None:
    with pytest.raises(ValueError, match=mentions):
        Supervisor(system, **options)  # type: ignore[arg-type]


async def test_invalid_child_specs_are_rejected_at_add(system: ActorSystem) -> None:
    sup = Supervisor(system)
    with pytest.raises(ValueError, match="restart type"):
        sup.add("a", Worker, restart="forever")
    with pytest.raises(ValueError, match="shutdown_s"):
        sup.add("a", Worker, shutdown_s=-1)
    with pytest.raises(ValueError, match="invalid actor name"):
        sup.add("no spaces", Worker)
    with pytest.raises(TypeError, match="Actor subclass or a Supervisor"):
        sup.add("a", object)  # type: ignore[arg-type]
    assert sup.which_children() == []


# ---- restart types -------------------------------------------------------------------------


async def test_permanent_child_is_restarted_after_a_crash_and_after_a_normal_exit(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log, restart="permanent", max_restarts=5)
    await crash_and_wait(system, "a")
    async with system.events() as events:
        await system.send("a", EXIT)
        await next_event(events, EventKind.RESTARTED, "a")
    assert starts(log) == ["a", "a", "a"]
    assert statuses(sup) == {"a": ChildStatus.RUNNING}
    assert worker(system, "a").statistics().incarnation == 2


async def test_transient_child_is_restarted_after_a_crash_only(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log, restart="transient")
    await crash_and_wait(system, "a")
    assert starts(log) == ["a", "a"]

    async with system.events() as events:
        await system.send("a", EXIT)
        await next_event(events, EventKind.STOPPED, "a")
    await trio.testing.wait_all_tasks_blocked()
    assert starts(log) == ["a", "a"]
    assert sup.which_children() == [
        ChildInfo("a", sup.which_children()[0].id, "worker", RestartType.TRANSIENT, "stopped")
    ]
    assert system.lookup("a") is None
    assert sup.count_children() == ChildCounts(specs=1, active=0, supervisors=0, workers=1)


@pytest.mark.parametrize("how", ["crash", "exit"])
async def test_temporary_child_is_never_restarted_and_its_spec_is_removed(
    system: ActorSystem, how: str
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a", "b"], log, restart="temporary")
    async with system.events() as events:
        await system.send("a", {"op": how})
        await next_event(events, EventKind.CRASHED if how == "crash" else EventKind.STOPPED, "a")
    await trio.testing.wait_all_tasks_blocked()
    assert starts(log) == ["a", "b"]
    assert [child.name for child in sup.which_children()] == ["b"]
    assert system.lookup("a") is None
    assert sup.running


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_temporary_sibling_terminated_by_the_strategy_is_not_restarted_but_removed(
    system: ActorSystem, strategy: str
) -> None:
    log: Log = []
    sup = Supervisor(system, strategy, name="sup")
    sup.add("a", Worker, log=log)
    sup.add("t", Worker, restart="temporary", log=log)
    sup.add("c", Worker, log=log)
    await sup.start()

    await crash_and_wait(system, "a", until="c")

    assert log[3:] == [
        ("stop", "a"),
        ("stop", "c"),
        ("stop", "t"),
        ("start", "a"),
        ("start", "c"),
    ]
    assert [(c.name, c.status) for c in sup.which_children()] == [
        ("a", ChildStatus.RUNNING),
        ("c", ChildStatus.RUNNING),
    ]
    assert system.lookup("t") is None


# ---- strategies ---------------------------------------------------------------------------


async def test_one_for_one_restarts_only_the_crashed_child(system: ActorSystem) -> None:
    log: Log = []
    await start_supervisor(system, ["a", "b", "c"], log, strategy="one_for_one")
    a, b, c = (worker(system, name) for name in "abc")
    for name in "ac":
        await system.ask(name, INCR)

    await crash_and_wait(system, "b")

    assert log[3:] == [("stop", "b"), ("start", "b")]
    assert worker(system, "a") is a and worker(system, "c") is c
    assert await system.ask("a", GET) == 1
    assert await system.ask("c", GET) == 1
    assert worker(system, "b") is not b
    assert a.statistics().incarnation == 0
    assert worker(system, "b").statistics().incarnation == 1


async def test_one_for_all_restarts_siblings_in_start_order(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a", "b", "c", "d"], log, strategy="one_for_all")
    before = {name: worker(system, name) for name in "abcd"}

    await crash_and_wait(system, "b", until="d")

    assert log[4:] == [
        ("stop", "b"),
        ("stop", "d"),
        ("stop", "c"),
        ("stop", "a"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]
    for name, old in before.items():
        new = worker(system, name)
        assert new is not old and new.id == old.id
        assert new.statistics().incarnation == 1
    assert [c.name for c in sup.which_children()] == ["a", "b", "c", "d"]
    assert all(c.running for c in sup.which_children())


async def test_rest_for_one_restarts_the_crashed_child_and_those_started_after_it(
    system: ActorSystem,
) -> None:
    log: Log = []
    await start_supervisor(system, ["a", "b", "c", "d"], log, strategy="rest_for_one")
    a = worker(system, "a")
    await system.ask("a", INCR)

    await crash_and_wait(system, "b", until="d")

    assert log[4:] == [
        ("stop", "b"),
        ("stop", "d"),
        ("stop", "c"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]
    assert worker(system, "a") is a
    assert await system.ask("a", GET) == 1
    assert [worker(system, n).statistics().incarnation for n in "abcd"] == [0, 1, 1, 1]


async def test_rest_for_one_crash_of_the_last_child_restarts_only_it(system: ActorSystem) -> None:
    log: Log = []
    await start_supervisor(system, ["a", "b", "c"], log, strategy="rest_for_one")
    await crash_and_wait(system, "c")
    assert log[3:] == [("stop", "c"), ("start", "c")]


# ---- restart intensity -------------------------------------------------------------------


async def test_max_restarts_within_the_window_are_allowed_and_one_more_gives_up(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log, max_restarts=3, window_s=10)
    for _ in range(3):
        await crash_and_wait(system, "a")
        await trio.sleep(1)
    assert sup.running
    async with system.events() as events:
        await system.send("a", CRASH)
        gave_up = await next_event(events, EventKind.GAVE_UP, "sup")
    assert gave_up.reason is not None
    assert "4 restarts within 10 s" in gave_up.reason and "max_restarts=3" in gave_up.reason
    assert starts(log) == ["a"] * 4
    assert not sup.running
    assert system.lookup("a") is None


async def test_restarts_older_than_the_window_no_longer_count(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log, max_restarts=2, window_s=10)
    t0 = trio.current_time()
    await crash_and_wait(system, "a")  # t0
    await trio.sleep_until(t0 + 4)
    await crash_and_wait(system, "a")  # t0 + 4
    await trio.sleep_until(t0 + 10.5)
    await crash_and_wait(system, "a")  # the one at t0 has left the window
    assert sup.running
    await trio.sleep_until(t0 + 13.5)
    async with system.events() as events:
        await system.send("a", CRASH)  # t0 + 4, + 10.5, + 13.5: three within 10 s
        await next_event(events, EventKind.GAVE_UP, "sup")
    assert not sup.running


async def test_a_restart_exactly_window_s_old_still_counts(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log, max_restarts=1, window_s=10)
    t0 = trio.current_time()
    await crash_and_wait(system, "a")
    await trio.sleep_until(t0 + 10)
    async with system.events() as events:
        await system.send("a", CRASH)
        await next_event(events, EventKind.GAVE_UP, "sup")
    assert not sup.running


async def test_max_restarts_zero_gives_up_on_the_first_restart(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a", "b"], log, max_restarts=0)
    async with system.events() as events:
        await system.send("a", EXIT)  # a normal exit of a permanent child needs a restart too
        gave_up = await next_event(events, EventKind.GAVE_UP, "sup")
    assert gave_up.reason is not None and "max_restarts=0" in gave_up.reason
    assert starts(log) == ["a", "b"]
    assert stops(log) == ["a", "b"]
    assert not sup.running


async def test_one_for_all_restart_of_many_children_counts_once(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(
        system, ["a", "b", "c"], log, strategy="one_for_all", max_restarts=1, window_s=60
    )
    await crash_and_wait(system, "a", until="c")
    assert sup.running
    assert starts(log) == ["a", "b", "c"] * 2
    async with system.events() as events:
        await system.send("c", CRASH)
        await next_event(events, EventKind.GAVE_UP, "sup")


async def test_restart_child_does_not_count_toward_the_intensity(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log, max_restarts=1, window_s=60)
    for _ in range(3):
        await sup.terminate_child("a")
        await sup.restart_child("a")
    await crash_and_wait(system, "a")
    assert sup.running
    assert starts(log) == ["a"] * 5


async def test_a_restart_that_fails_in_on_start_counts_and_is_retried(
    system: ActorSystem,
) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    sup = await start_supervisor(
        system, ["a", "b"], log, max_restarts=3, window_s=60, fail_starts=fail_starts
    )
    fail_starts["a"] = 2
    async with system.events() as events:
        await system.send("a", CRASH)
        restarted = await next_event(events, EventKind.RESTARTED, "a")
        seen = drain(events)
    assert restarted.incarnation == 3
    assert log[2:] == [
        ("stop", "a"),
        ("start-failed", "a"),
        ("start-failed", "a"),
        ("start", "a"),
    ]
    assert worker(system, "a").statistics().incarnation == 3
    assert sup.running
    assert seen == []  # nothing after the restart: b was left alone

    async with system.events() as events:
        await system.send("a", CRASH)  # the 4th restart in the window
        await next_event(events, EventKind.GAVE_UP, "sup")


async def test_each_failed_restart_is_reported_as_a_crash_of_a_new_incarnation(
    system: ActorSystem,
) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    await start_supervisor(system, ["a"], log, max_restarts=5, fail_starts=fail_starts)
    fail_starts["a"] = 2
    async with system.events() as events:
        await system.send("a", CRASH)
        seen = await events_until(events, EventKind.RESTARTED, "a")
    assert [(e.kind, e.incarnation, e.reason) for e in seen if e.kind != "dead_letter"] == [
        (EventKind.CRASHED, 0, None),
        (EventKind.CRASHED, 1, "failed to start"),
        (EventKind.CRASHED, 2, "failed to start"),
        (EventKind.RESTARTED, 3, None),
    ]
    assert all(isinstance(e.exception, Boom) for e in seen if e.kind == "crashed")
    assert len({e.actor_id for e in seen}) == 1


async def test_child_shows_restarting_while_its_restart_keeps_failing(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    sup = await start_supervisor(
        system,
        ["a", "b"],
        log,
        max_restarts=100,
        window_s=1000,
        restart_delay_s=1.0,
        fail_starts=fail_starts,
    )
    fail_starts["a"] = math.inf
    async with system.events() as events:
        await system.send("a", CRASH)
        for _ in range(2):
            await next_event(
                events, EventKind.CRASHED, "a", where=lambda e: e.reason == "failed to start"
            )
    assert statuses(sup) == {"a": ChildStatus.RESTARTING, "b": ChildStatus.RUNNING}
    assert sup.count_children() == ChildCounts(specs=2, active=1, supervisors=0, workers=2)
    with pytest.raises(SupervisorError, match="restarting"):
        await sup.restart_child("a")
    with pytest.raises(SupervisorError, match="restarting"):
        sup.delete_child("a")

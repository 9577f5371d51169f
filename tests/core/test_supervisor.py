"""Supervisor behaviour, one example per rule: strategies, restart types, intensity, shutdown.

The runtime is observed from outside: the order actors record their starts and
stops in, `which_children`, actor instances and ids from `system.lookup`, and the
events stream. Tests that depend on time run on the autojump clock, so restart
windows and delays are exact and cost no real time.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio
import trio.testing

from tests.core.conftest import (
    CRASH,
    EXIT,
    GET,
    INCR,
    Boom,
    Log,
    Worker,
    crash_and_wait,
    drain,
    events_until,
    failed_starts,
    next_event,
    start_supervisor,
    starts,
    statuses,
    stops,
    worker,
)
from wactorz.core.actor import Actor
from wactorz.core.errors import (
    ActorCrashed,
    ActorStartFailed,
    ActorStopped,
    DuplicateName,
    SupervisorError,
    SupervisorGaveUp,
)
from wactorz.core.events import EventKind
from wactorz.core.registry import ActorSystem
from wactorz.core.strategy import AutoShutdown, ChildStatus, RestartType, Strategy
from wactorz.core.supervisor import ChildCounts, ChildInfo, Supervisor

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


async def test_its_settings_read_back_as_given(system: ActorSystem) -> None:
    sup = Supervisor(system, "rest_for_one", 7, 2.5, auto_shutdown="any_significant")
    assert (sup.strategy, sup.max_restarts, sup.window_s, sup.auto_shutdown) == (
        Strategy.REST_FOR_ONE,
        7,
        2.5,
        AutoShutdown.ANY_SIGNIFICANT,
    )


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
    a_id = worker(system, "a").id
    await crash_and_wait(system, "a")
    assert starts(log) == ["a", "a"]

    async with system.events() as events:
        await system.send("a", EXIT)
        await next_event(events, EventKind.STOPPED, "a")
    await trio.testing.wait_all_tasks_blocked()
    assert starts(log) == ["a", "a"]
    assert sup.which_children() == [
        ChildInfo("a", a_id, "worker", RestartType.TRANSIENT, ChildStatus.STOPPED)
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
        (EventKind.CRASHED, 0, "raised while handling a message"),
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
        await failed_starts(events, "a", 2)
    assert statuses(sup) == {"a": ChildStatus.RESTARTING, "b": ChildStatus.RUNNING}
    assert sup.count_children() == ChildCounts(specs=2, active=1, supervisors=0, workers=2)
    with pytest.raises(SupervisorError, match="restarting"):
        await sup.restart_child("a")
    with pytest.raises(SupervisorError, match="restarting"):
        sup.delete_child("a")


async def start_with_a_child_that_cannot_restart(
    system: ActorSystem, delay_s: float
) -> tuple[Supervisor, Log, dict[str, float]]:
    """Start children a and b, restarts delayed by ``delay_s``; every restart of a will fail."""
    log: Log = []
    fail_starts: dict[str, float] = {}
    sup = await start_supervisor(
        system,
        ["a", "b"],
        log,
        max_restarts=1000,
        window_s=1000,
        restart_delay_s=delay_s,
        fail_starts=fail_starts,
    )
    fail_starts["a"] = math.inf
    return sup, log, fail_starts


@pytest.mark.parametrize("delay_s", [0.0, 1.0])
async def test_terminate_child_ends_a_failing_restart_loop(
    system: ActorSystem, autojump_clock: trio.testing.MockClock, delay_s: float
) -> None:
    sup, log, fail_starts = await start_with_a_child_that_cannot_restart(system, delay_s)
    async with system.events() as events:
        await system.send("a", CRASH)
        await failed_starts(events, "a", 3)
        await sup.terminate_child("a")
    attempts = log.count(("start-failed", "a"))
    await trio.sleep(100)
    assert log.count(("start-failed", "a")) == attempts
    assert statuses(sup) == {"a": ChildStatus.STOPPED, "b": ChildStatus.RUNNING}
    assert sup.running

    fail_starts["a"] = 0
    await sup.restart_child("a")
    assert statuses(sup) == {"a": ChildStatus.RUNNING, "b": ChildStatus.RUNNING}


@pytest.mark.parametrize("delay_s", [0.0, 1.0])
async def test_stop_ends_a_failing_restart_loop(
    system: ActorSystem, autojump_clock: trio.testing.MockClock, delay_s: float
) -> None:
    sup, log, _ = await start_with_a_child_that_cannot_restart(system, delay_s)
    async with system.events() as events:
        await system.send("a", CRASH)
        await failed_starts(events, "a", 3)
        with trio.fail_after(5):
            await sup.stop()
        assert not any(e.kind == EventKind.GAVE_UP for e in drain(events))
    assert not sup.running
    assert log[-1] == ("stop", "b")
    attempts = log.count(("start-failed", "a"))
    await trio.sleep(100)
    assert log.count(("start-failed", "a")) == attempts


async def test_terminating_a_child_whose_restart_keeps_failing_lets_its_siblings_restart(
    system: ActorSystem,
) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    sup = await start_supervisor(
        system,
        ["a", "b", "c"],
        log,
        strategy="one_for_all",
        max_restarts=1000,
        window_s=1000,
        fail_starts=fail_starts,
    )
    fail_starts["a"] = math.inf
    async with system.events() as events:
        await system.send("a", CRASH)
        await failed_starts(events, "a", 2)
        await sup.terminate_child("a")
        await next_event(events, EventKind.RESTARTED, "c")
    assert statuses(sup) == {
        "a": ChildStatus.STOPPED,
        "b": ChildStatus.RUNNING,
        "c": ChildStatus.RUNNING,
    }
    assert await system.ask("b", INCR) == 1


async def test_terminate_child_cuts_short_a_restart_stuck_in_on_start(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("a", Worker, log=log, restart_s=1000.0, shutdown_s=2.0)
    sup.add("b", Worker, log=log)
    await sup.start()
    await system.send("a", CRASH)
    await trio.testing.wait_all_tasks_blocked()
    assert statuses(sup) == {"a": ChildStatus.RESTARTING, "b": ChildStatus.RUNNING}
    began = trio.current_time()
    await sup.terminate_child("a")
    assert trio.current_time() - began == 2.0
    assert statuses(sup) == {"a": ChildStatus.STOPPED, "b": ChildStatus.RUNNING}
    assert sup.running


# ---- giving up ---------------------------------------------------------------------------


async def test_giving_up_terminates_children_in_reverse_start_order_and_reports_why(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a", "b", "c", "d"], log, max_restarts=0)
    async with system.events() as events:
        await system.send("b", CRASH)
        seen = await events_until(events, EventKind.GAVE_UP, "sup")
        exited = await next_event(events, EventKind.CRASHED, "sup")
    assert log[4:] == [("stop", "b"), ("stop", "d"), ("stop", "c"), ("stop", "a")]
    gave_up = seen[-1]
    assert gave_up.actor_id == sup.id
    assert gave_up.reason is not None and "'b' crashed" in gave_up.reason
    assert isinstance(exited.exception, SupervisorGaveUp)  # it exits as crashed
    assert exited.exception.reason == gave_up.reason
    assert [e.actor_name for e in seen if e.kind == EventKind.STOPPED] == ["d", "c", "a"]
    assert not sup.running
    assert all(system.lookup(name) is None for name in "abcd")


async def test_top_level_supervisor_giving_up_leaves_the_rest_of_the_system_running(
    system: ActorSystem,
) -> None:
    log: Log = []
    before = await system.spawn(Worker, "before", log=log)
    sup = await start_supervisor(system, ["a"], log, max_restarts=0)
    after = await system.spawn(Worker, "after", log=log)
    other = await start_supervisor(system, ["x"], log, name="other")
    async with system.events() as events:
        await system.send("a", CRASH)
        await next_event(events, EventKind.GAVE_UP, "sup")
        await next_event(events, EventKind.CRASHED, "sup")
    assert system.running
    assert await system.ask("before", INCR) == 1
    assert await system.ask("after", INCR) == 1
    assert await system.ask("x", INCR) == 1
    assert system.lookup("before") is before and system.lookup("after") is after
    assert other.running and not sup.running
    assert stops(log) == ["a"]


async def test_nested_supervisor_giving_up_is_a_crash_of_its_parent(system: ActorSystem) -> None:
    log: Log = []
    top = Supervisor(system, max_restarts=5, window_s=60, name="top")
    middle = Supervisor(system, max_restarts=0)
    inner = Supervisor(system, max_restarts=0)
    inner.add("w", Worker, log=log)
    middle.add("sibling", Worker, log=log)
    middle.add("inner", inner)
    top.add("middle", middle)
    top.add("bystander", Worker, log=log)
    await top.start()
    bystander = worker(system, "bystander")

    async with system.events() as events:
        await system.send("w", CRASH)
        seen = await events_until(events, EventKind.RESTARTED, "middle")
    summary = [
        (e.kind, e.actor_name) for e in seen if e.kind in ("gave_up", "crashed", "restarted")
    ]
    assert summary == [
        (EventKind.CRASHED, "w"),
        (EventKind.GAVE_UP, "inner"),
        (EventKind.CRASHED, "inner"),
        (EventKind.GAVE_UP, "middle"),
        (EventKind.CRASHED, "middle"),
        (EventKind.RESTARTED, "sibling"),
        (EventKind.RESTARTED, "w"),
        (EventKind.RESTARTED, "inner"),  # a supervisor reports started once its children are
        (EventKind.RESTARTED, "middle"),
    ]
    assert top.running and middle.running and inner.running
    assert worker(system, "bystander") is bystander
    assert worker(system, "w").statistics().incarnation == 1
    assert log[3:] == [
        ("stop", "w"),
        ("stop", "sibling"),
        ("start", "sibling"),
        ("start", "w"),
    ]


async def test_escalation_up_to_the_top_level_stops_the_whole_tree(system: ActorSystem) -> None:
    log: Log = []
    top = Supervisor(system, max_restarts=0, name="top")
    middle = Supervisor(system, max_restarts=0)
    middle.add("w", Worker, log=log)
    top.add("first", Worker, log=log)
    top.add("middle", middle)
    top.add("last", Worker, log=log)
    await top.start()
    survivor = await system.spawn(Worker, "survivor", log=log)

    async with system.events() as events:
        await system.send("w", CRASH)
        gave_up = await next_event(events, EventKind.GAVE_UP, "top")
    assert gave_up.reason is not None and "'middle' crashed" in gave_up.reason
    assert stops(log) == ["w", "last", "first"]
    assert not top.running and not middle.running
    assert await system.ask(survivor.id, INCR) == 1


# ---- the restarted actor -----------------------------------------------------------------


async def test_restarted_actor_is_a_fresh_instance_under_the_same_name_and_id(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log)
    old = worker(system, "a")
    await system.ask("a", INCR)
    await system.ask("a", INCR)

    await crash_and_wait(system, "a")

    new = worker(system, "a")
    assert new is not old
    assert (new.name, new.id) == (old.name, old.id)
    assert system.lookup(old.id) is new
    assert await system.ask(old.id, GET) == 0
    assert starts(log) == ["a", "a"]
    assert new.statistics().incarnation == 1
    assert new.statistics().crashes == 1
    assert sup.which_children()[0].id == old.id


async def test_messages_queued_behind_the_crash_reach_the_next_incarnation_in_order(
    system: ActorSystem,
) -> None:
    log: Log = []
    await start_supervisor(system, ["a"], log)
    for message in (
        {"op": "record", "value": 1},
        CRASH,
        {"op": "record", "value": 2},
        {"op": "record", "value": 3},
    ):
        system.send_nowait("a", message)
    assert await system.ask("a", {"op": "record", "value": 4}) == 4
    assert log == [
        ("start", "a"),
        ("got", "a", 1),
        ("stop", "a"),
        ("start", "a"),
        ("got", "a", 2),
        ("got", "a", 3),
        ("got", "a", 4),
    ]


async def test_the_message_in_hand_at_the_crash_is_a_dead_letter_with_the_exception(
    system: ActorSystem,
) -> None:
    log: Log = []
    await start_supervisor(system, ["a"], log)
    async with system.events() as events:
        await system.send("a", {"op": "crash", "why": "kaboom"})
        dead = await next_event(events, EventKind.DEAD_LETTER, "a")
    assert dead.message == {"op": "crash", "why": "kaboom"}
    assert isinstance(dead.exception, Boom) and str(dead.exception) == "kaboom"
    assert dead.reason is not None and "crashed" in dead.reason
    assert dead.actor_id == worker(system, "a").id


async def test_an_ask_waiting_on_the_crashing_message_gets_actor_crashed_at_once(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    await start_supervisor(system, ["a"], log)
    asked_at = trio.current_time()
    with pytest.raises(ActorCrashed, match="kaboom") as info:
        await system.ask("a", {"op": "crash", "why": "kaboom"}, timeout=60)
    assert trio.current_time() == asked_at  # no timer ran out: the crash answered the ask
    assert info.value.target == "a"
    assert isinstance(info.value.__cause__, Boom)
    assert await system.ask("a", INCR) == 1  # and the restarted actor answers the next one


async def test_mail_queued_for_a_child_that_is_not_restarted_becomes_dead_letters(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    await start_supervisor(system, ["a"], log, restart="temporary")
    failures: list[Exception] = []

    async def ask_behind_the_crash() -> None:
        try:
            await system.ask("a", {"op": "record", "value": "late"})
        except ActorStopped as exc:
            failures.append(exc)

    await system.send("a", {"op": "sleep", "s": 1})
    await trio.testing.wait_all_tasks_blocked()  # a is busy: what follows queues up in order
    async with system.events() as events:
        system.send_nowait("a", CRASH)
        system.send_nowait("a", {"op": "record", "value": "queued"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_behind_the_crash)
        dead = [e.message for e in drain(events) if e.kind == EventKind.DEAD_LETTER]
    assert dead == [CRASH, {"op": "record", "value": "queued"}, {"op": "record", "value": "late"}]
    assert len(failures) == 1
    assert ("got", "a", "queued") not in log


async def test_a_bystander_finishes_its_message_in_hand_and_keeps_its_queued_mail(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    await start_supervisor(system, ["a", "b"], log, strategy="one_for_all")
    await system.send("b", {"op": "sleep", "s": 3})
    await trio.testing.wait_all_tasks_blocked()
    system.send_nowait("b", {"op": "record", "value": 1})
    began = trio.current_time()
    await crash_and_wait(system, "a", until="b")
    assert trio.current_time() - began == 3
    assert await system.ask("b", {"op": "record", "value": 2}) == 2
    assert log[2:] == [
        ("stop", "a"),
        ("slept", "b"),
        ("stop", "b"),
        ("start", "a"),
        ("start", "b"),
        ("got", "b", 1),
        ("got", "b", 2),
    ]


# ---- failing to start ----------------------------------------------------------------------


async def test_start_failure_stops_the_started_children_in_reverse_order_and_names_the_child(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    for name in "abcd":
        sup.add(name, Worker, log=log, fail_starts={"c": 1})
    with pytest.raises(ActorStartFailed) as info:
        await sup.start()
    assert info.value.name == "c"
    assert info.value.supervisor == "sup"
    assert isinstance(info.value.__cause__, Boom)
    assert "'c'" in str(info.value) and "c refuses to start" in str(info.value)
    assert log == [
        ("start", "a"),
        ("start", "b"),
        ("start-failed", "c"),
        ("stop", "b"),
        ("stop", "a"),
    ]
    assert not sup.running
    assert all(system.lookup(name) is None for name in "abcd")
    assert system.running


async def test_start_failure_deep_in_a_tree_stops_everything_started_in_reverse_order(
    system: ActorSystem,
) -> None:
    log: Log = []
    top = Supervisor(system, name="top")
    inner = Supervisor(system)
    inner.add("w1", Worker, log=log)
    inner.add("w2", Worker, log=log, fail_starts={"w2": 1})
    top.add("first", Worker, log=log)
    top.add("inner", inner)
    top.add("last", Worker, log=log)
    with pytest.raises(ActorStartFailed, match="w2 refuses to start") as info:
        await top.start()
    assert (info.value.name, info.value.supervisor) == ("inner", "top")
    assert log == [
        ("start", "first"),
        ("start", "w1"),
        ("start-failed", "w2"),
        ("stop", "w1"),
        ("stop", "first"),
    ]
    assert system.actors() == []


# ---- management API ------------------------------------------------------------------------


async def test_terminate_child_stops_it_for_good_and_keeps_the_spec(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a", "b"], log)
    a_id = worker(system, "a").id
    await sup.terminate_child("a")
    await sup.terminate_child("a")  # twice is fine
    await trio.testing.wait_all_tasks_blocked()
    assert log[2:] == [("stop", "a")]
    assert sup.which_children() == [
        ChildInfo("a", a_id, "worker", RestartType.PERMANENT, ChildStatus.STOPPED),
        ChildInfo("b", worker(system, "b").id, "worker", RestartType.PERMANENT, "running"),
    ]
    assert system.lookup("a") is None

    restarted = await sup.restart_child("a")
    assert isinstance(restarted, Worker) and restarted.id == a_id
    assert statuses(sup) == {"a": ChildStatus.RUNNING, "b": ChildStatus.RUNNING}

    await sup.terminate_child("a")
    sup.delete_child("a")
    assert [c.name for c in sup.which_children()] == ["b"]
    with pytest.raises(SupervisorError, match="no child 'a'"):
        await sup.restart_child("a")


async def test_terminate_child_removes_a_temporary_spec(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a", "b"], log, restart="temporary")
    await sup.terminate_child("a")
    assert [c.name for c in sup.which_children()] == ["b"]
    with pytest.raises(SupervisorError, match="no child 'a'"):
        await sup.terminate_child("a")


async def test_restart_child_and_delete_child_refuse_a_running_child(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log)
    with pytest.raises(SupervisorError, match=r"it is running; call terminate_child\('a'\)"):
        await sup.restart_child("a")
    with pytest.raises(SupervisorError, match="it is running"):
        sup.delete_child("a")
    assert statuses(sup) == {"a": ChildStatus.RUNNING}
    assert starts(log) == ["a"]


async def test_management_calls_name_the_unknown_child_and_the_known_ones(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a", "b"], log)
    for call in (sup.terminate_child, sup.restart_child):
        with pytest.raises(SupervisorError, match=r"no child 'zed' \(children: a, b\)"):
            await call("zed")
    with pytest.raises(SupervisorError, match="no child 'zed'"):
        sup.delete_child("zed")


async def test_adding_a_child_under_an_existing_name_raises(system: ActorSystem) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("a", Worker, log=log)
    with pytest.raises(DuplicateName, match="'a'"):
        sup.add("a", Worker, log=log)
    await sup.start()
    with pytest.raises(DuplicateName, match="'a'"):
        await sup.add_and_start("a", Worker, log=log)
    await sup.terminate_child("a")
    with pytest.raises(DuplicateName, match="'a'"):
        await sup.add_and_start("a", Worker, log=log)  # a stopped child's spec is still there
    assert starts(log) == ["a"]


async def test_add_and_start_starts_the_child_after_the_others(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log, strategy="one_for_all")
    b = await sup.add_and_start("b", Worker, log=log)
    assert isinstance(b, Worker) and system.lookup("b") is b
    assert [c.name for c in sup.which_children()] == ["a", "b"]
    await crash_and_wait(system, "a", until="b")
    assert log[2:] == [("stop", "a"), ("stop", "b"), ("start", "a"), ("start", "b")]


async def test_add_and_start_forgets_a_child_that_fails_to_start(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log)
    with pytest.raises(ActorStartFailed, match="'b'"):
        await sup.add_and_start("b", Worker, log=log, fail_starts={"b": 1})
    assert [c.name for c in sup.which_children()] == ["a"]
    assert system.lookup("b") is None


async def test_management_calls_need_a_running_supervisor(system: ActorSystem) -> None:
    sup = Supervisor(system, name="sup")
    with pytest.raises(SupervisorError, match="start it first"):
        await sup.add_and_start("a", Worker)


async def test_management_calls_and_repr_say_where_the_supervisor_is_in_its_life(
    system: ActorSystem,
) -> None:
    sup = Supervisor(system, name="sup", max_restarts=0)
    assert repr(sup) == "<Supervisor 'sup' one_for_one created>"
    with pytest.raises(SupervisorError, match="'sup' has not been started"):
        await sup.restart_child("a")
    sup.add("a", Worker, log=[])
    await sup.start()
    assert repr(sup) == "<Supervisor 'sup' one_for_one running>"
    async with system.events() as events:
        await system.send("a", CRASH)
        await next_event(events, EventKind.GAVE_UP, "sup")
    assert repr(sup) == "<Supervisor 'sup' one_for_one gave up>"
    with pytest.raises(SupervisorError, match="cannot add a child: supervisor 'sup' gave up$"):
        await sup.add_and_start("b", Worker)
    await sup.start()
    await sup.stop()
    assert repr(sup) == "<Supervisor 'sup' one_for_one stopped>"
    with pytest.raises(SupervisorError, match="supervisor 'sup' is stopped$"):
        await sup.restart_child("a")


async def test_which_children_and_count_children_describe_the_specs_in_start_order(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    nested = Supervisor(system)
    sup.add("w1", Worker, log=log)
    sup.add("nested", nested)
    sup.add("w2", Worker, restart="transient", log=log)
    sup.add("w3", Worker, restart="temporary", log=log)
    assert sup.which_children() == [
        ChildInfo("w1", None, "worker", RestartType.PERMANENT, ChildStatus.STOPPED),
        ChildInfo("nested", None, "supervisor", RestartType.PERMANENT, ChildStatus.STOPPED),
        ChildInfo("w2", None, "worker", RestartType.TRANSIENT, ChildStatus.STOPPED),
        ChildInfo("w3", None, "worker", RestartType.TEMPORARY, ChildStatus.STOPPED),
    ]
    assert sup.count_children() == ChildCounts(specs=4, active=0, supervisors=1, workers=3)

    await sup.start()
    rows = sup.which_children()
    assert [row.id for row in rows] == [
        worker(system, "w1").id,
        nested.id,
        worker(system, "w2").id,
        worker(system, "w3").id,
    ]
    assert all(row.running for row in rows)
    assert sup.count_children() == ChildCounts(specs=4, active=4, supervisors=1, workers=3)

    await sup.terminate_child("w2")
    assert sup.count_children() == ChildCounts(specs=4, active=3, supervisors=1, workers=3)
    assert not sup.which_children()[2].running


# ---- auto-shutdown -------------------------------------------------------------------------


async def test_any_significant_child_exiting_stops_the_supervisor_normally(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup", auto_shutdown="any_significant")
    sup.add("helper", Worker, log=log)
    sup.add("main", Worker, restart="transient", significant=True, log=log)
    sup.add("other", Worker, restart="temporary", significant=True, log=log)
    await sup.start()
    async with system.events() as events:
        await system.send("main", EXIT)
        stopped = await next_event(events, EventKind.STOPPED, "sup")
        assert not any(e.kind == EventKind.GAVE_UP for e in drain(events))
    assert stopped.exception is None
    assert stops(log) == ["main", "other", "helper"]
    assert not sup.running


async def test_all_significant_stops_the_supervisor_when_the_last_significant_child_exits(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup", auto_shutdown=AutoShutdown.ALL_SIGNIFICANT)
    sup.add("helper", Worker, log=log)
    sup.add("s1", Worker, restart="temporary", significant=True, log=log)
    sup.add("s2", Worker, restart="transient", significant=True, log=log)
    await sup.start()
    async with system.events() as events:
        await system.send("s1", EXIT)
        await next_event(events, EventKind.STOPPED, "s1")
    await trio.testing.wait_all_tasks_blocked()
    assert sup.running
    async with system.events() as events:
        await system.send("s2", EXIT)
        await next_event(events, EventKind.STOPPED, "sup")
    assert stops(log) == ["s1", "s2", "helper"]


async def test_a_significant_child_that_crashes_and_is_restarted_does_not_shut_down(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup", auto_shutdown="any_significant")
    sup.add("main", Worker, restart="transient", significant=True, log=log)
    await sup.start()
    await crash_and_wait(system, "main")
    assert sup.running


async def test_significant_children_must_be_transient_or_temporary_under_auto_shutdown(
    system: ActorSystem,
) -> None:
    sup = Supervisor(system, auto_shutdown="any_significant")
    with pytest.raises(ValueError, match="only transient or temporary"):
        sup.add("a", Worker, significant=True)
    never = Supervisor(system)
    with pytest.raises(ValueError, match="auto_shutdown='never'"):
        never.add("a", Worker, restart="transient", significant=True)
    assert sup.which_children() == [] and never.which_children() == []


async def test_terminating_a_significant_child_does_not_shut_down(system: ActorSystem) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup", auto_shutdown="any_significant")
    sup.add("helper", Worker, log=log)
    sup.add("main", Worker, restart="transient", significant=True, log=log)
    await sup.start()
    await sup.terminate_child("main")
    await trio.testing.wait_all_tasks_blocked()
    assert sup.running
    assert stops(log) == ["main"]


async def test_a_significant_bystander_terminated_by_the_strategy_does_not_shut_down(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = Supervisor(system, "one_for_all", name="sup", auto_shutdown="any_significant")
    sup.add("a", Worker, log=log)
    sup.add("s", Worker, restart="temporary", significant=True, log=log)
    await sup.start()
    await crash_and_wait(system, "a")
    await trio.testing.wait_all_tasks_blocked()
    assert sup.running
    assert [c.name for c in sup.which_children()] == ["a"]


# ---- restart delay ---------------------------------------------------------------------------


async def test_restart_delay_grows_by_the_backoff_factor_up_to_the_cap(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = await start_supervisor(
        system,
        ["a"],
        log,
        max_restarts=100,
        window_s=100,
        restart_delay_s=1.0,
        restart_backoff=2.0,
        max_restart_delay_s=5.0,
    )
    delays = []
    for _ in range(5):
        crashed_at = trio.current_time()
        await crash_and_wait(system, "a")
        delays.append(trio.current_time() - crashed_at)
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0]

    await trio.sleep(200)  # every earlier restart has left the window
    crashed_at = trio.current_time()
    await crash_and_wait(system, "a")
    assert trio.current_time() - crashed_at == 1.0
    assert sup.running


async def test_child_waiting_out_its_restart_delay_shows_restarting(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log, restart_delay_s=3.0)
    async with system.events() as events:
        await system.send("a", CRASH)
        await next_event(events, EventKind.CRASHED, "a")
    await trio.testing.wait_all_tasks_blocked()
    assert statuses(sup) == {"a": ChildStatus.RESTARTING}
    assert system.lookup("a") is not None  # its address (and mailbox) is kept meanwhile
    assert await system.ask("a", {"op": "record", "value": "queued"}, timeout=10) == "queued"
    assert statuses(sup) == {"a": ChildStatus.RUNNING}


# ---- shutdown --------------------------------------------------------------------------------


async def test_stop_lets_the_child_finish_the_message_in_hand_and_run_on_stop(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log)
    await system.send("a", {"op": "sleep", "s": 2})
    await trio.testing.wait_all_tasks_blocked()
    began = trio.current_time()
    await sup.stop()
    assert trio.current_time() - began == 2
    assert log == [("start", "a"), ("slept", "a"), ("stop", "a")]


async def test_stop_cancels_a_child_that_overruns_its_shutdown_s(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("a", Worker, log=log)
    sup.add("slow", Worker, shutdown_s=1.5, log=log)
    await sup.start()
    failures: list[Exception] = []

    async def ask_slow() -> None:
        try:
            await system.ask("slow", {"op": "sleep", "s": 60}, timeout=None)
        except ActorStopped as exc:
            failures.append(exc)

    async with system.events() as events, trio.open_nursery() as nursery:
        nursery.start_soon(ask_slow)
        await trio.testing.wait_all_tasks_blocked()
        began = trio.current_time()
        await sup.stop()
        assert trio.current_time() - began == 1.5
        seen = drain(events)
    assert len(failures) == 1 and "cancelled while handling" in str(failures[0])
    assert log == [("start", "a"), ("start", "slow"), ("stop", "a")]  # slow never ran on_stop
    stopped = [e for e in seen if e.kind == EventKind.STOPPED and e.actor_name == "slow"]
    assert stopped[0].reason == "cancelled after its shutdown_s of 1.5 s"
    dead = [e for e in seen if e.kind == EventKind.DEAD_LETTER]
    assert [d.message for d in dead] == [{"op": "sleep", "s": 60}]


async def busy(system: ActorSystem, name: str) -> None:
    """Keep ``name`` handling a message it will not finish for a minute."""
    await system.send(name, {"op": "sleep", "s": 60})


@pytest.mark.parametrize(
    ("quick_s", "quick_stop_s", "hung_s", "took"),
    [
        (2.0, 1.0, 3.0, 4.0),  # the quick one's give-up passes while the hung one still has time
        (5.0, 0.0, 1.0, 1.0),  # the hung one is to be cancelled before the quick one would be
        (5.0, 0.0, 0.0, 0.0),  # shutdown_s 0: cancelled at once
    ],
)
async def test_a_hung_child_stopped_after_a_quick_one_gets_its_own_full_shutdown_s(
    system: ActorSystem,
    autojump_clock: trio.testing.MockClock,
    quick_s: float,
    quick_stop_s: float,
    hung_s: float,
    took: float,
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("hung", Worker, shutdown_s=hung_s, log=log)
    sup.add("quick", Worker, shutdown_s=quick_s, stop_s=quick_stop_s, log=log)
    await sup.start()
    await busy(system, "hung")
    await trio.testing.wait_all_tasks_blocked()
    async with system.events() as events:
        began = trio.current_time()
        await sup.stop()
        assert trio.current_time() - began == took
        stopped = [e for e in drain(events) if e.kind == EventKind.STOPPED]
    assert [e.actor_name for e in stopped] == ["quick", "hung", "sup"]
    assert stopped[0].reason == "terminated by its supervisor"
    assert stopped[1].reason == f"cancelled after its shutdown_s of {hung_s:g} s"
    assert stops(log) == ["quick"]


async def test_hung_children_in_a_row_each_get_their_full_shutdown_s(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("a", Worker, shutdown_s=2.0, log=log)
    sup.add("b", Worker, shutdown_s=3.0, log=log)
    sup.add("c", Worker, log=log)
    await sup.start()
    await busy(system, "a")
    await busy(system, "b")
    await trio.testing.wait_all_tasks_blocked()
    async with system.events() as events:
        began = trio.current_time()
        await sup.stop()
        assert trio.current_time() - began == 5.0
        stopped = [e for e in drain(events) if e.kind == EventKind.STOPPED]
    assert [(e.actor_name, e.reason) for e in stopped] == [
        ("c", "terminated by its supervisor"),
        ("b", "cancelled after its shutdown_s of 3 s"),
        ("a", "cancelled after its shutdown_s of 2 s"),
        ("sup", "stopped"),
    ]
    assert stops(log) == ["c"]


async def test_terminate_child_while_the_supervisor_stops(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("a", Worker, restart="temporary", log=log, stop_s=1.0)
    sup.add("b", Worker, restart="temporary", log=log, stop_s=1.0)
    await sup.start()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.stop)
        await trio.testing.wait_all_tasks_blocked()  # b is running on_stop; the lock is free
        await sup.terminate_child("a")
    assert sorted(stops(log)) == ["a", "b"]
    assert sup.which_children() == []
    assert system.lookup("a") is None and system.lookup("b") is None


class LooksUp(Actor):
    """Records, when it stops, whether ``other`` can still be looked up."""

    def __init__(self, system: ActorSystem, *, name: str, other: str, seen: list[bool]) -> None:
        super().__init__(system, name=name)
        self.other, self.seen = other, seen

    async def on_stop(self) -> None:
        self.seen.append(self.system.lookup(self.other) is not None)

    async def _process(self, message: dict[str, object]) -> object:
        return None


async def test_a_stopped_child_is_unregistered_before_the_next_one_stops(
    system: ActorSystem,
) -> None:
    seen: list[bool] = []
    sup = Supervisor(system, name="sup")
    sup.add("a", LooksUp, other="b", seen=seen)
    sup.add("b", Worker)
    await sup.start()
    await sup.stop()
    assert seen == [False]


async def test_stop_does_not_wait_out_a_pending_restart_delay(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a", "b"], log, restart_delay_s=20.0)
    async with system.events() as events:
        await system.send("a", CRASH)
        await next_event(events, EventKind.CRASHED, "a")
    await trio.testing.wait_all_tasks_blocked()
    began = trio.current_time()
    await sup.stop()
    assert trio.current_time() - began == 0
    assert stops(log) == ["a", "b"]


async def test_giving_up_does_not_wait_out_a_pending_restart_delay(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a", "b"], log, max_restarts=1, restart_delay_s=20.0)
    async with system.events() as events:
        await system.send("a", CRASH)
        await next_event(events, EventKind.CRASHED, "a")
        began = trio.current_time()
        await system.send("b", CRASH)
        await next_event(events, EventKind.CRASHED, "sup")
    assert trio.current_time() - began == 0
    assert not sup.running


@pytest.mark.parametrize(("restart_s", "took"), [(1000.0, 2.0), (1.0, 1.0)])
async def test_stop_gives_a_restart_stuck_in_on_start_only_its_shutdown_s(
    system: ActorSystem, autojump_clock: trio.testing.MockClock, restart_s: float, took: float
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("a", Worker, log=log, restart_s=restart_s, shutdown_s=2.0)
    sup.add("b", Worker, log=log)
    await sup.start()
    await system.send("a", CRASH)
    await trio.testing.wait_all_tasks_blocked()
    assert statuses(sup)["a"] is ChildStatus.RESTARTING
    began = trio.current_time()
    await sup.stop()
    assert trio.current_time() - began == took
    finished_start = restart_s < 2.0
    assert log[2:] == [("stop", "a")] + (
        [("start", "a"), ("stop", "b"), ("stop", "a")] if finished_start else [("stop", "b")]
    )


async def test_stop_terminates_children_in_reverse_start_order(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a", "b", "c"], log)
    await sup.stop()
    await sup.stop()  # stopping a stopped supervisor does nothing
    assert log == [
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("stop", "c"),
        ("stop", "b"),
        ("stop", "a"),
    ]
    assert all(not c.running for c in sup.which_children())


async def test_an_on_stop_that_raises_is_reported_and_the_shutdown_goes_on(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("a", Worker, log=log)
    sup.add("b", Worker, log=log, stop_error=True)
    sup.add("c", Worker, log=log)
    await sup.start()
    async with system.events() as events:
        await sup.stop()
        stopped = {e.actor_name: e for e in drain(events) if e.kind == EventKind.STOPPED}
    assert stops(log) == ["c", "b", "a"]
    assert isinstance(stopped["b"].exception, Boom)
    assert stopped["b"].reason is not None and "on_stop raised" in stopped["b"].reason
    assert stopped["a"].exception is None and stopped["c"].exception is None
    assert stopped["sup"].exception is None


async def test_outer_cancellation_still_stops_children_in_reverse_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log: Log = []
    with trio.CancelScope() as scope:
        async with ActorSystem(node="test") as system:
            first = await system.spawn(Worker, "first", log=log, stop_s=1.0)
            sup = Supervisor(system, name="sup")
            for name in "abc":
                sup.add(name, Worker, log=log, stop_s=1.0)
            await sup.start()
            await system.spawn(Worker, "last", log=log, stop_s=1.0)
            began = trio.current_time()
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert stops(log) == ["last", "c", "b", "a", "first"]  # each on_stop ran to completion
    assert trio.current_time() - began == 5.0
    assert not system.running and first.state == "stopped"


# ---- events -----------------------------------------------------------------------------------


async def test_events_report_a_childs_life_with_its_incarnation(system: ActorSystem) -> None:
    log: Log = []
    async with system.events() as events:
        sup = await start_supervisor(system, ["a"], log)
        a_id = worker(system, "a").id
        await crash_and_wait(system, "a")
        await sup.terminate_child("a")
        about_a = [e for e in drain(events) if e.actor_name == "a"]
    assert all(e.actor_id == a_id for e in about_a)
    assert [(e.kind, e.actor_name, e.incarnation, e.supervisor) for e in about_a] == [
        (EventKind.STARTED, "a", 0, "sup"),
        (EventKind.DEAD_LETTER, "a", 0, None),
        (EventKind.CRASHED, "a", 0, "sup"),
        (EventKind.RESTARTED, "a", 1, "sup"),
        (EventKind.STOPPED, "a", 1, "sup"),
    ]


async def test_wait_returns_when_the_supervisor_is_stopped_and_raises_when_it_gives_up(
    system: ActorSystem,
) -> None:
    calm = Supervisor(system, "one_for_one", name="calm")
    calm.add("w", Worker, log=[])
    with pytest.raises(SupervisorError, match="never started"):
        await calm.wait()
    await calm.start()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(calm.wait)
        await calm.stop()
    await calm.wait()  # over: returns at once

    fragile = Supervisor(system, "one_for_one", max_restarts=0, window_s=60, name="fragile")
    fragile.add("w", Worker, log=[])
    await fragile.start()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:

            async def wait_for_give_up() -> None:
                with pytest.raises(SupervisorGaveUp, match="fragile"):
                    await fragile.wait()

            nursery.start_soon(wait_for_give_up)
            await trio.lowlevel.checkpoint()
            await system.send("w", {"op": "crash"})
    with pytest.raises(SupervisorGaveUp):
        await fragile.wait()


# ---- child specs checked at add ------------------------------------------------------------


class NeedsDsn(Actor):
    """An actor with a required keyword argument."""

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, dsn: str
    ) -> None:
        super().__init__(system, name=name)
        self.dsn = dsn

    async def _process(self, message: dict[str, Any]) -> object:
        return self.dsn


class TakesAnything(Worker):
    """An actor whose ``__init__`` passes any keyword on."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.extra = kwargs.pop("extra", None)
        super().__init__(*args, **kwargs)


class Unfinished(Actor):
    """An actor that forgot `_process`."""


async def test_init_keyword_arguments_are_checked_against_the_actor_class_at_add(
    system: ActorSystem,
) -> None:
    sup = Supervisor(system, name="sup")
    with pytest.raises(TypeError, match="unexpected keyword argument 'colour'") as info:
        sup.add("a", Worker, log=[], colour="red")
    assert str(info.value).startswith("child 'a': Worker(system, name='a', log=..., colour=...)")
    assert "it accepts (system=None, *, name=None, log=None," in str(info.value)
    with pytest.raises(TypeError, match=r"NeedsDsn.*missing a required.*'dsn'"):
        sup.add("db", NeedsDsn)
    with pytest.raises(TypeError, match="Unfinished is abstract; implement _process"):
        sup.add("u", Unfinished)
    assert sup.which_children() == []
    sup.add("db", NeedsDsn, dsn="sqlite://")
    sup.add("any", TakesAnything, extra=1)  # **kwargs accepts it: construction decides
    await sup.start()
    assert [c.name for c in sup.which_children()] == ["db", "any"]
    assert await system.ask("db", {}) == "sqlite://"


async def test_a_wrong_shutdown_s_is_refused_at_add_whatever_its_type(system: ActorSystem) -> None:
    sup = Supervisor(system)
    with pytest.raises(TypeError, match="shutdown_s must be a number of seconds, not '5'"):
        sup.add("a", Worker, shutdown_s="5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shutdown_s must be >= 0"):
        sup.add("a", Worker, shutdown_s=math.nan)
    assert sup.which_children() == []


async def test_add_reports_a_wrong_spec_first_even_while_the_supervisor_runs(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["a"], log)
    with pytest.raises(ValueError, match="restart type"):
        sup.add("b", Worker, restart="forever")
    with pytest.raises(TypeError, match="'colour'"):
        sup.add("b", Worker, colour="red")
    with pytest.raises(DuplicateName, match="'a'"):
        sup.add("a", Worker)
    with pytest.raises(SupervisorError, match="is running: use `await add_and_start"):
        sup.add("b", Worker, log=log)  # a right spec: only then the state
    with pytest.raises(TypeError, match="'colour'"):
        await sup.add_and_start("b", Worker, colour="red")
    assert [c.name for c in sup.which_children()] == ["a"]


async def test_add_and_start_reports_a_wrong_spec_first_even_before_the_start(
    system: ActorSystem,
) -> None:
    sup = Supervisor(system, name="sup")
    with pytest.raises(ValueError, match="restart type"):
        await sup.add_and_start("a", Worker, restart="forever")
    with pytest.raises(TypeError, match="'colour'"):
        await sup.add_and_start("a", Worker, colour="red")
    with pytest.raises(SupervisorError, match="start it first"):
        await sup.add_and_start("a", Worker)
    assert sup.which_children() == []


async def test_a_child_supervisor_refused_by_add_is_left_free_for_another(
    system: ActorSystem,
) -> None:
    log: Log = []
    running = await start_supervisor(system, ["a"], log, name="running")
    nested = Supervisor(system, name="nested")
    nested.add("w", Worker, log=log)
    with pytest.raises(SupervisorError, match="'running' is running"):
        running.add("inner", nested)
    with pytest.raises(SupervisorError, match="start it first"):
        await Supervisor(system, name="idle").add_and_start("inner", nested)
    assert nested.name == "nested"
    top = Supervisor(system, name="top")
    top.add("inner", nested)  # not adopted by the refused calls
    await top.start()
    assert nested.name == "inner" and nested.running
    assert starts(log) == ["a", "w"]


# ---- actors with nothing to start or stop enter their cancel scope only once busy -----------


class Plain(Actor):
    """No on_start, no on_stop, no background: it idles outside its cancel scope."""

    handled: list[Any] = []

    async def _process(self, message: dict[str, Any]) -> object:
        if message.get("hang"):
            await trio.sleep_forever()
        Plain.handled.append(message["n"])
        await trio.lowlevel.checkpoint()
        return message["n"]


async def test_a_plain_idle_actor_handles_the_mail_handed_to_it_before_a_stop(
    system: ActorSystem,
) -> None:
    Plain.handled = []
    sup = Supervisor(system, name="sup")
    sup.add("plain", Plain)
    await sup.start()
    assert type(sup._children.get("plain").runnable)._scoped_when_busy  # type: ignore[union-attr]
    await trio.testing.wait_all_tasks_blocked()  # idle, outside its scope
    for n in range(3):
        system.send_nowait("plain", {"n": n})
    async with system.events() as events:
        await sup.terminate_child("plain")
        letters = [e.message for e in drain(events) if e.kind is EventKind.DEAD_LETTER]
    # The first was handed to it while it waited: in hand, so handled; the rest are reported.
    assert Plain.handled == [0]
    assert letters == [{"n": 1}, {"n": 2}]


async def test_a_plain_actor_stuck_in_a_message_is_cancelled_after_its_shutdown_s(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    sup = Supervisor(system, name="sup")
    sup.add("plain", Plain, shutdown_s=2.0)
    await sup.start()
    await trio.testing.wait_all_tasks_blocked()
    assert await system.ask("plain", {"n": 1}) == 1  # now serving inside its scope
    await system.send("plain", {"hang": True})
    async with system.events() as events:
        start = trio.current_time()
        await sup.terminate_child("plain")
        stopped = await next_event(events, EventKind.STOPPED, "plain")
    assert trio.current_time() - start == pytest.approx(2.0)
    assert stopped.reason == "cancelled after its shutdown_s of 2 s"


async def test_plain_actors_keep_working_across_restarts_and_asks(system: ActorSystem) -> None:
    Plain.handled = []
    sup = Supervisor(system, name="sup", max_restarts=10)
    for name in ("p1", "p2", "p3"):
        sup.add(name, Plain)
    await sup.start()
    for round_ in range(3):
        for name in ("p1", "p2", "p3"):
            assert await system.ask(name, {"n": round_}) == round_
        await sup.terminate_child("p2")
        await sup.restart_child("p2")
    assert sorted(Plain.handled) == sorted([0, 0, 0, 1, 1, 1, 2, 2, 2])

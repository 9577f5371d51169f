"""The cases of Erlang/OTP's supervisor test suite, rewritten against the wactorz API.

Each test is named after the OTP case it ports. OTP's exit reasons map onto
wactorz like this: ``normal`` is an actor calling `stop` on itself, ``shutdown``
is someone else calling `stop` on it (both are normal exits), ``abnormal`` is an
exception escaping `_process`; ``brutal_kill`` is ``shutdown_s=0``. A child "that
fails on restart" is a `Worker` whose later `on_start` calls raise.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from tests.core.conftest import (
    CRASH,
    EXIT,
    INCR,
    Log,
    Worker,
    crash_and_wait,
    events_until,
    failed_starts,
    next_event,
    start_supervisor,
    starts,
    statuses,
    stops,
    worker,
)
from wactorz.core.errors import DuplicateName, SupervisorError
from wactorz.core.events import EventKind
from wactorz.core.registry import ActorSystem
from wactorz.core.strategy import ChildStatus, RestartType
from wactorz.core.supervisor import ChildCounts, ChildInfo, Supervisor

COUNTS_ONE_RUNNING = ChildCounts(specs=1, active=1, supervisors=0, workers=1)
COUNTS_ONE_STOPPED = ChildCounts(specs=1, active=0, supervisors=0, workers=1)
COUNTS_NONE = ChildCounts(specs=0, active=0, supervisors=0, workers=0)


async def end_child(system: ActorSystem, name: str, how: str) -> None:
    """End child ``name`` the OTP way ``how`` and wait until it has ended."""
    actor = worker(system, name)
    async with system.events() as events:
        if how == "normal":
            await system.send(name, EXIT)
        elif how == "shutdown":
            await actor.stop()
        else:
            await system.send(name, CRASH)
        await next_event(
            events, EventKind.CRASHED if how == "abnormal" else EventKind.STOPPED, name
        )
    await trio.testing.wait_all_tasks_blocked()


async def wait_gave_up(system: ActorSystem, sup: str, crash: str) -> None:
    """Crash ``crash`` and wait until supervisor ``sup`` has given up and exited."""
    async with system.events() as events:
        await system.send(crash, CRASH)
        await next_event(events, EventKind.GAVE_UP, sup)
        await next_event(events, EventKind.CRASHED, sup)


# ---- supervisor stop -------------------------------------------------------------------------


async def test_sup_stop_infinity(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("child1", Worker, shutdown_s=math.inf, log=log, stop_s=1000.0)
    sup.add("child2", Worker, shutdown_s=math.inf, log=log, stop_s=500.0)
    await sup.start()
    began = trio.current_time()
    await sup.stop()
    assert trio.current_time() - began == 1500.0
    assert stops(log) == ["child2", "child1"]


async def test_sup_stop_timeout(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("child1", Worker, shutdown_s=1.0, log=log)
    sup.add("child2", Worker, shutdown_s=1.0, log=log)
    await sup.start()
    await system.send("child2", {"op": "sleep", "s": 200})
    await trio.testing.wait_all_tasks_blocked()
    async with system.events() as events:
        began = trio.current_time()
        await sup.stop()
        assert trio.current_time() - began == 1.0
        child2 = await next_event(events, EventKind.STOPPED, "child2")
        child1 = await next_event(events, EventKind.STOPPED, "child1")
    assert child2.reason is not None and "cancelled" in child2.reason
    assert child1.reason == "terminated by its supervisor"
    assert stops(log) == ["child1"]


async def test_sup_stop_brutal_kill(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup")
    sup.add("child1", Worker, shutdown_s=1.0, log=log)
    sup.add("child2", Worker, shutdown_s=0, log=log, stop_s=1.0)
    await sup.start()
    async with system.events() as events:
        began = trio.current_time()
        await sup.stop()
        assert trio.current_time() == began  # no time given to child2's on_stop
        child2 = await next_event(events, EventKind.STOPPED, "child2")
    assert child2.reason == "cancelled after its shutdown_s of 0 s"
    assert stops(log) == ["child1"]  # child2 never finished on_stop


# ---- child administration --------------------------------------------------------------------


async def test_child_adm(system: ActorSystem) -> None:
    log: Log = []
    idle = Supervisor(system, name="idle")
    with pytest.raises(SupervisorError, match="start it first"):
        await idle.add_and_start("child1", Worker, log=log)

    sup = await start_supervisor(system, ["child1"], log)
    child1_id = worker(system, "child1").id
    assert sup.which_children() == [
        ChildInfo("child1", child1_id, "worker", RestartType.PERMANENT, ChildStatus.RUNNING)
    ]
    assert sup.count_children() == COUNTS_ONE_RUNNING

    with pytest.raises(DuplicateName):  # already started
        await sup.add_and_start("child1", Worker, log=log)

    with pytest.raises(SupervisorError, match="no child 'hej'"):
        await sup.terminate_child("hej")
    await sup.terminate_child("child1")
    assert sup.which_children() == [
        ChildInfo("child1", child1_id, "worker", RestartType.PERMANENT, ChildStatus.STOPPED)
    ]
    assert sup.count_children() == COUNTS_ONE_STOPPED
    await sup.terminate_child("child1")  # like deleting something that is gone: fine

    with pytest.raises(DuplicateName):  # already present
        await sup.add_and_start("child1", Worker, log=log)

    restarted = await sup.restart_child("child1")
    assert restarted is worker(system, "child1") and restarted.id == child1_id
    assert sup.count_children() == COUNTS_ONE_RUNNING
    with pytest.raises(SupervisorError, match="running"):
        await sup.restart_child("child1")
    with pytest.raises(SupervisorError, match="no child 'child2'"):
        await sup.restart_child("child2")

    with pytest.raises(SupervisorError, match="running"):
        sup.delete_child("child1")
    with pytest.raises(SupervisorError, match="no child 'hej'"):
        sup.delete_child("hej")
    await sup.terminate_child("child1")
    sup.delete_child("child1")
    with pytest.raises(SupervisorError, match="no child 'child1'"):
        await sup.restart_child("child1")
    assert sup.which_children() == []
    assert sup.count_children() == COUNTS_NONE

    again = await sup.add_and_start("child1", Worker, log=log)
    assert sup.which_children() == [
        ChildInfo("child1", again.id, "worker", RestartType.PERMANENT, ChildStatus.RUNNING)
    ]
    assert sup.count_children() == COUNTS_ONE_RUNNING
    assert starts(log) == ["child1"] * 3


# ---- permanent / transient / temporary x normal / shutdown / abnormal ----------------------


@pytest.mark.parametrize("how", ["normal", "shutdown", "abnormal"])
async def test_permanent_child_is_always_restarted(system: ActorSystem, how: str) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["child1"], log, restart="permanent")
    old = worker(system, "child1")
    async with system.events() as events:
        await end_child(system, "child1", how)
        await next_event(events, EventKind.RESTARTED, "child1")
    assert worker(system, "child1") is not old
    assert sup.count_children() == COUNTS_ONE_RUNNING


@pytest.mark.parametrize("how", ["normal", "shutdown"])
async def test_transient_child_is_not_restarted_after_a_normal_exit(
    system: ActorSystem, how: str
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["child1"], log, restart="transient")
    await end_child(system, "child1", how)
    assert statuses(sup) == {"child1": ChildStatus.STOPPED}
    assert sup.count_children() == COUNTS_ONE_STOPPED

    await sup.restart_child("child1")
    await end_child(system, "child1", how)
    assert sup.count_children() == COUNTS_ONE_STOPPED
    assert starts(log) == ["child1", "child1"]


async def test_transient_child_is_restarted_after_an_abnormal_exit(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["child1"], log, restart="transient")
    await crash_and_wait(system, "child1")
    assert sup.count_children() == COUNTS_ONE_RUNNING


@pytest.mark.parametrize("how", ["normal", "shutdown", "abnormal"])
async def test_temporary_child_is_never_restarted(system: ActorSystem, how: str) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["child1"], log, restart="temporary")
    await end_child(system, "child1", how)
    assert sup.which_children() == []
    assert sup.count_children() == COUNTS_NONE

    await sup.add_and_start("child1", Worker, restart="temporary", log=log)  # spec not kept
    await end_child(system, "child1", how)
    assert sup.count_children() == COUNTS_NONE


@pytest.mark.parametrize("strategy", ["one_for_one", "one_for_all", "rest_for_one"])
@pytest.mark.parametrize("how", ["normal", "abnormal", "terminate_child"])
async def test_do_not_save_child_specs_for_temporary_children(
    system: ActorSystem, strategy: str, how: str
) -> None:
    log: Log = []
    sup = Supervisor(system, strategy, max_restarts=10, name="sup")
    await sup.start()
    for name, restart in (
        ("child1", "permanent"),
        ("child2", "transient"),
        ("child3", "temporary"),
    ):
        await sup.add_and_start(name, Worker, restart=restart, log=log)
        async with system.events() as events:
            if how == "terminate_child":
                await sup.terminate_child(name)
            else:
                await end_child(system, name, how)
            if restart == "permanent" and how != "terminate_child":
                await next_event(events, EventKind.RESTARTED, name)
            if restart == "transient" and how == "abnormal":
                await next_event(events, EventKind.RESTARTED, name)
        kept = {c.name: c for c in sup.which_children()}
        if restart == "temporary":
            assert name not in kept
            await sup.add_and_start(name, Worker, restart=restart, log=log)
        else:
            assert name in kept
            with pytest.raises(DuplicateName):
                await sup.add_and_start(name, Worker, restart=restart, log=log)
            restarted_by_supervisor = how == "abnormal" or (
                how == "normal" and restart == "permanent"
            )
            assert kept[name].running is restarted_by_supervisor
            if not restarted_by_supervisor:
                await sup.restart_child(name)
    assert [c.name for c in sup.which_children()] == ["child1", "child2", "child3"]
    assert all(c.running for c in sup.which_children())


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_temporary_bystander(system: ActorSystem, strategy: str) -> None:
    log: Log = []
    sup = Supervisor(system, strategy, max_restarts=2, window_s=300, name="sup")
    sup.add("child1", Worker, shutdown_s=0.1, log=log)
    sup.add("child2", Worker, restart="temporary", shutdown_s=0.1, log=log)
    await sup.start()
    async with system.events() as events:
        await system.send("child1", EXIT)
        await next_event(events, EventKind.RESTARTED, "child1")
    await trio.testing.wait_all_tasks_blocked()
    assert sup.running
    assert [c.name for c in sup.which_children()] == ["child1"]
    assert starts(log) == ["child1", "child2", "child1"]


# ---- restart strategies ------------------------------------------------------------------------


async def test_multiple_restarts(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["child1"], log, max_restarts=1, window_s=1)
    await crash_and_wait(system, "child1")
    for _ in range(3):
        await trio.sleep(2.1)
        await crash_and_wait(system, "child1")
    assert sup.running
    assert worker(system, "child1").statistics().incarnation == 4
    await sup.terminate_child("child1")
    sup.delete_child("child1")
    assert sup.count_children() == COUNTS_NONE


async def test_one_for_one(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(system, ["child1", "child2"], log, max_restarts=2, window_s=3600)
    child2 = worker(system, "child2")
    await crash_and_wait(system, "child1")
    assert worker(system, "child2") is child2
    assert sup.count_children() == ChildCounts(specs=2, active=2, supervisors=0, workers=2)

    await crash_and_wait(system, "child2")  # restart frequency: the 2nd restart is allowed
    await wait_gave_up(system, "sup", sup.which_children()[0].name)  # the 3rd is not
    assert not sup.running
    assert stops(log)[-1] == "child2"


async def test_one_for_one_escalation(system: ActorSystem) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    sup = await start_supervisor(
        system, ["child1", "child2"], log, max_restarts=4, window_s=3600, fail_starts=fail_starts
    )
    fail_starts["child1"] = math.inf
    await wait_gave_up(system, "sup", "child1")
    assert log.count(("start-failed", "child1")) == 4
    assert log[-1] == ("stop", "child2")
    assert not sup.running


async def test_one_for_all(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(
        system, ["child1", "child2"], log, strategy="one_for_all", max_restarts=2, window_s=3600
    )
    old = [worker(system, name) for name in ("child1", "child2")]
    await crash_and_wait(system, "child1", until="child2")
    new = [worker(system, name) for name in ("child1", "child2")]
    assert not set(map(id, old)) & set(map(id, new))  # no old instance is still in use
    assert all(actor.state == "stopped" for actor in old[1:])
    assert sup.count_children() == ChildCounts(specs=2, active=2, supervisors=0, workers=2)

    await crash_and_wait(system, "child1", until="child2")
    await wait_gave_up(system, "sup", "child1")


async def test_one_for_all_escalation(system: ActorSystem) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    sup = await start_supervisor(
        system,
        ["child1", "child2"],
        log,
        strategy="one_for_all",
        max_restarts=4,
        window_s=3600,
        fail_starts=fail_starts,
    )
    fail_starts["child2"] = math.inf
    await wait_gave_up(system, "sup", "child1")
    # Each try restarts child1, then child2 fails, which stops child1 again.
    assert log[2:] == [
        ("stop", "child1"),
        ("stop", "child2"),
        *[("start", "child1"), ("start-failed", "child2"), ("stop", "child1")] * 4,
    ]
    assert not sup.running


async def test_one_for_all_other_child_fails_restart(system: ActorSystem) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    sup = await start_supervisor(
        system,
        ["child1", "child2"],
        log,
        strategy="one_for_all",
        max_restarts=3,
        window_s=3600,
        fail_starts=fail_starts,
    )
    fail_starts["child2"] = 1
    async with system.events() as events:
        await system.send("child1", CRASH)
        restarted = await next_event(events, EventKind.RESTARTED, "child2")
    assert log[2:] == [
        ("stop", "child1"),
        ("stop", "child2"),
        ("start", "child1"),
        ("start-failed", "child2"),
        ("stop", "child1"),  # the restarted child1 is terminated when child2 fails
        ("start", "child1"),
        ("start", "child2"),
    ]
    assert restarted.incarnation == 2
    assert all(c.running for c in sup.which_children())


async def test_rest_for_one(system: ActorSystem) -> None:
    log: Log = []
    sup = await start_supervisor(
        system,
        ["child1", "child2", "child3"],
        log,
        strategy="rest_for_one",
        max_restarts=2,
        window_s=3600,
    )
    child1 = worker(system, "child1")
    old = [worker(system, name) for name in ("child2", "child3")]
    await crash_and_wait(system, "child2", until="child3")
    assert worker(system, "child1") is child1
    assert all(worker(system, name) not in old for name in ("child2", "child3"))
    assert sup.count_children() == ChildCounts(specs=3, active=3, supervisors=0, workers=3)

    await crash_and_wait(system, "child3")
    assert worker(system, "child1") is child1
    await wait_gave_up(system, "sup", "child2")


async def test_rest_for_one_escalation(system: ActorSystem) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    sup = await start_supervisor(
        system,
        ["child1", "child2"],
        log,
        strategy="rest_for_one",
        max_restarts=4,
        window_s=3600,
        fail_starts=fail_starts,
    )
    fail_starts["child2"] = math.inf
    await wait_gave_up(system, "sup", "child1")
    # child1 is restarted once; only child2 (the one after it) is retried after that.
    assert log[2:] == [
        ("stop", "child1"),
        ("stop", "child2"),
        ("start", "child1"),
        *[("start-failed", "child2")] * 4,
        ("stop", "child1"),
    ]
    assert not sup.running


async def test_rest_for_one_other_child_fails_restart(system: ActorSystem) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    await start_supervisor(
        system,
        ["child1", "child2"],
        log,
        strategy="rest_for_one",
        max_restarts=3,
        window_s=3600,
        fail_starts=fail_starts,
    )
    fail_starts["child2"] = 1
    async with system.events() as events:
        await system.send("child1", CRASH)
        await next_event(events, EventKind.RESTARTED, "child2")
    assert log[2:] == [
        ("stop", "child1"),
        ("stop", "child2"),
        ("start", "child1"),
        ("start-failed", "child2"),
        ("start", "child2"),  # child1, started before child2, is left alone
    ]
    assert worker(system, "child1").statistics().incarnation == 1


async def test_order_of_children(system: ActorSystem) -> None:
    log: Log = []
    sup = Supervisor(system, "one_for_all", max_restarts=10, name="sup")
    sup.add("a", Worker, log=log)
    sup.add("b", Worker, log=log)
    await sup.start()
    await sup.add_and_start("c", Worker, log=log)
    await sup.add_and_start("d", Worker, log=log)
    await sup.terminate_child("b")
    await sup.restart_child("b")  # started last in time, but keeps its place
    del log[:]

    await crash_and_wait(system, "a", until="d")
    assert log == [
        ("stop", "a"),
        ("stop", "d"),
        ("stop", "c"),
        ("stop", "b"),
        ("start", "a"),
        ("start", "b"),
        ("start", "c"),
        ("start", "d"),
    ]
    assert [c.name for c in sup.which_children()] == ["a", "b", "c", "d"]

    rest = Supervisor(system, "rest_for_one", max_restarts=10, name="rest")
    for name in ("r1", "r2", "r3"):
        rest.add(name, Worker, log=log)
    await rest.start()
    await rest.terminate_child("r2")
    await rest.restart_child("r2")
    del log[:]
    await crash_and_wait(system, "r2", until="r3")
    assert log == [("stop", "r2"), ("stop", "r3"), ("start", "r2"), ("start", "r3")]


# ---- a supervision tree ------------------------------------------------------------------------


async def test_tree(system: ActorSystem) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    top = Supervisor(system, "one_for_all", max_restarts=4, window_s=3600, name="top")
    sup1 = Supervisor(system, max_restarts=4, window_s=3600)
    sup1.add("child1", Worker, log=log)
    sup1.add("child2", Worker, log=log)
    sup2 = Supervisor(system, max_restarts=4, window_s=3600)
    top.add("supchild1", sup1)
    top.add("supchild2", sup2)
    await top.start()
    assert top.count_children() == ChildCounts(specs=2, active=2, supervisors=2, workers=0)
    assert sup1.count_children() == ChildCounts(specs=2, active=2, supervisors=0, workers=2)
    assert sup2.count_children() == COUNTS_NONE

    await sup2.add_and_start("child3", Worker, log=log, fail_starts=fail_starts)
    await sup2.add_and_start("child4", Worker, log=log)
    assert sup2.count_children() == ChildCounts(specs=2, active=2, supervisors=0, workers=2)
    before = {name: worker(system, name) for name in ("child1", "child2", "child3", "child4")}

    await crash_and_wait(system, "child4")  # only the child that died is restarted
    for name in ("child1", "child2", "child3"):
        assert worker(system, name) is before[name]
    assert worker(system, "child4") is not before["child4"]

    # child3 keeps failing to restart: sup2 gives up, and top restarts both subtrees.
    fail_starts["child3"] = 4
    async with system.events() as events:
        await system.send("child3", CRASH)
        seen = await events_until(events, EventKind.RESTARTED, "supchild2")
    assert [e.actor_name for e in seen if e.kind == EventKind.GAVE_UP] == ["supchild2"]
    assert top.running and sup1.running and sup2.running
    assert top.count_children() == ChildCounts(specs=2, active=2, supervisors=2, workers=0)
    assert sup1.count_children() == ChildCounts(specs=2, active=2, supervisors=0, workers=2)
    for name in ("child1", "child2"):
        assert worker(system, name) is not before[name]
    # Unlike OTP (where a restarted supervisor re-runs init and forgets children added at
    # run time), a wactorz supervisor keeps every permanent spec it was given.
    assert [c.name for c in sup2.which_children()] == ["child3", "child4"]
    assert all(c.running for c in sup2.which_children())
    assert await system.ask("child3", INCR) == 1


# ---- a restart loop that does not succeed ------------------------------------------------------


async def test_hanging_restart_loop(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    log: Log = []
    fail_starts: dict[str, float] = {}
    sup = await start_supervisor(
        system,
        ["child1"],
        log,
        max_restarts=8,
        window_s=10,
        restart_delay_s=1.0,
        restart_backoff=1.0,
        fail_starts=fail_starts,
    )
    fail_starts["child1"] = math.inf
    async with system.events() as events:
        await system.send("child1", CRASH)
        await failed_starts(events, "child1", 2)

    with pytest.raises(DuplicateName):
        await sup.add_and_start("child1", Worker, log=log)
    with pytest.raises(SupervisorError, match="restarting"):
        await sup.restart_child("child1")
    with pytest.raises(SupervisorError, match="restarting"):
        sup.delete_child("child1")
    assert statuses(sup) == {"child1": ChildStatus.RESTARTING}
    assert sup.count_children() == COUNTS_ONE_STOPPED

    await sup.terminate_child("child1")
    assert statuses(sup) == {"child1": ChildStatus.STOPPED}

    fail_starts["child1"] = 0
    await sup.restart_child("child1")
    fail_starts["child1"] = math.inf
    async with system.events() as events:
        await system.send("child1", CRASH)
        await failed_starts(events, "child1", 1)
    with trio.fail_after(1):  # the supervisor does not hang in its restart loop
        await sup.stop()
    assert not sup.running
    assert system.lookup("child1") is None


# ---- significant children ----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["normal", "shutdown", "abnormal"])
async def test_significant_temporary(system: ActorSystem, how: str) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup", auto_shutdown="any_significant")
    sup.add("child1", Worker, restart="temporary", significant=True, log=log)
    sup.add("child2", Worker, log=log)
    await sup.start()
    async with system.events() as events:
        await end_child(system, "child1", how)
        stopped = await next_event(events, EventKind.STOPPED, "sup")
    assert stopped.exception is None  # a normal exit of the supervisor
    assert not sup.running
    assert stops(log) == ["child1", "child2"]


@pytest.mark.parametrize("how", ["normal", "shutdown"])
async def test_significant_transient_normal_exit_shuts_down(system: ActorSystem, how: str) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup", auto_shutdown="all_significant")
    sup.add("child1", Worker, restart="transient", significant=True, log=log)
    await sup.start()
    async with system.events() as events:
        await end_child(system, "child1", how)
        await next_event(events, EventKind.STOPPED, "sup")
    assert not sup.running


async def test_significant_transient_abnormal_exit_is_restarted(system: ActorSystem) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup", auto_shutdown="all_significant")
    sup.add("child1", Worker, restart="transient", significant=True, log=log)
    await sup.start()
    await crash_and_wait(system, "child1")
    assert sup.running


async def test_significant_all_significant_waits_for_every_significant_child(
    system: ActorSystem,
) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup", auto_shutdown="all_significant")
    sup.add("child1", Worker, restart="transient", significant=True, log=log)
    sup.add("child2", Worker, restart="temporary", significant=True, log=log)
    sup.add("child3", Worker, log=log)
    await sup.start()
    await end_child(system, "child2", "normal")
    assert sup.running
    async with system.events() as events:
        await end_child(system, "child1", "shutdown")
        await next_event(events, EventKind.STOPPED, "sup")
    assert stops(log) == ["child2", "child1", "child3"]


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
async def test_significant_bystander(system: ActorSystem, strategy: str) -> None:
    log: Log = []
    sup = Supervisor(system, strategy, name="sup", auto_shutdown="any_significant")
    sup.add("child1", Worker, log=log)
    sup.add("child2", Worker, restart="temporary", significant=True, log=log)
    await sup.start()
    await crash_and_wait(system, "child1")
    await trio.testing.wait_all_tasks_blocked()
    assert sup.running
    assert [c.name for c in sup.which_children()] == ["child1"]


async def test_significant_terminate_child_does_not_shut_down(system: ActorSystem) -> None:
    log: Log = []
    sup = Supervisor(system, name="sup", auto_shutdown="any_significant")
    sup.add("child1", Worker, restart="transient", significant=True, log=log)
    sup.add("child2", Worker, log=log)
    await sup.start()
    await sup.terminate_child("child1")
    await trio.testing.wait_all_tasks_blocked()
    assert sup.running
    await sup.restart_child("child1")
    async with system.events() as events:
        await end_child(system, "child1", "normal")  # a real exit still counts afterwards
        await next_event(events, EventKind.STOPPED, "sup")


async def test_significant_escalation(system: ActorSystem) -> None:
    log: Log = []
    top = Supervisor(system, name="top", auto_shutdown="any_significant")
    inner = Supervisor(system, auto_shutdown="any_significant")
    inner.add("worker", Worker, restart="temporary", significant=True, log=log)
    top.add("keeper", Worker, log=log)
    top.add("inner", inner, restart="transient", significant=True)
    await top.start()
    async with system.events() as events:
        await end_child(system, "worker", "normal")
        seen = await events_until(events, EventKind.STOPPED, "top")
    assert [e.actor_name for e in seen if e.kind == EventKind.STOPPED] == [
        "worker",
        "inner",
        "keeper",
        "top",
    ]
    assert not any(e.kind == EventKind.GAVE_UP for e in seen)
    assert not top.running and not inner.running


async def test_significant_child_requires_auto_shutdown_and_a_non_permanent_restart(
    system: ActorSystem,
) -> None:
    with pytest.raises(ValueError, match="auto_shutdown"):
        Supervisor(system).add("child1", Worker, restart="temporary", significant=True)
    with pytest.raises(ValueError, match="transient or temporary"):
        Supervisor(system, auto_shutdown="any_significant").add(
            "child1", Worker, restart=RestartType.PERMANENT, significant=True
        )

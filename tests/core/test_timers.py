"""Timers: messages an actor sends itself later, cancelled with the incarnation that set them."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from wactorz.core.actor import Actor
from wactorz.core.errors import ActorStopped, AskTimeout, InvalidMessage
from wactorz.core.registry import ActorSystem, Supervisor
from wactorz.core.timers import Timer


class Clockwork(Actor):
    """Sets the timers its messages ask for; records what the timers send, and when."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.fired: list[tuple[str, float, str | None]] = []
        self.timer: Timer | None = None

    async def _process(self, message: dict[str, Any]) -> object:
        if "after" in message:
            self.timer = self.send_after(message["after"], {"fire": "once"})
        elif "every" in message:
            self.timer = self.send_every(message["every"], {"fire": "tick"})
        elif "cancel" in message:
            assert self.timer is not None
            self.timer.cancel()
        elif "crash" in message:
            raise RuntimeError("asked to crash")
        elif "fire" in message:
            self.fired.append((message["fire"], trio.current_time(), self.sender))
            log.append(message["fire"])
        return None


log: list[str] = []


async def test_send_after_delivers_once_from_the_actor_itself(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with ActorSystem() as system:
        clock = await system.spawn(Clockwork, name="clock")
        start = trio.current_time()
        await system.send("clock", {"after": 2.5})
        await trio.sleep(10)
    assert [(what, round(at - start, 3), sender) for what, at, sender in clock.fired] == [
        ("once", 2.5, clock.id)
    ]
    assert clock.timer is not None and not clock.timer.active


async def test_send_every_keeps_its_rhythm_until_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with ActorSystem() as system:
        clock = await system.spawn(Clockwork, name="clock")
        start = trio.current_time()
        await system.send("clock", {"every": 1.0})
        await trio.sleep(3.5)
        await system.send("clock", {"cancel": True})
        await trio.sleep(5)
    assert [round(at - start, 3) for _, at, _ in clock.fired] == [1.0, 2.0, 3.0]


async def test_a_timer_ends_with_its_incarnation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """After a crash and restart the new incarnation starts with no timers, as its state
    starts afresh; a stop cancels them too."""
    log.clear()
    async with ActorSystem() as system:
        sup = Supervisor(system, "one_for_one", name="sup")
        sup.add("clock", Clockwork)
        await sup.start()
        await system.send("clock", {"every": 1.0})
        await trio.sleep(2.5)
        await system.send("clock", {"crash": True})
        await trio.sleep(5)
        assert log == ["tick", "tick"]
        await system.send("clock", {"after": 1.0})
        await sup.terminate_child("clock")
        await trio.sleep(5)
    assert log == ["tick", "tick"]


async def test_timers_refuse_bad_delays_and_messages() -> None:
    class Setter(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            with pytest.raises(ValueError, match="0 or more"):
                self.send_after(-1, {})
            with pytest.raises(ValueError, match="above 0"):
                self.send_every(0, {})
            with pytest.raises(InvalidMessage):
                self.send_after(1, {"x": object()})
            return "checked"

    async with ActorSystem() as system:
        setter = await system.spawn(Setter, name="setter")
        assert await system.ask("setter", {}) == "checked"
    with pytest.raises(RuntimeError, match="while the incarnation runs"):
        setter.send_after(1, {})


# ---- ask deadlines: kept in the same queue, not in a cancel scope per ask --------------------


class Holder(Actor):
    """Answers ``{"n": n}`` with n, except ``{"hold": ...}``, which it leaves unanswered."""

    mailbox_size = 4

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.held: list[Any] = []
        self.release = trio.Event()

    async def _process(self, message: dict[str, Any]) -> object:
        if "hold" in message:
            self.held.append(self.reply_later())
            return None
        if "block" in message:
            await self.release.wait()
        return message.get("n")


async def _timed_ask(
    system: ActorSystem, timeout: float | None, results: list[tuple[float | None, str, float]]
) -> None:
    start = trio.current_time()
    try:
        await system.ask("holder", {"hold": True}, timeout=timeout)
    except AskTimeout as exc:
        results.append((timeout, f"timeout {exc.timeout:g}", trio.current_time() - start))


async def test_asks_time_out_at_their_own_deadlines_whatever_the_timeouts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # More distinct timeouts than get queues of their own: the rest go in the heap.
    timeouts = [0.5 + 0.25 * i for i in range(40)][::-1]
    results: list[tuple[float | None, str, float]] = []
    async with ActorSystem() as system:
        await system.spawn(Holder, name="holder")
        async with trio.open_nursery() as nursery:
            for timeout in timeouts:
                nursery.start_soon(_timed_ask, system, timeout, results)
                await trio.testing.wait_all_tasks_blocked()
    assert sorted(results) == [(t, f"timeout {t:g}", pytest.approx(t)) for t in sorted(timeouts)]
    assert [timeout for timeout, _, _ in results] == sorted(timeouts)


async def test_a_shorter_deadline_wakes_the_queue_sleeping_until_a_later_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: list[tuple[float | None, str, float]] = []
    async with ActorSystem() as system:
        await system.spawn(Holder, name="holder")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_timed_ask, system, 100.0, results)
            await trio.sleep(1)
            nursery.start_soon(_timed_ask, system, 2.0, results)
    assert results == [
        (2.0, "timeout 2", pytest.approx(2.0)),
        (100.0, "timeout 100", pytest.approx(100.0)),
    ]


async def test_answered_asks_leave_nothing_behind_in_the_deadline_queue() -> None:
    async with ActorSystem() as system:
        await system.spawn(Holder, name="holder")
        for n in range(3000):
            assert await system.ask("holder", {"n": n}, timeout=5) == n
        timers = system._timers
        assert sum(len(queue) for queue in timers._asks.values()) <= 1
        assert timers._heap == []


async def test_many_unanswered_asks_are_swept_from_their_queue_once_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # One ask left waiting at the head keeps the ones answered behind it queued until a
    # sweep: the queue stays bounded by the asks still waiting, not by all asks made.
    async with ActorSystem() as system:
        holder = await system.spawn(Holder, name="holder")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_timed_ask, system, 60.0, [])
            await trio.testing.wait_all_tasks_blocked()
            for n in range(5000):
                assert await system.ask("holder", {"n": n}, timeout=60) == n
            assert len(system._timers._asks[60.0]) < 2100
            holder.held[0].answer("late")


async def test_an_ask_waiting_for_room_times_out_too_and_delivers_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with ActorSystem() as system:
        holder = await system.spawn(Holder, name="holder")
        await system.send("holder", {"block": True})
        await trio.testing.wait_all_tasks_blocked()
        for n in range(Holder.mailbox_size):
            system.send_nowait("holder", {"n": n})
        start = trio.current_time()
        with pytest.raises(AskTimeout, match="within 1.5 s"):
            await system.ask("holder", {"n": 99}, timeout=1.5)
        assert trio.current_time() - start == pytest.approx(1.5)
        assert holder.statistics().queued == Holder.mailbox_size
        holder.release.set()


async def test_an_asker_timing_out_is_seen_by_wait_asker_gone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with ActorSystem() as system:
        holder = await system.spawn(Holder, name="holder")
        with pytest.raises(AskTimeout):
            await system.ask("holder", {"hold": True}, timeout=3)
        deferred = holder.held[0]
        with trio.fail_after(1):
            await deferred.wait_asker_gone()
        assert deferred.answer("too late") is False


@pytest.mark.parametrize("timeout", [-1.0, float("nan"), float("-inf")])
async def test_an_ask_timeout_must_be_zero_or_more_seconds(timeout: float) -> None:
    async with ActorSystem() as system:
        await system.spawn(Holder, name="holder")
        with pytest.raises(ValueError, match="timeout is a number of seconds"):
            await system.ask("holder", {"n": 1}, timeout=timeout)
        assert await system.ask("holder", {"n": 2}, timeout=float("inf")) == 2


async def test_asks_still_waiting_when_the_timer_queue_ends_fail_at_once() -> None:
    # What a stopped system leaves: an ask whose answer can no longer come (say, from an
    # actor on another node) fails with ActorStopped instead of waiting out its deadline.
    from wactorz.core.mailbox import Reply
    from wactorz.core.timers import TimerQueue

    queue = TimerQueue()
    outcomes: list[BaseException | object] = []

    async def ask(reply: Reply, timeout: float) -> None:
        queue.add_deadline(reply, timeout)
        try:
            outcomes.append(await reply.wait())
        except ActorStopped as exc:
            outcomes.append(exc)

    answered = Reply(None, "quick", 60.0)
    async with trio.open_nursery() as askers, trio.open_nursery() as timers:
        timers.start_soon(queue.run)
        askers.start_soon(ask, Reply(None, "far@away", 60.0), 60.0)
        askers.start_soon(ask, Reply(None, "other@node", 3600.5), 3600.5)
        askers.start_soon(ask, answered, 60.0)
        await trio.testing.wait_all_tasks_blocked()
        answered.resolve("done")
        await trio.testing.wait_all_tasks_blocked()
        timers.cancel_scope.cancel()
    assert outcomes[0] == "done"
    stopped = sorted(outcomes[1:], key=str)
    assert [type(error) for error in stopped] == [ActorStopped, ActorStopped]
    assert ["far@away" in str(stopped[0]), "other@node" in str(stopped[1])] == [True, True]
    assert "its actor system stopped" in str(stopped[0])

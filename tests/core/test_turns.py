"""Turn-taking: when sends yield, which wake-ups end a busy turn, and the cancellation probe."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from wactorz.core import registry
from wactorz.core.actor import Actor
from wactorz.core.errors import AskTimeout
from wactorz.core.registry import ActorSystem
from wactorz.core.turns import (
    CLOCK_EVERY,
    TURN,
    TURN_SECONDS,
    RunContext,
    _PublicRunContext,
    run_context,
)


class Tally(Actor):
    """Counts what it handles; answers an ask with the count so far."""

    mailbox_size = 20 * TURN

    def __init__(self, system: ActorSystem, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.handled = 0

    async def _process(self, message: dict[str, Any]) -> object:
        self.handled += 1
        return self.handled


class Relay(Actor):
    """On any message, sends ``count`` tells to ``to`` with its own `send`."""

    async def _process(self, message: dict[str, Any]) -> object:
        for n in range(message["count"]):
            await self.send(message["to"], {"n": n})
        return None


# ---- the cancellation probe --------------------------------------------------------------


@pytest.mark.parametrize("context", [run_context, _PublicRunContext()], ids=["fast", "public"])
async def test_the_run_context_tells_whether_a_checkpoint_would_raise_cancelled(
    context: RunContext,
) -> None:
    def asked() -> bool:
        return context.task._cancel_status.effectively_cancelled

    assert asked() is False
    with trio.CancelScope() as outer:
        outer.cancel()
        assert asked() is True
        with trio.CancelScope(shield=True):  # noqa: ASYNC100 - the probe is the point
            assert asked() is False
        assert asked() is True
        with pytest.raises(trio.Cancelled):
            await trio.lowlevel.checkpoint()
    with trio.move_on_after(10):  # noqa: ASYNC100 - a deadline that has not passed
        assert asked() is False


def test_this_trio_gets_the_fast_run_context() -> None:
    # The public fallback is correct but slower; if a Trio upgrade moved what the fast
    # path reads, this fails so that someone looks (the send path slows).
    assert not isinstance(run_context, _PublicRunContext)


# ---- a cancelled send delivers nothing ---------------------------------------------------


async def _send(system: ActorSystem) -> None:
    await system.send("tally", {"n": 1})


async def _send_from_an_actor(system: ActorSystem) -> None:
    relay = system.lookup("relay")
    assert relay is not None
    await relay.send("tally", {"n": 1})


async def _publish(system: ActorSystem) -> None:
    await system.publish("t/x", {"n": 1})


async def _ask(system: ActorSystem) -> None:
    await system.ask("tally", {"n": 1})


@pytest.mark.parametrize("context", [run_context, _PublicRunContext()], ids=["fast", "public"])
@pytest.mark.parametrize("deliver", [_send, _send_from_an_actor, _publish, _ask])
async def test_a_cancelled_send_raises_cancelled_and_delivers_nothing(
    deliver: Callable[[ActorSystem], Awaitable[None]],
    context: RunContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry, "run_context", context)  # both ways of finding out
    async with ActorSystem() as system:
        tally = await system.spawn(Tally, name="tally")
        await system.spawn(Relay, name="relay")
        tally.subscribe("t/#")
        with trio.CancelScope() as scope:
            scope.cancel()
            await deliver(system)
            pytest.fail("a send in a cancelled scope returned")  # pragma: no cover
        assert scope.cancelled_caught
        await deliver(system)  # the same send outside the scope is delivered
        await trio.testing.wait_all_tasks_blocked()
        assert tally.handled == 1


# ---- sends are schedule points once a turn -----------------------------------------------


async def _count_passes(
    sends: Callable[[], Awaitable[None]],
) -> int:
    """Run ``sends`` beside a task that counts how many times it got to run meanwhile."""
    passes = 0
    done = False

    async def bystander() -> None:
        nonlocal passes
        while not done:
            await trio.lowlevel.checkpoint()
            passes += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(bystander)
        await trio.lowlevel.checkpoint()  # the bystander has started
        before = passes
        await sends()
        ran = passes - before
        done = True
    return ran


async def test_a_sender_yields_once_a_turn_not_once_a_message() -> None:
    async with ActorSystem() as system:
        tally = await system.spawn(Tally, name="tally")
        await trio.testing.wait_all_tasks_blocked()

        async def sends() -> None:
            for n in range(10 * TURN):
                await system.send("tally", {"n": n})

        ran = await _count_passes(sends)
        assert 9 <= ran <= 11  # the bystander ran once per turn of sends
        assert tally.handled >= 9 * TURN  # and so did the actor fed by them


async def test_an_actor_sending_from_its_handler_yields_once_a_turn() -> None:
    async with ActorSystem() as system:
        tally = await system.spawn(Tally, name="tally")
        relay = await system.spawn(Relay, name="relay")
        await trio.testing.wait_all_tasks_blocked()

        async def sends() -> None:
            await system.send(relay.id, {"to": "tally", "count": 10 * TURN})
            while tally.handled < 10 * TURN:
                await trio.lowlevel.checkpoint()

        ran = await _count_passes(sends)
        # Each turn of sends yields once; the handler's sends never wait for room.
        assert 9 <= ran <= 30
        assert tally.handled == 10 * TURN


async def test_a_publish_counts_as_one_send_however_many_it_reaches() -> None:
    async with ActorSystem() as system:
        subscribers = [await system.spawn(Tally, name=f"s{n}") for n in range(TURN + 1)]
        for subscriber in subscribers:
            subscriber.subscribe("t/#")
        await trio.testing.wait_all_tasks_blocked()

        async def publishes() -> None:
            for n in range(10 * TURN):
                assert await system.publish("t/x", {"n": n}) == TURN + 1

        ran = await _count_passes(publishes)
        assert 9 <= ran <= 11
        await trio.testing.wait_all_tasks_blocked()
        assert all(subscriber.handled == 10 * TURN for subscriber in subscribers)


# ---- which wake-ups end a busy actor's turn ----------------------------------------------


async def test_a_backlog_drains_in_batches_while_nobody_else_waits() -> None:
    async with ActorSystem() as system:
        backlog = await system.spawn(Tally, name="backlog")
        for n in range(500):
            system.send_nowait("backlog", {"n": n})
        await trio.lowlevel.checkpoint()  # one scheduler round for the backlog
        await trio.lowlevel.checkpoint()
        assert backlog.handled >= TURN  # a whole turn in one step, not a message


async def test_a_backlog_still_moves_while_others_keep_waking() -> None:
    async with ActorSystem() as system:
        backlog = await system.spawn(Tally, name="backlog")
        await system.spawn(Tally, name="echo")
        for n in range(500):
            system.send_nowait("backlog", {"n": n})
        for _ in range(100):
            await system.ask("echo", {})
        assert backlog.handled >= 100  # at least one message per round, never starved


async def test_every_counted_wake_up_is_settled() -> None:
    class Slow(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            await trio.sleep(0.1)
            return None

    async with ActorSystem() as system:
        await system.spawn(Tally, name="a")
        await system.spawn(Tally, name="b")
        await system.spawn(Slow, name="slow")
        system._subscriptions.subscribe("t/#", system.lookup("b").id)  # type: ignore[union-attr]
        for n in range(50):
            await system.send("a", {"n": n})
            await system.publish("t/x", {"n": n})
            await system.ask("b", {"n": n})
        with pytest.raises(AskTimeout):
            await system.ask("slow", {}, timeout=0.01)  # abandoned: its late answer wakes nobody
        await trio.testing.wait_all_tasks_blocked()
        # An internal invariant: a wake-up that is never settled would make every
        # busy actor hand over after each message for ever.
        assert system._turns.woken == 0
        await system.lookup("a").stop()  # type: ignore[union-attr]
        await trio.testing.wait_all_tasks_blocked()
        assert system._turns.woken == 0
    assert system._turns.woken == 0


class Chatty(Tally):
    """Tells the actor named "witness" about every message it handles (nobody waits on that)."""

    async def _process(self, message: dict[str, Any]) -> object:
        self.send_nowait("witness", message)
        return await super()._process(message)


class Witness(Actor):
    """Notes how many messages ``watched`` had handled when the witness first ran."""

    def __init__(self, system: ActorSystem, *, name: str | None = None, watched: Tally) -> None:
        super().__init__(system, name=name)
        self.watched = watched
        self.seen: int | None = None

    async def _process(self, message: dict[str, Any]) -> object:
        if self.seen is None:
            self.seen = self.watched.handled
        return None


async def _first_turn(system: ActorSystem, chatty: Chatty) -> int:
    """Queue five turns of mail for ``chatty``; how far did its first turn get?

    Its first message wakes the witness, which can only run once that turn is
    over (or, in the next scheduler pass, the one after it).
    """
    witness = await system.spawn(Witness, name="witness", watched=chatty)
    await trio.testing.wait_all_tasks_blocked()
    for n in range(5 * TURN):
        system.send_nowait(chatty.id, {"n": n})
    await trio.testing.wait_all_tasks_blocked()
    assert chatty.handled == 5 * TURN
    assert witness.seen is not None
    return witness.seen


async def test_a_tell_to_an_idle_actor_does_not_cut_a_busy_turn_short() -> None:
    async with ActorSystem() as system:
        chatty = await system.spawn(Chatty, name="chatty")
        assert await _first_turn(system, chatty) >= TURN
        assert system._turns.woken == 0


async def test_an_ask_to_an_idle_actor_cuts_a_busy_turn_short() -> None:
    async with ActorSystem() as system:
        backlog = await system.spawn(Tally, name="backlog")
        await system.spawn(Tally, name="idle")
        await trio.testing.wait_all_tasks_blocked()
        for n in range(5 * TURN):
            system.send_nowait("backlog", {"n": n})
        await trio.lowlevel.checkpoint()  # the backlog takes its first turn
        before = backlog.handled
        await system.ask("idle", {"n": 0})
        # The ask took at most three scheduler passes (delivered, answered, back to
        # the asker); the backlog handled one message in each instead of a turn.
        assert backlog.handled - before <= 3
        await trio.testing.wait_all_tasks_blocked()
        assert backlog.handled == 5 * TURN
        assert system._turns.woken == 0


async def test_a_turn_of_slow_messages_ends_once_it_has_lasted_long(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Slow(Chatty):
        async def _process(self, message: dict[str, Any]) -> object:
            autojump_clock.jump(TURN_SECONDS / 4)  # "CPU time": the clock moves, nothing yields
            return await super()._process(message)

    async with ActorSystem() as system:
        slow = await system.spawn(Slow, name="slow")
        # A quarter of TURN_SECONDS per message: the turn passed it at its fourth
        # message and ended at the first clock check after that.
        assert await _first_turn(system, slow) in (CLOCK_EVERY, 2 * CLOCK_EVERY)

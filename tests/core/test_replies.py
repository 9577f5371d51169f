"""Answers to asks: checked like messages, and deferred with `Actor.reply_later`."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from wactorz.core.actor import Actor, DeferredReply
from wactorz.core.errors import (
    ActorCrashed,
    ActorStopped,
    AskTimeout,
    InvalidMessage,
    ReplyError,
)
from wactorz.core.registry import ActorSystem


class Desk(Actor):
    """Holds asks for a ticket until a ``{"release": ticket}`` message answers them."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.waiting: dict[str, DeferredReply] = {}
        self.outcomes: list[bool] = []

    async def _process(self, message: dict[str, Any]) -> object:
        if "hold" in message:
            self.waiting[message["hold"]] = self.reply_later()
            return "ignored: the answer comes later"
        if "release" in message:
            self.outcomes.append(self.waiting.pop(message["release"]).answer(message["with"]))
            return None
        if "crash" in message:
            raise RuntimeError("asked to crash")
        if "twice" in message:
            later = self.reply_later()
            later.answer(1)
            with pytest.raises(ReplyError, match="already"):
                later.answer(2)
            with pytest.raises(ReplyError, match="already"):
                later.fail(ValueError("late"))
            return None
        if "defer-twice" in message:
            self.reply_later()
            self.reply_later()
        if "bad-answer" in message:
            later = self.reply_later()
            with pytest.raises(InvalidMessage, match="reply is a set"):
                later.answer({1, 2})
            later.answer("fixed")
            return None
        if "return-set" in message:
            return {1, 2}
        if "topic" in message:
            return self.current_envelope.sender
        return message


async def test_a_deferred_ask_is_answered_later_while_the_actor_serves_others() -> None:
    async with ActorSystem() as system, trio.open_nursery() as nursery:
        desk = await system.spawn(Desk, name="desk")
        got: dict[str, object] = {}

        async def ask(ticket: str) -> None:
            got[ticket] = await system.ask("desk", {"hold": ticket})

        nursery.start_soon(ask, "a")
        nursery.start_soon(ask, "b")
        while len(desk.waiting) < 2:
            await trio.sleep(0.001)
        assert await system.ask("desk", {"echo": 1}) == {"echo": 1}  # not held up
        await system.send("desk", {"release": "b", "with": "second"})
        await system.send("desk", {"release": "a", "with": ["first"]})
    assert got == {"a": ["first"], "b": "second"}
    assert desk.outcomes == [True, True]


@pytest.mark.parametrize(
    ("ending", "error"),
    [({"crash": True}, ActorCrashed), (None, ActorStopped)],
)
async def test_an_ask_left_unanswered_fails_at_once_when_the_incarnation_ends(
    ending: dict[str, Any] | None, error: type[Exception]
) -> None:
    """A crash or a stop tells the asker at once: it never waits out its timeout."""
    async with ActorSystem() as system:
        desk = await system.spawn(Desk, name="desk")
        with trio.fail_after(2):
            async with trio.open_nursery() as nursery:

                async def ask() -> None:
                    with pytest.raises(error):
                        await system.ask("desk", {"hold": "t"}, timeout=60)

                nursery.start_soon(ask)
                while not desk.waiting:
                    await trio.sleep(0.001)
                if ending is None:
                    await desk.stop()
                else:
                    await system.send("desk", ending)
        held = desk.waiting["t"]
        assert not held.pending
        with pytest.raises(ReplyError, match="has ended"):
            held.answer("too late")


async def test_an_answer_is_given_once() -> None:
    async with ActorSystem() as system:
        await system.spawn(Desk, name="desk")
        assert await system.ask("desk", {"twice": True}) == 1
        # Deferring twice is a bug in the actor: it crashes, and says why.
        with pytest.raises(ActorCrashed, match="already deferred") as crashed:
            await system.ask("desk", {"defer-twice": True})
        assert isinstance(crashed.value.error, ReplyError)


async def test_reply_later_outside_a_handler_is_an_error() -> None:
    async with ActorSystem() as system:
        desk = await system.spawn(Desk, name="desk")
        with pytest.raises(ReplyError, match="inside _process"):
            desk.reply_later()
        with pytest.raises(RuntimeError, match="not handling a message"):
            _ = desk.current_envelope


async def test_a_late_deferred_answer_is_reported_and_returns_false() -> None:
    async with ActorSystem() as system:
        desk = await system.spawn(Desk, name="desk")
        with pytest.raises(AskTimeout):
            await system.ask("desk", {"hold": "t"}, timeout=0.01)
        await system.send("desk", {"release": "t", "with": "late"})
        await system.ask("desk", {})
    assert desk.outcomes == [False]


async def test_replies_are_checked_like_messages_unless_the_system_skips_checks() -> None:
    async with ActorSystem() as system:
        desk = await system.spawn(Desk, name="desk")
        with pytest.raises(InvalidMessage, match="reply is a set"):
            await system.ask("desk", {"return-set": True})
        assert await system.ask("desk", {"bad-answer": True}) == "fixed"
        assert desk.statistics().crashes == 0
    async with ActorSystem(check_messages=False) as unchecked:
        await unchecked.spawn(Desk, name="desk")
        assert await unchecked.ask("desk", {"return-set": True}) == {1, 2}


async def test_current_envelope_is_the_envelope_of_the_message_in_hand() -> None:
    class Asker(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            return await self.ask("desk", {"topic": True})

    async with ActorSystem() as system:
        await system.spawn(Desk, name="desk")
        asker = await system.spawn(Asker, name="asker")
        assert await system.ask("asker", {}) == asker.id


async def test_a_deferred_reply_keeps_the_envelope_its_message_had() -> None:
    class Keeper(Actor):
        def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
            super().__init__(system, name=name)
            self.seen_id = ""
            self.later: DeferredReply | None = None

        async def _process(self, message: dict[str, Any]) -> object:
            if "hold" in message:
                self.seen_id = self.current_envelope.id
                self.later = self.reply_later()
            elif self.later is not None:
                self.later.answer(self.later.envelope.id)
            return None

    async with ActorSystem() as system, trio.open_nursery() as nursery:
        keeper = await system.spawn(Keeper, name="keeper")
        answers: list[object] = []

        async def ask() -> None:
            answers.append(await system.ask("keeper", {"hold": True}))

        nursery.start_soon(ask)
        while keeper.later is None:
            await trio.sleep(0.001)
        await system.send("keeper", {"release": True})
    assert answers == [keeper.seen_id]


async def test_work_for_a_deferred_ask_learns_when_the_asker_gives_up() -> None:
    gone: list[str] = []

    class Worker(Actor):
        async def background(self, task_status: trio.TaskStatus[None]) -> None:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                task_status.started()
                await trio.sleep_forever()

        async def _process(self, message: dict[str, Any]) -> object:
            later = self.reply_later()

            async def watch() -> None:
                await later.wait_asker_gone()
                gone.append(message["job"])

            self.nursery.start_soon(watch)
            if message["job"] == "answered":
                later.answer("done")
            return None

    async with ActorSystem() as system:
        await system.spawn(Worker, name="worker")
        with pytest.raises(AskTimeout):
            await system.ask("worker", {"job": "slow"}, timeout=0.05)
        assert await system.ask("worker", {"job": "answered"}) == "done"
        with trio.move_on_after(0.05):
            await system.ask("worker", {"job": "cancelled"})
        await system.send("worker", {"job": "told"})
        await trio.sleep(0.05)
        assert gone == ["slow", "cancelled"]

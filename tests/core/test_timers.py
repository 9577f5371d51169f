"""Timers: messages an actor sends itself later, cancelled with the incarnation that set them."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from wactorz.core.actor import Actor
from wactorz.core.errors import InvalidMessage
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

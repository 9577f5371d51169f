"""Pub/sub: MQTT-style topic matching and delivery through the system."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem
from wactorz.core.topics import SubscriptionTable, check_filter, check_topic, topic_matches

_level = st.sampled_from(["a", "b", "c", "", "sensors"])
_topic = st.lists(_level, min_size=1, max_size=5).map("/".join)
_filter_level = st.sampled_from(["a", "b", "c", "", "+", "sensors"])


@st.composite
def _filters(draw: st.DrawFn) -> str:
    levels = draw(st.lists(_filter_level, min_size=1, max_size=5))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels)


def _oracle(topic_filter: str, topic: str) -> bool:
    """MQTT matching via a regular expression, written independently."""
    parts = []
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if level == "#":
            # '#' also matches the parent level itself: 'a/#' matches 'a'
            return re.fullmatch("/".join(parts) + "(/.*)?" if parts else ".*", topic) is not None
        parts.append("[^/]*" if level == "+" else re.escape(level))
        del index
    return re.fullmatch("/".join(parts), topic) is not None


@given(_filters(), _topic)
def test_topic_matches_agrees_with_an_independent_oracle(topic_filter: str, topic: str) -> None:
    assert topic_matches(topic_filter, topic) == _oracle(topic_filter, topic)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [
        ("sensors/+/temp", "sensors/kitchen/temp", True),
        ("sensors/+/temp", "sensors/kitchen/hall/temp", False),
        ("sensors/#", "sensors", True),
        ("sensors/#", "sensors/a/b", True),
        ("#", "anything/at/all", True),
        ("+", "one", True),
        ("+", "one/two", False),
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
    ],
)
def test_topic_matches_examples(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a+/b"])
def test_invalid_filters_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError, match="filter|wildcard|'#'"):
        check_filter(bad)


@pytest.mark.parametrize("bad", ["", "a/+", "a/#"])
def test_wildcards_cannot_be_published_on(bad: str) -> None:
    with pytest.raises(ValueError, match="topic|publish"):
        check_topic(bad)


def test_subscription_table_lists_each_subscriber_once_in_order() -> None:
    table = SubscriptionTable()
    table.subscribe("a/#", "x")
    table.subscribe("a/+", "y")
    table.subscribe("a/b", "x")
    assert table.subscribers("a/b") == ("x", "y")
    table.unsubscribe("a/#", "x")
    assert table.subscribers("a/b") == ("y", "x")
    table.remove("x")
    assert table.subscribers("a/b") == ("y",)
    assert table.filters_of("y") == ["a/+"]


class Listener(Actor):
    def __init__(self, system: ActorSystem, *, name: str | None = None, topics: list[str]) -> None:
        super().__init__(system, name=name)
        self.topics = topics
        self.got: list[tuple[str | None, dict[str, Any]]] = []

    async def on_start(self) -> None:
        for topic in self.topics:
            self.subscribe(topic)

    async def _process(self, message: dict[str, Any]) -> object:
        assert self.envelope is not None
        self.got.append((self.envelope.topic, message))
        return None


async def test_publish_delivers_to_matching_subscribers_only() -> None:
    async with ActorSystem() as system:
        plus = await system.spawn(Listener, name="plus", topics=["sensors/+/temp"])
        hash_ = await system.spawn(Listener, name="hash", topics=["sensors/#"])
        other = await system.spawn(Listener, name="other", topics=["alerts"])
        assert await system.publish("sensors/kitchen/temp", {"c": 21}) == 2
        assert await system.publish("sensors/kitchen/humidity", {"p": 40}) == 1
        assert await system.publish("nobody/listens", {"x": 1}) == 0
        for actor in (plus, hash_, other):
            await system.ask(actor.id, {})
    assert plus.got[:-1] == [("sensors/kitchen/temp", {"c": 21})]
    assert hash_.got[:-1] == [
        ("sensors/kitchen/temp", {"c": 21}),
        ("sensors/kitchen/humidity", {"p": 40}),
    ]
    assert other.got[:-1] == []


async def test_unsubscribe_and_stop_end_deliveries() -> None:
    async with ActorSystem() as system:
        listener = await system.spawn(Listener, name="l", topics=["t/#"])
        assert await system.publish("t/1", {}) == 1
        listener.unsubscribe("t/#")
        assert await system.publish("t/2", {}) == 0
        listener.subscribe("t/#")
        await listener.stop()
        assert await system.publish("t/3", {}) == 0


async def test_actor_publish_sets_the_sender() -> None:
    class Publisher(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            return await self.publish("news", message)

    class Reader(Actor):
        senders: list[str | None] = []

        async def on_start(self) -> None:
            self.subscribe("news")

        async def _process(self, message: dict[str, Any]) -> object:
            Reader.senders.append(self.sender)
            return None

    async with ActorSystem() as system:
        reader = await system.spawn(Reader, name="reader")
        publisher = await system.spawn(Publisher, name="pub")
        assert await system.ask("pub", {"headline": "x"}) == 1
        await system.ask(reader.id, {})
    assert Reader.senders[0] == publisher.id


async def test_publish_waits_for_a_full_subscriber_mailbox() -> None:
    class Slow(Listener):
        mailbox_size = 1

        async def _process(self, message: dict[str, Any]) -> object:
            await trio.sleep(0.001)
            return await super()._process(message)

    async with ActorSystem() as system:
        slow = await system.spawn(Slow, name="slow", topics=["x"])
        for i in range(20):
            await system.publish("x", {"i": i})
        await system.ask("slow", {})
    assert [m["i"] for _, m in slow.got[:-1]] == list(range(20))


def test_the_table_knows_each_subscribers_filters_both_ways() -> None:
    table = SubscriptionTable()
    for n in range(200):
        table.subscribe(f"sensors/{n}/#", f"s{n}")
        table.subscribe("sensors/+/reading", f"s{n}")
    table.subscribe("alerts", "s7")
    assert table.filters_of("s7") == ["sensors/7/#", "sensors/+/reading", "alerts"]
    table.unsubscribe("sensors/+/reading", "s7")
    table.unsubscribe("sensors/+/reading", "s7")  # twice is harmless
    assert table.filters_of("s7") == ["sensors/7/#", "alerts"]
    for n in range(0, 200, 2):
        table.remove(f"s{n}")
    assert table.filters_of("s8") == []
    odd_but_7 = tuple(f"s{n}" for n in range(1, 200, 2) if n != 7)
    assert table.subscribers("sensors/8/reading") == odd_but_7
    assert table.subscribers("sensors/7/reading") == (*odd_but_7, "s7")
    assert table.subscribers("sensors/9/reading") == odd_but_7
    table.remove("nobody")  # unknown subscribers are fine
    for n in range(1, 200, 2):
        table.remove(f"s{n}")
    assert table.subscribers("sensors/9/reading") == ()
    assert table._by_filter == {} and table._by_subscriber == {}

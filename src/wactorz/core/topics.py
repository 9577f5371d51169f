"""Topic-based publish/subscribe routing with MQTT's wildcards.

Topics are ``/``-separated levels (``sensors/kitchen/temp``). A subscription
filter may use ``+`` for exactly one level and a trailing ``#`` for any number of
remaining levels (including none), as in MQTT, so local and broker topics read
the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

__all__ = ["SubscriptionTable", "check_filter", "check_topic", "topic_matches"]

_CACHE_LIMIT = 4096


def check_topic(topic: str) -> str:
    """Return ``topic`` if it is a valid topic to publish on, else raise `ValueError`."""
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"a topic is a non-empty string like 'sensors/kitchen', not {topic!r}")
    if "+" in topic or "#" in topic:
        raise ValueError(
            f"cannot publish on {topic!r}: wildcards '+' and '#' belong in subscriptions only"
        )
    return topic


def check_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if it is a valid subscription, else raise `ValueError`."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise ValueError(f"a topic filter is a non-empty string, not {topic_filter!r}")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if level == "#" and index != len(levels) - 1:
            raise ValueError(f"in {topic_filter!r}: '#' may only be the last level")
        if level not in ("+", "#") and ("+" in level or "#" in level):
            raise ValueError(f"in {topic_filter!r}: a wildcard must fill a whole level")
    return topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Tell whether ``topic`` is matched by ``topic_filter``."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level != "+" and level != topic_levels[index]:
            return False
    return len(filter_levels) == len(topic_levels)


@final
class SubscriptionTable:
    """Who listens to what; answers "who gets a message on this topic" from a cache.

    The cache is rebuilt lazily per topic after any change, so steady-state
    publishing costs one dict lookup.
    """

    def __init__(self) -> None:
        self._by_filter: dict[str, dict[str, None]] = {}
        self._cache: dict[str, tuple[str, ...]] = {}

    def subscribe(self, topic_filter: str, subscriber: str) -> None:
        """Add ``subscriber`` to ``topic_filter`` (doing it twice is harmless)."""
        check_filter(topic_filter)
        self._by_filter.setdefault(topic_filter, {})[subscriber] = None
        self._cache.clear()

    def unsubscribe(self, topic_filter: str, subscriber: str) -> None:
        """Remove ``subscriber`` from ``topic_filter`` if it was there."""
        members = self._by_filter.get(topic_filter)
        if members is not None and members.pop(subscriber, 0) is None:
            if not members:
                del self._by_filter[topic_filter]
            self._cache.clear()

    def remove(self, subscriber: str) -> None:
        """Forget every subscription of ``subscriber``."""
        for topic_filter in [f for f, m in self._by_filter.items() if subscriber in m]:
            self.unsubscribe(topic_filter, subscriber)

    def filters_of(self, subscriber: str) -> list[str]:
        """The filters ``subscriber`` is subscribed to."""
        return [f for f, members in self._by_filter.items() if subscriber in members]

    def subscribers(self, topic: str) -> tuple[str, ...]:
        """Every subscriber whose filter matches ``topic``, each once, in subscription order."""
        found = self._cache.get(topic)
        if found is None:
            found = tuple(self._match(topic))
            if len(self._cache) >= _CACHE_LIMIT:  # many one-off topics: don't grow forever
                self._cache.clear()
            self._cache[topic] = found
        return found

    def _match(self, topic: str) -> Iterable[str]:
        seen: dict[str, None] = {}
        for topic_filter, members in self._by_filter.items():
            if topic_matches(topic_filter, topic):
                seen.update(members)
        return seen

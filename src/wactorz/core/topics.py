"""Topics: what a valid topic or subscription filter is, and pub/sub routing with wildcards.

Topics are ``/``-separated levels (``sensors/kitchen/temp``). A subscription
filter may use ``+`` for exactly one level and a trailing ``#`` for any number of
remaining levels (including none), as in MQTT, so local and broker topics read
the same.

This module is the one owner of the rules a topic must follow, locally and on a
broker alike, because a local topic may be forwarded to the broker as it is.
They are MQTT's rules for UTF-8 strings (MQTT 3.1.1 §1.5.3, MQTT 5 §1.5.4) as
brokers enforce them: no U+0000, no surrogates, no control characters
(U+0001..U+001F, U+007F..U+009F) and no non-characters (U+FDD0..U+FDEF and the
last two code points of every plane), at most 65,535 bytes in UTF-8. A broker
that receives one of those drops the connection ("malformed packet"), so they
are refused here, before anything is sent. `text_problem` applies the same rules
to any other string sent to a broker (client ids, user names).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final, final

from wactorz.core.errors import brief_repr

__all__ = ["MAX_TOPIC_BYTES", "check_filter", "check_topic", "topic_matches"]

MAX_TOPIC_BYTES: Final = 65_535
"""The longest topic MQTT can carry, in UTF-8 bytes."""

_CACHE_LIMIT = 4096

_NON_CHARACTERS: Final = "".join(
    f"\\U{plane << 16 | 0xFFFE:08x}\\U{plane << 16 | 0xFFFF:08x}" for plane in range(17)
)
_FORBIDDEN: Final = re.compile(
    f"[\\x00-\\x1f\\x7f-\\x9f\\ud800-\\udfff\\ufdd0-\\ufdef{_NON_CHARACTERS}]"
)
"""The code points MQTT forbids in a string (NUL, surrogates) or that brokers reject
(controls, non-characters)."""


def text_problem(text: object) -> str | None:
    """Why ``text`` cannot be sent to an MQTT broker as a string, or None if it can."""
    if not isinstance(text, str):
        return f"it is a {type(text).__name__}, not a string"
    found = _FORBIDDEN.search(text)
    if found is not None:
        code = ord(found.group())
        if code == 0:
            kind = "a NUL character"
        elif 0xD800 <= code <= 0xDFFF:
            kind = "a lone surrogate"
        elif code <= 0x9F:
            kind = "a control character"
        else:
            kind = "a non-character"
        return f"it contains {kind} (U+{code:04X} at index {found.start()})"
    # At most 4 bytes per code point: only long strings need encoding to be measured.
    if len(text) * 4 > MAX_TOPIC_BYTES and len(text.encode()) > MAX_TOPIC_BYTES:
        return f"it is longer than {MAX_TOPIC_BYTES} bytes in UTF-8"
    return None


def topic_problem(topic: object) -> str | None:
    """Why ``topic`` cannot be published on, or None if it can."""
    if not isinstance(topic, str) or not topic:
        return "a topic is a non-empty string like 'sensors/kitchen'"
    if "+" in topic or "#" in topic:
        return "the wildcards '+' and '#' belong in subscription filters, not in a topic"
    return text_problem(topic)


def filter_problem(topic_filter: object) -> str | None:
    """Why ``topic_filter`` cannot be subscribed to, or None if it can."""
    if not isinstance(topic_filter, str) or not topic_filter:
        return "a topic filter is a non-empty string like 'sensors/#'"
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            return "'#' must be a whole level and the last one, as in 'sensors/#'"
        if "+" in level and level != "+":
            return "'+' must be a whole level, as in 'sensors/+/temperature'"
    return text_problem(topic_filter)


def check_topic(topic: str) -> str:
    """Return ``topic`` if it is a valid topic to publish on, else raise `ValueError`."""
    problem = topic_problem(topic)
    if problem is not None:
        raise ValueError(f"cannot publish on topic {brief_repr(topic)}: {problem}")
    return topic


def check_filter(topic_filter: str) -> str:
    """Return ``topic_filter`` if it is a valid subscription, else raise `ValueError`."""
    problem = filter_problem(topic_filter)
    if problem is not None:
        raise ValueError(f"invalid topic filter {brief_repr(topic_filter)}: {problem}")
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
        self._by_subscriber: dict[str, dict[str, None]] = {}
        """The same subscriptions the other way round: forgetting an actor's is one lookup,
        not a scan of every filter (which made stopping many subscribers quadratic)."""
        self._cache: dict[str, tuple[str, ...]] = {}

    def subscribe(self, topic_filter: str, subscriber: str) -> None:
        """Add ``subscriber`` to ``topic_filter`` (doing it twice is harmless)."""
        check_filter(topic_filter)
        self._by_filter.setdefault(topic_filter, {})[subscriber] = None
        self._by_subscriber.setdefault(subscriber, {})[topic_filter] = None
        self._cache.clear()

    def unsubscribe(self, topic_filter: str, subscriber: str) -> None:
        """Remove ``subscriber`` from ``topic_filter`` if it was there."""
        members = self._by_filter.get(topic_filter)
        if members is not None and members.pop(subscriber, 0) is None:
            if not members:
                del self._by_filter[topic_filter]
            filters = self._by_subscriber[subscriber]
            del filters[topic_filter]
            if not filters:
                del self._by_subscriber[subscriber]
            self._cache.clear()

    def remove(self, subscriber: str) -> None:
        """Forget every subscription of ``subscriber``."""
        for topic_filter in list(self._by_subscriber.get(subscriber, ())):
            self.unsubscribe(topic_filter, subscriber)

    def filters_of(self, subscriber: str) -> list[str]:
        """The filters ``subscriber`` is subscribed to, in the order it subscribed."""
        return list(self._by_subscriber.get(subscriber, ()))

    def subscribers(self, topic: str) -> tuple[str, ...]:
        """Every subscriber whose filter matches ``topic``, each once, in subscription order.

        Raises `ValueError` if ``topic`` is not a valid topic (see `check_topic`). The
        check is made once per topic, on a cache miss: publishing on a topic again costs
        one dict lookup.
        """
        found = self._cache.get(topic)
        if found is None:
            check_topic(topic)
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

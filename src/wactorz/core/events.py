"""Lifecycle events: what happened to which actor or node, broadcast to every listener.

The runtime never blocks on a listener: each listener has a bounded buffer, and
events that do not fit are counted in `EventStream.dropped` (and logged) rather
than slowing the actors down.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, final

import attrs
import trio

from wactorz.core.errors import describe_error, root_cause

__all__ = ["ActorEvent", "EventKind", "EventStream"]

logger = logging.getLogger("wactorz.events")


class EventKind(enum.StrEnum):
    """The kinds of lifecycle event: of actors and supervisors, and of other nodes."""

    STARTED = "started"
    STOPPED = "stopped"
    CRASHED = "crashed"
    RESTARTED = "restarted"
    GAVE_UP = "gave_up"
    DEAD_LETTER = "dead_letter"
    NODE_UP = "node_up"
    """Another node announced itself, or came back (see `ActorEvent` for its fields)."""
    NODE_DOWN = "node_down"
    """Another node went down or out of reach; its actors can no longer be reached."""


NODE_KINDS = frozenset({EventKind.NODE_UP, EventKind.NODE_DOWN})
"""The kinds of event about a node rather than an actor."""


_LOG_LEVELS = {
    EventKind.STARTED: logging.DEBUG,
    EventKind.STOPPED: logging.DEBUG,
    EventKind.CRASHED: logging.ERROR,
    EventKind.RESTARTED: logging.INFO,
    EventKind.GAVE_UP: logging.ERROR,
    EventKind.DEAD_LETTER: logging.INFO,
    EventKind.NODE_UP: logging.INFO,
    EventKind.NODE_DOWN: logging.WARNING,
}


@final
@attrs.frozen
class ActorEvent:
    """One thing that happened to one actor (or supervisor), or to another node.

    Each field means one thing, whatever the kind:

    - ``actor_name``, ``actor_id``: what it happened to (an actor, or a supervisor for
      ``gave_up``); for a dead letter to an unknown target, the target as given; for
      ``node_up`` and ``node_down``, the node's name (in both);
    - ``node``: the other node a ``node_up`` or ``node_down`` is about; None for the
      events of this node's own actors;
    - ``time``: wall-clock Unix time of the event;
    - ``supervisor``: the name of the supervisor it runs under (``"root"`` for spawned
      actors and top-level supervisors); None for dead letters;
    - ``incarnation``: restarts so far (0 for the first run); None where it does not apply;
    - ``reason``: a short explanation for people, which says why or where, while
      ``exception`` says what went wrong: why it stopped (``"stopped"``, ``"terminated by
      its supervisor"``, ...); for a crash, where it happened: ``"failed to construct"``
      or ``"failed to start"`` (`Actor.on_start`, or `Actor.background` before it was
      ready), ``"raised while handling a message"`` (`Actor._process`), ``"raised in its
      background task"``, or ``"gave up"`` for a supervisor; the restart limit for
      ``gave_up``; why a message became a dead letter; None for ``started`` and
      ``restarted``;
    - ``exception``: what went wrong, for crashes, give-ups (`SupervisorGaveUp`),
      ``on_stop`` failures on ``stopped`` and dead letters caused by a crash;
    - ``message``: the undelivered message of a dead letter (or ``{"reply": ...}`` for an
      answer that came after the asker stopped waiting); for ``node_up`` and
      ``node_down``, ``{"boot": ..., "actors": [{"id": ..., "name": ...}, ...]}``: the
      node's incarnation (a new one each time its process starts) and the actors it runs
      (for ``node_down``, those that went out of reach with it); None otherwise.

    For ``node_down``, ``reason`` says why: ``"offline: stopped"`` (it said goodbye),
    ``"offline: connection lost"`` (the broker published its last will), ``"silent for
    6.0 s"`` (no heartbeat: a crash or a partition, or this node lost the broker),
    ``"restarted"`` (a new incarnation announced itself before the old one was seen
    going); for ``node_up``, None.
    """

    kind: EventKind
    actor_name: str
    actor_id: str
    time: float = attrs.field(factory=time.time)
    exception: BaseException | None = None
    reason: str | None = None
    message: dict[str, Any] | None = None
    incarnation: int | None = None
    supervisor: str | None = None
    node: str | None = None

    def describe(self) -> str:
        """A one-line human description, as logged."""
        if self.node is not None:
            text = f"{self.kind.value}: node {self.node}"
            return f"{text} — {self.reason}" if self.reason else text
        text = f"{self.kind.value}: {self.actor_name} ({self.actor_id})"
        if self.incarnation:
            text += f" incarnation {self.incarnation}"
        if self.reason:
            text += f" — {self.reason}"
        if self.exception is not None:
            text += f" [{describe_error(self.exception)}]"
        return text


@final
class EventStream:
    """An async iterator over the events emitted while it is open."""

    def __init__(self, receive: trio.MemoryReceiveChannel[ActorEvent]) -> None:
        self._receive = receive
        self.dropped = 0
        """Events that did not fit in this stream's buffer and were discarded."""

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ActorEvent:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def receive_nowait(self) -> ActorEvent:
        """Return the next buffered event, or raise `trio.WouldBlock` if there is none."""
        return self._receive.receive_nowait()


@final
class EventBus:
    """Fans every emitted event out to the open streams and to the log."""

    def __init__(self) -> None:
        self._streams: dict[trio.MemorySendChannel[ActorEvent], EventStream] = {}

    @property
    def listeners(self) -> int:
        """How many event streams are open."""
        return len(self._streams)

    def wants(self, kind: EventKind) -> bool:
        """Whether an event of ``kind`` would reach anyone, a stream or the log: the runtime
        builds its frequent events (an actor started, stopped) only then."""
        return bool(self._streams) or logger.isEnabledFor(_LOG_LEVELS[kind])

    def emit(self, event: ActorEvent) -> None:
        """Deliver ``event`` to every open stream without ever blocking."""
        level = _LOG_LEVELS[event.kind]
        if logger.isEnabledFor(level):
            # A crash is logged with the traceback of what went wrong, not of the
            # exception group a nursery wrapped it in.
            error = event.exception if event.kind is EventKind.CRASHED else None
            cause = None if error is None else root_cause(error)
            logger.log(level, "%s", event.describe(), exc_info=cause)
        for send, stream in self._streams.items():
            try:
                send.send_nowait(event)
            except trio.WouldBlock:
                stream.dropped += 1
                if stream.dropped == 1 or stream.dropped % 1000 == 0:
                    logger.warning(
                        "an event listener is too slow: %d events dropped so far", stream.dropped
                    )

    @asynccontextmanager
    async def stream(self, buffer: int = 10_000) -> AsyncIterator[EventStream]:
        """Open a stream that receives every event emitted until the block ends."""
        send, receive = trio.open_memory_channel[ActorEvent](buffer)
        stream = EventStream(receive)
        self._streams[send] = stream
        try:
            yield stream
        finally:
            del self._streams[send]
            send.close()
            receive.close()

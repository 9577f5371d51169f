"""The hub: every connection, what each subscribed to, and the feeds computed for them.

The web actor owns one `Hub`. It keeps the connections and their subscriptions, routes
stream messages from the agents to the request they answer, and fans each feed out to
its subscribers, encoding every frame once whatever the number of clients:

- ``tree``: a `TreeTracker`'s snapshot, then its deltas, recomputed every
  `WebOptions.tick_s` and soon after each lifecycle event;
- ``metrics``: one ``metrics`` frame per tick (messages per second, the monitor's latest
  health, the LLM usage totals);
- ``events``: the system's lifecycle events, as ``event`` frames;
- ``alerts``: the monitor's alerts, as ``alert`` frames;
- local topic filters: messages published on matching topics, as ``message`` frames.

Feeds are computed only while someone is subscribed: with no subscriber there is no
tracker, no ticking task and no event listener (`HubStatistics` shows it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final, final

import attrs
import trio

from wactorz.core.errors import describe_error
from wactorz.core.events import ActorEvent, EventKind, EventStream
from wactorz.core.topics import check_filter, topic_matches
from wactorz.interfaces.web.connection import Connection
from wactorz.interfaces.web.details import describe
from wactorz.interfaces.web.metrics import LLMUsage
from wactorz.interfaces.web.protocol import STREAM_NAMES, FrameError, RequestId, encode_frame
from wactorz.interfaces.web.tree import TreeTracker
from wactorz.telemetry import ALERTS_TOPIC

if TYPE_CHECKING:
    from wactorz.core.actor import Actor
    from wactorz.interfaces.web.interface import WebInterface, WebOptions

__all__ = ["Hub", "HubStatistics"]

logger = logging.getLogger("wactorz.web")

_TREE_EVENTS: Final = frozenset(
    {
        EventKind.STARTED,
        EventKind.STOPPED,
        EventKind.CRASHED,
        EventKind.RESTARTED,
        EventKind.GAVE_UP,
        EventKind.NODE_UP,
        EventKind.NODE_DOWN,
    }
)
_HEARTBEAT_KEYS: Final = ("time", "rate", "stalled_s", "since_activity_s", "llm")
"""What the tree shows of the monitor's latest heartbeat and metrics of each actor."""


@final
@attrs.frozen
class HubStatistics:
    """A snapshot of the hub: connections, subscribers, and the work its feeds did."""

    connections: int
    tree_subscribers: int
    events_subscribers: int
    metrics_subscribers: int
    alerts_subscribers: int
    topic_filters: int
    tracking: bool
    """Whether the feed task runs (it does only while tree, metrics or events have a subscriber)."""
    ticks: int
    """Tree and metrics computations so far."""
    deltas: int
    """Tree deltas published."""
    snapshots: int
    """Snapshots encoded (each is shared by the clients that need it at that ``seq``)."""
    events: int
    """Lifecycle events forwarded."""
    streams: int
    """Chat streams being routed now."""


@final
class _Route:
    """Where a stream's messages go: a connection and the request they answer."""

    __slots__ = ("connection", "frames", "request_id", "result")

    def __init__(self, connection: Connection, request_id: RequestId) -> None:
        self.connection = connection
        self.request_id = request_id
        self.frames = 0
        self.result: object = None


@final
class Hub:
    """Connections, subscriptions and feeds of one `WebInterface` incarnation."""

    def __init__(self, actor: WebInterface, options: WebOptions) -> None:
        self.actor = actor
        self.options = options
        self.connections: dict[str, Connection] = {}
        self.telemetry: dict[str, dict[str, Any]] = {}
        """Actor id → what the tree shows of the monitor's latest numbers for it."""
        self.health: dict[str, Any] | None = None
        """The monitor's latest `wactorz.telemetry.SystemHealth`, as published."""
        self.last_errors: dict[str, str] = {}
        self.classes: dict[str, type[Actor]] = {}
        """Actor name → its class, as last seen running (to describe a stopped child)."""
        self.llm = LLMUsage()
        self._routes: dict[str, _Route] = {}
        self._tracker: TreeTracker | None = None
        self._tree_seq = 0
        self._snapshot: tuple[int, str] | None = None
        self._feed_scope: trio.CancelScope | None = None
        self._wake_feed = trio.Event()
        self._barriers: dict[int, trio.Event] = {}
        self._next_barrier = 0
        self._nursery: trio.Nursery | None = None
        self._client_filters: dict[str, set[Connection]] = {}
        self._ticks = self._deltas = self._snapshots = self._events = 0
        self._processed_before: tuple[int, float] | None = None

    def statistics(self) -> HubStatistics:
        """What the hub serves now, and what it computed so far."""
        return HubStatistics(
            connections=len(self.connections),
            tree_subscribers=self._count("tree"),
            events_subscribers=self._count("events"),
            metrics_subscribers=self._count("metrics"),
            alerts_subscribers=self._count("alerts"),
            topic_filters=len(self._client_filters),
            tracking=self._feed_scope is not None,
            ticks=self._ticks,
            deltas=self._deltas,
            snapshots=self._snapshots,
            events=self._events,
            streams=len(self._routes),
        )

    def _count(self, name: str) -> int:
        return sum(name in connection.topics for connection in self.connections.values())

    def _subscribers(self, name: str) -> list[Connection]:
        return [c for c in self.connections.values() if name in c.topics]

    # ---- lifecycle ------------------------------------------------------------------------

    def run_in(self, nursery: trio.Nursery) -> None:
        """Run the feeds (when needed) in ``nursery``: the web actor's background nursery."""
        self._nursery = nursery

    def add(self, connection: Connection) -> None:
        self.connections[connection.id] = connection

    def forget(self, connection: Connection) -> None:
        """The connection is gone: drop its subscriptions and routes."""
        connection.cancel_all()
        self.connections.pop(connection.id, None)
        self._drop_topics(connection, list(connection.topics))
        for stream_id in [s for s, r in self._routes.items() if r.connection is connection]:
            del self._routes[stream_id]

    def close_all(self, code: int, reason: str) -> None:
        for connection in list(self.connections.values()):
            connection.close(code, reason)

    # ---- subscriptions --------------------------------------------------------------------

    def subscribe(
        self, connection: Connection, topics: Iterable[str], request_id: RequestId
    ) -> dict[str, Any]:
        """Add ``topics`` to what ``connection`` receives; the ``reply`` frame.

        Raises `FrameError` (``bad_topic``) naming a topic that is neither a feed nor a
        valid filter, before subscribing to any.
        """
        topics = list(dict.fromkeys(topics))
        for topic in topics:
            if topic not in STREAM_NAMES:
                try:
                    check_filter(topic)
                except ValueError as exc:
                    raise FrameError(
                        "bad_topic",
                        f"{exc}; the feeds are {', '.join(STREAM_NAMES)}",
                        request_id,
                    ) from None
        for topic in topics:
            connection.topics.add(topic)
            if topic in STREAM_NAMES:
                continue
            members = self._client_filters.setdefault(topic, set())
            if not members:
                self.actor.subscribe(topic)
            members.add(connection)
        if "alerts" in topics and self._count("alerts") == 1:
            self.actor.subscribe(ALERTS_TOPIC)
        if "tree" in topics and self._tracker is None:
            self._tracker = TreeTracker(
                self.actor.system,
                self.telemetry,
                self.last_errors,
                self._tree_seq,
                classes=self.classes,
            )
            self._snapshot = None
        self._update_feed()
        return {
            "type": "reply",
            "id": request_id,
            "reply": {"subscribed": sorted(connection.topics)},
        }

    def unsubscribe(
        self, connection: Connection, topics: Iterable[str], request_id: RequestId
    ) -> dict[str, Any]:
        """Remove ``topics`` from what ``connection`` receives; the ``reply`` frame."""
        self._drop_topics(connection, [t for t in topics if t in connection.topics])
        return {
            "type": "reply",
            "id": request_id,
            "reply": {"subscribed": sorted(connection.topics)},
        }

    def _drop_topics(self, connection: Connection, topics: list[str]) -> None:
        for topic in topics:
            connection.topics.discard(topic)
            members = self._client_filters.get(topic)
            if members is not None:
                members.discard(connection)
                if not members:
                    del self._client_filters[topic]
                    if topic not in self.actor.own_filters:
                        self.actor.unsubscribe(topic)
        if "alerts" in topics and not self._count("alerts"):
            if ALERTS_TOPIC not in self._client_filters:
                self.actor.unsubscribe(ALERTS_TOPIC)
        if "tree" in topics and not self._count("tree") and self._tracker is not None:
            self._tree_seq = self._tracker.seq
            self._tracker = None
            self._snapshot = None
        self._update_feed()

    def snapshot_text(self) -> str | None:
        """The tree's snapshot at its current ``seq``, encoded once per ``seq``."""
        tracker = self._tracker
        if tracker is None:
            return None
        cached = self._snapshot
        if cached is None or cached[0] != tracker.seq:
            cached = self._snapshot = (tracker.seq, encode_frame(tracker.snapshot()))
            self._snapshots += 1
        return cached[1]

    # ---- the feed task ---------------------------------------------------------------------

    def _update_feed(self) -> None:
        needed = any(self._count(name) for name in ("tree", "metrics", "events"))
        if needed and self._feed_scope is None and self._nursery is not None:
            self._feed_scope = trio.CancelScope()
            self._nursery.start_soon(self._feed, self._feed_scope)
        elif not needed and self._feed_scope is not None:
            self._feed_scope.cancel()
            self._feed_scope = None

    async def _feed(self, scope: trio.CancelScope) -> None:
        """Tick the tree and metrics, and follow lifecycle events, until nobody needs them."""
        with scope:
            async with self.actor.system.events(buffer=1000) as events, trio.open_nursery() as n:
                n.start_soon(self._follow_events, events)
                await self._tick()

    async def _tick(self) -> None:
        tick_s = self.options.tick_s
        next_tick = trio.current_time()
        while True:
            with trio.move_on_at(next_tick):
                await self._wake_feed.wait()
                # An event: let the ones that come with it arrive, then look once.
                await trio.sleep(self.options.event_debounce_s)
            self._wake_feed = trio.Event()
            tick = trio.current_time() >= next_tick
            if tick:
                next_tick = max(next_tick + tick_s, trio.current_time())
                self._ticks += 1
            self._publish_tree(tick=tick)
            if tick:
                self._publish_metrics()

    def _publish_tree(self, *, tick: bool) -> None:
        tracker = self._tracker
        if tracker is None:
            return
        delta = tracker.advance(tick=tick)
        if delta is None:
            return
        self._deltas += 1
        text = encode_frame(delta)
        for connection in self._subscribers("tree"):
            connection.push_delta(text)

    def _publish_metrics(self) -> None:
        subscribers = self._subscribers("metrics")
        if not subscribers:
            return
        system = self.actor.system
        actors = system.actors()
        processed = sum(actor.statistics().processed for actor in actors)
        now = trio.current_time()
        rate = None
        if self._processed_before is not None and now > self._processed_before[1]:
            count, then = self._processed_before
            rate = round(max(processed - count, 0) / (now - then), 2)
        self._processed_before = (processed, now)
        frame = {
            "type": "metrics",
            "time": time.time(),
            "node": system.node,
            "actors": len(actors),
            "messages_per_s": rate,
            "health": self.health,
            "llm": self.llm.totals(),
            "connections": len(self.connections),
        }
        self._fan_out_live("metrics", subscribers, frame)

    async def _follow_events(self, events: EventStream) -> None:
        async for event in events:
            if event.kind is EventKind.CRASHED and event.exception is not None:
                self.last_errors[event.actor_id] = describe_error(event.exception)
            if event.kind in _TREE_EVENTS:
                self._wake_feed.set()
            subscribers = self._subscribers("events")
            if subscribers:
                self._events += 1
                self._fan_out_live(
                    "event", subscribers, {"type": "event", "event": event_dict(event)}
                )

    def _fan_out_live(
        self, kind: str, subscribers: list[Connection], frame: dict[str, Any]
    ) -> None:
        text = encode_frame(frame)
        for connection in subscribers:
            connection.push_live(kind, frame, text)

    # ---- what the web actor receives -------------------------------------------------------

    def on_telemetry(self, topic: str, message: dict[str, Any]) -> None:
        """A heartbeat or metrics of one actor (``agents/<id>/...``), or the system's health."""
        if topic == "system/health":
            self.health = message
            return
        actor_id = topic.split("/")[1]
        seen = self.telemetry.setdefault(actor_id, {})
        for key in _HEARTBEAT_KEYS:
            if key in message:
                seen[key] = message[key]
        llm = message.get("llm")
        details = message.get("details")
        if llm is None and isinstance(details, dict):
            # What the monitor publishes: an agent's own report (`Actor.telemetry`) goes
            # in `details`, and a language-model agent's is {"llm": {...}}.
            llm = details.get("llm")
            if llm is not None:
                seen["llm"] = llm
        name = message.get("name")
        if llm is not None and isinstance(name, str):
            self.llm.observe(name, llm)

    def on_published(self, topic: str, message: dict[str, Any], sender: str | None) -> None:
        """A message on a topic a client or the alerts feed subscribed to."""
        if topic == ALERTS_TOPIC:
            subscribers = self._subscribers("alerts")
            if subscribers:
                self._fan_out_live("alert", subscribers, {"type": "alert", "alert": message})
        receivers = {
            connection
            for topic_filter, members in self._client_filters.items()
            if topic_matches(topic_filter, topic)
            for connection in members
        }
        if receivers:
            frame = {"type": "message", "topic": topic, "sender": sender, "message": message}
            try:
                text = encode_frame(frame)
            except (TypeError, ValueError):
                logger.warning("web: a message on %r cannot be sent as JSON", topic)
                return
            for connection in receivers:
                connection.push_live("message", frame, text)

    def describe(self, actor: str, request_id: RequestId) -> dict[str, Any]:
        """The ``reply`` to a ``describe`` request; `FrameError` (``not_found``) naming the
        known actors when there is none called ``actor``."""
        system = self.actor.system
        described = describe(
            system,
            actor,
            protected=self.actor.protected,
            classes=self.classes,
            last_errors=self.last_errors,
        )
        if described is None:
            known = sorted(
                {a.name for a in system.actors()} | {s.name for s in system.supervisors()}
            )
            raise FrameError(
                "not_found",
                f"no actor or supervisor named {actor!r} (known: {', '.join(known)})",
                request_id,
            )
        return {"type": "reply", "id": request_id, "reply": {"actor": described}}

    # ---- streams ---------------------------------------------------------------------------

    def open_route(self, stream_id: str, connection: Connection, request_id: RequestId) -> _Route:
        route = _Route(connection, request_id)
        self._routes[stream_id] = route
        return route

    def close_route(self, stream_id: str) -> None:
        self._routes.pop(stream_id, None)

    def on_stream(self, message: dict[str, Any]) -> None:
        """A stream message (`wactorz.agents.streams`): a ``stream`` frame for its request."""
        route = self._routes.get(message.get("stream"))  # type: ignore[arg-type]
        if route is None:
            logger.debug(
                "web: a message of stream %r, which no request waits for", message.get("stream")
            )
            return
        parts = message.get("parts")
        if isinstance(parts, list) and parts:
            route.connection.push(
                {"type": "stream", "id": route.request_id, "seq": route.frames, "parts": parts}
            )
            route.frames += 1
        if message.get("end") is True:
            route.result = message.get("result")

    async def barrier(self) -> None:
        """Return once the web actor has handled everything in its mailbox now."""
        number = self._next_barrier
        self._next_barrier += 1
        passed = self._barriers[number] = trio.Event()
        try:
            await self.actor.send(self.actor.id, {"barrier": number})
            await passed.wait()
        finally:
            self._barriers.pop(number, None)

    def on_barrier(self, number: object) -> None:
        if isinstance(number, int):
            event = self._barriers.get(number)
            if event is not None:
                event.set()


def event_dict(event: ActorEvent) -> dict[str, Any]:
    """A lifecycle event as the ``event`` frame carries it (JSON; the exception as text)."""
    return {
        "kind": event.kind.value,
        "name": event.actor_name,
        "id": event.actor_id,
        "time": event.time,
        "supervisor": event.supervisor,
        "incarnation": event.incarnation,
        "reason": event.reason,
        "error": describe_error(event.exception) if event.exception is not None else None,
        "node": event.node,
    }

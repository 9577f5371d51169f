"""The MQTT bridge: an actor system's topics, inboxes and lifecycle, seen from a broker.

`MQTTBridge` is the actor (named ``mqtt-bridge``) that owns the system's one
`MQTTConnection`. Everything below goes under the configured ``topic_prefix``
(``wactorz`` by default); ``docs/mqtt.md`` shows every topic and payload.

Outbound, it subscribes on the *local* pub/sub to what the monitor publishes for the
outside world (`wactorz.telemetry.FORWARDED_TOPICS`) and to the mirrored filters, and
forwards each message as JSON to ``<prefix>/<topic>``. The last level of the topic
picks the delivery class (`delivery_for`): while the broker is away only the newest
heartbeat, metrics, status or health message per topic is kept, and every alert or
reply is queued in order, up to ``buffer_size``.

Lifecycle: each running actor has a retained manifest at
``<prefix>/agents/<id>/manifest`` (cleared when the actor is gone for good) and its
lifecycle events go to ``<prefix>/agents/<id>/status`` (an `ActorStatus` of the
telemetry contract, `wactorz.telemetry`). The node itself is ``online`` (retained) on
``<prefix>/nodes/<node>/status`` while connected; the broker publishes the ``offline``
will if the connection dies, and the bridge says ``offline`` itself when it stops.

Inbound, a JSON request on ``<prefix>/agents/<id>/inbox`` or
``<prefix>/agents/by-name/<name>/inbox`` becomes a tell, or, when it names a
``reply_to`` topic, an ask whose answer (or error) is published there. Requests are
checked at the door: a bad one is answered with an error, logged and counted, and
never crashes the bridge. Asks run concurrently (at most `MAX_ASKS_IN_FLIGHT`), so a
slow actor never holds up requests to the others.

Mirrored topics (``mirror_topics``, default ``shared/#``) are two-way: local
messages go to the broker, and broker messages are published locally with the bridge
as sender. The bridge never forwards a message it published itself, and it
recognises the broker's copy of each message it sent (MQTT 3.1.1 echoes a client's
own publishes to its matching subscriptions), so neither side sees a duplicate.

Nodes: every node on the same broker and prefix is part of one actor system. The bridge
beats on ``<prefix>/nodes/<node>/alive``, follows the other nodes' status, heartbeats and
manifests (`wactorz.interfaces.mqtt.cluster`), emits ``node_up`` and ``node_down`` events,
and attaches a `wactorz.interfaces.mqtt.router.NodeRouter` to its system, through which
``name@node`` addresses, ids and names of remote actors reach them; it serves the other
nodes' requests on ``<prefix>/nodes/<node>/inbox`` and starts actors of known kinds on
request (`wactorz.interfaces.mqtt.spawning`). ``docs/scaling.md`` describes it all.
"""

from __future__ import annotations

import collections
import fnmatch
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Final, final

import attrs
import trio

from wactorz.config import MQTTConfig, get_settings
from wactorz.core.actor import Actor
from wactorz.core.errors import (
    ActorCrashed,
    ActorNotFound,
    AmbiguousName,
    AskTimeout,
    InvalidMessage,
    MessageRejected,
    NodeDown,
    WactorzError,
    brief_repr,
)
from wactorz.core.events import ActorEvent, EventKind, EventStream
from wactorz.core.ids import new_wid
from wactorz.core.registry import ActorSystem
from wactorz.core.remote import format_address, parse_address
from wactorz.core.topics import MAX_TOPIC_BYTES, check_filter, topic_matches
from wactorz.interfaces.mqtt.cluster import Cluster, NodeChange
from wactorz.interfaces.mqtt.connection import (
    Delivery,
    MQTTConnection,
    MQTTMessage,
    MQTTStatistics,
)
from wactorz.interfaces.mqtt.node_messages import node_topic, parse_node_request, parse_topic
from wactorz.interfaces.mqtt.requests import (
    Request,
    RequestRefused,
    encode_json,
    error_code,
    json_kind,
    parse_request,
)
from wactorz.interfaces.mqtt.router import DEDUPE_MEMORY, NodeRouter, NodeRouterStatistics, Seen
from wactorz.interfaces.mqtt.spawning import Spawner, describe_spawned, load_kinds
from wactorz.telemetry import FORWARDED_TOPICS, STATUS_KINDS, ActorStatus, status_topic

__all__ = [
    "BRIDGE_NAME",
    "MAX_ASKS_IN_FLIGHT",
    "MQTTBridge",
    "MQTTBridgeStatistics",
    "delivery_for",
]

logger = logging.getLogger(__name__)

BRIDGE_NAME: Final = "mqtt-bridge"
"""The name the bridge runs under."""

MAX_ASKS_IN_FLIGHT: Final = 64
"""Inbound asks waiting for an answer at once; more are refused with a ``busy`` error."""

_LATEST_LEVELS: Final = frozenset({"heartbeat", "metrics", "status", "health"})
_RETAINED_LEVELS: Final = frozenset({"manifest"})
_RESERVED_LEVELS: Final = frozenset({"agents", "nodes"})
"""First topic levels the bridge itself publishes or listens under: not mirrorable."""

_PACKET_OVERHEAD_BYTES: Final = MAX_TOPIC_BYTES + 64
"""A PUBLISH packet's header, topic and properties, at most, beside its payload."""
_FLUSH_S: Final = 2.0
"""How long a stopping bridge waits for its last messages to reach the broker."""
_CONNECTION_POLL_S: Final = 0.25
_SWEEP_S: Final = 2.0
_SPAWN_TIMEOUT_S: Final = 30.0
"""How long a spawn or stop asked of another node through the bridge's messages may take."""
_DUPLICATE_WARNING_S: Final = 60.0
_WILL_GRACE_S: Final = 0.25
"""How long a node's last will waits to see whether this node's own connection drops too
(a broker going down publishes every client's will): a will counts only if it does not."""


def delivery_for(topic: str) -> tuple[Delivery, bool]:
    """The delivery class and retain flag of a message on local ``topic``.

    By the topic's last level: ``heartbeat``, ``metrics``, ``status`` and ``health``
    are *latest* (a newer one makes an unsent one worthless), ``manifest`` is *latest*
    and retained (a late subscriber needs it), anything else — alerts, replies,
    mirrored messages — is *queued*.
    """
    last = topic.rpartition("/")[2]
    if last in _RETAINED_LEVELS:
        return Delivery.LATEST, True
    if last in _LATEST_LEVELS:
        return Delivery.LATEST, False
    return Delivery.QUEUED, False


@final
@attrs.frozen
class MQTTBridgeStatistics:
    """A snapshot of an `MQTTBridge` incarnation's counters, from `MQTTBridge.bridge_statistics`."""

    forwarded: int
    """Local messages sent on to the broker (forwarded and mirrored topics)."""
    mirrored_in: int
    """Broker messages on mirrored topics published locally."""
    requests: int
    """Messages that arrived on an inbox topic, well-formed or not."""
    replies: int
    """Answers published to a ``reply_to`` topic (errors not included)."""
    errors: int
    """Requests and messages refused or failed: each was logged as a warning."""
    echoes_suppressed: int
    """The broker's copies of the bridge's own mirrored publishes, recognised and dropped."""
    retained_ignored: int
    """Retained messages on inbox topics, ignored: a request is carried out only when it
    is published, not each time someone subscribes."""
    asks_in_flight: int
    """Inbound asks waiting for their answer now."""
    connection: MQTTStatistics | None
    """The connection's own counters (drops included); None before the bridge started."""
    nodes: NodeRouterStatistics | None = None
    """The traffic with other nodes (`NodeRouterStatistics`); None while the bridge is not
    running."""


def _first_line(text: str | None) -> str:
    return text.strip().splitlines()[0].strip() if text and text.strip() else ""


def _check_mirror_filters(filters: Iterable[str], reserved: Iterable[str]) -> tuple[str, ...]:
    """Return ``filters`` as a tuple if each can be mirrored, else raise `ValueError`.

    A mirrored filter starts with a plain level (no wildcard) that the bridge does not
    use itself (``reserved``), so that two-way traffic never mixes with the topics it
    forwards one way or the inboxes it serves.
    """
    if isinstance(filters, str):
        raise TypeError(f"mirror topics are a list of topic filters, not the string {filters!r}")
    taken = frozenset(reserved)
    checked = []
    for topic_filter in filters:
        check_filter(topic_filter)
        first = topic_filter.split("/")[0]
        if first in ("+", "#", "") or first in taken:
            raise ValueError(
                f"cannot mirror {topic_filter!r}: a mirrored filter must start with a plain "
                f"level other than {', '.join(sorted(taken))}, as in 'shared/#'"
            )
        checked.append(topic_filter)
    return tuple(checked)


@attrs.define(eq=False)
class _Echoes:
    """The broker's copies still to come of what the bridge published on mirrored topics.

    MQTT 3.1.1 sends a client its own publishes back when it subscribes to their
    topics, and has no flag to say which ones those are. So every mirrored publish is
    remembered as ``(topic, payload)`` and the first identical message to come back is
    taken for its echo. The memory is bounded: past ``capacity`` entries the oldest is
    forgotten (it was dropped from the outbox, or the broker lost it). A message from
    another client identical to one of ours in flight is taken for our echo, and our
    echo then counts as theirs: local subscribers still see each message once.
    """

    capacity: int
    _order: collections.deque[tuple[str, bytes]] = attrs.field(factory=collections.deque)
    _pending: collections.Counter[tuple[str, bytes]] = attrs.field(factory=collections.Counter)

    def expect(self, topic: str, payload: bytes) -> None:
        key = (topic, payload)
        self._order.append(key)
        self._pending[key] += 1
        if len(self._order) > self.capacity:
            self._forget(self._order.popleft())

    def is_echo(self, topic: str, payload: bytes) -> bool:
        key = (topic, payload)
        if key not in self._pending:
            return False
        self._forget(key)
        self._order.remove(key)  # almost always the oldest entry: echoes come back in order
        return True

    def _forget(self, key: tuple[str, bytes]) -> None:
        self._pending[key] -= 1
        if not self._pending[key]:
            del self._pending[key]


@attrs.define
class _Counters:
    """The bridge's running counts: the first fields of `MQTTBridgeStatistics`, by name."""

    forwarded: int = 0
    mirrored_in: int = 0
    requests: int = 0
    replies: int = 0
    errors: int = 0
    echoes_suppressed: int = 0
    retained_ignored: int = 0


class MQTTBridge(Actor):
    """Connects the actor system to an MQTT broker: its topics, inboxes and lifecycle.

    Settings come from ``config`` (default: the process-wide ``mqtt`` settings).
    ``forwarded`` are the local filters sent one way to the broker (default: the
    monitor's `FORWARDED_TOPICS`); ``mirror_topics`` overrides the config's two-way
    filters. Each incarnation owns one `MQTTConnection` (client id ``mqtt.client_id``,
    default ``wactorz-<node>``), which its `background` runs and disconnects before
    the incarnation ends. Counters start from zero with each incarnation.

    It also links its system to the other nodes on the broker (``docs/scaling.md``): it
    attaches a `NodeRouter` while it runs, so that remote addresses reach their actors.
    ``kinds`` are the kinds of actor it may start by name (default: ``mqtt.kinds``,
    imported), of which ``mqtt.spawn_allow`` lists those other nodes may ask for.

    Messages sent to it directly: ``{"get": "statistics"}`` answers with
    `bridge_statistics` as a dict; ``{"get": "nodes"}`` with every node and its actors;
    ``{"spawn": {"node": N, "kind": K, "name": A}}`` starts an actor of kind K named A on
    node N (this one included) and answers with its id; ``{"stop": {"node": N, "name": A}}``
    stops one started that way. Both are remembered in N's desired set, which N restores
    after a restart.
    """

    capabilities: ClassVar[tuple[str, ...]] = ("mqtt",)

    mailbox_size: ClassVar[int] = 8192
    """Every monitor tick publishes two messages per actor to the bridge at once."""

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        config: MQTTConfig | None = None,
        forwarded: Sequence[str] = FORWARDED_TOPICS,
        mirror_topics: Sequence[str] | None = None,
        connect_timeout_s: float = 5.0,
        kinds: Mapping[str, type[Actor]] | None = None,
    ) -> None:
        super().__init__(system, name=BRIDGE_NAME if name is None else name)
        self.config: MQTTConfig = get_settings().mqtt if config is None else config
        self.kinds: dict[str, type[Actor]] = (
            load_kinds(self.config.kinds) if kinds is None else dict(kinds)
        )
        """The kinds of actor this node can start by name."""
        self.prefix: str = self.config.topic_prefix
        self.reply_prefix: str = self.config.reply_prefix or f"{self.prefix}/replies"
        """Where answers to requests may go (``reply_to`` must be below it)."""
        self.forwarded: tuple[str, ...] = tuple(check_filter(f) for f in forwarded)
        reserved = _RESERVED_LEVELS | {f.split("/")[0] for f in self.forwarded}
        if self.reply_prefix.startswith(f"{self.prefix}/"):
            reserved |= {self.reply_prefix[len(self.prefix) + 1 :].split("/")[0]}
        self.mirror_topics: tuple[str, ...] = _check_mirror_filters(
            self.config.mirror_topics if mirror_topics is None else mirror_topics, reserved
        )
        self._connect_timeout_s = connect_timeout_s
        self._connection: MQTTConnection | None = None
        self._counters = _Counters()
        self._echoes = _Echoes(self.config.buffer_size)
        self._asks = trio.CapacityLimiter(MAX_ASKS_IN_FLIGHT)
        self._manifests: dict[str, bytes] = {}
        """Actor id → the manifest published for it (retained on the broker)."""
        self._puts = 0
        """Messages handed to the connection: the flush on stop waits until all are out."""
        self.boot: str = new_wid("boot")
        """This incarnation's id in the node protocol: a restarted bridge is a new one."""
        self._cluster: Cluster | None = None
        self._spawner: Spawner | None = None
        self._router: NodeRouter | None = None
        self._workers: trio.Nursery | None = None
        """The nursery of this incarnation's tasks, while it runs."""
        self._seen = Seen(DEDUPE_MEMORY)
        self._beats = 0
        self._duplicate_warned = float("-inf")

    # ---- what others see -----------------------------------------------------------------

    @property
    def connection(self) -> MQTTConnection:
        """This incarnation's broker connection (made in `on_start`)."""
        if self._connection is None:
            raise RuntimeError(f"{self.name!r} has no MQTT connection before it starts")
        return self._connection

    @property
    def node_status_topic(self) -> str:
        """``<prefix>/nodes/<node>/status``: ``online`` (retained) or ``offline`` (the will)."""
        return f"{self.prefix}/nodes/{self.system.node}/status"

    @property
    def cluster(self) -> Cluster:
        """What this node knows of the others (made in `on_start`)."""
        if self._cluster is None:
            raise RuntimeError(f"{self.name!r} knows no other node before it starts")
        return self._cluster

    async def spawn_on(
        self, node: str, kind: str, name: str, *, timeout: float = _SPAWN_TIMEOUT_S
    ) -> dict[str, Any]:
        """Start an actor of ``kind`` named ``name`` on ``node`` (this node's name included).

        Returns ``{"id", "name", "node", "kind", "class"}`` of the actor once it runs; it
        is then in ``node``'s desired set, and started again whenever that node restarts.
        Raises `NodeDown` if ``node`` is down, `RemoteError` with code ``forbidden`` if its
        ``mqtt.spawn_allow`` does not list ``kind`` (``unknown_kind`` if it knows no such
        kind), `DuplicateName` if the name is taken there, `AskTimeout` after ``timeout``.
        """
        if node == self.system.node:
            spawner = self._running_spawner()
            actor = await spawner.spawn(kind, name, remote=False)
            self._publish_desired()
            return describe_spawned(actor, kind, node)
        answer = await self._running_router().request(node, "spawn", name, kind, timeout)
        return dict(answer) if isinstance(answer, dict) else {"answer": answer}

    async def stop_on(
        self, node: str, name: str, *, timeout: float = _SPAWN_TIMEOUT_S
    ) -> dict[str, Any]:
        """Stop the actor ``name`` that `spawn_on` started on ``node``, and drop it from that
        node's desired set; answers ``{"stopped": bool, "name": name}``."""
        if node == self.system.node:
            stopped = await self._running_spawner().stop(name)
            self._publish_desired()
            return {"stopped": stopped, "name": name}
        answer = await self._running_router().request(node, "stop", name, None, timeout)
        return dict(answer) if isinstance(answer, dict) else {"answer": answer}

    def _running_router(self) -> NodeRouter:
        if self._router is None:
            raise RuntimeError(
                f"{self.name!r} is not connected to other nodes yet: wait until it has started"
            )
        return self._router

    def _running_spawner(self) -> Spawner:
        if self._spawner is None:
            raise RuntimeError(f"{self.name!r} cannot start actors before it starts")
        return self._spawner

    def bridge_statistics(self) -> MQTTBridgeStatistics:
        """A snapshot of the bridge's counters and its connection's.

        (`Actor.statistics` is the actor's mailbox and lifecycle, as for any actor.)
        """
        return MQTTBridgeStatistics(
            **attrs.asdict(self._counters),  # each counter is the statistic of its name
            asks_in_flight=MAX_ASKS_IN_FLIGHT - int(self._asks.available_tokens),
            connection=None if self._connection is None else self._connection.statistics(),
            nodes=None if self._router is None else self._router.statistics(),
        )

    # ---- lifecycle -----------------------------------------------------------------------

    async def on_start(self) -> None:
        config = self.config
        node = self.system.node
        password = config.password.reveal() if config.password is not None else None
        self._connection = MQTTConnection(
            host=config.host,
            port=config.port,
            client_id=config.client_id or f"wactorz-{node}",
            username=config.username,
            password=password,
            tls=config.uses_tls,
            tls_ca_file=config.tls_ca_file,
            keepalive=config.keepalive,
            qos=config.qos,
            reconnect_min_s=config.reconnect_min_s,
            reconnect_max_s=config.reconnect_max_s,
            buffer_size=config.buffer_size,
            connect_timeout_s=self._connect_timeout_s,
            protocol=config.protocol,
            # Room for the longest topic beside the largest payload the bridge accepts.
            max_packet_bytes=config.max_payload_bytes + _PACKET_OVERHEAD_BYTES,
            will=MQTTMessage(
                self.node_status_topic,
                encode_json(self._node_status("offline", "connection lost", at=None)),
                qos=config.qos,
                retain=True,
            ),
        )
        self._cluster = Cluster(node, config.node_down_after_s)
        self._spawner = Spawner(self.system, self.kinds, config.spawn_allow)
        for topic_filter in (*self.forwarded, *self.mirror_topics):
            self.subscribe(topic_filter)

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        """Run the connection, serve the inboxes and mirrors, follow the lifecycle events.

        Ready once the first connection attempt is over (connected or not). On the
        way out it publishes its goodbyes — the ``offline`` status, cleared manifests —
        and gives them up to 2 s to reach the broker before it disconnects.
        """
        conn = self.connection
        # Shielded: the connection must outlive the other tasks long enough to send
        # the goodbyes; the finally below cancels it, whatever happened.
        connection_scope = trio.CancelScope(shield=True)
        node = self.system.node
        async with (
            conn.messages(lossless=True) as requests,
            conn.messages(lossless=True) as mirrored,
            conn.messages(lossless=True) as membership,
            self.system.events() as events,
            trio.open_nursery() as connection_nursery,
        ):
            try:
                await conn.subscribe(f"{self.prefix}/agents/+/inbox")
                await conn.subscribe(f"{self.prefix}/agents/by-name/+/inbox")
                for topic_filter in self.mirror_topics:
                    await conn.subscribe(f"{self.prefix}/{topic_filter}")
                for level in ("inbox", "replies", "desired"):
                    await conn.subscribe(node_topic(self.prefix, node, level))
                for level in ("status", "alive"):
                    await conn.subscribe(node_topic(self.prefix, "+", level))
                await conn.subscribe(f"{self.prefix}/agents/+/manifest")
                self._announce_node("online")
                await connection_nursery.start(self._run_connection, connection_scope)
                async with trio.open_nursery() as workers:
                    self._workers = workers
                    router = self._router = self._make_router(workers)
                    self.system.attach_router(router)
                    try:
                        workers.start_soon(self._serve_requests, requests, workers)
                        workers.start_soon(self._serve_mirrored, mirrored)
                        workers.start_soon(self._serve_membership, membership, workers)
                        workers.start_soon(self._follow_events, events)
                        workers.start_soon(self._follow_connection)
                        workers.start_soon(self._sweep_manifests)
                        workers.start_soon(self._beat)
                        workers.start_soon(self._watch_silence)
                        workers.start_soon(router.resend_unanswered)
                        self._reconcile_manifests()
                        task_status.started()
                        await trio.sleep_forever()
                    finally:
                        self.system.detach_router(router)
                        router.close("this node's MQTT bridge stopped")
                        self._router = self._workers = None
            finally:
                with trio.CancelScope(shield=True) as goodbye:
                    goodbye.deadline = trio.current_time() + _FLUSH_S
                    self._say_goodbye(events)
                    await self._flush()
                connection_scope.cancel()

    def _make_router(self, nursery: trio.Nursery) -> NodeRouter:
        assert self._spawner is not None
        return NodeRouter(
            system=self.system,
            bridge_id=self.id,
            config=self.config,
            prefix=self.prefix,
            cluster=self.cluster,
            connection=self.connection,
            spawner=self._spawner,
            publish=self._send,
            nursery=nursery,
            on_desired_changed=self._publish_desired,
            boot=self.boot,
            seen=self._seen,
        )

    async def _run_connection(
        self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with scope:
            await self.connection.run(task_status=task_status)

    def _say_goodbye(self, events: EventStream) -> None:
        while True:
            try:
                self._on_event(events.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
        for actor_id in list(self._manifests):
            self._clear_manifest(actor_id)
        self._announce_node("offline", "stopped")

    async def _flush(self) -> None:
        """Wait until everything handed to the connection is sent (or dropped), while connected."""
        conn = self.connection
        while conn.connected:
            stats = conn.statistics()
            if stats.published + stats.dropped_latest + stats.dropped_queued >= self._puts:
                return
            await trio.sleep(0.01)

    async def _follow_connection(self) -> None:
        """After each reconnection: say ``online`` again and republish the manifests.

        The broker may have lost both (a restart without persistence), or published
        our ``offline`` will meanwhile. `MQTTConnection` has no connect callback, so
        its connection count is checked a few times a second.
        """
        conn = self.connection
        seen = conn.statistics().connects
        while True:
            await trio.sleep(_CONNECTION_POLL_S)
            connects = conn.statistics().connects
            if connects != seen:
                seen = connects
                self._announce_node("online")
                self._republish()

    def _republish(self) -> None:
        """Publish the manifests and the desired set again (the broker may have lost them)."""
        for actor_id, manifest in self._manifests.items():
            self._send(self._manifest_topic(actor_id), manifest, Delivery.LATEST, True)
        if self._spawner is not None and self._spawner.desired:
            self._publish_desired()

    # ---- outbound: local topics to the broker ----------------------------------------------

    async def _process(self, message: dict[str, Any]) -> object:
        envelope = self.envelope
        topic = envelope.topic if envelope is not None else None
        if topic is None:
            if message == {"get": "statistics"}:
                return attrs.asdict(self.bridge_statistics())
            if message == {"get": "nodes"}:
                return [attrs.asdict(node) for node in self.system.nodes()]
            if "spawn" in message or "stop" in message:
                self._spawn_or_stop_later(message)
                return None
            raise MessageRejected(
                "unknown request: send {'get': 'statistics'}, {'get': 'nodes'}, "
                "{'spawn': {'node': N, 'kind': K, 'name': A}} or {'stop': {'node': N, 'name': A}}"
            )
        if envelope is not None and envelope.sender == self.id:
            return None  # came from the broker through this bridge: sending it back would loop
        kind, retain = delivery_for(topic)
        if kind is Delivery.QUEUED:
            # Never dropped while connected: wait rather than outrun the network. Latest
            # messages replace their predecessor, and need no room.
            await self.connection.wait_for_room()
        self._forward(topic, message, kind, retain)
        return None

    def _forward(self, topic: str, message: dict[str, Any], kind: Delivery, retain: bool) -> None:
        try:
            payload = encode_json(message)
        except (TypeError, ValueError) as exc:
            self._counters.errors += 1
            logger.warning("%s: cannot forward a message on %r: %s", self.name, topic, exc)
            return
        full_topic = f"{self.prefix}/{topic}"
        if any(topic_matches(f, topic) for f in self.mirror_topics):
            self._echoes.expect(full_topic, payload)
        self._send(full_topic, payload, kind, retain)
        self._counters.forwarded += 1

    def _send(
        self,
        topic: str,
        payload: bytes,
        kind: Delivery,
        retain: bool = False,
        qos: int | None = None,
    ) -> bool:
        """Hand a message to the connection; False (logged, counted) if it cannot be sent.

        The topics and payloads the bridge builds are checked where they come from
        (a ``reply_to`` when the request is read); this is the last line of defence, so
        that nothing a client sent can make a publish raise inside the bridge.
        """
        try:
            self.connection.publish(topic, payload, kind=kind, retain=retain, qos=qos)
        except (TypeError, ValueError):
            self._counters.errors += 1
            logger.exception("%s: not publishing on %s", self.name, brief_repr(topic))
            return False
        self._puts += 1
        return True

    # ---- node status, manifests and lifecycle events --------------------------------------

    def _node_status(self, status: str, reason: str | None, at: float | None) -> dict[str, Any]:
        import wactorz  # the version, read from the installed metadata once

        config = self.config
        return {
            "node": self.system.node,
            "status": status,
            "time": at,
            "reason": reason,
            "boot": self.boot,
            "pid": os.getpid(),
            "version": wactorz.__version__,
            "heartbeat_s": config.heartbeat_s,
            "spawnable": sorted(self._spawner.allowed) if self._spawner is not None else [],
        }

    def _announce_node(self, status: str, reason: str | None = None) -> None:
        payload = encode_json(self._node_status(status, reason, time.time()))
        self._send(self.node_status_topic, payload, Delivery.LATEST, retain=True)

    def _manifest_topic(self, actor_id: str) -> str:
        return f"{self.prefix}/agents/{actor_id}/manifest"

    def _manifest(self, actor: Actor) -> dict[str, Any]:
        cls = type(actor)
        return {
            "id": actor.id,
            "name": actor.name,
            "node": self.system.node,
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "description": _first_line(cls.__doc__),
            "capabilities": list(cls.capabilities),
            "tools": [declared.to_json() for declared in cls.tools()],
            "inbox": f"{self.prefix}/agents/{actor.id}/inbox",
            "inbox_by_name": f"{self.prefix}/agents/by-name/{actor.name}/inbox",
            "time": time.time(),
            "boot": self.boot,
        }

    def _reconcile_manifests(self) -> None:
        """Make the retained manifests match the registered actors."""
        running = {actor.id: actor for actor in self.system.actors()}
        for actor_id in self._manifests.keys() - running.keys():
            self._clear_manifest(actor_id)
        for actor_id in running.keys() - self._manifests.keys():
            payload = encode_json(self._manifest(running[actor_id]))
            self._manifests[actor_id] = payload
            self._send(self._manifest_topic(actor_id), payload, Delivery.LATEST, retain=True)

    def _clear_manifest(self, actor_id: str) -> None:
        del self._manifests[actor_id]
        # An empty retained message deletes the retained one: late subscribers see nothing.
        self._send(self._manifest_topic(actor_id), b"", Delivery.LATEST, retain=True)

    async def _sweep_manifests(self) -> None:
        # A supervisor unregisters children it stops some time after their stop event,
        # with no event of its own: a periodic look catches those.
        while True:
            await trio.sleep(_SWEEP_S)
            self._reconcile_manifests()

    async def _follow_events(self, events: EventStream) -> None:
        async for event in events:
            self._on_event(event)

    def _on_event(self, event: ActorEvent) -> None:
        if event.kind not in STATUS_KINDS:
            return
        was_known = event.actor_id in self._manifests
        self._reconcile_manifests()
        if not (was_known or event.actor_id in self._manifests):
            return  # a supervisor, or an actor that never got as far as running
        status = ActorStatus.from_event(event, self.system.node)
        topic = f"{self.prefix}/{status_topic(event.actor_id)}"
        self._send(topic, encode_json(status.to_message()), Delivery.LATEST)

    # ---- other nodes: membership, the directory, spawning -----------------------------------

    async def _beat(self) -> None:
        """Say this node is alive every ``mqtt.heartbeat_s`` (QoS 0: only the latest counts)."""
        topic = node_topic(self.prefix, self.system.node, "alive")
        while True:
            self._beats += 1
            beat = {"node": self.system.node, "boot": self.boot, "time": time.time()}
            beat["seq"] = self._beats
            self._send(topic, encode_json(beat), Delivery.LATEST, qos=0)
            await trio.sleep(self.config.heartbeat_s)

    async def _watch_silence(self) -> None:
        """Mark down the nodes that stopped beating; a tenth of the limit is the resolution."""
        tick = min(self.config.heartbeat_s, self.config.node_down_after_s / 10)
        while True:
            await trio.sleep(tick)
            connected = self.connection.connected
            self._apply(self.cluster.check(trio.current_time(), time.time(), connected=connected))

    async def _serve_membership(
        self, stream: trio.MemoryReceiveChannel[MQTTMessage], nursery: trio.Nursery
    ) -> None:
        """Follow the other nodes (status, heartbeats, manifests), the answers to this node's
        asks, and this node's own desired set; never waits on an actor."""
        for_me = f"{self.prefix}/agents/"
        async for message in stream:
            try:
                where = parse_topic(self.prefix, message.topic)
                if where is not None:
                    self._on_node_topic(*where, message, nursery)
                elif message.topic.startswith(for_me) and message.topic.endswith("/manifest"):
                    actor_id = message.topic[len(for_me) : -len("/manifest")]
                    if "/" not in actor_id:
                        self._on_manifest(actor_id, message)
            except Exception:
                self._counters.errors += 1
                logger.exception(
                    "%s: handling %s from the broker failed", self.name, brief_repr(message.topic)
                )

    def _on_node_topic(
        self, node: str, level: str, message: MQTTMessage, nursery: trio.Nursery
    ) -> None:
        own = node == self.system.node
        if level == "replies":
            if own and self._router is not None:
                self._router.on_reply(message.payload)
            return
        if level == "desired":
            if own and message.retain and message.payload:
                self._restore_desired(message.payload, nursery)
            return
        if level not in ("status", "alive"):
            return  # an inbox: served with the other requests
        payload = _json_object(message.payload)
        if payload is None:
            if level == "status" and not message.payload:
                if own:  # cleared while this node runs: say it again, with what it runs
                    self._announce_node("online")
                    self._republish()
                else:
                    self.cluster.forget(node)  # its retained status cleared: retired for good
            return
        if own:
            self._check_own(level, payload)
            return
        now, wall = trio.current_time(), time.time()
        if level == "status":
            if payload.get("status") == "offline" and payload.get("time") is None:
                # A last will: the broker lost the node's connection. A broker shutting
                # down publishes everyone's, so it counts once this node's own connection
                # is seen to outlive it (otherwise silence will tell).
                nursery.start_soon(self._after_will, node, payload)
                return
            self._apply(self.cluster.status(node, payload, now, wall))
        else:
            boot = payload.get("boot")
            self._apply(self.cluster.beat(node, boot if isinstance(boot, str) else None, now, wall))

    async def _after_will(self, node: str, payload: dict[str, Any]) -> None:
        connects = self.connection.statistics().connects
        await trio.sleep(_WILL_GRACE_S)
        if self.connection.connected and self.connection.statistics().connects == connects:
            self._apply(self.cluster.status(node, payload, trio.current_time(), time.time()))

    def _check_own(self, level: str, payload: dict[str, Any]) -> None:
        """Our own status or heartbeat, as the broker has it: heal a stale last will, and
        say so if another process runs under this node's name."""
        boot = payload.get("boot")
        if boot == self.boot or not isinstance(boot, str):
            return
        if level == "status" and payload.get("status") == "offline":
            # The will of an earlier incarnation, published after this one said online.
            self._announce_node("online")
            return
        now = trio.current_time()
        if level == "alive" and now - self._duplicate_warned > _DUPLICATE_WARNING_S:
            self._duplicate_warned = now
            logger.error(
                "%s: another process runs as node %r on this broker (incarnation %s): give "
                "every node its own name (--node, or node: in the settings)",
                self.name,
                self.system.node,
                boot,
            )

    def _on_manifest(self, actor_id: str, message: MQTTMessage) -> None:
        if not message.payload:
            self.cluster.manifest(actor_id, None)
            return
        payload = _json_object(message.payload)
        if payload is None:
            return
        if payload.get("node") == self.system.node:
            stale = actor_id not in self._manifests and self.system.lookup(actor_id) is None
            if stale and payload.get("boot") != self.boot:
                # Left retained by an earlier incarnation of this node (killed before it
                # could clear it): nobody answers to it any more.
                self._send(self._manifest_topic(actor_id), b"", Delivery.LATEST, retain=True)
            return
        self.cluster.manifest(actor_id, payload)

    def _apply(self, changes: list[NodeChange]) -> None:
        """Carry out membership changes: fail what waits on a node gone down, tell listeners."""
        for change in changes:
            if self._router is not None:
                self._router.on_node_change(change)
            kind = EventKind.NODE_UP if change.up else EventKind.NODE_DOWN
            actors = [{"id": a.id, "name": a.name} for a in change.actors]
            self.system._events.emit(
                ActorEvent(
                    kind,
                    change.node,
                    change.node,
                    reason=change.reason,
                    node=change.node,
                    message={"boot": change.boot, "actors": actors},
                )
            )

    def _publish_desired(self) -> None:
        """Keep this node's desired set retained on the broker (an empty list when none)."""
        if self._spawner is None:
            return
        desired = {
            "node": self.system.node,
            "time": time.time(),
            "actors": self._spawner.desired_json(),
        }
        topic = node_topic(self.prefix, self.system.node, "desired")
        self._send(topic, encode_json(desired), Delivery.LATEST, retain=True)

    def _restore_desired(self, payload: bytes, nursery: trio.Nursery) -> None:
        """This node's desired set as the broker kept it: start what is not running."""
        data = _json_object(payload)
        if data is None or self._spawner is None:
            return
        to_start = self._spawner.restore(data.get("actors"))
        if to_start:
            logger.info(
                "%s: starting %d actor(s) of this node's desired set: %s",
                self.name,
                len(to_start),
                ", ".join(f"{entry.name} ({entry.kind})" for entry in to_start),
            )
            nursery.start_soon(self._start_desired, to_start)

    async def _start_desired(self, entries: list[Any]) -> None:
        assert self._spawner is not None
        await self._spawner.start_desired(entries)
        self._publish_desired()

    def _spawn_or_stop_later(self, message: dict[str, Any]) -> None:
        """A ``spawn`` or ``stop`` sent to the bridge: carried out beside its message loop
        (the other node may take a while), answered when done."""
        op = "spawn" if "spawn" in message else "stop"
        spec = message[op]
        if not isinstance(spec, dict):
            raise MessageRejected(f"{op} takes an object: {{'{op}': {{'node': N, 'name': A}}}}")
        node, name, kind = spec.get("node", self.system.node), spec.get("name"), spec.get("kind")
        if not isinstance(node, str) or not isinstance(name, str):
            raise MessageRejected(f"{op} needs the 'node' (a node's name) and the 'name' (text)")
        if op == "spawn" and not isinstance(kind, str):
            raise MessageRejected("spawn needs the 'kind' of actor to start (text)")
        workers = self._workers
        if workers is None:
            raise MessageRejected(f"{self.name} is not running yet: retry in a moment")
        later = self.reply_later()

        async def carry_out() -> None:
            try:
                if op == "spawn":
                    assert isinstance(kind, str)
                    later.answer(await self.spawn_on(node, kind, name))
                else:
                    later.answer(await self.stop_on(node, name))
            except (WactorzError, LookupError, PermissionError, ValueError) as exc:
                later.fail(exc if isinstance(exc, WactorzError) else MessageRejected(str(exc)))

        workers.start_soon(carry_out)

    # ---- inbound: requests on the inbox topics ---------------------------------------------

    def _inbox_target(self, topic: str) -> tuple[str, bool] | None:
        """``(id or name, by_name)`` for an inbox topic, else None."""
        head = f"{self.prefix}/agents/"
        if not topic.startswith(head) or not topic.endswith("/inbox"):
            return None
        levels = topic[len(head) : -len("/inbox")].split("/")
        if len(levels) == 1:
            return levels[0], False
        if len(levels) == 2 and levels[0] == "by-name":
            return levels[1], True
        return None

    async def _serve_requests(
        self, stream: trio.MemoryReceiveChannel[MQTTMessage], nursery: trio.Nursery
    ) -> None:
        """Carry out the inbox requests, one at a time, as fast as their answers go out.

        Before each request it waits for room in the connection's outbox, so that a
        flood of requests is slowed down (the lossless stream then fills up, and the
        broker holds the rest back) instead of answers being dropped.
        """
        conn = self.connection
        node_inbox = node_topic(self.prefix, self.system.node, "inbox")
        async for message in stream:
            from_node = message.topic == node_inbox
            target = None if from_node else self._inbox_target(message.topic)
            if target is None and not from_node:
                continue
            self._counters.requests += 1
            if message.retain:
                self._ignore_retained(message)
                continue
            if not conn.has_room:
                await conn.wait_for_room()
            try:
                if target is None:
                    await self._serve_node_request(message.payload)
                else:
                    self._handle_request(message.topic, message.payload, *target, nursery)
            except Exception:
                self._counters.errors += 1
                logger.exception(
                    "%s: handling a request on %s failed", self.name, brief_repr(message.topic)
                )

    def _ignore_retained(self, message: MQTTMessage) -> None:
        self._counters.retained_ignored += 1
        logger.warning(
            "%s: ignoring a retained message on %s: requests are carried out when they are "
            "published, never replayed from the broker; clear it with an empty retained "
            "message (mosquitto_pub -r -n -t <topic>)",
            self.name,
            brief_repr(message.topic),
        )

    async def _serve_node_request(self, payload: bytes) -> None:
        """A request from another node on this node's inbox: the router carries it out."""
        router = self._running_router()
        try:
            request = parse_node_request(payload, self.config.max_payload_bytes)
        except RequestRefused as exc:
            self._counters.errors += 1
            router.refuse(exc)
            return
        await router.serve(request)

    def _handle_request(
        self, topic: str, payload: bytes, target: str, by_name: bool, nursery: trio.Nursery
    ) -> None:
        """Carry out one request without waiting: a tell now, an ask in its own task.

        Only the node responsible for the target takes the request (see `_resolve`): the
        others read nothing of it, so that a client gets one answer, not one per node.
        """
        refusal: RequestRefused | None = None
        try:
            actor_id = self._resolve(target, by_name)
        except RequestRefused as exc:
            refusal, actor_id = exc, ""
        if actor_id is None:
            return
        request: Request | None = None
        try:
            request = parse_request(payload, self.config.max_payload_bytes, self.reply_prefix)
            if refusal is not None:
                raise refusal
            if request.id is not None and self._is_repeated(request):
                return
            if request.reply_to is None:
                try:
                    self.send_nowait(actor_id, request.message)
                except WactorzError as exc:
                    raise _refusal(exc, None, None) from None
                return
            borrower = object()
            try:
                self._asks.acquire_on_behalf_of_nowait(borrower)
            except trio.WouldBlock:
                raise RequestRefused(
                    "busy",
                    f"{MAX_ASKS_IN_FLIGHT} requests are already waiting for answers; retry later",
                ) from None
            nursery.start_soon(self._ask, actor_id, request, borrower)
        except RequestRefused as exc:
            if request is not None:
                exc.reply_to, exc.correlation_id = request.reply_to, request.correlation_id
            self._refuse(topic, exc)

    def _resolve(self, target: str, by_name: bool) -> str | None:
        """The id of the local actor an inbox request is for; None if another node is to
        take it; `RequestRefused` if this node is to answer that it cannot be reached.

        Every node on the broker reads the inbox topics. The node that runs the actor
        takes the request (``name@node``: that node alone); for an unqualified name, only
        when no other node runs one too. Otherwise the first node by name among those up
        answers for all of them: ``ambiguous`` (several run it), ``not_found`` (none does,
        or no node has that name) or ``node_down`` (the node named is down).
        """
        node = self.system.node
        qualified = False
        if by_name:
            name, at = parse_address(target)
            if at is not None and at != node:
                if self.cluster.is_up(at):
                    return None  # that node answers
                if min([node, *self.cluster.up_nodes()]) != node:
                    return None  # the first node up answers for all
                try:
                    self.cluster.resolve(target)
                except NodeDown as exc:
                    raise RequestRefused("node_down", str(exc)) from None
                except ActorNotFound as exc:
                    raise RequestRefused("not_found", str(exc)) from None
                raise RequestRefused("not_found", str(ActorNotFound(target)))
            if at is not None:
                target, qualified = name, True
        actor = self.system.lookup(target)
        if actor is not None and (actor.name if by_name else actor.id) != target:
            actor = None
        holders = [] if qualified else self.cluster.holders(target)
        if actor is not None and not holders:
            self._check_allowed(actor)
            return actor.id
        if not qualified:
            if actor is None and len(holders) == 1:
                return None
            if min([node, *self.cluster.up_nodes()]) != node:
                return None
        if actor is not None or holders:
            candidates = [format_address(target, n) for n in holders]
            if actor is not None:
                candidates.append(format_address(target, node))
            raise RequestRefused("ambiguous", str(AmbiguousName(target, candidates)))
        if by_name:
            names = sorted(a.name for a in self.system.actors())
            known = [*names, *self.cluster.remote_names()]
            raise RequestRefused("not_found", str(ActorNotFound(target, known)))
        raise RequestRefused(
            "not_found",
            f"no actor with id {target!r} on any node; to address an actor by name, "
            f"publish to {self.prefix}/agents/by-name/<name>/inbox",
        )

    def _check_allowed(self, actor: Actor) -> None:
        if not any(fnmatch.fnmatchcase(actor.name, p) for p in self.config.remote_allow):
            raise RequestRefused(
                "forbidden",
                f"node {self.system.node!r} does not take requests for {actor.name!r} from the "
                "broker (its mqtt.remote_allow)",
            )

    def _is_repeated(self, request: Request) -> bool:
        """Whether a request with an ``id`` was taken before: its answer, if any, goes out
        again (to this request's ``reply_to``) and it is not carried out a second time."""
        key = f"client:{request.id}"
        if key not in self._seen:
            self._seen.take(key)
            return False
        answer = self._seen.answer_of(key)
        if answer is not None and request.reply_to is not None:
            self._send(request.reply_to, answer, Delivery.QUEUED)
        logger.info("%s: request %r was taken before: not carried out again", self.name, request.id)
        return True

    async def _ask(self, actor_id: str, request: Request, borrower: object) -> None:
        """Ask the actor, and publish its answer or the error to ``reply_to``.

        Whatever goes wrong ends in an error reply: this task must never fail, since
        it runs in the bridge's own nursery.
        """
        assert request.reply_to is not None
        reply_to, correlation_id = request.reply_to, request.correlation_id
        try:
            try:
                answer = await self._relay_ask(actor_id, request.message)
                payload = encode_json({"reply": answer, "correlation_id": correlation_id})
            except WactorzError as exc:
                raise _refusal(exc, reply_to, correlation_id) from None
            except (TypeError, ValueError) as exc:
                raise RequestRefused(
                    "bad_reply",
                    f"the actor's answer cannot be sent as JSON ({exc})",
                    reply_to,
                    correlation_id,
                ) from None
            if request.id is not None:
                self._seen.answered(f"client:{request.id}", payload)
            if self._send(reply_to, payload, Delivery.QUEUED):
                self._counters.replies += 1
        except RequestRefused as exc:
            self._refuse(f"{self.prefix}/agents/{actor_id}/inbox", exc)
        except Exception:
            logger.exception("%s: an ask to %s failed", self.name, actor_id)
            self._refuse(
                f"{self.prefix}/agents/{actor_id}/inbox",
                RequestRefused(
                    "internal_error",
                    "the bridge failed while handling the request; the node's log has the cause",
                    reply_to,
                    correlation_id,
                ),
            )
        finally:
            self._asks.release_on_behalf_of(borrower)

    async def _relay_ask(self, actor_id: str, message: dict[str, Any]) -> object:
        """Ask on the broker client's behalf: the actor sees the bridge as the sender.

        A request to the bridge itself is answered by its own message loop (this runs
        beside it), through the system, since an actor may not ask itself.
        """
        timeout = self.config.ask_timeout_s
        if actor_id == self.id:
            return await self.system.ask(actor_id, message, timeout=timeout)
        return await self.ask(actor_id, message, timeout=timeout)

    def _refuse(self, topic: str, exc: RequestRefused) -> None:
        """Count, log and (if it says where) answer a request that failed."""
        self._counters.errors += 1
        where = f"; the error went to {exc.reply_to!r}" if exc.reply_to else ""
        logger.warning(
            "%s: request on %s refused (%s): %s%s",
            self.name,
            brief_repr(topic),
            exc.code,
            exc,
            where,
        )
        if exc.reply_to is not None:
            self._send(exc.reply_to, exc.payload(), Delivery.QUEUED)

    # ---- inbound: mirrored topics ---------------------------------------------------------

    async def _serve_mirrored(self, stream: trio.MemoryReceiveChannel[MQTTMessage]) -> None:
        head = f"{self.prefix}/"
        async for message in stream:
            if not message.topic.startswith(head):
                continue
            topic = message.topic[len(head) :]
            if not any(topic_matches(f, topic) for f in self.mirror_topics):
                continue
            if self._echoes.is_echo(message.topic, message.payload):
                self._counters.echoes_suppressed += 1
                continue
            await self._mirror_in(topic, message)

    async def _mirror_in(self, topic: str, message: MQTTMessage) -> None:
        """Publish a broker message locally; waits while a subscriber's mailbox is full."""
        limit = self.config.max_payload_bytes
        problem = None
        if not message.payload:
            return  # a retained message being cleared: there is nothing to deliver
        if len(message.payload) > limit:
            problem = f"it is {len(message.payload)} bytes, over mqtt.max_payload_bytes={limit}"
        else:
            try:
                data = json.loads(message.payload)
            except (UnicodeDecodeError, ValueError, RecursionError):
                problem = "it is not JSON"
            else:
                if isinstance(data, dict):
                    try:
                        await self.publish(topic, data)
                    except (InvalidMessage, ValueError) as exc:
                        problem = str(exc)
                    else:
                        self._counters.mirrored_in += 1
                        return
                else:
                    problem = f"it is a JSON {json_kind(data)}, not an object"
        self._counters.errors += 1
        logger.warning(
            "%s: not delivering the message on mirrored topic %r locally: %s "
            "(local messages are JSON objects)",
            self.name,
            message.topic,
            problem,
        )


def _json_object(payload: bytes) -> dict[str, Any] | None:
    """``payload`` as a JSON object, or None if it is not one (never raises)."""
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _refusal(exc: WactorzError, reply_to: str | None, correlation_id: object) -> RequestRefused:
    """The error reply for a runtime error: its code, and a sentence for an outside client.

    Only sentences written for the sender go out: an actor's own `MessageRejected`
    text, and the runtime's descriptions of what happened. What an actor raised when
    it crashed stays in the node's log, where the crash is reported with its traceback.
    """
    code = error_code(exc)
    if isinstance(exc, MessageRejected):
        text = exc.reason
    elif isinstance(exc, ActorCrashed):
        text = (
            f"actor {exc.target!r} crashed while handling the request; the node's log has the cause"
        )
    elif isinstance(exc, AskTimeout):
        text = f"actor {exc.target!r} did not answer within {exc.timeout:g} s (mqtt.ask_timeout_s)"
    else:
        text = str(exc)
    return RequestRefused(code, text, reply_to, correlation_id)

"""``wactorz nodes``: every node on the broker and the actors it runs, read from the broker.

It needs no running node: it connects to the broker named by the MQTT settings (with their
credentials and TLS), reads what the nodes leave retained there — each node's status, its
actors' manifests, its desired set — and listens ``--wait`` seconds for heartbeats, then
prints a table (or, with ``--json``, one JSON object) and disconnects.

A node is ``up`` when its retained status says ``online`` and, if a heartbeat was heard
during the wait, ``beating``; ``down`` with the reason its status gives otherwise.
``--forget NODE`` clears what a node retired for good left on the broker.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, final

import attrs
import trio

from wactorz.config import MQTTConfig
from wactorz.interfaces.mqtt.connection import MQTTConnection
from wactorz.interfaces.mqtt.node_messages import parse_topic

__all__ = [
    "EXIT_NO_BROKER",
    "NodeView",
    "StillRunning",
    "read_nodes",
    "render_nodes",
    "run_nodes_command",
]

EXIT_NO_BROKER: Final = 3
"""The exit status when the broker cannot be reached."""


@final
@attrs.define
class NodeView:
    """One node as the broker has it."""

    name: str
    status: str = "unknown"
    reason: str | None = None
    since: float | None = None
    version: str | None = None
    pid: int | None = None
    beating: bool = False
    actors: list[dict[str, str]] = attrs.field(factory=list)
    desired: list[dict[str, str]] = attrs.field(factory=list)
    spawnable: list[str] = attrs.field(factory=list)

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


class StillRunning(Exception):
    """``--forget`` named a node that is up: it would announce itself again at once."""


async def read_nodes(
    config: MQTTConfig,
    wait_s: float,
    connect_timeout_s: float = 5.0,
    forget: str | None = None,
) -> list[NodeView]:
    """Connect, collect the retained state and ``wait_s`` seconds of heartbeats, disconnect.

    With ``forget``, then clear everything that node left retained (its status, desired
    set and actors' manifests), so that the nodes and this command stop listing it: for a
    node retired for good. Raises `ConnectionError` if the broker cannot be reached within
    ``connect_timeout_s``, `StillRunning` if the node to forget is up and beating.
    """
    prefix = config.topic_prefix
    connection = MQTTConnection(
        host=config.host,
        port=config.port,
        client_id=f"wactorz-nodes-{secrets.token_hex(4)}",
        username=config.username,
        password=config.password.reveal() if config.password is not None else None,
        tls=config.uses_tls,
        tls_ca_file=config.tls_ca_file,
        qos=1,
        protocol="3.1.1" if config.broker == "embedded" else config.protocol,
        connect_timeout_s=connect_timeout_s,
        reconnect_min_s=0.5,
        reconnect_max_s=1.0,
    )
    nodes: dict[str, NodeView] = {}
    manifests: dict[str, dict[str, Any]] = {}

    def view(name: str) -> NodeView:
        return nodes.setdefault(name, NodeView(name))

    async with trio.open_nursery() as nursery:
        await nursery.start(connection.run)  # returns after the first attempt, either way
        reached = connection.connected
        if reached:
            await _collect(connection, prefix, wait_s, view, manifests)
            if forget is not None and not _refuses_to_forget(nodes.get(forget)):
                await _forget(connection, prefix, forget, manifests)
        nursery.cancel_scope.cancel()
    if not reached:  # raised out here, not as a nursery's exception group
        raise ConnectionError(
            f"no MQTT broker answers on {config.host}:{config.port} (check mqtt.host, "
            "mqtt.port and the credentials, or that the nodes' broker runs)"
        )
    if forget is not None and _refuses_to_forget(nodes.get(forget)):
        raise StillRunning(
            f"node {forget!r} is up and beating: stop it first (it would announce itself "
            "again at once), then forget it"
        )
    if forget is not None:
        nodes.pop(forget, None)
        manifests = {i: m for i, m in manifests.items() if m.get("node") != forget}
    for actor_id, manifest in manifests.items():
        node = manifest.get("node")
        if isinstance(node, str):
            cls = manifest.get("class")
            view(node).actors.append(
                {"id": actor_id, "name": str(manifest.get("name")), "class": str(cls)}
            )
    for node in nodes.values():
        node.actors.sort(key=lambda a: a["id"])
    return sorted(nodes.values(), key=lambda n: n.name)


async def _collect(
    connection: MQTTConnection,
    prefix: str,
    wait_s: float,
    view: Callable[[str], NodeView],
    manifests: dict[str, dict[str, Any]],
) -> None:
    """Subscribe, and take in what arrives for ``wait_s`` seconds."""
    async with connection.messages(max_buffer_size=100_000) as stream:
        for level in ("status", "alive", "desired"):
            await connection.subscribe(f"{prefix}/nodes/+/{level}")
        await connection.subscribe(f"{prefix}/agents/+/manifest")
        with trio.move_on_after(wait_s):
            async for message in stream:
                data = _json(message.payload)
                if data is None:
                    continue
                where = parse_topic(prefix, message.topic)
                if where is None:
                    actor_id = message.topic[len(prefix) + len("/agents/") :].split("/")[0]
                    manifests[actor_id] = data
                    continue
                name, level = where
                _observe(view(name), level, data)


def _refuses_to_forget(node: NodeView | None) -> bool:
    return node is not None and node.status == "up" and node.beating


async def _forget(
    connection: MQTTConnection, prefix: str, node: str, manifests: Mapping[str, Any]
) -> None:
    """Clear what ``node`` left retained, and wait (up to 5 s) until the broker has it."""
    topics = [f"{prefix}/nodes/{node}/{level}" for level in ("status", "desired")]
    topics += [
        f"{prefix}/agents/{actor_id}/manifest"
        for actor_id, manifest in manifests.items()
        if manifest.get("node") == node
    ]
    before = connection.statistics().published
    for topic in topics:
        connection.publish(topic, b"", retain=True)
    with trio.move_on_after(5.0):
        while True:  # the connection has no event for "sent": its counter is polled
            if connection.statistics().published >= before + len(topics):
                return
            await trio.sleep(0.01)


def _observe(node: NodeView, level: str, data: Mapping[str, Any]) -> None:
    if level == "alive":
        node.beating = True
    elif level == "desired":
        actors = data.get("actors")
        if isinstance(actors, list):
            node.desired = [a for a in actors if isinstance(a, dict)]
    elif level == "status":
        status = data.get("status")
        node.status = "up" if status == "online" else "down" if status == "offline" else "unknown"
        reason = data.get("reason")
        node.reason = reason if isinstance(reason, str) else None
        since = data.get("time")
        node.since = float(since) if isinstance(since, int | float) else None
        version = data.get("version")
        node.version = version if isinstance(version, str) else None
        pid = data.get("pid")
        node.pid = pid if isinstance(pid, int) else None
        spawnable = data.get("spawnable")
        if isinstance(spawnable, list):
            node.spawnable = [k for k in spawnable if isinstance(k, str)]


def render_nodes(nodes: list[NodeView]) -> list[str]:
    """The table ``wactorz nodes`` prints: one line per node, its actors indented below."""
    if not nodes:
        return ["no node has announced itself on this broker under this topic prefix"]
    lines = []
    for node in nodes:
        since = (
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(node.since))
            if node.since is not None
            else "?"
        )
        state = node.status
        if node.status == "up":
            state += ", beating" if node.beating else ", no heartbeat heard"
        elif node.reason:
            state += f" ({node.reason})"
        extra = f", pid {node.pid}" if node.pid is not None else ""
        extra += f", wactorz {node.version}" if node.version else ""
        lines.append(f"{node.name}: {state} since {since}{extra}")
        names = ", ".join(a["name"] for a in node.actors) or "none"
        lines.append(f"  actors:    {names}")
        if node.desired:
            desired = ", ".join(f"{d.get('name')} ({d.get('kind')})" for d in node.desired)
            lines.append(f"  desired:   {desired}")
        if node.spawnable:
            lines.append(f"  spawnable: {', '.join(node.spawnable)}")
    return lines


def run_nodes_command(
    config: MQTTConfig, wait_s: float, as_json: bool, forget: str | None = None
) -> int:
    """``wactorz nodes``: print the nodes (after forgetting ``forget``, if given); exit
    status 0, `EXIT_NO_BROKER`, or 1 when the node to forget is still running."""
    try:
        nodes = trio.run(read_nodes, config, wait_s, 5.0, forget)
    except ConnectionError as exc:
        print(f"wactorz nodes: {exc}", file=sys.stderr)
        return EXIT_NO_BROKER
    except StillRunning as exc:
        print(f"wactorz nodes: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps({"nodes": [node.to_json() for node in nodes]}, indent=2))
    else:
        for line in render_nodes(nodes):
            print(line)
    return 0

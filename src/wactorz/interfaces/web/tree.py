"""The actor tree as the dashboard sees it: one snapshot, then numbered deltas.

`TreeTracker` keeps the last state it published: one JSON object per supervisor and per
actor (`actor_node`), keyed by id. `TreeTracker.advance` looks at the system again and
returns what changed as a delta (nodes added or changed whole, ids removed) with the next
sequence number, or None when nothing did. `TreeTracker.snapshot` is the last published
state with its sequence number: a snapshot numbered ``n`` followed by the deltas
``n + 1``, ``n + 2``... is the live tree, and a client that sees a gap asks for a
snapshot again.

The other nodes the system knows through its MQTT bridge (`ActorSystem.nodes`) appear as
``node`` entries, each the parent of its actors (``remote`` true, without mailbox figures).

A tracker exists only while someone subscribes to the tree: it costs nothing otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from typing import Any, final

import trio

from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem

__all__ = ["TreeTracker"]


def _class_name(actor: Actor) -> str:
    cls = type(actor)
    return f"{cls.__module__}.{cls.__qualname__}"


@final
class TreeTracker:
    """Publishes the supervision tree of ``system`` as a snapshot and deltas.

    ``telemetry`` maps actor ids to the latest numbers the health monitor published for
    them (shown as each actor's ``heartbeat``); ``last_errors`` maps actor ids to their
    latest crash (``"Type: message"``). Both are read, never changed. ``seq`` continues
    from ``first_seq``. ``classes``, when given, is told each running actor's class by name
    (what the details panel describes once the actor has stopped).
    """

    def __init__(
        self,
        system: ActorSystem,
        telemetry: Mapping[str, Mapping[str, Any]],
        last_errors: Mapping[str, str],
        first_seq: int = 0,
        classes: MutableMapping[str, type[Actor]] | None = None,
    ) -> None:
        self.system = system
        self.seq = first_seq
        self._telemetry = telemetry
        self._last_errors = last_errors
        self._classes = classes
        self._nodes: dict[str, dict[str, Any]] = {}
        self._processed: dict[str, tuple[int, float]] = {}
        """Actor id → (processed, when) at the last tick, for the rates."""
        self._rates: dict[str, float | None] = {}
        self._nodes = self._look(tick=True)

    def snapshot(self) -> dict[str, Any]:
        """The ``snapshot`` frame: every node as last published, with `seq`."""
        return {
            "type": "snapshot",
            "seq": self.seq,
            "time": time.time(),
            "node": self.system.node,
            "actors": list(self._nodes.values()),
        }

    def advance(self, *, tick: bool) -> dict[str, Any] | None:
        """Look again; the ``delta`` frame of what changed (the next `seq`), or None.

        ``tick`` also recomputes the message rates (once a period, not on every event).
        """
        nodes = self._look(tick=tick)
        upsert = [node for key, node in nodes.items() if self._nodes.get(key) != node]
        remove = [key for key in self._nodes if key not in nodes]
        self._nodes = nodes
        if not upsert and not remove:
            return None
        self.seq += 1
        return {
            "type": "delta",
            "seq": self.seq,
            "time": time.time(),
            "upsert": upsert,
            "remove": remove,
        }

    def _look(self, *, tick: bool) -> dict[str, dict[str, Any]]:
        system = self.system
        parents: dict[str, str] = {}
        restart_types: dict[str, str] = {}
        nodes: dict[str, dict[str, Any]] = {}
        absent: list[tuple[str, str, str, str]] = []  # id, name, status, parent of stopped ones
        for supervisor in system.supervisors():
            children = supervisor.which_children()
            nodes[supervisor.id] = {
                "id": supervisor.id,
                "name": supervisor.name,
                "kind": "supervisor",
                "parent": None,
                "state": "running" if supervisor.running else "stopped",
                "strategy": str(supervisor.strategy),
                "children": [child.id for child in children if child.id is not None],
            }
            for child in children:
                if child.id is None:
                    continue
                parents[child.id] = supervisor.id
                restart_types[child.id] = str(child.restart)
                if not child.running and child.kind == "worker":
                    absent.append((child.id, child.name, str(child.status), supervisor.id))
        for node in nodes.values():
            node["parent"] = parents.get(node["id"])
        now = trio.current_time()
        classes = self._classes
        for actor in system.actors():
            stats = actor.statistics()
            if classes is not None:
                classes[actor.name] = type(actor)
            if tick:
                self._rates[actor.id] = self._rate(actor.id, stats.processed, now)
            nodes[actor.id] = {
                "id": actor.id,
                "name": actor.name,
                "kind": "actor",
                "parent": parents.get(actor.id),
                "state": str(stats.state),
                "class": _class_name(actor),
                "restart": restart_types.get(actor.id),
                "queued": stats.queued,
                "capacity": stats.capacity,
                "processed": stats.processed,
                "rate": self._rates.get(actor.id),
                "restarts": stats.incarnation,
                "crashes": stats.crashes,
                "last_error": self._last_errors.get(actor.id),
                "heartbeat": self._heartbeat(actor.id),
            }
        for actor_id, name, status, parent in absent:
            if actor_id in nodes:
                continue
            before = self._nodes.get(actor_id)
            node = (
                dict(before)
                if before is not None
                else {
                    "id": actor_id,
                    "name": name,
                    "kind": "actor",
                    "parent": parent,
                    "class": None,
                    "restart": restart_types.get(actor_id),
                    "queued": 0,
                    "capacity": 0,
                    "processed": 0,
                    "rate": None,
                    "restarts": 0,
                    "crashes": 0,
                    "heartbeat": None,
                }
            )
            node["state"] = status
            node["rate"] = None
            node["last_error"] = self._last_errors.get(actor_id)
            nodes[actor_id] = node
        self._look_at_other_nodes(nodes)
        if tick:
            for gone in self._processed.keys() - nodes.keys():
                del self._processed[gone]
                self._rates.pop(gone, None)
        return nodes

    def _look_at_other_nodes(self, nodes: dict[str, dict[str, Any]]) -> None:
        """The other nodes the system knows (through its MQTT bridge), each with its actors:
        a ``node`` entry (``node:<name>``), parent of ``actor`` entries marked ``remote``."""
        for info in self.system.nodes()[1:]:
            node_id = f"node:{info.name}"
            up = info.status == "up"
            nodes[node_id] = {
                "id": node_id,
                "name": info.name,
                "kind": "node",
                "parent": None,
                "state": info.status,
                "reason": info.reason,
                "since": info.since,
                "children": [actor.id for actor in info.actors],
            }
            for actor in info.actors:
                nodes[actor.id] = {
                    "id": actor.id,
                    "name": actor.name,
                    "kind": "actor",
                    "parent": node_id,
                    "state": "running" if up else "unreachable",
                    "class": actor.class_name or None,
                    "node": info.name,
                    "remote": True,
                    "restart": None,
                    "queued": None,
                    "capacity": None,
                    "processed": None,
                    "rate": None,
                    "restarts": None,
                    "crashes": None,
                    "last_error": None,
                    "heartbeat": None,
                }

    def _rate(self, actor_id: str, processed: int, now: float) -> float | None:
        before = self._processed.get(actor_id)
        self._processed[actor_id] = (processed, now)
        if before is None or now <= before[1]:
            return None
        return round((processed - before[0]) / (now - before[1]), 2)

    def _heartbeat(self, actor_id: str) -> dict[str, Any] | None:
        seen = self._telemetry.get(actor_id)
        return dict(seen) if seen is not None else None

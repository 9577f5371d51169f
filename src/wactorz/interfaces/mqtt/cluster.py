"""Membership and the directory: which nodes are up, and which actors run where.

`Cluster` is what one node knows of the others, built from what they publish: their
retained status (``online``, or ``offline`` from a goodbye or their last will), their
heartbeats, and the retained manifests of their actors. It is pure: each observation is
a method call with the time it happened, returning the `NodeChange` transitions it
caused, and nothing here touches the network or an actor system, so that the rules can be
read and tested on their own (the bridge carries the changes out: events, failed asks).

The rules:

- a node is *up* from its ``online`` status or any heartbeat, and *down* from its
  ``offline`` status, or once it has been silent (no heartbeat, no status) for
  ``down_after_s`` — or 2.5 of its own heartbeat intervals, if it beats more slowly;
- a status or heartbeat carrying a new ``boot`` (a restarted process) is the old
  incarnation going down and a new one coming up; an ``offline`` carrying an old boot (a
  last will the broker published late) is ignored;
- while this node is cut off from the broker, the others fall silent and go down one by
  one, with the reason saying so, and come back up as their heartbeats resume;
- an actor is known from its retained manifest until that is cleared; the actors of a
  node that is down stay known, as out of reach.

`Cluster.resolve` applies the addressing rules of `wactorz.core.remote` to what is known.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Final, final

import attrs

from wactorz.core.actor import check_name
from wactorz.core.errors import ActorNotFound, AmbiguousName, NodeDown
from wactorz.core.ids import is_node_name, is_wid
from wactorz.core.remote import NodeInfo, RemoteActorInfo, format_address, parse_address

__all__ = ["Cluster", "NodeChange", "Route"]

SLOW_BEAT_FACTOR: Final = 2.5
"""A node that beats every ``h`` seconds is down only after ``2.5 * h`` of silence at least."""


@final
@attrs.frozen
class NodeChange:
    """A node went up or down: what `Cluster`'s observations return, oldest first."""

    node: str
    up: bool
    reason: str | None
    boot: str | None
    actors: tuple[RemoteActorInfo, ...]


@final
@attrs.frozen
class Route:
    """Where an address leads: the node, and what to call the actor there (``target``, its
    name or id as given); ``name`` is its plain name, ``actor_id`` its id when known."""

    node: str
    target: str
    name: str
    actor_id: str | None


@attrs.define
class _Node:
    name: str
    up: bool = False
    boot: str | None = None
    last_seen: float = -math.inf
    since: float | None = None
    reason: str | None = "not announced"
    heartbeat_s: float | None = None
    spawnable: tuple[str, ...] = ()
    actors: dict[str, RemoteActorInfo] = attrs.field(factory=dict)
    boots: dict[str, str | None] = attrs.field(factory=dict)
    """Actor id → the incarnation of the node whose manifest listed it."""


def _is_actor_name(value: str) -> bool:
    """Whether ``value`` is a name an actor can have (`check_name`)."""
    try:
        check_name(value)
    except ValueError:
        return False
    return True


def _text(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def _seconds(payload: Mapping[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1e6:
        return float(value)
    return None


@final
class Cluster:
    """What this node (``local``) knows of the other nodes and their actors.

    Times: ``now`` is a monotonic clock (Trio's), used for silence; ``wall`` wall-clock Unix
    time, reported as ``since``. Observations about ``local`` itself are ignored: a node
    knows its own actors first-hand.
    """

    def __init__(self, local: str, down_after_s: float) -> None:
        self.local = local
        self.down_after_s = down_after_s
        self._nodes: dict[str, _Node] = {}
        self._where: dict[str, str] = {}
        """Actor id → the node whose manifest listed it."""

    # ---- observations ------------------------------------------------------------------------

    def status(
        self, node: str, payload: Mapping[str, Any], now: float, wall: float
    ) -> list[NodeChange]:
        """A node's (retained) status: ``{"status": "online" | "offline", "boot": ...}``."""
        if node == self.local or not is_node_name(node):
            return []
        status = payload.get("status")
        boot = _text(payload, "boot")
        known = self._node(node)
        heartbeat = _seconds(payload, "heartbeat_s")
        if heartbeat is not None:
            known.heartbeat_s = heartbeat
        spawnable = payload.get("spawnable")
        if isinstance(spawnable, list) and all(isinstance(kind, str) for kind in spawnable):
            known.spawnable = tuple(spawnable)
        if status == "online":
            return self._alive(known, boot, now, wall)
        if status != "offline":
            return []
        if boot is not None and known.boot is not None and boot != known.boot:
            return []  # the last will of an incarnation that was already replaced
        why = _text(payload, "reason") or "no reason given"
        return self._down(known, f"offline: {why}", wall)

    def beat(self, node: str, boot: str | None, now: float, wall: float) -> list[NodeChange]:
        """A heartbeat of ``node``'s incarnation ``boot``."""
        if node == self.local or not is_node_name(node):
            return []
        return self._alive(self._node(node), boot, now, wall)

    def manifest(self, actor_id: str, payload: Mapping[str, Any] | None) -> None:
        """An actor's retained manifest, or None when it was cleared (the actor is gone)."""
        if payload is None:
            node = self._where.pop(actor_id, None)
            if node is not None and node in self._nodes:
                self._nodes[node].actors.pop(actor_id, None)
                self._nodes[node].boots.pop(actor_id, None)
            return
        node = _text(payload, "node")
        name = _text(payload, "name")
        if node is None or name is None or node == self.local or not is_node_name(node):
            return
        if not _is_actor_name(name):
            return  # no node publishes such a manifest: someone else wrote it
        capabilities = payload.get("capabilities")
        info = RemoteActorInfo(
            actor_id,
            name,
            node,
            _text(payload, "class") or "",
            tuple(c for c in capabilities if isinstance(c, str))
            if isinstance(capabilities, list)
            else (),
        )
        previous = self._where.get(actor_id)
        if previous is not None and previous != node and previous in self._nodes:
            self._nodes[previous].actors.pop(actor_id, None)
        boot = _text(payload, "boot")
        known = self._node(node)
        self._where[actor_id] = node
        known.actors[actor_id] = info
        known.boots[actor_id] = boot

    def check(self, now: float, wall: float, *, connected: bool = True) -> list[NodeChange]:
        """Mark down the nodes silent for too long; ``connected`` False says this node is cut
        off from the broker (which is then the reason given)."""
        changes = []
        for node in self._nodes.values():
            if not node.up:
                continue
            silent = now - node.last_seen
            limit = self.down_after_s
            if node.heartbeat_s is not None:
                limit = max(limit, SLOW_BEAT_FACTOR * node.heartbeat_s)
            if silent > limit:
                why = f"silent for {silent:.1f} s"
                if not connected:
                    why += ": this node lost the broker"
                changes += self._down(node, why, wall)
        return changes

    def forget(self, node: str) -> None:
        """Drop ``node`` and its actors from the directory (a node retired for good)."""
        gone = self._nodes.pop(node, None)
        if gone is not None:
            for actor_id in gone.actors:
                self._where.pop(actor_id, None)

    # ---- what is known -----------------------------------------------------------------------

    def is_up(self, node: str) -> bool:
        known = self._nodes.get(node)
        return known is not None and known.up

    def boot_of(self, node: str) -> str | None:
        known = self._nodes.get(node)
        return known.boot if known is not None else None

    def up_nodes(self) -> list[str]:
        """The names of the nodes that are up, sorted."""
        return sorted(name for name, node in self._nodes.items() if node.up)

    def holders(self, name_or_id: str) -> list[str]:
        """The nodes that are up and run an actor with this name or id, sorted."""
        return sorted(
            node.name
            for node in self._nodes.values()
            if node.up and any(name_or_id in (a.id, a.name) for a in self._current(node))
        )

    def actors_of(self, node: str) -> tuple[RemoteActorInfo, ...]:
        """The actors of ``node``'s current incarnation (and of none known), oldest first."""
        known = self._nodes.get(node)
        if known is None:
            return ()
        return tuple(sorted(self._current(known), key=lambda a: a.id))

    def remote_names(self) -> list[str]:
        """``name@node`` of every actor on a node that is up."""
        return sorted({a.address for a in self._reachable()})

    def nodes(self) -> list[NodeInfo]:
        """Every other node known, by name."""
        return [
            NodeInfo(
                node.name,
                "up" if node.up else "down",
                since=node.since,
                reason=None if node.up else node.reason,
                actors=self.actors_of(node.name),
                spawnable=node.spawnable,
            )
            for node in sorted(self._nodes.values(), key=lambda n: n.name)
        ]

    def resolve(self, to: str) -> Route | None:
        """Where the remote address ``to`` leads, or None if it names no remote actor.

        ``name@node`` leads to ``node``; an actor id to the node whose manifest lists it;
        an unqualified name to the one node that is up and runs an actor of that name.
        Raises `ActorNotFound` for an unknown node, or a name its node does not run;
        `AmbiguousName` for a name on several nodes that are up; `NodeDown` when the
        only nodes that run it are down.
        """
        name, node = parse_address(to)
        if node is not None:
            known = self._nodes.get(node)
            if known is None:
                raise ActorNotFound(to, self._nodes, unknown_node=node)
            newest = self._newest(known, name)
            if newest is None and known.up:
                names = (a.address for a in self._current(known))
                raise ActorNotFound(to, names)
            if not known.up:
                raise NodeDown(node, to, known.reason)
            assert newest is not None
            return Route(node, name, name, newest.id)
        if is_wid(to):
            where = self._where.get(to)
            if where is None:
                return None
            known = self._nodes[where]
            if not known.up:
                raise NodeDown(where, to, known.reason)
            if all(a.id != to for a in self._current(known)):
                return None  # an earlier incarnation's actor: gone
            return Route(where, to, known.actors[to].name, to)
        holders = [node for node in self._nodes.values() if self._newest(node, to) is not None]
        up = [node for node in holders if node.up]
        if len(up) > 1:
            raise AmbiguousName(to, (format_address(to, node.name) for node in up))
        if up:
            newest = self._newest(up[0], to)
            assert newest is not None
            return Route(up[0].name, to, to, newest.id)
        if holders:
            first = min(holders, key=lambda n: n.name)
            raise NodeDown(first.name, format_address(to, first.name), first.reason)
        return None

    # ---- the transitions ---------------------------------------------------------------------

    def _node(self, name: str) -> _Node:
        node = self._nodes.get(name)
        if node is None:
            node = self._nodes[name] = _Node(name)
        return node

    def _alive(self, node: _Node, boot: str | None, now: float, wall: float) -> list[NodeChange]:
        changes = []
        if boot is not None and boot != node.boot:
            if node.up and node.boot is not None:
                changes += self._down(node, "restarted", wall)
            self._drop_actors(node, boot)
            node.boot = boot
        node.last_seen = max(node.last_seen, now)
        if not node.up:
            node.up, node.since, node.reason = True, wall, None
            changes.append(NodeChange(node.name, True, None, node.boot, self.actors_of(node.name)))
        return changes

    def _down(self, node: _Node, reason: str, wall: float) -> list[NodeChange]:
        if not node.up:
            node.reason = node.reason if node.reason != "not announced" else reason
            return []
        node.up, node.since, node.reason = False, wall, reason
        return [NodeChange(node.name, False, reason, node.boot, self.actors_of(node.name))]

    def _drop_actors(self, node: _Node, boot: str) -> None:
        """Forget the actors of ``node``'s incarnations other than ``boot``: a restarted
        node's old manifests are stale (it clears them itself, a moment later)."""
        for actor_id, seen in list(node.boots.items()):
            if seen is not None and seen != boot:
                self._where.pop(actor_id, None)
                del node.actors[actor_id], node.boots[actor_id]

    def _current(self, node: _Node) -> Iterator[RemoteActorInfo]:
        """The actors of the node's current incarnation: a restarted node's stale manifests
        may linger until it clears them, and a new one's may come before its status."""
        for actor_id, info in node.actors.items():
            boot = node.boots.get(actor_id)
            if boot is None or node.boot is None or boot == node.boot:
                yield info

    def _newest(self, node: _Node, name: str) -> RemoteActorInfo | None:
        """The newest actor named ``name`` on ``node`` (ids sort by time)."""
        found = [a for a in self._current(node) if a.name == name]
        return max(found, key=lambda a: a.id) if found else None

    def _reachable(self) -> Iterator[RemoteActorInfo]:
        for node in self._nodes.values():
            if node.up:
                yield from self._current(node)

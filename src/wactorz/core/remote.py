"""Actors on other nodes: how an address names one, and the router that reaches it.

An address is what `ActorSystem.send` and `ActorSystem.ask` take as ``to``:

- ``name`` — an actor's name: the local actor of that name if there is one, else the one
  actor of that name on another node (two or more are `AmbiguousName`);
- ``name@node`` — the actor ``name`` on ``node`` (this node's own name included);
- an actor id (a WID, which ends in the actor's name) — that actor, wherever it runs.

The system resolves local addresses itself, on its fast path. Only an address it does not
find locally reaches a `RemoteRouter`, which an interface that links nodes (the MQTT bridge,
`wactorz.interfaces.mqtt`) attaches with `ActorSystem.attach_router`: the local path costs
nothing more for it. The router answers with a stand-in actor whose mailbox leads to the
other node, so that sends, asks, timeouts and backpressure work on remote actors exactly as
on local ones; or it raises the error that explains why the address cannot be reached
(`ActorNotFound`, `AmbiguousName`, `NodeDown`).

`NodeInfo` and `RemoteActorInfo` are what `ActorSystem.nodes` reports: every node the system
knows of, up or down, and the actors each one runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, final

import attrs
import trio

from wactorz.core.actor import Actor
from wactorz.core.mailbox import DEFAULT_MAILBOX_SIZE, Mail, Mailbox

if TYPE_CHECKING:
    from wactorz.core.registry import ActorSystem

__all__ = [
    "NodeInfo",
    "NodeStatus",
    "RemoteActor",
    "RemoteActorInfo",
    "RemoteRouter",
    "format_address",
    "parse_address",
]

NodeStatus: TypeAlias = Literal["up", "down"]
"""Whether a node is reachable: ``up`` (it announced itself and keeps beating) or ``down``."""


def parse_address(to: str) -> tuple[str, str | None]:
    """Split an address into ``(name or id, node)``; ``node`` is None when unqualified.

    ``"echo@kitchen"`` gives ``("echo", "kitchen")``, ``"echo"`` gives ``("echo", None)``.
    Actor names and node names never contain ``@``, so the split is unambiguous; what is
    not a valid name is left for the lookup to refuse.
    """
    name, at, node = to.rpartition("@")
    if not at:
        return to, None
    return name, node


def format_address(name: str, node: str) -> str:
    """``name@node``: the address of the actor ``name`` on ``node``."""
    return f"{name}@{node}"


@final
@attrs.frozen
class RemoteActorInfo:
    """One actor as a node reports it: its id, name and class (``module.Qualname``)."""

    id: str
    name: str
    node: str
    class_name: str = ""
    capabilities: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """``name@node``, the address that reaches it from any node."""
        return format_address(self.name, self.node)


@final
@attrs.frozen
class NodeInfo:
    """A node of the actor system as this node sees it (`ActorSystem.nodes`).

    ``local`` is True for this node itself. ``status`` is ``up`` or ``down``; ``since`` the
    wall-clock Unix time it became so (None when not known); ``reason`` why it is down
    (``"offline: stopped"``, ``"silent for 6.0 s"``, ...). ``actors`` are the actors it
    runs (for a node that is down, those it ran: none of them can be reached).
    ``spawnable`` lists the kinds of actor it lets other nodes start there.
    """

    name: str
    status: NodeStatus
    local: bool = False
    since: float | None = None
    reason: str | None = None
    actors: tuple[RemoteActorInfo, ...] = ()
    spawnable: tuple[str, ...] = ()


class RemoteActor(Actor):
    """A stand-in for an actor on another node, made by a `RemoteRouter`; it never runs.

    Its ``name`` is the address ``name@node`` (what errors and timeouts name) and its
    ``id`` the remote actor's when known. The system queues mail for it in its mailbox
    exactly as for a local actor — tells, asks with their reply slot, the sender — so a
    full mailbox makes senders wait and an ask's timeout works unchanged; the router
    drains `outbox` and carries each mail to the other node, answering asks through
    their reply slots when the answers come back.
    """

    def __init__(
        self,
        system: ActorSystem,
        *,
        name: str,
        node: str,
        actor_id: str | None = None,
        capacity: int = DEFAULT_MAILBOX_SIZE,
    ) -> None:
        super().__init__(system, name=name)
        self.remote_name = name
        """The actor's own name on its node."""
        self.node = node
        """The node it runs on."""
        self.name = format_address(name, node)
        if actor_id is not None:
            self.id = actor_id
        self._mailbox = Mailbox(capacity)

    @property
    def outbox(self) -> trio.MemoryReceiveChannel[Mail]:
        """The mail queued for the remote actor, in order, for the router to carry."""
        assert self._mailbox is not None
        return self._mailbox.receive_channel

    def close(self) -> list[Mail]:
        """Refuse further mail (senders waiting for room get `ActorStopped`), and return
        what was queued and not carried yet, for the router to fail or report."""
        mailbox, self._mailbox = self._mailbox, None
        return mailbox.close() if mailbox is not None else []

    async def _process(self, message: dict[str, Any]) -> object:
        raise RuntimeError(f"{self.name} stands in for a remote actor and never runs")


class RemoteRouter(Protocol):
    """What `ActorSystem.attach_router` takes: the way to actors on other nodes.

    The system consults it only for an address it did not find locally, so a router
    never slows local messaging down. It is called from the system's Trio thread and must
    not block.
    """

    def route(self, to: str) -> Actor | None:
        """A stand-in for the remote actor ``to`` addresses, or None if ``to`` names none.

        The stand-in is an `Actor` that never runs: the system queues mail in its mailbox
        as it would for a local actor, and the router carries it to the other node. Raises
        `wactorz.core.errors.NodeDown` if the actor's node is down or cannot be reached,
        `wactorz.core.errors.AmbiguousName` if an unqualified name is on several nodes,
        and `wactorz.core.errors.ActorNotFound` for a ``name@node`` its node does not run.
        """
        ...

    def remote_names(self) -> Iterable[str]:
        """The addresses (``name@node``) of the remote actors that can be reached now:
        for error messages that list what is known."""
        ...

    def nodes(self) -> Sequence[NodeInfo]:
        """Every other node known, up or down, with its actors."""
        ...

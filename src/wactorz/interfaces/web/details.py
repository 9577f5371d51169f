"""What the dashboard's details panel shows of one actor, and which actors the page may not stop.

`describe` answers the ``describe`` request (``docs/websocket.md``): an actor's class, its
capabilities, the tools it offers with their descriptions, its supervisor and restart type,
its statistics and latest crash, and, for those the page must not stop, why. The tree
feed carries what changes every second; this carries what a person looks up once.

Protected actors are those that carry the page itself (the router, the front door) or its
numbers (the monitor), plus every supervisor (the page stops and restarts actors; a
supervisor's children are stopped one by one). The page shows their controls disabled with
the reason; the MainActor refuses ``/stop`` and ``/restart`` of those it protects.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, Final

from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem
from wactorz.core.supervisor import ChildInfo, Supervisor

__all__ = ["PROTECTED", "SUPERVISOR_REASON", "describe", "protection"]

PROTECTED: Final[Mapping[str, str]] = {
    "main": "the router: chat and these controls go through it",
    "web": "the front door: this page reaches the service through it",
    "monitor": "the health monitor: this page's numbers and alerts come from it",
}
"""The actors the page does not stop or restart, by the service's names, with the reason."""

SUPERVISOR_REASON: Final = "a supervisor: stop or restart its children instead"
ROUTER_REASON: Final = "the router refuses to stop it: it carries the conversation"


def _class_name(cls: type[Actor]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def protection(system: ActorSystem, name: str, protected: Mapping[str, str]) -> str | None:
    """Why the page may not stop or restart the actor ``name`` (None: it may).

    ``protected`` maps names to reasons; the names the running MainActor protects (its
    ``protected`` attribute, when it has one) are protected too.
    """
    reason = protected.get(name)
    if reason is not None:
        return reason
    router = system.lookup("main")
    guarded = getattr(router, "protected", None)
    if isinstance(guarded, frozenset | set | tuple) and name in guarded:
        return ROUTER_REASON
    return None


def _tools(actor: Actor | None, cls: type[Actor] | None) -> list[dict[str, Any]] | None:
    if actor is not None:
        tools = actor.offered_tools()
    elif cls is not None:
        tools = cls.tools()
    else:
        return None
    return [tool.to_json() for tool in tools]


def _supervisor_of(system: ActorSystem, name: str) -> tuple[Supervisor, ChildInfo] | None:
    for supervisor in system.supervisors():
        for child in supervisor.which_children():
            if child.name == name:
                return supervisor, child
    return None


def _child_by_id(system: ActorSystem, actor_id: str) -> tuple[Supervisor, ChildInfo] | None:
    for supervisor in system.supervisors():
        for child in supervisor.which_children():
            if child.id == actor_id:
                return supervisor, child
    return None


def describe(
    system: ActorSystem,
    name_or_id: str,
    *,
    protected: Mapping[str, str],
    classes: MutableMapping[str, type[Actor]],
    last_errors: Mapping[str, str],
) -> dict[str, Any] | None:
    """The ``describe`` reply's ``actor`` for an actor or supervisor (by name or id), or None
    when there is none by that name or id.

    ``classes`` remembers each actor's class by name, so that a stopped child of a
    supervisor is still described (with the tools its class declares); ``last_errors``
    maps actor ids to their latest crash (``"Type: message"``).
    """
    for candidate in system.supervisors():
        if name_or_id in (candidate.name, candidate.id):
            return {
                "id": candidate.id,
                "name": candidate.name,
                "kind": "supervisor",
                "state": "running" if candidate.running else "stopped",
                "strategy": str(candidate.strategy),
                "children": [child.name for child in candidate.which_children()],
                "protected": SUPERVISOR_REASON,
            }
    actor = system.lookup(name_or_id)
    name = actor.name if actor is not None else name_or_id
    home = _supervisor_of(system, name)
    if actor is None and home is None:
        home = _child_by_id(system, name_or_id)
        if home is None:
            return None
        name = home[1].name
    supervisor = home[0] if home is not None else None
    child = home[1] if home is not None else None
    if actor is not None:
        classes[name] = type(actor)
    cls = type(actor) if actor is not None else classes.get(name)
    actor_id = actor.id if actor is not None else child.id if child is not None else None
    statistics = None
    if actor is not None:
        stats = actor.statistics()
        state = str(stats.state)
        statistics = {
            "queued": stats.queued,
            "capacity": stats.capacity,
            "processed": stats.processed,
            "restarts": stats.incarnation,
            "crashes": stats.crashes,
        }
    else:
        state = str(child.status) if child is not None else "stopped"
    return {
        "id": actor_id,
        "name": name,
        "kind": "actor",
        "state": state,
        "running": actor is not None,
        "class": _class_name(cls) if cls is not None else None,
        "capabilities": list(cls.capabilities) if cls is not None else None,
        "tools": _tools(actor, cls),
        "supervisor": supervisor.name if supervisor is not None else None,
        "restart": str(child.restart) if child is not None else None,
        "statistics": statistics,
        "last_error": last_errors.get(actor_id) if actor_id is not None else None,
        "protected": protection(system, name, protected),
    }

"""Starting actors by kind on request from other nodes, and the set each node should run.

A *kind* is a name for an actor class this node knows (``mqtt.kinds`` in the settings, as
``"package.module:Class"``, or given to the bridge by the program that runs it). Another
node may ask for an actor of a kind by name and nothing else: no code and no arguments
travel, and only the kinds in ``mqtt.spawn_allow`` are started on such a request.

`Spawner` starts them under a supervisor of their own, ``spawned`` (one_for_one, each
actor permanent: a crash restarts it), and keeps the *desired set*: the kinds and names
it was asked to run. The bridge publishes that set retained on
``<prefix>/nodes/<node>/desired``, so that a node that restarts reads it back from the
broker and starts them all again.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Final, final

import attrs

from wactorz.config._errors import ConfigError
from wactorz.core.actor import Actor
from wactorz.core.errors import DuplicateName, WactorzError
from wactorz.core.registry import ActorSystem
from wactorz.core.supervisor import Supervisor

__all__ = ["SPAWNED_SUPERVISOR", "Desired", "Spawner", "describe_spawned", "load_kinds"]

logger = logging.getLogger("wactorz.interfaces.mqtt.spawning")

SPAWNED_SUPERVISOR: Final = "spawned"
"""The supervisor actors started on request run under."""

_MAX_RESTARTS: Final = 10
_RESTART_WINDOW_S: Final = 60.0


def load_kinds(table: Mapping[str, str]) -> dict[str, type[Actor]]:
    """Import the actor class of each kind in ``table`` (kind → ``"package.module:Class"``).

    Raises `ConfigError` naming the kind, the path and what went wrong, for a module that
    cannot be imported or a name that is not an `Actor` subclass.
    """
    kinds: dict[str, type[Actor]] = {}
    for kind, path in table.items():
        module_name, _, qualname = path.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
            for part in qualname.split("."):
                found = getattr(found, part)
        except Exception as exc:  # any import-time failure is the configuration's to report
            raise ConfigError(
                f"mqtt.kinds.{kind}: cannot import {path!r} ({type(exc).__name__}: {exc}); "
                "check that the module is installed and the class name is right"
            ) from None
        if not (isinstance(found, type) and issubclass(found, Actor)):
            raise ConfigError(f"mqtt.kinds.{kind}: {path!r} is not an Actor subclass")
        kinds[kind] = found
    return kinds


def describe_spawned(actor: Actor, kind: str, node: str) -> dict[str, Any]:
    """What a spawn request is answered with: the actor's id, name, node, kind and class."""
    cls = type(actor)
    return {
        "id": actor.id,
        "name": actor.name,
        "node": node,
        "kind": kind,
        "class": f"{cls.__module__}.{cls.__qualname__}",
    }


@final
@attrs.frozen
class Desired:
    """One actor a node should run: its kind and its name."""

    kind: str
    name: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "name": self.name}


@final
class Spawner:
    """Starts actors of known kinds by name, and remembers which it should run.

    ``kinds`` are the kinds this node knows; ``allow`` the kinds other nodes may start
    (``*`` for all of them). `spawn` with ``remote=True`` enforces the allow-list; a
    program asking its own node (``remote=False``) may start any known kind.
    """

    def __init__(
        self, system: ActorSystem, kinds: Mapping[str, type[Actor]], allow: Iterable[str]
    ) -> None:
        self.system = system
        self.kinds: dict[str, type[Actor]] = dict(kinds)
        allowed = set(allow)
        self.allowed: frozenset[str] = frozenset(self.kinds if "*" in allowed else allowed)
        self._desired: dict[str, Desired] = {}
        """Name → what to run under that name, in the order asked."""

    @property
    def desired(self) -> list[Desired]:
        """The actors this node was asked to run, oldest request first."""
        return list(self._desired.values())

    def desired_json(self) -> list[dict[str, str]]:
        return [entry.to_json() for entry in self._desired.values()]

    def check(self, kind: str, *, remote: bool) -> type[Actor]:
        """The class of ``kind``, or raise `PermissionError` / `LookupError` saying why not."""
        actor_class = self.kinds.get(kind)
        if actor_class is None:
            known = ", ".join(sorted(self.kinds)) or "none"
            raise LookupError(
                f"node {self.system.node!r} knows no kind of actor {kind!r} (kinds: {known}); "
                "add it to that node's mqtt.kinds"
            )
        if remote and kind not in self.allowed:
            raise PermissionError(
                f"node {self.system.node!r} does not let other nodes start actors of kind "
                f"{kind!r}; add it to that node's mqtt.spawn_allow"
            )
        return actor_class

    async def spawn(self, kind: str, name: str, *, remote: bool) -> Actor:
        """Start an actor of ``kind`` named ``name`` and add it to the desired set.

        An actor of that name and kind already running is returned as it is (a request
        repeated after a lost answer starts nothing twice). Raises `PermissionError`,
        `LookupError` (see `check`), `DuplicateName` if another actor has the name, and
        `ActorStartFailed` if it fails to start.
        """
        actor_class = self.check(kind, remote=remote)
        running = self.system.lookup(name)
        if running is not None:
            # Asked again (an answer was lost), or restored by a bridge that restarted
            # while the actor kept running under the `spawned` supervisor: adopt it.
            if type(running) is actor_class and (name in self._desired or self._runs(name)):
                self._desired[name] = Desired(kind, name)
                return running
            raise DuplicateName(name)
        supervisor = await self._supervisor()
        actor = await supervisor.add_and_start(name, actor_class, restart="permanent")
        self._desired[name] = Desired(kind, name)
        assert isinstance(actor, Actor)
        return actor

    async def stop(self, name: str) -> bool:
        """Stop ``name`` if it was started by request, and drop it from the desired set;
        False if no such actor was."""
        if self._desired.pop(name, None) is None:
            return False
        supervisor = self._find_supervisor()
        if supervisor is not None and any(c.name == name for c in supervisor.which_children()):
            await supervisor.terminate_child(name)
            supervisor.delete_child(name)
        return True

    def restore(self, entries: object) -> list[Desired]:
        """Merge a desired set read back from the broker; return the entries to start.

        Entries that cannot be started here any more (an unknown kind) are dropped with a
        warning. Entries added since this node started are kept.
        """
        if not isinstance(entries, list):
            return []
        to_start = []
        for entry in entries:
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("kind"), str)
                and isinstance(entry.get("name"), str)
            ):
                continue
            desired = Desired(entry["kind"], entry["name"])
            if desired.name in self._desired:
                continue
            if desired.kind not in self.kinds:
                logger.warning(
                    "node %s was asked to run %s of kind %s, which it no longer knows: "
                    "dropped from its desired set",
                    self.system.node,
                    desired.name,
                    desired.kind,
                )
                continue
            to_start.append(desired)
        return to_start

    async def start_desired(self, entries: Iterable[Desired]) -> None:
        """Start each of ``entries`` (from `restore`), logging those that fail."""
        for entry in entries:
            try:
                await self.spawn(entry.kind, entry.name, remote=False)
            except (WactorzError, LookupError, PermissionError, ValueError) as exc:
                logger.error(  # noqa: TRY400 (a sentence is enough: the cause was logged)
                    "node %s could not start %s (kind %s) from its desired set: %s",
                    self.system.node,
                    entry.name,
                    entry.kind,
                    exc,
                )
            else:
                logger.info("started %s (kind %s) from the desired set", entry.name, entry.kind)

    def _runs(self, name: str) -> bool:
        """Whether ``name`` is a child of the `SPAWNED_SUPERVISOR`."""
        supervisor = self._find_supervisor()
        return supervisor is not None and any(
            child.name == name for child in supervisor.which_children()
        )

    def _find_supervisor(self) -> Supervisor | None:
        for supervisor in self.system.supervisors():
            if supervisor.name == SPAWNED_SUPERVISOR:
                return supervisor
        return None

    async def _supervisor(self) -> Supervisor:
        supervisor = self._find_supervisor()
        if supervisor is None or not supervisor.running:
            supervisor = Supervisor(
                self.system,
                "one_for_one",
                _MAX_RESTARTS,
                _RESTART_WINDOW_S,
                name=SPAWNED_SUPERVISOR,
            )
            await supervisor.start()
        return supervisor

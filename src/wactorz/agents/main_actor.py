"""`MainActor`: the router behind the front door. Slash commands, ``@name`` messages, chat.

Everything a person types comes here (the web interface asks the actor named ``main``):

- ``/command ...`` runs a command (``/help`` lists them; a typo gets "did you mean");
- ``@name message`` goes to the actor ``name``: as a chat turn if it is a chat agent, else
  as a message (a JSON object as typed, or ``{"text": message}``), whose answer is shown;
- anything else is a chat turn for the session's language-model agent (``llm``).

A request is ``{"chat": {"session": S, "text": T, "target": NAME_OR_NULL}, "stream_to":
WHERE, "stream_id": ID}``; ``{"cancel": ID}`` cancels the request with that stream id.
The answer is the handling agent's own (a chat turn's reply; a run's result) or, for a
command, ``{"text": what to show, ...data}``. Work for another actor is forwarded from
the router's `background`, so one slow turn never holds up the others; the agent that does
it streams straight to ``stream_to``, and is told to stop when the request is cancelled
or its asker stops waiting.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import shlex
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Final, final

import attrs
import trio

from wactorz.agents.streams import stream_target
from wactorz.core.actor import Actor, DeferredReply
from wactorz.core.errors import MessageRejected, WactorzError
from wactorz.core.registry import ActorSystem
from wactorz.core.supervisor import Supervisor
from wactorz.core.tools import tool, tool_call

__all__ = ["COMMANDS", "MAIN_NAME", "MainActor", "Spawnable"]

logger = logging.getLogger("wactorz.agents.main")

MAIN_NAME: Final = "main"
"""The name the service gives its MainActor, where the web interface sends what people type."""

COMMANDS: Final = {
    "help": "/help: this list",
    "agents": "/agents (or /tree): every supervisor and actor, and how each is doing, then "
    "the other nodes and their actors",
    "status": "/status: the node, its health, the sandbox and the language model",
    "stop": "/stop NAME: stop an actor (not restarted; one /spawn started is forgotten)",
    "restart": "/restart NAME: restart an actor",
    "run": "/run python|sh CODE: run a snippet in the sandbox, output streamed",
    "sh": "/sh COMMAND: run a shell command in the workspace, output streamed",
    "spawn": "/spawn KIND NAME [key=value ...]: start an agent of a known kind, kept "
    "(NAME@NODE: on another node, of a kind its mqtt.spawn_allow lists)",
    "delete": "/delete NAME: stop an agent /spawn started and forget it",
    "sessions": "/sessions: the language model's conversations",
    "history": "/history: this conversation so far",
    "clear": "/clear: forget this conversation",
    "cancel": "/cancel: stop what this conversation is running",
}
"""Every command, with its one-line help."""

_ALIASES: Final = {"tree": "agents", "?": "help"}

FORWARD_TIMEOUT_S: Final = 600.0
"""How long a forwarded turn or run may take before the router gives up on it."""


@final
@attrs.frozen
class Spawnable:
    """A kind of agent ``/spawn`` (and the ``spawn_agent`` tool) may start.

    ``actor`` is its class and ``kwargs`` the arguments every one gets; ``options`` are the
    ``key=value`` settings a person (or a model) may give, turned into keyword arguments by
    ``make`` (default: each passed as it is). Only kinds in the catalogue can be started,
    and only with these options: no code is ever sent to be run.
    """

    actor: type[Actor]
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    options: frozenset[str] = frozenset()
    description: str = ""
    make: Callable[[Mapping[str, str]], Mapping[str, Any]] | None = None

    def arguments(self, options: Mapping[str, str]) -> dict[str, Any]:
        """The keyword arguments of one agent of this kind with ``options``."""
        unknown = sorted(set(options) - self.options)
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise ValueError(f"unknown option {unknown[0]!r} (options: {allowed})")
        made = self.make(options) if self.make is not None else options
        return {**self.kwargs, **made}


@final
@attrs.define
class _Forwarded:
    """A request being handled by another actor on a session's behalf."""

    stream_id: str
    session: str | None
    to: str
    cancel: dict[str, Any] | None
    """What to send ``to`` to stop it (None: cancelling the forwarding ask is enough)."""
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@final
@attrs.define
class _Conversation:
    """Which conversation of the LLM agent a session is in, and when it was last used."""

    epoch: int
    last_active: float

    def llm_session(self, session: str) -> str:
        """The LLM agent's name for it: the session's id, then ``id~2``, ``id~3``..."""
        return session if self.epoch == 1 else f"{session}~{self.epoch}"


class MainActor(Actor):
    """Routes what people type: slash commands, ``@name`` messages, and chat for the LLM."""

    capabilities = ("router",)

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        llm_agent: str = "llm",
        code_agent: str = "code",
        io_agent: str = "io",
        monitor: str = "monitor",
        spawnable: Mapping[str, Spawnable] | None = None,
        protected: tuple[str, ...] = (MAIN_NAME, "web", "monitor"),
        spawned_file: str | os.PathLike[str] | None = None,
        session_idle_s: float = math.inf,
    ) -> None:
        super().__init__(system, name=name)
        self.llm_agent = llm_agent
        self.code_agent = code_agent
        self.io_agent = io_agent
        self.monitor = monitor
        self.spawnable: Mapping[str, Spawnable] = dict(spawnable or {})
        self.protected = frozenset((*protected, self.name))
        """Actors ``/stop`` and ``/restart`` refuse: stopping them would cut this conversation."""
        self.spawned_file = Path(spawned_file) if spawned_file is not None else None
        """Where what people spawned is kept, to start it again after a restart (None: not kept)."""
        self.session_idle_s = session_idle_s
        """A conversation idle this long is over: the session's next message starts a new one
        (the old one stays in the LLM agent's store, under its own id)."""
        self._spawned: dict[str, dict[str, Any]] = {}
        """What people spawned, by name: ``{"kind", "name", "options"}``, as kept in the file."""
        self._conversations: dict[str, _Conversation] = {}
        self._epochs: dict[str, tuple[int, float]] | None = None
        """The latest conversation of each session in the LLM agent's store, and when it was
        last used: read once, for sessions this incarnation has not seen yet."""
        self._forwarded: dict[str, _Forwarded] = {}
        self._nursery: trio.Nursery | None = None
        self._commands: dict[str, Callable[[str, dict[str, Any]], Awaitable[object]]] = {
            "help": self._do_help,
            "agents": self._do_agents,
            "status": self._do_status,
            "stop": self._do_stop,
            "restart": self._do_restart,
            "run": self._do_run,
            "sh": self._do_sh,
            "spawn": self._do_spawn,
            "delete": self._do_delete,
            "sessions": self._do_sessions,
            "history": self._do_history,
            "clear": self._do_clear,
            "cancel": self._do_cancel,
        }

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            # After the start: restoring adds children to the supervisor that is waiting for
            # this actor to start.
            nursery.start_soon(self._restore_spawned)
            await trio.sleep_forever()

    # ---- requests -----------------------------------------------------------------------

    async def _process(self, message: dict[str, Any]) -> object:
        if "cancel" in message:
            return await self._cancel(message["cancel"])
        chat = message.get("chat")
        if not isinstance(chat, dict) or not isinstance(chat.get("text"), str):
            raise MessageRejected(
                "send {'chat': {'session': S, 'text': T}} (with 'stream_to' and 'stream_id' "
                "to have the answer streamed), or {'cancel': STREAM_ID}"
            )
        session = chat.get("session")
        if session is not None and not isinstance(session, str):
            raise MessageRejected("chat's 'session' is a string (the conversation's id)")
        request = {
            "session": session,
            "stream_to": message.get("stream_to"),
            "stream_id": message.get("stream_id") or self.current_envelope.id,
        }
        stream_target(request["stream_to"])  # refuse a bad one now, not downstream
        text: str = chat["text"].strip()
        target = chat.get("target")
        if target:
            if not isinstance(target, str):
                raise MessageRejected("chat's 'target' is an actor's name, or null")
            await self._to_actor(target, text, request)
            return None
        if text.startswith("/"):
            return await self._command(text[1:], request)
        if text.startswith("@"):
            name, _, rest = text[1:].partition(" ")
            await self._to_actor(name, rest.strip(), request)
            return None
        if not text:
            raise MessageRejected("nothing to send: type a message, or /help")
        await self._chat(self.llm_agent, text, request)
        return None

    async def _command(self, line: str, request: dict[str, Any]) -> object:
        word, _, rest = line.partition(" ")
        word = _ALIASES.get(word.lower(), word.lower())
        handler = self._commands.get(word)
        if handler is None:
            close = difflib.get_close_matches(word, [*self._commands, *_ALIASES], n=1)
            hint = f"did you mean /{close[0]}? " if close else ""
            raise MessageRejected(f"unknown command /{word}: {hint}type /help for the list")
        return await handler(rest.strip(), request)

    # ---- forwarding ---------------------------------------------------------------------

    def _forward(
        self,
        to: str,
        message: dict[str, Any],
        request: dict[str, Any],
        *,
        cancel: dict[str, Any] | None,
        shown: Callable[[Any], object] | None = None,
    ) -> None:
        """Ask ``to`` from the background and answer this request with its answer, later.

        ``cancel`` is what stops the work at ``to``; ``shown`` turns the answer into what
        the person sees (default: the answer as it is).
        """
        if self._nursery is None:
            raise MessageRejected(f"{self.name} is not running: try again once it has started")
        stream_id = request["stream_id"]
        if stream_id in self._forwarded:
            raise MessageRejected(f"a request with stream id {stream_id!r} is running already")
        forwarded = _Forwarded(stream_id, request["session"], to, cancel)
        self._forwarded[stream_id] = forwarded
        later = self.reply_later()
        self._nursery.start_soon(self._serve_forwarded, later, forwarded, message, shown)

    async def _serve_forwarded(
        self,
        later: DeferredReply,
        forwarded: _Forwarded,
        message: dict[str, Any],
        shown: Callable[[Any], object] | None,
    ) -> None:
        try:
            with forwarded.scope:
                async with trio.open_nursery() as watching:
                    watching.start_soon(self._cancel_when_asker_gone, later, forwarded)
                    try:
                        answer = await self.ask(forwarded.to, message, timeout=FORWARD_TIMEOUT_S)
                    except WactorzError as exc:
                        later.fail(exc)
                    else:
                        later.answer(shown(answer) if shown is not None else answer)
                    watching.cancel_scope.cancel()
            if forwarded.scope.cancelled_caught and later.pending:
                later.answer({"text": "cancelled", "cancelled": True})
        finally:
            self._forwarded.pop(forwarded.stream_id, None)

    async def _cancel_when_asker_gone(self, later: DeferredReply, forwarded: _Forwarded) -> None:
        await later.wait_asker_gone()
        await self._stop_forwarded(forwarded)

    async def _stop_forwarded(self, forwarded: _Forwarded) -> None:
        """Tell the agent doing it to stop; the forwarding ask ends when the agent answers
        (with what it had), or at once if the agent takes no cancel message."""
        if forwarded.cancel is None:
            forwarded.scope.cancel()
            return
        try:
            self.send_nowait(forwarded.to, forwarded.cancel)
        except WactorzError:
            forwarded.scope.cancel()
            return
        forwarded.scope.deadline = min(forwarded.scope.deadline, trio.current_time() + 5)

    async def _cancel(self, stream_id: object) -> object:
        forwarded = self._forwarded.get(stream_id) if isinstance(stream_id, str) else None
        if forwarded is None:
            return {"cancelled": False, "text": f"nothing running with stream id {stream_id!r}"}
        await self._stop_forwarded(forwarded)
        return {"cancelled": True, "text": "cancelling"}

    # ---- chat and @name ---------------------------------------------------------------------

    async def _chat(self, agent: str, text: str, request: dict[str, Any]) -> None:
        actor = self.system.lookup(agent)
        if actor is None:
            if agent == self.llm_agent:
                raise MessageRejected(
                    "no language model agent is running: set ANTHROPIC_API_KEY and restart, or "
                    "use /help for what works without one"
                )
            raise self._not_found(agent)
        stream_id = request["stream_id"]
        session = request["session"] or stream_id
        if agent == self.llm_agent:
            session = await self._llm_session(session, touch=True)
        message = {
            "chat": {"session": session, "text": text},
            "stream_to": request["stream_to"],
            "stream_id": stream_id,
        }
        self._forward(actor.id, message, request, cancel={"cancel": stream_id})

    async def _to_actor(self, name: str, text: str, request: dict[str, Any]) -> None:
        actor = self.system.lookup(name) if name else None
        if actor is None:
            if name and self._elsewhere(name):  # on another node: its answer comes back
                self._forward(name, _as_message(name, text), request, cancel=None)
                return
            raise self._not_found(name)
        if "chat" in type(actor).capabilities:
            await self._chat(name, text, request)
            return
        self._forward(actor.id, _as_message(name, text), request, cancel=None)

    def _elsewhere(self, name: str) -> bool:
        """Whether ``name`` (a name, ``name@node`` or an id) is an actor on another node."""
        return any(
            name in (actor.name, actor.id, actor.address)
            for node in self.system.nodes()[1:]
            for actor in node.actors
        )

    def _not_found(self, name: str) -> MessageRejected:
        known = sorted(actor.name for actor in self.system.actors())
        known += sorted(
            actor.address
            for node in self.system.nodes()[1:]
            if node.status == "up"
            for actor in node.actors
        )
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"did you mean @{close[0]}? " if close else ""
        return MessageRejected(f"no actor named {name!r}: {hint}known: {', '.join(known)}")

    # ---- commands -----------------------------------------------------------------------

    async def _do_help(self, rest: str, request: dict[str, Any]) -> object:
        lines = ["Commands:", *(f"  {text}" for text in COMMANDS.values())]
        lines += [
            "  @NAME MESSAGE: send MESSAGE to the actor NAME (text, or a JSON object)",
            "Anything else goes to the language model.",
        ]
        return {"text": "\n".join(lines), "commands": sorted(COMMANDS)}

    def _supervisor_of(self, name: str) -> Supervisor | None:
        for supervisor in self.system.supervisors():
            if any(child.name == name for child in supervisor.which_children()):
                return supervisor
        return None

    async def _do_agents(self, rest: str, request: dict[str, Any]) -> object:
        tree: list[dict[str, Any]] = []
        supervised: set[str] = set()
        lines: list[str] = []
        for supervisor in self.system.supervisors():
            children = []
            lines.append(f"{supervisor.name} (supervisor, {supervisor.strategy})")
            for child in supervisor.which_children():
                supervised.add(child.name)
                actor = self.system.lookup(child.name)
                stats = actor.statistics() if actor is not None else None
                entry = {
                    "name": child.name,
                    "kind": child.kind,
                    "restart": str(child.restart),
                    "status": str(child.status),
                    "queued": stats.queued if stats else None,
                    "restarts": stats.incarnation if stats else None,
                }
                children.append(entry)
                detail = f", {stats.queued} queued, {stats.incarnation} restarts" if stats else ""
                lines.append(f"  {child.name}: {child.status}{detail}")
            tree.append({"supervisor": supervisor.name, "children": children})
        alone = [actor for actor in self.system.actors() if actor.name not in supervised]
        for actor in alone:
            lines.append(f"{actor.name} (unsupervised): {actor.state}")
            tree.append({"actor": actor.name, "state": str(actor.state)})
        nodes = []
        for info in self.system.nodes()[1:]:  # the other nodes, through the MQTT bridge
            why = f", {info.reason}" if info.reason else ""
            names = ", ".join(actor.name for actor in info.actors) or "no actors"
            lines.append(f"node {info.name} ({info.status}{why}): {names}")
            nodes.append(
                {
                    "node": info.name,
                    "status": info.status,
                    "reason": info.reason,
                    "actors": [{"id": a.id, "name": a.name} for a in info.actors],
                }
            )
        answer: dict[str, Any] = {"text": "\n".join(lines) or "no actors", "tree": tree}
        if nodes:
            answer["nodes"] = nodes
        return answer

    async def _do_status(self, rest: str, request: dict[str, Any]) -> object:
        system = self.system
        stats = system.statistics()
        lines = [f"node {stats.node}: {stats.actors} actors, {stats.supervisors} supervisors"]
        data: dict[str, Any] = {"node": stats.node, "actors": stats.actors}
        health = await self._quick_ask(self.monitor, {"get": "health"})
        if isinstance(health, dict):
            data["health"] = health
            lines.append(f"health: {health.get('status')} ({len(health.get('alerts', []))} alerts)")
        else:
            lines.append("health: no monitor running")
        sandbox = await self._quick_ask(self.code_agent, tool_call("sandbox_report"))
        if isinstance(sandbox, dict):
            data["sandbox"] = sandbox
            on = [layer["name"] for layer in sandbox.get("layers", []) if layer.get("active")]
            lines.append(f"sandbox: on, layers {', '.join(on)}")
        else:
            lines.append("sandbox: off (sandbox.enabled is false)")
        llm = self.system.lookup(self.llm_agent)
        lines.append(f"language model: {'agent ' + repr(llm.name) if llm else 'not running'}")
        return {"text": "\n".join(lines), **data}

    async def _quick_ask(self, to: str, message: dict[str, Any]) -> object:
        """The answer of ``to``, or None if it is not there or does not answer within 2 s."""
        if self.system.lookup(to) is None:
            return None
        try:
            return await self.ask(to, message, timeout=2.0)
        except WactorzError:
            return None

    def _named(self, rest: str, command: str) -> str:
        name = rest.strip()
        if not name or " " in name:
            raise MessageRejected(f"/{command} takes one actor's name: /{command} NAME")
        if name in self.protected:
            raise MessageRejected(
                f"{name!r} carries this conversation: /{command} it from the command line "
                "(Ctrl-C stops the service)"
            )
        return name

    async def _do_stop(self, rest: str, request: dict[str, Any]) -> object:
        name = self._named(rest, "stop")
        if name in self._spawned:
            return await self._forget_spawned(name)
        supervisor = self._supervisor_of(name)
        if supervisor is not None:
            await supervisor.terminate_child(name)
            return {"text": f"stopped {name} (its supervisor {supervisor.name} keeps it stopped)"}
        actor = self.system.lookup(name)
        if actor is None:
            raise self._not_found(name)
        await actor.stop()
        return {"text": f"stopped {name}"}

    async def _do_delete(self, rest: str, request: dict[str, Any]) -> object:
        name = self._named(rest, "delete")
        if name not in self._spawned:
            spawned = ", ".join(sorted(self._spawned)) or "none"
            raise MessageRejected(
                f"/delete is for agents /spawn started ({spawned}): use /stop for {name!r}"
            )
        return await self._forget_spawned(name)

    async def _do_restart(self, rest: str, request: dict[str, Any]) -> object:
        name = self._named(rest, "restart")
        supervisor = self._supervisor_of(name)
        if supervisor is None:
            if self.system.lookup(name) is None:
                raise self._not_found(name)
            raise MessageRejected(f"{name!r} is not supervised, so nothing can restart it")
        if self.system.lookup(name) is not None:
            await supervisor.terminate_child(name)
        restarted = await supervisor.restart_child(name)
        return {"text": f"restarted {name}", "id": restarted.id}

    # ---- agents people spawn --------------------------------------------------------------

    async def _do_spawn(self, rest: str, request: dict[str, Any]) -> object:
        try:
            words = shlex.split(rest)
        except ValueError as exc:
            raise MessageRejected(f"/spawn: {exc}") from None
        if len(words) < 2:
            kinds = ", ".join(sorted(self.spawnable)) or "none"
            raise MessageRejected(f"/spawn KIND NAME [key=value ...] (kinds: {kinds})")
        kind, name, *pairs = words
        if "@" in name:
            self._spawn_elsewhere(kind, name, pairs, request)
            return None
        options: dict[str, str] = {}
        for pair in pairs:
            key, equals, value = pair.partition("=")
            if not equals:
                raise MessageRejected(f"/spawn {kind}: options are key=value, not {pair!r}")
            options[key] = value
        return await self.spawn_agent(kind, name, options)

    @tool("List the kinds of agent that spawn_agent can start, with their options.")
    async def list_agent_kinds(self) -> dict[str, Any]:
        kinds = {
            kind: {"description": spawnable.description, "options": sorted(spawnable.options)}
            for kind, spawnable in sorted(self.spawnable.items())
        }
        return {"kinds": kinds, "spawned": sorted(self._spawned)}

    @tool(
        "Start a new agent of a known kind (e.g. an LLM persona with its own system prompt).",
        input_schema={
            "type": "object",
            "properties": {
                "kind": {"type": "string", "description": "One of list_agent_kinds' kinds."},
                "name": {"type": "string", "description": "The new agent's name."},
                "options": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "The kind's options, e.g. {'system_prompt': '...'}.",
                },
            },
            "required": ["kind", "name"],
        },
    )
    async def spawn_agent(
        self, kind: str, name: str, options: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Start an agent of ``kind`` from the catalogue, and keep it across restarts."""
        spawnable = self.spawnable.get(kind)
        if spawnable is None:
            kinds = ", ".join(sorted(self.spawnable)) or "none"
            close = difflib.get_close_matches(kind, list(self.spawnable), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise MessageRejected(f"no kind of agent called {kind!r}: {hint}kinds: {kinds}")
        if name in self.protected or self.system.lookup(name) is not None:
            raise MessageRejected(f"the name {name!r} is taken: pick another")
        record = {"kind": kind, "name": name, "options": dict(options or {})}
        try:
            home, actor = await self._start_spawned(record)
        except (WactorzError, ValueError, TypeError) as exc:
            raise MessageRejected(f"/spawn {kind} {name}: {exc}") from None
        self._spawned[name] = record
        await self._save_spawned()
        where = f" under {home.name}" if home is not None else ""
        return {"text": f"started {kind} {name!r}{where}", "id": actor.id}

    async def _start_spawned(self, record: dict[str, Any]) -> tuple[Supervisor | None, Actor]:
        spawnable = self.spawnable[record["kind"]]
        kwargs = spawnable.arguments(record["options"])
        home = self._supervisor_of(self.name)
        if home is None:
            return None, await self.system.spawn(spawnable.actor, record["name"], **kwargs)
        started = await home.add_and_start(
            record["name"], spawnable.actor, restart="transient", **kwargs
        )
        assert isinstance(started, Actor)
        return home, started

    async def _forget_spawned(self, name: str) -> object:
        """Stop an agent people spawned and forget it for good (spec and file)."""
        supervisor = self._supervisor_of(name)
        if supervisor is not None:
            await supervisor.terminate_child(name)
            if any(child.name == name for child in supervisor.which_children()):
                supervisor.delete_child(name)
        elif (actor := self.system.lookup(name)) is not None:
            await actor.stop()
        del self._spawned[name]
        await self._save_spawned()
        return {"text": f"stopped {name} and forgot it (it will not come back after a restart)"}

    async def _restore_spawned(self) -> None:
        """Start again what people spawned before the service last stopped."""
        if self.spawned_file is None:
            return
        records = await trio.to_thread.run_sync(_read_spawned, self.spawned_file)
        for record in records:
            name = record["name"]
            if record["kind"] not in self.spawnable or self.system.lookup(name) is not None:
                logger.warning("%s: not restoring %r (%s)", self.name, name, record["kind"])
                continue
            try:
                await self._start_spawned(record)
            except (WactorzError, ValueError, TypeError) as exc:
                logger.warning("%s: could not restore %r: %s", self.name, name, exc)
                continue
            self._spawned[name] = record
            logger.info("%s: restored %s %r", self.name, record["kind"], name)

    async def _save_spawned(self) -> None:
        if self.spawned_file is not None:
            records = list(self._spawned.values())
            await trio.to_thread.run_sync(_write_spawned, self.spawned_file, records)

    async def _do_run(self, rest: str, request: dict[str, Any]) -> object:
        language, _, code = rest.partition(" ")
        language = {"py": "python", "python3": "python", "bash": "sh"}.get(language, language)
        if language not in ("python", "sh") or not code.strip():
            raise MessageRejected("/run takes a language and code: /run python print(1)")
        self._run_tool(self.code_agent, "run_code", {"language": language, "code": code}, request)
        return None

    async def _do_sh(self, rest: str, request: dict[str, Any]) -> object:
        if not rest:
            raise MessageRejected("/sh takes a command: /sh ls -la")
        self._run_tool(self.io_agent, "run_shell", {"command": rest}, request)
        return None

    def _run_tool(
        self, agent: str, name: str, arguments: dict[str, Any], request: dict[str, Any]
    ) -> None:
        actor = self.system.lookup(agent)
        if actor is None:
            raise MessageRejected(
                "the sandbox is off, so nothing runs code here: set sandbox.enabled to true "
                "(WACTORZ_SANDBOX__ENABLED=true, or --sandbox) and restart"
            )
        if name not in [t.name for t in actor.offered_tools()]:
            raise MessageRejected(
                "shell commands are off: set sandbox.allow_shell to true "
                "(WACTORZ_SANDBOX__ALLOW_SHELL=true) and restart"
            )
        stream_id = request["stream_id"]
        arguments = {**arguments, "run_id": stream_id, "stream_id": stream_id}
        if request["stream_to"] is not None:
            arguments["stream_to"] = request["stream_to"]
        self._forward(
            actor.id,
            tool_call(name, arguments),
            request,
            cancel=tool_call("cancel_run", {"run_id": stream_id}),
            shown=_run_shown,
        )

    def _spawn_elsewhere(
        self, kind: str, address: str, options: list[str], request: dict[str, Any]
    ) -> None:
        """``/spawn KIND NAME@NODE``: the MQTT bridge asks NODE, which starts only the kinds
        its settings allow (and takes no options: no arguments travel between nodes)."""
        name, _, node = address.rpartition("@")
        if options:
            raise MessageRejected(f"/spawn {kind} {address}: another node takes no options")
        bridge = "mqtt-bridge"
        if self.system.lookup(bridge) is None:
            raise MessageRejected(
                "no MQTT bridge runs here, so there is no other node: set mqtt.enabled (--mqtt)"
            )
        spawn = {"spawn": {"node": node, "kind": kind, "name": name}}

        def shown(answer: Any) -> object:
            return {"text": f"started {kind} {name!r} on node {node}", **dict(answer)}

        self._forward(bridge, spawn, request, cancel=None, shown=shown)

    def _session_request(self, request: dict[str, Any], message: dict[str, Any]) -> None:
        if self.system.lookup(self.llm_agent) is None:
            raise MessageRejected("no language model agent is running, so there are no sessions")
        self._forward(self.llm_agent, message, request, cancel=None, shown=_as_text)

    async def _do_sessions(self, rest: str, request: dict[str, Any]) -> object:
        self._session_request(request, {"sessions": True})
        return None

    async def _do_history(self, rest: str, request: dict[str, Any]) -> object:
        self._session_request(
            request, {"export": await self._session(request), "format": "markdown"}
        )
        return None

    async def _do_clear(self, rest: str, request: dict[str, Any]) -> object:
        self._session_request(request, {"clear": await self._session(request)})
        return None

    async def _session(self, request: dict[str, Any]) -> str:
        """The LLM agent's name of the request's conversation (for /history and /clear)."""
        session = request["session"]
        if session is None:
            raise MessageRejected("this command needs a session: send one with the chat")
        return await self._llm_session(str(session), touch=False)

    async def _llm_session(self, session: str, *, touch: bool) -> str:
        """The conversation ``session`` is in: a new one once it was idle `session_idle_s`."""
        now = time.time()
        conversation = self._conversations.get(session)
        if conversation is None:
            epoch, last_active = (await self._stored_epochs()).get(session, (1, now))
            conversation = self._conversations[session] = _Conversation(epoch, last_active)
        if touch:
            if now - conversation.last_active > self.session_idle_s:
                conversation.epoch += 1
                logger.info("session %s was idle: a new conversation starts", session)
            conversation.last_active = now
        return conversation.llm_session(session)

    async def _stored_epochs(self) -> dict[str, tuple[int, float]]:
        """Each session's latest conversation in the LLM agent's store, and when last used."""
        if self._epochs is None:
            listed = await self._quick_ask(self.llm_agent, {"sessions": True})
            epochs: dict[str, tuple[int, float]] = {}
            rows = listed.get("sessions", []) if isinstance(listed, dict) else []
            for row in rows:
                name, updated = row.get("session"), row.get("updated_at")
                if not isinstance(name, str) or not isinstance(updated, int | float):
                    continue
                base, _, suffix = name.rpartition("~")
                epoch = int(suffix) if base and suffix.isdigit() else 1
                base = base if epoch > 1 else name
                if epoch >= epochs.get(base, (0, 0.0))[0]:
                    epochs[base] = (epoch, float(updated))
            if listed is not None:
                self._epochs = epochs  # else: no agent yet, ask again next time
            return epochs
        return self._epochs

    async def _do_cancel(self, rest: str, request: dict[str, Any]) -> object:
        session = request["session"]
        running = [
            f for f in self._forwarded.values() if f.session == session and f.session is not None
        ]
        for forwarded in running:
            await self._stop_forwarded(forwarded)
        return {"text": f"cancelling {len(running)} running request(s)", "cancelled": len(running)}


def _read_spawned(path: Path) -> list[dict[str, Any]]:
    """The agents kept in ``path``; none if it does not exist (a file that cannot be read
    is logged and ignored: losing the list must not stop the service)."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        logger.warning(
            "the list of spawned agents %s cannot be read (%s): starting none", path, exc
        )
        return []
    if not isinstance(records, list):
        logger.warning("the list of spawned agents %s is not a list: starting none", path)
        return []
    return [
        r
        for r in records
        if isinstance(r, dict)
        and isinstance(r.get("kind"), str)
        and isinstance(r.get("name"), str)
        and isinstance(r.get("options"), dict)
        and all(isinstance(v, str) for v in r["options"].values())
    ]


def _write_spawned(path: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``records``, atomically (a crash leaves the old or the new)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(records, indent=2), encoding="utf-8")
    os.replace(temporary, path)


def _as_message(name: str, text: str) -> dict[str, Any]:
    """What ``@name text`` sends: the JSON object typed, or ``{"text": text}``."""
    message: object = {"text": text}
    if text.startswith("{"):
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MessageRejected(f"@{name}: that is not a JSON object ({exc})") from None
    if not isinstance(message, dict):
        raise MessageRejected(f"@{name}: send a JSON object, or plain text")
    return message


def _run_shown(result: Any) -> object:
    """A run's result, with a line saying how it ended."""
    if not isinstance(result, dict):
        return result
    if result.get("killed_by"):
        ending = f"stopped: {result['killed_by']}"
    else:
        ending = f"exit status {result.get('exit_code')}"
    return {**result, "text": ending}


def _as_text(answer: Any) -> object:
    """An agent's answer, shown as text when it is not text already."""
    if isinstance(answer, str):
        return {"text": answer}
    if isinstance(answer, dict) and isinstance(answer.get("text"), str):
        return answer
    return {"text": json.dumps(answer, indent=2, default=str), "data": answer}

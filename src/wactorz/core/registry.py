"""`ActorSystem`: the registry of running actors, their message routing and their root.

The system owns the name and id tables, the pub/sub subscriptions, the event
bus and a root supervisor under which spawned actors and top-level supervisors
run (as temporary children: a crashed spawned actor stops and reports, and
never takes its siblings down). ``from wactorz.core.registry import Supervisor``
still works, where the public API has always had it; `wactorz.Supervisor` (defined in
`wactorz.core.supervisor`) is the same class.
"""

from __future__ import annotations

import collections
import math
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Final, TypeAlias, TypeVar, final

import attrs
import trio

from wactorz.core.actor import _WAKE, Actor, ActorState
from wactorz.core.errors import (
    ActorNotFound,
    ActorStopped,
    AskTimeout,
    DuplicateName,
    MailboxFull,
    SystemNotRunning,
    WactorzError,
)
from wactorz.core.events import ActorEvent, EventBus, EventKind, EventStream
from wactorz.core.ids import default_node, sanitize_node
from wactorz.core.mailbox import _SCALARS, MESSAGE, REPLY, Mail, Mailbox, Reply, check_message
from wactorz.core.remote import NodeInfo, RemoteActorInfo, RemoteRouter, parse_address
from wactorz.core.supervisor import Runnable
from wactorz.core.supervisor import Supervisor as Supervisor  # the seed's import path
from wactorz.core.timers import TimerQueue
from wactorz.core.tools import ToolOwner, tool_call
from wactorz.core.topics import SubscriptionTable
from wactorz.core.turns import TURN, Turns, run_context

__all__ = ["ActorSystem", "SystemStatistics"]

_A = TypeVar("_A", bound=Actor)

_NOT_STARTED: Final = "not started"
_RUNNING: Final = "running"
_STOPPING: Final = "stopping"
_STOPPED: Final = "stopped"

_Unfinished: TypeAlias = "tuple[()] | tuple[Actor, Mailbox, Mail]"
"""What `ActorSystem._post` leaves to `ActorSystem._finish_send`: wait for room, or checkpoint."""

_CHECKPOINT: Final[tuple[()]] = ()

_GONE_REMEMBERED: Final = 512
"""Names and ids of ended actors kept to explain a send to them (`ActorNotFound.gone`)."""


@final
@attrs.frozen
class SystemStatistics:
    """`ActorSystem.statistics`: the node, whether it runs, and how much runs in it."""

    node: str
    running: bool
    actors: int
    supervisors: int
    event_listeners: int


@final
class ActorSystem:
    """The runtime container: create one, start it, spawn actors into it.

    Use it as ``async with ActorSystem() as system:`` (everything is stopped
    when the block ends), or call `start` and `stop` yourself from any Trio
    task. ``node`` names this system (default: the host name).
    ``check_messages=False`` skips the JSON-compatibility check on every send,
    for hot paths whose messages are known to be valid.
    """

    def __init__(self, *, node: str | None = None, check_messages: bool = True) -> None:
        self.node: str = sanitize_node(node) if node is not None else default_node()
        """This system's node name: what "node" means everywhere in wactorz (in topics,
        heartbeats and settings), never an actor or a part of a WID."""
        self._check_messages = check_messages
        self._actors: dict[str, Actor] = {}
        self._names: dict[str, str] = {}
        self._supervisors: dict[str, Supervisor] = {}
        self._subscriptions = SubscriptionTable()
        self._events = EventBus()
        self._turns = Turns()
        self._timers = TimerQueue()
        self._gone: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        """Actors that crashed for good recently, by name and id: how they ended, and when."""
        self._root = Supervisor(self, "one_for_one", max_restarts=0, window_s=1.0, name="root")
        self._router: RemoteRouter | None = None
        """How addresses not found locally reach other nodes (`attach_router`); None: no way."""
        self._state = _NOT_STARTED
        self._finished: trio.Event | None = None

    def __repr__(self) -> str:
        return f"<ActorSystem node={self.node!r} {self._state}, {len(self._actors)} actors>"

    # ---- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> ActorSystem:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the system; it runs in the background until `stop`.

        Returns once the system accepts spawns. Starting twice is an error. The
        system runs in a system task of its own, not in the caller's nursery: see `run`
        to tie it to one.
        """
        if self._state != _NOT_STARTED:
            raise RuntimeError(f"this actor system is {self._state}; create a new ActorSystem")
        self._finished = trio.Event()
        ready = Reply()
        trio.lowlevel.spawn_system_task(self._run, ready, name=f"wactorz.system.{self.node}")
        await ready.wait()

    async def _run(self, ready: Reply) -> None:
        assert self._finished is not None

        def started() -> None:
            self._state = _RUNNING
            ready.resolve(None)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._timers.run, name=f"wactorz.timers.{self.node}")
                try:
                    await self._root._run(started)
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._state = _STOPPED
            self._finished.set()

    async def stop(self) -> None:
        """Stop every actor and supervisor in reverse start order, then the system.

        Each actor finishes the message in hand and runs `on_stop` (cancelled if
        it takes longer than its shutdown_s). Returns when nothing is left
        running; stopping a stopped system does nothing. Called from inside one
        of the system's actors it only asks for the stop (the caller is among
        the actors being stopped). The wait is shielded: cancelling the caller does
        not cut the stop short, which each actor's shutdown_s bounds instead.
        """
        if self._finished is None:
            return
        self._state = _STOPPING if self._state == _RUNNING else self._state
        self._root._request_stop()
        if self._root._is_caller_inside():
            return  # an actor stopping its own system: waiting for itself would deadlock
        with trio.CancelScope(shield=True):
            await self._finished.wait()

    async def run(
        self, *, task_status: trio.TaskStatus[ActorSystem] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the system for as long as the calling task: Trio's ``nursery.start`` style.

        ``system = await nursery.start(ActorSystem().run)`` returns once the system
        accepts spawns; it then runs until `stop` is called or the nursery is cancelled,
        and either way every actor is stopped before this returns (as `stop` does it,
        shielded from the cancellation). The way to embed a system in a Trio program
        that already has its nurseries; ``async with ActorSystem()`` is the other.
        """
        await self.start()
        assert self._finished is not None
        try:
            task_status.started(self)
            await self._finished.wait()
        finally:
            await self.stop()

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._state == _RUNNING

    # ---- actors ---------------------------------------------------------------------------

    async def spawn(self, actor_class: type[_A], name: str | None = None, **kwargs: Any) -> _A:
        """Construct ``actor_class(self, name=name, **kwargs)``, start it and return it.

        Returns once its `on_start` has run; an actor with no `on_start` and no
        `background` of its own is running on return, without a pass of the scheduler
        (such a spawn counts as a send towards the caller's turn: see
        `wactorz.core.turns`). Raises `ActorStartFailed` if `on_start` raised,
        `DuplicateName` if the name is taken. A spawned actor
        is unsupervised: if it crashes it stops and a ``crashed`` event reports
        it. Put actors under a `Supervisor` to have them restarted. Cancelled while
        the actor starts, it cancels the start too, as Trio's ``nursery.start`` does:
        the actor is stopped and unregistered, and ``Cancelled`` propagates.
        """
        if not (isinstance(actor_class, type) and issubclass(actor_class, Actor)):
            raise TypeError(f"spawn() takes an Actor subclass, not {actor_class!r}")
        if self._state != _RUNNING:
            raise SystemNotRunning(f"spawn {actor_class.__name__}")
        actor = actor_class(self, name=name, **kwargs)
        await self._adopt(actor)
        return actor

    def lookup(self, name_or_id: str) -> Actor | None:
        """The running local actor with this id, name or ``name@<this node>``, or None."""
        actor = self._actors.get(name_or_id)
        if actor is None:
            actor_id = self._names.get(name_or_id)
            if actor_id is not None:
                actor = self._actors.get(actor_id)
            elif "@" in name_or_id:
                name, node = parse_address(name_or_id)
                if node == self.node:
                    return self.lookup(name)
        return actor

    def actors(self) -> list[Actor]:
        """Every registered actor, oldest first."""
        return sorted(self._actors.values(), key=lambda actor: actor.id)

    def supervisors(self) -> list[Supervisor]:
        """Every running supervisor (the root excluded), oldest first."""
        return sorted(self._supervisors.values(), key=lambda sup: sup.id)

    # ---- messaging ------------------------------------------------------------------------

    async def send(self, to: str, message: dict[str, Any]) -> None:
        """Deliver ``message`` to the actor with id or name ``to`` (a tell).

        Waits while the target's mailbox is full (backpressure). Raises
        `ActorNotFound` for an unknown target (the message is reported as a
        dead letter), `InvalidMessage` if it is not a JSON-compatible dict.

        Every send is a cancellation point (a cancelled send delivers
        nothing), but only every 64th send in a row that did not have to wait
        is also a schedule point: a sender lets other tasks run about as
        often as the actors it feeds do (see `wactorz.core.turns`).
        """
        unfinished = self._post(to, message, None)
        if unfinished is not None:
            await self._finish_send(unfinished)

    def send_nowait(self, to: str, message: dict[str, Any]) -> None:
        """Like `send`, but raise `MailboxFull` instead of waiting for room."""
        self._send_nowait(to, message, None)

    async def ask(self, to: str, message: dict[str, Any], *, timeout: float | None = 5.0) -> Any:
        """Send ``message`` to ``to`` and return what its `_process` returns.

        Raises `AskTimeout` if no answer comes within ``timeout`` seconds (None
        waits for ever), `ActorCrashed` (promptly) if the actor crashes while
        handling it, `ActorStopped` if it stops before handling it, and
        `ActorNotFound` for an unknown target. Asked from a cancelled scope,
        it raises `trio.Cancelled` without delivering the message.
        """
        return await self._ask(to, message, timeout, None)

    async def call_tool(
        self,
        to: str,
        name: str,
        input: dict[str, Any] | None = None,
        *,
        timeout: float | None = 30.0,
    ) -> Any:
        """Call tool ``name`` of actor ``to`` with ``input`` and return its answer (an `ask`).

        Raises `MessageRejected` if ``to`` has no such tool or the input does not match its
        schema (the message names the field), and whatever `ask` raises.
        """
        return await self._ask(to, tool_call(name, input), timeout, None)

    def tools(self) -> list[ToolOwner]:
        """Every tool of every running actor, with its owner: oldest actor first, then by name."""
        return [
            ToolOwner(actor.name, actor.id, declared)
            for actor in self.actors()
            for declared in actor.offered_tools()
        ]

    async def publish(self, topic: str, message: dict[str, Any]) -> int:
        """Deliver ``message`` to every actor subscribed to a filter matching ``topic``.

        Returns how many actors it was delivered to. Waits while a
        subscriber's mailbox is full. Like `send`, a cancellation point that
        delivers nothing when cancelled; a publish counts as one send towards
        the sender's turn, however many subscribers it reaches.
        """
        return await self._publish(topic, message, None)

    def events(self, buffer: int = 10_000) -> AbstractAsyncContextManager[EventStream]:
        """Listen to lifecycle events: ``async with system.events() as events: async for ...``.

        Only events emitted while the block is open are seen; a listener that
        falls more than ``buffer`` events behind loses the overflow (counted in
        ``events.dropped``).
        """
        return self._events.stream(buffer)

    # ---- other nodes ------------------------------------------------------------------------

    def attach_router(self, router: RemoteRouter) -> None:
        """Reach actors on other nodes through ``router`` from now on (see `wactorz.core.remote`).

        The system asks the router only about addresses it does not find locally; local
        names always win. One router at a time: attaching a second raises RuntimeError
        (the MQTT bridge attaches itself when it starts and detaches when it stops).
        """
        if self._router is not None and self._router is not router:
            raise RuntimeError(
                "this actor system already has a remote router (an MQTT bridge); run one "
                "bridge per system"
            )
        self._router = router

    def detach_router(self, router: RemoteRouter) -> None:
        """Stop routing through ``router`` (if it is the attached one): remote addresses are
        then not found, until a router is attached again."""
        if self._router is router:
            self._router = None

    def nodes(self) -> list[NodeInfo]:
        """Every node this system knows: itself first, then the others by name, up or down.

        Without a router (no MQTT bridge running) that is this node alone.
        """
        local = NodeInfo(
            self.node,
            "up",
            local=True,
            actors=tuple(
                RemoteActorInfo(
                    actor.id,
                    actor.name,
                    self.node,
                    f"{type(actor).__module__}.{type(actor).__qualname__}",
                    tuple(type(actor).capabilities),
                )
                for actor in self.actors()
            ),
        )
        others = self._router.nodes() if self._router is not None else ()
        return [local, *sorted(others, key=lambda node: node.name)]

    def statistics(self) -> SystemStatistics:
        """A snapshot of the system: what runs in it and who listens to its events."""
        return SystemStatistics(
            node=self.node,
            running=self.running,
            actors=len(self._actors),
            supervisors=len(self._supervisors),
            event_listeners=self._events.listeners,
        )

    # ---- the runtime's side ----------------------------------------------------------------

    async def _adopt(self, runnable: Actor | Supervisor) -> None:
        if runnable.system is not self:
            raise ValueError(f"{runnable.name!r} belongs to another actor system")
        await self._root._start_temporary(runnable)

    def _register(self, runnable: Runnable) -> None:
        """Give ``runnable`` its address: its name and id, in the table of its kind."""
        if runnable.name in self._names:
            raise DuplicateName(runnable.name)
        self._names[runnable.name] = runnable.id
        if isinstance(runnable, Actor):
            self._actors[runnable.id] = runnable
        elif isinstance(runnable, Supervisor):
            self._supervisors[runnable.id] = runnable

    def _replace(self, runnable: Runnable) -> None:
        """Point the address of ``runnable`` (same id and name) at this new incarnation
        (only an actor's is a new object: a restarted supervisor is the same one)."""
        if isinstance(runnable, Actor):
            self._actors[runnable.id] = runnable

    def _unregister(self, runnable: Runnable) -> None:
        """Remove ``runnable``'s address; an actor's mailbox is closed and taken away, and
        mail still queued in it becomes dead letters."""
        if self._names.get(runnable.name) == runnable.id:
            del self._names[runnable.name]
        if not isinstance(runnable, Actor):
            self._supervisors.pop(runnable.id, None)
            return
        self._actors.pop(runnable.id, None)
        self._subscriptions.remove(runnable.id)
        if runnable.state is ActorState.CRASHED:
            self._remember_crash(runnable)
        mailbox, runnable._mailbox = runnable._mailbox, None
        if mailbox is None:
            return
        for mail in mailbox.close():
            reply = mail[REPLY]
            if reply is not None:
                reply.fail(ActorStopped(runnable.name))
            self._dead_letter(
                runnable.name, runnable.id, mail, "the actor stopped before handling it"
            )

    def _remember_crash(self, actor: Actor) -> None:
        """Remember that ``actor`` crashed for good, to say so to whoever sends to it next.

        Only crashes: a plain stop is what the sender's own code usually did, and every
        stop would pay for it.
        """
        gone = self._gone
        now = trio.current_time()
        for key in (actor.name, actor.id):
            gone.pop(key, None)
            gone[key] = ("crashed", now)
        while len(gone) > _GONE_REMEMBERED:
            gone.popitem(last=False)

    def _not_found(self, to: str) -> ActorNotFound:
        known: list[str] = list(self._names)
        if self._router is not None:
            known += self._router.remote_names()
        gone = self._gone.get(to)
        if gone is None:
            return ActorNotFound(to, known)
        how, when = gone
        return ActorNotFound(to, known, f"{how} {trio.current_time() - when:.1f} s ago")

    def _dead_letter(self, name: str, actor_id: str, mail: Mail, reason: str) -> None:
        if mail is not _WAKE:  # a stop request's wake-up, not mail; `{}` is mail
            self._events.emit(
                ActorEvent(
                    EventKind.DEAD_LETTER, name, actor_id, reason=reason, message=mail[MESSAGE]
                )
            )

    def _resolve(self, to: str, message: dict[str, Any]) -> Actor:
        actor = self._actors.get(to)
        if actor is None:
            actor_id = self._names.get(to)
            if actor_id is not None:
                actor = self._actors.get(actor_id)
            if actor is None:
                return self._resolve_elsewhere(to, message)
        return actor

    def _resolve_elsewhere(self, to: str, message: dict[str, Any]) -> Actor:
        """The slow path of `_resolve`: ``to`` is no local name or id as it is written.

        It may still be ``name@<this node>``, or an actor on another node (through the
        router); otherwise the message is a dead letter and the sender gets the error.
        """
        if self._state != _RUNNING:
            raise SystemNotRunning(f"send to {to!r}")
        name, node = parse_address(to)
        try:
            if node == self.node:
                local = self.lookup(name)
                if local is not None:
                    return local
            elif self._router is not None:
                remote = self._router.route(to)
                if remote is not None:
                    return remote
            raise self._not_found(to)
        except WactorzError as exc:
            reason = "no such actor" if isinstance(exc, ActorNotFound) else str(exc)
            self._events.emit(
                ActorEvent(EventKind.DEAD_LETTER, to, to, reason=reason, message=message)
            )
            raise

    def _post(self, to: str, message: dict[str, Any], sender: str | None) -> _Unfinished | None:
        """Queue a tell from an awaited send; None if that send is complete.

        Otherwise returns what `_finish_send` has left to do: wait for room in
        a full mailbox, or checkpoint (the sender was cancelled, or has sent a
        whole turn without yielding). Kept to one call: every tell pays for
        each layer here.
        """
        if run_context.task._cancel_status.effectively_cancelled:
            return _CHECKPOINT  # a cancelled send delivers nothing
        if self._check_messages:
            # `check_message`, its common flat case inlined: the call costs every tell ~5%.
            if type(message) is not dict:
                check_message(message)  # raises
            for key, value in message.items():
                if type(key) is not str or type(value) not in _SCALARS:
                    check_message(message)  # raises, or checks what is nested
                    break
        actor = self._actors.get(to)
        if actor is None:
            actor = self._resolve(to, message)
        mailbox = actor._mailbox
        assert mailbox is not None
        mail = (message, sender, None, None)
        queue = mailbox.queue
        if mailbox.waiting_receivers or len(queue) >= mailbox.capacity:
            try:
                mailbox.send_channel.send_nowait(mail)
            except trio.WouldBlock:
                return actor, mailbox, mail
        else:
            queue.append(mail)  # see `Mailbox.queue`
        actor._idle = False  # `actor._deliver_nowait`, inlined: a tell's wake-up is not counted
        turns = self._turns
        turns.sends += 1
        return _CHECKPOINT if turns.sends >= TURN else None

    async def _finish_send(self, unfinished: _Unfinished) -> None:
        """Checkpoint, or wait for room and queue the mail; the sender's turn starts over."""
        self._turns.sends = 0
        if not unfinished:
            await trio.lowlevel.checkpoint()
            return
        actor, mailbox, mail = unfinished
        try:
            await mailbox.send_channel.send(mail)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            reason = "the actor stopped while the sender waited"
            self._dead_letter(actor.name, actor.id, mail, reason)
            raise ActorStopped(actor.name, "it stopped while its mailbox was full") from None

    def _send_nowait(self, to: str, message: dict[str, Any], sender: str | None) -> None:
        if self._check_messages:
            check_message(message)
        actor = self._resolve(to, message)
        mailbox = actor._mailbox
        assert mailbox is not None
        if not actor._deliver_nowait(mailbox, (message, sender, None, None)):
            raise MailboxFull(actor.name, mailbox.capacity)

    async def _ask(
        self, to: str, message: dict[str, Any], timeout: float | None, sender: str | None
    ) -> Any:
        if run_context.task._cancel_status.effectively_cancelled:
            await trio.lowlevel.checkpoint()  # raises Cancelled: nothing is delivered
        if timeout is not None and not (0 <= timeout < math.inf):
            if timeout != math.inf:
                raise ValueError(
                    f"an ask's timeout is a number of seconds, 0 or more, not {timeout!r}"
                )
            timeout = None
        if self._check_messages:
            check_message(message)
        actor = self._resolve(to, message)
        mailbox = actor._mailbox
        assert mailbox is not None
        reply = Reply(self._turns) if timeout is None else Reply(self._turns, actor.name, timeout)
        mail = (message, sender, reply, None)
        if not actor._deliver_nowait(mailbox, mail):
            return await self._ask_when_room(actor, mailbox, mail, timeout)
        if timeout is not None:
            # The deadline is a timer-queue entry, not a cancel scope: see `wactorz.core.timers`.
            self._timers.add_deadline(reply, timeout)
        return await reply.wait()

    async def _ask_when_room(
        self, actor: Actor, mailbox: Mailbox, mail: Mail, timeout: float | None
    ) -> Any:
        """`_ask` to a full mailbox: wait for room, then for the answer, under one cancel scope
        (the wait for room needs one; a full mailbox is not the path to save time on)."""
        reply = mail[REPLY]
        assert reply is not None
        with trio.move_on_after(math.inf if timeout is None else timeout):
            await self._finish_send((actor, mailbox, mail))
            return await reply.wait()
        raise AskTimeout(actor.name, math.inf if timeout is None else timeout)

    async def _publish(self, topic: str, message: dict[str, Any], sender: str | None) -> int:
        if run_context.task._cancel_status.effectively_cancelled:
            await trio.lowlevel.checkpoint()  # raises Cancelled: nothing is delivered
        subscribers = self._subscriptions.subscribers(topic)  # raises for an invalid topic
        if self._check_messages:
            check_message(message)
        mail = (message, sender, None, topic)
        delivered = 0
        for subscriber in subscribers:
            actor = self._actors.get(subscriber)
            mailbox = actor._mailbox if actor is not None else None
            if actor is None or mailbox is None:
                continue
            if not actor._deliver_nowait(mailbox, mail):
                try:
                    await self._finish_send((actor, mailbox, mail))
                except ActorStopped:
                    continue
            delivered += 1
        turns = self._turns
        turns.sends += 1  # one send however many it reached: subscribers then get whole turns
        if turns.sends >= TURN:
            await self._finish_send(_CHECKPOINT)
        return delivered

"""The `Actor` base class: one Trio task that handles its mailbox one message at a time.

Subclass it and implement `Actor._process`. The runtime calls it for every
message in arrival order; whatever it returns answers an `ask`. An exception
escaping it is a crash, handled by the actor's supervisor.
"""

from __future__ import annotations

import abc
import enum
import itertools
import logging
import re
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, final

import attrs
import trio

from wactorz.core.errors import (
    ActorCrashed,
    ActorStopped,
    InvalidMessage,
    MessageRejected,
    ReplyError,
    SystemNotRunning,
)
from wactorz.core.events import ActorEvent, EventKind
from wactorz.core.ids import new_wid
from wactorz.core.mailbox import _INSIDE as _INSIDE
from wactorz.core.mailbox import (
    DEFAULT_MAILBOX_SIZE,
    MESSAGE,
    REPLY,
    SENDER,
    Envelope,
    Mail,
    Mailbox,
    Reply,
    check_message,
    check_reply,
)
from wactorz.core.timers import Timer
from wactorz.core.tools import TOOL_KEY, BoundTool, Tool, collect_tools, serve_tool_call, tool_call
from wactorz.core.turns import CLOCK_EVERY, TURN, TURN_SECONDS

if TYPE_CHECKING:
    from wactorz.core.registry import ActorSystem

__all__ = ["Actor", "ActorState", "ActorStatistics", "DeferredReply", "check_name"]

logger = logging.getLogger("wactorz.actor")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
_unnamed = itertools.count(1)

_WAKE: Final[Mail] = ({}, None, None, None)
"""Handed to an idle actor's receive to make it notice a stop request."""


def check_name(name: str) -> str:
    """Return ``name`` if it can name an actor or supervisor, else raise `ValueError`.

    Names are also topic levels (``.../agents/by-name/<name>/inbox``), so they
    keep to letters, digits, ``_``, ``.`` and ``-``.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"invalid actor name {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


class ActorState(enum.StrEnum):
    """Where an actor incarnation is in its life; the runtime tracks a supervisor's with it too.

    The one lifecycle type: what a supervisor runs, an actor or a supervisor, goes
    CREATED → STARTING → RUNNING → STOPPING → STOPPED, or ends CRASHED. An actor object
    lives once (its restart is a new incarnation, a new object); a supervisor object is
    restarted as itself, from STOPPED or CRASHED back to STARTING. How a supervisor
    sees each of its children is another matter, `wactorz.core.strategy.ChildStatus`.
    """

    CREATED = "created"
    """Constructed, not started yet."""
    STARTING = "starting"
    """Running `Actor.on_start` (a supervisor: starting its children)."""
    RUNNING = "running"
    """Handling messages (a supervisor: watching its children)."""
    STOPPING = "stopping"
    """Done with messages after a stop request: running `Actor.on_stop` (a supervisor:
    stopping its children)."""
    STOPPED = "stopped"
    """Ended normally: stopped, or cancelled after its shutdown time."""
    CRASHED = "crashed"
    """Ended by an exception, or running `Actor.on_stop` after one (a supervisor: it gave
    up, past its restart limit)."""


@final
@attrs.frozen
class ActorStatistics:
    """A snapshot of one actor, for monitoring."""

    name: str
    id: str
    state: ActorState
    queued: int
    capacity: int
    processed: int
    incarnation: int
    crashes: int
    last_activity: float
    """`trio.current_time()` when the actor last went idle, woke up, or started a batch."""


@final
class _ReadySignal:
    """The ``task_status`` handed to `Actor.background`: remembers whether it fired."""

    __slots__ = ("_status", "fired")

    def __init__(self, status: trio.TaskStatus[None]) -> None:
        self._status = status
        self.fired = False

    def started(self, value: None = None) -> None:
        self.fired = True
        self._status.started(value)


@final
class DeferredReply:
    """The answer to an ask, to be given later: what `Actor.reply_later` returns.

    Call `answer` (or `fail`) exactly once, from the actor's own code: a later message,
    its `background`, a timer. Until then the asker waits (up to its timeout). If the
    incarnation ends first, the asker is told at once: `ActorCrashed` if the actor
    crashed, `ActorStopped` if it stopped or was cancelled; never a hang. For a tell
    there is nobody to answer, and both calls only mark it answered.
    """

    __slots__ = ("_actor", "_envelope", "_mail", "_state")

    def __init__(self, actor: Actor, mail: Mail, envelope: Envelope) -> None:
        self._actor = actor
        self._mail = mail
        self._envelope = envelope
        self._state = "pending"

    @property
    def pending(self) -> bool:
        """True until it is answered, failed, or its incarnation ends."""
        return self._state == "pending"

    @property
    def envelope(self) -> Envelope:
        """The envelope of the message being answered (the one `_process` saw: same id)."""
        return self._envelope

    async def wait_asker_gone(self) -> None:
        """Return if and when the asker stops waiting (its timeout, or cancellation).

        For work done on an ask's behalf (a child process, a model's turn) that is not
        worth finishing once nobody waits for it: run it beside this and cancel it when
        this returns. For a tell, or once answered, it never returns (nobody is waiting
        to stop).
        """
        reply = self._mail[2]
        if reply is None or self._state != "pending":
            await trio.sleep_forever()
        assert reply is not None
        await reply.wait_abandoned()

    def answer(self, value: object = None) -> bool:
        """Answer the ask with ``value``; return whether the asker will see it.

        False when the asker stopped waiting (its timeout, or cancellation): the
        answer is then reported as a dead letter, as a late return value is. Raises
        `ReplyError` if it was answered already, and `InvalidMessage` (leaving it
        unanswered) if ``value`` is not JSON-compatible while the system checks
        messages.
        """
        self._check_pending()
        actor = self._actor
        if actor._system is not None and actor._system._check_messages:
            check_reply(value)
        self._finish()
        reply = self._mail[REPLY]
        if reply is None:
            return False
        if not reply.resolve(value):
            if value is not None:
                actor._report_late_reply(self._mail, value)
            return False
        return True

    def fail(self, error: Exception) -> bool:
        """Make the asker raise ``error``; return whether it will see it.

        Raises `ReplyError` if it was answered already.
        """
        self._check_pending()
        self._finish()
        reply = self._mail[REPLY]
        return reply is not None and reply.fail(error)

    def _check_pending(self) -> None:
        if self._state == "answered":
            raise ReplyError(
                f"actor {self._actor.name!r} answered this message already: "
                "a DeferredReply takes one answer or one fail"
            )
        if self._state == "abandoned":
            raise ReplyError(
                f"the incarnation of actor {self._actor.name!r} that deferred this answer has "
                "ended, and the asker was told so: answer within the incarnation"
            )

    def _finish(self) -> None:
        self._state = "answered"
        deferred = self._actor._deferred
        if deferred is not None:
            deferred.discard(self)

    def _abandon(self, error: Exception) -> None:
        """The incarnation ended unanswered: the asker gets ``error`` now."""
        self._state = "abandoned"
        reply = self._mail[REPLY]
        if reply is not None:
            reply.fail(error)

    def __repr__(self) -> str:
        return f"<DeferredReply of {self._actor.name!r}, {self._state}>"


class Actor(abc.ABC):
    """A unit of state and behaviour that only other actors' messages can touch.

    Subclass it and write ``async def _process(self, message)``: the runtime calls it for
    every message in arrival order, one at a time; what it returns answers an ask, and an
    exception escaping it is a crash (`MessageRejected` excepted: that refuses the
    message). `on_start`, `on_stop` and `background` are optional hooks.

    Construct it with the system it belongs to (`ActorSystem.spawn` does that
    for you); subclasses that take extra arguments accept them as keywords and
    pass ``system`` and ``name`` on to this ``__init__``.
    """

    mailbox_size: ClassVar[int] = DEFAULT_MAILBOX_SIZE
    """How many messages may wait for this actor before senders have to wait."""

    capabilities: ClassVar[tuple[str, ...]] = ()
    """What this kind of actor can do, in short words (``("mqtt",)``, ``("files", "shell")``):
    shown in its manifest, so that other nodes and dashboards can find it."""

    _tools: ClassVar[dict[str, BoundTool]] = {}
    """The class's tools by name, with their checkers (see `wactorz.core.tools`)."""

    _starts_at_once: ClassVar[bool] = True
    """No `on_start` and no `background` of its own: ready the moment it is registered, so
    its supervisor starts it without waiting for its task to run (see `Supervisor`)."""

    _scoped_when_busy: ClassVar[bool] = _INSIDE
    """Nothing to start or stop either (no `on_stop` of its own): while idle it has nothing
    that could need cancelling, so it enters its supervisor's cancel scope for it only once
    it has work (a cancel scope entered costs every idle actor ~400 bytes and its stop
    ~2.7 µs). Needs a mailbox that can take mail back (`Mailbox.put_back`).

    The one difference it makes: until then it is not behind that scope's shield, so a
    cancellation from outside its supervisor (the program ending, the supervisor cancelled
    past its own shutdown_s) ends it at once, where the supervisor would have asked it to
    stop in its turn. It has no `on_stop` to run, and nothing in hand.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._tools = collect_tools(cls)
        cls._starts_at_once = cls.on_start is Actor.on_start and cls.background is Actor.background
        cls._scoped_when_busy = cls._starts_at_once and cls.on_stop is Actor.on_stop and _INSIDE
        taken = sorted(_RUNTIME_NAMES.intersection(cls.__dict__))
        if taken:
            raise TypeError(
                f"{cls.__name__} defines {', '.join(taken)}, which the runtime's Actor uses for "
                "itself: give yours another name (the runtime would call it instead of its own)"
            )
        capabilities = cls.__dict__.get("capabilities")
        if capabilities is not None and (
            not isinstance(capabilities, tuple) or not all(isinstance(c, str) for c in capabilities)
        ):
            raise TypeError(
                f"{cls.__name__}.capabilities must be a tuple of strings, like ('files',), "
                f"not {capabilities!r}"
            )

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        self.name: str = (
            check_name(name)
            if name is not None
            else f"{type(self).__name__.lower()}-{next(_unnamed)}"
        )
        """The actor's name, unique in its system: ``send``, ``ask`` and MQTT inboxes address
        it by name; kept across restarts."""
        self.id: str = new_wid(self.name)
        """The actor's id, a WID ending in its name: unique across systems and time, kept
        across restarts."""
        self._system = system
        self._mail: Mail | None = None
        """The message being handled, as queued; None whenever the receive loop yields
        between messages (within a turn, it is left for the next one to replace)."""
        self.state = ActorState.CREATED
        self._mailbox: Mailbox | None = None
        self._stopping = False
        self._idle = False
        self._task: trio.lowlevel.Task | None = None
        self._processed = 0
        self._incarnation = 0
        self._last_activity = 0.0

    # What only some incarnations need is a class default until then, set on the instance
    # when first needed: every attribute set here costs every idle actor its slot.
    _envelope: tuple[Mail, Envelope] | None = None
    """`envelope` as last built, with the mail it was built for."""
    _wake_counted = False
    """An ask or a stop request woke this idle actor, and `Turns.woken` counts it."""
    _finished: trio.Event | None = None
    """Set when the incarnation has ended; made only for `stop` callers who wait."""
    _stop_error: BaseException | None = None
    """What `on_stop` raised, reported with the stop."""
    _deferred: set[DeferredReply] | None = None
    """Asks this incarnation deferred and has not answered yet."""
    _timers: list[Timer] | None = None
    """Timers this incarnation set (`send_after`, `send_every`), cancelled when it ends."""
    _deferred_mail: Mail | None = None
    """The mail `reply_later` was last called for: `_serve` leaves its reply alone."""
    _crashes = 0
    """How many incarnations of this actor crashed."""

    # ---- what subclasses write -------------------------------------------------------------

    @abc.abstractmethod
    async def _process(self, message: dict[str, Any]) -> object:
        """Handle one message; the return value answers an `ask` (ignored for a tell).

        The one method every actor writes. ``message`` is the sender's dict (don't change
        it: messages are passed by reference); who sent it and how is in
        `current_envelope`. The return value must be JSON-compatible when the system
        checks messages. Call `reply_later` to answer an ask after returning. Raise
        `MessageRejected` to refuse a message without crashing; any other exception is a
        crash, handled by the actor's supervisor. Cancellation (the actor being stopped
        past its shutdown time) fails the ask with `ActorStopped`.

        @public
        """

    async def on_start(self) -> None:
        """Run before the first message; raising here means the actor failed to start."""

    async def on_stop(self) -> None:
        """Run after the last message when the actor stops or crashes (not when it is cancelled)."""

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        """Override to run work beside the message loop, for the life of one incarnation.

        Started after `on_start`, in Trio's `nursery.start` style: call
        ``task_status.started()`` once ready — the actor counts as started only
        then, and a failure before it is a failure to start. It is cancelled when
        the incarnation ends, before `on_stop` runs, so nothing it starts
        outlives the actor; open a nursery here for several tasks. Raising after
        ``started()`` is a crash of the actor. Change the actor's state by
        sending it messages (``self.send_nowait(self.id, ...)``), so that it still
        changes one message at a time.
        """
        task_status.started()

    @classmethod
    def tools(cls) -> tuple[Tool, ...]:
        """The tools this kind of actor declares (methods marked with `wactorz.tool`), by name."""
        return tuple(cls._tools[name].tool for name in sorted(cls._tools))

    def offered_tools(self) -> tuple[Tool, ...]:
        """The tools this actor offers now: all it declares, unless a subclass says fewer.

        Override it to withdraw tools its configuration turns off (a shell nobody
        allowed): `ActorSystem.tools` lists only these, and calling another is refused.
        """
        return type(self).tools()

    def telemetry(self) -> Mapping[str, Any] | None:
        """What this actor reports about itself beyond the runtime's counters (None: nothing).

        Override it to publish figures of your own (an LLM agent's tokens and cost, a
        bridge's queue): the health monitor calls it once per tick for every actor and
        publishes what it returns, unchanged, as the ``details`` of the actor's heartbeat
        and metrics (`wactorz.telemetry.ActorHeartbeat.details`), which the MQTT bridge
        forwards like the rest. Nothing else calls it, so it costs nothing on the message
        path. Return a JSON-compatible dict, small (a few dozen values), computed from what
        the actor already holds: it runs in the monitor's task, so it must not wait or do
        I/O, and it must hold no secret. If it raises or returns what JSON cannot carry,
        the monitor logs that once and leaves the details out.
        """
        return None

    # ---- the message being handled -------------------------------------------------------

    @property
    def sender(self) -> str | None:
        """Id of the actor that sent the message being handled (None if not sent by an actor)."""
        mail = self._mail
        return mail[SENDER] if mail is not None else None

    @property
    def envelope(self) -> Envelope | None:
        """The envelope of the message being handled: its id, topic, sender, reply slot.

        None between messages. Built the first time it is read for a message.
        """
        mail = self._mail
        if mail is None:
            return None
        built = self._envelope
        if built is None or built[0] is not mail:
            built = self._envelope = (mail, Envelope(*mail))
        return built[1]

    @property
    def current_envelope(self) -> Envelope:
        """`envelope`, typed for code inside `_process`: raises `RuntimeError` between messages.

        ``self.current_envelope.topic`` needs no ``None`` check to pass ``mypy --strict``.
        """
        envelope = self.envelope
        if envelope is None:
            raise RuntimeError(
                f"actor {self.name!r} is not handling a message now: current_envelope is "
                "only there inside _process (use self.envelope, which may be None, elsewhere)"
            )
        return envelope

    def reply_later(self) -> DeferredReply:
        """Answer the message being handled later, not with `_process`'s return value.

        Call it inside `_process`; keep what it returns and call its `DeferredReply.answer`
        once the answer is ready, from a later message, `background` or a timer. The
        actor goes on with its mailbox meanwhile, so one slow answer does not hold up
        the others. What `_process` returns for that message is ignored. If the
        incarnation ends first, the asker gets `ActorCrashed` or `ActorStopped` at once.
        Raises `ReplyError` outside `_process` or when called twice for one message.
        """
        mail = self._mail
        if mail is None or trio.lowlevel.current_task() is not self._task:
            raise ReplyError(
                f"reply_later() is for the message actor {self.name!r} is handling: "
                "call it inside _process"
            )
        if self._deferred_mail is mail:
            raise ReplyError(f"actor {self.name!r} already deferred the reply to this message")
        self._deferred_mail = mail
        deferred = DeferredReply(self, mail, self.current_envelope)
        if self._deferred is None:
            self._deferred = set()  # made on first use: most actors never defer
        self._deferred.add(deferred)
        return deferred

    # ---- identity ------------------------------------------------------------------------

    @property
    def system(self) -> ActorSystem:
        """The actor system this actor belongs to."""
        if self._system is None:
            raise SystemNotRunning(
                f"use actor {self.name!r} (it was constructed without a system: "
                f"pass it as {type(self).__name__}(system, ...) or use system.spawn)"
            )
        return self._system

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.id} {self.state}>"

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Register the actor and start its receive loop; returns once `on_start` has run.

        Raises `ActorStartFailed` if `on_start` raised, `DuplicateName` if the
        name is taken. Cancelled while the actor starts, it cancels the start too
        (see `ActorSystem.spawn`).
        """
        await self.system._adopt(self)

    async def stop(self) -> None:
        """Stop gracefully: finish the message in hand, run `on_stop`, then unregister.

        Called from inside the actor it only asks for the stop (the current
        message finishes first). A supervised actor that stops this way has made
        a normal exit: a permanent child is restarted; use the supervisor's
        `terminate_child` to stop one for good. Stopping a stopped actor does nothing.
        Cancelling the caller stops only its wait: the stop, once asked for, goes on.
        """
        if self.state in (ActorState.CREATED, ActorState.STOPPED, ActorState.CRASHED):
            return
        self._request_stop()
        if trio.lowlevel.current_task() is self._task:
            return
        if self._finished is None:
            self._finished = trio.Event()
        await self._finished.wait()

    # ---- messaging -------------------------------------------------------------------------

    async def send(self, to: str, message: dict[str, Any]) -> None:
        """Send ``message`` to the actor with id or name ``to`` (waits if its mailbox is full).

        Like `ActorSystem.send`, which explains when it yields.
        """
        system = self._system or self.system  # the property only to raise its error
        unfinished = system._post(to, message, self.id)
        if unfinished is not None:
            await system._finish_send(unfinished)

    def send_nowait(self, to: str, message: dict[str, Any]) -> None:
        """Like `send`, but raise `MailboxFull` instead of waiting for room."""
        self.system._send_nowait(to, message, self.id)

    async def ask(self, to: str, message: dict[str, Any], *, timeout: float | None = 5.0) -> Any:
        """Send ``message`` to ``to`` and return its answer (see `ActorSystem.ask`)."""
        if to in (self.id, self.name):
            raise ValueError(
                f"actor {self.name!r} cannot ask itself: it would wait for a reply only it can "
                "give; call the method directly instead"
            )
        return await self.system._ask(to, message, timeout, self.id)

    async def publish(self, topic: str, message: dict[str, Any]) -> int:
        """Publish ``message`` on ``topic``; returns how many subscribers it was delivered to."""
        return await self.system._publish(topic, message, self.id)

    async def call_tool(
        self,
        to: str,
        name: str,
        input: dict[str, Any] | None = None,
        *,
        timeout: float | None = 30.0,
    ) -> Any:
        """Call tool ``name`` of actor ``to`` as this actor (see `ActorSystem.call_tool`)."""
        return await self.ask(to, tool_call(name, input), timeout=timeout)

    def send_after(self, delay_s: float, message: dict[str, Any]) -> Timer:
        """Send ``message`` to this actor in ``delay_s`` seconds; return the `Timer`.

        It arrives as a tell from the actor itself (``self.sender == self.id``), queued
        behind what is already in the mailbox. The timer belongs to this incarnation: a
        stop, crash or restart cancels it. The message is sent as it is given (keep it
        unchanged). Raises `ValueError` for a negative delay, `InvalidMessage` for a
        message that is not JSON-compatible, `RuntimeError` once the incarnation ended.
        """
        return self._set_timer(delay_s, message, None)

    def send_every(
        self, interval_s: float, message: dict[str, Any], *, first_after_s: float | None = None
    ) -> Timer:
        """Send ``message`` to this actor every ``interval_s`` seconds; return the `Timer`.

        The first one comes after ``first_after_s`` (default: one interval). Each is due
        an interval after the previous one was due, and ones missed while the actor's
        mailbox stayed full, or the process was stalled, are skipped rather than sent in
        a burst. Otherwise like `send_after`.
        """
        first = interval_s if first_after_s is None else first_after_s
        return self._set_timer(first, message, interval_s)

    def _set_timer(
        self, delay_s: float, message: dict[str, Any], interval_s: float | None
    ) -> Timer:
        if self.state not in (ActorState.STARTING, ActorState.RUNNING, ActorState.STOPPING):
            raise RuntimeError(
                f"actor {self.name!r} is {self.state}: set timers from on_start, _process "
                "or background, while the incarnation runs"
            )
        system = self.system
        if system._check_messages:
            check_message(message)
        timer = system._timers.add(self, delay_s, message, interval_s)
        if self._timers is None:
            self._timers = []  # made on first use: most actors set no timers
        self._timers.append(timer)
        return timer

    def _deliver_timer(self, timer: Timer) -> bool:
        """Queue a due timer's message; False if the mailbox is full (it tries again)."""
        mailbox = self._mailbox
        if mailbox is None:
            timer.active = False
            return True
        try:
            return self._deliver_nowait(mailbox, (timer.message, self.id, None, None))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            timer.active = False  # the actor is gone for good
            return True

    def subscribe(self, topic_filter: str) -> None:
        """Receive messages published on topics matching ``topic_filter`` (``+``/``#`` wildcards).

        Subscriptions belong to the actor's address: they survive restarts and
        end when the actor stops for good. ``self.envelope.topic`` tells which
        topic a delivered message came from.
        """
        self.system._subscriptions.subscribe(topic_filter, self.id)

    def unsubscribe(self, topic_filter: str) -> None:
        """Stop receiving messages for ``topic_filter``."""
        self.system._subscriptions.unsubscribe(topic_filter, self.id)

    # ---- introspection ---------------------------------------------------------------------

    def statistics(self) -> ActorStatistics:
        """Report this actor's state, mailbox depth and counters."""
        mailbox = self._mailbox
        queued = mailbox.statistics().queued if mailbox is not None else 0
        return ActorStatistics(
            name=self.name,
            id=self.id,
            state=self.state,
            queued=queued,
            capacity=mailbox.capacity if mailbox is not None else type(self).mailbox_size,
            processed=self._processed,
            incarnation=self._incarnation,
            crashes=self._crashes,
            last_activity=self._last_activity,
        )

    # ---- runtime side (called by the system and supervisors) -------------------------------

    _crash_reason: str | None = None
    """Where the incarnation crashed once it had started, for the event's reason; set on
    the instance only then (a class default: an actor that never crashes pays nothing)."""

    def _begin_incarnation(self, previous: Actor | None, incarnation: int) -> None:
        """Become incarnation number ``incarnation`` of a supervisor's child: the next one of
        ``previous`` keeps its id, its mailbox (and the mail queued behind a crash) and its
        counters. Done before the actor is registered, so its mailbox is there for whatever
        is sent to it from then on."""
        if previous is not None:
            self.id = previous.id
            self._mailbox = previous._mailbox
            self._processed = previous._processed
            self._crashes = previous._crashes
        if self._mailbox is None:
            self._mailbox = Mailbox(type(self).mailbox_size)
        self._incarnation = incarnation

    def _request_stop(self) -> None:
        self._stopping = True
        if self._idle and self._mailbox is not None:
            self._mailbox.send_channel.send_nowait(_WAKE)
            self._woken()

    def _woken(self) -> None:
        """Count the wake-up of this idle actor, just handed an ask or a stop request.

        Someone waits on those, so busy actors hand over early until it has run
        (see `Turns`).
        """
        assert self._system is not None
        self._idle = False
        self._wake_counted = True
        self._system._turns.woken += 1

    def _deliver_nowait(self, mailbox: Mailbox, mail: Mail) -> bool:
        """Queue ``mail`` in ``mailbox`` (this actor's); False if it is full.

        The one way mail gets in without waiting. Handing an ask to an idle
        actor counts its wake-up; a tell or a publication does not.
        """
        queue = mailbox.queue
        if mailbox.waiting_receivers or len(queue) >= mailbox.capacity:
            try:
                mailbox.send_channel.send_nowait(mail)
            except trio.WouldBlock:
                return False
        else:
            queue.append(mail)  # see `Mailbox.queue`
        if self._idle:
            if mail[2] is None:  # mail[REPLY]: a literal index, as in `_serve`
                self._idle = False
            else:
                self._woken()
        return True

    def _mark_running(self) -> None:
        """The incarnation is ready for messages (its supervisor may say so before it runs)."""
        self.state = ActorState.RUNNING
        self._last_activity = trio.current_time()

    async def _run(
        self, started: Callable[[], None], scope: trio.CancelScope | None = None
    ) -> None:
        """Run one incarnation: `on_start`, the receive loop (beside `background`), `on_stop`.

        Calls ``started`` once the actor is ready for messages, unless its supervisor found
        it ready before the task ran (`_starts_at_once`: then it is RUNNING already). Raises
        whatever crashed the actor; returns after a stop request. ``scope``: see `_serve`.
        """
        if self._mailbox is None:
            self._mailbox = Mailbox(type(self).mailbox_size)
        self._task = trio.lowlevel.current_task()
        try:
            if self.state is ActorState.RUNNING:
                error = await self._serve(scope)
            else:
                assert scope is None, "only an actor started at once enters its scope later"
                self.state = ActorState.STARTING
                self._last_activity = trio.current_time()
                await self.on_start()
                if type(self).background is Actor.background:
                    self._mark_running()
                    started()
                    error = await self._serve()
                else:
                    error = await self._serve_beside_background(started)
            self.state = ActorState.STOPPING if error is None else ActorState.CRASHED
            if error is not None:
                self._crashes += 1
            if type(self).on_stop is not Actor.on_stop:
                await self._run_on_stop()
            if error is not None:
                raise error
        finally:
            # What ends the incarnation, if anything does: a crash, or a cancellation.
            self._end_incarnation(sys.exc_info()[1])

    def _end_incarnation(self, error: BaseException | None) -> None:
        """Let go of what the incarnation held: deferred asks (told of ``error``), timers."""
        self._abandon_deferred(error)
        self._deferred_mail = None
        if self._timers is not None:
            for timer in self._timers:
                timer.active = False
            self._timers = None
        if self.state is not ActorState.CRASHED:
            self.state = ActorState.STOPPED
        self._mail = self._envelope = None
        if self._finished is not None:
            self._finished.set()

    async def _serve_beside_background(self, started: Callable[[], None]) -> Exception | None:
        failure: Exception | None = None
        start_failure: Exception | None = None

        async def run_background(*, task_status: trio.TaskStatus[None]) -> None:
            nonlocal failure
            ready = _ReadySignal(task_status)
            try:
                await self.background(ready)
            except Exception as exc:
                if not ready.fired:
                    raise  # nursery.start reports it: a failure to start
                failure = exc
                self._crash_reason = "raised in its background task"
                self._request_stop()

        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(run_background)
            except Exception as exc:  # kept out of the nursery: not an exception group
                start_failure = exc
            else:
                self._mark_running()
                started()
                error = await self._serve()
                failure = error or failure
            nursery.cancel_scope.cancel()
        if start_failure is not None:
            raise start_failure
        return failure

    async def _run_on_stop(self) -> None:
        try:
            await self.on_stop()
        except Exception as exc:  # reported with the stop; must not derail the shutdown
            self._stop_error = exc

    async def _serve(
        self, scope: trio.CancelScope | None = None, handed: bool = False
    ) -> Exception | None:
        """Handle messages until a stop request (None) or a crash (its exception, returned).

        The loop every idle actor waits in, so its frame is the one an idle actor keeps:
        an empty mailbox is seen by looking (no `trio.WouldBlock` raised, whose traceback
        would make the frame keep a frame object), and waited on without a coroutine of
        the channel's (`Mailbox.wait`). Given ``scope`` (its supervisor's cancel scope, not
        entered: `_scoped_when_busy`), it idles outside it and, once mail comes, puts the
        mail back and serves on inside it, ``handed``: that mail was handed to it while
        idle, so it is in hand, handled even if a stop request came meanwhile (as it would
        be by an actor that had been serving in its scope all along).
        """
        mailbox = self._mailbox
        assert mailbox is not None
        queue = mailbox.queue
        popleft = queue.popleft
        waiting_senders = mailbox.waiting_senders
        if scope is not None and queue:
            with scope:  # mail came before the task first ran: to work at once
                return await self._serve()
            return None  # cancelled by its supervisor
        receive_nowait = mailbox.receive_channel.receive_nowait
        process = self._process if not type(self)._tools else self._process_or_call_tool
        system = self.system
        turns = system._turns
        check = system._check_messages
        wake = _WAKE
        budget = TURN
        started = trio.current_time()  # this turn's start
        try:
            while handed or not self._stopping:
                handed = False
                if not budget:
                    budget = TURN
                    self._mail = self._envelope = None
                    await trio.lowlevel.checkpoint()
                    started = self._last_activity = trio.current_time()
                    continue
                if queue:
                    mail = receive_nowait() if waiting_senders else popleft()
                    budget -= 1
                else:
                    self._mail = self._envelope = None
                    self._last_activity = trio.current_time()
                    self._idle = True
                    try:
                        mail = await mailbox.wait()
                    finally:
                        self._idle = False
                        if self._wake_counted:
                            self._wake_counted = False
                            turns.woken -= 1
                    started = self._last_activity = trio.current_time()
                    budget = TURN - 1
                    if scope is not None and mail is not wake:
                        mailbox.put_back(mail)  # the first work: serve from now on in scope
                        with scope:
                            return await self._serve(None, True)
                        return None  # cancelled by its supervisor
                if mail is wake:
                    # A stop request's wake-up, maybe left queued behind a message handed
                    # to an idle incarnation just before it was stopped and restarted.
                    continue
                self._mail = mail
                # mail[MESSAGE] and mail[REPLY] as literal indices: the constants would be a
                # global lookup each, per message.
                try:
                    result = await process(mail[0])
                except MessageRejected as rejected:
                    self._reject(mail, rejected)
                else:
                    reply = mail[2]
                    if reply is not None and mail is not self._deferred_mail:
                        if check:
                            try:
                                check_reply(result)
                            except InvalidMessage as exc:
                                self._refuse_reply(reply, exc)
                                result = None
                        if not reply.resolve(result) and result is not None:
                            self._report_late_reply(mail, result)
                self._processed += 1
                if turns.woken:
                    budget = 0  # someone was woken for an ask: let them run now
                elif budget % CLOCK_EVERY == 0 and trio.current_time() - started > TURN_SECONDS:
                    budget = 0  # a long turn: let timers, I/O and the other actors run
        except Exception as exc:
            self._lose_message_in_hand(exc)
            self._crash_reason = "raised while handling a message"
            return exc
        except BaseException as exc:
            self._lose_message_in_hand(exc)
            raise
        self._mail = self._envelope = None
        return None

    async def _process_or_call_tool(self, message: dict[str, Any]) -> object:
        """`_process`, for an actor with tools: tool calls go to their methods instead."""
        if TOOL_KEY in message:
            return await serve_tool_call(self, type(self)._tools, message, self.offered_tools())
        return await self._process(message)

    def _refuse_reply(self, reply: Reply, problem: InvalidMessage) -> None:
        """`_process` answered an ask with what JSON cannot carry: the asker gets the error."""
        reply.fail(problem)
        logger.warning("actor %r answered an ask with %s", self.name, problem)

    def _abandon_deferred(self, error: BaseException | None) -> None:
        """Tell every asker still waiting on a deferred reply that no answer will come."""
        if self._deferred is None:
            return
        failure: Exception
        if isinstance(error, Exception):
            failure = ActorCrashed(self.name, error)
        else:
            failure = ActorStopped(self.name, "it stopped before answering")
        deferred, self._deferred = self._deferred, None
        for pending in deferred:
            pending._abandon(failure)

    def _lose_message_in_hand(self, error: BaseException) -> None:
        """Report the message that was being handled when the incarnation ended abruptly."""
        self._idle = False
        mail = self._mail
        if mail is None:
            return
        self._mail = self._envelope = None
        if isinstance(error, Exception):
            failure: Exception = ActorCrashed(self.name, error)
            reason = "the actor crashed while handling it"
        else:
            failure = ActorStopped(self.name, "it was cancelled while handling the message")
            reason = "the actor was cancelled while handling it"
        reply = mail[REPLY]
        if reply is not None:
            reply.fail(failure)
        self._emit_dead_letter(mail, reason, error)

    def _reject(self, mail: Mail, rejected: MessageRejected) -> None:
        """Answer a refused message: the asker gets the error, a tell becomes a dead letter."""
        rejected.target = self.name
        reply = mail[REPLY]
        if reply is None or not reply.fail(rejected):
            self._emit_dead_letter(mail, f"rejected: {rejected.reason}", None)

    def _report_late_reply(self, mail: Mail, result: object) -> None:
        self._emit_dead_letter(
            mail, "reply produced after the asker stopped waiting", None, reply=result
        )

    def _emit_dead_letter(
        self,
        mail: Mail,
        reason: str,
        error: BaseException | None,
        reply: object = None,
    ) -> None:
        system = self._system
        if system is None:
            return
        message = mail[MESSAGE] if reply is None else {"reply": reply}
        system._events.emit(
            ActorEvent(
                EventKind.DEAD_LETTER,
                self.name,
                self.id,
                exception=error,
                reason=reason,
                message=message if isinstance(message, dict) else None,
                incarnation=self._incarnation,
            )
        )


_RUNTIME_NAMES: Final = frozenset(
    name
    for name, value in vars(Actor).items()
    if name.startswith("_") and not name.startswith("__") and callable(value)
) - {"_process"}
"""`Actor`'s own private methods: a subclass that defines one by chance (its own ``_run``)
would silently replace the runtime's, so defining a class that does is an error."""

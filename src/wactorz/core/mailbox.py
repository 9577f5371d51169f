"""Mailboxes: the bounded queue in front of an actor, and the envelopes that travel in it.

A message is a plain JSON-compatible dict, owned by the user. Everything the
runtime needs to know about it — who sent it, where the answer goes, which topic
it was published on — travels beside it in a `Mail` tuple, never inside it. The
`Envelope` a handler reads (`Actor.envelope`) is built from that tuple only when
it is asked for: most messages never are, and the hot path should not pay for it.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Awaitable, Callable, Sized
from typing import Any, Final, Protocol, TypeAlias, final

import attrs
import outcome
import trio

from wactorz.core.errors import AskTimeout, InvalidMessage
from wactorz.core.ids import new_wid
from wactorz.core.turns import Turns

__all__ = ["DEFAULT_MAILBOX_SIZE", "Envelope", "ReplySlot", "check_message"]

DEFAULT_MAILBOX_SIZE: Final = 1024
"""Messages an actor's mailbox holds before senders have to wait."""

_SCALARS: Final = frozenset({str, int, float, bool, type(None)})
_MAX_DEPTH: Final = 64


def check_message(message: object) -> None:
    """Raise `InvalidMessage` unless ``message`` is a JSON-compatible dict.

    Strings, numbers, booleans, None, lists (and tuples) and dicts with string
    keys are accepted, nested up to 64 levels. The common flat dict of scalars is
    checked without recursion, since every message passes through here.
    """
    if type(message) is not dict:
        raise InvalidMessage(f"expected a dict, got {type(message).__name__}")
    for key, value in message.items():
        if type(key) is not str:
            raise InvalidMessage(f"key {key!r} is {_with_article(type(key).__name__)}, not a str")
        if type(value) not in _SCALARS:
            _check_value(value, key, 1)


def check_reply(value: object) -> None:
    """Raise `InvalidMessage` unless ``value`` is JSON-compatible, as an answer must be.

    A reply may be any JSON value (None, a string, a number, a list...), checked like
    the values of a message.
    """
    kind = type(value)
    if kind in _SCALARS:
        return
    if kind is dict:  # the common answer, a flat dict, checked as messages are: no recursion
        for key, item in value.items():  # type: ignore[attr-defined]
            if type(key) is not str:
                raise InvalidMessage(
                    f"reply has key {key!r} of type {type(key).__name__}", subject="reply"
                )
            if type(item) not in _SCALARS:
                _check_value(item, f"reply.{key}", 2, "reply")
        return
    _check_value(value, "reply", 1, "reply")


def _check_value(value: object, path: str, depth: int, subject: str = "message") -> None:
    if depth > _MAX_DEPTH:
        raise InvalidMessage(
            f"{path} is nested more than {_MAX_DEPTH} levels deep (a cycle?)", subject=subject
        )
    if isinstance(value, str | int | float | None):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMessage(
                    f"{path} has key {key!r} of type {type(key).__name__}", subject=subject
                )
            _check_value(item, f"{path}.{key}", depth + 1, subject)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1, subject)
    else:
        raise InvalidMessage(f"{path} is {_with_article(type(value).__name__)}", subject=subject)


def _with_article(noun: str) -> str:
    """``noun`` after "a" or "an", by its first letter: "an int", "an object", "a set"."""
    return f"an {noun}" if noun[:1].lower() in ("a", "e", "i", "o", "u") else f"a {noun}"


@final
class Reply:
    """The one-shot slot an `ask` waits on; the handling actor fills it exactly once.

    Filling it after the asker gave up (its timeout or cancellation) has no effect
    and returns False, so the caller can report the late answer. Given the
    system's `Turns`, waking the asker counts there until it runs. Given the
    asked actor's name and the ask's timeout, `expire` can time the ask out.
    """

    __slots__ = ("_abandoned", "_asked", "_gone", "_result", "_task", "_timeout", "_turns", "due")

    def __init__(
        self, turns: Turns | None = None, asked: str = "", timeout: float = math.inf
    ) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._result: outcome.Outcome[Any] | None = None
        self._abandoned = False
        self._turns = turns
        self._gone: trio.Event | None = None
        """Set when the asker stops waiting; made only for those who watch for it."""
        self._asked = asked
        self._timeout = timeout
        self.due = math.inf
        """When `expire` is due (`trio.current_time`), if a timer queue holds it."""

    @property
    def asked(self) -> str:
        """The name of the actor asked, if given ("" if not)."""
        return self._asked

    @property
    def pending(self) -> bool:
        """True while nobody has answered and the asker is still interested."""
        return self._result is None and not self._abandoned

    async def wait_abandoned(self) -> None:
        """Return once the asker has stopped waiting unanswered (its timeout, or cancellation)."""
        if self._abandoned:
            await trio.lowlevel.checkpoint()
            return
        if self._gone is None:
            self._gone = trio.Event()
        await self._gone.wait()

    def resolve(self, value: object) -> bool:
        """Answer with ``value``; return whether the asker will see it."""
        return self._finish(outcome.Value(value))

    def fail(self, error: BaseException) -> bool:
        """Answer with an error the asker will raise; return whether it will see it."""
        return self._finish(outcome.Error(error))

    def expire(self) -> None:
        """The ask's deadline has passed: its asker, if still waiting, raises `AskTimeout`.

        The slot is then abandoned, as on cancellation: a later answer is refused.
        """
        task = self._task
        if task is None:
            return  # answered, or the asker stopped waiting
        self._task = None
        self._abandoned = True
        if self._gone is not None:
            self._gone.set()
        trio.lowlevel.reschedule(task, outcome.Error(AskTimeout(self._asked, self._timeout)))

    def _finish(self, result: outcome.Outcome[Any]) -> bool:
        if not self.pending:
            return False
        self._result = result
        if self._task is not None:
            trio.lowlevel.reschedule(self._task, result)
            self._task = None
            if self._turns is not None:
                self._turns.woken += 1
        return True

    async def wait(self) -> Any:
        """Wait for the answer and return it (or raise its error).

        Cancellation leaves the slot abandoned: a later answer is refused.
        """
        if self._result is not None:
            await trio.lowlevel.checkpoint()
            return self._result.unwrap()
        self._task = trio.lowlevel.current_task()

        def abort(_: Callable[[], object]) -> trio.lowlevel.Abort:
            self._task = None
            self._abandoned = True
            if self._gone is not None:
                self._gone.set()
            return trio.lowlevel.Abort.SUCCEEDED

        try:
            return await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            if self._turns is not None and not self._abandoned:
                self._turns.woken -= 1  # woken by `_finish`, which counted it


Mail: TypeAlias = "tuple[dict[str, Any], str | None, Reply | None, str | None]"
"""What a mailbox queues: ``(message, sender, reply, topic)``, read by the index constants
below; `Envelope` is its public view.

A plain tuple, not a NamedTuple or a ``__slots__`` class, because every tell builds one.
Measured on the development machine (``python -m benchmarks --only tell,ask,fan``, one
session, against the tuple): a NamedTuple took tell throughput from 739k to 485k msgs/s and
fan-out from 605k to 480k; a ``__slots__`` class from 739k to 679k (unchecked 894k to 781k)
and 605k to 539k. Ask latency did not move either way.
"""

MESSAGE: Final = 0
"""`Mail` index of the message, the user's dict."""
SENDER: Final = 1
"""`Mail` index of the sender's id (None when not sent by an actor)."""
REPLY: Final = 2
"""`Mail` index of the `Reply` an ask waits on (None for a tell or a publication)."""
TOPIC: Final = 3
"""`Mail` index of the topic a publication came on (None for a direct message)."""


class ReplySlot(Protocol):
    """What a handler sees of an ask's reply slot (`Envelope.reply`): whether it is awaited.

    Read-only on purpose: an actor answers an ask by returning from `Actor._process`, or
    later through `Actor.reply_later`.
    """

    @property
    def pending(self) -> bool:
        """True until the ask is answered or its asker stops waiting (its timeout, or
        cancellation): False means nobody will see an answer any more."""
        ...


@final
class Envelope:
    """A message plus its metadata: the sender, the reply slot of an ask, the topic.

    ``id`` is a WID, stamped the first time something reads it (most messages
    are never asked for theirs, and the hot path should not pay for it).
    """

    __slots__ = ("_id", "message", "reply", "sender", "topic")

    def __init__(
        self,
        message: dict[str, Any],
        sender: str | None = None,
        reply: ReplySlot | None = None,
        topic: str | None = None,
    ) -> None:
        self.message = message
        """The message, the sender's dict."""
        self.sender = sender
        """The id of the actor that sent it; None if it was not sent by an actor."""
        self.reply: ReplySlot | None = reply
        """For an ask, its reply slot (`ReplySlot.pending`: the asker still waits); None
        for a tell or a publication."""
        self.topic = topic
        """The topic it was published on; None if it was sent to this actor directly."""
        self._id: str | None = None

    @property
    def id(self) -> str:
        """This message's WID."""
        if self._id is None:
            self._id = new_wid("msg")
        return self._id

    @property
    def correlation_id(self) -> str | None:
        """For an ask, the id its answer correlates with; None for a tell."""
        return self.id if self.reply is not None else None

    def __repr__(self) -> str:
        return f"Envelope({self.message!r}, sender={self.sender!r}, topic={self.topic!r})"


@final
@attrs.frozen
class MailboxStatistics:
    """A snapshot of a mailbox: queued messages, its capacity, senders waiting for room."""

    queued: int
    capacity: int
    senders_waiting: int


_ALWAYS: Final = (True,)
"""What `Mailbox.waiting_receivers` and `waiting_senders` are where Trio's channel internals
are not where this Trio version was expected to keep them: always true, so that every
send and receive goes through the channel's own methods."""


def _channels_keep_their_state_inside() -> bool:
    """Whether Trio's memory channels hold their queue and waiting receivers where
    `Mailbox` reads them (checked at import, and by the tests)."""
    send, receive = trio.open_memory_channel[Mail](1)
    try:
        state = getattr(receive, "_state", None)
        return (
            state is getattr(send, "_state", None)
            and isinstance(getattr(state, "data", None), collections.deque)
            and isinstance(getattr(state, "receive_tasks", None), dict)
            and isinstance(getattr(receive, "_tasks", None), set)
            and getattr(receive, "_closed", None) is False
            and isinstance(getattr(state, "open_send_channels", None), int)
        )
    finally:
        send.close()
        receive.close()


_INSIDE: Final = _channels_keep_their_state_inside()


@final
class Mailbox:
    """An actor's bounded inbox: a Trio memory channel that outlives restarts.

    The runtime keeps one mailbox per actor *address*: a supervisor restarting
    the actor hands the same mailbox to the new incarnation, so messages queued
    behind a crash are not lost.
    """

    __slots__ = (
        "_waiter",
        "capacity",
        "queue",
        "receive_channel",
        "send_channel",
        "waiting_receivers",
        "waiting_senders",
    )

    def __init__(self, capacity: int = DEFAULT_MAILBOX_SIZE) -> None:
        if capacity < 1:
            raise ValueError(f"a mailbox needs room for at least 1 message, not {capacity}")
        self.capacity = capacity
        # Not `open_memory_channel[Mail](...)`: subscripting costs every spawn ~0.4 µs.
        send, receive = trio.open_memory_channel(capacity)
        self.send_channel: trio.MemorySendChannel[Mail] = send
        self.receive_channel: trio.MemoryReceiveChannel[Mail] = receive
        self.queue: collections.deque[Mail]
        """The channel's own queue: true (non-empty) while mail waits to be received.

        The hot paths use it directly while nobody waits on the other side: a tell is
        appended (``not waiting_receivers`` and ``len(queue) < capacity``), the actor pops
        it (``not waiting_senders``), sparing each a call of the channel's method, which is
        a tenth of a tell's time; otherwise they call the channel's ``send_nowait`` and
        ``receive_nowait``, which hand mail over and wake who waits. (The channel's
        ``peak_buffer_used`` statistic then misses these; nothing here reads it.) Where
        Trio keeps its internals elsewhere, an empty deque never used, and the waiting
        sides `_ALWAYS`, so the channel's methods do everything.
        """
        self.waiting_receivers: Sized
        """Tasks waiting to receive (the actor, idle): true while a send must hand over."""
        self.waiting_senders: Sized
        """Tasks waiting for room: true while a receive must let one in."""
        if _INSIDE:
            state = receive._state
            self.queue = state.data
            self.waiting_receivers = state.receive_tasks
            self.waiting_senders = state.send_tasks
        else:
            self.queue = collections.deque()
            self.waiting_receivers = self.waiting_senders = _ALWAYS
        self._waiter: trio.lowlevel.Task | None = None

    def wait(self) -> Awaitable[Mail]:
        """Wait for the next mail: the receive of an empty mailbox, to await at once.

        What ``receive_channel.receive()`` does, less its coroutine: the calling task
        waits as the channel's own receivers do, so a send hands it the mail directly
        and closing the channel wakes it with `trio.ClosedResourceError`. An actor's
        whole idle life is spent here, and the coroutine (with the frame object its
        `trio.WouldBlock` leaves) was about 570 bytes of each idle actor's memory.
        """
        receive = self.receive_channel
        if not _INSIDE or self.queue or receive._closed or not receive._state.open_send_channels:
            return receive.receive()  # the channel's own answer: mail, or the error
        # `queue` is empty, so no sender waits for room (the capacity is at least 1).
        task = trio.lowlevel.current_task()
        receive._tasks.add(task)
        receive._state.receive_tasks[task] = None
        task.custom_sleep_data = receive
        self._waiter = task
        # Awaited by the caller, at once: returned rather than awaited here, to spare a frame.
        return trio.lowlevel.wait_task_rescheduled(self._abort_wait)  # noqa: ASYNC105

    def put_back(self, mail: Mail) -> None:
        """Return ``mail``, just received, to the front of the queue, to be received next.

        For an actor that has to change places before handling it (`Actor._serve`). The
        queue may then hold one more than its capacity, until it is next received. Only
        where the channel's queue can be reached (``_INSIDE``).
        """
        assert _INSIDE
        self.queue.appendleft(mail)

    def _abort_wait(self, _: Callable[[], object]) -> trio.lowlevel.Abort:
        """The task waiting in `wait` is cancelled: take it off the channel's receivers."""
        task, self._waiter = self._waiter, None
        assert task is not None
        self.receive_channel._tasks.discard(task)
        self.receive_channel._state.receive_tasks.pop(task, None)
        return trio.lowlevel.Abort.SUCCEEDED

    def statistics(self) -> MailboxStatistics:
        """Report how full the mailbox is."""
        stats = self.send_channel.statistics()
        return MailboxStatistics(
            queued=stats.current_buffer_used,
            capacity=self.capacity,
            senders_waiting=stats.tasks_waiting_send,
        )

    def close(self) -> list[Mail]:
        """Close the mailbox for good and return what was still queued, in order.

        Senders blocked waiting for room get their message queued and returned
        here too; senders arriving later get `trio.BrokenResourceError`.
        """
        left: list[Mail] = []
        receive = self.receive_channel
        try:
            # Looked at, not found by `trio.WouldBlock` where it can be: stops are hot too.
            while self.queue or not _INSIDE:
                left.append(receive.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            pass
        receive.close()
        return left

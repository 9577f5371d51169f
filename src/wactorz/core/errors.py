"""The exceptions the runtime raises, each saying what went wrong and what to do next."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import trio

__all__ = [
    "ActorCrashed",
    "ActorNotFound",
    "ActorStartFailed",
    "ActorStopped",
    "AmbiguousName",
    "AskTimeout",
    "DuplicateName",
    "InvalidMessage",
    "MailboxFull",
    "MessageRejected",
    "NodeDown",
    "RemoteError",
    "ReplyError",
    "SupervisorError",
    "SupervisorGaveUp",
    "SystemNotRunning",
    "WactorzError",
]


def brief_repr(value: object, limit: int = 80) -> str:
    """``repr(value)``, cut to about ``limit`` characters with the full length stated.

    For error messages and log lines about values that came from outside, which may be
    a megabyte long.
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: max(limit - 20, 10)]}... ({len(text)} characters)"


def root_cause(error: BaseException) -> BaseException:
    """The exception that actually went wrong: the first leaf of an exception group.

    A failure inside a nursery arrives wrapped in a group ("Exceptions from Trio
    nursery (1 sub-exception)"), which names nothing; the leaf does. Cancellations
    are passed over when the group holds anything else.
    """
    if isinstance(error, BaseExceptionGroup):
        leaves = list(_leaves(error))
        real = [leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)]
        return (real or leaves)[0]
    return error


def describe_error(error: BaseException) -> str:
    """``"Type: message"`` of the `root_cause` of ``error``, plus how many others a group held."""
    cause = root_cause(error)
    text = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
    if isinstance(error, BaseExceptionGroup):
        others = sum(1 for _ in _leaves(error)) - 1
        if others:
            text += f" (and {others} more)"
    return text


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            yield from _leaves(error)
        else:
            yield error


class WactorzError(Exception):
    """Base class of every error the runtime raises on purpose."""


class SystemNotRunning(WactorzError):
    """The actor system was used before `start()` or after `stop()`."""

    def __init__(self, action: str) -> None:
        super().__init__(
            f"cannot {action}: the actor system is not running "
            "(use `async with ActorSystem() as system:` or `await system.start()` first)"
        )


def _known(names: Iterable[str], limit: int = 8) -> str:
    shown = sorted(names)
    if not shown:
        return "no actors are running"
    extra = f", ... ({len(shown) - limit} more)" if len(shown) > limit else ""
    return "known: " + ", ".join(shown[:limit]) + extra


class ActorNotFound(WactorzError, LookupError):
    """No running actor has this id or name; the message became a dead letter.

    ``gone`` says what became of an actor of that name that ran recently ("crashed
    0.2 s ago"), when the system remembers one (it remembers recent crashes).
    ``unknown_node`` is the node of a ``name@node`` address that no node answers to; then
    ``known`` lists the nodes that are known.
    """

    def __init__(
        self,
        target: str,
        known: Iterable[str] = (),
        gone: str | None = None,
        *,
        unknown_node: str | None = None,
    ) -> None:
        self.target = target
        self.gone = gone
        if unknown_node is not None:
            nodes = sorted(known)
            super().__init__(
                f"no actor {target!r}: no node {unknown_node!r} is known "
                f"({'nodes: ' + ', '.join(nodes) if nodes else 'no other node is known'}); "
                "check the node's name, and that it runs with MQTT on the same broker and "
                "topic_prefix"
            )
        elif gone is not None:
            super().__init__(
                f"actor {target!r} {gone} and is not running now ({_known(known)}); "
                "put it under a Supervisor to have it restarted"
            )
        else:
            super().__init__(f"no actor with id or name {target!r} ({_known(known)})")


class AmbiguousName(WactorzError, LookupError):
    """An unqualified name that is not local names actors on several other nodes.

    ``candidates`` are their addresses (``name@node``): send to one of them instead.
    """

    def __init__(self, name: str, candidates: Iterable[str]) -> None:
        self.name = name
        self.candidates = tuple(sorted(candidates))
        super().__init__(
            f"the name {name!r} is not local and several nodes run an actor of that name "
            f"({', '.join(self.candidates)}): address one of them as name@node"
        )


class NodeDown(WactorzError):
    """The node an actor runs on cannot be reached: it is down, or this node lost the broker.

    Raised by a send or an ask to an actor on such a node, and at once to every ask still
    waiting on a node when it goes down. ``node`` is that node, ``target`` the address
    used (None when it does not apply), ``reason`` why the node counts as down.
    """

    def __init__(self, node: str, target: str | None = None, reason: str | None = None) -> None:
        self.node = node
        self.target = target
        self.reason = reason
        what = f"actor {target!r} cannot be reached: its node " if target else "node "
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"{what}{node!r} is down{why}; retry once it is back ('wactorz nodes' lists the "
            "nodes), or address an actor on another node"
        )


class RemoteError(WactorzError):
    """Another node refused or failed a request for a reason with no local equivalent.

    ``code`` is the error code of the wire format (``forbidden``, ``busy``, ``bad_request``,
    ``too_large``, ``unavailable``, ``internal_error``: see ``docs/mqtt.md``), ``node`` the
    node that answered; the text is that node's sentence for the sender.
    """

    def __init__(self, code: str, text: str, node: str | None = None) -> None:
        self.code = code
        self.node = node
        super().__init__(text)


class ActorStopped(WactorzError):
    """The actor stopped before it handled the message you are waiting on."""

    def __init__(self, target: str, detail: str = "") -> None:
        self.target = target
        why = f" ({detail})" if detail else ""
        super().__init__(
            f"actor {target!r} stopped before handling the message{why}; "
            "it was reported as a dead letter — check that the actor is running before asking"
        )


class ActorCrashed(WactorzError):
    """The actor raised while handling the message you asked; `__cause__` is its exception."""

    def __init__(self, target: str, error: BaseException) -> None:
        self.target = target
        self.error = error
        super().__init__(
            f"actor {target!r} crashed while handling your message: {describe_error(error)}"
        )
        self.__cause__ = error


class AskTimeout(WactorzError, TimeoutError):
    """No reply arrived within the ask's timeout."""

    def __init__(self, target: str, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        super().__init__(
            f"actor {target!r} did not reply within {timeout:g} s; "
            "pass a larger `timeout=` or check that it is not blocked"
        )


class MailboxFull(WactorzError):
    """`send_nowait` found the target's mailbox full."""

    def __init__(self, target: str, capacity: int) -> None:
        self.target = target
        self.capacity = capacity
        super().__init__(
            f"the mailbox of {target!r} is full ({capacity} messages); "
            "use `await send(...)` to wait for room, or raise the actor's `mailbox_size`"
        )


class DuplicateName(WactorzError, ValueError):
    """An actor or supervisor child with this name already exists."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"the name {name!r} is already taken; "
            "choose another name or stop the existing one first"
        )


class InvalidMessage(WactorzError, TypeError):
    """A message is not a JSON-compatible dict, or a reply not a JSON-compatible value."""

    def __init__(self, problem: str, *, subject: str = "message") -> None:
        if subject == "message":
            allowed = (
                "messages are dicts with string keys whose values are str, int, float, bool, "
                "None, lists or dicts of those"
            )
        else:
            allowed = f"a {subject} is a str, int, float, bool, None, or a list or dict of those"
        super().__init__(f"{subject} is not JSON-compatible: {problem}; {allowed}")


class MessageRejected(WactorzError):
    """An actor refused a message it does not accept; the actor itself carries on.

    Raise it from `Actor._process` with a sentence for the sender ("unknown request:
    send {'get': 'health'}"): an ask raises it at the asker, a refused tell becomes a
    dead letter, and neither counts as a crash. ``target`` is the refusing actor's
    name, set by the runtime. Its text reaches whoever sent the message, over MQTT
    too, so it should say what to send instead, and nothing internal.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        self.target: str | None = None
        super().__init__(reason)


class ReplyError(WactorzError, RuntimeError):
    """An answer given twice, or `Actor.reply_later` called where there is nothing to answer."""


class ActorStartFailed(WactorzError):
    """An actor raised in `on_start`, so it never ran; `__cause__` is its exception."""

    def __init__(self, name: str, error: BaseException, supervisor: str | None = None) -> None:
        self.name = name
        self.error = error
        self.supervisor = supervisor
        where = f"child {name!r} of supervisor {supervisor!r}" if supervisor else f"actor {name!r}"
        super().__init__(f"{where} failed to start: {describe_error(error)}")
        self.__cause__ = error


class SupervisorError(WactorzError):
    """A supervisor management call was not possible in the child's current state."""


class SupervisorGaveUp(WactorzError):
    """A supervisor exceeded its restart intensity and stopped its subtree."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"supervisor {name!r} gave up: {reason}")

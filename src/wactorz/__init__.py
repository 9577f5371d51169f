"""wactorz: a Trio-native actor runtime with OTP-style supervision.

The public API, importable from here (``from wactorz import Actor, ActorSystem``), by the
module of `wactorz.core` that defines and documents each name (and still exports it):

- `wactorz.core.actor`: `Actor` (subclass it and implement `Actor._process`), `ActorState`,
  `ActorStatistics`, `DeferredReply` (what `Actor.reply_later` returns), `check_name`;
- `wactorz.core.registry`: `ActorSystem`, `SystemStatistics`;
- `wactorz.core.remote`: `NodeInfo`, `RemoteActorInfo` (what `ActorSystem.nodes` reports);
- `wactorz.core.supervisor`: `Supervisor`, `ChildInfo`, `ChildCounts`;
- `wactorz.core.strategy`: `Strategy`, `RestartType`, `AutoShutdown`, `ChildStatus`;
- `wactorz.core.mailbox`: `Envelope`, `check_message`;
- `wactorz.core.topics`: `check_topic`, `check_filter`, `topic_matches`;
- `wactorz.core.events`: `ActorEvent`, `EventKind`, `EventStream`;
- `wactorz.core.timers`: `Timer` (what `Actor.send_after` and `Actor.send_every` return);
- `wactorz.core.tools`: `tool` (marks a method as a tool other actors can call), `Tool`,
  `ToolOwner` (what `ActorSystem.tools` lists), `tool_call` (the message that calls one);
- `wactorz.core.ids`: `WID`, `InvalidWID`, `new_wid`, `parse_wid`, `is_wid`;
- `wactorz.core.errors`: `WactorzError`, the base of `ActorCrashed`, `ActorNotFound`,
  `AmbiguousName`, `ActorStartFailed`, `ActorStopped`, `AskTimeout`, `DuplicateName`,
  `InvalidMessage`, `MailboxFull`, `MessageRejected`, `NodeDown`, `RemoteError`,
  `ReplyError`, `SupervisorError`, `SupervisorGaveUp` and `SystemNotRunning`.

The other submodules: `wactorz.agents` holds ready-made actors (the health monitor),
`wactorz.interfaces` the front doors to an actor system (MQTT), `wactorz.config` the
settings, `wactorz.telemetry` the topics and payloads the monitor publishes,
`wactorz.service` the service that ``wactorz run`` keeps running and `wactorz.logs` its
logging, `wactorz.testing` test doubles for programs built on wactorz (a fake Anthropic
Messages API); ``wactorz.__main__`` is the command line (``python -m wactorz``, or
``wactorz``).
"""

# Imported under private names, so that the package's public names are its API alone.
import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from wactorz.core.actor import Actor as Actor
    from wactorz.core.actor import ActorState as ActorState
    from wactorz.core.actor import ActorStatistics as ActorStatistics
    from wactorz.core.actor import DeferredReply as DeferredReply
    from wactorz.core.actor import check_name as check_name
    from wactorz.core.errors import ActorCrashed as ActorCrashed
    from wactorz.core.errors import ActorNotFound as ActorNotFound
    from wactorz.core.errors import ActorStartFailed as ActorStartFailed
    from wactorz.core.errors import ActorStopped as ActorStopped
    from wactorz.core.errors import AmbiguousName as AmbiguousName
    from wactorz.core.errors import AskTimeout as AskTimeout
    from wactorz.core.errors import DuplicateName as DuplicateName
    from wactorz.core.errors import InvalidMessage as InvalidMessage
    from wactorz.core.errors import MailboxFull as MailboxFull
    from wactorz.core.errors import MessageRejected as MessageRejected
    from wactorz.core.errors import NodeDown as NodeDown
    from wactorz.core.errors import RemoteError as RemoteError
    from wactorz.core.errors import ReplyError as ReplyError
    from wactorz.core.errors import SupervisorError as SupervisorError
    from wactorz.core.errors import SupervisorGaveUp as SupervisorGaveUp
    from wactorz.core.errors import SystemNotRunning as SystemNotRunning
    from wactorz.core.errors import WactorzError as WactorzError
    from wactorz.core.events import ActorEvent as ActorEvent
    from wactorz.core.events import EventKind as EventKind
    from wactorz.core.events import EventStream as EventStream
    from wactorz.core.ids import WID as WID
    from wactorz.core.ids import InvalidWID as InvalidWID
    from wactorz.core.ids import is_wid as is_wid
    from wactorz.core.ids import new_wid as new_wid
    from wactorz.core.ids import parse_wid as parse_wid
    from wactorz.core.mailbox import Envelope as Envelope
    from wactorz.core.mailbox import check_message as check_message
    from wactorz.core.registry import ActorSystem as ActorSystem
    from wactorz.core.registry import SystemStatistics as SystemStatistics
    from wactorz.core.remote import NodeInfo as NodeInfo
    from wactorz.core.remote import RemoteActorInfo as RemoteActorInfo
    from wactorz.core.strategy import AutoShutdown as AutoShutdown
    from wactorz.core.strategy import ChildStatus as ChildStatus
    from wactorz.core.strategy import RestartType as RestartType
    from wactorz.core.strategy import Strategy as Strategy
    from wactorz.core.supervisor import ChildCounts as ChildCounts
    from wactorz.core.supervisor import ChildInfo as ChildInfo
    from wactorz.core.supervisor import Supervisor as Supervisor
    from wactorz.core.timers import Timer as Timer
    from wactorz.core.tools import Tool as Tool
    from wactorz.core.tools import ToolOwner as ToolOwner
    from wactorz.core.tools import tool as tool
    from wactorz.core.tools import tool_call as tool_call
    from wactorz.core.topics import check_filter as check_filter
    from wactorz.core.topics import check_topic as check_topic
    from wactorz.core.topics import topic_matches as topic_matches

    __version__: str

# The names above, by the module of `wactorz.core` that defines them. They are imported
# on first use, as `__version__` is read: `python -m wactorz` imports this package before
# it can handle a Ctrl-C (see `wactorz.__main__`), and importing the core (Trio, attrs)
# would cost it some 100 ms first.
_HOMES: _typing.Final = {
    "actor": ("Actor", "ActorState", "ActorStatistics", "DeferredReply", "check_name"),
    "errors": (
        "ActorCrashed",
        "ActorNotFound",
        "AmbiguousName",
        "ActorStartFailed",
        "ActorStopped",
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
    ),
    "events": ("ActorEvent", "EventKind", "EventStream"),
    "ids": ("WID", "InvalidWID", "is_wid", "new_wid", "parse_wid"),
    "mailbox": ("Envelope", "check_message"),
    "registry": ("ActorSystem", "SystemStatistics"),
    "remote": ("NodeInfo", "RemoteActorInfo"),
    "strategy": ("AutoShutdown", "ChildStatus", "RestartType", "Strategy"),
    "supervisor": ("ChildCounts", "ChildInfo", "Supervisor"),
    "timers": ("Timer",),
    "tools": ("Tool", "ToolOwner", "tool", "tool_call"),
    "topics": ("check_filter", "check_topic", "topic_matches"),
}
_HOME_OF: _typing.Final = {
    name: f"wactorz.core.{module}" for module, names in _HOMES.items() for name in names
}

# No NullHandler here: with no logging configured at all, Python's last-resort handler
# prints warnings and errors on stderr, so that a crash is seen in a program that never
# set logging up; configuring logging in any way silences it.


def _load(name: str) -> object:
    """The module's `__getattr__`: import public ``name`` on first use, and keep it."""
    home = _HOME_OF.get(name)
    if home is not None:
        found: object = getattr(_importlib.import_module(home), name)
    elif name == "__version__":
        # Read from the installed metadata on first use: importing importlib.metadata
        # costs some 20 ms, which every `python -m wactorz` would pay before it can
        # handle a Ctrl-C (see `wactorz.__main__`).
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("wactorz")
        except PackageNotFoundError:  # a source tree that was never installed
            found = "0+unknown"
    else:
        raise AttributeError(f"module 'wactorz' has no attribute {name!r}")
    globals()[name] = found
    return found


# Type checkers read the imports above instead: given a `__getattr__`, they would let any
# misspelt name through, typed as Any.
if not _typing.TYPE_CHECKING:
    __getattr__ = _load


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME_OF, "__version__"})

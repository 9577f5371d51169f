"""The telemetry contract: the topics the monitor publishes on and its payloads, as typed data.

The health monitor (`wactorz.agents.monitor_agent`) publishes on the actor system's local
topics, and the MQTT bridge forwards those topics to the broker under its
``topic_prefix`` (`FORWARDED_TOPICS` lists the filters), so local and remote consumers
read the same payloads. The bridge adds one payload of its own, each actor's lifecycle
status (`ActorStatus`). This module owns both sides of that contract: the topic names,
and one frozen attrs class per payload.

Every payload class has fields named exactly like the keys of the dict it is published
as. ``to_message()`` returns that dict, JSON-compatible, keys in the documented order;
``from_message(dict)`` reads one back, typed, and raises `ValueError` naming every bad
key (missing, or of the wrong type) if it is malformed. Keys a class does not know are
ignored, so that a consumer still reads the payloads of a newer node. Nothing is checked
when a payload is built (mypy checks the producers; the monitor builds two per actor per
tick, and checking every field would be most of the cost): checking is the reader's job.

Times: ``time`` is wall-clock Unix time in seconds; every ``..._s`` is a duration in
seconds.

The payloads, by topic (local names; on the broker each is under the bridge's prefix):

- ``agents/<id>/heartbeat``: `ActorHeartbeat`, for every actor, every tick;
- ``agents/<id>/metrics``: `ActorMetrics`, for every actor, every tick;
- ``system/health``: `SystemHealth` (with `ProcessUsage`, `MachineUsage` and
  `ActiveAlert` inside), every tick;
- ``nodes/<node>/heartbeat``: `NodeHeartbeat`, every tick;
- ``agents/<id>/alert``, ``system/alert`` and ``alerts``: `PublishedAlert`, when the
  monitor raises or clears an alert;
- ``agents/<id>/status``, published by the bridge on the broker only: `ActorStatus`, for
  each lifecycle event of an actor.

`Failure` is the one internal payload: a crash or give-up, as the monitor's event
listener hands it to the monitor. It lives here because, like `ActorStatus`, it is an
`ActorEvent` turned into a dict, and this module is the one place that does that.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Final, Self, TypeVar, final, get_args, get_origin

import attrs
import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, mapping_structure_factory
from cattrs.errors import ClassValidationError, IterableValidationError
from cattrs.gen import make_dict_structure_fn

from wactorz.core.actor import ActorState
from wactorz.core.errors import brief_repr, describe_error
from wactorz.core.events import ActorEvent, EventKind

__all__ = [
    "ALERTS_TOPIC",
    "FAILURE_KINDS",
    "FORWARDED_TOPICS",
    "HEALTH_TOPIC",
    "STATUS_KINDS",
    "SYSTEM_ALERT_TOPIC",
    "ActiveAlert",
    "ActorHeartbeat",
    "ActorMetrics",
    "ActorStatus",
    "Failure",
    "MachineUsage",
    "NodeHeartbeat",
    "ProcessUsage",
    "PublishedAlert",
    "Severity",
    "SystemHealth",
    "alert_topic",
    "heartbeat_topic",
    "metrics_topic",
    "node_heartbeat_topic",
    "status_topic",
]

# ---- topics -----------------------------------------------------------------------------------

HEALTH_TOPIC: Final = "system/health"
"""Where the node's `SystemHealth` goes, every tick."""

SYSTEM_ALERT_TOPIC: Final = "system/alert"
"""Where alerts that are not about one actor go: the process, the machine, a supervisor."""

ALERTS_TOPIC: Final = "alerts"
"""Every alert, whatever its subject: the feed the visualization listens to.

Local only: the bridge need not forward it, since it repeats the other alert topics.
"""

FORWARDED_TOPICS: Final = (
    "agents/+/heartbeat",
    "agents/+/metrics",
    "agents/+/alert",
    HEALTH_TOPIC,
    SYSTEM_ALERT_TOPIC,
    "nodes/+/heartbeat",
)
"""The local topic filters covering what the monitor publishes for the outside world."""


def heartbeat_topic(actor_id: str) -> str:
    """The topic of an actor's heartbeat (`ActorHeartbeat`)."""
    return f"agents/{actor_id}/heartbeat"


def metrics_topic(actor_id: str) -> str:
    """The topic of an actor's metrics (`ActorMetrics`)."""
    return f"agents/{actor_id}/metrics"


def alert_topic(actor_id: str) -> str:
    """The topic of the alerts about one actor (`PublishedAlert`)."""
    return f"agents/{actor_id}/alert"


def node_heartbeat_topic(node: str) -> str:
    """The topic of a node's heartbeat (`NodeHeartbeat`)."""
    return f"nodes/{node}/heartbeat"


def status_topic(actor_id: str) -> str:
    """The topic of an actor's lifecycle status (`ActorStatus`), below the bridge's prefix.

    Only the bridge publishes it, and only on the broker: locally, lifecycle events are
    `ActorSystem.events`.
    """
    return f"agents/{actor_id}/status"


# ---- severities ------------------------------------------------------------------------------


class Severity(enum.StrEnum):
    """How urgent an alert is, from least to most."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for critical: for comparing severities."""
        return _RANKS[self]


_RANKS: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class _Payload:
    """What every payload class shares: it is published as the dict of its fields, keys
    in field order, enums as their values, tuples as lists; and read back checked."""

    __slots__ = ()

    _omitted_when_none: ClassVar[frozenset[str]] = frozenset()
    """Optional fields added to a payload after it was first published: left out of the
    message while None, so that the dicts consumers already read are unchanged."""
    _KIND_KEY: ClassVar[tuple[str, frozenset[EventKind]] | None] = None
    """For a payload that reports events: the key of the event's kind, and the kinds it
    may report."""

    def to_message(self) -> dict[str, Any]:
        """The payload as published: JSON-compatible, one key per field, in field order.

        An optional field added later (``details``) is left out while it is None.
        """
        message: dict[str, Any] = _WRITER.unstructure(self)
        for name in self._omitted_when_none:
            if message.get(name, 0) is None:
                del message[name]
        return message

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Self:
        """Read a published payload; `ValueError` naming every bad key if it is malformed
        (missing, not the JSON type it is published as, or an event kind it does not report)."""
        payload = _read(cls, message)
        if cls._KIND_KEY is not None:
            key, kinds = cls._KIND_KEY
            kind: EventKind = getattr(payload, key)
            if kind not in kinds:
                raise _malformed(cls, [f"{key}: {kind.value!r} is not one of {_kinds(kinds)}"])
        return payload


# ---- what the monitor publishes ----------------------------------------------------------------


@final
@attrs.frozen
class ActorHeartbeat(_Payload):
    """An actor is there: published on ``agents/<id>/heartbeat`` for every actor, every tick."""

    id: str
    """The actor's id."""
    name: str
    """The actor's name."""
    node: str
    """The node it runs on."""
    time: float
    """When the monitor looked (wall-clock Unix time)."""
    state: ActorState
    """created, starting, running, stopping, stopped or crashed."""
    incarnation: int
    """Restarts so far (0 for the first run)."""
    details: Mapping[str, Any] | None = None
    """What the actor reports about itself (`wactorz.core.actor.Actor.telemetry`), as it
    returned it: a JSON object whose keys the actor's kind documents (the LLM agent's is
    ``{"llm": {...}}``, see `wactorz.agents.llm_agent`). Absent from the message when the
    actor reports nothing."""

    _omitted_when_none: ClassVar[frozenset[str]] = frozenset({"details"})


@final
@attrs.frozen
class ActorMetrics(_Payload):
    """How an actor is doing: published on ``agents/<id>/metrics`` for every actor, every tick."""

    id: str
    """The actor's id."""
    name: str
    """The actor's name."""
    node: str
    """The node it runs on."""
    time: float
    """When the monitor looked (wall-clock Unix time)."""
    state: ActorState
    """created, starting, running, stopping, stopped or crashed."""
    queued: int
    """Messages waiting in its mailbox."""
    capacity: int
    """How many messages its mailbox holds."""
    mailbox_ratio: float
    """``queued / capacity`` (0.0 for a mailbox of no capacity)."""
    processed: int
    """Messages handled, over all incarnations."""
    rate: float | None
    """Messages handled per second since the previous tick; None on the first."""
    crashes: int
    """How many times it crashed."""
    incarnation: int
    """Restarts so far (0 for the first run)."""
    since_activity_s: float
    """Since it last went idle or started a batch."""
    stalled_s: float
    """How long it has had messages waiting without handling one; 0 when it keeps up."""
    details: Mapping[str, Any] | None = None
    """What the actor reports about itself, as in `ActorHeartbeat.details`; absent from the
    message when the actor reports nothing."""

    _omitted_when_none: ClassVar[frozenset[str]] = frozenset({"details"})


@final
@attrs.frozen
class ProcessUsage(_Payload):
    """What this node's process uses: the ``process`` part of `SystemHealth`."""

    cpu_percent: float
    """CPU use since the previous tick; 100 is one core busy (a Trio loop runs on one)."""
    rss_bytes: int
    """Resident memory."""
    threads: int
    """Threads of the process."""
    open_fds: int | None
    """Open file descriptors; None where the platform cannot tell (Windows)."""


@final
@attrs.frozen
class MachineUsage(_Payload):
    """How busy the machine the node runs on is: the ``machine`` part of `SystemHealth`."""

    cpu_percent: float
    """CPU use over all cores (100 is every core busy)."""
    memory_percent: float
    """The share of the machine's memory in use."""
    load_average: tuple[float, float, float] | None
    """Over the last 1, 5 and 15 minutes (a list in the message); None where the platform
    cannot tell."""


@final
@attrs.frozen
class ActiveAlert(_Payload):
    """One alert condition in force: an item of `SystemHealth.alerts`.

    The monitor answers ``{"get": "alerts"}`` with a list of these, too.
    """

    kind: str
    """What is wrong: ``cpu``, ``memory``, ``mailbox`` or ``silent`` (see the monitor)."""
    subject: str
    """What it is about: an actor's id, or the node name for the process and machine."""
    severity: Severity
    """warning or critical."""


@final
@attrs.frozen
class SystemHealth(_Payload):
    """The node as a whole: published on ``system/health`` every tick.

    The monitor answers ``{"get": "health"}`` with the latest one (None before its first
    tick). ``uptime_s``, ``process`` and ``machine`` are None while the monitor's metrics
    source fails (it logs that once and carries on with the actors).
    """

    node: str
    """The node's name."""
    time: float
    """When the monitor looked (wall-clock Unix time)."""
    status: str
    """``"ok"``, or the worst severity among the active alert conditions."""
    uptime_s: float | None
    """How long the process has run."""
    actors: int
    """Registered actors."""
    supervisors: int
    """Running supervisors (the root one excluded)."""
    states: Mapping[str, int]
    """How many actors are in each state, by state (``{"running": 3}``)."""
    crashes: int
    """Crashes, summed over the registered actors."""
    process: ProcessUsage | None
    """What the process uses."""
    machine: MachineUsage | None
    """How busy the machine is."""
    alerts: tuple[ActiveAlert, ...]
    """The alert conditions in force (a list in the message)."""
    interval_s: float
    """How often the monitor ticks."""
    ticks_skipped: int
    """Ticks the monitor's clock skipped because the previous one was still waiting."""


@final
@attrs.frozen
class NodeHeartbeat(_Payload):
    """A node is there: published on ``nodes/<node>/heartbeat`` every tick."""

    node: str
    """The node's name."""
    time: float
    """When the monitor looked (wall-clock Unix time)."""
    pid: int
    """The process id of the node."""
    version: str
    """The version of wactorz it runs."""
    uptime_s: float | None
    """How long the process has run; None while the metrics source fails."""
    status: str
    """As in `SystemHealth.status`: ``"ok"`` or the worst active severity."""
    actors: int
    """Registered actors."""


@final
@attrs.frozen
class PublishedAlert(_Payload):
    """An alert as the monitor publishes it.

    It goes to ``agents/<id>/alert`` when it concerns one actor, else to
    ``system/alert``, and every alert also to ``alerts``. The monitor's module docstring
    says which kinds there are, and when each is raised and cleared.
    """

    kind: str
    """``cpu``, ``memory``, ``mailbox``, ``silent``, ``crash`` or ``gave_up``."""
    severity: Severity
    """info, warning or critical."""
    subject: str
    """What it is about: the actor's or supervisor's id, or the node name. ``(kind,
    subject)`` names one condition."""
    name: str | None
    """The actor's or supervisor's name; None for the process and machine."""
    node: str
    """The node that raised it."""
    time: float
    """When it was raised (wall-clock Unix time)."""
    message: str
    """One line for people."""
    value: float | None
    """The measurement that crossed the limit; None for events (crashes, give-ups)."""
    threshold: float | None
    """The limit it crossed; None for events."""
    resolved: bool
    """True on the ``info`` alert saying that a condition has cleared."""
    suppressed: int
    """Alerts with the same ``(kind, subject)`` held back by the cooldown since the
    previous one published."""


# ---- lifecycle events as dicts ---------------------------------------------------------------

STATUS_KINDS: Final = frozenset(
    {EventKind.STARTED, EventKind.RESTARTED, EventKind.STOPPED, EventKind.CRASHED}
)
"""The lifecycle events an `ActorStatus` reports."""

FAILURE_KINDS: Final = frozenset({EventKind.CRASHED, EventKind.GAVE_UP})
"""The lifecycle events a `Failure` describes."""


@final
@attrs.frozen
class ActorStatus(_Payload):
    """An actor's last lifecycle event: published by the bridge on ``agents/<id>/status``.

    Supervisors are not reported, only actors.
    """

    _KIND_KEY = ("status", STATUS_KINDS)

    id: str
    """The actor's id."""
    name: str
    """The actor's name."""
    node: str
    """The node it runs on."""
    status: EventKind
    """What happened: started, restarted, crashed or stopped (`STATUS_KINDS`)."""
    time: float
    """When it happened (wall-clock Unix time)."""
    incarnation: int | None
    """Restarts before this event (0 for the first run), if the runtime said."""
    reason: str | None
    """The runtime's short explanation (``"stopped"``, ``"terminated by its
    supervisor"``...), or None."""
    error: str | None
    """``"Type: message"`` of what went wrong (`describe_error`), for a crash; else None."""

    @classmethod
    def from_event(cls, event: ActorEvent, node: str) -> ActorStatus:
        """The status reporting ``event``, an event of a kind in `STATUS_KINDS` on ``node``."""
        if event.kind not in STATUS_KINDS:
            raise ValueError(
                f"an actor status reports {_kinds(STATUS_KINDS)} events, not {event.kind}: "
                "check `event.kind in STATUS_KINDS` first"
            )
        error = event.exception
        return cls(
            id=event.actor_id,
            name=event.actor_name,
            node=node,
            status=event.kind,
            time=event.time,
            incarnation=event.incarnation,
            reason=event.reason,
            error=describe_error(error) if error is not None else None,
        )


@final
@attrs.frozen
class Failure(_Payload):
    """An actor's crash or a supervisor's give-up, as the monitor's event listener reports it.

    The listener turns each such `ActorEvent` into ``{"event": failure.to_message()}``
    and sends it to the monitor, which raises a ``crash`` or ``gave_up`` alert from it.
    """

    _KIND_KEY = ("kind", FAILURE_KINDS)

    kind: EventKind
    """crashed or gave_up (`FAILURE_KINDS`)."""
    name: str
    """The name of the actor that crashed or of the supervisor that gave up."""
    id: str
    """Its id."""
    supervisor: str | None
    """The id of the supervisor it runs under, if the runtime said."""
    reason: str | None
    """The runtime's short explanation, or None."""
    error: str | None
    """``"Type: message"`` of what went wrong (`describe_error`), or None."""
    incarnation: int | None
    """Restarts before this event (0 for the first run), if the runtime said."""

    @classmethod
    def from_event(cls, event: ActorEvent) -> Failure:
        """The failure ``event`` reports: a crash or a give-up (`FAILURE_KINDS`)."""
        if event.kind not in FAILURE_KINDS:
            raise ValueError(
                f"a failure is a {_kinds(FAILURE_KINDS)} event, not {event.kind}: "
                "check `event.kind in FAILURE_KINDS` first"
            )
        error = event.exception
        return cls(
            kind=event.kind,
            name=event.actor_name,
            id=event.actor_id,
            supervisor=event.supervisor,
            reason=event.reason,
            error=describe_error(error) if error is not None else None,
            incarnation=event.incarnation,
        )


def _kinds(kinds: frozenset[EventKind]) -> str:
    return ", ".join(sorted(kind.value for kind in kinds))


# ---- reading payloads back -------------------------------------------------------------------

_T = TypeVar("_T")


class _Unreadable(ValueError):
    """A value of the wrong type or shape; its text says what it is and what was expected."""


def _read_str(value: object, _: type) -> str:
    if isinstance(value, str):
        return value
    raise _Unreadable(f"{brief_repr(value, 60)} is not a string")


def _read_int(value: object, _: type) -> int:
    # Stricter than int(): no truncated floats, no numeric strings, no booleans.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise _Unreadable(f"{brief_repr(value, 60)} is not an integer")


def _read_float(value: object, _: type) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise _Unreadable(f"{brief_repr(value, 60)} is not a number")


def _read_bool(value: object, _: type) -> bool:
    # cattrs' default is bool(value), which makes "false" true.
    if isinstance(value, bool):
        return value
    raise _Unreadable(f"{brief_repr(value, 60)} is not true or false")


def _read_enum(value: object, kind: type[enum.StrEnum]) -> enum.StrEnum:
    if isinstance(value, str):
        try:
            return kind(value)
        except ValueError:
            pass
    raise _Unreadable(
        f"{brief_repr(value, 60)} is not one of {', '.join(member.value for member in kind)}"
    )


def _is_tuple(kind: Any) -> bool:
    return get_origin(kind) is tuple


def _tuple_reader(kind: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Read a JSON list as a tuple; cattrs alone would take a string for its characters."""
    args = get_args(kind)
    homogeneous = len(args) == 2 and args[1] is Ellipsis
    read = (
        homogenous_tuple_structure_factory(kind, converter)
        if homogeneous
        else converter.gen_structure_hetero_tuple(kind)
    )

    def read_tuple(value: object, _: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise _Unreadable(f"{brief_repr(value, 60)} is not a list")
        if not homogeneous and len(value) != len(args):
            raise _Unreadable(f"{brief_repr(value, 60)} is not a list of {len(args)} items")
        return read(value, kind)

    return read_tuple


def _is_mapping(kind: Any) -> bool:
    return get_origin(kind) in (dict, Mapping)


def _mapping_reader(kind: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Read a JSON object as a dict, saying so when it is something else.

    Built with cattrs' factory, not ``converter.gen_structure_mapping``, which also registers
    the hook it makes: one for ``Mapping[str, Any]`` then took over reading every mapping
    (``SystemHealth.states`` too), without the check below.
    """
    read = mapping_structure_factory(
        kind, converter, dict, detailed_validation=converter.detailed_validation
    )

    def read_mapping(value: object, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _Unreadable(f"{brief_repr(value, 60)} is not an object")
        return read(value, kind)

    return read_mapping


def _record_reader(kind: Any, converter: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Read a JSON object as an attrs class; cattrs alone would index into a string."""
    read = make_dict_structure_fn(kind, converter)

    def read_record(value: object, _: Any) -> Any:
        if not isinstance(value, Mapping):
            raise _Unreadable(f"{brief_repr(value, 60)} is not an object")
        return read(value, kind)

    return read_record


def _make_converter() -> cattrs.Converter:
    # JSON has no tuples, no enums and no type coercion: each hook takes exactly the JSON
    # types its field was published as.
    converter = cattrs.Converter()
    converter.register_structure_hook(str, _read_str)
    converter.register_structure_hook(int, _read_int)
    converter.register_structure_hook(float, _read_float)
    converter.register_structure_hook(bool, _read_bool)
    for kind in (ActorState, EventKind, Severity):
        converter.register_structure_hook(kind, _read_enum)
    converter.register_structure_hook_factory(_is_tuple, _tuple_reader)
    converter.register_structure_hook_factory(_is_mapping, _mapping_reader)
    converter.register_structure_hook_factory(attrs.has, _record_reader)
    return converter


_CONVERTER: Final = _make_converter()


def _make_writer() -> cattrs.Converter:
    # cattrs writes enums as their values and mappings as dicts; JSON has lists, not tuples.
    writer = cattrs.Converter()

    def tuple_writer(kind: Any) -> Callable[[Any], Any]:
        return lambda value: [writer.unstructure(item) for item in value]

    writer.register_unstructure_hook_factory(_is_tuple, tuple_writer)
    for kind in (ActorState, EventKind, Severity):  # str enums, which cattrs would pass as is
        writer.register_unstructure_hook(kind, _value_of)
    return writer


def _value_of(member: enum.StrEnum) -> str:
    return member.value


_WRITER: Final = _make_writer()


def _read(cls: type[_T], message: object) -> _T:
    """``message`` as a ``cls``, or `ValueError` listing every key that is wrong."""
    if not isinstance(message, Mapping):
        raise _malformed(cls, [f"it is {brief_repr(message, 60)}, not a dict"])
    try:
        return _CONVERTER.structure(message, cls)
    except (ClassValidationError, IterableValidationError, _Unreadable) as exc:
        raise _malformed(cls, list(_problems(exc, ""))) from None


def _malformed(cls: type, problems: list[str]) -> ValueError:
    return ValueError(
        f"not a valid {cls.__name__} message: {'; '.join(problems)} "
        f"(`wactorz.telemetry.{cls.__name__}` documents each key)"
    )


def _problems(exc: BaseException, path: str) -> Iterator[str]:
    """One line per bad value under ``exc``, each naming its key path (``process.threads``)."""
    if isinstance(exc, ClassValidationError):
        for inner, attribute in exc.group_exceptions()[0]:
            yield from _problems(inner, f"{path}.{attribute.name}" if path else attribute.name)
        for inner in exc.group_exceptions()[1]:
            yield from _problems(inner, path)
    elif isinstance(exc, IterableValidationError):
        for inner, item in exc.group_exceptions()[0]:
            yield from _problems(inner, f"{path}[{item.index!r}]")
        for inner in exc.group_exceptions()[1]:
            yield from _problems(inner, path)
    elif isinstance(exc, KeyError):
        yield f"{path} is missing"
    else:
        yield f"{path}: {exc}" if path else str(exc)

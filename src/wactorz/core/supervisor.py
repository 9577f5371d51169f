"""OTP-style supervisors: run children in cancel scopes and restart them as declared.

Each child runs as a task in its supervisor's nursery, inside a cancel scope the
supervisor owns (shielded, so that only the supervisor decides when a child is
cancelled: even an outer cancellation stops children one by one, in reverse
start order, each within its ``shutdown_s``). Every child exit is posted to the
supervisor's control channel; the control loop asks `wactorz.core.strategy`
what to do and carries the plan out. Exits the supervisor caused itself carry a
stale generation number and are ignored, so they never trigger restarts.

Management calls (`terminate_child`, `restart_child`, `add_and_start`, ...)
hold the same lock as the control loop, so they never interleave with a
restart in progress. Do not call them on your own supervisor from a child's
`on_start`: the supervisor is waiting for that `on_start` to return.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Protocol, Self, cast, final

import attrs
import trio

from wactorz.core.actor import Actor, ActorState, check_name
from wactorz.core.errors import (
    ActorStartFailed,
    ActorStopped,
    DuplicateName,
    SupervisorError,
    SupervisorGaveUp,
    SystemNotRunning,
)
from wactorz.core.events import ActorEvent, EventKind
from wactorz.core.ids import new_wid
from wactorz.core.mailbox import Reply
from wactorz.core.strategy import (
    AutoShutdown,
    ChildStatus,
    ChildView,
    Plan,
    RestartType,
    Rules,
    Strategy,
    plan_exit,
    restart_delay,
    to_restart_type,
)
from wactorz.core.turns import TURN, run_context

if TYPE_CHECKING:
    from wactorz.core.registry import ActorSystem

__all__ = ["ChildCounts", "ChildInfo", "Supervisor"]

_unnamed = itertools.count(1)
logger = logging.getLogger("wactorz.supervisor")

DEFAULT_SHUTDOWN_S = 5.0
"""How long a worker gets to finish its message and run `on_stop` before it is cancelled."""


class Runnable(Protocol):
    """What a supervisor runs as a child: an `Actor` incarnation, or a `Supervisor`.

    The runtime's own contract between this module, `wactorz.core.actor` and
    `wactorz.core.registry`, which only `Actor` and `Supervisor` implement: the supervisor
    prepares an incarnation, registers it, runs it in a task of its own and asks it to stop,
    whichever of the two it is.
    """

    name: str
    id: str

    @property
    def _stop_error(self) -> BaseException | None:
        """What went wrong while the run that has just returned stopped (`on_stop` raised)."""
        ...

    @property
    def _crash_reason(self) -> str | None:
        """Where the run that has just raised went wrong after it had started, in words for
        `ActorEvent.reason` (its exception says what went wrong)."""
        ...

    def _begin_incarnation(self, previous: Self | None, incarnation: int) -> None:
        """Get ready to run as incarnation number ``incarnation`` of its child (0 for the
        first), taking over from ``previous``, the one before it; before it is registered."""
        ...

    async def _run(
        self, started: Callable[[], None], scope: trio.CancelScope | None = None
    ) -> None:
        """Run until stopped (return) or crashed (raise); call ``started`` once ready.

        ``scope``, if given, is the cancel scope the supervisor cancels it by, not entered
        yet: an `Actor` that can idle outside it enters it once it has work.
        """
        ...

    def _request_stop(self) -> None:
        """Ask the run to end soon, without waiting for it; a stop arriving in the middle
        of a start is the supervisor's to deal with (see `Supervisor._cut_start_short`)."""
        ...


@final
class ChildInfo(NamedTuple):
    """One row of `Supervisor.which_children`."""

    name: str
    id: str | None
    kind: Literal["worker", "supervisor"]
    restart: RestartType
    status: ChildStatus

    @property
    def running(self) -> bool:
        """True if the child is running now."""
        return self.status is ChildStatus.RUNNING


@final
class ChildCounts(NamedTuple):
    """`Supervisor.count_children`: specs, running children, supervisors, workers."""

    specs: int
    active: int
    supervisors: int
    workers: int


@final
class _TaskEnd:
    """Set when one incarnation's task has ended; then advances the stops waiting for it.

    Not a `trio.Event`: no task parks on it (a `_StopSequence` is advanced by the
    ending task itself), and the root supervisor keeps one per spawned
    actor, so it is small.
    """

    __slots__ = ("_ended", "_then")

    def __init__(self) -> None:
        self._ended = False
        self._then: tuple[_StopSequence, ...] = ()

    def is_set(self) -> bool:
        return self._ended

    def then(self, sequence: _StopSequence) -> None:
        """Have ``sequence`` go on to its next child once this task has ended."""
        self._then += (sequence,)

    def set(self) -> None:
        self._ended = True
        then, self._then = self._then, ()
        for sequence in then:
            sequence.next()


@attrs.define(eq=False)
class _Run:
    """One run of a supervisor, from start to stop or give-up: what `Supervisor.wait` waits on."""

    finished: trio.Event
    gave_up: SupervisorGaveUp | None = None


@attrs.define(eq=False)
class _Child:
    """A child spec plus the supervisor's bookkeeping for it."""

    name: str
    make: Callable[[], Runnable]
    restart: RestartType
    shutdown_s: float
    significant: bool
    kind: Literal["worker", "supervisor"]
    status: ChildStatus = ChildStatus.STOPPED
    runnable: Runnable | None = None
    """What runs for this child: its latest incarnation, an Actor made afresh for each one
    or the same Supervisor each time; None before its first start."""
    incarnation: int = -1
    generation: int = 0
    scope: trio.CancelScope | None = None
    task_end: _TaskEnd | None = None
    """The end of the latest incarnation's task."""
    registered: bool = False

    @property
    def alive(self) -> bool:
        return self.task_end is not None and not self.task_end.is_set()

    def view(self) -> ChildView:
        return ChildView(self.name, self.restart, self.status, self.significant)


@final
class _Children:
    """Child specs in start order, with O(1) lookup and removal by name.

    The system's root supervisor holds every spawned actor, so a list's linear
    removal would make stopping many actors quadratic.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, _Child] = {}

    def append(self, child: _Child) -> None:
        self._by_name[child.name] = child

    def remove(self, child: _Child) -> None:
        del self._by_name[child.name]

    def get(self, name: str) -> _Child | None:
        return self._by_name.get(name)

    def __contains__(self, child: object) -> bool:
        return isinstance(child, _Child) and self._by_name.get(child.name) is child

    def __iter__(self) -> Iterator[_Child]:
        return iter(self._by_name.values())

    def __reversed__(self) -> Iterator[_Child]:
        return reversed(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)


@attrs.frozen
class _ChildExited:
    """A child's task has ended (``started``: after its start had succeeded)."""

    child: _Child
    generation: int
    started: bool
    error: BaseException | None


class _RestartDue:
    """Time to start the children waiting in RESTARTING (after a backoff delay)."""


class _StopRequest:
    """Stop the supervisor: `stop` was called, or a significant child's end shuts it down."""


_Control = _ChildExited | _RestartDue | _StopRequest


@final
class _StopSequence:
    """Stops children one after the other; each child's exit asks the next one to stop.

    The step that ends one child's task starts the next child's stop, so a
    supervisor stopping many idle actors does not wake up between them: one
    scheduler round per child instead of two. The strict order stays: a child is
    asked to stop only once the one before it has ended.

    Each child is cancelled once its shutdown_s from its own stop request is up.
    A deadline on each child's scope would cost a timer heap insertion and
    removal per child; instead the supervisor waits for `finished` under one
    `watchdog` scope at a time, whose deadline is moved here only when the child
    now stopping is due before it, and which the supervisor renews (at the
    child's own `give_up`) when it fires for a child that has already ended.
    """

    def __init__(self, supervisor: Supervisor, children: Iterable[_Child], forget: bool) -> None:
        self._supervisor = supervisor
        self._pending = iter(children)
        self._forget = forget
        self.child: _Child | None = None
        """The child asked to stop last, until it ends (None before the first, and after)."""
        self.give_up = math.inf
        """When `child` is to be cancelled: its stop request plus its shutdown_s (inf once
        it has been cancelled)."""
        self.watchdog: trio.CancelScope | None = None
        self.finished = trio.Event()

    def next(self) -> None:
        """`child` (if any) has ended: ask the next child still running to stop."""
        if self.child is not None:
            self._supervisor._mark_stopped(self.child, self._forget)
        for child in self._pending:
            child.generation += 1  # whatever exit follows is ours
            if child.alive:
                assert child.runnable is not None and child.task_end is not None
                self.child = child
                self.give_up = trio.current_time() + child.shutdown_s
                child.runnable._request_stop()
                if not child.shutdown_s:
                    self._cancel()
                elif self.watchdog is not None and self.give_up < self.watchdog.deadline:
                    self.watchdog.deadline = self.give_up
                child.task_end.then(self)
                return
            self._supervisor._mark_stopped(child, self._forget)
        self.child = None
        self.finished.set()

    def cancel_if_due(self) -> None:
        """The watchdog fired: cancel `child` if its shutdown_s is up (it may have been
        set for an earlier child)."""
        if self.child is not None and trio.current_time() >= self.give_up:
            self._cancel()

    def _cancel(self) -> None:
        assert self.child is not None and self.child.scope is not None
        self.child.scope.cancel()
        self.give_up = math.inf


@final
class _Launch:
    """One incarnation's task as its supervisor launched it: called (as the ``started`` of
    `Runnable._run`) once the incarnation is ready, and read by the task's end.

    An object, not a closure over the task's locals: the root supervisor keeps one per
    spawned actor for as long as it runs, and a closure with its cells weighs twice this.
    """

    __slots__ = (
        "child",
        "generation",
        "is_started",
        "runnable",
        "scope",
        "scoped_when_busy",
        "started",
        "supervisor",
        "task_end",
    )

    def __init__(
        self,
        supervisor: Supervisor,
        child: _Child,
        runnable: Runnable,
        generation: int,
        started: Reply | None,
    ) -> None:
        assert child.scope is not None and child.task_end is not None
        self.supervisor = supervisor
        self.child = child
        self.runnable = runnable
        self.generation = generation
        self.started = started
        """What the starter waits on, until the start is over (None: nobody waits)."""
        self.is_started = False
        self.scoped_when_busy = False
        """An actor that enters `scope` only once it has work (`Actor._scoped_when_busy`)."""
        self.scope = child.scope
        self.task_end = child.task_end

    def __call__(self) -> None:
        """The incarnation is ready: mark it running, say so, and let the starter go on."""
        self.is_started = True
        child, runnable = self.child, self.runnable
        if child.generation == self.generation:
            child.status = ChildStatus.RUNNING
        kind = EventKind.RESTARTED if child.incarnation else EventKind.STARTED
        self.supervisor._emit(kind, runnable.name, runnable.id, incarnation=child.incarnation)
        if self.started is not None:
            self.started.resolve(None)
            self.started = None


def _started(child: _Child) -> Actor | Supervisor:
    """The runnable of a child just started, as the public calls hand it out."""
    assert child.runnable is not None
    return cast("Actor | Supervisor", child.runnable)  # the two classes that are `Runnable`


@final
class Supervisor:
    """Starts children in order, restarts them by its strategy, and gives up past its limit.

    ``strategy`` is ``"one_for_one"``, ``"one_for_all"`` or ``"rest_for_one"``
    (or a `Strategy`); at most ``max_restarts`` restarts are allowed within any
    ``window_s`` seconds, after which the supervisor terminates its children and
    exits as crashed (a parent supervisor treats that as a crash of this child).
    ``restart_delay_s`` > 0 waits before each restart, growing by
    ``restart_backoff`` per restart still in the window up to
    ``max_restart_delay_s`` — for children that fail against an outside service.
    ``auto_shutdown`` stops the supervisor when significant children end.

    Children are added with `add` before `start`, or with `add_and_start` while
    running. A supervisor added to another supervisor is started by its parent;
    a top-level one with its own `start`.
    """

    def __init__(
        self,
        system: ActorSystem,
        strategy: Strategy | str = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        window_s: float = 5.0,
        *,
        name: str | None = None,
        auto_shutdown: AutoShutdown | str = AutoShutdown.NEVER,
        restart_delay_s: float = 0.0,
        restart_backoff: float = 2.0,
        max_restart_delay_s: float = 30.0,
    ) -> None:
        self._rules = Rules(strategy, max_restarts, window_s, auto_shutdown)
        if restart_delay_s < 0 or restart_backoff < 1 or max_restart_delay_s < 0:
            raise ValueError(
                "restart_delay_s and max_restart_delay_s must be >= 0 and restart_backoff >= 1"
            )
        self.name = check_name(name) if name is not None else f"supervisor-{next(_unnamed)}"
        self.id = new_wid(self.name)
        self.system = system
        self._delay = (restart_delay_s, restart_backoff, max_restart_delay_s)
        self._children = _Children()
        self._history: tuple[float, ...] = ()
        self._delayed = 0  # restarts waiting out a backoff delay
        self._lock = trio.Lock()
        self._state = ActorState.CREATED
        self._stop_requested = False
        self._control: trio.MemorySendChannel[_Control] | None = None
        self._nursery: trio.Nursery | None = None
        self._finished: trio.Event | None = None
        self._parent: Supervisor | None = None
        self._owner: Supervisor | None = None
        """Whoever runs this supervisor: its parent, or the root; None for the root."""
        self._task: trio.lowlevel.Task | None = None
        """The task of its latest run."""
        self._gave_up: SupervisorGaveUp | None = None
        self._this_run: _Run | None = None
        """The latest run, for `wait`: a restarted supervisor is the same object."""

    @property
    def strategy(self) -> Strategy:
        """The restart strategy."""
        return self._rules.strategy

    @property
    def max_restarts(self) -> int:
        """Restarts allowed within `window_s`."""
        return self._rules.max_restarts

    @property
    def window_s(self) -> float:
        """The sliding window of the restart intensity, in seconds."""
        return self._rules.window_s

    @property
    def auto_shutdown(self) -> AutoShutdown:
        """Whether the supervisor stops itself when significant children end."""
        return self._rules.auto_shutdown

    @property
    def running(self) -> bool:
        """True while the supervisor is running its children."""
        return self._state is ActorState.RUNNING

    def __repr__(self) -> str:
        state = "gave up" if self._state is ActorState.CRASHED else self._state.value
        return f"<Supervisor {self.name!r} {self._rules.strategy} {state}>"

    # ---- children specs ----------------------------------------------------------------------

    def add(
        self,
        name: str,
        child: type[Actor] | Supervisor,
        *,
        restart: RestartType | str = RestartType.PERMANENT,
        shutdown_s: float | None = None,
        significant: bool = False,
        **init_kwargs: Any,
    ) -> None:
        """Add a child spec, to be started by `start` after the children added before it.

        ``child`` is an `Actor` subclass (constructed afresh for every incarnation,
        as ``child(system, name=name, **init_kwargs)``) or a `Supervisor`.
        ``shutdown_s`` is how long the child may take to stop before it is cancelled
        (default 5 s for workers, unbounded for supervisors). While the supervisor
        runs, use `add_and_start` instead.

        The whole spec is checked here rather than when the child first starts, and
        nothing is added if it is wrong: `DuplicateName` if another child has
        ``name``; `ValueError` for an invalid name, an unknown ``restart`` type, a
        negative ``shutdown_s`` or a ``significant`` child this supervisor cannot
        have; `TypeError` if ``child`` is neither an Actor subclass nor a Supervisor,
        if it is an abstract one or its ``__init__`` does not accept ``init_kwargs``
        (the error names the argument and what it accepts), or if ``shutdown_s`` is
        not a number; `SupervisorError` for a supervisor that already has a parent
        (or is this one). Only then is
        the state checked: `SupervisorError` while this supervisor is starting or
        running. A wrong spec is reported first because it is a mistake in the code
        whatever the state, which `add_and_start` would refuse as well: reporting the
        state first would only lead to the next error.
        """
        spec = self._spec(name, child, restart, shutdown_s, significant, init_kwargs)
        if self._state in (ActorState.STARTING, ActorState.RUNNING):
            raise SupervisorError(
                f"supervisor {self.name!r} is running: use `await add_and_start(...)` "
                "to add a child now"
            )
        self._append(spec, child)

    async def add_and_start(
        self,
        name: str,
        child: type[Actor] | Supervisor,
        *,
        restart: RestartType | str = RestartType.PERMANENT,
        shutdown_s: float | None = None,
        significant: bool = False,
        **init_kwargs: Any,
    ) -> Actor | Supervisor:
        """Add a child to the running supervisor and start it; return the started child.

        The spec is checked as `add` checks it, and also reported before the state
        (`SupervisorError` unless the supervisor is running). Raises
        `ActorStartFailed` (and forgets the spec) if it fails to start. Cancelled while
        the child starts, it cancels the start too, and the spec is forgotten once
        the child has exited.
        """
        async with self._lock:
            spec = self._spec(name, child, restart, shutdown_s, significant, init_kwargs)
            self._check_running("add a child")
            self._append(spec, child)
            try:
                error = await self._start_child(spec)
            except BaseException:
                self._cancel_start(spec)
                raise
            if error is not None:
                self._children.remove(spec)
                raise error
            return _started(spec)

    def _cancel_start(self, child: _Child) -> None:
        """The caller of a start was cancelled while ``child`` started: as with Trio's
        nursery.start, the start is cancelled too. A child whose task runs is made
        temporary, so that it is forgotten once it has exited (left untracked, it
        would outlive `stop`); one that never got a task is simply removed."""
        if child.alive:
            assert child.scope is not None
            child.restart = RestartType.TEMPORARY
            child.scope.cancel()
        else:
            self._children.remove(child)

    def _spec(
        self,
        name: str,
        child: type[Actor] | Supervisor,
        restart: RestartType | str,
        shutdown_s: float | None,
        significant: bool,
        init_kwargs: dict[str, Any],
    ) -> _Child:
        """Check a child spec and return it, changing nothing: `_append` takes it."""
        check_name(name)
        if self._children.get(name) is not None:
            raise DuplicateName(name)
        restart = to_restart_type(restart)
        if significant and restart is RestartType.PERMANENT:
            raise ValueError(
                f"child {name!r}: only transient or temporary children can be significant"
            )
        if significant and self._rules.auto_shutdown is AutoShutdown.NEVER:
            raise ValueError(
                f"child {name!r} is significant but supervisor {self.name!r} has "
                "auto_shutdown='never'; pass auto_shutdown='any_significant' or 'all_significant'"
            )
        make: Callable[[], Runnable]
        kind: Literal["worker", "supervisor"]
        if isinstance(child, Supervisor):
            if init_kwargs:
                raise TypeError("a child supervisor takes no init keyword arguments")
            if child._parent is not None or child._state is not ActorState.CREATED:
                raise SupervisorError(f"supervisor {child.name!r} already has a parent")
            if child is self:
                raise SupervisorError("a supervisor cannot supervise itself")
            make, kind, default_shutdown = (lambda: child), "supervisor", math.inf
        elif isinstance(child, type) and issubclass(child, Actor):
            self._check_constructible(name, child, init_kwargs)
            make = functools.partial(child, self.system, name=name, **init_kwargs)
            kind, default_shutdown = "worker", DEFAULT_SHUTDOWN_S
        else:
            raise TypeError(
                f"child {name!r} must be an Actor subclass or a Supervisor instance, not {child!r}"
            )
        shutdown = default_shutdown if shutdown_s is None else shutdown_s
        if isinstance(shutdown, bool) or not isinstance(shutdown, int | float):
            raise TypeError(f"shutdown_s must be a number of seconds, not {shutdown_s!r}")
        if not shutdown >= 0:
            raise ValueError(f"shutdown_s must be >= 0 seconds, not {shutdown_s!r}")
        return _Child(name, make, restart, shutdown, significant, kind)

    def _check_constructible(
        self, name: str, actor_class: type[Actor], init_kwargs: dict[str, Any]
    ) -> None:
        """Raise `TypeError` unless ``actor_class(system, name=name, **init_kwargs)`` can be
        called: the class is not abstract and its ``__init__`` accepts the arguments."""
        class_name = actor_class.__qualname__
        if inspect.isabstract(actor_class):
            missing = ", ".join(sorted(actor_class.__abstractmethods__))
            raise TypeError(
                f"child {name!r}: {class_name} is abstract; implement {missing} in a subclass"
            )
        try:
            signature = inspect.signature(actor_class)
        except (TypeError, ValueError):  # not introspectable: constructing it will tell
            return
        try:
            signature.bind(self.system, name=name, **init_kwargs)
        except TypeError as exc:
            call = ", ".join(["system", f"name={name!r}", *(f"{key}=..." for key in init_kwargs)])
            accepted = signature.replace(
                parameters=[
                    parameter.replace(annotation=inspect.Parameter.empty)
                    for parameter in signature.parameters.values()
                ],
                return_annotation=inspect.Signature.empty,
            )
            raise TypeError(
                f"child {name!r}: {class_name}({call}) does not fit {class_name}.__init__ "
                f"({exc}); it accepts {accepted}"
            ) from None

    def _append(self, spec: _Child, child: type[Actor] | Supervisor) -> None:
        """Add a spec `_spec` checked; a child supervisor is renamed after it and adopted."""
        if isinstance(child, Supervisor):
            child.name = spec.name
            child.id = new_wid(spec.name)
            child._parent = self
        self._children.append(spec)

    # ---- inspection ------------------------------------------------------------------------

    def which_children(self) -> list[ChildInfo]:
        """Every child spec in start order: name, id (None before its first start), kind,
        restart type and status."""
        return [
            ChildInfo(
                c.name,
                c.runnable.id if c.runnable is not None else None,
                c.kind,
                c.restart,
                c.status,
            )
            for c in self._children
        ]

    def count_children(self) -> ChildCounts:
        """How many specs, running children, supervisors and workers there are."""
        return ChildCounts(
            specs=len(self._children),
            active=sum(c.status is ChildStatus.RUNNING for c in self._children),
            supervisors=sum(c.kind == "supervisor" for c in self._children),
            workers=sum(c.kind == "worker" for c in self._children),
        )

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the children in the order added; return once all have run `on_start`.

        If one fails to start, those already started are stopped in reverse
        order and `ActorStartFailed` naming the child is raised. Cancelled meanwhile,
        it cancels the start too: the supervisor stops the children it started (each
        within its shutdown_s) and ``Cancelled`` propagates.
        """
        if self._parent is not None:
            raise SupervisorError(
                f"supervisor {self.name!r} is a child of {self._parent.name!r}, which starts it"
            )
        await self.system._adopt(self)

    async def stop(self) -> None:
        """Stop every child in reverse start order (each within its shutdown_s), then exit.

        Called from inside this supervisor's own subtree (an actor asking for
        the shutdown of its own supervisor), it only asks for the stop: waiting
        would deadlock, since the caller is among the children to stop. The wait is
        shielded: cancelling the caller does not cut the stop short.
        """
        if self._state in (ActorState.CREATED, ActorState.STOPPED, ActorState.CRASHED):
            return
        self._request_stop()
        if self._finished is not None and not self._is_caller_inside():
            with trio.CancelScope(shield=True):
                await self._finished.wait()

    async def wait(self) -> None:
        """Wait until this supervisor's run ends: return if it was stopped, raise if it gave up.

        Raises `SupervisorGaveUp` when it passed its restart limit (where a parent
        supervisor would see the same failure as a crash of this child), and
        `SupervisorError` if it was never started. Once it has ended, returns or
        raises at once (after a checkpoint). A nested supervisor restarted by its
        parent is the same object, running again: a wait begun before the restart
        ends with the run that gave up. Cancellation leaves nothing behind.
        """
        run = self._this_run
        if run is None:
            raise SupervisorError(f"supervisor {self.name!r} was never started: start() it first")
        await run.finished.wait()
        if run.gave_up is not None:
            raise SupervisorGaveUp(self.name, run.gave_up.reason)

    def _is_caller_inside(self) -> bool:
        """True if the calling task is this supervisor's or one of its descendants: a child,
        a child's child, a task a child started."""
        mine = self._task
        task: trio.lowlevel.Task | None = trio.lowlevel.current_task()
        while task is not None:
            if task is mine:
                return True
            nursery = task.parent_nursery
            task = nursery.parent_task if nursery is not None else None
        return False

    async def terminate_child(self, name: str) -> None:
        """Stop a child without restarting it; its spec stays (a temporary one's is removed).

        Terminating a stopped child does nothing. A child whose restart is
        stuck in `on_start` gets its shutdown_s to finish it, then is cancelled.
        Shielded, like `stop`: cancelling the caller does not cut it short.
        """
        starting = self._children.get(name)
        if starting is not None and starting.status is ChildStatus.RESTARTING and starting.alive:
            self._cut_start_short(starting)  # the restart holds the lock until on_start ends
        async with self._lock:
            child = self._child(name)
            was_restarting = child.status is ChildStatus.RESTARTING
            with trio.CancelScope(shield=True):
                await self._terminate(child, forget=True)
            if was_restarting and not self._delayed and self._control is not None:
                # Its failed start was to restart the siblings still due; that exit is now
                # ignored, so the restart goes on without it.
                if any(c.status is ChildStatus.RESTARTING for c in self._children):
                    self._control.send_nowait(_RestartDue())

    async def restart_child(self, name: str) -> Actor | Supervisor:
        """Start a stopped child again; return it. Does not count toward the restart intensity.

        Raises `ActorStartFailed` if it fails to start. Cancelling the caller stops only
        its wait: the child goes on starting, and stays in the supervisor's care.
        """
        async with self._lock:
            self._check_running("restart a child")
            child = self._child(name)
            self._check_stopped(child, "restart")
            error = await self._start_child(child)
            if error is not None:
                raise error
            return _started(child)

    def delete_child(self, name: str) -> None:
        """Forget the spec of a stopped child."""
        child = self._child(name)
        self._check_stopped(child, "delete")
        self._children.remove(child)

    def _child(self, name: str) -> _Child:
        child = self._children.get(name)
        if child is not None:
            return child
        known = ", ".join(c.name for c in self._children) or "none"
        raise SupervisorError(f"supervisor {self.name!r} has no child {name!r} (children: {known})")

    def _check_stopped(self, child: _Child, action: str) -> None:
        if child.status is not ChildStatus.STOPPED or child.alive:
            raise SupervisorError(
                f"cannot {action} child {child.name!r} of {self.name!r}: it is {child.status}; "
                f"call terminate_child({child.name!r}) first"
            )

    def _check_running(self, action: str) -> None:
        state = self._state
        if state is not ActorState.RUNNING:
            if state is ActorState.CREATED:
                now = "has not been started (start it first)"
            else:
                now = "gave up" if state is ActorState.CRASHED else f"is {state}"
            raise SupervisorError(f"cannot {action}: supervisor {self.name!r} {now}")

    # ---- running (called by the parent, like an actor's _run) --------------------------------

    def _request_stop(self) -> None:
        self._stop_requested = True
        for child in self._children:
            if child.alive and child.status is not ChildStatus.RUNNING:
                self._cut_start_short(child)  # a stop waits for no on_start longer than shutdown_s
        if self._control is not None:
            self._control.send_nowait(_StopRequest())

    def _cut_start_short(self, child: _Child) -> None:
        """Cancel ``child``, still in `on_start`, if it is not done within its shutdown_s."""
        assert child.runnable is not None and child.scope is not None
        # A supervisor still starting its children can stop starting more; an actor's
        # on_start can only be cut short by cancellation (asked to stop, it would start
        # and then stop at once, where a terminated child is to stop as it would running).
        if isinstance(child.runnable, Supervisor):
            child.runnable._request_stop()
        child.scope.deadline = min(child.scope.deadline, trio.current_time() + child.shutdown_s)

    _stop_error: Final = None
    """A supervisor has no `on_stop`: its stops never fail (see `Runnable`)."""

    @property
    def _crash_reason(self) -> str | None:
        """Once started, a supervisor crashes by giving up (see `Runnable`), or by a failure
        of its own while it restarts children."""
        return "gave up" if self._gave_up is not None else "raised while supervising"

    def _begin_incarnation(self, previous: Supervisor | None, incarnation: int) -> None:
        """Nothing to do: a restarted supervisor is the same object, and `_run` starts each
        run afresh."""

    async def _run(
        self, started: Callable[[], None], scope: trio.CancelScope | None = None
    ) -> None:
        """Run this supervisor until it is stopped (returns) or gives up (raises); always
        inside its cancel scope (``scope`` is None)."""
        self._task = trio.lowlevel.current_task()
        self._finished = trio.Event()
        run = self._this_run = _Run(self._finished)
        self._gave_up = None
        self._history = ()
        self._delayed = 0
        self._stop_requested = False
        send, receive = trio.open_memory_channel[_Control](math.inf)
        failure: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery, self._control = nursery, send
                try:
                    async with self._lock:
                        self._state = ActorState.STARTING
                        failure = await self._start_all()
                    if failure is None:
                        self._state = ActorState.RUNNING
                        started()
                        failure = await self._control_loop(receive)
                finally:
                    self._state = ActorState.STOPPING
                    with trio.CancelScope(shield=True):
                        await self._terminate_all()
                    nursery.cancel_scope.cancel()  # restarts still waiting out a delay
        finally:
            self._control = self._nursery = None
            send.close()
            self._state = ActorState.CRASHED if self._gave_up is not None else ActorState.STOPPED
            run.gave_up = self._gave_up
            self._finished.set()
        if failure is not None:
            raise failure

    async def _start_all(self) -> BaseException | None:
        for child in list(self._children):
            if self._stop_requested:
                break
            try:
                error = await self._start_child(child)
            except DuplicateName as exc:
                error = exc
            if error is not None:
                with trio.CancelScope(shield=True):
                    await self._terminate_all()
                if isinstance(error, ActorStartFailed):
                    return ActorStartFailed(child.name, error.error, supervisor=self.name)
                return error
        return None

    async def _control_loop(
        self, receive: trio.MemoryReceiveChannel[_Control]
    ) -> BaseException | None:
        if self._stop_requested:
            return None
        lock = self._lock
        while True:
            # An exit already queued, and the lock free, are taken without the scheduler
            # pass `receive` and `acquire` make: a crash storm restarts that much faster.
            try:
                item = receive.receive_nowait()
            except trio.WouldBlock:
                item = await receive.receive()
            try:
                lock.acquire_nowait()
            except trio.WouldBlock:
                await lock.acquire()
            try:
                if isinstance(item, _StopRequest):
                    return None
                if isinstance(item, _RestartDue):
                    await self._restart_due()
                    continue
                if item.generation != item.child.generation or item.child not in self._children:
                    continue  # an exit we caused ourselves
                outcome = await self._handle_exit(item)
                if outcome is not None:
                    return outcome if isinstance(outcome, BaseException) else None
            finally:
                lock.release()

    async def _handle_exit(self, exited: _ChildExited) -> BaseException | _StopRequest | None:
        child = exited.child
        crashed = exited.error is not None or not exited.started
        if self._rules.strategy is Strategy.ONE_FOR_ONE and not child.significant:
            views = [child.view()]  # nothing else matters, and the root may hold thousands
        else:
            views = [c.view() for c in self._children]
        plan, self._history = plan_exit(
            self._rules,
            views,
            self._history,
            child.name,
            crashed,
            trio.current_time(),
        )
        child.status = ChildStatus.STOPPED
        return await self._carry_out(plan, child)

    async def _carry_out(self, plan: Plan, trigger: _Child) -> BaseException | _StopRequest | None:
        if plan.give_up is not None:
            with trio.CancelScope(shield=True):
                await self._terminate_all()
            self._gave_up = SupervisorGaveUp(self.name, plan.give_up)
            self._emit(
                EventKind.GAVE_UP,
                self.name,
                self.id,
                exception=self._gave_up,
                reason=plan.give_up,
                about_itself=True,
            )
            return self._gave_up
        if plan.terminate:  # most exits stop nobody else: no shielded scope to pay for
            with trio.CancelScope(shield=True):
                await self._terminate(*(self._child(name) for name in plan.terminate))
        for name in plan.remove:
            child = self._child(name)
            self._forget(child)
            self._children.remove(child)
        if plan.shut_down:
            logger.info(
                "supervisor %r shuts down: significant child %r ended", self.name, trigger.name
            )
            return _StopRequest()
        if trigger.name not in plan.start and trigger in self._children:
            self._forget(trigger)
        if not plan.start:
            return None
        for name in plan.start:
            child = self._child(name)
            child.status = ChildStatus.RESTARTING
            child.generation += 1
        base, factor, cap = self._delay
        delay = restart_delay(base, factor, cap, len(self._history))
        if delay > 0:
            assert self._nursery is not None
            self._delayed += 1
            self._nursery.start_soon(self._restart_later, delay)
        else:
            await self._restart_due()
        return None

    async def _restart_later(self, delay: float) -> None:
        await trio.sleep(delay)
        self._delayed -= 1
        if self._control is not None:
            self._control.send_nowait(_RestartDue())

    async def _restart_due(self) -> None:
        """Start every child waiting in RESTARTING, in start order.

        A child failing to start ends the sequence: its failure is already on
        the control channel and is handled as a crash on the loop's next turn
        (counting toward the intensity), which restarts the children still due.
        Management calls and `stop` can run in between.
        """
        for child in list(self._children):
            if self._stop_requested:
                break
            if child.status is ChildStatus.RESTARTING and child in self._children:
                if await self._start_child(child, restarting=True) is not None:
                    break

    # ---- performing actions on children ------------------------------------------------

    async def _start_child(
        self, child: _Child, *, restarting: bool = False
    ) -> BaseException | None:
        """Start a new incarnation of ``child``; return its start error, if any.

        On a failed restart the failure stays queued on the control channel (it
        is handled as a crash); on a failed first start it is dropped here.
        """
        assert self._nursery is not None
        try:
            runnable = child.make()
        except Exception as exc:
            known_id = child.runnable.id if child.runnable is not None else ""
            self._emit(
                EventKind.CRASHED, child.name, known_id, exception=exc, reason="failed to construct"
            )
            if restarting:
                assert self._control is not None
                child.generation += 1
                self._control.send_nowait(_ChildExited(child, child.generation, False, exc))
            return ActorStartFailed(child.name, exc)
        previous = child.runnable
        runnable._begin_incarnation(previous, child.incarnation + 1)
        if not child.registered:
            self.system._register(runnable)
            child.registered = True
        elif previous is not runnable:
            self.system._replace(runnable)
        child.incarnation += 1
        child.runnable = runnable
        child.generation += 1
        generation = child.generation
        child.scope = trio.CancelScope(shield=True)
        child.task_end = _TaskEnd()
        if isinstance(runnable, Supervisor):
            runnable._owner = self
        elif (
            isinstance(runnable, Actor)
            and runnable._starts_at_once
            and not run_context.task._cancel_status.effectively_cancelled
        ):
            # Nothing to wait for (no on_start, no background): it is running as soon as its
            # task is queued, and the start costs a send, not a pass of the scheduler.
            runnable._mark_running()
            launch = _Launch(self, child, runnable, generation, None)
            launch.scoped_when_busy = runnable._scoped_when_busy
            launch()
            self._nursery.start_soon(self._child_task, launch)
            turns = self.system._turns
            turns.sends += 1
            if turns.sends >= TURN:
                turns.sends = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return None
        started = Reply()
        launch = _Launch(self, child, runnable, generation, started)
        self._nursery.start_soon(self._child_task, launch)
        try:
            await started.wait()
        except ActorStartFailed as exc:
            if not restarting:
                child.generation += 1  # drop the queued exit: the caller handles this failure
                child.status = ChildStatus.STOPPED
                self._forget(child)
            return exc
        return None

    async def _child_task(self, launch: _Launch) -> None:
        """The task of one incarnation: run it in its cancel scope, then report its end.

        Its frame is kept by every running child, so it holds little (see `_Launch`).
        """
        error: BaseException | None = None
        escaping = False
        try:
            try:
                if launch.scoped_when_busy:
                    await launch.runnable._run(launch, launch.scope)
                else:
                    with launch.scope:
                        await launch.runnable._run(launch)
            except Exception as exc:
                error = exc
        except BaseException:
            escaping = True  # KeyboardInterrupt and friends: the nursery is going down anyway
            raise
        finally:
            self._child_ended(launch, error, escaping)

    def _child_ended(self, launch: _Launch, error: BaseException | None, escaping: bool) -> None:
        child, runnable, generation = launch.child, launch.runnable, launch.generation
        is_started = launch.is_started
        ours = escaping or child.generation != generation
        started = launch.started
        if started is not None:  # it never started
            if isinstance(error, ActorStartFailed):
                started.fail(error)
            else:
                cause = error or ActorStopped(runnable.name, "stopped before on_start returned")
                started.fail(ActorStartFailed(runnable.name, cause))
        if error is not None:
            self._emit(
                EventKind.CRASHED,
                runnable.name,
                runnable.id,
                exception=error,
                reason=runnable._crash_reason if is_started else "failed to start",
                incarnation=child.incarnation,
            )
        elif is_started:
            stop_error = runnable._stop_error
            reason = "terminated by its supervisor" if ours else "stopped"
            if launch.scope.cancelled_caught:
                reason = f"cancelled after its shutdown_s of {child.shutdown_s:g} s"
            self._emit(
                EventKind.STOPPED,
                runnable.name,
                runnable.id,
                exception=stop_error,
                reason=reason + ("; on_stop raised" if stop_error is not None else ""),
                incarnation=child.incarnation,
            )
        if not ours:
            if child.restart is RestartType.TEMPORARY or (
                child.restart is RestartType.TRANSIENT and error is None and is_started
            ):
                self._forget(child)  # never restarted: unregister now, so stop() sees it gone
            if self._control is not None:
                self._control.send_nowait(_ChildExited(child, generation, is_started, error))
        launch.task_end.set()

    async def _terminate(self, *children: _Child, forget: bool = False) -> None:
        """Stop ``children`` one after the other, each cancelled after its shutdown_s; call
        shielded. With ``forget``, each is forgotten as soon as it has stopped.

        The children's exits drive the sequence (see `_StopSequence`); this task only
        waits for its end, waking when the watchdog fires.
        """
        sequence = _StopSequence(self, children, forget)
        sequence.next()
        while not sequence.finished.is_set():
            with trio.CancelScope(deadline=sequence.give_up) as sequence.watchdog:
                await sequence.finished.wait()
            sequence.cancel_if_due()

    def _mark_stopped(self, child: _Child, forget: bool) -> None:
        """Mark ``child`` stopped; with ``forget``, `_forget` it and drop a temporary spec."""
        child.status = ChildStatus.STOPPED
        if forget:
            self._forget(child)
            if child.restart is RestartType.TEMPORARY and child in self._children:
                self._children.remove(child)

    async def _terminate_all(self) -> None:
        await self._terminate(*reversed(self._children), forget=True)

    def _forget(self, child: _Child) -> None:
        """Unregister a child that will not run again soon; its queued mail becomes dead letters."""
        if child.registered and child.runnable is not None:
            self.system._unregister(child.runnable)
            child.registered = False

    def _emit(
        self,
        kind: EventKind,
        name: str,
        actor_id: str,
        *,
        exception: BaseException | None = None,
        reason: str | None = None,
        incarnation: int | None = None,
        about_itself: bool = False,
    ) -> None:
        """Emit an event about a child, or (``about_itself``) about this supervisor: its
        ``supervisor`` is then the one this supervisor runs under, as for any child."""
        events = self.system._events
        if not events.wants(kind):
            return
        owner = self._owner if about_itself else self
        events.emit(
            ActorEvent(
                kind,
                name,
                actor_id,
                exception=exception,
                reason=reason,
                incarnation=incarnation,
                supervisor=owner.name if owner is not None else None,
            )
        )

    # ---- the system's root uses this to run spawned actors and top-level supervisors ----

    async def _start_temporary(self, runnable: Actor | Supervisor) -> None:
        """Start an already-built runnable as a temporary child (no lock: spawns may nest)."""
        if self._state is not ActorState.RUNNING:
            raise SystemNotRunning(f"start {runnable.name!r}")
        kind: Literal["worker", "supervisor"]
        if isinstance(runnable, Supervisor):
            if runnable._state not in (ActorState.CREATED, ActorState.STOPPED, ActorState.CRASHED):
                raise SupervisorError(f"supervisor {runnable.name!r} is already running")
            runnable._parent = None
            kind, shutdown = "supervisor", math.inf
        else:
            if runnable._mailbox is not None or runnable.state.value != "created":
                raise SupervisorError(
                    f"actor {runnable.name!r} was already started; make a new instance"
                )
            kind, shutdown = "worker", DEFAULT_SHUTDOWN_S
        earlier = self._children.get(runnable.name)
        if earlier is not None:
            if earlier.restart is not RestartType.TEMPORARY or earlier.alive or earlier.registered:
                raise DuplicateName(runnable.name)
            # An ended temporary child whose exit the control loop has not taken yet (a stop
            # returns before it has): its name is free, and its exit will be passed over.
            self._children.remove(earlier)
        child = _Child(
            runnable.name, lambda: runnable, RestartType.TEMPORARY, shutdown, False, kind
        )
        self._children.append(child)
        try:
            error = await self._start_child(child)
        except BaseException:
            self._cancel_start(child)
            raise
        if error is not None:
            if child in self._children:
                self._children.remove(child)
            raise error

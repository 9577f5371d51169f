"""The rules of supervision, as pure functions: no tasks, no I/O, no clock.

Given the children of a supervisor (in start order), its restart history and
one child's exit, `plan_exit` says what to do: which children to terminate
(in reverse start order), which to start again (in start order), which specs to
forget, and whether the supervisor shuts down or gives up. `Supervisor` performs
the plan; keeping the decision here is what lets the semantics be tested on
their own (OTP's supervisor is split the same way).
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Sequence
from typing import TypeVar, final

import attrs

__all__ = ["AutoShutdown", "ChildStatus", "RestartType", "Strategy"]


class Strategy(enum.StrEnum):
    """Which children a supervisor restarts when one of them crashes."""

    ONE_FOR_ONE = "one_for_one"
    """Restart only the crashed child."""
    ONE_FOR_ALL = "one_for_all"
    """Terminate all other children, then restart them all."""
    REST_FOR_ONE = "rest_for_one"
    """Terminate the children started after the crashed one, then restart it and them."""


class RestartType(enum.StrEnum):
    """When a child is restarted after it exits."""

    PERMANENT = "permanent"
    """Always."""
    TRANSIENT = "transient"
    """Only after a crash, not after a normal exit."""
    TEMPORARY = "temporary"
    """Never; its spec is forgotten when it exits."""


class AutoShutdown(enum.StrEnum):
    """Whether a supervisor stops itself when significant children end (OTP 24+)."""

    NEVER = "never"
    ANY_SIGNIFICANT = "any_significant"
    ALL_SIGNIFICANT = "all_significant"


class ChildStatus(enum.StrEnum):
    """A child spec as its supervisor sees it: whether it runs, or is due to run again.

    Not a lifecycle: the incarnations that a spec runs, one after the other, each go
    through the states of `wactorz.core.actor.ActorState`.
    """

    RUNNING = "running"
    """Its incarnation has started, and its task has not ended yet."""
    RESTARTING = "restarting"
    """Due to be started again (after a crash, a failed restart, or during a backoff delay)."""
    STOPPED = "stopped"
    """Not running and not due to: never started, terminated, or ended for good."""


_E = TypeVar("_E", bound=enum.Enum)


def _parse(kind: type[_E], value: object, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in kind)
        raise ValueError(f"unknown {what} {value!r}; use one of {allowed}") from None


def _to_strategy(value: object) -> Strategy:
    return _parse(Strategy, value, "strategy")


def _to_auto_shutdown(value: object) -> AutoShutdown:
    return _parse(AutoShutdown, value, "auto_shutdown")


def to_restart_type(value: object) -> RestartType:
    """Accept a `RestartType` or its name; raise `ValueError` naming the choices otherwise."""
    return _parse(RestartType, value, "restart type")


@final
@attrs.frozen
class Rules:
    """A supervisor's settings that decide what happens on an exit."""

    strategy: Strategy = attrs.field(default=Strategy.ONE_FOR_ONE, converter=_to_strategy)
    max_restarts: int = attrs.field(default=3)
    window_s: float = attrs.field(default=5.0)
    auto_shutdown: AutoShutdown = attrs.field(
        default=AutoShutdown.NEVER, converter=_to_auto_shutdown
    )

    @max_restarts.validator
    def _check_max_restarts(self, _: object, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"max_restarts must be an integer >= 0, not {value!r}")

    @window_s.validator
    def _check_window(self, _: object, value: float) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
            raise ValueError(f"window_s must be a number of seconds > 0, not {value!r}")


@final
@attrs.frozen
class ChildView:
    """What the rules need to know about one child."""

    name: str
    restart: RestartType
    status: ChildStatus
    significant: bool = False


@final
@attrs.frozen
class Plan:
    """What a supervisor does about one exit.

    When ``give_up`` is set the supervisor terminates every child in reverse
    start order and exits as crashed; the other fields are then empty. When
    ``shut_down`` is set it terminates the remaining children and exits normally.
    """

    terminate: tuple[str, ...] = ()
    start: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    give_up: str | None = None
    shut_down: bool = False


def plan_exit(
    rules: Rules,
    children: Sequence[ChildView],
    history: tuple[float, ...],
    name: str,
    crashed: bool,
    now: float,
) -> tuple[Plan, tuple[float, ...]]:
    """Decide what to do about child ``name`` ending (``crashed`` or a normal exit) at ``now``.

    ``children`` are in start order, with the exited child's status as it was
    just before it ended. ``history`` holds the times of the restarts done so
    far, oldest first; the updated history is returned with the plan. Exits
    the supervisor caused itself (terminations) never reach this function.
    """
    index = next(i for i, child in enumerate(children) if child.name == name)
    child = children[index]
    if not _restarts(child, crashed):
        remove = (name,) if child.restart is RestartType.TEMPORARY else ()
        return Plan(remove=remove, shut_down=_auto_shuts_down(rules, children, child)), history

    # The history is in time order (each plan appends ``now``), so the restarts still
    # in the window are a suffix: bisect for it rather than scan every one (restart storms).
    window_start = now - rules.window_s
    recent = (*history[bisect.bisect_left(history, window_start) :], now)
    if len(recent) > rules.max_restarts:
        reason = (
            f"{len(recent)} restarts within {rules.window_s:g} s exceed max_restarts="
            f"{rules.max_restarts} (child {name!r} {'crashed' if crashed else 'exited'})"
        )
        return Plan(give_up=reason), recent

    if rules.strategy is Strategy.ONE_FOR_ONE:
        return Plan(start=(name,)), recent
    affected = children if rules.strategy is Strategy.ONE_FOR_ALL else children[index:]
    others = [c for c in affected if c.name != name]
    running = [c for c in others if c.status is ChildStatus.RUNNING]
    return (
        Plan(
            terminate=tuple(c.name for c in reversed(running)),
            start=tuple(
                c.name
                for c in affected
                if c.name == name
                or (c.status is not ChildStatus.STOPPED and c.restart is not RestartType.TEMPORARY)
            ),
            remove=tuple(c.name for c in running if c.restart is RestartType.TEMPORARY),
        ),
        recent,
    )


def _restarts(child: ChildView, crashed: bool) -> bool:
    if child.restart is RestartType.PERMANENT:
        return True
    return child.restart is RestartType.TRANSIENT and crashed


def _auto_shuts_down(rules: Rules, children: Sequence[ChildView], ended: ChildView) -> bool:
    if not ended.significant or rules.auto_shutdown is AutoShutdown.NEVER:
        return False
    if rules.auto_shutdown is AutoShutdown.ANY_SIGNIFICANT:
        return True
    return not any(
        c.significant and c.status is not ChildStatus.STOPPED
        for c in children
        if c.name != ended.name
    )


def restart_delay(base_s: float, factor: float, cap_s: float, restarts_in_window: int) -> float:
    """The backoff before a restart: ``base_s`` growing by ``factor`` per recent restart, capped."""
    if base_s <= 0 or restarts_in_window <= 0:
        return 0.0
    return float(min(cap_s, base_s * factor ** (restarts_in_window - 1)))

"""The pure restart rules: `plan_exit` against a small reference model of OTP's semantics.

`RulesMachine` plays a supervisor's life on paper: children crash, exit
normally, are terminated or restarted by an operator, restarts fail to start,
time passes. On every exit it asks `plan_exit` what to do, checks the plan
against `expected_plan` (the semantics written out plainly, independently of
the code under test), then carries the plan out on its own bookkeeping the way
`Supervisor` does. The example tests below pin the cases worth naming.

Times are multiples of a power of two (as are the windows), so sums and
differences are exact and "exactly ``window_s`` old" means exactly that.
"""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

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

PERMANENT, TRANSIENT, TEMPORARY = RestartType
RUNNING, RESTARTING, STOPPED = ChildStatus

TICK = 2.0**-10
"""The smallest step of time; every time and window is a multiple of it."""

WINDOWS = st.sampled_from([0.5, 1.0, 1.5, 4.0])


# ---- the reference model -------------------------------------------------------------------


@attrs.define
class Kid:
    """One child on paper."""

    name: str
    restart: RestartType
    significant: bool = False
    status: ChildStatus = RUNNING

    def view(self) -> ChildView:
        return ChildView(self.name, self.restart, self.status, self.significant)


def expected_plan(
    rules: Rules, kids: list[Kid], restarts: list[float], kid: Kid, crashed: bool, now: float
) -> tuple[Plan, list[float]]:
    """What OTP does when ``kid`` ends, and the restart times to remember afterwards."""
    restarted = kid.restart is PERMANENT or (kid.restart is TRANSIENT and crashed)
    if not restarted:
        removed = (kid.name,) if kid.restart is TEMPORARY else ()
        others = [k for k in kids if k.significant and k is not kid and k.status is not STOPPED]
        shut_down = kid.significant and (
            rules.auto_shutdown is AutoShutdown.ANY_SIGNIFICANT
            or (rules.auto_shutdown is AutoShutdown.ALL_SIGNIFICANT and not others)
        )
        return Plan(remove=removed, shut_down=shut_down), restarts
    recent = [t for t in restarts if now - t <= rules.window_s] + [now]
    if len(recent) > rules.max_restarts:
        return Plan(give_up="..."), recent
    if rules.strategy is Strategy.ONE_FOR_ONE:
        group = [kid]
    elif rules.strategy is Strategy.ONE_FOR_ALL:
        group = list(kids)
    else:
        group = kids[kids.index(kid) :]
    running = [k for k in group if k is not kid and k.status is RUNNING]
    again = [
        k for k in group if k is kid or (k.status is not STOPPED and k.restart is not TEMPORARY)
    ]
    plan = Plan(
        terminate=tuple(k.name for k in reversed(running)),
        start=tuple(k.name for k in again),
        remove=tuple(k.name for k in running if k.restart is TEMPORARY),
    )
    return plan, recent


# ---- the state machine -------------------------------------------------------------------


@st.composite
def kids(draw: st.DrawFn) -> list[Kid]:
    kinds = draw(st.lists(st.sampled_from(RestartType), min_size=1, max_size=5))
    return [
        Kid(f"c{i}", kind, significant=kind is not PERMANENT and draw(st.booleans()))
        for i, kind in enumerate(kinds)
    ]


class RulesMachine(RuleBasedStateMachine):
    """A supervisor's life on paper, asking `plan_exit` at every exit."""

    @initialize(
        strategy=st.sampled_from(Strategy),
        max_restarts=st.integers(0, 4),
        window_s=WINDOWS,
        auto_shutdown=st.sampled_from(AutoShutdown),
        children=kids(),
    )
    def a_supervisor_starts(
        self,
        strategy: Strategy,
        max_restarts: int,
        window_s: float,
        auto_shutdown: AutoShutdown,
        children: list[Kid],
    ) -> None:
        self.rules = Rules(strategy, max_restarts, window_s, auto_shutdown)
        self.kids = children
        self.history: tuple[float, ...] = ()
        self.restarts: list[float] = []
        self.now = 0.0
        self.down = False

    # ---- rules, named after what happens to the supervisor ----

    @precondition(lambda self: not self.down and self._running())
    @rule(i=st.integers(0, 4), start_fails_at=st.none() | st.integers(0, 4))
    def child_crashes(self, i: int, start_fails_at: int | None) -> None:
        self._exit(self._pick(self._running(), i), crashed=True, start_fails_at=start_fails_at)

    @precondition(lambda self: not self.down and self._running())
    @rule(i=st.integers(0, 4), start_fails_at=st.none() | st.integers(0, 4))
    def child_exits_normally(self, i: int, start_fails_at: int | None) -> None:
        self._exit(self._pick(self._running(), i), crashed=False, start_fails_at=start_fails_at)

    @rule(windows=st.sampled_from([1, 1 - TICK, 1 + TICK, 0.5, 0.25]) | st.just(TICK / 4))
    def time_passes(self, windows: float) -> None:
        self.now += windows * self.rules.window_s

    @precondition(lambda self: not self.down and self._running())
    @rule(i=st.integers(0, 4))
    def operator_terminates_child(self, i: int) -> None:
        kid = self._pick(self._running(), i)
        kid.status = STOPPED
        if kid.restart is TEMPORARY:
            self.kids.remove(kid)

    @precondition(lambda self: not self.down and self._stopped())
    @rule(i=st.integers(0, 4))
    def operator_restarts_child(self, i: int) -> None:
        self._pick(self._stopped(), i).status = RUNNING  # does not count toward the intensity

    @precondition(lambda self: self.down)
    @rule()
    def parent_restarts_supervisor(self) -> None:
        for kid in self.kids:
            kid.status = RUNNING
        self.history, self.restarts, self.down = (), [], False

    # ---- invariants ----

    @invariant()
    def only_running_or_stopped_children_at_rest(self) -> None:
        for kid in self.kids:
            assert kid.status in (RUNNING, STOPPED), kid
            assert not (kid.restart is TEMPORARY and kid.status is STOPPED), kid

    @invariant()
    def history_mirrors_the_model(self) -> None:
        assert list(self.history) == self.restarts

    # ---- helpers ----

    def _running(self) -> list[Kid]:
        return [kid for kid in self.kids if kid.status is RUNNING]

    def _stopped(self) -> list[Kid]:
        return [kid for kid in self.kids if kid.status is STOPPED]

    @staticmethod
    def _pick(kids: list[Kid], i: int) -> Kid:
        return kids[i % len(kids)]

    def _exit(self, kid: Kid, *, crashed: bool, start_fails_at: int | None) -> None:
        plan, self.history = plan_exit(
            self.rules,
            [k.view() for k in self.kids],
            self.history,
            kid.name,
            crashed,
            self.now,
        )
        expected, self.restarts = expected_plan(
            self.rules, self.kids, self.restarts, kid, crashed, self.now
        )
        check_plan_shape(plan, self.kids)
        if plan.give_up is not None:
            assert expected.give_up is not None
            assert f"max_restarts={self.rules.max_restarts}" in plan.give_up
            assert repr(kid.name) in plan.give_up
            plan = attrs.evolve(plan, give_up="...")
        assert plan == expected
        self._carry_out(plan, kid, start_fails_at)

    def _carry_out(self, plan: Plan, kid: Kid, start_fails_at: int | None) -> None:
        """Do what `Supervisor` does with a plan (a start may fail, once)."""
        kid.status = STOPPED
        by_name = {k.name: k for k in self.kids}
        if plan.give_up is not None:
            self.kids = [k for k in self.kids if k.restart is not TEMPORARY]
            for k in self.kids:
                k.status = STOPPED
            self.down = True
            return
        for name in plan.terminate:
            by_name[name].status = STOPPED
        for name in plan.remove:
            self.kids.remove(by_name[name])
        if plan.shut_down:
            self.down = True
            return
        for name in plan.start:
            by_name[name].status = RESTARTING
        # Every child due is started in order; a failed start is handled as a
        # crash of that child, whose plan then restarts those still due.
        due = [k for k in self.kids if k.status is RESTARTING]
        for position, k in enumerate(due):
            if position == start_fails_at:
                self._exit(k, crashed=True, start_fails_at=None)
                return
            k.status = RUNNING


def check_plan_shape(plan: Plan, kids: list[Kid]) -> None:
    """What holds for every plan, whatever the rules."""
    order = {kid.name: i for i, kid in enumerate(kids)}
    restart = {kid.name: kid.restart for kid in kids}
    if plan.give_up is not None:
        assert plan == Plan(give_up=plan.give_up)
        return
    terminated = [order[name] for name in plan.terminate]
    assert terminated == sorted(terminated, reverse=True), "terminate in reverse start order"
    started = [order[name] for name in plan.start]
    assert started == sorted(set(started)), "start in start order"
    running = {kid.name for kid in kids if kid.status is RUNNING}
    assert set(plan.terminate) <= running
    assert all(restart[name] is TEMPORARY for name in plan.remove)
    assert not set(plan.remove) & set(plan.start)


TestRulesMachine = RulesMachine.TestCase


# ---- examples worth naming ---------------------------------------------------------------


def children(*specs: str, status: dict[str, ChildStatus] | None = None) -> list[ChildView]:
    """``children("a:permanent", "b:temporary")`` in start order, all running unless told."""
    views = []
    for spec in specs:
        name, _, kind = spec.partition(":")
        significant = kind.endswith("!")
        views.append(
            ChildView(
                name,
                to_restart_type(kind.rstrip("!") or "permanent"),
                (status or {}).get(name, RUNNING),
                significant,
            )
        )
    return views


def plan(
    children: list[ChildView],
    name: str,
    *,
    crashed: bool = True,
    history: tuple[float, ...] = (),
    now: float = 10.0,
    **rules: object,
) -> Plan:
    return plan_exit(Rules(**rules), children, history, name, crashed, now)[0]  # type: ignore[arg-type]


def test_one_for_one_restarts_only_the_crashed_child() -> None:
    assert plan(children("a", "b", "c"), "b") == Plan(start=("b",))


def test_one_for_all_terminates_the_others_in_reverse_then_starts_all_in_order() -> None:
    assert plan(children("a", "b", "c", "d"), "b", strategy="one_for_all") == Plan(
        terminate=("d", "c", "a"), start=("a", "b", "c", "d")
    )


def test_rest_for_one_restarts_the_crashed_child_and_those_after_it() -> None:
    assert plan(children("a", "b", "c", "d"), "b", strategy="rest_for_one") == Plan(
        terminate=("d", "c"), start=("b", "c", "d")
    )


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
def test_stopped_siblings_stay_stopped(strategy: str) -> None:
    kids = children("a", "b:transient", "c", status={"c": STOPPED})
    assert plan(kids, "a", strategy=strategy) == Plan(terminate=("b",), start=("a", "b"))


@pytest.mark.parametrize("strategy", ["one_for_all", "rest_for_one"])
def test_a_temporary_sibling_terminated_by_the_strategy_is_removed(strategy: str) -> None:
    kids = children("a", "b:temporary", "c")
    assert plan(kids, "a", strategy=strategy) == Plan(
        terminate=("c", "b"), start=("a", "c"), remove=("b",)
    )


def test_siblings_waiting_to_restart_are_started_not_terminated() -> None:
    kids = children("a", "b", "c", status={"b": RESTARTING, "c": RESTARTING})
    assert plan(kids, "b", strategy="one_for_all") == Plan(terminate=("a",), start=("a", "b", "c"))


@pytest.mark.parametrize(
    ("kind", "crashed", "expected"),
    [
        ("permanent", True, Plan(start=("a",))),
        ("permanent", False, Plan(start=("a",))),
        ("transient", True, Plan(start=("a",))),
        ("transient", False, Plan()),
        ("temporary", True, Plan(remove=("a",))),
        ("temporary", False, Plan(remove=("a",))),
    ],
)
def test_restart_type_decides_whether_an_exit_is_restarted(
    kind: str, crashed: bool, expected: Plan
) -> None:
    assert plan(children(f"a:{kind}", "b"), "a", crashed=crashed) == expected


def test_an_exit_that_is_not_restarted_leaves_the_history_alone() -> None:
    _, history = plan_exit(Rules(max_restarts=0), children("a:transient"), (1.0,), "a", False, 2)
    assert history == (1.0,)


def test_max_restarts_zero_gives_up_at_the_first_restart() -> None:
    decided, history = plan_exit(Rules(max_restarts=0), children("a"), (), "a", True, 0.0)
    assert decided.give_up is not None and "max_restarts=0" in decided.give_up
    assert history == (0.0,)


def test_max_restarts_in_the_window_then_one_more_gives_up() -> None:
    rules = Rules(max_restarts=3, window_s=1.0)
    history: tuple[float, ...] = ()
    for now in (0.0, 0.25, 0.5):
        decided, history = plan_exit(rules, children("a"), history, "a", True, now)
        assert decided == Plan(start=("a",))
    decided, history = plan_exit(rules, children("a"), history, "a", True, 0.75)
    assert decided.give_up == ("4 restarts within 1 s exceed max_restarts=3 (child 'a' crashed)")


def test_a_restart_exactly_window_s_old_still_counts() -> None:
    rules = Rules(max_restarts=1, window_s=1.5)
    _, history = plan_exit(rules, children("a"), (), "a", True, 2.0)
    assert plan_exit(rules, children("a"), history, "a", True, 3.5)[0].give_up is not None
    decided, history = plan_exit(rules, children("a"), history, "a", True, 3.5 + TICK)
    assert decided == Plan(start=("a",))
    assert history == (3.5 + TICK,)


def test_one_for_all_restart_counts_once() -> None:
    rules = Rules("one_for_all", max_restarts=1)
    decided, history = plan_exit(rules, children("a", "b", "c"), (), "a", True, 0.0)
    assert decided.start == ("a", "b", "c")
    assert history == (0.0,)


def test_any_significant_shuts_down_when_a_significant_child_ends() -> None:
    kids = children("a:transient!", "b:temporary!", "c")
    decided = plan(kids, "a", crashed=False, auto_shutdown="any_significant")
    assert decided == Plan(shut_down=True)


def test_all_significant_waits_for_the_last_significant_child() -> None:
    kids = children("a:transient!", "b:temporary!", "c")
    assert plan(kids, "b", auto_shutdown="all_significant") == Plan(remove=("b",))
    kids = children("a:transient!", "b:temporary!", "c", status={"a": STOPPED})
    assert plan(kids, "b", auto_shutdown="all_significant") == Plan(remove=("b",), shut_down=True)


def test_a_significant_child_that_is_restarted_does_not_shut_down() -> None:
    kids = children("a:transient!")
    assert plan(kids, "a", crashed=True, auto_shutdown="any_significant") == Plan(start=("a",))


def test_a_child_that_is_not_significant_never_shuts_down() -> None:
    kids = children("a:transient", "b:transient!")
    assert plan(kids, "a", crashed=False, auto_shutdown="any_significant") == Plan()


# ---- restart_delay -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("restarts", "expected"), [(0, 0.0), (1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (10, 3.0)]
)
def test_restart_delay_grows_by_the_factor_up_to_the_cap(restarts: int, expected: float) -> None:
    assert restart_delay(0.5, 2.0, 3.0, restarts) == expected


def test_restart_delay_is_zero_without_a_base() -> None:
    assert restart_delay(0.0, 2.0, 3.0, 5) == 0.0


@given(
    base=st.floats(0, 10),
    factor=st.floats(1, 4),
    cap=st.floats(0, 60),
    restarts=st.integers(0, 50),
)
def test_restart_delay_stays_between_zero_and_the_cap_and_never_shrinks(
    base: float, factor: float, cap: float, restarts: int
) -> None:
    delay = restart_delay(base, factor, cap, restarts)
    assert 0.0 <= delay <= cap
    assert delay <= restart_delay(base, factor, cap, restarts + 1)


# ---- Rules validation --------------------------------------------------------------------


def test_rules_accept_names_for_strategy_and_auto_shutdown() -> None:
    rules = Rules("rest_for_one", 2, 0.5, "all_significant")
    assert rules.strategy is Strategy.REST_FOR_ONE
    assert rules.auto_shutdown is AutoShutdown.ALL_SIGNIFICANT


@pytest.mark.parametrize("value", [-1, True, 1.5, "3", None])
def test_rules_reject_a_bad_max_restarts(value: object) -> None:
    with pytest.raises(ValueError, match="max_restarts must be an integer >= 0"):
        Rules(max_restarts=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1.0, math.nan, True, "5"])
def test_rules_reject_a_bad_window(value: object) -> None:
    with pytest.raises(ValueError, match="window_s must be a number of seconds > 0"):
        Rules(window_s=value)  # type: ignore[arg-type]


def test_an_unknown_strategy_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown strategy 'one_for_some'; use one of") as info:
        Rules("one_for_some")
    assert "'rest_for_one'" in str(info.value)


def test_an_unknown_restart_type_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown restart type 'sometimes'.*'transient'"):
        to_restart_type("sometimes")


def test_an_unknown_auto_shutdown_names_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown auto_shutdown 'maybe'"):
        Rules(auto_shutdown="maybe")

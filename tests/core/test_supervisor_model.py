"""A real `Supervisor`, driven by hypothesis through random user actions, against a model.

`SupervisorMachine` starts an `ActorSystem` with one supervisor (random
strategy, intensity and children) and then does what a user might: crash a
child, make one exit normally, send it work, let time pass, terminate, restart,
delete or add a child, make a child's next start fail, start the supervisor
again after it gave up. After every step it checks the runtime against `Model`,
OTP's semantics written out plainly without looking at `wactorz.core.strategy`:
which children run, the order of every start and stop, incarnations, ids,
give-ups, and that each message is handled exactly once by the child it was
sent to, in order, or reported as a dead letter only where that is allowed
(the child stopped for good in that step). Children may also message each
other as they stop (``farewells``), which lands mail at awkward moments.

How Trio runs under hypothesis: each machine instance owns a `TrioThread`, a
``trio.run`` on a thread of its own with a `trio.testing.MockClock` (no
autojump), and hands it one coroutine per step with `trio.from_thread.run`.
Between steps the loop is idle. Virtual time moves only in `let_time_pass`, so
restart windows are exact; steps finish with `wait_all_tasks_blocked`, never
with a sleep, and a management call still waiting once everything else has
settled fails the step instead of hanging it. The window and every time step
are multiples of a power of two, so "exactly ``window_s`` ago" is exact in
floating point too. Trio registers its scheduler's random generator with
hypothesis, which seeds it per example (``st.random_module()`` lets hypothesis
vary it), so task interleavings are reproducible and shrink with the rest.

Run it deeper with ``HYPOTHESIS_PROFILE=long python -m pytest tests/core/test_supervisor_model.py``.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import attrs
import outcome
import pytest
import trio
import trio.testing
from hypothesis import currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from wactorz.core.actor import Actor
from wactorz.core.errors import ActorNotFound, ActorStartFailed, SupervisorError, WactorzError
from wactorz.core.events import ActorEvent, EventKind
from wactorz.core.registry import ActorSystem, Supervisor
from wactorz.core.strategy import RestartType, Strategy
from wactorz.core.supervisor import ChildCounts, ChildInfo

PERMANENT, TRANSIENT, TEMPORARY = RestartType
T = TypeVar("T")

TICK = 2.0**-10
"""The smallest step of virtual time, as a fraction of the window."""


# ---- the model ---------------------------------------------------------------------------


@attrs.define(eq=False)
class Child:
    name: str
    restart: RestartType
    running: bool = False
    incarnation: int = -1
    fail_next_start: bool = False


@attrs.define
class Model:
    """OTP's supervisor, on paper. ``log`` is every start and stop, in the order they happen."""

    strategy: Strategy
    max_restarts: int
    window_s: float
    children: list[Child]
    restarts: list[float] = attrs.Factory(list)
    supervising: bool = True
    give_ups: int = 0
    log: list[tuple[str, str, int]] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        for child in self.children:
            self._start(child)

    def on_crash(self, child: Child, now: float) -> None:
        self._exited(child, now, crashed=True)

    def on_normal_exit(self, child: Child, now: float) -> None:
        self._exited(child, now, crashed=False)

    def terminate(self, child: Child) -> None:
        if child.running:
            self._stop(child)
        if child.restart is TEMPORARY:
            self.children.remove(child)

    def restart(self, child: Child) -> str:
        """Start a stopped child, not counted as a restart: "started", "failed" or "refused"."""
        if not self.supervising or child.running:
            return "refused"
        return "started" if self._start(child) else "failed"

    def add(self, child: Child) -> None:
        """A new last child: started now if the supervisor runs, else with it."""
        self.children.append(child)
        if self.supervising:
            assert self._start(child)

    def delete(self, child: Child) -> bool:
        """Forget a stopped child; False if that is refused."""
        if child.running:
            return False
        self.children.remove(child)
        return True

    def start_again(self) -> bool:
        """Start the supervisor that gave up (or failed to start): all its children, in order."""
        self.restarts = []
        for at, child in enumerate(self.children):
            if not self._start(child):
                for started in reversed(self.children[:at]):
                    self._stop(started)
                self.children = [c for c in self.children if c.restart is not TEMPORARY]
                return False
        self.supervising = True
        return True

    def _exited(self, child: Child, now: float, crashed: bool, due: Sequence[Child] = ()) -> None:
        """``child`` ended (or failed to start, with ``due`` still waiting to be started)."""
        if child.running:
            self._stop(child)
        if child.restart is TEMPORARY:
            self.children.remove(child)
            return
        if child.restart is TRANSIENT and not crashed:
            return
        self.restarts = [t for t in self.restarts if now - t <= self.window_s] + [now]
        if len(self.restarts) > self.max_restarts:
            for other in reversed(self.children):
                if other.running:
                    self._stop(other)
            self.children = [c for c in self.children if c.restart is not TEMPORARY]
            self.supervising = False
            self.give_ups += 1
            return
        at = self.children.index(child)
        group = {
            Strategy.ONE_FOR_ONE: [child],
            Strategy.ONE_FOR_ALL: list(self.children),
            Strategy.REST_FOR_ONE: self.children[at:],
        }[self.strategy]
        siblings = [c for c in group if c.running]
        for sibling in reversed(siblings):
            self._stop(sibling)
        for sibling in siblings:
            if sibling.restart is TEMPORARY:
                self.children.remove(sibling)
        again = [c for c in self.children if c is child or c in siblings or c in due]
        for position, c in enumerate(again):
            if not self._start(c):
                self._exited(c, now, crashed=True, due=again[position + 1 :])
                return

    def _start(self, child: Child) -> bool:
        child.incarnation += 1
        if child.fail_next_start:
            child.fail_next_start = False
            self.log.append(("start-failed", child.name, child.incarnation))
            return False
        child.running = True
        self.log.append(("start", child.name, child.incarnation))
        return True

    def _stop(self, child: Child) -> None:
        child.running = False
        self.log.append(("stop", child.name, child.incarnation))


# ---- the real thing: actors that keep a journal, on a Trio loop of their own ---------------


class Poison(Exception):
    """What a child raises when told to crash."""


@attrs.define
class Journal:
    """What the children did, shared by all of them (only touched on the Trio thread)."""

    last_id: int = 0
    lifecycle: list[tuple[str, str, int]] = attrs.Factory(list)
    handled: list[tuple[str, int, int]] = attrs.Factory(list)
    """(child, incarnation, message id) of every message handled to the end."""
    crashed_on: list[int] = attrs.Factory(list)
    sent: list[tuple[int, str]] = attrs.Factory(list)
    """(message id, target) of the farewells the children sent each other."""
    refused: list[int] = attrs.Factory(list)
    strange: list[tuple[str, dict[str, Any]]] = attrs.Factory(list)
    latest: dict[str, Worker] = attrs.Factory(dict)
    fail_starts: set[str] = attrs.Factory(set)
    """Children whose next `on_start` raises."""

    def new_id(self) -> int:
        self.last_id += 1
        return self.last_id


class Worker(Actor):
    """Records its lifecycle; ``{"do": "crash"}`` raises, ``{"do": "exit"}`` stops it from inside.

    A child named in ``journal.fail_starts`` fails its next start.

    With a ``predecessor``, it says goodbye to it when it stops (a message other
    actors send at awkward moments: while the supervisor is busy restarting).
    """

    def __init__(
        self,
        system: ActorSystem,
        *,
        name: str,
        journal: Journal,
        predecessor: str | None,
    ) -> None:
        super().__init__(system, name=name)
        self.journal = journal
        self.predecessor = predecessor

    @property
    def incarnation(self) -> int:
        return self.statistics().incarnation

    async def on_start(self) -> None:
        if self.journal.latest.get(self.name) is self:
            self.journal.strange.append((self.name, {"started": "the same instance again"}))
        self.journal.latest[self.name] = self
        if self.name in self.journal.fail_starts:
            self.journal.fail_starts.remove(self.name)
            self.journal.lifecycle.append(("start-failed", self.name, self.incarnation))
            raise Poison(f"{self.name} was told to fail its start")
        self.journal.lifecycle.append(("start", self.name, self.incarnation))

    async def on_stop(self) -> None:
        await trio.lowlevel.checkpoint()
        self.journal.lifecycle.append(("stop", self.name, self.incarnation))
        if self.predecessor is not None:
            farewell = self.journal.new_id()
            try:
                self.send_nowait(self.predecessor, {"id": farewell, "do": "work"})
            except ActorNotFound:
                self.journal.refused.append(farewell)
            except WactorzError:
                pass  # the system is shutting down after the test
            else:
                self.journal.sent.append((farewell, self.predecessor))

    async def _process(self, message: dict[str, Any]) -> None:
        if "id" not in message:
            self.journal.strange.append((self.name, message))
            return
        await trio.lowlevel.checkpoint()
        if message["do"] == "crash":
            self.journal.crashed_on.append(message["id"])
            raise Poison(f"{self.name} was told to crash")
        if message["do"] == "exit":
            await self.stop()
        self.journal.handled.append((self.name, self.incarnation, message["id"]))


class TrioThread:
    """A ``trio.run`` with a `MockClock` on its own thread, running one coroutine at a time."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="supervisor-model", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=30) or self._error is not None:
            raise RuntimeError("the Trio thread did not start") from self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve, clock=self.clock)
        except BaseException as exc:  # reported by __init__ or close()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._finish = trio.Event()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._finish.wait()
            nursery.cancel_scope.cancel()

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``afn(*args)`` on the Trio thread; return its result or raise its exception."""
        return trio.from_thread.run(afn, *args, trio_token=self._token)

    def close(self) -> None:
        trio.from_thread.run_sync(self._finish.set, trio_token=self._token)
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise RuntimeError("the Trio thread did not finish")
        if self._error is not None:
            raise self._error


@attrs.frozen
class Snapshot:
    """What the user can see after a step (journal entries and events new since the last one)."""

    now: float
    supervising: bool
    children: list[ChildInfo]
    counts: ChildCounts
    lifecycle: list[tuple[str, str, int]]
    handled: list[tuple[str, int, int]]
    crashed_on: list[int]
    sent: list[tuple[int, str]]
    refused: list[int]
    strange: list[tuple[str, dict[str, Any]]]
    events: list[ActorEvent]
    stats: dict[str, tuple[str, int, int, int]]
    """Per child ever started: (id, incarnation, crashes, processed) of its latest incarnation."""
    registered: set[str]
    """Children whose latest incarnation is what the system finds by name."""


class World:
    """The actor system, the supervisor under test and its journal, on the Trio thread."""

    SHUTDOWN_S = 0.25

    def __init__(self, thread: TrioThread) -> None:
        self.thread = thread
        self.journal = Journal()
        self._seen = Counter[str]()

    async def start(
        self,
        strategy: Strategy,
        max_restarts: int,
        window_s: float,
        kinds: list[RestartType],
        farewells: bool,
    ) -> None:
        self.system = ActorSystem(node="model")
        await self.system.start()
        self._events = self.system.events()
        self.events = await self._events.__aenter__()
        self.supervisor = Supervisor(self.system, strategy, max_restarts, window_s, name="sup")
        self.farewells = farewells
        for i, kind in enumerate(kinds):
            self.supervisor.add(f"c{i}", Worker, **self.spec(kind, f"c{i - 1}" if i else None))
        await self.supervisor.start()
        await trio.testing.wait_all_tasks_blocked()

    def spec(self, kind: RestartType, predecessor: str | None) -> dict[str, Any]:
        return {
            "restart": kind,
            "shutdown_s": self.SHUTDOWN_S,
            "journal": self.journal,
            "predecessor": predecessor if self.farewells else None,
        }

    async def close(self) -> None:
        self.thread.clock.autojump_threshold = 0  # let anything left waiting time out
        if hasattr(self, "events"):
            await self._events.__aexit__(None, None, None)
        if hasattr(self, "system"):
            await self.system.stop()

    def send(self, name: str, do: str) -> int:
        """Send one message now (no checkpoint); return its id."""
        message_id = self.journal.new_id()
        self.system.send_nowait(name, {"id": message_id, "do": do})
        return message_id

    async def settle(self) -> None:
        await trio.testing.wait_all_tasks_blocked()

    async def finish(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await a management call; fail if it is still waiting once everything else settled."""
        done = trio.Event()
        result: list[outcome.Outcome[T]] = []

        async def run() -> None:
            result.append(await outcome.acapture(call))
            done.set()

        self.thread.nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        if not done.is_set():
            raise AssertionError(f"{call} never returned (is it waiting for time to pass?)")
        return result[0].unwrap()

    async def snapshot(self) -> Snapshot:
        journal, events = self.journal, []
        while True:
            try:
                events.append(self.events.receive_nowait())
            except trio.WouldBlock:
                break
        assert self.events.dropped == 0

        def new(what: str, entries: list[Any]) -> list[Any]:
            fresh = entries[self._seen[what] :]
            self._seen[what] = len(entries)
            return fresh

        return Snapshot(
            now=trio.current_time(),
            supervising=self.supervisor.running,
            children=self.supervisor.which_children(),
            counts=self.supervisor.count_children(),
            lifecycle=new("lifecycle", journal.lifecycle),
            handled=new("handled", journal.handled),
            crashed_on=new("crashed_on", journal.crashed_on),
            sent=new("sent", journal.sent),
            refused=new("refused", journal.refused),
            strange=new("strange", journal.strange),
            events=events,
            stats={
                name: (s.id, s.incarnation, s.crashes, s.processed)
                for name, actor in journal.latest.items()
                for s in [actor.statistics()]
            },
            registered={
                name for name, actor in journal.latest.items() if self.system.lookup(name) is actor
            },
        )


# ---- the state machine -------------------------------------------------------------------

CHILD = st.integers(0, 4)
"""Which child a step is about, counted among the children it can apply to."""


class SupervisorMachine(RuleBasedStateMachine):
    """A user pushing a real supervisor around, checked against `Model` after every step."""

    @initialize(
        strategy=st.sampled_from(Strategy),
        max_restarts=st.integers(0, 4),
        window_s=st.sampled_from([0.5, 1.0, 1.5, 4.0]),
        kinds=st.lists(st.sampled_from(RestartType), min_size=1, max_size=5),
        farewells=st.booleans(),
        schedule=st.random_module(),
    )
    def start_supervisor(
        self,
        strategy: Strategy,
        max_restarts: int,
        window_s: float,
        kinds: list[RestartType],
        farewells: bool,
        schedule: object = None,
    ) -> None:
        """``farewells``: each child messages the one before it when it stops.
        ``schedule`` only seeds Trio's scheduler (see the module docstring)."""
        self.model = Model(
            strategy,
            max_restarts,
            window_s,
            [Child(f"c{i}", kind) for i, kind in enumerate(kinds)],
        )
        self.now = 0.0
        self.thread = TrioThread()
        self.world = World(self.thread)
        self.thread.run(self.world.start, strategy, max_restarts, window_s, kinds, farewells)
        self.ids: dict[str, str] = {}
        self.crashes = Counter[str]()
        self.processed = Counter[str]()
        self.logged = 0
        self.give_ups = 0
        self.added = len(kinds)
        self.in_flight: dict[int, str] = {}
        """Ordinary messages sent and not yet handled or reported, and whom they were for."""
        self.poisons: set[int] = set()
        self.refused: set[int] = set()
        self.last_handled: dict[str, tuple[int, int]] = {}

    def teardown(self) -> None:
        if hasattr(self, "thread"):
            try:
                self.thread.run(self.world.close)
            finally:
                self.thread.close()

    # ---- the user's actions ----

    def _running(self) -> list[Child]:
        return [child for child in self.model.children if child.running]

    @precondition(lambda self: self._running())
    @rule(i=CHILD, queued_behind=st.integers(0, 3), siblings_busy=st.integers(0, 2))
    def crash_child(self, i: int, queued_behind: int, siblings_busy: int) -> None:
        """Send child i a poison message (and more behind it), while its siblings are busy."""
        child = self._pick(self._running(), i)
        self._send_burst(child, "crash", queued_behind, siblings_busy)
        self.model.on_crash(child, self.now)
        self.crashes[child.name] += 1

    @precondition(lambda self: self._running())
    @rule(i=CHILD, queued_behind=st.integers(0, 3), siblings_busy=st.integers(0, 2))
    def tell_child_to_exit(self, i: int, queued_behind: int, siblings_busy: int) -> None:
        """Send child i a message that makes it stop itself: a normal exit."""
        child = self._pick(self._running(), i)
        self._send_burst(child, "exit", queued_behind, siblings_busy)
        self.model.on_normal_exit(child, self.now)

    @precondition(lambda self: self.model.children)
    @rule(i=CHILD, count=st.integers(1, 3))
    def send_work(self, i: int, count: int) -> None:
        """Send child i ordinary messages (refused at once if it is not running)."""
        child = self._pick(self.model.children, i)
        if not child.running:
            count = 1  # refused at once: the child is not running

        async def send() -> None:
            for _ in range(count):
                message_id = self.world.journal.new_id()
                try:
                    self.world.system.send_nowait(child.name, {"id": message_id, "do": "work"})
                except ActorNotFound:
                    assert not child.running, f"{child.name} is running but was not found"
                    self.refused.add(message_id)
                else:
                    assert child.running, f"{child.name} accepted mail while stopped"
                    self.in_flight[message_id] = child.name
            await self.world.settle()

        self.thread.run(send)

    @rule(windows=st.sampled_from([1, 1 - TICK, 1 + TICK, 0.5, 0.25, TICK]))
    def let_time_pass(self, windows: float) -> None:
        """Advance virtual time by a multiple of the window (often just at its edge)."""
        dt = windows * self.model.window_s
        self.now += dt

        async def advance() -> None:
            self.thread.clock.jump(dt)
            await self.world.settle()

        self.thread.run(advance)

    @precondition(lambda self: self.model.children)
    @rule(i=CHILD, queued=st.integers(0, 3))
    def terminate_child(self, i: int, queued: int) -> None:
        """terminate_child, right after sending the child some work if it is running."""
        child = self._pick(self.model.children, i)
        queued = queued if child.running else 0

        async def terminate() -> None:
            for _ in range(queued):
                self.in_flight[self.world.send(child.name, "work")] = child.name
            await self.world.finish(lambda: self.world.supervisor.terminate_child(child.name))
            await self.world.settle()

        self.thread.run(terminate)
        self.model.terminate(child)

    @precondition(lambda self: self.model.children)
    @rule(i=CHILD)
    def restart_child(self, i: int) -> None:
        child = self._pick(self.model.children, i)

        async def restart() -> str:
            try:
                await self.world.finish(lambda: self.world.supervisor.restart_child(child.name))
            except SupervisorError:
                return "refused"
            except ActorStartFailed:
                return "failed"
            finally:
                await self.world.settle()
            return "started"

        assert self.thread.run(restart) == self.model.restart(child)

    @precondition(lambda self: self.model.children)
    @rule(i=CHILD)
    def delete_child(self, i: int) -> None:
        child = self._pick(self.model.children, i)

        async def delete() -> bool:
            try:
                self.world.supervisor.delete_child(child.name)
            except SupervisorError:
                return False
            return True

        assert self.thread.run(delete) == self.model.delete(child)

    @rule(kind=st.sampled_from(RestartType))
    def add_child(self, kind: RestartType) -> None:
        """add_and_start a new last child (or add its spec while the supervisor is down)."""
        child = Child(f"c{self.added}", kind)
        self.added += 1
        last = self.model.children[-1].name if self.model.children else None
        spec = self.world.spec(kind, last)
        supervisor = self.world.supervisor

        async def add() -> None:
            if self.model.supervising:
                await self.world.finish(
                    lambda: supervisor.add_and_start(child.name, Worker, **spec)
                )
            else:
                supervisor.add(child.name, Worker, **spec)
            await self.world.settle()

        self.thread.run(add)
        self.model.add(child)

    @precondition(lambda self: self.model.children)
    @rule(i=CHILD)
    def make_next_start_fail(self, i: int) -> None:
        """Make child i's next `on_start` raise, whenever and however it is started."""
        child = self._pick(self.model.children, i)
        child.fail_next_start = True

        async def arrange() -> None:
            self.world.journal.fail_starts.add(child.name)

        self.thread.run(arrange)

    @precondition(lambda self: not self.model.supervising)
    @rule()
    def start_supervisor_again(self) -> None:
        """Start the supervisor after it gave up (or failed to start)."""

        async def start() -> bool:
            try:
                await self.world.finish(self.world.supervisor.start)
            except ActorStartFailed:
                return False
            finally:
                await self.world.settle()
            return True

        assert self.thread.run(start) == self.model.start_again()

    # ---- helpers ----

    @staticmethod
    def _pick(children: list[Child], i: int) -> Child:
        return children[i % len(children)]

    def _send_burst(self, child: Child, do: str, queued_behind: int, siblings_busy: int) -> None:
        """Work for the running siblings, then ``do`` and more work for ``child``, all at once."""
        siblings = [c.name for c in self._running() if c is not child]

        async def burst() -> None:
            for name in siblings:
                for _ in range(siblings_busy):
                    self.in_flight[self.world.send(name, "work")] = name
            message_id = self.world.send(child.name, do)
            if do == "crash":
                self.poisons.add(message_id)
            else:
                self.in_flight[message_id] = child.name
            for _ in range(queued_behind):
                self.in_flight[self.world.send(child.name, "work")] = child.name
            await self.world.settle()

        self.thread.run(burst)

    # ---- the check after every step ----

    @invariant()
    def agrees_with_model(self) -> None:
        seen = self.thread.run(self.world.snapshot)
        model = self.model
        assert seen.now == self.now
        assert not seen.strange, f"children saw what nobody sent: {seen.strange}"

        # Starts and stops, in order: who was (re)started, who was terminated, and when.
        expected_log = model.log[self.logged :]
        assert seen.lifecycle == expected_log
        self.logged = len(model.log)

        # Which children exist, which run, and whether the supervisor gave up.
        running = {c.name for c in model.children if c.running}
        assert [(c.name, c.restart) for c in seen.children] == [
            (c.name, c.restart) for c in model.children
        ]
        assert {c.name for c in seen.children if c.running} == running
        assert all(c.status in ("running", "stopped") for c in seen.children), seen.children
        specs = len(model.children)
        assert seen.counts == ChildCounts(specs, len(running), supervisors=0, workers=specs)
        assert seen.supervising is model.supervising
        gave_up = [e for e in seen.events if e.kind is EventKind.GAVE_UP]
        assert len(gave_up) == model.give_ups - self.give_ups
        assert all(e.actor_name == "sup" for e in gave_up)
        self.give_ups = model.give_ups

        # Same id for ever, incarnations counted, only running children reachable by name.
        for info, child in zip(seen.children, model.children, strict=True):
            if child.incarnation < 0:
                assert info.id is None, "an id before the first start"
            else:
                assert self.ids.setdefault(info.name, info.id) == info.id
        self._account_for_messages(seen, running)
        if currently_in_test_context():  # coverage, for --hypothesis-show-statistics
            for kind, _, _ in expected_log:
                event(f"a child: {kind}")
            if gave_up:
                event("gave up")
            if any(
                e.kind is EventKind.DEAD_LETTER and e.reason != "no such actor" for e in seen.events
            ):
                event("queued mail became dead letters")
        for child in model.children:
            if child.incarnation < 0:
                assert child.name not in seen.stats
                continue
            actor_id, incarnation, crashes, processed = seen.stats[child.name]
            assert actor_id == self.ids[child.name]
            assert incarnation == child.incarnation
            assert crashes == self.crashes[child.name]
            assert processed == self.processed[child.name]
        assert seen.registered & {c.name for c in model.children} == running

    def _account_for_messages(self, seen: Snapshot, running: set[str]) -> None:
        """Each message: handled once, by its child, in order — or a dead letter where allowed."""
        stopped_for_good = {name for _, name, _ in seen.lifecycle if name not in running}
        for message_id, target in seen.sent:
            self.in_flight[message_id] = target
        self.refused.update(seen.refused)
        for name, incarnation, message_id in seen.handled:
            assert self.in_flight.pop(message_id, None) == name, (
                f"message {message_id} handled by {name}: not sent to it, or handled twice"
            )
            last = self.last_handled.get(name, (0, 0))
            assert (incarnation, message_id) > last and message_id > last[1], (
                f"{name} handled message {message_id} (incarnation {incarnation}) after "
                f"message {last[1]} (incarnation {last[0]})"
            )
            self.last_handled[name] = (incarnation, message_id)
            self.processed[name] += 1
        for message_id in seen.crashed_on:
            assert message_id in self.poisons
        for letter in seen.events:
            if letter.kind is not EventKind.DEAD_LETTER:
                continue
            assert letter.message is not None
            message_id = letter.message["id"]
            if message_id in self.poisons:
                assert isinstance(letter.exception, Poison)
                self.poisons.remove(message_id)
            elif message_id in self.refused:
                assert letter.reason == "no such actor"
                self.refused.remove(message_id)
            else:
                target = self.in_flight.pop(message_id, None)
                assert target is not None, f"dead letter for a message handled or unknown: {letter}"
                assert target in stopped_for_good, (
                    f"message {message_id} for {target} became a dead letter, "
                    f"but {target} did not stop for good: {letter.describe()}"
                )
        assert not self.poisons, f"crashes not reported as dead letters: {self.poisons}"
        assert not self.refused, f"refused messages not reported: {self.refused}"
        assert not self.in_flight, f"messages lost: {self.in_flight}"


TestSupervisorMachine = SupervisorMachine.TestCase


# ---- cases worth pinning, played through the same machine --------------------------------


@attrs.define
class Player:
    """Plays a `SupervisorMachine` by hand, checking it against the model after every step."""

    machine: SupervisorMachine

    def __call__(self, rule: str, **args: Any) -> None:
        getattr(self.machine, rule)(**args)
        self.machine.agrees_with_model()

    @property
    def gave_up(self) -> bool:
        return self.machine.model.give_ups > 0

    def lifecycle(self) -> list[str]:
        """Starts and stops since the last call, as "start c0 1" (name, incarnation)."""
        log = self.machine.model.log
        fresh, self.seen = log[self.seen :], len(log)
        return [" ".join(map(str, entry)) for entry in fresh]

    seen: int = 0


@contextmanager
def playing(
    strategy: str, kinds: str, *, farewells: bool = False, **rules: Any
) -> Iterator[Player]:
    """Start a supervisor over children of ``kinds`` ("permanent transient ...")."""
    machine = SupervisorMachine()
    try:
        machine.start_supervisor(
            Strategy(strategy),
            kinds=[RestartType(k) for k in kinds.split()],
            farewells=farewells,
            **rules,
        )
        machine.agrees_with_model()
        yield Player(machine)
    finally:
        machine.teardown()


@pytest.mark.parametrize("strategy", list(Strategy))
def test_exactly_max_restarts_in_the_window_then_one_more_gives_up(strategy: Strategy) -> None:
    kinds = "permanent transient temporary permanent"
    with playing(strategy, kinds, max_restarts=3, window_s=1.0) as act:
        for _ in range(3):
            act("crash_child", i=0, queued_behind=1, siblings_busy=1)
            act("let_time_pass", windows=0.25)
        assert not act.gave_up
        act("crash_child", i=0, queued_behind=2, siblings_busy=1)
        assert act.gave_up


@pytest.mark.parametrize(("since", "gives_up"), [(1.0, True), (1 - TICK, True), (1 + TICK, False)])
def test_a_restart_exactly_window_s_old_still_counts(since: float, gives_up: bool) -> None:
    with playing("one_for_all", "permanent permanent", max_restarts=1, window_s=1.5) as act:
        act("crash_child", i=1, queued_behind=1, siblings_busy=0)
        act("let_time_pass", windows=since)
        act("tell_child_to_exit", i=0, queued_behind=1, siblings_busy=1)
        assert act.gave_up is gives_up


@pytest.mark.parametrize(
    ("kind", "rule", "gives_up"),
    [
        ("permanent", "crash_child", True),
        ("permanent", "tell_child_to_exit", True),
        ("transient", "crash_child", True),
        ("transient", "tell_child_to_exit", False),
        ("temporary", "crash_child", False),
    ],
)
def test_max_restarts_zero_gives_up_at_the_first_restart(
    kind: str, rule: str, gives_up: bool
) -> None:
    with playing("rest_for_one", f"{kind} permanent", max_restarts=0, window_s=0.5) as act:
        act(rule, i=0, queued_behind=2, siblings_busy=1)
        assert act.gave_up is gives_up
        if gives_up:
            act("restart_child", i=0)  # refused: the supervisor is down
            act("start_supervisor_again")
            act("send_work", i=0, count=2)


@settings(max_examples=20)
@given(schedule=st.random_module())
def test_mail_handed_to_an_idle_child_as_its_supervisor_stops_it_is_handled_once(
    schedule: object,
) -> None:
    # c1's farewell reaches idle c0 just before one_for_all stops c0 too: the
    # stop's wake-up once stayed queued and reached c0's next incarnation as {}.
    kinds = "permanent permanent permanent"
    with playing("one_for_all", kinds, farewells=True, max_restarts=4, window_s=0.5) as act:
        for _ in range(4):
            act("crash_child", i=2, queued_behind=0, siblings_busy=0)
            act("let_time_pass", windows=1 + TICK)


@pytest.mark.parametrize(("max_restarts", "gives_up"), [(2, False), (1, True)])
def test_a_restart_that_fails_to_start_counts_and_is_handled_as_a_crash(
    max_restarts: int, gives_up: bool
) -> None:
    kinds = "permanent permanent permanent"
    with playing("one_for_all", kinds, max_restarts=max_restarts, window_s=1.0) as act:
        act.lifecycle()
        act("make_next_start_fail", i=1)
        act("crash_child", i=0, queued_behind=2, siblings_busy=1)
        crash = ["stop c0 0", "stop c2 0", "stop c1 0", "start c0 1", "start-failed c1 1"]
        if gives_up:
            assert act.lifecycle() == [*crash, "stop c0 1"]
        else:  # c2 was still due: started with the others, once
            assert act.lifecycle() == [
                *crash,
                "stop c0 1",
                "start c0 2",
                "start c1 2",
                "start c2 1",
            ]
        assert act.gave_up is gives_up


def test_restart_child_that_fails_to_start_leaves_it_stopped_and_does_not_count() -> None:
    with playing("one_for_one", "permanent transient", max_restarts=0, window_s=1.0) as act:
        act("terminate_child", i=1, queued=2)
        act("make_next_start_fail", i=1)
        act.lifecycle()
        act("restart_child", i=1)
        act("restart_child", i=1)
        assert act.lifecycle() == ["start-failed c1 1", "start c1 2"]
        assert not act.gave_up


def test_a_supervisor_that_fails_to_start_stops_what_it_started_in_reverse() -> None:
    kinds = "permanent permanent permanent"
    with playing("rest_for_one", kinds, max_restarts=0, window_s=1.0) as act:
        act("crash_child", i=0, queued_behind=1, siblings_busy=1)
        act("make_next_start_fail", i=2)
        act.lifecycle()
        act("start_supervisor_again")
        assert act.lifecycle() == [
            "start c0 1",
            "start c1 1",
            "start-failed c2 1",
            "stop c1 1",
            "stop c0 1",
        ]
        act("start_supervisor_again")
        assert act.lifecycle() == ["start c0 2", "start c1 2", "start c2 2"]


class Sink(Actor):
    async def _process(self, message: dict[str, Any]) -> None:
        await trio.lowlevel.checkpoint()


async def test_empty_messages_queued_for_a_terminated_child_become_dead_letters() -> None:
    # `{}` is a valid message; it was once taken for the stop's (empty) wake-up and dropped.
    async with ActorSystem(node="model") as system, system.events() as events:
        supervisor = Supervisor(system, name="sup")
        supervisor.add("sink", Sink)
        await supervisor.start()
        await trio.testing.wait_all_tasks_blocked()  # sink waits for mail: the first is in hand
        for _ in range(3):
            system.send_nowait("sink", {})
        await supervisor.terminate_child("sink")  # handles the first, not the two queued
        letters = []
        while True:
            try:
                letter = events.receive_nowait()
            except trio.WouldBlock:
                break
            if letter.kind is EventKind.DEAD_LETTER:
                letters.append(letter.message)
        assert letters == [{}, {}]

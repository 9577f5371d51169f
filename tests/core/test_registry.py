"""ActorSystem: spawning, addressing, tell/ask/publish, backpressure, dead letters, lifecycle."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from tests.core.conftest import drain
from wactorz.core.actor import Actor, ActorState
from wactorz.core.errors import (
    ActorCrashed,
    ActorNotFound,
    ActorStartFailed,
    ActorStopped,
    AskTimeout,
    DuplicateName,
    InvalidMessage,
    MailboxFull,
    SystemNotRunning,
)
from wactorz.core.events import EventKind
from wactorz.core.ids import parse_wid
from wactorz.core.registry import ActorSystem, Supervisor


class Echo(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        return {"echo": message["text"]}


class Recorder(Actor):
    """Records every message with its sender; crashes on {"boom": ...}."""

    def __init__(self, system: ActorSystem, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.seen: list[tuple[str | None, dict[str, Any]]] = []

    async def _process(self, message: dict[str, Any]) -> object:
        if "boom" in message:
            raise RuntimeError(message["boom"])
        self.seen.append((self.sender, message))
        return len(self.seen)


class Gate(Actor):
    """Blocks in `_process` until the test opens the gate."""

    mailbox_size = 2

    def __init__(self, system: ActorSystem, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.gate = trio.Event()
        self.entered = trio.Event()
        self.done: list[int] = []
        self.stopped_after: list[int] | None = None

    async def _process(self, message: dict[str, Any]) -> object:
        self.entered.set()
        await self.gate.wait()
        self.done.append(message["n"])
        return message["n"]

    async def on_stop(self) -> None:
        self.stopped_after = list(self.done)


async def test_quick_start_example_works() -> None:
    async with ActorSystem() as system:
        echo = await system.spawn(Echo, name="echo")
        await system.send(echo.id, {"text": "hi"})
        reply = await system.ask(echo.id, {"text": "hi"}, timeout=1.0)
    assert reply == {"echo": "hi"}


async def test_spawn_returns_started_actor_with_wid_id() -> None:
    async with ActorSystem(node="test") as system:
        echo = await system.spawn(Echo, name="echo-1")
        assert echo.name == "echo-1"
        assert parse_wid(echo.id).origin == "echo_1"
        assert echo.system is system
        assert system.lookup("echo-1") is echo
        assert system.lookup(echo.id) is echo
        assert system.actors() == [echo]
        assert system.node == "test"


async def test_unnamed_actors_get_unique_names() -> None:
    async with ActorSystem() as system:
        first = await system.spawn(Echo)
        second = await system.spawn(Echo)
    assert first.name != second.name
    assert first.name.startswith("echo-")


async def test_ask_by_name_and_by_id() -> None:
    async with ActorSystem() as system:
        echo = await system.spawn(Echo, name="echo")
        assert await system.ask("echo", {"text": "a"}) == {"echo": "a"}
        assert await system.ask(echo.id, {"text": "b"}) == {"echo": "b"}


async def test_tell_is_delivered_and_sender_is_none_from_outside() -> None:
    async with ActorSystem() as system:
        recorder = await system.spawn(Recorder, name="rec")
        await system.send("rec", {"x": 1})
        await system.ask("rec", {"x": 2})
    assert recorder.seen == [(None, {"x": 1}), (None, {"x": 2})]


async def test_sender_is_the_sending_actor() -> None:
    class Forwarder(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            await self.send("rec", {"via": self.name})
            return await self.ask("rec", {"asked": True})

    async with ActorSystem() as system:
        recorder = await system.spawn(Recorder, name="rec")
        forwarder = await system.spawn(Forwarder, name="fwd")
        assert await system.ask("fwd", {}) == 2
    assert recorder.seen == [(forwarder.id, {"via": "fwd"}), (forwarder.id, {"asked": True})]


async def test_metadata_travels_beside_the_message_not_inside_it() -> None:
    class Inspector(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            assert self.envelope is not None
            return {
                "keys": sorted(message),
                "has_id": parse_wid(self.envelope.id).origin == "msg",
                "correlation": self.envelope.correlation_id == self.envelope.id,
            }

    async with ActorSystem() as system:
        await system.spawn(Inspector, name="inspector")
        reply = await system.ask("inspector", {"only": "mine"})
    assert reply == {"keys": ["only"], "has_id": True, "correlation": True}


async def test_per_sender_fifo_order_with_many_concurrent_senders() -> None:
    class Senders(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            for i in range(message["count"]):
                await self.send("rec", {"seq": i})
            return None

    async with ActorSystem() as system:
        recorder = await system.spawn(Recorder, name="rec")
        senders = [await system.spawn(Senders, name=f"s{i}") for i in range(5)]
        async with trio.open_nursery() as nursery:
            for sender in senders:
                nursery.start_soon(system.ask, sender.id, {"count": 500})
        await system.ask("rec", {"flush": True})
    for sender in senders:
        seqs = [m["seq"] for s, m in recorder.seen if s == sender.id]
        assert seqs == list(range(500))


async def test_full_mailbox_applies_backpressure_to_send() -> None:
    async with ActorSystem() as system:
        gate = await system.spawn(Gate, name="gate")
        await system.send("gate", {"n": 0})
        await gate.entered.wait()  # n=0 in hand; the mailbox (2) is empty again
        await system.send("gate", {"n": 1})
        await system.send("gate", {"n": 2})
        sent_third = trio.Event()

        async def third() -> None:
            await system.send("gate", {"n": 3})
            sent_third.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(third)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent_third.is_set()
            assert gate.statistics().queued == 2
            gate.gate.set()
        assert sent_third.is_set()
        await system.ask("gate", {"n": 4})
    assert gate.done == [0, 1, 2, 3, 4]


async def test_send_nowait_on_a_full_mailbox_raises_mailbox_full() -> None:
    async with ActorSystem() as system:
        gate = await system.spawn(Gate, name="gate")
        system.send_nowait("gate", {"n": 0})
        await gate.entered.wait()
        system.send_nowait("gate", {"n": 1})
        system.send_nowait("gate", {"n": 2})
        with pytest.raises(MailboxFull, match="gate.*full.*2 messages") as info:
            system.send_nowait("gate", {"n": 3})
        assert info.value.capacity == 2
        gate.gate.set()
        await system.ask("gate", {"n": 4})
    assert gate.done == [0, 1, 2, 4]


async def test_unknown_target_is_a_dead_letter_and_an_error() -> None:
    async with ActorSystem() as system, system.events() as events:
        await system.spawn(Echo, name="echo")
        with pytest.raises(ActorNotFound, match="'ehco'.*known: echo"):
            await system.send("ehco", {"text": "x"})
        with pytest.raises(ActorNotFound):
            await system.ask("nobody", {"q": 1})
        with pytest.raises(ActorNotFound):
            system.send_nowait("nobody", {"q": 2})
        dead = [e for e in drain(events) if e.kind is EventKind.DEAD_LETTER]
    assert [(e.actor_name, e.message) for e in dead] == [
        ("ehco", {"text": "x"}),
        ("nobody", {"q": 1}),
        ("nobody", {"q": 2}),
    ]


async def test_messages_to_a_stopped_actor_are_dead_letters() -> None:
    async with ActorSystem() as system, system.events() as events:
        echo = await system.spawn(Echo, name="echo")
        await echo.stop()
        assert system.lookup("echo") is None
        with pytest.raises(ActorNotFound):
            await system.send(echo.id, {"text": "late"})
        dead = [e for e in drain(events) if e.kind is EventKind.DEAD_LETTER]
    assert [e.message for e in dead] == [{"text": "late"}]


async def test_graceful_stop_finishes_message_in_hand_then_dead_letters_the_rest() -> None:
    async with ActorSystem() as system, system.events() as events:
        gate = await system.spawn(Gate, name="gate")
        await system.send("gate", {"n": 1})
        await gate.entered.wait()
        await system.send("gate", {"n": 2})
        async with trio.open_nursery() as nursery:
            asked: list[BaseException] = []

            async def ask_queued() -> None:
                try:
                    await system.ask("gate", {"n": 3})
                except ActorStopped as exc:
                    asked.append(exc)

            nursery.start_soon(ask_queued)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(gate.stop)
            await trio.testing.wait_all_tasks_blocked()
            assert gate.done == []  # still in hand: stop waits for it
            gate.gate.set()
        assert gate.done == [1]
        assert gate.stopped_after == [1]  # on_stop ran after the message in hand
        assert len(asked) == 1
        assert system.lookup("gate") is None
        kinds = [(e.kind, e.message) for e in drain(events) if e.actor_name == "gate"]
    assert (EventKind.DEAD_LETTER, {"n": 2}) in kinds
    assert (EventKind.DEAD_LETTER, {"n": 3}) in kinds
    assert kinds[-1][0] is EventKind.STOPPED or (EventKind.STOPPED, None) in kinds


async def test_ask_timeout_raises_ask_timeout(autojump_clock: trio.testing.MockClock) -> None:
    async with ActorSystem() as system:
        gate = await system.spawn(Gate, name="gate")
        with pytest.raises(AskTimeout, match="did not reply within 2 s") as info:
            await system.ask("gate", {"n": 1}, timeout=2.0)
        assert isinstance(info.value, TimeoutError)
        gate.gate.set()


async def test_late_reply_after_timeout_is_reported_as_dead_letter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with ActorSystem() as system, system.events() as events:
        gate = await system.spawn(Gate, name="gate")
        with pytest.raises(AskTimeout):
            await system.ask("gate", {"n": 7}, timeout=1.0)
        gate.gate.set()
        await system.ask("gate", {"n": 8})
        dead = [e for e in drain(events) if e.kind is EventKind.DEAD_LETTER]
    assert [e.message for e in dead] == [{"reply": 7}]
    assert dead[0].reason is not None
    assert "after the asker stopped waiting" in dead[0].reason


async def test_ask_to_crashing_actor_raises_actor_crashed_promptly() -> None:
    async with ActorSystem() as system:
        await system.spawn(Recorder, name="rec")
        with trio.fail_after(5):
            with pytest.raises(ActorCrashed, match="'rec' crashed.*RuntimeError: kaput") as info:
                await system.ask("rec", {"boom": "kaput"}, timeout=None)
    assert isinstance(info.value.error, RuntimeError)
    assert info.value.__cause__ is info.value.error


async def test_unsupervised_crash_stops_only_that_actor_and_reports() -> None:
    async with ActorSystem() as system, system.events() as events:
        rec = await system.spawn(Recorder, name="rec")
        echo = await system.spawn(Echo, name="echo")
        await system.send("rec", {"boom": "bad"})
        with trio.fail_after(5):
            while system.lookup("rec") is not None:
                await trio.sleep(0.001)
        assert await system.ask("echo", {"text": "still here"}) == {"echo": "still here"}
        assert system.actors() == [echo]
        found = [(e.kind, e.actor_name) for e in drain(events)]
    assert (EventKind.CRASHED, "rec") in found
    assert (EventKind.DEAD_LETTER, "rec") in found
    crash = found.index((EventKind.CRASHED, "rec"))
    assert rec.statistics().crashes == 1
    assert crash >= 0


async def test_on_start_failure_makes_spawn_raise_and_frees_the_name() -> None:
    class Broken(Actor):
        async def on_start(self) -> None:
            raise OSError("no disk")

        async def _process(self, message: dict[str, Any]) -> object:
            return None

    async with ActorSystem() as system:
        with pytest.raises(ActorStartFailed, match="'broken' failed to start: OSError: no disk"):
            await system.spawn(Broken, name="broken")
        assert system.lookup("broken") is None
        await system.spawn(Echo, name="broken")


async def test_duplicate_name_is_refused() -> None:
    async with ActorSystem() as system:
        await system.spawn(Echo, name="echo")
        with pytest.raises(DuplicateName, match="'echo' is already taken"):
            await system.spawn(Echo, name="echo")
        assert len(system.actors()) == 1


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        ("text", "expected a dict, got str"),
        ({1: "x"}, "key 1 is an int"),
        ({"a": {1, 2}}, "a is a set"),
        ({"a": [1, {"b": object()}]}, r"a\[1\]\.b is an object"),
        ({"a": {"b": {3: 4}}}, "a.b has key 3"),
    ],
)
async def test_messages_must_be_json_compatible(message: Any, problem: str) -> None:
    async with ActorSystem() as system:
        await system.spawn(Echo, name="echo")
        with pytest.raises(InvalidMessage, match=problem):
            await system.send("echo", message)
        with pytest.raises(InvalidMessage, match=problem):
            system.send_nowait("echo", message)
        with pytest.raises(InvalidMessage, match=problem):
            await system.publish("t/x", message)
        with pytest.raises(InvalidMessage):
            await system.ask("echo", message)


async def test_deeply_nested_or_cyclic_messages_are_refused() -> None:
    cyclic: dict[str, Any] = {}
    cyclic["self"] = cyclic
    async with ActorSystem() as system:
        await system.spawn(Echo, name="echo")
        with pytest.raises(InvalidMessage, match="nested more than"):
            await system.send("echo", cyclic)


async def test_nested_json_messages_are_accepted() -> None:
    message = {"a": [1, 2.5, None, True, {"b": ["c", (1, 2)]}], "d": {"e": {"f": "g"}}}
    async with ActorSystem() as system:
        rec = await system.spawn(Recorder, name="rec")
        await system.send("rec", message)
        await system.ask("rec", message)
    assert rec.seen == [(None, message), (None, message)]


async def test_actor_cannot_ask_itself() -> None:
    class Narcissus(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            return await self.ask(self.name, {})

    async with ActorSystem() as system:
        await system.spawn(Narcissus, name="narcissus")
        with pytest.raises(ActorCrashed, match="cannot ask itself"):
            await system.ask("narcissus", {})


async def test_using_a_system_that_is_not_running_says_how_to_start_it() -> None:
    system = ActorSystem()
    with pytest.raises(SystemNotRunning, match="async with ActorSystem"):
        await system.spawn(Echo)
    async with system:
        pass
    with pytest.raises(SystemNotRunning):
        await system.spawn(Echo)
    with pytest.raises(SystemNotRunning):
        await system.send("anyone", {})


async def test_imperative_start_and_stop_of_system_and_actor() -> None:
    system = ActorSystem()
    await system.start()
    assert system.running
    echo = Echo(system, name="echo")
    await echo.start()
    assert await system.ask("echo", {"text": "x"}) == {"echo": "x"}
    await echo.stop()
    assert system.lookup("echo") is None
    await echo.stop()  # twice is fine
    await system.stop()
    assert not system.running
    await system.stop()  # twice is fine


def test_trio_run_returns_cleanly_after_imperative_use() -> None:
    async def main() -> str:
        system = ActorSystem()
        await system.start()
        await system.spawn(Echo, name="echo")
        reply = await system.ask("echo", {"text": "bye"})
        await system.stop()
        return str(reply)

    assert trio.run(main) == "{'echo': 'bye'}"


def test_forgotten_stop_is_cleaned_up_when_trio_run_ends() -> None:
    stops: list[str] = []

    class Tidy(Echo):
        async def on_stop(self) -> None:
            stops.append(self.name)

    async def main() -> None:
        system = ActorSystem()
        await system.start()
        await system.spawn(Tidy, name="tidy")

    trio.run(main)
    assert stops == ["tidy"]


def _all_tasks() -> set[trio.lowlevel.Task]:
    found: set[trio.lowlevel.Task] = set()
    pending = [trio.lowlevel.current_root_task()]
    while pending:
        task = pending.pop()
        if task is None:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


async def test_no_task_outlives_the_system() -> None:
    before = _all_tasks()
    async with ActorSystem() as system:
        for i in range(20):
            await system.spawn(Echo, name=f"e{i}")
        assert len(_all_tasks()) > len(before) + 20
    assert _all_tasks() == before


async def test_stop_runs_in_reverse_start_order() -> None:
    order: list[str] = []

    class Tracked(Echo):
        async def on_stop(self) -> None:
            order.append(self.name)

    async with ActorSystem() as system:
        for name in ("a", "b", "c"):
            await system.spawn(Tracked, name=name)
    assert order == ["c", "b", "a"]


async def test_outer_cancellation_still_stops_actors_gracefully() -> None:
    order: list[str] = []

    class Tracked(Echo):
        async def on_stop(self) -> None:
            order.append(self.name)

    with trio.move_on_after(0.05):
        async with ActorSystem() as system:
            for name in ("a", "b"):
                await system.spawn(Tracked, name=name)
            await trio.sleep_forever()
    assert order == ["b", "a"]


async def test_events_stream_reports_lifecycle() -> None:
    async with ActorSystem() as system, system.events() as events:
        rec = await system.spawn(Recorder, name="rec")
        await system.spawn(Echo, name="echo")
        await system.send("rec", {"boom": "x"})
        with trio.fail_after(5):
            while system.lookup("rec") is not None:
                await trio.sleep(0.001)
        await system.lookup("echo").stop()  # type: ignore[union-attr]
        seen = drain(events)
    kinds = [(e.kind, e.actor_name) for e in seen]
    assert kinds[:2] == [(EventKind.STARTED, "rec"), (EventKind.STARTED, "echo")]
    assert (EventKind.CRASHED, "rec") in kinds
    assert kinds[-1] == (EventKind.STOPPED, "echo")
    crash = next(e for e in seen if e.kind is EventKind.CRASHED)
    assert isinstance(crash.exception, RuntimeError)
    assert crash.actor_id == rec.id
    assert all(e.time > 0 for e in seen)


async def test_slow_event_listener_loses_overflow_not_the_runtime() -> None:
    async with ActorSystem() as system, system.events(buffer=2) as events:
        for i in range(5):
            await system.spawn(Echo, name=f"e{i}")
        assert len(drain(events)) == 2
        assert events.dropped == 3


async def test_statistics_report_counts() -> None:
    async with ActorSystem() as system:
        rec = await system.spawn(Recorder, name="rec")
        for i in range(3):
            await system.ask("rec", {"i": i})
        stats = rec.statistics()
    assert stats.processed == 3
    assert stats.name == "rec"
    assert stats.capacity == Recorder.mailbox_size
    assert stats.queued == 0
    assert stats.incarnation == 0


async def test_an_actor_can_stop_its_own_system() -> None:
    class Shutdown(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            await self.system.stop()
            return "stopping"

    async with ActorSystem() as system:
        await system.spawn(Shutdown, name="shutdown")
        with trio.fail_after(5):
            assert await system.ask("shutdown", {}) == "stopping"
            while system.running:
                await trio.sleep(0.001)
    assert not system.running


async def test_system_statistics_snapshot() -> None:
    async with ActorSystem(node="n1") as system:
        await system.spawn(Echo, name="echo")
        async with system.events():
            stats = system.statistics()
    assert (stats.node, stats.running, stats.actors, stats.supervisors) == ("n1", True, 1, 0)
    assert stats.event_listeners == 1
    assert not system.statistics().running


async def test_the_system_runs_under_nursery_start_and_stops_with_the_nursery() -> None:
    """Trio's own convention: the system lives exactly as long as the task running it."""

    class Note(Actor):
        stopped: ClassVar[list[str]] = []

        async def _process(self, message: dict[str, Any]) -> object:
            return message

        async def on_stop(self) -> None:
            Note.stopped.append(self.name)

    async with trio.open_nursery() as nursery:
        system = await nursery.start(ActorSystem(node="embedded").run)
        assert system.running
        await system.spawn(Note, name="note")
        assert await system.ask("note", {"x": 1}) == {"x": 1}
        nursery.cancel_scope.cancel()
    assert not system.running
    assert Note.stopped == ["note"]

    async with trio.open_nursery() as nursery:
        other = await nursery.start(ActorSystem().run)
        await other.stop()  # a stop ends the run too
    assert not other.running


async def test_a_send_to_an_actor_that_just_crashed_says_so() -> None:
    class Fragile(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            raise RuntimeError("asked to crash")

    async with ActorSystem() as system, system.events() as events:
        fragile = await system.spawn(Fragile, name="fragile")
        await system.send("fragile", {})
        async for event in events:
            if event.kind == "crashed":
                break
        for target in ("fragile", fragile.id):
            with pytest.raises(ActorNotFound, match=r"crashed \d+\.\d s ago") as missing:
                await system.send(target, {})
            assert missing.value.gone is not None
        calm = await system.spawn(Echo, name="calm")
        await calm.stop()  # a plain stop is not remembered: the sender's code did it
        with pytest.raises(ActorNotFound, match="no actor with id or name 'calm'"):
            await system.ask("calm", {})
        with pytest.raises(ActorNotFound, match="no actor with id or name 'never'"):
            await system.send("never", {})


async def test_a_cancelled_spawn_or_start_leaves_nothing_behind_and_the_system_stops() -> None:
    """As with Trio's nursery.start: cancelling the caller cancels the start too. Before,
    the half-started actor was left untracked, and the system's stop waited for it forever."""

    class Slow(Actor):
        async def on_start(self) -> None:
            await trio.sleep(10)

        async def _process(self, message: dict[str, Any]) -> object:
            return None

    with trio.fail_after(5):
        async with ActorSystem() as system:
            with trio.move_on_after(0.05) as spawning:
                await system.spawn(Slow, name="slow")
            assert spawning.cancelled_caught
            sup = Supervisor(system, name="sup")
            sup.add("worker", Slow, shutdown_s=0.1)  # its time to finish on_start
            with trio.move_on_after(0.05) as starting:
                await sup.start()
            assert starting.cancelled_caught
            while system.actors() or system.supervisors():
                await trio.sleep(0.01)
            running = Supervisor(system, name="running")
            await running.start()
            with trio.move_on_after(0.05) as adding:
                await running.add_and_start("late", Slow)
            assert adding.cancelled_caught
            while system.lookup("late") is not None:
                await trio.sleep(0.01)
            assert [c.name for c in running.which_children()] == []
    assert not system.running


# ---- spawning an actor with nothing to start: no pass of the scheduler ----------------------


async def test_an_actor_with_nothing_to_start_runs_on_return_and_keeps_early_mail() -> None:
    async with ActorSystem() as system, system.events() as events:
        rec = await system.spawn(Recorder, name="rec")
        assert rec.state is ActorState.RUNNING  # before its task has run at all
        for n in range(3):
            system.send_nowait("rec", {"n": n})
        assert await system.ask("rec", {"n": 3}) == 4  # it answers how many it has seen
        assert [message["n"] for _, message in rec.seen] == [0, 1, 2, 3]
        started = [e for e in drain(events) if e.kind is EventKind.STARTED]
    assert [(e.actor_name, e.actor_id) for e in started] == [("rec", rec.id)]


async def test_an_actor_stopped_before_its_task_ran_stops_cleanly() -> None:
    async with ActorSystem() as system, system.events() as events:
        rec = await system.spawn(Recorder, name="rec")
        await system.send("rec", {"n": 1})
        with trio.fail_after(5):
            await rec.stop()
        assert rec.state is ActorState.STOPPED
        assert system.lookup("rec") is None
        seen = [(e.kind, e.message) for e in drain(events) if e.actor_name == "rec"]
    # As for any actor asked to stop: what it has not started on is reported, not lost.
    assert seen == [
        (EventKind.STARTED, None),
        (EventKind.STOPPED, None),
        (EventKind.DEAD_LETTER, {"n": 1}),
    ]


async def test_a_cancelled_spawn_of_an_actor_with_nothing_to_start_leaves_nothing() -> None:
    async with ActorSystem() as system:
        with trio.CancelScope() as scope:
            scope.cancel()
            await system.spawn(Recorder, name="rec")
        assert scope.cancelled_caught
        await trio.testing.wait_all_tasks_blocked()
        assert system.lookup("rec") is None
        assert system.statistics().actors == 0
        await system.spawn(Recorder, name="rec")  # the name is free again


async def test_spawning_in_a_loop_lets_other_tasks_run_every_turn() -> None:
    ran = 0

    async def other() -> None:
        nonlocal ran
        while True:
            ran += 1
            await trio.lowlevel.checkpoint()

    async with ActorSystem() as system, trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await trio.lowlevel.checkpoint()
        before = ran
        for _ in range(64 * 10):
            await system.spawn(Recorder)
        assert (
            ran - before >= 9
        )  # a pass of the scheduler every 64 spawns (the last may be pending)
        nursery.cancel_scope.cancel()


async def test_an_actor_in_a_nested_supervisor_can_stop_its_supervisor_and_system() -> None:
    class Shutdown(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            if message.get("what") == "supervisor":
                assert self.system.supervisors()[0]._is_caller_inside()
                await self.system.supervisors()[0].stop()  # asks only: the caller is inside
            else:
                await self.system.stop()
            return "stopping"

    async with ActorSystem() as system:
        outer = Supervisor(system, name="outer")
        outer.add("shutdown", Shutdown)
        await outer.start()
        assert not outer._is_caller_inside()  # the test's own task is not inside
        with trio.fail_after(5):
            assert await system.ask("shutdown", {"what": "supervisor"}) == "stopping"
            await outer.wait()
        outer2 = Supervisor(system, name="outer2")
        outer2.add("shutdown2", Shutdown)
        await outer2.start()
        with trio.fail_after(5):
            assert await system.ask("shutdown2", {"what": "system"}) == "stopping"
            while system.running:
                await trio.sleep(0.001)


@pytest.mark.parametrize("with_on_stop", [False, True])
async def test_a_name_is_free_again_as_soon_as_stop_returns(with_on_stop: bool) -> None:
    class Named(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            return self.id

    class NamedWithStop(Named):
        async def on_stop(self) -> None:
            await trio.lowlevel.checkpoint()

    kind = NamedWithStop if with_on_stop else Named
    async with ActorSystem() as system:
        ids = set()
        for _ in range(3):
            actor = await system.spawn(kind, "again")
            ids.add(await system.ask("again", {}))
            await actor.stop()
        assert len(ids) == 3
        await trio.testing.wait_all_tasks_blocked()  # the old exits, taken late, harm nothing
        assert system.lookup("again") is None
        assert [c.name for c in system._root._children] == []

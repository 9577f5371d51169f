"""The Actor base class: hooks, stopping, names, per-class mailbox size."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import trio

from wactorz.core.actor import Actor, ActorState, check_name
from wactorz.core.errors import ActorStopped, AskTimeout, MessageRejected, SystemNotRunning
from wactorz.core.mailbox import ReplySlot
from wactorz.core.registry import ActorSystem


class Lifecycle(Actor):
    log: ClassVar[list[str]] = []

    async def on_start(self) -> None:
        Lifecycle.log.append(f"start {self.name}")

    async def on_stop(self) -> None:
        Lifecycle.log.append(f"stop {self.name}")

    async def _process(self, message: dict[str, Any]) -> object:
        Lifecycle.log.append(f"process {message['n']}")
        if message.get("quit"):
            await self.stop()  # from inside: the current message still completes
            Lifecycle.log.append("after stop request")
        return message["n"]


async def test_hooks_run_around_the_messages() -> None:
    Lifecycle.log = []
    async with ActorSystem() as system:
        actor = await system.spawn(Lifecycle, name="life")
        assert actor.state is ActorState.RUNNING
        await system.ask("life", {"n": 1})
    assert Lifecycle.log == ["start life", "process 1", "stop life"]
    assert actor.state is ActorState.STOPPED


async def test_stop_from_inside_finishes_the_message_and_drops_the_rest() -> None:
    Lifecycle.log = []
    async with ActorSystem() as system:
        await system.spawn(Lifecycle, name="life")
        assert await system.ask("life", {"n": 1, "quit": True}) == 1
        with pytest.raises((ActorStopped, Exception)):
            await system.ask("life", {"n": 2}, timeout=1)
    assert Lifecycle.log == ["start life", "process 1", "after stop request", "stop life"]


async def test_mailbox_size_is_per_class() -> None:
    class Tiny(Actor):
        mailbox_size = 3

        async def _process(self, message: dict[str, Any]) -> object:
            return None

    async with ActorSystem() as system:
        tiny = await system.spawn(Tiny)
        big = await system.spawn(Lifecycle)
        assert tiny.statistics().capacity == 3
        assert big.statistics().capacity == Actor.mailbox_size


@pytest.mark.parametrize("bad", ["", "-lead", "has space", "a/b", "x" * 129, "plus+"])
def test_invalid_names_are_refused_with_the_rule(bad: str) -> None:
    with pytest.raises(ValueError, match="letters, digits"):
        check_name(bad)


def test_valid_names() -> None:
    for name in ("echo", "llm-agent", "worker.1", "A_b-9"):
        assert check_name(name) == name


async def test_actor_without_a_system_says_how_to_fix_it() -> None:
    orphan = Lifecycle(name="orphan")
    with pytest.raises(SystemNotRunning, match=r"Lifecycle\(system"):
        await orphan.start()


async def test_started_actor_cannot_be_started_twice() -> None:
    async with ActorSystem() as system:
        actor = await system.spawn(Lifecycle, name="once")
        with pytest.raises(Exception, match="already started"):
            await actor.start()


async def test_sender_and_envelope_are_cleared_between_incarnation_runs() -> None:
    async with ActorSystem() as system:
        actor = await system.spawn(Lifecycle, name="life")
        await system.ask("life", {"n": 1})
        assert actor.envelope is None
        await actor.stop()
    assert actor.sender is None


async def test_cancelled_actor_reports_message_in_hand_and_fails_its_ask() -> None:
    class Stuck(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            await trio.sleep_forever()

    async with ActorSystem() as system:
        from wactorz.core.supervisor import Supervisor

        sup = Supervisor(system, name="sup")
        sup.add("stuck", Stuck, shutdown_s=0.01)
        await sup.start()
        async with trio.open_nursery() as nursery:
            errors: list[BaseException] = []

            async def ask() -> None:
                try:
                    await system.ask("stuck", {"x": 1}, timeout=None)
                except ActorStopped as exc:
                    errors.append(exc)

            nursery.start_soon(ask)
            await trio.testing.wait_all_tasks_blocked()
            await sup.terminate_child("stuck")
        assert len(errors) == 1
        assert "cancelled" in str(errors[0])


class Ticker(Actor):
    """Uses `background` to send itself ticks; counts them."""

    def __init__(self, system: ActorSystem, *, name: str | None = None, fail_at: int = 0) -> None:
        super().__init__(system, name=name)
        self.fail_at = fail_at
        self.ticks = 0
        self.background_cancelled_before_on_stop: bool | None = None
        self._background_running = False

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        self._background_running = True
        task_status.started()
        try:
            n = 0
            while True:
                n += 1
                if n == self.fail_at:
                    raise LookupError("background failed")
                await self.send(self.id, {"tick": n})
                await trio.sleep(0.01)
        finally:
            self._background_running = False

    async def on_stop(self) -> None:
        self.background_cancelled_before_on_stop = not self._background_running

    async def _process(self, message: dict[str, Any]) -> object:
        if "tick" in message:
            self.ticks += 1
        return self.ticks


async def test_background_runs_beside_the_loop_and_ends_before_on_stop(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with ActorSystem() as system:
        ticker = await system.spawn(Ticker, name="ticker")
        await trio.sleep(0.105)
        assert await system.ask("ticker", {}) >= 10
        await ticker.stop()
    assert ticker.background_cancelled_before_on_stop is True


async def test_background_failure_is_a_crash_of_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    from wactorz.core.events import EventKind

    async with ActorSystem() as system, system.events() as events:
        await system.spawn(Ticker, name="ticker", fail_at=3)
        crash = None
        async for event in events:
            if event.kind is EventKind.CRASHED:
                crash = event
                break
    assert crash is not None
    assert isinstance(crash.exception, LookupError)


async def test_background_failing_before_ready_is_a_failure_to_start() -> None:
    from wactorz.core.errors import ActorStartFailed

    class NotReady(Actor):
        async def background(self, task_status: trio.TaskStatus[None]) -> None:
            raise ConnectionError("no broker")

        async def _process(self, message: dict[str, Any]) -> object:
            return None

    async with ActorSystem() as system:
        with pytest.raises(ActorStartFailed, match="ConnectionError: no broker"):
            await system.spawn(NotReady, name="not-ready")
        assert system.lookup("not-ready") is None


async def test_actor_is_started_only_once_background_is_ready() -> None:
    class Listener(Actor):
        def __init__(self, system: ActorSystem, *, name: str | None = None) -> None:
            super().__init__(system, name=name)
            self.ready_when_started = False

        async def background(self, task_status: trio.TaskStatus[None]) -> None:
            await trio.sleep(0.01)
            self.ready_when_started = True
            task_status.started()
            await trio.sleep_forever()

        async def _process(self, message: dict[str, Any]) -> object:
            return self.ready_when_started

    async with ActorSystem() as system:
        listener = await system.spawn(Listener, name="listener")
        assert listener.ready_when_started
        assert await system.ask("listener", {}) is True


async def test_the_envelope_is_one_object_per_message_with_its_metadata() -> None:
    class Inspector(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            envelope = self.envelope
            assert envelope is not None
            assert self.envelope is envelope  # built once, then kept for this message
            return {
                "message": envelope.message,
                "sender": envelope.sender,
                "also_sender": self.sender,
                "topic": envelope.topic,
                "id": envelope.id,
                "same_id": envelope.id == self.envelope.id,
                "correlates": envelope.correlation_id == envelope.id,
            }

    class Asker(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            return await self.ask("inspector", {"from": "asker"})

    async with ActorSystem() as system:
        inspector = await system.spawn(Inspector, name="inspector")
        asker = await system.spawn(Asker, name="asker")
        seen = await system.ask("asker", {})
        assert seen["message"] == {"from": "asker"}
        assert seen["sender"] == seen["also_sender"] == asker.id
        assert seen["topic"] is None
        assert seen["same_id"] and seen["correlates"]
        first_id = seen["id"]
        again = await system.ask("inspector", {"n": 2})
        assert again["sender"] is None  # not sent by an actor
        assert again["id"] != first_id  # a new message, a new envelope
        assert inspector.envelope is None and inspector.sender is None  # between messages


async def test_the_envelope_shows_whether_an_asker_still_waits_and_nothing_more() -> None:
    seen: list[tuple[bool, bool | None]] = []

    class Slow(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            reply = self.current_envelope.reply
            if reply is not None and message.get("slow"):
                await trio.sleep(0.2)  # longer than the asker waits
            seen.append((reply is None, None if reply is None else reply.pending))
            return None

    async with ActorSystem() as system:
        await system.spawn(Slow, name="slow")
        await system.send("slow", {})
        await system.ask("slow", {})
        with pytest.raises(AskTimeout):
            await system.ask("slow", {"slow": True}, timeout=0.05)
        await system.ask("slow", {})
    assert seen == [(True, None), (False, True), (False, False), (False, True)]
    assert not hasattr(ReplySlot, "resolve") and not hasattr(ReplySlot, "fail")  # read-only


async def test_messages_handled_in_one_turn_each_see_their_own_sender_and_envelope() -> None:
    class Reader(Actor):
        mailbox_size = 16

        def __init__(self, system: ActorSystem, *, name: str | None = None) -> None:
            super().__init__(system, name=name)
            self.seen: list[tuple[int, str | None, bool, str | None]] = []

        async def _process(self, message: dict[str, Any]) -> object:
            if message["read"]:  # every third message leaves its envelope unbuilt
                envelope = self.envelope
                assert envelope is not None
                own = envelope.message is message and envelope.sender == self.sender
                self.seen.append((message["n"], self.sender, own, envelope.id))
            else:
                self.seen.append((message["n"], self.sender, True, None))
            return None

    async with ActorSystem() as system:
        reader = await system.spawn(Reader, name="reader")
        other = await system.spawn(Reader, name="other")  # only its id is used
        for n in range(6):  # queued without yielding: one turn handles them all
            message = {"n": n, "read": n % 3 != 1}
            if n % 2:
                other.send_nowait("reader", message)
            else:
                system.send_nowait("reader", message)
        await system.ask("reader", {"n": 6, "read": True})  # answered once all are handled
        assert [(n, sender, own) for n, sender, own, _ in reader.seen] == [
            (n, other.id if n % 2 else None, True) for n in range(6)
        ] + [(6, None, True)]
        ids = [envelope_id for *_, envelope_id in reader.seen if envelope_id is not None]
        assert len(ids) == len(set(ids)) == 5
        assert reader.envelope is None and reader.sender is None  # between messages


class Picky(Actor):
    """Accepts only ``{"n": <int>}``, and refuses anything else without crashing."""

    async def _process(self, message: dict[str, Any]) -> object:
        if not isinstance(message.get("n"), int):
            raise MessageRejected("send {'n': <an integer>}")
        return message["n"] * 2


async def test_a_rejected_ask_raises_at_the_asker_and_the_actor_carries_on() -> None:
    from wactorz.core.events import EventKind

    async with ActorSystem() as system, system.events() as events:
        picky = await system.spawn(Picky, name="picky")
        with pytest.raises(MessageRejected, match="send {'n'") as rejected:
            await system.ask("picky", {"n": "x"})
        assert rejected.value.target == "picky"
        await system.send("picky", {"m": 1})  # a refused tell is a dead letter
        assert await system.ask("picky", {"n": 4}) == 8
        seen = []
        while True:
            try:
                seen.append(events.receive_nowait())
            except trio.WouldBlock:
                break
    assert picky.statistics().crashes == 0
    assert picky.statistics().processed == 3
    assert [e.kind for e in seen if e.kind is not EventKind.STARTED][:1] == [EventKind.DEAD_LETTER]
    (dead,) = [e for e in seen if e.kind is EventKind.DEAD_LETTER]
    assert dead.message == {"m": 1}
    assert dead.reason == "rejected: send {'n': <an integer>}"


async def test_a_crash_inside_a_nursery_is_logged_with_its_root_cause_and_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A nursery wraps the failure in an exception group, which names nothing: the log
    line and the event's description name the leaf, and the traceback is the leaf's."""

    def encode(topic: str) -> bytes:
        return topic.encode()

    class Nested(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.to_thread.run_sync, lambda: None)
                encode("a\ud800")
            return None

    async with ActorSystem() as system, system.events() as events:
        await system.spawn(Nested, name="nested")
        await system.send("nested", {})
        from wactorz.core.events import EventKind

        async for event in events:
            if event.kind is EventKind.CRASHED:
                break
    assert isinstance(event.exception, BaseExceptionGroup)
    assert "UnicodeEncodeError: 'utf-8' codec can't encode" in event.describe()
    (record,) = [r for r in caplog.records if "crashed: nested" in r.getMessage()]
    assert record.levelname == "ERROR"
    assert "UnicodeEncodeError" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], UnicodeEncodeError)
    assert "in encode" in caplog.text  # the leaf's own frames are in the traceback


def test_capabilities_are_declared_per_class_as_a_tuple_of_strings() -> None:
    class Files(Actor):
        capabilities = ("files", "shell")

        async def _process(self, message: dict[str, Any]) -> object:
            return None

    assert Files.capabilities == ("files", "shell")
    assert Lifecycle.capabilities == ()
    with pytest.raises(TypeError, match="tuple of strings"):

        class Wrong(Actor):
            capabilities = "files"  # type: ignore[assignment]

            async def _process(self, message: dict[str, Any]) -> object:
                return None


def test_a_crash_is_printed_on_stderr_by_a_program_that_configured_no_logging() -> None:
    """Python's last-resort handler shows warnings and errors when nothing is configured;
    the library must not silence it (with a NullHandler, say)."""
    import subprocess
    import sys

    program = (
        "import trio\n"
        "from wactorz import Actor, ActorSystem\n"
        "class Crasher(Actor):\n"
        "    async def _process(self, message):\n"
        "        raise ValueError('visible without logging set up')\n"
        "async def main():\n"
        "    async with ActorSystem() as system:\n"
        "        await system.spawn(Crasher, name='crasher')\n"
        "        await system.send('crasher', {})\n"
        "        await trio.sleep(0.2)\n"
        "trio.run(main)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )
    assert "crashed: crasher" in done.stderr
    assert "ValueError: visible without logging set up" in done.stderr


def test_a_subclass_cannot_take_a_name_the_runtime_uses_for_itself() -> None:
    with pytest.raises(
        TypeError, match=r"Runner defines _run, _serve, which the runtime's Actor uses"
    ):

        class Runner(Actor):
            async def _process(self, message: dict[str, Any]) -> object:
                return None

            async def _run(self, request: str) -> None: ...

            async def _serve(self) -> None: ...

    class Fine(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            return None

        async def _run_job(self) -> None: ...

    assert Fine.__name__ == "Fine"

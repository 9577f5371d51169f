"""LLMAgent driven by hypothesis through sends, cancels, crashes and restarts, against a model.

`AgentMachine` runs an `ActorSystem` on a Trio loop of its own thread (`TrioThread`, as the
history store's machine does), an `LLMAgent` under a supervisor, the fake Messages API
with a responder playing the model (a plain reply, a tool call then a reply, or a slow
reply that a cancel or a crash cuts), and a tool actor. Each rule is what a user or an
operator does; the model is, per session, the user messages sent so far, each either
certain to be stored (the turn completed) or possibly stored (the turn was cut: it is kept
consistent, or not at all). After every step, each session's stored history must pass
every rule the API enforces, hold exactly the certain messages in order with only
possible ones between them, and hold nothing of another session.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.agents.test_llm_agent import Crashable, Sink, Weather
from wactorz import ActorCrashed, ActorSystem, Supervisor
from wactorz.agents.history import check_history
from wactorz.config import LLMConfig
from wactorz.testing import FakeMessagesAPI, RecordedRequest, ScriptedReply, text, tool_use

T = TypeVar("T")

SESSIONS = st.sampled_from(["alice", "bob", "carol"])


class TrioThread:
    """A Trio loop in a thread, so that a synchronous state machine can drive actors."""

    def __init__(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            self.stopping = trio.Event()
            ready.set()
            await self.stopping.wait()

        self.thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        self.thread.start()
        ready.wait()

    def run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def bounded() -> T:
            with trio.fail_after(20):
                return await function(*args)

        return trio.from_thread.run(bounded, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self.stopping.set, trio_token=self.token)
        self.thread.join()


def respond(request: RecordedRequest) -> ScriptedReply:
    """The fake model: a tool call for "tool", a slow reply for "slow", else an echo."""
    last = request.messages[-1]["content"]
    if isinstance(last, list):  # tool results: the final answer
        return text("done with the tool")
    if last.startswith("tool"):
        return tool_use("forecast", {"city": last})
    if last.startswith("slow"):
        return text("slowly " * 200, chunk=7, delay_s=0.01)
    return text(f"re: {last}")


class AgentMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="wactorz-llm-")
        self.path = Path(self.directory) / "history.sqlite3"
        self.api = FakeMessagesAPI(responder=respond).start()
        self.loop = TrioThread()
        self.count = 0
        self.model: dict[str, list[tuple[str, bool]]] = {}
        self._start_system()

    def _start_system(self) -> None:
        async def start() -> ActorSystem:
            system = ActorSystem()
            await system.start()
            await system.spawn(Weather, name="weather")
            supervisor = Supervisor(system, "one_for_one", 100, 1.0, name="agents")
            config = LLMConfig(
                api_key="sk-test", base_url=self.api.url, max_retries=0, tools=("weather",)
            )
            supervisor.add("llm", Crashable, config=config, history_path=self.path)
            await supervisor.start()
            return system

        self.system = self.loop.run(start)

    def teardown(self) -> None:
        try:
            self.loop.run(self.system.stop)
            self.loop.close()
            self.api.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _words(self, session: str, kind: str) -> str:
        self.count += 1
        return f"{kind} {session} {self.count}"

    # ---- what users do ----

    @rule(session=SESSIONS, kind=st.sampled_from(["plain", "tool"]))
    def send(self, session: str, kind: str) -> None:
        words = self._words(session, kind)
        answer = self.loop.run(
            lambda: self.system.ask("llm", {"chat": {"session": session, "text": words}})
        )
        assert "error" not in answer, answer
        self.model.setdefault(session, []).append((words, True))

    @rule(session=SESSIONS, how=st.sampled_from(["cancel", "crash"]))
    def cut_a_slow_turn(self, session: str, how: str) -> None:
        words = self._words(session, "slow")

        async def cut() -> object:
            sink = await self.system.spawn(Sink)
            outcome: list[object] = []
            async with trio.open_nursery() as nursery:

                async def ask() -> None:
                    message = {
                        "chat": {"session": session, "text": words},
                        "stream_to": sink.id,
                    }
                    try:
                        outcome.append(await self.system.ask("llm", message, timeout=15))
                    except ActorCrashed as crashed:
                        outcome.append(crashed)

                nursery.start_soon(ask)
                await sink.first_text.wait()
                if how == "cancel":
                    await self.system.ask("llm", {"cancel": session})
                else:
                    await self.system.send("llm", {"crash": True})
            await sink.stop()
            return outcome[0]

        result = self.loop.run(cut)
        if how == "cancel":
            assert isinstance(result, dict) and "cancelled" in result["error"]
        else:
            assert isinstance(result, ActorCrashed)
        self.model.setdefault(session, []).append((words, False))

    @rule(session=SESSIONS)
    def clear(self, session: str) -> None:
        self.loop.run(lambda: self.system.ask("llm", {"clear": session}))
        self.model[session] = []

    @rule()
    def restart_the_process(self) -> None:
        self.loop.run(self.system.stop)
        self._start_system()

    # ---- what must hold ----

    @invariant()
    def every_history_is_consistent_and_matches_the_model(self) -> None:
        for session in ("alice", "bob", "carol"):
            found = self.loop.run(lambda s=session: self.system.ask("llm", {"history": s}))
            messages = found["messages"]
            if messages:
                check_history(messages)
            said = [m["content"] for m in messages if isinstance(m["content"], str)]
            assert all(f" {session} " in words for words in said), said  # no other session's
            expected = self.model.get(session, [])
            position = 0
            for words in said:
                while position < len(expected) and expected[position][0] != words:
                    assert not expected[position][1], f"{expected[position][0]!r} was lost"
                    position += 1
                assert position < len(expected), f"{words!r} was never sent, or sent twice"
                position += 1
            assert all(not certain for _, certain in expected[position:]), "a turn was lost"


TestAgentMachine = pytest.mark.slow(AgentMachine.TestCase)
TestAgentMachine.settings = settings(
    max_examples=min(8, settings().max_examples),
    stateful_step_count=8,
    deadline=None,
)

"""MainActor: commands, @name messages and chat, routed in a real system with real agents."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.agents.test_code_agent import Consumer
from wactorz import Actor, ActorSystem, MessageRejected, Supervisor
from wactorz.agents.code_agent import CodeAgent
from wactorz.agents.io_agent import IOAgent
from wactorz.agents.main_actor import COMMANDS, MainActor, Spawnable
from wactorz.agents.monitor_agent import MonitorActor
from wactorz.agents.streams import open_stream, stream_target
from wactorz.config import MonitorConfig, SandboxConfig

LIMIT_S = 20.0


class FakeLLM(Actor):
    """A chat agent: streams the text back in two parts; holds it while told to ``wait``."""

    capabilities = ("chat",)

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.turns: list[dict[str, Any]] = []
        self.cancels: list[str] = []
        self.running: dict[str, trio.CancelScope] = {}

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def _process(self, message: dict[str, Any]) -> object:
        if "cancel" in message:
            self.cancels.append(message["cancel"])
            scope = self.running.get(message["cancel"])
            if scope is not None:
                scope.cancel()
            return None
        if "sessions" in message:
            return [{"session": t["chat"]["session"]} for t in self.turns]
        self.turns.append(message)
        later = self.reply_later()
        text = message["chat"]["text"]

        async def turn() -> None:
            with trio.CancelScope() as scope:
                self.running[message["stream_id"]] = scope
                async with open_stream(
                    self, stream_target(message["stream_to"]), message["stream_id"]
                ) as stream:
                    if stream is not None:
                        await stream.write("text", "you said: ")
                        if text == "wait":
                            await trio.sleep_forever()
                        await stream.write("text", text)
                        stream.result = {"stop_reason": "end_turn"}
                later.answer({"text": f"you said: {text}", "session": message["chat"]["session"]})
            if scope.cancelled_caught:
                later.answer({"text": "you said: ", "stop_reason": "cancelled"})

        self.nursery.start_soon(turn)
        return None


class Echo(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        return {"echo": message}


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[ActorSystem]:
    async with ActorSystem() as system:
        crew = Supervisor(system, "one_for_one", name="service")
        crew.add("main", MainActor, spawnable={"echo": Spawnable(Echo)})
        crew.add("echo", Echo)
        await crew.start()
        yield system
        await crew.stop()


async def say(system: ActorSystem, text: str, **more: Any) -> Any:
    with trio.fail_after(LIMIT_S):
        return await system.ask(
            "main", {"chat": {"session": "s1", "text": text}, **more}, timeout=LIMIT_S
        )


async def test_help_lists_every_command_and_a_typo_gets_did_you_mean(system: ActorSystem) -> None:
    answer = await say(system, "/help")
    for line in COMMANDS.values():
        assert line in answer["text"]
    with pytest.raises(MessageRejected, match=r"unknown command /hlep: did you mean /help\?"):
        await say(system, "/hlep")
    with pytest.raises(MessageRejected, match="type /help for the list"):
        await say(system, "/zzzzzz")


async def test_at_name_sends_text_or_json_to_an_actor(system: ActorSystem) -> None:
    assert await say(system, "@echo hello there") == {"echo": {"text": "hello there"}}
    assert await say(system, '@echo {"n": 1}') == {"echo": {"n": 1}}
    assert await system.ask("main", {"chat": {"text": "hi", "target": "echo"}}) == {
        "echo": {"text": "hi"}
    }
    with pytest.raises(MessageRejected, match=r"no actor named 'ecoh': did you mean @echo\?"):
        await say(system, "@ecoh hi")
    with pytest.raises(MessageRejected, match="not a JSON object"):
        await say(system, "@echo {nope")


async def test_chat_goes_to_the_llm_agent_which_streams_straight_to_the_requester(
    system: ActorSystem,
) -> None:
    with pytest.raises(MessageRejected, match="no language model agent is running: set ANTHROPIC"):
        await say(system, "hello")
    llm = await system.spawn(FakeLLM, "llm")
    consumer = await system.spawn(Consumer, "consumer")
    answer = await say(system, "hello", stream_to="consumer", stream_id="c/1")
    assert answer == {"text": "you said: hello", "session": "s1"}
    with trio.fail_after(LIMIT_S):
        await consumer.ended.wait()
    text = "".join(p["text"] for m in consumer.got for p in m["parts"])
    assert text == "you said: hello"
    assert {m["stream"] for m in consumer.got} == {"c/1"}
    assert llm.turns[0]["chat"] == {"session": "s1", "text": "hello"}
    assert (await say(system, "/sessions"))["data"] == [{"session": "s1"}]


async def test_a_chat_is_cancelled_by_its_stream_id_and_by_slash_cancel(
    system: ActorSystem,
) -> None:
    llm = await system.spawn(FakeLLM, "llm")
    await system.spawn(Consumer, "consumer")
    answers: list[Any] = []

    async def wait_turn(stream_id: str) -> None:
        answers.append(await say(system, "wait", stream_to="consumer", stream_id=stream_id))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_turn, "c/1")
        nursery.start_soon(wait_turn, "c/2")
        with trio.fail_after(LIMIT_S):
            while len(llm.running) < 2:
                await trio.sleep(0.01)
        assert await system.ask("main", {"cancel": "c/1"}) == {
            "cancelled": True,
            "text": "cancelling",
        }
        with trio.fail_after(LIMIT_S):
            while not answers:
                await trio.sleep(0.01)
        assert (await say(system, "/cancel"))["cancelled"] == 1
    assert llm.cancels == ["c/1", "c/2"]
    assert [a["stop_reason"] for a in answers] == ["cancelled", "cancelled"]
    assert (await system.ask("main", {"cancel": "c/1"}))["cancelled"] is False


async def test_run_and_sh_go_through_the_sandbox_or_say_why_not(
    system: ActorSystem, tmp_path: Path
) -> None:
    with pytest.raises(MessageRejected, match="the sandbox is off.*sandbox.enabled"):
        await say(system, "/run python print(1)")
    config = SandboxConfig(enabled=True, root=tmp_path / "ws")
    await system.spawn(CodeAgent, "code", config=config)
    await system.spawn(IOAgent, "io", config=config)
    consumer = await system.spawn(Consumer, "consumer")
    result = await say(system, "/run python print(6 * 7)", stream_to="consumer", stream_id="r1")
    assert (result["stdout"], result["text"]) == ("42\n", "exit status 0")
    with trio.fail_after(LIMIT_S):
        await consumer.ended.wait()
    assert "".join(p["text"] for m in consumer.got for p in m["parts"]) == "42\n"
    with pytest.raises(MessageRejected, match="shell commands are off.*allow_shell"):
        await say(system, "/sh ls")
    with pytest.raises(MessageRejected, match="/run takes a language and code"):
        await say(system, "/run ruby puts 1")


async def test_stop_and_restart_go_through_the_supervisor_and_spare_the_router(
    system: ActorSystem,
) -> None:
    echo = system.lookup("echo")
    assert echo is not None
    assert "stopped echo" in (await say(system, "/stop echo"))["text"]
    assert system.lookup("echo") is None
    restarted = await say(system, "/restart echo")
    assert restarted["id"] == echo.id and system.lookup("echo") is not None
    with pytest.raises(MessageRejected, match="carries this conversation"):
        await say(system, "/stop main")
    with pytest.raises(MessageRejected, match="no actor named 'nobody'"):
        await say(system, "/stop nobody")
    agents = await say(system, "/agents")
    assert "service (supervisor, one_for_one)" in agents["text"]
    assert "  echo: running" in agents["text"]


async def test_spawn_starts_a_known_kind_under_the_routers_supervisor(system: ActorSystem) -> None:
    answer = await say(system, "/spawn echo echo2")
    assert answer["text"] == "started echo 'echo2' under service"
    assert await say(system, "@echo2 hi") == {"echo": {"text": "hi"}}
    with pytest.raises(
        MessageRejected, match=r"no kind of agent called 'ecoh': did you mean echo\?"
    ):
        await say(system, "/spawn ecoh x")
    with pytest.raises(MessageRejected, match=r"unknown option 'a' \(options: none\)"):
        await say(system, "/spawn echo echo3 a=b")
    with pytest.raises(MessageRejected, match="options are key=value"):
        await say(system, "/spawn echo echo3 loose")
    with pytest.raises(MessageRejected, match="the name 'main' is taken"):
        await say(system, "/spawn echo main")


async def test_status_reports_health_sandbox_and_model(system: ActorSystem) -> None:
    await system.spawn(MonitorActor, "monitor", config=MonitorConfig(interval_s=0.1))
    with trio.fail_after(LIMIT_S):
        while (await system.ask("monitor", {"get": "health"})) is None:
            await trio.sleep(0.05)
    status = await say(system, "/status")
    assert "actors" in status["text"]
    assert status["text"].splitlines()[1].startswith("health: ")
    assert "sandbox: off" in status["text"]
    assert "language model: not running" in status["text"]


async def test_malformed_requests_are_refused_with_what_to_send(system: ActorSystem) -> None:
    for bad in ({}, {"chat": "hi"}, {"chat": {"text": 1}}):
        with pytest.raises(MessageRejected, match="send {'chat'"):
            await system.ask("main", bad)
    with pytest.raises(MessageRejected, match="stream_to"):
        await system.ask("main", {"chat": {"text": "hi"}, "stream_to": 5})
    with pytest.raises(MessageRejected, match="nothing to send"):
        await say(system, "   ")


class Persona(Actor):
    """A spawnable kind with an option."""

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, motto: str = ""
    ) -> None:
        super().__init__(system, name=name)
        self.motto = motto

    async def _process(self, message: dict[str, Any]) -> object:
        return {"motto": self.motto}


CATALOGUE = {"persona": Spawnable(Persona, options=frozenset({"motto"}), description="says")}


async def test_what_people_spawn_comes_back_after_a_restart_until_deleted(tmp_path: Path) -> None:
    kept = tmp_path / "data" / "spawned.json"

    async def service() -> AsyncIterator[ActorSystem]:
        async with ActorSystem() as system:
            crew = Supervisor(system, "one_for_one", name="service")
            crew.add("main", MainActor, spawnable=CATALOGUE, spawned_file=kept)
            await crew.start()
            yield system
            await crew.stop()

    runs = service()
    system = await anext(runs)
    assert (await say(system, "/spawn persona ada motto='hello there'"))["text"] == (
        "started persona 'ada' under service"
    )
    await say(system, "/spawn persona bob motto=hi")
    assert await say(system, "@ada hi") == {"motto": "hello there"}
    await runs.aclose()
    assert [r["name"] for r in json.loads(kept.read_text())] == ["ada", "bob"]

    runs = service()
    system = await anext(runs)
    with trio.fail_after(LIMIT_S):
        while system.lookup("bob") is None:
            await trio.sleep(0.01)
    assert await say(system, "@ada hi") == {"motto": "hello there"}
    assert "forgot it" in (await say(system, "/delete ada"))["text"]
    assert "forgot it" in (await say(system, "/stop bob"))["text"]
    assert system.lookup("ada") is None and system.lookup("bob") is None
    with pytest.raises(MessageRejected, match="/delete is for agents /spawn started"):
        await say(system, "/delete main2")
    await runs.aclose()
    assert json.loads(kept.read_text()) == []


async def test_a_model_can_list_kinds_and_spawn_through_the_routers_tools(
    system: ActorSystem,
) -> None:
    main = system.lookup("main")
    assert isinstance(main, MainActor)
    main.spawnable = CATALOGUE
    kinds = await system.call_tool("main", "list_agent_kinds")
    assert kinds["kinds"] == {"persona": {"description": "says", "options": ["motto"]}}
    started = await system.call_tool(
        "main", "spawn_agent", {"kind": "persona", "name": "eve", "options": {"motto": "x"}}
    )
    assert started["text"].startswith("started persona 'eve'")
    assert await say(system, "@eve hi") == {"motto": "x"}
    with pytest.raises(MessageRejected, match="no kind of agent called 'python'"):
        await system.call_tool("main", "spawn_agent", {"kind": "python", "name": "x"})


async def test_an_idle_session_starts_a_new_conversation_at_its_next_message(
    system: ActorSystem,
) -> None:
    llm = await system.spawn(FakeLLM, "llm")
    main = system.lookup("main")
    assert isinstance(main, MainActor)
    await say(system, "first")
    await say(system, "second")
    main.session_idle_s = 0.05
    await trio.sleep(0.1)
    await say(system, "after a pause")
    await say(system, "right after")
    sessions = [turn["chat"]["session"] for turn in llm.turns]
    assert sessions == ["s1", "s1", "s1~2", "s1~2"]

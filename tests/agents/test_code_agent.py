"""CodeAgent in a real actor system, running real child processes in the real sandbox."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from wactorz import (
    Actor,
    ActorCrashed,
    ActorSystem,
    AskTimeout,
    MessageRejected,
    Supervisor,
    tool,
)
from wactorz.agents.code_agent import CodeAgent
from wactorz.agents.sandbox import SNIPPET_FILE
from wactorz.config import SandboxConfig

LIMIT_S = 20.0


def marker() -> str:
    """A word to find a run's processes by (in their command lines)."""
    return f"wz{secrets.token_hex(6)}"


_SEEN: dict[str, set[tuple[int, float]]] = {}
"""Processes ``survivors`` found for a word, by word: once a run's directory is gone, its
snippet file no longer says which word a process was running."""


def _holds(command_line: list[str], word: str) -> bool:
    for part in command_line:
        if word in part:
            return True
        if SNIPPET_FILE in part:  # the sandbox passes a snippet as a file, not on the line
            with contextlib.suppress(OSError):
                if word in Path(part).read_text(errors="replace"):
                    return True
    return False


def survivors(word: str) -> list[int]:
    """Processes still alive (not zombies) running a snippet that holds ``word``."""
    seen = _SEEN.setdefault(word, set())
    found = []
    for process in psutil.process_iter(["cmdline", "status", "create_time"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
                continue
            identity = (process.pid, process.info["create_time"])  # a pid may be reused
            if identity in seen or _holds(process.info["cmdline"] or [], word):
                seen.add(identity)
                found.append(process.pid)
        except psutil.Error:
            continue
    return found


class Consumer(Actor):
    """Keeps what is streamed to it."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.got: list[dict[str, Any]] = []
        self.ended = trio.Event()

    async def _process(self, message: dict[str, Any]) -> object:
        self.got.append(message)
        if message.get("end"):
            self.ended.set()
        return None


class Fragile(CodeAgent):
    """A CodeAgent that can be told to crash, to test its restarts."""

    @tool("Crash the agent.")
    async def crash(self) -> None:
        raise RuntimeError("told to crash")


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with ActorSystem() as system:
        yield system


def config(**overrides: Any) -> SandboxConfig:
    return SandboxConfig(enabled=True, **overrides)


async def run(system: ActorSystem, code: str, **more: Any) -> dict[str, Any]:
    arguments = {"language": "python", "code": code, **more}
    with trio.fail_after(LIMIT_S):
        result: dict[str, Any] = await system.call_tool("code", "run_code", arguments)
    return result


async def test_a_snippet_answers_with_its_output_exit_and_layers(system: ActorSystem) -> None:
    agent = await system.spawn(CodeAgent, "code", config=config())
    result = await run(system, "import sys; print('out'); print('err', file=sys.stderr)")
    assert (result["stdout"], result["stderr"], result["exit_code"]) == ("out\n", "err\n", 0)
    assert result["killed_by"] is None and result["timed_out"] is False
    assert result["truncated"] == {"stdout": False, "stderr": False}
    assert result["duration_s"] > 0 and result["run_id"]
    assert agent.report is not None and set(result["layers"]) == set(agent.report.active)
    shell = await system.call_tool("code", "run_code", {"language": "sh", "code": "echo $((6*7))"})
    assert shell["stdout"] == "42\n"


async def test_a_failing_snippet_is_a_normal_result_not_a_crash(system: ActorSystem) -> None:
    agent = await system.spawn(CodeAgent, "code", config=config())
    result = await run(system, "raise KeyError('nope')")
    assert result["exit_code"] == 1
    assert "KeyError: 'nope'" in result["stderr"]
    assert agent.statistics().crashes == 0
    assert (await run(system, "print(1)"))["stdout"] == "1\n"


async def test_stdin_and_files_reach_the_snippet(system: ActorSystem) -> None:
    await system.spawn(CodeAgent, "code", config=config())
    result = await run(
        system,
        "import sys; print(sys.stdin.read().upper(), open('data.txt').read())",
        stdin="hello",
        files={"data.txt": "from a file"},
    )
    assert result["stdout"] == "HELLO from a file\n"


async def test_a_run_past_its_timeout_is_killed_and_says_so(system: ActorSystem) -> None:
    await system.spawn(CodeAgent, "code", config=config(timeout_s=10))
    word = marker()
    result = await run(system, f"import time; time.sleep(60)  # {word}", timeout_s=0.5)
    assert result["timed_out"] is True and result["killed_by"] == "timeout"
    assert result["duration_s"] < 5
    assert survivors(word) == []


async def test_the_secrets_of_the_service_do_not_reach_a_snippet(
    system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-secret")
    monkeypatch.setenv("WACTORZ_LLM__API_KEY", "sk-test-secret")
    await system.spawn(CodeAgent, "code", config=config())
    result = await run(system, "import os; print(sorted(os.environ))")
    assert "ANTHROPIC" not in result["stdout"] and "WACTORZ" not in result["stdout"]


async def test_bad_input_is_refused_naming_the_field(system: ActorSystem) -> None:
    await system.spawn(CodeAgent, "code", config=config())
    with pytest.raises(MessageRejected, match="input.language: 'ruby' is not one of"):
        await system.call_tool("code", "run_code", {"language": "ruby", "code": "puts 1"})
    with pytest.raises(MessageRejected, match="NUL"):
        await system.call_tool("code", "run_code", {"language": "sh", "code": "echo \0"})
    with pytest.raises(MessageRejected, match="call a tool"):
        await system.ask("code", {"run": "print(1)"})


async def test_runs_wait_for_a_slot_and_the_mailbox_keeps_flowing(system: ActorSystem) -> None:
    await system.spawn(CodeAgent, "code", config=config(max_concurrent_runs=2))
    results: list[dict[str, Any]] = []

    async def one(n: int) -> None:
        results.append(
            await run(system, "import time; time.sleep(0.6); print('done')", run_id=f"r{n}")
        )

    async with trio.open_nursery() as nursery:
        for n in range(4):
            nursery.start_soon(one, n)
        with trio.fail_after(LIMIT_S):
            while len(listed := await system.call_tool("code", "list_runs")) < 4:
                await trio.sleep(0.01)
        states = sorted(r["state"] for r in listed)
        assert states == ["queued", "queued", "running", "running"]
    assert [r["stdout"] for r in results] == ["done\n"] * 4
    assert await system.call_tool("code", "list_runs") == []


async def test_cancel_run_kills_it_and_answers_with_what_it_printed(system: ActorSystem) -> None:
    await system.spawn(CodeAgent, "code", config=config())
    word = marker()
    code = f"import time\nprint('started', flush=True)\ntime.sleep(60)  # {word}"
    answers: list[dict[str, Any]] = []

    async def start() -> None:
        answers.append(await run(system, code, run_id="long"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(start)
        with trio.fail_after(LIMIT_S):
            while not survivors(word):
                await trio.sleep(0.02)
            await trio.sleep(0.2)  # let its first line come through
            assert await system.call_tool("code", "cancel_run", {"run_id": "long"}) == {
                "run_id": "long",
                "cancelled": True,
            }
    (result,) = answers
    assert (result["killed_by"], result["cancelled_by"]) == ("cancelled", "a request")
    assert result["stdout"] == "started\n"
    assert survivors(word) == []
    assert (await system.call_tool("code", "cancel_run", {"run_id": "long"}))["cancelled"] is False


async def test_a_run_is_killed_when_its_asker_stops_waiting(system: ActorSystem) -> None:
    await system.spawn(CodeAgent, "code", config=config())
    word = marker()
    with pytest.raises(AskTimeout):
        await system.ask(
            "code",
            {
                "tool": "run_code",
                "input": {"language": "python", "code": f"import time; time.sleep(60)  # {word}"},
            },
            timeout=1.0,
        )
    with trio.fail_after(LIMIT_S):
        while survivors(word) or await system.call_tool("code", "list_runs"):
            await trio.sleep(0.05)


async def test_output_streams_in_order_to_the_requester_then_the_result(
    system: ActorSystem,
) -> None:
    await system.spawn(CodeAgent, "code", config=config())
    consumer = await system.spawn(Consumer, "consumer")
    code = (
        "import sys, time\n"
        "for i in range(50):\n"
        "    print(i, flush=True)\n"
        "    if i % 10 == 0: print('e', i, file=sys.stderr, flush=True)\n"
        "    time.sleep(0.002)\n"
    )
    result = await run(system, code, stream_to="consumer", stream_id="s1")
    with trio.fail_after(LIMIT_S):
        await consumer.ended.wait()
    parts = [part for message in consumer.got for part in message["parts"]]
    stdout = "".join(p["text"] for p in parts if p["kind"] == "stdout")
    assert stdout == "".join(f"{i}\n" for i in range(50)) == result["stdout"]
    assert "".join(p["text"] for p in parts if p["kind"] == "stderr") == result["stderr"]
    assert {m["stream"] for m in consumer.got} == {"s1"}
    assert consumer.got[-1]["result"] == result


async def test_a_crash_of_the_agent_kills_its_runs_and_keeps_queued_requests() -> None:
    async with ActorSystem() as system:
        supervisor = Supervisor(system, "one_for_one", name="agents")
        supervisor.add("code", Fragile, config=config())
        await supervisor.start()
        word = marker()
        outcomes: dict[str, Any] = {}

        async def in_flight() -> None:
            try:
                await run(system, f"import time; time.sleep(60)  # {word}")
            except ActorCrashed as exc:
                outcomes["in_flight"] = exc

        async def queued() -> None:
            outcomes["queued"] = await run(system, "print('after the crash')")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(in_flight)
            with trio.fail_after(LIMIT_S):
                while not survivors(word):
                    await trio.sleep(0.02)
            code = system.lookup("code")
            assert code is not None
            # The crash and a run behind it, queued together: the next incarnation serves the run.
            code.send_nowait(code.id, {"tool": "crash", "input": {}})
            nursery.start_soon(queued)
        assert isinstance(outcomes["in_flight"], ActorCrashed)
        assert outcomes["queued"]["stdout"] == "after the crash\n"
        assert survivors(word) == []
        restarted = system.lookup("code")
        assert restarted is not None and restarted.statistics().incarnation == 1
        await supervisor.stop()

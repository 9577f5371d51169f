"""The code agents' workloads: a snippet's start-up through the CodeAgent, and streaming.

``startup``: ``print(1)`` asked of a CodeAgent (tool call, checked input, a background job,
the sandbox run, the answer), one run after another; raw-await starts the same command
(the interpreter the sandbox picks, ``-I -u -c "print(1)"``) with `trio.run_process`.

``stream``: a shell command that prints ``size`` MB run by an IOAgent, its output streamed
as chunk messages to a consuming actor that counts it; raw-await reads the same command's
pipe directly, in 64 KiB reads, counting.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any, Final

import trio

from wactorz.agents.code_agent import CodeAgent
from wactorz.agents.io_agent import IOAgent
from wactorz.agents.sandbox import Policy, probe
from wactorz.config import SandboxConfig
from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem

__all__ = ["startup_agent", "startup_raw", "stream_agent", "stream_raw"]

MB: Final = 1_000_000


def _python() -> str:
    python = probe(Policy()).python
    if python is None:
        raise RuntimeError("no interpreter the sandbox can run Python snippets with")
    return python


async def startup_raw(size: int) -> dict[str, float]:
    argv = [_python(), "-I", "-u", "-c", "print(1)"]
    started = time.perf_counter()
    for _ in range(size):
        done = await trio.run_process(argv, capture_stdout=True)
        assert done.stdout == b"1\n"
    return {"runs_per_s": size / (time.perf_counter() - started)}


async def startup_agent(size: int) -> dict[str, float]:
    async with ActorSystem() as system:
        await system.spawn(CodeAgent, "code", config=SandboxConfig(enabled=True))
        arguments = {"language": "python", "code": "print(1)"}
        await system.call_tool("code", "run_code", arguments)  # warm: the spawner started
        started = time.perf_counter()
        for _ in range(size):
            result = await system.call_tool("code", "run_code", arguments)
            assert result["stdout"] == "1\n", result
        elapsed = time.perf_counter() - started
    return {"runs_per_s": size / elapsed}


def _flood(size: int) -> str:
    return f"head -c {size * MB} /dev/zero"


async def stream_raw(size: int) -> dict[str, float]:
    started = time.perf_counter()
    seen = 0
    process = await trio.lowlevel.open_process(["/bin/sh", "-c", _flood(size)], stdout=-1)
    assert process.stdout is not None
    async with process.stdout:
        while chunk := await process.stdout.receive_some(65536):
            seen += len(chunk)
    await process.wait()
    assert seen == size * MB
    return {"mb_per_s": size / (time.perf_counter() - started)}


class _Counter(Actor):
    mailbox_size = 64

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.seen = 0
        self.ended = trio.Event()

    async def _process(self, message: dict[str, Any]) -> object:
        for part in message["parts"]:
            self.seen += len(part.get("text", ""))
        if message.get("end"):
            self.ended.set()
        return None


async def stream_agent(size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as workspace:
        config = SandboxConfig(enabled=True, allow_shell=True, root=workspace)
        async with ActorSystem() as system:
            await system.spawn(IOAgent, "io", config=config)
            counter = await system.spawn(_Counter, "counter")
            started = time.perf_counter()
            result = await system.call_tool(
                "io",
                "run_shell",
                {"command": _flood(size), "stream_to": "counter"},
                timeout=600,
            )
            await counter.ended.wait()
            elapsed = time.perf_counter() - started
    assert result["stdout_bytes"] == size * MB and counter.seen == size * MB, result
    return {"mb_per_s": size / elapsed}

"""The LLM agent's workloads, against the fake Messages API on loopback.

Both sides read the same replies from the same kind of server (`wactorz.testing.FakeMessagesAPI`,
which pushes far more deltas per second than the SDK parses) through the real SDK:

- *wactorz*: an `LLMAgent` turn asked with ``stream_to`` a consuming actor, timed until
  that actor has received the whole text (and so the stream's ending);
- *raw-await*: the bare SDK, ``client.messages.create(stream=True)`` read to its end in a
  plain Trio task: the same raw event stream the agent reads, with nothing done per event
  but taking a text delta's text.

`stream_*` measures text deltas per second over one long reply (``size`` deltas) and the
median time to the first delta over 20 short replies; `sessions_*` runs 100 sessions
concurrently, ``size`` turns in all, and reports turns per second and the growth of the
resident set per session (each round in a fresh interpreter).
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import anthropic
import psutil
import trio

from wactorz.agents.llm_agent import LLMAgent
from wactorz.config import LLMConfig
from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem
from wactorz.testing import FakeMessagesAPI, text

__all__ = ["sessions_raw_await", "sessions_wactorz", "stream_raw_await", "stream_wactorz"]

SESSIONS: Final = 100
FIRST_DELTA_TURNS: Final = 20
CHUNK: Final = 5
MODEL: Final = "claude-sonnet-4-5"


def _config(api: FakeMessagesAPI) -> LLMConfig:
    return LLMConfig(api_key="sk-bench", base_url=api.url, max_retries=0, timeout=60.0, tools=())


def _client(api: FakeMessagesAPI) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(api_key="sk-bench", base_url=api.url, max_retries=0)


class _Consumer(Actor):
    """Receives a stream; notes when its first text and its ending arrive."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.reset()

    def reset(self) -> None:
        self.first_text_at: float | None = None
        self.characters = 0
        self.ended = trio.Event()

    async def _process(self, message: dict[str, Any]) -> object:
        for part in message["parts"]:
            if part["kind"] == "text":
                if self.first_text_at is None:
                    self.first_text_at = time.perf_counter()
                self.characters += len(part["text"])
        if message.get("end"):
            self.ended.set()
        return None


async def stream_wactorz(size: int) -> dict[str, float]:
    """Deltas per second and time to first delta through an `LLMAgent` to a consumer."""
    words = "x" * (size * CHUNK)
    with tempfile.TemporaryDirectory() as directory:
        async with FakeMessagesAPI() as api, ActorSystem() as system:
            api.responder = lambda request: text(
                words if request.messages[-1]["content"] == "long" else "hello there", chunk=CHUNK
            )
            await system.spawn(
                LLMAgent, config=_config(api), history_path=Path(directory) / "h.sqlite3"
            )
            consumer = await system.spawn(_Consumer, name="consumer")
            waits = []
            for number in range(FIRST_DELTA_TURNS + 1):
                consumer.reset()
                asked = time.perf_counter()
                await system.ask(
                    "llm",
                    {"chat": {"session": f"s{number}", "text": "short"}, "stream_to": "consumer"},
                    timeout=30,
                )
                await consumer.ended.wait()
                assert consumer.first_text_at is not None
                if number:  # the first one opens the connection
                    waits.append(consumer.first_text_at - asked)
            consumer.reset()
            start = time.perf_counter()
            await system.ask(
                "llm",
                {"chat": {"session": "long", "text": "long"}, "stream_to": "consumer"},
                timeout=120,
            )
            await consumer.ended.wait()
            elapsed = time.perf_counter() - start
            if consumer.characters != len(words):
                raise RuntimeError(f"the consumer got {consumer.characters} of {len(words)}")
    return {"deltas_per_s": size / elapsed, "first_delta_ms": statistics.median(waits) * 1e3}


async def _read(client: anthropic.AsyncAnthropic, content: str) -> tuple[float, int]:
    """One streamed reply read raw: (when its first text delta came, characters read)."""
    first = 0.0
    characters = 0
    events = await client.messages.create(
        model=MODEL,
        max_tokens=4096,
        messages=[{"role": "user", "content": content}],
        stream=True,
    )
    async with events:
        async for event in events:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                if not first:
                    first = time.perf_counter()
                characters += len(event.delta.text)
    return first, characters


async def stream_raw_await(size: int) -> dict[str, float]:
    """The same figures for the bare SDK reading the same replies."""
    words = "x" * (size * CHUNK)
    async with FakeMessagesAPI() as api:
        api.responder = lambda request: text(
            words if request.messages[-1]["content"] == "long" else "hello there", chunk=CHUNK
        )
        async with _client(api) as client:
            waits = []
            for number in range(FIRST_DELTA_TURNS + 1):
                asked = time.perf_counter()
                first, _ = await _read(client, "short")
                if number:
                    waits.append(first - asked)
            start = time.perf_counter()
            _, characters = await _read(client, "long")
            elapsed = time.perf_counter() - start
    if characters != len(words):
        raise RuntimeError(f"read {characters} of {len(words)} characters")
    return {"deltas_per_s": size / elapsed, "first_delta_ms": statistics.median(waits) * 1e3}


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


def _reply(request: Any) -> Any:
    return text(f"Answer {len(request.messages)}: " + "words " * 40, chunk=20)


async def sessions_wactorz(size: int) -> dict[str, float]:
    """``size`` turns over `SESSIONS` concurrent sessions of one `LLMAgent`."""
    per_session = max(1, size // SESSIONS)
    with tempfile.TemporaryDirectory() as directory:
        async with FakeMessagesAPI(responder=_reply) as api, ActorSystem() as system:
            await system.spawn(
                LLMAgent, config=_config(api), history_path=Path(directory) / "h.sqlite3"
            )
            await system.ask("llm", {"chat": {"session": "warm", "text": "hi"}}, timeout=30)
            before = _rss()

            async def converse(session: str) -> None:
                for number in range(per_session):
                    chat = {"session": session, "text": f"question {number}"}
                    answer = await system.ask("llm", {"chat": chat}, timeout=120)
                    if "error" in answer:
                        raise RuntimeError(answer["error"])

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for index in range(SESSIONS):
                    nursery.start_soon(converse, f"session-{index}")
            elapsed = time.perf_counter() - start
            grown = _rss() - before
    return {
        "turns_per_s": per_session * SESSIONS / elapsed,
        "bytes_per_session": grown / SESSIONS,
    }


async def sessions_raw_await(size: int) -> dict[str, float]:
    """The same turns with the bare SDK: one task and one history list per session."""
    per_session = max(1, size // SESSIONS)
    async with FakeMessagesAPI(responder=_reply) as api, _client(api) as client:
        await _read(client, "hi")
        before = _rss()
        histories: list[list[dict[str, Any]]] = []

        async def converse(session: str) -> None:
            history: list[dict[str, Any]] = []
            histories.append(history)
            for number in range(per_session):
                history.append({"role": "user", "content": f"question {number}"})
                events = await client.messages.create(
                    model=MODEL, max_tokens=4096, messages=history, stream=True
                )
                pieces = []
                async with events:
                    async for event in events:
                        if event.type == "content_block_delta" and event.delta.type == "text_delta":
                            pieces.append(event.delta.text)
                history.append(
                    {"role": "assistant", "content": [{"type": "text", "text": "".join(pieces)}]}
                )

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(SESSIONS):
                nursery.start_soon(converse, f"session-{index}")
        elapsed = time.perf_counter() - start
        grown = _rss() - before
    return {
        "turns_per_s": per_session * SESSIONS / elapsed,
        "bytes_per_session": grown / SESSIONS,
    }

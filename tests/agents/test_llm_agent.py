"""LLMAgent against the fake Messages API, driven by the real ``anthropic`` SDK.

Every test runs a real HTTP server on loopback (`wactorz.testing.FakeMessagesAPI`, which
refuses any request the real API would refuse, a tool_use without its tool_result
included), real tool actors, and the agent with its SQLite history.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

from wactorz import Actor, ActorCrashed, ActorSystem, MessageRejected, Supervisor, tool
from wactorz.agents.code_agent import CodeAgent
from wactorz.agents.history import check_history
from wactorz.agents.io_agent import IOAgent
from wactorz.agents.llm_agent import LLMAgent
from wactorz.agents.main_actor import MainActor
from wactorz.agents.monitor_agent import MONITOR_NAME, MonitorActor
from wactorz.config import LLMConfig, MonitorConfig, SandboxConfig
from wactorz.telemetry import heartbeat_topic, metrics_topic
from wactorz.testing import (
    FakeMessagesAPI,
    RecordedRequest,
    Usage,
    error,
    hang,
    reply,
    text,
    tool_use,
)

KEY = "sk-test-key-123"


# ---- actors the tests use -------------------------------------------------------------------


class Sink(Actor):
    """Collects every stream message it is sent."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.got: list[dict[str, Any]] = []
        self.first_text = trio.Event()
        self.ended = trio.Event()

    async def _process(self, message: dict[str, Any]) -> object:
        self.got.append(message)
        if any(part.get("kind") == "text" for part in message.get("parts", ())):
            self.first_text.set()
        if message.get("end"):
            self.ended.set()
        return None

    def parts(self) -> list[dict[str, Any]]:
        return [part for message in self.got for part in message["parts"]]

    def text(self) -> str:
        return "".join(part["text"] for part in self.parts() if part["kind"] == "text")

    def result(self) -> dict[str, Any]:
        (ending,) = [message for message in self.got if message.get("end")]
        result: dict[str, Any] = ending["result"]
        return result


class Weather(Actor):
    """A tool actor: a forecast, a slow forecast, a failing one."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.calls: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.release = trio.Event()

    async def _process(self, message: dict[str, Any]) -> object:
        return None

    @tool(
        "Today's forecast for a city.",
        input_schema={
            "type": "object",
            "properties": {"city": {"type": "string", "minLength": 1}},
            "required": ["city"],
        },
    )
    async def forecast(self, city: str) -> dict[str, str]:
        self.calls.append(city)
        return {"city": city, "sky": "clear"}

    @tool(
        "A forecast that waits until the test releases it.",
        input_schema={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    )
    async def slow_forecast(self, city: str) -> dict[str, str]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await self.release.wait()
        finally:
            self.in_flight -= 1
        return {"city": city, "sky": "grey"}

    @tool("A forecast that breaks.")
    async def broken_forecast(self) -> None:
        raise RuntimeError("the barometer fell off the wall")


class Crashable(LLMAgent):
    """An LLM agent that crashes when told to, whatever it is doing."""

    async def _process(self, message: dict[str, Any]) -> object:
        if message.get("crash"):
            raise RuntimeError("told to crash")
        return await super()._process(message)


# ---- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture
async def api() -> AsyncIterator[FakeMessagesAPI]:
    async with FakeMessagesAPI() as server:
        yield server


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with ActorSystem(node="testnode") as running:
        yield running


def config(api: FakeMessagesAPI, **changes: Any) -> LLMConfig:
    options: dict[str, Any] = {
        "api_key": KEY,
        "base_url": api.url,
        "max_retries": 0,
        "timeout": 10.0,
        "tools": ("weather",),
    }
    return LLMConfig(**(options | changes))


async def start_agent(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path, **changes: Any
) -> LLMAgent:
    return await system.spawn(
        LLMAgent, config=config(api, **changes), history_path=tmp_path / "history.sqlite3"
    )


def chat(session: str, words: str, **extra: Any) -> dict[str, Any]:
    return {"chat": {"session": session, "text": words}, **extra}


async def say(system: ActorSystem, session: str, words: str, **extra: Any) -> dict[str, Any]:
    answer: dict[str, Any] = await system.ask("llm", chat(session, words, **extra), timeout=10)
    return answer


async def stored(system: ActorSystem, session: str) -> list[dict[str, Any]]:
    """The session's stored messages, checked against every rule the API enforces."""
    found = await system.ask("llm", {"history": session})
    messages: list[dict[str, Any]] = found["messages"]
    if messages:
        check_history(messages)
    return messages


def blocks(request: RecordedRequest, index: int = -1) -> list[dict[str, Any]]:
    content = request.messages[index]["content"]
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


# ---- a turn, streamed -----------------------------------------------------------------------


async def test_a_turn_streams_its_text_in_order_and_ends_with_the_answer(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    sink = await system.spawn(Sink, name="sink")
    api.enqueue(text("Hello there, how are you today?", chunk=3))

    answer = await say(system, "s1", "hi", stream_to="sink", stream_id="turn-1")

    assert answer["text"] == "Hello there, how are you today?"
    assert answer["stop_reason"] == "end_turn"
    assert answer["turn"] == 1 and answer["tool_calls"] == 0
    assert "error" not in answer
    await sink.ended.wait()
    assert [message["seq"] for message in sink.got] == list(range(len(sink.got)))
    assert {message["stream"] for message in sink.got} == {"turn-1"}
    assert sink.text() == answer["text"]
    assert sink.result() == answer
    assert await stored(system, "s1") == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [{"type": "text", "text": answer["text"]}]},
    ]
    (request,) = api.requests
    assert request.stream and request.model == "claude-sonnet-4-5"
    assert request.api_key == KEY
    assert request.temperature == 0.7 and request.max_tokens == 4096


async def test_a_stream_to_a_topic_reaches_its_subscribers(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    sink = await system.spawn(Sink, name="sink")
    sink.subscribe("chat/s1")
    api.enqueue(text("On a topic."))
    answer = await say(system, "s1", "hi", stream_to={"topic": "chat/s1"})
    await sink.ended.wait()
    assert sink.text() == "On a topic." and sink.result() == answer


async def test_usage_and_cost_come_from_the_reply_and_the_price_table(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    agent = await start_agent(system, api, tmp_path, model="claude-haiku-4-5-20251001")
    usage = Usage(1_000, 200, cache_creation_input_tokens=4_000, cache_read_input_tokens=10_000)
    api.enqueue(text("Priced.", usage=usage), text("Again.", usage=usage))

    first = await say(system, "s1", "hi")
    await say(system, "s2", "hi")

    assert first["usage"] == {
        "input_tokens": 1_000,
        "output_tokens": 200,
        "cache_read_tokens": 10_000,
        "cache_write_tokens": 4_000,
    }
    # claude-haiku-4-5's price (1, 5, 1.25, 0.10 per million) for the dated id.
    assert first["cost_usd"] == pytest.approx(
        (1_000 * 1 + 200 * 5 + 4_000 * 1.25 + 10_000 * 0.1) / 1e6
    )
    listed = await system.ask("llm", {"sessions": True})
    assert listed["totals"]["turns"] == 2
    assert listed["totals"]["cost_usd"] == pytest.approx(2 * first["cost_usd"])
    assert {entry["session"] for entry in listed["sessions"]} == {"s1", "s2"}
    details = agent.telemetry()["llm"]
    assert details["turns"] == 2 and details["cache_read_tokens"] == 20_000
    assert details["cost_usd"] == pytest.approx(2 * first["cost_usd"])
    assert details["model"] == "claude-haiku-4-5-20251001"
    assert KEY not in json.dumps(details)


async def test_an_unknown_model_costs_nothing_and_is_warned_about_once(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await start_agent(system, api, tmp_path, model="claude-unpriced-9")
    api.enqueue(text("one"), text("two"))
    assert (await say(system, "s1", "hi"))["cost_usd"] == 0
    assert (await say(system, "s1", "again"))["cost_usd"] == 0
    warned = [
        r for r in caplog.records if "no price for the model 'claude-unpriced-9'" in r.message
    ]
    assert len(warned) == 1


# ---- tools ----------------------------------------------------------------------------------


async def test_a_tool_loop_asks_the_owning_actor_and_sends_back_its_result(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    weather = await system.spawn(Weather, name="weather")
    sink = await system.spawn(Sink, name="sink")
    api.enqueue(
        reply(text("Let me look."), tool_use("forecast", {"city": "Oslo"}, json_chunk=3)),
        text("Clear skies in Oslo."),
    )

    answer = await say(system, "s1", "Weather in Oslo?", stream_to="sink")

    assert answer["text"] == "Clear skies in Oslo." and answer["tool_calls"] == 1
    assert weather.calls == ["Oslo"]
    first, second = api.requests
    assert {t["name"] for t in first.tools} == {"forecast", "slow_forecast", "broken_forecast"}
    (result,) = blocks(second)
    assert result["type"] == "tool_result" and "is_error" not in result
    assert json.loads(result["content"]) == {"city": "Oslo", "sky": "clear"}
    await sink.ended.wait()
    kinds = [part["kind"] for part in sink.parts()]
    assert kinds.index("tool_start") < kinds.index("tool_end")
    assert (
        "text" in kinds[: kinds.index("tool_start")] and "text" in kinds[kinds.index("tool_end") :]
    )
    start = next(part for part in sink.parts() if part["kind"] == "tool_start")
    assert start["name"] == "forecast" and start["actor"] == "weather"
    assert len(await stored(system, "s1")) == 4


async def test_parallel_tool_calls_run_concurrently(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    # Two owners: an actor handles one message at a time, the agent asks both at once.
    await start_agent(system, api, tmp_path, tools=("weather", "meteo"))
    weather = await system.spawn(Weather, name="weather")
    meteo = await system.spawn(Weather, name="meteo")
    api.enqueue(
        reply(
            tool_use("weather__slow_forecast", {"city": "Oslo"}),
            tool_use("meteo__slow_forecast", {"city": "Bergen"}),
            tool_use("weather__forecast", {"city": "Tromsø"}),
        ),
        text("Done."),
    )
    async with trio.open_nursery() as nursery:
        answers: list[dict[str, Any]] = []

        async def ask() -> None:
            answers.append(await say(system, "s1", "three cities"))

        nursery.start_soon(ask)
        with trio.fail_after(5):
            while not (weather.in_flight and meteo.in_flight):
                await trio.sleep(0.01)
        weather.release.set()
        meteo.release.set()
    assert answers[0]["tool_calls"] == 3
    results = blocks(api.requests[1])
    assert [json.loads(r["content"])["city"] for r in results] == ["Oslo", "Bergen", "Tromsø"]


async def test_tool_errors_and_timeouts_go_back_to_the_model_as_errors(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    allowed = ("weather", "meteo", "slowpoke")
    await start_agent(system, api, tmp_path, tool_timeout_s=0.3, tools=allowed)
    for name in allowed:  # one call each: an actor handles one message at a time
        await system.spawn(Weather, name=name)
    api.enqueue(
        reply(
            tool_use("weather__forecast", {"town": "Oslo"}),  # refused: input names no city
            tool_use("meteo__broken_forecast", {}),  # raises: its actor crashes
            tool_use("slowpoke__slow_forecast", {"city": "Bergen"}),  # never answers in time
            tool_use("no_such_tool", {}),
        ),
        text("Sorry, the tools failed."),
    )

    answer = await say(system, "s1", "weather?")

    assert answer["text"] == "Sorry, the tools failed." and "error" not in answer
    results = blocks(api.requests[1])
    assert all(result["is_error"] for result in results)
    refused, broken, slow, unknown = (result["content"] for result in results)
    assert "refused the call" in refused and "city" in refused
    assert "failed" in broken and "barometer" in broken
    assert "did not answer within 0.3 s" in slow
    assert "no tool named 'no_such_tool'" in unknown
    assert len(await stored(system, "s1")) == 4
    slowpoke = system.lookup("slowpoke")
    assert isinstance(slowpoke, Weather)
    slowpoke.release.set()  # or the system's stop waits for it


async def test_a_long_tool_result_is_cut_for_the_model_saying_so(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path, max_tool_result_bytes=20)
    await system.spawn(Weather, name="weather")
    api.enqueue(tool_use("forecast", {"city": "Llanfairpwllgwyngyll" * 3}), text("ok"))
    await say(system, "s1", "weather?")
    (result,) = blocks(api.requests[1])
    assert result["content"].startswith('{"city": "Llanfairpw')
    assert "[cut: the result was" in result["content"]


async def test_tools_are_named_uniquely_and_only_from_allowed_actors(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path, tools=("weather", "meteo", "llm"))
    await system.spawn(Weather, name="weather")
    await system.spawn(Weather, name="meteo")
    await system.spawn(Weather, name="elsewhere")  # not allowed
    api.enqueue(tool_use("meteo__forecast", {"city": "Oslo"}), text("ok"))
    answer = await say(system, "s1", "weather?")
    names = [t["name"] for t in api.requests[0].tools]
    assert names == sorted(names)
    assert "meteo__forecast" in names and "weather__forecast" in names
    assert not any(name.startswith("elsewhere") for name in names)
    assert not any("session" in name or "cancel" in name for name in names)  # never its own
    assert answer["tool_calls"] == 1 and "is_error" not in blocks(api.requests[1])[0]


async def test_the_tool_loop_stops_at_its_iteration_cap_with_a_sentence(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path, max_tool_iterations=2)
    await system.spawn(Weather, name="weather")
    api.responder = lambda request: tool_use("forecast", {"city": "Oslo"})
    answer = await say(system, "s1", "loop forever")
    assert len(api.requests) == 3 and answer["tool_calls"] == 2
    assert "limit of 2 rounds of tool calls" in answer["text"]
    messages = await stored(system, "s1")
    assert messages[-1]["role"] == "assistant" and len(messages) == 8
    api.responder = None
    api.enqueue(text("fresh"))
    assert (await say(system, "s1", "next"))["text"] == "fresh"


# ---- prompt caching and the context budget --------------------------------------------------


def breakpoints(request: RecordedRequest) -> list[str]:
    found = []
    system = request.system
    assert isinstance(system, list)
    found += ["system" for block in system if "cache_control" in block]
    found += [f"tool:{t['name']}" for t in request.tools if "cache_control" in t]
    for index, message in enumerate(request.messages):
        if isinstance(message["content"], list):
            found += [f"message:{index}" for b in message["content"] if "cache_control" in b]
    return found


async def test_requests_carry_prompt_caching_breakpoints_as_documented(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    await system.spawn(Weather, name="weather")
    api.enqueue(text("first"), tool_use("forecast", {"city": "Oslo"}), text("second"))

    await say(system, "s1", "one")
    await say(system, "s1", "two")

    first, second, third = api.requests
    last_tool = first.tools[-1]["name"]
    assert breakpoints(first) == ["system", f"tool:{last_tool}"]
    # The end of the earlier turn: the prefix the next turn reuses.
    assert breakpoints(second) == ["system", f"tool:{last_tool}", "message:1"]
    # In a tool round, also the end of the turn so far.
    assert breakpoints(third) == ["system", f"tool:{last_tool}", "message:1", "message:4"]
    assert all(len(breakpoints(r)) <= 4 for r in api.requests)
    # The markers are in the requests only, never in what is stored.
    assert "cache_control" not in json.dumps(await stored(system, "s1"))


async def test_past_the_context_budget_only_the_newest_whole_turns_are_sent(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path, context_budget_tokens=400, tools=())
    api.responder = lambda request: text("x" * 300)
    for number in range(5):
        await say(system, "s1", f"turn {number}")
    last = api.requests[-1].messages
    assert len(last) < 9 and len(last) % 2 == 1  # whole turns, then the new message
    assert last[0]["role"] == "user" and last[-1]["content"] == "turn 4"
    assert len(await stored(system, "s1")) == 10  # the store keeps them all


# ---- failures -------------------------------------------------------------------------------


async def test_without_an_api_key_the_agent_runs_and_says_how_to_set_one(
    system: ActorSystem, tmp_path: Path
) -> None:
    await system.spawn(
        LLMAgent, config=LLMConfig(api_key=None), history_path=tmp_path / "h.sqlite3"
    )
    answer = await say(system, "s1", "hi")
    assert "ANTHROPIC_API_KEY" in answer["error"] and "WACTORZ_LLM__API_KEY" in answer["error"]
    assert answer["turn"] is None
    assert await stored(system, "s1") == []


FAILURES = {
    "401": (error(401), "refused the key (401"),
    "403": (error(403), "403 permission error"),
    "404": (error(404), "check the model id"),
    "429": (error(429, retry_after=0.01), "rate-limiting"),
    "529": (error(529), "overloaded (529"),
    "500": (error(500), "The API failed (HTTP 500"),
    "400": (error(400, "prompt is too long"), "prompt is too long"),
    "dropped": (text("Hello there, world").dropped_after(5), "connection to the API broke off"),
    "truncated": (text("Hello there, world").truncated_after(5), "ended before it was complete"),
    "malformed": (text("Hello there, world").malformed_after(5), "malformed reply"),
    "error event": (text("Hello there, world").error_event_after(5), "overloaded in the middle"),
}


@pytest.mark.parametrize("failure", FAILURES, ids=list(FAILURES))
async def test_every_failure_reaches_the_user_as_a_sentence_and_poisons_nothing(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path, failure: str
) -> None:
    await start_agent(system, api, tmp_path)
    sink = await system.spawn(Sink, name="sink")
    scripted, words = FAILURES[failure]
    api.enqueue(scripted)

    answer = await say(system, "s1", "hi", stream_to="sink")

    assert words in answer["error"]
    assert KEY not in json.dumps(answer)
    await sink.ended.wait()
    assert sink.result() == answer
    messages = await stored(system, "s1")  # consistent: checked inside
    if messages:  # a reply that broke off keeps what the user saw, marked as cut
        assert messages[-1]["content"][-1]["text"].startswith("[the reply was cut here")
    api.enqueue(text("Back to normal."))
    after = await say(system, "s1", "again")
    assert after["text"] == "Back to normal." and "error" not in after


async def test_rate_limits_and_overload_are_retried_honouring_retry_after_with_notices(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path, max_retries=2)
    sink = await system.spawn(Sink, name="sink")
    api.enqueue(error(429, retry_after=0.2), error(529, retry_after=0.01), text("Made it."))

    with trio.fail_after(5):
        answer = await say(system, "s1", "hi", stream_to="sink")

    assert answer["text"] == "Made it."
    first, second, _ = api.requests
    assert second.received_at - first.received_at >= 0.2  # retry-after honoured
    await sink.ended.wait()
    notices = [part["text"] for part in sink.parts() if part["kind"] == "notice"]
    assert notices == [
        "retrying after 429 (rate limit) in 0.2 s: attempt 2 of 3",
        "retrying after 529 (overloaded) in 0.01 s: attempt 3 of 3",
    ]


async def test_a_reply_cut_by_max_tokens_is_stored_and_says_so(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path, max_tokens=50)
    api.enqueue(text("A long story that goes on and", stop_reason="max_tokens"))
    answer = await say(system, "s1", "tell me a story")
    assert answer["stop_reason"] == "max_tokens" and "error" not in answer
    assert "llm.max_tokens (50 tokens)" in answer["notice"]
    assert len(await stored(system, "s1")) == 2


async def test_a_tool_call_cut_by_max_tokens_is_dropped_not_answered(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    await system.spawn(Weather, name="weather")
    whole = reply(
        text("Checking."), tool_use("forecast", {"city": "Oslo"}), stop_reason="max_tokens"
    )
    events = whole.stream_events(id="m", model="x", input_tokens=1)
    cut = next(
        i
        for i, (_, data) in enumerate(events)
        if data.get("delta", {}).get("type") == "input_json_delta"
    )
    api.enqueue(whole.truncated_after(cut + 1))
    answer = await say(system, "s1", "weather?")
    assert "ended before it was complete" in answer["error"]
    messages = await stored(system, "s1")
    assert [b["type"] for b in messages[-1]["content"]] == ["text", "text"]  # no tool_use


async def test_a_refusal_is_said_and_not_kept(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    api.enqueue(text("I can't", stop_reason="refusal"))
    answer = await say(system, "s1", "something bad")
    assert "declined" in answer["error"] and "send your message again" in answer["error"]
    assert await stored(system, "s1") == []


async def test_malformed_requests_are_refused_saying_what_to_send(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    bad = [
        {"chat": "hello"},
        {"chat": {"session": "", "text": "hi"}},
        {"chat": {"session": "s", "text": "  "}},
        {"chat": {"session": "s", "text": "a", "content": []}},
        {"chat": {"session": "s", "content": [{"type": "tool_result", "tool_use_id": "x"}]}},
        {"chat": {"session": "s", "text": "hi"}, "stream_to": 5},
        {"export": "nobody"},
        {"export": "s", "format": "pdf"},
        {"what": 1},
    ]
    for message in bad:
        with pytest.raises(MessageRejected):
            await system.ask("llm", message)
    assert api.requests == []


# ---- cancellation ---------------------------------------------------------------------------


async def test_cancelling_mid_stream_is_prompt_and_the_session_goes_on(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    sink = await system.spawn(Sink, name="sink")
    api.enqueue(text("slow " * 200, chunk=5, delay_s=0.05))
    answers: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:

        async def ask() -> None:
            answers.append(await say(system, "s1", "talk", stream_to="sink", stream_id="t1"))

        nursery.start_soon(ask)
        await sink.first_text.wait()
        started = trio.current_time()
        assert await system.ask("llm", {"cancel": "t1"}) == {"cancelled": 1}
    assert trio.current_time() - started < 0.5
    (answer,) = answers
    assert "was cancelled" in answer["error"] and answer["text"].startswith("slow")
    messages = await stored(system, "s1")
    assert messages[-1]["content"][-1]["text"] == "[the reply was cut here: the turn was cancelled]"
    api.enqueue(text("Still here."))
    assert (await say(system, "s1", "again"))["text"] == "Still here."


async def test_cancelling_mid_tool_answers_the_tool_call_and_keeps_the_session_usable(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    weather = await system.spawn(Weather, name="weather")
    api.enqueue(tool_use("slow_forecast", {"city": "Oslo"}))
    answers: list[dict[str, Any]] = []
    async with trio.open_nursery() as nursery:

        async def ask() -> None:
            answers.append(await say(system, "s1", "weather?"))

        nursery.start_soon(ask)
        with trio.fail_after(5):
            while not weather.in_flight:
                await trio.sleep(0.01)
        assert await system.ask("llm", {"cancel": "s1"}) == {"cancelled": 1}
    assert "was cancelled" in answers[0]["error"]
    weather.release.set()  # the tool itself was not cancelled: its actor is not the agent's
    messages = await stored(system, "s1")
    (result,) = messages[2]["content"]
    assert result["is_error"] and "not run" in result["content"]
    api.enqueue(text("Next."))
    assert (await say(system, "s1", "next"))["text"] == "Next."
    assert "tool_use" in json.dumps(api.requests[-1].messages)  # the closed turn is sent back


async def test_an_asker_that_gives_up_cancels_its_turn(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    api.enqueue(hang())
    with pytest.raises(TimeoutError):
        await system.ask("llm", chat("s1", "hello?"), timeout=0.2)
    with trio.fail_after(5):
        while api.statistics().abandoned == 0:
            await trio.sleep(0.01)
    assert await stored(system, "s1") == []


async def test_turns_of_a_session_run_in_order_and_sessions_never_mix(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    api.responder = lambda request: text(f"re: {request.messages[-1]['content']}", delay_s=0.01)
    async with trio.open_nursery() as nursery:
        for number in range(4):
            for session in ("a", "b"):
                nursery.start_soon(say, system, session, f"{session}{number}")
                await trio.lowlevel.checkpoint()
    for session in ("a", "b"):
        messages = await stored(system, session)
        said = [m["content"] for m in messages if m["role"] == "user"]
        assert said == [f"{session}{number}" for number in range(4)]
    for request in api.requests:
        users = {m["content"][0] for m in request.messages if m["role"] == "user"}
        assert len(users) == 1  # one session's messages only


async def test_a_queued_turn_can_be_cancelled_before_it_runs(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    await system.spawn(Sink, name="sink")
    api.enqueue(text("first", delay_s=0.1))
    answers: dict[str, dict[str, Any]] = {}
    async with trio.open_nursery() as nursery:

        async def ask(stream_id: str) -> None:
            answers[stream_id] = await say(
                system, "s1", stream_id, stream_id=stream_id, stream_to="sink"
            )

        nursery.start_soon(ask, "one")
        await trio.sleep(0.05)
        nursery.start_soon(ask, "two")
        await trio.sleep(0.05)
        assert await system.ask("llm", {"cancel": "two"}) == {"cancelled": 1}
    assert answers["one"]["text"] == "first"
    assert "before it started" in answers["two"]["error"]
    assert len(api.requests) == 1


# ---- sessions, clearing, exports ------------------------------------------------------------


async def test_sessions_can_be_listed_cleared_exported_and_read_also_as_tools(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    api.responder = lambda request: text("noted")
    await say(system, "s1", "remember this")
    await say(system, "s2", "and this")

    listed = await system.call_tool("llm", "list_sessions")
    assert {entry["session"]: entry["turns"] for entry in listed["sessions"]} == {"s1": 1, "s2": 1}
    assert "2 sessions; 2 turns ever" in listed["text"]
    exported = await system.ask("llm", {"export": "s1", "format": "json"})
    assert exported["session"] == "s1" and len(exported["turns"]) == 1
    markdown = await system.call_tool(
        "llm", "export_session", {"session": "s1", "format": "markdown"}
    )
    assert "remember this" in markdown["text"]
    history = await system.call_tool("llm", "session_history", {"session": "s2"})
    assert history["turns"] == 1 and history["messages"][0]["content"] == "and this"
    assert await system.ask("llm", {"clear": "s1"}) == {
        "cleared": "s1",
        "turns": 1,
        "text": "Forgot session 's1' (1 turn).",
    }
    assert (await system.call_tool("llm", "clear_session", {"session": "s2"}))["turns"] == 1
    assert (await system.ask("llm", {"sessions": True}))["sessions"] == []
    await say(system, "s1", "fresh start")
    assert len(api.requests[-1].messages) == 1  # nothing of before the clear is sent
    assert (await system.call_tool("llm", "cancel_turn", {"target": "s1"})) == {"cancelled": 0}


# ---- restarts -------------------------------------------------------------------------------


async def test_a_new_process_restores_the_history_from_the_sqlite_file(
    api: FakeMessagesAPI, tmp_path: Path
) -> None:
    api.responder = lambda request: text(f"{len(request.messages)} messages seen")
    async with ActorSystem() as first:
        await start_agent(first, api, tmp_path)
        await say(first, "s1", "one")
        await say(first, "s1", "two")
    async with ActorSystem() as second:
        agent = await start_agent(second, api, tmp_path)
        assert agent.telemetry()["llm"]["turns"] == 2
        answer = await say(second, "s1", "three")
    assert answer["text"] == "5 messages seen" and answer["turn"] == 3


async def test_a_crash_mid_turn_under_a_supervisor_keeps_the_history_consistent(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    supervisor = Supervisor(system, "one_for_one", name="agents")
    supervisor.add("llm", Crashable, config=config(api), history_path=tmp_path / "h.sqlite3")
    await supervisor.start()
    api.enqueue(text("first"))
    await say(system, "s1", "before the crash")
    sink = await system.spawn(Sink, name="sink")
    api.enqueue(text("cut " * 100, delay_s=0.05))
    outcomes: list[object] = []
    async with trio.open_nursery() as nursery:

        async def ask() -> None:
            try:
                outcomes.append(await say(system, "s1", "during", stream_to="sink"))
            except ActorCrashed as crashed:
                outcomes.append(crashed)

        nursery.start_soon(ask)
        await sink.first_text.wait()
        await system.send("llm", {"crash": True})
        api.enqueue(text("after the restart"))
        # Queued in the mailbox behind the crash: handled by the next incarnation.
        answer = await say(system, "s1", "after")
    assert isinstance(outcomes[0], ActorCrashed)
    assert answer["text"] == "after the restart"
    await sink.ended.wait()  # the stream was still ended, saying why
    assert "interrupted (the agent stopped or restarted)" in sink.result()["error"]
    messages = await stored(system, "s1")  # consistent, checked inside
    said = [m["content"] for m in messages if m["role"] == "user"]
    assert said[0] == "before the crash" and said[-1] == "after"
    assert said in (["before the crash", "after"], ["before the crash", "during", "after"])


# ---- telemetry --------------------------------------------------------------------------------


async def test_the_monitor_publishes_the_agents_totals_in_its_heartbeats(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    agent = await start_agent(system, api, tmp_path, model="claude-sonnet-4-5")
    sink = await system.spawn(Sink, name="sink")
    sink.subscribe(heartbeat_topic(agent.id))
    sink.subscribe(metrics_topic(agent.id))
    await system.spawn(MonitorActor, config=MonitorConfig(interval_s=1000))
    api.enqueue(text("counted", usage=Usage(100, 10)))
    answer = await say(system, "s1", "hi")

    await system.ask(MONITOR_NAME, {"tick": 0})
    await system.ask("sink", {})

    heartbeat, metrics = sink.got[:2]
    assert heartbeat["details"] == metrics["details"]
    assert heartbeat["details"] == {
        "llm": {
            "model": "claude-sonnet-4-5",
            "turns": 1,
            "input_tokens": 100,
            "output_tokens": 10,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cost_usd": answer["cost_usd"],
            "sessions_active": 0,
        }
    }
    assert KEY not in json.dumps(sink.got)


# ---- with the real IOAgent and CodeAgent ------------------------------------------------------


async def test_a_tool_loop_through_the_real_io_and_code_agents(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    sandbox = SandboxConfig(enabled=True, root=tmp_path / "workspace")
    await system.spawn(CodeAgent, "code", config=sandbox)
    await system.spawn(IOAgent, "io", config=sandbox)
    await start_agent(system, api, tmp_path, tools=("io", "code"))  # the default allow-list
    api.enqueue(
        reply(
            text("Writing it down and working it out."),
            tool_use("write_file", {"path": "answer.txt", "content": "forty-two\n"}),
            tool_use("run_code", {"language": "python", "code": "print(6 * 7)"}),
        ),
        text("The answer is 42, and it is written down."),
    )

    with trio.fail_after(30):
        answer = await say(system, "s1", "What is six times seven? Keep a note.")

    assert answer["tool_calls"] == 2 and "error" not in answer
    names = {t["name"] for t in api.requests[0].tools}
    assert {"write_file", "read_file", "run_code"} <= names
    assert "run_shell" not in names  # withdrawn by the IOAgent: sandbox.allow_shell is off
    assert {"io__cancel_run", "code__cancel_run"} <= names  # shared names, told apart
    written, ran = blocks(api.requests[1])
    assert "is_error" not in written and json.loads(written["content"])["path"] == "answer.txt"
    assert "is_error" not in ran and json.loads(ran["content"])["stdout"] == "42\n"
    assert (tmp_path / "workspace" / "answer.txt").read_text() == "forty-two\n"
    assert len(await stored(system, "s1")) == 4


# ---- behind the MainActor (the router) --------------------------------------------------------


async def test_the_router_chats_cancels_lists_exports_and_clears_through_the_agent(
    system: ActorSystem, api: FakeMessagesAPI, tmp_path: Path
) -> None:
    await start_agent(system, api, tmp_path)
    await system.spawn(MainActor, "main")
    sink = await system.spawn(Sink, name="sink")

    def route(words: str, **more: Any) -> Any:
        message = {"chat": {"session": "tg:1", "text": words}, **more}
        return system.ask("main", message, timeout=10)

    api.enqueue(text("Hello from Claude."))
    answer = await route("hello", stream_to="sink", stream_id="m1")
    assert answer["text"] == "Hello from Claude." and answer["turn"] == 1
    await sink.ended.wait()
    assert sink.text() == "Hello from Claude."

    api.enqueue(text("slow " * 100, delay_s=0.05))
    sink.first_text = trio.Event()
    async with trio.open_nursery() as nursery:
        cut: list[Any] = []

        async def chat() -> None:
            cut.append(await route("tell me more", stream_to="sink", stream_id="m2"))

        nursery.start_soon(chat)
        await sink.first_text.wait()
        assert (await route("/cancel"))["cancelled"] == 1
    assert "was cancelled" in cut[0]["error"]

    assert "tg:1: 2 turns" in (await route("/sessions"))["text"]
    assert "**User:** hello" in (await route("/history"))["text"]
    assert (await route("/clear"))["text"] == "Forgot session 'tg:1' (2 turns)."
    assert await stored(system, "tg:1") == []

"""The fake Messages API, driven by the real ``anthropic`` SDK under Trio.

These tests pin two things at once: that the fake speaks the API closely enough for the SDK
(event order, tool input reassembly, error shapes, retries), and how the SDK reacts to each
failure, so that a new SDK release that changes it fails here first.

Throughput (measured on the project's 2-core machine, 2026-12): the server alone pushes
about 110,000 text deltas per second to an ``http.client`` reader in the same process
(`test_the_server_pushes_far_more_deltas_per_second_than_the_sdk_reads`), while the SDK
reads about 24,000 per second through ``text_stream``: the server is not what a benchmark
through the SDK measures.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
import trio

from wactorz.testing import (
    FakeMessagesAPI,
    RecordedRequest,
    Reply,
    ScriptedReply,
    Usage,
    error,
    hang,
    reply,
    text,
    tool_use,
)

MODEL = "claude-fake-1"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def api() -> AsyncIterator[FakeMessagesAPI]:
    async with FakeMessagesAPI() as server:
        yield server


def client(api: FakeMessagesAPI, **options: Any) -> anthropic.AsyncAnthropic:
    options.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=api.url, api_key="sk-test", **options)


async def read_text(sdk: anthropic.AsyncAnthropic, deltas: list[str]) -> None:
    """Stream a reply, appending each text delta to ``deltas`` as it comes."""
    async with sdk.messages.stream(model=MODEL, max_tokens=9, messages=HELLO) as stream:
        async for delta in stream.text_stream:
            deltas.append(delta)


async def read_events(sdk: anthropic.AsyncAnthropic, seen: list[str]) -> None:
    """Stream a reply, appending the type of each event the SDK yields to ``seen``."""
    async with sdk.messages.stream(model=MODEL, max_tokens=9, messages=HELLO) as stream:
        async for event in stream:
            seen.append(event.type)


async def ask(sdk: anthropic.AsyncAnthropic, *, streamed: bool) -> None:
    """One request, streamed or not, read to its end."""
    if streamed:
        async with sdk.messages.stream(model=MODEL, max_tokens=9, messages=HELLO) as stream:
            await stream.until_done()
    else:
        await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)


async def stream_events(api: FakeMessagesAPI, **request: Any) -> tuple[list[Any], Any]:
    """Every event the SDK's stream yields, and its final message."""
    request = {"model": MODEL, "max_tokens": 100, "messages": HELLO} | request
    async with client(api) as sdk, sdk.messages.stream(**request) as stream:
        events = [event async for event in stream]
        return events, await stream.get_final_message()


def events_of(answer: Reply) -> list[tuple[str, dict[str, Any]]]:
    return answer.stream_events(id="msg", model=MODEL, input_tokens=1)


# ---- streaming ------------------------------------------------------------------------------


async def test_streamed_text_arrives_in_order_as_several_deltas(api: FakeMessagesAPI) -> None:
    api.enqueue(text("Hello there, world!", chunk=5))
    async with (
        client(api) as sdk,
        sdk.messages.stream(model=MODEL, max_tokens=100, messages=HELLO) as stream,
    ):
        deltas = [delta async for delta in stream.text_stream]
        final = await stream.get_final_message()
    assert deltas == ["Hello", " ther", "e, wo", "rld!"]
    assert final.content[0].type == "text" and final.content[0].text == "Hello there, world!"
    assert final.stop_reason == "end_turn"
    assert final.model == MODEL
    assert final.usage.input_tokens > 0 and final.usage.output_tokens > 0


async def test_events_follow_the_api_order_with_usage_in_message_start(
    api: FakeMessagesAPI,
) -> None:
    api.enqueue(text("Hi!", chunk=2))
    raw = await _raw_stream(api)
    assert [kind for kind, _ in raw] == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = raw[0][1]["message"]
    assert start["usage"]["input_tokens"] > 0 and start["stop_reason"] is None
    assert raw[-2][1]["delta"]["stop_reason"] == "end_turn"


async def test_create_with_stream_true_yields_the_raw_events(api: FakeMessagesAPI) -> None:
    api.enqueue(text("abc", chunk=1))
    async with client(api) as sdk:
        stream = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO, stream=True)
        types = [event.type async for event in stream]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    assert types.count("content_block_delta") == 3


async def test_a_plain_create_gets_the_whole_message_as_json(api: FakeMessagesAPI) -> None:
    usage = Usage(
        input_tokens=11, output_tokens=7, cache_creation_input_tokens=5, cache_read_input_tokens=3
    )
    api.enqueue(text("All at once.", usage=usage))
    async with client(api) as sdk:
        message = await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert message.content[0].type == "text" and message.content[0].text == "All at once."
    assert message.stop_reason == "end_turn"
    assert (
        message.usage.input_tokens,
        message.usage.output_tokens,
        message.usage.cache_creation_input_tokens,
        message.usage.cache_read_input_tokens,
    ) == (11, 7, 5, 3)
    assert message.id == "msg_fake_000000"


async def test_streamed_usage_carries_the_scripted_numbers(api: FakeMessagesAPI) -> None:
    usage = Usage(
        input_tokens=100, output_tokens=42, cache_creation_input_tokens=9, cache_read_input_tokens=8
    )
    api.enqueue(text("counted", usage=usage))
    _, final = await stream_events(api)
    assert (
        final.usage.input_tokens,
        final.usage.output_tokens,
        final.usage.cache_creation_input_tokens,
        final.usage.cache_read_input_tokens,
    ) == (100, 42, 9, 8)


@pytest.mark.parametrize("stop_reason", ["max_tokens", "refusal", "end_turn"])
async def test_a_scripted_stop_reason_reaches_the_sdk(
    api: FakeMessagesAPI, stop_reason: Any
) -> None:
    api.enqueue(text("cut sh", stop_reason=stop_reason))
    _, final = await stream_events(api)
    assert final.stop_reason == stop_reason


async def test_a_stop_sequence_is_reported_with_its_text(api: FakeMessagesAPI) -> None:
    api.enqueue(reply("one, two", stop_reason="stop_sequence", stop_sequence="three"))
    _, final = await stream_events(api, stop_sequences=["three"])
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "three")


# ---- tools ----------------------------------------------------------------------------------


async def test_tool_input_streamed_in_pieces_is_reassembled_by_the_sdk(
    api: FakeMessagesAPI,
) -> None:
    arguments = {"city": "Oslo", "days": [1, 2, 3], "units": {"temp": "°C"}}
    api.enqueue(
        reply(text("Let me check."), tool_use("get_weather", arguments, id="toolu_1", json_chunk=3))
    )
    events, final = await stream_events(api)
    assert final.stop_reason == "tool_use"
    thought, call = final.content
    assert thought.type == "text" and thought.text == "Let me check."
    assert call.type == "tool_use"
    assert (call.id, call.name, call.input) == ("toolu_1", "get_weather", arguments)
    pieces = [
        event.delta.partial_json
        for event in events
        if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
    ]
    assert len(pieces) > 5 and json.loads("".join(pieces)) == arguments


async def test_the_order_of_text_then_tool_is_the_documented_one(api: FakeMessagesAPI) -> None:
    api.enqueue(reply(text("ok", chunk=1), tool_use("f", {"a": 1}, json_chunk=4)))
    kinds = [
        (kind, data.get("delta", data.get("content_block", {})).get("type"))
        for kind, data in await _raw_stream(api)
        if kind != "ping"
    ]
    assert kinds == [
        ("message_start", None),
        ("content_block_start", "text"),
        ("content_block_delta", "text_delta"),
        ("content_block_delta", "text_delta"),
        ("content_block_stop", None),
        ("content_block_start", "tool_use"),
        ("content_block_delta", "input_json_delta"),
        ("content_block_delta", "input_json_delta"),
        ("content_block_stop", None),
        ("message_delta", None),
        ("message_stop", None),
    ]


async def test_a_responder_answers_each_tool_result(api: FakeMessagesAPI) -> None:
    def responder(request: RecordedRequest) -> ScriptedReply:
        last = request.messages[-1]["content"]
        if isinstance(last, list) and last[0]["type"] == "tool_result":
            return text(f"The tool said {last[0]['content']}.")
        return tool_use("add", {"a": 2, "b": 3}, id=f"toolu_{request.index}")

    api.responder = responder
    history: list[Any] = [{"role": "user", "content": "2 + 3?"}]
    async with client(api) as sdk:
        first = await sdk.messages.create(model=MODEL, max_tokens=50, messages=history)
        call = first.content[0]
        assert call.type == "tool_use"
        history += [
            {"role": "assistant", "content": [block.model_dump() for block in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "5"}],
            },
        ]
        second = await sdk.messages.create(model=MODEL, max_tokens=50, messages=history)
    assert second.content[0].type == "text" and second.content[0].text == "The tool said 5."
    assert [request.index for request in api.requests] == [0, 1]


# ---- what the server records ----------------------------------------------------------------


async def test_every_request_is_recorded_with_what_the_client_sent(api: FakeMessagesAPI) -> None:
    api.enqueue(text("one"), text("two"))
    system = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    tools = [{"name": "f", "description": "does f", "input_schema": {"type": "object"}}]
    async with client(api) as sdk:
        await sdk.messages.create(
            model=MODEL,
            max_tokens=321,
            extra_body={"temperature": 0.25},  # this SDK has no `temperature` keyword
            system=system,  # type: ignore[arg-type]
            tools=tools,  # type: ignore[arg-type]
            messages=HELLO,  # type: ignore[arg-type]
        )
        async with sdk.messages.stream(model="other", max_tokens=5, messages=HELLO) as stream:
            await stream.until_done()
    first, second = api.requests
    assert (first.method, first.path) == ("POST", "/v1/messages")
    assert first.api_key == "sk-test" and first.headers["anthropic-version"]
    assert (first.model, first.max_tokens, first.temperature) == (MODEL, 321, 0.25)
    assert first.system == system and first.tools == tools and first.messages == HELLO
    assert not first.stream and second.stream and second.model == "other"
    assert second.received_at >= first.received_at
    assert "sk-test" not in repr(first) and "***" in repr(first)


async def test_requests_share_one_kept_alive_connection(api: FakeMessagesAPI) -> None:
    api.enqueue(*(text(f"reply {n}") for n in range(5)))
    async with client(api) as sdk:
        for _ in range(3):
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        for _ in range(2):
            async with sdk.messages.stream(model=MODEL, max_tokens=10, messages=HELLO) as stream:
                await stream.until_done()
    stats = api.statistics()
    assert (stats.requests, stats.connections, stats.answered) == (5, 1, 5)
    assert api.pending == 0


async def test_count_tokens_answers_an_estimate_and_consumes_no_reply(
    api: FakeMessagesAPI,
) -> None:
    api.enqueue(text("kept"))
    async with client(api) as sdk:
        counted = await sdk.messages.count_tokens(model=MODEL, messages=HELLO)
    assert counted.input_tokens > 0 and api.pending == 1


# ---- refusals before any reply --------------------------------------------------------------


async def test_a_tool_use_without_its_result_is_refused_like_the_api_does(
    api: FakeMessagesAPI,
) -> None:
    api.enqueue(text("never sent"))
    history = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
        },
        {"role": "user", "content": "where is my result?"},
    ]
    async with client(api) as sdk:
        with pytest.raises(anthropic.BadRequestError, match="without `tool_result` blocks"):
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=history)  # type: ignore[arg-type]
    assert api.pending == 1


async def test_a_tool_result_without_its_tool_use_is_refused(api: FakeMessagesAPI) -> None:
    history = [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9", "content": "x"}]}
    ]
    async with client(api) as sdk:
        with pytest.raises(anthropic.BadRequestError, match="unexpected `tool_use_id`"):
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=history)  # type: ignore[arg-type]


async def test_a_wrong_key_is_refused_when_the_server_knows_the_right_one() -> None:
    async with FakeMessagesAPI([text("hi")], api_key="sk-right") as server:
        async with client(server) as sdk:
            with pytest.raises(anthropic.AuthenticationError):
                await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
        assert server.pending == 1


async def test_a_request_with_no_reply_scripted_fails_once_and_says_why(
    api: FakeMessagesAPI,
) -> None:
    async with client(api, max_retries=2) as sdk:
        with pytest.raises(anthropic.InternalServerError, match="no reply scripted for request 0"):
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert len(api.requests) == 1, "x-should-retry: false stops the SDK's retries"


async def test_a_responder_that_raises_is_a_500_and_is_kept(api: FakeMessagesAPI) -> None:
    def responder(request: RecordedRequest) -> ScriptedReply:
        raise KeyError("oops")

    api.responder = responder
    async with client(api) as sdk:
        with pytest.raises(anthropic.InternalServerError, match="responder raised KeyError"):
            await sdk.messages.create(model=MODEL, max_tokens=10, messages=HELLO)
    assert [type(failure) for failure in api.responder_failures] == [KeyError]


# ---- HTTP errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "exception", "kind"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (413, anthropic.RequestTooLargeError, "request_too_large"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.APIStatusError, "overloaded_error"),
    ],
)
@pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])
async def test_each_http_error_becomes_the_sdks_exception(
    api: FakeMessagesAPI, status: int, exception: type[Exception], kind: str, streamed: bool
) -> None:
    api.enqueue(error(status, "scripted failure", retry_after=0.01 if status == 429 else None))
    async with client(api) as sdk:
        with pytest.raises(exception) as caught:
            await ask(sdk, streamed=streamed)
    failure = caught.value
    assert isinstance(failure, anthropic.APIStatusError)
    assert failure.status_code == status
    assert failure.body == {
        "type": "error",
        "error": {"type": kind, "message": "scripted failure"},
        "request_id": "req_fake_000000",
    }
    assert failure.request_id == "req_fake_000000"
    assert len(api.requests) == 1


async def test_overloaded_is_its_own_subclass_of_the_server_error(api: FakeMessagesAPI) -> None:
    api.enqueue(error(529))
    async with client(api) as sdk:
        with pytest.raises(anthropic.InternalServerError) as caught:
            await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
    assert type(caught.value).__name__ == "OverloadedError"


@pytest.mark.parametrize("status", [429, 529])
async def test_a_retryable_error_is_retried_after_its_retry_after(
    api: FakeMessagesAPI, status: int
) -> None:
    api.enqueue(error(status, retry_after=0.3), text("finally"))
    async with client(api, max_retries=1) as sdk:
        message = await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
    assert message.content[0].type == "text" and message.content[0].text == "finally"
    first, second = api.requests
    assert second.received_at - first.received_at >= 0.3


# ---- failures in the middle of a stream -----------------------------------------------------


async def test_a_connection_dropped_mid_stream_is_a_connection_error_and_not_retried(
    api: FakeMessagesAPI,
) -> None:
    """What the SDK does when the body stops short of its chunked end: it raises.

    The partial stream has been seen by then (the deltas before the drop arrive). The
    five events sent: message_start, ping, content_block_start and two deltas.
    """
    api.enqueue(text("Hello there, world!", chunk=5).dropped_after(5), text("unused"))
    deltas: list[str] = []
    async with client(api, max_retries=2) as sdk:
        with pytest.raises(anthropic.APIConnectionError):
            await read_text(sdk, deltas)
    assert deltas == ["Hello", " ther"]
    assert len(api.requests) == 1 and api.pending == 1


async def test_a_stream_that_ends_without_message_stop_just_ends(api: FakeMessagesAPI) -> None:
    """The TRAP of DEPENDENCY-NOTES, pinned: nothing is raised, ``stop_reason`` is None.

    A body that ends cleanly (its last chunk sent) after some events looks complete to
    HTTP; the SDK then returns the partial message. Code on top must treat a stream with
    no ``message_stop`` as a failed turn.
    """
    api.enqueue(text("Hello there, world!", chunk=5).truncated_after(6))
    _, final = await stream_events(api)
    assert final.stop_reason is None
    assert final.content[0].type == "text" and final.content[0].text == "Hello there, wo"


def _index_of_input_delta(answer: Reply, number: int) -> int:
    """Position in ``answer``'s stream of its ``number``-th input_json_delta (from 1)."""
    seen = 0
    for position, (kind, data) in enumerate(events_of(answer)):
        if kind == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            seen += 1
            if seen == number:
                return position
    raise AssertionError("not that many input deltas")


async def test_a_drop_in_the_middle_of_a_tools_input_raises(api: FakeMessagesAPI) -> None:
    call = reply(text("Looking."), tool_use("search", {"query": "trio actors"}, json_chunk=4))
    api.enqueue(call.dropped_after(_index_of_input_delta(call, 3)))
    seen: list[str] = []
    async with client(api) as sdk:
        with pytest.raises(anthropic.APIConnectionError):
            await read_events(sdk, seen)
    assert seen.count("input_json") == 2


async def test_a_truncation_in_the_middle_of_a_tools_input_leaves_a_partial_input(
    api: FakeMessagesAPI,
) -> None:
    """The SDK parses partial JSON as it comes, keeping only the values that are complete.

    After ``{"query": "trio actors", "li`` the input is ``{"query": "trio actors"}``; after
    ``{"query": "trio`` it is still empty.
    """
    call = tool_use("search", {"query": "trio actors", "limit": 10}, json_chunk=4)
    api.enqueue(
        call.truncated_after(_index_of_input_delta(call, 4)),
        call.truncated_after(_index_of_input_delta(call, 7)),
    )
    inputs = []
    for _ in range(2):
        _, final = await stream_events(api)
        assert final.stop_reason is None
        (block,) = final.content
        assert block.type == "tool_use"
        inputs.append(block.input)
    assert inputs == [{}, {"query": "trio actors"}]


async def test_malformed_json_in_a_data_line_raises_a_value_error(api: FakeMessagesAPI) -> None:
    api.enqueue(text("Hello there", chunk=5).malformed_after(4))
    async with client(api) as sdk:
        with pytest.raises(ValueError, match="Unterminated|Expecting|delimiter"):
            async with sdk.messages.stream(model=MODEL, max_tokens=9, messages=HELLO) as stream:
                await stream.until_done()


async def test_an_error_event_mid_stream_is_an_api_status_error(api: FakeMessagesAPI) -> None:
    api.enqueue(
        text("Hello there", chunk=5).error_event_after(4, type="overloaded_error", message="busy")
    )
    deltas: list[str] = []
    async with client(api, max_retries=2) as sdk:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await read_text(sdk, deltas)
    assert deltas == ["Hello"]
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "busy"},
    }
    assert len(api.requests) == 1


async def test_a_fault_on_a_plain_request_fails_it_the_same_way(api: FakeMessagesAPI) -> None:
    api.enqueue(
        text("a").dropped_after(0),
        text("b").malformed_after(0),
        text("c").error_event_after(0, type="overloaded_error"),
    )
    async with client(api) as sdk:
        with pytest.raises(anthropic.APIConnectionError):
            await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
        with pytest.raises((anthropic.APIResponseValidationError, ValueError)):
            await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
        with pytest.raises(anthropic.InternalServerError) as caught:
            await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
    assert caught.value.status_code == 529


# ---- slow, stalled and hanging replies ------------------------------------------------------


async def test_a_slow_stream_can_be_cancelled_and_the_client_carries_on(
    api: FakeMessagesAPI,
) -> None:
    api.enqueue(text("x" * 200, chunk=1).slowed(0.02), text("next"))
    deltas: list[str] = []
    async with client(api) as sdk:
        # Cancelled once the stream is under way, however long the first request took to
        # start on a loaded machine (a fixed 0.2 s once saw no delta at all).
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_text, sdk, deltas)
                with trio.fail_after(10):
                    while len(deltas) < 2:
                        await trio.sleep(0.005)
                await trio.sleep(0.05)
                scope.cancel()
        assert scope.cancelled_caught
        assert 2 <= len(deltas) < 50  # of 200, one every 0.02 s: cut short
        message = await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
        assert message.content[0].type == "text" and message.content[0].text == "next"
    with trio.fail_after(5):
        while api.statistics().abandoned < 1:
            await trio.sleep(0.01)


async def test_a_hang_ends_in_the_clients_timeout(api: FakeMessagesAPI) -> None:
    api.enqueue(hang())
    async with client(api, timeout=0.3) as sdk:
        with pytest.raises(anthropic.APITimeoutError):
            await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
    with trio.fail_after(5):
        while api.statistics().abandoned < 1:
            await trio.sleep(0.01)


async def test_a_stream_that_stalls_ends_in_a_read_timeout(api: FakeMessagesAPI) -> None:
    api.enqueue(text("Hello there", chunk=5).stalled_after(4))
    deltas: list[str] = []
    async with client(api, timeout=0.3) as sdk:
        with pytest.raises(anthropic.APITimeoutError):
            await read_text(sdk, deltas)
    assert deltas == ["Hello"]


# ---- lifetime -------------------------------------------------------------------------------


def _fake_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("FakeMessagesAPI")]


async def test_stopping_ends_every_connection_and_thread_even_mid_request() -> None:
    before = _fake_threads()
    slow = text("slow " * 100, chunk=1).slowed(0.05)
    server = FakeMessagesAPI(
        [text("idle")], responder=lambda request: slow if request.stream else hang()
    )
    async with server, client(server) as idle_client:
        await idle_client.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
        outcomes: list[str] = []

        async def attempt(streamed: bool) -> None:
            try:
                async with client(server) as sdk:
                    await ask(sdk, streamed=streamed)
            except anthropic.APIConnectionError:
                outcomes.append("connection error")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, False)
            nursery.start_soon(attempt, True)
            with trio.fail_after(5):
                while server.statistics().open_connections < 3:
                    await trio.sleep(0.01)
            await trio.sleep(0.1)
            assert len(_fake_threads()) == len(before) + 4  # the server and 3 connections
            started = trio.current_time()
            await trio.to_thread.run_sync(server.stop)
            assert trio.current_time() - started < 1
        assert outcomes == ["connection error", "connection error"]
    assert _fake_threads() == before
    assert server.statistics().open_connections == 0
    with pytest.raises(anthropic.APIConnectionError):
        async with client(server) as sdk:
            await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)


def test_it_serves_plain_synchronous_code_too() -> None:
    with FakeMessagesAPI([text("sync")]) as server:
        port = int(server.url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        body = {"model": MODEL, "max_tokens": 5, "messages": HELLO}
        connection.request("POST", "/v1/messages", json.dumps(body))
        answer = json.loads(connection.getresponse().read())
        connection.close()
    assert answer["content"] == [{"type": "text", "text": "sync"}]
    assert _fake_threads() == []
    with pytest.raises(RuntimeError, match="already started once"):
        server.start()


def test_the_url_needs_a_started_server() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeMessagesAPI().url


def test_the_server_pushes_far_more_deltas_per_second_than_the_sdk_reads() -> None:
    """20,000 one-character deltas to a bare ``http.client`` reader: > 20,000 per second.

    About 110,000 per second here; the floor is set far below, for a loaded CI machine.
    """
    deltas = 20_000
    with FakeMessagesAPI([text("x" * deltas, chunk=1)]) as server:
        port = int(server.url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = {"model": MODEL, "max_tokens": 5, "messages": HELLO, "stream": True}
        started = time.perf_counter()
        connection.request("POST", "/v1/messages", json.dumps(body))
        data = connection.getresponse().read()
        elapsed = time.perf_counter() - started
        connection.close()
    assert data.count(b'"text_delta"') == deltas
    assert deltas / elapsed > 20_000, f"{deltas / elapsed:.0f} deltas/s"


# ---- helpers --------------------------------------------------------------------------------


async def _raw_stream(api: FakeMessagesAPI) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events on the wire, parsed by hand (no SDK), for a streamed request."""
    port = int(api.url.rsplit(":", 1)[1])

    def fetch() -> bytes:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        body = {"model": MODEL, "max_tokens": 5, "messages": HELLO, "stream": True}
        connection.request("POST", "/v1/messages", json.dumps(body))
        response = connection.getresponse()
        assert response.getheader("content-type", "").startswith("text/event-stream")
        data = response.read()
        connection.close()
        return data

    events = []
    for frame in (await trio.to_thread.run_sync(fetch)).decode().split("\n\n"):
        if frame:
            kind_line, data_line = frame.split("\n")
            assert kind_line.startswith("event: ") and data_line.startswith("data: ")
            data = json.loads(data_line.removeprefix("data: "))
            assert data["type"] == kind_line.removeprefix("event: ")
            events.append((data["type"], data))
    return events


# ---- the request checks, without a server ---------------------------------------------------


def _tool_call(tool_id: str) -> dict[str, Any]:
    return {"role": "assistant", "content": [{"type": "tool_use", "id": tool_id, "name": "f"}]}


def _result(tool_id: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id}]}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ([], "JSON object"),
        ({"max_tokens": 5, "messages": HELLO}, "model: Field required"),
        ({"model": MODEL, "messages": HELLO}, "max_tokens"),
        ({"model": MODEL, "max_tokens": True, "messages": HELLO}, "max_tokens"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages: Field required"),
        ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "system"}]}, "messages.0.role"),
        ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user"}]}, "messages.0.content"),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [{"role": "assistant", "content": "x"}]},
            "messages.0: the first message must use the `user` role",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [*HELLO, _tool_call("a")]},
            "messages.1: `tool_use` ids were found without `tool_result` blocks",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [*HELLO, _tool_call("a"), _result("b")]},
            "messages.1: `tool_use` ids",
        ),
        (
            {"model": MODEL, "max_tokens": 5, "messages": [_result("b")]},
            "messages.0.content.0: unexpected `tool_use_id`",
        ),
    ],
)
def test_request_problem_names_the_rule_and_the_message(body: Any, problem: str) -> None:
    from wactorz.testing import request_problem

    found = request_problem(body)
    assert found is not None and problem in found


def test_a_well_formed_tool_exchange_has_no_problem() -> None:
    from wactorz.testing import request_problem

    history = [*HELLO, _tool_call("a"), _result("a"), {"role": "assistant", "content": "done"}]
    assert request_problem({"model": MODEL, "max_tokens": 5, "messages": history}) is None
    assert request_problem({"model": MODEL, "messages": HELLO}, "/v1/messages/count_tokens") is None


async def test_a_slowed_plain_request_answers_when_its_stream_would_have_ended(
    api: FakeMessagesAPI,
) -> None:
    answer = text("abcdef", chunk=1).slowed(0.03)
    api.enqueue(answer)
    events = len(events_of(answer))
    async with client(api) as sdk:
        started = trio.current_time()
        await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
    assert trio.current_time() - started >= 0.03 * (events - 1)


async def test_the_key_may_come_as_x_api_key_too() -> None:
    async with FakeMessagesAPI([text("hi")], api_key="sk-right") as server:
        async with client(server, default_headers={"x-api-key": "sk-right"}) as sdk:
            message = await sdk.messages.create(model=MODEL, max_tokens=9, messages=HELLO)
        assert message.content[0].type == "text"
        assert server.requests[0].headers["x-api-key"] == "sk-right"

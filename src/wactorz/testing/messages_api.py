"""A fake Anthropic Messages API: a real HTTP server on loopback that answers from a script.

Point the real ``anthropic`` SDK at it (``AsyncAnthropic(base_url=api.url, api_key="sk-test")``)
and script what "the model" says, one reply per request::

    from wactorz.testing import FakeMessagesAPI, text, tool_use

    with FakeMessagesAPI() as api:          # or `async with` from Trio code
        api.enqueue(tool_use("get_weather", {"city": "Oslo"}), text("Cold, as usual."))
        ...  # run the code under test against api.url
        first, second = api.requests        # what it sent: model, system, messages, tools...
        assert second.messages[-1]["content"][0]["type"] == "tool_result"

What it speaks:

- ``POST /v1/messages``: a JSON `Message` for a plain request, or Server-Sent Events when the
  body says ``"stream": true`` (what ``client.messages.stream(...)`` and
  ``create(stream=True)`` send). An event stream is ``event: <type>`` + ``data: <json>`` +
  a blank line per event, in the API's order: ``message_start`` (with ``usage``), ``ping``,
  then per content block ``content_block_start``, its deltas (``text_delta`` pieces of
  ``TextBlock.chunk`` characters, ``input_json_delta`` pieces of the tool input's JSON of
  ``ToolUseBlock.json_chunk`` characters) and ``content_block_stop``, then
  ``message_delta`` (stop reason and output tokens) and ``message_stop``. It is sent with
  chunked transfer encoding on a keep-alive HTTP/1.1 connection.
- ``POST /v1/messages/count_tokens``: ``{"input_tokens": <estimate>}``, consuming no reply.
- Anything else: a 404 in the API's error shape.

Replies come from the queue that `FakeMessagesAPI.enqueue` fills, first in first out; when
it is empty, from the ``responder`` callable if there is one (it sees the `RecordedRequest`
and returns a reply: answer a tool result, fail the third call...). A request that finds
neither is answered with a 500 that names the problem and tells the SDK not to retry.

What a reply can be:

- a `Reply` (built by `text`, `tool_use` or `reply`), with an optional `StreamFault`:
  the connection dropped after N events (`Reply.dropped_after`), the stream ending
  early but cleanly with no ``message_stop`` (`Reply.truncated_after`), a data line of
  bad JSON (`Reply.malformed_after`), an ``event: error`` (`Reply.error_event_after`), or
  a stream that stalls forever (`Reply.stalled_after`); and ``delay_s`` between events
  for slow streams (`Reply.slowed`);
- an `ErrorReply` (built by `error`): an HTTP error with the API's JSON body
  ``{"type": "error", "error": {"type": ..., "message": ...}}`` and, for 429 and 529,
  an optional ``retry-after`` header;
- `Hang` (built by `hang`): never answers, until the client goes away or the server stops.

Every request is recorded (`FakeMessagesAPI.requests`) with its headers, the API key
included so that a test can check it was sent (`RecordedRequest.api_key`); the key is
masked in the record's repr and the server logs nothing about requests.

With ``validate=True`` (the default) a request the real API would refuse is answered with
a 400 ``invalid_request_error`` that says why (`request_problem`), before any reply is
consumed: missing ``model``, ``max_tokens`` or ``messages``, a first message that is not
the user's, a role other than user or assistant, a ``tool_use`` with no ``tool_result``
for it in the very next message, or a ``tool_result`` whose ``tool_use`` is not in the
message before. With ``api_key=...`` any other key (or none) gets a 401.

The server is a `http.server.ThreadingHTTPServer` in a background thread, one more thread
per open connection. `FakeMessagesAPI.stop` (or leaving the ``with`` / ``async with``
block) closes every connection, wakes every hanging or slow reply, and joins every thread
it started, so nothing is left behind; from Trio, ``async with`` does that in a worker
thread instead of blocking the event loop for the few milliseconds it takes.

Throughput: on the project's 2-core machine a reply with ``delay_s=0`` pushes well over
100,000 text deltas per second to a bare socket reader (see
``tests/testing/test_messages_api.py``), several times what the SDK can parse, so a
benchmark through the SDK measures the SDK and the code under test, not this server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import select
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeAlias, final

import attrs
import trio

__all__ = [
    "ERROR_TYPES",
    "ErrorReply",
    "FakeAPIStatistics",
    "FakeMessagesAPI",
    "Hang",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ScriptedReply",
    "StreamFault",
    "TextBlock",
    "ToolUseBlock",
    "Usage",
    "error",
    "hang",
    "reply",
    "request_problem",
    "text",
    "tool_use",
]

_log = logging.getLogger(__name__)

ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""The API's ``error.type`` for each HTTP status it uses; `error` picks the type from here."""

_STATUS_OF_TYPE: Final = {kind: status for status, kind in ERROR_TYPES.items()}

StopReason: TypeAlias = Literal[
    "end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"
]


def _estimate_tokens(value: object) -> int:
    """About one token per four characters of JSON: the usual rule of thumb, never zero."""
    if value is None:
        return 0
    size = len(value) if isinstance(value, str) else len(json.dumps(value, ensure_ascii=False))
    return max(1, size // 4)


# ---- what a reply is made of ---------------------------------------------------------------


@final
@attrs.frozen
class Usage:
    """Token counts a reply reports; None means estimated from the request or the reply.

    The estimate is a quarter of the JSON size of the request's ``system``, ``messages``
    and ``tools`` for ``input_tokens``, and of the reply's content for ``output_tokens``.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


@final
@attrs.frozen
class TextBlock:
    """A ``text`` content block, streamed as ``text_delta`` pieces of ``chunk`` characters."""

    text: str
    chunk: int = attrs.field(default=5, validator=attrs.validators.ge(1))

    def as_json(self) -> dict[str, Any]:
        """The block as the API returns it in a `Message`."""
        return {"type": "text", "text": self.text}


@final
@attrs.frozen
class ToolUseBlock:
    """A ``tool_use`` content block, its input streamed as ``input_json_delta`` pieces.

    ``id`` is made up (``toolu_fake_`` and 20 random hex digits) unless given: random, so
    that a history kept across processes never sees the same id twice, as the API never does;
    ``json_chunk`` is the size in characters of each piece of the input's JSON text.
    """

    name: str
    input: Mapping[str, Any]
    id: str = attrs.field(factory=lambda: f"toolu_fake_{secrets.token_hex(10)}")
    json_chunk: int = attrs.field(default=8, validator=attrs.validators.ge(1))

    def as_json(self) -> dict[str, Any]:
        """The block as the API returns it in a `Message`."""
        return {"type": "tool_use", "id": self.id, "name": self.name, "input": dict(self.input)}


Block: TypeAlias = TextBlock | ToolUseBlock


@final
@attrs.frozen
class StreamFault:
    """What goes wrong in a streamed reply, after ``after_events`` events were sent.

    - ``"drop"``: the connection is closed in the middle of the response body (an
      incomplete chunked body: the SDK raises ``APIConnectionError``);
    - ``"truncate"``: the body ends cleanly, with no more events (no ``message_stop``: the
      SDK's stream just ends, and its final message has ``stop_reason`` None);
    - ``"malformed"``: a ``content_block_delta`` whose data line is not JSON, then the end;
    - ``"error"``: an ``event: error`` carrying ``error_type`` and ``message``, then the end;
    - ``"stall"``: nothing more is sent, and the connection stays open until the client
      gives up or the server stops (for read timeouts).

    On a request that is not streamed: ``"drop"`` closes the connection without an answer,
    ``"truncate"`` and ``"malformed"`` send a 200 whose body is cut JSON, ``"error"`` an
    HTTP error of the status that goes with ``error_type`` (500 for an unknown type), and
    ``"stall"`` never answers.
    """

    kind: Literal["drop", "truncate", "malformed", "error", "stall"]
    after_events: int = attrs.field(validator=attrs.validators.ge(0))
    error_type: str = "overloaded_error"
    message: str = "Overloaded"


@final
@attrs.frozen
class Reply:
    """What the fake model answers to one request: content blocks, stop reason, usage.

    Build one with `text`, `tool_use` or `reply`, then add a fault or a delay with the
    methods below (each returns a new reply). ``model`` None echoes the request's model.
    ``delay_s`` is slept before each event but the first (a request that is not streamed
    gets its answer when the stream would have ended); ``ping`` sends a ``ping`` event
    after ``message_start``, as the real API does.
    """

    content: tuple[Block, ...]
    stop_reason: StopReason | None = None
    stop_sequence: str | None = None
    usage: Usage = Usage()
    model: str | None = None
    delay_s: float = attrs.field(default=0.0, validator=attrs.validators.ge(0.0))
    ping: bool = True
    fault: StreamFault | None = None

    @property
    def final_stop_reason(self) -> StopReason:
        """``stop_reason``, or ``tool_use`` when the content has a tool call, else ``end_turn``."""
        if self.stop_reason is not None:
            return self.stop_reason
        if any(isinstance(block, ToolUseBlock) for block in self.content):
            return "tool_use"
        return "end_turn"

    def slowed(self, delay_s: float) -> Reply:
        """This reply, sleeping ``delay_s`` before each event but the first."""
        return attrs.evolve(self, delay_s=delay_s)

    def dropped_after(self, events: int) -> Reply:
        """This reply, with the connection closed mid-body after ``events`` events."""
        return attrs.evolve(self, fault=StreamFault("drop", events))

    def truncated_after(self, events: int) -> Reply:
        """This reply, its stream ending cleanly after ``events`` events (no ``message_stop``)."""
        return attrs.evolve(self, fault=StreamFault("truncate", events))

    def malformed_after(self, events: int) -> Reply:
        """This reply, with a data line of bad JSON after ``events`` events."""
        return attrs.evolve(self, fault=StreamFault("malformed", events))

    def error_event_after(
        self, events: int, *, type: str = "overloaded_error", message: str = "Overloaded"
    ) -> Reply:
        """This reply, with an ``event: error`` of ``type`` after ``events`` events."""
        return attrs.evolve(self, fault=StreamFault("error", events, type, message))

    def stalled_after(self, events: int) -> Reply:
        """This reply, going silent (connection open) after ``events`` events."""
        return attrs.evolve(self, fault=StreamFault("stall", events))

    def output_tokens(self) -> int:
        """``usage.output_tokens``, or the estimate from the content."""
        if self.usage.output_tokens is not None:
            return self.usage.output_tokens
        return _estimate_tokens([block.as_json() for block in self.content])

    def usage_json(self, input_tokens: int) -> dict[str, int]:
        """The ``usage`` of the final message; ``input_tokens`` is the request's estimate.

        The estimate is used only when ``usage.input_tokens`` is None.
        """
        return {
            "input_tokens": input_tokens
            if self.usage.input_tokens is None
            else self.usage.input_tokens,
            "output_tokens": self.output_tokens(),
            "cache_creation_input_tokens": self.usage.cache_creation_input_tokens,
            "cache_read_input_tokens": self.usage.cache_read_input_tokens,
        }

    def message(self, *, id: str, model: str, input_tokens: int) -> dict[str, Any]:
        """The whole reply as the JSON `Message` a request without streaming gets."""
        return {
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": self.model or model,
            "content": [block.as_json() for block in self.content],
            "stop_reason": self.final_stop_reason,
            "stop_sequence": self.stop_sequence,
            "usage": self.usage_json(input_tokens),
        }

    def stream_events(
        self, *, id: str, model: str, input_tokens: int
    ) -> list[tuple[str, dict[str, Any]]]:
        """The complete event stream of this reply, as ``(event type, data)`` pairs.

        Faults are not applied: ``after_events`` counts positions in this list, so a test
        can find where to cut (e.g. the index of the second ``input_json_delta``).
        """
        start_usage = self.usage_json(input_tokens) | {"output_tokens": 1}
        start = self.message(id=id, model=model, input_tokens=input_tokens) | {
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        events: list[tuple[str, dict[str, Any]]] = [
            ("message_start", {"type": "message_start", "message": start})
        ]
        if self.ping:
            events.append(("ping", {"type": "ping"}))
        for index, block in enumerate(self.content):
            if isinstance(block, TextBlock):
                opening: dict[str, Any] = {"type": "text", "text": ""}
                deltas = [
                    {"type": "text_delta", "text": block.text[at : at + block.chunk]}
                    for at in range(0, len(block.text), block.chunk)
                ]
            else:
                opening = block.as_json() | {"input": {}}
                whole = json.dumps(dict(block.input), ensure_ascii=False)
                deltas = [
                    {"type": "input_json_delta", "partial_json": whole[at : at + block.json_chunk]}
                    for at in range(0, len(whole), block.json_chunk)
                ]
            events.append(
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": opening},
                )
            )
            events.extend(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
                for delta in deltas
            )
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": self.final_stop_reason,
                        "stop_sequence": self.stop_sequence,
                    },
                    "usage": {"output_tokens": self.output_tokens()},
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return events


@final
@attrs.frozen
class ErrorReply:
    """An HTTP error in the API's shape; build it with `error`.

    ``should_retry`` sets the ``x-should-retry`` header the SDK obeys (None: no header,
    so the SDK decides by status: it retries 408, 409, 429 and 5xx).
    """

    status: int
    type: str
    message: str
    retry_after: float | None = None
    should_retry: bool | None = None

    def body(self, request_id: str) -> dict[str, Any]:
        """The JSON body of the error response."""
        return {
            "type": "error",
            "error": {"type": self.type, "message": self.message},
            "request_id": request_id,
        }


@final
@attrs.frozen
class Hang:
    """A reply that never comes: the request waits until the client or the server gives up."""


ScriptedReply: TypeAlias = Reply | ErrorReply | Hang
"""Anything the script or the responder can answer with."""


def text(
    content: str,
    *,
    chunk: int = 5,
    delay_s: float = 0.0,
    stop_reason: StopReason | None = None,
    usage: Usage = Usage(),
) -> Reply:
    """A reply of one text block, streamed ``chunk`` characters per delta."""
    return Reply(
        (TextBlock(content, chunk),), stop_reason=stop_reason, usage=usage, delay_s=delay_s
    )


def tool_use(
    name: str,
    input: Mapping[str, Any],
    *,
    id: str | None = None,
    json_chunk: int = 8,
    delay_s: float = 0.0,
    usage: Usage = Usage(),
) -> Reply:
    """A reply that calls one tool (stop reason ``tool_use``), its input streamed in pieces."""
    block = (
        ToolUseBlock(name, input, json_chunk=json_chunk)
        if id is None
        else ToolUseBlock(name, input, id, json_chunk)
    )
    return Reply((block,), usage=usage, delay_s=delay_s)


def reply(
    *parts: Reply | Block | str,
    stop_reason: StopReason | None = None,
    stop_sequence: str | None = None,
    usage: Usage = Usage(),
    delay_s: float = 0.0,
) -> Reply:
    """One reply made of several content blocks, in order.

    Each part is a block, a string (a text block), or a `Reply` whose blocks are taken:
    ``reply(text("Let me look."), tool_use("search", {"q": "trio"}))``. The stop reason is
    ``tool_use`` when a tool is called, else ``end_turn``, unless given.
    """
    blocks: list[Block] = []
    for part in parts:
        if isinstance(part, Reply):
            blocks.extend(part.content)
        elif isinstance(part, str):
            blocks.append(TextBlock(part))
        else:
            blocks.append(part)
    return Reply(
        tuple(blocks),
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        usage=usage,
        delay_s=delay_s,
    )


def error(
    status: int,
    message: str | None = None,
    *,
    type: str | None = None,
    retry_after: float | None = None,
    should_retry: bool | None = None,
) -> ErrorReply:
    """An HTTP error reply: ``error(429, retry_after=0.2)``, ``error(401)``, ``error(529)``.

    ``type`` defaults to the API's type for ``status`` (`ERROR_TYPES`; ``api_error`` for a
    status not listed there), ``message`` to a sentence naming it.
    """
    kind = type or ERROR_TYPES.get(status, "api_error")
    return ErrorReply(
        status,
        kind,
        message or f"fake {kind} (HTTP {status})",
        retry_after=retry_after,
        should_retry=should_retry,
    )


def hang() -> Hang:
    """A reply that never comes (for timeout and cancellation tests)."""
    return Hang()


# ---- what the server saw -------------------------------------------------------------------

_SECRET_HEADERS: Final = frozenset({"x-api-key", "authorization"})


def _masked(headers: Mapping[str, str]) -> str:
    shown = {name: "***" if name in _SECRET_HEADERS else value for name, value in headers.items()}
    return repr(shown)


@final
@attrs.frozen
class RecordedRequest:
    """One request the server received, in arrival order (``index`` counts from 0).

    ``headers`` has lower-case names and includes the API key (``x-api-key`` or
    ``authorization``), which the repr masks. ``body`` is the parsed JSON (None if the
    body was not JSON); the properties read its usual fields, None when absent.
    """

    index: int
    method: str
    path: str
    headers: Mapping[str, str] = attrs.field(repr=_masked)
    body: Any
    raw: bytes = attrs.field(repr=False)
    received_at: float
    """`time.monotonic` when the whole request had been read."""

    def _field(self, name: str) -> Any:
        return self.body.get(name) if isinstance(self.body, dict) else None

    @property
    def api_key(self) -> str | None:
        """The key sent: the ``x-api-key`` header, else the token of ``authorization: Bearer``.

        (The SDK of late 2026 sends ``authorization``; older ones sent ``x-api-key``.)
        """
        key = self.headers.get("x-api-key")
        if key is None:
            scheme, _, token = self.headers.get("authorization", "").partition(" ")
            key = token if scheme.lower() == "bearer" and token else None
        return key

    @property
    def model(self) -> str | None:
        """The ``model`` asked for."""
        return self._field("model")  # type: ignore[no-any-return]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` sent (the history), or an empty list."""
        return self._field("messages") or []

    @property
    def system(self) -> str | list[dict[str, Any]] | None:
        """The ``system`` prompt: a string, or text blocks (with ``cache_control`` markers)."""
        return self._field("system")  # type: ignore[no-any-return]

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The ``tools`` offered, or an empty list."""
        return self._field("tools") or []

    @property
    def max_tokens(self) -> int | None:
        """``max_tokens``."""
        return self._field("max_tokens")  # type: ignore[no-any-return]

    @property
    def temperature(self) -> float | None:
        """``temperature``."""
        return self._field("temperature")  # type: ignore[no-any-return]

    @property
    def stream(self) -> bool:
        """Whether the request asked for a stream of events."""
        return self._field("stream") is True

    def input_tokens(self) -> int:
        """The estimated input tokens: a quarter of the JSON size of system, messages, tools."""
        return max(
            1,
            _estimate_tokens(self.system)
            + _estimate_tokens(self.messages)
            + _estimate_tokens(self.tools or None),
        )


Responder: TypeAlias = Callable[[RecordedRequest], ScriptedReply]
"""Answers a request when the queue is empty: ``lambda request: text("ok")``."""


@final
@attrs.frozen
class FakeAPIStatistics:
    """Counts since the server started."""

    requests: int
    """Requests received, whatever their answer."""
    connections: int
    """TCP connections accepted (fewer than requests when the client keeps them alive)."""
    open_connections: int
    """Connections open now."""
    answered: int
    """Requests answered to the end (a scripted fault included)."""
    abandoned: int
    """Requests the client went away from before the end (cancelled, timed out)."""
    pending_replies: int
    """Scripted replies not consumed yet."""


# ---- the checks the real API makes on a request --------------------------------------------


def _blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    if isinstance(content, list):
        return [block for block in content if isinstance(block, Mapping)]
    return []


def request_problem(body: object, path: str = "/v1/messages") -> str | None:
    """Why the real API would refuse this request body with a 400, or None.

    Checks only what the API is strict about and a client can get wrong: the required
    fields, the roles, and the pairing of each ``tool_use`` with a ``tool_result`` in the
    very next message (messages are named by index, as the API names them). A
    ``count_tokens`` request (``path``) needs no ``max_tokens``.
    """
    if not isinstance(body, Mapping):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    max_tokens = body.get("max_tokens")
    if path == "/v1/messages" and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        return "max_tokens: Field required (an integer of at least 1)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (at least one message)"
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if not isinstance(message.get("content"), str | list):
            return f"messages.{index}.content: Field required (a string or a list of blocks)"
    if messages[0]["role"] != "user":
        return "messages.0: the first message must use the `user` role"
    for index, message in enumerate(messages):
        if message["role"] == "user":
            previous = messages[index - 1] if index else None
            asked = {
                block.get("id")
                for block in (_blocks(previous) if previous else [])
                if block.get("type") == "tool_use" and previous and previous["role"] == "assistant"
            }
            for position, block in enumerate(_blocks(message)):
                if block.get("type") == "tool_result" and block.get("tool_use_id") not in asked:
                    return (
                        f"messages.{index}.content.{position}: unexpected `tool_use_id` found in "
                        f"`tool_result` blocks: {block.get('tool_use_id')}. Each `tool_result` "
                        "block must have a corresponding `tool_use` block in the previous message."
                    )
        else:
            ids = [block.get("id") for block in _blocks(message) if block.get("type") == "tool_use"]
            following = messages[index + 1] if index + 1 < len(messages) else None
            answered = {
                block.get("tool_use_id")
                for block in (_blocks(following) if following else [])
                if block.get("type") == "tool_result"
            }
            missing = [tool_id for tool_id in ids if tool_id not in answered]
            if missing:
                return (
                    f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(map(str, missing))}. Each `tool_use` block "
                    "must have a corresponding `tool_result` block in the next message."
                )
    return None


# ---- the server ----------------------------------------------------------------------------


class _ClientGone(Exception):
    """The client closed its connection, or the server is stopping: stop answering."""


class _Handler(BaseHTTPRequestHandler):
    """One connection: requests one after another (HTTP/1.1 keep-alive)."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: a request line is harmless, but this server keeps quiet on principle."""

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        state = self.server.state
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = state.record(
            self.command,
            self.path,
            {name.lower(): value for name, value in self.headers.items()},
            body,
            raw,
        )
        request_id = f"req_fake_{request.index:06d}"
        path = self.path.split("?")[0]
        try:
            if path not in ("/v1/messages", "/v1/messages/count_tokens") or self.command != "POST":
                self._send_error(
                    error(404, f"fake Messages API: no route for {self.command} {path}"),
                    request_id,
                )
            elif state.api_key is not None and request.api_key != state.api_key:
                self._send_error(
                    error(401, "invalid x-api-key" if request.api_key else "x-api-key required"),
                    request_id,
                )
            elif body is None and raw:
                self._send_error(error(400, "the request body is not valid JSON"), request_id)
            elif state.validate and (problem := request_problem(body, path)) is not None:
                self._send_error(error(400, problem), request_id)
            elif path == "/v1/messages/count_tokens":
                self._send_json(200, {"input_tokens": request.input_tokens()}, request_id)
            else:
                self._answer(request, state.next_reply(request), request_id)
            state.count("answered")
        except _ClientGone:
            state.count("abandoned")
            self.close_connection = True
        except OSError:  # the client went away mid-write
            state.count("abandoned")
            self.close_connection = True

    def _answer(self, request: RecordedRequest, answer: ScriptedReply, request_id: str) -> None:
        if isinstance(answer, ErrorReply):
            self._send_error(answer, request_id)
        elif isinstance(answer, Hang):
            self._wait_forever()
        elif request.stream:
            self._send_stream(request, answer, request_id)
        else:
            self._send_message(request, answer, request_id)

    def _headers(self, status: int, request_id: str, extra: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("request-id", request_id)
        for name, value in extra.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_json(
        self,
        status: int,
        payload: object,
        request_id: str,
        extra: Mapping[str, str] | None = None,
        *,
        cut: bool = False,
    ) -> None:
        data = json.dumps(payload).encode()
        if cut:
            data = data[: len(data) // 2]
        headers = {"content-type": "application/json", "content-length": str(len(data))}
        self._headers(status, request_id, headers | dict(extra or {}))
        self.wfile.write(data)

    def _send_error(self, answer: ErrorReply, request_id: str) -> None:
        extra = {}
        if answer.retry_after is not None:
            extra["retry-after"] = f"{answer.retry_after:g}"
        if answer.should_retry is not None:
            extra["x-should-retry"] = "true" if answer.should_retry else "false"
        self._send_json(answer.status, answer.body(request_id), request_id, extra)

    def _send_message(self, request: RecordedRequest, answer: Reply, request_id: str) -> None:
        fault = answer.fault
        if fault is not None and fault.kind == "drop":
            self._drop()
            return
        if fault is not None and fault.kind == "stall":
            self._wait_forever()
        if fault is not None and fault.kind == "error":
            status = _STATUS_OF_TYPE.get(fault.error_type, 500)
            self._send_error(ErrorReply(status, fault.error_type, fault.message), request_id)
            return
        message = answer.message(
            id=f"msg_fake_{request.index:06d}",
            model=request.model or "claude-fake",
            input_tokens=request.input_tokens(),
        )
        if answer.delay_s:
            events = answer.stream_events(id="", model="", input_tokens=0)
            self._pause(answer.delay_s * (len(events) - 1))
        cut = fault is not None and fault.kind in ("truncate", "malformed")
        self._send_json(200, message, request_id, cut=cut)

    def _send_stream(self, request: RecordedRequest, answer: Reply, request_id: str) -> None:
        events = answer.stream_events(
            id=f"msg_fake_{request.index:06d}",
            model=request.model or "claude-fake",
            input_tokens=request.input_tokens(),
        )
        fault = answer.fault
        if fault is not None:
            events = events[: fault.after_events]
        self._headers(
            200,
            request_id,
            {
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "transfer-encoding": "chunked",
            },
        )
        pending: list[bytes] = []
        size = 0
        for number, (kind, data) in enumerate(events):
            if answer.delay_s and number:
                self._write_chunk(b"".join(pending))
                pending, size = [], 0
                self._pause(answer.delay_s)
            encoded = b"event: %s\ndata: %s\n\n" % (kind.encode(), json.dumps(data).encode())
            pending.append(encoded)
            size += len(encoded)
            if size >= 16_384:
                self._write_chunk(b"".join(pending))
                pending, size = [], 0
        if fault is None or fault.kind == "truncate":
            pass
        elif fault.kind == "malformed":
            pending.append(
                b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, '
                b'"delta": {"type": "text_del\n\n'
            )
        elif fault.kind == "error":
            body = {"type": "error", "error": {"type": fault.error_type, "message": fault.message}}
            pending.append(b"event: error\ndata: %s\n\n" % json.dumps(body).encode())
        elif fault.kind == "drop":
            self._write_chunk(b"".join(pending))
            self._drop()
            return
        else:  # stall
            self._write_chunk(b"".join(pending))
            self._wait_forever()
        self._write_chunk(b"".join(pending))
        self.wfile.write(b"0\r\n\r\n")

    def _pause(self, seconds: float) -> None:
        """Sleep, unless the server stops meanwhile."""
        if self.server.state.stopping.wait(seconds):
            raise _ClientGone

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _drop(self) -> None:
        """Close the connection abruptly, as a network failure would."""
        self.wfile.flush()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _wait_forever(self) -> None:
        """Wait until the client closes the connection or the server stops; then give up."""
        stopping = self.server.state.stopping
        while not stopping.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.05)
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        break
                except OSError:
                    break
                stopping.wait(0.05)  # pipelined data: not ours to read, keep waiting
        raise _ClientGone


class _State:
    """What the handler threads share with the `FakeMessagesAPI`, under one lock."""

    def __init__(self, responder: Responder | None, api_key: str | None, validate: bool) -> None:
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.queue: deque[ScriptedReply] = deque()
        self.responder = responder
        self.api_key = api_key
        self.validate = validate
        self.requests: list[RecordedRequest] = []
        self.counts = {"connections": 0, "answered": 0, "abandoned": 0}
        self.failures: list[BaseException] = []

    def record(
        self, method: str, path: str, headers: dict[str, str], body: Any, raw: bytes
    ) -> RecordedRequest:
        with self.lock:
            request = RecordedRequest(
                len(self.requests), method, path, headers, body, raw, time.monotonic()
            )
            self.requests.append(request)
        return request

    def count(self, name: str) -> None:
        with self.lock:
            self.counts[name] += 1

    def next_reply(self, request: RecordedRequest) -> ScriptedReply:
        with self.lock:
            if self.queue:
                return self.queue.popleft()
            responder = self.responder
        if responder is None:
            return error(
                500,
                f"FakeMessagesAPI: no reply scripted for request {request.index} "
                "(enqueue one, or give the server a responder)",
                should_retry=False,
            )
        try:
            return responder(request)
        except Exception as failure:
            with self.lock:
                self.failures.append(failure)
            return error(
                500,
                f"FakeMessagesAPI: the responder raised {type(failure).__name__}: {failure}",
                should_retry=False,
            )


class _Server(ThreadingHTTPServer):
    """The HTTP server, tracking its connection threads and sockets so it can end them all."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        self.threads: set[threading.Thread] = set()
        self.connections: set[socket.socket] = set()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"FakeMessagesAPI connection {client_address}",
            daemon=True,
        )
        with self.state.lock:
            if self.state.stopping.is_set():
                self.shutdown_request(request)
                return
            self.threads.add(thread)
            self.connections.add(request)
            self.state.counts["connections"] += 1
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.state.lock:
                self.connections.discard(request)
                self.threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection the client broke is its business; anything else is a bug here."""
        if isinstance(sys.exc_info()[1], OSError):
            _log.debug("FakeMessagesAPI: connection from %s failed", client_address, exc_info=True)
        else:
            _log.error("FakeMessagesAPI: failed to answer %s", client_address, exc_info=True)


@final
class FakeMessagesAPI:
    """A fake Anthropic Messages API on ``127.0.0.1`` (a free port unless ``port`` is given).

    ``replies`` start the script (see `enqueue`); ``responder`` answers when the script
    is empty; ``api_key``, when set, is the only key accepted (others get a 401);
    ``validate`` answers requests the real API would refuse with a 400 (`request_problem`).

    Use it as a context manager (``with`` or ``async with``), or call `start` and `stop`.
    Everything here is thread-safe: a test may enqueue replies while requests run.
    """

    def __init__(
        self,
        replies: Iterable[ScriptedReply] = (),
        *,
        responder: Responder | None = None,
        api_key: str | None = None,
        validate: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._state = _State(responder, api_key, validate)
        self._state.queue.extend(replies)
        self._address = (host, port)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifetime ----

    def start(self) -> Self:
        """Listen and serve in a background thread; returns self. Raises if started before."""
        if self._server is not None or self._state.stopping.is_set():
            raise RuntimeError("FakeMessagesAPI: already started once (make a new one per test)")
        self._server = _Server(self._address, self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="FakeMessagesAPI",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, end every connection and join every thread; idempotent.

        Hanging, stalled and slow replies are woken and abandoned. Raises RuntimeError if a
        connection thread is still running after ``timeout`` seconds (a responder that
        blocks would do that: make it return).
        """
        server, thread = self._server, self._thread
        with self._state.lock:
            self._state.stopping.set()
            connections = list(server.connections) if server else []
        if server is None or thread is None:
            return
        server.shutdown()
        server.server_close()
        thread.join()
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its thread
                connection.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout
        while True:
            with self._state.lock:
                threads = list(server.threads)
            if not threads:
                break
            threads[0].join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"FakeMessagesAPI: {len(threads)} connection thread(s) still running "
                    f"after {timeout} s; is a responder blocked?"
                )

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await trio.to_thread.run_sync(self.stop)

    # ---- the script ----

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the SDK's ``base_url``. Raises before `start`."""
        if self._server is None:
            raise RuntimeError("FakeMessagesAPI: not started (use `with FakeMessagesAPI() as api`)")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def enqueue(self, *replies: ScriptedReply) -> None:
        """Add replies to the script: each request to ``/v1/messages`` consumes the first."""
        with self._state.lock:
            self._state.queue.extend(replies)

    @property
    def responder(self) -> Responder | None:
        """What answers a request when the script is empty (settable)."""
        return self._state.responder

    @responder.setter
    def responder(self, responder: Responder | None) -> None:
        with self._state.lock:
            self._state.responder = responder

    @property
    def pending(self) -> int:
        """How many scripted replies are left."""
        with self._state.lock:
            return len(self._state.queue)

    # ---- what happened ----

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in order (a copy)."""
        with self._state.lock:
            return list(self._state.requests)

    @property
    def responder_failures(self) -> list[BaseException]:
        """Exceptions the responder raised (each answered with a 500), in order."""
        with self._state.lock:
            return list(self._state.failures)

    def statistics(self) -> FakeAPIStatistics:
        """Counts of requests, connections and replies since the start."""
        with self._state.lock:
            counts = self._state.counts
            return FakeAPIStatistics(
                requests=len(self._state.requests),
                connections=counts["connections"],
                open_connections=len(self._server.connections) if self._server else 0,
                answered=counts["answered"],
                abandoned=counts["abandoned"],
                pending_replies=len(self._state.queue),
            )

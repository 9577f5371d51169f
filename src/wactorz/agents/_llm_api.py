"""The LLM agent's side of the Messages API: requests, streamed replies, tools, failures.

Everything `wactorz.agents.llm_agent` needs to talk to Claude through the ``anthropic``
SDK, kept apart from the actor (sessions, queues, the store) so that each can be read on
its own:

- `build_request`: the keyword arguments of one ``messages.create`` call, with the
  prompt-caching breakpoints where Anthropic documents them;
- `ReplyReader`: one streamed reply, read from the SDK's raw events into plain content
  blocks (text deltas passed on as they come, tool input JSON accumulated and parsed when
  its block ends), and what is left of it when the stream breaks off;
- `offered_tools`: the tools of the allowed actors, named uniquely for the model;
- `tool_result_content`: a tool's answer as the JSON text the model reads, capped;
- `failure_sentence`: an SDK exception as one sentence for the user that says what to do;
- `RetryNotices`: SDK middleware that tells the turn when the SDK is about to retry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Final, final

import anthropic

from wactorz.agents.history import Message, TokenUsage
from wactorz.config.schema import LLMConfig, ModelPrice
from wactorz.core.tools import ToolOwner

__all__ = [
    "EPHEMERAL",
    "NOTIFY",
    "ReplyReader",
    "RetryNotices",
    "StreamBroken",
    "build_request",
    "failure_sentence",
    "offered_tools",
    "price_of",
    "tool_result_content",
]

EPHEMERAL: Final = {"type": "ephemeral"}
"""The ``cache_control`` of a prompt-caching breakpoint (the 5-minute cache)."""

NOTIFY: ContextVar[Callable[[str], Awaitable[None]] | None] = ContextVar(
    "wactorz_llm_notify", default=None
)
"""Where `RetryNotices` sends its notices: set by the turn around its request (the SDK
runs middleware in the task that made the request, so each turn hears of its own)."""

_TOOL_NAME: Final = re.compile(r"[^A-Za-z0-9_\-]")


# ---- requests -------------------------------------------------------------------------------


def _marked(message: Message) -> Message:
    """A copy of ``message`` whose last block carries a cache breakpoint (stored one unchanged)."""
    content = message["content"]
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    blocks[-1] = {**blocks[-1], "cache_control": EPHEMERAL}
    return {**message, "content": blocks}


def build_request(
    config: LLMConfig,
    tools: Sequence[Mapping[str, Any]],
    history: Sequence[Message],
    turn: Sequence[Message],
) -> dict[str, Any]:
    """The keyword arguments of ``client.messages.create(**request, stream=True)``.

    ``history`` is the earlier turns' messages to send (already fitted to the context
    budget), ``turn`` this turn's messages so far (its user message first). Prompt caching,
    as Anthropic documents it, with at most four breakpoints: the system prompt, the last
    tool, the last block of the earlier turns (the stable prefix a new turn reuses), and in
    a tool round the last block of this turn so far (so that the next round reuses it). The
    stored messages are never changed: marked ones are copies. ``temperature`` goes in the
    body (the SDK has no keyword for it).
    """
    messages = list(history) + list(turn)
    if history:
        messages[len(history) - 1] = _marked(history[-1])
    if len(turn) > 1:
        messages[-1] = _marked(turn[-1])
    request: dict[str, Any] = {
        "model": config.model,
        "max_tokens": config.max_tokens,
        "system": [{"type": "text", "text": config.system_prompt, "cache_control": EPHEMERAL}],
        "messages": messages,
        "extra_body": {"temperature": config.temperature},
    }
    if tools:
        offered = [dict(tool) for tool in tools]
        offered[-1]["cache_control"] = EPHEMERAL
        request["tools"] = offered
    return request


# ---- tools ----------------------------------------------------------------------------------


def _model_name(text: str) -> str:
    """``text`` as a tool name the API takes: letters, digits, ``_`` and ``-``, at most 64."""
    return _TOOL_NAME.sub("_", text)[:64]


def offered_tools(
    owners: Iterable[ToolOwner], allowed: Sequence[str], own_id: str
) -> tuple[list[dict[str, Any]], dict[str, ToolOwner]]:
    """The tools the model is offered, in the API's shape, and their owners by model name.

    Only the tools of actors named in ``allowed``, never those of the agent itself
    (``own_id``). A tool is named as its actor names it when that name is unique among
    them, else ``actor__tool``. Sorted by name, so that the request's prefix (and the
    prompt cache) stays the same from one request to the next.
    """
    chosen = [owner for owner in owners if owner.actor in allowed and owner.actor_id != own_id]
    counts: dict[str, int] = {}
    for owner in chosen:
        counts[owner.tool.name] = counts.get(owner.tool.name, 0) + 1
    by_name: dict[str, ToolOwner] = {}
    for owner in chosen:
        name = owner.tool.name
        if counts[name] > 1:
            name = _model_name(f"{owner.actor}__{owner.tool.name}")
        by_name.setdefault(name, owner)
    tools = [
        {
            "name": name,
            "description": owner.tool.description,
            "input_schema": dict(owner.tool.input_schema),
        }
        for name, owner in sorted(by_name.items())
    ]
    return tools, dict(sorted(by_name.items()))


def tool_result_content(answer: object, limit_bytes: int) -> str:
    """A tool's answer as the JSON text the model reads, cut to ``limit_bytes`` (saying so)."""
    text = answer if isinstance(answer, str) else json.dumps(answer, ensure_ascii=False)
    encoded = text.encode()
    if len(encoded) <= limit_bytes:
        return text
    kept = encoded[:limit_bytes].decode(errors="ignore")
    return (
        f"{kept}\n[cut: the result was {len(encoded):,} bytes; only the first "
        f"{limit_bytes:,} are shown (llm.max_tool_result_bytes)]"
    )


# ---- prices ---------------------------------------------------------------------------------


def price_of(model: str, prices: Mapping[str, ModelPrice]) -> ModelPrice | None:
    """The price of ``model``: its own, else that of its longest listed prefix, else None.

    A dated id (``claude-sonnet-4-5-20250929``) takes its family's price.
    """
    found = prices.get(model)
    if found is not None:
        return found
    prefixes = [name for name in prices if model.startswith(name)]
    return prices[max(prefixes, key=len)] if prefixes else None


# ---- reading a streamed reply ---------------------------------------------------------------


class StreamBroken(Exception):
    """The reply's event stream ended before its ``message_stop`` (the connection broke off)."""


@final
class ReplyReader:
    """One streamed reply, read from the SDK's raw events (``create(stream=True)``).

    `feed` takes each event and returns the text of a ``text_delta`` (for the stream to the
    user), else None. Text is kept as its pieces and joined once; a ``tool_use`` block's
    input arrives as pieces of JSON (``input_json_delta``), joined and parsed when the
    block stops. When the stream breaks off, `partial` is what the user was shown: the
    blocks that had started, minus a ``tool_use`` whose input never completed (the model
    had not finished calling it, so nothing must answer it).
    """

    __slots__ = ("_blocks", "_json", "_open", "_text", "done", "model", "stop_reason", "usage")

    def __init__(self) -> None:
        self._blocks: dict[int, dict[str, Any]] = {}
        self._text: dict[int, list[str]] = {}
        self._json: dict[int, list[str]] = {}
        self._open: set[int] = set()
        self.done = False
        """True once ``message_stop`` came: the reply is whole."""
        self.stop_reason: str | None = None
        self.model: str | None = None
        self.usage = TokenUsage()

    def feed(self, event: Any) -> str | None:
        """Take one raw stream event; return the text it adds to a text block, if any."""
        kind = event.type
        if kind == "content_block_delta":
            delta = event.delta
            index = event.index
            if delta.type == "text_delta":
                self._text[index].append(delta.text)
                return delta.text  # type: ignore[no-any-return]
            if delta.type == "input_json_delta":
                self._json[index].append(delta.partial_json)
            elif delta.type == "thinking_delta":
                self._blocks[index]["thinking"] = (
                    self._blocks[index].get("thinking", "") + delta.thinking
                )
            elif delta.type == "signature_delta":
                self._blocks[index]["signature"] = delta.signature
            elif delta.type == "citations_delta":
                citations = self._blocks[index].setdefault("citations", [])
                citations.append(delta.citation.to_dict())
            return None
        if kind == "content_block_start":
            self._start(event.index, event.content_block)
        elif kind == "content_block_stop":
            self._stop(event.index)
        elif kind == "message_start":
            message = event.message
            self.model = message.model
            self.usage = _usage(message.usage, self.usage)
        elif kind == "message_delta":
            self.stop_reason = event.delta.stop_reason
            self.usage = _usage(event.usage, self.usage)
        elif kind == "message_stop":
            self.done = True
        return None

    def _start(self, index: int, block: Any) -> None:
        self._open.add(index)
        if block.type == "text":
            self._blocks[index] = {"type": "text", "text": ""}
            self._text[index] = [block.text] if block.text else []
        elif block.type == "tool_use":
            self._blocks[index] = {
                "type": "tool_use",
                "id": block.id,
                "name": block.name,
                "input": {},
            }
            self._json[index] = []
        else:
            self._blocks[index] = block.to_dict()

    def _stop(self, index: int) -> None:
        self._open.discard(index)
        block = self._blocks.get(index)
        if block is None:
            return
        if block["type"] == "text":
            block["text"] = "".join(self._text.pop(index, ()))
        elif block["type"] == "tool_use":
            pieces = self._json.pop(index, [])
            block["input"] = _parse_input("".join(pieces))

    def content(self) -> list[dict[str, Any]]:
        """The blocks of the reply, in order, without empty text blocks or broken tool calls."""
        blocks = []
        for index in sorted(self._blocks):
            block = self._blocks[index]
            if index in self._open:
                if block["type"] == "text":
                    block = {**block, "text": "".join(self._text.get(index, ()))}
                elif block["type"] == "tool_use":
                    continue  # its input never completed
            if block["type"] == "text" and not block["text"].strip():
                continue
            if block["type"] == "tool_use" and block["input"] is None:
                continue  # its input JSON was cut (max_tokens): it was never really called
            blocks.append(block)
        return blocks

    def message(self) -> Message | None:
        """The reply as an assistant message, or None if it holds nothing."""
        blocks = self.content()
        return {"role": "assistant", "content": blocks} if blocks else None

    def partial(self, note: str) -> Message | None:
        """What the user was shown of a reply that broke off, with ``note`` saying so; or None."""
        blocks = self.content()
        if not blocks:
            return None
        return {"role": "assistant", "content": [*blocks, {"type": "text", "text": note}]}

    def text(self) -> str:
        """The reply's text, its text blocks joined."""
        return "".join(block["text"] for block in self.content() if block["type"] == "text")


def _parse_input(text: str) -> dict[str, Any] | None:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _usage(usage: Any, before: TokenUsage) -> TokenUsage:
    """``before`` updated with what a ``message_start`` or ``message_delta`` usage reports."""

    def count(name: str, previous: int) -> int:
        value = getattr(usage, name, None)
        return int(value) if isinstance(value, int) else previous

    return TokenUsage(
        input_tokens=count("input_tokens", before.input_tokens),
        output_tokens=count("output_tokens", before.output_tokens),
        cache_read_tokens=count("cache_read_input_tokens", before.cache_read_tokens),
        cache_write_tokens=count("cache_creation_input_tokens", before.cache_write_tokens),
    )


# ---- failures -------------------------------------------------------------------------------

_KEY_HELP: Final = (
    "set ANTHROPIC_API_KEY (or WACTORZ_LLM__API_KEY) in the service's environment and restart it"
)

NO_KEY_SENTENCE: Final = f"The LLM agent has no API key, so it cannot answer: {_KEY_HELP}."
"""What every turn answers while no key is configured."""


def _api_message(error: anthropic.APIStatusError) -> str:
    """The API's own ``error.message``, when its body has one."""
    body = error.body
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])[:300]
    return ""


def _api_error_type(error: anthropic.APIStatusError) -> str:
    body = error.body
    if isinstance(body, Mapping):
        inner = body.get("error")
        if isinstance(inner, Mapping) and isinstance(inner.get("type"), str):
            return str(inner["type"])
    return ""


def failure_sentence(error: BaseException, config: LLMConfig) -> str:
    """``error`` (from the SDK, or `StreamBroken`) as one sentence saying what to do next.

    Never includes the API key (the SDK's messages are the API's, which never echo it, but
    a key is scrubbed from them all the same).
    """
    retries = config.max_retries
    tried = f" (after {retries} retr{'y' if retries == 1 else 'ies'})" if retries else ""
    said = ""
    if isinstance(error, anthropic.APIStatusError):
        said = _api_message(error)
        said = f": {said}" if said else ""
    sentence: str
    if isinstance(error, anthropic.AuthenticationError):
        sentence = f"The API refused the key (401 authentication error{said}); {_KEY_HELP}."
    elif isinstance(error, anthropic.PermissionDeniedError):
        sentence = (
            f"The API key may not do this (403 permission error{said}); check that the key's "
            f"workspace may use the model {config.model!r}."
        )
    elif isinstance(error, anthropic.NotFoundError):
        sentence = (
            f"The API does not know this (404{said}); check the model id llm.model "
            f"({config.model!r}) and llm.base_url."
        )
    elif isinstance(error, anthropic.RateLimitError):
        sentence = (
            f"The API is rate-limiting requests (429{said}){tried}; wait a minute and send "
            "your message again, or raise llm.max_retries."
        )
    elif isinstance(error, anthropic.OverloadedError) or (
        isinstance(error, anthropic.APIStatusError) and _api_error_type(error) == "overloaded_error"
    ):
        sentence = (
            f"The API is overloaded (529{said}){tried}; try again in a few minutes."
            if isinstance(error, anthropic.OverloadedError)
            else f"The API became overloaded in the middle of the reply{said}; send your "
            "message again in a few minutes."
        )
    elif isinstance(error, anthropic.InternalServerError):
        sentence = f"The API failed (HTTP {error.status_code}{said}){tried}; try again shortly."
    elif isinstance(error, anthropic.BadRequestError):
        sentence = (
            f"The API refused the request (400{said}); if the conversation is too long, "
            "clear the session or lower llm.context_budget_tokens."
        )
    elif isinstance(error, anthropic.APIStatusError):
        if error.status_code == 200:  # an `error` event in the middle of the stream
            kind = _api_error_type(error) or "error"
            sentence = (
                f"The API reported an error in the middle of the reply ({kind}{said}); send "
                "your message again."
            )
        else:
            sentence = f"The API answered HTTP {error.status_code}{said}; send your message again."
    elif isinstance(error, anthropic.APITimeoutError):
        sentence = (
            f"The API did not answer within llm.timeout ({config.timeout:g} s){tried}; try "
            "again, or raise llm.timeout."
        )
    elif isinstance(error, anthropic.APIConnectionError):
        sentence = (
            "The connection to the API broke off before the reply was complete; send your "
            "message again (check the network or llm.base_url if it keeps happening)."
        )
    elif isinstance(error, StreamBroken):
        sentence = (
            "The API's reply ended before it was complete (the stream broke off); send your "
            "message again."
        )
    elif isinstance(error, ValueError):
        sentence = (
            "The API sent a malformed reply (its event stream could not be read); send your "
            "message again."
        )
    else:
        sentence = f"The request to the API failed ({type(error).__name__}); try again."
    key = config.api_key.reveal() if config.api_key is not None else ""
    return sentence.replace(key, "***") if key else sentence


# ---- retry notices --------------------------------------------------------------------------

_RETRIED: Final = {408: "timeout", 409: "conflict", 429: "rate limit", 529: "overloaded"}


@final
class RetryNotices(anthropic.Middleware):
    """Middleware that tells the turn (through `NOTIFY`) when the SDK is about to retry.

    The SDK retries a request that failed with 408, 409, 429, 5xx or 529 (honouring
    ``retry-after`` and ``x-should-retry``) up to ``max_retries`` times, with backoff; this
    sees each attempt's response inside that loop and, for one that will be retried, sends
    ``"retrying after 429 (rate limit) in 2 s: attempt 2 of 3"``.
    """

    def __init__(self, max_retries: int) -> None:
        self.max_retries = max_retries

    async def handle_async(self, request: anthropic.APIRequest, call_next: Any) -> Any:
        response = await call_next(request)
        notify = NOTIFY.get()
        status = response.status_code
        if (
            notify is not None
            and (status in _RETRIED or status >= 500)
            and request.retries_taken < self.max_retries
            and response.headers.get("x-should-retry") != "false"
        ):
            reason = _RETRIED.get(status, "server error")
            after = response.headers.get("retry-after")
            when = f" in {after} s" if after else ""
            await notify(
                f"retrying after {status} ({reason}){when}: attempt "
                f"{request.retries_taken + 2} of {self.max_retries + 1}"
            )
        return response

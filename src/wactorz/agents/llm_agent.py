"""The LLM agent: conversations with Claude, streamed, with tools of other actors, kept in SQLite.

`LLMAgent` (named ``llm`` in the service) holds any number of *sessions* (an id the
caller chooses: the router, a test, a program), each its own conversation, stored a whole
turn at a time in a `wactorz.agents.history.HistoryStore` so that it survives a restart of
the agent and of the process. It talks to the Messages API through the official
``anthropic`` SDK, directly on Trio.

The contract (every key below is what other actors rely on; `docs/llm.md` says the same
with examples):

A *turn* is an ask (or a tell) of::

    {"chat": {"session": S, "text": T},            # or "content": [blocks] instead of "text"
     "stream_to": "actor name or id" | {"topic": "some/topic"},   # optional
     "stream_id": "any string"}                    # optional, defaults to a fresh id

answered, once the turn is over, with::

    {"session": S, "text": "the final assistant text", "stop_reason": "end_turn",
     "usage": {"input_tokens": ..., "output_tokens": ..., "cache_read_tokens": ...,
               "cache_write_tokens": ...},
     "cost_usd": 0.0123, "tool_calls": 2, "turn": 7}

``turn`` is the stored turn's number in its session (None when nothing was stored).
A turn that failed has the same keys plus ``"error"``: one sentence for the user saying
what went wrong and what to do (``text`` is then what was said before it failed, often
""). A reply cut by ``max_tokens`` is stored and answered normally, with a ``"notice"``
saying it was cut. Failures are never raised at the asker: only a malformed request is
(`MessageRejected`, saying what to send).

While the turn runs, when ``stream_to`` is given, its parts go there in order
(`wactorz.agents.streams`: ``{"stream": stream_id, "seq": n, "parts": [...]}``, ending
with ``"end": true`` and ``"result"``: the answer above, error included), each part one of::

    {"kind": "text", "text": delta}
    {"kind": "tool_start", "id": tool_use_id, "name": tool_name, "actor": owner_name}
    {"kind": "tool_end", "id": tool_use_id, "name": tool_name, "is_error": false}
    {"kind": "notice", "text": "retrying after 429 (rate limit) in 2 s: attempt 2 of 3"}

Other requests, each also a tool of the agent (for other actors and MQTT manifests; never
offered to its own model):

- ``{"cancel": STREAM_ID_OR_SESSION}`` (tool ``cancel_turn``): cancels that turn (by
  its stream id), or every running and queued turn of that session, at once; each is
  answered with an ``error`` saying it was cancelled, and the session stays usable.
  Answers ``{"cancelled": n}``.
- ``{"sessions": true}`` (tool ``list_sessions``): ``{"sessions": [{"session", "turns",
  "created_at", "updated_at", "usage", "cost_usd", "running", "queued"}, ...]}``, most
  recently updated first, plus ``"totals"``: the agent's turns, usage and cost ever, and
  ``"text"``: the same for people, a line per session.
- ``{"clear": S}`` (tool ``clear_session``): cancels the session's turns and forgets its
  history; answers ``{"cleared": S, "turns": n, "text": "Forgot session ..."}``. Its cost
  stays in the totals.
- ``{"export": S, "format": "json" | "markdown"}`` (tool ``export_session``): the
  session as `HistoryStore.export_json`'s dict, or ``{"session", "format": "markdown",
  "text": the Markdown}``.
- ``{"history": S}`` (tool ``session_history``): ``{"session", "turns", "messages"}``, the
  stored messages in the API's shape.

How it behaves:

- Sessions are created on first use; turns of one session run one at a time in arrival
  order, turns of different sessions concurrently. A turn runs in the agent's background
  (`Actor.reply_later`), so the mailbox keeps flowing while models think.
- Tools: the model is offered the tools (`wactorz.tool`) of the actors named in
  ``llm.tools`` (default ``io`` and ``code``) that are running, named as their actor names
  them, or ``actor__tool`` where two share a name. Each ``tool_use`` is an ask of its
  owner (``tool_call``), those of one reply concurrently, each bounded by
  ``llm.tool_timeout_s``; a refusal, a crash or a timeout goes back to the model as an
  ``is_error`` result, never failing the turn. Results are JSON text, cut to
  ``llm.max_tool_result_bytes``. After ``llm.max_tool_iterations`` rounds of tool calls
  the turn ends with a sentence saying so.
- History: a turn is stored whole, in one transaction, when it ends. One that fails,
  is cancelled or is interrupted by a crash is first made consistent (`close_turn`:
  unanswered tool calls get error results, a reply cut short says so) or, if nothing
  happened beyond the user's message, not stored at all (and the user is told to send it
  again). So the stored history always satisfies what the API demands and is sent as it is.
- Context: when a session's history would pass ``llm.context_budget_tokens`` (estimated
  high, with `estimate_tokens`), only its newest whole turns that fit are sent. Older
  turns are *dropped* from the request, not summarized; the store keeps them all.
- Prompt caching: breakpoints on the system prompt, the last tool, the end of the
  earlier turns and, in a tool round, the end of the turn so far.
- Cost: each turn's usage is priced from ``llm.prices`` (an unknown model costs 0, with
  one warning); totals per session and per agent come from the store, so they survive
  restarts. `LLMAgent.telemetry` puts the agent's totals in its heartbeats
  (``details``): ``{"llm": {"model", "turns", "input_tokens", "output_tokens",
  "cache_read_tokens", "cache_write_tokens", "cost_usd", "sessions_active"}}``.
- No API key: the agent starts anyway, and every turn answers how to set one.
- A crash of the agent mid-turn (its supervisor restarts it): the turn in progress is
  stored consistent or not at all, its asker and those of the turns waiting behind it
  in memory get `ActorCrashed` at once, and messages still in the mailbox are handled by
  the next incarnation, which reloads the history from the store.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
from collections import OrderedDict, deque
from collections.abc import Mapping
from typing import Any, Final, final

import anthropic
import attrs
import trio

from wactorz.agents._llm_api import (
    NO_KEY_SENTENCE,
    NOTIFY,
    ReplyReader,
    RetryNotices,
    StreamBroken,
    build_request,
    failure_sentence,
    offered_tools,
    price_of,
    tool_result_content,
)
from wactorz.agents.history import (
    HistoryError,
    HistoryFileError,
    HistoryStore,
    Message,
    TokenUsage,
    check_history,
    check_name,
    close_turn,
    drop_oldest_turns,
    estimate_tokens,
)
from wactorz.agents.streams import Stream, StreamTarget, open_stream, stream_target
from wactorz.config import LLMConfig, get_settings
from wactorz.core.actor import Actor, DeferredReply
from wactorz.core.errors import AskTimeout, MessageRejected, WactorzError
from wactorz.core.registry import ActorSystem
from wactorz.core.tools import ToolOwner, tool, tool_call

__all__ = ["LLM_NAME", "LLMAgent"]

logger = logging.getLogger("wactorz.llm")

LLM_NAME: Final = "llm"
"""The name the service runs the LLM agent under."""

MAX_IDLE_SESSIONS: Final = 256
"""Idle sessions whose history the agent keeps in memory; older ones are read again."""

STORE_WAIT_S: Final = 10.0
"""How long a cancelled or interrupted turn may take to store what it has (shielded)."""

_warned_models: set[str] = set()
"""Models without a price, warned about once per process."""


class _TurnFailed(Exception):
    """A turn cannot go on; ``sentence`` is what the user is told."""

    def __init__(self, sentence: str) -> None:
        super().__init__(sentence)
        self.sentence = sentence


@final
@attrs.define(eq=False)
class _Turn:
    """A turn, queued or running."""

    session: str
    content: str | list[dict[str, Any]]
    target: StreamTarget | None
    stream_id: str
    reply: DeferredReply
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    cancelled: str | None = None
    """Why it was cancelled (``"cancelled"``, ``"abandoned"``...), or None."""


@final
@attrs.define(eq=False)
class _Session:
    """What the agent holds for one session while it runs: its queue and its history."""

    name: str
    queue: deque[_Turn] = attrs.field(factory=deque)
    running: _Turn | None = None
    working: bool = False
    turns: list[tuple[list[Message], int]] | None = None
    """The stored turns with their token estimates, oldest first (None until loaded)."""
    generation: int = 0
    """Bumped by a clear: a turn that started before it stores nothing."""


@final
@attrs.define
class _Outcome:
    """What a turn has produced so far."""

    messages: list[Message]
    usage: TokenUsage = attrs.field(factory=TokenUsage)
    stop_reason: str | None = None
    model: str = ""
    tool_calls: int = 0
    text: str = ""
    notice: str | None = None
    error: str | None = None
    cost: float = 0.0
    complete: bool = False
    """Set when the conversation ended as the model (or the tool-round cap) ended it."""
    reading: ReplyReader | None = None
    """The reply being read now, if any: what is left of it if the turn is cut."""


class LLMAgent(Actor):
    """A conversation agent on Claude: the contract is in this module's docstring.

    ``config`` defaults to the process's `LLMConfig` (`wactorz.config.get_settings`);
    ``history_path`` to ``config.history_file(data_dir)`` (``":memory:"`` keeps the
    history in memory, for tests). ``client`` replaces the SDK client the agent would make
    (it is then the caller's to close).
    """

    capabilities = ("llm", "chat")

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        config: LLMConfig | None = None,
        history_path: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(system, name=name if name is not None else LLM_NAME)
        if config is None:
            config = get_settings().llm
        if history_path is None:
            history_path = config.history_file(get_settings().data_dir)
        self.config: LLMConfig = config
        """The settings this agent talks to the API and runs turns with."""
        self.history_path: str | os.PathLike[str] = history_path
        """The SQLite file of the conversations (``":memory:"``: kept in memory)."""
        self._store: HistoryStore | None = None
        self._client: anthropic.AsyncAnthropic | None = None
        self._nursery: trio.Nursery | None = None
        self._sessions: dict[str, _Session] = {}
        self._idle_sessions: OrderedDict[str, None] = OrderedDict()
        """Sessions with nothing to do, least recently used first: their cached history
        is forgotten past `MAX_IDLE_SESSIONS` (reloaded from the store when needed)."""
        self._totals = TokenUsage()
        self._turns_total = 0
        self._cost_total = 0.0

    # ---- lifecycle -----------------------------------------------------------------------

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        """Open the store and the SDK client, run turns until the incarnation ends, close both.

        Turns run in this task's nursery: when the incarnation ends they are cancelled,
        each stores what it has (shielded), and then the client and the store close.
        """
        async with HistoryStore.open(self.history_path) as store:
            totals = await store.totals(self.name)
            self._totals, self._turns_total, self._cost_total = (
                totals.usage,
                totals.turns,
                totals.cost_usd,
            )
            self._store = store
            client = self._make_client()
            self._client = client
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                self._nursery = None
                self._client = None
                self._store = None
                if client is not None:
                    with trio.CancelScope(shield=True):
                        await client.close()

    def _make_client(self) -> anthropic.AsyncAnthropic | None:
        config = self.config
        if config.api_key is None:
            logger.warning("%s: %s", self.name, NO_KEY_SENTENCE)
            return None
        return anthropic.AsyncAnthropic(
            api_key=config.api_key.reveal(),
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=config.max_retries,
            middleware=[RetryNotices(config.max_retries)],
        )

    def telemetry(self) -> Mapping[str, Any]:
        """The agent's totals for its heartbeats: see the module docstring."""
        usage = self._totals
        active = sum(1 for session in self._sessions.values() if session.running or session.queue)
        return {
            "llm": {
                "model": self.config.model,
                "turns": self._turns_total,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "cache_read_tokens": usage.cache_read_tokens,
                "cache_write_tokens": usage.cache_write_tokens,
                "cost_usd": self._cost_total,
                "sessions_active": active,
            }
        }

    # ---- requests ------------------------------------------------------------------------

    async def _process(self, message: dict[str, Any]) -> object:
        if "chat" in message:
            self._accept_turn(message)
            return None
        if "cancel" in message:
            return {"cancelled": self._cancel(_text_of(message, "cancel"))}
        if "sessions" in message:
            return await self._list_sessions()
        if "clear" in message:
            return await self._clear(_session_of(message, "clear"))
        if "export" in message:
            return await self._export(_session_of(message, "export"), message.get("format"))
        if "history" in message:
            return await self._history(_session_of(message, "history"))
        raise MessageRejected(
            "unknown request: send {'chat': {'session': ..., 'text': ...}}, "
            "{'cancel': stream_id_or_session}, {'sessions': true}, {'clear': session}, "
            "{'export': session, 'format': 'json'|'markdown'} or {'history': session}"
        )

    @tool(
        "Cancel a running or queued turn of the LLM agent, by its stream id or its session.",
        input_schema={
            "type": "object",
            "properties": {"target": {"type": "string", "minLength": 1}},
            "required": ["target"],
        },
    )
    async def cancel_turn(self, target: str) -> dict[str, Any]:
        return {"cancelled": self._cancel(target)}

    @tool("List the LLM agent's conversations with their turns, tokens and cost.")
    async def list_sessions(self) -> dict[str, Any]:
        return await self._list_sessions()

    @tool(
        "Forget one conversation of the LLM agent (its cost stays counted).",
        input_schema={
            "type": "object",
            "properties": {"session": {"type": "string", "minLength": 1, "maxLength": 200}},
            "required": ["session"],
        },
    )
    async def clear_session(self, session: str) -> dict[str, Any]:
        return await self._clear(_checked_session(session))

    @tool(
        "Export one conversation of the LLM agent as JSON or Markdown.",
        input_schema={
            "type": "object",
            "properties": {
                "session": {"type": "string", "minLength": 1, "maxLength": 200},
                "format": {"enum": ["json", "markdown"]},
            },
            "required": ["session"],
        },
    )
    async def export_session(self, session: str, format: str = "json") -> dict[str, Any]:
        return await self._export(_checked_session(session), format)

    @tool(
        "The stored messages of one conversation of the LLM agent.",
        input_schema={
            "type": "object",
            "properties": {"session": {"type": "string", "minLength": 1, "maxLength": 200}},
            "required": ["session"],
        },
    )
    async def session_history(self, session: str) -> dict[str, Any]:
        return await self._history(_checked_session(session))

    def _accept_turn(self, message: dict[str, Any]) -> None:
        chat = message["chat"]
        if not isinstance(chat, dict):
            raise MessageRejected(
                "'chat' is {'session': id, 'text': what the user says} "
                "(or 'content': [blocks] instead of 'text')"
            )
        session = _checked_session(chat.get("session"))
        content = _user_content(chat)
        target = stream_target(message.get("stream_to"))
        stream_id = message.get("stream_id")
        if stream_id is None:
            stream_id = f"{session}:{secrets.token_hex(6)}"
        elif not isinstance(stream_id, str) or not stream_id:
            raise MessageRejected(f"stream_id is a non-empty string, not {stream_id!r}")
        nursery = self._nursery
        if nursery is None:  # the background is not running: the incarnation is ending
            raise MessageRejected(f"{self.name} is stopping; send the turn again once it runs")
        turn = _Turn(session, content, target, stream_id, self.reply_later())
        state = self._sessions.get(session)
        if state is None:
            state = self._sessions[session] = _Session(session)
        self._idle_sessions.pop(session, None)
        state.queue.append(turn)
        if not state.working:
            state.working = True
            nursery.start_soon(self._work, state)

    def _cancel(self, target: str) -> int:
        """Cancel the turn whose stream id is ``target``, or every turn of that session."""
        count = 0
        for state in self._sessions.values():
            whole = state.name == target
            for turn in list(state.queue):
                if whole or turn.stream_id == target:
                    state.queue.remove(turn)
                    self._answer_unrun(turn, "cancelled")
                    count += 1
            running = state.running
            if running is not None and (whole or running.stream_id == target):
                if running.cancelled is None:
                    running.cancelled = "cancelled"
                    running.scope.cancel()
                    count += 1
        return count

    def _answer_unrun(self, turn: _Turn, reason: str) -> None:
        """Answer a turn that never ran (cancelled while queued), and end its stream."""
        result = _result(
            turn.session,
            _Outcome([]),
            None,
            error=f"The turn was {reason} before it started; nothing was stored.",
        )
        if turn.reply.pending:
            turn.reply.answer(result)
        nursery = self._nursery
        if turn.target is not None and nursery is not None:
            nursery.start_soon(self._end_stream, turn, result)

    async def _end_stream(self, turn: _Turn, result: dict[str, Any]) -> None:
        async with open_stream(self, turn.target, turn.stream_id) as stream:
            assert stream is not None
            stream.result = result

    async def _list_sessions(self) -> dict[str, Any]:
        store = self._require_store()
        listed = []
        stored = await store.sessions(self.name)
        known = {summary.session for summary in stored}
        for summary in stored:
            state = self._sessions.get(summary.session)
            listed.append(
                {
                    "session": summary.session,
                    "turns": summary.turns,
                    "created_at": summary.created_at,
                    "updated_at": summary.updated_at,
                    "usage": summary.usage.as_dict(),
                    "cost_usd": summary.cost_usd,
                    "running": bool(state and state.running),
                    "queued": len(state.queue) if state else 0,
                }
            )
        for state in self._sessions.values():
            if state.name not in known and (state.running or state.queue):
                listed.append(
                    {
                        "session": state.name,
                        "turns": 0,
                        "created_at": None,
                        "updated_at": None,
                        "usage": TokenUsage().as_dict(),
                        "cost_usd": 0.0,
                        "running": state.running is not None,
                        "queued": len(state.queue),
                    }
                )
        totals = await store.totals(self.name)
        lines = [
            f"{entry['session']}: {entry['turns']} turns, ${entry['cost_usd']:.4f}"
            + (" (running)" if entry["running"] else "")
            for entry in listed
        ]
        lines.append(
            f"{len(listed)} session{'' if len(listed) == 1 else 's'}; "
            f"{totals.turns} turns ever, ${totals.cost_usd:.4f} in all"
        )
        return {
            "text": "\n".join(lines),
            "sessions": listed,
            "totals": {
                "turns": totals.turns,
                "usage": totals.usage.as_dict(),
                "cost_usd": totals.cost_usd,
            },
        }

    async def _clear(self, session: str) -> dict[str, Any]:
        store = self._require_store()
        self._cancel(session)
        state = self._sessions.get(session)
        if state is not None:
            state.generation += 1
            state.turns = None
        turns = await store.clear(self.name, session)
        said = f"Forgot session {session!r} ({turns} turn{'' if turns == 1 else 's'})."
        return {"cleared": session, "turns": turns, "text": said}

    async def _export(self, session: str, format: object) -> dict[str, Any]:
        store = self._require_store()
        try:
            if format in (None, "json"):
                return await store.export_json(self.name, session)
            if format == "markdown":
                text = await store.export_markdown(self.name, session)
                return {"session": session, "format": "markdown", "text": text}
        except HistoryFileError:
            raise
        except HistoryError as refusal:
            raise MessageRejected(str(refusal)) from None
        raise MessageRejected(f"format is 'json' or 'markdown', not {format!r}")

    async def _history(self, session: str) -> dict[str, Any]:
        store = self._require_store()
        turns = await store.turns(self.name, session)
        return {
            "session": session,
            "turns": len(turns),
            "messages": [message for turn in turns for message in turn.messages],
        }

    def _require_store(self) -> HistoryStore:
        store = self._store
        if store is None:
            raise MessageRejected(f"{self.name} is stopping; ask again once it runs")
        return store

    # ---- running turns -------------------------------------------------------------------

    async def _work(self, state: _Session) -> None:
        """Run a session's turns one at a time, in arrival order, until its queue is empty."""
        try:
            while state.queue:
                turn = state.queue.popleft()
                state.running = turn
                try:
                    await self._run_turn(state, turn)
                finally:
                    state.running = None
        finally:
            state.working = False
            self._idle_sessions[state.name] = None
            self._idle_sessions.move_to_end(state.name)
            while len(self._idle_sessions) > MAX_IDLE_SESSIONS:
                name, _ = self._idle_sessions.popitem(last=False)
                idle = self._sessions.get(name)
                if idle is not None and not idle.working:
                    del self._sessions[name]

    async def _run_turn(self, state: _Session, turn: _Turn) -> None:
        """Run one turn to its end, store it, answer it; cancellation is prompt."""
        outcome = _Outcome([{"role": "user", "content": turn.content}])
        generation = state.generation
        result: dict[str, Any] | None = None
        async with open_stream(self, turn.target, turn.stream_id) as stream:
            try:
                with turn.scope:
                    async with trio.open_nursery() as watch:
                        watch.start_soon(self._cancel_when_asker_gone, turn)
                        try:
                            await self._converse(state, turn, outcome, stream)
                        except _TurnFailed as failure:
                            outcome.error = failure.sentence
                        finally:
                            watch.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True) as storing:
                    storing.deadline = trio.current_time() + STORE_WAIT_S
                    number = await self._store_turn(state, turn, outcome, generation)
                result = _result(turn.session, outcome, number, outcome.error)
                if stream is not None:
                    stream.result = result
        if turn.reply.pending:
            turn.reply.answer(result)

    async def _cancel_when_asker_gone(self, turn: _Turn) -> None:
        await turn.reply.wait_asker_gone()
        if turn.cancelled is None:
            turn.cancelled = "abandoned (its asker stopped waiting)"
        turn.scope.cancel()

    async def _converse(
        self, state: _Session, turn: _Turn, outcome: _Outcome, stream: Stream | None
    ) -> None:
        """The model's replies and the tool calls they ask for, until the turn ends."""
        client = self._client
        if client is None:
            raise _TurnFailed(NO_KEY_SENTENCE)
        config = self.config
        history = await self._load_history(state)
        for round_number in range(config.max_tool_iterations + 1):
            tools, owners = offered_tools(self.system.tools(), config.tools, self.id)
            request = build_request(
                config, tools, self._context(history, tools, outcome.messages), outcome.messages
            )
            reader = await self._read_reply(client, request, outcome, stream)
            stop = reader.stop_reason
            if stop == "refusal":
                raise _TurnFailed(
                    "Claude declined to answer this (stop reason 'refusal'); the exchange was "
                    "not kept. Rephrase the request, or start a new session."
                )
            reply = reader.message() or {
                "role": "assistant",
                "content": [{"type": "text", "text": "(no reply)"}],
            }
            outcome.messages.append(reply)
            outcome.text = reader.text()
            if stop == "max_tokens":
                outcome.notice = (
                    f"The reply was cut: it reached llm.max_tokens ({config.max_tokens} "
                    "tokens). Ask to continue, or raise llm.max_tokens."
                )
            uses = [block for block in reply["content"] if block["type"] == "tool_use"]
            if stop != "tool_use" or not uses:
                outcome.complete = True
                return
            if round_number == config.max_tool_iterations:
                note = (
                    f"[stopped: this turn reached its limit of {config.max_tool_iterations} "
                    "rounds of tool calls (llm.max_tool_iterations); ask to continue]"
                )
                outcome.messages.append(
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "tool_result",
                                "tool_use_id": use["id"],
                                "content": "[not run: the turn's limit of tool rounds was reached]",
                                "is_error": True,
                            }
                            for use in uses
                        ],
                    }
                )
                outcome.messages.append(
                    {"role": "assistant", "content": [{"type": "text", "text": note}]}
                )
                outcome.text = note
                outcome.complete = True
                return
            results = await self._call_tools(uses, owners, stream)
            outcome.tool_calls += len(uses)
            outcome.messages.append({"role": "user", "content": results})
        raise AssertionError("the tool loop ends by returning")  # pragma: no cover

    async def _read_reply(
        self,
        client: anthropic.AsyncAnthropic,
        request: dict[str, Any],
        outcome: _Outcome,
        stream: Stream | None,
    ) -> ReplyReader:
        """Stream one reply, passing its text on; raise `_TurnFailed` if it fails."""
        reader = ReplyReader()
        outcome.reading = reader
        notify = None
        if stream is not None:

            async def notify(text: str) -> None:
                await stream.event("notice", text=text)

        token = NOTIFY.set(notify)
        try:
            await _pump(client, request, reader, stream)
        except (anthropic.AnthropicError, ValueError) as error:
            raise _TurnFailed(failure_sentence(error, self.config)) from error
        finally:
            NOTIFY.reset(token)
        if not reader.done:
            raise _TurnFailed(failure_sentence(StreamBroken(), self.config))
        outcome.reading = None
        outcome.usage += reader.usage
        outcome.stop_reason = reader.stop_reason
        outcome.model = reader.model or self.config.model
        return reader

    def _context(
        self,
        history: list[tuple[list[Message], int]],
        tools: list[dict[str, Any]],
        turn: list[Message],
    ) -> list[Message]:
        """The earlier turns to send: the newest whole ones that fit the context budget."""
        fixed = estimate_tokens(self.config.system_prompt) + estimate_tokens(turn)
        if tools:
            fixed += estimate_tokens(tools)
        budget = self.config.context_budget_tokens - fixed
        if sum(estimate for _, estimate in history) <= budget:
            kept = history
        else:
            kept = drop_oldest_turns(history, budget, _estimate_of)
        return [message for messages, _ in kept for message in messages]

    async def _load_history(self, state: _Session) -> list[tuple[list[Message], int]]:
        if state.turns is None:
            records = await self._require_store().turns(self.name, state.name)
            state.turns = [
                (list(record.messages), estimate_tokens(list(record.messages)))
                for record in records
            ]
        return state.turns

    async def _call_tools(
        self, uses: list[dict[str, Any]], owners: dict[str, ToolOwner], stream: Stream | None
    ) -> list[dict[str, Any]]:
        """Call the tools of one reply concurrently; their results, in the reply's order."""
        results: list[dict[str, Any]] = [{} for _ in uses]

        async def call(index: int, use: dict[str, Any]) -> None:
            results[index] = await self._call_tool(use, owners, stream)

        async with trio.open_nursery() as nursery:
            for index, use in enumerate(uses):
                nursery.start_soon(call, index, use)
        return results

    async def _call_tool(
        self, use: dict[str, Any], owners: dict[str, ToolOwner], stream: Stream | None
    ) -> dict[str, Any]:
        name, tool_id = use["name"], use["id"]
        owner = owners.get(name)
        if stream is not None:
            await stream.event(
                "tool_start", id=tool_id, name=name, actor=owner.actor if owner else None
            )
        is_error = True
        if owner is None:
            content = (
                f"no tool named {name!r} is available now (tools: {', '.join(owners) or 'none'})"
            )
        else:
            timeout = self.config.tool_timeout_s
            try:
                answer = await self.ask(
                    owner.actor_id, tool_call(owner.tool.name, use["input"]), timeout=timeout
                )
            except AskTimeout:
                content = f"the tool {name!r} did not answer within {timeout:g} s"
            except MessageRejected as refusal:
                content = f"the tool {name!r} refused the call: {refusal.reason}"
            except WactorzError as failure:
                content = f"the tool {name!r} failed: {failure}"
            else:
                content = tool_result_content(answer, self.config.max_tool_result_bytes)
                is_error = False
        if stream is not None:
            await stream.event("tool_end", id=tool_id, name=name, is_error=is_error)
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_id, "content": content}
        if is_error:
            result["is_error"] = True
        return result

    # ---- storing -------------------------------------------------------------------------

    async def _store_turn(
        self, state: _Session, turn: _Turn, outcome: _Outcome, generation: int
    ) -> int | None:
        """Store what the turn produced, made consistent; return its number (None: nothing).

        Runs shielded, however the turn ended. A turn that was cut keeps the part of the
        reply the user saw, marked as cut; one that produced nothing is not stored, and its
        answer says so.
        """
        if not (outcome.complete or outcome.error or turn.cancelled):
            turn.cancelled = "interrupted (the agent stopped or restarted)"
        reason = turn.cancelled or ("interrupted by an error" if outcome.error else "")
        if outcome.reading is not None:  # a reply broke off: keep what was shown
            outcome.usage += outcome.reading.usage
            cut = outcome.reading.partial(
                f"[the reply was cut here: the turn was {reason or 'stopped'}]"
            )
            outcome.text = outcome.reading.text()
            outcome.reading = None
            if cut is not None:
                outcome.messages.append(cut)
        if turn.cancelled and outcome.error is None:
            outcome.error = (
                f"The turn was {turn.cancelled}; what it had done so far was kept"
                if len(outcome.messages) > 1
                else f"The turn was {turn.cancelled} before the model answered; nothing was kept"
            ) + ". The session can go on."
        try:
            messages = close_turn(outcome.messages, reason or "ended")
        except HistoryError:  # pragma: no cover - the agent built a turn close_turn refuses
            logger.exception("%s: could not close a turn of session %r", self.name, turn.session)
            return None
        if outcome.error and messages == [] and not turn.cancelled:
            outcome.error += " Nothing was stored: send your message again."
        cost = outcome.cost = self._cost(outcome)
        store = self._store
        if not messages or store is None or generation != state.generation:
            return None
        try:
            record = await store.append_turn(
                self.name,
                turn.session,
                messages,
                usage=outcome.usage,
                cost=cost,
                stop_reason=outcome.stop_reason,
                model=outcome.model or self.config.model,
            )
        except HistoryFileError:
            logger.exception("%s: the history file failed; the turn was not stored", self.name)
            outcome.error = (
                outcome.error or ""
            ) + " The conversation could not be saved (the history file failed): see the log."
            return None
        except HistoryError:
            logger.exception("%s: a turn of session %r was refused", self.name, turn.session)
            return None
        if state.turns is not None:
            state.turns.append((list(record.messages), estimate_tokens(list(record.messages))))
        self._totals += outcome.usage
        self._turns_total += 1
        self._cost_total += cost
        outcome.usage, outcome.stop_reason = record.usage, record.stop_reason
        return record.number

    def _cost(self, outcome: _Outcome) -> float:
        model = outcome.model or self.config.model
        price = price_of(model, self.config.prices)
        if price is None:
            if model not in _warned_models:
                _warned_models.add(model)
                logger.warning(
                    "%s: no price for the model %r in llm.prices: its turns are counted as "
                    "costing 0 (add it to llm.prices in wactorz.yaml)",
                    self.name,
                    model,
                )
            return 0.0
        usage = outcome.usage
        cost = price.cost(
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
        )
        return cost if math.isfinite(cost) else 0.0


async def _pump(
    client: anthropic.AsyncAnthropic,
    request: dict[str, Any],
    reader: ReplyReader,
    stream: Stream | None,
) -> None:
    """Read one streamed reply into ``reader``, writing its text deltas to ``stream``."""
    events = await client.messages.create(**request, stream=True)
    async with events:
        if stream is None:
            async for event in events:
                reader.feed(event)
        else:
            # The SDK yields at every read of the socket, which lets the stream's sender
            # run: no scheduler round per delta (it would halve the throughput).
            write_nowait = stream.write_nowait
            async for event in events:
                delta = reader.feed(event)
                if delta and not write_nowait("text", delta):
                    await stream.write("text", delta)


# ---- reading requests -----------------------------------------------------------------------


def _estimate_of(turn: tuple[list[Message], int]) -> int:
    return turn[1]


def _checked_session(value: object) -> str:
    try:
        return check_name(value)
    except HistoryError as refusal:
        raise MessageRejected(f"session: {refusal}") from None


def _session_of(message: dict[str, Any], key: str) -> str:
    return _checked_session(message[key])


def _text_of(message: dict[str, Any], key: str) -> str:
    value = message[key]
    if not isinstance(value, str) or not value:
        raise MessageRejected(f"{key!r} takes a stream id or a session id, not {value!r}")
    return value


def _user_content(chat: dict[str, Any]) -> str | list[dict[str, Any]]:
    """The user's message content from a ``chat`` request, checked as the API would."""
    if "text" in chat and "content" not in chat:
        content: object = chat["text"]
        if not isinstance(content, str) or not content.strip():
            raise MessageRejected("chat 'text' is a non-empty string")
    elif "content" in chat and "text" not in chat:
        content = chat["content"]
        if not isinstance(content, list):
            raise MessageRejected("chat 'content' is a list of content blocks")
        if any(
            isinstance(block, dict) and block.get("type") in ("tool_use", "tool_result")
            for block in content
        ):
            raise MessageRejected(
                "chat 'content' may not hold tool_use or tool_result blocks: the agent runs "
                "the tools itself"
            )
    else:
        raise MessageRejected("chat takes 'text' (a string) or 'content' (blocks), one of them")
    try:
        check_history([{"role": "user", "content": content}], complete=False)
    except HistoryError as refusal:
        raise MessageRejected(f"chat content: {refusal}") from None
    return content


def _result(
    session: str, outcome: _Outcome, number: int | None, error: str | None = None
) -> dict[str, Any]:
    result: dict[str, Any] = {
        "session": session,
        "text": outcome.text,
        "stop_reason": outcome.stop_reason,
        "usage": outcome.usage.as_dict(),
        "cost_usd": outcome.cost,
        "tool_calls": outcome.tool_calls,
        "turn": number,
    }
    if outcome.notice:
        result["notice"] = outcome.notice
    if error:
        result["error"] = error
    return result

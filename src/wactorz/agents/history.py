"""Durable conversation history: each agent's sessions, stored a whole turn at a time in SQLite.

A *session* (an id the caller chooses: the router, a test, an embedding program) of an
*agent* owns an ordered list of *turns*. A turn is the list of Messages-API messages it
added to the conversation: the user's message, the assistant's messages (content blocks as
the API returned them, as JSON), the user messages that carry ``tool_result`` blocks, and
the final assistant message; plus its metadata: when, which model, the stop reason, the
tokens it used (`TokenUsage`) and what they cost. Keep the SDK's blocks with
``block.to_dict()``: it holds exactly the fields the API sent, where ``model_dump()`` adds
None fields that the API may refuse when the history is sent back.

The invariant. The API refuses a history in which a ``tool_use`` is not answered by a
``tool_result`` in the very next message, and a session whose stored history breaks that
would fail on every later turn ("poisoned"). So `HistoryStore.append_turn` refuses (raises
`HistoryError`, writes nothing) a turn that would make the stored history break any rule
of `check_history`, and writes an accepted turn in one transaction: after a crash the
session holds the turn whole or not at all. A turn that was cancelled or crashed half-way
is first made consistent by `close_turn`, which answers each unanswered ``tool_use`` with
a synthetic error result. The history is then always ready to send as it is: what
`HistoryStore.messages` returns, plus the next user message.

Context management is `drop_oldest_turns`: whole turns only, so a ``tool_use`` is never
separated from its result, and the latest turn is always kept.

The store:

- one SQLite connection, used off the Trio event loop: every call runs in a worker thread
  (`trio.to_thread.run_sync`) under a `trio.CapacityLimiter` of one, so calls are
  serialized, the event loop never waits on the disk, and Trio tasks may call it
  concurrently (many sessions appending at once);
- WAL journal with ``synchronous=FULL``: a turn is on disk when `append_turn` returns, even
  across a power loss (with NORMAL the last turns could be lost then). A commit costs about
  0.3 ms on the project's machine, nothing next to the model call of seconds that
  produced the turn;
- a versioned schema (``PRAGMA user_version``), created on first open. A file written by a
  newer wactorz, a file that is not a history, or a corrupt one is refused with a
  `HistoryFileError` that says to move it aside;
- ``":memory:"`` as the path gives a private in-memory store, for tests.

A call, once its worker thread has started, runs to its end even if the calling task is
cancelled meanwhile (its result is then delivered and the cancellation comes at the next
checkpoint): a turn is never half-written by a cancellation. A call cancelled while it
waits for its turn at the connection does nothing.

`HistoryStore.clear` forgets a session's turns (a ``/clear``); what they cost stays counted
in `HistoryStore.totals`, which is an account of what an agent spent, not of what it keeps.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar, final

import attrs
import trio

from wactorz.core.errors import WactorzError

__all__ = [
    "MAX_SESSION_LENGTH",
    "RULES",
    "SCHEMA_VERSION",
    "AgentTotals",
    "HistoryError",
    "HistoryFileError",
    "HistoryStore",
    "SessionSummary",
    "TokenUsage",
    "TurnRecord",
    "check_history",
    "check_name",
    "close_turn",
    "drop_oldest_turns",
    "estimate_tokens",
]

SCHEMA_VERSION: Final = 1
"""The schema this module writes (``PRAGMA user_version``)."""

MAX_SESSION_LENGTH: Final = 200
"""The longest agent name or session id, in characters."""

Message = dict[str, Any]
"""A Messages-API message: ``{"role": "user" | "assistant", "content": str | [block, ...]}``."""

T = TypeVar("T")


# ---- errors ---------------------------------------------------------------------------------


class HistoryError(WactorzError):
    """A history, turn, agent name or session id that the store refuses.

    ``index`` is the position of the offending message (in the turn for `append_turn`, in
    the list for `check_history`), None when the problem is not one message's; ``rule``
    names the rule broken (one of `RULES`'s keys, or ``"name"``).
    """

    def __init__(self, message: str, *, index: int | None = None, rule: str = "") -> None:
        super().__init__(message)
        self.index = index
        self.rule = rule


class HistoryFileError(HistoryError):
    """The history file cannot be used: not a history, corrupt, too new, or locked."""


RULES: Final[Mapping[str, str]] = {
    "shape": "a message is a mapping with role 'user' or 'assistant' and content a string or "
    "a list of blocks, each a mapping with a string 'type'",
    "empty": "no message and no text block is empty or only whitespace",
    "first-user": "the first message is the user's",
    "alternate": "user and assistant messages alternate (the API would merge two in a row)",
    "tool-use-shape": "a tool_use block has a string id, a string name and an object input",
    "tool-use-role": "tool_use blocks are the assistant's, tool_result blocks the user's",
    "tool-use-unique": "no two tool_use blocks of a history share an id",
    "tool-use-answered": "every tool_use is answered by a tool_result with its id in the very "
    "next message",
    "tool-result-asked": "every tool_result answers, once, a tool_use of the message just before",
    "tool-results-first": "in a user message, tool_result blocks come before any other block",
    "ends-with-assistant": "a complete history (and a turn) ends with an assistant message",
}
"""The rules of `check_history`, by the name a `HistoryError` gives in its ``rule``."""


def _refuse(index: int | None, rule: str, problem: str) -> HistoryError:
    where = f"message {index}: " if index is not None else ""
    return HistoryError(f"{where}{problem} (rule {rule!r}: {RULES[rule]})", index=index, rule=rule)


# ---- the rules, as pure functions -----------------------------------------------------------


def _blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []


def _is_blank_text(block: Mapping[str, Any]) -> bool:
    return block.get("type") == "text" and not str(block.get("text", "")).strip()


def _tool_use_ids(message: Mapping[str, Any]) -> list[str]:
    return [block["id"] for block in _blocks(message) if block.get("type") == "tool_use"]


def _check_message_shape(index: int, message: object) -> None:
    if not isinstance(message, Mapping):
        raise _refuse(index, "shape", f"expected a mapping, got {type(message).__name__}")
    role, content = message.get("role"), message.get("content")
    if role not in ("user", "assistant"):
        raise _refuse(index, "shape", f"role is {role!r}")
    if isinstance(content, str):
        if not content.strip():
            raise _refuse(index, "empty", f"the {role}'s content is an empty string")
        return
    if not isinstance(content, list):
        raise _refuse(index, "shape", f"content is a {type(content).__name__}")
    if not content:
        raise _refuse(index, "empty", f"the {role}'s content is an empty list")
    for position, block in enumerate(content):
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            raise _refuse(index, "shape", f"block {position} has no string 'type'")
        kind = block["type"]
        if _is_blank_text(block):
            raise _refuse(index, "empty", f"text block {position} is empty")
        if kind == "tool_use":
            if role != "assistant":
                raise _refuse(
                    index, "tool-use-role", f"block {position}: a tool_use in a {role} message"
                )
            if not (
                isinstance(block.get("id"), str)
                and block["id"]
                and isinstance(block.get("name"), str)
                and isinstance(block.get("input"), Mapping)
            ):
                raise _refuse(index, "tool-use-shape", f"block {position} is a malformed tool_use")
        elif kind == "tool_result":
            if role != "user":
                raise _refuse(
                    index, "tool-use-role", f"block {position}: a tool_result in a {role} message"
                )
            if not isinstance(block.get("tool_use_id"), str):
                raise _refuse(
                    index, "shape", f"block {position}: a tool_result without tool_use_id"
                )


def _check(messages: Sequence[object], *, complete: bool) -> None:
    for index, message in enumerate(messages):
        _check_message_shape(index, message)
    checked: Sequence[Mapping[str, Any]] = messages  # type: ignore[assignment]
    seen_ids: set[str] = set()
    previous_asked: list[str] = []
    for index, message in enumerate(checked):
        role = message["role"]
        if index == 0 and role != "user":
            raise _refuse(0, "first-user", "the history starts with an assistant message")
        if index > 0 and role == checked[index - 1]["role"]:
            raise _refuse(index, "alternate", f"two {role} messages in a row")
        if role == "user":
            answered: set[str] = set()
            past_results = False
            for position, block in enumerate(_blocks(message)):
                if block["type"] != "tool_result":
                    past_results = True
                    continue
                if past_results:
                    raise _refuse(
                        index,
                        "tool-results-first",
                        f"tool_result block {position} comes after another kind of block",
                    )
                tool_id = block["tool_use_id"]
                if tool_id not in previous_asked or tool_id in answered:
                    problem = "answers it again" if tool_id in answered else "answers no tool_use"
                    raise _refuse(
                        index,
                        "tool-result-asked",
                        f"the tool_result for {tool_id!r} {problem} of the message before",
                    )
                answered.add(tool_id)
            missing = [tool_id for tool_id in previous_asked if tool_id not in answered]
            if missing:
                raise _refuse(
                    index - 1,
                    "tool-use-answered",
                    f"tool_use {', '.join(map(repr, missing))} got no tool_result in the next "
                    "message (close_turn answers the tool calls of a cut turn)",
                )
            previous_asked = []
        else:
            previous_asked = _tool_use_ids(message)
            for tool_id in previous_asked:
                if tool_id in seen_ids:
                    raise _refuse(
                        index, "tool-use-unique", f"tool_use id {tool_id!r} is used twice"
                    )
                seen_ids.add(tool_id)
    if previous_asked:
        raise _refuse(
            len(messages) - 1,
            "tool-use-answered",
            f"tool_use {', '.join(map(repr, previous_asked))} is the last message: no "
            "tool_result follows (close_turn answers the tool calls of a cut turn)",
        )
    if complete and (not checked or checked[-1]["role"] != "assistant"):
        raise _refuse(
            len(messages) - 1 if messages else None,
            "ends-with-assistant",
            "the history ends with a user message" if messages else "the history is empty",
        )


def check_history(messages: Sequence[Mapping[str, Any]], *, complete: bool = True) -> None:
    """Raise `HistoryError` naming the first message that breaks a rule of `RULES`.

    ``complete`` (the default) also requires a non-empty history that ends with an assistant
    message, as every stored history does; ``complete=False`` checks a history about to be
    sent, which ends with the new user message. Block types other than text, tool_use and
    tool_result (images, documents, thinking...) are passed over.
    """
    _check(messages, complete=complete)


def check_name(value: object, what: str = "session id") -> str:
    """Return ``value`` if it is a valid agent name or session id, else raise `HistoryError`.

    Valid: a string of 1 to `MAX_SESSION_LENGTH` printable characters (no control
    characters, no line breaks), chosen freely otherwise.
    """
    if not isinstance(value, str):
        raise HistoryError(f"a {what} is a string, not {type(value).__name__}", rule="name")
    if not 1 <= len(value) <= MAX_SESSION_LENGTH:
        raise HistoryError(
            f"a {what} has 1 to {MAX_SESSION_LENGTH} characters, this one {len(value)}",
            rule="name",
        )
    if not value.isprintable():
        raise HistoryError(
            f"the {what} {value[:40]!r} has a control character: use printable text", rule="name"
        )
    return value


def close_turn(messages: Sequence[Mapping[str, Any]], reason: str) -> list[Message]:
    """Make the messages of a turn that was cut short (cancelled, crashed) a consistent turn.

    ``messages`` is what the turn had produced: its user message, then any assistant
    messages and tool results that came before the cut (the last assistant message may be
    partial). ``reason`` is a word or two for the notes, e.g. ``"cancelled"``. Returns a
    new list that passes `check_history` as a complete turn, or ``[]`` when there is
    nothing worth keeping:

    - empty text blocks are dropped, and messages left empty with them;
    - each ``tool_use`` with no ``tool_result`` in the next message gets one, marked
      ``is_error``, whose content says the tool was not run because the turn was
      ``reason`` (added to the next user message if there is one, after its results);
    - a turn that ends with a user message (tool results the model never answered) gets a
      closing assistant note saying that the turn was ``reason``; the results are kept,
      because the tools ran (and may have acted) and the model should know it;
    - a turn that holds nothing but the user's message returns ``[]``: nothing happened, so
      nothing is stored, and the user's message is not remembered; the caller tells the
      user the turn failed, and they can send it again.

    A partial last assistant message is kept as it is: it is what the user saw. Raises
    `HistoryError` if ``messages`` is not a prefix of a valid turn (e.g. does not start
    with a user message).
    """
    note = f"[not run: the turn was {reason} before this tool call finished]"
    cleaned: list[Message] = []
    for message in messages:
        copy = dict(message)
        if isinstance(copy.get("content"), list):
            copy["content"] = [
                dict(block)
                for block in copy["content"]
                if not (isinstance(block, Mapping) and _is_blank_text(block))
            ]
        content = copy.get("content")
        if not content or (isinstance(content, str) and not content.strip()):
            continue
        cleaned.append(copy)
    if not cleaned:
        return []
    if cleaned[0].get("role") != "user":
        raise _refuse(0, "first-user", "a turn starts with the user's message")
    closed: list[Message] = []
    for message in cleaned:
        if closed and closed[-1].get("role") == "assistant" and message.get("role") == "user":
            _answer(closed[-1], message, note)
        elif closed and closed[-1].get("role") == "assistant":
            closed.append(_answer(closed[-1], {"role": "user", "content": []}, note))
        closed.append(message)
    if closed[-1].get("role") == "assistant":
        answers = _answer(closed[-1], {"role": "user", "content": []}, note)
        if answers["content"]:
            closed.append(answers)
    if len(closed) == 1:
        return []
    if closed[-1]["role"] == "user":
        closed.append(
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "text",
                        "text": f"[no reply: the turn was {reason} after the tool results above]",
                    }
                ],
            }
        )
    check_history(closed)
    return closed


def _answer(asking: Message, answers: Message, note: str) -> Message:
    """Add to ``answers`` (a user message) an error result for each unanswered tool_use.

    The results go after the results already there, before any other block.
    """
    asked = [block["id"] for block in _blocks(asking) if block.get("type") == "tool_use"]
    if isinstance(answers.get("content"), str):
        answers["content"] = [{"type": "text", "text": answers["content"]}]
    blocks = answers["content"]
    answered = {block.get("tool_use_id") for block in blocks if block.get("type") == "tool_result"}
    at = sum(1 for block in blocks if block.get("type") == "tool_result")
    for tool_id in asked:
        if tool_id not in answered:
            blocks.insert(
                at,
                {"type": "tool_result", "tool_use_id": tool_id, "content": note, "is_error": True},
            )
            at += 1
    return answers


def estimate_tokens(value: object) -> int:
    """A deliberately high estimate of the tokens of a message, a turn or any JSON value.

    One token per three characters of its compact JSON (real text averages nearer four),
    so that a context budget kept with it errs on the side of room to spare.
    """
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return max(1, math.ceil(len(text) / 3))


def drop_oldest_turns(
    turns: Sequence[T], budget_tokens: int, estimate: Callable[[T], int]
) -> list[T]:
    """The newest turns whose estimates add up to at most ``budget_tokens``, oldest first.

    Drops whole turns from the oldest on, so a ``tool_use`` is never separated from its
    ``tool_result``; always keeps the latest turn, even alone over budget (the caller
    decides what to do about a single turn too big for the context). ``estimate`` gives
    a turn's tokens: `estimate_tokens` of its messages, or what the API reported. The
    result is the longest such suffix of ``turns``; ``[]`` only if ``turns`` is empty.
    """
    kept: list[T] = []
    total = 0
    for turn in reversed(turns):
        cost = estimate(turn)
        if kept and total + cost > budget_tokens:
            break
        kept.append(turn)
        total += cost
    kept.reverse()
    return kept


# ---- records --------------------------------------------------------------------------------

_non_negative = attrs.validators.ge(0)


@final
@attrs.frozen
class TokenUsage:
    """Tokens a turn used, as the API reports them (``cache_*`` from prompt caching)."""

    input_tokens: int = attrs.field(default=0, validator=_non_negative)
    output_tokens: int = attrs.field(default=0, validator=_non_negative)
    cache_read_tokens: int = attrs.field(default=0, validator=_non_negative)
    """``cache_read_input_tokens``: input read from the prompt cache."""
    cache_write_tokens: int = attrs.field(default=0, validator=_non_negative)
    """``cache_creation_input_tokens``: input written to the prompt cache."""

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        """The four counts by name, for JSON."""
        return attrs.asdict(self)


@final
@attrs.frozen
class TurnRecord:
    """One stored turn of a session; ``number`` counts from 1 in the session."""

    agent: str
    session: str
    number: int
    messages: tuple[Message, ...]
    created_at: float
    """Seconds since the epoch (UTC)."""
    model: str
    stop_reason: str | None
    usage: TokenUsage
    cost_usd: float


@final
@attrs.frozen
class SessionSummary:
    """A stored session: how many turns, since when, and what they used and cost."""

    agent: str
    session: str
    turns: int
    created_at: float
    updated_at: float
    usage: TokenUsage
    cost_usd: float


@final
@attrs.frozen
class AgentTotals:
    """What an agent used and spent over all its turns ever, cleared sessions included."""

    agent: str
    sessions: int
    """Sessions stored now."""
    turns: int
    """Turns ever appended."""
    usage: TokenUsage
    cost_usd: float


# ---- the SQLite side (runs in a worker thread) ----------------------------------------------

_SCHEMA: Final = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    agent TEXT NOT NULL,
    session TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    turns INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    UNIQUE (agent, session)
);
CREATE TABLE turns (
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    created_at REAL NOT NULL,
    model TEXT NOT NULL,
    stop_reason TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cache_read_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    messages TEXT NOT NULL,
    PRIMARY KEY (session_id, number)
) WITHOUT ROWID;
CREATE TABLE tool_uses (
    session_id INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    tool_use_id TEXT NOT NULL,
    PRIMARY KEY (session_id, tool_use_id)
) WITHOUT ROWID;
CREATE TABLE agent_totals (
    agent TEXT PRIMARY KEY,
    turns INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""
_TABLES: Final = frozenset({"sessions", "turns", "tool_uses", "agent_totals"})
_USAGE_COLUMNS: Final = "input_tokens, output_tokens, cache_read_tokens, cache_write_tokens"


def _usage(row: Sequence[Any]) -> TokenUsage:
    return TokenUsage(*(int(value) for value in row))


def _file_error(path: str, error: sqlite3.Error) -> HistoryFileError:
    text = str(error)
    if any(sign in text for sign in ("malformed", "not a database", "encrypted", "missing")):
        advice = (
            "it is corrupt or not a history file: move it aside "
            f"(e.g. `mv {path} {path}.broken`) and a new, empty history will be created"
        )
    elif "locked" in text or "busy" in text:
        advice = "another program is writing to it: stop it, or give this store its own file"
    elif any(sign in text for sign in ("readonly", "unable to open", "disk", "full")):
        advice = "check that the file and its directory exist, are writable and have room"
    else:
        advice = "nothing was written by the call that failed; if it happens again, report it"
    return HistoryFileError(f"history file {path}: {text}; {advice}")


class _Database:
    """The synchronous store over one connection; only ever used by one thread at a time."""

    def __init__(self, path: str, clock: Callable[[], float]) -> None:
        self.path = path
        self.clock = clock
        if path != ":memory:":
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise HistoryFileError(
                    f"history file {path}: cannot create its directory ({error}); "
                    "choose a writable place for it"
                ) from error
        try:
            self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as error:
            raise _file_error(path, error) from error
        try:
            self._prepare()
        except BaseException:
            self.connection.close()
            raise

    def _prepare(self) -> None:
        connection = self.connection
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                row[0]
                for row in connection.execute(
                    "SELECT name FROM sqlite_master "
                    "WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
            }
        except sqlite3.Error as error:
            raise _file_error(self.path, error) from error
        if version > SCHEMA_VERSION:
            raise HistoryFileError(
                f"history file {self.path} has schema version {version}, written by a newer "
                f"wactorz (this one reads version {SCHEMA_VERSION}): upgrade wactorz, or move "
                "the file aside to start a new history"
            )
        if version == 0 and tables:
            raise HistoryFileError(
                f"{self.path} is an SQLite database but not a wactorz history (it has tables "
                f"{', '.join(sorted(tables))}): give the store another path, or move it aside"
            )
        if version == SCHEMA_VERSION and not tables >= _TABLES:
            raise _file_error(self.path, sqlite3.DatabaseError("tables are missing"))
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = FULL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("PRAGMA busy_timeout = 5000")
            if version == 0:
                # One transaction (executescript would commit on its own first), so that two
                # processes opening a new file at once cannot both create the schema.
                connection.execute("BEGIN IMMEDIATE")
                try:
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            connection.execute(statement)
                    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    connection.execute("COMMIT")
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
        except sqlite3.Error as error:
            raise _file_error(self.path, error) from error

    def close(self) -> None:
        self.connection.close()

    def _session_id(self, agent: str, session: str) -> int | None:
        row = self.connection.execute(
            "SELECT id FROM sessions WHERE agent = ? AND session = ?", (agent, session)
        ).fetchone()
        return None if row is None else int(row[0])

    def append_turn(
        self,
        agent: str,
        session: str,
        messages: list[Message],
        encoded: str,
        usage: TokenUsage,
        cost: float,
        stop_reason: str | None,
        model: str,
    ) -> TurnRecord:
        connection = self.connection
        now = self.clock()
        counts = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
        )
        connection.execute("BEGIN IMMEDIATE")
        try:
            session_id = self._session_id(agent, session)
            if session_id is None:
                cursor = connection.execute(
                    "INSERT INTO sessions (agent, session, created_at, updated_at) "
                    "VALUES (?, ?, ?, ?)",
                    (agent, session, now, now),
                )
                session_id = int(cursor.lastrowid or 0)
            self._add_tool_uses(session_id, messages)
            number = 1 + int(
                connection.execute(
                    "SELECT turns FROM sessions WHERE id = ?", (session_id,)
                ).fetchone()[0]
            )
            connection.execute(
                f"INSERT INTO turns (session_id, number, created_at, model, stop_reason, "
                f"{_USAGE_COLUMNS}, cost_usd, messages) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (session_id, number, now, model, stop_reason, *counts, cost, encoded),
            )
            connection.execute(
                "UPDATE sessions SET turns = ?, updated_at = ?, input_tokens = input_tokens + ?, "
                "output_tokens = output_tokens + ?, cache_read_tokens = cache_read_tokens + ?, "
                "cache_write_tokens = cache_write_tokens + ?, cost_usd = cost_usd + ? WHERE id = ?",
                (number, now, *counts, cost, session_id),
            )
            connection.execute(
                f"INSERT INTO agent_totals (agent, turns, {_USAGE_COLUMNS}, cost_usd) "
                "VALUES (?, 1, ?, ?, ?, ?, ?) ON CONFLICT (agent) DO UPDATE SET "
                "turns = turns + 1, input_tokens = input_tokens + excluded.input_tokens, "
                "output_tokens = output_tokens + excluded.output_tokens, "
                "cache_read_tokens = cache_read_tokens + excluded.cache_read_tokens, "
                "cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens, "
                "cost_usd = cost_usd + excluded.cost_usd",
                (agent, *counts, cost),
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return TurnRecord(
            agent, session, number, tuple(messages), now, model, stop_reason, usage, cost
        )

    def _add_tool_uses(self, session_id: int, messages: list[Message]) -> None:
        """Record the turn's tool_use ids; refuse one the session already has."""
        ids = [tool_id for message in messages for tool_id in _tool_use_ids(message)]
        if not ids:
            return
        marks = ", ".join("?" * len(ids))
        reused = self.connection.execute(
            f"SELECT tool_use_id FROM tool_uses WHERE session_id = ? AND tool_use_id IN ({marks})",
            (session_id, *ids),
        ).fetchone()
        if reused is not None:
            index = next(
                index
                for index, message in enumerate(messages)
                if reused[0] in _tool_use_ids(message)
            )
            raise _refuse(
                index,
                "tool-use-unique",
                f"tool_use id {reused[0]!r} is already in the session's history",
            )
        self.connection.executemany(
            "INSERT INTO tool_uses (session_id, tool_use_id) VALUES (?, ?)",
            [(session_id, tool_id) for tool_id in ids],
        )

    def turns(self, agent: str, session: str) -> list[TurnRecord]:
        rows = self.connection.execute(
            "SELECT t.number, t.created_at, t.model, t.stop_reason, t.input_tokens, "
            "t.output_tokens, t.cache_read_tokens, t.cache_write_tokens, t.cost_usd, t.messages "
            "FROM turns AS t JOIN sessions AS s ON s.id = t.session_id "
            "WHERE s.agent = ? AND s.session = ? ORDER BY t.number",
            (agent, session),
        ).fetchall()
        return [
            TurnRecord(
                agent,
                session,
                row[0],
                tuple(json.loads(row[9])),
                row[1],
                row[2],
                row[3],
                _usage(row[4:8]),
                row[8],
            )
            for row in rows
        ]

    def messages(self, agent: str, session: str) -> list[Message]:
        rows = self.connection.execute(
            "SELECT t.messages FROM turns AS t JOIN sessions AS s ON s.id = t.session_id "
            "WHERE s.agent = ? AND s.session = ? ORDER BY t.number",
            (agent, session),
        )
        return [message for (encoded,) in rows for message in json.loads(encoded)]

    def sessions(self, agent: str, session: str | None = None) -> list[SessionSummary]:
        where = "agent = ?" + (" AND session = ?" if session is not None else "")
        rows = self.connection.execute(
            f"SELECT session, turns, created_at, updated_at, {_USAGE_COLUMNS}, cost_usd "
            f"FROM sessions WHERE {where} ORDER BY updated_at DESC, session",
            (agent,) if session is None else (agent, session),
        ).fetchall()
        return [
            SessionSummary(agent, row[0], row[1], row[2], row[3], _usage(row[4:8]), row[8])
            for row in rows
        ]

    def clear(self, agent: str, session: str) -> int:
        connection = self.connection
        connection.execute("BEGIN IMMEDIATE")
        try:
            row = connection.execute(
                "SELECT id, turns FROM sessions WHERE agent = ? AND session = ?", (agent, session)
            ).fetchone()
            if row is not None:
                connection.execute("DELETE FROM sessions WHERE id = ?", (row[0],))
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return 0 if row is None else int(row[1])

    def totals(self, agent: str) -> AgentTotals:
        row = self.connection.execute(
            f"SELECT turns, {_USAGE_COLUMNS}, cost_usd FROM agent_totals WHERE agent = ?",
            (agent,),
        ).fetchone()
        sessions = self.connection.execute(
            "SELECT count(*) FROM sessions WHERE agent = ?", (agent,)
        ).fetchone()[0]
        if row is None:
            return AgentTotals(agent, sessions, 0, TokenUsage(), 0.0)
        return AgentTotals(agent, sessions, row[0], _usage(row[1:5]), row[5])

    def agents(self) -> list[str]:
        rows = self.connection.execute("SELECT agent FROM agent_totals ORDER BY agent")
        return [row[0] for row in rows]


# ---- the store ------------------------------------------------------------------------------


def _iso(timestamp: float) -> str:
    """ISO 8601 in UTC, for JSON."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _readable(timestamp: float) -> str:
    """Date and time in UTC, for people."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _brief(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def _result_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [
            str(block.get("text", "")) if block.get("type") == "text" else f"[{block.get('type')}]"
            for block in content
            if isinstance(block, Mapping)
        ]
        return " ".join(parts)
    return ""


def _markdown_message(message: Mapping[str, Any]) -> list[str]:
    speaker = "User" if message["role"] == "user" else "Assistant"
    content = message["content"]
    if isinstance(content, str):
        return [f"**{speaker}:** {content}", ""]
    lines: list[str] = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            lines += [f"**{speaker}:** {block['text']}", ""]
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input"), ensure_ascii=False, separators=(", ", ": "))
            lines += [
                f"> **Tool call** `{block['name']}` ({block['id']}): `{_brief(arguments, 200)}`",
                "",
            ]
        elif kind == "tool_result":
            status = "**Tool error**" if block.get("is_error") else "**Tool result**"
            text = _brief(_result_text(block.get("content")), 300)
            lines += [f"> {status} ({block['tool_use_id']}): {text}", ""]
        else:
            lines += [f"*{speaker}: [{kind}]*", ""]
    return lines


@final
class HistoryStore:
    """The history of every session of every agent, in one SQLite file.

    Open it with ``async with HistoryStore.open(path) as store:``; every method is safe to
    call from many Trio tasks at once (calls are serialized on one connection in a worker
    thread). Methods raise `HistoryError` for what they refuse, `HistoryFileError` when
    the file fails, and `HistoryError` once the store is closed.
    """

    def __init__(self, database: _Database) -> None:
        """Private: use `HistoryStore.open`."""
        self._database: _Database | None = database
        self._limiter = trio.CapacityLimiter(1)
        self.path: Final = database.path

    @classmethod
    @asynccontextmanager
    async def open(
        cls, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> AsyncIterator[HistoryStore]:
        """Open (creating it and its directory if need be) the history at ``path``.

        ``":memory:"`` opens a private in-memory store. ``clock`` gives the timestamps of
        turns (seconds since the epoch). Raises `HistoryFileError` if the file is not a
        usable history. The store is closed when the block exits, after the calls in
        flight have finished, even if the block is cancelled.
        """
        database = await trio.to_thread.run_sync(_Database, os.fspath(path), clock)
        store = cls(database)
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()

    async def aclose(self) -> None:
        """Close the connection once the calls in flight have finished; idempotent."""
        async with self._limiter:
            database, self._database = self._database, None
            if database is not None:
                await trio.to_thread.run_sync(database.close)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        async with self._limiter:
            database = self._database
            if database is None:
                raise HistoryError(f"the history store {self.path} is closed")

            def call() -> T:
                try:
                    return function(database, *args)
                except sqlite3.Error as error:
                    raise _file_error(database.path, error) from error

            return await trio.to_thread.run_sync(call)

    # ---- writing ----

    async def append_turn(
        self,
        agent: str,
        session: str,
        messages: Sequence[Mapping[str, Any]],
        *,
        usage: TokenUsage,
        cost: float,
        stop_reason: str | None,
        model: str,
    ) -> TurnRecord:
        """Store one whole turn at the end of a session (created on first use); return it.

        ``messages`` must be a complete turn (`close_turn` makes one of a cut turn): it
        starts with the user's message, ends with an assistant message, and together with
        what is stored it passes `check_history` (alternating roles, every tool_use
        answered in the next message, tool_use ids unique in the session...). Otherwise
        raises `HistoryError` naming the message of the turn and the rule, and writes
        nothing. The turn, the session's and the agent's totals are written in one
        transaction, on disk when this returns. ``cost`` is in US dollars.
        """
        check_name(agent, "agent name")
        check_name(session)
        if not (isinstance(cost, int | float) and math.isfinite(cost) and cost >= 0):
            raise HistoryError(f"cost must be a finite number of dollars >= 0, not {cost!r}")
        turn = list(messages)
        try:
            _check(turn, complete=True)
        except HistoryError as refusal:
            raise HistoryError(
                f"refused a turn for {agent}/{session}, nothing written: {refusal} "
                "(the index counts the turn's messages)",
                index=refusal.index,
                rule=refusal.rule,
            ) from None
        try:
            encoded = json.dumps(turn, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as error:
            raise HistoryError(
                f"refused a turn for {agent}/{session}, nothing written: it is not JSON ({error}); "
                "store content blocks as plain dicts (the SDK's `block.to_dict()`)"
            ) from None
        stored = json.loads(encoded)
        try:
            return await self._run(
                _Database.append_turn,
                agent,
                session,
                stored,
                encoded,
                usage,
                float(cost),
                stop_reason,
                model,
            )
        except HistoryError as refusal:
            if isinstance(refusal, HistoryFileError):
                raise
            raise HistoryError(
                f"refused a turn for {agent}/{session}, nothing written: {refusal}",
                index=refusal.index,
                rule=refusal.rule,
            ) from None

    async def clear(self, agent: str, session: str) -> int:
        """Forget a session: its turns and summary. Returns how many turns it had (0 if none).

        Its usage and cost stay counted in `totals`.
        """
        return await self._run(
            _Database.clear, check_name(agent, "agent name"), check_name(session)
        )

    # ---- reading ----

    async def messages(self, agent: str, session: str) -> list[Message]:
        """The session's whole history, in order, ready to send (``[]`` for a new session)."""
        return await self._run(
            _Database.messages, check_name(agent, "agent name"), check_name(session)
        )

    async def turns(self, agent: str, session: str) -> list[TurnRecord]:
        """The session's turns, oldest first (``[]`` for a new session)."""
        return await self._run(
            _Database.turns, check_name(agent, "agent name"), check_name(session)
        )

    async def sessions(self, agent: str) -> list[SessionSummary]:
        """The agent's stored sessions, the most recently updated first."""
        return await self._run(_Database.sessions, check_name(agent, "agent name"))

    async def session(self, agent: str, session: str) -> SessionSummary | None:
        """One session's summary, or None if it has no turns stored."""
        found = await self._run(
            _Database.sessions, check_name(agent, "agent name"), check_name(session)
        )
        return found[0] if found else None

    async def totals(self, agent: str) -> AgentTotals:
        """What the agent used and spent over all its turns ever (zeros for an unknown one)."""
        return await self._run(_Database.totals, check_name(agent, "agent name"))

    async def agents(self) -> list[str]:
        """Every agent that ever stored a turn, by name."""
        return await self._run(_Database.agents)

    # ---- exports ----

    async def export_json(self, agent: str, session: str) -> dict[str, Any]:
        """The session as one JSON-ready dict: its summary and every turn with its messages.

        Raises `HistoryError` if the session has no turns stored.
        """
        summary = await self._summary(agent, session)
        turns = await self.turns(agent, session)
        return {
            "format": f"wactorz.history/{SCHEMA_VERSION}",
            "agent": agent,
            "session": session,
            "created_at": _iso(summary.created_at),
            "updated_at": _iso(summary.updated_at),
            "usage": summary.usage.as_dict(),
            "cost_usd": summary.cost_usd,
            "turns": [
                {
                    "number": turn.number,
                    "created_at": _iso(turn.created_at),
                    "model": turn.model,
                    "stop_reason": turn.stop_reason,
                    "usage": turn.usage.as_dict(),
                    "cost_usd": turn.cost_usd,
                    "messages": list(turn.messages),
                }
                for turn in turns
            ],
        }

    async def export_markdown(self, agent: str, session: str) -> str:
        """The session as Markdown for people: the text said, tool calls and results in brief.

        Raises `HistoryError` if the session has no turns stored.
        """
        summary = await self._summary(agent, session)
        usage = summary.usage
        lines = [
            f"# Session `{session}` with `{agent}`",
            "",
            f"{summary.turns} turn{'s' if summary.turns != 1 else ''}, "
            f"{_readable(summary.created_at)} to {_readable(summary.updated_at)}; "
            f"tokens: {usage.input_tokens} in, {usage.output_tokens} out, "
            f"{usage.cache_read_tokens} read from cache, {usage.cache_write_tokens} written to "
            f"cache; cost ${summary.cost_usd:.4f}",
            "",
        ]
        for turn in await self.turns(agent, session):
            lines += [
                f"## Turn {turn.number}",
                "",
                f"*{_readable(turn.created_at)} · {turn.model} · stop: {turn.stop_reason} · "
                f"{turn.usage.input_tokens} in / {turn.usage.output_tokens} out · "
                f"${turn.cost_usd:.4f}*",
                "",
            ]
            for message in turn.messages:
                lines += _markdown_message(message)
        return "\n".join(lines)

    async def _summary(self, agent: str, session: str) -> SessionSummary:
        summary = await self.session(agent, session)
        if summary is None:
            known = [found.session for found in await self.sessions(agent)][:10]
            raise HistoryError(
                f"agent {agent!r} has no session {session!r} stored "
                f"(its sessions: {', '.join(known) or 'none'})"
            )
        return summary

"""The conversation history store: round trips, the API invariant, crashes, concurrency, exports.

The stateful test drives a real file (closed and reopened as it goes) through appends,
refused appends, crashes inside the write, clears and reopenings, across two agents and
three sessions each, and checks after every step that the store holds exactly what a
plain in-memory model says it should.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from wactorz.agents.history import (
    MAX_SESSION_LENGTH,
    RULES,
    SCHEMA_VERSION,
    HistoryError,
    HistoryFileError,
    HistoryStore,
    TokenUsage,
    check_history,
    check_name,
    close_turn,
    drop_oldest_turns,
    estimate_tokens,
)

Message = dict[str, Any]
T = TypeVar("T")

USAGE = TokenUsage(input_tokens=100, output_tokens=20, cache_read_tokens=50, cache_write_tokens=7)


# ---- building messages ----------------------------------------------------------------------


def user(*blocks: Any) -> Message:
    if len(blocks) == 1 and isinstance(blocks[0], str):
        return {"role": "user", "content": blocks[0]}
    return {"role": "user", "content": list(blocks)}


def assistant(*blocks: Any) -> Message:
    return {"role": "assistant", "content": list(blocks)}


def said(text: str) -> Message:
    return {"type": "text", "text": text}


def call(tool_id: str, name: str = "lookup", **arguments: Any) -> Message:
    return {"type": "tool_use", "id": tool_id, "name": name, "input": arguments}


def result(tool_id: str, content: Any = "ok", *, is_error: bool = False) -> Message:
    block = {"type": "tool_result", "tool_use_id": tool_id, "content": content}
    if is_error:
        block["is_error"] = True
    return block


def as_blocks(message: Message) -> list[Message]:
    """A message's content as a list of blocks (a string is one text block)."""
    content = message["content"]
    return [said(content)] if isinstance(content, str) else list(content)


def tool_ids(messages: list[Message]) -> list[str]:
    """The ids of the tool calls in ``messages``, in order."""
    return [
        block["id"]
        for message in messages
        for block in as_blocks(message)
        if block.get("type") == "tool_use"
    ]


def chat(question: str, answer: str) -> list[Message]:
    return [user(question), assistant(said(answer))]


def tool_turn(*ids: str) -> list[Message]:
    return [
        user("look these up"),
        assistant(said("Looking."), *(call(tool_id, key=tool_id) for tool_id in ids)),
        user(*(result(tool_id, f"value of {tool_id}") for tool_id in ids)),
        assistant(said("Found them.")),
    ]


@pytest.fixture
async def store() -> AsyncIterator[HistoryStore]:
    async with HistoryStore.open(":memory:") as opened:
        yield opened


async def append(
    store: HistoryStore, turn: list[Message], session: str = "s1", agent: str = "llm", **kw: Any
) -> Any:
    options = {"usage": USAGE, "cost": 0.25, "stop_reason": "end_turn", "model": "m"} | kw
    return await store.append_turn(agent, session, turn, **options)


# ---- round trips ----------------------------------------------------------------------------


async def test_turns_come_back_in_order_with_their_metadata(tmp_path: Path) -> None:
    path = tmp_path / "data" / "history.db"
    clock = itertools.count(1_800_000_000).__next__
    first, second = chat("hi", "hello"), tool_turn("t1", "t2")
    async with HistoryStore.open(path, clock=lambda: float(clock())) as store:
        record = await append(store, first)
        assert (record.number, record.messages, record.created_at) == (1, tuple(first), 1.8e9)
        await append(store, second, stop_reason="tool_use", model="m2", cost=0.5)
    async with HistoryStore.open(path) as store:
        assert await store.messages("llm", "s1") == first + second
        turns = await store.turns("llm", "s1")
        assert [turn.number for turn in turns] == [1, 2]
        assert [list(turn.messages) for turn in turns] == [first, second]
        assert [(turn.model, turn.stop_reason, turn.cost_usd) for turn in turns] == [
            ("m", "end_turn", 0.25),
            ("m2", "tool_use", 0.5),
        ]
        assert turns[1].usage == USAGE and turns[1].created_at == 1.8e9 + 1
        (summary,) = await store.sessions("llm")
        assert (summary.session, summary.turns, summary.cost_usd) == ("s1", 2, 0.75)
        assert summary.usage == USAGE + USAGE
        assert (summary.created_at, summary.updated_at) == (1.8e9, 1.8e9 + 1)


async def test_a_new_session_is_empty_and_unlisted(store: HistoryStore) -> None:
    assert await store.messages("llm", "never") == []
    assert await store.turns("llm", "never") == []
    assert await store.sessions("llm") == []
    assert await store.session("llm", "never") is None
    totals = await store.totals("llm")
    assert (totals.sessions, totals.turns, totals.usage, totals.cost_usd) == (0, 0, TokenUsage(), 0)


async def test_sessions_and_agents_never_see_each_others_messages(store: HistoryStore) -> None:
    await append(store, chat("a", "A"), "one")
    await append(store, chat("b", "B"), "two")
    await append(store, chat("c", "C"), "one", agent="other")
    assert await store.messages("llm", "one") == chat("a", "A")
    assert await store.messages("llm", "two") == chat("b", "B")
    assert await store.messages("other", "one") == chat("c", "C")
    assert {summary.session for summary in await store.sessions("llm")} == {"one", "two"}
    assert await store.agents() == ["llm", "other"]


async def test_sessions_are_listed_most_recently_updated_first(store: HistoryStore) -> None:
    for session in ("a", "b", "c"):
        await append(store, chat("q", "r"), session)
    await append(store, chat("again", "r"), "a")
    assert [summary.session for summary in await store.sessions("llm")] == ["a", "c", "b"]


async def test_totals_add_up_every_turn_and_survive_a_clear(store: HistoryStore) -> None:
    await append(store, chat("a", "A"), "one", cost=0.1)
    await append(store, tool_turn("t1"), "one", cost=0.2)
    await append(store, chat("b", "B"), "two", cost=0.3)
    assert await store.clear("llm", "one") == 2
    assert await store.clear("llm", "one") == 0
    assert await store.messages("llm", "one") == []
    totals = await store.totals("llm")
    assert (totals.sessions, totals.turns) == (1, 3)
    assert totals.usage == USAGE + USAGE + USAGE
    assert math.isclose(totals.cost_usd, 0.6)


async def test_a_cleared_session_starts_again_from_turn_one(store: HistoryStore) -> None:
    await append(store, tool_turn("t1"))
    await store.clear("llm", "s1")
    record = await append(store, tool_turn("t1"))
    assert record.number == 1
    assert await store.messages("llm", "s1") == tool_turn("t1")


async def test_what_is_stored_is_a_copy_of_what_was_given(store: HistoryStore) -> None:
    turn = chat("q", "r")
    await append(store, turn)
    turn[1]["content"][0]["text"] = "changed afterwards"
    assert await store.messages("llm", "s1") == chat("q", "r")


# ---- the invariant: refusals ----------------------------------------------------------------

BROKEN_TURNS: dict[str, tuple[list[Any], str, int | None]] = {
    "empty turn": ([], "ends-with-assistant", None),
    "starts with the assistant": ([assistant(said("hi"))], "first-user", 0),
    "ends with the user": (
        [user("q"), assistant(said("r")), user("more")],
        "ends-with-assistant",
        2,
    ),
    "only the user": ([user("q")], "ends-with-assistant", 0),
    "two users in a row": ([user("q"), user("q2"), assistant(said("r"))], "alternate", 1),
    "two assistants in a row": (
        [user("q"), assistant(said("r")), assistant(said("r2"))],
        "alternate",
        2,
    ),
    "a tool call never answered": (
        [user("q"), assistant(call("t1")), user("and?"), assistant(said("r"))],
        "tool-use-answered",
        1,
    ),
    "a tool call last": ([user("q"), assistant(call("t1"))], "tool-use-answered", 1),
    "one of two calls answered": (
        [user("q"), assistant(call("t1"), call("t2")), user(result("t1")), assistant(said("r"))],
        "tool-use-answered",
        1,
    ),
    "a result for another id": (
        [user("q"), assistant(call("t1")), user(result("t9")), assistant(said("r"))],
        "tool-result-asked",
        2,
    ),
    "a result with no call": (
        [user(result("t1")), assistant(said("r"))],
        "tool-result-asked",
        0,
    ),
    "a result given twice": (
        [user("q"), assistant(call("t1")), user(result("t1"), result("t1")), assistant(said("r"))],
        "tool-result-asked",
        2,
    ),
    "a result answering a call two messages back": (
        [
            user("q"),
            assistant(call("t1")),
            user(result("t1")),
            assistant(said("r")),
            user(result("t1")),
            assistant(said("r")),
        ],
        "tool-result-asked",
        4,
    ),
    "text before the results": (
        [user("q"), assistant(call("t1")), user(said("here"), result("t1")), assistant(said("r"))],
        "tool-results-first",
        2,
    ),
    "a tool call by the user": ([user(call("t1")), assistant(said("r"))], "tool-use-role", 0),
    "a tool result by the assistant": (
        [user("q"), assistant(result("t1"))],
        "tool-use-role",
        1,
    ),
    "one id for two calls": (
        [
            user("q"),
            assistant(call("t1"), call("t1")),
            user(result("t1")),
            assistant(said("r")),
        ],
        "tool-use-unique",
        1,
    ),
    "a call without input": (
        [user("q"), assistant({"type": "tool_use", "id": "t1", "name": "f"}), user(result("t1"))],
        "tool-use-shape",
        1,
    ),
    "an empty string": ([user("  "), assistant(said("r"))], "empty", 0),
    "an empty list": ([user("q"), {"role": "assistant", "content": []}], "empty", 1),
    "a blank text block": ([user("q"), assistant(said(""))], "empty", 1),
    "a system message": ([{"role": "system", "content": "x"}], "shape", 0),
    "a block without a type": ([user("q"), assistant({"text": "r"})], "shape", 1),
    "content that is a number": ([user("q"), {"role": "assistant", "content": 3}], "shape", 1),
    "not a mapping": ([user("q"), "assistant: r"], "shape", 1),
}


@pytest.mark.parametrize(("turn", "rule", "index"), BROKEN_TURNS.values(), ids=BROKEN_TURNS)
async def test_a_turn_that_breaks_a_rule_is_refused_and_nothing_is_written(
    store: HistoryStore, turn: list[Any], rule: str, index: int | None
) -> None:
    await append(store, chat("before", "kept"))
    with pytest.raises(HistoryError, match="nothing written") as refused:
        await append(store, turn)
    assert (refused.value.rule, refused.value.index) == (rule, index)
    assert rule in RULES and RULES[rule] in str(refused.value)
    assert await store.messages("llm", "s1") == chat("before", "kept")
    assert (await store.totals("llm")).turns == 1


@pytest.mark.parametrize(("turn", "rule", "index"), BROKEN_TURNS.values(), ids=BROKEN_TURNS)
def test_check_history_names_the_message_and_the_rule(
    turn: list[Any], rule: str, index: int | None
) -> None:
    with pytest.raises(HistoryError) as refused:
        check_history(turn)
    assert (refused.value.rule, refused.value.index) == (rule, index)
    if index is not None:
        assert str(refused.value).startswith(f"message {index}: ")


def test_an_unfinished_history_ends_with_the_user_when_not_complete() -> None:
    check_history([*tool_turn("t1"), user("next question")], complete=False)
    with pytest.raises(HistoryError, match="tool-use-answered"):
        check_history([user("q"), assistant(call("t1"))], complete=False)


async def test_a_tool_id_already_in_the_session_is_refused(store: HistoryStore) -> None:
    await append(store, tool_turn("t1", "t2"))
    with pytest.raises(HistoryError, match="'t2' is already in the session's history") as refused:
        await append(store, tool_turn("t3", "t2"))
    assert (refused.value.rule, refused.value.index) == ("tool-use-unique", 1)
    assert await store.messages("llm", "s1") == tool_turn("t1", "t2")
    await append(store, tool_turn("t2"), "another session")


async def test_the_first_turn_after_a_stored_one_must_start_with_the_user(
    store: HistoryStore,
) -> None:
    await append(store, chat("q", "r"))
    with pytest.raises(HistoryError, match="first-user"):
        await append(store, [assistant(said("again"))])


async def test_content_that_is_not_json_is_refused(store: HistoryStore) -> None:
    with pytest.raises(HistoryError, match=r"not JSON.*to_dict"):
        await append(store, [user("q"), assistant(said("r"), {"type": "odd", "value": {1, 2}})])
    with pytest.raises(HistoryError, match="not JSON"):
        await append(store, [user("q"), assistant({"type": "odd", "value": math.nan})])
    assert await store.sessions("llm") == []


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "1 to 200 characters"),
        ("x" * (MAX_SESSION_LENGTH + 1), "this one 201"),
        ("two\nlines", "control character"),
        ("tab\there", "control character"),
        (42, "a string, not int"),
    ],
)
async def test_a_bad_session_id_or_agent_name_is_refused(
    store: HistoryStore, name: Any, problem: str
) -> None:
    with pytest.raises(HistoryError, match=problem):
        await append(store, chat("q", "r"), session=name)
    with pytest.raises(HistoryError, match=f"agent name.*{problem}|{problem}"):
        await store.messages(name, "s1")
    assert check_name("user:42 / telegram ✓") == "user:42 / telegram ✓"
    assert check_name("x" * MAX_SESSION_LENGTH)


@pytest.mark.parametrize("cost", [-0.01, math.nan, math.inf])
async def test_a_cost_must_be_a_finite_number_of_dollars(store: HistoryStore, cost: float) -> None:
    with pytest.raises(HistoryError, match="cost must be"):
        await append(store, chat("q", "r"), cost=cost)


def test_usage_counts_are_never_negative() -> None:
    with pytest.raises(ValueError, match="input_tokens"):
        TokenUsage(input_tokens=-1)


# ---- crashes and cancellation ---------------------------------------------------------------


async def test_a_failure_inside_the_transaction_leaves_nothing_written(
    store: HistoryStore, tmp_path: Path
) -> None:
    await append(store, chat("before", "kept"), cost=1.0)
    connection: sqlite3.Connection = store._database.connection  # type: ignore[union-attr]
    # The session row and the tool ids are written by then; the turn's insert fails.
    connection.execute(
        "CREATE TEMP TRIGGER boom BEFORE INSERT ON turns BEGIN SELECT RAISE(ABORT, 'boom'); END"
    )
    with pytest.raises(HistoryFileError, match="boom"):
        await append(store, tool_turn("t1"), cost=5.0)
    with pytest.raises(HistoryFileError, match="boom"):
        await append(store, tool_turn("t1"), "new session", cost=5.0)
    connection.execute("DROP TRIGGER boom")
    assert await store.messages("llm", "s1") == chat("before", "kept")
    assert [summary.session for summary in await store.sessions("llm")] == ["s1"]
    totals = await store.totals("llm")
    assert (totals.turns, totals.cost_usd) == (1, 1.0)
    await append(store, tool_turn("t1"))  # its tool id was not kept either


async def test_an_exception_in_python_mid_write_rolls_back(
    store: HistoryStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wactorz.agents import history

    original = history._Database._add_tool_uses

    def crash(self: Any, session_id: int, messages: list[Message]) -> None:
        original(self, session_id, messages)
        raise KeyboardInterrupt  # as abrupt as it gets in Python, even past `except Exception`

    monkeypatch.setattr(history._Database, "_add_tool_uses", crash)
    with pytest.raises(KeyboardInterrupt):
        await append(store, tool_turn("t1"))
    monkeypatch.undo()
    assert await store.sessions("llm") == []
    assert (await store.totals("llm")).turns == 0
    await append(store, tool_turn("t1"))
    assert await store.messages("llm", "s1") == tool_turn("t1")


async def test_a_cancelled_append_writes_the_whole_turn_or_nothing(store: HistoryStore) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await append(store, chat("never", "written"))
    assert await store.sessions("llm") == []

    async def append_then_note(done: list[Any]) -> None:
        done.append(await append(store, tool_turn("t1")))

    done: list[Any] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(append_then_note, done)
        await trio.testing.wait_all_tasks_blocked()  # it is in the worker thread now
        nursery.cancel_scope.cancel()
    assert await store.messages("llm", "s1") == (tool_turn("t1") if done else [])
    assert done, "once in its thread, the write runs to its end and returns"


async def test_many_tasks_append_to_their_own_sessions_at_once(tmp_path: Path) -> None:
    sessions = [f"user-{n}" for n in range(24)]

    async def converse(store: HistoryStore, agent: str, session: str) -> None:
        for number in range(5):
            await append(store, tool_turn(f"{session}-{number}"), session, agent=agent, cost=0.5)
            await trio.lowlevel.checkpoint()

    async with HistoryStore.open(tmp_path / "history.db") as store:
        async with trio.open_nursery() as nursery:
            for index, session in enumerate(sessions):
                nursery.start_soon(converse, store, f"agent-{index % 2}", session)
        for index, session in enumerate(sessions):
            messages = await store.messages(f"agent-{index % 2}", session)
            expected = [m for n in range(5) for m in tool_turn(f"{session}-{n}")]
            assert messages == expected
            check_history(messages)
        for agent in ("agent-0", "agent-1"):
            totals = await store.totals(agent)
            assert (totals.sessions, totals.turns, totals.cost_usd) == (12, 60, 30.0)


# ---- the file -------------------------------------------------------------------------------


async def test_the_file_is_in_wal_mode_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    async with HistoryStore.open(path) as store:
        connection = store._database.connection  # type: ignore[union-attr]
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        await append(store, chat("q", "r"))
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    connection.close()


async def test_a_file_that_is_not_a_database_says_to_move_it_aside(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not SQLite at all, just some bytes\n" * 100)
    with pytest.raises(HistoryFileError, match=r"move it aside \(e.g. `mv .*history.db"):
        async with HistoryStore.open(path):
            pass


async def test_a_file_from_a_newer_wactorz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    with sqlite3.connect(path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    connection.close()
    with pytest.raises(HistoryFileError, match="newer wactorz.*upgrade wactorz, or move"):
        async with HistoryStore.open(path):
            pass


async def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE invoices (id INTEGER)")
    connection.close()
    with pytest.raises(HistoryFileError, match="not a wactorz history.*invoices"):
        async with HistoryStore.open(path):
            pass


async def test_a_path_that_cannot_be_a_file_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where a directory should be")
    with pytest.raises(HistoryFileError, match="cannot create its directory"):
        async with HistoryStore.open(tmp_path / "taken" / "history.db"):
            pass
    with pytest.raises(HistoryFileError, match="unable to open.*writable"):
        async with HistoryStore.open(tmp_path):
            pass


async def test_a_closed_store_says_so(tmp_path: Path) -> None:
    async with HistoryStore.open(tmp_path / "h.db") as store:
        pass
    with pytest.raises(HistoryError, match="is closed"):
        await store.messages("llm", "s1")
    await store.aclose()


# ---- exports --------------------------------------------------------------------------------


async def test_export_json_holds_every_turn_and_is_plain_json(store: HistoryStore) -> None:
    await append(store, chat("hi", "hello"), cost=0.1)
    await append(store, tool_turn("t1"), stop_reason="end_turn", cost=0.2)
    exported = await store.export_json("llm", "s1")
    assert json.loads(json.dumps(exported)) == exported
    assert exported["format"] == f"wactorz.history/{SCHEMA_VERSION}"
    assert (exported["agent"], exported["session"]) == ("llm", "s1")
    assert [turn["messages"] for turn in exported["turns"]] == [
        chat("hi", "hello"),
        tool_turn("t1"),
    ]
    assert exported["usage"] == (USAGE + USAGE).as_dict()
    assert math.isclose(exported["cost_usd"], 0.3)
    assert exported["turns"][1]["created_at"].endswith("+00:00")


async def test_export_markdown_reads_as_a_conversation(store: HistoryStore) -> None:
    turn = [
        user("What is in /tmp?"),
        assistant(said("Let me list it."), call("t1", "list_files", path="/tmp")),
        user(result("t1", [said("a.txt b.txt")]), said("thanks")),
        assistant(said("Two files."), call("t2", "read", path="/tmp/a.txt")),
        user(result("t2", "permission denied", is_error=True)),
        assistant(said("I cannot read a.txt.")),
    ]
    await append(store, turn, cost=0.0123)
    text = await store.export_markdown("llm", "s1")
    assert text.startswith("# Session `s1` with `llm`\n")
    for expected in (
        "1 turn, ",
        "cost $0.0123",
        "## Turn 1",
        "**User:** What is in /tmp?",
        "**Assistant:** Let me list it.",
        '> **Tool call** `list_files` (t1): `{"path": "/tmp"}`',
        "> **Tool result** (t1): a.txt b.txt",
        "**User:** thanks",
        "> **Tool error** (t2): permission denied",
        "**Assistant:** I cannot read a.txt.",
    ):
        assert expected in text


async def test_a_long_tool_result_is_summarised_in_markdown(store: HistoryStore) -> None:
    turn = [user("q"), assistant(call("t1")), user(result("t1", "x" * 5000)), assistant(said("r"))]
    await append(store, turn)
    text = await store.export_markdown("llm", "s1")
    assert "x" * 299 + "…" in text and "x" * 301 not in text


async def test_exporting_an_unknown_session_names_the_known_ones(store: HistoryStore) -> None:
    await append(store, chat("q", "r"), "alpha")
    with pytest.raises(HistoryError, match="no session 'beta' stored.*alpha"):
        await store.export_json("llm", "beta")
    with pytest.raises(HistoryError, match="no session"):
        await store.export_markdown("llm", "beta")


# ---- close_turn -----------------------------------------------------------------------------


def test_a_turn_with_only_the_users_message_is_dropped() -> None:
    assert close_turn([user("q")], "cancelled") == []
    assert close_turn([user("q"), assistant(said(""))], "cancelled") == []
    assert close_turn([], "cancelled") == []


def test_a_partial_reply_is_kept_as_it_was_seen() -> None:
    turn = [user("q"), assistant(said("The answer is"))]
    assert close_turn(turn, "cancelled") == turn


def test_unanswered_tool_calls_get_error_results_and_a_closing_note() -> None:
    closed = close_turn([user("q"), assistant(said("Checking."), call("a"), call("b"))], "crashed")
    check_history(closed)
    assert closed[2] == user(
        result(
            "a", "[not run: the turn was crashed before this tool call finished]", is_error=True
        ),
        result(
            "b", "[not run: the turn was crashed before this tool call finished]", is_error=True
        ),
    )
    assert closed[3] == assistant(
        said("[no reply: the turn was crashed after the tool results above]")
    )


def test_missing_results_join_the_ones_that_arrived() -> None:
    turn = [user("q"), assistant(call("a"), call("b")), user(result("a", "A"), said("note"))]
    closed = close_turn(turn, "cancelled")
    check_history(closed)
    assert [block.get("tool_use_id") for block in closed[2]["content"]] == ["a", "b", None]
    assert closed[2]["content"][1]["is_error"] is True
    assert closed[3]["role"] == "assistant"


def test_close_turn_leaves_its_argument_alone() -> None:
    turn = [user("q"), assistant(call("a")), user(result("a"))]
    snapshot = json.loads(json.dumps(turn))
    close_turn(turn, "cancelled")
    assert turn == snapshot


def test_close_turn_refuses_what_is_no_turn_at_all() -> None:
    with pytest.raises(HistoryError, match="first-user"):
        close_turn([assistant(said("hi"))], "cancelled")


# turn shapes: for each tool round, (calls, results in reverse order, text after the results)
ROUNDS = st.lists(st.tuples(st.integers(1, 3), st.booleans(), st.booleans()), max_size=3)


def build_turn(
    rounds: list[tuple[int, bool, bool]], ids: Iterator[int], label: str = ""
) -> list[Message]:
    """A valid turn: the user's question, tool rounds as ``rounds`` says, a final answer."""
    turn = [user(f"question {label}")]
    for calls, reverse, text_after in rounds:
        asked = [f"toolu_{next(ids)}" for _ in range(calls)]
        turn.append(
            assistant(
                said("Let me look."), *(call(tool_id, n=i) for i, tool_id in enumerate(asked))
            )
        )
        answers = [result(tool_id, f"answer {tool_id}") for tool_id in asked]
        if reverse:
            answers.reverse()
        turn.append(user(*answers, *([said("and more")] if text_after else [])))
    turn.append(assistant(said(f"answer {label}")))
    return turn


@given(rounds=ROUNDS, cut=st.integers(0, 100), blocks=st.integers(0, 100))
def test_close_turn_makes_any_prefix_of_a_valid_turn_valid(
    rounds: list[tuple[int, bool, bool]], cut: int, blocks: int
) -> None:
    turn = build_turn(rounds, itertools.count())
    check_history(turn)
    length = 1 + cut % len(turn)
    prefix = [dict(message) for message in turn[:length]]
    last = prefix[-1]
    if isinstance(last["content"], list):
        last["content"] = last["content"][: blocks % (len(last["content"]) + 1)]
    closed = close_turn(prefix, "cancelled")

    kept = [message for message in prefix if message["content"]]
    if len(kept) == 1:
        assert closed == []
        return
    check_history(closed)
    assert closed[0] == turn[0]
    for given_message, closed_message in zip(kept, closed, strict=False):
        assert closed_message["role"] == given_message["role"]
        added = [
            block for block in as_blocks(closed_message) if block not in as_blocks(given_message)
        ]
        assert [block for block in as_blocks(closed_message) if block not in added] == as_blocks(
            given_message
        )
        assert all(block["type"] == "tool_result" and block["is_error"] for block in added)
    for extra in closed[len(kept) :]:
        assert all(
            (block["type"] == "tool_result" and block["is_error"])
            or "turn was cancelled" in block["text"]
            for block in as_blocks(extra)
        )
    assert tool_ids(closed) == tool_ids(kept), "no tool call invented or lost"
    assert close_turn(closed, "cancelled again") == closed


# ---- drop_oldest_turns ----------------------------------------------------------------------


@given(sizes=st.lists(st.integers(1, 1000), max_size=30), budget=st.integers(0, 5000))
def test_drop_oldest_turns_keeps_the_longest_suffix_within_budget(
    sizes: list[int], budget: int
) -> None:
    turns = list(enumerate(sizes))
    kept = drop_oldest_turns(turns, budget, lambda turn: turn[1])
    assert kept == turns[len(turns) - len(kept) :], "a suffix, in order"
    if not turns:
        assert kept == []
        return
    assert kept[-1] == turns[-1], "the latest turn is always kept"
    total = sum(size for _, size in kept)
    assert total <= budget or len(kept) == 1
    if len(kept) < len(turns):
        older = turns[len(turns) - len(kept) - 1]
        assert total + older[1] > budget, "no older turn would have fitted"


def test_dropping_whole_turns_keeps_a_valid_history() -> None:
    ids = itertools.count()
    turns = [build_turn([(2, False, True)] * (n % 3), ids, str(n)) for n in range(12)]
    kept = drop_oldest_turns(turns, 600, estimate_tokens)
    assert 1 < len(kept) < len(turns)
    assert sum(map(estimate_tokens, kept)) <= 600
    check_history([message for turn in kept for message in turn])


def test_estimate_tokens_errs_high() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("x" * 300) == 100
    assert estimate_tokens(chat("q", "r")) >= len(json.dumps(chat("q", "r"))) // 4


# ---- the stateful test ----------------------------------------------------------------------


class TrioThread:
    """A Trio loop in a thread, so that a synchronous state machine can await the store."""

    def __init__(self) -> None:
        ready = threading.Event()

        async def main() -> None:
            self.token = trio.lowlevel.current_trio_token()
            self.stopping = trio.Event()
            ready.set()
            await self.stopping.wait()

        self.thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
        self.thread.start()
        ready.wait()

    def run(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        return trio.from_thread.run(function, *args, trio_token=self.token)

    def close(self) -> None:
        trio.from_thread.run_sync(self.stopping.set, trio_token=self.token)
        self.thread.join()


AGENTS = st.sampled_from(["llm", "helper"])
SESSIONS = st.sampled_from(["alice", "bob", "carol/telegram:1"])


def _breakages() -> dict[str, Callable[[list[Message]], list[Message]]]:
    return {
        "no final answer": lambda turn: turn[:-1],
        "no question": lambda turn: turn[1:],
        "the question twice": lambda turn: [turn[0], *turn],
        "a last call unanswered": lambda turn: [
            *turn[:-1],
            assistant(*turn[-1]["content"], call("toolu_unanswered")),
        ],
    }


BREAKAGES = _breakages()


class HistoryMachine(RuleBasedStateMachine):
    """The store against a dict of lists: appends, refusals, crashes, clears, reopenings."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = tempfile.mkdtemp(prefix="wactorz-history-")
        self.path = Path(self.directory) / "history.db"
        self.loop = TrioThread()
        self.ids = itertools.count()
        self.model: dict[tuple[str, str], list[list[Message]]] = {}
        self.turns_ever: dict[str, int] = {}
        self._open()

    def _open(self) -> None:
        self.opening = HistoryStore.open(self.path)
        self.store = self.loop.run(self.opening.__aenter__)

    def _close(self) -> None:
        self.loop.run(self.opening.__aexit__, None, None, None)

    def teardown(self) -> None:
        try:
            self._close()
            self.loop.close()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _append(self, agent: str, session: str, turn: list[Message]) -> Any:
        return self.loop.run(
            lambda: self.store.append_turn(
                agent, session, turn, usage=USAGE, cost=0.5, stop_reason="end_turn", model="m"
            )
        )

    @rule(agent=AGENTS, session=SESSIONS, rounds=ROUNDS)
    def append(self, agent: str, session: str, rounds: list[tuple[int, bool, bool]]) -> None:
        turn = build_turn(rounds, self.ids, f"{agent}/{session}")
        record = self._append(agent, session, turn)
        self.model.setdefault((agent, session), []).append(turn)
        self.turns_ever[agent] = self.turns_ever.get(agent, 0) + 1
        assert record.number == len(self.model[(agent, session)])

    @rule(
        agent=AGENTS, session=SESSIONS, rounds=ROUNDS, breakage=st.sampled_from(sorted(BREAKAGES))
    )
    def append_a_broken_turn(
        self, agent: str, session: str, rounds: list[tuple[int, bool, bool]], breakage: str
    ) -> None:
        turn = BREAKAGES[breakage](build_turn(rounds, self.ids))
        with pytest.raises(HistoryError):
            self._append(agent, session, turn)

    @precondition(lambda self: any(self.model.values()))
    @rule(data=st.data())
    def append_a_turn_reusing_a_tool_id(self, data: st.DataObject) -> None:
        (agent, session), turns = data.draw(
            st.sampled_from(sorted((key, turns) for key, turns in self.model.items() if turns))
        )
        used = [tool_id for turn in turns for tool_id in tool_ids(turn)]
        if not used:
            return
        turn = tool_turn(data.draw(st.sampled_from(used)))
        with pytest.raises(HistoryError) as refused:
            self._append(agent, session, turn)
        assert refused.value.rule == "tool-use-unique"

    @rule(agent=AGENTS, session=SESSIONS, rounds=ROUNDS)
    def crash_in_the_middle_of_an_append(
        self, agent: str, session: str, rounds: list[tuple[int, bool, bool]]
    ) -> None:
        connection = self.store._database.connection  # type: ignore[union-attr]
        connection.execute(
            "CREATE TEMP TRIGGER crash BEFORE INSERT ON turns "
            "BEGIN SELECT RAISE(ABORT, 'crash'); END"
        )
        try:
            with pytest.raises(HistoryFileError, match="crash"):
                self._append(agent, session, build_turn(rounds, self.ids))
        finally:
            connection.execute("DROP TRIGGER crash")

    @rule(agent=AGENTS, session=SESSIONS)
    def clear(self, agent: str, session: str) -> None:
        cleared = self.loop.run(self.store.clear, agent, session)
        assert cleared == len(self.model.pop((agent, session), []))

    @rule()
    def reopen(self) -> None:
        self._close()
        self._open()

    @invariant()
    def the_store_holds_what_the_model_says(self) -> None:
        for agent in ("llm", "helper"):
            for session in ("alice", "bob", "carol/telegram:1"):
                expected = [m for turn in self.model.get((agent, session), []) for m in turn]
                stored = self.loop.run(self.store.messages, agent, session)
                assert stored == expected
                if stored:
                    check_history(stored)
            summaries = self.loop.run(self.store.sessions, agent)
            assert {summary.session: summary.turns for summary in summaries} == {
                session: len(turns)
                for (owner, session), turns in self.model.items()
                if owner == agent and turns
            }
            totals = self.loop.run(self.store.totals, agent)
            assert totals.turns == self.turns_ever.get(agent, 0)


TestHistoryMachine = HistoryMachine.TestCase
TestHistoryMachine.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)


# ---- with the real SDK and the fake API -----------------------------------------------------


async def test_a_tool_loop_from_the_sdk_is_stored_and_sent_back_as_the_api_accepts_it() -> None:
    """What the SDK streams, kept with ``to_dict()``, goes back to the API unchanged."""
    import anthropic

    from wactorz.testing import FakeMessagesAPI, reply, text, tool_use

    async def turn(sdk: anthropic.AsyncAnthropic, history: list[Message]) -> Message:
        async with sdk.messages.stream(model="m", max_tokens=50, messages=history) as stream:
            final = await stream.get_final_message()
        return {"role": "assistant", "content": [block.to_dict() for block in final.content]}

    async with (
        FakeMessagesAPI() as api,
        anthropic.AsyncAnthropic(base_url=api.url, api_key="k", max_retries=0) as sdk,
        HistoryStore.open(":memory:") as store,
    ):
        api.enqueue(reply(text("Checking."), tool_use("weather", {"city": "Oslo"})), text("Cold."))
        api.enqueue(text("You are welcome."))
        question = user("Weather in Oslo?")
        asked = await turn(sdk, [question])
        answers = user(result(asked["content"][1]["id"], "-5 °C"))
        answered = await turn(sdk, [question, asked, answers])
        await append(store, [question, asked, answers, answered])
        history = await store.messages("llm", "s1")
        assert history == [question, asked, answers, answered]
        await turn(sdk, [*history, user("Thanks!")])
    assert [len(request.messages) for request in api.requests] == [1, 3, 5]
    assert api.requests[2].messages[:4] == history

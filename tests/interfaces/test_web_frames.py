"""Reading client frames: the hand-written fast path accepts only what the schemas accept."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wactorz.interfaces.web.protocol import (
    REQUEST_SCHEMAS,
    Ask,
    Chat,
    Command,
    FrameError,
    parse_frame,
    plainly_valid,
)

_VALIDATORS = {kind: jsonschema.Draft202012Validator(s) for kind, s in REQUEST_SCHEMAS.items()}

_ids = (
    st.integers() | st.text(min_size=1, max_size=130) | st.sampled_from(["", 1.0, 2.5, True, None])
)
_texts = st.text(max_size=12) | st.sampled_from(["", "/", "/status", "a\n", "x" * 129, "é"])
_sessions = st.from_regex(r"[A-Za-z0-9_.\-]{0,130}", fullmatch=True) | _texts
_numbers = st.integers(-5, 400) | st.floats(-1, 400, allow_nan=False) | st.booleans()
_anything = (
    _texts
    | _numbers
    | st.none()
    | st.lists(_texts, max_size=3)
    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
)
_LIKELY = {
    "text": _texts,
    "session": _sessions,
    "target": st.none() | _texts,
    "topics": st.lists(_texts, max_size=34),
    "actor": _texts,
    "message": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    "timeout": _numbers,
    "request": _ids,
}
"""Per key, values near the schema's edges, valid and not."""


@st.composite
def _frames(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    kind = draw(st.sampled_from(sorted(REQUEST_SCHEMAS)))
    frame: dict[str, Any] = {"type": kind}
    if draw(st.integers(0, 9)):
        frame["id"] = draw(_ids)
    for key in REQUEST_SCHEMAS[kind]["properties"]:
        if key not in ("type", "id") and draw(st.integers(0, 3)):
            frame[key] = draw(_LIKELY[key] if draw(st.integers(0, 5)) else _anything)
    if not draw(st.integers(0, 9)):
        frame[draw(st.sampled_from(["x", "text", "actor"]))] = draw(_anything)
    return kind, frame


@settings(max_examples=3000)
@given(_frames())
def test_the_fast_path_never_accepts_what_the_schema_refuses(case: tuple[str, Any]) -> None:
    kind, frame = case
    if plainly_valid(kind, frame):
        assert list(_VALIDATORS[kind].iter_errors(frame)) == [], frame


def test_the_frames_clients_send_every_day_take_the_fast_path() -> None:
    everyday = [
        {"type": "ask", "id": 7, "actor": "echo", "message": {"n": 1}},
        {"type": "ask", "id": "p3", "actor": "llm", "message": {}, "timeout": 2.5},
        {"type": "chat", "id": "p1", "text": "hi", "session": "sQ2-x_y.z", "target": None},
        {"type": "command", "id": "p2", "text": "/stop worker", "session": "s1"},
        {"type": "subscribe", "id": 1, "topics": ["tree", "events", "shared/#"]},
        {"type": "unsubscribe", "id": 2, "topics": ["alerts"]},
        {"type": "cancel", "id": 3, "request": "p1"},
        {"type": "snapshot", "id": 4},
    ]
    for frame in everyday:
        assert plainly_valid(frame["type"], frame), frame


def test_unusual_but_valid_frames_are_still_accepted_by_the_schema() -> None:
    # An integral float is a JSON Schema integer; "$" lets a final newline through.
    ask = parse_frame('{"type": "ask", "id": 1.0, "actor": "a", "message": {}}', 1000)
    assert isinstance(ask, Ask) and ask.id == 1.0
    chat = parse_frame('{"type": "chat", "id": 1, "text": "t", "session": "s\\n"}', 1000)
    assert isinstance(chat, Chat) and chat.session == "s\n"


def test_refusals_still_name_the_key_at_fault() -> None:
    for data, words in (
        ('{"type": "command", "id": 1, "text": "status"}', "starts with '/'"),
        ('{"type": "ask", "id": 1, "actor": "a"}', "'message' is a required key"),
        ('{"type": "ask", "id": 1, "actor": "a", "message": {}, "extra": 1}', "unknown key"),
        ('{"type": "ask", "id": 1, "actor": "a", "message": {}, "timeout": 0}', "timeout"),
    ):
        with pytest.raises(FrameError) as refused:
            parse_frame(data, 1000)
        assert refused.value.code == "bad_frame" and words in str(refused.value), data
    command = parse_frame('{"type": "command", "id": 1, "text": "/status"}', 1000)
    assert isinstance(command, Command)

"""The WebSocket protocol's frames: what a client may send, checked at the door, and what it gets.

Every frame is one JSON object in a text message, with a ``type``. A client's frames are
requests and each carries an ``id`` (a string of 1 to 128 characters, or an integer) that
the server's answers repeat. `parse_frame` turns a text message into one of the request
classes below, or raises `FrameError` with a ``code`` a program can test and a sentence
for the person reading it; the JSON Schemas in `REQUEST_SCHEMAS` are the rules (checked
by jsonschema, so the error names the key). Everyday frames are recognised first by
`plainly_valid`, a hand-written check that accepts only what the schemas accept, because
jsonschema costs as much as the rest of an ask's trip through the server. The server's
frames are built by the functions at the end (`hello`, `reply`, `error`...) and encoded
once by `encode_frame`.

``docs/websocket.md`` documents every frame; `REQUEST_SCHEMAS` and that page must agree
(a test reads both). Nothing here touches the network or the actor system.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeAlias, final

import attrs
import jsonschema
import jsonschema.exceptions

from wactorz.core.errors import brief_repr

__all__ = [
    "PROTOCOL_VERSION",
    "REQUEST_SCHEMAS",
    "STREAM_NAMES",
    "Ask",
    "Cancel",
    "Chat",
    "Command",
    "Describe",
    "FrameError",
    "Request",
    "RequestId",
    "Snapshot",
    "Subscribe",
    "Unsubscribe",
    "encode_frame",
    "error_frame",
    "parse_frame",
    "plainly_valid",
]

PROTOCOL_VERSION: Final = 1
"""Sent in ``hello``; raised when a change would break a client written for the previous one."""

STREAM_NAMES: Final = ("tree", "events", "metrics", "alerts")
"""The names ``subscribe`` takes for the server's own feeds; any other topic is a local
topic filter (``shared/#``)."""

RequestId: TypeAlias = str | int
"""A request's ``id``, as the client gave it."""

MAX_ID_LENGTH: Final = 128
MAX_TEXT_LENGTH: Final = 100_000
MAX_TOPICS: Final = 32
MAX_ASK_TIMEOUT_S: Final = 300.0

_ID: Final[dict[str, Any]] = {
    "anyOf": [
        {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH},
        {"type": "integer"},
    ]
}
_NAME: Final[dict[str, Any]] = {"type": "string", "minLength": 1, "maxLength": 128}
_SESSION: Final[dict[str, Any]] = {
    "type": "string",
    "pattern": "^[A-Za-z0-9_.\\-]{1,128}$",
}
_TOPICS: Final[dict[str, Any]] = {
    "type": "array",
    "minItems": 1,
    "maxItems": MAX_TOPICS,
    "items": {"type": "string", "minLength": 1, "maxLength": 1024},
}


def _request_schema(
    properties: Mapping[str, Any], required: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"type": {"type": "string"}, "id": _ID, **properties},
        "required": ["type", "id", *required],
        "additionalProperties": False,
    }


REQUEST_SCHEMAS: Final[Mapping[str, Mapping[str, Any]]] = {
    "chat": _request_schema(
        {
            "text": {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH},
            "session": _SESSION,
            "target": {"anyOf": [_NAME, {"type": "null"}]},
        },
        ("text",),
    ),
    "command": _request_schema(
        {
            "text": {"type": "string", "pattern": "^/", "maxLength": MAX_TEXT_LENGTH},
            "session": _SESSION,
        },
        ("text",),
    ),
    "subscribe": _request_schema({"topics": _TOPICS}, ("topics",)),
    "unsubscribe": _request_schema({"topics": _TOPICS}, ("topics",)),
    "ask": _request_schema(
        {
            "actor": _NAME,
            "message": {"type": "object"},
            "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_ASK_TIMEOUT_S},
        },
        ("actor", "message"),
    ),
    "cancel": _request_schema({"request": _ID}, ("request",)),
    "snapshot": _request_schema({}),
    "describe": _request_schema({"actor": _NAME}, ("actor",)),
}
"""The JSON Schema of each request, by ``type``. Keys a schema does not list are refused."""

_VALIDATORS: Final = {
    kind: jsonschema.Draft202012Validator(schema) for kind, schema in REQUEST_SCHEMAS.items()
}


# ---- the fast path: the frames clients send every day, checked by hand ---------------------------
#
# jsonschema takes about 70 µs to pass a small frame, as long as the rest of an ask's trip
# through the server. These checks accept only what the schemas accept (a test compares them
# on generated frames) and decline anything unusual; a declined frame goes to jsonschema,
# which has the last word and says what is wrong.


def _is_id(value: object) -> bool:
    return type(value) is int or (type(value) is str and 0 < len(value) <= MAX_ID_LENGTH)


def _is_name(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= 128


def _is_chat_text(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= MAX_TEXT_LENGTH


def _is_command_text(value: object) -> bool:
    return type(value) is str and value.startswith("/") and len(value) <= MAX_TEXT_LENGTH


_PLAIN_SESSION: Final = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


def _is_session(value: object) -> bool:
    return type(value) is str and _PLAIN_SESSION.fullmatch(value) is not None


def _is_target(value: object) -> bool:
    return value is None or _is_name(value)


def _are_topics(value: object) -> bool:
    return (
        type(value) is list
        and 0 < len(value) <= MAX_TOPICS
        and all(type(topic) is str and 0 < len(topic) <= 1024 for topic in value)
    )


def _is_message(value: object) -> bool:
    return type(value) is dict


def _is_timeout(value: object) -> bool:
    return (type(value) is int or type(value) is float) and 0 < value <= MAX_ASK_TIMEOUT_S


_PLAIN_KEYS: Final[Mapping[str, Mapping[str, Callable[[object], bool]]]] = {
    "chat": {"text": _is_chat_text, "session": _is_session, "target": _is_target},
    "command": {"text": _is_command_text, "session": _is_session},
    "subscribe": {"topics": _are_topics},
    "unsubscribe": {"topics": _are_topics},
    "ask": {"actor": _is_name, "message": _is_message, "timeout": _is_timeout},
    "cancel": {"request": _is_id},
    "snapshot": {},
    "describe": {"actor": _is_name},
}
"""Per request type, its keys besides ``type`` and ``id`` and a check of each value."""


def plainly_valid(kind: str, frame: Mapping[str, object]) -> bool:
    """Whether ``frame`` (whose ``type`` is ``kind``, a known one) certainly satisfies its
    schema. False means "ask jsonschema", not "invalid": unusual but valid frames (an ``id``
    of ``1.0``, a session ending in a newline) are declined here and accepted there."""
    checks = _PLAIN_KEYS[kind]
    for key, value in frame.items():
        if key == "type":
            continue
        check = _is_id if key == "id" else checks.get(key)
        if check is None or not check(value):
            return False
    return "id" in frame and all(key in frame for key in _REQUIRED[kind])


_REQUIRED: Final[Mapping[str, tuple[str, ...]]] = {
    kind: tuple(key for key in schema["required"] if key not in ("type", "id"))
    for kind, schema in REQUEST_SCHEMAS.items()
}


# ---- requests ---------------------------------------------------------------------------------


@final
@attrs.frozen
class Chat:
    """Text for the MainActor: it routes it (``@name ...`` to one actor, else to an agent)."""

    id: RequestId
    text: str
    session: str | None = None
    """The conversation; None for the connection's own (``hello``'s ``session``)."""
    target: str | None = None
    """An actor's name to talk to directly, or None to let the MainActor choose."""


@final
@attrs.frozen
class Command:
    """A slash command (``/status``) for the MainActor, sent to it as chat text."""

    id: RequestId
    text: str
    session: str | None = None


@final
@attrs.frozen
class Subscribe:
    """Start receiving feeds (`STREAM_NAMES`) or messages published on local topic filters."""

    id: RequestId
    topics: tuple[str, ...] = attrs.field(converter=tuple)


@final
@attrs.frozen
class Unsubscribe:
    """Stop receiving what `Subscribe` started."""

    id: RequestId
    topics: tuple[str, ...] = attrs.field(converter=tuple)


@final
@attrs.frozen
class Ask:
    """Ask one actor (by name or id) and get its answer as a ``reply``."""

    id: RequestId
    actor: str
    message: dict[str, Any]
    timeout: float | None = None
    """Seconds to wait for the answer; None for the server's default."""


@final
@attrs.frozen
class Cancel:
    """Cancel the request with id ``request`` (a chat, a command or an ask still running)."""

    id: RequestId
    request: RequestId


@final
@attrs.frozen
class Snapshot:
    """Send the whole actor tree again (after a missed delta); needs a ``tree`` subscription."""

    id: RequestId


@final
@attrs.frozen
class Describe:
    """What the dashboard's details panel shows of one actor (by name or id): its class,
    capabilities, tools, supervisor, statistics, and why the page may not stop it."""

    id: RequestId
    actor: str


Request: TypeAlias = Chat | Command | Subscribe | Unsubscribe | Ask | Cancel | Snapshot | Describe

_CLASSES: Final[Mapping[str, type[Request]]] = {
    "chat": Chat,
    "command": Command,
    "subscribe": Subscribe,
    "unsubscribe": Unsubscribe,
    "ask": Ask,
    "cancel": Cancel,
    "snapshot": Snapshot,
    "describe": Describe,
}


# ---- reading a frame ---------------------------------------------------------------------------


class FrameError(Exception):
    """A frame the server refuses: ``code`` for programs, ``str()`` for people.

    ``request_id`` is the frame's ``id`` when it had a usable one (the error frame repeats
    it), else None.
    """

    def __init__(self, code: str, text: str, request_id: RequestId | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.request_id = request_id


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant)
"""Made once: `json.loads` with options makes a decoder per call."""


def parse_frame(data: str | bytes, max_bytes: int) -> Request:
    """Read one WebSocket message from a client, or raise `FrameError` saying what is wrong.

    Codes: ``binary`` (a binary message), ``too_large`` (over ``max_bytes`` of UTF-8),
    ``bad_json`` (not JSON), ``bad_frame`` (not an object, or a key missing, unknown or of
    the wrong type), ``unknown_type``.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        raise FrameError("binary", "binary messages are not accepted: send JSON as text")
    # A character is at most 4 bytes of UTF-8: most frames need no encoding to be measured.
    if len(data) > max_bytes or (
        len(data) * 4 > max_bytes and len(data.encode("utf-8", "surrogatepass")) > max_bytes
    ):
        raise FrameError(
            "too_large",
            f"the frame is over {max_bytes} bytes; send smaller messages "
            "(long text can go in several chat frames)",
        )
    try:
        frame = _DECODER.decode(data)
    except RecursionError:
        raise FrameError("bad_json", "the frame is nested too deeply") from None
    except ValueError as exc:
        raise FrameError("bad_json", f"the frame is not valid JSON ({exc})") from None
    if not isinstance(frame, dict):
        raise FrameError(
            "bad_frame",
            f'a frame is a JSON object like {{"type": "chat", "id": 1, "text": "hi"}}, '
            f"not {brief_repr(frame, 60)}",
        )
    request_id = _usable_id(frame.get("id"))
    kind = frame.get("type")
    if not isinstance(kind, str):
        raise FrameError(
            "bad_frame",
            f'the frame has no "type" string; one of: {", ".join(_CLASSES)}',
            request_id,
        )
    validator = _VALIDATORS.get(kind)
    if validator is None:
        raise FrameError(
            "unknown_type",
            f"unknown frame type {brief_repr(kind, 40)}; one of: {', '.join(_CLASSES)}",
            request_id,
        )
    if not plainly_valid(kind, frame):
        problem = jsonschema.exceptions.best_match(validator.iter_errors(frame))
        if problem is not None:
            raise FrameError("bad_frame", f"{kind}: {_describe(problem)}", request_id)
    fields = {key: value for key, value in frame.items() if key != "type"}
    return _CLASSES[kind](**fields)


def _usable_id(value: object) -> RequestId | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) or (isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH):
        return value
    return None


def _describe(problem: jsonschema.exceptions.ValidationError) -> str:
    """One sentence naming the key at fault, for a schema violation."""
    path = ".".join(str(step) for step in problem.absolute_path)
    if problem.validator == "additionalProperties" and isinstance(problem.instance, dict):
        schema = problem.schema if isinstance(problem.schema, Mapping) else {}
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(problem.instance) - set(allowed))
        return (
            f"unknown key {', '.join(brief_repr(key, 40) for key in extra)} "
            f"(known: {', '.join(allowed)})"
        )
    if problem.validator == "required":
        return problem.message.replace("property", "key")
    if problem.validator == "pattern" and path == "text":
        return "a command's text starts with '/' (send other text as chat)"
    if problem.validator == "pattern" and path == "session":
        return "session is 1 to 128 letters, digits, '_', '.' or '-'"
    message = problem.message
    if len(message) > 200:
        message = message[:200] + "..."
    return f"{path}: {message}" if path else message


# ---- the server's frames -------------------------------------------------------------------------

_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
"""Made once: `json.dumps` with options makes an encoder per call."""


def encode_frame(frame: Mapping[str, Any]) -> str:
    """Compact JSON for a frame; `ValueError` or `TypeError` for what JSON cannot carry."""
    return _ENCODER.encode(frame)


def error_frame(code: str, text: str, request_id: RequestId | None = None) -> dict[str, Any]:
    """``{"type": "error", "id", "code", "error"}``: a request failed, or a frame was refused."""
    return {"type": "error", "id": request_id, "code": code, "error": text}

"""The inbox request format: what a request over MQTT must look like, and how it is refused.

A request is a JSON object ``{"message": {...}, "reply_to": "<topic>", "correlation_id":
...}`` (only ``message`` is required). `parse_request` turns a payload into a `Request`
or raises `RequestRefused`, whose text is written for the sender and whose ``code`` is
one word a program can test (``docs/mqtt.md`` lists them). Nothing here touches the
network or the actor system, so every rule can be tested on bytes alone.
"""

from __future__ import annotations

import json
from typing import Any, Final, final

import attrs

from wactorz.core.errors import (
    ActorCrashed,
    ActorNotFound,
    ActorStopped,
    AmbiguousName,
    AskTimeout,
    InvalidMessage,
    MailboxFull,
    MessageRejected,
    NodeDown,
    brief_repr,
)
from wactorz.core.topics import topic_problem

__all__ = [
    "REQUEST_KEYS",
    "Request",
    "RequestRefused",
    "encode_json",
    "error_code",
    "json_kind",
    "parse_request",
    "reply_problem",
]

REQUEST_KEYS: Final = ("message", "reply_to", "correlation_id", "id")
"""The keys a request may have."""

_JSON_SEPARATORS: Final = (",", ":")


@final
@attrs.frozen
class Request:
    """A well-formed request: the message for the actor, and where its answer goes.

    ``reply_to`` None makes it a tell; ``correlation_id`` is any JSON value, echoed back;
    ``id``, when given, makes a repeated request be carried out once.
    """

    message: dict[str, Any]
    reply_to: str | None = None
    correlation_id: object = None
    id: str | None = None
    """Given by a client that may send the request again: a request with an id already
    taken is not carried out twice (an ask's answer is sent again instead)."""


class RequestRefused(Exception):
    """A request that cannot be carried out; ``str()`` says why, for whoever sent it.

    ``code`` names the kind of failure; ``reply_to`` and ``correlation_id`` say where to
    send the error and how to label it (both None when the request was too broken to
    tell, or when they were not given).
    """

    def __init__(
        self,
        code: str,
        text: str,
        reply_to: str | None = None,
        correlation_id: object = None,
    ) -> None:
        super().__init__(text)
        self.code = code
        self.reply_to = reply_to
        self.correlation_id = correlation_id

    def payload(self) -> bytes:
        """The error as published to ``reply_to``."""
        error = {"error": str(self), "code": self.code, "correlation_id": self.correlation_id}
        try:
            return encode_json(error)
        except (TypeError, ValueError):  # a correlation id JSON cannot carry back
            return encode_json({**error, "correlation_id": None})


def parse_request(payload: bytes, max_bytes: int, reply_prefix: str) -> Request:
    """Read an inbox payload, or raise `RequestRefused` saying what is wrong with it.

    Payloads over ``max_bytes`` are refused before they are parsed (so without a
    ``reply_to``); so are payloads that are not UTF-8 (JSON's other encodings
    included). A ``reply_to`` must be a topic under ``reply_prefix`` that a broker
    accepts (`reply_problem`); one that is not is never published to, so that
    refusal goes unanswered. Once a usable ``reply_to`` is known, later refusals carry
    it and the ``correlation_id``, so that the sender hears about its mistake.
    """
    if len(payload) > max_bytes:
        raise RequestRefused(
            "too_large",
            f"the request is {len(payload)} bytes, over mqtt.max_payload_bytes={max_bytes}",
        )
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestRefused(
            "bad_request", f"the request is not UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RequestRefused("bad_request", f"the request is not valid JSON ({exc})") from None
    except RecursionError:
        raise RequestRefused("bad_request", "the request is nested too deeply") from None
    if not isinstance(data, dict):
        raise RequestRefused(
            "bad_request",
            f"the request is a JSON {json_kind(data)}; send an object like "
            '{"message": {...}, "reply_to": "<topic>", "correlation_id": "<id>"}',
        )
    reply_to = data.get("reply_to")
    correlation_id = data.get("correlation_id")
    if reply_to is not None:
        problem = reply_problem(reply_to, reply_prefix)
        if problem is not None:
            raise RequestRefused("bad_request", f"unusable reply_to: {problem}")
    unknown = sorted(set(data) - set(REQUEST_KEYS))
    if unknown:
        shown = ", ".join(brief_repr(key) for key in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise RequestRefused(
            "bad_request",
            f"unknown key{'s' if len(unknown) > 1 else ''} {shown}{more} "
            f"in the request (known: {', '.join(REQUEST_KEYS)})",
            reply_to,
            correlation_id,
        )
    message = data.get("message")
    if not isinstance(message, dict):
        what = "missing" if "message" not in data else f"a JSON {json_kind(message)}"
        raise RequestRefused(
            "bad_request",
            f'"message" is {what}: it must be a JSON object, the message for the actor',
            reply_to,
            correlation_id,
        )
    request_id = data.get("id")
    if request_id is not None and not (isinstance(request_id, str) and 0 < len(request_id) <= 128):
        raise RequestRefused(
            "bad_request",
            '"id" must be a string of 1 to 128 characters, unique to the request (a UUID)',
            reply_to,
            correlation_id,
        )
    return Request(message, reply_to, correlation_id, request_id)


def reply_problem(reply_to: object, reply_prefix: str) -> str | None:
    """Why ``reply_to`` cannot receive answers, or None if it can.

    Answers go only under ``reply_prefix`` (``mqtt.reply_prefix``), never into the
    node's own topics, where a forged reply could pass for a status or a manifest.
    """
    if not isinstance(reply_to, str):
        return f"it is a JSON {json_kind(reply_to)}, not a topic"
    if not reply_to.startswith(f"{reply_prefix}/") or len(reply_to) == len(reply_prefix) + 1:
        return f"replies go to topics under {reply_prefix}/, not to {brief_repr(reply_to)}"
    if reply_to.endswith("/"):
        return f"{brief_repr(reply_to)} ends with an empty level"
    problem = topic_problem(reply_to)
    if problem is not None:
        return f"{brief_repr(reply_to)} is not a valid topic: {problem}"
    return None


_ERROR_CODES: Final[tuple[tuple[type[Exception], str], ...]] = (
    (ActorNotFound, "not_found"),
    (AmbiguousName, "ambiguous"),
    (NodeDown, "node_down"),
    (AskTimeout, "timeout"),
    (ActorCrashed, "crashed"),
    (ActorStopped, "stopped"),
    (MailboxFull, "mailbox_full"),
    (InvalidMessage, "bad_request"),
    (MessageRejected, "rejected"),
)


def error_code(exc: BaseException) -> str:
    """The ``code`` of an error reply for a runtime error raised by a send or an ask
    (``unavailable`` for any other: the system is shutting down)."""
    for kind, code in _ERROR_CODES:
        if isinstance(exc, kind):
            return code
    return "unavailable"


def encode_json(value: object) -> bytes:
    """Compact UTF-8 JSON; raises ValueError or TypeError for what JSON cannot carry
    (NaN and infinities included: many JSON readers reject them)."""
    return json.dumps(value, separators=_JSON_SEPARATORS, allow_nan=False).encode()


def json_kind(value: object) -> str:
    """What JSON calls the type of a decoded ``value``: object, array, string, ..."""
    kinds = {list: "array", str: "string", bool: "boolean", type(None): "null", dict: "object"}
    return kinds.get(type(value), "number")

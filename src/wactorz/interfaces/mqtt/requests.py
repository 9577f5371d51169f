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
    AskTimeout,
    InvalidMessage,
    MailboxFull,
)

__all__ = [
    "REQUEST_KEYS",
    "Request",
    "RequestRefused",
    "encode_json",
    "error_code",
    "json_kind",
    "parse_request",
]

REQUEST_KEYS: Final = ("message", "reply_to", "correlation_id")
"""The keys a request may have."""

_JSON_SEPARATORS: Final = (",", ":")


@final
@attrs.frozen
class Request:
    """A well-formed request: the message for the actor, and where its answer goes.

    ``reply_to`` None makes it a tell; ``correlation_id`` is any JSON value, echoed back.
    """

    message: dict[str, Any]
    reply_to: str | None = None
    correlation_id: object = None


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


def parse_request(payload: bytes, max_bytes: int) -> Request:
    """Read an inbox payload, or raise `RequestRefused` saying what is wrong with it.

    Payloads over ``max_bytes`` are refused before they are parsed (so without a
    ``reply_to``). Once ``reply_to`` and ``correlation_id`` are known, later refusals
    carry them, so that the sender hears about its mistake.
    """
    if len(payload) > max_bytes:
        raise RequestRefused(
            "too_large",
            f"the request is {len(payload)} bytes, over mqtt.max_payload_bytes={max_bytes}",
        )
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
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
    if reply_to is not None and not _is_topic_name(reply_to):
        raise RequestRefused(
            "bad_request",
            f"reply_to must be a topic without wildcards, not {reply_to!r}",
            correlation_id=correlation_id,
        )
    unknown = sorted(set(data) - set(REQUEST_KEYS))
    if unknown:
        raise RequestRefused(
            "bad_request",
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"in the request (known: {', '.join(REQUEST_KEYS)})",
            reply_to,
            correlation_id,
        )
    message = data.get("message")
    if not isinstance(message, dict):
        shown = "missing" if "message" not in data else f"a JSON {json_kind(message)}"
        raise RequestRefused(
            "bad_request",
            f'"message" is {shown}: it must be a JSON object, the message for the actor',
            reply_to,
            correlation_id,
        )
    return Request(message, reply_to, correlation_id)


def error_code(exc: BaseException) -> str:
    """The ``code`` of an error reply for a runtime error raised by a send or an ask."""
    if isinstance(exc, ActorNotFound):
        return "not_found"
    if isinstance(exc, AskTimeout):
        return "timeout"
    if isinstance(exc, ActorCrashed):
        return "crashed"
    if isinstance(exc, ActorStopped):
        return "stopped"
    if isinstance(exc, MailboxFull):
        return "mailbox_full"
    if isinstance(exc, InvalidMessage):
        return "bad_request"
    return "unavailable"


def encode_json(value: object) -> bytes:
    """Compact UTF-8 JSON; raises ValueError or TypeError for what JSON cannot carry
    (NaN and infinities included: many JSON readers reject them)."""
    return json.dumps(value, separators=_JSON_SEPARATORS, allow_nan=False).encode()


def json_kind(value: object) -> str:
    """What JSON calls the type of a decoded ``value``: object, array, string, ..."""
    kinds = {list: "array", str: "string", bool: "boolean", type(None): "null", dict: "object"}
    return kinds.get(type(value), "number")


def _is_topic_name(value: object) -> bool:
    return (
        isinstance(value, str)
        and value != ""
        and "+" not in value
        and "#" not in value
        and "\x00" not in value
    )

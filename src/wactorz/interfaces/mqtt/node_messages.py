"""What nodes say to each other over the broker: the topics and payloads of the node protocol.

Every node has these topics, under the bridge's ``topic_prefix`` (written ``<prefix>``):

- ``<prefix>/nodes/<node>/status`` (retained): ``online`` / ``offline``, its incarnation
  (``boot``), how often it beats and which kinds of actor it lets others start;
- ``<prefix>/nodes/<node>/alive``: its heartbeat, every ``mqtt.heartbeat_s``;
- ``<prefix>/nodes/<node>/inbox``: requests from other nodes (`NodeRequest`);
- ``<prefix>/nodes/<node>/replies``: answers to the requests it made (`NodeReply`);
- ``<prefix>/nodes/<node>/desired`` (retained): the actors other nodes asked it to run,
  which it starts again after a restart.

A request names what it wants in ``op``: ``tell`` and ``ask`` carry a message for the
local actor ``to`` (a name or an id) from ``from`` (the sending actor's id, or null);
``spawn`` asks for an actor of a registered ``kind`` named ``name``; ``stop`` for the end
of one it started that way. Every request has an ``id``, unique to the sending node, which
its answer carries back and by which duplicates are recognised. Everything here is pure:
payloads in and out, checked, so that a node never acts on a request it cannot read, and
nothing in a request is ever run as code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Literal, TypeAlias, final

import attrs

from wactorz.core.actor import check_name
from wactorz.core.ids import is_node_name, is_wid
from wactorz.interfaces.mqtt.requests import RequestRefused, encode_json, json_kind

__all__ = [
    "NODE_TOPIC_LEVELS",
    "PROTOCOL_VERSION",
    "NodeReply",
    "NodeRequest",
    "Op",
    "node_topic",
    "parse_node_reply",
    "parse_node_request",
    "parse_topic",
]

PROTOCOL_VERSION: Final = 1
"""The ``v`` of every node request and reply; a node refuses versions it does not speak."""

Op: TypeAlias = Literal["tell", "ask", "spawn", "stop"]
_OPS: Final = ("tell", "ask", "spawn", "stop")

NODE_TOPIC_LEVELS: Final = frozenset({"status", "alive", "inbox", "replies", "desired"})
"""The last levels of the node protocol's topics (``<prefix>/nodes/<node>/<level>``)."""

_MAX_ID_LENGTH: Final = 128
_REQUEST_KEYS: Final = frozenset({"v", "id", "node", "op", "to", "from", "message", "kind", "name"})


def node_topic(prefix: str, node: str, level: str) -> str:
    """``<prefix>/nodes/<node>/<level>``."""
    return f"{prefix}/nodes/{node}/{level}"


def parse_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """``(node, level)`` of a node-protocol topic under ``prefix``, else None."""
    head = f"{prefix}/nodes/"
    if not topic.startswith(head):
        return None
    node, slash, level = topic[len(head) :].partition("/")
    if not slash or level not in NODE_TOPIC_LEVELS or not is_node_name(node):
        return None
    return node, level


@final
@attrs.frozen
class NodeRequest:
    """A request from another node, checked: see the module's description of each field."""

    id: str
    node: str
    op: Op
    to: str | None = None
    sender: str | None = None
    message: dict[str, Any] | None = None
    kind: str | None = None
    name: str | None = None

    def to_json(self) -> bytes:
        """The request as published on the target node's inbox."""
        data: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": self.id, "node": self.node}
        data["op"] = self.op
        if self.op in ("tell", "ask"):
            data.update(to=self.to, message=self.message)
            data["from"] = self.sender
        else:
            data["name"] = self.name
            if self.op == "spawn":
                data["kind"] = self.kind
        return encode_json(data)


@final
@attrs.frozen
class NodeReply:
    """An answer to a node request: ``reply`` (any JSON value), or an ``error`` sentence and
    its ``code`` (the codes of ``docs/mqtt.md``)."""

    id: str
    reply: object = None
    error: str | None = None
    code: str | None = None

    def to_json(self) -> bytes:
        """The answer as published on the asking node's replies topic.

        Raises TypeError or ValueError if ``reply`` is not JSON (the caller answers with a
        ``bad_reply`` error instead).
        """
        if self.error is None:
            return encode_json({"v": PROTOCOL_VERSION, "id": self.id, "reply": self.reply})
        return encode_json(
            {"v": PROTOCOL_VERSION, "id": self.id, "error": self.error, "code": self.code}
        )


def _load_object(payload: bytes, max_bytes: int, what: str) -> dict[str, Any]:
    if len(payload) > max_bytes:
        raise RequestRefused(
            "too_large", f"the {what} is {len(payload)} bytes, over mqtt.max_payload_bytes"
        )
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise RequestRefused("bad_request", f"the {what} is not UTF-8 JSON") from None
    if not isinstance(data, dict):
        raise RequestRefused(
            "bad_request", f"the {what} is a JSON {json_kind(data)}, not an object"
        )
    if data.get("v") != PROTOCOL_VERSION:
        raise RequestRefused(
            "bad_request",
            f"the {what} is of node protocol version {data.get('v')!r}; this node speaks "
            f"{PROTOCOL_VERSION}: run the same wactorz version on every node",
        )
    return data


def _message_id(data: Mapping[str, Any], what: str) -> str:
    value = data.get("id")
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID_LENGTH:
        raise RequestRefused(
            "bad_request", f"the {what}'s id is not a string of 1 to 128 characters"
        )
    return value


def parse_node_request(payload: bytes, max_bytes: int) -> NodeRequest:
    """Read a request from another node's inbox payload, or raise `RequestRefused`.

    ``RequestRefused.correlation_id`` carries the request's id and ``reply_to`` its node
    once they are known, so that the refusal can be answered.
    """
    data = _load_object(payload, max_bytes, "request")
    request_id = _message_id(data, "request")
    node = data.get("node")
    if not is_node_name(node):
        raise RequestRefused("bad_request", "the request does not name the node it comes from")
    assert isinstance(node, str)

    def refuse(text: str) -> RequestRefused:
        return RequestRefused("bad_request", text, node, request_id)

    unknown = sorted(set(data) - _REQUEST_KEYS)
    if unknown:
        raise refuse(f"unknown keys in the request: {', '.join(unknown[:5])}")
    op = data.get("op")
    if op not in _OPS:
        raise refuse(f"unknown op {op!r}: one of {', '.join(_OPS)}")
    if op in ("tell", "ask"):
        to, sender, message = data.get("to"), data.get("from"), data.get("message")
        if not isinstance(to, str) or not to:
            raise refuse("the request's 'to' is not an actor's name or id")
        if sender is not None and not is_wid(sender):
            raise refuse("the request's 'from' is not an actor id")
        if not isinstance(message, dict):
            raise refuse(f"the request's message is a JSON {json_kind(message)}, not an object")
        return NodeRequest(request_id, node, op, to=to, sender=sender, message=message)
    name = data.get("name")
    try:
        check_name(name)  # type: ignore[arg-type]
    except ValueError as exc:
        raise refuse(str(exc)) from None
    kind = data.get("kind")
    if op == "spawn" and (not isinstance(kind, str) or not kind):
        raise refuse("a spawn request names the 'kind' of actor to start")
    return NodeRequest(
        request_id, node, op, name=name, kind=kind if isinstance(kind, str) else None
    )


def parse_node_reply(payload: bytes, max_bytes: int) -> NodeReply:
    """Read an answer from a replies payload, or raise `RequestRefused` (never answered)."""
    data = _load_object(payload, max_bytes, "reply")
    reply_id = _message_id(data, "reply")
    error = data.get("error")
    if error is None:
        return NodeReply(reply_id, reply=data.get("reply"))
    code = data.get("code")
    if not isinstance(error, str) or not isinstance(code, str):
        raise RequestRefused("bad_request", "an error reply has a text 'error' and a 'code'")
    return NodeReply(reply_id, error=error, code=code)

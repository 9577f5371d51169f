"""Messages between nodes: remote tells and asks going out, other nodes' requests coming in.

`NodeRouter` is the `wactorz.core.remote.RemoteRouter` the MQTT bridge attaches to its actor
system for as long as it runs. Going out, it resolves an address against the directory
(`wactorz.interfaces.mqtt.cluster.Cluster`) and hands the system a `RemoteActor` stand-in
per address, whose mailbox it drains: each tell becomes one request on the target node's
inbox, each ask a request whose answer it matches by id and hands to the asker's reply
slot. Coming in, it carries out the requests of other nodes on local actors, spawns and
stops actors of known kinds, and answers.

Delivery (``docs/scaling.md`` says the same for users):

- a **tell** is sent once: at most once delivered. It is lost if the broker or the target
  node fails at the wrong moment (a broker restart, the target's crash); kept and sent
  later while only this node's connection is down (``mqtt.buffer_size`` of them);
- an **ask** is sent again every ``mqtt.ask_retry_s`` until it is answered or its asker
  stops waiting: at least once delivered. The receiving node remembers the ids of the
  requests it took (`DEDUPE_MEMORY` of them), so a repeated one is carried out once and
  its answer sent again: the actor handles each ask once while the receiving node lives;
- an asker never hangs: it gets the answer, the remote error (as the local error of the
  same meaning), `NodeDown` at once when the target's node goes down, or `AskTimeout`.

Requests from other nodes reach only the local actors ``mqtt.remote_allow`` names, and
arrive with ``sender`` the sending actor's id (or the bridge's, for a program's own send),
never None and never the id of a local actor, so that an actor can always tell them from
its own program's messages.
"""

from __future__ import annotations

import collections
import fnmatch
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, Literal, final

import attrs
import trio

from wactorz.config import MQTTConfig
from wactorz.core.actor import Actor
from wactorz.core.errors import (
    ActorCrashed,
    ActorNotFound,
    ActorStartFailed,
    ActorStopped,
    AskTimeout,
    DuplicateName,
    MailboxFull,
    MessageRejected,
    NodeDown,
    RemoteError,
    WactorzError,
)
from wactorz.core.ids import new_wid
from wactorz.core.mailbox import Mail, Reply
from wactorz.core.registry import ActorSystem
from wactorz.core.remote import NodeInfo, RemoteActor
from wactorz.interfaces.mqtt.cluster import Cluster, NodeChange
from wactorz.interfaces.mqtt.connection import Delivery, MQTTConnection
from wactorz.interfaces.mqtt.node_messages import (
    NodeReply,
    NodeRequest,
    node_topic,
    parse_node_reply,
)
from wactorz.interfaces.mqtt.requests import RequestRefused, error_code
from wactorz.interfaces.mqtt.spawning import Spawner, describe_spawned

__all__ = ["DEDUPE_MEMORY", "MAX_NODE_ASKS", "NodeRouter", "NodeRouterStatistics"]

logger = logging.getLogger("wactorz.interfaces.mqtt.router")

DEDUPE_MEMORY: Final = 16_384
"""Ids of requests from other nodes remembered, with the answers to asks, to recognise a
request sent again; the oldest are forgotten first."""

MAX_NODE_ASKS: Final = 1024
"""Asks from other nodes being carried out at once; past that the node reads no more
requests until one is answered (the broker holds the rest back)."""

MAX_STAND_INS: Final = 4096
"""Remote addresses with a stand-in at once; idle ones are dropped past that."""

_TELL_WAIT_S: Final = 2.0
"""How long a tell from another node waits for room in a full mailbox before it is dropped."""

_LOCAL_EQUIVALENTS: Final = {
    "not_found",
    "rejected",
    "crashed",
    "stopped",
    "timeout",
    "mailbox_full",
    "duplicate_name",
}


@final
@attrs.frozen
class NodeRouterStatistics:
    """A snapshot of a `NodeRouter`'s counters (part of the bridge's statistics)."""

    sent: int
    """Requests published to other nodes (tells, asks, spawns), first sends only."""
    resent: int
    """Asks sent again because no answer had come within ``mqtt.ask_retry_s``."""
    answered: int
    """Answers to this node's asks that arrived in time."""
    served: int
    """Requests from other nodes carried out."""
    duplicates: int
    """Requests from other nodes recognised as sent before, and not carried out again."""
    refused: int
    """Requests from other nodes refused (bad, forbidden, unknown target)."""
    undeliverable: int
    """Tells dropped: for a node that is down, or by a full mailbox here."""
    pending: int
    """Asks from this node waiting for their answer now."""
    stand_ins: int
    """Remote addresses with a stand-in now."""


@attrs.define(eq=False)
class _Pending:
    reply: Reply
    node: str
    target: str
    payload: bytes
    sent_at: float


@attrs.define
class _Counters:
    sent: int = 0
    resent: int = 0
    answered: int = 0
    served: int = 0
    duplicates: int = 0
    refused: int = 0
    undeliverable: int = 0


class Seen:
    """The requests taken lately, by ``node/id`` (from other nodes) or ``client:id`` (inbox
    requests with an id; node names have no ``:``): None while an ask is being carried
    out (or for a tell), then the answer sent, to send it again."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: collections.OrderedDict[str, bytes | None] = collections.OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def take(self, key: str) -> None:
        self._entries[key] = None
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def answered(self, key: str, payload: bytes) -> None:
        if key in self._entries:
            self._entries[key] = payload

    def answer_of(self, key: str) -> bytes | None:
        return self._entries.get(key)


Publish = Callable[[str, bytes, Delivery], bool]
"""How the router hands a message to the bridge's connection (``topic, payload, delivery``)."""


@final
class NodeRouter:
    """Routes messages between this actor system and the other nodes on the broker.

    ``publish`` sends through the bridge (counted, never raising); ``nursery`` runs the
    router's tasks (the stand-ins' carriers and the asks being answered) and belongs to the
    bridge's incarnation, which calls `close` before it ends. ``seen`` remembers the
    requests taken (the bridge's, shared with its inbox topics).
    """

    def __init__(
        self,
        *,
        system: ActorSystem,
        bridge_id: str,
        config: MQTTConfig,
        prefix: str,
        cluster: Cluster,
        connection: MQTTConnection,
        spawner: Spawner,
        publish: Publish,
        nursery: trio.Nursery,
        on_desired_changed: Callable[[], None],
        boot: str,
        seen: Seen,
    ) -> None:
        self.system = system
        self.node = system.node
        self.bridge_id = bridge_id
        self.config = config
        self.prefix = prefix
        self.cluster = cluster
        self.spawner = spawner
        self.boot = boot
        self._connection = connection
        self._publish = publish
        self._nursery = nursery
        self._on_desired_changed = on_desired_changed
        self._stand_ins: dict[tuple[str, str], RemoteActor] = {}
        self._pending: dict[str, _Pending] = {}
        self._seen = seen
        self._asks = trio.CapacityLimiter(MAX_NODE_ASKS)
        self._counters = _Counters()
        self._closed = False

    def statistics(self) -> NodeRouterStatistics:
        return NodeRouterStatistics(
            **attrs.asdict(self._counters),
            pending=len(self._pending),
            stand_ins=len(self._stand_ins),
        )

    # ---- RemoteRouter ------------------------------------------------------------------------

    def route(self, to: str) -> Actor | None:
        if self._closed:
            return None
        route = self.cluster.resolve(to)
        if route is None:
            return None
        key = (route.node, route.target)
        stand_in = self._stand_ins.get(key)
        if stand_in is None:
            if len(self._stand_ins) >= MAX_STAND_INS:
                self._drop_idle_stand_ins()
            stand_in = RemoteActor(
                self.system, name=route.name, node=route.node, actor_id=route.actor_id
            )
            self._stand_ins[key] = stand_in
            self._nursery.start_soon(self._carry, stand_in, route.target)
        return stand_in

    def remote_names(self) -> Iterable[str]:
        return self.cluster.remote_names()

    def nodes(self) -> Sequence[NodeInfo]:
        return self.cluster.nodes()

    # ---- going out ---------------------------------------------------------------------------

    async def _carry(self, stand_in: RemoteActor, target: str) -> None:
        """Carry the mail queued for ``stand_in`` to its node, in order, until it is closed.

        Never raises (it runs in the bridge's nursery): a mail it fails on is answered or
        reported as undeliverable, and the next one is carried.
        """
        try:
            async for mail in stand_in.outbox:
                try:
                    await self._carry_one(stand_in, target, mail)
                except Exception:
                    logger.exception("%s: carrying a message to %s failed", self.node, target)
                    failure = RemoteError(
                        "internal_error",
                        "this node failed to send the message; its log has the cause",
                    )
                    self._undeliverable(stand_in, mail, failure)
        except trio.ClosedResourceError:
            pass  # closed: its node went down, or the router stopped

    async def _carry_one(self, stand_in: RemoteActor, target: str, mail: Mail) -> None:
        message, sender, reply, _ = mail
        node = stand_in.node
        if not self.cluster.is_up(node):
            self._undeliverable(stand_in, mail, NodeDown(node, stand_in.name, self._why(node)))
            return
        if reply is not None and not reply.pending:
            return  # the asker stopped waiting before it was sent
        request = NodeRequest(
            new_wid("msg"),
            self.node,
            "tell" if reply is None else "ask",
            to=target,
            sender=sender,
            message=message,
        )
        try:
            payload = request.to_json()
        except (TypeError, ValueError) as exc:
            self._undeliverable(
                stand_in, mail, RemoteError("bad_request", f"the message is not JSON ({exc})")
            )
            return
        if len(payload) > self.config.max_payload_bytes:
            problem = RemoteError(
                "too_large",
                f"the message is {len(payload)} bytes as JSON, over mqtt.max_payload_bytes="
                f"{self.config.max_payload_bytes}: send less, or raise it on every node",
                node,
            )
            self._undeliverable(stand_in, mail, problem)
            return
        if reply is not None:
            self._pending[request.id] = _Pending(
                reply, node, stand_in.name, payload, trio.current_time()
            )
        if not self._connection.has_room:
            await self._connection.wait_for_room()
        self._counters.sent += 1
        self._publish(node_topic(self.prefix, node, "inbox"), payload, Delivery.QUEUED)

    def _undeliverable(self, stand_in: RemoteActor, mail: Mail, error: WactorzError) -> None:
        """Fail an ask with ``error``, or report a tell as a dead letter."""
        reply = mail[2]
        if reply is not None:
            reply.fail(error)
            return
        self._counters.undeliverable += 1
        self.system._dead_letter(stand_in.name, stand_in.id, mail, str(error))

    async def request(
        self, node: str, op: Literal["spawn", "stop"], name: str, kind: str | None, timeout: float
    ) -> Any:
        """Send a ``spawn`` or ``stop`` request to ``node`` and return its answer.

        Raises `NodeDown` if ``node`` is down or goes down meanwhile, `AskTimeout` after
        ``timeout`` seconds, and the answer's error otherwise.
        """
        if not self.cluster.is_up(node):
            raise NodeDown(node, reason=self._why(node))
        request = NodeRequest(new_wid("msg"), self.node, op, name=name, kind=kind)
        reply = Reply()
        what = f"{op} {name}@{node}"
        payload = request.to_json()
        self._pending[request.id] = _Pending(reply, node, what, payload, trio.current_time())
        self._counters.sent += 1
        self._publish(node_topic(self.prefix, node, "inbox"), payload, Delivery.QUEUED)
        with trio.move_on_after(timeout):
            answer = await reply.wait()
            if op == "spawn" and isinstance(answer, dict):
                self.cluster.manifest(str(answer.get("id")), {**answer, "node": node})
            return answer
        self._pending.pop(request.id, None)
        raise AskTimeout(what, timeout)

    def on_reply(self, payload: bytes) -> None:
        """An answer on this node's replies topic: hand it to the asker waiting for it."""
        try:
            reply = parse_node_reply(payload, self.config.max_payload_bytes)
        except RequestRefused as exc:
            logger.warning(
                "%s: ignoring an unreadable answer from another node: %s", self.node, exc
            )
            return
        pending = self._pending.pop(reply.id, None)
        if pending is None:
            return  # answered already (a repeated answer), or the asker stopped waiting
        self._counters.answered += 1
        if reply.error is None:
            pending.reply.resolve(reply.reply)
        else:
            pending.reply.fail(_remote_error(reply, pending))

    async def resend_unanswered(self) -> None:
        """Send the asks that got no answer within ``mqtt.ask_retry_s`` again, for ever."""
        retry = self.config.ask_retry_s
        while True:
            await trio.sleep(min(retry / 2, 1.0))
            now = trio.current_time()
            connected = self._connection.connected
            for request_id, pending in list(self._pending.items()):
                if not pending.reply.pending:
                    del self._pending[request_id]
                elif connected and now - pending.sent_at >= retry:
                    pending.sent_at = now
                    self._counters.resent += 1
                    topic = node_topic(self.prefix, pending.node, "inbox")
                    self._publish(topic, pending.payload, Delivery.QUEUED)

    def on_node_change(self, change: NodeChange) -> None:
        """A node went down: its asks fail with `NodeDown` at once, its stand-ins close."""
        if change.up:
            return
        error = NodeDown(change.node, reason=change.reason)
        for request_id, pending in list(self._pending.items()):
            if pending.node == change.node:
                del self._pending[request_id]
                pending.reply.fail(NodeDown(change.node, pending.target, change.reason))
        for key in [key for key in self._stand_ins if key[0] == change.node]:
            self._close_stand_in(key, error)

    def close(self, reason: str) -> None:
        """The bridge is stopping: every ask waiting fails, every stand-in closes."""
        self._closed = True
        for pending in self._pending.values():
            pending.reply.fail(NodeDown(pending.node, pending.target, reason))
        self._pending.clear()
        for key in list(self._stand_ins):
            self._close_stand_in(key, NodeDown(key[0], reason=reason))

    def _close_stand_in(self, key: tuple[str, str], error: NodeDown) -> None:
        stand_in = self._stand_ins.pop(key)
        for mail in stand_in.close():
            self._undeliverable(stand_in, mail, NodeDown(error.node, stand_in.name, error.reason))

    def _drop_idle_stand_ins(self) -> None:
        for key, stand_in in list(self._stand_ins.items()):
            if stand_in.statistics().queued == 0:
                self._close_stand_in(key, NodeDown(key[0], reason="idle"))

    def _why(self, node: str) -> str | None:
        for info in self.cluster.nodes():
            if info.name == node:
                return info.reason
        return None

    # ---- coming in ---------------------------------------------------------------------------

    async def serve(self, request: NodeRequest) -> None:
        """Carry out a request from another node (one read from this node's inbox).

        Waits while `MAX_NODE_ASKS` asks are being answered, and while a tell waits for
        room in a full mailbox (up to 2 s): the broker then holds the next requests back.
        """
        key = f"{request.node}/{request.id}"
        if key in self._seen:
            self._counters.duplicates += 1
            answer = self._seen.answer_of(key)
            if answer is not None:
                self._answer(request.node, answer)
            return
        self._seen.take(key)
        self._counters.served += 1
        if request.op == "tell":
            await self._tell(request)
            return
        borrower = object()
        try:
            self._asks.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            await self._asks.acquire_on_behalf_of(borrower)
        self._nursery.start_soon(self._carry_out, request, key, borrower)

    def refuse(self, error: RequestRefused) -> None:
        """Answer a request that could not be read, if it said who sent it."""
        self._counters.refused += 1
        node, request_id = error.reply_to, error.correlation_id
        logger.warning("%s: refused a request from node %s: %s", self.node, node, error)
        if node is not None and isinstance(request_id, str):
            reply = NodeReply(request_id, error=str(error), code=error.code)
            self._answer(node, reply.to_json())

    async def _tell(self, request: NodeRequest) -> None:
        try:
            actor = self._local_target(request)
            assert request.message is not None
            unfinished = self.system._post(actor.id, request.message, self._sender(request))
            if unfinished is not None:
                with trio.move_on_after(_TELL_WAIT_S) as waited:
                    await self.system._finish_send(unfinished)
                if waited.cancelled_caught:
                    self._counters.undeliverable += 1
                    logger.warning(
                        "%s: dropped a tell from node %s: the mailbox of %r stayed full for %g s",
                        self.node,
                        request.node,
                        actor.name,
                        _TELL_WAIT_S,
                    )
        except (RequestRefused, WactorzError) as exc:
            self._counters.refused += 1
            logger.warning(
                "%s: a tell from node %s was not delivered: %s", self.node, request.node, exc
            )

    async def _carry_out(self, request: NodeRequest, key: str, borrower: object) -> None:
        """Answer an ask, spawn or stop from another node; never raises (it runs in the
        bridge's nursery)."""
        try:
            reply = await self._outcome(request)
            try:
                payload = reply.to_json()
            except (TypeError, ValueError) as exc:
                payload = NodeReply(
                    request.id, error=f"the answer cannot be sent as JSON ({exc})", code="bad_reply"
                ).to_json()
            self._seen.answered(key, payload)
            self._answer(request.node, payload)
        except Exception:
            logger.exception("%s: a request from node %s failed", self.node, request.node)
            error = NodeReply(
                request.id,
                error="the node failed while handling the request; its log has the cause",
                code="internal_error",
            )
            self._answer(request.node, error.to_json())
        finally:
            self._asks.release_on_behalf_of(borrower)

    async def _outcome(self, request: NodeRequest) -> NodeReply:
        try:
            if request.op == "ask":
                actor = self._local_target(request)
                assert request.message is not None
                timeout = self.config.ask_timeout_s
                answer = await self.system._ask(
                    actor.id, request.message, timeout, self._sender(request)
                )
                return NodeReply(request.id, reply=answer)
            assert request.name is not None
            if request.op == "spawn":
                assert request.kind is not None
                actor = await self.spawner.spawn(request.kind, request.name, remote=True)
                self._on_desired_changed()
                return NodeReply(request.id, reply=self._spawned(actor, request.kind))
            stopped = await self.spawner.stop(request.name)
            self._on_desired_changed()
            return NodeReply(request.id, reply={"stopped": stopped, "name": request.name})
        except RequestRefused as exc:
            self._counters.refused += 1
            return NodeReply(request.id, error=str(exc), code=exc.code)
        except PermissionError as exc:
            self._counters.refused += 1
            return NodeReply(request.id, error=str(exc), code="forbidden")
        except LookupError as exc:
            if isinstance(exc, WactorzError):
                return self._failure(request, exc)
            return NodeReply(request.id, error=str(exc), code="unknown_kind")
        except WactorzError as exc:
            return self._failure(request, exc)

    def _failure(self, request: NodeRequest, exc: WactorzError) -> NodeReply:
        """The answer for a runtime error: a sentence for the other node, never a traceback
        (a crash's cause stays in this node's log, where it was reported)."""
        if isinstance(exc, DuplicateName):
            return NodeReply(request.id, error=str(exc), code="duplicate_name")
        if isinstance(exc, ActorStartFailed):
            text = f"{exc.name!r} failed to start on node {self.node!r}; its log has the cause"
            return NodeReply(request.id, error=text, code="start_failed")
        code = error_code(exc)
        if isinstance(exc, MessageRejected):
            text = exc.reason
        elif isinstance(exc, ActorCrashed):
            text = (
                f"actor {exc.target!r} on node {self.node!r} crashed while handling the "
                "request; that node's log has the cause"
            )
        else:
            text = str(exc)
        return NodeReply(request.id, error=text, code=code)

    def _spawned(self, actor: Actor, kind: str) -> dict[str, Any]:
        # The boot lets the asking node put the actor in its directory at once.
        return {**describe_spawned(actor, kind, self.node), "boot": self.boot}

    def _local_target(self, request: NodeRequest) -> Actor:
        """The local actor ``request.to`` names, if other nodes may send to it."""
        assert request.to is not None
        actor = self.system.lookup(request.to)
        if actor is None or isinstance(actor, RemoteActor):
            names = sorted(a.name for a in self.system.actors())
            raise RequestRefused(
                "not_found", f"node {self.node!r}: {ActorNotFound(request.to, names)}"
            )
        if not any(fnmatch.fnmatchcase(actor.name, p) for p in self.config.remote_allow):
            raise RequestRefused(
                "forbidden",
                f"node {self.node!r} does not let other nodes send to {actor.name!r} "
                "(its mqtt.remote_allow)",
            )
        return actor

    def _sender(self, request: NodeRequest) -> str:
        """Who the local actor sees as the sender: the remote actor, or the bridge, and
        never a local actor's id (which a forged request could claim)."""
        sender = request.sender
        if sender is None or self.system.lookup(sender) is not None:
            return self.bridge_id
        return sender

    def _answer(self, node: str, payload: bytes) -> None:
        self._publish(node_topic(self.prefix, node, "replies"), payload, Delivery.QUEUED)


def _remote_error(reply: NodeReply, pending: _Pending) -> WactorzError:
    """The local error of the same meaning as a remote one, carrying the remote sentence."""
    code, text, target = reply.code or "", reply.error or "", pending.target
    error: WactorzError
    if code == "not_found":
        error = ActorNotFound(target)
    elif code == "rejected":
        error = MessageRejected(text)
        error.target = target
    elif code == "crashed":
        error = ActorCrashed(target, RemoteError(code, text, pending.node))
    elif code == "stopped":
        error = ActorStopped(target)
    elif code == "timeout":
        error = AskTimeout(target, 0.0)
    elif code == "mailbox_full":
        error = MailboxFull(target, 0)
    elif code == "duplicate_name":
        error = DuplicateName(target)
    else:
        return RemoteError(code, text, pending.node)
    if code in _LOCAL_EQUIVALENTS:
        error.args = (text,)  # the other node's sentence: it names what that node has
    return error

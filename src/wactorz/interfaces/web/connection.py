"""One WebSocket client: its bounded send queue, its requests, and how it is let go.

A `Connection` reads frames and carries out requests (chat, commands and asks each in a
task of their own, so that one slow answer never holds up the next frame), and a writer
task sends what is queued for it. A request's final frame goes out from the request's own
task when nothing is queued or being sent (one scheduler round less per request); frames
still leave in the order they were produced. Nothing outside ever waits on a client: the hub and the
web actor only put frames in the queue (`Connection.push`, `push_delta`, `push_live`),
which never blocks, and a client that does not keep up loses what can be lost:

- tree deltas: past `WebOptions.queue_soft` frames waiting, deltas are dropped and the
  client is marked behind; once it has caught up it gets a fresh snapshot instead (whose
  ``seq`` the next delta follows). Behind for longer than `WebOptions.stale_close_s`, it
  is closed with 1013 and a reason;
- events, alerts, metrics and topic messages: dropped past ``queue_soft`` too; the next one
  of that kind that gets through says in ``missed`` how many were;
- replies, stream chunks and errors are never dropped: past `WebOptions.queue_hard` frames
  waiting, the client is closed with 1013.
"""

from __future__ import annotations

import collections
import logging
import secrets
from typing import TYPE_CHECKING, Any, Final, final

import trio
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketDisconnected

import wactorz
from wactorz.core.errors import (
    ActorCrashed,
    ActorNotFound,
    AskTimeout,
    MailboxFull,
    MessageRejected,
    WactorzError,
)
from wactorz.interfaces.mqtt.requests import error_code
from wactorz.interfaces.web.protocol import (
    PROTOCOL_VERSION,
    STREAM_NAMES,
    Ask,
    Cancel,
    Chat,
    Command,
    Describe,
    FrameError,
    Request,
    RequestId,
    Snapshot,
    Subscribe,
    Unsubscribe,
    encode_frame,
    error_frame,
    parse_frame,
)

if TYPE_CHECKING:
    from wactorz.interfaces.web.hub import Hub

__all__ = ["MAIN_NAME", "Connection"]

logger = logging.getLogger("wactorz.web")

MAIN_NAME: Final = "main"
"""The actor chat and commands go to: the MainActor."""

CLOSE_TOO_SLOW: Final = 1013
CLOSE_GOING_AWAY: Final = 1001

_CLOSE_WAIT_S: Final = 2.0


@final
class _InFlight:
    """A request still running: its task's cancel scope, and its stream id for chat."""

    __slots__ = ("scope", "stream_id")

    def __init__(self, stream_id: str | None) -> None:
        self.scope = trio.CancelScope()
        self.stream_id = stream_id


def describe_failure(exc: WactorzError) -> tuple[str, str]:
    """The ``code`` and the sentence of an error frame for a runtime error.

    Only sentences written for the sender go out: an actor's own `MessageRejected`
    text and the runtime's descriptions. What an actor raised when it crashed stays in the
    node's log, with its traceback.
    """
    code = error_code(exc)
    if isinstance(exc, MessageRejected):
        return code, exc.reason
    if isinstance(exc, ActorCrashed):
        return code, f"actor {exc.target!r} crashed while handling it; the node's log has the cause"
    if isinstance(exc, AskTimeout):
        return code, f"actor {exc.target!r} did not answer within {exc.timeout:g} s"
    return code, str(exc)


@final
class Connection:
    """A client connected on ``/ws``: made by the endpoint once the socket is accepted.

    ``session`` is the conversation chat goes to unless a frame names another (from the
    URL's ``?session=``, else new). ``id`` is random and unguessable: stream ids embed it,
    and a stream message is routed by its id alone.
    """

    def __init__(self, hub: Hub, websocket: WebSocket, session: str | None) -> None:
        self.hub = hub
        self.options = hub.options
        self.id = f"c{secrets.token_urlsafe(12)}"
        self.session = session or f"s{secrets.token_urlsafe(12)}"
        self.topics: set[str] = set()
        """What it subscribed to: names in `STREAM_NAMES` and local topic filters."""
        self.tree_behind = False
        """It missed tree deltas: a snapshot is due once it catches up."""
        self.frames_sent = 0
        self.deltas_dropped = 0
        self.live_dropped = 0
        self.snapshots_sent = 0
        self._websocket = websocket
        self._queue: collections.deque[str] = collections.deque()
        self._wake = trio.Event()
        self._behind_since = 0.0
        self._missed: collections.Counter[str] = collections.Counter()
        self._in_flight: dict[RequestId, _InFlight] = {}
        self._closing: tuple[int, str] | None = None
        self._sending = False
        """A frame is being written to the socket (by the writer, or a request's own task)."""
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"<Connection {self.id} queued={len(self._queue)} topics={sorted(self.topics)}>"

    @property
    def queued(self) -> int:
        """Frames waiting to be sent."""
        return len(self._queue)

    @property
    def closing(self) -> bool:
        return self._closing is not None

    # ---- running -------------------------------------------------------------------------

    async def serve(self) -> None:
        """Greet the client, then read and write until it goes (or is let go)."""
        self.push(
            {
                "type": "hello",
                "session": self.session,
                "connection": self.id,
                "version": wactorz.__version__,
                "node": self.hub.actor.system.node,
                "protocol": PROTOCOL_VERSION,
                "streams": list(STREAM_NAMES),
                "max_frame_bytes": self.options.max_frame_bytes,
            }
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write)
                await self._read()
                nursery.cancel_scope.cancel()
        finally:
            self.hub.forget(self)

    async def _read(self) -> None:
        websocket = self._websocket
        while True:
            try:
                message = await websocket.receive()
            except (WebSocketDisconnect, WebSocketDisconnected):
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            self._handle(text if text is not None else (message.get("bytes") or b""))

    async def _write(self) -> None:
        websocket = self._websocket
        queue = self._queue
        try:
            while True:
                while (not queue or self._sending) and self._closing is None:
                    self._wake = trio.Event()
                    await self._wake.wait()
                if self._closing is not None:
                    break
                self._sending = True
                try:
                    await websocket.send_text(queue.popleft())
                finally:
                    self._sending = False
                self.frames_sent += 1
                if self.tree_behind and len(queue) <= self.options.queue_soft // 4:
                    self._catch_up()
            code, reason = self._closing
            with trio.move_on_after(_CLOSE_WAIT_S):
                await websocket.close(code, reason)
        except (WebSocketDisconnect, WebSocketDisconnected, OSError):
            pass  # the client went: the reader sees it too
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()

    def close(self, code: int, reason: str) -> None:
        """Let the client go: what is queued is dropped, then the close frame goes out."""
        if self._closing is not None:
            return
        self._closing = (code, reason[:120])
        self._queue.clear()
        self._wake.set()
        level = logging.INFO if code == CLOSE_GOING_AWAY else logging.WARNING
        logger.log(level, "web: closing connection %s (%d): %s", self.id, code, reason)

    # ---- queueing frames ------------------------------------------------------------------

    def push(self, frame: dict[str, Any]) -> None:
        """Queue a frame that must not be lost (a reply, a stream chunk, an error)."""
        try:
            text = encode_frame(frame)
        except (TypeError, ValueError) as exc:
            text = encode_frame(
                error_frame(
                    "bad_reply",
                    f"the answer cannot be sent as JSON ({exc})",
                    frame.get("id"),
                )
            )
        self.push_text(text)

    def push_text(self, text: str) -> None:
        """`push`, for a frame already encoded."""
        if self._closing is not None:
            return
        if len(self._queue) >= self.options.queue_hard:
            self.close(
                CLOSE_TOO_SLOW,
                f"too slow: {len(self._queue)} frames waiting for this client; reconnect",
            )
            return
        self._queue.append(text)
        self._wake.set()

    def push_delta(self, text: str) -> None:
        """Queue an encoded tree delta, unless the client is behind (see the module docstring)."""
        if self._closing is not None or "tree" not in self.topics:
            return
        now = trio.current_time()
        if not self.tree_behind and len(self._queue) >= self.options.queue_soft:
            self.tree_behind = True
            self._behind_since = now
        if self.tree_behind:
            self.deltas_dropped += 1
            behind = now - self._behind_since
            if behind > self.options.stale_close_s:
                self.close(
                    CLOSE_TOO_SLOW,
                    f"too slow: behind the tree updates for {behind:.0f} s; reconnect",
                )
            return
        self._queue.append(text)
        self._wake.set()

    def push_live(self, kind: str, frame: dict[str, Any], text: str) -> None:
        """Queue an event, alert, metrics or topic message (``text`` is ``frame`` encoded).

        Dropped when the client is behind; the next one of ``kind`` says how many were.
        """
        if self._closing is not None:
            return
        if len(self._queue) >= self.options.queue_soft:
            self._missed[kind] += 1
            self.live_dropped += 1
            return
        missed = self._missed.pop(kind, 0)
        if missed:
            text = encode_frame({**frame, "missed": missed})
        self._queue.append(text)
        self._wake.set()

    def _catch_up(self) -> None:
        snapshot = self.hub.snapshot_text()
        self.tree_behind = False
        if snapshot is not None:
            self._queue.append(snapshot)
            self.snapshots_sent += 1

    def send_snapshot(self) -> None:
        """Queue a fresh snapshot of the tree (after subscribing, or when asked)."""
        snapshot = self.hub.snapshot_text()
        if snapshot is not None:
            self.tree_behind = False
            self.push_text(snapshot)
            self.snapshots_sent += 1

    # ---- requests -------------------------------------------------------------------------

    def _handle(self, data: str | bytes) -> None:
        """Carry out one frame; whatever the client sent, this answers and never raises."""
        request_id: RequestId | None = None
        try:
            request = parse_frame(data, self.options.max_frame_bytes)
            request_id = request.id
            self._dispatch(request)
        except FrameError as exc:
            self.push(error_frame(exc.code, str(exc), exc.request_id))
        except Exception:
            logger.exception("web: handling a frame from connection %s failed", self.id)
            self.push(
                error_frame(
                    "internal_error",
                    "the server failed while handling this frame; the node's log has the cause",
                    request_id,
                )
            )

    def _dispatch(self, request: Request) -> None:
        if request.id in self._in_flight:
            raise FrameError(
                "duplicate_id",
                f"request {request.id!r} is still running: give each request its own id",
                request.id,
            )
        if isinstance(request, Subscribe):
            self.push(self.hub.subscribe(self, request.topics, request.id))
            if "tree" in request.topics:
                self.send_snapshot()
        elif isinstance(request, Unsubscribe):
            self.push(self.hub.unsubscribe(self, request.topics, request.id))
        elif isinstance(request, Snapshot):
            if "tree" not in self.topics:
                raise FrameError(
                    "not_subscribed",
                    "subscribe to 'tree' first: snapshots are of the tree",
                    request.id,
                )
            self.push({"type": "reply", "id": request.id, "reply": {"snapshot": True}})
            self.send_snapshot()
        elif isinstance(request, Cancel):
            self.push(self._cancel(request))
        elif isinstance(request, Describe):
            self.push(self.hub.describe(request.actor, request.id))
        else:
            if len(self._in_flight) >= self.options.max_in_flight:
                raise FrameError(
                    "busy",
                    f"{len(self._in_flight)} requests are already running on this connection; "
                    "wait for one to finish",
                    request.id,
                )
            stream_id = None if isinstance(request, Ask) else f"{self.id}/{request.id}"
            flight = _InFlight(stream_id)
            self._in_flight[request.id] = flight
            assert self._nursery is not None
            self._nursery.start_soon(self._carry_out, request, flight)

    async def _carry_out(self, request: Chat | Command | Ask, flight: _InFlight) -> None:
        frame: dict[str, Any]
        try:
            with flight.scope:
                if isinstance(request, Ask):
                    frame = await self._ask(request)
                else:
                    frame = await self._chat(request, flight)
            if flight.scope.cancelled_caught:
                frame = error_frame("cancelled", "cancelled at the client's request", request.id)
        except Exception:
            logger.exception("web: request %r of connection %s failed", request.id, self.id)
            frame = error_frame(
                "internal_error",
                "the server failed while handling this request; the node's log has the cause",
                request.id,
            )
        finally:
            del self._in_flight[request.id]
        await self._answer(frame)

    async def _answer(self, frame: dict[str, Any]) -> None:
        """Send a request's final frame from the request's own task when nothing else is
        waiting to go out (saving the writer's wake-up, a scheduler round per request);
        otherwise queue it behind the rest, in order."""
        if self._queue or self._sending or self._closing is not None:
            self.push(frame)
            return
        try:
            text = encode_frame(frame)
        except (TypeError, ValueError):
            self.push(frame)  # push turns it into a bad_reply error
            return
        self._sending = True
        try:
            await self._websocket.send_text(text)
            self.frames_sent += 1
        except (WebSocketDisconnect, WebSocketDisconnected, OSError):
            pass  # the client went: the reader sees it too
        finally:
            self._sending = False
            if self._queue or self._closing is not None:
                self._wake.set()

    async def _ask(self, request: Ask) -> dict[str, Any]:
        actor = self.hub.actor
        timeout = request.timeout if request.timeout is not None else self.options.ask_timeout_s
        try:
            if actor.system.lookup(request.actor) is actor:
                # The web actor's own loop answers; it may not ask itself.
                answer = await actor.system.ask(request.actor, request.message, timeout=timeout)
            else:
                answer = await actor.ask(request.actor, request.message, timeout=timeout)
        except WactorzError as exc:
            return error_frame(*describe_failure(exc), request.id)
        return {"type": "reply", "id": request.id, "reply": answer}

    async def _chat(self, request: Chat | Command, flight: _InFlight) -> dict[str, Any]:
        actor = self.hub.actor
        assert flight.stream_id is not None
        route = self.hub.open_route(flight.stream_id, self, request.id)
        target = request.target if isinstance(request, Chat) else None
        message = {
            "chat": {
                "session": request.session or self.session,
                "text": request.text,
                "target": target,
            },
            "stream_to": actor.id,
            "stream_id": flight.stream_id,
        }
        try:
            try:
                answer = await actor.ask(MAIN_NAME, message, timeout=None)
            except ActorNotFound as exc:
                if exc.target != MAIN_NAME:
                    raise
                return error_frame(
                    "no_main",
                    f"no actor named {MAIN_NAME!r} is running, and chat and commands go to it "
                    "(the MainActor); 'ask' still reaches any actor directly",
                    request.id,
                )
            except WactorzError as exc:
                return error_frame(*describe_failure(exc), request.id)
            # Stream messages sent before the answer may still wait in the web actor's
            # mailbox: let them through first, so that the last frame is the ending.
            await self.hub.barrier()
            kind = "stream_end" if isinstance(request, Chat) else "reply"
            return {"type": kind, "id": request.id, "reply": answer, "result": route.result}
        finally:
            self.hub.close_route(flight.stream_id)

    def _cancel(self, request: Cancel) -> dict[str, Any]:
        flight = self._in_flight.get(request.request)
        if flight is None:
            return error_frame(
                "unknown_request",
                f"no request {request.request!r} is running on this connection",
                request.id,
            )
        if flight.stream_id is None:
            flight.scope.cancel()
        else:
            # The MainActor ends the stream and answers; if it does not within the grace
            # period, the request is cancelled here.
            try:
                self.hub.actor.send_nowait(MAIN_NAME, {"cancel": flight.stream_id})
            except (ActorNotFound, MailboxFull, WactorzError):
                flight.scope.cancel()
            else:
                flight.scope.deadline = min(
                    flight.scope.deadline, trio.current_time() + self.options.cancel_grace_s
                )
        return {"type": "reply", "id": request.id, "reply": {"cancelling": request.request}}

    def cancel_all(self) -> None:
        """Cancel every request still running (the connection is going)."""
        for flight in self._in_flight.values():
            flight.scope.cancel()

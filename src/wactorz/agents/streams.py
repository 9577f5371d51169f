"""Streams: output that arrives while a request runs, sent in order to whoever asked for it.

A code run's stdout and stderr, a model's text deltas and tool calls: each request that
asks for a stream names where it goes (``"stream_to"``: an actor's name or id, or
``{"topic": ...}``), and its parts travel as tells, in order, each one::

    {"stream": STREAM_ID, "seq": 0, "parts": [{"kind": "stdout", "text": "hel"}, ...]}

and finally, always (even when the run failed or was cancelled), one ending::

    {"stream": STREAM_ID, "seq": N, "parts": [...], "end": true, "result": {...}}

A consumer that cannot keep up never makes a queue grow: while a message waits for room
in its mailbox, what arrives meanwhile is merged into the next message (adjacent text of
one kind is joined), and past `Stream.max_pending_bytes` the producer itself waits (a
child process then blocks on its full pipe). A consumer that is gone ends the stream
quietly: the request goes on and its result still answers the ask.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, final

import attrs
import trio

from wactorz.core.actor import Actor
from wactorz.core.errors import ActorNotFound, ActorStopped, MessageRejected
from wactorz.core.topics import topic_problem

__all__ = ["Stream", "StreamTarget", "open_stream", "stream_target"]

logger = logging.getLogger("wactorz.agents.streams")

MAX_PENDING_BYTES: Final = 256 * 1024
"""Text waiting for the consumer, at most, before the producer waits (see `Stream.write`)."""

ENDING_WAIT_S: Final = 5.0
"""How long a stream's ending may wait for room in the consumer's mailbox."""


@final
@attrs.frozen
class StreamTarget:
    """Where a stream goes: an actor (by name or id) or a topic, exactly one of them."""

    actor: str | None = None
    topic: str | None = None

    def describe(self) -> str:
        return f"actor {self.actor!r}" if self.actor is not None else f"topic {self.topic!r}"


def stream_target(value: object) -> StreamTarget | None:
    """Read a request's ``stream_to``: a name or id, ``{"actor": ...}`` or ``{"topic": ...}``.

    None (no stream) for a missing value; raises `MessageRejected` saying what to send
    for anything else.
    """
    if value is None:
        return None
    if isinstance(value, str) and value:
        return StreamTarget(actor=value)
    if isinstance(value, dict) and len(value) == 1:
        ((key, where),) = value.items()
        if key == "actor" and isinstance(where, str) and where:
            return StreamTarget(actor=where)
        if key == "topic" and isinstance(where, str):
            problem = topic_problem(where)
            if problem is None:
                return StreamTarget(topic=where)
            raise MessageRejected(f"stream_to's topic {where!r} {problem}")
    raise MessageRejected(
        "stream_to is an actor's name or id, {'actor': name}, or {'topic': topic}, "
        f"not {value!r}"
    )


@final
class Stream:
    """One request's stream: parts written in order, sent as coalescing chunk messages.

    Made by `open_stream`, which runs its sender. `write` and `event` add parts; the
    ending is sent when the `open_stream` block ends, carrying `result`.
    """

    max_pending_bytes: int

    def __init__(
        self, owner: Actor, target: StreamTarget, stream_id: str, max_pending_bytes: int
    ) -> None:
        self.owner = owner
        self.target = target
        self.id = stream_id
        self.max_pending_bytes = max_pending_bytes
        self.result: dict[str, Any] | None = None
        """What the ending carries: set it before the `open_stream` block ends."""
        self.sent = 0
        """Messages sent so far (the ending included, once sent)."""
        self.parts = 0
        """Parts written so far, before merging."""
        self.lost = False
        """True once the consumer was found gone: nothing more is sent."""
        self._pending: list[dict[str, Any]] = []
        self._pending_bytes = 0
        self._wake_sender = trio.Event()
        self._room = trio.Event()

    async def write(self, kind: str, text: str) -> None:
        """Add ``text`` of ``kind`` (``"stdout"``, ``"text"``...); waits while too much is pending.

        Adjacent text of one kind merges into one part while the consumer is behind.
        """
        if not text:
            return
        await self._add({"kind": kind, "text": text})

    async def event(self, kind: str, **fields: Any) -> None:
        """Add a part that is not text (``tool_start`` with its name...): never merged."""
        await self._add({"kind": kind, **fields})

    async def _add(self, part: dict[str, Any]) -> None:
        self.parts += 1
        if self.lost:
            await trio.lowlevel.checkpoint()
            return
        while self._pending_bytes >= self.max_pending_bytes and not self.lost:
            self._room = trio.Event()
            await self._room.wait()
        pending = self._pending
        last = pending[-1] if pending else None
        if (
            last is not None
            and "text" in part
            and len(part) == 2
            and len(last) == 2
            and last["kind"] == part["kind"]
            and "text" in last
        ):
            last["text"] += part["text"]
        else:
            pending.append(part)
        self._pending_bytes += _size(part)
        self._wake_sender.set()
        await trio.lowlevel.checkpoint()

    async def _send_chunks(self) -> None:
        """Send what is pending whenever there is some, one message at a time, in order."""
        while True:
            await self._wake_sender.wait()
            self._wake_sender = trio.Event()
            if self._pending:
                await self._flush(end=False)

    async def _flush(self, *, end: bool) -> None:
        parts, self._pending = self._pending, []
        self._pending_bytes = 0
        self._room.set()
        message: dict[str, Any] = {"stream": self.id, "seq": self.sent, "parts": parts}
        if end:
            message["end"] = True
            message["result"] = self.result
        if self.lost:
            return
        try:
            if self.target.actor is not None:
                await self.owner.send(self.target.actor, message)
            else:
                assert self.target.topic is not None
                await self.owner.publish(self.target.topic, message)
        except trio.Cancelled:
            # A cancelled send delivers nothing: the parts go back, ahead of newer ones.
            self._pending[:0] = parts
            self._pending_bytes += sum(map(_size, parts))
            raise
        except (ActorNotFound, ActorStopped) as exc:
            self.lost = True
            self._room.set()
            logger.info(
                "stream %s: %s is gone (%s); not sending more", self.id, self.target.describe(), exc
            )
            return
        self.sent += 1


def _size(part: dict[str, Any]) -> int:
    """What a part counts for against `Stream.max_pending_bytes`: its text, or a little."""
    text = part.get("text")
    return len(text) if isinstance(text, str) else 64


@asynccontextmanager
async def open_stream(
    owner: Actor,
    target: StreamTarget | None,
    stream_id: str,
    *,
    max_pending_bytes: int = MAX_PENDING_BYTES,
) -> AsyncIterator[Stream | None]:
    """Run a stream for the block: yields the `Stream` (None when ``target`` is None).

    When the block ends, however it ends, what is pending is sent and then the ending,
    with ``stream.result``: a consumer always learns that the stream is over. The ending
    waits for room in the consumer's mailbox, shielded from cancellation for up to
    `ENDING_WAIT_S` seconds, so a cancelled run still says so.
    """
    if target is None:
        yield None
        return
    stream = Stream(owner, target, stream_id, max_pending_bytes)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream._send_chunks)
            try:
                yield stream
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True) as ending:
            ending.deadline = trio.current_time() + ENDING_WAIT_S
            await stream._flush(end=True)
        if ending.cancelled_caught:
            logger.warning(
                "stream %s: %s took no ending within %g s",
                stream.id,
                target.describe(),
                ENDING_WAIT_S,
            )

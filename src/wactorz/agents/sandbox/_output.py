"""Reading a run's stdout and stderr with the service's memory bounded, however much it prints.

Each stream is read in chunks of at most `CHUNK` bytes. The first ``keep`` bytes are
kept for the result; the rest is counted and dropped. An ``on_output`` callback sees
every chunk of both streams, one call at a time, in the order the chunks were read; the
next chunk of a stream is not read until the callback returned, so a slow consumer
makes the pipe fill and the child block on its next write (backpressure), instead of
making the service buffer. Past ``kill_after`` bytes in one stream, the run is killed
as a runaway; the stream is still read to its end.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Final, Literal, TypeAlias, final

import trio

__all__ = ["CHUNK", "OnOutput", "Pump", "StreamName"]

CHUNK: Final = 256 * 1024
"""Bytes read from a pipe at once, at most (a run's pipes hold up to 1 MiB)."""

StreamName: TypeAlias = Literal["stdout", "stderr"]
OnOutput: TypeAlias = Callable[[StreamName, bytes], Awaitable[None]]
"""``await on_output(stream, chunk)``: called with every chunk a run prints."""


@final
class Pump:
    """Reads one stream of a run to its end: keeps the head, counts all, feeds the callback."""

    def __init__(
        self,
        name: StreamName,
        stream: trio.abc.ReceiveStream,
        *,
        keep: int,
        kill_after: int | None,
        on_output: OnOutput | None,
        turn: trio.Lock,
        runaway: Callable[[], None],
    ) -> None:
        self.name: StreamName = name
        self.total = 0
        self.abandoned = False
        """True if the stream was given up before its end (see `give_up_waiting_at`)."""
        self._stream = stream
        self._kept = bytearray()
        self._keep = keep
        self._kill_after = kill_after
        self._on_output = on_output
        self._turn = turn
        self._runaway = runaway
        self._deadline = math.inf
        self._waiting: trio.CancelScope | None = None

    @property
    def truncated(self) -> bool:
        """Whether the stream carried more than was kept."""
        return self.total > len(self._kept)

    def text(self) -> str:
        """The kept head of the stream, as UTF-8 with bad bytes replaced."""
        return self._kept.decode("utf-8", "replace")

    def give_up_waiting_at(self, deadline: float) -> None:
        """Stop at ``deadline`` (Trio time) if the pipe is still open and silent then: a
        process out of the sandbox's reach may hold it. Time in the callback is not waiting."""
        self._deadline = deadline
        if self._waiting is not None:
            self._waiting.deadline = deadline

    async def run(self) -> None:
        """Read until the pipe's end (or `give_up_waiting_at`); close the stream."""
        async with self._stream:
            while True:
                with trio.CancelScope(deadline=self._deadline) as waiting:
                    self._waiting = waiting
                    chunk = await self._stream.receive_some(CHUNK)
                self._waiting = None
                if waiting.cancelled_caught:
                    self.abandoned = True
                    return
                if not chunk:
                    return
                chunk = bytes(chunk)  # FdStream gives bytes already: no copy
                self._take(chunk)
                if self._on_output is not None:
                    async with self._turn:
                        await self._on_output(self.name, chunk)

    def _take(self, chunk: bytes) -> None:
        room = self._keep - len(self._kept)
        if room > 0:
            self._kept += chunk[:room]
        before = self.total
        self.total += len(chunk)
        if self._kill_after is not None and before <= self._kill_after < self.total:
            self._runaway()

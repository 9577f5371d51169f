"""Timers: messages an actor sends itself later, owned by the incarnation that set them.

`Actor.send_after` and `Actor.send_every` put a `Timer` in the system's one timer
queue, which a single system task serves: no task per timer and none per actor. When a
timer is due its message is queued in the actor's mailbox as a tell from the actor
itself (``self.sender == self.id``), so a timer's message is handled like any other,
one at a time, and cannot be forged by anyone else. A timer belongs to the incarnation
that set it: when that incarnation ends (a stop, a crash, a restart) its timers are
cancelled, and the next incarnation starts with none, as its state starts afresh.
"""

from __future__ import annotations

import heapq
import itertools
import math
from typing import TYPE_CHECKING, Any, Final, final

import trio

if TYPE_CHECKING:
    from wactorz.core.actor import Actor

__all__ = ["Timer"]

_RETRY_FULL_S: Final = 0.01
"""How soon a timer whose actor's mailbox was full tries again."""


@final
class Timer:
    """A message an actor will send itself: once (`Actor.send_after`) or every interval
    (`Actor.send_every`). `cancel` it to stop it; it stops by itself with its incarnation."""

    __slots__ = ("_actor", "_due", "active", "interval_s", "message")

    def __init__(
        self, actor: Actor, message: dict[str, Any], due: float, interval_s: float | None
    ) -> None:
        self._actor = actor
        self._due = due
        self.message = message
        """What it sends."""
        self.interval_s = interval_s
        """Seconds between sends for a repeating timer; None for a one-shot one."""
        self.active = True
        """True until it has fired (one-shot), or is cancelled, or its incarnation ended."""

    def cancel(self) -> None:
        """Stop the timer: nothing more is sent (a message already queued stays queued)."""
        self.active = False

    def __repr__(self) -> str:
        every = f" every {self.interval_s:g} s" if self.interval_s is not None else ""
        state = "active" if self.active else "done"
        return f"<Timer of {self._actor.name!r}{every} {state}>"


@final
class TimerQueue:
    """Every timer of one actor system, served by one task (`run`) in the system's nursery."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()
        self._rearm: trio.CancelScope | None = None

    def add(
        self,
        actor: Actor,
        delay_s: float,
        message: dict[str, Any],
        interval_s: float | None = None,
    ) -> Timer:
        """Schedule ``message`` to ``actor`` in ``delay_s`` seconds (then every ``interval_s``)."""
        if not (isinstance(delay_s, int | float) and math.isfinite(delay_s) and delay_s >= 0):
            raise ValueError(f"a timer's delay is a number of seconds, 0 or more, not {delay_s!r}")
        if interval_s is not None and not (
            isinstance(interval_s, int | float) and math.isfinite(interval_s) and interval_s > 0
        ):
            raise ValueError(
                f"a repeating timer's interval is a number of seconds above 0, not {interval_s!r}"
            )
        timer = Timer(actor, message, trio.current_time() + delay_s, interval_s)
        self._push(timer)
        return timer

    def _push(self, timer: Timer) -> None:
        earliest = self._heap[0][0] if self._heap else math.inf
        heapq.heappush(self._heap, (timer._due, next(self._order), timer))
        if timer._due < earliest and self._rearm is not None:
            self._rearm.cancel()  # the serving task sleeps until a later deadline

    async def run(self) -> None:
        """Send every timer's message when it is due, until cancelled."""
        while True:
            with trio.CancelScope() as self._rearm:
                deadline = self._heap[0][0] if self._heap else math.inf
                await trio.sleep_until(deadline)
            self._rearm = None
            self._fire_due()

    def _fire_due(self) -> None:
        now = trio.current_time()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, timer = heapq.heappop(heap)
            if not timer.active:
                continue
            if not timer._actor._deliver_timer(timer):
                timer._due = now + _RETRY_FULL_S  # a full mailbox: try again shortly
            elif timer.interval_s is None:
                timer.active = False
                continue
            else:
                # Due an interval after this one was due, not after it was sent, so a
                # repeating timer keeps its rhythm; sends missed while late are skipped.
                timer._due += timer.interval_s
                if timer._due <= now:
                    timer._due = now + timer.interval_s
            heapq.heappush(heap, (timer._due, next(self._order), timer))

"""How the runtime shares Trio's scheduler: turns, counted wake-ups and a cheap cancellation probe.

Trio runs every ready task once per scheduler pass. Going through the
scheduler once per message would cap the runtime near awaited Trio channels,
so work is done in *turns* instead: an actor handles up to `TURN` queued
messages back to back, and a task's sends become schedule points only once
every `TURN` sends (each one is still a cancellation point). Three rules keep
turns from costing anyone else much:

- A busy actor ends its turn early, after the message in hand, while someone
  the runtime woke for an ask has not run yet (`Turns.woken`). Someone is
  waiting on an ask, so its latency is what users feel.
- A turn also ends once it has lasted `TURN_SECONDS`, so an actor whose
  messages each take long does not hold up timers, I/O and other actors for
  64 of them (Trio cannot preempt a task; this is the runtime's time slice).
- A task that sends `TURN` messages without waiting yields, so a producer
  scattering mail to many actors lets them start on it instead of filling
  every mailbox first.

A tell to an idle actor is not counted as a wake-up: nobody waits on it, and
counting it would make every actor in a busy pipeline hand over after each
message. Its latency is bounded by one turn of each busy actor instead.
"""

from __future__ import annotations

import math
from types import MemberDescriptorType
from typing import Final, Protocol, cast, final

import trio

__all__: list[str] = []  # the runtime's own machinery: nothing here is for users

TURN: Final = 64
"""Messages an actor handles, or sends a task makes, before it lets other tasks run."""

TURN_SECONDS: Final = 0.001
"""How long an actor's turn may last: it ends at the next clock check after this."""

CLOCK_EVERY: Final = 16
"""Messages between clock checks in a turn: a clock read (~0.17 µs) after every message
would cost the tell path over a tenth of its throughput."""


@final
class Turns:
    """The turn-taking state an actor system shares between its actors and senders."""

    __slots__ = ("sends", "woken")

    def __init__(self) -> None:
        self.woken = 0
        """Tasks woken for an ask (an actor handed one, an asker handed its answer) that have
        not run yet; each counts until the woken task runs."""
        self.sends = 0
        """Sends that completed without waiting since a sending task last yielded."""


class _CancelStatus(Protocol):
    @property
    def effectively_cancelled(self) -> bool: ...


class _Task(Protocol):
    @property
    def _cancel_status(self) -> _CancelStatus: ...


class RunContext(Protocol):
    """What `run_context` offers: the current task, and whether it is cancelled."""

    @property
    def task(self) -> _Task: ...


@final
class _PublicRunContext:
    """`run_context`'s one path, answered through Trio's public API: the slower fallback."""

    __slots__ = ()

    @property
    def task(self) -> _PublicRunContext:
        return self

    @property
    def _cancel_status(self) -> _PublicRunContext:
        return self

    @property
    def effectively_cancelled(self) -> bool:
        return trio.current_effective_deadline() == -math.inf


def _choose_run_context() -> RunContext:
    try:
        from trio._core._run import GLOBAL_RUN_CONTEXT, CancelStatus, Task
    except ImportError:  # pragma: no cover - a Trio whose internals moved
        return _PublicRunContext()
    has = [
        "task" in getattr(type(GLOBAL_RUN_CONTEXT), "__annotations__", ()),
        isinstance(vars(Task).get("_cancel_status"), MemberDescriptorType),
        isinstance(vars(CancelStatus).get("effectively_cancelled"), MemberDescriptorType),
    ]
    if all(has):
        return cast(RunContext, GLOBAL_RUN_CONTEXT)
    return _PublicRunContext()  # pragma: no cover - a Trio whose internals changed


run_context: Final[RunContext] = _choose_run_context()
"""``run_context.task._cancel_status.effectively_cancelled``: would a checkpoint in
the current task raise `trio.Cancelled`?

`trio.lowlevel.checkpoint_if_cancelled` answers this as a coroutine, which
costs a send about a fifth of its time, and even a plain function call costs
it a twentieth; so the answer is read as attributes, straight from Trio's run
context, where Trio keeps it, if this Trio version has it there (checked at
import, and by the tests). Otherwise `run_context` answers the same path
through `trio.current_effective_deadline`, which is public but slower. Unlike
``checkpoint_if_cancelled`` it does not deliver a pending KeyboardInterrupt;
the next yield (at the latest `TURN` sends later) does. Outside a Trio task it
raises: only async code sends.
"""

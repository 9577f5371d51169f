"""Starting children from a few threads that live as long as the service.

``PR_SET_PDEATHSIG`` (and bubblewrap's ``--die-with-parent``, built on it) signals a
child when the *thread* that forked it exits, not the process. Trio starts processes
from its worker threads (`trio.lowlevel.open_process` runs ``Popen`` in
`trio.to_thread.run_sync`), and an idle worker thread exits after 10 seconds: a child
started that way with ``--die-with-parent`` is killed ten seconds later, mid-run
(verified with bwrap 0.8 here). Forking from threads that never exit makes the death
signal mean what it says: the service died.

``Popen`` blocks its thread until the child has exec'd (or failed to), a millisecond or
two; the event loop goes on meanwhile, as with Trio's own threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Final, TypeVar

import outcome
import trio

__all__ = ["call_in_forker"]

T = TypeVar("T")

_THREADS: Final = 4
"""Children being started at once; more wait their turn (each takes a millisecond or two)."""

_Job = tuple[
    Callable[[], Any],
    trio.lowlevel.TrioToken,
    Callable[[outcome.Outcome[Any]], None],
    Callable[[Any], None],
]

_jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
_started: list[threading.Thread] = []
_start_lock = threading.Lock()


def _serve() -> None:
    while True:
        job, token, deliver, orphaned = _jobs.get()
        result = outcome.capture(job)
        try:
            token.run_sync_soon(deliver, result)
        except trio.RunFinishedError:
            if isinstance(result, outcome.Value):
                orphaned(result.value)


def _ensure_threads() -> None:
    if len(_started) == _THREADS:
        return
    with _start_lock:
        while len(_started) < _THREADS:
            thread = threading.Thread(
                target=_serve, name=f"wactorz-sandbox-forker-{len(_started)}", daemon=True
            )
            thread.start()
            _started.append(thread)


async def call_in_forker(job: Callable[[], T], orphaned: Callable[[T], None]) -> T:
    """Run ``job`` (which starts a child) in a forker thread and return what it returned.

    Not cancellable once asked: the child is being started either way, and the caller
    must get it back to kill it, so a cancellation waits for the (short) start and then
    takes effect at the caller's next checkpoint. ``orphaned`` gets the result if the
    Trio run that asked has ended meanwhile.
    """
    _ensure_threads()
    done = trio.Event()
    box: list[outcome.Outcome[T]] = []

    def deliver(result: outcome.Outcome[T]) -> None:
        box.append(result)
        done.set()

    _jobs.put((job, trio.lowlevel.current_trio_token(), deliver, orphaned))
    with trio.CancelScope(shield=True):
        await done.wait()
    return box[0].unwrap()

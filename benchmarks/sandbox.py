"""Sandbox workloads: the start-up cost of a sandboxed ``print(1)``, and 50 runs at once.

The baseline (``raw-await``) starts the very same command, the interpreter the sandbox
picks for Python snippets with the same flags (``-I -u -c "print(1)"``), with
`trio.run_process` and nothing else. The subjects are `wactorz.agents.sandbox.run`
with every layer this machine gives (``wactorz``), with one layer disabled at a time
(``wactorz no-<layer>``: the difference to ``wactorz`` is that layer's cost), with
only the process layer, and with bubblewrap added.

``wactorz via launcher`` measures the design the engine did not choose: a tiny
launcher program that would apply the layers and then exec the snippet. The only
launcher Python offers without compiling anything is an interpreter, so the snippet
runs behind a ``python3 -I -S`` that only execs it: the layers' system calls would add
nothing measurable, the extra interpreter start-up is the cost.

The plan (the probe of the machine) is made before the clock starts: it is paid once
per policy in a service's life, not per run.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

import trio

from benchmarks.harness import Runner, percentile
from wactorz.agents.sandbox import Policy, Snippet, run
from wactorz.agents.sandbox._probe import plan_for

__all__ = ["CONCURRENCY", "STARTUP_VARIANTS", "concurrent_variants"]

CONCURRENCY = 50
"""Runs started at once by the concurrency workload."""

_PRINT_ONE = "print(1)"
_HOP = "import os, sys; os.execv(sys.argv[1], sys.argv[1:])"
_POLICIES: dict[str, Policy] = {
    "wactorz": Policy(),
    "wactorz no-user": Policy(disable={"user"}),
    "wactorz no-cgroup": Policy(disable={"cgroup"}),
    "wactorz no-filesystem": Policy(disable={"filesystem"}),
    "wactorz no-network": Policy(disable={"network"}),
    "wactorz process only": Policy(disable={"user", "cgroup", "filesystem", "network"}),
    "wactorz bubblewrap": Policy(use_bubblewrap=True),
}


def _python() -> str:
    python = plan_for(Policy()).python
    if python is None:
        raise RuntimeError(plan_for(Policy()).report.python_detail)
    return python


def _argv() -> list[str]:
    return [_python(), "-I", "-u", "-c", _PRINT_ONE]


async def _bare() -> None:
    completed = await trio.run_process(_argv(), capture_stdout=True, capture_stderr=True)
    if completed.stdout != b"1\n":
        raise RuntimeError(f"bare print(1) printed {completed.stdout!r}")


def _sandboxed(policy: Policy) -> Callable[[], Awaitable[None]]:
    async def once() -> None:
        result = await run(Snippet("python", _PRINT_ONE), policy=policy)
        if result.stdout != "1\n":
            raise RuntimeError(f"sandboxed print(1) gave {result!r}")

    return once


async def _via_launcher() -> None:
    python = _python()
    result = await run([python, "-I", "-S", "-c", _HOP, *_argv()], policy=Policy())
    if result.stdout != "1\n":
        raise RuntimeError(f"print(1) via a launcher gave {result!r}")


async def _timed(once: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await once()
    return time.perf_counter() - started


def _startup(once: Callable[[], Awaitable[None]], policy: Policy | None) -> Runner:
    """Times ``once`` ``size`` times, each right after a bare run, also timed: the ratio of
    each pair, taken a few milliseconds apart, holds up better than medians against load
    from other processes that comes and goes (the machine may not be ours alone)."""

    async def runner(size: int) -> dict[str, float]:
        if policy is not None:
            plan_for(policy)
        await once()  # warm: the interpreter's files in the page cache, the spawner started
        samples, ratios = [], []
        for _ in range(size):
            bare = await _timed(_bare)
            mine = await _timed(once)
            samples.append(mine)
            ratios.append(mine / bare)
        return {
            "median_ms": statistics.median(samples) * 1e3,
            "p90_ms": percentile(samples, 0.9) * 1e3,
            "paired": statistics.median(ratios),
        }

    return runner


STARTUP_VARIANTS: dict[str, Runner] = {
    **{name: _startup(_sandboxed(policy), policy) for name, policy in _POLICIES.items()},
    "wactorz via launcher": _startup(_via_launcher, Policy()),
    "raw-await": _startup(_bare, None),
}
"""The start-up workload's variants: the subjects, then the baseline."""


def _concurrent(once: Callable[[], Awaitable[None]], policy: Policy | None) -> Runner:
    async def runner(size: int) -> dict[str, float]:
        if policy is not None:
            plan_for(policy)
        await once()
        batches = []
        for _ in range(3):
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(size):
                    nursery.start_soon(once)
            batches.append(time.perf_counter() - started)
        return {"batch_ms": statistics.median(batches) * 1e3}

    return runner


def concurrent_variants() -> dict[str, Runner]:
    """The concurrency workload's variants: every layer, and the bare processes."""
    return {
        "wactorz": _concurrent(_sandboxed(Policy()), Policy()),
        "raw-await": _concurrent(_bare, None),
    }

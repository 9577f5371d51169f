"""How a workload is measured: its variants, rounds in fresh event loops, and their statistics.

A `Workload` is one kind of work done several ways: on wactorz through its public
API (the *subjects*) and on raw Trio (the *baselines*, whose names start with
``raw-``). Every round runs every variant once, interleaved, each in its own
`trio.run` after a `gc.collect`, so that a burst of load on the machine hits
both sides of a ratio alike. Workloads that report memory run each round in a
fresh interpreter, where RSS is not flattered by memory an earlier round freed.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import statistics
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Final

import attrs
import trio

from wactorz.core.mailbox import DEFAULT_MAILBOX_SIZE

__all__ = [
    "BASELINES",
    "BATCH",
    "CHANNEL_SIZE",
    "Countdown",
    "Figure",
    "Metric",
    "Runner",
    "Target",
    "Workload",
    "WorkloadResult",
    "measure",
    "percentile",
]

BASELINES: Final = ("raw-await", "raw-batched", "raw-hypercorn")
"""The variants every ratio is taken against, in table order: raw Trio, and for the web
front door the bare hypercorn + Starlette stack it is built on."""

CHANNEL_SIZE: Final = DEFAULT_MAILBOX_SIZE
"""Buffer of every raw channel: the same room an actor's mailbox has."""

BATCH: Final = 64
"""Operations a raw-batched task does back to back before it yields (an actor's batch)."""

Runner = Callable[[int], Awaitable[dict[str, float]]]
"""One variant of a workload: do the work at this size, return its figures by metric key."""


@attrs.frozen
class Target:
    """A bound the issue sets on one figure.

    With a ``baseline`` the bound applies to the ratio subject/baseline measured
    in the same run; without one it applies to the subject's own figure (a
    slowdown factor, a count of lost messages).
    """

    bound: float
    baseline: str | None = None

    def met(self, value: float, higher_is_better: bool) -> bool:
        """Whether ``value`` (a ratio or a figure, as this target applies) is within bound."""
        if math.isnan(value):
            return False
        return value >= self.bound if higher_is_better else value <= self.bound

    def describe(self, higher_is_better: bool) -> str:
        """The bound as printed beside the ratio: ``≥3`` or ``≤1.5``."""
        return ("≥" if higher_is_better else "≤") + f"{self.bound:g}"


@attrs.frozen
class Metric:
    """One figure a workload reports, in the unit its runners return it in."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    targets: tuple[Target, ...] = ()

    def target_for(self, baseline: str | None) -> Target | None:
        """The target on the ratio against ``baseline`` (None: on the figure itself)."""
        return next((t for t in self.targets if t.baseline == baseline), None)


@attrs.frozen
class Workload:
    """A named piece of work, the sizes it runs at and the ways it is done.

    ``quick_size`` None leaves the workload out of a quick run. ``isolated``
    runs every round in a fresh interpreter (for RSS figures).
    """

    key: str
    title: str
    description: str
    size: int
    quick_size: int | None
    metrics: tuple[Metric, ...]
    variants: Mapping[str, Runner]
    isolated: bool = False
    quick_rounds: int | None = None

    @property
    def subjects(self) -> list[str]:
        """The wactorz variants, in declaration order."""
        return [name for name in self.variants if name not in BASELINES]

    @property
    def baselines(self) -> list[str]:
        """The baselines (`BASELINES`) this workload has."""
        return [name for name in BASELINES if name in self.variants]


@attrs.frozen
class Figure:
    """The samples of one metric of one variant, one per round, and their summary."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def minimum(self) -> float:
        return min(self.samples) if self.samples else math.nan

    @property
    def maximum(self) -> float:
        return max(self.samples) if self.samples else math.nan


@attrs.define
class WorkloadResult:
    """Everything measured for one workload in one run of the suite."""

    workload: Workload
    size: int
    rounds: int
    samples: dict[str, dict[str, list[float]]] = attrs.field(factory=dict)
    errors: dict[str, list[str]] = attrs.field(factory=dict)
    seconds: float = 0.0

    def figure(self, variant: str, metric: str) -> Figure:
        """The figure of ``metric`` for ``variant`` (empty if it never completed a round)."""
        return Figure(tuple(self.samples.get(variant, {}).get(metric, ())))

    def ratio(self, subject: str, baseline: str, metric: str) -> float:
        """Median of ``subject`` over median of ``baseline``, both from this run."""
        numerator = self.figure(subject, metric).median
        denominator = self.figure(baseline, metric).median
        if math.isnan(numerator) or math.isnan(denominator) or denominator == 0:
            return math.nan
        return numerator / denominator


@attrs.define
class Countdown:
    """Counts events in a workload and sets ``done`` when ``expected`` of them happened."""

    expected: int
    count: int = 0
    done: trio.Event = attrs.field(factory=trio.Event)

    def hit(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.done.set()


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``samples`` (``fraction`` 0.99 for p99)."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


async def _guarded(runner: Runner, size: int, timeout_s: float) -> dict[str, float]:
    with trio.fail_after(timeout_s):
        return await runner(size)


def run_once(runner: Runner, size: int, timeout_s: float) -> dict[str, float]:
    """Run one round of one variant in a fresh event loop, after collecting garbage."""
    gc.collect()
    return trio.run(_guarded, runner, size, timeout_s)


def _run_isolated(runner: Runner, size: int, timeout_s: float) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_once, runner, size, timeout_s).result()


def measure(
    workload: Workload,
    *,
    quick: bool,
    rounds: int,
    timeout_s: float,
    status: Callable[[str], None],
) -> WorkloadResult:
    """Run every variant of ``workload`` for ``rounds`` interleaved rounds.

    A variant that raises or exceeds ``timeout_s`` in a round has the error
    recorded and contributes no sample for that round; the suite goes on.
    """
    size = workload.quick_size if quick and workload.quick_size is not None else workload.size
    if quick and workload.quick_rounds is not None:
        rounds = min(rounds, workload.quick_rounds)
    result = WorkloadResult(workload, size, rounds)
    started = time.perf_counter()
    for round_number in range(1, rounds + 1):
        for variant, runner in workload.variants.items():
            status(f"{workload.title} · round {round_number}/{rounds} · {variant}")
            try:
                if workload.isolated:
                    figures = _run_isolated(runner, size, timeout_s)
                else:
                    figures = run_once(runner, size, timeout_s)
            except Exception as exc:
                last = traceback.format_exception_only(exc)[-1].strip()
                result.errors.setdefault(variant, []).append(f"round {round_number}: {last}")
                continue
            bucket = result.samples.setdefault(variant, {})
            for key, value in figures.items():
                bucket.setdefault(key, []).append(float(value))
    result.seconds = time.perf_counter() - started
    return result

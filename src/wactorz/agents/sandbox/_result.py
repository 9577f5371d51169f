"""What a finished run answers with: `RunResult`."""

from __future__ import annotations

from typing import Any, Final, final

import attrs

__all__ = ["KILLED_BY", "RunResult"]

KILLED_BY: Final = (
    "timeout",
    "cpu_limit",
    "memory_limit",
    "file_size_limit",
    "output_limit",
    "signal:<NAME>",
)
"""The values of `RunResult.killed_by`: the run passed its wall-clock ``timeout_s``; a
process passed ``cpu_s`` (SIGXCPU, or SIGKILL at the hard limit); the cgroup's memory
limit killed a process of the run; a process wrote past ``max_file_bytes`` (SIGXFSZ); a
stream passed ``kill_output_bytes``; or the main process died of some other signal
(``signal:SIGSEGV``, or ``signal:SIGKILL`` sent by the run itself)."""


@final
@attrs.frozen(kw_only=True)
class RunResult:
    """How a run ended and what it printed. A failing program is a normal result.

    ``exit_code`` is the main process's status, None when a signal ended it (``signal``
    names it). ``killed_by`` says what stopped the run, None when the program ended on
    its own (see `KILLED_BY`); ``timed_out`` is ``killed_by == "timeout"``. ``stdout`` and
    ``stderr`` hold the first ``max_output_bytes`` of each stream, decoded as UTF-8 (bad
    bytes replaced); ``stdout_truncated`` says some was dropped and ``stdout_bytes``
    counts all the stream carried. ``peak_memory_bytes`` is the peak of the run's memory
    (the cgroup's, for the whole tree; else the largest resident set of the main process
    and the children it waited for), ``cpu_s`` the CPU time of the main process and the
    children it waited for. ``layers`` are the isolation layers the run had.
    """

    stdout: str
    stderr: str
    exit_code: int | None
    signal: str | None
    timed_out: bool
    killed_by: str | None
    duration_s: float
    stdout_truncated: bool
    stderr_truncated: bool
    stdout_bytes: int
    stderr_bytes: int
    peak_memory_bytes: int | None
    cpu_s: float | None
    layers: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when the program exited with status 0 and nothing killed it."""
        return self.exit_code == 0 and self.killed_by is None

    @property
    def truncated(self) -> bool:
        """True when some output of either stream was dropped."""
        return self.stdout_truncated or self.stderr_truncated

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-compatible data: ``stdout``, ``stderr``, ``exit_code``,
        ``signal``, ``timed_out``, ``killed_by``, ``duration_s``, ``truncated`` (a dict
        with ``stdout`` and ``stderr``), ``stdout_bytes``, ``stderr_bytes``,
        ``peak_memory_bytes``, ``cpu_s`` and ``layers``."""
        return {
            "stdout": self.stdout,
            "stderr": self.stderr,
            "exit_code": self.exit_code,
            "signal": self.signal,
            "timed_out": self.timed_out,
            "killed_by": self.killed_by,
            "duration_s": round(self.duration_s, 6),
            "truncated": {"stdout": self.stdout_truncated, "stderr": self.stderr_truncated},
            "stdout_bytes": self.stdout_bytes,
            "stderr_bytes": self.stderr_bytes,
            "peak_memory_bytes": self.peak_memory_bytes,
            "cpu_s": None if self.cpu_s is None else round(self.cpu_s, 6),
            "layers": list(self.layers),
        }

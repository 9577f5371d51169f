"""The one-line status on stderr that says what the suite is measuring right now."""

from __future__ import annotations

import sys
import time
from typing import TextIO, final

__all__ = ["Progress"]


@final
class Progress:
    """Rewrites one status line on a terminal; on anything else, logs one line per workload.

    Use it as a context manager: the line is cleared when the block ends, so
    the table printed after it starts on a clean line.
    """

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._live = self._stream.isatty()
        self._total = total
        self._step = 0
        self._started = time.perf_counter()
        self._logged_step = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live:
            self._stream.write("\r\x1b[2K")
            self._stream.flush()

    def next_workload(self, title: str) -> None:
        """Count one more workload as started and show it."""
        self._step += 1
        self.show(title)

    def show(self, text: str) -> None:
        """Replace the status with ``text`` (prefixed by the step count and elapsed time)."""
        elapsed = time.perf_counter() - self._started
        line = f"[{self._step}/{self._total} {elapsed:5.0f} s] {text}"
        if self._live:
            width = 119
            self._stream.write("\r\x1b[2K" + line[:width])
            self._stream.flush()
            return
        if self._step != self._logged_step:  # one line per workload when not on a terminal
            self._logged_step = self._step
            self._stream.write(line + "\n")
            self._stream.flush()

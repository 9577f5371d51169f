"""Killing every live process of a run, including those that left its process group.

A run ends when its main process exits (or is killed); whatever it left behind is then
killed too, in passes until none is alive: a fork bomb replaces what a pass killed, but
only until ``RLIMIT_NPROC`` and ``pids.max`` stop it, and a process with a SIGKILL
pending cannot fork. Candidates come from the run's cgroup (`RunCgroup.live_pids`) or,
without one, from a scan of ``/proc`` for the run's uid.

A pid is signalled through a pidfd opened *before* checking that the process is the
run's (its uid, or its cgroup): if the pid was recycled in between, the check sees the
newcomer and refuses, or the pidfd names the dead process and the signal goes nowhere.
So an unrelated process is never killed by a reused pid.

Killed processes whose parent died are reparented to the spawner (a subreaper), which
reaps them at once; meanwhile they are zombies, dead and holding nothing but a pid, and
are not counted.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import trio

__all__ = ["in_cgroup", "owned_by", "sweep", "uid_processes"]


def _status(pid: int) -> dict[str, str] | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def _alive_with_uid(pid: int, uid: int) -> bool:
    status = _status(pid)
    if status is None or status.get("State", "Z").startswith(("Z", "X")):
        return False
    return int(status["Uid"].split()[0]) == uid


def uid_processes(uid: int) -> list[int]:
    """The live (not zombie) processes whose real uid is ``uid``."""
    return [
        int(entry.name)
        for entry in os.scandir("/proc")
        if entry.name.isdigit() and _alive_with_uid(int(entry.name), uid)
    ]


def owned_by(uid: int) -> Callable[[int], bool]:
    """A check that a pid is a live process of ``uid``."""
    return lambda pid: _alive_with_uid(pid, uid)


def in_cgroup(path_suffix: str) -> Callable[[int], bool]:
    """A check that a pid is in a cgroup whose path ends with ``path_suffix``."""

    def check(pid: int) -> bool:
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except (FileNotFoundError, ProcessLookupError):
            return False
        return any(line.endswith(path_suffix) for line in text.splitlines())

    return check


def _kill(pid: int, belongs: Callable[[int], bool]) -> None:
    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        if belongs(pid):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)


async def sweep(
    find: Callable[[], list[int]], belongs: Callable[[int], bool], *, patience_s: float = 5.0
) -> bool:
    """Kill what ``find`` lists (when ``belongs`` confirms it) until it lists nothing;
    False if something was still alive after ``patience_s`` seconds."""
    deadline = time.monotonic() + patience_s
    pause = 0.0005
    while True:
        pids = find()
        if not pids:
            return True
        for pid in pids:
            _kill(pid, belongs)
        if time.monotonic() >= deadline:
            return not find()
        await trio.sleep(pause)
        pause = min(pause * 2, 0.05)

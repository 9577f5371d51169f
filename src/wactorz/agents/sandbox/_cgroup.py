"""A cgroup per run (cgroup v1 ``pids`` and ``memory`` controllers): limits on the run's whole
process tree, its peak memory, and the list of its live processes.

Rlimits bound each process; a fork bomb of ``max_processes`` processes, each at its
``RLIMIT_AS``, could still take ``max_processes`` times the memory. The run's cgroup
bounds the tree: ``pids.max`` processes and threads, ``memory.limit_in_bytes`` of memory
(the kernel's OOM killer picks a process of the run, never of the service), and its
``cgroup.procs`` lists every live process of the run, which is how the run's end finds
what is left to kill.

Groups go beneath the service's own cgroup of each controller (read from
``/proc/self/cgroup``), in ``wactorz-sandbox/``, so the service's own accounting and
limits still cover its runs. Only root may create them, and only where cgroup v1 is
mounted: on a cgroup v2 machine the service's cgroup holds processes, and v2 allows
controllers only for groups that hold none, which needs a delegated subtree (not done
yet). `find_roots` says why when the layer is off.

A child joins its run's groups itself, between fork and exec, by writing ``0`` to
``cgroup.procs`` files that the parent opened for it (the child is no longer root by
then, and could not open them).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from pathlib import Path
from typing import Final, final

import attrs

__all__ = ["CgroupRoots", "RunCgroup", "find_roots"]

_BASE: Final = "wactorz-sandbox"
_CONTROLLERS: Final = ("pids", "memory")


@final
@attrs.frozen
class CgroupRoots:
    """Where per-run groups are made, for each controller."""

    pids: Path
    memory: Path


def _own_paths() -> dict[str, str]:
    paths: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path
    return paths


def _v1_mounts() -> dict[str, tuple[Path, str]]:
    """For each v1 controller: its mount point and the hierarchy path mounted there."""
    mounts: dict[str, tuple[Path, str]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        fstype, super_options = fields[separator + 1], fields[separator + 3]
        if fstype != "cgroup":
            continue
        for option in super_options.split(","):
            if option in _CONTROLLERS and option not in mounts:
                mounts[option] = (Path(fields[4]), fields[3])
    return mounts


def find_roots() -> tuple[CgroupRoots | None, str]:
    """The directories for per-run groups, created if need be, or None and the reason."""
    if os.geteuid() != 0:
        return None, "the service is not root, and only root may create cgroups here"
    try:
        mounts = _v1_mounts()
        own = _own_paths()
    except OSError as exc:
        return None, f"cannot read the process's cgroups: {exc}"
    missing = [controller for controller in _CONTROLLERS if controller not in mounts]
    if missing:
        unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        why = (
            "only cgroup v2 is mounted, which this sandbox does not use yet (it needs a "
            "delegated subtree)"
            if unified
            else f"no cgroup v1 {' and '.join(missing)} controller is mounted"
        )
        return None, why
    roots: dict[str, Path] = {}
    for controller in _CONTROLLERS:
        mountpoint, mounted = mounts[controller]
        path = own.get(controller, "/")
        relative = os.path.relpath(path, mounted)
        if relative.startswith(".."):
            return None, f"the {controller} cgroup {path} is not visible under {mountpoint}"
        root = (mountpoint / relative / _BASE).resolve()
        try:
            root.mkdir(exist_ok=True)
            probe = root / f"probe-{os.getpid()}"
            probe.mkdir()
            probe.rmdir()
        except OSError as exc:
            return None, f"cannot create {controller} cgroups in {root.parent}: {exc.strerror}"
        roots[controller] = root
    return CgroupRoots(pids=roots["pids"], memory=roots["memory"]), (
        f"cgroup v1 groups per run in {roots['pids']} and {roots['memory']}"
    )


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


@final
class RunCgroup:
    """The ``pids`` and ``memory`` groups of one run."""

    def __init__(self, pids: Path, memory: Path, join_fds: tuple[int, ...]) -> None:
        self.pids = pids
        self.memory = memory
        self.join_fds = join_fds
        """Open ``cgroup.procs`` files: the child writes ``0`` to each to join."""

    @classmethod
    def create(
        cls, roots: CgroupRoots, name: str, *, max_processes: int, memory_bytes: int
    ) -> RunCgroup:
        """Make the groups ``name`` with these limits. A group of that name left by a service
        that died is removed first; `OSError` if it still holds processes."""
        made: list[Path] = []
        fds: list[int] = []
        try:
            for root in (roots.pids, roots.memory):
                path = root / name
                try:
                    path.mkdir()
                except FileExistsError:
                    path.rmdir()
                    path.mkdir()
                made.append(path)
            pids, memory = made
            _write(pids / "pids.max", str(max_processes))
            _write(memory / "memory.limit_in_bytes", str(memory_bytes))
            with contextlib.suppress(OSError):  # no swap accounting: nothing to bound
                _write(memory / "memory.memsw.limit_in_bytes", str(memory_bytes))
            for path in made:
                fds.append(os.open(path / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            for fd in fds:
                os.close(fd)
            for path in made:
                _remove(path, patience_s=0)
            raise
        return cls(pids, memory, tuple(fds))

    def live_pids(self) -> list[int]:
        """The processes in the run's groups that have not exited (zombies are not listed)."""
        found: set[int] = set()
        for path in (self.pids, self.memory):
            try:
                text = (path / "cgroup.procs").read_text()
            except FileNotFoundError:
                continue
            found.update(int(line) for line in text.split())
        return sorted(found)

    def peak_memory(self) -> int | None:
        """The most memory the run's tree used at once, in bytes."""
        try:
            return int((self.memory / "memory.max_usage_in_bytes").read_text())
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int:
        """How many processes of the run the memory limit killed."""
        try:
            text = (self.memory / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def close_join_fds(self) -> None:
        """Close the files children join through (once the child is started)."""
        fds, self.join_fds = self.join_fds, ()
        for fd in fds:
            os.close(fd)

    def remove(self) -> bool:
        """Close and delete the groups; False if one still holds a process after a moment."""
        self.close_join_fds()
        removed = [_remove(path, patience_s=1.0) for path in (self.pids, self.memory)]
        return all(removed)


def _remove(path: Path, *, patience_s: float) -> bool:
    deadline = time.monotonic() + patience_s
    while True:
        try:
            path.rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                return False
            time.sleep(0.001)  # a killed process is still leaving the group
        else:
            return True

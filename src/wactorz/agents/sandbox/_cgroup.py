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

Joining a v1 cgroup waits for an RCU grace period (some 10 ms) unless another process
joined one a moment before: the spawner's stubs join theirs before a run needs them
(`_spawner_program`), and remove them when the run is reaped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final, final

import attrs

__all__ = ["CgroupRoots", "RunCgroup", "find_roots", "limits"]

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


@final
class RunCgroup:
    """The ``pids`` and ``memory`` groups of one run (made by the spawner's stub)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = [Path(path) for path in paths]
        self.pids, self.memory = self.paths

    def live_pids(self) -> list[int]:
        """The processes in the run's groups that have not exited (zombies are not listed)."""
        found: set[int] = set()
        for path in self.paths:
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


def limits(max_processes: int, memory_bytes: int) -> dict[str, str]:
    """The files a run's stub writes in its groups, and their values (in this order)."""
    return {
        "pids.max": str(max_processes),
        "memory.limit_in_bytes": str(memory_bytes),
        "memory.memsw.limit_in_bytes": str(memory_bytes),
    }

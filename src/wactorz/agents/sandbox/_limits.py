"""The resource limits (``setrlimit``) a run's processes get, from its `Policy`.

Soft and hard limits are equal, so a process cannot raise its own (only a process with
``CAP_SYS_RESOURCE`` could, and the run has none once it is not root), except the CPU
limit: its hard limit is one second above the soft one, so the program first gets
SIGXCPU, which it may catch to report, and SIGKILL a second later.

Limits are per process (and ``RLIMIT_NPROC`` per uid, which is why every run gets a uid
of its own): a tree of processes may use ``max_processes`` times ``memory_bytes`` of
address space; the cgroup layer bounds the tree as a whole.
"""

from __future__ import annotations

import resource

from wactorz.agents.sandbox._policy import Policy

__all__ = ["rlimits"]


def rlimits(policy: Policy) -> tuple[tuple[int, int, int], ...]:
    """``(resource, soft, hard)`` for every limit the run's processes get.

    A limit the service itself has lower stays at the service's (a process that is not
    root cannot raise its hard limits, and the child is not root when it sets them).
    """
    wanted = (
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, policy.cpu_s, policy.cpu_s + 1),
        (resource.RLIMIT_AS, policy.memory_bytes, policy.memory_bytes),
        (resource.RLIMIT_NOFILE, policy.max_open_files, policy.max_open_files),
        (resource.RLIMIT_NPROC, policy.max_processes, policy.max_processes),
        (resource.RLIMIT_FSIZE, policy.max_file_bytes, policy.max_file_bytes),
    )
    return tuple((kind, *_within(kind, soft, hard)) for kind, soft, hard in wanted)


def _within(kind: int, soft: int, hard: int) -> tuple[int, int]:
    ceiling = resource.getrlimit(kind)[1]
    if ceiling == resource.RLIM_INFINITY:
        return soft, hard
    return min(soft, ceiling), min(hard, ceiling)

"""Which isolation layers this machine gives a policy, found out once and remembered.

`probe` looks at the machine (root or not, Landlock's ABI, cgroups, bubblewrap, an
interpreter the run's user can execute), tries what can only be known by trying (a user
and network namespace made by an unprivileged uid; bubblewrap starting), and decides,
for one policy, how runs apply each layer (a `Plan`) and what to tell the operator (a
`SandboxReport`). Both are remembered per policy, and every layer that is off although
the policy wanted it is logged once, as a warning saying what is lost.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Final, final

import attrs

from wactorz.agents.sandbox import _landlock, _linux
from wactorz.agents.sandbox._cgroup import CgroupRoots, find_roots, limits
from wactorz.agents.sandbox._policy import MiB, Policy
from wactorz.agents.sandbox._report import Layer, SandboxReport
from wactorz.agents.sandbox._spawner import SpawnerConfig
from wactorz.agents.sandbox._users import UidPool, lock_directory

__all__ = [
    "Plan",
    "plan_for",
    "probe",
    "reachable_by_stranger",
    "remembered_plan",
    "used_uids",
]

logger = logging.getLogger("wactorz.sandbox")

SECCOMP_MACHINES: Final = ("x86_64", "aarch64")
"""Where the spawner knows the system call numbers its seccomp filter needs."""

SYSTEM_READ: Final = tuple(
    Path(path)
    for path in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/proc")
)
"""What every run may read and execute: the programs, their libraries, the system's
configuration (a secret there must not be world-readable), and ``/proc``."""

DEVICES: Final = tuple(
    Path(f"/dev/{name}") for name in ("null", "zero", "full", "random", "urandom")
)
"""The devices every run may open, to read and write."""

_SAFE_PATH: Final = "/usr/local/bin:/usr/bin:/bin"
_TIMEOUT_S: Final = 20.0


@final
@attrs.frozen
class Plan:
    """How runs of one policy apply each layer on this machine, and the report about it."""

    policy: Policy
    report: SandboxReport
    uids: UidPool | None
    """Per-run uids (the user layer), or None."""
    spawner: SpawnerConfig
    """What the spawner's stubs prepare: the cgroups (that layer), the network namespace."""
    landlock_abi: int
    """0 for no Landlock ruleset at all."""
    landlock_filesystem: bool
    deny_unix_sockets: bool
    """Whether a seccomp filter refuses to create unix sockets (host ones such as D-Bus's
    are files, which no network namespace hides, and Landlock does not guard connect)."""
    bwrap: str | None
    python: str | None
    read_paths: tuple[Path, ...]
    tmp_base: Path


def reachable_by_stranger(path: Path, *, execute: bool) -> bool:
    """Whether a uid that owns nothing and has no group could open ``path`` (execute it,
    when ``execute``, else search it as a directory): every directory on the way must let
    "others" search it."""
    try:
        real = Path(os.path.realpath(path))
        info = real.stat()
        if execute and not (stat.S_ISREG(info.st_mode) and info.st_mode & stat.S_IXOTH):
            return False
        if not execute and not (stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_IXOTH):
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)
    except OSError:
        return False


# ---- the machine, looked at once -----------------------------------------------------------


@final
@attrs.frozen
class _Machine:
    root: bool
    landlock_abi: int
    cgroups: CgroupRoots | None
    cgroup_detail: str
    bwrap: str | None


@functools.cache
def _machine() -> _Machine:
    roots, detail = find_roots()
    return _Machine(
        root=os.geteuid() == 0,
        landlock_abi=_landlock.abi_version(),
        cgroups=roots,
        cgroup_detail=detail,
        bwrap=shutil.which("bwrap", path=_SAFE_PATH),
    )


_pools: dict[tuple[int, int], UidPool] = {}
_pools_lock = threading.Lock()


def used_uids() -> set[int]:
    """Every uid a run of this process was given, so far."""
    with _pools_lock:
        return set().union(*(pool.used for pool in _pools.values()))


def _pool(uid_range: tuple[int, int]) -> UidPool:
    with _pools_lock:
        pool = _pools.get(uid_range)
        if pool is None:
            pool = _pools[uid_range] = UidPool(*uid_range, lock_directory())
        return pool


_TRY_CODE: Final = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
uid, flags, no_new_privs, *argv = sys.argv[1:]

def fail(what):
    sys.stderr.write(what + ": " + os.strerror(ctypes.get_errno()))
    sys.exit(1)

if uid != "-":
    os.setgroups([])
    os.setresgid(int(uid), int(uid), int(uid))
    os.setresuid(int(uid), int(uid), int(uid))
if int(flags) and libc.unshare(int(flags)) != 0:
    fail("unshare")
if int(no_new_privs) and libc.prctl(38, 1, 0, 0, 0) != 0:
    fail("prctl(PR_SET_NO_NEW_PRIVS)")
if argv:
    os.execv(argv[0], argv)
"""


def _try(
    argv: list[str], *, uid: int | None, unshare: int = 0, no_new_privs: bool = False
) -> str | None:
    """Run ``argv`` (if any) as ``uid`` after ``unshare(flags)`` and no_new_privs, in a small
    interpreter of its own (no fork of the service with code to run in the child); None if
    it all succeeded, else why not."""
    command = [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _TRY_CODE,
        "-" if uid is None else str(uid),
        str(unshare),
        str(int(no_new_privs)),
        *argv,
    ]
    try:
        completed = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if completed.returncode != 0:
        return completed.stderr.decode("utf-8", "replace").strip()[-300:] or (
            f"exit status {completed.returncode}"
        )
    return None


# ---- one policy ----------------------------------------------------------------------------


def _network_namespace_mode(root: bool) -> str:
    """How a stub makes its network namespace: as root directly; otherwise inside a user
    namespace of its own (the only way an unprivileged process may)."""
    return "root" if root else "user"


def _namespaces_work(root: bool) -> str | None:
    flags = _linux.CLONE_NEWNET if root else _linux.CLONE_NEWUSER | _linux.CLONE_NEWNET
    return _try([], uid=None, unshare=flags)


def _bubblewrap_works(bwrap: str, uid: int | None) -> str | None:
    argv = [bwrap, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "/bin/true"]
    return _try(argv, uid=uid, no_new_privs=True)


def _bubblewrap_version(bwrap: str) -> str:
    try:
        out = subprocess.run(
            [bwrap, "--version"], capture_output=True, timeout=_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return "bwrap"
    return out.stdout.decode("utf-8", "replace").strip() or "bwrap"


def _python_facts(python: str) -> tuple[str, tuple[Path, ...]] | None:
    """The version of ``python`` and the prefixes it reads its library from."""
    code = "import sys; print(sys.version.split()[0]); print(sys.base_prefix); print(sys.prefix)"
    try:
        out = subprocess.run(
            [python, "-I", "-c", code],
            capture_output=True,
            timeout=_TIMEOUT_S,
            check=True,
            env={"PATH": _SAFE_PATH},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    version, *prefixes = out.stdout.decode().split("\n")[:3]
    return version, tuple(Path(prefix) for prefix in prefixes if prefix)


def _choose_python(policy: Policy, stranger: bool) -> tuple[str | None, tuple[Path, ...], str]:
    """The interpreter for Python snippets, the paths it needs to read, and the report line."""
    unreachable = (
        "is not executable by the run's unprivileged user (a directory on its path is private)"
    )
    if policy.python is not None:
        found = (
            shutil.which(policy.python, path=_SAFE_PATH)
            if "/" not in policy.python
            else policy.python
        )
        if found is None or not os.access(found, os.X_OK):
            return None, (), f"policy.python {policy.python!r} was not found or is not executable"
        if stranger and not reachable_by_stranger(Path(found), execute=True):
            return None, (), f"policy.python {found} {unreachable}"
        candidates = [found]
        note = ""
    else:
        candidates = []
        note = ""
        own = sys.executable
        if own and (not stranger or reachable_by_stranger(Path(own), execute=True)):
            candidates.append(own)
        elif own:
            note = f"; the service's own interpreter {own} {unreachable}"
        for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
            if os.access(path, os.X_OK) and (
                not stranger or reachable_by_stranger(Path(path), execute=True)
            ):
                candidates.append(path)
    for candidate in candidates:
        facts = _python_facts(candidate)
        if facts is not None:
            version, prefixes = facts
            return candidate, prefixes, f"Python snippets run with {candidate} ({version}){note}"
    return (
        None,
        (),
        "no Python interpreter the run's user can execute: install python3 "
        "(Debian: apt-get install python3) or set policy.python" + note,
    )


def _tmp_base(stranger: bool) -> Path:
    for candidate in (Path(tempfile.gettempdir()), Path("/tmp"), Path("/var/tmp")):
        if candidate.is_dir() and (not stranger or reachable_by_stranger(candidate, execute=False)):
            return candidate
    return Path(tempfile.gettempdir())


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n % MiB == 0 else f"{n:,} B"


def _process_layer(policy: Policy) -> Layer:
    kill = (
        "never killed for it"
        if policy.kill_output_bytes is None
        else f"killed past {_size(policy.kill_output_bytes)}"
    )
    return Layer(
        "process",
        True,
        "own session and process group, killed as a whole; a private directory as cwd, HOME "
        "and TMPDIR, removed afterwards; an allow-listed environment; stdin /dev/null unless "
        f"given; rlimits: {policy.cpu_s} s CPU, {_size(policy.memory_bytes)} address space, "
        f"{policy.max_processes} processes, {policy.max_open_files} files, "
        f"{_size(policy.max_file_bytes)} per file, no core dumps; no_new_privs; output kept to "
        f"{_size(policy.max_output_bytes)} per stream ({kill})",
    )


def _lost(name: str, *, root: bool, tcp_denied: bool) -> str:
    """What runs lose without layer ``name``."""
    if name == "user":
        if root:
            return (
                "runs run as root, which ignores RLIMIT_NPROC and may raise its own limits: "
                "a fork bomb is contained only by the cgroup, if any"
            )
        return (
            "runs keep the service's uid: they can signal each other (and the service, unless "
            "Landlock ABI 6 scopes signals), RLIMIT_NPROC counts the service's own processes "
            "and threads, and a process that leaves the run's process group can outlive the run "
            "(use_bubblewrap prevents that)"
        )
    if name == "cgroup":
        return (
            "limits hold per process only (a run's processes together may use max_processes "
            "times memory_bytes), and there is no peak memory of the whole tree"
        )
    if name == "filesystem":
        return (
            "runs can read whatever their user may (world-readable files such as the "
            "project's) and write wherever it may (/tmp)"
        )
    if tcp_denied:
        return "UDP and raw sockets reach the host's network; only TCP is denied (by Landlock)"
    return "runs share the host's network"


def _decide(policy: Policy) -> Plan:
    machine = _machine()
    abi = machine.landlock_abi
    tcp_denied = abi >= 4 and "filesystem" not in policy.disable

    def off(name: str, why: str) -> Layer:
        return Layer(
            name, False, f"{why}; lost: {_lost(name, root=machine.root, tcp_denied=tcp_denied)}"
        )

    def disabled(name: str) -> bool:
        return name in policy.disable

    layers = [_process_layer(policy)]

    uids: UidPool | None = None
    if disabled("user"):
        layers.append(off("user", "disabled by policy"))
    elif not machine.root:
        layers.append(off("user", "the service is not root, so it cannot give runs other uids"))
    else:
        pool = _pool(policy.uid_range)
        if pool.size == 0:
            layers.append(off("user", f"every uid of uid_range {policy.uid_range} is an account"))
        else:
            uids = pool
            skipped = f"; {len(pool.skipped)} skipped, being accounts" if pool.skipped else ""
            layers.append(
                Layer(
                    "user",
                    True,
                    f"each run gets a uid of its own from {pool.first}-{pool.stop - 1} "
                    f"({pool.size} available{skipped}), the same gid, no supplementary groups",
                )
            )
    stranger = uids is not None
    probe_uid = _probe_uid(uids)

    cgroups = None
    if disabled("cgroup"):
        layers.append(off("cgroup", "disabled by policy"))
    elif machine.cgroups is None:
        layers.append(off("cgroup", machine.cgroup_detail))
    else:
        cgroups = machine.cgroups
        layers.append(
            Layer(
                "cgroup",
                True,
                f"pids.max {policy.max_processes} and {_size(policy.memory_bytes)} of memory for "
                f"the run's whole tree ({machine.cgroup_detail})",
            )
        )

    bwrap: str | None = None
    if not policy.use_bubblewrap:
        bubblewrap = Layer("bubblewrap", False, "not asked for (use_bubblewrap is False)", False)
    elif disabled("bubblewrap"):
        bubblewrap = Layer("bubblewrap", False, "disabled by policy")
    elif machine.bwrap is None:
        bubblewrap = Layer(
            "bubblewrap",
            False,
            "bwrap is not installed (Debian: apt-get install bubblewrap); the other layers apply",
        )
    else:
        failure = _bubblewrap_works(machine.bwrap, probe_uid)
        if failure is not None:
            bubblewrap = Layer("bubblewrap", False, f"{machine.bwrap} fails here: {failure}")
        else:
            bwrap = machine.bwrap
            bubblewrap = Layer(
                "bubblewrap",
                True,
                f"{_bubblewrap_version(bwrap)} at {bwrap}: new user, pid, ipc, uts, cgroup and "
                "mount namespaces, system directories bound read-only, a new session, killed "
                "with the service",
            )

    python, python_paths, python_detail = _choose_python(policy, stranger)
    read_paths = tuple(
        dict.fromkeys(
            [*SYSTEM_READ, *_outside(python_paths, SYSTEM_READ), *policy.extra_read_paths]
        )
    )
    shown = ", ".join(str(path) for path in read_paths)

    landlock_filesystem = False
    if disabled("filesystem"):
        layers.append(off("filesystem", "disabled by policy"))
    elif bwrap is not None:
        layers.append(
            Layer(
                "filesystem",
                True,
                f"bubblewrap's mount namespace: read-only {shown}; read-write only the run's "
                "directory (Landlock is not stacked: it would forbid bubblewrap's mounts)",
            )
        )
    elif abi == 0:
        layers.append(
            off(
                "filesystem",
                "Landlock is not available (it needs Linux 5.13 or later with landlock in the "
                "lsm= boot list)",
            )
        )
    else:
        landlock_filesystem = True
        layers.append(
            Layer(
                "filesystem",
                True,
                f"{_landlock.describe(abi)}; read and execute {shown} and the devices "
                f"{', '.join(path.name for path in DEVICES)}; read and write only the run's "
                "directory (and its workdir)",
            )
        )

    netns: str | None = None
    deny_unix = (
        not policy.network
        and not disabled("network")
        and bwrap is None
        and os.uname().machine in SECCOMP_MACHINES
    )
    extras = ["TCP bind and connect are also denied by Landlock"] if tcp_denied else []
    if deny_unix:
        extras.append(
            "creating a unix socket is refused (seccomp), so the host's, such as D-Bus's or "
            "the journal's, are out of reach too"
        )
    also = f" ({'; '.join(extras)})" if extras else ""
    if policy.network:
        layers.append(
            Layer("network", False, "allowed (network=True): runs share the host's network", False)
        )
    elif disabled("network"):
        layers.append(off("network", "disabled by policy"))
    elif bwrap is not None:
        layers.append(Layer("network", True, f"bubblewrap's network namespace{also}"))
    else:
        failure = _namespaces_work(machine.root)
        if failure is None:
            netns = _network_namespace_mode(machine.root)
            layers.append(
                Layer(
                    "network",
                    True,
                    f"a network namespace per run, with only a loopback that is down{also}",
                )
            )
        else:
            layers.append(
                off(
                    "network",
                    f"an unprivileged user namespace cannot be made here ({failure}; see sysctl "
                    "user.max_user_namespaces and kernel.unprivileged_userns_clone)",
                )
            )
    layers.append(bubblewrap)
    report = SandboxReport(
        layers=tuple(sorted(layers, key=lambda layer: _ORDER[layer.name])),
        python=python,
        python_detail=python_detail,
    )
    return Plan(
        policy=policy,
        report=report,
        uids=uids,
        spawner=SpawnerConfig(
            cgroup_roots=() if cgroups is None else (str(cgroups.pids), str(cgroups.memory)),
            cgroup_limits=()
            if cgroups is None
            else tuple(limits(policy.max_processes, policy.memory_bytes).items()),
            netns=netns,
        ),
        landlock_abi=0 if disabled("filesystem") else abi,
        landlock_filesystem=landlock_filesystem,
        deny_unix_sockets=deny_unix,
        bwrap=bwrap,
        python=python,
        read_paths=read_paths,
        tmp_base=_tmp_base(stranger),
    )


_ORDER: Final = {
    name: index
    for index, name in enumerate(
        ("process", "user", "cgroup", "filesystem", "network", "bubblewrap")
    )
}


def _probe_uid(uids: UidPool | None) -> int | None:
    """A uid to try things as: one the pool hands out (and takes back), or the service's."""
    if uids is None:
        return None
    lease = uids.acquire(f"{os.getpid()} probe\n")
    uids.give_back_unused(lease)
    return lease.uid


def _outside(paths: tuple[Path, ...], covered: tuple[Path, ...]) -> list[Path]:
    """The ``paths`` not already beneath one of ``covered``."""
    return [path for path in paths if not any(path.is_relative_to(root) for root in covered)]


_ANY_TIMEOUT_S: Final = 1.0
_plans: dict[Policy, Plan] = {}
_plans_lock = threading.Lock()


def _key(policy: Policy) -> Policy:
    # One plan per policy but for its wall-clock timeout, which no layer depends on and
    # each request may shorten: remembering a plan per timeout would let requests grow
    # the cache without bound, and start test processes for each new one.
    return attrs.evolve(policy, timeout_s=_ANY_TIMEOUT_S)


def _for(plan: Plan, policy: Policy) -> Plan:
    return plan if plan.policy == policy else attrs.evolve(plan, policy=policy)


def remembered_plan(policy: Policy) -> Plan | None:
    """The plan for ``policy`` if it was decided already, else None (never blocks long)."""
    plan = _plans.get(_key(policy))
    return None if plan is None else _for(plan, policy)


def plan_for(policy: Policy) -> Plan:
    """The plan for ``policy``, decided on first use (which may take some 50 ms: it starts a
    few test processes) and remembered. Logs a warning per layer lost, once."""
    key = _key(policy)
    with _plans_lock:
        plan = _plans.get(key)
        if plan is None:
            plan = _plans[key] = _decide(key)
            for warning in plan.report.warnings():
                logger.warning("%s", warning)
    return _for(plan, policy)


def probe(policy: Policy | None = None) -> SandboxReport:
    """Which isolation layers runs of ``policy`` (default: `Policy()`) get on this machine,
    each with the reason it is on or off and what is lost without it.

    Blocks while it looks (the first time for a policy: some 50 ms; then it answers from
    memory): from async code, use `doctor`, or call this in a thread.
    """
    return plan_for(policy if policy is not None else Policy()).report

"""Starting a run's child: what happens between fork and exec, and bubblewrap's command line.

``subprocess.Popen`` does most of it natively and in this order (CPython 3.11,
``_posixsubprocess.c``'s ``child_exec``): the pipes onto fds 0-2, ``chdir``, ``umask``,
default signal dispositions, ``setsid`` (its own session and process group),
``setgroups([])``, ``setregid``, ``setreuid``; then the ``preexec_fn``; then every other
fd is closed and the program exec'd. The preexec function below, now running as the
run's unprivileged user, does the rest, in this order:

1. join the run's cgroups, by writing ``0`` to ``cgroup.procs`` files opened by the
   parent (the child could not open them any more);
2. ``setrlimit`` each limit (before the namespaces, so that the user namespace records
   ``RLIMIT_NPROC`` as its own ceiling);
3. ``unshare(CLONE_NEWUSER | CLONE_NEWNET)``: a network namespace with only a loopback,
   down (an unprivileged process may make one inside a user namespace of its own);
4. ``PR_SET_NO_NEW_PRIVS``: no set-uid binary or file capability can give privileges
   back, and Landlock requires it;
5. ``landlock_restrict_self`` on the ruleset the parent built;
6. ``PR_SET_PDEATHSIG(SIGKILL)`` (it is cleared by credential changes, so it comes after
   them), then a check that the service did not die before that.

Why a ``preexec_fn`` rather than a launcher program: a launcher that Python can provide
without compiling anything is an interpreter, whose start-up (about 10 ms here) would
double the cost of a ``print(1)``; the function costs a fork in place of a vfork
and a few system calls. Its known danger is that the child of a multi-threaded process
may deadlock on a lock another thread held at the fork; so every function object it
calls is bound before the fork (`_linux`), and it only makes system calls and builds
one error message: no import, no logging, nothing that takes a lock. A failing step
writes what failed to a pipe the parent reads, and `start` raises `SandboxError` with it.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import final

import attrs

from wactorz.agents.sandbox import _landlock, _linux
from wactorz.agents.sandbox._errors import SandboxError

__all__ = ["ChildSetup", "bubblewrap_argv", "start"]


@final
@attrs.frozen(kw_only=True)
class ChildSetup:
    """Everything the child of one run does before it execs ``argv``, decided by the parent.

    ``uid`` None keeps the service's own user (when it is not root). ``landlock_fd`` is
    -1 for none. ``stdin_fd`` None gives the child ``/dev/null``. ``die_with_service``
    asks for ``PR_SET_PDEATHSIG``: only for a child forked from a thread that lives as
    long as the service (see `_forker`).
    """

    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]
    umask: int
    uid: int | None
    gid: int | None
    rlimits: tuple[tuple[int, int, int], ...]
    cgroup_fds: tuple[int, ...]
    unshare_flags: int
    landlock_fd: int
    stdin_fd: int | None
    stdout_fd: int
    stderr_fd: int
    die_with_service: bool


def _preexec(setup: ChildSetup, report_fd: int, service_pid: int) -> Callable[[], None]:
    # Everything the child touches is bound here, in the parent.
    write = os.write
    setrlimit = resource.setrlimit
    prctl = _linux.prctl
    unshare = _linux.unshare
    get_errno = _linux.get_errno
    strerror = os.strerror
    restrict_self = _landlock.restrict_self
    getppid = os.getppid
    cgroup_fds = setup.cgroup_fds
    limits = setup.rlimits
    flags = setup.unshare_flags
    ruleset = setup.landlock_fd
    die_with_service = setup.die_with_service
    no_new_privs = _linux.PR_SET_NO_NEW_PRIVS
    pdeathsig = _linux.PR_SET_PDEATHSIG
    sigkill = int(signal.SIGKILL)

    def check(result: int, what: str) -> None:
        if result != 0:
            code = get_errno()
            raise OSError(code, f"{what}: {strerror(code)}")

    def preexec() -> None:
        step = "joining the run's cgroups"
        try:
            for fd in cgroup_fds:
                write(fd, b"0")
            step = "setting the resource limits"
            for kind, soft, hard in limits:
                setrlimit(kind, (soft, hard))
            if flags:
                step = "creating the run's user and network namespaces"
                check(unshare(flags), "unshare")
            step = "setting no_new_privs"
            check(prctl(no_new_privs, 1, 0, 0, 0), "prctl")
            if ruleset >= 0:
                step = "entering the Landlock domain"
                check(restrict_self(ruleset), "landlock_restrict_self")
            if die_with_service:
                step = "asking to die with the service"
                check(prctl(pdeathsig, sigkill, 0, 0, 0), "prctl")
                step = "checking that the service is alive"
                check(0 if getppid() == service_pid else -1, "the service died meanwhile")
        except BaseException as exc:
            write(report_fd, f"{step}: {exc}".encode())
            raise

    return preexec


def start(setup: ChildSetup) -> subprocess.Popen[bytes]:
    """Fork and exec the child of ``setup`` (blocking until it exec'd: call it in a thread).

    Raises `SandboxError` naming the step that failed between fork and exec, or `OSError`
    if the program itself cannot be executed (as `subprocess` does).
    """
    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    try:
        return subprocess.Popen(
            setup.argv,
            stdin=subprocess.DEVNULL if setup.stdin_fd is None else setup.stdin_fd,
            stdout=setup.stdout_fd,
            stderr=setup.stderr_fd,
            cwd=setup.cwd,
            env=dict(setup.env),
            umask=setup.umask,
            user=setup.uid,
            group=setup.gid,
            extra_groups=None if setup.uid is None else [],
            start_new_session=True,
            restore_signals=True,
            close_fds=True,
            preexec_fn=_preexec(setup, report_write, os.getpid()),
        )
    except subprocess.SubprocessError as exc:
        os.close(report_write)
        report_write = -1
        why = os.read(report_read, 4096).decode("utf-8", "replace")
        raise SandboxError(
            f"the sandbox could not set up the run's process ({why or exc}); "
            "`wactorz sandbox doctor` shows which layers this machine supports"
        ) from None
    finally:
        os.close(report_read)
        if report_write >= 0:
            os.close(report_write)


def bubblewrap_argv(
    bwrap: str,
    argv: Sequence[str],
    *,
    read: Sequence[Path],
    write: Sequence[Path],
    cwd: Path,
    network: bool,
) -> list[str]:
    """``bwrap`` around ``argv``: every namespace new (the network too unless ``network``),
    the ``read`` paths bound read-only (symbolic links such as Debian's ``/bin ->
    usr/bin`` recreated as links), the ``write`` paths bound read-write, a fresh
    ``/proc`` and a minimal ``/dev``, the root (bwrap's own tmpfs) read-only, a new
    session, and death when the parent dies."""
    command = [bwrap, "--unshare-all"]
    if network:
        command.append("--share-net")
    command += ["--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev"]
    for path in read:
        if path.parts[1:2] in (("proc",), ("dev",)) or not os.path.lexists(path):
            continue
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), str(path)]
        else:
            command += ["--ro-bind", str(path), str(path)]
    for path in write:
        command += ["--bind", str(path), str(path)]
    command += ["--remount-ro", "/", "--chdir", str(cwd), "--"]
    return command + list(argv)

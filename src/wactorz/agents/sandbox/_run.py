"""One sandboxed run, from preparing its directory to removing it: `run`.

The order of a run, and why:

1. the plan for the policy (`_probe`), refusing a run a required layer is missing from;
2. a uid of its own (`_users`), swept first if a dead service left it dirty; a private
   directory (``HOME``, ``TMPDIR``, and the cwd unless a workdir is given) owned by it;
   its Landlock ruleset;
3. the process, started by the spawner (`_spawner`) from a stub that had joined its
   cgroups and made its network namespace ahead of time; the service waits until the
   stub exec'd the program (or reported which step failed);
4. both pipes read, stdin fed, until the main process exits or the wall clock runs out;
5. then everything of the run is killed: its process group first (the spawner does not
   reap the main process until told, so the group's id cannot be reused meanwhile),
   then whatever else its cgroup or a scan for its uid still finds (`_sweep`);
6. the pipes read to their end; the spawner reaps the main process (its exit status and
   resource usage) and removes its cgroups;
7. always, even when cancelled or failing (shielded from cancellation): the same kill if
   the run did not get there, the reaping, the directory removed, the uid given back.

`run` returns only once every process of the run is dead and reaped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Final, final

import trio

from wactorz.agents.sandbox import _landlock
from wactorz.agents.sandbox._bubblewrap import bubblewrap_argv
from wactorz.agents.sandbox._cgroup import RunCgroup
from wactorz.agents.sandbox._errors import SandboxError, SandboxUnavailable
from wactorz.agents.sandbox._limits import rlimits
from wactorz.agents.sandbox._output import OnOutput, Pump, StreamName
from wactorz.agents.sandbox._policy import SNIPPET_FILE, Policy, Snippet
from wactorz.agents.sandbox._probe import DEVICES, Plan, plan_for, remembered_plan
from wactorz.agents.sandbox._result import RunResult
from wactorz.agents.sandbox._spawner import Spawner, spawner_for
from wactorz.agents.sandbox._sweep import in_cgroup, owned_by, sweep, uid_processes
from wactorz.agents.sandbox._users import Lease

__all__ = ["SAFE_ENVIRONMENT", "plan_async", "run"]

SAFE_ENVIRONMENT: Final = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
"""The environment every run starts from, besides ``HOME`` and ``TMPDIR`` (its private
directory). Nothing of the service's own environment gets in: no API key, no token."""

_EXEC: Final = b"\x01"
"""What a stub writes on the status pipe just before it execs (see `_spawner_program`)."""

PIPE_BYTES: Final = 1 << 20
"""The room asked for in each output pipe of a run (see `_widen`)."""

_DRAIN_S: Final = 2.0
"""How long a pipe may stay open and silent once every process of the run is dead: only
a process out of the sandbox's reach can hold it open (a service that is not root, where
a process left the run's process group)."""


async def plan_async(policy: Policy) -> Plan:
    """`plan_for` without blocking the event loop the first time (then it is a lookup)."""
    known = remembered_plan(policy)
    if known is not None:
        return known
    return await trio.to_thread.run_sync(plan_for, policy)


async def run(
    command: Sequence[str] | Snippet,
    *,
    policy: Policy | None = None,
    stdin: bytes | None = None,
    files: Mapping[str, bytes] | None = None,
    workdir: Path | None = None,
    env: Mapping[str, str] | None = None,
    on_output: OnOutput | None = None,
) -> RunResult:
    """Run ``command`` (an argv, or a `Snippet`) in the sandbox ``policy`` describes.

    The run gets a private directory (its ``HOME`` and ``TMPDIR``) holding ``files``
    (relative names to contents), which is its cwd unless ``workdir`` is given: an
    existing directory the run works in and may write to (the directory stays; with the
    user layer, the run's gid becomes the group owning ``workdir``, which must be a group
    of its own, not root, and group-writable, e.g. ``chgrp wactorz-work DIR && chmod 2770
    DIR``). ``stdin`` is fed to the program (else it reads ``/dev/null``). ``env`` adds
    variables to the allow-listed environment (`SAFE_ENVIRONMENT`). ``on_output(stream,
    chunk)`` is awaited with every chunk of output as it comes (see `_output` for the
    backpressure).

    Returns a `RunResult` when the program ends, however it ends: failing, killed by a
    limit or the timeout. Raises `SandboxUnavailable` when a layer in ``policy.require``
    is missing (or a Python snippet has no interpreter), `SandboxError` when the sandbox
    itself fails to set up, `OSError` when the program cannot be executed (as
    `subprocess` does: `FileNotFoundError` for a missing program), `ValueError` for bad
    arguments. Cancelled, it kills every process of the run at once and returns
    (re-raising the cancellation) only once they are all dead and reaped and the
    directory is gone. Either way no process of the run outlives the call.
    """
    policy = policy if policy is not None else Policy()
    chosen = await plan_async(policy)
    missing = chosen.report.missing(policy.require)
    if missing:
        raise SandboxUnavailable(
            "the sandbox policy requires layers this machine does not give: "
            + "; ".join(f"{layer.name}: {layer.detail}" for layer in missing)
        )
    files = dict(files or {})
    if isinstance(command, Snippet):
        if command.file_name in files:
            raise ValueError(f"files= may not hold {command.file_name}: the snippet goes there")
        files[command.file_name] = command.code.encode("utf-8", "surrogateescape")
    job = _Run(chosen, _command(command, chosen), files, workdir, env or {})
    try:
        return await job.execute(stdin, on_output)
    finally:
        with trio.CancelScope(shield=True):
            await job.clean_up()


def _command(command: Sequence[str] | Snippet, chosen: Plan) -> tuple[str, ...] | Snippet:
    if isinstance(command, Snippet):
        if command.language == "python" and chosen.python is None:
            raise SandboxUnavailable(chosen.report.python_detail)
        return command
    if isinstance(command, str | bytes):
        raise TypeError("command must be a sequence of arguments or a Snippet, not a string")
    argv = tuple(command)
    if not argv:
        raise ValueError("command is empty")
    for argument in argv:
        if not isinstance(argument, str) or "\0" in argument:
            raise ValueError(f"bad argument {argument!r}: arguments are str without NUL")
    return argv


def _relative_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if (
        not name
        or path.is_absolute()
        or ".." in path.parts
        or "\0" in name
        or path == PurePosixPath(".")
    ):
        raise ValueError(f"file name {name!r} must be relative, without '..'")
    return path


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


@final
class _Run:
    """The state of one run, for `run` and for its clean-up."""

    def __init__(
        self,
        chosen: Plan,
        command: tuple[str, ...] | Snippet,
        files: Mapping[str, bytes],
        workdir: Path | None,
        env: Mapping[str, str],
    ) -> None:
        self.plan = chosen
        self.policy = chosen.policy
        self.command = command
        self.files = {_relative_name(name): data for name, data in files.items()}
        self.workdir = self._check_workdir(workdir)
        if self.workdir is not None and set(self.files) - {
            PurePosixPath(f"{SNIPPET_FILE}.py"),
            PurePosixPath(f"{SNIPPET_FILE}.sh"),
        }:
            raise ValueError("files= fill a fresh run directory; with a workdir, write them there")
        for key, value in env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"bad environment variable {key!r}")
        self.extra_env = dict(env)
        self.lease: Lease | None = None
        self.home: Path | None = None
        self.ruleset = -1
        self.spawner: Spawner | None = None
        self.pid = 0
        self.handed = False
        """Whether the stub got the run (before that it is root, and not the run's yet)."""
        self.pidfd = -1
        self.cgroup: RunCgroup | None = None
        self.reaped = False
        self.status = 0
        self.usage: dict[str, Any] = {}
        self.killed_by: str | None = None
        self.swept = False
        self.clean = True
        self.peak: int | None = None
        self.oom_kills = 0

    @staticmethod
    def _check_workdir(workdir: Path | None) -> Path | None:
        if workdir is None:
            return None
        resolved = Path(os.path.realpath(workdir))
        if not resolved.is_dir():
            raise ValueError(f"workdir {workdir} is not a directory")
        return resolved

    @property
    def uid(self) -> int | None:
        return None if self.lease is None else self.lease.uid

    # ---- before -----------------------------------------------------------------------------

    async def _prepare(self) -> None:
        chosen, policy = self.plan, self.policy
        self.spawner = await spawner_for(chosen.spawner)
        if chosen.uids is not None:
            self.lease = chosen.uids.acquire(f"{os.getpid()}\n")
            if self.lease.stale:
                await self._recover(self.lease)
        uid = self.uid
        self.home = Path(tempfile.mkdtemp(prefix="wactorz-run-", dir=chosen.tmp_base))
        if self.lease is not None:
            os.pwrite(self.lease.fd, f"{os.getpid()}\n{self.home}\n".encode(), 0)
        if uid is not None:
            os.chown(self.home, uid, uid)
        self._write_files()
        if _restricts_something(chosen, policy):
            writable = [self.home] + ([self.workdir] if self.workdir is not None else [])
            self.ruleset = _landlock.create_ruleset(
                chosen.landlock_abi,
                _landlock.Confinement(
                    read=chosen.read_paths,
                    write=tuple(writable),
                    devices=DEVICES,
                    filesystem=chosen.landlock_filesystem,
                    deny_tcp=not policy.network,
                    scope=True,
                ),
            )

    def _write_files(self) -> None:
        assert self.home is not None
        uid = self.uid
        for name, data in self.files.items():
            target = self.home
            for part in name.parts[:-1]:
                target = target / part
                if not target.is_dir():
                    target.mkdir(mode=0o700)
                    if uid is not None:
                        os.chown(target, uid, uid)
            target = target / name.parts[-1]
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(target, flags, 0o600)
            try:
                if uid is not None:
                    os.fchown(fd, uid, uid)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)

    async def _recover(self, lease: Lease) -> None:
        """A service died holding this uid: kill what it left and remove its directory (the
        one its note names, if it is a run directory of this uid)."""
        await sweep(partial(uid_processes, lease.uid), owned_by(lease.uid))
        lines = lease.stale.splitlines()
        if len(lines) >= 2:
            _remove_left_directory(Path(lines[1]), lease.uid)

    def _gid(self) -> int | None:
        uid = self.uid
        if uid is None or self.workdir is None:
            return uid
        info = self.workdir.stat()
        if info.st_gid != 0 and info.st_mode & stat.S_IWGRP:
            return info.st_gid
        if info.st_mode & stat.S_IWOTH:
            return uid
        raise SandboxError(
            f"workdir {self.workdir} is not writable by the run's unprivileged user: give it "
            "a group of its own and make it group-writable (e.g. groupadd wactorz-work && "
            f"chgrp wactorz-work {self.workdir} && chmod 2770 {self.workdir})"
        )

    def _spec(self, cwd: Path, stdin: bool) -> dict[str, Any]:
        assert self.home is not None
        chosen, policy = self.plan, self.policy
        command = self.command
        if isinstance(command, Snippet):
            argv = command.argv(chosen.python, str(self.home / command.file_name))
        else:
            argv = list(command)
        if chosen.bwrap is not None:
            writable = [self.home] + ([self.workdir] if self.workdir is not None else [])
            argv = bubblewrap_argv(
                chosen.bwrap,
                argv,
                read=chosen.read_paths,
                write=writable,
                cwd=cwd,
                network=policy.network,
            )
        env = {**SAFE_ENVIRONMENT, "HOME": str(self.home), "TMPDIR": str(self.home)}
        env.update(self.extra_env)
        return {
            "argv": argv,
            "env": env,
            "cwd": str(cwd),
            "umask": 0o077 if self.workdir is None else 0o002,
            "uid": self.uid,
            "gid": self._gid(),
            "rlimits": [list(limit) for limit in rlimits(policy)],
            "seccomp": chosen.deny_unix_sockets,
            "stdin": stdin,
            "landlock": self.ruleset >= 0,
        }

    async def _start(self, stdin: bool) -> tuple[int, int, int | None]:
        """Hand the run to a stub; return our ends of its stdout, stderr and stdin."""
        assert self.home is not None and self.spawner is not None
        spec = self._spec(self.workdir if self.workdir is not None else self.home, stdin)
        out_read, out_write = os.pipe2(os.O_CLOEXEC)
        err_read, err_write = os.pipe2(os.O_CLOEXEC)
        for fd in (out_read, err_read):
            _widen(fd)
        status_read, status_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        in_read, in_write = os.pipe2(os.O_CLOEXEC) if stdin else (-1, -1)
        theirs = [out_write, err_write, status_write]
        theirs += [in_read] if stdin else []
        theirs += [self.ruleset] if self.ruleset >= 0 else []
        ours = [out_read, err_read] + ([in_write] if stdin else [])
        try:
            try:
                for attempt in range(2):
                    stub = await self.spawner.take_stub()
                    self.pid = stub.pid  # ours from here: the clean-up has it reaped
                    self.pidfd = os.pidfd_open(self.pid)
                    if stub.cgroups:
                        self.cgroup = RunCgroup(list(stub.cgroups))
                    try:
                        await self.spawner.start(stub, spec, theirs)
                    except SandboxError:
                        if attempt or self.spawner.dead:
                            raise
                        await self._reap()  # a stub held for a while died: take another
                        self.pid, self.reaped, self.cgroup = 0, False, None
                        continue
                    self.handed = True
                    break
            finally:
                for fd in theirs:
                    os.close(fd)
                self.ruleset = -1
            await _exec_outcome(status_read)
        except BaseException:
            for fd in ours:
                os.close(fd)
            raise
        finally:
            os.close(status_read)
        return out_read, err_read, (in_write if stdin else None)

    # ---- during -----------------------------------------------------------------------------

    async def execute(self, stdin: bytes | None, on_output: OnOutput | None) -> RunResult:
        await self._prepare()
        policy = self.policy
        started = time.perf_counter()
        out_read, err_read, in_write = await self._start(stdin is not None)
        turn = trio.Lock()
        pumps = [
            Pump(
                name,
                trio.lowlevel.FdStream(fd),
                keep=policy.max_output_bytes,
                kill_after=policy.kill_output_bytes,
                on_output=on_output,
                turn=turn,
                runaway=self._runaway,
            )
            for name, fd in _streams(out_read, err_read)
        ]
        async with trio.open_nursery() as nursery:
            for pump in pumps:
                nursery.start_soon(pump.run)
            feeding = trio.CancelScope()
            if stdin is not None and in_write is not None:
                nursery.start_soon(_feed, trio.lowlevel.FdStream(in_write), stdin, feeding)
            with trio.move_on_after(policy.timeout_s) as clock:
                await trio.lowlevel.wait_readable(self.pidfd)
            if clock.cancelled_caught and self.killed_by is None:
                self.killed_by = "timeout"
            duration = time.perf_counter() - started
            await self._kill_everything()
            feeding.cancel()
            for pump in pumps:
                pump.give_up_waiting_at(trio.current_time() + _DRAIN_S)
        await self._reap()
        return self._result(duration, *pumps)

    def _runaway(self) -> None:
        if self.killed_by is None:
            self.killed_by = "output_limit"
        _kill_group(self.pid)

    # ---- after ------------------------------------------------------------------------------

    async def _kill_everything(self) -> None:
        """Kill the group (its id is safe while the main process is unreaped), then sweep."""
        if self.swept or not self.handed:
            return  # a stub that never got its run is the spawner's to kill, when reaped
        if not self.reaped:
            # The main process itself first (before its setsid, its group is not its own).
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            _kill_group(self.pid)
        uid, cgroup = self.uid, self.cgroup
        if cgroup is not None:
            belongs = owned_by(uid) if uid is not None else in_cgroup("/" + cgroup.pids.name)
            self.clean = await sweep(cgroup.live_pids, belongs)
            self.peak = cgroup.peak_memory()
            self.oom_kills = cgroup.oom_kills()
        elif uid is not None:
            self.clean = await sweep(partial(uid_processes, uid), owned_by(uid))
        self.swept = True

    async def _reap(self) -> None:
        if self.reaped or not self.pid or self.spawner is None:
            return
        if self.handed:
            await trio.lowlevel.wait_readable(self.pidfd)
        self.usage = await self.spawner.reap(self.pid)
        self.status = self.usage["status"]
        self.reaped = True
        trio.lowlevel.notify_closing(self.pidfd)
        os.close(self.pidfd)
        self.pidfd = -1

    def _result(self, duration: float, stdout: Pump, stderr: Pump) -> RunResult:
        exit_code: int | None = None
        signal_name: str | None = None
        if os.WIFSIGNALED(self.status):
            signal_name = _signal_name(os.WTERMSIG(self.status))
        else:
            exit_code = os.WEXITSTATUS(self.status)
        cpu = float(self.usage["utime"] + self.usage["stime"])
        killed_by = self.killed_by
        if killed_by is None and self.oom_kills:
            killed_by = "memory_limit"
        if killed_by is None and signal_name is not None:
            if signal_name == "SIGXCPU" or (signal_name == "SIGKILL" and cpu >= self.policy.cpu_s):
                killed_by = "cpu_limit"
            elif signal_name == "SIGXFSZ":
                killed_by = "file_size_limit"
            else:
                killed_by = f"signal:{signal_name}"
        peak = self.peak if self.peak is not None else int(self.usage["maxrss"]) * 1024
        return RunResult(
            stdout=stdout.text(),
            stderr=stderr.text(),
            exit_code=exit_code,
            signal=signal_name,
            timed_out=killed_by == "timeout",
            killed_by=killed_by,
            duration_s=duration,
            stdout_truncated=stdout.truncated,
            stderr_truncated=stderr.truncated,
            stdout_bytes=stdout.total,
            stderr_bytes=stderr.total,
            peak_memory_bytes=peak,
            cpu_s=cpu,
            layers=self.plan.report.active,
        )

    async def clean_up(self) -> None:
        """Whatever happened: nothing of the run left running, nothing of it left on disk."""
        try:
            if self.ruleset >= 0:
                os.close(self.ruleset)
                self.ruleset = -1
            if self.pid:
                await self._kill_everything()
                if self.spawner is not None and not self.spawner.dead:
                    await self._reap()  # (a dead spawner's children are reaped by pid 1)
        finally:
            if self.pidfd >= 0:
                os.close(self.pidfd)
                self.pidfd = -1
            if self.home is not None and not _remove_tree(self.home):
                self.clean = False
            if self.lease is not None and self.plan.uids is not None:
                self.plan.uids.release(self.lease, clean=self.clean)
                self.lease = None


async def _exec_outcome(status_read: int) -> None:
    """Wait until the stub exec'd (its end of the status pipe closes), or raise what failed."""
    message = b""
    while True:
        try:
            chunk = os.read(status_read, 4096)
        except BlockingIOError:
            await trio.lowlevel.wait_readable(status_read)
            continue
        if not chunk:
            break
        message += chunk
    if message == _EXEC:
        return
    if not message:
        raise SandboxError(
            "the sandbox's stub died before starting the program; the service's stderr may say why"
        )
    step, code, text = [
        *message.removeprefix(_EXEC).decode("utf-8", "replace").split("\0"),
        "",
        "",
    ][:3]
    if message.startswith(_EXEC):
        raise OSError(int(code or 0), text)
    raise SandboxError(
        f"the sandbox could not set up the run's process ({step}: {text}); "
        "`wactorz sandbox doctor` shows which layers this machine supports"
    )


def _streams(out: int, err: int) -> tuple[tuple[StreamName, int], ...]:
    return (("stdout", out), ("stderr", err))


def _restricts_something(chosen: Plan, policy: Policy) -> bool:
    abi = chosen.landlock_abi
    return abi > 0 and (chosen.landlock_filesystem or abi >= 6 or (abi >= 4 and not policy.network))


async def _feed(stream: trio.lowlevel.FdStream, data: bytes, scope: trio.CancelScope) -> None:
    with scope:
        async with stream:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(data)


def _widen(fd: int) -> None:
    """Give an output pipe room for `PIPE_BYTES`: a run that prints a lot then keeps
    writing while the service handles what it read, instead of stopping at every 64 KiB
    (the default) for the service to come back. Best effort: the kernel may refuse
    (``/proc/sys/fs/pipe-max-size``, or a user's pipe budget), and 64 KiB works."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _remove_left_directory(path: Path, uid: int) -> None:
    """Remove ``path`` if it is a run directory that ``uid`` owns (a dead service's)."""
    with contextlib.suppress(OSError):
        info = path.lstat()
        if (
            path.is_absolute()
            and path.name.startswith("wactorz-run-")
            and stat.S_ISDIR(info.st_mode)
            and info.st_uid == uid
        ):
            _remove_tree(path)


def _remove_tree(path: Path) -> bool:
    """Delete ``path`` whatever the run did to its modes; False if something stayed."""

    def allow_and_retry(function: Callable[..., Any], name: str, _info: object) -> None:
        try:
            os.chmod(os.path.dirname(name), 0o700)
            if os.path.isdir(name) and not os.path.islink(name):
                os.chmod(name, 0o700)
                shutil.rmtree(name, onerror=allow_and_retry)
            else:
                function(name)
        except OSError:
            pass

    with contextlib.suppress(OSError):
        shutil.rmtree(path, onerror=allow_and_retry)
    return not os.path.lexists(path)

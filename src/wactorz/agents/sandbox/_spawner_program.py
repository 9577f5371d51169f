"""The spawner: a small single-threaded process that starts every run's process.

It is not imported by the service: `_spawner` runs this file's text with
``python -I -S -c`` (standard library only, no site), passing one end of a
``SOCK_SEQPACKET`` socket pair and its configuration (JSON).

Why a separate process, rather than a ``preexec_fn`` run by ``subprocess`` in the
service between fork and exec (the first design, measured), or a launcher program that
applies the layers and execs the snippet:

- Forking a process costs in proportion to its memory (page tables): about 1 ms for
  this spawner, 8 ms for a service of 75 MB, 40 ms at 400 MB (measured here); the
  ``vfork`` that ``subprocess`` uses otherwise cannot run Python in the child. And a
  fork of a multi-threaded process (the service runs Trio's worker threads) may
  deadlock in the child on a lock another thread held; this process has one thread, so
  its children may run Python safely.
- Joining a cgroup (v1) waits for an RCU grace period, some 10 ms here, unless another
  process joined one a moment before. So the spawner keeps a few *stubs* ready:
  children forked ahead of time that already joined fresh cgroups of their own (and
  made their own network namespace) while nobody was waiting. A run takes a ready stub
  and sends it what to run; the stub applies the rest of the layers and execs.
- A launcher needs no fork of the service, but Python offers no launcher without
  compiling one, except an interpreter: its start-up (10 ms or more) comes on top of
  every run's, where this process starts once.

Made ahead of need, a stub joins its cgroups (their limits already written by the
spawner) and makes its network namespace. Given its run, it applies the rest in this
order, each step named in the error it reports: ``setsid`` (its own session and process
group); ``chdir`` and ``umask``; the standard streams (``/dev/null`` for stdin unless
given), every other fd closed; ``setrlimit`` (as root still, for any value); default
signal dispositions and an empty signal mask; ``setgroups([])``, ``setresgid``,
``setresuid`` (root's capabilities go with it); ``PR_SET_NO_NEW_PRIVS``; the seccomp
filter that refuses unix sockets (without network); ``landlock_restrict_self`` on the
ruleset the service built; ``PR_SET_PDEATHSIG`` (a credential change clears it) and a
check that the spawner is still its parent; then ``execvpe`` with the allow-listed
environment, whose ``PATH`` finds the program.

A stub is handed to the service (its end of the stub's socket, passed as a file
descriptor), and the service sends the run straight to it: the spawner is not on the
path of a run's start. It hands one out on request, and one more, ahead of need, with
the answer to each ``reap``, so that the next run usually has one in hand.

Protocol with the service (JSON messages, file descriptors as ``SCM_RIGHTS``), one
request at a time:

- ``{"op": "stub"}`` answers ``{"pid": PID, "cgroups": [paths]}`` with the stub's socket.
- ``{"op": "reap", "pid": PID, "next": bool}`` (once the service saw the process exit,
  killed what was left and read its cgroups; or for a stub it will not use) answers
  ``{"status": ..., "utime": ..., "stime": ..., "maxrss": ...}``, and a ``"next"`` stub as
  above if asked; then removes the run's cgroups. Until then the main process stays a
  zombie, so its pid (and its process group's id) cannot be reused.
- End of file: the service is gone. Every handed-out stub's process group, every
  process in its cgroups and every process of its uid is killed; the stubs too; then
  it exits.

To a stub, the service sends ``{"spec": {...}}`` with fds [stdout, stderr, status,
stdin?, landlock?]. On the status pipe (close-on-exec) the stub writes ``\\x01`` just
before it execs: then end of file means the exec happened, and a message after it means
it failed (``exec\\0errno\\0message``). A step before that fails with such a message
(``step\\0errno\\0message``) and no ``\\x01``; end of file with nothing at all means the
stub died without a word.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import selectors
import signal
import socket
import sys
from typing import Any, NoReturn

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
LANDLOCK_RESTRICT_SELF = 446
MAX_FDS = 8
EXEC = b"\x01"

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
AF_UNIX = 1

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


class SockFilter(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_ushort),
        ("jt", ctypes.c_ubyte),
        ("jf", ctypes.c_ubyte),
        ("k", ctypes.c_uint32),
    )


class SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter)))


SECCOMP_ARCHES = {
    # machine: (AUDIT_ARCH_*, __NR_socket, __NR_io_uring_setup)
    "x86_64": (0xC000003E, 41, 425),
    "aarch64": (0xC00000B7, 198, 425),
}


def no_unix_sockets(machine: str) -> tuple[SockFprog, ctypes.Array[SockFilter]] | None:
    """A seccomp filter refusing ``socket(AF_UNIX, ...)`` (EACCES) and ``io_uring_setup``
    (ENOSYS: io_uring can make sockets seccomp never sees), allowing everything else of
    the native ABI and killing a process that uses another (i386, x32), whose system call
    numbers differ. None on an architecture it does not know."""
    if machine not in SECCOMP_ARCHES:
        return None
    arch, socket_call, io_uring_setup = SECCOMP_ARCHES[machine]
    load, equal, at_least, ret = 0x20, 0x15, 0x35, 0x06
    allow, errno, kill = 0x7FFF0000, 0x00050000, 0x80000000
    instructions = [
        (load, 0, 0, 4),  # the architecture
        (equal, 1, 0, arch),
        (ret, 0, 0, kill),
        (load, 0, 0, 0),  # the system call's number
        (at_least, 0, 1, 0x40000000),  # x32's numbers
        (ret, 0, 0, errno | 38),
        (equal, 0, 1, io_uring_setup),
        (ret, 0, 0, errno | 38),
        (equal, 0, 3, socket_call),
        (load, 0, 0, 16),  # its first argument (low half): the address family
        (equal, 0, 1, AF_UNIX),
        (ret, 0, 0, errno | 13),
        (ret, 0, 0, allow),
    ]
    array = (SockFilter * len(instructions))(*(SockFilter(*i) for i in instructions))
    return SockFprog(len(instructions), array), array


NO_UNIX_SOCKETS = no_unix_sockets(os.uname().machine)


def reraise(exc: BaseException) -> None:
    raise exc


def check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = json.dumps(message).encode()
    if fds:
        socket.send_fds(sock, [data], fds)
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    for _ in range(2):
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 20, MAX_FDS)
            break
        except ConnectionResetError:
            # The peer closed with something of ours unread (a stub's "ready"): the error
            # comes first, what it sent before closing is still there to read.
            continue
    else:
        return None, []
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), fds


def write_file(path: str, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def live_pids(cgroups: list[str]) -> list[int]:
    found: set[int] = set()
    for path in cgroups:
        with contextlib.suppress(OSError), open(os.path.join(path, "cgroup.procs")) as procs:
            found.update(int(line) for line in procs.read().split())
    return sorted(found)


def close_all_but(keep: set[int]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):  # the directory listing's own descriptor
                os.close(fd)


def children(parent: int) -> list[int]:
    """The pids of the children of ``parent`` (this process)."""
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as listing:
            return [int(pid) for pid in listing.read().split()]
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN: look at every process
        found = []
        for name in os.listdir("/proc"):
            with (
                contextlib.suppress(OSError, ValueError, IndexError),
                open(f"/proc/{name}/stat") as stat,
            ):
                if int(stat.read().rsplit(")", 1)[1].split()[1]) == parent:
                    found.append(int(name))
        return found


def uid_of(pid: int) -> int | None:
    """The real uid of ``pid`` (a zombie keeps its credentials), or None."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def kill_in_cgroups(pid: int, cgroups: list[str]) -> None:
    """Kill ``pid`` if it is in one of ``cgroups``: checked after its pidfd was opened, so a
    recycled pid is never killed by mistake."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return
    try:
        with open(f"/proc/{pid}/cgroup") as membership:
            lines = membership.read().splitlines()
        names = {"/" + os.path.basename(path) for path in cgroups}
        if any(line.endswith(name) for line in lines for name in names):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(pidfd)


def kill_uid(uid: int) -> None:
    """Kill every process of ``uid``: a child that becomes it and kills all it may signal."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            for _ in range(1000):
                os.kill(-1, signal.SIGKILL)  # ProcessLookupError once none is left
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


# ---- a stub: forked ahead, waits for its run ------------------------------------------------


def stub_main(sock: socket.socket, join: list[int], netns: str | None, spawner: int) -> None:
    """In the stub, before it is needed: join the cgroups, make the network namespace; then
    wait for a run. A failure here is reported to that run (on its status pipe)."""
    signal.set_wakeup_fd(-1)  # the spawner's, now closed
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    failure: tuple[str, BaseException] | None = None
    step = "joining the run's cgroups"
    try:
        for fd in join:
            os.write(fd, b"0")
            os.close(fd)
        step = "making the run's network namespace"
        if netns == "root":
            check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        elif netns == "user":
            check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNET), "unshare(CLONE_NEWUSER|CLONE_NEWNET)")
        step = "asking to die with the spawner"
        check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
        if os.getppid() != spawner:
            os._exit(0)
    except Exception as exc:
        failure = (step, exc)
    with contextlib.suppress(BrokenPipeError):  # nobody waits to hear it any more
        sock.send(b"ready")
    message, fds = receive(sock)
    if message is None:
        os._exit(0)  # not needed after all
    start_run(message, fds, spawner, failure)


def start_run(
    message: dict[str, Any],
    fds: list[int],
    spawner: int,
    failure: tuple[str, BaseException] | None,
) -> None:
    """Apply the run's layers to this process, then exec; report a failure on the status pipe."""
    spec = message["spec"]
    stdout, stderr, status = fds[0], fds[1], fds[2]
    rest = fds[3:]
    stdin = rest.pop(0) if spec["stdin"] else None
    ruleset = rest.pop(0) if spec["landlock"] else None
    step = "starting"
    try:
        if failure is not None:
            step = failure[0]
            reraise(failure[1])
        step = "starting a session"
        os.setsid()
        step = "entering the run's directory"
        os.chdir(spec["cwd"])
        os.umask(spec["umask"])
        step = "connecting the standard streams"
        if stdin is None:
            stdin = os.open("/dev/null", os.O_RDONLY)
        for target, fd in ((0, stdin), (1, stdout), (2, stderr)):
            os.dup2(fd, target)
        os.set_inheritable(status, False)
        close_all_but({status} | ({ruleset} if ruleset is not None else set()))
        step = "setting the resource limits"
        for kind, soft, hard in spec["rlimits"]:
            resource.setrlimit(kind, (soft, hard))
        step = "restoring signal dispositions"
        for number in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
            signal.signal(number, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        if spec["uid"] is not None:
            step = "becoming the run's user"
            os.setgroups([])
            os.setresgid(spec["gid"], spec["gid"], spec["gid"])
            os.setresuid(spec["uid"], spec["uid"], spec["uid"])
        step = "setting no_new_privs"
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        if spec["seccomp"]:
            step = "installing the seccomp filter"
            if NO_UNIX_SOCKETS is None:
                reraise(OSError(0, f"no seccomp filter for {os.uname().machine}"))
            assert NO_UNIX_SOCKETS is not None
            program = ctypes.byref(NO_UNIX_SOCKETS[0])
            check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, program, 0, 0), "seccomp")
        if ruleset is not None:
            step = "entering the Landlock domain"
            check(libc.syscall(LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
            os.close(ruleset)
        step = "asking to die with the spawner"  # credentials changed: set it again
        check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl(PDEATHSIG)")
        check(0 if os.getppid() == spawner else -1, "the spawner died meanwhile")
        step = "exec"
        os.write(status, EXEC)  # then the pipe's end: exec'd; or an error after it
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except BaseException as exc:
        code = exc.errno if isinstance(exc, OSError) and exc.errno else 0
        text = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        try:
            os.write(status, f"{step}\0{code}\0{text}".encode())
        finally:
            os._exit(127)


# ---- the spawner ----------------------------------------------------------------------------


class Stub:
    def __init__(self, pid: int, sock: socket.socket, cgroups: list[str]) -> None:
        self.pid = pid
        self.sock = sock
        self.cgroups = cgroups
        self.ready = False


class Spawner:
    def __init__(self, control: socket.socket, config: dict[str, Any]) -> None:
        self.control = control
        self.roots: list[str] = config["cgroup_roots"]
        self.limits: dict[str, str] = config["cgroup_limits"]
        self.netns: str | None = config["netns"]
        self.pool: int = config["pool"]
        self.pid = os.getpid()
        self.counter = 0
        self.stubs: list[Stub] = []
        self.lent: dict[int, list[str]] = {}
        """Stubs handed to the service (waiting for a run, or running one): their cgroups."""
        self.doomed: list[str] = []
        """Cgroups to remove, once their last process is gone."""
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ, "control")
        # Orphans of runs (a daemon's first child, gone) come to the spawner rather than
        # to pid 1, which may be slow to reap them: their zombies would count against the
        # RLIMIT_NPROC of the next run given that uid.
        check(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), "prctl(CHILD_SUBREAPER)")
        self.wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_write)
        signal.signal(signal.SIGCHLD, lambda number, frame: None)
        self.selector.register(self.wakeup_read, selectors.EVENT_READ, "children")

    def remove_stale_cgroups(self) -> None:
        """Groups of spawners that died: remove the empty ones."""
        for root in self.roots:
            for name in os.listdir(root):
                owner = name.split("-")[1] if name.startswith("stub-") else ""
                if owner.isdigit() and not os.path.exists(f"/proc/{owner}"):
                    with contextlib.suppress(OSError):  # not empty: a process is still in it
                        os.rmdir(os.path.join(root, name))

    def make_stub(self) -> Stub:
        self.counter += 1
        cgroups = [os.path.join(root, f"stub-{self.pid}-{self.counter}") for root in self.roots]
        join: list[int] = []
        try:
            for path in cgroups:
                os.mkdir(path)
                for name, value in self.limits.items():
                    if os.path.exists(os.path.join(path, name)):
                        write_file(os.path.join(path, name), value)
                join.append(os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC))
        except BaseException:
            for fd in join:
                os.close(fd)
            self.remove_cgroups(cgroups)
            raise
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            try:
                close_all_but({2, theirs.fileno(), *join})
                stub_main(theirs, join, self.netns, self.pid)
            except BaseException as exc:
                os.write(2, f"wactorz sandbox stub {os.getpid()}: {exc!r}\n".encode())
            finally:
                os._exit(126)
        for fd in join:
            os.close(fd)
        theirs.close()
        stub = Stub(pid, mine, cgroups)
        self.selector.register(mine, selectors.EVENT_READ, stub)
        self.stubs.append(stub)
        return stub

    def fill(self) -> None:
        try:
            while len(self.stubs) < self.pool:
                self.make_stub()
        except OSError as exc:  # the service's next request makes its stub on demand
            os.write(2, f"wactorz sandbox spawner: cannot prepare a stub: {exc}\n".encode())

    def lend(self) -> tuple[dict[str, Any], int]:
        """The oldest ready stub (or any, or a new one), handed over with its socket."""
        if not self.stubs:
            self.make_stub()
        ready = [stub for stub in self.stubs if stub.ready]
        stub = (ready or self.stubs)[0]
        self.stubs.remove(stub)
        self.selector.unregister(stub.sock)
        self.lent[stub.pid] = stub.cgroups
        fd = stub.sock.detach()
        return {"pid": stub.pid, "cgroups": stub.cgroups}, fd

    def serve(self) -> None:
        self.remove_stale_cgroups()
        self.fill()
        send(self.control, {"hello": self.pid})
        while True:
            for key, _ in self.selector.select():
                if key.data == "control":
                    self.handle_request()
                elif key.data == "children":
                    self.reap_orphans()
                else:
                    self.handle_stub(key.data)
            self.fill()
            if self.doomed:
                self.doomed = [path for path in self.doomed if not self.remove_cgroups([path])]

    def reap_orphans(self) -> None:
        """Reap children that are neither an idle nor a lent stub (a lent one may be a run's
        main process, which waits for the service's word): processes of runs that were
        orphaned and came here."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wakeup_read, 4096):
                pass
        keep = set(self.lent) | {stub.pid for stub in self.stubs}
        for pid in children(self.pid):
            if pid not in keep:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)

    def handle_stub(self, stub: Stub) -> None:
        if stub not in self.stubs:
            return  # lent by a request handled in the same round of events
        data = stub.sock.recv(64)
        if data == b"ready":
            stub.ready = True
            return
        self.selector.unregister(stub.sock)  # it died before its run
        stub.sock.close()
        self.stubs.remove(stub)
        os.waitpid(stub.pid, 0)
        self.remove_cgroups(stub.cgroups)

    def handle_request(self) -> None:
        message, fds = receive(self.control)
        if message is None:
            self.shut_down()
        for fd in fds:  # no request carries any
            os.close(fd)
        try:
            self.answer(message)
        except Exception as exc:  # one bad request must not take every run down
            send(self.control, {"error": f"{type(exc).__name__}: {exc}"})

    def answer(self, message: dict[str, Any]) -> None:
        if message["op"] == "stub":
            answer, fd = self.lend()
            try:
                send(self.control, answer, [fd])
            finally:
                os.close(fd)
        elif message["op"] == "reap":
            pid = message["pid"]
            reaped, status, usage = os.wait4(pid, os.WNOHANG)
            if reaped == 0:  # an idle stub given back, or a run that should have ended
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
                    os.kill(pid, signal.SIGKILL)
                _, status, usage = os.wait4(pid, 0)
            cgroups = self.lent.pop(pid, [])
            answer = {
                "status": status,
                "utime": usage.ru_utime,
                "stime": usage.ru_stime,
                "maxrss": usage.ru_maxrss,
            }
            lent = None
            if message.get("next"):
                with contextlib.suppress(OSError):  # then the service asks when it needs one
                    lent = self.lend()
            if lent is None:
                send(self.control, answer)
            else:
                answer["next"], fd = lent
                try:
                    send(self.control, answer, [fd])
                finally:
                    os.close(fd)
            self.reap_orphans()
            if not self.remove_cgroups(cgroups):
                self.doomed += cgroups
        else:
            send(self.control, {"error": f"unknown op {message['op']!r}"})

    def remove_cgroups(self, cgroups: list[str]) -> bool:
        removed = True
        for path in cgroups:
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError:
                removed = False
        return removed

    def shut_down(self) -> NoReturn:
        """The service is gone: nothing it started may outlive it."""
        for stub in self.stubs:
            os.kill(stub.pid, signal.SIGKILL)
        for pid, cgroups in self.lent.items():
            uid = uid_of(pid)
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)  # unreaped, so the group's id is still its own
            for _ in range(100):
                left = live_pids(cgroups)
                if not left:
                    break
                for other in left:
                    kill_in_cgroups(other, cgroups)
            if uid is not None and uid not in (0, os.getuid()):
                kill_uid(uid)
        for stub in self.stubs:
            os.waitpid(stub.pid, 0)
            self.remove_cgroups(stub.cgroups)
        for pid, cgroups in self.lent.items():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.remove_cgroups(cgroups)
        self.remove_cgroups(self.doomed)
        os._exit(0)


def main() -> None:
    control = socket.socket(fileno=int(sys.argv[1]))
    config = json.loads(sys.argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is for the service to handle
    Spawner(control, config).serve()


if __name__ == "__main__":
    main()

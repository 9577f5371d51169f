"""Programs that try to break out, each bounded so that a containment failure fails the test and
not the machine (a few thousand processes, a few GiB, a few hundred MB of output at most).

After every one: the result says what stopped it; no process of the run survives, and its
directory is gone (both checked by the autouse fixture of ``conftest``); and a normal run
still works (`_still_works`).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest
import trio

from tests.agents.sandbox.conftest import TMP, active, needs, needs_root, sandbox_processes
from wactorz.agents.sandbox import Policy, RunResult, Snippet, StreamName, run
from wactorz.agents.sandbox._probe import plan_for
from wactorz.agents.sandbox._users import lock_directory

PROJECT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
async def _still_works() -> AsyncIterator[None]:
    yield
    result = await run(Snippet("python", "print('fine')"), policy=Policy(timeout_s=10))
    assert result.stdout == "fine\n", result


async def python(code: str, **policy: object) -> RunResult:
    arguments: dict[str, object] = {"timeout_s": 10}
    arguments.update(policy)
    return await run(Snippet("python", code), policy=Policy(**arguments))  # type: ignore[arg-type]


# ---- processes ------------------------------------------------------------------------------

FORK_COUNT = """
import os, time
n = 0
for _ in range(3000):
    try:
        pid = os.fork()
    except OSError as exc:
        print("refused:", exc.strerror)
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    n += 1
print(n)
"""


@pytest.mark.slow
async def test_a_fork_bomb_stops_at_max_processes_and_its_children_die_with_the_run() -> None:
    result = await python(FORK_COUNT, max_processes=20)
    refused, forked = result.stdout.splitlines()
    assert refused == "refused: Resource temporarily unavailable"
    assert int(forked) < 20
    assert result.exit_code == 0  # the main process left: its 19 sleeping children were killed


EXPONENTIAL_BOMB = """
import os, time
for _ in range(12):          # 2**12 = 4096 processes if nothing stops it
    try:
        os.fork()
    except OSError:
        pass
time.sleep(60)
"""


@pytest.mark.slow
async def test_an_exponential_fork_bomb_is_contained_and_killed_at_the_timeout() -> None:
    peak = 0
    seen: list[str] = []

    async def count() -> None:
        nonlocal peak
        while True:
            now = sandbox_processes()
            if len(now) > peak:
                peak = len(now)
                seen[:] = [f"{p.pid}:{p.info['uids'].real}:{p.info['ppid']}" for p in now]
            await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(count)
        result = await python(EXPONENTIAL_BOMB, timeout_s=2, max_processes=32)
        nursery.cancel_scope.cancel()
    assert (result.killed_by, result.timed_out, result.signal) == ("timeout", True, "SIGKILL")
    if active("user") or active("cgroup"):
        assert 1 < peak <= 32, seen


DAEMON = """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        {close}
        time.sleep(60)
        os._exit(0)
    os._exit(0)
print("parent leaves")
"""


@pytest.mark.parametrize(
    "close",
    [
        "pass",  # the daemon keeps the run's stdout open
        "os.close(0); os.close(1); os.close(2)",  # a well-behaved daemon
    ],
)
async def test_a_daemon_that_left_the_process_group_dies_with_the_run(close: str) -> None:
    if not (active("user") or active("cgroup")):
        pytest.skip("only the user or cgroup layer finds a process that left the group")
    result = await python(DAEMON.format(close=close))
    assert result.stdout == "parent leaves\n"
    assert result.duration_s < 5


@needs("bubblewrap", policy=Policy(use_bubblewrap=True))
async def test_a_daemon_dies_with_the_run_in_bubblewrap_too() -> None:
    result = await python(DAEMON.format(close="pass"), use_bubblewrap=True)
    assert result.stdout == "parent leaves\n"
    assert "bubblewrap" in result.layers


KILL_PARENT = """
import os, signal
for target, name in ((os.getppid(), "parent"), (1, "init")):
    try:
        os.kill(target, signal.SIGCONT)   # harmless if it lands; it must not
        print(name, "signalled")
    except OSError as exc:
        print(name, "refused", exc.strerror)
os.kill(-1, signal.SIGKILL)               # all it may signal: nothing outside the run
print("still here")
"""


async def test_the_run_cannot_signal_the_service_or_init() -> None:
    result = await python(KILL_PARENT)
    lines = result.stdout.splitlines()
    assert lines == [
        "parent refused Operation not permitted",
        "init refused Operation not permitted",
        "still here",
    ]
    assert psutil.Process().is_running()


@pytest.mark.slow
@needs_root
async def test_one_run_cannot_signal_another() -> None:
    if not active("user"):
        pytest.skip("needs the user layer")
    victim_pid: list[int] = []
    got_pid = trio.Event()

    async def on_output(stream: StreamName, chunk: bytes) -> None:
        if not got_pid.is_set():
            victim_pid.append(int(chunk.split()[0]))
            got_pid.set()

    async with trio.open_nursery() as nursery:

        async def victim() -> None:
            result = await run(
                Snippet("sh", "echo $$; sleep 2; echo survived"),
                on_output=on_output,
                policy=Policy(timeout_s=10),
            )
            assert result.stdout.endswith("survived\n")

        nursery.start_soon(victim)
        await got_pid.wait()
        # The victim's pid as the host sees it: the child of ours running `sh`.
        host_pids = [p.pid for p in sandbox_processes() if p.name() == "sh"]
        attack = await run(
            Snippet("sh", "for p in $TARGETS; do kill -KILL $p 2>&1; done; echo done"),
            env={"TARGETS": " ".join(map(str, host_pids + victim_pid))},
            policy=Policy(timeout_s=10),
        )
        assert "done" in attack.stdout
        assert "Operation not permitted" in attack.stdout or "No such process" in attack.stdout


RAISE_LIMITS = """
import resource
for name in ("NPROC", "CPU", "AS", "NOFILE", "FSIZE", "CORE"):
    kind = getattr(resource, "RLIMIT_" + name)
    soft, hard = resource.getrlimit(kind)
    try:
        resource.setrlimit(kind, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print(name, "raised")
    except (ValueError, OSError):
        print(name, "kept", soft, hard)
"""


async def test_the_run_cannot_raise_its_limits() -> None:
    result = await python(RAISE_LIMITS, max_processes=17, cpu_s=5, max_open_files=77)
    kept = dict(
        (words[0], (int(words[2]), int(words[3])))
        for words in map(str.split, result.stdout.splitlines())
        if words[1] == "kept"
    )
    assert len(kept) == 6, result.stdout
    assert kept["NPROC"] == (17, 17)
    assert kept["CPU"] == (5, 6)
    assert kept["NOFILE"] == (77, 77)
    assert kept["CORE"] == (0, 0)


async def test_a_directory_the_run_locked_up_is_removed_all_the_same() -> None:
    code = (
        "mkdir -p a/b && echo x > a/b/f && ln -s /etc/passwd a/link && mkfifo a/fifo && "
        "chmod 000 a/b/f a/b a && chmod 500 . && echo locked"
    )
    result = await run(Snippet("sh", code), policy=Policy(timeout_s=10))
    assert result.stdout == "locked\n", result.stderr
    # The autouse fixture checks that the directory is gone; /etc/passwd must still be there.
    assert PROJECT.exists() and Path("/etc/passwd").exists()


# ---- resources ------------------------------------------------------------------------------


async def test_a_memory_bomb_gets_no_memory() -> None:
    result = await python("x = bytearray(4 << 30)\nprint('allocated')", memory_bytes=256 << 20)
    assert result.exit_code == 1
    assert result.stderr.rstrip().endswith("MemoryError")
    assert "allocated" not in result.stdout


TREE_MEMORY = """
import os
for _ in range(8):
    if os.fork() == 0:
        chunks = []
        for _ in range(12):                       # 12 x 16 MiB = 192 MiB each, touched
            chunks.append(bytearray(16 << 20))
        os._exit(0)
codes = [os.waitstatus_to_exitcode(os.wait()[1]) for _ in range(8)]
print(sorted(codes))
"""


@pytest.mark.slow
@needs("cgroup")
async def test_a_tree_of_processes_is_held_to_the_memory_limit_as_a_whole() -> None:
    result = await python(TREE_MEMORY, memory_bytes=256 << 20)
    assert result.killed_by == "memory_limit", result
    assert "-9" in result.stdout  # some children were killed by the OOM killer
    assert result.peak_memory_bytes is not None
    assert result.peak_memory_bytes <= (256 << 20) + (1 << 20)


@pytest.mark.slow
async def test_a_cpu_loop_is_stopped_at_its_cpu_limit() -> None:
    result = await python("while True:\n    pass", cpu_s=1, timeout_s=20)
    assert (result.killed_by, result.signal) == ("cpu_limit", "SIGXCPU")
    # The limit counts scheduler time; rusage reads a little lower on a loaded machine
    # (0.84 s seen): what matters is that CPU time, not the clock, stopped it.
    assert result.cpu_s is not None and result.cpu_s >= 0.5
    assert result.duration_s < 5


async def test_a_cpu_loop_that_ignores_sigxcpu_is_killed_a_second_later() -> None:
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    result = await python(code, cpu_s=1, timeout_s=20)
    assert (result.killed_by, result.signal) == ("cpu_limit", "SIGKILL")


async def test_sleeping_past_the_timeout() -> None:
    result = await run(
        Snippet("sh", "echo before; sleep 30; echo after"), policy=Policy(timeout_s=0.5)
    )
    assert (result.killed_by, result.timed_out, result.signal) == ("timeout", True, "SIGKILL")
    assert result.stdout == "before\n"
    assert 0.5 <= result.duration_s < 2


async def test_a_file_past_max_file_bytes() -> None:
    result = await run(
        Snippet("sh", "exec head -c 2000000 /dev/zero > big"),
        policy=Policy(max_file_bytes=1 << 20, timeout_s=10),
    )
    assert (result.killed_by, result.signal) == ("file_size_limit", "SIGXFSZ")


# ---- output ---------------------------------------------------------------------------------

FLOOD = """
import sys
chunk = b"x" * (1 << 20)
for _ in range({mib}):
    sys.{stream}.buffer.write(chunk)
"""


async def _with_peak_rss(coroutine: object) -> tuple[RunResult, int]:
    process = psutil.Process()
    before = process.memory_info().rss
    peak = before
    result: list[RunResult] = []

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, process.memory_info().rss)
            await trio.sleep(0.005)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(sample)
        result.append(await coroutine)  # type: ignore[misc]
        nursery.cancel_scope.cancel()
    return result[0], peak - before


@pytest.mark.slow
@pytest.mark.parametrize("stream", ["stdout", "stderr"])
async def test_an_output_flood_is_drained_with_the_service_memory_bounded(stream: str) -> None:
    policy = Policy(timeout_s=30, kill_output_bytes=None)
    result, grown = await _with_peak_rss(
        run(Snippet("python", FLOOD.format(mib=300, stream=stream)), policy=policy)
    )
    assert result.exit_code == 0 and result.killed_by is None
    assert getattr(result, f"{stream}_bytes") == 300 << 20
    assert getattr(result, f"{stream}_truncated")
    assert len(getattr(result, stream)) == policy.max_output_bytes
    assert grown < 24 << 20, f"the service grew {grown >> 20} MiB reading 300 MiB"


async def test_an_output_flood_past_the_kill_size_is_killed() -> None:
    result = await python(FLOOD.format(mib=300, stream="stdout"), kill_output_bytes=8 << 20)
    assert (result.killed_by, result.signal) == ("output_limit", "SIGKILL")
    assert 8 << 20 < result.stdout_bytes < 300 << 20


# ---- secrets, files, network ----------------------------------------------------------------


READ_ENVIRONMENT = """
import os
print("own:", sorted(os.environ))
for pid in (os.getppid(), 1):
    try:
        print(pid, "environ:", open(f"/proc/{pid}/environ", "rb").read()[:200])
    except OSError as exc:
        print(pid, "environ refused:", exc.strerror)
"""


async def test_the_service_environment_does_not_reach_the_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-secret")
    result = await python(READ_ENVIRONMENT)
    assert "sk-test-secret" not in result.stdout + result.stderr
    assert "ANTHROPIC_API_KEY" not in result.stdout
    lines = result.stdout.splitlines()
    assert lines[0] == "own: ['HOME', 'LANG', 'PATH', 'TMPDIR']"
    assert "environ refused" in lines[1]


READ = """
import os, sys
for path in sys.argv[1:] or os.environ["TARGETS"].split(":"):
    try:
        with open(path, "rb") as f:
            f.read(1)
        print("read", path)
    except OSError as exc:
        print("refused", path, exc.strerror)
"""


@needs("filesystem")
async def test_files_outside_the_run_cannot_be_read(tmp_path: Path) -> None:
    # World-readable, in a directory anyone may enter: only the filesystem layer stands between.
    outside = Path("/tmp") / f"wactorz-test-{secrets.token_hex(4)}"
    outside.mkdir(mode=0o755)
    try:
        secret = outside / "secret.txt"
        secret.write_text("secret")
        secret.chmod(0o644)
        mine = tmp_path / "mine.txt"  # the test's own temporary directory
        mine.write_text("mine")
        targets = [str(secret), str(PROJECT / "pyproject.toml"), str(mine), "/root/.profile"]
        result = await run(
            Snippet("python", READ), env={"TARGETS": ":".join(targets)}, policy=Policy(timeout_s=10)
        )
    finally:
        secret.unlink()
        outside.rmdir()
    refused = [line for line in result.stdout.splitlines() if line.startswith("refused")]
    assert len(refused) == len(targets), result.stdout


WRITE = """
import os
for path in os.environ["TARGETS"].split(":"):
    try:
        with open(path, "x") as f:
            f.write("escaped")
        print("wrote", path)
    except OSError as exc:
        print("refused", path, exc.strerror)
"""


@needs("filesystem")
async def test_nothing_outside_the_run_can_be_written() -> None:
    token = secrets.token_hex(4)
    targets = [
        Path("/tmp") / f"wactorz-escape-{token}",  # a sticky directory anyone may write to
        PROJECT / f"escape-{token}",
        Path("/dev/shm") / f"escape-{token}",
        Path("/var/tmp") / f"escape-{token}",
    ]
    try:
        result = await run(
            Snippet("python", WRITE),
            env={"TARGETS": ":".join(map(str, targets))},
            policy=Policy(timeout_s=10),
        )
        assert [path for path in targets if path.exists()] == []
        assert result.stdout.count("refused") == len(targets), result.stdout
    finally:
        for path in targets:
            path.unlink(missing_ok=True)


CONNECT = """
import os, socket
s = socket.socket()
s.settimeout(5)
try:
    s.connect(("127.0.0.1", int(os.environ["PORT"])))
    s.sendall(b"escaped")
    print("connected")
except OSError as exc:
    print("refused", exc.strerror)
"""


async def _connect_from_run(policy: Policy) -> tuple[RunResult, bool]:
    accepted = False
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def accept() -> None:
        nonlocal accepted
        stream = await listeners[0].accept()
        accepted = True
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        result = await run(Snippet("python", CONNECT), env={"PORT": str(port)}, policy=policy)
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    for listener in listeners:
        await listener.aclose()
    return result, accepted


@needs("network")
async def test_a_listener_on_the_host_loopback_is_out_of_reach() -> None:
    result, accepted = await _connect_from_run(Policy(timeout_s=10))
    assert result.stdout.startswith("refused") and not accepted


@needs("network", policy=Policy(disable={"filesystem"}))
async def test_the_network_namespace_alone_has_no_route_to_the_host() -> None:
    """Without Landlock's TCP rule, the namespace alone: its loopback is down."""
    result, accepted = await _connect_from_run(Policy(timeout_s=10, disable={"filesystem"}))
    assert result.stdout == "refused Network is unreachable\n" and not accepted


async def test_network_true_reaches_the_listener() -> None:
    result, accepted = await _connect_from_run(Policy(timeout_s=10, network=True))
    assert result.stdout == "connected\n" and accepted


UNIX = """
import os, socket
a, b = socket.socketpair()  # a pair is no way out: it stays allowed
a.sendall(b"x")
assert b.recv(1) == b"x"
s = socket.socket(socket.AF_UNIX)  # raises without network
s.connect(os.environ["SOCKET"])
print("connected")
"""


@pytest.mark.parametrize("network", [False, True])
async def test_a_unix_socket_of_the_host_is_out_of_reach_without_network(
    network: bool, tmp_path: Path
) -> None:
    """Host sockets (D-Bus, the journal...) are files: no network namespace hides them, and
    Landlock does not guard connect; the seccomp filter refuses to make a unix socket."""
    if not network and not plan_for(Policy()).deny_unix_sockets:
        pytest.skip("no seccomp filter on this machine (the report says so)")
    path = Path("/tmp") / f"wactorz-test-{secrets.token_hex(4)}.sock"
    listener = socket.socket(socket.AF_UNIX)
    try:
        listener.bind(str(path))
        path.chmod(0o777)
        listener.listen()
        result = await run(
            Snippet("python", UNIX),
            env={"SOCKET": str(path)},
            policy=Policy(timeout_s=10, network=network),
        )
    finally:
        listener.close()
        path.unlink(missing_ok=True)
    if network:
        assert result.stdout == "connected\n", result.stderr
    else:
        assert "PermissionError" in result.stderr and "connected" not in result.stdout


@needs_root
async def test_the_run_is_not_root_and_has_no_groups() -> None:
    if not active("user"):
        pytest.skip("needs the user layer")
    code = "import os; print(os.getgroups()); print(open('/proc/self/status').read())"
    result = await python(code, network=True)  # no user namespace: the host's ids show
    groups, status = result.stdout.split("\n", 1)
    assert groups == "[]"
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uid = int(fields["Uid"].split()[0])
    assert uid in range(*Policy().uid_range)
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["CapEff"].strip() == "0000000000000000"


async def test_killing_the_main_process_from_inside_is_just_a_signal() -> None:
    result = await run(Snippet("sh", "kill -KILL $$"), policy=Policy(timeout_s=10))
    assert (result.killed_by, result.signal) == ("signal:SIGKILL", "SIGKILL")


SERVICE = """
import sys, trio
from wactorz.agents.sandbox import Policy, Snippet, run

async def main():
    async def on_output(stream, chunk):
        print("started", flush=True)
    await run(
        Snippet("sh", "sleep 61.777 & setsid sleep 61.778 & echo up; sleep 61.779"),
        on_output=on_output,
        policy=Policy(timeout_s=60),
    )

trio.run(main)
"""


def _marked() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        command = " ".join(process.info["cmdline"] or ())
        if process.info["status"] != psutil.STATUS_ZOMBIE and "sleep 61.77" in command:
            found.append(process)
    return found


@pytest.mark.slow
async def test_when_the_service_dies_its_runs_die_with_it() -> None:
    """SIGKILL, no clean-up code runs: the spawner sees its socket close and kills the runs,
    including the process that left the group."""
    service = await trio.lowlevel.open_process(
        [sys.executable, "-c", SERVICE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(TMP)},
    )
    try:
        assert service.stdout is not None
        with trio.fail_after(20):
            assert (await service.stdout.receive_some()).startswith(b"started")
        while len(_marked()) < 3:
            await trio.sleep(0.01)
    finally:
        service.kill()
        await service.wait()
    with trio.move_on_after(5):
        while _marked():
            await trio.sleep(0.05)
    left = _marked()
    for process in left:
        process.kill()
    assert not left
    # Nothing could remove the dead service's run directory; the next process given that
    # uid will (its lock file names the directory). Here the test does.
    for directory in TMP.glob("wactorz-run-*"):
        shutil.rmtree(directory)


@needs_root
async def test_a_uid_a_dead_service_left_dirty_is_swept_before_its_next_run() -> None:
    """A service killed mid-run leaves a note in the uid's lock file (its pid, the run's
    directory). The next run given that uid kills what is left of it and removes the
    directory first."""
    if not active("user"):
        pytest.skip("needs the user layer")
    uid = 61090
    policy = Policy(uid_range=(uid, uid + 1), timeout_s=10)  # one uid: this run gets it
    left = TMP / f"wactorz-run-left-{secrets.token_hex(3)}"
    left.mkdir()
    os.chown(left, uid, uid)
    survivor = await trio.lowlevel.open_process(
        ["sleep", "61.3131"], user=uid, group=uid, extra_groups=[], start_new_session=True
    )
    try:
        lock = lock_directory() / f"{uid}.lock"
        lock.write_text(f"99999999\n{left}\n")
        result = await run(Snippet("sh", "echo fresh"), policy=policy)
        assert result.stdout == "fresh\n"
        with trio.fail_after(5):
            await survivor.wait()
        assert survivor.returncode == -signal.SIGKILL
        assert not left.exists()
        assert lock.read_text() == ""  # this run ended clean
    finally:
        survivor.kill()
        await survivor.wait()
        shutil.rmtree(left, ignore_errors=True)

"""`run` with programs that behave: results, input, files, environment, streaming, cancellation
and concurrency. (Programs that do not behave are in ``test_hostile``.)"""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import psutil
import pytest
import trio
import trio.lowlevel

from tests.agents.sandbox.conftest import ROOT, UIDS, active, needs_root, sandbox_processes
from wactorz.agents.sandbox import (
    SNIPPET_FILE,
    Policy,
    SandboxError,
    SandboxUnavailable,
    Snippet,
    StreamName,
    _spawner,
    probe,
    run,
)
from wactorz.agents.sandbox._output import CHUNK
from wactorz.agents.sandbox._probe import plan_for
from wactorz.agents.sandbox._run import PIPE_BYTES

FAST = Policy(timeout_s=10)


async def test_print_one() -> None:
    result = await run(Snippet("python", "print(1)"), policy=FAST)
    assert result.stdout == "1\n"
    assert result.stderr == ""
    assert (result.exit_code, result.signal, result.killed_by) == (0, None, None)
    assert result.ok and not result.timed_out and not result.truncated
    assert result.layers == probe(FAST).active
    assert 0 < result.duration_s < 5
    assert result.cpu_s is not None and result.peak_memory_bytes is not None


async def test_a_failing_program_is_a_normal_result() -> None:
    result = await run(Snippet("python", "import sys; print('oops', file=sys.stderr); sys.exit(3)"))
    assert (result.exit_code, result.killed_by, result.ok) == (3, None, False)
    assert result.stderr == "oops\n"


async def test_a_program_killed_by_a_signal_says_which() -> None:
    result = await run(Snippet("sh", "kill -SEGV $$"), policy=FAST)
    assert (result.exit_code, result.signal, result.killed_by) == (
        None,
        "SIGSEGV",
        "signal:SIGSEGV",
    )


async def test_the_result_as_json_has_the_documented_keys() -> None:
    result = await run(Snippet("sh", "echo hi; echo err >&2"), policy=FAST)
    document = json.loads(json.dumps(result.to_json()))
    assert {
        "stdout",
        "stderr",
        "exit_code",
        "signal",
        "timed_out",
        "killed_by",
        "duration_s",
        "truncated",
        "stdout_bytes",
        "stderr_bytes",
        "peak_memory_bytes",
        "cpu_s",
        "layers",
    } == set(document)
    assert document["truncated"] == {"stdout": False, "stderr": False}
    assert (document["stdout"], document["stderr"], document["stdout_bytes"]) == (
        "hi\n",
        "err\n",
        3,
    )


async def test_an_argv_is_found_on_the_safe_path() -> None:
    result = await run(["echo", "a b", "$HOME"], policy=FAST)
    assert result.stdout == "a b $HOME\n"


async def test_a_missing_program_raises_as_subprocess_does() -> None:
    with pytest.raises(FileNotFoundError):
        await run(["no-such-program-anywhere"], policy=FAST)


@pytest.mark.parametrize("command", ["echo hi", b"echo", []])
async def test_a_command_must_be_an_argv_or_a_snippet(command: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        await run(command, policy=FAST)  # type: ignore[arg-type]


async def test_stdin_is_fed_and_is_dev_null_otherwise() -> None:
    data = os.urandom(1 << 20).hex().encode()  # 2 MiB: more than a pipe holds
    result = await run(["sha256sum"], stdin=data, policy=FAST)
    import hashlib

    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert (await run(["cat"], policy=FAST)).stdout == ""


async def test_stdin_the_program_does_not_read_is_no_error() -> None:
    result = await run(["true"], stdin=b"x" * (4 << 20), policy=FAST)
    assert result.ok


async def test_files_are_written_into_the_private_directory() -> None:
    result = await run(
        Snippet("sh", "cat data/in.txt; ls -A; stat -c %a . data/in.txt"),
        files={"data/in.txt": b"hello\n", "top": b""},
        policy=FAST,
    )
    lines = result.stdout.splitlines()
    assert lines[0] == "hello"
    assert sorted(lines[1:4]) == [f"{SNIPPET_FILE}.sh", "data", "top"]
    assert lines[4:] == ["700", "600"]


async def test_the_snippet_file_name_is_reserved() -> None:
    with pytest.raises(ValueError, match="the snippet goes there"):
        await run(Snippet("sh", "true"), files={f"{SNIPPET_FILE}.sh": b"x"}, policy=FAST)


async def test_a_snippet_is_not_on_any_command_line() -> None:
    """Any process may read another's command line in /proc: the code goes in a file."""
    started = trio.Event()
    command_lines: list[str] = []

    async def on_output(stream: StreamName, chunk: bytes) -> None:
        command_lines.extend(" ".join(p.cmdline()) for p in sandbox_processes())
        started.set()

    code = "import time  # the-secret-recipe\nprint('up', flush=True)\ntime.sleep(0.3)"
    result = await run(Snippet("python", code), on_output=on_output, policy=FAST)
    assert result.stdout == "up\n"
    assert command_lines and not [line for line in command_lines if "secret-recipe" in line]
    assert any(f"{SNIPPET_FILE}.py" in line for line in command_lines)


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "", "."])
async def test_file_names_must_stay_inside(name: str) -> None:
    with pytest.raises(ValueError, match="must be relative"):
        await run(["true"], files={name: b"x"}, policy=FAST)


async def test_home_tmpdir_and_cwd_are_one_fresh_private_directory() -> None:
    result = await run(
        Snippet("sh", 'pwd; echo "$HOME"; echo "$TMPDIR"; stat -c %a .'), policy=FAST
    )
    cwd, home, tmpdir, mode = result.stdout.splitlines()
    assert cwd == home == tmpdir
    assert Path(cwd).name.startswith("wactorz-run-")
    assert mode == "700"
    assert not os.path.exists(cwd)


async def test_extra_environment_is_added_to_the_allow_list() -> None:
    result = await run(
        Snippet("python", "import os; print(sorted(os.environ)); print(os.environ['GREETING'])"),
        env={"GREETING": "hi"},
        policy=FAST,
    )
    names, greeting = result.stdout.splitlines()
    assert eval(names) == ["GREETING", "HOME", "LANG", "PATH", "TMPDIR"]
    assert greeting == "hi"


async def test_a_bad_environment_name_is_refused() -> None:
    with pytest.raises(ValueError, match="bad environment variable"):
        await run(["true"], env={"A=B": "x"}, policy=FAST)


async def test_a_workdir_is_the_cwd_and_stays_with_what_the_run_wrote(tmp_path: Path) -> None:
    workdir = tmp_path / "workspace"
    workdir.mkdir()
    if ROOT:
        os.chmod(tmp_path, 0o755)
        os.chown(workdir, 0, UIDS.start - 1)  # a group of its own, as the docstring asks
        os.chmod(workdir, 0o2770)
    result = await run(
        Snippet("sh", 'pwd; echo made > out.txt; test "$HOME" != "$PWD" && echo private-home'),
        workdir=workdir,
        policy=FAST,
    )
    assert result.stdout.splitlines() == [str(workdir), "private-home"], result.stderr
    assert (workdir / "out.txt").read_text() == "made\n"
    if ROOT:
        info = (workdir / "out.txt").stat()
        assert info.st_gid == UIDS.start - 1 and info.st_mode & stat.S_IWGRP


@needs_root
async def test_a_workdir_the_run_could_not_write_is_refused_with_the_remedy(tmp_path: Path) -> None:
    if not active("user"):
        pytest.skip("without the user layer, runs write as the service")
    with pytest.raises(SandboxError, match="chmod 2770"):
        await run(["true"], workdir=tmp_path, policy=FAST)


async def test_files_and_workdir_do_not_mix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workdir"):
        await run(["true"], workdir=tmp_path, files={"a": b""}, policy=FAST)


async def test_a_python_snippet_without_an_interpreter_is_unavailable() -> None:
    policy = Policy(python="/nonexistent/python3")
    with pytest.raises(SandboxUnavailable, match="/nonexistent/python3"):
        await run(Snippet("python", "print(1)"), policy=policy)
    assert (await run(Snippet("sh", "echo still"), policy=policy)).stdout == "still\n"


async def test_output_past_the_kept_size_is_counted_and_marked() -> None:
    policy = Policy(max_output_bytes=1000, timeout_s=10)
    result = await run(
        Snippet("python", "import sys; sys.stdout.write('é' * 100_000); sys.stderr.write('e')"),
        policy=policy,
    )
    assert result.stdout_truncated and not result.stderr_truncated and result.truncated
    assert result.stdout_bytes == 200_000
    assert result.stdout == "é" * 500
    assert result.stderr == "e"
    assert result.killed_by is None


async def test_a_cut_character_and_bad_bytes_are_replaced() -> None:
    result = await run(
        Snippet("python", "import sys; sys.stdout.buffer.write(b'ok \\xff')"), policy=FAST
    )
    assert result.stdout == "ok \N{REPLACEMENT CHARACTER}"


# ---- streaming ------------------------------------------------------------------------------


async def test_on_output_gets_every_chunk_in_order_one_call_at_a_time() -> None:
    seen: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
    busy = False

    async def on_output(stream: StreamName, chunk: bytes) -> None:
        nonlocal busy
        assert not busy, "on_output was called while a call was in progress"
        busy = True
        seen[stream] += chunk
        await trio.lowlevel.checkpoint()
        busy = False

    code = (
        "import sys, time\n"
        "for i in range(3000):\n"
        "    print(i)\n"
        "    if i % 7 == 0: print('e', i, file=sys.stderr)\n"
        "    if i % 500 == 0: time.sleep(0.01)\n"
    )
    result = await run(Snippet("python", code), on_output=on_output, policy=FAST)
    assert seen["stdout"].decode() == "".join(f"{i}\n" for i in range(3000)) == result.stdout
    assert seen["stderr"].decode() == "".join(f"e {i}\n" for i in range(0, 3000, 7))


async def test_on_output_sees_all_of_a_stream_even_past_the_kept_size() -> None:
    total = 0

    async def on_output(stream: StreamName, chunk: bytes) -> None:
        nonlocal total
        total += len(chunk)

    policy = Policy(max_output_bytes=10, timeout_s=10)
    result = await run(
        Snippet("sh", "head -c 300000 /dev/zero"), on_output=on_output, policy=policy
    )
    assert total == result.stdout_bytes == 300_000
    assert len(result.stdout) == 10


@pytest.mark.slow
async def test_a_slow_consumer_blocks_the_child_instead_of_filling_memory() -> None:
    """Backpressure: the child cannot finish writing before the consumer took it all."""
    chunks = 0

    async def on_output(stream: StreamName, chunk: bytes) -> None:
        nonlocal chunks
        chunks += 1
        await trio.sleep(0.02)

    rss = psutil.Process().memory_info().rss
    result = await run(
        Snippet("python", "import sys; sys.stdout.buffer.write(b'x' * (16 << 20))"),
        on_output=on_output,
        policy=FAST,
    )
    assert result.stdout_bytes == 16 << 20
    # At least 64 chunks at 20 ms each: the child, blocked on the full pipe, can only have
    # exited (duration_s) once the consumer had taken all but what the pipe holds.
    ahead = PIPE_BYTES // CHUNK + 2
    assert result.duration_s > 0.02 * (chunks - ahead) > 0.5
    assert psutil.Process().memory_info().rss - rss < 32 << 20


# ---- cancellation and concurrency -----------------------------------------------------------


async def test_cancelling_a_run_kills_it_at_once_and_cleans_up() -> None:
    started = trio.Event()

    async def on_output(stream: StreamName, chunk: bytes) -> None:
        started.set()

    code = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "print('up', flush=True)\n"
        "time.sleep(60)"
    )
    with trio.move_on_after(10) as guard:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: run(
                    Snippet("python", code), on_output=on_output, policy=Policy(timeout_s=60)
                )
            )
            await started.wait()
            assert sandbox_processes()
            cancelled_at = time.monotonic()
            nursery.cancel_scope.cancel()
    assert not guard.cancelled_caught
    assert time.monotonic() - cancelled_at < 1.0
    left = [(p.pid, p.ppid(), p.uids().real, p.cmdline()[:3]) for p in sandbox_processes()]
    assert not left, left  # run returned only once all were dead


@pytest.mark.slow
async def test_runs_proceed_concurrently_each_with_its_own_uid() -> None:
    uids: set[int] = set()
    results = []

    async def one(i: int) -> None:
        results.append(await run(Snippet("sh", f"sleep 0.5; echo {i}"), policy=FAST))

    async def watch() -> None:
        # sandbox_processes() sees only the uids of this process's runs: other test sessions
        # on the machine share the uid range.
        while True:
            for process in sandbox_processes():
                uids.add(process.info["uids"].real)
            await trio.sleep(0.05)

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        async with trio.open_nursery() as runs:
            for i in range(20):
                runs.start_soon(one, i)
        nursery.cancel_scope.cancel()
    assert time.monotonic() - started < 5
    assert sorted(int(r.stdout) for r in results) == list(range(20))
    if active("user"):
        assert len(uids) == 20 and uids <= set(UIDS)


# ---- the spawner ----------------------------------------------------------------------------


async def test_a_spawner_that_died_is_started_again_by_the_next_run() -> None:
    await run(["true"], policy=FAST)
    config = plan_for(FAST).spawner
    old = _spawner._spawners[config].process.pid
    os.kill(old, signal.SIGKILL)
    with trio.fail_after(5):
        while psutil.Process(old).status() != psutil.STATUS_ZOMBIE:
            await trio.sleep(0.01)
    result = await run(["echo", "again"], policy=FAST)
    assert result.stdout == "again\n"
    assert _spawner._spawners[config].process.pid != old


async def test_a_spawner_dying_mid_run_fails_the_run_and_takes_its_processes() -> None:
    started = trio.Event()

    async def on_output(stream: StreamName, chunk: bytes) -> None:
        started.set()

    async def kill_the_spawner() -> None:
        await started.wait()
        os.kill(_spawner._spawners[plan_for(FAST).spawner].process.pid, signal.SIGKILL)

    with pytest.RaisesGroup(pytest.RaisesExc(SandboxError, match="spawner died")):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(kill_the_spawner)
            await run(Snippet("sh", "echo up; sleep 30"), on_output=on_output, policy=FAST)
    assert (await run(["echo", "fine"], policy=FAST)).stdout == "fine\n"


@pytest.mark.parametrize("delay_s", [0, 0.0002, 0.001, 0.003, 0.01, 0.03])
async def test_a_run_cancelled_at_any_moment_of_its_start_leaves_nothing(delay_s: float) -> None:
    started = time.monotonic()
    with trio.move_on_after(delay_s):
        await run(Snippet("sh", "sleep 30 & sleep 30"), policy=FAST)
    assert time.monotonic() - started < 1.0
    assert (await run(["echo", "next"], policy=FAST)).stdout == "next\n"

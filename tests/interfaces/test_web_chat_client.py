"""``wactorz chat``: the real client, as a subprocess with piped stdin, against a real server.

The server runs in the test (`serving`) with a stand-in MainActor
(`tests.interfaces.stand_in_main`); the client is ``python -m wactorz chat`` in a
directory of its own, finding the service the way a user's would: the runtime file under
``$XDG_RUNTIME_DIR``, or ``--url`` and ``--token``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.interfaces.stand_in_main import StandInMain
from tests.interfaces.web_support import serving, token_of
from wactorz.__main__ import main
from wactorz.agents.main_actor import COMMANDS, MainActor
from wactorz.config import Secret, WebConfig
from wactorz.interfaces.web.chat_client import NO_SERVICE, find_service

LIMIT_S = 20.0


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The client's environment: its own HOME and runtime dir, no WACTORZ_* from ours, and
    a closed web.port, so that a test never reaches a service running on this machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WACTORZ_")}
    env.update(
        HOME=str(tmp_path),
        XDG_RUNTIME_DIR=str(tmp_path / "xdg"),
        PYTHONUNBUFFERED="1",
        WACTORZ_WEB__PORT=str(_closed_port()),
        **extra,
    )
    return env


async def _chat(
    tmp_path: Path, *args: str, stdin: bytes = b"", **env: str
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(LIMIT_S):
        return await trio.run_process(
            [sys.executable, "-m", "wactorz", "chat", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=tmp_path,
            env=_env(tmp_path, **env),
        )


def _runtime_dir(tmp_path: Path) -> Path:
    """Where the client looks for runtime files, given `_env`'s XDG_RUNTIME_DIR."""
    return tmp_path / "xdg" / "wactorz"


@pytest.mark.slow
async def test_piped_stdin_prints_the_streamed_reply_and_exits_at_the_end(tmp_path: Path) -> None:
    async with serving(tmp_path, runtime_dir=_runtime_dir(tmp_path)) as web:
        main_actor = await web.system.spawn(StandInMain, "main")
        done = await _chat(tmp_path, stdin=b"hello piped world\n")
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"hello piped world \n"
        assert done.stderr == b""
        (seen,) = main_actor.seen
        assert seen["chat"]["text"] == "hello piped world"


@pytest.mark.slow
async def test_lines_run_in_order_commands_pass_through_and_tools_show_on_stderr(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, runtime_dir=_runtime_dir(tmp_path)) as web:
        main_actor = await web.system.spawn(StandInMain, "main")
        done = await _chat(tmp_path, stdin=b"one two\n\n/status now\ntools the weather")
        assert done.returncode == 0, done.stderr
        assert done.stdout.decode().splitlines() == [
            "one two ",
            "ran /status now",
            "found the weather",
        ]
        assert done.stderr.decode() == "[tool search...] [tool search: done] "
        texts = [message["chat"]["text"] for message in main_actor.seen]
        assert texts == ["one two", "/status now", "tools the weather"]
        sessions = {message["chat"]["session"] for message in main_actor.seen}
        assert len(sessions) == 1  # one conversation for the whole input


@pytest.mark.slow
async def test_commands_reach_the_real_main_actor(tmp_path: Path) -> None:
    async with serving(tmp_path, runtime_dir=_runtime_dir(tmp_path)) as web:
        await web.system.spawn(MainActor, "main")
        done = await _chat(tmp_path, stdin=b"/help\n/stauts\n")
    out, err = done.stdout.decode(), done.stderr.decode()
    assert all(f"/{name}" in out for name in COMMANDS), out
    assert "did you mean /status" in out + err, (out, err)
    assert "Traceback" not in err


@pytest.mark.slow
async def test_an_error_is_printed_as_the_services_sentence_and_exits_1(tmp_path: Path) -> None:
    async with serving(tmp_path, runtime_dir=_runtime_dir(tmp_path)) as web:
        await web.system.spawn(StandInMain, "main")
        done = await _chat(tmp_path, "--once", "fail please")
        assert done.returncode == 1
        assert done.stderr.decode() == "the stand-in main refuses 'fail' on purpose\n"
        assert done.stdout == b""
        # Without a main actor the service says so, and the client passes it on.
        for actor in web.system.actors():
            if actor.name == "main":
                await actor.stop()
        done = await _chat(tmp_path, stdin=b"anyone?\n")
        assert done.returncode == 1
        assert "no actor named 'main' is running" in done.stderr.decode()


@pytest.mark.slow
async def test_url_token_and_session_flags_reach_the_service(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:  # its runtime file is where the client does not look
        main_actor = await web.system.spawn(StandInMain, "main")
        done = await _chat(
            tmp_path,
            "--url",
            web.url,
            "--token",
            token_of(web),
            "--session",
            "mine",
            "--once",
            "hi",
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == b"hi \n"
        assert main_actor.seen[-1]["chat"]["session"] == "mine"
        # The banner's address carries the token; the environment can too.
        done = await _chat(tmp_path, "--url", web.login_url, stdin=b"by url\n")
        assert (done.returncode, done.stdout) == (0, b"by url \n"), done.stderr
        done = await _chat(
            tmp_path, "--url", web.url, stdin=b"by env\n", WACTORZ_WEB__TOKEN=token_of(web)
        )
        assert (done.returncode, done.stdout) == (0, b"by env \n"), done.stderr


@pytest.mark.slow
async def test_no_service_says_how_to_start_one_and_exits_3(tmp_path: Path) -> None:
    stale = _runtime_dir(tmp_path)
    stale.mkdir(parents=True)
    no_such_pid = 2**22 + 7  # above Linux's largest pid
    (stale / "web-9.json").write_text(
        f'{{"url": "http://127.0.0.1:9/", "port": 9, "pid": {no_such_pid}, "token": "x"}}'
    )
    done = await _chat(tmp_path, stdin=b"hello?\n")
    assert done.returncode == 3
    assert done.stderr.decode().startswith(f"wactorz chat: {NO_SERVICE}")
    assert "Traceback" not in done.stderr.decode()


@pytest.mark.slow
async def test_a_missing_or_wrong_token_is_refused_with_what_to_do(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        missing = await _chat(tmp_path, "--url", web.url, stdin=b"hi\n")
        wrong = await _chat(tmp_path, "--url", web.url, "--token", "nope", stdin=b"hi\n")
    assert missing.returncode == wrong.returncode == 3
    assert "needs its token: pass --token, set WACTORZ_WEB__TOKEN" in missing.stderr.decode()
    assert "refused the token" in wrong.stderr.decode()
    assert b"nope" not in wrong.stderr


async def _read_until(stream: Any, wanted: bytes, seen: bytearray) -> None:
    with trio.fail_after(LIMIT_S):
        while wanted not in seen:
            chunk = await stream.receive_some()
            if not chunk:
                raise AssertionError(f"ended before {wanted!r}: {bytes(seen)!r}")
            seen += chunk


@pytest.mark.slow
async def test_ctrl_c_cancels_the_running_reply_and_a_second_one_quits(tmp_path: Path) -> None:
    async with serving(tmp_path, runtime_dir=_runtime_dir(tmp_path)) as web:
        main_actor = await web.system.spawn(StandInMain, "main")
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "wactorz", "chat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=_env(tmp_path),
        )
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        out, err = bytearray(), bytearray()
        try:
            await process.stdin.send_all(b"slow and steady\n")
            await _read_until(process.stdout, b"slow and steady slow", out)
            process.send_signal(signal.SIGINT)
            await _read_until(process.stderr, b"(cancelled)\n", err)
            assert b"cancelling the reply" in err
            assert {"cancel": main_actor.seen[0]["stream_id"]} in main_actor.seen
            # Still chatting after a cancel.
            await process.stdin.send_all(b"still here\n")
            await _read_until(process.stdout, b"still here \n", out)
            await process.stdin.send_all(b"slow again\n")
            await _read_until(process.stdout, b"slow again slow", out)
            process.send_signal(signal.SIGINT)
            again = bytearray()
            await _read_until(process.stderr, b"Ctrl-C again quits", again)
            process.send_signal(signal.SIGINT)
            with trio.fail_after(LIMIT_S):
                status = await process.wait()
        finally:
            process.kill()
        assert status == 130
        assert b"Traceback" not in err


@pytest.mark.slow
async def test_a_reply_cut_short_by_ctrl_c_makes_the_exit_status_130(tmp_path: Path) -> None:
    async with serving(tmp_path, runtime_dir=_runtime_dir(tmp_path)) as web:
        await web.system.spawn(StandInMain, "main")
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "wactorz", "chat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
            env=_env(tmp_path),
        )
        assert process.stdin is not None and process.stdout is not None
        out = bytearray()
        try:
            await process.stdin.send_all(b"slow down\n")
            await _read_until(process.stdout, b"slow down slow", out)
            process.send_signal(signal.SIGINT)
            await process.stdin.aclose()  # the end of the input: it exits once the reply ends
            with trio.fail_after(LIMIT_S):
                status = await process.wait()
        finally:
            process.kill()
        assert status == 130


@pytest.mark.slow
async def test_the_service_stopping_ends_the_chat_with_a_sentence(tmp_path: Path) -> None:
    async with serving(tmp_path, runtime_dir=_runtime_dir(tmp_path)) as web:
        await web.system.spawn(StandInMain, "main")
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "wactorz", "chat"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=tmp_path,
            env=_env(tmp_path),
        )
        assert process.stdin is not None and process.stdout is not None
        assert process.stderr is not None
        out, err = bytearray(), bytearray()
        try:
            await process.stdin.send_all(b"are you there\n")
            await _read_until(process.stdout, b"are you there \n", out)
            await web.stop()
            await _read_until(process.stderr, b"the service stopped", err)
            with trio.fail_after(LIMIT_S):
                status = await process.wait()
        finally:
            process.kill()
        assert status == 3


def test_find_service_prefers_flags_then_the_runtime_file_then_the_settings() -> None:
    alive = {"url": "http://127.0.0.1:4000/", "port": 4000, "pid": os.getpid(), "token": "file"}
    dead = {"url": "http://127.0.0.1:4001/", "port": 4001, "pid": 2**22 + 7, "token": "gone"}
    web = WebConfig(port=4002, token=Secret("configured"))
    by_file = find_service(url=None, token=None, web=web, runtime_files=[dead, alive])
    assert (by_file.url, by_file.token, by_file.guessed) == (alive["url"], "file", False)
    assert find_service(url=None, token="flag", web=web, runtime_files=[alive]).token == "flag"
    fallback = find_service(url=None, token=None, web=web, runtime_files=[dead])
    assert (fallback.url, fallback.token, fallback.guessed) == (
        "http://127.0.0.1:4002/",
        "configured",
        True,
    )
    in_url = find_service(
        url="http://localhost:4000/?token=url", token=None, web=web, runtime_files=[alive]
    )
    assert (in_url.url, in_url.token) == ("http://localhost:4000/", "url")
    assert in_url.websocket_url == "ws://localhost:4000/ws"
    same_port = find_service(
        url="http://127.0.0.1:4000", token=None, web=web, runtime_files=[alive]
    )
    assert same_port.token == "file"
    with pytest.raises(ValueError, match="--url takes the service's address"):
        find_service(url="127.0.0.1:4000", token=None, web=web, runtime_files=[])


def test_a_bad_session_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["chat", "--session", "not a name", "--once", "hi"])
    assert exited.value.code == 2
    assert "--session takes 1 to 128 letters" in capsys.readouterr().err


@pytest.mark.slow
async def test_the_help_documents_the_exit_statuses(tmp_path: Path) -> None:
    done = await _chat(tmp_path, "--help")
    assert done.returncode == 0
    assert b"exit status: 0 when the last request was answered" in done.stdout

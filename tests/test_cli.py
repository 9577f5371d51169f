"""The ``wactorz`` command: config, version, help, errors, and ``run`` stopped by signals.

Every command runs as a real subprocess (``python -m wactorz``) in a scratch directory with
a scratch HOME and no WACTORZ_* or API key variables, so that nothing on the developer's
machine leaks in.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psutil
import pytest

import wactorz
import wactorz.__main__ as cli
from wactorz.logs import configure_logging

TIMEOUT_S = 30.0
BANNER_END = "stop with Ctrl-C or SIGTERM"


@pytest.fixture
def fresh_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine where wactorz was never configured."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("WACTORZ_") and key != "ANTHROPIC_API_KEY"
    }
    env["HOME"] = str(tmp_path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wactorz_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "wactorz", *args]


def run_wactorz(
    *args: str, env: dict[str, str], cwd: Path, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        wactorz_cmd(*args),
        env={**env, **(extra_env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )


class Running:
    """A ``wactorz run`` subprocess whose stderr is read line by line in a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        assert process.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, text: str, timeout: float = TIMEOUT_S) -> list[str]:
        """Read stderr until a line contains ``text``; return the lines read so far."""
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line with {text!r} within {timeout} s: {self.lines}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"wactorz exited before printing {text!r}: {self.lines}")
            self.lines.append(line)
        return self.lines

    def finish(self, timeout: float = TIMEOUT_S) -> int:
        """Wait for the process to exit and for the rest of its stderr; return its status."""
        status = self.process.wait(timeout=timeout)
        self._reader.join(timeout)
        while (line := self._queue.get_nowait()) is not None:
            self.lines.append(line)
        return status


StartRun = Callable[..., Running]


@pytest.fixture
def start_run(fresh_env: dict[str, str], tmp_path: Path) -> Iterator[StartRun]:
    """Start ``python -m wactorz <args>`` in the fresh environment; killed if a test fails."""
    started: list[Running] = []

    def start(*args: str) -> Running:
        process = subprocess.Popen(
            wactorz_cmd(*args),
            env=fresh_env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        started.append(Running(process))
        return started[-1]

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait(TIMEOUT_S)


# ---- config ----------------------------------------------------------------------------------


def test_config_shows_each_value_with_its_source_and_masks_secrets(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    result = run_wactorz(
        "config",
        "--node",
        "kitchen",
        "--no-web",
        env=fresh_env,
        cwd=tmp_path,
        extra_env={"ANTHROPIC_API_KEY": "sk-very-secret", "WACTORZ_MQTT__PORT": "1884"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "# config file: none (defaults)"
    settings = {
        line.split(" = ")[0]: (line.split(" = ", 1)[1].split("#")[0].strip(), line.split("# ")[-1])
        for line in lines[1:]
    }
    assert settings["node"] == ('"kitchen"', "--node")
    assert settings["web.enabled"] == ("false", "--no-web")
    assert settings["mqtt.port"] == ("1884", "WACTORZ_MQTT__PORT")
    assert settings["llm.api_key"] == ('"***"', "ANTHROPIC_API_KEY")
    assert settings["mqtt.enabled"] == ("false", "default")
    assert settings["monitor.interval_s"] == ("5.0", "default")
    assert "sk-very-secret" not in result.stdout + result.stderr


@pytest.mark.parametrize("before_command", [True, False])
def test_config_reads_the_file_given_with_config(
    fresh_env: dict[str, str], tmp_path: Path, before_command: bool
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text("mqtt:\n  enabled: true\n  password: hunter2\nnode: attic\n")
    option = ["--config", str(path)]
    args = [*option, "config"] if before_command else ["config", *option]
    result = run_wactorz(*args, env=fresh_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"# config file: {path}"
    assert 'node = "attic"' in result.stdout
    assert any(
        line.startswith('mqtt.password = "***"') and line.endswith(f"# {path}")
        for line in result.stdout.splitlines()
    )
    assert "hunter2" not in result.stdout


def test_config_reads_wactorz_yaml_in_the_working_directory(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "wactorz.yaml").write_text("node: cellar\n")
    result = run_wactorz("config", env=fresh_env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'node = "cellar"' in result.stdout


@pytest.mark.parametrize(
    ("args", "extra_env", "expected"),
    [
        (
            ["config", "--mqtt-port", "abc"],
            {},
            "mqtt.port: 'abc' from --mqtt-port is not valid: expected an integer from 1 to 65535",
        ),
        (
            ["run", "--mqtt-port", "70000"],
            {},
            "mqtt.port: '70000' from --mqtt-port is not valid: expected an integer from 1 to 65535",
        ),
        (
            ["config"],
            {"WACTORZ_MQTT__PROT": "1884"},
            "unknown key 'mqtt.prot' from WACTORZ_MQTT__PROT",
        ),
        (["--log-level", "loud"], {}, "log_level: 'loud' from --log-level is not valid"),
        (
            ["--config", "missing.yaml"],
            {},
            "config file 'missing.yaml' (from --config) does not exist",
        ),
    ],
)
def test_a_bad_setting_is_one_line_on_stderr_and_exit_status_2(
    fresh_env: dict[str, str],
    tmp_path: Path,
    args: list[str],
    extra_env: dict[str, str],
    expected: str,
) -> None:
    result = run_wactorz(*args, env=fresh_env, cwd=tmp_path, extra_env=extra_env)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"wactorz: config error: {expected}")
    assert result.stdout == ""


def test_a_bad_value_in_the_config_file_names_the_file(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "wactorz.yaml").write_text("monitor:\n  interval_s: -3\n")
    result = run_wactorz("run", env=fresh_env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "wactorz: config error: monitor.interval_s: -3 from ./wactorz.yaml is not valid: "
        "expected a number of seconds greater than 0\n"
    )


# ---- version, help, usage --------------------------------------------------------------------


def test_version_prints_the_package_version(fresh_env: dict[str, str], tmp_path: Path) -> None:
    result = run_wactorz("version", env=fresh_env, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"wactorz {wactorz.__version__} (Python ")
    assert "trio" in result.stdout
    flag = run_wactorz("--version", env=fresh_env, cwd=tmp_path)
    assert flag.returncode == 0
    assert flag.stdout == f"wactorz {wactorz.__version__}\n"


def test_help_describes_the_commands_and_gives_examples(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    result = run_wactorz("--help", env=fresh_env, cwd=tmp_path)
    assert result.returncode == 0
    for text in ("run", "config", "version", "--config", "--log-format", "examples:"):
        assert text in result.stdout
    run_help = run_wactorz("run", "--help", env=fresh_env, cwd=tmp_path)
    assert run_help.returncode == 0
    for text in ("--node", "--mqtt-port", "--no-mqtt", "--web-port", "[mqtt.port]"):
        assert text in run_help.stdout


def test_an_unknown_command_is_a_usage_error(fresh_env: dict[str, str], tmp_path: Path) -> None:
    result = run_wactorz("frobnicate", env=fresh_env, cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_command_is_found_among_options_that_take_values() -> None:
    assert cli._with_command([]) == ["run"]
    assert cli._with_command(["--node", "config"]) == ["run", "--node", "config"]
    assert cli._with_command(["--config", "x.yaml", "config"]) == ["--config", "x.yaml", "config"]
    assert cli._with_command(["--log-format", "json"]) == ["run", "--log-format", "json"]
    assert cli._with_command(["--help"]) == ["--help"]


@pytest.mark.parametrize(
    "interrupt",
    [KeyboardInterrupt(), BaseExceptionGroup("tasks", [KeyboardInterrupt()])],
    ids=["bare", "in a group"],
)
def test_an_interrupt_exits_quietly_with_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], interrupt: BaseException
) -> None:
    def interrupted(args: object) -> int:
        raise interrupt

    monkeypatch.setitem(cli._COMMAND_FUNCTIONS, "version", interrupted)
    assert cli.main(["version"]) == 130
    assert capsys.readouterr().err == "wactorz: interrupted\n"


# ---- run ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_run_on_a_fresh_machine_logs_a_banner_and_stops_cleanly_on_a_signal(
    start_run: StartRun, stop_signal: signal.Signals
) -> None:
    running = start_run()  # no command at all: run is the default
    text = " ".join(" ".join(running.wait_for_line(BANNER_END)).split())
    assert "config: none (defaults)" in text
    assert "mqtt: off (mqtt.enabled is false)" in text
    assert "listening: nothing listening yet" in text
    assert "actors: monitor (every 5 s)" in text
    assert psutil.Process(running.process.pid).children(recursive=True) == []

    started = time.monotonic()
    running.process.send_signal(stop_signal)
    assert running.finish() == 0
    assert time.monotonic() - started < 10
    assert f"stopping (received {stop_signal.name})" in "\n".join(running.lines)
    assert running.lines[-1].endswith("wactorz.service: stopped")
    assert not any("Traceback" in line for line in running.lines)


def test_run_flags_reach_the_service(start_run: StartRun) -> None:
    running = start_run("run", "--node", "kitchen", "--no-monitor", "--log-level", "debug")
    text = " ".join(" ".join(running.wait_for_line(BANNER_END)).split())
    assert "running on node 'kitchen'" in text
    assert "actors: none" in text
    assert "3 values from the environment or flags" in text
    running.process.send_signal(signal.SIGTERM)
    assert running.finish() == 0


def test_run_with_json_logs_writes_one_json_object_per_line(start_run: StartRun) -> None:
    running = start_run("--log-format", "json")
    running.wait_for_line(BANNER_END)
    running.process.send_signal(signal.SIGINT)
    assert running.finish() == 0
    records = [json.loads(line) for line in running.lines]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert records[-1]["message"] == "stopped"


# ---- logging -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root, ours = logging.getLogger(), logging.getLogger("wactorz")
    handlers, levels = list(root.handlers), (root.level, ours.level)
    yield
    root.handlers[:] = handlers
    root.setLevel(levels[0])
    ours.setLevel(levels[1])


def test_json_logs_carry_extra_fields_and_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging("info", "json", stream=stream)
    log = logging.getLogger("wactorz.test")
    log.debug("not shown at INFO")
    log.info("hello %s", "there", extra={"actor": "echo"})
    try:
        int("boom")
    except ValueError:
        log.exception("it failed")
    logging.getLogger("some.library").info("too chatty for INFO")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "hello there"
    assert first["actor"] == "echo"
    assert first["level"] == "INFO" and first["logger"] == "wactorz.test"
    assert second["exception"].endswith(
        "ValueError: invalid literal for int() with base 10: 'boom'"
    )


def test_text_logs_are_one_readable_line_and_unknown_levels_are_refused() -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=io.StringIO())
    configure_logging("WARNING", "text", stream=stream)  # replaces the first handler
    logging.getLogger("wactorz.test").info("quiet")
    logging.getLogger("wactorz.test").warning("loud")
    (line,) = stream.getvalue().splitlines()
    assert line.endswith(" WARNING  wactorz.test: loud")
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("chatty")

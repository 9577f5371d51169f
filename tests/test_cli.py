"""The ``wactorz`` command: config, version, help, errors, and ``run`` stopped by signals.

Every command runs as a real subprocess (``python -m wactorz``) in a scratch directory with
a scratch HOME and no WACTORZ_* or API key variables, so that nothing on the developer's
machine leaks in.
"""

from __future__ import annotations

import concurrent.futures
import io
import itertools
import json
import logging
import os
import queue
import re
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
from wactorz.agents.sandbox import LAYERS
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


def test_config_output_stays_small_whatever_the_values(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    filters = "".join(f"    - t{index}/#\n" for index in range(10_000))
    (tmp_path / "wactorz.yaml").write_text(
        f"llm:\n  model: {'a' * 1_000_000}\nmqtt:\n  mirror_topics:\n{filters}"
    )
    # One environment string is limited to 128 KiB on Linux.
    extra_env = {"WACTORZ_LLM__BASE_URL": "https://" + "b" * 100_000}
    result = run_wactorz("config", env=fresh_env, cwd=tmp_path, extra_env=extra_env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout) < 6000
    lines = {line.split(" = ")[0]: line for line in result.stdout.splitlines()[1:]}
    assert lines["llm.model"].startswith('llm.model = "aaaa')
    assert lines["llm.model"].endswith('…" (1000000 characters)  # ./wactorz.yaml')
    assert lines["llm.base_url"].endswith('…" (100008 characters)  # WACTORZ_LLM__BASE_URL')
    assert lines["mqtt.mirror_topics"].endswith(", …] (10000 items)  # ./wactorz.yaml")
    assert lines["mqtt.port"] == "mqtt.port = 1883                     # default"


@pytest.mark.parametrize(
    "host", ["localhost", "127.0.0.1", "::1", "broker.lan", "my-broker.example.com"]
)
def test_config_accepts_host_names_and_addresses(
    fresh_env: dict[str, str], tmp_path: Path, host: str
) -> None:
    result = run_wactorz(
        "config", f"--mqtt-host={host}", f"--web-host={host}", env=fresh_env, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert f'mqtt.host = "{host}"' in result.stdout
    assert f'web.host = "{host}"' in result.stdout


@pytest.mark.parametrize(
    ("option", "host"),
    [
        ("--mqtt-host", "bad host name!!"),
        ("--mqtt-host", "-x"),
        ("--mqtt-host", "a..b"),
        ("--mqtt-host", ""),
        ("--web-host", "a" * 300),
        ("--web-host", "a" * 64 + ".lan"),
        ("--mqtt-host", "host:1883"),
        ("--web-host", "http://x"),
    ],
)
def test_a_bad_host_is_one_line_on_stderr_and_exit_status_2(
    fresh_env: dict[str, str], tmp_path: Path, option: str, host: str
) -> None:
    result = run_wactorz("config", f"{option}={host}", env=fresh_env, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    key = option.removeprefix("--").replace("-", ".")
    assert line.startswith(f"wactorz: config error: {key}: ")
    assert f"from {option} is not valid: expected an IP address like 127.0.0.1 or ::1" in line
    assert len(line) < 400


def test_config_into_a_reader_that_went_away_ends_quietly(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    process = subprocess.Popen(
        wactorz_cmd("config"),
        env=fresh_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()  # like `wactorz config | head -1`, before the first line is out
    _, err = process.communicate(timeout=TIMEOUT_S)
    assert (process.returncode, err) == (141, "")


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


def test_main_given_arguments_leaves_the_signal_handlers_alone() -> None:
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    assert cli.main(["version"]) == 0
    assert {signum: signal.getsignal(signum) for signum in before} == before


# ---- run ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_run_on_a_fresh_machine_logs_a_banner_and_stops_cleanly_on_a_signal(
    start_run: StartRun, stop_signal: signal.Signals
) -> None:
    # No command at all (run is the default); tests never take the real port 8765.
    running = start_run("--web-port", "0")
    text = " ".join(" ".join(running.wait_for_line(BANNER_END)).split())
    assert "config: none (defaults)" in text
    assert "mqtt: off (mqtt.enabled is false)" in text
    assert re.search(r"listening: web at http://127\.0\.0\.1:\d+/\?token=[\w-]{43} ", text)
    assert "actors: web (127.0.0.1:0), main (router), monitor (every 5 s)" in text
    assert psutil.Process(running.process.pid).children(recursive=True) == []

    started = time.monotonic()
    running.process.send_signal(stop_signal)
    assert running.finish() == 0
    assert time.monotonic() - started < 10
    assert f"stopping (received {stop_signal.name})" in "\n".join(running.lines)
    assert running.lines[-1].endswith("wactorz.service: stopped")
    assert not any("Traceback" in line for line in running.lines)


def test_run_flags_reach_the_service(start_run: StartRun) -> None:
    running = start_run(
        "run", "--node", "kitchen", "--no-monitor", "--no-web", "--log-level", "debug"
    )
    text = " ".join(" ".join(running.wait_for_line(BANNER_END)).split())
    assert "running on node 'kitchen'" in text
    assert "actors: none" in text
    assert "4 values from the environment or flags" in text
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


def _catches(pid: int, signum: int) -> bool:
    """Whether process *pid* has a handler for *signum*, from its /proc status (Linux only)."""
    status = Path(f"/proc/{pid}/status").read_text()
    (caught,) = (line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) & (1 << (signum - 1)))


def _signal_after_take_over(
    env: dict[str, str], cwd: Path, stop_signal: signal.Signals, delay: float
) -> tuple[int, str]:
    """Start ``wactorz run``, send *stop_signal* *delay* s after it handles SIGTERM; the outcome.

    Python itself catches SIGINT from its start; SIGTERM is caught once wactorz has taken the
    stop signals over, at the top of ``wactorz.__main__``. Before that, while the interpreter
    starts and imports the ``wactorz`` package, a signal gets Python's default treatment.
    """
    process = subprocess.Popen(
        wactorz_cmd("run", "--web-port", "0"),  # several run at once: no fixed port
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not _catches(process.pid, signal.SIGTERM):
            assert process.poll() is None, "wactorz exited before it caught SIGTERM"
            assert time.monotonic() < deadline, "wactorz never caught SIGTERM"
            time.sleep(0.0005)
        time.sleep(delay)
        process.send_signal(stop_signal)
        _, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(TIMEOUT_S)
    return process.returncode, err


EARLY_EXIT = {
    signal.SIGINT: (130, "wactorz: interrupted\n"),
    signal.SIGTERM: (0, "wactorz: stopped (SIGTERM)\n"),
}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc/<pid>/status")
def test_a_stop_signal_at_any_moment_after_start_up_ends_the_process_cleanly(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    delays = (0.0, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
    cases = [(stop_signal, delay) for stop_signal in EARLY_EXIT for delay in delays]
    with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:
        outcomes = dict(
            zip(
                cases,
                pool.map(lambda case: _signal_after_take_over(fresh_env, tmp_path, *case), cases),
                strict=True,
            )
        )
    for (stop_signal, delay), (status, err) in outcomes.items():
        case = f"{stop_signal.name} after {delay} s: exit status {status}, stderr {err!r}"
        assert "Traceback" not in err, case
        stopped_by_service = f"stopping (received {stop_signal.name})" in err
        if stopped_by_service:
            assert status == 0, case
            assert err.splitlines()[-1].endswith("wactorz.service: stopped"), case
        else:
            assert (status, err) == EARLY_EXIT[stop_signal], case
    for stop_signal in EARLY_EXIT:
        # Right after the take-over the service is far from up: the early exit is what runs.
        assert outcomes[stop_signal, 0.0] == EARLY_EXIT[stop_signal]


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_the_config_file_is_read_ends_the_process_cleanly(
    fresh_env: dict[str, str], tmp_path: Path, stop_signal: signal.Signals
) -> None:
    fifo = tmp_path / "slow.yaml"
    os.mkfifo(fifo)
    process = subprocess.Popen(
        wactorz_cmd("run", "--config", str(fifo)),
        env=fresh_env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + TIMEOUT_S
    writer = None
    while writer is None:
        try:  # succeeds once wactorz has opened the file, and waits in reading it
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
    try:
        process.send_signal(stop_signal)
        _, err = process.communicate(timeout=TIMEOUT_S)
    finally:
        os.close(writer)
    assert (process.returncode, err) == EARLY_EXIT[stop_signal]


def test_a_burst_of_stop_signals_after_the_banner_stops_the_service_once_with_0(
    start_run: StartRun,
) -> None:
    running = start_run("run", "--no-monitor")
    running.wait_for_line(BANNER_END)
    signals = itertools.cycle([signal.SIGINT, signal.SIGTERM])
    deadline = time.monotonic() + TIMEOUT_S
    while running.process.poll() is None and time.monotonic() < deadline:
        running.process.send_signal(next(signals))  # on into its stopping and exiting
        time.sleep(0.002)
    assert running.finish() == 0
    text = "\n".join(running.lines)
    assert "Traceback" not in text
    assert text.count("stopping (received SIG") == 1
    assert running.lines[-1].endswith("wactorz.service: stopped")


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


# ---- sandbox -------------------------------------------------------------------------------


def test_sandbox_doctor_lists_every_layer_and_checks_them_live(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    done = run_wactorz("sandbox", "doctor", env=fresh_env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    for layer in ("process", "user", "cgroup", "filesystem", "network", "bubblewrap"):
        assert re.search(rf"^  {layer} +(on|off|not asked) ", done.stdout, re.M), layer
    assert "live checks:" in done.stdout and "FAIL" not in done.stdout
    as_json = run_wactorz("sandbox", "doctor", "--json", env=fresh_env, cwd=tmp_path)
    report = json.loads(as_json.stdout)
    assert [layer["name"] for layer in report["layers"]] == list(LAYERS)
    assert all(check["passed"] for check in report["checks"])


def test_sandbox_settings_that_contradict_each_other_are_a_config_error(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    done = run_wactorz(
        "sandbox",
        "doctor",
        env=fresh_env,
        cwd=tmp_path,
        extra_env={"WACTORZ_SANDBOX__REQUIRE": "bubblewrap", "WACTORZ_SANDBOX__BUBBLEWRAP": "0"},
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "sandbox.require" in done.stderr
    assert "'bubblewrap' is required but use_bubblewrap is False" in done.stderr


def test_sandbox_run_prints_the_output_and_exits_with_the_snippets_status(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    done = run_wactorz(
        "sandbox",
        "run",
        "--python",
        "-c",
        "import sys; print('to stdout'); print('to stderr', file=sys.stderr); sys.exit(3)",
        env=fresh_env,
        cwd=tmp_path,
    )
    assert done.returncode == 3
    assert done.stdout == "to stdout\n"
    assert "to stderr\n" in done.stderr
    script = tmp_path / "snippet.sh"
    script.write_text("echo from a file\n")
    from_file = run_wactorz("sandbox", "run", "--sh", str(script), env=fresh_env, cwd=tmp_path)
    assert (from_file.returncode, from_file.stdout) == (0, "from a file\n")


def test_sandbox_run_says_what_stopped_a_run_and_gives_json(
    fresh_env: dict[str, str], tmp_path: Path
) -> None:
    slow = run_wactorz(
        "sandbox", "run", "--sh", "-c", "sleep 30", "--timeout", "0.5", env=fresh_env, cwd=tmp_path
    )
    assert slow.returncode == 124
    assert "the run was stopped: timeout" in slow.stderr
    as_json = run_wactorz(
        "sandbox", "run", "--python", "-c", "print(1)", "--json", env=fresh_env, cwd=tmp_path
    )
    result = json.loads(as_json.stdout)
    assert {
        "stdout",
        "stderr",
        "exit_code",
        "timed_out",
        "killed_by",
        "duration_s",
        "truncated",
    } <= set(result)
    assert (result["stdout"], result["exit_code"], as_json.returncode) == ("1\n", 0, 0)
    missing = run_wactorz("sandbox", "run", "--sh", "nowhere.sh", env=fresh_env, cwd=tmp_path)
    assert missing.returncode == 2
    assert "cannot read nowhere.sh" in missing.stderr

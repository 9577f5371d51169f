"""Fixtures of the interface tests: a real MQTT broker, and the browser of the dashboard's tests.

``browser`` is Debian's chromium driven by Playwright, one per module
(`tests.interfaces.browser_support`). The rest of this page is about the broker.

A real MQTT broker on a free loopback port, started and stopped around each test.

mosquitto is used when it is on PATH, otherwise the pure-Python amqtt broker (the
``test`` extra installs it). ``WACTORZ_TEST_BROKER=amqtt`` or ``=mosquitto`` forces
one of them, so that both code paths can be exercised on a machine that has both.

``mqtt_broker`` is a broker for one test; ``mqtt_broker_module`` one shared by all the
tests of a module, for tests that start a service once and then talk to it. The test
mosquitto keeps no per-client limit on queued messages, so that what a flood test
counts is what the client under test did, not what the broker threw away.

The fixtures are synchronous (plain ``subprocess``), so they serve Trio tests as well as
any other. A broker's ``start``/``stop``/``restart`` block for as long as it takes to
come up (milliseconds for mosquitto, a few hundred for amqtt); a Trio test that must
keep its own tasks running meanwhile calls them through ``trio.to_thread.run_sync``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final, Literal

import pytest

BrokerKind = Literal["mosquitto", "amqtt"]

_ENV_VAR: Final = "WACTORZ_TEST_BROKER"
_START_TIMEOUT_S: Final = 10.0
_STOP_TIMEOUT_S: Final = 5.0
_HOST: Final = "127.0.0.1"


class BrokerProcess:
    """One broker subprocess listening on ``host:port``; it keeps the port across restarts."""

    def __init__(self, kind: BrokerKind, workdir: Path, mosquitto_options: str = "") -> None:
        self.kind: BrokerKind = kind
        self.host: str = _HOST
        self.port: int = _free_port()
        self._log_path = workdir / f"{kind}.log"
        self._command = _write_config(kind, workdir, self.port, mosquitto_options)
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def protocol(self) -> Literal["5", "3.1.1"]:
        """The newest MQTT version the broker speaks (amqtt: 3.1.1 only)."""
        return "5" if self.kind == "mosquitto" else "3.1.1"

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<BrokerProcess {self.kind} {self.host}:{self.port} {state}>"

    @property
    def running(self) -> bool:
        """Whether the broker process is up (it may have crashed since: see ``start``)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker and return once its port accepts connections.

        Raises RuntimeError, quoting the broker's own output, if it exits or does not
        listen within 10 s.
        """
        if self._process is not None:
            raise RuntimeError(f"{self!r} is already started; stop() it first")
        self._log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            self._command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _accepts_connections(self.host, self.port):
            returncode = self._process.poll()
            # amqtt logs a failed start (port taken, bad config) but keeps running.
            gave_up = self.kind == "amqtt" and "Broker startup failed" in self.output()
            if returncode is not None or gave_up or time.monotonic() > deadline:
                self.stop()
                if returncode is not None:
                    why = f"exited with code {returncode}"
                else:
                    why = "it reported a failed start" if gave_up else "timed out"
                raise RuntimeError(
                    f"{self.kind} did not start listening on {self.host}:{self.port} "
                    f"({why}); its output:\n{self.output()}"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        """Terminate the broker (killing it if it lingers) and reap it. Idempotent."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=_STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        """Stop the broker and start it again on the same port: clients lose their connections."""
        self.stop()
        self.start()

    def output(self) -> str:
        """Everything the broker has written to stdout/stderr so far, across restarts."""
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


def _broker_kind() -> BrokerKind:
    wanted = os.environ.get(_ENV_VAR, "").strip().lower()
    if wanted not in ("", "auto", "mosquitto", "amqtt"):
        pytest.fail(f"{_ENV_VAR}={wanted!r}: use 'mosquitto', 'amqtt' or leave it unset")
    have_mosquitto = shutil.which("mosquitto") is not None
    have_amqtt = _amqtt_installed()
    if wanted == "mosquitto" and not have_mosquitto:
        pytest.fail(
            f"{_ENV_VAR}=mosquitto but mosquitto is not on PATH (apt-get install mosquitto)"
        )
    if wanted == "amqtt" and not have_amqtt:
        pytest.fail(f"{_ENV_VAR}=amqtt but amqtt is not installed (pip install -e '.[test]')")
    if wanted == "mosquitto":
        return "mosquitto"
    if wanted == "amqtt":
        return "amqtt"
    if have_mosquitto:
        return "mosquitto"
    if have_amqtt:
        return "amqtt"
    pytest.skip("no MQTT broker: apt-get install mosquitto, or pip install -e '.[test]' for amqtt")


def broker_protocol() -> Literal["5", "3.1.1"]:
    """The MQTT version the fixtures' broker speaks, for clients that are given a port
    rather than a `BrokerProcess` (see `BrokerProcess.protocol`)."""
    wanted = os.environ.get(_ENV_VAR, "").strip().lower()
    amqtt = wanted == "amqtt" or (wanted != "mosquitto" and shutil.which("mosquitto") is None)
    return "3.1.1" if amqtt else "5"


def _amqtt_installed() -> bool:
    try:
        import amqtt.scripts.broker_script  # noqa: F401
    except ImportError:
        return False
    return True


def _write_config(kind: BrokerKind, workdir: Path, port: int, mosquitto_options: str) -> list[str]:
    if kind == "mosquitto":
        config = workdir / "mosquitto.conf"
        config.write_text(
            f"listener {port} {_HOST}\n"
            "allow_anonymous true\n"
            "persistence false\n"
            # 0 is "no maximum": a slow subscriber gets everything, however far behind.
            "max_queued_messages 0\n"
            # Send at once: without it Nagle's algorithm adds 40 ms to many answers.
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n" + mosquitto_options
        )
        return [_which("mosquitto"), "-c", str(config)]
    config = workdir / "amqtt.yaml"
    # No $SYS or packet-logging plugins: less noise, and nothing published behind the tests' backs.
    config.write_text(
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        f"    bind: {_HOST}:{port}\n"
        "plugins:\n"
        "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n"
    )
    # The installed `amqtt` console script, run through this interpreter so that a
    # virtualenv's amqtt is the one used even when its bin/ is not on PATH.
    return [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(config)]


def _which(program: str) -> str:
    path = shutil.which(program)
    if path is None:
        raise RuntimeError(f"{program} is not on PATH")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _accepts_connections(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def _running_broker(workdir: Path) -> Iterator[BrokerProcess]:
    broker = BrokerProcess(_broker_kind(), workdir)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[BrokerProcess]:
    """A running broker for this test alone; killed and reaped afterwards, whatever happened."""
    with _running_broker(tmp_path) as broker:
        yield broker


@pytest.fixture(scope="module")
def mqtt_broker_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A running broker shared by the tests of one module; killed and reaped after the last.

    Its retained messages outlive each test: a test that leaves some behind clears them.
    """
    with _running_broker(tmp_path_factory.mktemp("broker")) as broker:
        yield broker


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium, headless, for the tests of one module (`browser_support.launch_browser`)."""
    from tests.interfaces.browser_support import launch_browser  # Playwright: browser tests only

    yield from launch_browser()

"""The embedded broker and ``wactorz nodes``, in what they refuse and how they say so.

(Two nodes sharing an embedded broker, and taking it over, run as processes in
``test_mqtt_cluster_processes.py``.)
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio.lowlevel

from tests.interfaces.conftest import _free_port
from wactorz import ActorStartFailed, ActorSystem
from wactorz.__main__ import main
from wactorz.config import MQTTConfig
from wactorz.interfaces.mqtt.embedded import EmbeddedBroker, amqtt_missing
from wactorz.interfaces.mqtt.nodes_command import EXIT_NO_BROKER, run_nodes_command


def test_without_amqtt_the_embedded_broker_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in list(os.environ):  # settings come from the environment too
        if name.upper().startswith("WACTORZ_"):
            monkeypatch.delenv(name)
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "amqtt" else real(name, *a)
    )
    assert amqtt_missing() is not None
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--broker", "embedded", "--no-web", "--no-monitor"])
    assert exit_info.value.code == 2
    assert "pip install 'wactorz[broker]'" in capsys.readouterr().err


async def test_the_embedded_broker_listens_on_loopback_only(tmp_path: Path) -> None:
    async with ActorSystem() as system:
        with pytest.raises(ActorStartFailed, match="listens on loopback only, not on '10.1.2.3'"):
            await system.spawn(EmbeddedBroker, host="10.1.2.3", port=1883, workdir=tmp_path)


async def test_the_embedded_broker_starts_amqtt_and_stops_it(tmp_path: Path) -> None:
    port = _free_port()
    async with ActorSystem() as system:
        broker = await system.spawn(EmbeddedBroker, port=port, workdir=tmp_path)
        assert (await system.ask(broker.id, {"get": "status"}))["running_here"] is True
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        # A second one on the same port uses the first's.
        second = await system.spawn(EmbeddedBroker, "second", port=port, workdir=tmp_path / "2")
        assert second.running_here is False
        await broker.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    assert (tmp_path / "amqtt.log").exists()


def test_the_broker_process_stops_cleanly_when_its_stdin_closes(tmp_path: Path) -> None:
    """The pipe on its stdin is how the broker sees its node go, a SIGKILLed one too: the
    kernel closes the node's end of it."""
    port = _free_port()
    child, log = _broker_child(tmp_path, port, parent_pid=os.getpid())
    try:
        assert child.stdin is not None
        child.stdin.close()
        assert child.wait(timeout=5) == 0
    finally:
        _reap(child)
    assert "stopping the broker: stdin closed" in log.read_text()
    assert "Broker closed" in log.read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.skipif(os.name != "posix", reason="a dead parent's pid changes on POSIX only")
def test_the_broker_process_stops_when_it_is_no_longer_its_nodes_child(tmp_path: Path) -> None:
    """Not the child of the pid it was given (its node died, even before the child could
    watch it): it stops, though its stdin is still open (as when a process forked from the
    node holds a copy of the pipe)."""
    port = _free_port()
    child, log = _broker_child(tmp_path, port, parent_pid=os.getpid() + 1)
    try:
        assert child.wait(timeout=5) == 0
    finally:
        _reap(child)
    assert f"the node (pid {os.getpid() + 1}) is gone" in log.read_text()


def _broker_child(
    workdir: Path, port: int, parent_pid: int
) -> tuple[subprocess.Popen[bytes], Path]:
    """The embedded broker's process on ``port``, started as `EmbeddedBroker` starts it,
    up and listening; and its log."""
    config = workdir / "amqtt.yaml"
    config.write_text(
        "listeners:\n"
        "  default:\n"
        "    type: tcp\n"
        f"    bind: 127.0.0.1:{port}\n"
        "plugins:\n"
        "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
        "    allow_anonymous: true\n",
        encoding="utf-8",
    )
    log = workdir / "amqtt.log"
    command = [sys.executable, "-m", "wactorz.interfaces.mqtt._broker_child"]
    with log.open("wb") as output:
        child = subprocess.Popen(
            [*command, str(config), str(parent_pid)],
            stdin=subprocess.PIPE,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 15
    while "Listener 'default' bind to" not in log.read_text(errors="replace"):
        if child.poll() is not None or time.monotonic() > deadline:
            _reap(child)
            pytest.fail(f"the broker process did not start:\n{log.read_text()}")
        time.sleep(0.05)
    return child, log


def _reap(child: subprocess.Popen[bytes]) -> None:
    """Kill ``child`` if a test left it running, and wait for it: no process outlives a test."""
    if child.poll() is None:
        child.kill()
    child.wait()
    if child.stdin is not None:
        child.stdin.close()


def test_wactorz_nodes_without_a_broker_exits_3_saying_where_it_looked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = _free_port()
    config = MQTTConfig(enabled=True, port=port, protocol="3.1.1")
    assert run_nodes_command(config, 0.2, as_json=False) == EXIT_NO_BROKER
    assert f"no MQTT broker answers on 127.0.0.1:{port}" in capsys.readouterr().err


async def test_nothing_is_left_running_by_a_refused_start() -> None:
    await trio.lowlevel.checkpoint()  # the refusals above leave no task or process behind them

"""The embedded broker and ``wactorz nodes``, in what they refuse and how they say so.

(Two nodes sharing an embedded broker, and taking it over, run as processes in
``test_mqtt_cluster_processes.py``.)
"""

from __future__ import annotations

import importlib.util
import os
import socket
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


def test_wactorz_nodes_without_a_broker_exits_3_saying_where_it_looked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = _free_port()
    config = MQTTConfig(enabled=True, port=port, protocol="3.1.1")
    assert run_nodes_command(config, 0.2, as_json=False) == EXIT_NO_BROKER
    assert f"no MQTT broker answers on 127.0.0.1:{port}" in capsys.readouterr().err


async def test_nothing_is_left_running_by_a_refused_start() -> None:
    await trio.lowlevel.checkpoint()  # the refusals above leave no task or process behind them

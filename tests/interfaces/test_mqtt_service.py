"""The MQTT bridge as part of the service: planned from the settings, and run from the CLI."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import pytest
import trio

from tests.interfaces.conftest import BrokerProcess
from tests.interfaces.test_mqtt_bridge import LIMIT_S, wire
from wactorz.agents.monitor_agent import MONITOR_NAME
from wactorz.config import ConfigError, LoadedSettings, Settings
from wactorz.interfaces.mqtt import BRIDGE_NAME, MQTTBridge
from wactorz.interfaces.web import WEB_NAME
from wactorz.service import Service, banner_lines, plan_service


def test_with_mqtt_enabled_the_plan_starts_the_bridge_first_and_the_banner_says_where() -> None:
    settings = Settings(node="n").with_overrides(
        {"mqtt.enabled": True, "mqtt.host": "broker.lan", "mqtt.topic_prefix": "home/wz"}
    )
    plan = plan_service(settings)
    assert [child.name for child in plan.children] == [
        BRIDGE_NAME,
        WEB_NAME,
        "llm",
        "main",
        MONITOR_NAME,
    ]
    bridge = plan.children[0]
    assert bridge.actor is MQTTBridge
    assert bridge.kwargs == {"config": settings.mqtt, "kinds": {}}
    lines = banner_lines(LoadedSettings(settings, {}), plan)
    assert "mqtt:      broker.lan:1883, topics under 'home/wz/'" in lines
    assert (
        f"actors:    {BRIDGE_NAME} (broker.lan:1883), web (127.0.0.1:8765), "
        "llm (claude-sonnet-4-5, no API key: set ANTHROPIC_API_KEY), main (router), "
        "monitor (every 5 s)"
    ) in lines


def test_with_mqtt_disabled_there_is_no_bridge() -> None:
    plan = plan_service(Settings(node="n"))
    assert BRIDGE_NAME not in [child.name for child in plan.children]
    assert plan.mqtt == "off (mqtt.enabled is false)"


async def test_the_service_forwards_heartbeats_and_says_offline_when_it_stops(
    mqtt_broker: BrokerProcess, tmp_path: Path
) -> None:
    settings = Settings(node="svc").with_overrides(
        {
            "mqtt.enabled": True,
            "mqtt.port": mqtt_broker.port,
            "mqtt.protocol": mqtt_broker.protocol,
            "mqtt.topic_prefix": "svc",
            "monitor.interval_s": 0.1,
            "web.port": 0,
            "data_dir": str(tmp_path),
        }
    )
    service = Service(LoadedSettings(settings, {}))
    async with wire(mqtt_broker, "svc/#") as client, trio.open_nursery() as nursery:
        with trio.fail_after(LIMIT_S):
            await nursery.start(service.run)
            await client.wait_for("svc/nodes/svc/heartbeat", 2)
            await client.wait_for("svc/system/health")
            # What an actor reports about itself crosses the bridge unchanged.
            assert service.system is not None
            llm = service.system.lookup("llm")
            assert llm is not None
            (heartbeat, *_) = await client.wait_for(f"svc/agents/{llm.id}/heartbeat")
            assert heartbeat.json()["details"] == llm.telemetry()
            service.request_stop()
        with trio.fail_after(LIMIT_S):
            await client.wait_for("svc/nodes/svc/status", 2)
    assert client.seen("svc/nodes/svc/status")[-1].json()["status"] == "offline"


def test_wactorz_run_with_mqtt_publishes_heartbeats_and_exits_0_on_sigint(
    mqtt_broker: BrokerProcess, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WACTORZ_")}
    env["PYTHONUNBUFFERED"] = "1"
    command = [
        sys.executable,
        "-m",
        "wactorz",
        "run",
        "--node",
        "cli",
        "--mqtt",
        "--mqtt-port",
        str(mqtt_broker.port),
        "--mqtt-prefix",
        "cli",
        "--monitor-interval",
        "0.2",
        "--no-web",
    ]
    subscriber = subprocess.Popen(
        ["mosquitto_sub", "-p", str(mqtt_broker.port), "-t", "cli/nodes/cli/#", "-v"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert subscriber.stdout is not None
    seen = Lines(subscriber.stdout)
    try:
        time.sleep(0.2)  # mosquitto_sub subscribes
        process = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            heartbeats = seen.until("cli/nodes/cli/heartbeat ")
            process.send_signal(signal.SIGINT)
            output, _ = process.communicate(timeout=LIMIT_S)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        goodbye = seen.until('"status":"offline"')
    finally:
        subscriber.kill()
        subscriber.wait()
        seen.close()
    text = output.decode()
    assert process.returncode == 0, text
    assert f"mqtt:      127.0.0.1:{mqtt_broker.port}, topics under 'cli/'" in text
    assert "Traceback" not in text
    assert json.loads(heartbeats[-1].partition(" ")[2])["node"] == "cli"
    assert goodbye[-1].startswith("cli/nodes/cli/status ")


class Lines:
    """The lines a subprocess writes, collected by a thread so that waits can time out."""

    def __init__(self, stream: IO[str]) -> None:
        self._lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stream = stream
        self._reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._reader.start()

    def close(self) -> None:
        """Once the process has exited: wait for the reader to see the end, close the pipe."""
        self._reader.join(timeout=5)
        self._stream.close()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line.rstrip("\n"))

    def until(self, text: str, timeout: float = LIMIT_S) -> list[str]:
        """The lines up to the first one containing ``text``; fails after ``timeout``."""
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                lines.append(self._lines.get(timeout=left))
            except queue.Empty:
                break
            if text in lines[-1]:
                return lines
        pytest.fail(f"no line with {text!r} within {timeout} s; got {lines}")


def test_an_embedded_broker_starts_before_the_bridge_which_speaks_its_protocol(
    tmp_path: Path,
) -> None:
    settings = Settings(node="n", data_dir=tmp_path).with_overrides(
        {"mqtt.broker": "embedded", "mqtt.kinds": {"echo": "tests.interfaces.cluster_kinds:Echo"}}
    )
    plan = plan_service(settings)
    broker, bridge = plan.children[:2]
    assert (broker.name, bridge.name) == ("mqtt-broker", BRIDGE_NAME)
    assert broker.kwargs == {"host": "127.0.0.1", "port": 1883, "workdir": tmp_path / "broker"}
    assert bridge.kwargs["config"].protocol == "3.1.1"  # amqtt does not answer MQTT 5
    from tests.interfaces.cluster_kinds import Echo

    assert bridge.kwargs["kinds"] == {"echo": Echo}
    assert plan.mqtt.startswith("embedded broker (amqtt) on 127.0.0.1:1883")


def test_a_kind_that_cannot_be_imported_stops_the_plan_saying_which(tmp_path: Path) -> None:
    settings = Settings(node="n").with_overrides(
        {"mqtt.enabled": True, "mqtt.kinds": {"echo": "no_such_module:Echo"}}
    )
    with pytest.raises(ConfigError, match=r"mqtt.kinds.echo: cannot import 'no_such_module:Echo'"):
        plan_service(settings)

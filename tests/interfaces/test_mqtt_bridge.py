"""MQTTBridge in a real actor system against a real broker, watched by an independent client.

`Wire` is a plain paho client on its own network thread: what it sees is what crossed
the broker. Outages are the fixture broker stopping and starting; where a test must
choose when the bridge gets back in, the bridge connects through a `Gate`, a TCP relay
the test closes and opens.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import paho.mqtt.client as paho
import pytest
import trio

from tests.interfaces.conftest import BrokerProcess, broker_protocol
from wactorz.agents.monitor_agent import MonitorActor
from wactorz.config import MonitorConfig, MQTTConfig
from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem
from wactorz.core.tools import tool
from wactorz.interfaces.mqtt import BRIDGE_NAME, Delivery, MQTTBridge, delivery_for

LIMIT_S = 10.0
"""Upper bound on each wait, so that a hang fails instead of stalling the suite."""


class Seen(NamedTuple):
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Wire:
    """An independent paho client with its own network thread."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"wire-{secrets.token_hex(4)}"
        )
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._client.on_message = self._on_message

    def _on_message(self, _client: object, _userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self._seen.append(Seen(message.topic, bytes(message.payload), bool(message.retain)))

    def _open(self) -> None:
        connected = threading.Event()
        self._client.on_connect = lambda *_: connected.set()
        self._client.connect(*self._address, keepalive=30)
        self._client.loop_start()
        if not connected.wait(5):
            raise TimeoutError(f"the wire client could not connect to {self._address}")

    def _close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _subscribe(self, topic_filter: str) -> None:
        acked = threading.Event()
        self._client.on_subscribe = lambda *_: acked.set()
        self._client.subscribe(topic_filter, 1)
        if not acked.wait(5):
            raise TimeoutError(f"no SUBACK for {topic_filter!r}")

    async def subscribe(self, topic_filter: str) -> None:
        await trio.to_thread.run_sync(self._subscribe, topic_filter)

    async def publish(self, topic: str, payload: bytes | str | dict[str, Any]) -> None:
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        info = self._client.publish(topic, data, qos=1)
        await trio.to_thread.run_sync(info.wait_for_publish, 5)

    def seen(self, topic: str | None = None) -> list[Seen]:
        with self._lock:
            return [m for m in self._seen if topic is None or m.topic == topic]

    async def wait_for(self, topic: str, count: int = 1, what: str = "") -> list[Seen]:
        await eventually(lambda: len(self.seen(topic)) >= count, what or f"{count} on {topic}")
        return self.seen(topic)


@asynccontextmanager
async def wire(broker: BrokerProcess, *filters: str) -> AsyncIterator[Wire]:
    client = Wire(broker.host, broker.port)
    await trio.to_thread.run_sync(client._open)
    try:
        for topic_filter in filters:
            await client.subscribe(topic_filter)
        yield client
    finally:
        await trio.to_thread.run_sync(client._close)


async def eventually(condition: Callable[[], bool], what: str, timeout: float = LIMIT_S) -> None:
    """Poll ``condition``: what the wire client sees arrives on its own thread."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"still waiting after {timeout} s for {what}")


class Gate:
    """A TCP relay in front of the broker: `close` cuts what it relays and refuses
    new connections, as a failed network would; `open` lets them through again."""

    def __init__(self, broker: BrokerProcess) -> None:
        self._broker = broker
        self._open = True
        self._relays: set[trio.CancelScope] = set()
        self.port = 0

    def open(self) -> None:
        self._open = True

    def close(self) -> None:
        self._open = False
        for relay in self._relays:
            relay.cancel()

    async def serve(self, *, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self._relay, listeners, task_status=task_status)

    async def _relay(self, downstream: trio.SocketStream) -> None:
        async with downstream:
            if not self._open:
                return
            try:
                upstream = await trio.open_tcp_stream(self._broker.host, self._broker.port)
            except OSError:
                return
            with trio.CancelScope() as scope:
                self._relays.add(scope)
                async with upstream, trio.open_nursery() as nursery:
                    nursery.start_soon(_pump, downstream, upstream, nursery.cancel_scope)
                    nursery.start_soon(_pump, upstream, downstream, nursery.cancel_scope)
            self._relays.discard(scope)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        async for chunk in source:
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


class Echo(Actor):
    """Answers every message with it; crashes on ``{"crash": ...}``, naps on ``{"sleep": s}``."""

    capabilities = ("echo", "testing")

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.told: list[dict[str, Any]] = []

    async def _process(self, message: dict[str, Any]) -> object:
        if "crash" in message:
            raise RuntimeError("asked to crash")
        if "sleep" in message:
            await trio.sleep(message["sleep"])
        if self.envelope is not None and self.envelope.reply is None:
            self.told.append(message)
        return {"echo": message}

    @tool(
        "Echo the text in capitals.",
        input_schema={
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    )
    async def shout(self, text: str) -> dict[str, str]:
        return {"shouted": text.upper()}


SHOUT = {
    "name": "shout",
    "description": "Echo the text in capitals.",
    "input_schema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
        "additionalProperties": False,
    },
}


class Listener(Actor):
    """Collects what is published on the topics it subscribes to, with the topic."""

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, topic: str
    ) -> None:
        super().__init__(system, name=name)
        self.topic = topic
        self.heard: list[tuple[str | None, dict[str, Any]]] = []

    async def on_start(self) -> None:
        self.subscribe(self.topic)

    async def _process(self, message: dict[str, Any]) -> object:
        assert self.envelope is not None
        self.heard.append((self.envelope.topic, message))
        return None


def bridge_config(port: int, **changes: Any) -> MQTTConfig:
    settings: dict[str, Any] = {
        "enabled": True,
        "port": port,
        # "auto" would first wait out an MQTT 5 connect that amqtt never answers.
        "protocol": broker_protocol(),
        "topic_prefix": f"t{secrets.token_hex(3)}",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        "keepalive": 5,
        **changes,
    }
    return MQTTConfig(**settings)


@asynccontextmanager
async def bridged_system(
    config: MQTTConfig, node: str = "testnode", **options: Any
) -> AsyncIterator[tuple[ActorSystem, MQTTBridge]]:
    async with ActorSystem(node=node) as system:
        bridge = await system.spawn(MQTTBridge, config=config, **options)
        yield system, bridge


def request(message: object, **fields: Any) -> dict[str, Any]:
    return {"message": message, **fields}


# ---- delivery classes --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("agents/x/heartbeat", (Delivery.LATEST, False)),
        ("agents/x/metrics", (Delivery.LATEST, False)),
        ("agents/x/status", (Delivery.LATEST, False)),
        ("system/health", (Delivery.LATEST, False)),
        ("nodes/n/heartbeat", (Delivery.LATEST, False)),
        ("agents/x/manifest", (Delivery.LATEST, True)),
        ("agents/x/alert", (Delivery.QUEUED, False)),
        ("system/alert", (Delivery.QUEUED, False)),
        ("shared/anything", (Delivery.QUEUED, False)),
    ],
)
def test_the_last_topic_level_picks_the_delivery_class(
    topic: str, expected: tuple[Delivery, bool]
) -> None:
    assert delivery_for(topic) == expected


@pytest.mark.parametrize("bad", ["agents/#", "#", "+/x", "nodes/a", "system/alert", "a/#/b"])
def test_mirrored_filters_stay_out_of_the_bridges_own_topics(bad: str) -> None:
    with pytest.raises((ValueError, TypeError)):
        MQTTBridge(config=MQTTConfig(), mirror_topics=[bad])


# ---- outbound: the monitor's topics, manifests, node status --------------------------------


async def test_the_monitors_heartbeats_metrics_and_health_reach_the_broker(
    mqtt_broker: BrokerProcess,
) -> None:
    config = bridge_config(mqtt_broker.port)
    p = config.topic_prefix
    async with wire(mqtt_broker, f"{p}/#") as client, bridged_system(config) as (system, bridge):
        echo = await system.spawn(Echo, "echo")
        monitor = await system.spawn(MonitorActor, config=MonitorConfig(interval_s=0.1))
        with trio.fail_after(LIMIT_S):
            heartbeat = (await client.wait_for(f"{p}/agents/{echo.id}/heartbeat"))[0].json()
            metrics = (await client.wait_for(f"{p}/agents/{echo.id}/metrics"))[0].json()
            health = (await client.wait_for(f"{p}/system/health"))[0].json()
            node = (await client.wait_for(f"{p}/nodes/testnode/heartbeat"))[0].json()
            await client.wait_for(f"{p}/agents/{monitor.id}/heartbeat")
            await client.wait_for(f"{p}/agents/{bridge.id}/heartbeat")
        assert heartbeat.keys() == {"id", "name", "node", "time", "state", "incarnation"}
        assert (heartbeat["id"], heartbeat["name"], heartbeat["state"]) == (
            echo.id,
            "echo",
            "running",
        )
        assert {"queued", "capacity", "mailbox_ratio", "processed", "rate", "stalled_s"} <= set(
            metrics
        )
        assert {"node", "status", "actors", "process", "machine", "alerts"} <= set(health)
        assert health["node"] == "testnode"
        assert {"node", "pid", "version", "status", "actors"} <= set(node)
        assert bridge.bridge_statistics().forwarded >= 5
        assert bridge.bridge_statistics().errors == 0


async def test_a_late_subscriber_finds_retained_manifests_and_the_node_online(
    mqtt_broker: BrokerProcess,
) -> None:
    config = bridge_config(mqtt_broker.port)
    p = config.topic_prefix
    async with (
        wire(mqtt_broker, f"{p}/agents/+/manifest") as early,
        bridged_system(config) as (
            system,
            bridge,
        ),
    ):
        echo = await system.spawn(Echo, "echo")
        with trio.fail_after(LIMIT_S):
            await early.wait_for(f"{p}/agents/{echo.id}/manifest")
            async with wire(mqtt_broker, f"{p}/agents/+/manifest", f"{p}/nodes/+/status") as late:
                manifest = (await late.wait_for(f"{p}/agents/{echo.id}/manifest"))[0]
                online = (await late.wait_for(f"{p}/nodes/testnode/status"))[0]
                await late.wait_for(f"{p}/agents/{bridge.id}/manifest")
    assert manifest.retain and online.retain
    assert manifest.json() == {
        "id": echo.id,
        "name": "echo",
        "node": "testnode",
        "class": f"{Echo.__module__}.Echo",
        "description": 'Answers every message with it; crashes on ``{"crash": ...}``, '
        'naps on ``{"sleep": s}``.',
        "capabilities": ["echo", "testing"],
        "tools": [SHOUT],
        "inbox": f"{p}/agents/{echo.id}/inbox",
        "inbox_by_name": f"{p}/agents/by-name/echo/inbox",
        "time": manifest.json()["time"],
        "boot": bridge.boot,
    }
    assert online.json()["status"] == "online"
    assert online.json()["boot"] == bridge.boot


async def test_lifecycle_events_are_published_and_a_manifest_is_cleared_when_its_actor_goes(
    mqtt_broker: BrokerProcess,
) -> None:
    config = bridge_config(mqtt_broker.port)
    p = config.topic_prefix
    async with (
        wire(mqtt_broker, f"{p}/agents/+/status") as client,
        bridged_system(config) as (
            system,
            _,
        ),
    ):
        echo = await system.spawn(Echo, "echo")
        with trio.fail_after(LIMIT_S):
            await client.wait_for(f"{p}/agents/{echo.id}/status")
            await system.send("echo", {"crash": True})
            await client.wait_for(f"{p}/agents/{echo.id}/status", 2)
            async with wire(mqtt_broker, f"{p}/agents/+/manifest") as late:
                await trio.sleep(0.3)  # a retained manifest would arrive at once
                assert late.seen(f"{p}/agents/{echo.id}/manifest") == []
    started, crashed = (m.json() for m in client.seen(f"{p}/agents/{echo.id}/status"))
    assert (started["status"], started["name"], started["node"]) == ("started", "echo", "testnode")
    assert crashed["status"] == "crashed"
    assert crashed["error"] == "RuntimeError: asked to crash"


# ---- inbound: requests -----------------------------------------------------------------------


async def test_a_request_by_name_is_answered_on_reply_to_with_its_correlation_id(
    mqtt_broker: BrokerProcess,
) -> None:
    config = bridge_config(mqtt_broker.port)
    p = config.topic_prefix
    async with wire(mqtt_broker, f"{p}/replies/#") as client, bridged_system(config) as (system, _):
        echo = await system.spawn(Echo, "echo")
        with trio.fail_after(LIMIT_S):
            await client.publish(
                f"{p}/agents/by-name/echo/inbox",
                request({"hi": 1}, reply_to=f"{p}/replies/a", correlation_id="c-1"),
            )
            await client.publish(
                f"{p}/agents/{echo.id}/inbox",
                request({"hi": 2}, reply_to=f"{p}/replies/b", correlation_id=7),
            )
            by_name = (await client.wait_for(f"{p}/replies/a"))[0].json()
            by_id = (await client.wait_for(f"{p}/replies/b"))[0].json()
            await client.publish(f"{p}/agents/by-name/echo/inbox", request({"tell": True}))
            await eventually(lambda: echo.told == [{"tell": True}], "the tell")
    assert by_name == {"reply": {"echo": {"hi": 1}}, "correlation_id": "c-1"}
    assert by_id == {"reply": {"echo": {"hi": 2}}, "correlation_id": 7}


async def test_a_tool_listed_in_a_manifest_is_called_through_the_inbox(
    mqtt_broker: BrokerProcess,
) -> None:
    config = bridge_config(mqtt_broker.port)
    p = config.topic_prefix
    async with (
        wire(mqtt_broker, f"{p}/replies/#", f"{p}/agents/+/manifest") as client,
        bridged_system(config) as (system, _),
    ):
        echo = await system.spawn(Echo, "echo")
        with trio.fail_after(LIMIT_S):
            manifest = (await client.wait_for(f"{p}/agents/{echo.id}/manifest"))[0].json()
            (listed,) = manifest["tools"]
            inbox = f"{p}/agents/by-name/echo/inbox"
            call = {"tool": listed["name"], "input": {"text": "hi"}}
            await client.publish(inbox, request(call, reply_to=f"{p}/replies/ok"))
            bad = {"tool": listed["name"], "input": {"text": 3}}
            await client.publish(inbox, request(bad, reply_to=f"{p}/replies/bad"))
            ok = (await client.wait_for(f"{p}/replies/ok"))[0].json()
            refused = (await client.wait_for(f"{p}/replies/bad"))[0].json()
    assert ok["reply"] == {"shouted": "HI"}
    assert refused["code"] == "rejected"
    assert "input.text: 3 is not of type 'string'" in refused["error"]


BAD_REQUESTS = [
    (b"not json", "bad_request", "not valid JSON"),
    (b"[1, 2]", "bad_request", "is a JSON array"),
    (json.dumps({"message": [1]}).encode(), "bad_request", '"message" is a JSON array'),
    (json.dumps({"correlation_id": "x"}).encode(), "bad_request", '"message" is missing'),
    (json.dumps({"message": {}, "reply_to": "elsewhere/x"}).encode(), "bad_request", "under"),
    (json.dumps({"message": {}, "reply-to": "x"}).encode(), "bad_request", "unknown key"),
    (b"[" * 100_000, "too_large", "over mqtt.max_payload_bytes"),
]


async def test_malformed_requests_are_refused_and_the_bridge_keeps_working(
    mqtt_broker: BrokerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    config = bridge_config(mqtt_broker.port, ask_timeout_s=0.3)
    p = config.topic_prefix
    inbox = f"{p}/agents/by-name/echo/inbox"
    async with (
        wire(mqtt_broker, f"{p}/replies/#") as client,
        bridged_system(config) as (system, bridge),
    ):
        await system.spawn(Echo, "echo")
        await system.spawn(Echo, "crasher")
        await system.spawn(Echo, "sleeper")
        with trio.fail_after(LIMIT_S):
            for payload, _, _ in BAD_REQUESTS:
                await client.publish(inbox, payload)
            cases = {
                "unknown-name": (f"{p}/agents/by-name/nobody/inbox", {}, "not_found"),
                "unknown-id": (f"{p}/agents/nobody/inbox", {}, "not_found"),
                "crash": (f"{p}/agents/by-name/crasher/inbox", {"crash": True}, "crashed"),
                "slow": (f"{p}/agents/by-name/sleeper/inbox", {"sleep": 1.0}, "timeout"),
                "fields": (inbox, None, "bad_request"),
            }
            for cid, (topic, message, _) in cases.items():
                await client.publish(
                    topic, request(message, reply_to=f"{p}/replies/{cid}", correlation_id=cid)
                )
            for cid in cases:
                await client.wait_for(f"{p}/replies/{cid}")
            await client.publish(inbox, request({"still": "ok"}, reply_to=f"{p}/replies/ok"))
            ok = (await client.wait_for(f"{p}/replies/ok"))[0].json()
    assert ok == {"reply": {"echo": {"still": "ok"}}, "correlation_id": None}
    for cid, (_, _, code) in cases.items():
        (answer,) = client.seen(f"{p}/replies/{cid}")
        assert answer.json()["code"] == code, answer
        assert answer.json()["correlation_id"] == cid
        assert answer.json()["error"]
    refused = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for _, code, text in BAD_REQUESTS:
        assert any(f"({code})" in line and text in line for line in refused), text
    stats = bridge.bridge_statistics()
    assert stats.errors == len(BAD_REQUESTS) + len(cases)
    assert stats.requests == len(BAD_REQUESTS) + len(cases) + 1
    assert stats.replies == 1


async def test_a_slow_actor_does_not_hold_up_requests_to_the_others(
    mqtt_broker: BrokerProcess,
) -> None:
    config = bridge_config(mqtt_broker.port)
    p = config.topic_prefix
    async with wire(mqtt_broker, f"{p}/replies/#") as client, bridged_system(config) as (system, _):
        await system.spawn(Echo, "slow")
        await system.spawn(Echo, "fast")
        with trio.fail_after(LIMIT_S):
            await client.publish(
                f"{p}/agents/by-name/slow/inbox",
                request({"sleep": 1.0}, reply_to=f"{p}/replies/slow"),
            )
            await client.publish(
                f"{p}/agents/by-name/fast/inbox", request({"n": 1}, reply_to=f"{p}/replies/fast")
            )
            await client.wait_for(f"{p}/replies/fast")
            assert client.seen(f"{p}/replies/slow") == []
            await client.wait_for(f"{p}/replies/slow")


# ---- outages ---------------------------------------------------------------------------------


async def test_after_a_broker_restart_queued_alerts_arrive_in_order_and_heartbeats_resume(
    mqtt_broker: BrokerProcess,
) -> None:
    gate = Gate(mqtt_broker)
    async with trio.open_nursery() as nursery:
        await nursery.start(gate.serve)
        config = bridge_config(gate.port)
        p = config.topic_prefix
        # The closed gate accepts connections and drops them: give up on those quickly.
        async with bridged_system(config, connect_timeout_s=0.5) as (system, bridge):
            monitor = await system.spawn(MonitorActor, config=MonitorConfig(interval_s=0.1))
            with trio.fail_after(LIMIT_S):
                async with wire(mqtt_broker, f"{p}/#") as before:
                    await before.wait_for(f"{p}/agents/{monitor.id}/heartbeat")
                gate.close()
                await trio.to_thread.run_sync(mqtt_broker.stop)
                await eventually(lambda: not bridge.connection.connected, "the bridge to notice")
                for n in range(5):
                    await system.publish("system/alert", {"n": n})
                await trio.sleep(0.3)  # heartbeats pile up meanwhile, each topic keeps one
                await trio.to_thread.run_sync(mqtt_broker.start)
                async with wire(mqtt_broker, f"{p}/#") as after:
                    gate.open()
                    alerts = await after.wait_for(f"{p}/system/alert", 5)
                    await after.wait_for(f"{p}/agents/{monitor.id}/heartbeat", 3)
                    await after.wait_for(f"{p}/nodes/testnode/status")
        nursery.cancel_scope.cancel()
    assert [m.json() for m in alerts] == [{"n": n} for n in range(5)]
    stats = bridge.bridge_statistics().connection
    assert stats is not None and stats.connects >= 2 and stats.dropped_queued == 0
    assert after.seen(f"{p}/nodes/testnode/status")[-1].json()["status"] == "online"


async def test_the_broker_publishes_the_offline_will_when_the_connection_dies(
    mqtt_broker: BrokerProcess,
) -> None:
    gate = Gate(mqtt_broker)
    async with trio.open_nursery() as nursery:
        await nursery.start(gate.serve)
        config = bridge_config(gate.port)
        p = config.topic_prefix
        status = f"{p}/nodes/testnode/status"
        async with wire(mqtt_broker, status) as client, bridged_system(config):
            with trio.fail_after(LIMIT_S):
                await client.wait_for(status)
                gate.close()
                await client.wait_for(status, 2)
                gate.open()
                await client.wait_for(status, 3)
        nursery.cancel_scope.cancel()
    online, will, again = (m.json() for m in client.seen(status)[:3])
    assert (online["status"], will["status"], again["status"]) == ("online", "offline", "online")
    assert will["reason"] == "connection lost"


# ---- mirrored topics -------------------------------------------------------------------------


async def test_mirrored_topics_flow_both_ways_without_echoes(mqtt_broker: BrokerProcess) -> None:
    config = bridge_config(mqtt_broker.port)
    p = config.topic_prefix
    async with (
        wire(mqtt_broker, f"{p}/shared/#") as client,
        bridged_system(config) as (
            system,
            bridge,
        ),
    ):
        listener = await system.spawn(Listener, topic="shared/#")
        with trio.fail_after(LIMIT_S):
            await client.publish(f"{p}/shared/in", {"from": "broker"})
            await eventually(lambda: len(listener.heard) == 1, "the broker's message locally")
            await system.publish("shared/out", {"from": "local"})
            await client.wait_for(f"{p}/shared/out")
            await eventually(lambda: bridge.bridge_statistics().echoes_suppressed == 1, "echo")
            await trio.sleep(0.2)
    assert listener.heard == [("shared/in", {"from": "broker"}), ("shared/out", {"from": "local"})]
    assert [m.json() for m in client.seen(f"{p}/shared/out")] == [{"from": "local"}]
    # The broker's message came back from the bridge locally, but was not sent out again.
    assert [m.json() for m in client.seen(f"{p}/shared/in")] == [{"from": "broker"}]
    stats = bridge.bridge_statistics()
    assert (stats.mirrored_in, stats.forwarded) == (1, 1)


# ---- shutdown --------------------------------------------------------------------------------


async def test_stopping_says_offline_and_clears_the_manifests(mqtt_broker: BrokerProcess) -> None:
    config = bridge_config(mqtt_broker.port)
    p = config.topic_prefix
    async with wire(mqtt_broker, f"{p}/nodes/+/status", f"{p}/agents/+/manifest") as client:
        async with bridged_system(config) as (system, bridge):
            echo = await system.spawn(Echo, "echo")
            with trio.fail_after(LIMIT_S):
                await client.wait_for(f"{p}/agents/{echo.id}/manifest")
            stopping = trio.current_time()
        assert trio.current_time() - stopping < 3
        with trio.fail_after(LIMIT_S):
            await client.wait_for(f"{p}/agents/{echo.id}/manifest", 2)
            await client.wait_for(f"{p}/nodes/testnode/status", 2)
        async with wire(mqtt_broker, f"{p}/#") as late:
            await trio.sleep(0.3)
    assert client.seen(f"{p}/agents/{echo.id}/manifest")[-1].payload == b""
    assert client.seen(f"{p}/agents/{bridge.id}/manifest")[-1].payload == b""
    offline = client.seen(f"{p}/nodes/testnode/status")[-1].json()
    assert (offline["status"], offline["reason"]) == ("offline", "stopped")
    # Only the offline status is left retained (amqtt may replay it twice).
    assert {m.topic for m in late.seen()} == {f"{p}/nodes/testnode/status"}
    assert all(m.json()["status"] == "offline" for m in late.seen())


async def test_stopping_with_the_broker_down_does_not_hang(mqtt_broker: BrokerProcess) -> None:
    config = bridge_config(mqtt_broker.port)
    async with bridged_system(config) as (system, bridge):
        await system.spawn(Echo, "echo")
        await system.publish("system/alert", {"queued": True})
        await trio.to_thread.run_sync(mqtt_broker.stop)
        await eventually(lambda: not bridge.connection.connected, "the bridge to notice")
        stopping = trio.current_time()
    assert trio.current_time() - stopping < 3


async def test_the_bridge_answers_its_statistics(mqtt_broker: BrokerProcess) -> None:
    async with bridged_system(bridge_config(mqtt_broker.port)) as (system, bridge):
        stats = await system.ask(BRIDGE_NAME, {"get": "statistics"})
    assert stats["connection"]["connected"] is True
    assert stats["errors"] == 0
    assert bridge.name == BRIDGE_NAME

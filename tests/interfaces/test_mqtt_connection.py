"""MQTTConnection against a real broker, checked by a client that shares none of its code.

What crosses the wire is observed by `WireClient`: a plain paho client on its own
network thread, connected straight to the broker. Outages come from restarting the
broker, and, where a test must decide exactly when the connection under test gets
back in, from a `Gate`: a TCP relay in front of the broker that the test cuts and
restores.
"""

from __future__ import annotations

import logging
import random
import secrets
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as paho
import psutil
import pytest
import trio
import trio_asyncio
from hypothesis import given
from hypothesis import strategies as st

from tests.interfaces.conftest import BrokerProcess
from wactorz.config._errors import InvalidField
from wactorz.interfaces.mqtt import Delivery, MQTTConnection, MQTTMessage
from wactorz.interfaces.mqtt.connection import _Outbox, _Outgoing, _reconnect_delay

LIMIT_S = 15.0
"""Upper bound on any one test, so that a hang fails instead of stalling the suite."""
SHUTDOWN_LIMIT_S = 3.0


class Seen(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool


class WireClient:
    """An independent paho client, with its own network thread, connected to the broker."""

    def __init__(self, broker: BrokerProcess) -> None:
        self._broker = broker
        self._client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"wire-{secrets.token_hex(4)}"
        )
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._acked: set[int] = set()
        self._ack = threading.Condition(self._lock)
        self._connected = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe

    def _on_connect(self, *_: object) -> None:
        self._connected.set()

    def _on_message(self, _client: object, _userdata: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self._seen.append(
                Seen(message.topic, bytes(message.payload), message.qos, bool(message.retain))
            )

    def _on_subscribe(self, _client: object, _userdata: object, mid: int, *_: object) -> None:
        with self._ack:
            self._acked.add(mid)
            self._ack.notify_all()

    def _open(self) -> None:
        self._client.connect(self._broker.host, self._broker.port, keepalive=30)
        self._client.loop_start()
        if not self._connected.wait(5):
            raise TimeoutError(f"wire client could not connect to {self._broker!r}")

    def _close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _subscribe(self, topic_filter: str, qos: int) -> None:
        result, mid = self._client.subscribe(topic_filter, qos)
        assert result == paho.MQTT_ERR_SUCCESS
        with self._ack:
            if not self._ack.wait_for(lambda: mid in self._acked, timeout=5):
                raise TimeoutError(f"no SUBACK for {topic_filter!r}")

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self._client.publish(topic, payload, qos=qos, retain=retain).wait_for_publish(5)

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        """Return once the broker has acknowledged the subscription."""
        await trio.to_thread.run_sync(self._subscribe, topic_filter, qos)

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Return once the message is sent (QoS 1: acknowledged by the broker)."""
        await trio.to_thread.run_sync(self._publish, topic, payload, qos, retain)

    def seen(self, prefix: str = "") -> list[Seen]:
        with self._lock:
            return [m for m in self._seen if m.topic.startswith(prefix)]


@asynccontextmanager
async def wire_client(broker: BrokerProcess) -> AsyncIterator[WireClient]:
    client = WireClient(broker)
    await trio.to_thread.run_sync(client._open)
    try:
        yield client
    finally:
        await trio.to_thread.run_sync(client._close)


class Gate:
    """A TCP relay to the broker: `cut` drops every relayed connection and refuses new
    ones, as a failed network would; `restore` lets connections through again."""

    def __init__(self, nursery: trio.Nursery, broker: BrokerProcess) -> None:
        self._nursery = nursery
        self._broker = broker
        self._serving: trio.CancelScope | None = None
        self.port = 0

    async def restore(self) -> None:
        assert self._serving is None, "the gate is already open"
        self._serving = await self._nursery.start(self._serve)

    def cut(self) -> None:
        assert self._serving is not None, "the gate is already cut"
        self._serving.cancel()
        self._serving = None

    async def _serve(self, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            async with trio.open_nursery() as nursery:
                await nursery.start(trio.serve_listeners, self._relay, listeners)
                task_status.started(scope)

    async def _relay(self, downstream: trio.SocketStream) -> None:
        async with downstream:
            try:
                upstream = await trio.open_tcp_stream(self._broker.host, self._broker.port)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_pump, downstream, upstream, nursery.cancel_scope)
                nursery.start_soon(_pump, upstream, downstream, nursery.cancel_scope)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream, done: trio.CancelScope) -> None:
    try:
        async for chunk in source:
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    done.cancel()


@asynccontextmanager
async def open_gate(broker: BrokerProcess) -> AsyncIterator[Gate]:
    async with trio.open_nursery() as nursery:
        gate = Gate(nursery, broker)
        await gate.restore()
        yield gate
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running(conn: MQTTConnection) -> AsyncIterator[trio.Nursery]:
    """Run ``conn`` for the duration of the block; check that it then stops promptly."""
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        try:
            yield nursery
        finally:
            nursery.cancel_scope.cancel()
            stopping_since = trio.current_time()
    assert trio.current_time() - stopping_since < SHUTDOWN_LIMIT_S


async def eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll ``condition``: much of what tests wait for happens on the wire client's thread."""
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"still waiting after {timeout} s for {what}")


def connection_to(broker: BrokerProcess, **options: object) -> MQTTConnection:
    settings: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
        # "auto" would first wait out an MQTT 5 connect that amqtt never answers.
        "protocol": broker.protocol,
    }
    settings.update(options)
    return MQTTConnection(**settings)  # type: ignore[arg-type]


async def test_published_messages_arrive_with_their_topic_payload_and_qos(
    mqtt_broker: BrokerProcess,
) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with wire_client(mqtt_broker) as wire, running(conn):
            # One filter per QoS: amqtt delivers at the subscription's QoS, not at the
            # lower of the two as mosquitto (and the spec) does.
            await wire.subscribe("out/bytes", qos=1)
            await wire.subscribe("out/text", qos=0)
            await conn.wait_connected()
            conn.publish("out/bytes", b"\x00\xff binary", qos=1)
            conn.publish("out/text", "héllo")
            await eventually(lambda: len(wire.seen()) == 2, "both messages")
        assert wire.seen() == [
            Seen("out/bytes", b"\x00\xff binary", qos=1, retain=False),
            Seen("out/text", "héllo".encode(), qos=0, retain=False),
        ]
        assert conn.statistics().published == 2


async def test_retained_message_is_replayed_to_a_later_subscriber(
    mqtt_broker: BrokerProcess,
) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with running(conn):
            await conn.wait_connected()
            conn.publish("out/state", b"on", qos=1, retain=True)
            conn.publish("out/event", b"fleeting", qos=1)
            await eventually(lambda: conn.statistics().published == 2, "both published")
        async with wire_client(mqtt_broker) as wire:
            await wire.subscribe("out/#")
            await eventually(lambda: len(wire.seen()) >= 1, "the retained message")
            await wire.publish("out/sentinel", b"")
            await eventually(lambda: len(wire.seen("out/sentinel")) == 1, "the sentinel")
        assert wire.seen() == [
            Seen("out/state", b"on", qos=1, retain=True),
            Seen("out/sentinel", b"", qos=1, retain=False),
        ]


async def test_subscription_receives_messages_from_another_client(
    mqtt_broker: BrokerProcess,
) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with running(conn), wire_client(mqtt_broker) as wire, conn.messages() as stream:
            await conn.subscribe("in/x", qos=1)
            await wire.publish("in/other", b"not for us")
            await wire.publish("in/x", b"hello", qos=1)
            assert await stream.receive() == MQTTMessage("in/x", b"hello", qos=1, retain=False)
            assert conn.statistics().received == 1


async def test_plus_and_hash_filters_select_topics_on_the_broker(
    mqtt_broker: BrokerProcess,
) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with running(conn), wire_client(mqtt_broker) as wire, conn.messages() as stream:
            await conn.subscribe("plus/+/temp")
            await conn.subscribe("hash/#")
            for topic in [
                "plus/kitchen/temp",  # yes
                "plus/kitchen/oven/temp",  # no: + is exactly one level
                "plus/temp",  # no
                "hash",  # yes: # also matches the parent level
                "hash/a/b/c",  # yes
                "hashish/a",  # no
                "hash/end",  # yes, and marks the end
            ]:
                await wire.publish(topic, topic.encode())
            received = []
            async for message in stream:
                received.append(message.topic)
                if message.topic == "hash/end":
                    break
        assert received == ["plus/kitchen/temp", "hash", "hash/a/b/c", "hash/end"]


async def test_unsubscribed_filter_stops_delivering(mqtt_broker: BrokerProcess) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with running(conn), wire_client(mqtt_broker) as wire, conn.messages() as stream:
            await conn.subscribe("gone/#")
            await conn.subscribe("kept/#")
            await conn.unsubscribe("gone/#")
            await wire.publish("gone/1", b"")
            await wire.publish("kept/1", b"")
            assert (await stream.receive()).topic == "kept/1"
            assert conn.statistics().subscriptions == 1


async def test_broker_down_at_start_then_connects_when_it_comes_up(
    mqtt_broker: BrokerProcess,
) -> None:
    with trio.fail_after(LIMIT_S):
        mqtt_broker.stop()
        conn = connection_to(mqtt_broker)
        async with running(conn), conn.messages() as stream:
            assert not conn.connected
            assert conn.statistics().failed_connects >= 1
            await conn.subscribe("late/#")  # remembered while disconnected
            conn.publish("late/hello", b"kept until connected")
            await trio.to_thread.run_sync(mqtt_broker.start)
            await conn.wait_connected()
            # Our own message comes back through the subscription made before connecting.
            assert await stream.receive() == MQTTMessage("late/hello", b"kept until connected")
            await eventually(lambda: conn.statistics().published == 1, "the publish to complete")
            stats = conn.statistics()
        assert (stats.connects, stats.disconnects) == (1, 0)


async def test_broker_restart_reconnects_and_resubscribes(mqtt_broker: BrokerProcess) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with running(conn), conn.messages() as stream:
            await conn.subscribe("in/#", qos=1)
            # Twice: each reconnection uses a fresh client, so no MqttReentrantError.
            for restart in (1, 2):
                await trio.to_thread.run_sync(mqtt_broker.restart)
                await eventually(
                    lambda restart=restart: conn.statistics().connects == restart + 1,
                    f"reconnection after restart {restart}",
                )
                async with wire_client(mqtt_broker) as wire:
                    await wire.publish(f"in/after-{restart}", b"", qos=1)
                assert (await stream.receive()).topic == f"in/after-{restart}"
        stats = conn.statistics()
        assert (stats.connects, stats.disconnects) == (3, 2)


async def test_outage_keeps_queued_messages_in_order_and_only_the_newest_latest(
    mqtt_broker: BrokerProcess,
) -> None:
    with trio.fail_after(LIMIT_S):
        async with open_gate(mqtt_broker) as gate:
            conn = connection_to(mqtt_broker, port=gate.port, buffer_size=5)
            async with running(conn):
                await conn.wait_connected()
                gate.cut()
                await eventually(lambda: not conn.connected, "the connection to drop")
                for n in range(8):
                    conn.publish("out/queued", f"q{n}", kind=Delivery.QUEUED)
                for n in range(10):
                    conn.publish("out/latest/a", f"a{n}", kind=Delivery.LATEST)
                for n in range(3):
                    conn.publish("out/latest/b", f"b{n}", kind=Delivery.LATEST)
                stats = conn.statistics()
                assert (stats.queued_now, stats.dropped_queued) == (5, 3)
                assert (stats.latest_now, stats.dropped_latest) == (2, 9 + 2)

                # A real broker restart too; the gate keeps the connection out until
                # the observer is subscribed, so that nothing is sent before it listens.
                await trio.to_thread.run_sync(mqtt_broker.restart)
                async with wire_client(mqtt_broker) as wire:
                    await wire.subscribe("out/#")
                    await gate.restore()
                    # The backlog first: a message published before it drains would
                    # still compete with it for the five places.
                    await eventually(lambda: conn.statistics().published == 7, "the backlog")
                    conn.publish("out/end", b"")
                    await eventually(lambda: len(wire.seen("out/end")) == 1, "the outbox")
                stats = conn.statistics()
        queued = [m.payload for m in wire.seen("out/queued")]
        latest = [(m.topic, m.payload) for m in wire.seen("out/latest")]
        assert queued == [b"q3", b"q4", b"q5", b"q6", b"q7"]  # the oldest three dropped
        assert latest == [("out/latest/a", b"a9"), ("out/latest/b", b"b2")]
        assert (stats.queued_now, stats.latest_now, stats.published) == (0, 0, 8)


async def test_burst_published_while_connected_arrives_complete_and_in_order(
    mqtt_broker: BrokerProcess,
) -> None:
    count = 2000
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker, buffer_size=count)
        async with wire_client(mqtt_broker) as wire, running(conn):
            await wire.subscribe("burst/#", qos=0)
            await conn.wait_connected()
            for n in range(count):
                conn.publish("burst/n", str(n))
            await eventually(lambda: len(wire.seen()) == count, f"{count} messages", 10)
        assert [int(m.payload) for m in wire.seen()] == list(range(count))
        assert conn.statistics().dropped_queued == 0


async def test_dropped_connection_makes_the_broker_publish_the_will(
    mqtt_broker: BrokerProcess,
) -> None:
    # The control for the next test: the will is how the broker reports an unclean end.
    with trio.fail_after(LIMIT_S):
        async with open_gate(mqtt_broker) as gate, wire_client(mqtt_broker) as wire:
            await wire.subscribe("wills/#")
            will = MQTTMessage("wills/conn", b"gone", qos=1)
            conn = connection_to(mqtt_broker, port=gate.port, will=will)
            async with running(conn):
                await conn.wait_connected()
                gate.cut()
                await eventually(lambda: len(wire.seen()) == 1, "the will")
        assert wire.seen() == [Seen("wills/conn", b"gone", qos=1, retain=False)]


async def test_cancellation_disconnects_cleanly_so_the_broker_keeps_the_will(
    mqtt_broker: BrokerProcess,
) -> None:
    with trio.fail_after(LIMIT_S):
        async with wire_client(mqtt_broker) as wire:
            await wire.subscribe("wills/#")
            will = MQTTMessage("wills/conn", b"gone", qos=1)
            conn = connection_to(mqtt_broker, will=will)
            async with running(conn):  # checks that stopping takes under SHUTDOWN_LIMIT_S
                await conn.wait_connected()
                conn.publish("wills/last-words", b"bye", qos=1)
                await eventually(lambda: conn.statistics().published == 1, "the last message")
            assert not conn.connected
            await trio.sleep(0.2)  # let the broker finish with the closed connection
            await wire.publish("wills/sentinel", b"")
            await eventually(lambda: len(wire.seen("wills/sentinel")) == 1, "the sentinel")
        assert [m.topic for m in wire.seen()] == ["wills/last-words", "wills/sentinel"]


async def test_cancellation_while_the_broker_is_away_is_prompt(mqtt_broker: BrokerProcess) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker, reconnect_min_s=5.0, reconnect_max_s=5.0)
        async with running(conn):
            await conn.wait_connected()
            await trio.to_thread.run_sync(mqtt_broker.stop)
            await eventually(lambda: not conn.connected, "the connection to drop")
            conn.publish("out/stuck", b"waits in the outbox")
        assert conn.statistics().queued_now == 1


async def test_broker_that_never_answers_costs_neither_time_nor_sockets() -> None:
    # A listening socket that never accepts: TCP connects, the CONNACK never comes.
    with socket.socket() as silent, trio.fail_after(LIMIT_S):
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        conn = MQTTConnection(
            host="127.0.0.1",
            port=silent.getsockname()[1],
            connect_timeout_s=0.3,
            reconnect_min_s=0.05,
            reconnect_max_s=0.05,
        )
        started_at = trio.current_time()
        async with running(conn):  # checks that stopping takes under SHUTDOWN_LIMIT_S
            assert trio.current_time() - started_at < 0.3 + 1.0
            assert conn.statistics().failed_connects == 1
            await eventually(lambda: conn.statistics().failed_connects >= 3, "more attempts")
            assert not conn.connected
        assert _sockets_to(port) == [], "a timed-out attempt left its socket open"


def _sockets_to(port: int) -> list[object]:
    """This process's TCP sockets connected to ``port`` (counting only ours, not the fds
    other tests may open or close meanwhile)."""
    return [
        c for c in psutil.Process().net_connections(kind="tcp") if c.raddr and c.raddr.port == port
    ]


async def test_run_uses_an_enclosing_trio_asyncio_loop(mqtt_broker: BrokerProcess) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with trio_asyncio.open_loop(), running(conn), conn.messages() as stream:
            await conn.subscribe("echo")
            conn.publish("echo", b"round trip")
            assert (await stream.receive()).payload == b"round trip"


async def test_run_again_after_cancellation_sends_what_was_left(
    mqtt_broker: BrokerProcess,
) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with running(conn):
            await conn.wait_connected()
        conn.publish("out/between-runs", b"kept")
        async with wire_client(mqtt_broker) as wire:
            await wire.subscribe("out/#")
            async with running(conn):
                await eventually(lambda: len(wire.seen()) == 1, "the message kept between runs")
        assert conn.statistics().connects == 2


async def test_second_concurrent_run_is_refused(mqtt_broker: BrokerProcess) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with running(conn) as nursery:
            with pytest.raises(RuntimeError, match="already running"):
                await nursery.start(conn.run)
            await conn.wait_connected()


async def test_refused_connection_warns_once_per_outage_and_backs_off(
    mqtt_broker: BrokerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wactorz.interfaces.mqtt")
    address = f"{mqtt_broker.host}:{mqtt_broker.port}"

    def records(level: int) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "wactorz.interfaces.mqtt.connection" and r.levelno == level
        ]

    with trio.fail_after(LIMIT_S):
        mqtt_broker.stop()
        conn = connection_to(mqtt_broker, reconnect_min_s=0.05, reconnect_max_s=0.1)
        started = trio.current_time()
        async with running(conn):
            await eventually(lambda: conn.statistics().failed_connects >= 3, "three refusals")
            failed = conn.statistics().failed_connects
            # Backoff applies from the first failure: no more than one try per 50 ms.
            assert failed <= (trio.current_time() - started) / 0.05 + 1
            [warning] = records(logging.WARNING)
            assert address in warning
            assert "cannot connect" in warning
            assert len(records(logging.DEBUG)) == failed - 1

            await trio.to_thread.run_sync(mqtt_broker.start)
            await conn.wait_connected()
            failed = conn.statistics().failed_connects
            await trio.to_thread.run_sync(mqtt_broker.stop)
            await eventually(lambda: conn.statistics().disconnects == 1, "the connection to drop")
            await eventually(lambda: conn.statistics().failed_connects >= failed + 3, "retries")
            # One more warning, for losing the connection; the refusals after it are quiet.
            assert len(records(logging.WARNING)) == 2
            assert "connection lost" in records(logging.WARNING)[1]


async def test_slow_reader_misses_newer_messages_and_they_are_counted(
    mqtt_broker: BrokerProcess,
) -> None:
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with running(conn), wire_client(mqtt_broker) as wire:
            await conn.subscribe("in/#")
            async with conn.messages(max_buffer_size=2) as stream:
                for n in range(5):
                    await wire.publish(f"in/{n}", b"")
                await eventually(lambda: conn.statistics().received == 5, "five messages")
                assert conn.statistics().dropped_inbound == 3
                assert [stream.receive_nowait().topic for _ in range(2)] == ["in/0", "in/1"]
                with pytest.raises(trio.WouldBlock):
                    stream.receive_nowait()


async def test_invalid_topics_filters_and_settings_are_refused_at_the_call() -> None:
    conn = MQTTConnection(host="127.0.0.1")
    for topic in ["", "a/+", "a/#", "nul\x00"]:
        with pytest.raises(ValueError, match="topic"):
            conn.publish(topic, b"")
    with pytest.raises(ValueError, match="qos"):
        conn.publish("a", b"", qos=3)
    with pytest.raises(TypeError, match="payload"):
        conn.publish("a", 42)  # type: ignore[arg-type]
    for topic_filter in ["a/#/b", "a#", "a/b+", ""]:
        with pytest.raises(ValueError, match="filter"):
            await conn.subscribe(topic_filter)
    with pytest.raises(ValueError, match="reconnect_min_s"):
        MQTTConnection(reconnect_min_s=10, reconnect_max_s=1)
    with pytest.raises(ValueError, match="port"):
        MQTTConnection(port=0)
    with pytest.raises(ValueError, match="topic"):
        MQTTConnection(will=MQTTMessage("wills/#", b""))
    assert conn.statistics().queued_now == 0


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        ({"port": 0}, "port: 0 is not valid: expected an integer from 1 to 65535"),
        ({"keepalive": 1.5}, "keepalive: 1.5 is not valid: expected a whole number of seconds"),
        ({"qos": 3}, "qos: 3 is not valid: expected 0, 1 or 2"),
        ({"protocol": "4"}, "protocol: '4' is not valid: expected one of auto, 5, 3.1.1"),
        ({"connect_timeout_s": 0}, "connect_timeout_s: 0 is not valid: expected a number of s"),
        ({"max_packet_bytes": 10}, "max_packet_bytes: 10 is not valid: expected None, or a nu"),
        (
            {"client_id": "a\x00b"},
            "client_id: 'a\\x00b' is not valid: expected a string an MQTT broker accepts (it "
            "contains a NUL character (U+0000 at index 1))",
        ),
        (
            {"reconnect_min_s": 10, "reconnect_max_s": 1},
            "reconnect_max_s: 1 is not valid: expected a number of seconds no smaller than "
            "reconnect_min_s (10)",
        ),
    ],
)
def test_settings_are_checked_as_the_configuration_checks_them(
    settings: dict[str, object], error: str
) -> None:
    """One validator vocabulary: the connection says what a field accepts as config does."""
    with pytest.raises(InvalidField) as info:
        MQTTConnection(**settings)  # type: ignore[arg-type]
    assert str(info.value).startswith(error)


@given(
    failures=st.integers(min_value=1, max_value=10_000),
    low=st.floats(min_value=0.001, max_value=10),
    spread=st.floats(min_value=1, max_value=1000),
    seed=st.integers(),
)
def test_reconnect_delay_stays_between_min_and_max_and_grows_with_failures(
    failures: int, low: float, spread: float, seed: int
) -> None:
    high = low * spread
    delay = _reconnect_delay(failures, low, high, random.Random(seed))
    assert low <= delay <= high
    ceiling = min(high, low * 2 ** min(failures - 1, 64))
    assert ceiling / 2 <= delay <= ceiling or delay == low


async def test_a_lossless_stream_gets_every_qos1_message_however_slow_its_reader(
    mqtt_broker: BrokerProcess,
) -> None:
    """The connection stops acknowledging, so the broker holds messages back instead of
    either side dropping them; QoS 0 messages, without flow control, are still dropped."""
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker)
        async with running(conn), wire_client(mqtt_broker) as wire:
            await conn.subscribe("in/#", qos=1)
            async with (
                conn.messages(max_buffer_size=2, lossless=True) as stream,
                trio.open_nursery() as publishers,
            ):
                for n in range(60):
                    publishers.start_soon(wire.publish, f"in/{n:02}", b"x")
                got = []
                while len(got) < 60:
                    got.append((await stream.receive()).topic)
                    await trio.sleep(0.002)  # a slow reader
            stats = conn.statistics()
    assert sorted(got) == [f"in/{n:02}" for n in range(60)]
    assert stats.dropped_inbound == 0
    assert stats.disconnects == 0


def _outgoing(topic: str, delivery: Delivery = Delivery.QUEUED) -> _Outgoing:
    return _Outgoing(topic, b"", 1, False, delivery)


def test_while_connected_the_outbox_drops_nothing_queued_and_says_when_it_has_room() -> None:
    outbox = _Outbox(capacity=3, connected=True)
    for n in range(5):
        assert outbox.put(_outgoing(f"q/{n}")) == []
    assert not outbox.has_room
    assert [m.topic for m in outbox.take(4)] == ["q/0", "q/1", "q/2", "q/3"]
    assert outbox.has_room
    for n in range(5, 8):
        outbox.put(_outgoing(f"q/{n}"))
    dropped = outbox.set_connected(False)  # an outage keeps the newest `capacity`
    assert [m.topic for m in dropped] == ["q/4"]
    assert outbox.dropped_queued == 1
    assert outbox.has_room


def test_a_message_that_loses_the_connection_twice_alone_is_dropped_as_rejected() -> None:
    """A batch lost with its connection is resent one message at a time; the one that
    drops the connection again is the message the broker refuses, and goes."""
    outbox = _Outbox(capacity=100, connected=True)
    for n in range(4):
        outbox.put(_outgoing(f"q/{n}"))
    outbox.put(_outgoing("h/1", Delivery.LATEST))
    batch = outbox.take(10)
    assert len(batch) == 5
    assert outbox.give_back(batch) == []  # the connection dropped while it was sent
    assert outbox.suspects == 5
    sent = []
    while outbox.suspects:
        (message,) = outbox.take(10)  # alone
        if message.topic == "q/2":
            (rejected,) = outbox.give_back([message])  # lost again: the culprit
            assert rejected.topic == "q/2"
        else:
            sent.append(message.topic)
    assert sorted(sent) == ["h/1", "q/0", "q/1", "q/3"]
    assert outbox.dropped_rejected == 1
    assert len(outbox) == 0
    outbox.put(_outgoing("q/4"))
    outbox.put(_outgoing("q/5"))
    assert [m.topic for m in outbox.take(10)] == ["q/4", "q/5"]  # batches again


async def test_auto_protocol_speaks_mqtt5_where_it_can_and_3_1_1_where_it_must(
    mqtt_broker: BrokerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wactorz")
    with trio.fail_after(LIMIT_S + 10):
        conn = connection_to(mqtt_broker, protocol="auto", connect_timeout_s=2.0)
        async with running(conn), wire_client(mqtt_broker) as wire:
            await conn.wait_connected()
            await conn.subscribe("auto/#")
            async with conn.messages() as stream:
                await wire.publish("auto/1", b"x")
                assert (await stream.receive()).payload == b"x"
    assert conn._version is not None
    assert conn._version.name == ("V5" if mqtt_broker.protocol == "5" else "V311")
    fell_back = [r for r in caplog.records if "using MQTT 3.1.1" in r.getMessage()]
    assert len(fell_back) == (0 if mqtt_broker.protocol == "5" else 1)


async def test_over_mqtt5_the_broker_never_sends_a_packet_over_max_packet_bytes(
    mqtt_broker: BrokerProcess,
) -> None:
    """Over 3.1.1 (amqtt) there is no way to say so, and the large message is read whole."""
    with trio.fail_after(LIMIT_S):
        conn = connection_to(mqtt_broker, max_packet_bytes=1000)
        async with running(conn), wire_client(mqtt_broker) as wire:
            await conn.subscribe("big/#")
            async with conn.messages() as stream:
                await wire.publish("big/large", b"x" * 5000)
                await wire.publish("big/small", b"y")
                first = await stream.receive()
                if mqtt_broker.protocol == "5":
                    assert first.topic == "big/small"
                    assert conn.statistics().received == 1
                else:
                    assert first.topic == "big/large"
                    assert (await stream.receive()).topic == "big/small"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_a_message_over_the_brokers_packet_limit_is_dropped_not_resent_for_ever(
    tmp_path: Path, protocol: str
) -> None:
    """Over MQTT 5 the broker says its limit and the message is refused before it is sent;
    over 3.1.1 the broker drops the connection on it, and after the second time (the
    message sent alone) it is dropped as rejected: no reconnect loop, and what follows
    gets through."""
    if shutil.which("mosquitto") is None:
        pytest.skip("needs mosquitto's max_packet_size (amqtt has no packet limit)")
    broker = BrokerProcess("mosquitto", tmp_path, "max_packet_size 2000\n")
    broker.start()
    try:
        with trio.fail_after(LIMIT_S):
            conn = connection_to(broker, protocol=protocol)
            async with wire_client(broker) as wire, running(conn):
                await wire.subscribe("out/#")
                await conn.wait_connected()
                conn.publish("out/big", b"x" * 5000, qos=1)
                conn.publish("out/after", b"y", qos=1)
                await eventually(lambda: len(wire.seen("out/")) == 1, "the message after it")
                await trio.sleep(0.3)  # nothing else comes: the big one is not resent
                stats = conn.statistics()
        assert [m.topic for m in wire.seen("out/")] == ["out/after"]
        assert stats.dropped_rejected == 1
        assert stats.disconnects == (0 if protocol == "5" else 2)
        assert stats.queued_now == 0
    finally:
        broker.stop()

"""Two nodes through mosquitto: cross-node tell throughput and ask latency, against bare aiomqtt.

Each round starts a mosquitto of its own on a free loopback port (tuned as for the tests:
``set_tcp_nodelay``, no limit on queued messages) and two nodes in this process, ``a`` and
``b``, each an actor system with its MQTT bridge and connection, as ``wactorz run --mqtt``
runs them.

- ``tell``: an actor on ``a`` tells ``size`` messages to a counting actor on ``b``
  (``sink@b``); the figure is messages per second from the first send to the last arrival.
- ``ask``: a program on ``a`` asks an echo actor on ``b`` ``size`` times, one after another;
  the figures are the median and p99 round trip.

The baseline (``raw-await``) is the bare MQTT client the bridge is built on, aiomqtt under
trio-asyncio, doing the same work with the same payloads (the node requests' JSON) and the
same QoS 1: for ``tell`` a publisher bursting 100 publishes at a time (as the bridge's
connection does) to a subscriber that counts; for ``ask`` a requester that publishes and
waits for the answer a responder publishes back. Both run as one asyncio coroutine each,
wrapped once, the fastest way to drive aiomqtt from Trio. Everything shares one process
and one core: the ratios, not the absolute figures, are the point.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import aiomqtt
import trio
import trio_asyncio

from benchmarks.harness import Countdown, percentile
from wactorz.config import MQTTConfig
from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem
from wactorz.interfaces.mqtt import MQTTBridge

__all__ = ["ask_bare", "ask_nodes", "tell_bare", "tell_nodes"]

_HOST: Final = "127.0.0.1"
_BURST: Final = 100
_WAIT_S: Final = 20.0
_PAYLOAD_MESSAGE: Final = {"reading": 21.5, "unit": "C", "sensor": "kitchen-1"}
_NODELAY: Final = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((_HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def _mosquitto() -> Iterator[int]:
    """A mosquitto on a free loopback port, for one round."""
    program = shutil.which("mosquitto")
    if program is None:
        raise RuntimeError("the node benchmarks need mosquitto: apt-get install mosquitto")
    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "mosquitto.conf"
        config.write_text(
            f"listener {port} {_HOST}\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 0\nset_tcp_nodelay true\n"
        )
        process = subprocess.Popen(
            [program, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection((_HOST, port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("mosquitto did not start") from None
                    time.sleep(0.01)
            yield port
        finally:
            process.terminate()
            process.wait()


def _request_payload(n: int, op: str) -> bytes:
    """A node request as the bridge encodes it: what the bare client publishes too."""
    request = {
        "v": 1,
        "id": f"20261206T120000000.{n:06d}Z-msg",
        "node": "a",
        "op": op,
        "to": "sink",
        "message": {**_PAYLOAD_MESSAGE, "n": n},
        "from": "20261206T120000000.000000Z-source",
    }
    return json.dumps(request, separators=(",", ":")).encode()


class _Sink(Actor):
    mailbox_size = 8192

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, arrivals: Countdown
    ) -> None:
        super().__init__(system, name=name)
        self.arrivals = arrivals

    async def _process(self, message: dict[str, Any]) -> object:
        self.arrivals.hit()
        return message


class _Source(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        for n in range(message["count"]):
            await self.send("sink@b", {**_PAYLOAD_MESSAGE, "n": n})
        return None


def _config(port: int) -> MQTTConfig:
    return MQTTConfig(
        enabled=True, port=port, protocol="5", topic_prefix="bench", buffer_size=10_000
    )


async def _wait_until(condition: Any, what: str) -> None:
    with trio.fail_after(_WAIT_S):
        while not condition():
            await trio.sleep(0.01)


def _sees(system: ActorSystem, node: str, actor: str) -> bool:
    return any(
        info.name == node and info.status == "up" and any(a.name == actor for a in info.actors)
        for info in system.nodes()
    )


async def tell_nodes(size: int) -> dict[str, float]:
    """``size`` tells from an actor on node a to ``sink@b``, through mosquitto."""
    arrivals = Countdown(size)
    with _mosquitto() as port:
        async with ActorSystem(node="a") as a, ActorSystem(node="b") as b:
            await a.spawn(MQTTBridge, config=_config(port), kinds={})
            await b.spawn(MQTTBridge, config=_config(port), kinds={})
            await b.spawn(_Sink, "sink", arrivals=arrivals)
            source = await a.spawn(_Source, "source")
            await _wait_until(lambda: _sees(a, "b", "sink"), "a sees sink@b")
            start = time.perf_counter()
            await a.send(source.id, {"count": size})
            with trio.fail_after(_WAIT_S * 3):
                await arrivals.done.wait()
            elapsed = time.perf_counter() - start
    return {"msgs_per_s": size / elapsed}


async def ask_nodes(size: int) -> dict[str, float]:
    """``size`` sequential asks from node a to ``sink@b`` (which answers with the message)."""
    latencies = []
    with _mosquitto() as port:
        async with ActorSystem(node="a") as a, ActorSystem(node="b") as b:
            await a.spawn(MQTTBridge, config=_config(port), kinds={})
            await b.spawn(MQTTBridge, config=_config(port), kinds={})
            await b.spawn(_Sink, "sink", arrivals=Countdown(size))
            await _wait_until(lambda: _sees(a, "b", "sink"), "a sees sink@b")
            for n in range(20):  # warm-up: stand-ins made, first packets out of the way
                await a.ask("sink@b", {**_PAYLOAD_MESSAGE, "n": n})
            for n in range(size):
                sent = time.perf_counter()
                await a.ask("sink@b", {**_PAYLOAD_MESSAGE, "n": n})
                latencies.append(time.perf_counter() - sent)
    return {
        "median_us": percentile(latencies, 0.5) * 1e6,
        "p99_us": percentile(latencies, 0.99) * 1e6,
    }


# ---- the bare client ------------------------------------------------------------------------


def _client(port: int, name: str) -> aiomqtt.Client:
    client = aiomqtt.Client(
        _HOST,
        port,
        identifier=name,
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=_NODELAY,
    )
    client.pending_calls_threshold = 2 * _BURST  # bursts of 100 are the point, not a leak
    return client


async def _tell_bare_asyncio(port: int, size: int) -> float:
    async with _client(port, "bare-sink") as sink, _client(port, "bare-source") as source:
        await sink.subscribe("bare/inbox", qos=1)
        received = 0
        done = asyncio.Event()

        async def count() -> None:
            nonlocal received
            async for _ in sink.messages:
                received += 1
                if received == size:
                    done.set()
                    return

        counter = asyncio.ensure_future(count())
        payloads = [_request_payload(n, "tell") for n in range(size)]
        start = time.perf_counter()
        for first in range(0, size, _BURST):
            burst = payloads[first : first + _BURST]
            await asyncio.gather(*(source.publish("bare/inbox", p, qos=1) for p in burst))
        await asyncio.wait_for(done.wait(), _WAIT_S * 3)
        elapsed = time.perf_counter() - start
        await counter
        return elapsed


async def tell_bare(size: int) -> dict[str, float]:
    """``size`` QoS 1 publishes of the same payloads, bursts of 100, to a counting subscriber."""
    with _mosquitto() as port:
        async with trio_asyncio.open_loop():
            elapsed = await trio_asyncio.aio_as_trio(_tell_bare_asyncio)(port, size)
    return {"msgs_per_s": size / elapsed}


async def _ask_bare_asyncio(port: int, size: int) -> list[float]:
    async with _client(port, "bare-asker") as asker, _client(port, "bare-echo") as echo:
        await asker.subscribe("bare/replies", qos=1)
        await echo.subscribe("bare/inbox", qos=1)

        async def answer() -> None:
            async for message in echo.messages:
                request = json.loads(message.payload)  # type: ignore[arg-type]
                if request.get("op") == "stop":
                    return  # not cancelled: under trio-asyncio that can leave it stuck
                reply = {"v": 1, "id": request["id"], "reply": request["message"]}
                await echo.publish("bare/replies", json.dumps(reply).encode(), qos=1)

        answering = asyncio.ensure_future(answer())
        replies = asker.messages.__aiter__()
        latencies = []
        for n in range(20 + size):
            sent = time.perf_counter()
            await asker.publish("bare/inbox", _request_payload(n, "ask"), qos=1)
            await replies.__anext__()
            if n >= 20:
                latencies.append(time.perf_counter() - sent)
        await asker.publish("bare/inbox", json.dumps({"op": "stop"}).encode(), qos=1)
        await answering
        return latencies


async def ask_bare(size: int) -> dict[str, float]:
    """``size`` request/response round trips between two bare clients, QoS 1 both ways."""
    with _mosquitto() as port:
        async with trio_asyncio.open_loop():
            latencies = await trio_asyncio.aio_as_trio(_ask_bare_asyncio)(port, size)
    return {
        "median_us": percentile(latencies, 0.5) * 1e6,
        "p99_us": percentile(latencies, 0.99) * 1e6,
    }

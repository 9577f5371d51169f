"""The web front door's workloads: an ask round trip over the WebSocket, and delta fan-out.

``ask`` sends ``size`` asks one after another through the web interface (JSON frame,
checked, asked of an echo actor, answered as a ``reply``) from one trio-websocket client;
raw-await is a bare trio-websocket echo server on the same machine, the same client
timing each round trip. ``fan-out`` has `FAN_CLIENTS` clients subscribed to the tree and
times how long one change takes to reach all of them as a delta, ``size`` times; raw-await
is a bare trio-websocket server sending one message to that many clients. Clients and
server share one process and one core, as they would not in production: the ratios, not
the absolute figures, are the point.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import trio
from trio_websocket import (
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

from benchmarks.harness import percentile
from wactorz.config import WebConfig
from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem
from wactorz.interfaces.web import WebInterface, WebOptions

__all__ = ["FAN_CLIENTS", "ask_raw", "ask_web", "fan_out_raw", "fan_out_web"]

FAN_CLIENTS: Final = 100


class _Echo(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        return message


class _Toggle(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        return None


def _ask_figures(latencies: list[float], elapsed: float) -> dict[str, float]:
    return {
        "round_trips_per_s": len(latencies) / elapsed,
        "median_us": percentile(latencies, 0.5) * 1e6,
        "p99_us": percentile(latencies, 0.99) * 1e6,
    }


async def _start_web(system: ActorSystem, directory: str) -> WebInterface:
    return await system.spawn(
        WebInterface,
        config=WebConfig(port=0),
        options=WebOptions(graceful_s=0.1, tick_s=3600.0, queue_soft=4096),
        runtime_dir=Path(directory),
        docs_cache=Path(directory),
    )


def _ws_url(web: WebInterface) -> str:
    return web.url.replace("http://", "ws://") + "ws?" + web.login_url.partition("?")[2]


async def ask_web(size: int) -> dict[str, float]:
    """``size`` sequential asks to an echo actor through the web interface."""
    with tempfile.TemporaryDirectory() as directory:
        async with ActorSystem() as system:
            await system.spawn(_Echo, "echo")
            web = await _start_web(system, directory)
            async with open_websocket_url(_ws_url(web)) as ws:
                await ws.get_message()  # hello
                latencies = []
                start = time.perf_counter()
                for n in range(size):
                    sent = time.perf_counter()
                    await ws.send_message(
                        json.dumps({"type": "ask", "id": n, "actor": "echo", "message": {"n": n}})
                    )
                    await ws.get_message()
                    latencies.append(time.perf_counter() - sent)
                elapsed = time.perf_counter() - start
            await web.stop()
    return _ask_figures(latencies, elapsed)


async def _echo_handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    while True:
        await ws.send_message(await ws.get_message())


async def ask_raw(size: int) -> dict[str, float]:
    """``size`` sequential round trips to a bare trio-websocket echo server."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, _echo_handler, "127.0.0.1", 0, None)
        port = server.port
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            latencies = []
            start = time.perf_counter()
            for n in range(size):
                sent = time.perf_counter()
                await ws.send_message(
                    json.dumps({"type": "ask", "id": n, "actor": "echo", "message": {"n": n}})
                )
                await ws.get_message()
                latencies.append(time.perf_counter() - sent)
            elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return _ask_figures(latencies, elapsed)


def _fan_figures(latencies: list[float]) -> dict[str, float]:
    return {
        "median_ms": percentile(latencies, 0.5) * 1e3,
        "deliveries_per_s": FAN_CLIENTS * len(latencies) / sum(latencies),
    }


async def _wait_for_delta(ws: WebSocketConnection, done: trio.MemorySendChannel[None]) -> None:
    while True:
        if json.loads(await ws.get_message())["type"] == "delta":
            await done.send(None)


async def fan_out_web(size: int) -> dict[str, float]:
    """One change, ``size`` times, reaching `FAN_CLIENTS` tree subscribers as a delta."""
    with tempfile.TemporaryDirectory() as directory:
        async with ActorSystem() as system:
            web = await _start_web(system, directory)
            send, receive = trio.open_memory_channel[None](FAN_CLIENTS)
            latencies = []
            async with trio.open_nursery() as nursery:
                for _ in range(FAN_CLIENTS):
                    ws = await nursery.start(_subscribed_client, _ws_url(web))
                    nursery.start_soon(_wait_for_delta, ws, send)
                for n in range(size):
                    start = time.perf_counter()
                    # A start (then a stop) is an event: a delta follows within the debounce.
                    actor = await system.spawn(_Toggle, f"toggle-{n}")
                    for _ in range(FAN_CLIENTS):
                        await receive.receive()
                    latencies.append(time.perf_counter() - start)
                    await actor.stop()
                    for _ in range(FAN_CLIENTS):
                        await receive.receive()
                nursery.cancel_scope.cancel()
            await web.stop()
    return _fan_figures(latencies)


async def _subscribed_client(
    url: str, *, task_status: trio.TaskStatus[WebSocketConnection]
) -> None:
    async with open_websocket_url(url) as ws:
        await ws.get_message()  # hello
        await ws.send_message(json.dumps({"type": "subscribe", "id": 1, "topics": ["tree"]}))
        await ws.get_message()  # reply
        await ws.get_message()  # snapshot
        task_status.started(ws)
        await trio.sleep_forever()


async def fan_out_raw(size: int) -> dict[str, float]:
    """A bare trio-websocket server sending one message to `FAN_CLIENTS` clients, ``size`` times."""
    clients: list[WebSocketConnection] = []

    async def handler(request: WebSocketRequest) -> None:
        clients.append(await request.accept())
        await trio.sleep_forever()

    send, receive = trio.open_memory_channel[None](FAN_CLIENTS)

    async def client(port: int, *, task_status: trio.TaskStatus[None]) -> None:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/") as ws:
            task_status.started()
            while True:
                await ws.get_message()
                await send.send(None)

    latencies = []
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        for _ in range(FAN_CLIENTS):
            await nursery.start(client, server.port)
        while len(clients) < FAN_CLIENTS:
            await trio.sleep(0.001)
        frame = json.dumps({"type": "delta", "seq": 1, "upsert": [{"id": "x" * 40}], "remove": []})
        for _ in range(size):
            start = time.perf_counter()
            for connection in clients:
                await connection.send_message(frame)
            for _ in range(FAN_CLIENTS):
                await receive.receive()
            latencies.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return _fan_figures(latencies)

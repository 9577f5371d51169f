"""The web front door's workloads: the ask round trip, fan-out to 500 clients, idle connections.

``ask`` sends ``size`` asks one after another through the web interface (JSON frame,
checked, asked of an echo actor, answered as a ``reply``) from one trio-websocket client.
Two baselines use the same client: raw-hypercorn is a minimal hypercorn + Starlette
WebSocket echo endpoint (the issue's baseline: the stack the front door is built on, with
nothing of ours), raw-await a bare trio-websocket echo server.

``fan-out`` has `FAN_CLIENTS` clients subscribed to the lifecycle events and times how
long one event (an actor started) takes to reach all of them, ``size`` times; the
baselines send one frame to as many clients of a bare hypercorn + Starlette server and of
a bare trio-websocket server.

``memory`` holds ``size`` idle connections open from a client process of their own and
weighs the server's process: RSS growth ÷ connections (the harness runs each round in a
fresh interpreter). The baselines hold as many idle connections to the bare servers.

Except for ``memory``, clients and server share one process and one core, as they would
not in production: the ratios, not the absolute figures, are the point.
"""

from __future__ import annotations

import gc
import json
import logging
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import psutil
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
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

__all__ = [
    "FAN_CLIENTS",
    "ask_hypercorn",
    "ask_raw",
    "ask_web",
    "fan_out_hypercorn",
    "fan_out_raw",
    "fan_out_web",
    "memory_hypercorn",
    "memory_raw",
    "memory_web",
]

FAN_CLIENTS: Final = 500
WARM_CONNECTIONS: Final = 20
"""Connections opened and kept before the memory workloads weigh the server: what the first
connections cost once (imports, caches, the event loop's tables) is not per connection."""

_LOGGER: Final = logging.getLogger("benchmarks.web.server")
_LOGGER.addHandler(logging.NullHandler())
_LOGGER.propagate = False


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


def _rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


# ---- the servers -------------------------------------------------------------------------------


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


def _listening_socket() -> socket.socket:
    """A loopback socket made as the web interface makes its own (TCP_NODELAY, backlog 1024)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


@asynccontextmanager
async def _hypercorn(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` with hypercorn's Trio worker, configured as the web interface configures
    it; yields the WebSocket URL of its ``/ws``."""
    sock = _listening_socket()
    port = sock.getsockname()[1]
    config = HypercornConfig()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = _LOGGER
    config.include_server_header = False
    config.graceful_timeout = 0.1
    config.websocket_max_message_size = 1024 * 1024
    config.websocket_ping_interval = 20.0
    config.read_timeout = 60
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: serve(
                app,  # type: ignore[arg-type]
                config,
                shutdown_trigger=shutdown.wait,
                task_status=task_status,
            )
        )
        try:
            yield f"ws://127.0.0.1:{port}/ws"
        finally:
            shutdown.set()


def _echo_app() -> Starlette:
    """The minimal hypercorn + Starlette WebSocket endpoint: every text message sent back."""

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[WebSocketRoute("/ws", echo)])


def _broadcast_app(clients: list[WebSocket]) -> Starlette:
    """Accepts WebSockets and keeps them in ``clients`` (for the caller to send to)."""

    async def hold(websocket: WebSocket) -> None:
        await websocket.accept()
        clients.append(websocket)
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            clients.remove(websocket)

    return Starlette(routes=[WebSocketRoute("/ws", hold)])


# ---- the ask round trip -------------------------------------------------------------------------


async def _round_trips(ws: WebSocketConnection, size: int) -> dict[str, float]:
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
    return _ask_figures(latencies, elapsed)


async def ask_web(size: int) -> dict[str, float]:
    """``size`` sequential asks to an echo actor through the web interface."""
    with tempfile.TemporaryDirectory() as directory:
        async with ActorSystem() as system:
            await system.spawn(_Echo, "echo")
            web = await _start_web(system, directory)
            async with open_websocket_url(_ws_url(web)) as ws:
                await ws.get_message()  # hello
                figures = await _round_trips(ws, size)
            await web.stop()
    return figures


async def ask_hypercorn(size: int) -> dict[str, float]:
    """``size`` sequential round trips to a bare hypercorn + Starlette echo endpoint."""
    async with _hypercorn(_echo_app()) as url, open_websocket_url(url) as ws:
        return await _round_trips(ws, size)


async def _echo_handler(request: WebSocketRequest) -> None:
    ws = await request.accept()
    while True:
        await ws.send_message(await ws.get_message())


async def ask_raw(size: int) -> dict[str, float]:
    """``size`` sequential round trips to a bare trio-websocket echo server."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, _echo_handler, "127.0.0.1", 0, None)
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/") as ws:
            figures = await _round_trips(ws, size)
        nursery.cancel_scope.cancel()
    return figures


# ---- fan-out of one event -----------------------------------------------------------------------


def _fan_figures(latencies: list[float]) -> dict[str, float]:
    return {
        "median_ms": percentile(latencies, 0.5) * 1e3,
        "deliveries_per_s": FAN_CLIENTS * len(latencies) / sum(latencies),
    }


async def _count_frames(
    url: str,
    kind: str | None,
    arrived: trio.MemorySendChannel[None],
    subscribe: list[str] | None = None,
    *,
    task_status: trio.TaskStatus[None],
) -> None:
    """One client: connect (and subscribe), then report every frame of type ``kind``."""
    async with open_websocket_url(url) as ws:
        if subscribe is not None:
            await ws.get_message()  # hello
            frame = {"type": "subscribe", "id": 1, "topics": subscribe}
            await ws.send_message(json.dumps(frame))
            await ws.get_message()  # its reply
        task_status.started()
        while True:
            message = await ws.get_message()
            if kind is None or json.loads(message)["type"] == kind:
                await arrived.send(None)


async def _all_arrived(arrived: trio.MemoryReceiveChannel[None]) -> None:
    for _ in range(FAN_CLIENTS):
        await arrived.receive()


async def fan_out_web(size: int) -> dict[str, float]:
    """One lifecycle event, ``size`` times, reaching `FAN_CLIENTS` subscribers as an ``event``."""
    with tempfile.TemporaryDirectory() as directory:
        async with ActorSystem() as system:
            web = await _start_web(system, directory)
            send, arrived = trio.open_memory_channel[None](FAN_CLIENTS)
            latencies = []
            async with trio.open_nursery() as nursery:
                for _ in range(FAN_CLIENTS):
                    await nursery.start(_count_frames, _ws_url(web), "event", send, ["events"])
                for n in range(size):
                    start = time.perf_counter()
                    actor = await system.spawn(_Toggle, f"toggle-{n}")  # a "started" event
                    await _all_arrived(arrived)
                    latencies.append(time.perf_counter() - start)
                    await actor.stop()
                    await _all_arrived(arrived)
                nursery.cancel_scope.cancel()
            await web.stop()
    return _fan_figures(latencies)


_EVENT: Final = json.dumps(
    {
        "type": "event",
        "event": {
            "kind": "started",
            "name": "toggle-0",
            "id": "x" * 40,
            "time": 0.0,
            "supervisor": None,
            "incarnation": 0,
            "reason": None,
            "error": None,
        },
    }
)


async def fan_out_hypercorn(size: int) -> dict[str, float]:
    """A bare hypercorn + Starlette server sending one frame to `FAN_CLIENTS` clients."""
    clients: list[WebSocket] = []
    send, arrived = trio.open_memory_channel[None](FAN_CLIENTS)
    latencies = []
    async with _hypercorn(_broadcast_app(clients)) as url, trio.open_nursery() as nursery:
        for _ in range(FAN_CLIENTS):
            await nursery.start(_count_frames, url, None, send)
        while len(clients) < FAN_CLIENTS:
            await trio.sleep(0.001)
        for _ in range(size):
            start = time.perf_counter()
            for client in clients:
                await client.send_text(_EVENT)
            await _all_arrived(arrived)
            latencies.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return _fan_figures(latencies)


async def fan_out_raw(size: int) -> dict[str, float]:
    """A bare trio-websocket server sending one frame to `FAN_CLIENTS` clients, ``size`` times."""
    clients: list[WebSocketConnection] = []

    async def handler(request: WebSocketRequest) -> None:
        clients.append(await request.accept())
        await trio.sleep_forever()

    send, arrived = trio.open_memory_channel[None](FAN_CLIENTS)
    latencies = []
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/"
        for _ in range(FAN_CLIENTS):
            await nursery.start(_count_frames, url, None, send)
        while len(clients) < FAN_CLIENTS:
            await trio.sleep(0.001)
        for _ in range(size):
            start = time.perf_counter()
            for connection in clients:
                await connection.send_message(_EVENT)
            await _all_arrived(arrived)
            latencies.append(time.perf_counter() - start)
        nursery.cancel_scope.cancel()
    return _fan_figures(latencies)


# ---- memory per idle connection ----------------------------------------------------------------


async def _weigh_connections(
    url: str, size: int, connected: Callable[[], int], *, hello: bool
) -> dict[str, float]:
    """RSS growth of this process ÷ ``size`` while a client process holds ``size`` idle
    connections to ``url`` (after `WARM_CONNECTIONS` it opened first); ``connected()`` says
    how many the server holds."""

    async def until(count: int) -> None:
        while connected() < count:
            await trio.sleep(0.01)

    command = [sys.executable, "-m", "benchmarks.web_clients", url, str(WARM_CONNECTIONS)]
    command += [str(size), *(["--hello"] if hello else [])]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    lines = _Lines(process.stdout)
    try:
        await lines.expect("warm")
        await until(WARM_CONNECTIONS)
        before = _rss()
        await process.stdin.send_all(b"go\n")
        await lines.expect("ready")
        await until(WARM_CONNECTIONS + size)
        await trio.sleep(0.2)  # let every connection's tasks settle into waiting
        grown = _rss() - before
    finally:
        await process.stdin.aclose()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    return {"bytes_per_connection": grown / size}


class _Lines:
    """Lines from a child's stdout, one at a time."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def expect(self, word: str) -> None:
        while b"\n" not in self.buffer:
            data = await self.stream.receive_some()
            if not data:
                raise RuntimeError(f"the client process ended before saying {word!r}")
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        if line.decode().strip() != word:
            raise RuntimeError(f"the client process said {line!r}, not {word!r}")


async def memory_web(size: int) -> dict[str, float]:
    """Idle connections to the web interface (each greeted with ``hello``, nothing subscribed)."""
    with tempfile.TemporaryDirectory() as directory:
        async with ActorSystem() as system:
            web = await _start_web(system, directory)
            hub = web.hub
            assert hub is not None
            figures = await _weigh_connections(
                _ws_url(web), size, lambda: len(hub.connections), hello=True
            )
            await web.stop()
    return figures


async def memory_hypercorn(size: int) -> dict[str, float]:
    """Idle connections to a bare hypercorn + Starlette WebSocket endpoint."""
    clients: list[WebSocket] = []
    async with _hypercorn(_broadcast_app(clients)) as url:
        return await _weigh_connections(url, size, lambda: len(clients), hello=False)


async def memory_raw(size: int) -> dict[str, float]:
    """Idle connections to a bare trio-websocket server."""
    clients: list[WebSocketConnection] = []

    async def handler(request: WebSocketRequest) -> None:
        clients.append(await request.accept())
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        url = f"ws://127.0.0.1:{server.port}/"
        figures = await _weigh_connections(url, size, lambda: len(clients), hello=False)
        nursery.cancel_scope.cancel()
    return figures

"""What the web interface's tests share: a real server on 127.0.0.1:0 and real clients.

`serving` starts an `ActorSystem` with a `WebInterface` on a free loopback port (its
runtime file and API-reference cache under the test's directory); `Client` is a
trio-websocket connection that speaks the JSON protocol; `http` is an httpx client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from wactorz import ActorSystem
from wactorz.config import WebConfig
from wactorz.interfaces.web import WebInterface, WebOptions

LIMIT_S = 10.0


@asynccontextmanager
async def serving(
    tmp_path: Path,
    *,
    token: str | None = None,
    system: ActorSystem | None = None,
    **options: Any,
) -> AsyncIterator[WebInterface]:
    """A web interface on 127.0.0.1:0 in a system of its own (or in ``system``).

    ``options`` are `WebOptions` fields; ``graceful_s`` is short, since hypercorn keeps
    each closed WebSocket's ping task until its next ping or the graceful deadline.
    """

    async def start(in_system: ActorSystem) -> WebInterface:
        return await in_system.spawn(
            WebInterface,
            config=WebConfig(port=0, token=token),
            options=WebOptions(**{"graceful_s": 0.2, **options}),
            runtime_dir=tmp_path / "runtime",
            docs_cache=tmp_path / "docs-cache",
        )

    if system is not None:
        yield await start(system)
        return
    async with ActorSystem(node="webtest") as own:
        yield await start(own)


def token_of(web: WebInterface) -> str:
    return web.login_url.partition("?token=")[2]


def ws_url(web: WebInterface, *, token: str | None = "", query: str = "") -> str:
    """The WebSocket URL of ``web``; with its token in the query unless ``token`` is None."""
    url = web.url.replace("http://", "ws://") + "ws"
    params = []
    if token is not None:
        params.append(f"token={token or token_of(web)}")
    if query:
        params.append(query)
    return url + ("?" + "&".join(params) if params else "")


def http(web: WebInterface, *, bearer: bool = False) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token_of(web)}"} if bearer else {}
    return httpx.AsyncClient(base_url=web.url, headers=headers, timeout=LIMIT_S)


class Client:
    """A protocol client over one WebSocket: send requests, read frames by type or id."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.hello: dict[str, Any] = {}
        self.seen: list[dict[str, Any]] = []
        self._ids = 0

    async def receive(self) -> dict[str, Any]:
        with trio.fail_after(LIMIT_S):
            frame = json.loads(await self.ws.get_message())
        self.seen.append(frame)
        return frame

    async def send(self, frame: dict[str, Any]) -> Any:
        if "id" not in frame:
            self._ids += 1
            frame = {**frame, "id": f"r{self._ids}"}
        await self.ws.send_message(json.dumps(frame))
        return frame["id"]

    async def next(self, kind: str, request_id: Any = None) -> dict[str, Any]:
        """The next frame of type ``kind`` (and ``id``, if given), skipping others."""
        while True:
            frame = await self.receive()
            if frame["type"] == kind and (request_id is None or frame.get("id") == request_id):
                return frame

    async def final(self, request_id: Any) -> dict[str, Any]:
        """The frame that ends request ``request_id`` (reply, stream_end or error)."""
        while True:
            frame = await self.receive()
            if frame.get("id") == request_id and frame["type"] in ("reply", "stream_end", "error"):
                return frame

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        return await self.final(await self.send(frame))


@asynccontextmanager
async def connect(
    web: WebInterface, *, query: str = "", message_queue_size: int = 64
) -> AsyncIterator[Client]:
    async with open_websocket_url(
        ws_url(web, query=query), message_queue_size=message_queue_size
    ) as ws:
        client = Client(ws)
        client.hello = await client.receive()
        assert client.hello["type"] == "hello"
        yield client

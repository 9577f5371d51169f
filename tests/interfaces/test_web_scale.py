"""500 WebSocket clients at once against a real service (a subprocess, as a user runs it)."""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.interfaces.web_support import BANNER_URL, ServiceProcess

pytestmark = pytest.mark.slow

CLIENTS = 500
TOKEN = "scale-test-token"
HEADERS = [("Authorization", f"Bearer {TOKEN}")]
BATCH = 50
"""Clients connecting at the same moment (all 500 at once would only measure the backlog)."""


@pytest.fixture
def enough_file_descriptors() -> Iterator[None]:
    """Both sides of 500 connections live in this process and the service's: raise the soft
    limit on open files (up to the hard one) for the test, and the service it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * CLIENTS
    if soft != resource.RLIM_INFINITY and soft < wanted:
        if hard != resource.RLIM_INFINITY and hard < wanted:
            pytest.skip(f"{CLIENTS} connections need {wanted} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Crowd:
    """What the clients saw: who got ``hello`` and who got the delta with the new actor."""

    def __init__(self) -> None:
        self.greeted = 0
        self.reached: set[int] = set()
        self.all_reached = trio.Event()


async def _receive(ws: WebSocketConnection) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.get_message())
    return frame


async def _client(
    url: str, index: int, crowd: Crowd, *, task_status: trio.TaskStatus[None]
) -> None:
    async with open_websocket_url(url, extra_headers=HEADERS) as ws:
        hello = await _receive(ws)
        assert hello["type"] == "hello", hello
        crowd.greeted += 1
        await ws.send_message(json.dumps({"type": "subscribe", "id": 1, "topics": ["tree"]}))
        while (await _receive(ws))["type"] != "snapshot":
            pass
        task_status.started()
        while True:
            frame = await _receive(ws)
            if frame["type"] == "delta" and any(
                node["name"] == "crowd-pleaser" for node in frame["upsert"]
            ):
                crowd.reached.add(index)
                if len(crowd.reached) == CLIENTS:
                    crowd.all_reached.set()


async def _one_more(url: str) -> tuple[float, dict[str, Any]]:
    """The 501st client: seconds from connecting to the answer of an ask, and the answer."""
    started = time.perf_counter()
    async with open_websocket_url(url, extra_headers=HEADERS) as ws:
        assert (await _receive(ws))["type"] == "hello"
        frame = {"type": "ask", "id": 1, "actor": "web", "message": {"get": "statistics"}}
        await ws.send_message(json.dumps(frame))
        answer = await _receive(ws)
    return time.perf_counter() - started, answer


@pytest.mark.usefixtures("enough_file_descriptors")
async def test_500_clients_are_greeted_all_get_a_delta_and_a_501st_is_served(
    tmp_path: Path,
) -> None:
    service = ServiceProcess(
        tmp_path,
        "tests.interfaces.dashboard_service",
        env={"WACTORZ_WEB__PORT": "0", "WACTORZ_WEB__TOKEN": TOKEN},
    )
    try:
        found = await trio.to_thread.run_sync(service.wait_for, BANNER_URL)
        url = found.group(1).replace("http://", "ws://") + "ws"
        crowd = Crowd()
        async with trio.open_nursery() as nursery:
            with trio.fail_after(120):
                for first in range(0, CLIENTS, BATCH):
                    async with trio.open_nursery() as batch:
                        for index in range(first, min(first + BATCH, CLIENTS)):
                            batch.start_soon(nursery.start, _client, url, index, crowd)
            assert crowd.greeted == CLIENTS

            seconds, answer = await _one_more(url)
            assert answer["type"] == "reply", answer
            assert answer["reply"]["connections"] == CLIENTS + 1
            assert answer["reply"]["tree_subscribers"] == CLIENTS
            print(f"a 501st client got hello and an answer in {seconds * 1000:.0f} ms")
            assert seconds < 10, f"the 501st client waited {seconds:.1f} s"

            started = time.perf_counter()
            async with open_websocket_url(url, extra_headers=HEADERS) as ws:
                await ws.get_message()
                spawn = {
                    "type": "ask",
                    "id": 1,
                    "actor": "main",
                    "message": {"spawn": "crowd-pleaser"},
                }
                await ws.send_message(json.dumps(spawn))
                assert (await _receive(ws))["type"] == "reply"
            with trio.fail_after(30):
                await crowd.all_reached.wait()
            took = time.perf_counter() - started
            print(f"the delta reached all {CLIENTS} in {took * 1000:.0f} ms")
            nursery.cancel_scope.cancel()
    finally:
        assert await trio.to_thread.run_sync(service.stop) == 0, "\n".join(service.lines)

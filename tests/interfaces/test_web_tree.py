"""The tree feed: a snapshot, then deltas numbered without gaps; work only while subscribed;
slow clients get a snapshot instead of deltas, or are let go, and never hold up the others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from tests.interfaces.web_support import Client, connect, serving
from wactorz import Actor, Supervisor


class Worker(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        if message.get("crash"):
            raise RuntimeError("told to crash")
        return None


class Busy(Actor):
    """Keeps itself busy: its counters change on every tick."""

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            await self.send(self.id, {"n": 1})
            await trio.sleep(0.001)

    async def _process(self, message: dict[str, Any]) -> object:
        return None


async def read_until_closed(client: Client) -> None:
    with trio.fail_after(10):
        while True:
            await client.ws.get_message()


class Tree:
    """A client's view of the tree, kept by applying snapshot and deltas as a client would."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self.seq = -1
        self.deltas: list[int] = []

    def apply(self, frame: dict[str, Any]) -> None:
        if frame["type"] == "snapshot":
            self.nodes = {node["id"]: node for node in frame["actors"]}
            self.seq = frame["seq"]
        elif frame["type"] == "delta":
            assert frame["seq"] == self.seq + 1, f"gap: {self.seq} then {frame['seq']}"
            for node in frame["upsert"]:
                self.nodes[node["id"]] = node
            for gone in frame["remove"]:
                self.nodes.pop(gone)
            self.seq = frame["seq"]
            self.deltas.append(frame["seq"])

    def by_name(self, name: str) -> dict[str, Any] | None:
        return next((n for n in self.nodes.values() if n["name"] == name), None)

    async def until(self, client: Client, check: Any) -> None:
        with trio.fail_after(10):
            while not check():
                frame = await client.receive()
                if frame["type"] in ("snapshot", "delta"):
                    self.apply(frame)


async def test_snapshot_then_gapless_deltas_follow_starts_crashes_and_restarts(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, tick_s=0.1) as web, connect(web) as client:
        system = web.system
        await client.request({"type": "subscribe", "topics": ["tree"]})
        tree = Tree()
        tree.apply(await client.next("snapshot"))
        assert tree.by_name("web") is not None

        supervisor = Supervisor(system, "one_for_one", 5, 10, name="crew")
        supervisor.add("worker", Worker)
        await supervisor.start()
        await tree.until(client, lambda: (tree.by_name("worker") or {}).get("state") == "running")
        worker = tree.by_name("worker")
        crew = tree.by_name("crew")
        assert worker is not None and crew is not None
        assert crew["kind"] == "supervisor" and crew["strategy"] == "one_for_one"
        assert worker["parent"] == crew["id"] and worker["restart"] == "permanent"
        assert worker["id"] in crew["children"]
        assert (worker["restarts"], worker["last_error"]) == (0, None)

        await system.send("worker", {"crash": True})
        await tree.until(client, lambda: (tree.by_name("worker") or {}).get("restarts") == 1)
        worker = tree.by_name("worker")
        assert worker is not None and worker["state"] == "running" and worker["crashes"] == 1
        assert worker["last_error"] == "RuntimeError: told to crash"

        await supervisor.stop()
        await tree.until(client, lambda: tree.by_name("crew") is None)
        assert tree.deltas == list(range(tree.deltas[0], tree.deltas[0] + len(tree.deltas)))


async def test_nothing_is_computed_while_nobody_subscribes(tmp_path: Path) -> None:
    async with serving(tmp_path, tick_s=0.01) as web:
        listeners = web.system.statistics().event_listeners
        async with connect(web) as client:
            await client.request({"type": "subscribe", "topics": ["shared/#"]})
            await trio.sleep(0.2)
            stats = web.web_statistics()
            assert stats is not None
            assert (stats.tracking, stats.ticks, stats.deltas, stats.snapshots) == (False, 0, 0, 0)
            assert web.system.statistics().event_listeners == listeners

            await client.request({"type": "subscribe", "topics": ["tree", "metrics"]})
            await client.next("snapshot")
            await client.next("metrics")
            stats = web.web_statistics()
            assert stats is not None and stats.tracking and stats.ticks > 0
            assert web.system.statistics().event_listeners == listeners + 1

            await client.request({"type": "unsubscribe", "topics": ["tree", "metrics"]})
            await trio.sleep(0.05)
            stopped = web.web_statistics()
            assert stopped is not None and not stopped.tracking
            await trio.sleep(0.2)
            later = web.web_statistics()
            assert later is not None and later.ticks == stopped.ticks
            assert web.system.statistics().event_listeners == listeners


async def test_metrics_frames_carry_rates_health_and_llm_usage(tmp_path: Path) -> None:
    async with serving(tmp_path, tick_s=0.05) as web, connect(web) as client:
        await web.system.publish(
            "agents/x-agent/metrics",
            {"name": "agent", "llm": {"input_tokens": 10, "output_tokens": 5, "cost_usd": 0.5}},
        )
        await web.system.publish("system/health", {"status": "warning", "node": "webtest"})
        await client.request({"type": "subscribe", "topics": ["metrics"]})
        await client.next("metrics")
        frame = await client.next("metrics")
        assert frame["messages_per_s"] is not None and frame["actors"] == 1
        assert frame["health"] == {"status": "warning", "node": "webtest"}
        assert frame["llm"] == {"tokens": {"input": 10, "output": 5}, "cost_usd": 0.5}


@pytest.mark.slow
async def test_a_client_that_stops_reading_gets_a_snapshot_later_and_never_stalls_others(
    tmp_path: Path,
) -> None:
    async with (
        serving(tmp_path, tick_s=0.01, queue_soft=8, send_buffer_bytes=4096) as web,
        trio.open_nursery() as nursery,
    ):
        for n in range(40):
            await web.system.spawn(Busy, f"busy-{n}")
        async with connect(web, message_queue_size=0) as slow, connect(web) as fast:
            await slow.request({"type": "subscribe", "topics": ["tree"]})
            await fast.request({"type": "subscribe", "topics": ["tree"]})
            fast_tree, slow_tree = Tree(), Tree()
            fast_tree.apply(await fast.next("snapshot"))
            slow_tree.apply(await slow.next("snapshot"))
            # The slow client reads nothing for 2 s; the fast one must see every delta promptly.
            with trio.move_on_after(2):
                while True:
                    with trio.fail_after(1):
                        frame = await fast.receive()
                    fast_tree.apply(frame)
            assert len(fast_tree.deltas) > 50
            connection = next(
                c for c in web.hub.connections.values() if c.id == slow.hello["connection"]
            )  # type: ignore[union-attr]
            assert connection.deltas_dropped > 0 and connection.queued <= 8 + 1
            # Now it reads: some deltas, then a snapshot that skips ahead, then deltas again.
            frames = [await slow.receive() for _ in range(200)]
            kinds = [f["type"] for f in frames]
            assert "snapshot" in kinds
            resync = frames[kinds.index("snapshot")]
            before = [f["seq"] for f in frames[: kinds.index("snapshot")] if f["type"] == "delta"]
            assert resync["seq"] > (before[-1] if before else slow_tree.seq) + 1
            slow_tree.apply(resync)
            for frame in frames[kinds.index("snapshot") + 1 :]:
                slow_tree.apply(frame)  # gapless again after the snapshot
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_a_client_behind_for_too_long_is_closed_with_1013_and_a_reason(
    tmp_path: Path,
) -> None:
    async with serving(
        tmp_path, tick_s=0.01, queue_soft=8, send_buffer_bytes=4096, stale_close_s=0.5
    ) as web:
        for n in range(40):
            await web.system.spawn(Busy, f"busy-{n}")
        async with connect(web, message_queue_size=0) as slow:
            await slow.request({"type": "subscribe", "topics": ["tree"]})
            await trio.sleep(2)
            with pytest.raises(ConnectionClosed) as closed:
                await read_until_closed(slow)
            assert closed.value.reason.code == 1013
            assert "too slow" in (closed.value.reason.reason or "")
        async with connect(web) as other:  # the server is fine
            assert (await other.request({"type": "subscribe", "topics": ["tree"]}))[
                "type"
            ] == "reply"

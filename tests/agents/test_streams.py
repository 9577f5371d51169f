"""Streams: parts arrive in order, coalesce behind a slow consumer, and always end."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from wactorz import Actor, ActorSystem, MessageRejected
from wactorz.agents.streams import StreamTarget, open_stream, stream_target


class Consumer(Actor):
    """Keeps every stream message; naps ``delay`` seconds on each, to play a slow reader."""

    mailbox_size = 2

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, delay: float = 0.0
    ) -> None:
        super().__init__(system, name=name)
        self.delay = delay
        self.got: list[dict[str, Any]] = []
        self.ended = trio.Event()

    async def _process(self, message: dict[str, Any]) -> object:
        if self.delay:
            await trio.sleep(self.delay)
        self.got.append(message)
        if message.get("end"):
            self.ended.set()
        return None

    def text(self, kind: str) -> str:
        return "".join(
            part["text"] for m in self.got for part in m["parts"] if part["kind"] == kind
        )


class Producer(Actor):
    """Runs a stream from inside an actor, as the agents do."""

    async def _process(self, message: dict[str, Any]) -> object:
        return None


async def test_parts_arrive_in_order_then_the_ending_with_the_result() -> None:
    async with ActorSystem() as system:
        consumer = await system.spawn(Consumer, "consumer")
        producer = await system.spawn(Producer, "producer")
        async with open_stream(producer, StreamTarget(actor="consumer"), "run-1") as stream:
            assert stream is not None
            await stream.write("stdout", "hello ")
            await stream.event("tool_start", name="read", id="t1")
            await stream.write("stderr", "oops")
            await stream.write("stdout", "world")
            stream.result = {"exit_code": 0}
        with trio.fail_after(5):
            await consumer.ended.wait()
    kinds = [part["kind"] for m in consumer.got for part in m["parts"]]
    assert kinds == ["stdout", "tool_start", "stderr", "stdout"]
    assert [m["seq"] for m in consumer.got] == list(range(len(consumer.got)))
    assert {m["stream"] for m in consumer.got} == {"run-1"}
    last = consumer.got[-1]
    assert last["end"] is True and last["result"] == {"exit_code": 0}
    assert not any(m.get("end") for m in consumer.got[:-1])
    assert consumer.text("stdout") == "hello world"


async def test_a_slow_consumer_gets_fewer_bigger_chunks_and_everything_in_order() -> None:
    async with ActorSystem() as system:
        consumer = await system.spawn(Consumer, "consumer", delay=0.01)
        producer = await system.spawn(Producer, "producer")
        expected = "".join(f"line {i}\n" for i in range(2000))
        async with open_stream(
            producer, StreamTarget(actor="consumer"), "s", max_pending_bytes=4096
        ) as stream:
            assert stream is not None
            for i in range(2000):
                await stream.write("stdout", f"line {i}\n")
                assert stream._pending_bytes <= 4096 + 16  # bounded, whatever the consumer does
            stream.result = {}
        with trio.fail_after(10):
            await consumer.ended.wait()
    assert consumer.text("stdout") == expected
    assert stream.parts == 2000
    assert len(consumer.got) < 400, "a slow consumer should make parts coalesce"
    assert len(consumer.got) == stream.sent


async def test_a_topic_stream_reaches_subscribers() -> None:
    class Subscriber(Consumer):
        async def on_start(self) -> None:
            self.subscribe("runs/+/output")

    async with ActorSystem() as system:
        subscriber = await system.spawn(Subscriber, "subscriber")
        producer = await system.spawn(Producer, "producer")
        async with open_stream(producer, StreamTarget(topic="runs/7/output"), "7") as stream:
            assert stream is not None
            await stream.write("text", "hi")
            stream.result = {"ok": True}
        with trio.fail_after(5):
            await subscriber.ended.wait()
    assert subscriber.text("text") == "hi"


async def test_a_consumer_that_goes_away_ends_the_stream_quietly() -> None:
    async with ActorSystem() as system:
        consumer = await system.spawn(Consumer, "consumer")
        producer = await system.spawn(Producer, "producer")
        async with open_stream(producer, StreamTarget(actor="consumer"), "s") as stream:
            assert stream is not None
            await stream.write("stdout", "first")
            await trio.sleep(0.05)
            await consumer.stop()
            for _ in range(100):
                await stream.write("stdout", "x" * 1000)
            stream.result = {}
        assert stream.lost
        assert [part["text"] for m in consumer.got for part in m["parts"]] == ["first"]


async def test_a_cancelled_run_still_sends_what_it_had_and_the_ending() -> None:
    async with ActorSystem() as system:
        consumer = await system.spawn(Consumer, "consumer", delay=0.02)
        producer = await system.spawn(Producer, "producer")
        with trio.move_on_after(0.1):
            async with open_stream(producer, StreamTarget(actor="consumer"), "s") as stream:
                assert stream is not None
                stream.result = {"cancelled": True}
                for i in range(10_000):
                    await stream.write("stdout", f"{i},")
                    await trio.sleep(0.001)
        with trio.fail_after(5):
            await consumer.ended.wait()
    numbers = consumer.text("stdout").rstrip(",").split(",")
    assert numbers == [str(i) for i in range(len(numbers))]
    assert consumer.got[-1]["result"] == {"cancelled": True}


def test_stream_to_is_read_from_a_request() -> None:
    assert stream_target(None) is None
    assert stream_target("me") == StreamTarget(actor="me")
    assert stream_target({"actor": "me"}) == StreamTarget(actor="me")
    assert stream_target({"topic": "a/b"}) == StreamTarget(topic="a/b")
    for bad in ("", 3, {"topic": "a/#"}, {"actor": "a", "topic": "b"}, {"queue": "x"}, ["me"]):
        with pytest.raises(MessageRejected, match="stream_to"):
            stream_target(bad)

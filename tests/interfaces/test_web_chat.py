"""Chat and commands through the MainActor: streamed replies in order, the ending, cancel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from tests.interfaces.web_support import connect, serving
from wactorz import Actor, DeferredReply
from wactorz.agents.streams import open_stream, stream_target


class StandInMain(Actor):
    """Plays the MainActor: streams the words of the text back, then answers.

    ``"slow ..."`` streams one word every 50 ms until cancelled with ``{"cancel": id}``.
    """

    def __init__(self, system: Any = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.cancels: dict[str, trio.CancelScope] = {}
        self.seen: list[dict[str, Any]] = []

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def _process(self, message: dict[str, Any]) -> object:
        self.seen.append(message)
        if "cancel" in message:
            scope = self.cancels.get(message["cancel"])
            if scope is not None:
                scope.cancel()
            return None
        chat = message["chat"]
        self.nursery.start_soon(self._answer, chat, message, self.reply_later())
        return None

    async def _answer(
        self, chat: dict[str, Any], message: dict[str, Any], reply: DeferredReply
    ) -> None:
        words = chat["text"].split()
        stream_id = message["stream_id"]
        async with open_stream(self, stream_target(message["stream_to"]), stream_id) as stream:
            assert stream is not None
            with trio.CancelScope() as scope:
                self.cancels[stream_id] = scope
                for word in words * (100 if words[0] == "slow" else 1):
                    await stream.write("text", word + " ")
                    await stream.event("tick", n=len(word))
                    if words[0] == "slow":
                        await trio.sleep(0.05)
            stream.result = {"cancelled": scope.cancelled_caught, "words": len(words)}
        reply.answer({"session": chat["session"], "target": chat["target"], "done": True})


async def test_chat_streams_parts_in_order_then_ends_with_the_answer(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        main = await web.system.spawn(StandInMain, "main")
        request = await client.send({"type": "chat", "text": "one two three", "target": "bob"})
        frames = []
        while True:
            frame = await client.receive()
            frames.append(frame)
            if frame.get("id") == request and frame["type"] in ("stream_end", "error"):
                break
        streams = [f for f in frames if f["type"] == "stream"]
        assert [f["seq"] for f in streams] == list(range(len(streams)))
        parts = [part for f in streams for part in f["parts"]]
        text = "".join(part["text"] for part in parts if part["kind"] == "text")
        assert text == "one two three "
        assert [p["kind"] for p in parts if p["kind"] != "text"] == ["tick"] * 3
        end = frames[-1]
        assert end["type"] == "stream_end"
        assert end["reply"] == {"session": client.hello["session"], "target": "bob", "done": True}
        assert end["result"] == {"cancelled": False, "words": 3}
        (seen,) = main.seen
        assert seen["stream_to"] == web.id
        assert seen["stream_id"] == f"{client.hello['connection']}/{request}"


async def test_a_command_goes_to_main_as_chat_text_and_ends_with_a_reply(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        main = await web.system.spawn(StandInMain, "main")
        reply = await client.request({"type": "command", "text": "/status now", "session": "s1"})
        assert reply["type"] == "reply" and reply["reply"]["session"] == "s1"
        assert main.seen[0]["chat"] == {"session": "s1", "text": "/status now", "target": None}


async def test_cancel_reaches_main_and_the_stream_still_ends(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        main = await web.system.spawn(StandInMain, "main")
        request = await client.send({"type": "chat", "text": "slow words"})
        await client.next("stream", request)
        cancel = await client.request({"type": "cancel", "request": request})
        assert cancel["reply"] == {"cancelling": request}
        end = await client.final(request)
        assert end["type"] == "stream_end" and end["result"]["cancelled"] is True
        assert {"cancel": f"{client.hello['connection']}/{request}"} in main.seen


async def test_chat_without_a_main_actor_says_so(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        error = await client.request({"type": "chat", "text": "hello"})
        assert error["type"] == "error" and error["code"] == "no_main"
        assert "'main'" in error["error"]


async def test_two_clients_chat_at_once_and_each_gets_only_its_own_stream(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as alice, connect(web) as bob:
        await web.system.spawn(StandInMain, "main")
        a = await alice.send({"type": "chat", "id": "same", "text": "alpha beta"})
        b = await bob.send({"type": "chat", "id": "same", "text": "gamma"})
        a_end, b_end = await alice.final(a), await bob.final(b)
        assert a_end["result"]["words"] == 2 and b_end["result"]["words"] == 1
        a_text = "".join(
            p.get("text", "") for f in alice.seen if f["type"] == "stream" for p in f["parts"]
        )
        b_text = "".join(
            p.get("text", "") for f in bob.seen if f["type"] == "stream" for p in f["parts"]
        )
        assert (a_text, b_text) == ("alpha beta ", "gamma ")

"""A stand-in MainActor for the front door's client tests (the dashboard, ``wactorz chat``).

It answers chat and commands the way the real MainActor does on the wire (a stream of
parts, then an answer), with behaviour picked by the text's first word:

- ``slow ...``: streams its words one every 50 ms, a hundred times over, until cancelled;
- ``tools ...``: a ``tool_start`` part, some text, a ``tool_end`` part;
- ``xss``: streams a script-injection probe as text;
- ``fail``: answers nothing and raises `MessageRejected` (an ``error`` frame);
- a command (``/...``): streams nothing and answers ``{"text": "ran /..."}``;
- anything else: streams its words back and answers ``{"text": ..., "session": ...}``.

With ``crew=True`` it starts a supervisor named ``crew`` beside itself (stopped with it),
and takes asks that play with it: ``{"spawn": name}`` starts a `Worker` there,
``{"crash": name, "error": text}`` makes it crash with ``RuntimeError(text)``. And
``{"usage": {...}}`` publishes a heartbeat carrying that LLM usage, as a language-model
agent does.
"""

from __future__ import annotations

from typing import Any

import trio

from wactorz import Actor, DeferredReply, tool
from wactorz.agents.streams import open_stream, stream_target
from wactorz.core.errors import MessageRejected
from wactorz.core.supervisor import Supervisor

XSS_PROBE = '<img src=x onerror="window.__xss = (window.__xss || 0) + 1">'
"""Text that runs script if a page inserts it as HTML (it sets ``window.__xss``)."""


class Weather(Actor):
    """An agent with a tool, for the language model to call and the details panel to list."""

    capabilities = ("weather",)

    @tool(
        "Today's weather in a city: the sky and the temperature in °C.",
        input_schema={
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city's name"}},
            "required": ["city"],
        },
    )
    async def forecast(self, city: str) -> dict[str, Any]:
        return {"city": city, "sky": "grey", "celsius": -3}

    async def _process(self, message: dict[str, Any]) -> object:
        return None


class Worker(Actor):
    """Does nothing, or crashes on ``{"crash": text}``."""

    async def _process(self, message: dict[str, Any]) -> object:
        if "usage" in message:  # what a language-model agent reports in its heartbeat
            heartbeat = {"name": self.name, "llm": message["usage"]}
            return {"delivered": await self.publish(f"agents/{self.id}/heartbeat", heartbeat)}
        if "crash" in message:
            raise RuntimeError(str(message["crash"]))
        return None


class StandInMain(Actor):
    """Plays the MainActor (see the module docstring)."""

    def __init__(self, system: Any = None, *, name: str | None = None, crew: bool = False) -> None:
        super().__init__(system, name=name)
        self.with_crew = crew
        self.crew: Supervisor | None = None
        self.cancels: dict[str, trio.CancelScope] = {}
        self.seen: list[dict[str, Any]] = []

    async def on_start(self) -> None:
        if self.with_crew:
            self.crew = Supervisor(self.system, "one_for_one", 10, 60.0, name="crew")
            await self.crew.start()

    async def on_stop(self) -> None:
        if self.crew is not None:
            await self.crew.stop()

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
        if "spawn" in message and self.crew is not None:
            worker = await self.crew.add_and_start(message["spawn"], Worker)
            return {"spawned": worker.id}
        if "usage" in message:  # what a language-model agent reports in its heartbeat
            heartbeat = {"name": self.name, "llm": message["usage"]}
            return {"delivered": await self.publish(f"agents/{self.id}/heartbeat", heartbeat)}
        if "crash" in message:
            await self.send(message["crash"], {"crash": message.get("error", "boom")})
            return {"crashing": message["crash"]}
        chat = message["chat"]
        if chat["text"].split()[0] == "fail":
            raise MessageRejected("the stand-in main refuses 'fail' on purpose")
        self.nursery.start_soon(self._answer, chat, message, self.reply_later())
        return None

    async def _answer(
        self, chat: dict[str, Any], message: dict[str, Any], reply: DeferredReply
    ) -> None:
        text: str = chat["text"]
        words = text.split()
        stream_id = message["stream_id"]
        async with open_stream(self, stream_target(message["stream_to"]), stream_id) as stream:
            assert stream is not None
            with trio.CancelScope() as scope:
                self.cancels[stream_id] = scope
                if text.startswith("/"):
                    pass
                elif words[0] == "slow":
                    for word in words * 100:
                        await stream.write("text", word + " ")
                        await trio.sleep(0.05)
                elif words[0] == "tools":
                    await stream.event("tool_start", name="search", id="t1")
                    await stream.write("text", "found " + " ".join(words[1:]))
                    await stream.event("tool_end", name="search", id="t1")
                elif words[0] == "xss":
                    await stream.write("text", XSS_PROBE)
                else:
                    for word in words:
                        await stream.write("text", word + " ")
            stream.result = {"cancelled": scope.cancelled_caught}
        if text.startswith("/"):
            reply.answer({"text": f"ran {text}"})
        else:
            reply.answer({"text": text, "session": chat["session"], "target": chat["target"]})

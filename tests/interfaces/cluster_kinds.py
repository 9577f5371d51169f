"""Kinds of actor the node tests start on their nodes, by name (``mqtt.kinds``).

They live in a module of their own so that node processes started by the tests can import
them (``tests.interfaces.cluster_kinds:Echo``), as a real deployment names its own.
"""

from __future__ import annotations

from typing import Any

import trio

from wactorz import Actor, ActorSystem, DeferredReply, MessageRejected, WactorzError


class Echo(Actor):
    """Answers with the message, its node and its sender; naps, crashes or refuses on request."""

    async def _process(self, message: dict[str, Any]) -> object:
        if "sleep" in message:
            await trio.sleep(message["sleep"])
        if "crash" in message:
            raise RuntimeError("asked to crash")
        if "reject" in message:
            raise MessageRejected("send anything but 'reject'")
        if "answer_sender" in message and self.sender is not None:
            await self.send(self.sender, {"back": message["answer_sender"], "from": self.id})
        return {"echo": message, "node": self.system.node, "sender": self.sender}


class Collector(Actor):
    """Keeps every message told to it; ``{"get": "collected"}`` answers with them, in order."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.collected: list[dict[str, Any]] = []

    async def _process(self, message: dict[str, Any]) -> object:
        if message == {"get": "collected"}:
            return {"collected": self.collected}
        self.collected.append({"message": message, "sender": self.sender})
        return {"ok": True}


class Ledger(Actor):
    """Records the ``n`` of every message it handles (duplicates included) and acknowledges
    each; ``{"get": "ledger"}`` answers with all of them, in the order handled."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.entries: list[int] = []

    async def _process(self, message: dict[str, Any]) -> object:
        if message == {"get": "ledger"}:
            return {"entries": self.entries}
        self.entries.append(int(message["n"]))
        return {"ok": message["n"]}


class Driver(Actor):
    """Sends and asks on a test's behalf, from its node: ``{"ask": TO, "message": M,
    "timeout": S}`` answers ``{"reply": R}`` or ``{"error": TYPE, "text": ...}``; ``{"tell":
    TO, "message": M}`` answers ``{"sent": true}`` or the error; ``{"ledger": TO, "from": A,
    "to": B, "timeout": S}`` asks ``{"n": i}`` of TO for each i in [A, B), all at once, and
    answers with the n acknowledged and the errors. Each runs beside the others."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self._nursery: trio.Nursery | None = None

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def _process(self, message: dict[str, Any]) -> object:
        assert self._nursery is not None
        later = self.reply_later()
        self._nursery.start_soon(self._carry_out, message, later)
        return None

    async def _carry_out(self, message: dict[str, Any], later: DeferredReply) -> None:
        try:
            if "ask" in message:
                reply = await self.ask(
                    message["ask"], message["message"], timeout=message.get("timeout", 5.0)
                )
                later.answer({"reply": reply})
            elif "tell" in message:
                await self.send(message["tell"], message["message"])
                later.answer({"sent": True})
            elif "ledger" in message:
                later.answer(await self._ledger(message))
            else:
                later.answer({"error": "MessageRejected", "text": "ask, tell or ledger"})
        except WactorzError as exc:
            later.answer({"error": type(exc).__name__, "text": str(exc)})

    async def _ledger(self, message: dict[str, Any]) -> dict[str, Any]:
        acknowledged: list[int] = []
        errors: list[str] = []

        async def one(n: int) -> None:
            try:
                await self.ask(message["ledger"], {"n": n}, timeout=message.get("timeout", 10.0))
            except WactorzError as exc:
                errors.append(f"{n}: {type(exc).__name__}: {exc}")
            else:
                acknowledged.append(n)

        async with trio.open_nursery() as nursery:
            for n in range(message["from"], message["to"]):
                nursery.start_soon(one, n)
                if message.get("pace_s"):
                    await trio.sleep(message["pace_s"])
        return {"acknowledged": sorted(acknowledged), "errors": errors}

"""Addresses across nodes, as the system resolves them: locally first, then through a router.

The router here is a stand-in for the MQTT bridge's: a table of remote actors, whose
stand-ins (`RemoteActor`) the test drains by hand, playing the other node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest
import trio

from wactorz import (
    ActorNotFound,
    ActorSystem,
    AmbiguousName,
    AskTimeout,
    EventKind,
    NodeDown,
    NodeInfo,
    RemoteActorInfo,
)
from wactorz.core.actor import Actor
from wactorz.core.mailbox import MESSAGE, REPLY, SENDER
from wactorz.core.remote import RemoteActor, format_address, parse_address


class Echo(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        return {"echo": message}


class TableRouter:
    """Routes ``name@node`` and unqualified names to the actors listed in ``table``."""

    def __init__(self, system: ActorSystem, table: dict[str, list[str]], down: set[str]) -> None:
        self.system = system
        self.table = table
        self.down = down
        self.stand_ins: dict[str, RemoteActor] = {}
        self.routed: list[str] = []

    def route(self, to: str) -> Actor | None:
        self.routed.append(to)
        name, node = parse_address(to)
        nodes = [n for n, names in self.table.items() if name in names]
        if node is None:
            if len(nodes) > 1:
                raise AmbiguousName(name, [format_address(name, n) for n in nodes])
            if not nodes:
                return None
            node = nodes[0]
        elif node not in nodes:
            raise ActorNotFound(to, self.remote_names())
        if node in self.down:
            raise NodeDown(node, to, "silent for 6.0 s")
        key = format_address(name, node)
        if key not in self.stand_ins:
            self.stand_ins[key] = RemoteActor(self.system, name=name, node=node, capacity=4)
        return self.stand_ins[key]

    def remote_names(self) -> Iterable[str]:
        return [format_address(a, n) for n, names in self.table.items() for a in names]

    def nodes(self) -> Sequence[NodeInfo]:
        return [
            NodeInfo(n, "down" if n in self.down else "up", actors=()) for n in sorted(self.table)
        ]


def test_an_address_splits_at_its_last_at_sign() -> None:
    assert parse_address("echo@kitchen") == ("echo", "kitchen")
    assert parse_address("echo") == ("echo", None)
    assert format_address("echo", "kitchen") == "echo@kitchen"


async def test_name_at_this_node_is_the_local_actor_with_or_without_a_router() -> None:
    async with ActorSystem(node="here") as system:
        echo = await system.spawn(Echo, "echo")
        assert system.lookup("echo@here") is echo
        assert system.lookup("echo@there") is None
        assert await system.ask("echo@here", {"n": 1}) == {"echo": {"n": 1}}
        await system.send("echo@here", {"n": 2})
        with pytest.raises(ActorNotFound, match="'echo@there'"):
            await system.send("echo@there", {"n": 3})


async def test_a_local_name_wins_and_never_reaches_the_router() -> None:
    async with ActorSystem(node="here") as system:
        router = TableRouter(system, {"there": ["echo"]}, set())
        system.attach_router(router)
        await system.spawn(Echo, "echo")
        assert await system.ask("echo", {"n": 1}) == {"echo": {"n": 1}}
        await system.send("echo", {"n": 2})
        assert router.routed == []


async def test_mail_for_a_remote_actor_queues_in_its_stand_in_with_sender_and_reply() -> None:
    async with ActorSystem(node="here") as system:
        router = TableRouter(system, {"there": ["echo"]}, set())
        system.attach_router(router)
        caller = await system.spawn(Echo, "caller")
        await caller.send("echo@there", {"n": 1})
        stand_in = router.stand_ins["echo@there"]
        told = stand_in.outbox.receive_nowait()
        assert (told[MESSAGE], told[SENDER], told[REPLY]) == ({"n": 1}, caller.id, None)

        async def play_the_other_node() -> None:
            asked = await stand_in.outbox.receive()
            assert asked[REPLY] is not None
            asked[REPLY].resolve({"answer": asked[MESSAGE]})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(play_the_other_node)
            assert await system.ask("echo", {"n": 2}) == {"answer": {"n": 2}}


async def test_an_unanswered_remote_ask_times_out_naming_the_address() -> None:
    async with ActorSystem(node="here") as system:
        system.attach_router(TableRouter(system, {"there": ["echo"]}, set()))
        with pytest.raises(AskTimeout, match="'echo@there' did not reply within 0.05 s"):
            await system.ask("echo@there", {}, timeout=0.05)


async def test_a_full_stand_in_makes_senders_wait_as_a_local_mailbox_does() -> None:
    async with ActorSystem(node="here") as system:
        router = TableRouter(system, {"there": ["echo"]}, set())
        system.attach_router(router)
        for n in range(4):
            system.send_nowait("echo@there", {"n": n})
        with trio.move_on_after(0.05) as scope:
            await system.send("echo@there", {"n": 4})
        assert scope.cancelled_caught
        router.stand_ins["echo@there"].outbox.receive_nowait()
        await system.send("echo@there", {"n": 4})


async def test_router_errors_reach_the_sender_and_are_reported_as_dead_letters() -> None:
    async with ActorSystem(node="here") as system, system.events() as events:
        system.attach_router(TableRouter(system, {"a": ["echo"], "b": ["echo"]}, {"b"}))
        with pytest.raises(AmbiguousName, match=r"echo@a, echo@b\): address one"):
            await system.send("echo", {"n": 1})
        with pytest.raises(NodeDown, match="'echo@b' cannot be reached: its node 'b' is down"):
            await system.ask("echo@b", {"n": 2})
        with pytest.raises(ActorNotFound, match="known: echo@a, echo@b"):
            await system.send("nobody", {"n": 3})
        kinds = [events.receive_nowait() for _ in range(3)]
    assert [(e.kind, e.actor_name) for e in kinds] == [
        (EventKind.DEAD_LETTER, "echo"),
        (EventKind.DEAD_LETTER, "echo@b"),
        (EventKind.DEAD_LETTER, "nobody"),
    ]
    assert "down" in (kinds[1].reason or "")


async def test_nodes_lists_this_node_first_then_the_routers() -> None:
    async with ActorSystem(node="here") as system:
        echo = await system.spawn(Echo, "echo")
        (alone,) = system.nodes()
        assert alone.local and alone.status == "up" and alone.name == "here"
        assert RemoteActorInfo(echo.id, "echo", "here", f"{__name__}.Echo") in alone.actors
        router = TableRouter(system, {"b": ["x"], "a": ["y"]}, {"b"})
        system.attach_router(router)
        assert [(n.name, n.status) for n in system.nodes()] == [
            ("here", "up"),
            ("a", "up"),
            ("b", "down"),
        ]
        with pytest.raises(RuntimeError, match="already has a remote router"):
            system.attach_router(TableRouter(system, {}, set()))
        system.detach_router(router)
        assert len(system.nodes()) == 1


async def test_a_stand_in_refuses_mail_once_closed_and_hands_back_what_was_queued() -> None:
    async with ActorSystem(node="here") as system:
        stand_in = RemoteActor(system, name="echo", node="there", actor_id="x-echo")
        assert (stand_in.name, stand_in.remote_name, stand_in.node, stand_in.id) == (
            "echo@there",
            "echo",
            "there",
            "x-echo",
        )
        system.attach_router(_Fixed(stand_in))
        system.send_nowait("echo@there", {"n": 1})
        (left,) = stand_in.close()
        assert left[MESSAGE] == {"n": 1}


class _Fixed:
    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    def route(self, to: str) -> Actor | None:
        return self.actor

    def remote_names(self) -> Iterable[str]:
        return ()

    def nodes(self) -> Sequence[NodeInfo]:
        return ()

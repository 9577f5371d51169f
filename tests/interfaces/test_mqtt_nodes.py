"""Nodes on one broker as one actor system, each node an actor system with its bridge, here
in one process against the fixture broker (the multi-process tests are in
``test_mqtt_cluster_processes.py``).

Each test runs its nodes under a prefix of its own, with fast heartbeats, so that
membership changes take a fraction of a second.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from tests.interfaces.cluster_kinds import Collector, Echo, Ledger
from tests.interfaces.conftest import BrokerProcess
from tests.interfaces.test_mqtt_bridge import LIMIT_S, Gate, bridge_config, eventually, wire
from wactorz import (
    ActorCrashed,
    ActorNotFound,
    ActorSystem,
    AmbiguousName,
    DuplicateName,
    EventKind,
    MessageRejected,
    NodeDown,
    RemoteError,
)
from wactorz.config import MQTTConfig
from wactorz.core.actor import Actor
from wactorz.interfaces.mqtt import MQTTBridge

KINDS: dict[str, type[Actor]] = {"echo": Echo, "ledger": Ledger, "collector": Collector}


def node_config(broker: BrokerProcess, prefix: str, **changes: Any) -> MQTTConfig:
    settings: dict[str, Any] = {
        "topic_prefix": prefix,
        "heartbeat_s": 0.1,
        "node_down_after_s": 0.6,
        "ask_retry_s": 0.3,
        **changes,
    }
    return bridge_config(settings.pop("port", broker.port), **settings)


@asynccontextmanager
async def node(
    broker: BrokerProcess, prefix: str, name: str, **changes: Any
) -> AsyncIterator[tuple[ActorSystem, MQTTBridge]]:
    config = node_config(broker, prefix, **changes)
    async with ActorSystem(node=name) as system:
        bridge = await system.spawn(MQTTBridge, config=config, kinds=KINDS)
        yield system, bridge


async def until(condition: Callable[[], bool], what: str) -> None:
    await eventually(condition, what)


def sees(system: ActorSystem, node: str, status: str = "up", actor: str | None = None) -> bool:
    for info in system.nodes():
        if info.name == node and info.status == status:
            return actor is None or any(a.name == actor for a in info.actors)
    return False


@pytest.fixture
def prefix() -> str:
    return f"n{secrets.token_hex(3)}"


# ---- addressing, tells and asks ---------------------------------------------------------------


async def test_tells_and_asks_reach_actors_on_the_other_node_both_ways(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with (
        node(mqtt_broker, prefix, "a") as (a, bridge_a),
        node(mqtt_broker, prefix, "b") as (b, _),
    ):
        echo_b = await b.spawn(Echo, "echo_b")
        collector_a = await a.spawn(Collector, "collector_a")
        sender_a = await a.spawn(Echo, "sender_a")
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b", actor="echo_b"), "a sees echo_b")
            await until(lambda: sees(b, "a", actor="collector_a"), "b sees collector_a")
            answer = await sender_a.ask("echo_b@b", {"x": 1})
            assert answer == {"echo": {"x": 1}, "node": "b", "sender": sender_a.id}
            assert (await a.ask("echo_b", {"x": 2}))["node"] == "b"  # unqualified, unique
            assert (await a.ask(echo_b.id, {"x": 3}))["node"] == "b"  # by id
            await b.send("collector_a@a", {"told": 1})
            await until(lambda: len(collector_a.collected) == 1, "the tell from b")
            back = await a.spawn(Collector, "back")
            await until(lambda: sees(b, "a", actor="back"), "b sees back")
            await back.send("echo_b@b", {"answer_sender": "hi"})
            await until(lambda: len(back.collected) == 1, "echo_b answered its sender")
        assert collector_a.collected[0]["message"] == {"told": 1}
        # A program's own send comes in through the bridge: never as from the local program.
        assert collector_a.collected[0]["sender"] == bridge_a.id
        assert back.collected[0]["message"] == {"back": "hi", "from": echo_b.id}
        assert back.collected[0]["sender"] == echo_b.id


async def test_a_local_name_wins_and_an_ambiguous_one_lists_the_candidates(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with (
        node(mqtt_broker, prefix, "a") as (a, _),
        node(mqtt_broker, prefix, "b") as (b, _),
        node(mqtt_broker, prefix, "c") as (c, _),
    ):
        await a.spawn(Echo, "echo")
        await b.spawn(Echo, "echo")
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(c, "a", actor="echo") and sees(c, "b", actor="echo"), "c")
            assert (await a.ask("echo", {}))["node"] == "a"
            with pytest.raises(AmbiguousName, match=r"\(echo@a, echo@b\): address one"):
                await c.ask("echo", {})
            assert (await c.ask("echo@b", {}))["node"] == "b"
            with pytest.raises(ActorNotFound, match="no node 'zz' is known"):
                await c.send("echo@zz", {})
            with pytest.raises(ActorNotFound, match="known: .*echo@a"):
                await c.send("nobody@a", {})
            with pytest.raises(ActorNotFound, match="known: .*echo@b"):
                await c.ask("nobody", {})


async def test_remote_failures_come_back_as_the_local_errors_of_the_same_meaning(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with (
        node(mqtt_broker, prefix, "a") as (a, _),
        node(mqtt_broker, prefix, "b") as (b, _),
    ):
        await b.spawn(Echo, "echo")
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b", actor="echo"), "a sees echo")
            with pytest.raises(MessageRejected, match="send anything but 'reject'"):
                await a.ask("echo@b", {"reject": 1})
            with pytest.raises(ActorCrashed, match="crashed while handling"):
                await a.ask("echo@b", {"crash": 1})
            # The crashed actor is gone on b; a's directory may still list it a moment.
            await until(lambda: not sees(a, "b", actor="echo"), "echo's manifest cleared")
            with pytest.raises(ActorNotFound):
                await a.ask("echo@b", {})


async def test_remote_asks_time_out_like_local_ones(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with (
        node(mqtt_broker, prefix, "a") as (a, _),
        node(mqtt_broker, prefix, "b") as (b, _),
    ):
        await b.spawn(Echo, "echo")
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b", actor="echo"), "a sees echo")
            with pytest.raises(Exception, match="'echo@b' did not reply within 0.2 s"):
                await a.ask("echo@b", {"sleep": 1.0}, timeout=0.2)


# ---- membership --------------------------------------------------------------------------------


async def test_a_node_that_vanishes_is_down_at_once_and_its_askers_get_node_down(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    """b's connection is cut (as by a crash): the broker publishes its last will, and the
    ask waiting on b fails at once, not at its timeout."""
    gate = Gate(mqtt_broker)
    async with (
        trio.open_nursery() as nursery,
        node(mqtt_broker, prefix, "a") as (a, _),
        a.events() as events,
    ):
        await nursery.start(gate.serve)
        async with node(
            mqtt_broker, prefix, "b", port=gate.port, reconnect_min_s=5.0, reconnect_max_s=5.0
        ) as (
            b,
            _,
        ):
            echo = await b.spawn(Echo, "echo")
            with trio.fail_after(LIMIT_S):
                await until(lambda: sees(a, "b", actor="echo"), "a sees echo")
            outcome: list[BaseException] = []

            async def ask_and_wait() -> None:
                try:
                    await a.ask("echo@b", {"sleep": 3}, timeout=30)
                except NodeDown as exc:
                    outcome.append(exc)

            with trio.fail_after(LIMIT_S):
                async with trio.open_nursery() as asking:
                    asking.start_soon(ask_and_wait)
                    await trio.sleep(0.3)
                    cut = trio.current_time()
                    gate.close()
            assert trio.current_time() - cut < 2.0  # at once: neither the sleep nor the timeout
            (error,) = outcome
            assert error.node == "b" and error.reason == "offline: connection lost"
            with pytest.raises(NodeDown, match="'echo@b' cannot be reached: its node 'b' is"):
                await a.send("echo@b", {})
            reachable = [x.id for n in a.nodes() if n.status == "up" for x in n.actors]
            assert echo.id not in reachable
        nursery.cancel_scope.cancel()
        seen = []
        while True:
            try:
                seen.append(events.receive_nowait())
            except trio.WouldBlock:
                break
        changes = [(e.kind, e.reason) for e in seen if e.node == "b"]
        assert changes[:2] == [
            (EventKind.NODE_UP, None),
            (EventKind.NODE_DOWN, "offline: connection lost"),
        ]
        down = next(e for e in seen if e.node == "b" and e.kind is EventKind.NODE_DOWN)
        assert down.message is not None
        assert {"id": echo.id, "name": "echo"} in down.message["actors"]


async def test_a_node_cut_off_from_the_broker_sees_the_others_go_down_and_come_back(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with (
        node(mqtt_broker, prefix, "a") as (a, _),
        node(mqtt_broker, prefix, "b") as (_b, _),
        a.events() as events,
    ):
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b"), "a sees b")
        await trio.to_thread.run_sync(mqtt_broker.stop)
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b", "down"), "a sees b down")
        (info,) = [n for n in a.nodes() if n.name == "b"]
        # The broker may publish b's will on its way down; else b falls silent.
        assert info.reason == "offline: connection lost" or (
            info.reason is not None and info.reason.endswith("this node lost the broker")
        )
        with pytest.raises(NodeDown):
            await a.ask("mqtt-bridge@b", {"get": "statistics"})
        await trio.to_thread.run_sync(mqtt_broker.start)
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b"), "a sees b again")
            answer = await a.ask("mqtt-bridge@b", {"get": "statistics"})
        assert answer["connection"]["connected"] is True
        seen = []
        while True:
            try:
                seen.append(events.receive_nowait())
            except trio.WouldBlock:
                break
        assert [e.kind for e in seen if e.node == "b"][-2:] == [
            EventKind.NODE_DOWN,
            EventKind.NODE_UP,
        ]


# ---- delivery: retries and duplicates ---------------------------------------------------------


async def test_a_request_sent_twice_is_carried_out_once_and_an_ask_answered_twice(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with node(mqtt_broker, prefix, "b") as (b, _), wire(mqtt_broker) as client:
        ledger = await b.spawn(Ledger, "ledger")
        await client.subscribe(f"{prefix}/nodes/x/replies")
        inbox = f"{prefix}/nodes/b/inbox"
        ask = {"v": 1, "id": "m1", "node": "x", "op": "ask", "to": "ledger", "from": None}
        tell = {**ask, "id": "m2", "op": "tell"}
        with trio.fail_after(LIMIT_S):
            for payload in (ask, ask, tell, tell):
                await client.publish(inbox, {**payload, "message": {"n": 7}})
            replies = await client.wait_for(f"{prefix}/nodes/x/replies", 2)
            await until(lambda: len(ledger.entries) >= 2, "the ledger")
            await trio.sleep(0.2)
        assert ledger.entries == [7, 7]  # the ask once, the tell once
        assert [r.json() for r in replies] == [{"v": 1, "id": "m1", "reply": {"ok": 7}}] * 2
        stats = b.lookup("mqtt-bridge").bridge_statistics().nodes  # type: ignore[union-attr]
        assert stats is not None and stats.duplicates == 2


async def test_an_inbox_request_with_an_id_is_carried_out_once(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with node(mqtt_broker, prefix, "b") as (b, _), wire(mqtt_broker) as client:
        ledger = await b.spawn(Ledger, "ledger")
        reply_to = f"{prefix}/replies/me"
        await client.subscribe(reply_to)
        request = {"message": {"n": 3}, "reply_to": reply_to, "id": "once-1"}
        with trio.fail_after(LIMIT_S):
            for _ in range(3):
                await client.publish(f"{prefix}/agents/by-name/ledger/inbox", request)
            replies = await client.wait_for(reply_to, 3)
        assert ledger.entries == [3]
        assert {r.payload for r in replies} == {b'{"reply":{"ok":3},"correlation_id":null}'}


async def test_requests_claiming_a_local_sender_arrive_from_the_bridge(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with node(mqtt_broker, prefix, "b") as (b, bridge), wire(mqtt_broker) as client:
        collector = await b.spawn(Collector, "collector")
        forged = {"v": 1, "id": "f1", "node": "x", "op": "tell", "to": "collector"}
        with trio.fail_after(LIMIT_S):
            await client.publish(
                f"{prefix}/nodes/b/inbox", {**forged, "from": collector.id, "message": {}}
            )
            await until(lambda: len(collector.collected) == 1, "the forged tell")
        assert collector.collected[0]["sender"] == bridge.id


async def test_a_node_refuses_requests_for_actors_its_settings_keep_private(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with (
        node(mqtt_broker, prefix, "a") as (a, _),
        node(mqtt_broker, prefix, "b", remote_allow=["open-*"]) as (b, _),
    ):
        await b.spawn(Echo, "secret")
        await b.spawn(Echo, "open-echo")
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b", actor="open-echo"), "a sees b's actors")
            assert (await a.ask("open-echo@b", {}))["node"] == "b"
            with pytest.raises(RemoteError, match="does not let other nodes send to 'secret'"):
                await a.ask("secret@b", {})


# ---- the inbox topics in a cluster ------------------------------------------------------------


async def test_an_inbox_request_is_answered_once_by_the_node_responsible(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with (
        node(mqtt_broker, prefix, "a") as (a, _),
        node(mqtt_broker, prefix, "b") as (b, _),
        wire(mqtt_broker) as client,
    ):
        await b.spawn(Echo, "only")
        await a.spawn(Echo, "twice")
        await b.spawn(Echo, "twice")
        reply_to = f"{prefix}/replies/me"
        await client.subscribe(reply_to)
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b", actor="twice") and sees(b, "a", actor="twice"), "")
            for n, target in enumerate(("only", "twice", "twice@a", "nobody", "x@nowhere")):
                await client.publish(
                    f"{prefix}/agents/by-name/{target}/inbox",
                    {"message": {"n": n}, "reply_to": reply_to, "correlation_id": n},
                )
            await client.wait_for(reply_to, 5)
            await trio.sleep(0.3)  # a second answer to any of them would come by now
        answers = {m.json()["correlation_id"]: m.json() for m in client.seen(reply_to)}
        assert len(client.seen(reply_to)) == 5
        assert answers[0]["reply"]["node"] == "b"
        assert answers[1]["code"] == "ambiguous" and "twice@a, twice@b" in answers[1]["error"]
        assert answers[2]["reply"]["node"] == "a"
        assert answers[3]["code"] == "not_found"
        assert answers[4]["code"] == "not_found" and "no node 'nowhere'" in answers[4]["error"]


# ---- remote spawn -----------------------------------------------------------------------------


async def test_remote_spawn_starts_only_allowed_kinds_and_keeps_the_desired_set(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with (
        node(mqtt_broker, prefix, "a") as (a, bridge_a),
        node(mqtt_broker, prefix, "b", kinds={"echo": "x:Y"}, spawn_allow=["echo"]) as (b, _),
        wire(mqtt_broker, f"{prefix}/nodes/b/desired") as client,
    ):
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b"), "a sees b")
            spawned = await bridge_a.spawn_on("b", "echo", "e1")
            assert (spawned["name"], spawned["node"], spawned["kind"]) == ("e1", "b", "echo")
            assert (await a.ask("e1@b", {}))["node"] == "b"  # known at once to the spawner
            with pytest.raises(RemoteError, match="does not let other nodes start actors of kind"):
                await bridge_a.spawn_on("b", "ledger", "l1")
            with pytest.raises(RemoteError, match="knows no kind of actor 'nope'"):
                await bridge_a.spawn_on("b", "nope", "n1")
            with pytest.raises(DuplicateName):
                await bridge_a.spawn_on("b", "echo", "mqtt-bridge")
            # The same request again starts nothing new (an answer lost, say).
            assert (await bridge_a.spawn_on("b", "echo", "e1"))["id"] == spawned["id"]
            # Through the bridge's messages, as any actor would.
            answer = await a.ask(
                "mqtt-bridge", {"spawn": {"node": "b", "kind": "echo", "name": "e2"}}
            )
            assert answer["name"] == "e2"
            await until(lambda: len(client.seen()) >= 1, "the desired set")
            await until(
                lambda: [x["name"] for x in client.seen()[-1].json()["actors"]] == ["e1", "e2"],
                "e1 and e2 desired",
            )
            assert (await bridge_a.stop_on("b", "e2"))["stopped"] is True
            await until(lambda: b.lookup("e2") is None, "e2 stopped")
            await until(
                lambda: [x["name"] for x in client.seen()[-1].json()["actors"]] == ["e1"],
                "e2 no longer desired",
            )


async def test_a_node_started_again_runs_its_desired_set(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with node(mqtt_broker, prefix, "a") as (a, bridge_a):
        async with node(mqtt_broker, prefix, "b", spawn_allow=["*"]) as (b, _):
            with trio.fail_after(LIMIT_S):
                await until(lambda: sees(a, "b"), "a sees b")
                await bridge_a.spawn_on("b", "ledger", "books")
                await bridge_a.spawn_on("b", "echo", "hello")
        async with node(mqtt_broker, prefix, "b") as (b, _):
            with trio.fail_after(LIMIT_S):
                await until(lambda: b.lookup("books") is not None, "books back")
                await until(lambda: b.lookup("hello") is not None, "hello back")
                await until(lambda: sees(a, "b", actor="books"), "a sees the new books")
                assert await a.ask("books@b", {"n": 1}) == {"ok": 1}


# ---- what people see --------------------------------------------------------------------------


async def test_the_dashboard_tree_and_agents_command_show_every_node_and_its_actors(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    from wactorz.agents.main_actor import MainActor
    from wactorz.interfaces.web.tree import TreeTracker

    async with (
        node(mqtt_broker, prefix, "a") as (a, _),
        node(mqtt_broker, prefix, "b") as (b, _),
    ):
        echo = await b.spawn(Echo, "echo")
        main = await a.spawn(MainActor, "main")
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b", actor="echo"), "a sees echo")
            tree = TreeTracker(a, {}, {}).snapshot()["actors"]
            by_id = {entry["id"]: entry for entry in tree}
            assert by_id["node:b"]["kind"] == "node" and by_id["node:b"]["state"] == "up"
            assert echo.id in by_id["node:b"]["children"]
            remote = by_id[echo.id]
            assert (remote["parent"], remote["node"], remote["remote"]) == ("node:b", "b", True)
            assert remote["state"] == "running" and remote["class"] == f"{Echo.__module__}.Echo"
            answer = await a.ask(main.id, {"chat": {"session": "s", "text": "/agents"}})
            assert "node b (up): mqtt-bridge, echo" in answer["text"]
            assert answer["nodes"][0]["actors"][1] == {"id": echo.id, "name": "echo"}
            said = await a.ask(main.id, {"chat": {"session": "s", "text": "@echo@b hello"}})
            assert said == {"echo": {"text": "hello"}, "node": "b", "sender": main.id}


async def test_tells_sent_while_this_node_is_cut_off_go_out_when_it_is_back(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    gate = Gate(mqtt_broker)
    async with trio.open_nursery() as nursery:
        await nursery.start(gate.serve)
        async with (
            node(mqtt_broker, prefix, "a", port=gate.port, node_down_after_s=3.0) as (a, bridge),
            node(mqtt_broker, prefix, "b", node_down_after_s=3.0) as (b, _),
        ):
            collector = await b.spawn(Collector, "collector")
            with trio.fail_after(LIMIT_S):
                await until(lambda: sees(a, "b", actor="collector"), "a sees the collector")
                gate.close()
                await until(lambda: not bridge.connection.connected, "a cut off")
                for n in range(3):
                    await a.send("collector@b", {"n": n})  # b is not down yet: kept
                gate.open()
                await until(lambda: len(collector.collected) == 3, "the three tells")
            assert [c["message"] for c in collector.collected] == [{"n": n} for n in range(3)]
        nursery.cancel_scope.cancel()


async def test_a_bridge_that_restarts_adopts_the_actors_it_started_and_keeps_them_desired(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    config = node_config(mqtt_broker, prefix)
    async with ActorSystem(node="b") as b, wire(mqtt_broker, f"{prefix}/nodes/b/desired") as client:
        first = await b.spawn(MQTTBridge, config=config, kinds=KINDS)
        with trio.fail_after(LIMIT_S):
            books = await first.spawn_on("b", "ledger", "books")
            await first.stop()  # as a crash and restart would: the actors keep running
            await until(lambda: b.lookup("mqtt-bridge") is None, "the first bridge gone")
            second = await b.spawn(MQTTBridge, config=config, kinds=KINDS)
            await until(lambda: second.bridge_statistics().nodes is not None, "started")
            await trio.sleep(0.3)  # the desired set read back and restored
            assert b.lookup("books") is not None and b.lookup("books").id == books["id"]  # type: ignore[union-attr]
            await second.spawn_on("b", "echo", "hello")
            await until(
                lambda: (
                    [x["name"] for x in client.seen()[-1].json()["actors"]] == ["books", "hello"]
                ),
                "both desired",
            )


async def test_a_tell_then_an_ask_from_one_sender_arrive_in_that_order(
    mqtt_broker: BrokerProcess, prefix: str
) -> None:
    async with (
        node(mqtt_broker, prefix, "a") as (a, _),
        node(mqtt_broker, prefix, "b") as (b, _),
    ):
        await b.spawn(Collector, "collector")
        with trio.fail_after(LIMIT_S):
            await until(lambda: sees(a, "b", actor="collector"), "a sees the collector")
            for n in range(20):
                await a.send("collector@b", {"n": n})
                seen = (await a.ask("collector@b", {"get": "collected"}))["collected"]
                assert seen[-1]["message"] == {"n": n}  # the tell came first

"""Membership and the directory, as pure rules: observations in, transitions out."""

from __future__ import annotations

from typing import Any

import pytest

from wactorz.core.errors import ActorNotFound, AmbiguousName, NodeDown
from wactorz.interfaces.mqtt.cluster import Cluster, Route

ID_A = "20261206T050000000.000001Z-echo"
ID_B = "20261206T050000000.000002Z-echo"
ID_B2 = "20261206T060000000.000001Z-echo"


def online(boot: str = "b1", **more: Any) -> dict[str, Any]:
    return {"status": "online", "boot": boot, **more}


def manifest(node: str, name: str = "echo", boot: str = "b1") -> dict[str, Any]:
    return {"node": node, "name": name, "class": "m.Echo", "boot": boot, "capabilities": ["x"]}


def test_a_node_is_up_from_its_status_and_down_after_silence() -> None:
    cluster = Cluster("me", down_after_s=5.0)
    (up,) = cluster.status("a", online(), now=0.0, wall=100.0)
    assert (up.node, up.up, up.reason, up.boot) == ("a", True, None, "b1")
    assert cluster.check(now=4.0, wall=104.0) == []
    assert cluster.beat("a", "b1", now=4.0, wall=104.0) == []
    assert cluster.check(now=8.9, wall=108.9) == []
    (down,) = cluster.check(now=9.5, wall=109.5)
    assert (down.up, down.reason) == (False, "silent for 5.5 s")
    assert cluster.check(now=20.0, wall=120.0) == []
    (info,) = cluster.nodes()
    assert (info.status, info.since, info.reason) == ("down", 109.5, "silent for 5.5 s")
    (back,) = cluster.beat("a", "b1", now=21.0, wall=121.0)
    assert back.up and cluster.is_up("a")


def test_a_slow_beating_node_gets_two_and_a_half_of_its_intervals() -> None:
    cluster = Cluster("me", down_after_s=1.0)
    cluster.status("a", online(heartbeat_s=2.0), now=0.0, wall=0.0)
    assert cluster.check(now=4.9, wall=4.9) == []
    assert cluster.check(now=5.1, wall=5.1)[0].reason == "silent for 5.1 s"


def test_cut_off_from_the_broker_the_reason_says_so() -> None:
    cluster = Cluster("me", down_after_s=1.0)
    cluster.status("a", online(), now=0.0, wall=0.0)
    (down,) = cluster.check(now=2.0, wall=2.0, connected=False)
    assert down.reason == "silent for 2.0 s: this node lost the broker"


def test_offline_is_down_at_once_and_a_late_will_of_an_old_incarnation_is_ignored() -> None:
    cluster = Cluster("me", down_after_s=5.0)
    cluster.status("a", online("b1"), now=0.0, wall=0.0)
    (down,) = cluster.status(
        "a", {"status": "offline", "boot": "b1", "reason": "connection lost"}, 1.0, 1.0
    )
    assert down.reason == "offline: connection lost"
    (up,) = cluster.status("a", online("b2"), now=2.0, wall=2.0)
    assert up.boot == "b2"
    assert cluster.status("a", {"status": "offline", "boot": "b1"}, 3.0, 3.0) == []
    assert cluster.is_up("a")


def test_a_new_boot_while_up_is_a_restart_and_the_old_actors_are_forgotten() -> None:
    cluster = Cluster("me", down_after_s=5.0)
    cluster.status("a", online("b1"), 0.0, 0.0)
    cluster.manifest(ID_A, manifest("a", boot="b1"))
    cluster.manifest(ID_B2, manifest("a", boot="b2"))  # the new incarnation's, early
    assert [a.id for a in cluster.actors_of("a")] == [ID_A]
    down, up = cluster.beat("a", "b2", 1.0, 1.0)
    assert (down.up, down.reason, [a.id for a in down.actors]) == (False, "restarted", [ID_A])
    assert (up.up, [a.id for a in up.actors]) == (True, [ID_B2])
    assert cluster.resolve(ID_A) is None


def test_the_directory_follows_manifests_and_this_nodes_own_are_ignored() -> None:
    cluster = Cluster("me", down_after_s=5.0)
    cluster.status("a", online(), 0.0, 0.0)
    cluster.manifest(ID_A, manifest("a"))
    cluster.manifest("20261206T050000000.000009Z-mine", manifest("me", "mine"))
    assert cluster.remote_names() == ["echo@a"]
    assert cluster.holders("echo") == ["a"] and cluster.holders(ID_A) == ["a"]
    cluster.manifest(ID_A, None)
    assert cluster.remote_names() == [] and cluster.resolve("echo") is None


@pytest.fixture
def two() -> Cluster:
    cluster = Cluster("me", down_after_s=5.0)
    for node, actor_id in (("a", ID_A), ("b", ID_B)):
        cluster.status(node, online(), 0.0, 0.0)
        cluster.manifest(actor_id, manifest(node))
    cluster.manifest("20261206T050000000.000003Z-only", manifest("b", "only"))
    return cluster


def test_addresses_resolve_qualified_by_id_and_unqualified_when_unique(two: Cluster) -> None:
    assert two.resolve("echo@a") == Route("a", "echo", "echo", ID_A)
    assert two.resolve(ID_B) == Route("b", ID_B, "echo", ID_B)
    assert two.resolve("only") == Route("b", "only", "only", "20261206T050000000.000003Z-only")
    assert two.resolve("nobody") is None
    assert two.resolve("20261206T050000000.000004Z-nobody") is None


def test_an_unqualified_name_on_two_nodes_is_ambiguous_until_one_goes_down(two: Cluster) -> None:
    with pytest.raises(AmbiguousName) as info:
        two.resolve("echo")
    assert info.value.candidates == ("echo@a", "echo@b")
    two.status("a", {"status": "offline", "boot": "b1", "reason": "stopped"}, 1.0, 1.0)
    assert two.resolve("echo") == Route("b", "echo", "echo", ID_B)


def test_what_runs_only_on_a_down_node_is_node_down_and_unknown_things_are_not_found(
    two: Cluster,
) -> None:
    two.status("b", {"status": "offline", "boot": "b1", "reason": "connection lost"}, 1.0, 1.0)
    for address in ("only", "only@b", ID_B):
        with pytest.raises(NodeDown, match="'b' is down \\(offline: connection lost\\)"):
            two.resolve(address)
    with pytest.raises(ActorNotFound, match="no node 'zz' is known \\(nodes: a, b\\)"):
        two.resolve("echo@zz")
    with pytest.raises(ActorNotFound, match="known: echo@a"):
        two.resolve("nobody@a")
    assert [n.name for n in two.nodes()] == ["a", "b"]
    assert two.up_nodes() == ["a"]

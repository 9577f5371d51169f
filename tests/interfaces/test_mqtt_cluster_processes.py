"""Three node processes (``python -m wactorz run``) and a real mosquitto, started by the tests.

The nodes ``a``, ``b`` and ``c`` run for the whole module, each from a settings file of its
own, with fast heartbeats. Each test also runs a node in the test process, ``t``, to drive
the others and watch what they say; the actors the tests need on the process nodes are
started there by remote spawn (`Driver` does what a test asks from its node), so that they
are in each node's desired set and come back when a node is restarted. Tests that kill a
node, restart the broker or cut the network leave the cluster whole again.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import pytest
import trio

from tests.interfaces.conftest import BrokerProcess, _free_port, broker_protocol
from tests.interfaces.test_mqtt_bridge import eventually, wire
from wactorz import ActorSystem, EventKind
from wactorz.config import MQTTConfig
from wactorz.interfaces.mqtt import MQTTBridge

pytestmark = pytest.mark.slow

REPO: Final = Path(__file__).resolve().parents[2]
KINDS_MODULE: Final = "tests.interfaces.cluster_kinds"
KINDS: Final = {name.lower(): f"{KINDS_MODULE}:{name}" for name in ("Echo", "Ledger", "Driver")}
NODES: Final = ("a", "b", "c")
HEARTBEAT_S: Final = 0.25
DOWN_AFTER_S: Final = 3.0
"""Longer than a broker restart takes (amqtt's included), so that one marks no node down."""
WAIT_S: Final = 20.0
"""Bound on each wait for the processes (they start in a second or two, slower under load)."""
STOP_S: Final = 15.0
"""How long a node has to stop after SIGTERM before it is killed."""
BROKER_CHILD: Final = "wactorz.interfaces.mqtt._broker_child"
"""The module an embedded broker's process runs (its command line names it)."""
BROKER_GONE_S: Final = 5.0
"""How long an embedded broker has to exit once its node is gone (it polls once a second)."""


class NodeProcess:
    """One ``python -m wactorz run`` node, from a settings file; restartable."""

    def __init__(self, name: str, config: Path, workdir: Path) -> None:
        self.name = name
        self.config = config
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WACTORZ_")}
        env["PYTHONUNBUFFERED"] = "1"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "wactorz", "run", "--config", str(self.config)],
                cwd=REPO,  # for `tests.interfaces.cluster_kinds`, as mqtt.kinds names it
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """Send ``signum`` and wait for the node to exit; SIGKILL if SIGTERM does not do it."""
        if self.process is not None:
            if signum == signal.SIGTERM:
                _end(self.process)
            elif self.process.poll() is None:
                self.process.send_signal(signum)
                self.process.wait(timeout=STOP_S)
        self.process = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")


class Cluster:
    def __init__(self, broker: BrokerProcess, prefix: str, nodes: dict[str, NodeProcess]) -> None:
        self.broker = broker
        self.prefix = prefix
        self.nodes = nodes

    def config(self, **changes: Any) -> MQTTConfig:
        return MQTTConfig(
            **{
                "enabled": True,
                "port": self.broker.port,
                "protocol": broker_protocol(),
                "topic_prefix": self.prefix,
                "heartbeat_s": HEARTBEAT_S,
                "node_down_after_s": DOWN_AFTER_S,
                "ask_retry_s": 0.5,
                "reconnect_min_s": 0.1,
                "reconnect_max_s": 0.5,
                "keepalive": 5,
                **changes,
            }
        )

    def logs(self) -> str:
        return "\n".join(f"--- {n.name}:\n{n.output()[-3000:]}" for n in self.nodes.values())


def _settings_file(workdir: Path, node: str, cluster: Cluster, allow: list[str]) -> Path:
    path = workdir / f"{node}.yaml"
    mqtt = cluster.config(kinds=KINDS, spawn_allow=allow)
    settings = {
        "node": node,
        "data_dir": str(workdir / node),
        "log_level": "INFO",
        "web": {"enabled": False},
        "monitor": {"enabled": False},
        "llm": {"enabled": False},
        "mqtt": {
            "enabled": True,
            "port": mqtt.port,
            "protocol": mqtt.protocol,
            "topic_prefix": mqtt.topic_prefix,
            "heartbeat_s": mqtt.heartbeat_s,
            "node_down_after_s": mqtt.node_down_after_s,
            "ask_retry_s": mqtt.ask_retry_s,
            "reconnect_min_s": mqtt.reconnect_min_s,
            "reconnect_max_s": mqtt.reconnect_max_s,
            "keepalive": mqtt.keepalive,
            "kinds": dict(mqtt.kinds),
            "spawn_allow": allow,
        },
    }
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


@pytest.fixture(scope="module")
def cluster(
    mqtt_broker_module: BrokerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    workdir = tmp_path_factory.mktemp("cluster")
    prefix = f"c{secrets.token_hex(3)}"
    cluster = Cluster(mqtt_broker_module, prefix, {})
    for name in NODES:
        # c lets others start fewer kinds: the allow-list test asks it for a ledger.
        allow = ["echo", "driver"] if name == "c" else ["echo", "ledger", "driver"]
        config = _settings_file(workdir, name, cluster, allow)
        cluster.nodes[name] = NodeProcess(name, config, workdir)
    for process in cluster.nodes.values():
        process.start()
    try:
        yield cluster
    finally:
        for process in cluster.nodes.values():
            process.kill(signal.SIGTERM)


@asynccontextmanager
async def driving_node(cluster: Cluster) -> AsyncIterator[tuple[ActorSystem, MQTTBridge]]:
    """The node ``t`` in this process, once it sees a, b and c up, each with its driver, and
    an echo on b and c, and a ledger on b (spawning what runs already starts nothing)."""
    async with ActorSystem(node="t") as system:
        bridge = await system.spawn(MQTTBridge, config=cluster.config(), kinds={})
        try:
            with trio.fail_after(WAIT_S):
                await eventually(
                    lambda: all(sees(system, n) for n in NODES), "a, b and c up", WAIT_S
                )
                for name in NODES:
                    await bridge.spawn_on(name, "driver", "driver")
                for name in ("b", "c"):
                    await bridge.spawn_on(name, "echo", "echo")
                await bridge.spawn_on("b", "ledger", "ledger")
                await eventually(lambda: sees(system, "c", actor="echo"), "echo@c", WAIT_S)
            yield system, bridge
        except BaseException:
            print(cluster.logs())
            raise


def sees(system: ActorSystem, node: str, status: str = "up", actor: str | None = None) -> bool:
    for info in system.nodes():
        if info.name == node and info.status == status:
            return actor is None or any(a.name == actor for a in info.actors)
    return False


async def drive(
    system: ActorSystem, node: str, request: dict[str, Any], timeout: float = 15
) -> Any:
    """Have the driver on ``node`` do ``request`` (see `Driver`); its answer."""
    return await system.ask(f"driver@{node}", request, timeout=timeout)


async def drive_until_answered(system: ActorSystem, node: str, request: dict[str, Any]) -> Any:
    """`drive` until the answer is no error: after a partition each node sees the others
    come back in its own time, a heartbeat or two apart."""
    while True:
        answer = await drive(system, node, request)
        if "error" not in answer and "error" not in answer.get("reply", {}):
            return answer
        await trio.sleep(0.1)


def nodes_command(cluster: Cluster) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WACTORZ_")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wactorz",
            "nodes",
            "--json",
            "--wait",
            "1",
            "--mqtt-port",
            str(cluster.broker.port),
            "--mqtt-prefix",
            cluster.prefix,
        ],
        env={**env, "WACTORZ_MQTT__PROTOCOL": broker_protocol()},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    nodes: dict[str, Any] = {n["name"]: n for n in json.loads(result.stdout)["nodes"]}
    return nodes


# ---- the tests, in the order they run -----------------------------------------------------------


async def test_the_nodes_find_each_other_and_wactorz_nodes_lists_them(cluster: Cluster) -> None:
    async with driving_node(cluster):
        listed = await trio.to_thread.run_sync(nodes_command, cluster)
    assert {"a", "b", "c", "t"} <= listed.keys()
    assert listed["b"]["status"] == "up" and listed["b"]["beating"] is True
    assert {"driver", "echo", "ledger", "mqtt-bridge"} <= {a["name"] for a in listed["b"]["actors"]}
    assert {"name": "ledger", "kind": "ledger"} in listed["b"]["desired"]
    assert listed["c"]["spawnable"] == ["driver", "echo"]


async def test_tells_and_asks_cross_between_process_nodes_both_ways(cluster: Cluster) -> None:
    async with driving_node(cluster) as (t, bridge):
        await bridge.spawn_on("a", "echo", "echo_a")
        with trio.fail_after(WAIT_S):
            await eventually(lambda: sees(t, "a", actor="echo_a"), "echo_a", WAIT_S)
            a_to_b = await drive(t, "a", {"ask": "echo@b", "message": {"x": 1}})
            b_to_a = await drive(t, "b", {"ask": "echo_a@a", "message": {"x": 2}})
            assert a_to_b["reply"]["node"] == "b" and b_to_a["reply"]["node"] == "a"
            assert (await drive(t, "c", {"tell": "echo_a", "message": {"x": 3}})) == {"sent": True}
            # Unqualified and unique across the cluster; by id from another node.
            assert (await drive(t, "c", {"ask": "ledger", "message": {"n": -1}}))["reply"] == {
                "ok": -1
            }
            echo_c = next(
                x for n in t.nodes() if n.name == "c" for x in n.actors if x.name == "echo"
            )
            by_id = await drive(t, "a", {"ask": echo_c.id, "message": {}})
            assert by_id["reply"]["node"] == "c"


async def test_names_resolve_and_a_name_on_two_nodes_is_an_error_listing_both(
    cluster: Cluster,
) -> None:
    async with driving_node(cluster) as (t, _):
        with trio.fail_after(WAIT_S):
            ambiguous = await drive(t, "a", {"ask": "echo", "message": {}})
            assert ambiguous["error"] == "AmbiguousName"
            assert "(echo@b, echo@c)" in ambiguous["text"]
            local = await drive(t, "b", {"ask": "echo", "message": {}})
            assert local["reply"]["node"] == "b"  # b's own echo wins on b
            unknown = await drive(t, "a", {"ask": "echo@nowhere", "message": {}})
            assert unknown["error"] == "ActorNotFound" and "no node 'nowhere'" in unknown["text"]
            missing = await drive(t, "a", {"ask": "nobody@b", "message": {}})
            assert missing["error"] == "ActorNotFound"


async def test_remote_spawn_is_limited_to_the_kinds_each_node_allows(cluster: Cluster) -> None:
    from wactorz import RemoteError

    async with driving_node(cluster) as (_, bridge):
        with trio.fail_after(WAIT_S):
            with pytest.raises(RemoteError, match="does not let other nodes start actors of kind"):
                await bridge.spawn_on("c", "ledger", "books")
            with pytest.raises(RemoteError, match="knows no kind of actor 'collector'"):
                await bridge.spawn_on("a", "collector", "things")
            spawned = await bridge.spawn_on("c", "echo", "echo2")
        assert (spawned["node"], spawned["kind"]) == ("c", "echo")


async def test_a_killed_node_is_down_at_once_its_asker_gets_node_down_and_it_comes_back(
    cluster: Cluster,
) -> None:
    async with driving_node(cluster) as (t, bridge), t.events() as events:
        await bridge.spawn_on("c", "echo", "echo2")
        with trio.fail_after(WAIT_S):
            async with trio.open_nursery() as nursery:
                outcome: list[Any] = []

                async def ask_the_sleeper() -> None:
                    request = {"ask": "echo@c", "message": {"sleep": 10}, "timeout": 12}
                    outcome.append(await drive(t, "a", request))

                nursery.start_soon(ask_the_sleeper)
                await trio.sleep(0.5)
                killed = trio.current_time()
                await trio.to_thread.run_sync(cluster.nodes["c"].kill)
            assert trio.current_time() - killed < 3.0  # at once, not after the 10 s sleep
        (answer,) = outcome
        assert answer["error"] == "NodeDown", answer
        down = []
        while True:
            try:
                event = events.receive_nowait()
            except trio.WouldBlock:
                break
            if event.node == "c" and event.kind is EventKind.NODE_DOWN:
                down.append(event)
        assert down and down[0].reason == "offline: connection lost"
        assert down[0].message is not None
        assert {"echo", "driver"} <= {a["name"] for a in down[0].message["actors"]}
        cluster.nodes["c"].start()
        with trio.fail_after(WAIT_S):
            await eventually(lambda: sees(t, "c", actor="echo"), "echo back on c", WAIT_S)
            await eventually(lambda: sees(t, "c", actor="echo2"), "echo2 back on c", WAIT_S)
            again = await drive(t, "a", {"ask": "echo@c", "message": {"x": 1}})
        assert again["reply"]["node"] == "c"


async def test_a_broker_restart_mid_traffic_loses_no_acknowledged_ask_and_duplicates_none(
    cluster: Cluster,
) -> None:
    async with driving_node(cluster) as (t, _):
        with trio.fail_after(60):
            before = (await t.ask("ledger@b", {"get": "ledger"}))["entries"]
            async with trio.open_nursery() as nursery:
                result: list[Any] = []

                async def flood() -> None:
                    request = {"ledger": "ledger@b", "from": 0, "to": 300, "pace_s": 0.005}
                    result.append(await drive(t, "a", {**request, "timeout": 20}, timeout=40))

                nursery.start_soon(flood)
                await trio.sleep(0.6)
                await trio.to_thread.run_sync(cluster.broker.restart)
            (run,) = result
            await eventually(lambda: sees(t, "b"), "b seen again", WAIT_S)
            entries = (await t.ask("ledger@b", {"get": "ledger"}))["entries"][len(before) :]
        acknowledged = run["acknowledged"]
        # An outage shorter than node_down_after_s: every ask is answered, by retries.
        assert run["errors"] == [] and acknowledged == list(range(300))
        # The ledger: everything acknowledged is there, and nothing twice.
        assert sorted(entries) == acknowledged
        stats = await t.ask("mqtt-bridge@b", {"get": "statistics"})
        assert stats["connection"]["connects"] >= 2


async def test_a_partition_marks_the_nodes_down_and_healing_brings_them_back(
    cluster: Cluster,
) -> None:
    async with driving_node(cluster) as (t, _), t.events() as events:
        await trio.to_thread.run_sync(cluster.broker.stop)
        try:
            with trio.fail_after(WAIT_S):
                await eventually(
                    lambda: all(sees(t, n, "down") for n in NODES), "a, b, c down", WAIT_S
                )
            from wactorz import NodeDown

            with pytest.raises(NodeDown):
                await t.ask("echo@b", {})
        finally:
            await trio.to_thread.run_sync(cluster.broker.start)
        with trio.fail_after(WAIT_S):
            await eventually(lambda: all(sees(t, n) for n in NODES), "a, b, c up again", WAIT_S)
            # Each node sees the others again too (each in its own time): a asks c, and c
            # has a tell b.
            answer = await drive_until_answered(t, "a", {"ask": "echo@c", "message": {}})
            assert answer["reply"]["node"] == "c"
            tell = {"ask": "driver@a", "message": {"tell": "echo@b", "message": {}}}
            answer = await drive_until_answered(t, "c", tell)
            assert answer["reply"] == {"sent": True}
        kinds = []
        while True:
            try:
                event = events.receive_nowait()
            except trio.WouldBlock:
                break
            if event.node == "b":
                kinds.append(event.kind)
        assert kinds[-2:] == [EventKind.NODE_DOWN, EventKind.NODE_UP]


async def test_a_request_delivered_twice_is_carried_out_once(cluster: Cluster) -> None:
    async with driving_node(cluster) as (t, _), wire(cluster.broker) as client:
        before = len((await t.ask("ledger@b", {"get": "ledger"}))["entries"])
        request = {
            "v": 1,
            "id": f"dup-{secrets.token_hex(4)}",
            "node": "x",
            "op": "ask",
            "to": "ledger",
            "from": None,
            "message": {"n": 1000},
        }
        await client.subscribe(f"{cluster.prefix}/nodes/x/replies")
        with trio.fail_after(WAIT_S):
            for _ in range(3):
                await client.publish(f"{cluster.prefix}/nodes/b/inbox", request)
            await client.wait_for(f"{cluster.prefix}/nodes/x/replies", 3)
            entries = (await t.ask("ledger@b", {"get": "ledger"}))["entries"][before:]
        assert entries == [1000]


def test_two_nodes_on_an_embedded_broker_need_nothing_installed(tmp_path: Path) -> None:
    """``--broker embedded`` on both: the first starts amqtt, the second uses it; when the
    first stops, the second starts a broker of its own and carries on."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WACTORZ_")}
    env.update(PYTHONUNBUFFERED="1", WACTORZ_LLM__ENABLED="false")
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("x", "y"):
            processes[name] = _embedded_node(name, port, tmp_path, env)
            if name == "x":
                _wait_for_line(tmp_path / "x.log", "stop with Ctrl-C")
        _wait_for_line(tmp_path / "y.log", "node_up: node x")
        listed = _nodes(port, env)
        assert listed["x"]["status"] == listed["y"]["status"] == "up"
        processes["x"].send_signal(signal.SIGTERM)
        assert processes["x"].wait(timeout=30) == 0
        _wait_for_line(tmp_path / "y.log", "starting one here")
        _wait_for_line(tmp_path / "y.log", "connected again")
        listed = _nodes(port, env)
        # y's new broker starts empty: x, gone before it, left nothing retained there.
        assert listed["y"]["status"] == "up" and "x" not in listed
    finally:
        for process in processes.values():
            _end(process)
        left = _no_broker_left(tmp_path)
    assert left == [], "a node's embedded broker outlived it"
    x_log = (tmp_path / "x.log").read_text()
    assert "embedded MQTT broker (amqtt" in x_log and "Traceback" not in x_log
    assert "an MQTT broker already listens" in (tmp_path / "y.log").read_text()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds processes in /proc")
def test_a_node_killed_outright_takes_its_embedded_broker_with_it(tmp_path: Path) -> None:
    """SIGKILL gives a node no chance to stop its broker: the broker sees its node gone and
    exits by itself, and the port is free for the next one."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WACTORZ_")}
    env.update(PYTHONUNBUFFERED="1", WACTORZ_LLM__ENABLED="false")
    node = _embedded_node("n", port, tmp_path, env)
    try:
        _wait_for_line(tmp_path / "n.log", "stop with Ctrl-C")
        assert "embedded MQTT broker (amqtt" in (tmp_path / "n.log").read_text()
        brokers = [pid for pid, ppid in _broker_processes(tmp_path).items() if ppid == node.pid]
        assert len(brokers) == 1, _broker_processes(tmp_path)
        node.kill()
        node.wait(timeout=STOP_S)
        assert _eventually_true(lambda: not _alive(brokers[0]), BROKER_GONE_S), (
            f"the broker (pid {brokers[0]}) outlived its node by {BROKER_GONE_S} s"
        )
        assert _port_is_free(port)
    finally:
        _end(node)
        left = _no_broker_left(tmp_path)
    assert left == [], "a node's embedded broker outlived it"
    broker_log = (tmp_path / ".wactorz" / "broker" / "amqtt.log").read_text()
    assert "stopping the broker" in broker_log and "Broker closed" in broker_log


def _embedded_node(
    name: str, port: int, workdir: Path, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """``wactorz run --broker embedded`` as node ``name`` in ``workdir``, logging to
    ``<name>.log`` there."""
    common = ["--broker", "embedded", "--mqtt-port", str(port), "--no-web", "--no-monitor"]
    with (workdir / f"{name}.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "wactorz", "run", "--node", name, *common],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _end(process: subprocess.Popen[bytes]) -> None:
    """End a node the way a service is meant to be ended, SIGTERM, and wait for it; SIGKILL
    only if it has not exited after `STOP_S` (its broker then ends by itself)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _broker_processes(root: Path) -> dict[int, int]:
    """The embedded brokers running from a configuration under ``root``: pid to parent pid
    (none found where there is no ``/proc`` to look in)."""
    under = str(root.resolve()) + os.sep
    found: dict[int, int] = {}
    if not Path("/proc/self/stat").exists():
        return found
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if BROKER_CHILD in command and any(a.startswith(under) for a in command) and state != "Z":
            found[int(entry.name)] = int(ppid)
    return found


def _no_broker_left(root: Path) -> list[int]:
    """The embedded brokers of a test under ``root`` still running after `BROKER_GONE_S`;
    each is killed, so that a failing test leaves none behind either."""
    _eventually_true(lambda: not _broker_processes(root), BROKER_GONE_S)
    left = sorted(_broker_processes(root))
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def _eventually_true(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _port_is_free(port: int) -> bool:
    """Whether nothing listens on loopback ``port`` and a new server could bind it."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _wait_for_line(path: Path, text: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text(errors="replace"):
            return
        time.sleep(0.05)
    pytest.fail(f"{path.name} has no line with {text!r} after {timeout} s:\n{path.read_text()}")


def _nodes(port: int, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "wactorz",
            "nodes",
            "--json",
            "--wait",
            "2.5",
            "--broker",
            "embedded",
            "--mqtt-port",
            str(port),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {n["name"]: n for n in json.loads(result.stdout)["nodes"]}


async def test_a_node_retired_for_good_is_forgotten_by_wactorz_nodes(cluster: Cluster) -> None:
    """A node killed and never started again leaves its status and manifests retained;
    ``wactorz nodes --forget`` clears them (and refuses a node that is running)."""
    config = cluster.config(kinds={})
    async with ActorSystem(node="gone") as system:
        await system.spawn(MQTTBridge, config=config, kinds={})
    # Its goodbye cleared its manifests; its status stays, offline.
    async with driving_node(cluster):  # a is up and beating
        listed = await trio.to_thread.run_sync(nodes_command, cluster)
        refused = await trio.to_thread.run_sync(_forget, cluster, "a")
    assert listed["gone"]["status"] == "down"
    assert refused.returncode == 1 and "is up and beating: stop it first" in refused.stderr
    forgotten = await trio.to_thread.run_sync(_forget, cluster, "gone")
    assert forgotten.returncode == 0, forgotten.stderr
    assert "gone" not in json.loads(forgotten.stdout)["nodes"]
    assert "gone" not in await trio.to_thread.run_sync(nodes_command, cluster)


def _forget(cluster: Cluster, node: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WACTORZ_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "wactorz",
            "nodes",
            "--json",
            "--wait",
            "1",
            "--forget",
            node,
            "--mqtt-port",
            str(cluster.broker.port),
            "--mqtt-prefix",
            cluster.prefix,
        ],
        env={**env, "WACTORZ_MQTT__PROTOCOL": broker_protocol()},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

"""MonitorActor: heartbeats, metrics and health on local topics; alerts, severity, cooldown."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import wactorz
from wactorz.agents.monitor_agent import (
    ALERTS_TOPIC,
    HEALTH_TOPIC,
    MONITOR_NAME,
    SYSTEM_ALERT_TOPIC,
    AlertCooldown,
    MonitorActor,
    ProcessSample,
    PsutilSource,
    Severity,
    alert_topic,
    heartbeat_topic,
    metrics_topic,
    node_heartbeat_topic,
)
from wactorz.config import MonitorConfig
from wactorz.core.actor import Actor, ActorState
from wactorz.core.errors import ActorStartFailed, MessageRejected
from wactorz.core.events import ActorEvent, EventKind, EventStream
from wactorz.core.registry import ActorSystem
from wactorz.core.supervisor import Supervisor
from wactorz.telemetry import (
    ActorHeartbeat,
    ActorMetrics,
    NodeHeartbeat,
    PublishedAlert,
    SystemHealth,
)

HEARTBEAT_KEYS = {"id", "name", "node", "time", "state", "incarnation"}
METRICS_KEYS = {
    "id",
    "name",
    "node",
    "time",
    "state",
    "queued",
    "capacity",
    "mailbox_ratio",
    "processed",
    "rate",
    "crashes",
    "incarnation",
    "since_activity_s",
    "stalled_s",
}
HEALTH_KEYS = {
    "node",
    "time",
    "status",
    "uptime_s",
    "actors",
    "supervisors",
    "states",
    "crashes",
    "process",
    "machine",
    "alerts",
    "interval_s",
    "ticks_skipped",
}
NODE_HEARTBEAT_KEYS = {"node", "time", "pid", "version", "uptime_s", "status", "actors"}
ALERT_KEYS = {
    "kind",
    "severity",
    "subject",
    "name",
    "node",
    "time",
    "message",
    "value",
    "threshold",
    "resolved",
    "suppressed",
}

NEVER = 1e9
"""An interval so long that only the ticks a test sends itself happen."""

CALM = ProcessSample(
    cpu_percent=3.0,
    rss_bytes=50_000_000,
    threads=2,
    open_fds=12,
    system_cpu_percent=10.0,
    memory_percent=40.0,
    load_average=(0.5, 0.4, 0.3),
    uptime_s=12.0,
)


class FakeSource:
    """A metrics source the test sets; a sample that is an exception is raised."""

    def __init__(self, sample: ProcessSample = CALM) -> None:
        self.sample: ProcessSample | Exception = sample

    def set(self, **changes: Any) -> None:
        assert isinstance(self.sample, ProcessSample)
        self.sample = attrs.evolve(self.sample, **changes)

    def __call__(self) -> ProcessSample:
        if isinstance(self.sample, Exception):
            raise self.sample
        return self.sample


class Collector(Actor):
    """Records what is published on its filters, as (topic, message, trio time)."""

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, filters: list[str]
    ) -> None:
        super().__init__(system, name=name)
        self.filters = filters
        self.seen: list[tuple[str, dict[str, Any], float]] = []
        self.changed = trio.Event()

    async def on_start(self) -> None:
        for topic_filter in self.filters:
            self.subscribe(topic_filter)

    async def _process(self, message: dict[str, Any]) -> object:
        if self.envelope is None or self.envelope.topic is None:
            return None  # a direct message: a sync point
        self.seen.append((self.envelope.topic, message, trio.current_time()))
        self.changed.set()
        self.changed = trio.Event()
        return None

    def on(self, topic: str) -> list[dict[str, Any]]:
        return [message for seen_topic, message, _ in self.seen if seen_topic == topic]

    def alerts(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [m for m in self.on(ALERTS_TOPIC) if kind is None or m["kind"] == kind]

    async def wait_for(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        with trio.fail_after(timeout):
            while not done():
                await self.changed.wait()


class Gate(Actor):
    """Blocks in `_process` until the test opens the gate."""

    mailbox_size = 4

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.gate = trio.Event()
        self.entered = trio.Event()

    async def _process(self, message: dict[str, Any]) -> object:
        self.entered.set()
        await self.gate.wait()
        return None


class Crasher(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        raise RuntimeError(f"{self.name} was told to crash")


class Idle(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        return None


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with ActorSystem(node="testnode") as running:
        yield running


async def start(
    system: ActorSystem, source: FakeSource | None = None, **options: Any
) -> tuple[MonitorActor, Collector]:
    """A collector of everything, then a monitor that ticks only when told to (by default)."""
    collector = await system.spawn(Collector, name="collector", filters=["#"])
    options.setdefault("interval_s", NEVER)
    monitor = await system.spawn(
        MonitorActor, config=MonitorConfig(), source=source or FakeSource(), **options
    )
    return monitor, collector


async def tick(system: ActorSystem, collector: Collector) -> dict[str, Any]:
    """Make the monitor tick now; return its health once the collector has seen everything."""
    health: dict[str, Any] = await system.ask(MONITOR_NAME, {"tick": 0})
    await system.ask(collector.id, {})  # queued behind every publication of the tick
    return health


def contract_class(topic: str) -> Any:
    """The `wactorz.telemetry` class of what the monitor publishes on ``topic``."""
    if topic == ALERTS_TOPIC or topic.endswith("/alert"):
        return PublishedAlert
    if topic == HEALTH_TOPIC:
        return SystemHealth
    if topic.startswith("nodes/"):
        return NodeHeartbeat
    return {"heartbeat": ActorHeartbeat, "metrics": ActorMetrics}[topic.rpartition("/")[2]]


def drain(events: EventStream) -> list[ActorEvent]:
    found: list[ActorEvent] = []
    while True:
        try:
            found.append(events.receive_nowait())
        except trio.WouldBlock:
            return found


def all_tasks() -> set[trio.lowlevel.Task]:
    found: set[trio.lowlevel.Task] = set()
    root = trio.lowlevel.current_root_task()
    assert root is not None
    pending = [root]
    while pending:
        task = pending.pop()
        found.add(task)
        for nursery in task.child_nurseries:
            pending.extend(nursery.child_tasks)
    return found


# ---- what is published every tick -----------------------------------------------------------


async def test_every_actor_gets_a_heartbeat_and_metrics_with_the_documented_keys(
    system: ActorSystem,
) -> None:
    await system.spawn(Idle, name="idle")
    _, collector = await start(system)
    await system.ask("idle", {"n": 1})

    health = await tick(system, collector)

    actors = system.actors()
    assert {a.name for a in actors} == {"idle", "collector", MONITOR_NAME}
    for actor in actors:
        (heartbeat,) = collector.on(heartbeat_topic(actor.id))
        (metrics,) = collector.on(metrics_topic(actor.id))
        assert set(heartbeat) == HEARTBEAT_KEYS
        assert set(metrics) == METRICS_KEYS
        assert heartbeat["name"] == metrics["name"] == actor.name
        assert heartbeat["node"] == "testnode"
        assert heartbeat["state"] == "running"
        assert metrics["capacity"] == type(actor).mailbox_size
    idle = system.lookup("idle")
    assert idle is not None
    (idle_metrics,) = collector.on(metrics_topic(idle.id))
    assert idle_metrics["processed"] == 1
    assert idle_metrics["queued"] == 0
    assert idle_metrics["rate"] is None  # no previous tick to compare with

    assert set(health) == HEALTH_KEYS
    assert collector.on(HEALTH_TOPIC) == [health]
    assert health["status"] == "ok"
    assert health["actors"] == 3
    assert health["states"] == {"running": 3}
    assert health["process"] == {
        "cpu_percent": 3.0,
        "rss_bytes": 50_000_000,
        "threads": 2,
        "open_fds": 12,
    }
    assert health["machine"] == {
        "cpu_percent": 10.0,
        "memory_percent": 40.0,
        "load_average": [0.5, 0.4, 0.3],
    }
    (node,) = collector.on(node_heartbeat_topic("testnode"))
    assert set(node) == NODE_HEARTBEAT_KEYS
    assert node["version"] == wactorz.__version__
    assert node["status"] == "ok"
    assert collector.alerts() == []
    assert await system.ask(MONITOR_NAME, {"get": "health"}) == health


async def test_every_published_payload_reads_back_through_the_telemetry_contract(
    system: ActorSystem,
) -> None:
    source = FakeSource()
    _, collector = await start(system, source)
    supervisor = Supervisor(system, name="sup")
    supervisor.add("crasher", Crasher)
    await supervisor.start()
    await system.send("crasher", {"go": True})
    await collector.wait_for(lambda: bool(collector.alerts("crash")))
    await tick(system, collector)
    source.set(cpu_percent=99.0)
    await tick(system, collector)
    source.sample = OSError("no /proc here")  # health without process and machine parts
    await tick(system, collector)

    for topic, message, _ in collector.seen:
        assert contract_class(topic).from_message(message).to_message() == message, topic
    kinds = {a["kind"] for a in collector.alerts()}
    assert kinds == {"crash", "cpu"}
    assert len(collector.seen) > 20


async def test_the_rate_counts_messages_handled_between_ticks(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    idle = await system.spawn(Idle, name="idle")
    _, collector = await start(system)
    await tick(system, collector)
    await trio.sleep(2)
    for n in range(10):
        await system.ask("idle", {"n": n})
    await tick(system, collector)
    assert collector.on(metrics_topic(idle.id))[-1]["rate"] == pytest.approx(5.0)


async def test_ticks_come_every_interval_by_themselves(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    collector = await system.spawn(Collector, name="collector", filters=[HEALTH_TOPIC])
    started = trio.current_time()
    await system.spawn(MonitorActor, config=MonitorConfig(interval_s=5), source=FakeSource())
    await collector.wait_for(lambda: len(collector.seen) >= 3, timeout=100)
    times = [when - started for _, _, when in collector.seen[:3]]
    assert times == pytest.approx([5, 10, 15])


async def test_a_monitor_that_falls_behind_skips_ticks_instead_of_queueing_them(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    monitor, _ = await start(system, interval_s=1)
    staller = await system.spawn(Gate, name="staller")
    staller.subscribe(HEALTH_TOPIC)
    await trio.sleep(1.5)  # the first tick's health is in the staller's hands: it is stuck
    for n in range(Gate.mailbox_size):
        await system.send("staller", {"n": n})
    # From the second tick on, publishing health waits for room: the monitor is stuck.
    await trio.sleep(10)
    assert monitor.statistics().queued == 1

    staller.gate.set()
    await trio.sleep(0.25)  # off the 1 s grid: no new tick races the check below
    health = await system.ask(MONITOR_NAME, {"get": "health"})
    assert health["ticks_skipped"] >= 8
    assert monitor.statistics().queued == 0


# ---- alerts ----------------------------------------------------------------------------------


async def test_cpu_and_memory_over_their_thresholds_raise_alerts_with_severity(
    system: ActorSystem,
) -> None:
    source = FakeSource()
    _, collector = await start(system, source)
    source.set(cpu_percent=92.0, memory_percent=97.0)  # thresholds 90: critical from 95

    health = await tick(system, collector)

    cpu, memory = collector.alerts("cpu"), collector.alerts("memory")
    assert len(cpu) == len(memory) == 1
    assert set(cpu[0]) == ALERT_KEYS
    assert cpu[0]["severity"] == "warning"
    assert cpu[0]["value"] == 92.0 and cpu[0]["threshold"] == 90.0
    assert cpu[0]["subject"] == "testnode"
    assert "92% CPU" in cpu[0]["message"]
    assert memory[0]["severity"] == "critical"
    assert collector.on(SYSTEM_ALERT_TOPIC) == cpu + memory
    assert health["status"] == "critical"
    assert sorted((a["kind"], a["severity"]) for a in health["alerts"]) == [
        ("cpu", "warning"),
        ("memory", "critical"),
    ]


async def test_a_condition_that_clears_is_reported_resolved_once(system: ActorSystem) -> None:
    source = FakeSource()
    _, collector = await start(system, source)
    source.set(cpu_percent=99.0)
    await tick(system, collector)
    source.set(cpu_percent=5.0)
    health = await tick(system, collector)
    await tick(system, collector)

    raised, cleared = collector.alerts("cpu")
    assert raised["severity"] == "critical" and not raised["resolved"]
    assert cleared["severity"] == "info" and cleared["resolved"]
    assert cleared["message"].startswith("cleared: ")
    assert health["status"] == "ok"
    assert await system.ask(MONITOR_NAME, {"get": "alerts"}) == []


async def test_the_cooldown_suppresses_repeats_and_lets_them_through_once_it_expires(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    source = FakeSource()
    _, collector = await start(system, source, alert_cooldown_s=60)
    source.set(cpu_percent=92.0)
    for _ in range(4):
        await tick(system, collector)
        await trio.sleep(10)
    assert [a["suppressed"] for a in collector.alerts("cpu")] == [0]

    await trio.sleep(30)  # 70 s after the first alert
    await tick(system, collector)

    first, again = collector.alerts("cpu")
    assert again["suppressed"] == 3
    assert again["severity"] == "warning"
    assert again["time"] >= first["time"]


async def test_a_flapping_condition_does_not_flood_the_alerts(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    source = FakeSource()
    _, collector = await start(system, source, alert_cooldown_s=300)
    for high in [True, False] * 10:
        source.set(cpu_percent=95.0 if high else 10.0)
        await tick(system, collector)
        await trio.sleep(5)
    assert [(a["severity"], a["resolved"]) for a in collector.alerts("cpu")] == [
        ("critical", False),
        ("info", True),
    ]


async def test_a_more_severe_alert_gets_through_the_cooldown(system: ActorSystem) -> None:
    source = FakeSource()
    _, collector = await start(system, source)
    source.set(memory_percent=91.0)
    await tick(system, collector)
    source.set(memory_percent=99.0)
    await tick(system, collector)
    source.set(memory_percent=91.0)
    await tick(system, collector)
    assert [a["severity"] for a in collector.alerts("memory")] == ["warning", "critical"]


async def test_a_mailbox_near_full_raises_a_warning_then_critical_when_full(
    system: ActorSystem,
) -> None:
    gate = await system.spawn(Gate, name="gate")
    _, collector = await start(system, mailbox_alert_ratio=0.5)
    await system.send("gate", {"n": 0})
    await gate.entered.wait()
    for n in range(1, 3):
        await system.send("gate", {"n": n})  # 2 of 4 waiting: the alert ratio
    await tick(system, collector)
    await system.send("gate", {"n": 3})
    await system.send("gate", {"n": 4})  # 4 of 4: full
    await tick(system, collector)

    warning, critical = collector.alerts("mailbox")
    assert warning["severity"] == "warning"
    assert warning["subject"] == gate.id and warning["name"] == "gate"
    assert warning["value"] == 0.5 and warning["threshold"] == 0.5
    assert critical["severity"] == "critical"
    assert "full" in critical["message"]
    assert collector.on(alert_topic(gate.id)) == [warning, critical]
    gate.gate.set()


async def test_an_actor_stuck_with_messages_waiting_is_reported_silent(
    system: ActorSystem, autojump_clock: trio.testing.MockClock
) -> None:
    gate = await system.spawn(Gate, name="gate")
    idle = await system.spawn(Idle, name="idle")
    _, collector = await start(system, silent_after_s=60)
    await system.send("gate", {"n": 0})
    await gate.entered.wait()
    await system.send("gate", {"n": 1})
    await tick(system, collector)
    await trio.sleep(30)
    await tick(system, collector)
    assert collector.alerts("silent") == []

    await trio.sleep(31)
    await tick(system, collector)
    await trio.sleep(60)
    await tick(system, collector)

    warning, critical = collector.alerts("silent")
    assert (warning["subject"], warning["severity"]) == (gate.id, "warning")
    assert warning["value"] == pytest.approx(61)
    assert "1 waiting" in warning["message"]
    assert (critical["subject"], critical["severity"]) == (gate.id, "critical")
    assert collector.on(metrics_topic(gate.id))[-1]["stalled_s"] == pytest.approx(121)
    assert collector.on(metrics_topic(idle.id))[-1]["stalled_s"] == 0

    gate.gate.set()
    await trio.sleep(1)
    await tick(system, collector)
    assert collector.alerts("silent")[-1]["resolved"] is True


async def test_a_crash_raises_an_alert_on_the_actors_topic(system: ActorSystem) -> None:
    _, collector = await start(system)
    supervisor = Supervisor(system, name="sup")
    supervisor.add("crasher", Crasher)
    await supervisor.start()
    crasher = system.lookup("crasher")
    assert crasher is not None

    await system.send("crasher", {"go": True})
    await collector.wait_for(lambda: bool(collector.alerts("crash")))

    (alert,) = collector.alerts("crash")
    assert alert["severity"] == "warning"
    assert alert["subject"] == crasher.id and alert["name"] == "crasher"
    assert "RuntimeError: crasher was told to crash" in alert["message"]
    assert collector.on(alert_topic(crasher.id)) == [alert]


async def test_a_crash_loop_is_reported_once_per_cooldown(system: ActorSystem) -> None:
    _, collector = await start(system)
    supervisor = Supervisor(system, max_restarts=100, window_s=1, name="sup")
    supervisor.add("crasher", Crasher)
    await supervisor.start()
    for n in range(5):
        await system.send("crasher", {"n": n})
    await collector.wait_for(lambda: bool(collector.alerts("crash")))
    with trio.move_on_after(0.5):
        await collector.wait_for(lambda: len(collector.alerts("crash")) > 1)
    assert len(collector.alerts("crash")) == 1


async def test_a_supervisor_giving_up_raises_a_critical_alert(system: ActorSystem) -> None:
    _, collector = await start(system)
    supervisor = Supervisor(system, max_restarts=0, window_s=10, name="fragile")
    supervisor.add("crasher", Crasher)
    await supervisor.start()

    await system.send("crasher", {"go": True})
    await collector.wait_for(lambda: bool(collector.alerts("gave_up")))
    await trio.sleep(0.1)  # any duplicate report would have arrived by now

    (gave_up,) = collector.alerts("gave_up")
    assert gave_up["severity"] == "critical"
    assert gave_up["subject"] == supervisor.id and gave_up["name"] == "fragile"
    assert collector.on(SYSTEM_ALERT_TOPIC) == [gave_up]
    assert [a["name"] for a in collector.alerts("crash")] == ["crasher"]


# ---- lifecycle -------------------------------------------------------------------------------


async def test_nothing_the_monitor_started_outlives_it(system: ActorSystem) -> None:
    before = all_tasks()
    streams = len(system._events._streams)
    monitor = await system.spawn(MonitorActor, config=MonitorConfig(interval_s=0.01))
    assert len(all_tasks()) > len(before)
    assert len(system._events._streams) == streams + 1
    await trio.sleep(0.05)

    with trio.fail_after(5):
        await monitor.stop()
        await trio.testing.wait_all_tasks_blocked()  # the root supervisor's bookkeeping ends

    assert all_tasks() == before
    assert len(system._events._streams) == streams


class FragileMonitor(MonitorActor):
    """A monitor that crashes when told to, to see what a crash does to its tasks."""

    async def _process(self, message: dict[str, Any]) -> object:
        if "crash" in message:
            raise RuntimeError("told to crash")
        return await super()._process(message)


async def test_a_crashed_monitor_takes_its_tasks_along_and_its_restart_brings_new_ones(
    system: ActorSystem,
) -> None:
    collector = await system.spawn(Collector, name="collector", filters=[HEALTH_TOPIC])
    supervisor = Supervisor(system, name="sup")
    supervisor.add(
        MONITOR_NAME, FragileMonitor, config=MonitorConfig(interval_s=0.01), source=FakeSource()
    )
    await supervisor.start()
    await collector.wait_for(lambda: len(collector.seen) >= 1)
    running = all_tasks()

    def more_than(seen: int) -> Callable[[], bool]:
        return lambda: len(collector.seen) > seen

    async with system.events() as events:
        for _ in range(3):
            await system.send(MONITOR_NAME, {"crash": True})
            await collector.wait_for(more_than(len(collector.seen)))  # ticking again
        crashes = [e for e in drain(events) if e.kind is EventKind.CRASHED]

    # The supervisor sees the crash itself, not an exception group from the monitor's nursery.
    assert [type(e.exception) for e in crashes] == [RuntimeError] * 3
    monitor = system.lookup(MONITOR_NAME)
    assert monitor is not None and monitor.statistics().crashes == 3
    assert len(all_tasks()) == len(running)
    await supervisor.stop()


class BrokenMonitor(MonitorActor):
    async def on_start(self) -> None:
        await super().on_start()
        raise OSError("cannot open the metrics file")


async def test_a_monitor_that_fails_to_start_reports_its_own_error_and_leaves_nothing(
    system: ActorSystem,
) -> None:
    before = all_tasks()
    with pytest.raises(ActorStartFailed) as failure:
        await system.spawn(BrokenMonitor, config=MonitorConfig(interval_s=0.01))
    assert isinstance(failure.value.error, OSError)
    await trio.testing.wait_all_tasks_blocked()
    assert all_tasks() == before


async def test_a_failing_metrics_source_leaves_the_monitor_running(
    system: ActorSystem, caplog: pytest.LogCaptureFixture
) -> None:
    source = FakeSource()
    monitor, collector = await start(system, source)
    source.set(cpu_percent=99.0)
    await tick(system, collector)
    source.sample = OSError("no /proc here")
    health = await tick(system, collector)
    await tick(system, collector)

    assert health["process"] is None and health["machine"] is None
    assert health["status"] == "critical"  # an unknown CPU use is not a recovery
    assert [a["resolved"] for a in collector.alerts("cpu")] == [False]
    assert len(collector.on(HEALTH_TOPIC)) == 3
    assert monitor.statistics().crashes == 0
    failures = [r for r in caplog.records if "metrics source failed" in r.getMessage()]
    assert len(failures) == 1

    source.sample = CALM
    health = await tick(system, collector)
    assert health["process"] is not None
    assert collector.alerts("cpu")[-1]["resolved"] is True


async def test_an_unknown_request_is_rejected_not_a_crash(system: ActorSystem) -> None:
    monitor, _ = await start(system)
    for message in [{"get": "weather"}, {"event": "x"}, {"get": "health", "extra": 1}, {}]:
        with pytest.raises(MessageRejected, match="unknown request") as rejected:
            await system.ask(MONITOR_NAME, message)
        assert rejected.value.target == MONITOR_NAME
    assert monitor.statistics().crashes == 0
    assert monitor.state is ActorState.RUNNING


async def test_only_the_monitor_itself_can_feed_it_events(system: ActorSystem) -> None:
    """An ``event`` from anyone else would be a forged alert: it is rejected, unseen."""
    _, collector = await start(system)
    forged = {"kind": "crashed", "name": "database", "id": "x-database", "error": "forged"}
    with pytest.raises(MessageRejected):
        await system.ask(MONITOR_NAME, {"event": forged})
    await system.send(MONITOR_NAME, {"event": forged})
    await tick(system, collector)
    assert not [topic for topic, _, _ in collector.seen if "alert" in topic]


async def test_keyword_arguments_override_single_settings() -> None:
    monitor = MonitorActor(
        config=MonitorConfig(interval_s=5, silent_after_s=10), source=FakeSource(), interval_s=1
    )
    assert monitor.name == MONITOR_NAME
    assert (monitor.config.interval_s, monitor.config.silent_after_s) == (1, 10)
    with pytest.raises(ValueError, match="interval_s"):
        MonitorActor(config=MonitorConfig(), source=FakeSource(), interval_s=-1)


def test_the_psutil_source_measures_this_process() -> None:
    sample = PsutilSource()()
    assert sample.rss_bytes > 0
    assert sample.threads >= 1
    assert sample.cpu_percent >= 0
    assert 0 < sample.memory_percent <= 100
    assert sample.uptime_s >= 0


# ---- the cooldown rule on its own ------------------------------------------------------------


def test_the_cooldown_admits_one_alert_per_key_per_period() -> None:
    cooldown = AlertCooldown(60)
    key = ("cpu", "node")
    assert cooldown.admit(key, Severity.WARNING, 0) == 0
    assert cooldown.admit(key, Severity.WARNING, 30) is None
    assert cooldown.admit(("cpu", "other"), Severity.WARNING, 30) == 0
    assert cooldown.admit(key, Severity.INFO, 59) is None
    assert cooldown.admit(key, Severity.WARNING, 60) == 2
    assert cooldown.admit(key, Severity.WARNING, 61) is None


def test_the_cooldown_lets_an_escalation_through_but_not_a_relapse() -> None:
    cooldown = AlertCooldown(60)
    key = ("silent", "id")
    assert cooldown.admit(key, Severity.WARNING, 0) == 0
    assert cooldown.admit(key, Severity.CRITICAL, 1) == 0
    assert cooldown.admit(key, Severity.WARNING, 2) is None
    assert cooldown.admit(key, Severity.CRITICAL, 3) is None


def test_the_cooldown_forgets_quiet_keys_but_keeps_ones_with_suppressed_repeats() -> None:
    cooldown = AlertCooldown(10)
    assert cooldown.admit(("a", "x"), Severity.WARNING, 0) == 0
    assert cooldown.admit(("b", "x"), Severity.WARNING, 0) == 0
    assert cooldown.admit(("b", "x"), Severity.WARNING, 5) is None
    cooldown.prune(20)
    assert len(cooldown) == 1
    assert cooldown.admit(("b", "x"), Severity.WARNING, 20) == 1
    with pytest.raises(ValueError, match="cooldown_s"):
        AlertCooldown(-1)


async def test_a_tick_is_taken_from_the_program_that_runs_the_monitor_not_from_other_actors(
    system: ActorSystem,
) -> None:
    """Another actor (the MQTT bridge relaying any broker client) must not be able to make
    the monitor sample and publish for every actor at will."""

    class Relay(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            return await self.ask(MONITOR_NAME, message)

    monitor, _ = await start(system)
    await system.spawn(Relay, name="relay")
    with pytest.raises(MessageRejected):
        await system.ask("relay", {"tick": 1})
    assert monitor.statistics().processed == 1  # it was refused, not sampled on
    health = await system.ask(MONITOR_NAME, {"tick": 1})
    assert health["status"] == "ok"


# ---- what actors report about themselves (Actor.telemetry) ------------------------------------


class Reporting(Actor):
    """Reports a counter of its own through the telemetry hook."""

    report: Any = {"jobs": {"done": 3, "kind": "demo"}}

    async def _process(self, message: dict[str, Any]) -> object:
        return None

    def telemetry(self) -> Any:
        if isinstance(self.report, Exception):
            raise self.report
        return self.report


async def test_what_an_actor_reports_rides_in_its_heartbeat_and_metrics_as_details(
    system: ActorSystem,
) -> None:
    reporting = await system.spawn(Reporting, name="reporting")
    idle = await system.spawn(Idle, name="idle")
    _, collector = await start(system)

    await tick(system, collector)

    (heartbeat,) = collector.on(heartbeat_topic(reporting.id))
    (metrics,) = collector.on(metrics_topic(reporting.id))
    assert heartbeat["details"] == metrics["details"] == {"jobs": {"done": 3, "kind": "demo"}}
    assert ActorHeartbeat.from_message(heartbeat).details == heartbeat["details"]
    # An actor that reports nothing publishes exactly the keys it always did.
    assert set(collector.on(heartbeat_topic(idle.id))[0]) == HEARTBEAT_KEYS
    assert set(collector.on(metrics_topic(idle.id))[0]) == METRICS_KEYS


@pytest.mark.parametrize("report", [RuntimeError("broken gauge"), {"when": object()}])
async def test_a_failing_report_is_logged_once_and_left_out(
    system: ActorSystem, caplog: pytest.LogCaptureFixture, report: Any
) -> None:
    reporting = await system.spawn(Reporting, name="reporting")
    reporting.report = report
    _, collector = await start(system)

    await tick(system, collector)
    await tick(system, collector)

    heartbeats = collector.on(heartbeat_topic(reporting.id))
    assert len(heartbeats) == 2 and all("details" not in h for h in heartbeats)
    said = [r for r in caplog.records if "telemetry of actor 'reporting' failed" in r.getMessage()]
    assert len(said) == 1


async def test_a_node_down_is_a_warning_in_force_until_the_node_is_back(
    system: ActorSystem,
) -> None:
    _, collector = await start(system, FakeSource())

    def node_event(kind: EventKind, reason: str | None) -> ActorEvent:
        return ActorEvent(kind, "kitchen", "kitchen", reason=reason, node="kitchen")

    system._events.emit(node_event(EventKind.NODE_DOWN, "offline: connection lost"))
    await collector.wait_for(lambda: bool(collector.alerts("node_down")))
    health = await tick(system, collector)
    assert [(a["kind"], a["subject"]) for a in health["alerts"]] == [("node_down", "kitchen")]
    system._events.emit(node_event(EventKind.NODE_UP, None))
    await collector.wait_for(lambda: len(collector.alerts("node_down")) == 2)
    down, back = collector.alerts("node_down")
    assert (down["severity"], down["subject"], down["resolved"]) == ("warning", "kitchen", False)
    assert "offline: connection lost" in down["message"]
    assert (back["severity"], back["resolved"]) == ("info", True)
    assert (await tick(system, collector))["alerts"] == []

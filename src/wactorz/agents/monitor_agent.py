"""The health monitor: samples the process and every actor, publishes what it sees, raises alerts.

`MonitorActor` (named ``monitor``) wakes every ``interval_s`` seconds. It samples this
process and machine through a `MetricsSource` (psutil by default: a few cheap calls,
about 0.2 ms in all, made inline), reads `Actor.statistics` of every registered actor,
and publishes on the actor system's local topics. The MQTT bridge forwards those topics
to the broker under its ``topic_prefix`` (`FORWARDED_TOPICS` lists the filters), so a
dashboard sees the same payloads locally and remotely.

What it publishes, and every key of it, is the telemetry contract, `wactorz.telemetry`
(its topic names and `Severity`, once defined here, are still importable from here).
Every tick, in this order: for every actor an `ActorHeartbeat` on
``agents/<id>/heartbeat`` and its `ActorMetrics` on ``agents/<id>/metrics``; then the
alerts the tick raised or cleared; then the node's `SystemHealth` on ``system/health``
and its `NodeHeartbeat` on ``nodes/<node>/heartbeat``. ``uptime_s``, ``process`` and
``machine`` are None while the metrics source fails (the monitor logs it once and
carries on with the actors).

Alerts (`PublishedAlert`) go to ``agents/<id>/alert`` when they concern one actor, else
to ``system/alert``, and every alert also to ``alerts``, the local feed the
visualization subscribes to (the bridge need not forward it: it repeats the other two).

The kinds, from `MonitorConfig`:

- ``cpu``: this process uses more than ``cpu_alert_percent`` of a core (a Trio event loop
  runs on one core, so near 100 it is saturated);
- ``memory``: the machine has more than ``memory_alert_percent`` of its memory in use;
- ``mailbox``: an actor's mailbox is at least ``mailbox_alert_ratio`` full;
- ``silent``: an actor has had messages waiting and handled none of them for
  ``silent_after_s`` (measured from the later of its last activity and the first tick
  that saw it stuck), or has been in ``on_start`` that long. An idle actor with an
  empty mailbox is never silent: having nothing to do is healthy;
- ``crash``: an actor crashed (seen on `ActorSystem.events`);
- ``gave_up``: a supervisor passed its restart limit and stopped its children. A
  supervisor that contains the monitor itself stops the monitor before it gives up, so
  that one is reported by whoever runs it (the service logs it and exits);
- ``node_down``: another node on the MQTT broker went down (a ``node_down`` event; the
  subject is the node's name), in force until its ``node_up``, when it is resolved.

Severity: a threshold crossed is a warning, and critical once halfway from the threshold
to 100 % (CPU, memory), at a full mailbox, or when silent for twice ``silent_after_s``;
a crash and a node down are warnings, a give-up critical. ``cpu``, ``memory``, ``mailbox``,
``silent`` and ``node_down`` are conditions in force until they clear: when one clears
after its alert was published, an ``info`` alert with ``resolved: true`` says so. The
health's ``status`` is the worst severity among the conditions in force, or ``"ok"``.

Cooldown: an alert with the same ``(kind, subject)`` as one published less than
``alert_cooldown_s`` ago is suppressed, unless it is more severe, so a flapping actor
cannot flood the feed. The next one published carries in ``suppressed`` how many were
held back since.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final, Protocol, final

import attrs
import psutil
import trio

import wactorz
from wactorz.config import MonitorConfig, get_settings
from wactorz.core.actor import Actor, ActorState, ActorStatistics
from wactorz.core.errors import MessageRejected, SupervisorGaveUp, WactorzError, describe_error
from wactorz.core.events import NODE_KINDS, ActorEvent, EventKind
from wactorz.core.mailbox import check_message
from wactorz.core.registry import ActorSystem
from wactorz.telemetry import (
    ALERTS_TOPIC,
    FORWARDED_TOPICS,
    HEALTH_TOPIC,
    SYSTEM_ALERT_TOPIC,
    ActiveAlert,
    ActorHeartbeat,
    ActorMetrics,
    Failure,
    MachineUsage,
    NodeHeartbeat,
    ProcessUsage,
    PublishedAlert,
    Severity,
    SystemHealth,
    alert_topic,
    heartbeat_topic,
    metrics_topic,
    node_heartbeat_topic,
)

__all__ = [
    "ALERTS_TOPIC",
    "FORWARDED_TOPICS",
    "HEALTH_TOPIC",
    "MONITOR_NAME",
    "SYSTEM_ALERT_TOPIC",
    "Alert",
    "AlertCooldown",
    "MetricsSource",
    "MonitorActor",
    "ProcessSample",
    "PsutilSource",
    "Severity",
    "alert_topic",
    "heartbeat_topic",
    "metrics_topic",
    "node_heartbeat_topic",
]

logger = logging.getLogger("wactorz.monitor")

MONITOR_NAME: Final = "monitor"
"""The name the monitor runs under, so that other actors can address it."""


# ---- what is measured ----------------------------------------------------------------------


@final
@attrs.frozen
class ProcessSample:
    """One measurement of this process and the machine it runs on.

    ``cpu_percent`` is this process's CPU use since the previous sample (100 is one core
    busy); ``system_cpu_percent`` the machine's, over all cores; ``memory_percent`` the
    share of the machine's memory in use. ``open_fds`` and ``load_average`` are None where
    the platform cannot tell.
    """

    cpu_percent: float
    rss_bytes: int
    threads: int
    open_fds: int | None
    system_cpu_percent: float
    memory_percent: float
    load_average: tuple[float, float, float] | None
    uptime_s: float


class MetricsSource(Protocol):
    """Anything the monitor can call, without awaiting, for a fresh `ProcessSample`.

    It is called on the event loop once per tick, so it must be quick: no sleeping, no
    waiting on other processes.
    """

    def __call__(self) -> ProcessSample: ...


@final
class PsutilSource:
    """The real `MetricsSource`: this process and machine as psutil sees them.

    CPU percentages are measured between consecutive calls (psutil's non-blocking mode;
    the constructor takes the first reading, so the first sample is meaningful too).
    """

    def __init__(self, process: psutil.Process | None = None) -> None:
        self._process = process if process is not None else psutil.Process()
        self._process.cpu_percent(None)
        psutil.cpu_percent(None)
        self._created = self._process.create_time()

    def __call__(self) -> ProcessSample:
        process = self._process
        try:
            open_fds: int | None = process.num_fds()
        except (AttributeError, psutil.Error):  # not on Windows
            open_fds = None
        try:
            load = os.getloadavg()
        except (AttributeError, OSError):
            load = None
        return ProcessSample(
            cpu_percent=process.cpu_percent(None),
            rss_bytes=process.memory_info().rss,
            threads=process.num_threads(),
            open_fds=open_fds,
            system_cpu_percent=psutil.cpu_percent(None),
            memory_percent=psutil.virtual_memory().percent,
            load_average=load,
            uptime_s=max(0.0, time.time() - self._created),
        )


# ---- alerts ---------------------------------------------------------------------------------


_PROCESS_KINDS: Final = frozenset({"cpu", "memory"})


@final
@attrs.frozen
class Alert:
    """Something the monitor warns about (see the module docstring for the kinds).

    ``subject`` identifies what the alert is about, so that ``(kind, subject)`` names one
    condition: an actor's or supervisor's id, or the node name for the process and
    machine. ``actor_id`` is set when the subject is an actor: the alert then goes to
    that actor's alert topic.
    """

    kind: str
    severity: Severity
    subject: str
    message: str
    name: str | None = None
    actor_id: str | None = None
    value: float | None = None
    threshold: float | None = None
    resolved: bool = False

    @property
    def key(self) -> tuple[str, str]:
        """``(kind, subject)``: what the cooldown counts repeats by."""
        return (self.kind, self.subject)

    @property
    def topic(self) -> str:
        """``agents/<id>/alert`` for an alert about an actor, else ``system/alert``."""
        return alert_topic(self.actor_id) if self.actor_id else SYSTEM_ALERT_TOPIC

    def resolve(self) -> Alert:
        """The ``info`` alert saying this condition has cleared."""
        return attrs.evolve(
            self, severity=Severity.INFO, resolved=True, message=f"cleared: {self.message}"
        )

    @property
    def active(self) -> ActiveAlert:
        """The condition as the health's ``alerts`` and ``{"get": "alerts"}`` list it."""
        return ActiveAlert(kind=self.kind, subject=self.subject, severity=self.severity)

    def to_message(self, *, node: str, time: float, suppressed: int = 0) -> dict[str, Any]:
        """The alert as published (`wactorz.telemetry.PublishedAlert` documents the keys)."""
        return PublishedAlert(
            kind=self.kind,
            severity=self.severity,
            subject=self.subject,
            name=self.name,
            node=node,
            time=time,
            message=self.message,
            value=self.value,
            threshold=self.threshold,
            resolved=self.resolved,
            suppressed=suppressed,
        ).to_message()


@attrs.define
class _Sent:
    at: float
    severity: Severity
    suppressed: int = 0


@final
class AlertCooldown:
    """Decides which alerts get through: one per ``(kind, subject)`` per ``cooldown_s``.

    An alert more severe than the last one let through for its key passes at once (an
    escalation is news). Times come from the caller (`trio.current_time` in the monitor),
    so the rule is a pure function of what it was told.
    """

    def __init__(self, cooldown_s: float) -> None:
        if not cooldown_s >= 0:
            raise ValueError(f"cooldown_s must be 0 or more seconds, not {cooldown_s!r}")
        self.cooldown_s = cooldown_s
        self._sent: dict[tuple[str, str], _Sent] = {}

    def admit(self, key: tuple[str, str], severity: Severity, now: float) -> int | None:
        """Let an alert through (return how many were suppressed before it) or not (None)."""
        sent = self._sent.get(key)
        if sent is None or now - sent.at >= self.cooldown_s or severity.rank > sent.severity.rank:
            self._sent[key] = _Sent(now, severity)
            return 0 if sent is None else sent.suppressed
        sent.suppressed += 1
        return None

    def prune(self, now: float) -> None:
        """Forget keys whose cooldown is over and that have no suppressed repeats to report."""
        for key in [
            key
            for key, sent in self._sent.items()
            if not sent.suppressed and now - sent.at >= self.cooldown_s
        ]:
            del self._sent[key]

    def __len__(self) -> int:
        return len(self._sent)


# ---- the actor -------------------------------------------------------------------------------


class MonitorActor(Actor):
    """Publishes heartbeats, metrics and health every ``interval_s`` and raises alerts.

    Its settings come from ``config`` (default: the process-wide ``monitor`` settings);
    keyword arguments named like `MonitorConfig` fields override single values.
    ``source`` replaces the psutil measurements, for tests and for embedding.

    The monitor owns two background tasks, which live exactly as long as each
    incarnation: a clock that sends it ``{"tick": n}`` every ``interval_s`` (skipped while
    the previous tick is still waiting, so a busy monitor never piles them up), and a
    listener that turns crash and give-up events into ``{"event": {...}}`` messages (a
    `wactorz.telemetry.Failure` inside). All of its state therefore changes in
    `_process`, one message at a time.

    Messages it understands: ``{"get": "health"}`` answers with the latest health payload
    (None before the first tick); ``{"get": "alerts"}`` with the active alert conditions;
    ``{"tick": n}``, from code outside any actor (``system.ask``, the program that runs the
    monitor), samples and publishes now, and answers with the health payload. Anything else
    is refused with `MessageRejected`, and so is a tick from another actor (the MQTT bridge
    relays any broker client: a tick would let anyone make the monitor sample and publish
    as often as they like); ``{"event": ...}`` is accepted only from the monitor itself,
    so that nobody else can forge an alert.
    """

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        config: MonitorConfig | None = None,
        source: MetricsSource | None = None,
        interval_s: float | None = None,
        cpu_alert_percent: float | None = None,
        memory_alert_percent: float | None = None,
        silent_after_s: float | None = None,
        mailbox_alert_ratio: float | None = None,
        alert_cooldown_s: float | None = None,
    ) -> None:
        super().__init__(system, name=MONITOR_NAME if name is None else name)
        overrides: dict[str, Any] = {
            "interval_s": interval_s,
            "cpu_alert_percent": cpu_alert_percent,
            "memory_alert_percent": memory_alert_percent,
            "silent_after_s": silent_after_s,
            "mailbox_alert_ratio": mailbox_alert_ratio,
            "alert_cooldown_s": alert_cooldown_s,
        }
        base = config if config is not None else get_settings().monitor
        self.config: MonitorConfig = attrs.evolve(
            base, **{key: value for key, value in overrides.items() if value is not None}
        )
        self._source: MetricsSource = source if source is not None else PsutilSource()
        self._cooldown = AlertCooldown(self.config.alert_cooldown_s)
        self._active: dict[tuple[str, str], Alert] = {}
        self._shown: set[tuple[str, str]] = set()
        self._nodes_down: dict[str, Alert] = {}
        """Other nodes down now (from ``node_down`` events), each with its alert."""
        self._progress: dict[str, tuple[int, float]] = {}
        self._previous_tick: tuple[float, dict[str, int]] | None = None
        self._health: SystemHealth | None = None
        self._ticks = 0
        self._tick_pending = False
        self._ticks_skipped = 0
        self._bad_details: set[str] = set()
        """Actors whose telemetry failed: said once each."""
        self._source_failing = False

    # ---- lifecycle: the background tasks belong to the incarnation -------------------------

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        # The clock and the event listener live exactly as long as this incarnation; the
        # monitor counts as started once the listener is subscribed, so no crash event
        # emitted after start-up can be missed.
        async with trio.open_nursery() as nursery:
            await nursery.start(self._listen)
            nursery.start_soon(self._clock)
            task_status.started()

    async def _clock(self) -> None:
        interval = self.config.interval_s
        next_at = trio.current_time() + interval
        while True:
            await trio.sleep_until(next_at)
            self._request_tick()
            # A late wake-up (a blocked loop, a suspended laptop) is not made up with a burst.
            next_at = max(next_at + interval, trio.current_time())

    def _request_tick(self) -> None:
        if self._tick_pending:
            self._ticks_skipped += 1
            return
        try:
            self.send_nowait(self.id, {"tick": self._ticks + 1})
        except WactorzError:  # a full mailbox, or the actor is being unregistered
            self._ticks_skipped += 1
            return
        self._tick_pending = True

    async def _listen(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with self.system.events() as events:
            task_status.started()
            async for event in events:
                if _is_news(event):
                    await self.send(self.id, {"event": Failure.from_event(event).to_message()})
                elif event.node is not None and event.kind in NODE_KINDS:
                    news = {"kind": event.kind.value, "node": event.node, "reason": event.reason}
                    await self.send(self.id, {"node_event": news})

    # ---- messages -------------------------------------------------------------------------

    async def _process(self, message: dict[str, Any]) -> object:
        if "tick" in message and self.sender in (None, self.id):
            # Its own clock, or the program that runs it: a tick from another actor (the
            # MQTT bridge relaying any broker client, say) would let anyone make it sample
            # and publish for every actor, as often as they like.
            self._tick_pending = False
            return await self._tick()
        if "event" in message and self.sender == self.id:
            # Only its own event listener feeds it events: from anyone else an "event"
            # would be a forged alert.
            await self._on_event(Failure.from_message(message["event"]))
            return None
        if "node_event" in message and self.sender == self.id:
            await self._on_node_event(message["node_event"])
            return None
        request = message.get("get")
        if request == "health" and len(message) == 1:
            return None if self._health is None else self._health.to_message()
        if request == "alerts" and len(message) == 1:
            return [alert.active.to_message() for alert in self._active.values()]
        raise MessageRejected("unknown request: send {'get': 'health'} or {'get': 'alerts'}")

    async def _tick(self) -> dict[str, Any]:
        self._ticks += 1
        now, wall = trio.current_time(), time.time()
        system = self.system
        node = system.node
        sample = self._sample()
        actors = system.actors()
        everyone = [actor.statistics() for actor in actors]
        details = {actor.id: self._details_of(actor) for actor in actors if _reports(actor)}

        conditions: dict[tuple[str, str], Alert] = {a.key: a for a in self._nodes_down.values()}
        if sample is not None:
            for alert in self._check_process(sample, node):
                conditions[alert.key] = alert
        else:  # not knowing is not a recovery: keep what was active
            conditions.update((k, a) for k, a in self._active.items() if k[0] in _PROCESS_KINDS)
        rows: list[tuple[ActorStatistics, ActorMetrics]] = []
        for stats in everyone:
            metrics = self._actor_metrics(stats, now, wall, node, details.get(stats.id))
            rows.append((stats, metrics))
            for alert in self._check_actor(stats, metrics):
                conditions[alert.key] = alert
        live = {stats.id for stats in everyone}
        for gone in self._progress.keys() - live:
            del self._progress[gone]
        self._previous_tick = (now, {stats.id: stats.processed for stats in everyone})

        for stats, metrics in rows:
            await self.publish(
                heartbeat_topic(stats.id), _heartbeat(stats, wall, node, metrics.details)
            )
            await self.publish(metrics_topic(stats.id), metrics.to_message())
        await self._raise(conditions, now, wall)
        health = self._health_payload(sample, everyone, conditions, wall, node)
        self._health = health
        message = health.to_message()
        await self.publish(HEALTH_TOPIC, message)
        heartbeat = NodeHeartbeat(
            node=node,
            time=wall,
            pid=os.getpid(),
            version=wactorz.__version__,
            uptime_s=health.uptime_s,
            status=health.status,
            actors=len(everyone),
        )
        await self.publish(node_heartbeat_topic(node), heartbeat.to_message())
        return message

    def _sample(self) -> ProcessSample | None:
        """Measure the process, or return None (and say so once) if the source fails.

        A broken source must not crash the monitor: restarted every tick, it would use up
        its supervisor's restart limit and take the service down with it.
        """
        try:
            sample = self._source()
        except Exception:
            if not self._source_failing:
                logger.warning(
                    "monitor: the metrics source failed; process and machine metrics are "
                    "missing until it recovers",
                    exc_info=True,
                )
            self._source_failing = True
            return None
        if self._source_failing:
            logger.info("monitor: the metrics source works again")
            self._source_failing = False
        return sample

    async def _on_event(self, failure: Failure) -> None:
        alert = _failure_alert(failure, self.system.node)
        suppressed = self._cooldown.admit(alert.key, alert.severity, trio.current_time())
        if suppressed is not None:
            await self._publish_alert(alert, suppressed, time.time())

    async def _on_node_event(self, news: Mapping[str, Any]) -> None:
        """Another node went down (a warning, in force until it is back) or came back."""
        node, wall = str(news["node"]), time.time()
        key = ("node_down", node)
        if news["kind"] == EventKind.NODE_DOWN.value:
            alert = Alert(
                "node_down",
                Severity.WARNING,
                node,
                f"node {node!r} is down ({news.get('reason')}): its actors cannot be reached",
                name=node,
            )
            self._nodes_down[node] = alert
            suppressed = self._cooldown.admit(key, alert.severity, trio.current_time())
            if suppressed is not None:
                self._shown.add(key)
                await self._publish_alert(alert, suppressed, wall)
            return
        down = self._nodes_down.pop(node, None)
        if down is not None and key in self._shown:
            self._shown.discard(key)
            self._active.pop(key, None)
            await self._publish_alert(down.resolve(), 0, wall)

    # ---- checks --------------------------------------------------------------------------

    def _check_process(self, sample: ProcessSample, node: str) -> Iterable[Alert]:
        config = self.config
        if sample.cpu_percent > config.cpu_alert_percent:
            yield Alert(
                "cpu",
                _past(sample.cpu_percent, config.cpu_alert_percent),
                node,
                f"this process is using {sample.cpu_percent:.0f}% CPU "
                f"(alert above {config.cpu_alert_percent:g}%)",
                value=sample.cpu_percent,
                threshold=config.cpu_alert_percent,
            )
        if sample.memory_percent > config.memory_alert_percent:
            yield Alert(
                "memory",
                _past(sample.memory_percent, config.memory_alert_percent),
                node,
                f"{sample.memory_percent:.0f}% of this machine's memory is in use "
                f"(alert above {config.memory_alert_percent:g}%)",
                value=sample.memory_percent,
                threshold=config.memory_alert_percent,
            )

    def _check_actor(self, stats: ActorStatistics, metrics: ActorMetrics) -> Iterable[Alert]:
        config = self.config
        ratio = metrics.mailbox_ratio
        if stats.queued and ratio >= config.mailbox_alert_ratio:
            full = stats.queued >= stats.capacity
            yield Alert(
                "mailbox",
                Severity.CRITICAL if full else Severity.WARNING,
                stats.id,
                f"the mailbox of {stats.name!r} is {'full' if full else f'{ratio:.0%} full'} "
                f"({stats.queued} of {stats.capacity}; alert at "
                f"{config.mailbox_alert_ratio:.0%})",
                name=stats.name,
                actor_id=stats.id,
                value=ratio,
                threshold=config.mailbox_alert_ratio,
            )
        stalled = metrics.stalled_s
        if stalled >= config.silent_after_s:
            severity = (
                Severity.CRITICAL if stalled >= 2 * config.silent_after_s else Severity.WARNING
            )
            if stats.state is ActorState.STARTING:
                what = f"has been starting for {stalled:.0f} s"
            else:
                what = f"has handled nothing for {stalled:.0f} s with {stats.queued} waiting"
            yield Alert(
                "silent",
                severity,
                stats.id,
                f"actor {stats.name!r} {what} (alert after {config.silent_after_s:g} s)",
                name=stats.name,
                actor_id=stats.id,
                value=stalled,
                threshold=config.silent_after_s,
            )

    def _stalled_for(self, stats: ActorStatistics, now: float) -> float:
        """How long ``stats``'s actor has had work waiting without handling any (0 if none)."""
        if stats.state is ActorState.STARTING:
            return max(0.0, now - stats.last_activity)
        previous = self._progress.get(stats.id)
        if previous is None or previous[0] != stats.processed or not stats.queued:
            self._progress[stats.id] = (stats.processed, now)
            return 0.0
        return max(0.0, now - max(previous[1], stats.last_activity))

    def _details_of(self, actor: Actor) -> Mapping[str, Any] | None:
        """What ``actor.telemetry()`` reports, or None (said once per actor) if it fails."""
        try:
            details = actor.telemetry()
            if details is not None:
                check_message(dict(details))
        except Exception as exc:
            if actor.id not in self._bad_details:
                self._bad_details.add(actor.id)
                logger.warning(
                    "monitor: the telemetry of actor %r failed (%s); its heartbeats go "
                    "without details",
                    actor.name,
                    describe_error(exc),
                )
            return None
        return details

    def _actor_metrics(
        self,
        stats: ActorStatistics,
        now: float,
        wall: float,
        node: str,
        details: Mapping[str, Any] | None = None,
    ) -> ActorMetrics:
        rate: float | None = None
        if self._previous_tick is not None:
            then, processed = self._previous_tick
            before = processed.get(stats.id)
            if before is not None and now > then:
                rate = max(0, stats.processed - before) / (now - then)
        return ActorMetrics(
            id=stats.id,
            name=stats.name,
            node=node,
            time=wall,
            state=stats.state,
            queued=stats.queued,
            capacity=stats.capacity,
            mailbox_ratio=stats.queued / stats.capacity if stats.capacity else 0.0,
            processed=stats.processed,
            rate=rate,
            crashes=stats.crashes,
            incarnation=stats.incarnation,
            since_activity_s=max(0.0, now - stats.last_activity),
            stalled_s=self._stalled_for(stats, now),
            details=details,
        )

    # ---- publishing alerts and health ------------------------------------------------------

    async def _raise(
        self, conditions: dict[tuple[str, str], Alert], now: float, wall: float
    ) -> None:
        """Publish the conditions the cooldown lets through, and the ones that cleared."""
        for key, alert in conditions.items():
            suppressed = self._cooldown.admit(key, alert.severity, now)
            if suppressed is not None:
                self._shown.add(key)
                await self._publish_alert(alert, suppressed, wall)
        for key in self._active.keys() - conditions.keys():
            if key in self._shown:
                self._shown.discard(key)
                await self._publish_alert(self._active[key].resolve(), 0, wall)
        self._shown &= conditions.keys()
        self._active = conditions
        self._cooldown.prune(now)

    async def _publish_alert(self, alert: Alert, suppressed: int, wall: float) -> None:
        message = alert.to_message(node=self.system.node, time=wall, suppressed=suppressed)
        log = logging.INFO if alert.severity is Severity.INFO else logging.WARNING
        logger.log(log, "alert (%s): %s", alert.severity, alert.message)
        await self.publish(alert.topic, message)
        await self.publish(ALERTS_TOPIC, message)

    def _health_payload(
        self,
        sample: ProcessSample | None,
        everyone: list[ActorStatistics],
        conditions: dict[tuple[str, str], Alert],
        wall: float,
        node: str,
    ) -> SystemHealth:
        worst = max((alert.severity for alert in conditions.values()), key=_rank, default=None)
        process = machine = None
        if sample is not None:
            process = ProcessUsage(
                cpu_percent=sample.cpu_percent,
                rss_bytes=sample.rss_bytes,
                threads=sample.threads,
                open_fds=sample.open_fds,
            )
            machine = MachineUsage(
                cpu_percent=sample.system_cpu_percent,
                memory_percent=sample.memory_percent,
                load_average=sample.load_average,
            )
        return SystemHealth(
            node=node,
            time=wall,
            status="ok" if worst is None else worst.value,
            uptime_s=sample.uptime_s if sample is not None else None,
            actors=len(everyone),
            supervisors=len(self.system.supervisors()),
            states=dict(Counter(stats.state.value for stats in everyone)),
            crashes=sum(stats.crashes for stats in everyone),
            process=process,
            machine=machine,
            alerts=tuple(alert.active for alert in conditions.values()),
            interval_s=self.config.interval_s,
            ticks_skipped=self._ticks_skipped,
        )


def _rank(severity: Severity) -> int:
    return severity.rank


def _past(value: float, threshold: float) -> Severity:
    """Warning past ``threshold``; critical once halfway from it to 100 %."""
    return Severity.CRITICAL if value >= (threshold + 100) / 2 else Severity.WARNING


def _reports(actor: Actor) -> bool:
    """Whether ``actor``'s kind overrides `Actor.telemetry` (most do not: skip the call)."""
    return type(actor).telemetry is not Actor.telemetry


def _heartbeat(
    stats: ActorStatistics, wall: float, node: str, details: Mapping[str, Any] | None
) -> dict[str, Any]:
    return ActorHeartbeat(
        id=stats.id,
        name=stats.name,
        node=node,
        time=wall,
        state=stats.state,
        incarnation=stats.incarnation,
        details=details,
    ).to_message()


def _is_news(event: ActorEvent) -> bool:
    """Whether ``event`` is a crash or give-up the monitor has not heard about yet."""
    if event.kind is EventKind.GAVE_UP:
        return True
    # A crash caused by a give-up is the supervisor's own failure, reported by its
    # gave_up event.
    return event.kind is EventKind.CRASHED and not isinstance(event.exception, SupervisorGaveUp)


def _failure_alert(failure: Failure, node: str) -> Alert:
    name, subject = failure.name, failure.id or failure.name or node
    if failure.kind is EventKind.GAVE_UP:
        return Alert(
            "gave_up",
            Severity.CRITICAL,
            subject,
            f"supervisor {name!r} gave up ({failure.reason}) and stopped its children",
            name=name,
        )
    detail = failure.error or failure.reason or "no details"
    if failure.reason and failure.error:
        detail = f"{failure.reason}: {detail}"
    return Alert(
        "crash",
        Severity.WARNING,
        subject,
        f"actor {name!r} crashed ({detail})",
        name=name,
        actor_id=failure.id or None,
    )

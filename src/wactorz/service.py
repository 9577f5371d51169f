"""The wactorz service: the actors ``wactorz run`` keeps running, and how it starts and stops them.

`plan_service` decides, from the settings alone, which actors the service runs and what
its start-up banner says; it is the one place a new subsystem (the MQTT bridge, the web
interface, the agents) joins the service. `Service` carries a plan out: it starts an
`ActorSystem` and a root `Supervisor` (``service``, one_for_one) holding the planned
actors, logs the banner, and runs until SIGINT or SIGTERM (or `Service.request_stop`),
then stops the actors in reverse start order and the system after them.

If the service supervisor passes its restart limit it stops its actors and gives up;
`Service.run` then returns `EXIT_GAVE_UP` so that a process manager notices and
restarts the whole process.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, final

import attrs
import trio

import wactorz
from wactorz.agents.monitor_agent import MONITOR_NAME, MonitorActor
from wactorz.config import LoadedSettings, Settings
from wactorz.core.actor import Actor
from wactorz.core.errors import ActorStartFailed
from wactorz.core.events import EventKind, EventStream
from wactorz.core.registry import ActorSystem
from wactorz.core.supervisor import Supervisor

__all__ = [
    "EXIT_FAILED_TO_START",
    "EXIT_GAVE_UP",
    "EXIT_OK",
    "SERVICE_NAME",
    "Service",
    "ServiceChild",
    "ServicePlan",
    "banner_lines",
    "plan_service",
]

logger = logging.getLogger("wactorz.service")

SERVICE_NAME: Final = "service"
"""The name of the supervisor at the root of the service's actors."""

MAX_RESTARTS: Final = 10
RESTART_WINDOW_S: Final = 60.0
"""The service tolerates `MAX_RESTARTS` restarts per `RESTART_WINDOW_S`, then gives up.

More lenient than a library supervisor's default: the service's actors face the outside
world (a broker, an API), and a few failures a minute are weather, not a bug.
"""

WEB_SHUTDOWN_S: Final = 8.0
"""The web interface's time to stop: it closes its WebSockets, lets requests in progress
finish for up to 2 s, and removes its runtime file."""

BRIDGE_SHUTDOWN_S: Final = 10.0
"""The MQTT bridge's time to stop: its goodbyes get 2 s, then the connection closes; a
connection attempt in progress is let finish first (bounded by its connect timeout)."""

LLM_SHUTDOWN_S: Final = 15.0
"""The LLM agent's time to stop: its turns are cancelled, and each stores what it has
(up to 10 s when the disk is slow) and ends its stream (up to 5 s)."""

EXIT_OK: Final = 0
EXIT_GAVE_UP: Final = 1
EXIT_FAILED_TO_START: Final = 1

_SANDBOX_OFF: Final = "off (sandbox.enabled is false: no agent runs code or touches files)"

_STOP_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM)


@final
@attrs.frozen
class ServiceChild:
    """One actor the service runs under its root supervisor.

    ``kwargs`` are passed to the actor class for every incarnation; ``summary`` is how
    the banner lists it (``"monitor (every 5 s)"``). ``listening``, for an actor that
    accepts connections, gives the banner's ``listening:`` entry from the started actor
    (its real address, port 0 resolved).
    """

    name: str
    actor: type[Actor]
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)
    restart: str = "permanent"
    shutdown_s: float | None = None
    summary: str = ""
    listening: Callable[[Actor], str] | None = None


@final
@attrs.frozen
class ServicePlan:
    """What the service will run, decided from the settings before anything starts.

    ``children`` start in order and stop in reverse order. ``mqtt`` is the banner's MQTT
    line; ``listening`` says what accepts connections where (``"web: http://..."``).
    """

    children: tuple[ServiceChild, ...]
    mqtt: str
    listening: tuple[str, ...] = ()
    sandbox: str = attrs.field(default=_SANDBOX_OFF)
    """The banner's sandbox line: off, or the isolation layers runs get (once started)."""


def plan_service(settings: Settings) -> ServicePlan:
    """Decide which actors the service runs for ``settings``, in start order.

    Subsystems join here. A subsystem other actors publish through starts before them
    and so stops after them: the MQTT bridge goes first, so that it forwards the
    monitor's first heartbeats (`wactorz.agents.monitor_agent.FORWARDED_TOPICS`) and
    its last alerts.
    """
    children: list[ServiceChild] = []
    embedded = settings.mqtt.broker == "embedded"
    if settings.mqtt.enabled or embedded:
        # Imported here: aiomqtt and trio-asyncio cost a service without MQTT a tenth of a second.
        from wactorz.interfaces.mqtt.bridge import BRIDGE_NAME, MQTTBridge
        from wactorz.interfaces.mqtt.spawning import load_kinds

        config = settings.mqtt
        broker = f"{config.host}:{config.port}"
        mqtt = f"{broker}{' over TLS' if config.uses_tls else ''}, "
        mqtt += f"topics under '{config.topic_prefix}/'"
        if embedded:
            children.append(_plan_embedded_broker(settings))
            mqtt = f"embedded broker (amqtt) on {mqtt}"
            if config.protocol == "auto":  # amqtt speaks 3.1.1 only: skip the MQTT 5 attempt
                config = attrs.evolve(config, protocol="3.1.1")
        children.append(
            ServiceChild(
                BRIDGE_NAME,
                MQTTBridge,
                {"config": config, "kinds": load_kinds(config.kinds)},
                shutdown_s=BRIDGE_SHUTDOWN_S,
                summary=f"{BRIDGE_NAME} ({broker})",
            )
        )
    else:
        mqtt = "off (mqtt.enabled is false)"
    if settings.web.enabled:
        children.append(_plan_web(settings))
    sandbox = _SANDBOX_OFF
    if settings.sandbox.enabled:
        children += _plan_sandbox(settings)
        sandbox = "on"
    if settings.llm.enabled:  # after the agents whose tools it offers, before the router
        children.append(_plan_llm(settings))
    if settings.web.enabled:  # the router of what comes in through the front door
        children.append(_plan_main(settings))
    if settings.monitor.enabled:
        children.append(
            ServiceChild(
                MONITOR_NAME,
                MonitorActor,
                {"config": settings.monitor},
                summary=f"{MONITOR_NAME} (every {settings.monitor.interval_s:g} s)",
            )
        )
    return ServicePlan(tuple(children), mqtt, sandbox=sandbox)


def _plan_embedded_broker(settings: Settings) -> ServiceChild:
    """The embedded MQTT broker, before the bridge that connects to it."""
    from wactorz.interfaces.mqtt.embedded import BROKER_NAME, EmbeddedBroker

    mqtt = settings.mqtt
    return ServiceChild(
        BROKER_NAME,
        EmbeddedBroker,
        {"host": mqtt.host, "port": mqtt.port, "workdir": settings.data_dir / "broker"},
        shutdown_s=5.0,
        summary=f"{BROKER_NAME} (amqtt on {mqtt.host}:{mqtt.port})",
    )


def _plan_llm(settings: Settings) -> ServiceChild:
    """The LLM agent, which runs even without an API key (each turn then says how to set one)."""
    # Imported here: the anthropic SDK costs a service that runs no LLM agent its import.
    from wactorz.agents.llm_agent import LLM_NAME, LLMAgent

    llm = settings.llm
    key = "API key set" if llm.api_key is not None else "no API key: set ANTHROPIC_API_KEY"
    return ServiceChild(
        LLM_NAME,
        LLMAgent,
        {"config": llm, "history_path": llm.history_file(settings.data_dir)},
        shutdown_s=LLM_SHUTDOWN_S,
        summary=f"{LLM_NAME} ({llm.model}, {key})",
    )


def _plan_main(settings: Settings) -> ServiceChild:
    """The MainActor, which routes what people type (through the web interface, say), with
    the catalogue of agents people may spawn, kept under ``data_dir``."""
    from wactorz.agents.main_actor import MAIN_NAME, MainActor, Spawnable

    spawnable: dict[str, Spawnable] = {}
    if settings.llm.enabled:
        from wactorz.agents.llm_agent import LLMAgent

        llm = settings.llm

        def persona(options: Mapping[str, str]) -> dict[str, Any]:
            changes: dict[str, Any] = dict(options)
            if "tools" in changes:
                changes["tools"] = tuple(t.strip() for t in changes["tools"].split(",") if t)
            return {"config": attrs.evolve(llm, **changes)}

        spawnable["llm"] = Spawnable(
            LLMAgent,
            {"history_path": llm.history_file(settings.data_dir)},
            frozenset({"system_prompt", "model", "tools", "temperature"}),
            "a language-model agent (a persona): its own system prompt, model and tools",
            make=persona,
        )
    if settings.sandbox.enabled:
        from wactorz.agents.code_agent import CodeAgent
        from wactorz.agents.io_agent import IOAgent

        spawnable["code"] = Spawnable(
            CodeAgent, {"config": settings.sandbox}, description="runs snippets in the sandbox"
        )
        spawnable["io"] = Spawnable(
            IOAgent, {"config": settings.sandbox}, description="files and shell in the workspace"
        )
    kwargs = {
        "spawnable": spawnable,
        "spawned_file": settings.data_dir / "spawned.json",
        "session_idle_s": settings.web.session_idle_s,
    }
    return ServiceChild(MAIN_NAME, MainActor, kwargs, summary=f"{MAIN_NAME} (router)")


def _plan_sandbox(settings: Settings) -> list[ServiceChild]:
    """The CodeAgent and the IOAgent, which run what they are given in the sandbox."""
    from wactorz.agents.code_agent import CODE_AGENT_NAME, CodeAgent
    from wactorz.agents.io_agent import IO_AGENT_NAME, IOAgent

    config = settings.sandbox
    shell = "shell allowed" if config.allow_shell else "no shell (sandbox.allow_shell)"
    return [
        ServiceChild(
            CODE_AGENT_NAME,
            CodeAgent,
            {"config": config},
            summary=f"{CODE_AGENT_NAME} ({config.max_concurrent_runs} runs at once)",
        ),
        ServiceChild(
            IO_AGENT_NAME,
            IOAgent,
            {"config": config, "code_agent": CODE_AGENT_NAME},
            summary=f"{IO_AGENT_NAME} (workspace {config.root.absolute()}, {shell})",
        ),
    ]


def _plan_web(settings: Settings) -> ServiceChild:
    """The web interface, with its token: the configured one, else one made for this run.

    Made here, once, rather than by the actor: a restarted web interface keeps the token,
    so that the browser's cookie and the banner's URL stay good.
    """
    # Imported here: hypercorn and starlette cost a service without the web interface.
    from wactorz.interfaces.web import WEB_NAME, WebInterface
    from wactorz.interfaces.web.auth import generate_token

    web = settings.web
    token = web.token if web.token is not None else generate_token()
    return ServiceChild(
        WEB_NAME,
        WebInterface,
        {"config": web, "token": token, "token_generated": web.token is None},
        shutdown_s=WEB_SHUTDOWN_S,
        summary=f"{WEB_NAME} ({web.host}:{web.port})",
        listening=_web_listening,
    )


def _web_listening(actor: Actor) -> str:
    from wactorz.interfaces.web import WebInterface

    return actor.banner_line() if isinstance(actor, WebInterface) else actor.name


def banner_lines(loaded: LoadedSettings, plan: ServicePlan) -> list[str]:
    """The lines the service logs once it is up: who it is, what it runs, how to stop it."""
    settings = loaded.settings
    config = str(loaded.config_path) if loaded.config_path is not None else "none (defaults)"
    overridden = sum(
        source != "default" and source != str(loaded.config_path)
        for source in loaded.sources.values()
    )
    if overridden:
        s = "" if overridden == 1 else "s"
        config += f", {overridden} value{s} from the environment or flags (see 'wactorz config')"
    actors = ", ".join(child.summary or child.name for child in plan.children) or "none"
    listening = "; ".join(plan.listening) or "nothing listening yet"
    return [
        f"wactorz {wactorz.__version__} running on node {settings.node!r} (pid {os.getpid()})",
        f"config:    {config}",
        f"mqtt:      {plan.mqtt}",
        f"listening: {listening}",
        f"actors:    {actors}",
        f"sandbox:   {plan.sandbox}",
        "stop with Ctrl-C or SIGTERM",
    ]


@final
class Service:
    """Runs a `ServicePlan` until it is told to stop.

    Use it as ``exit_status = trio.run(Service(load_settings()).run)``, or start it in a
    nursery with ``service = await nursery.start(Service(loaded).run)``: `run` reports
    itself started once the banner is logged, with `system` and `supervisor` set.
    """

    def __init__(self, loaded: LoadedSettings, plan: ServicePlan | None = None) -> None:
        self.loaded = loaded
        self.plan = plan if plan is not None else plan_service(loaded.settings)
        self.system: ActorSystem | None = None
        """The running actor system (None before `run` starts it and after it stops)."""
        self.supervisor: Supervisor | None = None
        """The root supervisor of the service's actors."""
        self._stop_send, self._stop_receive = trio.open_memory_channel[tuple[int, str]](math.inf)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask `run` to shut down and return `EXIT_OK`; safe to call from any Trio task."""
        self._stop_send.send_nowait((EXIT_OK, reason))

    async def run(self, *, task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED) -> int:
        """Start the service, run it until told to stop, stop it; return the exit status.

        Returns `EXIT_OK` after SIGINT, SIGTERM or `request_stop`, `EXIT_GAVE_UP` if the
        service supervisor gave up, `EXIT_FAILED_TO_START` if an actor failed to start.
        SIGINT and SIGTERM are caught only while this runs, and only in the main thread.
        """
        settings = self.loaded.settings
        with _stop_signals() as signals:
            async with ActorSystem(node=settings.node) as system:
                self.system = system
                try:
                    return await self._serve(system, signals, task_status)
                finally:
                    self.system = self.supervisor = None

    async def _serve(
        self,
        system: ActorSystem,
        signals: AsyncIterator[int] | None,
        task_status: trio.TaskStatus[Service],
    ) -> int:
        supervisor = Supervisor(
            system, "one_for_one", MAX_RESTARTS, RESTART_WINDOW_S, name=SERVICE_NAME
        )
        for child in self.plan.children:
            supervisor.add(
                child.name,
                child.actor,
                restart=child.restart,
                shutdown_s=child.shutdown_s,
                **child.kwargs,
            )
        async with system.events() as events:
            try:
                await supervisor.start()
            except ActorStartFailed as exc:
                logger.exception(
                    "the service could not start: its actor %r failed to start", exc.name
                )
                return EXIT_FAILED_TO_START
            self.supervisor = supervisor
            for line in banner_lines(self.loaded, self._plan_as_started(system)):
                logger.info("%s", line)
            task_status.started(self)
            async with trio.open_nursery() as watchers:
                if signals is not None:
                    watchers.start_soon(self._watch_signals, signals)
                watchers.start_soon(self._watch_supervisor, events, supervisor)
                status, reason = await self._stop_receive.receive()
                watchers.cancel_scope.cancel()
        if status == EXIT_OK:
            logger.info("stopping (%s)", reason)
        else:
            logger.error("%s; stopping with exit status %d", reason, status)
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                if signals is not None:
                    nursery.start_soon(_note_signals_while_stopping, signals)
                await supervisor.stop()
                await system.stop()
                nursery.cancel_scope.cancel()
        logger.info("stopped")
        return status

    def _plan_as_started(self, system: ActorSystem) -> ServicePlan:
        """The plan with the ``listening`` entries of the actors that now accept connections."""
        listening = list(self.plan.listening)
        for child in self.plan.children:
            actor = system.lookup(child.name)
            if child.listening is not None and actor is not None:
                listening.append(child.listening(actor))
        sandbox = self.plan.sandbox
        if self.loaded.settings.sandbox.enabled:
            from wactorz.agents.code_agent import CODE_AGENT_NAME, CodeAgent

            agent = system.lookup(CODE_AGENT_NAME)
            if isinstance(agent, CodeAgent) and agent.report is not None:
                sandbox = f"on; {agent.report.summary()}"
        return attrs.evolve(self.plan, listening=tuple(listening), sandbox=sandbox)

    async def _watch_signals(self, signals: AsyncIterator[int]) -> None:
        signum = await anext(signals)
        self._stop_send.send_nowait((EXIT_OK, f"received {signal.Signals(signum).name}"))

    async def _watch_supervisor(self, events: EventStream, supervisor: Supervisor) -> None:
        async for event in events:
            ours = event.kind is EventKind.GAVE_UP and event.actor_id == supervisor.id
            # An event storm can overflow the stream; any later event then shows the state.
            if ours or not supervisor.running:
                reason = event.reason if ours else "its restart limit was passed"
                self._stop_send.send_nowait(
                    (
                        EXIT_GAVE_UP,
                        f"the service supervisor gave up ({reason}): its actors kept crashing",
                    )
                )
                return


@contextmanager
def _stop_signals() -> Iterator[AsyncIterator[int] | None]:
    """Catch SIGINT and SIGTERM as messages, if this is the main thread (else None)."""
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
        yield signals


async def _note_signals_while_stopping(signals: AsyncIterator[int]) -> None:
    async for signum in signals:
        logger.warning(
            "received %s while stopping: still waiting for the actors to finish "
            "(each gets its shutdown time, then it is cancelled)",
            signal.Signals(signum).name,
        )

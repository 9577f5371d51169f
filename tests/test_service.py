"""The service: what it plans from the settings, its banner, and how it starts, stops and fails."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from wactorz.agents.monitor_agent import MONITOR_NAME, MonitorActor
from wactorz.config import LoadedSettings, Settings
from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem
from wactorz.service import (
    EXIT_FAILED_TO_START,
    EXIT_GAVE_UP,
    EXIT_OK,
    MAX_RESTARTS,
    SERVICE_NAME,
    Service,
    ServiceChild,
    ServicePlan,
    banner_lines,
    plan_service,
)


def loaded(**changes: Any) -> LoadedSettings:
    settings = Settings(node="testnode").with_overrides(changes)
    return LoadedSettings(settings, {key: "default" for key in changes})


class Recorder(Actor):
    """Logs its stop into a shared list; crashes on any message."""

    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, log: list[str]
    ) -> None:
        super().__init__(system, name=name)
        self.log = log

    async def on_stop(self) -> None:
        self.log.append(self.name)

    async def _process(self, message: dict[str, Any]) -> object:
        raise RuntimeError("told to crash")


class WontStart(Actor):
    async def on_start(self) -> None:
        raise OSError("the port is taken")

    async def _process(self, message: dict[str, Any]) -> object:
        return None


async def start_service(nursery: trio.Nursery, service: Service) -> list[int]:
    """Start ``service.run`` in ``nursery``; the returned list receives its exit status."""
    status: list[int] = []

    async def run(*, task_status: trio.TaskStatus[Service]) -> None:
        status.append(await service.run(task_status=task_status))

    await nursery.start(run)
    return status


# ---- the plan and the banner -------------------------------------------------------------


def test_the_plan_runs_the_monitor_with_its_settings_unless_it_is_disabled() -> None:
    settings = loaded(**{"monitor.interval_s": 2, "web.enabled": False}).settings
    (child,) = plan_service(settings).children
    assert (child.name, child.actor) == (MONITOR_NAME, MonitorActor)
    assert child.kwargs == {"config": settings.monitor}
    assert child.summary == "monitor (every 2 s)"
    disabled = loaded(**{"monitor.enabled": False, "web.enabled": False}).settings
    assert plan_service(disabled).children == ()


def test_the_plan_says_whether_mqtt_is_on() -> None:
    assert plan_service(Settings()).mqtt == "off (mqtt.enabled is false)"
    enabled = plan_service(loaded(**{"mqtt.enabled": True, "mqtt.port": 1884}).settings)
    assert enabled.mqtt == "127.0.0.1:1884, topics under 'wactorz/'"


def test_the_banner_names_the_node_the_config_and_what_runs(tmp_path: Path) -> None:
    plan = ServicePlan((), "off (mqtt.enabled is false)")
    fresh = banner_lines(loaded(), plan)
    assert fresh[0].startswith("wactorz ") and "node 'testnode'" in fresh[0]
    assert fresh[1:5] == [
        "config:    none (defaults)",
        "mqtt:      off (mqtt.enabled is false)",
        "listening: nothing listening yet",
        "actors:    none",
    ]

    path = tmp_path / "wactorz.yaml"
    configured = LoadedSettings(
        Settings(node="x"), {"node": str(path), "mqtt.port": "--mqtt-port"}, path
    )
    listening = ServicePlan((), "on", ("web: http://127.0.0.1:8765",))
    lines = banner_lines(configured, listening)
    assert lines[1] == (
        f"config:    {path}, 1 value from the environment or flags (see 'wactorz config')"
    )
    assert lines[3] == "listening: web: http://127.0.0.1:8765"


# ---- running -------------------------------------------------------------------------------


async def test_the_service_runs_its_actors_until_asked_to_stop_then_stops_them_in_reverse(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="wactorz")
    stops: list[str] = []
    plan = ServicePlan(
        (
            ServiceChild("first", Recorder, {"log": stops}),
            ServiceChild("second", Recorder, {"log": stops}),
        ),
        "off",
    )
    service = Service(loaded(), plan)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            status = await start_service(nursery, service)
            system, supervisor = service.system, service.supervisor
            assert system is not None and supervisor is not None
            assert supervisor.name == SERVICE_NAME
            assert [child.name for child in supervisor.which_children()] == ["first", "second"]
            assert all(child.running for child in supervisor.which_children())
            assert system.node == "testnode"
            service.request_stop("the test is over")
    assert status == [EXIT_OK]
    assert stops == ["second", "first"]
    assert not system.running
    assert service.system is None
    messages = [record.getMessage() for record in caplog.records]
    assert "stopping (the test is over)" in messages
    assert messages[-1] == "stopped"


async def test_the_default_plan_runs_the_monitor() -> None:
    service = Service(loaded(**{"monitor.interval_s": 1000, "web.enabled": False}))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            status = await start_service(nursery, service)
            assert service.system is not None
            monitor = service.system.lookup(MONITOR_NAME)
            assert isinstance(monitor, MonitorActor)
            assert monitor.config.interval_s == 1000
            health = await service.system.ask(MONITOR_NAME, {"tick": 1})
            assert health["node"] == "testnode"
            service.request_stop()
    assert status == [EXIT_OK]


def test_the_sandbox_agents_run_only_when_the_sandbox_is_enabled() -> None:
    assert "code" not in [c.name for c in plan_service(loaded().settings).children]
    assert plan_service(loaded().settings).sandbox.startswith("off (sandbox.enabled is false")
    plan = plan_service(loaded(**{"sandbox.enabled": True}).settings)
    code, io = (c for c in plan.children if c.name in ("code", "io"))
    assert (code.actor.__name__, io.actor.__name__) == ("CodeAgent", "IOAgent")
    assert "no shell (sandbox.allow_shell)" in io.summary


async def test_the_banner_says_which_isolation_layers_runs_get(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wactorz.service")
    changes = {"web.enabled": False, "sandbox.enabled": True, "sandbox.root": str(tmp_path)}
    service = Service(loaded(**changes))
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            status = await start_service(nursery, service)
            assert service.system is not None
            result = await service.system.call_tool(
                "code", "run_code", {"language": "sh", "code": "echo ok"}
            )
            assert result["stdout"] == "ok\n"
            service.request_stop()
    assert status == [EXIT_OK]
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sandbox:")]
    assert line.startswith("sandbox:   on; sandbox layers on: process")
    assert " ".join(result["layers"]) in line.replace(",", "")


async def test_the_service_exits_with_status_1_when_its_supervisor_gives_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stops: list[str] = []
    service = Service(loaded(), ServicePlan((ServiceChild("flaky", Recorder, {"log": stops}),), ""))
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            status = await start_service(nursery, service)
            assert service.system is not None
            for n in range(MAX_RESTARTS + 1):
                await service.system.send("flaky", {"n": n})
    assert status == [EXIT_GAVE_UP]
    assert any(
        record.levelno == logging.ERROR
        and "the service supervisor gave up" in record.getMessage()
        and "exit status 1" in record.getMessage()
        for record in caplog.records
    )


async def test_the_service_exits_with_status_1_when_an_actor_cannot_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = Service(loaded(), ServicePlan((ServiceChild("web", WontStart),), ""))
    with trio.fail_after(10):
        status = await service.run()
    assert status == EXIT_FAILED_TO_START
    (record,) = [
        r for r in caplog.records if r.levelno == logging.ERROR and r.name == "wactorz.service"
    ]
    assert record.getMessage() == "the service could not start: its actor 'web' failed to start"
    assert record.exc_info is not None

"""The HTTP side: /healthz, /metrics as Prometheus text, the API reference, and the service
started as a user starts it."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.interfaces.web_support import ServiceProcess, http, serving
from wactorz import Actor


class Worker(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        return None


async def test_healthz_is_open_and_says_status_node_version_and_actors(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, http(web) as client:
        response = await client.get("/healthz")
        body = response.json()
        assert response.status_code == 200
        assert set(body) == {"status", "node", "version", "actors"}
        assert (body["status"], body["node"], body["actors"]) == ("ok", "webtest", 1)


async def test_metrics_parse_as_prometheus_text_and_count_actors_and_llm_use(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as web, http(web, bearer=True) as client:
        await web.system.spawn(Worker, "worker")
        for _ in range(3):
            await web.system.send("worker", {})
        for report in (
            {"input_tokens": 100, "cost_usd": 0.25},
            {"input_tokens": 150, "cost_usd": 0.5},
            {"input_tokens": 20, "cost_usd": 0.125},
        ):  # the last: a restart
            await web.system.publish("agents/x/heartbeat", {"name": "claude", "llm": report})
        await web.system.publish("agents/x/metrics", {"name": "claude", "llm": "nonsense"})
        # What the monitor publishes for an LLMAgent: its report under "details".
        llm_agent = {"llm": {"input_tokens": 7, "output_tokens": 3, "cost_usd": 0.5}}
        await web.system.publish("agents/y/heartbeat", {"name": "llm", "details": llm_agent})
        await client.get("/healthz")  # a round trip, so the web actor has read its mailbox
        response = await client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        families = {f.name: f for f in text_string_to_metric_families(response.text)}
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in families.values()
            for s in f.samples
        }
        assert samples[("wactorz_actors", (("state", "running"),))] == 2
        assert samples[("wactorz_actor_messages_processed_total", (("actor", "worker"),))] == 3
        assert samples[("wactorz_actor_mailbox_capacity", (("actor", "worker"),))] > 0
        assert ("wactorz_actor_restarts_total", (("actor", "web"),)) in samples
        assert (
            samples[("wactorz_llm_tokens_total", (("agent", "claude"), ("kind", "input")))] == 170
        )
        assert samples[("wactorz_llm_cost_usd_total", (("agent", "claude"),))] == 0.625
        assert samples[("wactorz_llm_tokens_total", (("agent", "llm"), ("kind", "output")))] == 3
        assert samples[("wactorz_llm_cost_usd_total", (("agent", "llm"),))] == 0.5
        assert samples[("wactorz_web_connections", ())] == 0


@pytest.mark.slow
async def test_the_api_reference_is_rendered_on_first_request_and_served(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, http(web, bearer=True) as client:
        assert (await client.get("/docs/api/python")).status_code == 308
        index = await client.get("/docs/api/python/", timeout=120)
        assert index.status_code == 200 and "wactorz" in index.text
        page = await client.get("/docs/api/python/wactorz/interfaces/web.html")
        assert page.status_code == 200 and "WebInterface" in page.text
        assert (await client.get("/docs/api/python/no-such.html")).status_code == 404
    assert any((tmp_path / "docs-cache").iterdir())


@pytest.mark.slow
def test_python_m_wactorz_prints_one_url_with_the_token_and_serves_the_page(
    tmp_path: Path,
) -> None:
    service = ServiceProcess(tmp_path, env={"WACTORZ_WEB__PORT": "0"})
    try:
        found = service.wait_for(r"listening: web at (http://127\.0\.0\.1:(\d+)/)\?token=([\w-]+)")
        base, port, token = found.group(1), found.group(2), found.group(3)
        runtime = tmp_path / "run" / "wactorz" / f"web-{port}.json"
        assert stat.S_IMODE(runtime.stat().st_mode) == 0o600
        assert token in runtime.read_text()
        with httpx.Client(base_url=base, timeout=10) as client:
            login = client.get(f"/?token={token}")
            assert login.status_code == 303 and login.headers["location"] == "/"
            page = client.get("/")
            assert page.status_code == 200 and "<html" in page.text
            assert client.get("/metrics").status_code == 200  # the cookie from the login URL
            assert client.get("/healthz").json()["actors"] == 4  # web, llm, main and monitor
    finally:
        status = service.stop()
    assert status == 0, "\n".join(service.lines)
    assert not runtime.exists()
    assert sum(token in line for line in service.lines) == 1  # the banner, and nowhere else
    assert not any("Traceback" in line for line in service.lines)

"""The ``describe`` request: what the dashboard's details panel shows of one actor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.interfaces.web_support import connect, serving
from wactorz import Actor, Supervisor, tool


class Weather(Actor):
    """An actor with capabilities and tools, as an agent has."""

    capabilities = ("weather", "forecast")

    @tool(
        "The forecast for a city, for the next days.",
        input_schema={
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    )
    async def forecast(self, city: str) -> dict[str, Any]:
        return {"city": city, "sky": "grey"}

    async def _process(self, message: dict[str, Any]) -> object:
        if message.get("crash"):
            raise RuntimeError("no sky today")
        return None


async def test_describe_gives_class_capabilities_tools_supervisor_and_statistics(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        crew = Supervisor(web.system, "one_for_one", 5, 60.0, name="crew")
        await crew.start()
        try:
            await crew.add_and_start("weather", Weather)
            reply = await client.request({"type": "describe", "actor": "weather"})
            actor = reply["reply"]["actor"]
            assert actor["name"] == "weather" and actor["kind"] == "actor"
            assert actor["class"] == f"{Weather.__module__}.Weather"
            assert actor["capabilities"] == ["weather", "forecast"]
            assert actor["tools"] == [
                {
                    "name": "forecast",
                    "description": "The forecast for a city, for the next days.",
                    "input_schema": Weather.tools()[0].input_schema,
                }
            ]
            assert actor["supervisor"] == "crew" and actor["restart"] == "permanent"
            assert actor["state"] == "running" and actor["running"] is True
            assert actor["statistics"]["capacity"] > 0 and actor["protected"] is None
            by_id = await client.request({"type": "describe", "actor": actor["id"]})
            assert by_id["reply"]["actor"]["name"] == "weather"

            # Stopped, it is still described: its class's tools, its supervisor, no statistics.
            await crew.terminate_child("weather")
            stopped = (await client.request({"type": "describe", "actor": "weather"}))["reply"]
            assert stopped["actor"]["running"] is False
            assert stopped["actor"]["state"] == "stopped"
            assert [t["name"] for t in stopped["actor"]["tools"]] == ["forecast"]
            assert stopped["actor"]["statistics"] is None

            supervisor = await client.request({"type": "describe", "actor": "crew"})
            described = supervisor["reply"]["actor"]
            assert described["kind"] == "supervisor" and described["children"] == ["weather"]
            assert "supervisor" in described["protected"]
        finally:
            await crew.stop()


async def test_describe_says_why_the_page_may_not_stop_an_actor(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        own = (await client.request({"type": "describe", "actor": "web"}))["reply"]["actor"]
        assert "front door" in own["protected"]
        assert own["capabilities"] == ["web"] and own["supervisor"] is None


async def test_describe_of_an_unknown_actor_names_the_known_ones(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        missing = await client.request({"type": "describe", "actor": "wether"})
        assert missing["type"] == "error" and missing["code"] == "not_found"
        assert "'wether'" in missing["error"] and "web" in missing["error"]
        refused = await client.request({"type": "describe", "actor": ""})
        assert refused["code"] == "bad_frame"

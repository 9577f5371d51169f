"""Journeys through the dashboard with the real MainActor and a real LLM agent, in a browser.

The service is `tests.interfaces.dashboard_service` in its ``router`` shape: the stock
service's MainActor (which may ``/spawn worker NAME``) and LLM agent, the agent pointed at
a fake Messages API (`wactorz.testing.FakeMessagesAPI`, in this process) and keeping its
history in the test's directory, plus a ``weather`` agent whose ``forecast`` tool the
model calls when asked about the weather. Each journey saves screenshots under its
``tmp_path`` (the path is printed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.interfaces.browser_support import Dashboard, Watched, row, send_chat
from tests.interfaces.stand_in_main import XSS_PROBE
from wactorz.testing import FakeMessagesAPI, RecordedRequest, ScriptedReply, text, tool_use

pytestmark = pytest.mark.slow

WEATHER_REPLY = "Grey and -3 °C in Oslo, says the forecast."


def _answer(request: RecordedRequest) -> ScriptedReply:
    """The fake model: the forecast tool for the weather, else the user's words back."""
    content = request.messages[-1]["content"]
    if isinstance(content, list) and any(b.get("type") == "tool_result" for b in content):
        return text(WEATHER_REPLY)
    said = content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)
    if "weather" in said.lower():
        return tool_use("forecast", {"city": "Oslo"})
    return text(f"You said: {said}")


@pytest.fixture(scope="module")
def fake_api() -> Iterator[FakeMessagesAPI]:
    with FakeMessagesAPI(responder=_answer) as api:
        yield api


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, fake_api: FakeMessagesAPI
) -> Iterator[Dashboard]:
    running = Dashboard(
        tmp_path_factory.mktemp("journeys"),
        env={
            "DASHBOARD_MAIN": "router",
            "WACTORZ_LLM__BASE_URL": fake_api.url,
            "WACTORZ_LLM__API_KEY": "sk-test-journeys",
        },
    )
    try:
        yield running
    finally:
        status = running.service.stop()
    assert status == 0, "\n".join(running.service.lines)


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = Watched(context)
    try:
        yield page
    finally:
        context.close()
    assert page.unexpected_errors() == []


@pytest.fixture
def shots(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "screenshots"
    directory.mkdir()
    yield directory
    print(f"screenshots: {directory}")


def commands_sent(page: Page) -> list[str]:
    """Records the text of every ``command`` frame the page sends from now on."""
    sent: list[str] = []

    def watch(socket: Any) -> None:
        def frame(payload: str | bytes) -> None:
            data = json.loads(payload)
            if data.get("type") == "command":
                sent.append(data["text"])

        socket.on("framesent", frame)

    page.on("websocket", watch)
    return sent


def spawn(page: Page, name: str) -> None:
    """``/spawn worker NAME`` typed in the chat, as a person would; waits for the row."""
    send_chat(page, f"/spawn worker {name}")
    expect(page.locator("#chat-log li.reply").last.locator(".body")).to_contain_text(
        f"started worker '{name}'"
    )
    expect(row(page, name).locator(".state")).to_have_text("running")


def confirm(page: Page, title: str, *, yes: bool = True) -> None:
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text(title)
    dialog.locator(f"button[value={'confirm' if yes else 'cancel'}]").click()
    expect(dialog).to_be_hidden()


def test_an_actor_is_stopped_and_restarted_from_its_details_panel_after_a_confirmation(
    watched: Watched, service: Dashboard, shots: Path
) -> None:
    page = watched.login(service)
    sent = commands_sent(page)
    page.reload()  # so that the recorder sees the page's socket from its start
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    row(page, "weather").click()
    details = page.locator("#details")
    expect(details.locator("#details-name")).to_have_text("weather")
    expect(details.locator("[data-field=class]")).to_contain_text("Weather")
    expect(details.locator("[data-field=facts]")).to_contain_text("service")
    expect(details.locator("[data-field=facts]")).to_contain_text("permanent")
    stop = details.locator("button[data-action=stop]")
    expect(stop).to_be_enabled()
    page.screenshot(path=str(shots / "1-selected.png"), full_page=True)

    stop.click()  # asked first, and a "no" changes nothing
    page.screenshot(path=str(shots / "2-confirmation.png"))
    confirm(page, "Stop weather?", yes=False)
    expect(row(page, "weather").locator(".state")).to_have_text("running")
    assert not any(text.startswith("/stop") for text in sent), sent

    stop.click()
    confirm(page, "Stop weather?")
    expect(row(page, "weather").locator(".state")).to_have_text("stopped")
    expect(details.locator("[data-field=outcome]")).to_contain_text("stopped weather")
    expect(details.locator("[data-field=state]")).to_have_text("stopped")
    expect(stop).to_be_disabled()
    page.screenshot(path=str(shots / "3-stopped.png"), full_page=True)

    details.locator("button[data-action=restart]").click()
    confirm(page, "Restart weather?")
    expect(row(page, "weather").locator(".state")).to_have_text("running")
    expect(details.locator("[data-field=outcome]")).to_contain_text("restarted weather")
    expect(stop).to_be_enabled()
    page.screenshot(path=str(shots / "4-restarted.png"), full_page=True)
    assert [t for t in sent if t.startswith(("/stop", "/restart"))] == [
        "/stop weather",
        "/restart weather",
    ]


def test_the_details_panel_lists_tools_with_their_descriptions(
    watched: Watched, service: Dashboard, shots: Path
) -> None:
    page = watched.login(service)
    row(page, "weather").click()
    details = page.locator("#details")
    expect(details.locator(".chip")).to_have_text(["weather"])
    tool = details.locator(".tools li")
    expect(tool.locator(".tool-name")).to_have_text("forecast(city)")
    expect(tool.locator(".tool-about")).to_have_text(
        "Today's weather in a city: the sky and the temperature in °C."
    )
    expect(details.locator("button[data-action=stop]")).to_be_enabled()
    page.screenshot(path=str(shots / "weather-details.png"), full_page=True)
    # Enter on a focused row selects it too.
    row(page, "llm").focus()
    page.keyboard.press("Enter")
    expect(details.locator("#details-name")).to_have_text("llm")
    expect(details.locator(".tools")).to_contain_text("session_history")
    expect(row(page, "llm")).to_have_attribute("aria-current", "true")


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("main", "the router"),
        ("web", "the front door"),
        ("monitor", "the health monitor"),
        ("service", "a supervisor"),
    ],
)
def test_protected_actors_have_their_controls_disabled_saying_why(
    watched: Watched, service: Dashboard, name: str, why: str
) -> None:
    page = watched.login(service)
    row(page, name).click()
    details = page.locator("#details")
    expect(details.locator("#details-name")).to_have_text(name)
    expect(details.locator("[data-field=protected]")).to_contain_text(f"Protected: {why}")
    for action in ("stop", "restart", "delete"):
        button = details.locator(f"button[data-action={action}]")
        expect(button).to_be_disabled()
        expect(button).to_have_attribute("title", re.compile(f"^Protected: {why}"))
        control = details.locator(f".control:has(button[data-action={action}])")
        expect(control).to_have_attribute("title", re.compile(f"^Protected: {why}"))
    # The router refuses them as well, whoever asks.
    if name != "service":
        refused = service.request({"type": "command", "text": f"/stop {name}"})
        assert (refused["type"], refused["code"]) == ("error", "rejected"), refused


def test_delete_sends_the_command_and_shows_the_routers_answer(
    watched: Watched, service: Dashboard, shots: Path
) -> None:
    page = watched.login(service)
    sent = commands_sent(page)
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    spawn(page, "scratch")
    row(page, "scratch").click()
    delete = page.locator("#details button[data-action=delete]")
    delete.click()
    expect(page.locator("#confirm")).to_be_visible()
    page.keyboard.press("Escape")  # Esc is a "no"
    expect(page.locator("#confirm")).to_be_hidden()
    assert "/delete scratch" not in sent
    delete.click()
    confirm(page, "Delete scratch for good?")
    outcome = page.locator("#details [data-field=outcome]")
    expect(outcome).not_to_have_text("Deleting scratch…")
    expect(outcome).to_contain_text("forgot it")  # the router's answer
    expect(row(page, "scratch")).to_have_count(0)  # gone for good, not stopped
    assert "/delete scratch" in sent
    page.screenshot(path=str(shots / "delete.png"), full_page=True)


def test_the_conversation_comes_back_after_a_reload(
    watched: Watched, service: Dashboard, shots: Path
) -> None:
    page = watched.login(service)
    send_chat(page, "What is the weather in Oslo?")
    reply = page.locator("#chat-log li.reply").last
    expect(reply.locator(".badge")).to_have_text("✓ forecast")
    expect(reply.locator(".body")).to_contain_text(WEATHER_REPLY)
    expect(reply).not_to_have_attribute("aria-busy", "true")
    send_chat(page, "thanks")
    expect(page.locator("#chat-log li.reply").last.locator(".body")).to_have_text(
        "You said: thanks"
    )
    send_chat(page, XSS_PROBE)
    expect(page.locator("#chat-log li.reply").last.locator(".body")).to_have_text(
        f"You said: {XSS_PROBE}"
    )
    session = page.locator("#session").inner_text()
    page.screenshot(path=str(shots / "1-before-reload.png"), full_page=True)

    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-state", "live")
    expect(page.locator("#session")).to_have_text(session)
    log = page.locator("#chat-log")
    expect(log.locator("li.history-mark")).to_have_text("Earlier in this session: 3 turns.")
    expect(log.locator("li.user .body")).to_have_text(
        ["What is the weather in Oslo?", "thanks", XSS_PROBE]
    )
    replies = log.locator("li.reply")
    expect(replies.first.locator(".badge")).to_have_text("✓ forecast")
    expect(replies.first.locator(".body")).to_contain_text(WEATHER_REPLY)
    expect(replies.nth(1).locator(".body")).to_have_text("You said: thanks")
    expect(replies.last.locator(".body")).to_have_text(f"You said: {XSS_PROBE}")
    page.screenshot(path=str(shots / "2-after-reload.png"), full_page=True)
    assert page.evaluate("() => window.__xss") is None
    assert log.locator("img").count() == 0


def test_the_sessions_list_switches_between_conversations(
    watched: Watched, service: Dashboard, shots: Path
) -> None:
    page = watched.login(service)
    send_chat(page, "apples")
    expect(page.locator("#chat-log li.reply").last.locator(".body")).to_have_text(
        "You said: apples"
    )
    first = page.locator("#session").inner_text()
    page.locator("#new-session").click()
    send_chat(page, "bananas")
    expect(page.locator("#chat-log li.reply").last.locator(".body")).to_have_text(
        "You said: bananas"
    )
    second = page.locator("#session").inner_text()
    assert first != second

    page.locator("#sessions-toggle").click()
    sessions = page.locator("#sessions-list")
    expect(sessions.locator(f'button[data-session="{first}"]')).to_contain_text("1 turn")
    current = sessions.locator(f'button[data-session="{second}"]')
    expect(current).to_have_attribute("aria-current", "true")
    page.screenshot(path=str(shots / "1-sessions.png"), full_page=True)

    sessions.locator(f'button[data-session="{first}"]').click()
    expect(page.locator("#session")).to_have_text(first)
    log = page.locator("#chat-log")
    expect(log.locator("li.user .body")).to_have_text(["apples"])
    expect(log).not_to_contain_text("bananas")
    assert page.evaluate("() => localStorage.getItem('wactorz.session')") == first
    expect(sessions.locator(f'button[data-session="{first}"]')).to_have_attribute(
        "aria-current", "true"
    )
    page.screenshot(path=str(shots / "2-switched.png"), full_page=True)

    # The conversation goes on where it was.
    send_chat(page, "cherries")
    expect(page.locator("#chat-log li.reply").last.locator(".body")).to_have_text(
        "You said: cherries"
    )
    expect(sessions.locator(f'button[data-session="{first}"]')).to_contain_text("2 turns")


def test_the_metrics_draw_sparklines_and_the_tree_names_its_node(
    watched: Watched, service: Dashboard, shots: Path
) -> None:
    page = watched.login(service)
    send_chat(page, "count my tokens")  # the model's usage feeds the tokens and cost lines
    expect(page.locator("#chat-log li.reply").last.locator(".body")).to_contain_text("You said")
    for series in ("rate", "cpu", "memory", "tokens", "cost"):
        page.wait_for_function(
            "(s) => document.querySelector(`svg[data-spark=${s}] polyline`)"
            ".getAttribute('points').trim().split(' ').length >= 3",
            arg=series,
        )
    placeholder = "\u2013"  # what a metric shows before its first number
    expect(page.locator("#metrics [data-metric=tokens]")).not_to_have_text(placeholder)
    node = page.locator("#node").inner_text()
    head = page.locator(f'#tree tbody.node-group[data-node="{node}"] tr.node-head')
    expect(head).to_contain_text(node)
    expect(head).to_contain_text("running")
    expect(head.locator(".health")).to_have_text("ok")
    page.locator("#metrics").screenshot(path=str(shots / "metrics.png"))


def test_the_details_panel_and_the_sessions_list_fit_a_phone_screen(
    browser: Browser, service: Dashboard, shots: Path
) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark")
    watched = Watched(context)
    try:
        page = watched.login(service)
        row(page, "weather").click()
        expect(page.locator("#details .tool-name")).to_have_text("forecast(city)")
        page.locator("#sessions-toggle").click()
        expect(page.locator("#sessions-list li").first).to_be_visible()
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px"
        page.screenshot(path=str(shots / "phone-dark.png"), full_page=True)
    finally:
        context.close()
    assert watched.unexpected_errors() == []

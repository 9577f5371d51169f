"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

The service runs as a subprocess, as a user runs it: the stock ``python -m wactorz``, or
`tests.interfaces.dashboard_service` (the same service plus a stand-in MainActor that
streams replies, and a ``crew`` supervisor it fills on request). `browser_support` says
how the browser is driven; every page is watched for script errors and console errors (a
Content-Security-Policy violation is one): a test fails if there was any.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, WebSocketRoute, expect

from tests.interfaces.browser_support import Dashboard, Watched, row, send_chat
from tests.interfaces.stand_in_main import XSS_PROBE
from tests.interfaces.web_support import BANNER_URL, ServiceProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    running = Dashboard(tmp_path_factory.mktemp("dashboard"))
    try:
        yield running
    finally:
        status = running.service.stop()
    assert status == 0, "\n".join(running.service.lines)


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = Watched(context)
    try:
        yield page
    finally:
        context.close()
    assert page.unexpected_errors() == []


def test_the_banner_url_logs_in_and_shows_the_live_tree_of_the_stock_service(
    browser: Browser, tmp_path: Path
) -> None:
    service = ServiceProcess(tmp_path, "wactorz", "run", "--web-port", "0")
    try:
        found = service.wait_for(BANNER_URL)
        base, port, token = found.group(1), found.group(2), found.group(3)
        assert token, "a generated token is in the banner's URL"
        context = browser.new_context()
        watched = Watched(context)
        page = watched.page
        response = page.goto(f"{base}?token={token}")
        assert response is not None and response.ok
        assert page.url == base  # redirected to the address without the token
        assert response.request.redirected_from is not None
        (cookie,) = context.cookies()
        assert cookie["name"] == f"wactorz_token_{port}" and token not in cookie["value"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        expect(page.locator("#status")).to_have_text("Live")
        for name in ("web", "llm", "main", "monitor"):
            expect(row(page, name).locator(".state")).to_have_text("running")
        expect(row(page, "service")).to_have_class("supervisor")
        expect(page.locator("#node")).not_to_have_text("…")
        expect(page.locator("#version")).to_have_text("0.1.0")
        expect(page.locator('a[href="/docs/api/python/"]')).to_be_visible()
        expect(page.locator("#metrics [data-metric=actors]")).to_have_text("4")
        # The real MainActor answers a command typed in the chat.
        send_chat(page, "/help")
        help_reply = page.locator("#chat-log li.reply").last
        expect(help_reply.locator(".who")).to_have_text("/help")
        expect(help_reply.locator(".body")).to_contain_text("/agents")
        send_chat(page, "/stauts")
        expect(page.locator("#chat-log li.reply").last).to_contain_text("/status")
        # Reloading needs no token any more: the cookie lets the page in.
        page.reload()
        expect(page.locator("#status")).to_have_attribute("data-state", "live")
        context.close()
        assert watched.unexpected_errors() == []
    finally:
        assert service.stop() == 0, "\n".join(service.lines)


def test_without_the_cookie_the_page_says_to_open_the_banners_address(
    watched: Watched, dashboard: Dashboard
) -> None:
    page = watched.page
    watched.network_errors_expected = True
    page.goto(dashboard.base)
    expect(page.locator("#status")).to_have_attribute("data-state", "locked")
    expect(page.locator("#notice")).to_contain_text("open the address its banner printed")


def test_an_actor_started_and_crashed_elsewhere_shows_up_live(
    watched: Watched, dashboard: Dashboard
) -> None:
    page = watched.login(dashboard)
    expect(row(page, "main").locator(".state")).to_have_text("running")
    dashboard.ask("main", {"spawn": "worker-a"})
    worker = row(page, "worker-a")
    expect(worker.locator(".state")).to_have_text("running")
    expect(worker.locator("th")).to_contain_text("Worker")
    # Under its supervisor, after it, indented one level deeper.
    assert page.evaluate(
        """() => {
            const rows = [...document.querySelectorAll('#tree tbody tr')];
            const at = (name) => rows.findIndex((r) => r.dataset.name === name);
            const indent = (name) => parseFloat(rows[at(name)].cells[0].style.paddingLeft);
            return at('worker-a') > at('crew') && indent('worker-a') > indent('crew');
        }"""
    )
    dashboard.ask("main", {"crash": "worker-a", "error": "boom " + XSS_PROBE})
    expect(worker.locator("td.num").last).to_have_text("1")
    expect(worker.locator(".last-error")).to_have_text("RuntimeError: boom " + XSS_PROBE)
    expect(worker.locator(".state")).to_have_text("running")
    events = page.locator("#events li")
    expect(events.filter(has_text="crashed").filter(has_text="worker-a")).to_have_count(1)
    expect(events.filter(has_text="restarted").filter(has_text="worker-a")).to_have_count(1)
    expect(page.locator("#events li.event-crashed .detail").first).to_contain_text(XSS_PROBE)
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("#tree img, #events img").count() == 0


def test_a_missed_delta_makes_the_page_ask_for_a_snapshot_and_the_tree_recovers(
    watched: Watched, dashboard: Dashboard
) -> None:
    page = watched.page
    dropped: list[int] = []
    requested: list[dict[str, Any]] = []

    def between(page_side: WebSocketRoute) -> None:
        server_side = page_side.connect_to_server()

        def from_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame["type"] == "delta" and not dropped:
                dropped.append(frame["seq"])  # lost on the way: the next delta shows a gap
                return
            page_side.send(message)

        def from_page(message: str | bytes) -> None:
            requested.append(json.loads(message))
            server_side.send(message)

        server_side.on_message(from_server)
        page_side.on_message(from_page)

    page.route_web_socket("**/ws*", between)
    watched.login(dashboard)
    expect(row(page, "main")).to_be_visible()
    dashboard.ask("main", {"spawn": "after-the-gap"})
    expect(row(page, "after-the-gap").locator(".state")).to_have_text("running")
    assert dropped, "no delta came"
    assert any(frame["type"] == "snapshot" for frame in requested), requested


def test_chat_streams_the_reply_as_text_with_tool_badges_and_runs_commands(
    watched: Watched, dashboard: Dashboard
) -> None:
    page = watched.login(dashboard)
    session = page.locator("#session").inner_text()
    assert session == page.evaluate("() => localStorage.getItem('wactorz.session')")
    send_chat(page, "tools the weather")
    reply = page.locator("#chat-log li.reply").last
    expect(reply.locator(".body")).to_contain_text("found the weather")
    expect(reply.locator(".badge.done")).to_have_text("✓ search")
    expect(reply).not_to_have_attribute("aria-busy", "true")
    send_chat(page, "hello streamed world")
    expect(page.locator("#chat-log li.reply").last.locator(".body")).to_have_text(
        "hello streamed world "
    )
    send_chat(page, "/status")
    command = page.locator("#chat-log li.reply").last
    expect(command.locator(".who")).to_have_text("/status")
    expect(command.locator(".body")).to_have_text("ran /status")
    send_chat(page, "fail now")
    expect(page.locator("#chat-log li.reply").last.locator(".note.error")).to_have_text(
        "the stand-in main refuses 'fail' on purpose"
    )
    # Shift+Enter is a new line, not a send.
    box = page.locator("#chat-input")
    box.fill("two")
    box.press("Shift+Enter")
    box.press_sequentially("lines")
    assert box.input_value() == "two\nlines"
    assert page.locator("#chat-log li.user").count() == 4
    page.locator("#new-session").click()
    expect(page.locator("#session")).not_to_have_text(session)
    assert page.locator("#chat-log li.reply").count() == 0


def test_cancel_ends_a_streaming_reply(watched: Watched, dashboard: Dashboard) -> None:
    page = watched.login(dashboard)
    cancel = page.locator("#cancel")
    expect(cancel).to_be_disabled()
    send_chat(page, "slow words")
    reply = page.locator("#chat-log li.reply").last
    expect(reply.locator(".body")).to_contain_text("slow words slow")
    expect(cancel).to_be_enabled()
    cancel.click()
    expect(reply.locator(".note")).to_have_text("Cancelled.")
    expect(cancel).to_be_disabled()
    streamed = reply.locator(".body").inner_text()
    page.wait_for_timeout(300)
    assert reply.locator(".body").inner_text() == streamed  # nothing more arrives


def test_text_from_the_server_is_never_run_as_html(watched: Watched, dashboard: Dashboard) -> None:
    page = watched.login(dashboard)
    send_chat(page, "xss")
    reply = page.locator("#chat-log li.reply").last
    expect(reply.locator(".body")).to_have_text(XSS_PROBE)
    expect(reply).not_to_have_attribute("aria-busy", "true")
    page.locator("#chat-input").fill("@someone " + XSS_PROBE)
    page.locator("#chat-input").press("Enter")
    expect(page.locator("#chat-log li.user").last).to_contain_text(XSS_PROBE)
    page.wait_for_timeout(200)  # an injected <img> would have fired by now
    assert page.evaluate("() => window.__xss") is None
    assert page.locator("#chat-log img").count() == 0


def test_the_metrics_show_the_message_rate_and_the_llm_usage(
    watched: Watched, dashboard: Dashboard
) -> None:
    page = watched.login(dashboard)
    usage = {"input_tokens": 1200, "output_tokens": 300, "cost_usd": 0.0123}
    assert dashboard.ask("main", {"usage": usage})["delivered"] >= 1
    expect(page.locator("#metrics [data-metric=tokens]")).to_have_text("1,500")
    expect(page.locator("#metrics [data-metric=tokens]")).to_have_attribute(
        "title", "input: 1,200, output: 300"
    )
    expect(page.locator("#metrics [data-metric=cost]")).to_have_text("$0.0123")
    expect(page.locator("#metrics [data-metric=rate]")).to_have_text(re.compile(r"^\d"))
    expect(page.locator("#health")).to_have_text("ok")


def test_the_page_works_in_a_narrow_window_and_in_dark_mode(
    browser: Browser, dashboard: Dashboard, tmp_path: Path
) -> None:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    for name, viewport, scheme in (
        ("wide-light", {"width": 1280, "height": 860}, "light"),
        ("narrow-dark", {"width": 390, "height": 844}, "dark"),
    ):
        context = browser.new_context(viewport=viewport, color_scheme=scheme)  # type: ignore[arg-type]
        watched = Watched(context)
        page = watched.login(dashboard)
        dashboard.ask("main", {"spawn": f"shot-{name}"})
        send_chat(page, "tools the screenshot")
        # The second window shows the first one's exchange too (the same conversation,
        # restored): the badge to wait for is the newest.
        expect(page.locator("#chat-log .badge.done").last).to_be_visible()
        expect(row(page, f"shot-{name}")).to_be_visible()
        placeholder = "\u2013"  # what a metric shows before the monitor's first numbers
        expect(page.locator("#metrics [data-metric=cpu]")).not_to_have_text(placeholder)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
        tree_overflow = page.evaluate(
            "() => { const w = document.querySelector('.table-wrap');"
            " return w.scrollWidth - w.clientWidth; }"
        )
        assert tree_overflow <= 0, f"{name}: the tree is cut by {tree_overflow}px"
        path = shots / f"dashboard-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000
        context.close()
        assert watched.unexpected_errors() == []
    print(f"screenshots: {shots}")


def test_the_page_says_when_the_service_is_gone_and_comes_back_with_it(
    watched: Watched, tmp_path: Path
) -> None:
    with socket.socket() as probe:  # a free port, kept across the restart
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = Dashboard(tmp_path, port)
    watched.network_errors_expected = True
    try:
        page = watched.login(running)
        send_chat(page, "before the restart")
        expect(page.locator("#chat-log li.reply .body").last).to_have_text("before the restart ")
        assert running.service.stop() == 0
        expect(page.locator("#status")).to_have_attribute("data-state", "offline")
        expect(page.locator("#status")).to_contain_text("retrying in")
        expect(page.locator("#notice")).to_contain_text("The service stopped")
        expect(page.locator("#tree")).to_have_class("tree stale")
        running.service = running.start()
        expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=20_000)
        expect(page.locator("#notice")).to_be_hidden()
        expect(page.locator("#tree")).to_have_class("tree")
        expect(row(page, "main").locator(".state")).to_have_text("running")
        send_chat(page, "after the restart")
        expect(page.locator("#chat-log li.reply .body").last).to_have_text("after the restart ")
    finally:
        assert running.service.stop() == 0

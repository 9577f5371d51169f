"""What the dashboard's browser tests share: the browser, the service, and a watched page.

The browser is Debian's chromium, headless, driven by Playwright's sync API (its async one
is asyncio's), never ``playwright install``: ``/usr/bin/chromium`` (``apt-get install -y
chromium``, which ``.ci/run`` does). The ``browser`` fixture (in ``conftest.py``) launches
it once per module with `launch_browser`.

The service runs as a subprocess, as a user runs it: `Dashboard` starts
`tests.interfaces.dashboard_service` with a fixed token. Every page is a `Watched` one:
script errors and console errors (a Content-Security-Policy violation is one) are
collected, and the tests fail if there was any.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright
from trio_websocket import open_websocket_url

from tests.interfaces.web_support import BANNER_URL, ServiceProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
TOKEN = "dashboard-test-token"
WAIT_MS = 10_000


def launch_browser() -> Iterator[Browser]:
    """Chromium for the length of a module; fails saying how to install it if it is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"the dashboard's browser tests need Debian's chromium at {CHROMIUM}: install it "
            "with `apt-get install -y chromium` (.ci/run does); never `playwright install`"
        )
    # Playwright's sync API runs an asyncio loop of its own; trio-asyncio (imported by the
    # MQTT tests) would hand it a Trio-backed one, which cannot nest. Ask for a plain one.
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield launched
            launched.close()
    finally:
        asyncio.set_event_loop_policy(None)


class Dashboard:
    """A service (subprocess) with a fixed token, and how to reach it.

    ``env`` adds to its environment (``DASHBOARD_MAIN=router`` for the real MainActor, the
    LLM agent's settings...).
    """

    def __init__(self, tmp_path: Path, port: int = 0, env: dict[str, str] | None = None) -> None:
        self.tmp_path = tmp_path
        self.port = port
        self.env = env or {}
        self.service = self.start()

    def start(self) -> ServiceProcess:
        """Start the service (on `port`, once known) and wait for its banner."""
        service = ServiceProcess(
            self.tmp_path,
            "tests.interfaces.dashboard_service",
            env={
                "WACTORZ_WEB__PORT": str(self.port),
                "WACTORZ_WEB__TOKEN": TOKEN,
                "WACTORZ_MONITOR__INTERVAL_S": "1",
                **self.env,
            },
        )
        self.base = service.wait_for(BANNER_URL).group(1)
        self.port = int(self.base.rsplit(":", 1)[1].rstrip("/"))
        return service

    @property
    def login_url(self) -> str:
        return f"{self.base}?token={TOKEN}"

    def ask(self, actor: str, message: dict[str, Any]) -> Any:
        """Ask ``actor`` over a second WebSocket (a program's, with the bearer token)."""
        answer = self.request({"type": "ask", "actor": actor, "message": message})
        assert answer["type"] == "reply", answer
        return answer["reply"]

    def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send one request over a WebSocket of its own; its final frame (reply or error)."""
        return trio.run(self._request, frame)

    async def _request(self, frame: dict[str, Any]) -> dict[str, Any]:
        url = self.base.replace("http://", "ws://") + "ws"
        headers = [("Authorization", f"Bearer {TOKEN}")]
        with trio.fail_after(10):
            async with open_websocket_url(url, extra_headers=headers) as ws:
                await ws.get_message()  # hello
                await ws.send_message(json.dumps({**frame, "id": 1}))
                while True:
                    answer = json.loads(await ws.get_message())
                    if answer.get("id") == 1 and answer["type"] != "stream":
                        break
        return answer  # type: ignore[no-any-return]


class Watched:
    """A page and the script errors and console errors it produced."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.page = context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.errors: list[str] = []
        self.network_errors_expected = False
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on(
            "console",
            lambda message: (
                self.errors.append(f"console: {message.text}") if message.type == "error" else None
            ),
        )

    def unexpected_errors(self) -> list[str]:
        """`errors`, less the browser's own lines about refused connections and requests
        when `network_errors_expected` (the service was down, or refused the page)."""
        noise = ("WebSocket connection to", "Failed to load resource")
        if not self.network_errors_expected:
            return self.errors
        return [e for e in self.errors if not any(n in e for n in noise)]

    def login(self, dashboard: Dashboard) -> Page:
        self.page.goto(dashboard.login_url)
        expect(self.page.locator("#status")).to_have_attribute("data-state", "live")
        return self.page


def row(page: Page, name: str) -> Any:
    return page.locator(f'#tree tbody tr[data-name="{name}"]')


def send_chat(page: Page, text: str) -> None:
    page.locator("#chat-input").fill(text)
    page.locator("#chat-input").press("Enter")

"""`WebInterface`: the actor that serves the web front door on one port, under the service.

It listens on ``web.host:web.port`` (loopback, 8765, by default) with hypercorn's Trio
worker and a Starlette application (`wactorz.interfaces.web.app`): the dashboard page,
``/healthz``, ``/metrics``, the API reference and the WebSocket at ``/ws``, whose JSON
protocol ``docs/websocket.md`` documents. The server runs in the actor's `background`, so
that it lives and dies with the incarnation: on stop it closes every WebSocket with 1001
("going away"), stops accepting, lets requests in progress finish for up to
`WebOptions.graceful_s`, and removes its runtime file.

What the actor receives in its mailbox:

- stream messages (`wactorz.agents.streams`) from the agents answering a chat: routed to
  the request they answer as ``stream`` frames;
- what the monitor publishes (each actor's heartbeat and metrics, the system's health),
  for the tree, the metrics feed and ``/metrics``; the alerts and the client's own topic
  filters while someone subscribes to them;
- ``{"get": "statistics"}``: answered with `WebInterface.web_statistics` as a dict.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Final, final

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.logging import Logger as HypercornLogger
from hypercorn.trio import serve

import wactorz
from wactorz.config import Secret, WebConfig, get_settings
from wactorz.core.actor import Actor
from wactorz.core.errors import MessageRejected
from wactorz.core.registry import ActorSystem
from wactorz.interfaces.web.apidocs import ApiDocs
from wactorz.interfaces.web.app import build_app
from wactorz.interfaces.web.auth import TokenGate, generate_token, is_loopback_host
from wactorz.interfaces.web.connection import CLOSE_GOING_AWAY
from wactorz.interfaces.web.details import PROTECTED
from wactorz.interfaces.web.hub import Hub, HubStatistics
from wactorz.interfaces.web.metrics import MetricsRegistry
from wactorz.interfaces.web.runtime_file import (
    remove_runtime_file,
    runtime_dir,
    write_runtime_file,
)
from wactorz.telemetry import HEALTH_TOPIC

__all__ = ["WEB_NAME", "WebInterface", "WebOptions", "WebStartError"]

logger = logging.getLogger("wactorz.web")

WEB_NAME: Final = "web"
"""The name the web interface runs under."""

TELEMETRY_FILTERS: Final = ("agents/+/heartbeat", "agents/+/metrics", HEALTH_TOPIC)
"""What the web actor always follows: cheap, and ``/metrics`` needs it between scrapes."""


class WebStartError(OSError):
    """The web interface cannot listen where it was told to; ``str()`` says what to change."""


@final
@attrs.frozen
class WebOptions:
    """How the web interface treats its clients: limits and timings, with sensible defaults.

    Tests and benchmarks shorten them; an operator rarely needs to.
    """

    tick_s: float = 1.0
    """How often the tree and metrics feeds are recomputed while someone subscribes."""
    event_debounce_s: float = 0.05
    """After a lifecycle event, how long to wait for the ones that come with it."""
    queue_soft: int = 256
    """Frames waiting for one client past which deltas and live frames are dropped."""
    queue_hard: int = 2048
    """Frames waiting for one client past which it is closed (1013)."""
    stale_close_s: float = 30.0
    """How long a client may stay behind the tree before it is closed (1013)."""
    max_frame_bytes: int = 65536
    """Larger client frames get a ``too_large`` error (the connection stays usable)."""
    max_message_bytes: int = 1024 * 1024
    """Larger WebSocket messages make the server close the connection (1009): it will not
    buffer them."""
    max_in_flight: int = 32
    """Chat, command and ask requests running at once per connection."""
    ask_timeout_s: float = 30.0
    """How long an ``ask`` without a ``timeout`` waits for its answer."""
    cancel_grace_s: float = 5.0
    """How long a cancelled chat waits for the MainActor to answer before giving up."""
    ping_interval_s: float = 20.0
    """WebSocket pings, so that a client that vanished is noticed."""
    read_timeout_s: float = 60.0
    """A connection that sends nothing (not even a pong) this long is dropped."""
    graceful_s: float = 1.0
    """On stop, how long requests in progress may take to finish. (hypercorn also keeps a
    closed WebSocket's ping task until its next ping, or until this deadline.)"""
    send_buffer_bytes: int | None = None
    """The kernel's send buffer per connection (SO_SNDBUF); None for the system's default.
    Smaller makes a client that stops reading visible sooner."""


class _WactorzHypercornLog(HypercornLogger):
    """hypercorn's messages, through the ``wactorz.web.server`` logger; its start-up line
    ("Running on ...") at DEBUG, since the banner says where the service listens."""

    async def info(self, message: str, *args: Any, **kwargs: Any) -> None:
        await self.debug(message, *args, **kwargs)


class WebInterface(Actor):
    """Serves the dashboard, ``/healthz``, ``/metrics``, the API reference and ``/ws``.

    Settings come from ``config`` (default: the process-wide ``web`` settings).
    ``token`` overrides ``config.token``; with neither, a token is generated. The service
    generates one per run and passes it here with ``token_generated=True``, so that
    restarts keep it (and the browser's cookie stays good). ``runtime_dir``
    and ``docs_cache`` default to `wactorz.interfaces.web.runtime_file.runtime_dir` and
    `wactorz.interfaces.web.apidocs.default_cache_dir`.

    Once started, `url` is where it listens (the real port when ``port`` is 0) and
    `login_url` the address that carries the token.
    """

    capabilities: ClassVar[tuple[str, ...]] = ("web",)
    mailbox_size: ClassVar[int] = 8192
    """Every monitor tick publishes two messages per actor to it at once."""

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        config: WebConfig | None = None,
        token: Secret | str | None = None,
        token_generated: bool = False,
        options: WebOptions | None = None,
        runtime_dir: Path | None = None,
        docs_cache: Path | None = None,
        protected: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(system, name=WEB_NAME if name is None else name)
        self.protected: Mapping[str, str] = dict(PROTECTED if protected is None else protected)
        """Actors the page does not stop or restart, with the reason it shows (default
        `wactorz.interfaces.web.details.PROTECTED`; supervisors, and what the MainActor
        protects, always are)."""
        self.config: WebConfig = get_settings().web if config is None else config
        self.options: WebOptions = options if options is not None else WebOptions()
        given = token if token is not None else self.config.token
        self.token_generated: bool = given is None or (token is not None and token_generated)
        """Whether the token was made for this run (the banner and runtime file show it)."""
        self._token: Secret = (
            generate_token()
            if given is None
            else given
            if isinstance(given, Secret)
            else Secret(given)
        )
        self._runtime_dir = runtime_dir
        self.api_docs = ApiDocs(docs_cache)
        self.gate: TokenGate = TokenGate(
            self._token, generated=self.token_generated, host=self.config.host, port=0
        )
        self.hub: Hub | None = None
        """Connections and feeds; made when the incarnation starts."""
        self.metrics: MetricsRegistry | None = None
        """``/metrics``'s registry; made when the incarnation starts."""
        self.serving = False
        """True while the server accepts connections."""
        self.runtime_file: Path | None = None
        """The runtime file written for local clients, while running."""
        self.own_filters: frozenset[str] = frozenset(TELEMETRY_FILTERS)
        self._socket: socket.socket | None = None
        self._port = 0

    # ---- what others see -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The port it listens on (known once started)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://host:port/``, where it listens (an IPv6 host in brackets)."""
        host = self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self._port}/"

    @property
    def login_url(self) -> str:
        """`url` with ``?token=``: opening it in a browser logs in. Holds the secret."""
        return f"{self.url}?token={self._token.reveal()}"

    def banner_line(self) -> str:
        """The banner's ``listening:`` entry: the login URL when the token was generated
        (the user has no other way to learn it), else the plain URL."""
        if self.token_generated:
            return f"web at {self.login_url}"
        return f"web at {self.url} (token: web.token)"

    def web_statistics(self) -> HubStatistics | None:
        """The hub's connections, subscribers and work (None before it starts)."""
        return self.hub.statistics() if self.hub is not None else None

    def _connections(self) -> int:
        return len(self.hub.connections) if self.hub is not None else 0

    # ---- lifecycle -------------------------------------------------------------------------

    async def on_start(self) -> None:
        config = self.config
        if not is_loopback_host(config.host) and self.token_generated:
            raise WebStartError(
                f"web.host is {config.host!r}, beyond loopback, but web.token is not set: "
                "set a token (WACTORZ_WEB__TOKEN) before exposing the web interface, or "
                "listen on 127.0.0.1"
            )
        self._socket = await _listen(config.host, config.port, self.options.send_buffer_bytes)
        self._port = self._socket.getsockname()[1]
        self.gate = TokenGate(
            self._token, generated=self.token_generated, host=config.host, port=self._port
        )
        self.hub = Hub(self, self.options)
        self.metrics = MetricsRegistry(self.system, self.hub.llm, self._connections)
        # Subscriptions outlive incarnations: start from the telemetry alone.
        for stale in self.system._subscriptions.filters_of(self.id):
            self.unsubscribe(stale)
        for topic_filter in TELEMETRY_FILTERS:
            self.subscribe(topic_filter)
        self.runtime_file = self._write_runtime_file()

    def _write_runtime_file(self) -> Path | None:
        contents = {
            "url": self.url,
            "host": self.config.host,
            "port": self._port,
            "node": self.system.node,
            "pid": os.getpid(),
            "version": wactorz.__version__,
            "token": self._token.reveal() if self.token_generated else None,
        }
        directory = self._runtime_dir if self._runtime_dir is not None else runtime_dir()
        try:
            return write_runtime_file(directory, self._port, contents)
        except OSError as exc:
            logger.warning(
                "web: cannot write the runtime file in %s (%s): local clients will need the "
                "URL and token from the banner",
                directory,
                exc,
            )
            return None

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        """Serve until the incarnation ends; then close the WebSockets and stop cleanly."""
        assert self._socket is not None and self.hub is not None
        hub = self.hub
        config = self._hypercorn_config(self._socket.detach())
        self._socket = None
        shutdown = trio.Event()
        finished = trio.Event()
        server_scope = trio.CancelScope(shield=True)  # outlives the background's cancellation

        async def run_server(*, task_status: trio.TaskStatus[list[str]]) -> None:
            try:
                with server_scope:
                    await serve(
                        build_app(self),  # type: ignore[arg-type]
                        config,
                        shutdown_trigger=shutdown.wait,
                        task_status=task_status,
                    )
            finally:
                finished.set()

        async with trio.open_nursery() as nursery:
            hub.run_in(nursery)
            try:
                await nursery.start(run_server)
                self.serving = True
                task_status.started()
                await trio.sleep_forever()
            finally:
                self.serving = False
                with trio.CancelScope(shield=True) as goodbye:
                    goodbye.deadline = trio.current_time() + self.options.graceful_s + 2.0
                    hub.close_all(CLOSE_GOING_AWAY, "the server is stopping")
                    shutdown.set()
                    await finished.wait()
                server_scope.cancel()
                nursery.cancel_scope.cancel()
                # Here as well as in on_stop, which a cancelled incarnation skips.
                if self.runtime_file is not None:
                    remove_runtime_file(self.runtime_file)
                    self.runtime_file = None

    def _hypercorn_config(self, fd: int) -> HypercornConfig:
        options = self.options
        config = HypercornConfig()
        config.bind = [f"fd://{fd}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("wactorz.web.server")
        config.logger_class = _WactorzHypercornLog
        config.include_server_header = False
        config.graceful_timeout = options.graceful_s
        config.websocket_max_message_size = options.max_message_bytes
        config.websocket_ping_interval = options.ping_interval_s
        config.read_timeout = int(options.read_timeout_s) or 1
        return config

    async def on_stop(self) -> None:
        if self.runtime_file is not None:
            remove_runtime_file(self.runtime_file)
            self.runtime_file = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # ---- the mailbox -----------------------------------------------------------------------

    async def _process(self, message: dict[str, Any]) -> object:
        hub = self.hub
        assert hub is not None
        envelope = self.current_envelope
        topic = envelope.topic
        if topic is not None:
            if topic == HEALTH_TOPIC or (
                topic.startswith("agents/") and topic.endswith(("/heartbeat", "/metrics"))
            ):
                hub.on_telemetry(topic, message)
            hub.on_published(topic, message, envelope.sender)
            return None
        if "stream" in message:
            hub.on_stream(message)
            return None
        if "barrier" in message and envelope.sender == self.id:
            hub.on_barrier(message["barrier"])
            return None
        if message == {"get": "statistics"}:
            stats = self.web_statistics()
            return attrs.asdict(stats) if stats is not None else None
        raise MessageRejected("the web interface takes stream messages and {'get': 'statistics'}")


async def _listen(host: str, port: int, send_buffer: int | None) -> socket.socket:
    """A listening TCP socket on ``host:port``, or `WebStartError` saying what to change."""
    try:
        infos = await trio.socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise WebStartError(
            f"cannot listen on web.host {host!r}: {exc}; set web.host (--web-host, "
            "WACTORZ_WEB__HOST) to an address of this machine"
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it: small frames go out at once, not after an ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if send_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        sock.bind(address)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise WebStartError(
                f"port {port} on {host} is taken (another wactorz, or another program): set "
                "web.port to a free port (--web-port, WACTORZ_WEB__PORT), or 0 for any free one"
            ) from None
        if exc.errno == errno.EACCES:
            raise WebStartError(
                f"not allowed to listen on port {port}: ports below 1024 need privileges; set "
                "web.port (--web-port, WACTORZ_WEB__PORT) to 1024 or above"
            ) from None
        if exc.errno == errno.EADDRNOTAVAIL:
            raise WebStartError(
                f"{host} is not an address of this machine: set web.host (--web-host, "
                "WACTORZ_WEB__HOST) to one of its addresses, or 127.0.0.1"
            ) from None
        raise WebStartError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock

"""The HTTP side: the Starlette application the web actor serves, routes and gatekeeping.

Routes:

- ``GET /``: the dashboard page (``static/index.html``), and ``/static/...`` its assets:
  open, since the page is a shell that holds no data until its WebSocket is let in;
- ``GET /healthz``: JSON for liveness probes: open, and says only the status, the node,
  the version and how many actors run;
- ``GET /metrics``: Prometheus text (`wactorz.interfaces.web.metrics`): token required;
- ``GET /docs/api/python/...``: the API reference (`wactorz.interfaces.web.apidocs`):
  token required;
- ``/ws``: the WebSocket (``docs/websocket.md``): token and origin required.

`Gatekeeper` wraps the whole application: it refuses requests whose Host header does not
name the server, turns ``?token=`` on any page into the cookie (and a redirect to the
same address without it), and asks for the token everywhere but on the open paths. What
it says on refusal never contains the token.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, final
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

import wactorz
from wactorz.interfaces.web.apidocs import DocsUnavailable
from wactorz.interfaces.web.auth import TOKEN_QUERY, Credentials, TokenGate
from wactorz.interfaces.web.connection import Connection
from wactorz.interfaces.web.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from wactorz.interfaces.web.interface import WebInterface

__all__ = ["DOCS_PATH", "OPEN_PATHS", "STATIC_DIR", "Gatekeeper", "build_app"]

logger = logging.getLogger("wactorz.web")

DOCS_PATH: Final = "/docs/api/python/"
OPEN_PATHS: Final = frozenset({"/", "/healthz", "/favicon.ico"})
"""Paths served without the token (and everything under ``/static/``)."""

STATIC_DIR: Final = "static"
"""The package directory (in `wactorz.interfaces.web`) holding the page and its assets."""

_PAGE_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "Cache-Control": "no-cache",
}
_COMMON_HEADERS: Final = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
_NEEDS_TOKEN: Final = (
    "This wactorz service needs its token. Open the address its banner printed "
    "(http://HOST:PORT/?token=...), or send the header 'Authorization: Bearer <token>'; "
    "the token is web.token, or in the service's runtime file when it was generated.\n"
)
_WRONG_TOKEN: Final = (
    "Wrong token. Use the address the service's banner printed, or web.token; a service "
    "restarted without web.token set has a new token.\n"
)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith("/static/")


@final
class Gatekeeper:
    """ASGI middleware: the Host check, the token's cookie, and the token where it is needed."""

    def __init__(self, app: ASGIApp, gate: TokenGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        response = self._refusal(scope)
        if response is None:
            await self.app(scope, receive, send)
            return
        response.headers.update(_COMMON_HEADERS)
        if scope["type"] == "websocket":
            await WebSocket(scope, receive, send).send_denial_response(response)
        else:
            await response(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:
        """What to answer instead of the application, or None to let the request in.

        (A method of its own so that the parsed request it looks at is not kept alive for
        as long as a WebSocket stays open.)
        """
        connection = HTTPConnection(scope)
        if not self.gate.host_allowed(connection.headers.get("host")):
            return PlainTextResponse(
                "This server answers to its own loopback address only "
                "(http://127.0.0.1 or http://localhost).\n",
                status_code=403,
            )
        if scope["type"] == "websocket":
            return self._check_websocket(connection)
        return self._check_http(connection)

    def _check_http(self, connection: HTTPConnection) -> Response | None:
        gate = self.gate
        query = connection.query_params
        if TOKEN_QUERY in query and connection.scope.get("method") in ("GET", "HEAD"):
            if not gate.token_matches(query[TOKEN_QUERY]):
                return PlainTextResponse(_WRONG_TOKEN, status_code=403)
            rest = [(k, v) for k, v in query.multi_items() if k != TOKEN_QUERY]
            clean = connection.url.path + (f"?{urlencode(rest)}" if rest else "")
            redirect = RedirectResponse(clean, status_code=303)
            redirect.set_cookie(
                gate.cookie_name, gate.cookie_value, httponly=True, samesite="strict", path="/"
            )
            redirect.headers["Cache-Control"] = "no-store"
            return redirect
        if _is_open(connection.url.path):
            return None
        return _refusal(self._credentials(connection, allow_query=False))

    def _check_websocket(self, connection: HTTPConnection) -> Response | None:
        headers = connection.headers
        if not self.gate.origin_allowed(headers.get("origin"), headers.get("host")):
            return PlainTextResponse(
                "This WebSocket serves pages from this server only: the page's origin "
                "is not this server's.\n",
                status_code=403,
            )
        return _refusal(self._credentials(connection, allow_query=True))

    def _credentials(self, connection: HTTPConnection, *, allow_query: bool) -> Credentials:
        return self.gate.credentials(
            connection.headers,
            connection.cookies,
            connection.query_params,
            allow_query=allow_query,
        )


def _refusal(credentials: Credentials) -> Response | None:
    if credentials is Credentials.VALID:
        return None
    if credentials is Credentials.MISSING:
        return PlainTextResponse(
            _NEEDS_TOKEN, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="wactorz"'}
        )
    return PlainTextResponse(_WRONG_TOKEN, status_code=403)


def build_app(web: WebInterface) -> ASGIApp:
    """The whole application for ``web``: routes inside the `Gatekeeper`."""
    static = StaticFiles(packages=[("wactorz.interfaces.web", STATIC_DIR)])
    page = static.all_directories[0]

    async def index(request: Request) -> Response:
        return FileResponse(
            f"{page}/index.html",
            media_type="text/html",
            headers={**_PAGE_HEADERS, **_COMMON_HEADERS},
        )

    async def healthz(request: Request) -> Response:
        health = web.hub.health if web.hub is not None else None
        status = health.get("status", "ok") if isinstance(health, dict) else "ok"
        return JSONResponse(
            {
                "status": status,
                "node": web.system.node,
                "version": wactorz.__version__,
                "actors": len(web.system.actors()),
            },
            headers={"Cache-Control": "no-store"},
        )

    async def metrics(request: Request) -> Response:
        if web.metrics is None:
            return PlainTextResponse("starting; try again\n", status_code=503)
        return Response(web.metrics.render(), media_type=CONTENT_TYPE)

    async def docs(request: Request) -> Response:
        try:
            directory = await web.api_docs.directory()
        except DocsUnavailable as exc:
            return PlainTextResponse(f"{exc}\n", status_code=503)
        files = StaticFiles(directory=directory, html=True)
        path = request.path_params.get("path", "")
        response = await files.get_response(path, request.scope)
        response.headers.update(_COMMON_HEADERS)
        return response

    async def docs_root(request: Request) -> Response:
        return RedirectResponse(DOCS_PATH, status_code=308)

    async def websocket(socket: WebSocket) -> None:
        hub = web.hub
        if hub is None or not web.serving:
            await socket.close(1013, "the server is starting or stopping; try again")
            return
        session = socket.query_params.get("session")
        await socket.accept()
        connection = Connection(hub, socket, session if _plain(session) else None)
        hub.add(connection)
        await connection.serve()

    app = Starlette(
        routes=[
            Route("/", index, methods=["GET", "HEAD"]),
            Route("/healthz", healthz, methods=["GET", "HEAD"]),
            Route("/metrics", metrics, methods=["GET", "HEAD"]),
            Route(DOCS_PATH.rstrip("/"), docs_root, methods=["GET", "HEAD"]),
            Route(DOCS_PATH + "{path:path}", docs, methods=["GET", "HEAD"]),
            WebSocketRoute("/ws", websocket),
            Mount("/static", app=static),
        ]
    )
    return Gatekeeper(app, web.gate)


def _plain(session: str | None) -> bool:
    return (
        session is not None
        and 0 < len(session) <= 128
        and all(c.isascii() and (c.isalnum() or c in "_.-") for c in session)
    )

"""The web front door: one port serving the dashboard, ``/healthz``, ``/metrics``, the API
reference and a WebSocket whose JSON protocol drives the actor system.

`WebInterface` is the actor (named ``web``) the service runs when ``web.enabled``; its
module says how it serves and stops. The protocol is documented in ``docs/websocket.md``
and its frames are checked by `wactorz.interfaces.web.protocol`; who may connect is
`wactorz.interfaces.web.auth`'s business.

Modules: `interface` (the actor), `app` (routes and gatekeeping), `auth` (token, cookie,
Host and Origin), `protocol` (frames), `connection` (one client: its queue and requests),
`hub` (subscriptions and feeds), `tree` (the actor tree as snapshot and deltas),
`details` (one actor described for the details panel, and which the page may not stop),
`metrics` (Prometheus), `apidocs` (the pdoc reference), `runtime_file` (how local
clients find the service). The page and its assets are package data under ``static/``.
"""

from wactorz.interfaces.web.interface import WEB_NAME, WebInterface, WebOptions, WebStartError
from wactorz.interfaces.web.runtime_file import read_runtime_files, runtime_dir

__all__ = [
    "WEB_NAME",
    "WebInterface",
    "WebOptions",
    "WebStartError",
    "read_runtime_files",
    "runtime_dir",
]

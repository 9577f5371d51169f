"""Who may use the web interface: the token, its cookie, and the Host and Origin checks.

As in Jupyter, one secret token guards everything but the health check and the page's
static shell. A client proves it knows the token in one of three ways:

- ``Authorization: Bearer <token>``: programs (a Prometheus scraper, ``wactorz chat``);
- the cookie `TokenGate.cookie_name`: browsers. Opening any page with ``?token=<token>``
  sets it (HttpOnly, SameSite=Strict) and redirects to the same address without the token;
- ``?token=<token>`` on the WebSocket's own URL, for clients that can set neither.

The cookie holds an HMAC of the token, not the token itself, so that it cannot be replayed
as a bearer token. Every comparison is constant-time (`hmac.compare_digest`).

Two checks stop other web pages open in the same browser from using the service:

- the **Host** header must name the server (a loopback name when it listens on loopback),
  which defeats DNS rebinding (a hostile name resolving to 127.0.0.1);
- a WebSocket's **Origin**, when there is one (browsers always send it), must be the
  server's own: the same host and port as the Host header. A page from another origin
  cannot open the WebSocket even though the browser would send the cookie along.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping
from typing import Final, final
from urllib.parse import urlsplit

from wactorz.config import Secret

__all__ = ["Credentials", "TokenGate", "generate_token", "is_loopback_host"]

TOKEN_QUERY: Final = "token"
"""The query parameter that carries the token in a URL."""

_COOKIE_KEY: Final = b"wactorz web cookie v1"
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def generate_token() -> Secret:
    """A fresh random token (256 bits, URL-safe), for a service that was given none."""
    return Secret(secrets.token_urlsafe(32))


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is loopback."""
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Credentials(enum.Enum):
    """What a request showed: no token, a wrong one, or the right one."""

    MISSING = "missing"
    WRONG = "wrong"
    VALID = "valid"


@final
class TokenGate:
    """The token of one server and the checks built on it; knows its host and port.

    ``generated`` says the token was made at start (the banner and the runtime file then
    carry it) rather than configured.
    """

    def __init__(self, token: Secret, *, generated: bool, host: str, port: int) -> None:
        self._token = token.reveal().encode()
        self.token = token
        self.generated = generated
        self.host = host
        self.port = port
        self._cookie = hmac.new(self._token, _COOKIE_KEY, hashlib.sha256).hexdigest().encode()

    def __repr__(self) -> str:
        return f"<TokenGate {self.host}:{self.port} token=***>"

    @property
    def cookie_name(self) -> str:
        """Per port: cookies are shared by every port of a host, services are not."""
        return f"wactorz_token_{self.port}"

    @property
    def cookie_value(self) -> str:
        """What the cookie holds: an HMAC of the token."""
        return self._cookie.decode()

    def token_matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is the token, compared in constant time."""
        return hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), self._token)

    def cookie_matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is the cookie this server sets, compared in constant time."""
        return hmac.compare_digest(candidate.encode("utf-8", "surrogatepass"), self._cookie)

    def credentials(
        self,
        headers: Mapping[str, str],
        cookies: Mapping[str, str],
        query: Mapping[str, str],
        *,
        allow_query: bool,
    ) -> Credentials:
        """What a request shows: the bearer header, then the cookie, then (if allowed) ``?token``.

        The first one present decides; a wrong one is not made up for by another.
        """
        authorization = headers.get("authorization")
        if authorization is not None:
            scheme, _, value = authorization.partition(" ")
            ok = scheme.lower() == "bearer" and self.token_matches(value.strip())
            return Credentials.VALID if ok else Credentials.WRONG
        cookie = cookies.get(self.cookie_name)
        if cookie is not None:
            return Credentials.VALID if self.cookie_matches(cookie) else Credentials.WRONG
        if allow_query and TOKEN_QUERY in query:
            ok = self.token_matches(query[TOKEN_QUERY])
            return Credentials.VALID if ok else Credentials.WRONG
        return Credentials.MISSING

    def host_allowed(self, host_header: str | None) -> bool:
        """Whether a request's Host header names this server.

        Listening on loopback, only loopback names and addresses are accepted (any port:
        the header may name the port a proxy or a tunnel forwards). Listening elsewhere,
        any host is: the token then does the guarding.
        """
        if not is_loopback_host(self.host):
            return True
        if host_header is None:
            return False
        name = _host_of(host_header)
        return name is not None and is_loopback_host(name)

    def origin_allowed(self, origin: str | None, host_header: str | None) -> bool:
        """Whether a WebSocket from a page of ``origin`` may connect.

        No Origin header: not a browser, allowed (the token still applies). Otherwise the
        origin must be http(s) and name the same host and port as the Host header, which
        `host_allowed` has checked.
        """
        if origin is None:
            return True
        if host_header is None:
            return False
        try:
            parts = urlsplit(origin)
            origin_port = parts.port
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        default = 443 if parts.scheme == "https" else 80
        origin_host = parts.hostname.lower()
        host = _host_of(host_header)
        host_port = _port_of(host_header, default)
        return host is not None and origin_host == host and (origin_port or default) == host_port


def _host_of(host_header: str) -> str | None:
    """The host name or address of a Host header (brackets and port removed), lowercased."""
    try:
        parts = urlsplit(f"//{host_header.strip()}")
        return parts.hostname.lower() if parts.hostname else None
    except ValueError:
        return None


def _port_of(host_header: str, default: int) -> int | None:
    try:
        return urlsplit(f"//{host_header.strip()}").port or default
    except ValueError:
        return None

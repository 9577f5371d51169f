"""Who gets in: the token (bearer, cookie, query), the runtime file, Host and Origin checks."""

from __future__ import annotations

import hmac
import json
import socket
import stat
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from tests.interfaces.web_support import connect, http, serving, token_of, ws_url
from wactorz import ActorStartFailed, ActorSystem
from wactorz.config import Secret, WebConfig
from wactorz.interfaces.web import WebInterface
from wactorz.interfaces.web.auth import Credentials, TokenGate, is_loopback_host


async def test_the_api_needs_the_token_and_the_health_check_and_page_do_not(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as web, http(web) as client:
        for path in ("/metrics", "/docs/api/python/", "/no-such-page"):
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert token_of(web) not in response.text
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 403
        assert (await client.get("/healthz")).status_code == 200
        page = await client.get("/")
        assert page.status_code == 200 and "<html" in page.text
        assert token_of(web) not in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        bearer = await client.get("/metrics", headers={"Authorization": f"Bearer {token_of(web)}"})
        assert bearer.status_code == 200


async def test_the_login_url_sets_an_http_only_strict_cookie_and_redirects_to_the_clean_url(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as web, http(web) as client:
        response = await client.get(f"/?token={token_of(web)}&tab=chat")
        assert response.status_code == 303
        assert response.headers["location"] == "/?tab=chat"
        cookie = response.headers["set-cookie"]
        assert f"wactorz_token_{web.port}=" in cookie
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert token_of(web) not in cookie  # an HMAC of it, not the token
        assert response.headers["cache-control"] == "no-store"
        # httpx kept the cookie: the API works without the token from now on.
        assert (await client.get("/metrics")).status_code == 200
        client.cookies.set(f"wactorz_token_{web.port}", "forged")
        assert (await client.get("/metrics")).status_code == 403
        wrong = await client.get("/?token=wrong")
        assert wrong.status_code == 403 and "set-cookie" not in wrong.headers


async def test_every_comparison_with_the_token_is_constant_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    async with serving(tmp_path) as web, http(web) as client:
        await client.get("/metrics", headers={"Authorization": "Bearer guess"})
        client.cookies.set(f"wactorz_token_{web.port}", "guess")
        await client.get("/metrics")
        client.cookies.clear()
        await client.get("/?token=guess")
        with pytest.raises(ConnectionRejected):
            async with open_websocket_url(ws_url(web, token="guess")):
                pass
    assert [a for a, _ in compared] == [b"guess"] * 4


def test_credentials_come_from_the_header_first_and_a_wrong_one_is_not_made_up_for() -> None:
    gate = TokenGate(Secret("s3cret"), generated=True, host="127.0.0.1", port=1)
    good_cookie = {gate.cookie_name: gate.cookie_value}
    assert gate.credentials({}, {}, {}, allow_query=True) is Credentials.MISSING
    assert gate.credentials({}, {}, {"token": "s3cret"}, allow_query=False) is Credentials.MISSING
    assert gate.credentials({}, {}, {"token": "s3cret"}, allow_query=True) is Credentials.VALID
    assert gate.credentials({}, good_cookie, {}, allow_query=False) is Credentials.VALID
    bad_header = {"authorization": "Bearer wrong"}
    assert gate.credentials(bad_header, good_cookie, {}, allow_query=True) is Credentials.WRONG
    assert gate.credentials({"authorization": "Basic s3cret"}, {}, {}, allow_query=True) is (
        Credentials.WRONG
    )
    assert "s3cret" not in repr(gate)


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "127.0.0.1:8765", True),
        ("http://127.0.0.1:8765", "127.0.0.1:8765", True),
        ("http://localhost:8765", "localhost:8765", True),
        ("http://[::1]:8765", "[::1]:8765", True),
        ("http://localhost:3000", "127.0.0.1:8765", False),
        ("http://127.0.0.1:8766", "127.0.0.1:8765", False),
        ("https://evil.example", "127.0.0.1:8765", False),
        ("null", "127.0.0.1:8765", False),
        ("file://", "127.0.0.1:8765", False),
    ],
)
def test_a_websocket_origin_must_be_the_servers_own(
    origin: str | None, host: str, allowed: bool
) -> None:
    gate = TokenGate(Secret("t"), generated=True, host="127.0.0.1", port=8765)
    assert gate.origin_allowed(origin, host) is allowed


def test_on_loopback_the_host_header_must_be_a_loopback_name() -> None:
    gate = TokenGate(Secret("t"), generated=True, host="127.0.0.1", port=8765)
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST"):
        assert gate.host_allowed(host), host
    for host in ("evil.example:8765", "192.168.1.5:8765", None, ""):
        assert not gate.host_allowed(host), host
    everywhere = TokenGate(Secret("t"), generated=False, host="0.0.0.0", port=8765)
    assert everywhere.host_allowed("myhost.lan:8765")
    assert is_loopback_host("::1") and not is_loopback_host("0.0.0.0")


async def test_the_websocket_refuses_no_token_a_wrong_token_and_a_foreign_origin(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as web:
        own = web.url.rstrip("/")
        cases = [
            (ws_url(web, token=None), [], 401),
            (ws_url(web, token="wrong"), [], 403),
            (ws_url(web), [("Origin", "http://evil.example")], 403),
            (ws_url(web), [("Origin", "http://localhost:3000")], 403),
        ]
        for url, headers, status in cases:
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(url, extra_headers=headers):
                    pass
            assert refused.value.status_code == status, (url, headers)
        async with open_websocket_url(ws_url(web), extra_headers=[("Origin", own)]) as ws:
            assert json.loads(await ws.get_message())["type"] == "hello"
        async with http(web, bearer=True) as client:  # DNS rebinding: a hostile name
            rebound = await client.get("/metrics", headers={"Host": "evil.example"})
            assert rebound.status_code == 403
            assert (await client.get("/", headers={"Host": "evil.example"})).status_code == 403
        bearer = [("Authorization", f"Bearer {token_of(web)}")]
        async with open_websocket_url(ws_url(web, token=None), extra_headers=bearer) as ws:
            assert json.loads(await ws.get_message())["type"] == "hello"


async def test_a_generated_token_is_in_a_runtime_file_only_the_user_reads_until_stop(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as web:
        path = web.runtime_file
        assert path is not None and path.parent == tmp_path / "runtime"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        contents = json.loads(path.read_text())
        assert contents["token"] == token_of(web)
        assert contents["url"] == web.url and contents["port"] == web.port
        await web.stop()
        assert not path.exists()


async def test_a_configured_token_is_not_written_out(tmp_path: Path) -> None:
    async with serving(tmp_path, token="configured-token") as web:
        assert web.runtime_file is not None
        assert json.loads(web.runtime_file.read_text())["token"] is None
        assert web.banner_line().endswith("(token: web.token)")
        async with connect(web) as client:
            assert client.hello["type"] == "hello"


async def test_it_refuses_to_listen_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    async with ActorSystem() as system:
        with pytest.raises(ActorStartFailed) as failed:
            await system.spawn(
                WebInterface, config=WebConfig(host="0.0.0.0", port=0), runtime_dir=tmp_path
            )
    assert "web.token is not set" in str(failed.value.__cause__)


async def test_a_taken_port_says_which_setting_to_change(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with ActorSystem() as system:
            with pytest.raises(ActorStartFailed) as failed:
                await system.spawn(WebInterface, config=WebConfig(port=port), runtime_dir=tmp_path)
    cause = str(failed.value.__cause__)
    assert f"port {port} on 127.0.0.1 is taken" in cause and "web.port" in cause


async def test_stopping_closes_websockets_with_going_away(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        await web.stop()
        with trio.fail_after(5):
            while True:
                try:
                    await client.ws.get_message()
                except Exception as exc:  # ConnectionClosed
                    reason = getattr(exc, "reason", None)
                    assert reason is not None and reason.code == 1001
                    break

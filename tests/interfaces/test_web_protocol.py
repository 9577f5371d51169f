"""The WebSocket protocol end to end: every frame type, and every malformed frame refused."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed, open_websocket_url

from tests.interfaces.web_support import Client, connect, serving, ws_url
from wactorz import Actor, MessageRejected
from wactorz.interfaces.web.protocol import REQUEST_SCHEMAS
from wactorz.telemetry import ALERTS_TOPIC


class Echo(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        if message.get("never"):
            self.reply_later()  # an answer that never comes
            return None
        if message.get("refuse"):
            raise MessageRejected("send something else")
        if "sleep" in message:
            await trio.sleep(message["sleep"])
        return {"echo": message}


async def test_hello_names_the_session_node_and_version(tmp_path: Path) -> None:
    async with serving(tmp_path) as web:
        async with connect(web) as client:
            hello = client.hello
            assert hello["node"] == "webtest" and hello["protocol"] == 1
            assert hello["version"] and hello["session"] and hello["connection"]
        async with connect(web, query="session=resumed-1") as client:
            assert client.hello["session"] == "resumed-1"


async def test_ask_answers_with_a_reply_and_failures_with_error_codes(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        await web.system.spawn(Echo, "echo")
        reply = await client.request({"type": "ask", "actor": "echo", "message": {"n": 1}})
        assert reply == {"type": "reply", "id": reply["id"], "reply": {"echo": {"n": 1}}}
        refused = await client.request(
            {"type": "ask", "actor": "echo", "message": {"refuse": True}}
        )
        assert (refused["type"], refused["code"]) == ("error", "rejected")
        assert refused["error"] == "send something else"
        missing = await client.request({"type": "ask", "actor": "nobody", "message": {}})
        assert missing["code"] == "not_found" and "'nobody'" in missing["error"]
        late = await client.request(
            {"type": "ask", "actor": "echo", "message": {"sleep": 1}, "timeout": 0.05}
        )
        assert late["code"] == "timeout"
        own = await client.request(
            {"type": "ask", "actor": "web", "message": {"get": "statistics"}}
        )
        assert own["reply"]["connections"] == 1


async def test_cancel_stops_an_ask_and_unknown_requests_say_so(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        await web.system.spawn(Echo, "echo")
        slow = await client.send({"type": "ask", "actor": "echo", "message": {"never": True}})
        again = await client.request({"type": "ask", "id": slow, "actor": "echo", "message": {}})
        assert again["code"] == "duplicate_id"
        cancel = await client.request({"type": "cancel", "request": slow})
        assert cancel["reply"] == {"cancelling": slow}
        assert (await client.final(slow))["code"] == "cancelled"
        unknown = await client.request({"type": "cancel", "request": "nope"})
        assert unknown["code"] == "unknown_request"


async def test_subscriptions_deliver_events_alerts_and_topic_messages_until_unsubscribed(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        system = web.system
        subscribed = await client.request(
            {"type": "subscribe", "topics": ["events", "alerts", "shared/+"]}
        )
        assert subscribed["reply"] == {"subscribed": ["alerts", "events", "shared/+"]}
        await system.spawn(Echo, "echo")
        event = await client.next("event")
        assert event["event"]["kind"] == "started" and event["event"]["name"] == "echo"
        alert = {"kind": "crash", "severity": "warning", "message": "boom"}
        await system.publish(ALERTS_TOPIC, alert)
        assert (await client.next("alert"))["alert"] == alert
        await system.publish("shared/kitchen", {"t": 21})
        message = await client.next("message")
        assert (message["topic"], message["message"]) == ("shared/kitchen", {"t": 21})
        bad = await client.request({"type": "subscribe", "topics": ["shared/#/x"]})
        assert bad["code"] == "bad_topic"
        done = await client.request({"type": "unsubscribe", "topics": ["shared/+", "alerts"]})
        assert done["reply"] == {"subscribed": ["events"]}
        assert await system.publish("shared/kitchen", {"t": 22}) == 0
        assert web.web_statistics() is not None
        assert web.web_statistics().topic_filters == 0  # type: ignore[union-attr]


async def test_snapshot_on_request_needs_a_tree_subscription(tmp_path: Path) -> None:
    async with serving(tmp_path) as web, connect(web) as client:
        refused = await client.request({"type": "snapshot"})
        assert refused["code"] == "not_subscribed"
        await client.request({"type": "subscribe", "topics": ["tree"]})
        first = await client.next("snapshot")
        again = await client.request({"type": "snapshot"})
        assert again["reply"] == {"snapshot": True}
        assert (await client.next("snapshot"))["seq"] >= first["seq"]


MALFORMED: list[tuple[str | bytes, str]] = [
    (b"\x00\x01binary", "binary"),
    ("not json", "bad_json"),
    ('{"type": "chat", "id": 1, "text": NaN}', "bad_json"),
    ("[" * 100_000, "too_large"),
    ("[1, 2]", "bad_frame"),
    ('"chat"', "bad_frame"),
    ("{}", "bad_frame"),
    ('{"type": 3, "id": 1}', "bad_frame"),
    ('{"type": "dance", "id": 1}', "unknown_type"),
    ('{"type": "chat", "text": "hi"}', "bad_frame"),
    ('{"type": "chat", "id": true, "text": "hi"}', "bad_frame"),
    ('{"type": "chat", "id": 1}', "bad_frame"),
    ('{"type": "chat", "id": 1, "text": 5}', "bad_frame"),
    ('{"type": "chat", "id": 1, "text": "hi", "extra": 1}', "bad_frame"),
    ('{"type": "command", "id": 1, "text": "status"}', "bad_frame"),
    ('{"type": "ask", "id": 1, "actor": "x", "message": []}', "bad_frame"),
    ('{"type": "ask", "id": 1, "actor": "x", "message": {}, "timeout": -1}', "bad_frame"),
    ('{"type": "subscribe", "id": 1, "topics": []}', "bad_frame"),
    ('{"type": "cancel", "id": 1}', "bad_frame"),
    ("[" * 5000 + "]" * 5000, "bad_json"),
]


async def test_every_kind_of_malformed_frame_gets_an_error_and_the_connection_stays_usable(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, max_frame_bytes=60_000) as web, connect(web) as client:
        for data, code in MALFORMED:
            await client.ws.send_message(data)
            error = await client.next("error")
            assert error["code"] == code, (data[:60], error)
            assert error["error"]
        # The id is echoed back whenever the frame had a usable one.
        await client.ws.send_message('{"type": "chat", "id": "x1", "text": 5}')
        assert (await client.next("error"))["id"] == "x1"
        reply = await client.request(
            {"type": "ask", "actor": "web", "message": {"get": "statistics"}}
        )
        assert reply["type"] == "reply"


def test_the_documentation_describes_every_request_type() -> None:
    page = (Path(__file__).parents[2] / "docs" / "websocket.md").read_text()
    for kind in REQUEST_SCHEMAS:
        assert f'"type": "{kind}"' in page, kind
    for kind in (
        "hello",
        "snapshot",
        "delta",
        "stream",
        "stream_end",
        "event",
        "alert",
        "metrics",
        "message",
        "reply",
        "error",
    ):
        assert f'"type": "{kind}"' in page, kind


async def test_a_message_over_the_servers_limit_closes_with_1009(tmp_path: Path) -> None:
    async with (
        serving(tmp_path, max_frame_bytes=1000, max_message_bytes=10_000) as web,
        connect(web) as client,
    ):
        await client.ws.send_message("x" * 5000)
        assert (await client.next("error"))["code"] == "too_large"
        await client.ws.send_message("x" * 20_000)
        with pytest.raises(ConnectionClosed) as closed:
            await client.receive()
        assert closed.value.reason.code == 1009


# ---- hypothesis: arbitrary frames against one server running in a thread of its own ----------


@pytest.fixture(scope="module")
def server_in_a_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The WebSocket URL of a web interface run by its own ``trio.run`` in a thread."""
    ready = threading.Event()
    done = threading.Event()
    url: list[str] = []
    stop: list[trio.lowlevel.TrioToken] = []
    stopping = trio.Event()

    async def main() -> None:
        stop.append(trio.lowlevel.current_trio_token())
        async with serving(tmp_path_factory.mktemp("hypothesis-web")) as web:
            url.append(ws_url(web))
            ready.set()
            await stopping.wait()

    def run() -> None:
        try:
            trio.run(main)
        finally:
            ready.set()
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(30)
    assert url, "the web interface did not start in its thread"
    yield url[0]

    stop[0].run_sync_soon(stopping.set)
    done.wait(30)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_frames = (
    st.binary(max_size=200)
    | st.text(max_size=200)
    | _json.map(json.dumps)
    | st.fixed_dictionaries(
        {"type": st.sampled_from(sorted(REQUEST_SCHEMAS)) | st.text(max_size=10)},
        optional={
            "id": _json,
            "text": _json,
            "topics": _json,
            "actor": _json,
            "message": _json,
            "request": _json,
            "session": _json,
            "target": _json,
            "timeout": _json,
        },
    ).map(json.dumps)
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=_frames)
async def test_arbitrary_frames_never_break_the_server(
    server_in_a_thread: str, frame: str | bytes
) -> None:
    async with open_websocket_url(server_in_a_thread) as ws:
        client = Client(ws)
        assert (await client.receive())["type"] == "hello"
        await ws.send_message(frame)
        probe = await client.send({"type": "ask", "actor": "web", "message": {"get": "statistics"}})
        # Whatever the frame did (an error, a reply, a subscription), the probe is answered.
        assert (await client.final(probe))["type"] == "reply"

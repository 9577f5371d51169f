"""Nothing a broker client sends can crash, wedge or fool the service.

These tests attack ``python -m wactorz run --node probe`` from outside, as any client of
the broker could: the real service in its own process, the real test broker, and plain
paho clients publishing whatever they like on every topic the service listens to. After
each attack they check what must still be true (`RunningService.assert_unharmed`):

- the process is alive, no actor crashed or restarted, no crash alert was raised;
- the broker connection never dropped: the bridge's ``connection.disconnects`` is 0,
  the node never went ``offline``, the service never logged "connection lost";
- the monitor still answers ``{"get": "health"}`` and the bridge ``{"get": "statistics"}``;

and what each request must have got (`expected_answer`, the promises of docs/mqtt.md
written as a function of the bytes sent): exactly one answer, on its ``reply_to``, when
that is a valid topic under ``wactorz/replies/``; nothing at all, anywhere, otherwise
(`RunningService.assert_nothing_stray`); error answers with a code and a sentence, never
a Python exception.

The tests are synchronous: the service runs in another process and each paho client on
its own thread, so there is nothing for Trio to do, and one service (a module-scoped
fixture) can serve most of the file. Tests that need the service to start in a
particular broker state, or to be alone with it, start their own.
"""

from __future__ import annotations

import builtins
import contextlib
import itertools
import json
import operator
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import paho.mqtt.client as paho
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import wactorz.core.errors
from tests.interfaces.conftest import BrokerProcess
from tests.interfaces.test_mqtt_bridge import LIMIT_S, Seen

PREFIX: Final = "wactorz"
NODE: Final = "probe"
REPLIES: Final = f"{PREFIX}/replies/"
"""The reply namespace: ``mqtt.reply_prefix``'s default, ``<topic_prefix>/replies``."""
MAX_PAYLOAD_BYTES: Final = 65536
"""``mqtt.max_payload_bytes``'s default."""
MAX_TOPIC_BYTES: Final = 65535
"""The longest topic MQTT can carry: its length is a 16-bit number."""
REQUEST_KEYS: Final = frozenset({"message", "reply_to", "correlation_id"})

MONITOR: Final = "monitor"
BRIDGE: Final = "mqtt-bridge"
UNKNOWN: Final = "unknown"
"""The target of an inbox topic naming no actor of the node."""
MONITOR_INBOX: Final = f"{PREFIX}/agents/by-name/{MONITOR}/inbox"
BRIDGE_INBOX: Final = f"{PREFIX}/agents/by-name/{BRIDGE}/inbox"
NODE_STATUS: Final = f"{PREFIX}/nodes/{NODE}/status"
BANNER: Final = f"running on node '{NODE}'"
"""The banner line that says the service is up."""
FORGED_CRASH: Final = {"kind": "crashed", "name": "database", "id": "x-database", "error": "forged"}

RSS_GROWTH_LIMIT: Final = 50 * 2**20
CLEAR_DEPTH: Final = 16
"""Requests nested deeper than this may be refused as too deep; shallower ones may not."""

_ASKS: Final = f"{REPLIES}probe/"
"""Where this file's own questions to the service get their answers."""
_LIFECYCLE: Final = re.compile(rf"{PREFIX}/agents/[^/]+/status")
_HEARTBEAT: Final = re.compile(rf"{PREFIX}/agents/[^/]+/heartbeat")
_ALERT: Final = re.compile(rf"{PREFIX}/(agents/[^/]+|system)/alert")
_TELEMETRY: Final = re.compile(
    rf"{PREFIX}/(agents/[^/]+/(heartbeat|metrics|manifest|status|alert)"
    rf"|system/(health|alert)|nodes/{NODE}/(heartbeat|status|alive|desired))"
)
"""What the service publishes of its own accord."""
_ANSWER_KEYS: Final = frozenset({"reply", "code", "correlation_id"})
"""Keys of an answer that no telemetry payload has."""

EXCEPTION_NAMES: Final = frozenset(
    name
    for module in (builtins, wactorz.core.errors)
    for name, value in vars(module).items()
    if isinstance(value, type) and issubclass(value, BaseException)
) | {"Traceback", "JSONDecodeError", "Cancelled"}
"""Words that betray internal exception text in an error sentence."""


def eventually(condition: Callable[[], bool], what: str, timeout: float = LIMIT_S) -> None:
    """Poll ``condition`` until it holds; fail saying ``what`` was awaited after ``timeout``."""
    if not within(timeout, condition):
        raise AssertionError(f"still waiting after {timeout} s for {what}")


def within(timeout: float, condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` holds, polled for up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def encode(value: object) -> bytes:
    """JSON as a client would usually send it: ASCII, lone surrogates as ``\\udXXX`` escapes."""
    return json.dumps(value).encode()


def brief(seen: Seen) -> str:
    """A message, shortened for a failure report."""
    return f"{seen.topic[:200]!r}: {seen.payload[:300]!r}"


def as_object(payload: bytes) -> dict[str, Any] | None:
    """``payload`` as a JSON object, or None if it is not one."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


# ---- the spec: topics, and what a request gets ----------------------------------------------


def is_topic_name(value: object) -> bool:
    """Whether ``value`` is a topic MQTT (and mosquitto) lets a client publish on.

    Non-empty, no wildcards, encodable as UTF-8 (so no lone surrogates) in at most 65535
    bytes, and free of what mosquitto refuses as malformed: NUL, the control characters
    U+0001..U+001F and U+007F..U+009F, and the non-characters.
    """
    if not isinstance(value, str) or not value or "+" in value or "#" in value:
        return False
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    if size > MAX_TOPIC_BYTES:
        return False
    for character in value:
        code = ord(character)
        if code <= 0x1F or 0x7F <= code <= 0x9F:
            return False
        if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
            return False
    return True


def reply_to_usable(value: object) -> bool:
    """Whether the service may publish an answer on ``value``: a valid topic in the reply
    namespace, with no empty level at the end."""
    return (
        is_topic_name(value)
        and isinstance(value, str)
        and value.startswith(REPLIES)
        and not value.endswith("/")
    )


class _Unreadable(Exception):
    """The payload holds a constant (NaN, Infinity) that Python reads and JSON has not."""


_ANY: Final = object()


@attrs.frozen
class Expected:
    """What may come of one request: between ``least`` and ``most`` answers on ``reply_to``.

    ``kinds`` are the allowed answers, ``"reply"`` or error codes (None: any);
    ``correlation_id`` is what every answer must carry back (`_ANY`: not checked).
    """

    reply_to: str | None = None
    least: int = 0
    most: int = 0
    kinds: frozenset[str] | None = None
    correlation_id: object = _ANY


NOTHING: Final = Expected()
_BAD_REQUEST: Final = frozenset({"bad_request"})


def expected_answer(
    target: str | None, payload: bytes, max_bytes: int = MAX_PAYLOAD_BYTES
) -> Expected:
    """What docs/mqtt.md promises for ``payload`` published on an inbox of ``target``.

    ``target`` is `MONITOR`, `BRIDGE`, `UNKNOWN` (an inbox naming no actor) or None (a
    topic that is no inbox). Oversized payloads are refused unread. A strictly UTF-8 JSON
    object with a usable ``reply_to`` gets exactly one answer there, of the kind its
    shape, target and message call for; with no ``reply_to``, or an unusable one, nothing
    comes back. A payload that is not strictly UTF-8 JSON (or is nested deeper than
    `CLEAR_DEPTH`) may get one error at most, and only where a usable ``reply_to`` could
    be read from it.
    """
    if target is None or len(payload) > max_bytes:
        return NOTHING
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return _read_leniently(payload, _BAD_REQUEST)
    if text.startswith("\ufeff"):
        return _read_leniently(payload, _BAD_REQUEST)  # docs/mqtt.md: no byte order mark
    if re.search(r"\d{4300}", text):
        return _read_leniently(payload, None)  # valid JSON, but Python's int() refuses it
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except _Unreadable:
        return _read_leniently(payload, None)  # NaN, Infinity: Python reads them, JSON has none
    except (ValueError, RecursionError):
        return _read_leniently(payload, _BAD_REQUEST)
    if not isinstance(data, dict) or "reply_to" not in data:
        return NOTHING
    if _depth(data) > CLEAR_DEPTH:
        return _read_leniently(payload, None)
    reply_to = data["reply_to"]
    if not reply_to_usable(reply_to):
        return NOTHING
    kinds = _answer_kinds(target, data)
    return Expected(reply_to, 1, 1, kinds, data.get("correlation_id"))


def _refuse_constant(name: str) -> object:
    raise _Unreadable(name)


_REPLY_TO_TEXT: Final = re.compile(r'"reply_to"\s*:\s*"((?:[^"\\]|\\.)*)"')


def _read_leniently(payload: bytes, kinds: frozenset[str] | None) -> Expected:
    """At most one answer of ``kinds``, where a usable ``reply_to`` could be read from a
    payload that is not plainly UTF-8 JSON; nothing if no reader could find one."""
    for reply_to in _readable_reply_tos(payload):
        if reply_to_usable(reply_to) and "\ufffd" not in reply_to:
            return Expected(reply_to, 0, 1, kinds)
    return NOTHING


def _readable_reply_tos(payload: bytes) -> Iterator[object]:
    texts: list[str] = []
    for encoding in ("utf-8", "utf-16", "utf-16-le", "utf-16-be", "utf-32"):
        with contextlib.suppress(UnicodeDecodeError):
            texts.append(payload.decode(encoding, "surrogatepass"))
    texts.append(payload.decode("utf-8", "replace"))
    for text in texts:
        try:
            data = json.loads(text.removeprefix("\ufeff"))
        except (ValueError, RecursionError):
            for match in _REPLY_TO_TEXT.finditer(text):
                try:
                    yield json.loads(f'"{match.group(1)}"')
                except ValueError:
                    continue
        else:
            if isinstance(data, dict):
                yield data.get("reply_to")


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _answer_kinds(target: str, request: dict[str, Any]) -> frozenset[str] | None:
    message = request.get("message")
    if not REQUEST_KEYS.issuperset(request) or not isinstance(message, dict):
        return frozenset({"bad_request", "not_found"} if target == UNKNOWN else {"bad_request"})
    if target == UNKNOWN:
        return frozenset({"not_found"})
    if target == MONITOR:
        if message in ({"get": "health"}, {"get": "alerts"}):
            return frozenset({"reply"})
        if message.get("get") in ("health", "alerts") or "tick" in message:
            # A question with extras, and ticks (docs/mqtt.md offers them to the outside,
            # test_a_tick_from_outside_is_rejected_not_obeyed refuses them): undecided.
            return frozenset({"reply", "rejected"})
        return frozenset({"rejected"})
    if message == {"get": "statistics"}:
        return frozenset({"reply"})
    return None  # the bridge's answer to anything else is not specified


def answer_problems(
    seen: Seen, kinds: frozenset[str] | None, ids: Sequence[object], sent: str = ""
) -> list[str]:
    """What is wrong with one answer, given the kinds and correlation ids it may have;
    ``sent`` is the text of the request, whose words an error may quote."""
    where = repr(seen.topic[:200])
    data = as_object(seen.payload)
    if data is None:
        return [f"the answer on {where} is not a JSON object: {seen.payload[:200]!r}"]
    if ("reply" in data) == ("error" in data):
        return [f"the answer on {where} needs exactly one of reply and error: {data}"]
    problems = []
    kind = data.get("code", "reply")
    if "error" in data:
        error = data["error"]
        if not isinstance(kind, str) or not re.fullmatch(r"[a-z_]+", kind):
            problems.append(f"the error on {where} has no code: {data}")
        if not isinstance(error, str) or not error.strip():
            problems.append(f"the error on {where} has no sentence: {data}")
        elif leaked := [word for word in exception_words(error) if word not in sent]:
            problems.append(f"the error on {where} shows internals {leaked}: {error!r}")
    if kinds is not None and kind not in kinds:
        problems.append(f"expected {sorted(kinds)} on {where}, got {kind!r}: {data}")
    if _ANY not in ids and data.get("correlation_id", _ANY) not in ids:
        problems.append(f"the answer on {where} carries the wrong correlation id: {data}")
    return problems


def exception_words(text: str) -> list[str]:
    """The Python exception names in ``text``: internal detail an error sentence must not show."""
    return sorted({word for word in re.findall(r"\w+", text) if word in EXCEPTION_NAMES})


# ---- clients and the service process --------------------------------------------------------


class Client:
    """A paho client on its own network thread that keeps, in order, everything it receives.

    `publish` waits for the broker's acknowledgement (QoS 1): once it returns, the broker
    delivers the message before anything this client publishes later.
    """

    def __init__(self, broker: BrokerProcess, *filters: str, inflight: int = 20) -> None:
        self._client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"hostile-{secrets.token_hex(4)}"
        )
        self._client.max_inflight_messages_set(inflight)
        self._lock = threading.Lock()
        self._seen: list[Seen] = []
        self._by_topic: defaultdict[str, list[int]] = defaultdict(list)
        self._closing = False
        self.disconnects = 0
        connected = threading.Event()
        self._client.on_connect = lambda *_: connected.set()
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.connect(broker.host, broker.port, keepalive=30)
        self._client.loop_start()
        try:
            self._wait_connected(connected, broker)
            for topic_filter in filters:
                self.subscribe(topic_filter)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _wait_connected(connected: threading.Event, broker: BrokerProcess) -> None:
        if not connected.wait(LIMIT_S):
            raise TimeoutError(f"could not connect to {broker!r}")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing = True
        self._client.disconnect()
        self._client.loop_stop()

    def _on_disconnect(self, *_: object) -> None:
        if not self._closing:
            self.disconnects += 1

    def _on_message(self, _client: object, _userdata: object, message: paho.MQTTMessage) -> None:
        seen = Seen(message.topic, bytes(message.payload), bool(message.retain))
        with self._lock:
            self._by_topic[seen.topic].append(len(self._seen))
            self._seen.append(seen)

    def subscribe(self, topic_filter: str) -> None:
        acked = threading.Event()
        self._client.on_subscribe = lambda *_: acked.set()
        self._client.subscribe(topic_filter, 1)
        if not acked.wait(LIMIT_S):
            raise TimeoutError(f"no SUBACK for {topic_filter!r}")

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.publish_nowait(topic, payload, retain=retain)
        info.wait_for_publish(LIMIT_S)
        if not info.is_published():
            raise AssertionError(f"the broker did not acknowledge a publish on {topic!r}")
        if self.disconnects:
            raise AssertionError(
                "the broker dropped the test's own client: the test published something invalid"
            )

    def publish_nowait(
        self, topic: str, payload: bytes, *, retain: bool = False
    ) -> paho.MQTTMessageInfo:
        return self._client.publish(topic, payload, qos=1, retain=retain)

    def mark(self) -> int:
        """A position in what this client received, for `since` and `on`."""
        with self._lock:
            return len(self._seen)

    def since(self, mark: int = 0) -> list[Seen]:
        with self._lock:
            return self._seen[mark:]

    def on(self, topic: str, since: int = 0) -> list[Seen]:
        with self._lock:
            return [self._seen[i] for i in self._by_topic.get(topic, ()) if i >= since]

    def wait_for(
        self, topic: str, count: int = 1, *, since: int = 0, timeout: float = LIMIT_S
    ) -> list[Seen]:
        eventually(lambda: len(self.on(topic, since)) >= count, f"{count} on {topic!r}", timeout)
        return self.on(topic, since)


class ServiceProcess:
    """``python -m wactorz run --node probe`` on the broker, its stdout and stderr in files.

    Only the settings given reach it from the environment (every other ``WACTORZ_*``
    variable is removed), and it runs in ``workdir`` so that no ``wactorz.yaml`` is read.
    """

    def __init__(self, broker: BrokerProcess, workdir: Path, settings: Mapping[str, str]) -> None:
        self._workdir = workdir
        self._stdout = workdir / "service.stdout"
        self._stderr = workdir / "service.stderr"
        self._env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WACTORZ_")}
        everything = {
            "mqtt.enabled": "true",
            "mqtt.host": broker.host,
            "mqtt.port": str(broker.port),
            "mqtt.protocol": broker.protocol,
            "monitor.interval_s": "0.5",
            "web.port": "0",
            **settings,
        }
        for key, value in everything.items():
            self._env[f"WACTORZ_{key.replace('.', '__').upper()}"] = value
        self._env["PYTHONUNBUFFERED"] = "1"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def start(self) -> None:
        """Start the service and return once its banner is out; raise if it exits first."""
        since = self.stderr_size()
        with self._stdout.open("ab") as stdout, self._stderr.open("ab") as stderr:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "wactorz", "run", "--node", NODE],
                cwd=self._workdir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        eventually(lambda: BANNER in self.stderr(since) or not self.alive, "the service's banner")
        if not self.alive:
            raise RuntimeError(
                f"the service exited before its banner; stderr:\n{self.stderr(since)}"
            )

    def stop(self) -> int | None:
        """Stop the service as Ctrl-C does (killing it if it lingers); its exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=LIMIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def describe(self) -> str:
        if self._process is None:
            return "the service is not running"
        code = self._process.poll()
        state = "is running" if code is None else f"exited with code {code}"
        return f"the service {state}; the end of its stderr:\n{self.stderr()[-3000:]}"

    def rss(self) -> int:
        return int(psutil.Process(self.pid).memory_info().rss)

    def stderr_size(self) -> int:
        return self._stderr.stat().st_size if self._stderr.exists() else 0

    def stderr(self, since: int = 0) -> str:
        if not self._stderr.exists():
            return ""
        with self._stderr.open("rb") as stream:
            stream.seek(since)
            return stream.read().decode(errors="replace")


@attrs.frozen
class Mark:
    """A moment of a test: how much the witness had received and the service had logged."""

    witness: int
    stderr: int


@attrs.frozen
class Shot:
    """One hostile publish, and the target its topic names (None: no inbox the bridge serves)."""

    topic: str
    payload: bytes
    target: str | None


class RunningService:
    """The service under attack, a `sender` for the attacks and a `witness` for what follows.

    The witness subscribes to ``witness`` filters (default everything but ``$`` topics)
    before the service starts, so it sees all the service ever publishes. Everything the
    sender publishes is remembered, so that the broker's copies of the attacks are never
    mistaken for something the service said.
    """

    def __init__(
        self,
        broker: BrokerProcess,
        workdir: Path,
        *,
        witness: Sequence[str] = ("#",),
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.broker = broker
        self.max_payload_bytes = int(
            (settings or {}).get("mqtt.max_payload_bytes", MAX_PAYLOAD_BYTES)
        )
        self.process = ServiceProcess(broker, workdir, settings or {})
        self.witness = Client(broker, *witness)
        self.sender = Client(broker)
        self.sent: set[tuple[str, bytes]] = set()
        self.ids: dict[str, str] = {}
        self.started = self.mark()
        self.rss_at_start = 0
        self._own_answers: set[str] = set()
        self._checked = False
        self._token = secrets.token_hex(3)
        self._count = itertools.count()

    def __enter__(self) -> RunningService:
        return self

    def __exit__(self, *_: object) -> None:
        self.process.stop()
        self.witness.close()
        self.sender.close()

    def fresh(self, kind: str) -> str:
        """A name no other request of this run uses."""
        return f"{kind}-{self._token}-{next(self._count)}"

    def mark(self) -> Mark:
        return Mark(self.witness.mark(), self.process.stderr_size())

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.sent.add((topic, payload))
        self.sender.publish(topic, payload, retain=retain)

    def heard(self, since: Mark) -> list[Seen]:
        """What the witness received since ``since``, the sender's own publishes left out."""
        return [
            m for m in self.witness.since(since.witness) if (m.topic, m.payload) not in self.sent
        ]

    # ---- starting, and knowing it serves ---------------------------------------------------

    def start(self) -> None:
        """Start the service; return once it answers requests and its monitor has ticked."""
        self.started = self.mark()
        self.process.start()
        deadline = time.monotonic() + LIMIT_S
        # Requests published before the bridge has subscribed are lost: ask until one lands.
        while not self._answered(BRIDGE_INBOX, {"get": "statistics"}, timeout=0.5):
            assert time.monotonic() < deadline, (
                f"the bridge never answered; {self.process.describe()}"
            )
        self.ids = self._ids_since(self.started)
        eventually(lambda: self.health().get("reply") is not None, "the monitor's first health")
        self.rss_at_start = self.process.rss()

    def restart(self) -> None:
        mark = self.witness.mark()
        self.process.stop()
        # Its last words must not count against the next process: wait for its goodbye
        # (or the broker's will, if it died), after which the old process says nothing.
        within(2.0, lambda: self._went_offline(mark))
        self.start()

    def _went_offline(self, since: int) -> bool:
        statuses = [as_object(m.payload) or {} for m in self.witness.on(NODE_STATUS, since)]
        return any(status.get("status") == "offline" for status in statuses)

    def ensure_unharmed(self) -> None:
        """Restart the service if an earlier attack harmed it, so that each attack starts
        from a healthy service and one failure does not fail everything after it."""
        if self._checked and self.process.alive and not self._harm(self.started):
            return  # the last attack's checks passed, and nothing has happened since
        try:
            self.assert_unharmed(self.started)
        except AssertionError:
            self.restart()

    def _answered(self, topic: str, message: dict[str, Any], timeout: float) -> bool:
        reply_to = self._ask_nowait(topic, message)[0]
        return within(timeout, lambda: bool(self.witness.on(reply_to)))

    def _ids_since(self, since: Mark) -> dict[str, str]:
        def ids() -> dict[str, str]:
            found = {}
            for m in self.heard(since):
                data = as_object(m.payload) if _HEARTBEAT.fullmatch(m.topic) else None
                if data is not None:
                    found[data["name"]] = data["id"]
            return found

        eventually(lambda: {MONITOR, BRIDGE} <= ids().keys(), "heartbeats of monitor and bridge")
        return ids()

    # ---- asking ------------------------------------------------------------------------

    def _ask_nowait(self, topic: str, message: dict[str, Any]) -> tuple[str, str]:
        reply_to, correlation_id = f"{_ASKS}{self.fresh('ask')}", self.fresh("id")
        self._own_answers.add(reply_to)
        request = {"message": message, "reply_to": reply_to, "correlation_id": correlation_id}
        self.publish(topic, encode(request))
        return reply_to, correlation_id

    def ask(self, topic: str, message: dict[str, Any]) -> dict[str, Any]:
        """Send ``message`` to the inbox ``topic`` and return the answer (reply or error)."""
        reply_to, correlation_id = self._ask_nowait(topic, message)
        try:
            answer = self.witness.wait_for(reply_to)[0]
        except AssertionError as exc:
            raise AssertionError(
                f"{exc} (asked {message} on {topic}); {self.process.describe()}"
            ) from None
        data = as_object(answer.payload)
        assert data is not None and data.get("correlation_id") == correlation_id, answer
        return data

    def statistics(self) -> dict[str, Any]:
        answer = self.ask(BRIDGE_INBOX, {"get": "statistics"})
        assert isinstance(answer.get("reply"), dict), f"no statistics from the bridge: {answer}"
        return answer["reply"]

    def health(self) -> dict[str, Any]:
        answer = self.ask(MONITOR_INBOX, {"get": "health"})
        assert "reply" in answer, f"the monitor did not answer {{'get': 'health'}}: {answer}"
        return answer

    # ---- checking -----------------------------------------------------------------------

    def assert_unharmed(self, since: Mark) -> dict[str, Any]:
        """Check what no input may change, since ``since``; return the bridge's statistics.

        The process is alive, the monitor and the bridge answer, no actor crashed or
        restarted, no crash alert was raised, the node never went offline and the broker
        connection never dropped.
        """
        assert self.process.alive, self.process.describe()
        try:
            self.health()
            statistics = self.statistics()
        except AssertionError as exc:
            harmed = self._harm(since)
            if not harmed:
                raise
            # A restarted bridge loses what arrived while it was down: say why, first.
            shown = "\n".join(harmed[:10])
            raise AssertionError(f"the service was harmed:\n{shown}\nand then: {exc}") from None
        harmed = self._harm(since)
        assert not harmed, "the service was harmed:\n" + "\n".join(harmed[:10])
        connection = statistics["connection"]
        assert connection["connected"] is True, statistics
        assert connection["disconnects"] == 0, f"the broker connection dropped: {statistics}"
        log = self.process.stderr(since.stderr)
        assert "connection lost" not in log, f"the service lost its connection:\n{log[-3000:]}"
        return statistics

    def _harm(self, since: Mark) -> list[str]:
        """Signs since ``since`` of a crash, a restart or an outage."""
        harmed = []
        for m in self.heard(since):
            data = as_object(m.payload) or {}
            if _LIFECYCLE.fullmatch(m.topic) and data.get("status") in ("crashed", "restarted"):
                harmed.append(f"{m.topic}: {data}")
            if _HEARTBEAT.fullmatch(m.topic) and data.get("incarnation") != 0:
                harmed.append(f"{m.topic}: {data}")
            if _ALERT.fullmatch(m.topic) and data.get("kind") in ("crash", "gave_up"):
                harmed.append(f"{m.topic}: {data}")
            if m.topic == NODE_STATUS and data.get("status") != "online":
                harmed.append(f"{m.topic}: {m.payload!r}")
        return harmed

    def assert_nothing_stray(self, since: Mark, answer_topics: Iterable[str] = ()) -> None:
        """Check that since ``since`` the service published nothing but its own telemetry,
        the answers to this file's questions, and messages on ``answer_topics``."""
        allowed = set(answer_topics) | self._own_answers
        stray = []
        for m in self.heard(since):
            if m.topic in allowed:
                continue
            if _TELEMETRY.fullmatch(m.topic):
                data = as_object(m.payload)
                if data is not None and not _ANSWER_KEYS & data.keys():
                    continue
                if m.payload == b"" and m.topic.endswith("/manifest"):
                    continue  # an actor's manifest being cleared
            stray.append(m)
        shown = "\n".join(map(brief, stray[:5]))
        assert not stray, f"published for requests that must get no answer:\n{shown}"

    def attack(self, shots: Sequence[Shot]) -> dict[str, list[Seen]]:
        """Publish ``shots`` in order, then check the service against the spec.

        The service must be unharmed; every request whose ``reply_to`` is usable gets its
        answers (`Expected`) and no more, and nothing else is published. Returns the
        answers by ``reply_to`` topic.
        """
        self._checked = False
        mark = self.mark()
        for shot in shots:
            self.publish(shot.topic, shot.payload)
        self.assert_unharmed(mark)
        by_topic: defaultdict[str, list[Expected]] = defaultdict(list)
        sent: defaultdict[str, str] = defaultdict(str)
        for shot in shots:
            expected = expected_answer(shot.target, shot.payload, self.max_payload_bytes)
            if expected.most:
                assert expected.reply_to is not None
                by_topic[expected.reply_to].append(expected)
                sent[expected.reply_to] += shot.payload.decode("utf-8", "replace")

        def answers(topic: str) -> list[Seen]:
            return [
                m
                for m in self.witness.on(topic, mark.witness)
                if (topic, m.payload) not in self.sent
            ]

        eventually(
            lambda: all(len(answers(t)) >= sum(e.least for e in es) for t, es in by_topic.items()),
            f"answers on {sorted(by_topic)}",
        )
        problems = []
        found = {}
        for topic, expectations in by_topic.items():
            found[topic] = answers(topic)
            most = sum(e.most for e in expectations)
            if len(found[topic]) > most:
                problems.append(f"{len(found[topic])} answers on {topic[:200]!r}, {most} due")
            kinds = None
            if all(e.kinds is not None for e in expectations):
                kinds = frozenset().union(*(e.kinds for e in expectations if e.kinds is not None))
            ids = [e.correlation_id for e in expectations]
            for answer in found[topic]:
                problems += answer_problems(answer, kinds, ids, sent[topic])
        assert not problems, "\n".join(problems)
        self.assert_nothing_stray(mark, set(by_topic))
        self._checked = True
        return found


def request(message: object, reply_to: object = None, correlation_id: object = None) -> bytes:
    """An inbox payload; None leaves a field out."""
    fields = {"message": message, "reply_to": reply_to, "correlation_id": correlation_id}
    return encode({key: value for key, value in fields.items() if value is not None})


@pytest.fixture(scope="module")
def shared_service(
    mqtt_broker_module: BrokerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """One service for the tests that only need it running: starting one takes a second."""
    with RunningService(mqtt_broker_module, tmp_path_factory.mktemp("service")) as service:
        service.start()
        yield service


@pytest.fixture
def service(shared_service: RunningService) -> RunningService:
    """The shared service, restarted first if an earlier test harmed it."""
    shared_service.ensure_unharmed()
    return shared_service


def refusals_logged(service: RunningService, since: Mark, code: str) -> list[str]:
    """The warnings the service logged since ``since`` that mention ``code``."""
    return [
        line
        for line in service.process.stderr(since.stderr).splitlines()
        if "WARNING" in line and code in line
    ]


# ---- the reproductions ---------------------------------------------------------------------


@pytest.mark.parametrize("reply_to", [r"clients/\ud800", r"wactorz/replies/\ud800"])
def test_a_reply_to_with_a_lone_surrogate_is_refused_without_an_answer_or_a_crash(
    service: RunningService, reply_to: str
) -> None:
    """A lone surrogate is valid in JSON (as an escape) but not in UTF-8, so no topic can
    carry it: publishing the error there once crashed the bridge. Twelve in a row, as the
    crash needed a few, must all be refused (counted, logged) and answered nowhere."""
    payload = b'{"message":5,"reply_to":"' + reply_to.encode() + b'"}'
    before, mark = service.statistics(), service.mark()
    service.attack([Shot(MONITOR_INBOX, payload, MONITOR)] * 12)
    assert service.statistics()["errors"] - before["errors"] == 12
    assert refusals_logged(service, mark, "bad_request")


def test_retained_hostile_requests_on_inboxes_neither_stop_the_service_nor_get_carried_out(
    mqtt_broker: BrokerProcess, tmp_path: Path
) -> None:
    """A retained message is replayed to every new subscriber, so garbage left on an
    inbox meets the bridge at each start: it must start and serve regardless, and never
    carry out a request nobody is sending now (a retained ask would be answered forever)."""
    with RunningService(mqtt_broker, tmp_path) as service:
        retained = {
            MONITOR_INBOX: rb'{"message":5,"reply_to":"clients/\ud800"}',
            BRIDGE_INBOX: request({"get": "statistics"}, f"{REPLIES}retained/statistics"),
            f"{PREFIX}/agents/by-name/nobody/inbox": b"\xff\xfe\x00 not JSON",
            f"{PREFIX}/agents/x-database/inbox": request(
                {"event": FORGED_CRASH}, f"{REPLIES}retained/forged"
            ),
            f"{PREFIX}/agents/by-name/deep/inbox": b'{"message": ' + b"[" * 30_000,
        }
        try:
            for topic, payload in retained.items():
                service.publish(topic, payload, retain=True)
            service.start()
            assert BANNER in service.process.stderr(service.started.stderr)
            statistics = service.assert_unharmed(service.started)
            service.assert_nothing_stray(service.started)
            # amqtt replays each retained message twice to the bridge's subscriptions.
            copies = 1 if mqtt_broker.kind == "mosquitto" else 2
            assert statistics["retained_ignored"] == copies * len(retained), statistics
        finally:
            for topic in retained:
                service.publish(topic, b"", retain=True)


@pytest.mark.parametrize("reply_to", [r"wactorz/replies/a\u0001b", r"wactorz/replies/\uffff"])
def test_a_reply_to_the_broker_would_refuse_causes_no_reconnect_loop(
    service: RunningService, reply_to: str
) -> None:
    """mosquitto drops a client that publishes on a topic with a control character or a
    non-character; an answer queued for such a topic was resent after every reconnection,
    so the bridge never stayed connected. It must refuse the request instead."""
    payload = b'{"message":{"get":"health"},"reply_to":"' + reply_to.encode() + b'"}'
    before, mark = service.statistics(), service.mark()
    service.attack([Shot(MONITOR_INBOX, payload, MONITOR)] * 3)
    # A loop would show within the first reconnection delay (1 s): watch a little longer.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        connection = service.statistics()["connection"]
        assert connection["disconnects"] == 0, connection
        time.sleep(0.25)
    assert service.statistics()["errors"] - before["errors"] == 3
    service.assert_unharmed(mark)
    with Client(service.broker, NODE_STATUS) as reader:
        status = reader.wait_for(NODE_STATUS)[-1]
    assert status.retain and status.json()["status"] == "online", status


def test_the_monitors_internal_messages_from_outside_are_rejected_and_raise_no_alert(
    service: RunningService,
) -> None:
    """Events are how the runtime tells the monitor about crashes; from a broker client
    they are forgeries. A forged crash must not become an alert, a malformed event must
    not crash the monitor, and each ask must hear that it was rejected."""
    tell = Shot(MONITOR_INBOX, b'{"message":{"event":"x"}}', MONITOR)
    forged = Shot(MONITOR_INBOX, request({"event": FORGED_CRASH}, f"{REPLIES}t"), MONITOR)
    mark = service.mark()
    answers = service.attack([tell] * 12 + [forged] * 12)
    assert len(answers[f"{REPLIES}t"]) == 12
    assert all(answer.json()["code"] == "rejected" for answer in answers[f"{REPLIES}t"])
    alerts = service.ask(MONITOR_INBOX, {"get": "alerts"})["reply"]
    assert all(alert["subject"] != "x-database" for alert in alerts), alerts
    forged_alerts = [
        m for m in service.heard(mark) if _ALERT.fullmatch(m.topic) and b"database" in m.payload
    ]
    assert not forged_alerts


@pytest.mark.parametrize(
    "message",
    [
        {"event": "x"},
        {"event": FORGED_CRASH},
        {"event": {"kind": "gave_up", "name": "service"}},
        {"get": "statistics"},
        {"get": ["health"]},
        {},
    ],
)
def test_the_monitor_answers_anything_but_health_and_alerts_with_rejected(
    service: RunningService, message: dict[str, Any]
) -> None:
    """The monitor offers the outside two questions; everything else is refused with a
    code a client can act on, not obeyed and not left unanswered."""
    reply_to = f"{REPLIES}{service.fresh('rejected')}"
    answers = service.attack([Shot(MONITOR_INBOX, request(message, reply_to, "r"), MONITOR)])
    assert answers[reply_to][0].json()["code"] == "rejected"


@pytest.mark.parametrize("message", [{"tick": 1}, {"tick": -1}, {"tick": "x"}])
def test_a_tick_from_outside_is_rejected_not_obeyed(
    service: RunningService, message: dict[str, Any]
) -> None:
    """A tick makes the monitor sample the process and publish for every actor: from
    outside it would be a cheap amplifier for a flood, and it skews the monitor's own
    timing: the monitor takes ticks only from its own clock and the program running it."""
    reply_to = f"{REPLIES}{service.fresh('tick')}"
    answers = service.attack([Shot(MONITOR_INBOX, request(message, reply_to, "t"), MONITOR)])
    answer = answers[reply_to][0].json()
    assert answer.get("code") == "rejected", answer


@pytest.mark.parametrize(
    "reply_to",
    [
        rf'"{REPLIES}x/"',
        rf'"{REPLIES}a/+/b"',
        rf'"{REPLIES}#"',
        rf'"{REPLIES}a\u0000b"',
        rf'"{REPLIES}\u007f"',
        rf'"{REPLIES}\u0085"',
        rf'"{REPLIES}\ufdd0"',
        rf'"{REPLIES}\udfff\ud800"',
        '""',
        "5",
        f'["{REPLIES}x"]',
        f'{{"topic": "{REPLIES}x"}}',
    ],
)
def test_a_reply_to_that_is_no_valid_topic_is_refused_and_nothing_is_published_for_it(
    service: RunningService, reply_to: str
) -> None:
    """Whatever a broker would refuse as a topic, or drop the bridge for publishing on,
    and whatever is not a string at all, is refused before anything is sent."""
    payload = b'{"message": {"get": "health"}, "reply_to": ' + reply_to.encode() + b"}"
    before = service.statistics()
    service.attack([Shot(MONITOR_INBOX, payload, MONITOR)])
    assert service.statistics()["errors"] - before["errors"] == 1


@pytest.mark.parametrize(
    "reply_to",
    [
        NODE_STATUS,
        f"{PREFIX}/agents/{{monitor}}/manifest",
        f"{PREFIX}/agents/{{monitor}}/status",
        f"{PREFIX}/system/alert",
        MONITOR_INBOX,
        f"{PREFIX}/shared/replies",
        "clients/me",
        "$SYS/x",
        f"{PREFIX}/replies",
        f"{PREFIX}/repliesx/y",
        f"/{REPLIES}x",
        "Wactorz/replies/x",
    ],
)
def test_a_reply_to_outside_the_reply_namespace_is_refused_and_nothing_is_published_for_it(
    service: RunningService, reply_to: str
) -> None:
    """An answer goes wherever reply_to says, with the bridge's rights on the broker: a
    client could otherwise overwrite the node's status, an actor's manifest or alerts,
    or make the bridge feed its own inbox. Only the reply namespace is served."""
    topic = reply_to.format(monitor=service.ids[MONITOR])
    before, mark = service.statistics(), service.mark()
    service.attack(
        [
            Shot(MONITOR_INBOX, request({"get": "health"}, topic, "outside"), MONITOR),
            Shot(MONITOR_INBOX, request(5, topic, "outside"), MONITOR),
        ]
    )
    assert service.statistics()["errors"] - before["errors"] == 2
    assert refusals_logged(service, mark, "bad_request")
    for status in service.witness.on(NODE_STATUS, mark.witness):
        assert status.json().keys() == {"node", "status", "time", "reason"}, status


def test_a_request_over_max_payload_bytes_is_refused_unread_and_one_at_the_limit_is_served(
    service: RunningService,
) -> None:
    """The size limit is what keeps a client from making the bridge parse megabytes; it
    is checked before anything else, so nothing comes back from an oversized request,
    and a request of exactly the limit is still an ordinary one."""
    reply_to = f"{REPLIES}{service.fresh('size')}"
    base = len(request({"get": "health"}, reply_to, ""))

    def sized(size: int) -> bytes:
        payload = request({"get": "health"}, reply_to, "x" * (size - base))
        assert len(payload) == size
        return payload

    before = service.statistics()
    answers = service.attack(
        [
            Shot(MONITOR_INBOX, sized(MAX_PAYLOAD_BYTES + 1), MONITOR),
            Shot(MONITOR_INBOX, sized(2**20), MONITOR),
            Shot(MONITOR_INBOX, sized(MAX_PAYLOAD_BYTES), MONITOR),
        ]
    )
    assert "reply" in answers[reply_to][0].json()
    # The bridge tells the broker its maximum packet size (MQTT 5), so the broker may
    # discard the 1 MB request before it arrives; the one just over the limit arrives.
    assert 1 <= service.statistics()["errors"] - before["errors"] <= 2


@pytest.mark.parametrize(
    "encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
)
def test_a_request_not_in_utf8_is_refused_never_carried_out(
    service: RunningService, encoding: str
) -> None:
    """Payloads are UTF-8 JSON. Python's json reads UTF-16 and UTF-32 too, which would
    make the bridge accept what every other client of the topic tree cannot read."""
    reply_to = f"{REPLIES}{service.fresh('encoding')}"
    body = {"message": {"get": "health"}, "reply_to": reply_to, "correlation_id": "e"}
    before = service.statistics()
    service.attack([Shot(MONITOR_INBOX, json.dumps(body).encode(encoding), MONITOR)])
    assert service.statistics()["errors"] - before["errors"] == 1


MALFORMED: Final = {
    "invalid UTF-8 in the message": b'{"message": {"get": "\xff"}, "reply_to": "@"}',
    "a raw surrogate in reply_to": b'{"message": {"get": "health"}, "reply_to": "@\xed\xa0\x80"}',
    "a UTF-8 BOM": b'\xef\xbb\xbf{"message": {"get": "health"}, "reply_to": "@"}',
    "truncated JSON": b'{"message": {"get": "health"}, "reply_to": "@", "correlation_id": "x',
    "a raw NUL in a string": b'{"message": {"get": "he\x00alth"}, "reply_to": "@"}',
    "NaN": b'{"message": {"get": NaN}, "reply_to": "@"}',
    "a 5000-digit number": b'{"message": {"n": ' + b"9" * 5000 + b'}, "reply_to": "@"}',
    "deep nesting before reply_to": (
        b'{"message": ' + b"[" * 30_000 + b"]" * 30_000 + b', "reply_to": "@"}'
    ),
    "deep nesting after reply_to": (
        b'{"reply_to": "@", "message": {"a": ' + b"[" * 30_000 + b"]" * 30_000 + b"}}"
    ),
    "200 nested objects": b'{"reply_to": "@", "message": ' + b'{"a":' * 200 + b"1" + b"}" * 201,
    "an array of a request": b'[{"message": {"get": "health"}, "reply_to": "@"}]',
    "a string of a request": encode('{"message": {"get": "health"}, "reply_to": "@"}'),
    "an escaped surrogate in the message": rb'{"message": {"get": "\ud800"}, "reply_to": "@"}',
    "an unknown key": b'{"message": {"get": "health"}, "reply_to": "@", "reply-to": "x"}',
    "no message": b'{"reply_to": "@", "correlation_id": 1}',
    "null": b"null",
    "an empty object": b"{}",
    "empty": b"",
}
"""Broken payloads; ``@`` is replaced by a reply topic of the request's own."""


@pytest.mark.parametrize("payload", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_payload_gets_at_most_an_error_and_harms_nothing(
    service: RunningService, payload: bytes
) -> None:
    """Whatever a payload's defect, the service reads it safely: where the spec can say,
    the request gets exactly its one error; where a reply_to cannot be read at all, no
    answer goes anywhere; and nothing crashes or drops the connection."""
    reply_to = f"{REPLIES}{service.fresh('malformed')}"
    shot = Shot(MONITOR_INBOX, payload.replace(b"@", reply_to.encode()), MONITOR)
    service.attack([shot])


def test_the_bridge_answers_statistics_with_counters_that_count_refusals(
    service: RunningService,
) -> None:
    """The statistics are how an operator (and these tests) see what the bridge refused
    and whether it stayed connected. A request counts when it arrives, so between two
    snapshots lie the refusals, the checks' own two questions and the second snapshot."""
    reply_to = f"{REPLIES}{service.fresh('counted')}"
    before = service.statistics()
    service.attack([Shot(MONITOR_INBOX, request(5, reply_to, i), MONITOR) for i in range(3)])
    after = service.statistics()
    assert after["errors"] - before["errors"] == 3
    assert after["requests"] - before["requests"] == 3 + 2 + 1
    assert after["replies"] >= before["replies"] + 2
    assert {"connected", "connects", "disconnects"} <= after["connection"].keys()
    assert after["connection"]["connects"] == before["connection"]["connects"]


@pytest.mark.parametrize(
    ("target", "message", "code"),
    [
        (f"{PREFIX}/agents/by-name/nobody/inbox", {"get": "health"}, "not_found"),
        (f"{PREFIX}/agents/20261204T000000000.000000Z-nobody/inbox", {"get": "x"}, "not_found"),
        (MONITOR_INBOX, 5, "bad_request"),
        (MONITOR_INBOX, None, "bad_request"),
        (MONITOR_INBOX, {"event": {"kind": "crashed"}}, "rejected"),
    ],
)
def test_an_error_answer_names_a_code_and_says_why_in_a_sentence(
    service: RunningService, target: str, message: object, code: str
) -> None:
    """Clients branch on the code and show the sentence to people; internal exception
    text (class names, tracebacks) helps neither and tells an attacker what broke."""
    reply_to = f"{REPLIES}{service.fresh('error')}"
    payload = request(message, reply_to, "why")  # a message of None is left out
    target_kind = UNKNOWN if "nobody" in target else MONITOR
    answers = service.attack([Shot(target, payload, target_kind)])
    answer = answers[reply_to][0].json()
    assert answer["code"] == code and " " in answer["error"], answer


def test_reply_to_topics_are_measured_in_utf8_bytes_up_to_mqtts_limit(
    mqtt_broker: BrokerProcess, tmp_path: Path
) -> None:
    """MQTT carries topics of up to 65535 UTF-8 bytes. A longer reply_to cannot be
    published (paho refuses it, a broker would drop the connection); one of exactly the
    limit can. The size limit is raised so that these requests reach the topic check."""
    with RunningService(
        mqtt_broker, tmp_path, settings={"mqtt.max_payload_bytes": str(4 * MAX_TOPIC_BYTES)}
    ) as service:
        service.start()
        head = f"{REPLIES}{service.fresh('long')}/"
        fits = (
            head
            + "a" * ((MAX_TOPIC_BYTES - len(head)) % 2)
            + "\u00e9" * ((MAX_TOPIC_BYTES - len(head)) // 2)
        )
        assert len(fits.encode()) == MAX_TOPIC_BYTES
        too_long = fits + "a"
        before = service.statistics()
        answers = service.attack(
            [
                Shot(MONITOR_INBOX, request({"get": "health"}, too_long, "long"), MONITOR),
                Shot(MONITOR_INBOX, request({"get": "health"}, fits, "fits"), MONITOR),
            ]
        )
        assert "reply" in answers[fits][0].json()
        assert service.statistics()["errors"] - before["errors"] == 1


# ---- the flood -------------------------------------------------------------------------------

FLOOD_SIZE: Final = 20_000
FLOOD_LIMIT_S: Final = 60.0
FLOOD_STALL_S: Final = 10.0


@pytest.mark.slow
def test_a_flood_of_asks_gets_every_one_answered_or_refused_as_busy_exactly_once(
    mqtt_broker: BrokerProcess, tmp_path: Path
) -> None:
    """A client that publishes faster than the service can answer must be slowed down
    (the broker keeps what the bridge has not read yet) or told ``busy``: while the
    connection holds, a request never vanishes without an answer, and none is answered
    twice. The test broker caps no queue, so whatever is missing, the service lost."""
    flood = f"{REPLIES}flood"
    witness = (
        f"{PREFIX}/agents/+/status",
        f"{PREFIX}/agents/+/heartbeat",
        f"{PREFIX}/agents/+/alert",
        f"{PREFIX}/system/alert",
        NODE_STATUS,
        f"{_ASKS}#",
    )
    with (
        RunningService(mqtt_broker, tmp_path, witness=witness) as service,
        Client(mqtt_broker, f"{flood}/#") as listener,
        Client(mqtt_broker, inflight=1000) as flooder,
    ):
        service.start()
        mark = service.mark()
        started = time.monotonic()
        infos = [
            flooder.publish_nowait(MONITOR_INBOX, request({"get": "health"}, f"{flood}/{i}", i))
            for i in range(FLOOD_SIZE)
        ]
        for info in infos:
            info.wait_for_publish(max(0.0, started + FLOOD_LIMIT_S - time.monotonic()))
        assert all(info.is_published() for info in infos), "the broker did not take the flood"
        published_s = time.monotonic() - started

        last = (-1, time.monotonic())
        while (count := listener.mark()) < FLOOD_SIZE:
            if count != last[0]:
                last = (count, time.monotonic())
            if (
                time.monotonic() - last[1] > FLOOD_STALL_S
                or time.monotonic() - started > FLOOD_LIMIT_S
            ):
                break
            time.sleep(0.05)
        statistics = service.assert_unharmed(mark)

        answers = listener.since()
        per_id = Counter((as_object(m.payload) or {}).get("correlation_id") for m in answers)
        missing = [i for i in range(FLOOD_SIZE) if per_id[i] == 0]
        twice = sorted(i for i, n in per_id.items() if n > 1)
        codes = Counter((as_object(m.payload) or {}).get("code", "reply") for m in answers)
        report = (
            f"{len(answers)} answers to {FLOOD_SIZE} asks ({dict(codes)}) after "
            f"{time.monotonic() - started:.1f} s (published in {published_s:.1f} s); "
            f"{len(missing)} unanswered (first: {missing[:5]}), {len(twice)} answered twice; "
            f"the bridge's statistics: {statistics}"
        )
        assert not missing and not twice, report
        for m in answers:
            i = int(m.topic.rpartition("/")[2])
            problems = answer_problems(m, frozenset({"reply", "busy"}), [i])
            assert not problems, f"{problems}; {report}"


# ---- the class: hypothesis ------------------------------------------------------------------

_CONTROL_CHARACTERS: Final = ("\x00", "\x01", "\x1f", "\x7f", "\x80", "\x9f")
_LONE_SURROGATES: Final = ("\ud800", "\udbff", "\udc00", "\udfff")
"""What a JSON escape from ``\\ud800`` to ``\\udfff`` decodes to outside a pair."""
_NON_CHARACTERS: Final = ("\ufdd0", "\ufdef", "\ufffe", "\uffff", "\U0001fffe", "\U0010ffff")
_SPECIAL_CHARACTERS: Final = (
    *_CONTROL_CHARACTERS,
    *_LONE_SURROGATES,
    *_NON_CHARACTERS,
    *("+", "#", "/", "$", "\\", '"', " ", "\u2028", "\ufeff", "\u00e9", "\U0001f600"),
)
_TOPIC_CHARACTERS: Final = (
    "$",
    " ",
    "\\",
    '"',
    "-",
    ".",
    "\u00e9",
    "\U0001f600",
    "\u00a0",
    "\u043e",
)
"""Odd characters that are still allowed in a topic."""


def characters() -> st.SearchStrategy[str]:
    """Characters weighted towards those that break topics and encoders."""
    return st.one_of(
        st.sampled_from(_SPECIAL_CHARACTERS),
        st.integers(0xD800, 0xDFFF).map(chr),
        st.characters(),
    )


def hostile_text(max_size: int = 20, long_size: int = 3000) -> st.SearchStrategy[str]:
    """Short strings of odd characters, or very long runs of one."""
    runs = st.builds(
        operator.mul, st.sampled_from((*_SPECIAL_CHARACTERS, "a")), st.integers(500, long_size)
    )
    short = st.text(characters(), max_size=max_size)
    return st.one_of(short, short, runs)  # two short strings for each long one


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
        max_leaves=8,
    )


def topic_levels() -> st.SearchStrategy[str]:
    """One level of a topic a client may publish on: odd, but valid."""
    allowed = st.one_of(
        st.sampled_from(_TOPIC_CHARACTERS),
        st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="+#/"),
    ).filter(is_topic_name)
    return st.text(allowed, max_size=12)


ODD_TOPICS: Final = {
    f"{PREFIX}/agents/by-name//inbox": UNKNOWN,
    f"{PREFIX}/agents//inbox": UNKNOWN,
    f"{PREFIX}/agents/by-name/inbox": UNKNOWN,
    f"{PREFIX}/agents/{MONITOR}/inbox": UNKNOWN,
    f"{PREFIX}/agents/{BRIDGE}/inbox": UNKNOWN,
    f"{PREFIX}/agents/by-name/{MONITOR} /inbox": UNKNOWN,
    f"{PREFIX}/agents/by-name/MONITOR/inbox": UNKNOWN,
    f"{PREFIX}/agents/by-name/$SYS/inbox": UNKNOWN,
    f"{PREFIX}/agents/by-name/m\u043enitor/inbox": UNKNOWN,
    f"{PREFIX}/agents/by-name/{MONITOR}/inbox/": None,
    f"{PREFIX}/agents/by-name/{MONITOR}/inbox/x": None,
    f"{PREFIX}/agents/by-name/{MONITOR}": None,
    f"{PREFIX}/agents/by-name/{MONITOR}/Inbox": None,
    f"{PREFIX}/agents/by-name/a/b/inbox": None,
    f"{PREFIX}/agents/a/b/inbox": None,
    f"{PREFIX}//agents/by-name/{MONITOR}/inbox": None,
    f"/{PREFIX}/agents/by-name/{MONITOR}/inbox": None,
    f"Wactorz/agents/by-name/{MONITOR}/inbox": None,
    f"{PREFIX}/replies/fuzz": None,
    f"{PREFIX}/system/health": None,
    f"{PREFIX}/agents/by-name/{MONITOR}/status": None,
    NODE_STATUS: None,
}
"""Topics near the inboxes, and what each names."""

OUTSIDE_REPLY_TOS: Final = (
    NODE_STATUS,
    f"{PREFIX}/system/alert",
    f"{PREFIX}/agents/x/manifest",
    MONITOR_INBOX,
    BRIDGE_INBOX,
    f"{PREFIX}/shared/x",
    f"{PREFIX}/replies",
    REPLIES,
    "clients/me",
    "$SYS/x",
    "",
    "a/+/b",
    "#",
)


@attrs.frozen
class FreshReplyTo:
    """A reply topic of the request's own under wactorz/replies/, ``suffix`` appended."""

    suffix: str | None = None


@attrs.frozen
class FreshId:
    """A correlation id of the request's own."""


@attrs.frozen
class Inbox:
    """Where a request goes: ``how`` is by-name, by-id, topic (a literal) or mirrored."""

    how: str
    what: str

    def resolve(self, service: RunningService) -> tuple[str, str | None]:
        if self.how == "by-name":
            target = self.what if self.what in (MONITOR, BRIDGE) else UNKNOWN
            return f"{PREFIX}/agents/by-name/{self.what}/inbox", target
        if self.how == "by-id":
            if self.what in (MONITOR, BRIDGE):
                return f"{PREFIX}/agents/{service.ids[self.what]}/inbox", self.what
            return f"{PREFIX}/agents/{self.what}/inbox", UNKNOWN
        if self.how == "mirrored":
            return f"{PREFIX}/shared/{self.what}", None
        return self.what, ODD_TOPICS[self.what]


@attrs.frozen
class RequestTemplate:
    """A request with fresh names still to fill in, and how it is encoded."""

    inbox: Inbox
    fields: tuple[tuple[str, object], ...]
    encoding: str

    def body(self, service: RunningService) -> dict[str, object]:
        def fill(value: object) -> object:
            if isinstance(value, FreshReplyTo):
                topic = f"{REPLIES}fuzz/{service.fresh('r')}"
                return topic if value.suffix is None else f"{topic}/{value.suffix}"
            if isinstance(value, FreshId):
                return service.fresh("c")
            return value

        return {key: fill(value) for key, value in self.fields}

    def shot(self, service: RunningService) -> Shot:
        topic, target = self.inbox.resolve(service)
        return Shot(topic, encode_as(self.body(service), self.encoding), target)


def encode_as(value: object, encoding: str) -> bytes:
    """``escaped``: ASCII JSON; otherwise the JSON text in ``encoding``, lone surrogates
    written as they are (invalid UTF-8, CESU-like UTF-16)."""
    if encoding == "escaped":
        return encode(value)
    return json.dumps(value, ensure_ascii=False).encode(encoding, "surrogatepass")


@attrs.frozen
class Mutation:
    """A request broken after encoding: ``how`` is truncate, flip, insert or delete."""

    request: RequestTemplate
    how: str
    at: int
    byte: int

    def apply(self, service: RunningService) -> bytes:
        data = bytearray(self.request.shot(service).payload)
        at = self.at % (len(data) + 1)
        if self.how == "truncate":
            del data[at:]
        elif self.how == "insert":
            data.insert(at, self.byte)
        elif data and self.how == "flip":
            data[at % len(data)] ^= self.byte or 1
        elif data:
            del data[at % len(data)]
        return bytes(data)


@attrs.frozen
class RawTemplate:
    """Any payload at all, published on ``inbox``."""

    inbox: Inbox
    payload: bytes | Mutation

    def shot(self, service: RunningService) -> Shot:
        topic, target = self.inbox.resolve(service)
        payload = self.payload if isinstance(self.payload, bytes) else self.payload.apply(service)
        return Shot(topic, payload, target)


def inboxes() -> st.SearchStrategy[Inbox]:
    real = st.sampled_from((MONITOR, BRIDGE))
    unknown = topic_levels().filter(lambda level: level not in (MONITOR, BRIDGE))
    return st.one_of(
        st.builds(Inbox, st.just("by-name"), real),
        st.builds(Inbox, st.just("by-id"), real),
        st.builds(Inbox, st.just("by-name"), unknown),
        st.builds(Inbox, st.just("by-id"), unknown),
        st.builds(Inbox, st.just("topic"), st.sampled_from(sorted(ODD_TOPICS))),
        st.builds(
            Inbox,
            st.just("mirrored"),
            st.lists(topic_levels(), min_size=1, max_size=3).map("/".join),
        ),
    )


def messages(
    text: st.SearchStrategy[str], values: st.SearchStrategy[object]
) -> st.SearchStrategy[object]:
    forged_events = st.fixed_dictionaries(
        {"kind": st.sampled_from(("crashed", "gave_up", "stopped")) | text},
        optional={"name": text, "id": text, "error": text, "reason": text, "supervisor": text},
    )
    known = (
        {"get": "health"},
        {"get": "alerts"},
        {"get": "statistics"},
        {"tick": 1},
        {"event": "x"},
        {"event": FORGED_CRASH},
        {},
    )
    return st.one_of(
        st.sampled_from(known),
        st.fixed_dictionaries({"get": values}),
        st.fixed_dictionaries({"event": forged_events | values}),
        st.fixed_dictionaries({"tick": values}),
        st.dictionaries(text, values, max_size=4),
        values,
    )


@st.composite
def request_templates(draw: st.DrawFn, long_size: int = 3000) -> RequestTemplate:
    """Requests with hostile values in every field, unknown keys among them."""
    text = hostile_text(long_size=long_size)
    values = json_values(text)
    fields: list[tuple[str, object]] = []
    if draw(st.integers(0, 9)):
        fields.append(("message", draw(messages(text, values))))
    if draw(st.integers(0, 4)):
        reply_to = st.one_of(
            st.builds(FreshReplyTo),
            st.builds(FreshReplyTo, text),
            st.sampled_from(OUTSIDE_REPLY_TOS),
            text.filter(lambda value: not value.startswith(REPLIES)),
            values.filter(lambda value: not isinstance(value, str)),
        )
        fields.append(("reply_to", draw(reply_to)))
    if draw(st.integers(0, 3)):
        fields.append(("correlation_id", draw(st.builds(FreshId) | values)))
    if not draw(st.integers(0, 4)):
        unknown = draw(
            st.dictionaries(
                text.filter(lambda k: k not in REQUEST_KEYS), values, min_size=1, max_size=2
            )
        )
        fields.extend(unknown.items())
    encoding = draw(st.sampled_from(("escaped",) * 5 + ("utf-8", "utf-16", "utf-32")))
    return RequestTemplate(draw(inboxes()), tuple(draw(st.permutations(fields))), encoding)


def raw_templates() -> st.SearchStrategy[RawTemplate]:
    """Whole payloads: bytes, any JSON, broken requests."""
    text = hostile_text()
    payloads = st.one_of(
        st.binary(max_size=300),
        json_values(text).map(encode),
        st.sampled_from([p for p in MALFORMED.values() if b"@" not in p]),
        st.builds(
            Mutation,
            request_templates(),
            st.sampled_from(("truncate", "flip", "insert", "delete")),
            st.integers(0, 2**16),
            st.integers(0, 255),
        ),
    )
    return st.builds(RawTemplate, inboxes(), payloads)


def fuzz_settings() -> settings:
    """A few examples by default (each publishes a batch to the service and waits for its
    answers); the ``long`` profile's count with ``HYPOTHESIS_PROFILE=long``. The service
    is the module's: a fresh one per example would cost a second each."""
    long = os.environ.get("HYPOTHESIS_PROFILE") == "long"
    return settings(
        settings.get_profile("long" if long else "dev"),
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.filter_too_much,
        ],
    )


def attack_with(service: RunningService, batch: Sequence[RequestTemplate | RawTemplate]) -> None:
    """One fuzz example: a healthy service attacked with ``batch``, its memory still bounded."""
    service.ensure_unharmed()
    service.attack([template.shot(service) for template in batch])
    growth = service.process.rss() - service.rss_at_start
    assert growth < RSS_GROWTH_LIMIT, f"the service grew by {growth / 2**20:.0f} MB"


@fuzz_settings()
@given(batch=st.lists(request_templates(), min_size=1, max_size=6))
def test_fuzzed_requests_get_one_answer_if_their_reply_to_is_usable_and_none_otherwise(
    shared_service: RunningService, batch: list[RequestTemplate]
) -> None:
    """Hostile values in every field of a request, on every inbound topic: whatever the
    mix, the service answers exactly the requests the spec says, once, and stays whole."""
    attack_with(shared_service, batch)


@fuzz_settings()
@given(batch=st.lists(raw_templates(), min_size=1, max_size=6))
def test_fuzzed_payloads_on_every_inbound_topic_leave_the_service_unharmed(
    shared_service: RunningService, batch: list[RawTemplate]
) -> None:
    """Arbitrary bytes, any JSON and broken requests, as whole payloads: none may crash,
    wedge or disconnect the service, or get an answer it should not."""
    attack_with(shared_service, batch)


@pytest.mark.slow
@fuzz_settings()
@given(batch=st.lists(request_templates(long_size=70_000), min_size=1, max_size=6))
def test_fuzzed_requests_with_very_long_strings_leave_the_service_unharmed(
    shared_service: RunningService, batch: list[RequestTemplate]
) -> None:
    """Strings up to past the size limit, in every field: near the limit a request is
    big to parse, past it it must be refused unread."""
    attack_with(shared_service, batch)

"""The MQTT connection: one broker session per actor system, kept alive across outages.

`MQTTConnection` is driven from Trio. Its ``run()`` task owns an aiomqtt client (paho
underneath) running on a trio-asyncio loop, reconnects after any loss with capped,
jittered exponential backoff, and re-applies every subscription on each new
connection. Callers never wait on the network to publish: `MQTTConnection.publish`
drops the message into an outbox and returns, and a publisher task inside ``run()``
drains the outbox whenever the broker is reachable.

Each message names its delivery class (`Delivery`): *latest* keeps only the newest
unsent message per topic (heartbeats, metrics, status), *queued* keeps every unsent
message in a bounded FIFO (alerts, replies). Whatever cannot be kept is dropped,
counted in `MQTTConnection.statistics` and logged, so that an outage costs memory
that is bounded and visible, and never blocks an actor.

aiomqtt is asyncio code. Every call into it goes through the trio-asyncio loop, and
the client is entered and left by hand rather than with ``async with``: if Trio
cancels an ``async with`` around an aiomqtt client, the client's disconnect is
abandoned half-way and the client stays locked. So connecting and disconnecting run
shielded under a short deadline, and each connection attempt uses a fresh client.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import logging
import random
import secrets
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, TypeAlias, TypeVar, final

import aiomqtt
import attrs
import paho.mqtt.client as paho_mqtt
import trio
import trio_asyncio
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from wactorz.config._checks import (
    POSITIVE_INT,
    SECONDS,
    Check,
    int_between,
    one_of,
    without_problem,
)
from wactorz.config._errors import InvalidField
from wactorz.core.topics import check_filter, check_topic, text_problem, topic_problem

__all__ = ["Delivery", "MQTTConnection", "MQTTMessage", "MQTTStatistics"]

logger = logging.getLogger(__name__)
# aiomqtt and paho log through this child, so one logging setting quiets the wire chatter.
_client_logger = logging.getLogger(f"{__name__}.client")

T = TypeVar("T")

_FULL_STREAM_POLL_S: Final = 0.002
"""How often a message waiting for room in a full lossless stream tries again."""
_BATCH_SIZE: Final = 100
"""Messages per asyncio call: a burst is about 3 times faster than awaiting each one."""
_SOCKET_CONNECT_TIMEOUT_S: Final = 5.0
"""paho's own bound on opening the TCP socket, on top of our CONNACK timeout."""
_DISCONNECT_TIMEOUT_S: Final = 2.0
_DROP_WARNING_INTERVAL_S: Final = 30.0
_MAX_PAYLOAD_BYTES: Final = 268_435_455
_MAX_PACKET_BYTES: Final = 268_435_460
"""The largest packet MQTT can describe (a remaining length of 268,435,455, plus its header)."""
_RECEIVE_MAXIMUM: Final = 100
"""Unacknowledged QoS 1 and 2 messages the broker may send us at once (MQTT 5)."""

Protocol: TypeAlias = Literal["auto", "5", "3.1.1"]
_QOS_LEVELS: Final = (0, 1, 2)


class Delivery(enum.Enum):
    """What to do with a message published while it cannot be sent yet."""

    LATEST = "latest"
    """Keep only the newest unsent message per topic: heartbeats, metrics, status."""
    QUEUED = "queued"
    """Keep every unsent message, in order, up to ``buffer_size`` (then drop the oldest):
    alerts, replies."""


# What the connection's settings accept, in the words of `wactorz.config`'s checks.
_QOS = Check(lambda v: type(v) is int and v in _QOS_LEVELS, "0, 1 or 2")
_HOST = Check(lambda v: isinstance(v, str) and v != "", "a host name or IP address")
_PORT = int_between(1, 65_535, "an integer from 1 to 65535")
_KEEPALIVE = int_between(0, 65_535, "a whole number of seconds from 0 to 65535")
_MQTT_TEXT = without_problem(text_problem, "a string an MQTT broker accepts")
_OPTIONAL_MQTT_TEXT = without_problem(
    lambda v: None if v is None else text_problem(v), "a string an MQTT broker accepts, or None"
)
_PROTOCOL = one_of("auto", "5", "3.1.1")
_OPTIONAL_PATH = Check(lambda v: v is None or isinstance(v, Path), "a file path, or None")
_MAX_PACKET = Check(
    lambda v: v is None or (type(v) is int and 64 <= v <= _MAX_PACKET_BYTES),
    f"None, or a number of bytes from 64 to {_MAX_PACKET_BYTES}",
)


def _ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client TLS context that verifies the broker's certificate and host name.

    It trusts the CA certificates in ``ca_file`` (PEM) if given, else the system's. A CA
    file that cannot be read, or holds no certificate, raises `InvalidField` naming
    ``tls_ca_file``, so that the mistake shows at start-up rather than as a failed handshake.
    """
    if ca_file is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidField(
            "tls_ca_file",
            str(ca_file),
            f"a readable PEM file of CA certificates ({why}): point it at the certificate "
            "of the CA that signed the broker's certificate",
        ) from exc


def _check_qos(qos: int) -> int:
    _QOS.check("qos", qos)
    return qos


@final
@attrs.frozen
class MQTTMessage:
    """One MQTT application message: what `MQTTConnection.messages` yields.

    ``retain`` is True only for a retained message the broker replays to a new
    subscription; live messages arrive with ``retain=False`` even if published retained.
    """

    topic: str
    payload: bytes
    qos: int = attrs.field(default=0, validator=_QOS)
    retain: bool = False


@final
@attrs.frozen
class MQTTStatistics:
    """A snapshot of an `MQTTConnection`, from `MQTTConnection.statistics`."""

    connected: bool
    """A connection is up and every subscription has been re-applied on it."""
    connects: int
    """Connections established, the first one included."""
    disconnects: int
    """Connections that dropped; a shutdown's clean disconnect does not count."""
    failed_connects: int
    """Connection attempts that failed (refused, unreachable, timed out, rejected)."""
    published: int
    """Messages the client finished sending (for QoS 1 and 2: acknowledged by the broker)."""
    received: int
    """Messages that arrived from the broker, whether or not a stream took them."""
    dropped_latest: int
    """*Latest* messages replaced by a newer one on the same topic before they were sent."""
    dropped_queued: int
    """*Queued* messages dropped, oldest first, because the outbox held ``buffer_size``
    while disconnected (while connected, nothing queued is dropped)."""
    dropped_rejected: int
    """Messages dropped because the broker closed the connection each time they were sent
    (see `MQTTConnection.publish`)."""
    dropped_inbound: int
    """Inbound messages not delivered to a `MQTTConnection.messages` stream that was full."""
    queued_now: int
    """*Queued* messages waiting to be sent."""
    latest_now: int
    """*Latest* messages (one per topic) waiting to be sent."""
    subscriptions: int
    """Topic filters subscribed, re-applied on every connection."""
    open_streams: int
    """`MQTTConnection.messages` blocks currently open."""


@attrs.frozen
class _Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    delivery: Delivery
    losses: int = 0
    """Connections lost while this message was being sent."""


_SUSPECT_LOSSES: Final = 2
"""A message being sent alone when the connection drops, for the second time in a row, is
taken for one the broker refuses, and dropped rather than sent again for ever."""


@attrs.define(eq=False)
class _Outbox:
    """Messages waiting for the broker.

    *Latest* messages are keyed by topic, in the order of their newest publish, at most
    ``capacity`` of them. *Queued* ones form a FIFO, trimmed to ``capacity`` only while
    the connection is down (``connected`` False): while connected nothing queued is
    dropped, and publishers that must not outrun the network wait for `has_room`.

    A message in flight when the connection drops is given back, and sent alone after
    the reconnection (``suspects`` counts those waiting): a message the broker refuses
    then shows itself by dropping the connection again while it is sent alone, and is
    dropped as *rejected* instead of wedging the connection in a reconnect loop.
    Each method returns the messages it had to drop, and keeps count.
    """

    capacity: int
    connected: bool = False
    latest: collections.OrderedDict[str, _Outgoing] = attrs.field(factory=collections.OrderedDict)
    queued: collections.deque[_Outgoing] = attrs.field(factory=collections.deque)
    suspects: int = 0
    dropped_latest: int = 0
    dropped_queued: int = 0
    dropped_rejected: int = 0

    def __len__(self) -> int:
        return len(self.latest) + len(self.queued)

    @property
    def has_room(self) -> bool:
        """Fewer than ``capacity`` queued messages wait (always true while disconnected:
        then the oldest make room)."""
        return not self.connected or len(self.queued) < self.capacity

    def put(self, message: _Outgoing) -> list[_Outgoing]:
        if message.delivery is Delivery.LATEST:
            superseded = self.latest.pop(message.topic, None)
            self.latest[message.topic] = message
            if superseded is not None:
                self.dropped_latest += 1
                self._forget_suspect(superseded)
                return [superseded, *self._trim()]
        else:
            self.queued.append(message)
        return self._trim()

    def take(self, limit: int) -> list[_Outgoing]:
        """Remove up to ``limit`` messages to send, at least half of them *latest* ones
        when both classes wait, so that neither class starves the other; a suspect
        (always at the head of its class) is taken alone."""
        if self.suspects:
            return [self._take_suspect()]
        n_latest = min(len(self.latest), max(limit // 2, limit - len(self.queued)))
        batch = [self.latest.popitem(last=False)[1] for _ in range(n_latest)]
        batch += [self.queued.popleft() for _ in range(min(len(self.queued), limit - n_latest))]
        return batch

    def _take_suspect(self) -> _Outgoing:
        self.suspects -= 1
        if self.latest:
            topic, head = next(iter(self.latest.items()))
            if head.losses:
                del self.latest[topic]
                return head
        return self.queued.popleft()

    def give_back(self, unsent: list[_Outgoing]) -> list[_Outgoing]:
        """Put messages whose connection dropped while they were sent back at the head of
        their class (they are older than anything published since), or drop them."""
        dropped = []
        for message in reversed(unsent):
            message = attrs.evolve(message, losses=message.losses + 1)
            if len(unsent) == 1 and message.losses >= _SUSPECT_LOSSES:
                self.dropped_rejected += 1
                dropped.append(message)
            elif message.delivery is Delivery.QUEUED:
                self.queued.appendleft(message)
                self.suspects += 1
            elif message.topic in self.latest:
                self.dropped_latest += 1
                dropped.append(message)  # a newer message on the topic is already waiting
            else:
                self.latest[message.topic] = message
                self.latest.move_to_end(message.topic, last=False)
                self.suspects += 1
        return dropped + self._trim()

    def set_connected(self, connected: bool) -> list[_Outgoing]:
        """Record the connection's state; going down trims the queued messages to capacity."""
        self.connected = connected
        return self._trim()

    def _forget_suspect(self, message: _Outgoing) -> None:
        if message.losses:
            self.suspects -= 1

    def _trim(self) -> list[_Outgoing]:
        dropped = []
        while len(self.latest) > self.capacity:
            dropped.append(self.latest.popitem(last=False)[1])
            self.dropped_latest += 1
        while not self.connected and len(self.queued) > self.capacity:
            dropped.append(self.queued.popleft())
            self.dropped_queued += 1
        for message in dropped:
            self._forget_suspect(message)
        return dropped


@attrs.define(eq=False)
class _DropReporter:
    """Logs dropped messages: a warning at the first drop, then a summary at most once
    per interval, so that an outage is visible in the log without flooding it."""

    address: str
    buffer_size: int
    interval_s: float = _DROP_WARNING_INTERVAL_S
    _unreported: collections.Counter[str] = attrs.field(factory=collections.Counter)
    _quiet_until: float = float("-inf")
    _first: bool = True

    def _why(self, kind: str) -> str:
        if kind == "latest":
            return "superseded by a newer one on the same topic before it could be sent"
        if kind == "queued":
            return (
                f"the oldest, as the outbox held buffer_size={self.buffer_size} while "
                "disconnected: raise buffer_size or publish less"
            )
        if kind == "oversized":
            return "larger than the broker's maximum packet size: raise the broker's limit"
        if kind == "rejected":
            return (
                "the broker closed the connection twice while it was being sent alone, so it "
                "is taken for one the broker refuses (too large for it, or not allowed)"
            )
        return "a messages() stream was full: read it faster or give it a larger max_buffer_size"

    def dropped(
        self,
        *,
        latest: int = 0,
        queued: int = 0,
        rejected: int = 0,
        oversized: int = 0,
        inbound: int = 0,
    ) -> None:
        """Count drops of each kind, and log them if the last warning is old enough."""
        self._unreported.update(
            latest=latest, queued=queued, rejected=rejected, oversized=oversized, inbound=inbound
        )
        if self._unreported.total() == 0:
            return
        now = time.monotonic()
        if now < self._quiet_until:
            return
        summary = "; ".join(
            f"{n} {kind} message{'' if n == 1 else 's'} ({self._why(kind)})"
            for kind, n in self._unreported.items()
            if n > 0
        )
        if self._first:
            logger.warning(
                "MQTT %s: dropped %s. Further drops are summarised at most every %.0f s; "
                "MQTTConnection.statistics() has the totals",
                self.address,
                summary,
                self.interval_s,
            )
        else:
            logger.warning(
                "MQTT %s: dropped %s in the last %.0f s", self.address, summary, self.interval_s
            )
        self._first = False
        self._unreported.clear()
        self._quiet_until = now + self.interval_s


@attrs.define(eq=False)
class _Session:
    """One live broker connection: its client, and the callers waiting on it.

    Callers of `MQTTConnection.subscribe` and `unsubscribe` run their request from their
    own task; when the connection drops, `end` releases them at once instead of letting
    them wait for an acknowledgement that will never come.
    """

    loop: trio_asyncio.BaseTrioEventLoop
    client: aiomqtt.Client
    _waiting: set[trio.CancelScope] = attrs.field(factory=set)
    _ended: bool = False

    async def call(self, request: Callable[[aiomqtt.Client], Coroutine[Any, Any, T]]) -> T | None:
        """Run ``request(client)``; None if the connection ended before it completed."""
        if self._ended:
            await trio.lowlevel.checkpoint()
            return None
        with trio.CancelScope() as scope:
            self._waiting.add(scope)
            try:
                return await _on_asyncio(self.loop, request(self.client))
            except aiomqtt.MqttError:
                return None  # the connection is going down; run() notices and reconnects
            finally:
                self._waiting.discard(scope)
        return None

    def end(self) -> None:
        self._ended = True
        for scope in self._waiting:
            scope.cancel()


@attrs.define(eq=False)
class _Loss:
    """Why a connection ended; recording it stops the connection's tasks."""

    scope: trio.CancelScope
    reason: BaseException | None = None

    def record(self, reason: BaseException) -> None:
        if self.reason is None:
            self.reason = reason
        self.scope.cancel()


async def _on_asyncio(loop: trio_asyncio.BaseTrioEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Await an asyncio coroutine from Trio. Cancellation cancels the asyncio task."""
    result: T = await loop.run_aio_coroutine(coro)
    return result


_Stream: TypeAlias = trio.MemorySendChannel["MQTTMessage"]


async def _forward_inbound(
    client: aiomqtt.Client,
    deliver: Callable[[aiomqtt.Message], tuple[MQTTMessage, list[_Stream]]],
    deliver_again: Callable[[MQTTMessage, list[_Stream]], list[_Stream]],
) -> NoReturn:
    """(asyncio) Hand each inbound message to ``deliver``; raise MqttError when the
    connection drops. One asyncio call for the whole stream, not one per message.

    A QoS 1 or 2 message that a lossless stream has no room for waits until it has,
    and is acknowledged only once every stream took it: while it waits, nothing else
    is read, and the broker, which holds back further messages past its in-flight
    window until they are acknowledged, keeps them (this is MQTT's flow control).
    """
    acknowledge = client._client.ack
    async for message in client.messages:
        inbound, waiting = deliver(message)
        while waiting:
            await asyncio.sleep(_FULL_STREAM_POLL_S)
            waiting = deliver_again(inbound, waiting)
        if message.qos:
            acknowledge(message.mid, message.qos)
    raise aiomqtt.MqttError("the client's message stream ended")


def _inbound_queue(limit: int, dropped: Callable[[], None]) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt's queue of received messages, bounded for QoS 0 only.

    While a message waits for room in a stream, paho goes on reading the socket into
    this queue. QoS 1 and 2 messages in it are bounded by the broker's in-flight window
    (they are not acknowledged yet); QoS 0 messages have no flow control, so past
    ``limit`` waiting ones are dropped (and counted by ``dropped``).
    """

    class InboundQueue(asyncio.Queue[aiomqtt.Message]):
        def put_nowait(self, item: aiomqtt.Message) -> None:
            if item.qos == 0 and self.qsize() >= limit:
                dropped()
                return
            super().put_nowait(item)

    return InboundQueue


async def _publish_batch(client: aiomqtt.Client, batch: list[_Outgoing], sent: list[bool]) -> None:
    """(asyncio) Publish ``batch`` as one burst, in order, marking ``sent[i]`` as each
    completes so that the caller knows what to resend if this is cancelled part-way."""

    async def publish(index: int, message: _Outgoing) -> None:
        await client.publish(message.topic, message.payload, message.qos, message.retain)
        sent[index] = True

    if len(batch) == 1:  # the usual case when idle: no task to spawn, one loop step saved
        await publish(0, batch[0])
        return
    # gather() starts the publishes in list order and each one queues its packet before
    # its first suspension, so the broker receives them in order.
    results = await asyncio.gather(
        *(publish(i, message) for i, message in enumerate(batch)), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _note_broker_limit(client: aiomqtt.Client, limit: list[int | None]) -> None:
    """Have ``limit[0]`` set to the broker's maximum packet size, from its CONNACK (MQTT 5)."""
    paho_client = client._client
    aiomqtt_callback: Any = paho_client.on_connect

    def on_connect(
        paho: paho_mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        limit[0] = getattr(properties, "MaximumPacketSize", None)
        if aiomqtt_callback is not None:
            aiomqtt_callback(paho, userdata, flags, reason, properties)

    paho_client.on_connect = on_connect


def _refuses_v5(exc: aiomqtt.MqttError) -> bool:
    """Whether a failed MQTT 5 connect looks like a broker that speaks only 3.1.1.

    Such a broker either refuses the protocol version in its CONNACK (3.1.1's code 1,
    MQTT 5's 0x84) or, as amqtt does, never answers; a broker that is down refuses the
    TCP connection instead.
    """
    if isinstance(exc, aiomqtt.MqttCodeError):
        code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
        return code in (1, 0x84)
    return "timed out" in str(exc)


def _packet_size(message: _Outgoing) -> int:
    """An upper bound of the size of ``message``'s PUBLISH packet over MQTT 5."""
    return 5 + 2 + len(message.topic.encode()) + 2 + 1 + len(message.payload)


async def _close_abandoned_socket(client: aiomqtt.Client) -> None:
    """(asyncio) Close the socket of a client whose connection attempt failed, if any.

    When a broker accepts the TCP connection but never answers, aiomqtt 2.5 gives up
    waiting yet leaves the socket open (until paho's keepalive check or the garbage
    collector closes it): one leaked socket per attempt. Sending a DISCONNECT makes
    paho close the socket and unhook it from the event loop once the loop has written
    the packet, which takes a loop iteration or two; the wait for it is bounded.
    """
    paho_client = client._client
    if paho_client.socket() is None:
        return
    closed = asyncio.Event()
    aiomqtt_callback = paho_client.on_socket_close

    def on_socket_close(paho: paho_mqtt.Client, userdata: Any, sock: paho_mqtt.SocketLike) -> None:
        if aiomqtt_callback is not None:
            aiomqtt_callback(paho, userdata, sock)
        closed.set()

    paho_client.on_socket_close = on_socket_close
    paho_client.disconnect()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closed.wait(), _DISCONNECT_TIMEOUT_S)


_REFUSED_CREDENTIALS: Final = frozenset({4, 5, 134, 135})
"""CONNACK codes for refused credentials: 3.1.1's 4 and 5, MQTT 5's 0x86 and 0x87."""


def _connect_hint(exc: BaseException) -> str:
    """What to do about a failed connection attempt, for the cases a setting fixes.

    A wrong user name or password and an untrusted broker certificate are not outages:
    retrying will not help, so the warning says which setting to look at.
    """
    if isinstance(exc, aiomqtt.MqttCodeError):
        code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
        if code in _REFUSED_CREDENTIALS:
            return ": the broker refused the credentials, check the username and password"
    text = str(exc)
    if "CERTIFICATE_VERIFY_FAILED" in text and "mismatch" in text:
        return (
            ": the broker's TLS certificate does not name this host; connect by a name or "
            "address that the certificate lists"
        )
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            ": the broker's TLS certificate is not trusted; if a private CA signed it, set "
            "tls_ca_file (mqtt.tls_ca_file) to that CA's certificate"
        )
    return ""


def _root_cause(exc: BaseException) -> str:
    """The innermost explicit cause: aiomqtt wraps what actually went wrong."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc) or type(exc).__name__


def _reconnect_delay(failures: int, low: float, high: float, rng: random.Random) -> float:
    """Seconds to wait before the next attempt, after ``failures`` (≥ 1) failures in a row.

    The ceiling doubles with each failure from ``low`` up to ``high``; the delay is drawn
    from its upper half (never below ``low``), so that clients cut off together do not
    all come back in the same instant.
    """
    ceiling = min(high, low * 2.0 ** min(max(failures, 1) - 1, 64))
    return rng.uniform(max(low, ceiling / 2), ceiling)


def _as_bytes(payload: object) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, bytes | bytearray | memoryview):
        return bytes(payload)
    return str(payload).encode()


def _default_client_id() -> str:
    return f"wactorz-{secrets.token_hex(4)}"


_WILL = without_problem(
    lambda v: None if v is None else topic_problem(v.topic),
    "None, or an MQTTMessage with a topic to publish on",
)


@final
@attrs.define(eq=False, kw_only=True)
class MQTTConnection:
    """A broker connection that outlives outages, driven from Trio.

    Create it from plain settings, start ``run`` in a nursery, then publish, subscribe and
    read messages from any task::

        conn = MQTTConnection(host="broker.local", client_id="wactorz-1")
        async with trio.open_nursery() as nursery:
            await nursery.start(conn.run)
            await conn.subscribe("wactorz/+/inbox")
            conn.publish("wactorz/status", b"up", kind=Delivery.LATEST)
            async with conn.messages() as stream:
                async for message in stream:
                    ...

    ``publish``, ``subscribe`` and ``messages`` work before ``run`` starts and while the
    broker is away: what they ask for takes effect on the next connection. All methods
    must be called from the Trio thread that runs ``run``.

    Arguments:
      host, port: the broker's address.
      client_id: the MQTT client identifier; unique per broker (two clients with one id
        keep disconnecting each other). Default: ``wactorz-`` and random hex.
      username, password: credentials, or None for an anonymous connection.
      tls: connect over TLS, verifying the broker's certificate (and that it names
        ``host``) against the system's CA certificates, or ``tls_ca_file``'s.
      tls_ca_file: a PEM file of the CA certificates to trust instead of the system's,
        for a broker whose certificate a private CA signed; setting it implies ``tls``.
        A file that cannot be read or holds no certificate raises `InvalidField`.
      keepalive: seconds between pings; a silent connection counts as lost after 1.5 of them.
      qos: the QoS used by ``publish`` and ``subscribe`` when they are not given one.
      reconnect_min_s, reconnect_max_s: bounds of the wait between connection attempts.
      buffer_size: messages kept per delivery class while they cannot be sent, and the
        default size of a ``messages`` stream.
      connect_timeout_s: how long to wait for the broker to answer a connection request
        (opening the TCP socket has its own 5 s limit, in paho).
      will: a message the broker publishes on our behalf if the connection drops
        without a clean disconnect (the usual "offline" status), or None.
      protocol: ``"5"``, ``"3.1.1"``, or ``"auto"``: MQTT 5 first, and 3.1.1 for a broker
        that does not answer an MQTT 5 connect (the choice is then kept).
      max_packet_bytes: over MQTT 5, the largest packet the broker may send us (it
        drops larger ones for us, so they never reach this process); None for no limit.
        Over 3.1.1 there is no way to say so: a large message is read whole.

    Over MQTT 5 the connection also tells the broker how many unacknowledged messages
    it takes at once (100), and refuses locally, as *rejected*, a message larger than
    the broker's own maximum packet size.
    """

    host: str = attrs.field(default="localhost", validator=_HOST)
    port: int = attrs.field(default=1883, validator=_PORT)
    client_id: str = attrs.field(factory=_default_client_id, validator=_MQTT_TEXT)
    username: str | None = attrs.field(default=None, validator=_OPTIONAL_MQTT_TEXT)
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False
    tls_ca_file: Path | None = attrs.field(default=None, validator=_OPTIONAL_PATH)
    keepalive: int = attrs.field(default=60, validator=_KEEPALIVE)
    qos: int = attrs.field(default=0, validator=_QOS)
    reconnect_min_s: float = attrs.field(default=0.5, validator=SECONDS)
    reconnect_max_s: float = attrs.field(default=30.0, validator=SECONDS)
    buffer_size: int = attrs.field(default=1000, validator=POSITIVE_INT)
    connect_timeout_s: float = attrs.field(default=5.0, validator=SECONDS)
    will: MQTTMessage | None = attrs.field(default=None, validator=_WILL)
    protocol: Protocol = attrs.field(default="auto", validator=_PROTOCOL)
    max_packet_bytes: int | None = attrs.field(default=None, validator=_MAX_PACKET)

    _outbox: _Outbox = attrs.field(init=False, repr=False)
    _drops: _DropReporter = attrs.field(init=False, repr=False)
    _subscriptions: dict[str, int] = attrs.field(init=False, repr=False, factory=dict)
    _streams: dict[_Stream, bool] = attrs.field(init=False, repr=False, factory=dict)
    """Open `messages` streams, each with whether it is lossless."""
    _session: _Session | None = attrs.field(init=False, repr=False, default=None)
    _running: bool = attrs.field(init=False, repr=False, default=False)
    _connected: bool = attrs.field(init=False, repr=False, default=False)
    _outage_reported: bool = attrs.field(init=False, repr=False, default=False)
    _outbox_changed: trio.lowlevel.ParkingLot = attrs.field(
        init=False, repr=False, factory=trio.lowlevel.ParkingLot
    )
    _state_changed: trio.lowlevel.ParkingLot = attrs.field(
        init=False, repr=False, factory=trio.lowlevel.ParkingLot
    )
    _room: trio.lowlevel.ParkingLot = attrs.field(
        init=False, repr=False, factory=trio.lowlevel.ParkingLot
    )
    _rng: random.Random = attrs.field(init=False, repr=False, factory=random.Random)
    _ssl_context: ssl.SSLContext | None = attrs.field(init=False, repr=False, default=None)
    _version: aiomqtt.ProtocolVersion | None = attrs.field(init=False, repr=False, default=None)
    """The protocol version in use, once one connection has told (fixed unless "auto")."""
    _broker_max_packet: int | None = attrs.field(init=False, repr=False, default=None)
    _connects: int = attrs.field(init=False, repr=False, default=0)
    _disconnects: int = attrs.field(init=False, repr=False, default=0)
    _failed_connects: int = attrs.field(init=False, repr=False, default=0)
    _published: int = attrs.field(init=False, repr=False, default=0)
    _received: int = attrs.field(init=False, repr=False, default=0)
    _dropped_inbound: int = attrs.field(init=False, repr=False, default=0)

    def __attrs_post_init__(self) -> None:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise InvalidField(
                "reconnect_max_s",
                self.reconnect_max_s,
                f"a number of seconds no smaller than reconnect_min_s ({self.reconnect_min_s})",
            )
        self._outbox = _Outbox(self.buffer_size)
        self._drops = _DropReporter(self._address, self.buffer_size)
        if self.tls or self.tls_ca_file is not None:
            # Built now, so that a bad CA file is refused here rather than on every retry.
            self._ssl_context = _ssl_context(self.tls_ca_file)

    @property
    def _address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """True while a connection is up and every subscription is in force on it."""
        return self._connected

    async def wait_connected(self) -> None:
        """Wait until `connected` is True; return at once (after a checkpoint) if it is.

        Waits for ever while ``run`` is not running or the broker stays away: bound it
        with `trio.fail_after` or `trio.move_on_after`. Cancellation leaves nothing behind.
        """
        if self._connected:
            await trio.lowlevel.checkpoint()
            return
        while not self._connected:
            await self._state_changed.park()

    def statistics(self) -> MQTTStatistics:
        """A snapshot of the connection's state and counters."""
        return MQTTStatistics(
            connected=self._connected,
            connects=self._connects,
            disconnects=self._disconnects,
            failed_connects=self._failed_connects,
            published=self._published,
            received=self._received,
            dropped_latest=self._outbox.dropped_latest,
            dropped_queued=self._outbox.dropped_queued,
            dropped_rejected=self._outbox.dropped_rejected,
            dropped_inbound=self._dropped_inbound,
            queued_now=len(self._outbox.queued),
            latest_now=len(self._outbox.latest),
            subscriptions=len(self._subscriptions),
            open_streams=len(self._streams),
        )

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        qos: int | None = None,
        retain: bool = False,
        kind: Delivery = Delivery.QUEUED,
    ) -> None:
        """Queue a message for the broker and return at once; never blocks, never waits.

        While connected the message goes out promptly, after those published before it
        in the same delivery class, and a *queued* one is never dropped: a publisher
        that could outrun the network awaits `wait_for_room` between publishes. While
        disconnected it waits in the outbox according to ``kind`` (see `Delivery`), and
        drops are counted in `statistics`. A message whose connection drops while it is
        being sent is sent again after reconnecting, so it may arrive twice; one never
        sent is never reported as published. A message the broker refuses by closing
        the connection (brokers do, for a packet over their size limit) is sent again
        alone, and dropped if the connection drops again (``dropped_rejected``), so
        that it cannot keep the connection in a reconnect loop.

        ``payload`` is bytes, or a str sent as UTF-8. ``qos`` defaults to the
        connection's. Raises ValueError for a topic with wildcards, an empty or
        oversized topic or payload, or a qos other than 0, 1 or 2; TypeError for a
        payload that is neither bytes nor str.
        """
        check_topic(topic)
        if isinstance(payload, str):
            data = payload.encode()
        elif isinstance(payload, bytes | bytearray | memoryview):
            data = bytes(payload)
        else:
            raise TypeError(f"MQTT payload must be bytes or str, got {type(payload).__name__}")
        if len(data) > _MAX_PAYLOAD_BYTES:
            raise ValueError(f"MQTT payload of {len(data)} bytes exceeds {_MAX_PAYLOAD_BYTES}")
        message = _Outgoing(topic, data, self.qos if qos is None else _check_qos(qos), retain, kind)
        self._report_dropped(self._outbox.put(message))
        self._outbox_changed.unpark_all()

    @property
    def has_room(self) -> bool:
        """Whether `wait_for_room` would return at once: a *queued* publish now keeps the
        outbox within ``buffer_size`` (always true while disconnected). Lets a publisher
        skip the wait, and its checkpoint, on the usual path."""
        return self._outbox.has_room

    async def wait_for_room(self) -> None:
        """Wait while ``buffer_size`` *queued* messages are waiting to be sent, connected.

        Publishers of *queued* messages that can outrun the network (a flood of requests,
        each answered) await this between publishes, so that the outbox stays bounded
        without dropping anything while connected. Returns at once (after a
        checkpoint) while there is room or while disconnected, when the outbox keeps
        the newest ``buffer_size`` instead. Cancellation leaves nothing behind.
        """
        await trio.lowlevel.checkpoint()
        while not self._outbox.has_room:
            await self._room.park()

    async def subscribe(self, topic_filter: str, *, qos: int | None = None) -> None:
        """Subscribe to ``topic_filter`` on this connection and on every later one.

        ``+`` matches one topic level and a final ``#`` any number of them. Returns once
        the broker has acknowledged the subscription, or at once while disconnected: in
        both cases it is in force whenever `connected` is True afterwards. Matching
        messages arrive on the `messages` streams. Subscribing again replaces the qos.

        The filter is remembered as soon as this is called, so cancellation stops only
        the wait for the acknowledgement. A filter the broker refuses (its ACL, say) is
        logged as a warning and retried on each reconnection. Raises ValueError for a
        malformed filter or qos.
        """
        check_filter(topic_filter)
        level = self.qos if qos is None else _check_qos(qos)
        self._subscriptions[topic_filter] = level
        session = self._session
        if session is None:
            await trio.lowlevel.checkpoint()
            return
        granted = await session.call(lambda client: client.subscribe(topic_filter, level))
        if granted is not None:
            self._warn_if_refused([topic_filter], granted)

    async def unsubscribe(self, topic_filter: str) -> None:
        """Stop subscribing to ``topic_filter`` (as given to `subscribe`) from now on.

        Returns once the broker has acknowledged it, or at once while disconnected.
        Messages already received stay in the `messages` streams. Unsubscribing a
        filter that is not subscribed does nothing; cancellation stops only the wait.
        """
        if self._subscriptions.pop(topic_filter, None) is None or self._session is None:
            await trio.lowlevel.checkpoint()
            return
        await self._session.call(lambda client: client.unsubscribe(topic_filter))

    @asynccontextmanager
    async def messages(
        self, *, max_buffer_size: int | None = None, lossless: bool = False
    ) -> AsyncIterator[trio.MemoryReceiveChannel[MQTTMessage]]:
        """Receive every message that arrives while the block is open::

            async with conn.messages() as stream:
                async for message in stream:
                    ...

        Each open stream gets its own copy of every message on the subscribed filters;
        messages that arrive while no stream is open are discarded. A stream holds at
        most ``max_buffer_size`` unread messages (default ``buffer_size``): when it is
        full, newer messages are dropped for it and counted as ``dropped_inbound``, so
        that a slow reader never stalls the network. A ``lossless`` stream drops only
        QoS 0 messages: a QoS 1 or 2 message waits until the stream has room, and
        until then the connection reads nothing else and does not acknowledge it, so
        that the broker holds the rest back (MQTT's flow control); a slow lossless
        reader slows every stream down. The stream closes with the block.
        """
        size = self.buffer_size if max_buffer_size is None else max_buffer_size
        if size < 1:
            raise ValueError(f"max_buffer_size must be at least 1, got {size!r}")
        send, receive = trio.open_memory_channel[MQTTMessage](size)
        self._streams[send] = lossless
        try:
            async with receive:
                yield receive
        finally:
            self._streams.pop(send, None)
            send.close()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Connect, and stay connected until cancelled. Start it with ``nursery.start``.

        Uses the trio-asyncio loop it is called in, or opens its own. ``nursery.start``
        returns after the first connection attempt, whether it succeeded or not: a
        broker that is down is retried for ever, with backoff from ``reconnect_min_s``
        up to ``reconnect_max_s``, and the first refusal of each outage is logged as a
        warning (later ones at debug level). After each (re)connection every
        subscription is re-applied, then `connected` becomes True and the outbox drains.

        Cancellation is the only way it ends: it then disconnects cleanly (shielded,
        within a couple of seconds) so the broker does not publish the will. If
        cancelled during a connection attempt, it first lets the attempt finish or
        time out (``connect_timeout_s``, plus up to 7 s if opening or closing the socket
        itself hangs), so that no half-open socket is left behind.
        Unsent messages stay in the outbox; ``run`` may be started again later, but
        only one ``run`` at a time (another raises RuntimeError).
        """
        if self._running:
            raise RuntimeError(
                f"MQTTConnection {self.client_id!r} is already running: start run() once "
                "and share the connection"
            )
        self._running = True
        try:
            loop = trio_asyncio.current_loop.get()
            if loop is None:
                async with trio_asyncio.open_loop() as own_loop:
                    own_loop.set_exception_handler(_report_asyncio_error)
                    await self._stay_connected(own_loop, task_status)
            else:
                await self._stay_connected(loop, task_status)
        finally:
            self._running = False

    async def _stay_connected(
        self, loop: trio_asyncio.BaseTrioEventLoop, task_status: trio.TaskStatus[None]
    ) -> NoReturn:
        started = False

        def signal_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        failures = 0
        while True:
            try:
                client = await self._open_client(loop)
            except aiomqtt.MqttError as exc:
                failures += 1
                self._failed_connects += 1
                self._report_connect_failure(exc, failures)
            else:
                up_since = trio.current_time()
                reason = await self._use(loop, client, signal_started)
                stable = trio.current_time() - up_since >= self.reconnect_max_s
                failures = 1 if stable else failures + 1
                self._report_loss(reason)
            signal_started()
            await trio.sleep(
                _reconnect_delay(failures, self.reconnect_min_s, self.reconnect_max_s, self._rng)
            )

    async def _open_client(self, loop: trio_asyncio.BaseTrioEventLoop) -> aiomqtt.Client:
        """Connect a fresh client; raise MqttError if that fails.

        Shielded: a connect abandoned half-way would leave behind the socket that paho
        opens in a worker thread. The attempt is bounded instead.
        """
        will = self.will
        version = self._version_to_try()
        client_options: dict[str, Any] = {
            "identifier": self.client_id,
            "username": self.username,
            "password": self.password,
            "keepalive": self.keepalive,
            "timeout": self.connect_timeout_s,
            "protocol": version,
            # Replies are small packets: without this, Nagle's algorithm meeting the
            # broker's delayed ACKs holds each one back some 40 ms.
            "socket_options": ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            "tls_context": self._ssl_context,
            "logger": _client_logger,
            "queue_type": _inbound_queue(self.buffer_size, self._count_inbound_drops),
            "will": None
            if will is None
            else aiomqtt.Will(will.topic, will.payload, will.qos, will.retain),
        }

        if version is aiomqtt.ProtocolVersion.V5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.ReceiveMaximum = _RECEIVE_MAXIMUM
            if self.max_packet_bytes is not None:
                properties.MaximumPacketSize = self.max_packet_bytes
            client_options.update(clean_start=True, properties=properties)
        else:
            client_options.update(clean_session=True)
        broker_limit: list[int | None] = [None]

        async def connect() -> aiomqtt.Client:
            client = aiomqtt.Client(self.host, self.port, **client_options)
            # Acknowledged once every stream took the message: see `_forward_inbound`.
            client._client.manual_ack_set(True)
            _note_broker_limit(client, broker_limit)
            # Bursts of _BATCH_SIZE publishes are normal here, not a sign of trouble.
            client.pending_calls_threshold = 2 * _BATCH_SIZE
            try:
                await client.__aenter__()
            except aiomqtt.MqttError:
                await _close_abandoned_socket(client)
                raise
            return client

        limit = self.connect_timeout_s + _SOCKET_CONNECT_TIMEOUT_S + _DISCONNECT_TIMEOUT_S
        with trio.CancelScope(shield=True, deadline=trio.current_time() + limit):
            try:
                client = await _on_asyncio(loop, connect())
            except aiomqtt.MqttError as exc:
                if self.protocol == "auto" and self._version is None and _refuses_v5(exc):
                    self._version = aiomqtt.ProtocolVersion.V311
                    logger.info(
                        "MQTT %s: the broker did not accept an MQTT 5 connection (%s); "
                        "using MQTT 3.1.1 (set mqtt.protocol to skip the attempt)",
                        self._address,
                        exc,
                    )
                    return await self._open_client(loop)
                raise
            self._version = version
            self._broker_max_packet = broker_limit[0]
            return client
        raise aiomqtt.MqttError(f"no answer within {limit:.0f} s")

    def _version_to_try(self) -> aiomqtt.ProtocolVersion:
        if self.protocol == "3.1.1":
            return aiomqtt.ProtocolVersion.V311
        if self.protocol == "5" or self._version is None:
            return aiomqtt.ProtocolVersion.V5
        return self._version

    async def _use(
        self,
        loop: trio_asyncio.BaseTrioEventLoop,
        client: aiomqtt.Client,
        signal_started: Callable[[], None],
    ) -> BaseException:
        """Serve one connected client until its connection drops, and return why.

        Always disconnects the client, shielded, before returning or raising.
        """
        session = _Session(loop, client)
        self._session = session
        loss: _Loss | None = None
        try:
            filters = list(self._subscriptions.items())
            if filters:
                granted = await _on_asyncio(loop, client.subscribe(filters))
                self._warn_if_refused([f for f, _ in filters], granted)
            self._set_connected(True)
            signal_started()
            async with trio.open_nursery() as nursery:
                loss = _Loss(nursery.cancel_scope)
                nursery.start_soon(self._receive_until_lost, session, loss)
                nursery.start_soon(self._send_until_lost, session, loss)
        except aiomqtt.MqttError as exc:
            return exc
        finally:
            session.end()
            self._session = None
            if self._connected:
                self._set_connected(False)
            await self._close_client(loop, client)
        if loss is None or loss.reason is None:
            return aiomqtt.MqttError("connection ended")
        self._disconnects += 1
        return loss.reason

    async def _close_client(
        self, loop: trio_asyncio.BaseTrioEventLoop, client: aiomqtt.Client
    ) -> None:
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + _DISCONNECT_TIMEOUT_S
            try:
                await _on_asyncio(loop, client.__aexit__(None, None, None))
            except aiomqtt.MqttError as exc:
                logger.debug("MQTT %s: disconnect failed: %s", self._address, exc)
        if scope.cancelled_caught:
            logger.warning(
                "MQTT %s: the broker did not acknowledge the disconnect within %.0f s; "
                "the connection was dropped instead",
                self._address,
                _DISCONNECT_TIMEOUT_S,
            )

    async def _receive_until_lost(self, session: _Session, loss: _Loss) -> None:
        try:
            await _on_asyncio(
                session.loop,
                _forward_inbound(session.client, self._deliver, self._deliver_again),
            )
        except aiomqtt.MqttError as exc:
            loss.record(exc)

    async def _send_until_lost(self, session: _Session, loss: _Loss) -> None:
        try:
            while True:
                while not self._outbox:
                    await self._outbox_changed.park()
                batch = self._outbox.take(_BATCH_SIZE)
                if self._outbox.has_room:
                    self._room.unpark_all()
                if self._broker_max_packet is not None:
                    batch = self._refuse_oversized(batch, self._broker_max_packet)
                sent = [False] * len(batch)
                try:
                    await _on_asyncio(session.loop, _publish_batch(session.client, batch, sent))
                finally:
                    self._published += sum(sent)
                    unsent = [m for m, done in zip(batch, sent, strict=True) if not done]
                    if unsent:
                        self._report_dropped(self._outbox.give_back(unsent))
        except aiomqtt.MqttError as exc:
            loss.record(exc)

    def _deliver(self, message: aiomqtt.Message) -> tuple[MQTTMessage, list[_Stream]]:
        """Fan an inbound message out to the open streams without ever waiting.

        Returns the message as streams see it, and the lossless streams that had no
        room for it (none for QoS 0: those streams drop it): `_deliver_again` tries them.
        """
        self._received += 1
        inbound = MQTTMessage(
            topic=message.topic.value,
            payload=_as_bytes(message.payload),
            qos=message.qos,
            retain=message.retain,
        )
        return inbound, self._deliver_again(inbound, list(self._streams))

    def _deliver_again(self, inbound: MQTTMessage, streams: list[_Stream]) -> list[_Stream]:
        """Offer ``inbound`` to ``streams``; return the lossless ones still full."""
        waiting = []
        full = 0
        for stream in streams:
            lossless = self._streams.get(stream)
            if lossless is None:
                continue  # closed since
            try:
                stream.send_nowait(inbound)
            except trio.WouldBlock:
                if lossless and inbound.qos:
                    waiting.append(stream)
                else:
                    full += 1
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._streams.pop(stream, None)
        if full:
            self._count_inbound_drops(full)
        return waiting

    def _refuse_oversized(self, batch: list[_Outgoing], limit: int) -> list[_Outgoing]:
        """The messages of ``batch`` the broker takes; the others are dropped as rejected."""
        kept = [message for message in batch if _packet_size(message) <= limit]
        if len(kept) < len(batch):
            self._outbox.dropped_rejected += len(batch) - len(kept)
            self._drops.dropped(oversized=len(batch) - len(kept))
        return kept

    def _count_inbound_drops(self, count: int = 1) -> None:
        self._dropped_inbound += count
        self._drops.dropped(inbound=count)

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        self._report_dropped(self._outbox.set_connected(connected))
        self._room.unpark_all()
        if connected:
            self._connects += 1
            if self._outage_reported:
                logger.info("MQTT %s: connected again", self._address)
            else:
                logger.info("MQTT %s: connected as %r", self._address, self.client_id)
            self._outage_reported = False
        self._state_changed.unpark_all()

    def _report_connect_failure(self, exc: BaseException, failures: int) -> None:
        if self._outage_reported:
            logger.debug("MQTT %s: connection attempt %d failed: %s", self._address, failures, exc)
            return
        self._outage_reported = True
        logger.warning(
            "MQTT %s: cannot connect (%s)%s; retrying every %g to %g s until the broker is back",
            self._address,
            exc,
            _connect_hint(exc),
            self.reconnect_min_s,
            self.reconnect_max_s,
        )

    def _report_loss(self, reason: BaseException) -> None:
        self._outage_reported = True
        logger.warning(
            "MQTT %s: connection lost (%s); reconnecting, holding up to %d queued messages "
            "meanwhile",
            self._address,
            _root_cause(reason),
            self.buffer_size,
        )

    def _report_dropped(self, dropped: list[_Outgoing]) -> None:
        if not dropped:
            return
        rejected = sum(1 for m in dropped if m.losses >= _SUSPECT_LOSSES)
        latest = sum(1 for m in dropped if m.delivery is Delivery.LATEST and m.losses < 2)
        self._drops.dropped(
            latest=latest, queued=len(dropped) - latest - rejected, rejected=rejected
        )

    def _warn_if_refused(
        self, filters: list[str], granted: tuple[int, ...] | list[ReasonCode]
    ) -> None:
        codes: list[int | ReasonCode] = list(granted)
        for topic_filter, code in zip(filters, codes, strict=False):
            refused = code.is_failure if isinstance(code, ReasonCode) else code >= 0x80
            if refused:
                logger.warning(
                    "MQTT %s: the broker refused the subscription to %r (%s); "
                    "check its ACL. It is retried on each reconnection",
                    self._address,
                    topic_filter,
                    code,
                )


def _report_asyncio_error(loop: object, context: dict[str, Any]) -> None:
    """Log an error raised in an asyncio callback instead of ending the connection.

    trio-asyncio's default handler re-raises such errors into the loop's nursery,
    which would end `MQTTConnection.run`. The one seen in practice is harmless:
    when the broker connection drops, paho closes its socket while a "ready to
    write" callback for it is still pending, and the callback fails with EBADF;
    the connection notices the loss on its own and reconnects.
    """
    exception = context.get("exception")
    level = logging.DEBUG if isinstance(exception, OSError) else logging.WARNING
    logger.log(
        level,
        "MQTT: an asyncio callback failed: %s",
        context.get("message", "unknown error"),
        exc_info=exception,
    )

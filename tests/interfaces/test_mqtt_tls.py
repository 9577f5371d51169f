"""TLS and logging in to the broker, against a real mosquitto with a private CA.

Each test makes a throwaway CA and a server certificate for 127.0.0.1 and localhost with
the ``openssl`` command, and starts mosquitto (through the `BrokerProcess` of the
conftest) with a TLS listener, no anonymous access and a password file made by
``mosquitto_passwd``. The connection and the bridge under test are the real ones: what
they must do is connect with the right CA file and credentials, fail with an error that
says what to fix otherwise, and never let the password reach a log or an error message.
"""

from __future__ import annotations

import getpass
import json
import logging
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import trio

from tests.interfaces.conftest import BrokerProcess
from wactorz.config import ConfigError, MQTTConfig, load_settings, render_settings
from wactorz.config._errors import InvalidField
from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem
from wactorz.interfaces.mqtt import MQTTBridge, MQTTConnection, MQTTMessage

LIMIT_S = 15.0
"""Upper bound on any one test, so that a hang fails instead of stalling the suite."""
USER = "sensor"
PASSWORD = f"pw-{secrets.token_hex(8)}"
"""Random, so that finding it in a log cannot be a coincidence."""

_needs_tls_broker = pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ("mosquitto", "mosquitto_passwd", "openssl")),
    reason="needs mosquitto, mosquitto_passwd and openssl (apt-get install mosquitto openssl)",
)


class Certificates(NamedTuple):
    ca: Path
    """The CA's certificate (PEM): what a client given ``tls_ca_file`` trusts."""
    server_cert: Path
    server_key: Path


def _openssl(workdir: Path, *arguments: str) -> None:
    subprocess.run(
        ["openssl", *arguments], cwd=workdir, check=True, capture_output=True, timeout=30
    )


def _make_certificates(workdir: Path) -> Certificates:
    """A CA, and a server certificate it signed for IP 127.0.0.1 and DNS localhost.

    EC keys, because they take milliseconds to generate where RSA takes tenths of seconds.
    """
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        workdir, "req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=wactorz test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        workdir, "req", "-new", *key, "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=localhost",
    )  # fmt: skip
    (workdir / "server.ext").write_text(
        "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
        "basicConstraints = critical, CA:FALSE\n"
        "keyUsage = critical, digitalSignature\n"
        "extendedKeyUsage = serverAuth\n"
        "subjectKeyIdentifier = hash\n"
        "authorityKeyIdentifier = keyid, issuer\n"
    )
    _openssl(
        workdir, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return Certificates(workdir / "ca.pem", workdir / "server.pem", workdir / "server.key")


class TLSBroker(NamedTuple):
    broker: BrokerProcess
    certificates: Certificates


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TLSBroker]:
    """mosquitto with one TLS listener, no anonymous access, and one user: `USER`."""
    certificates = _make_certificates(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), USER, PASSWORD],
        check=True,
        capture_output=True,
        timeout=30,
    )
    # Lines after the conftest's `listener` line configure that listener; the later
    # `allow_anonymous false` overrides the conftest's `true`. Started as root, mosquitto
    # switches to its own user before it reads the password file: `user` keeps ours, which
    # can read tmp_path (pytest makes it private to us).
    options = (
        f"user {getpass.getuser()}\n"
        f"certfile {certificates.server_cert}\n"
        f"keyfile {certificates.server_key}\n"
        "allow_anonymous false\n"
        f"password_file {passwords}\n"
    )
    broker = BrokerProcess("mosquitto", tmp_path, mosquitto_options=options)
    try:
        broker.start()
        yield TLSBroker(broker, certificates)
    finally:
        broker.stop()


def _connection(server: TLSBroker, **options: object) -> MQTTConnection:
    """A connection to ``server`` with the right CA file and credentials, unless ``options``
    say otherwise."""
    settings: dict[str, object] = {
        "host": server.broker.host,
        "port": server.broker.port,
        "username": USER,
        "password": PASSWORD,
        "tls_ca_file": server.certificates.ca,
        "protocol": "5",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.2,
    }
    settings.update(options)
    return MQTTConnection(**settings)  # type: ignore[arg-type]


@asynccontextmanager
async def _running(conn: MQTTConnection) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


async def _eventually(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"still waiting after {timeout} s for {what}")


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record, message and traceback, as one text to search."""
    return "\n".join(f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records)


async def _round_trip(conn: MQTTConnection, topic: str, payload: bytes) -> MQTTMessage:
    """Publish ``payload`` on ``topic`` through ``conn`` and receive it back through it."""
    async with _running(conn), conn.messages() as stream:
        await conn.wait_connected()
        await conn.subscribe(topic, qos=1)
        conn.publish(topic, payload, qos=1)
        return await stream.receive()


@pytest.mark.slow
@_needs_tls_broker
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_the_right_ca_file_and_credentials_carry_a_message_both_ways(
    tls_broker: TLSBroker, host: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with trio.fail_after(LIMIT_S):
        conn = _connection(tls_broker, host=host)
        message = await _round_trip(conn, "tls/check", b"over TLS")
    assert (message.topic, message.payload) == ("tls/check", b"over TLS")
    assert conn.statistics().failed_connects == 0
    assert PASSWORD not in _logged(caplog)
    assert PASSWORD not in repr(conn)


@pytest.mark.slow
@_needs_tls_broker
async def test_without_credentials_the_broker_refuses_the_connection(
    tls_broker: TLSBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wactorz")
    with trio.fail_after(LIMIT_S):
        conn = _connection(tls_broker, username=None, password=None)
        async with _running(conn):
            await _eventually(lambda: conn.statistics().failed_connects >= 2, "two refusals")
    assert not conn.statistics().connected
    assert "check the username and password" in _logged(caplog)


@pytest.mark.slow
@_needs_tls_broker
async def test_a_wrong_password_is_refused_with_a_clear_warning_that_never_shows_it(
    tls_broker: TLSBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = f"wrong-{secrets.token_hex(8)}"
    with trio.fail_after(LIMIT_S):
        conn = _connection(tls_broker, password=wrong)
        async with _running(conn):
            await _eventually(lambda: conn.statistics().failed_connects >= 2, "two refusals")
    assert conn.statistics().connects == 0
    [warning] = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and r.name.startswith("wactorz")
    ]
    address = f"{tls_broker.broker.host}:{tls_broker.broker.port}"
    assert f"MQTT {address}: cannot connect" in warning
    assert "the broker refused the credentials, check the username and password" in warning
    logged = _logged(caplog)
    assert wrong not in logged
    assert PASSWORD not in logged
    assert wrong not in repr(conn)


@pytest.mark.slow
@_needs_tls_broker
async def test_with_the_systems_cas_the_private_certificate_is_refused(
    tls_broker: TLSBroker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wactorz")
    with trio.fail_after(LIMIT_S):
        conn = _connection(tls_broker, tls=True, tls_ca_file=None)
        async with _running(conn):
            await _eventually(lambda: conn.statistics().failed_connects >= 1, "a refusal")
    assert conn.statistics().connects == 0
    logged = _logged(caplog)
    assert "certificate verify failed" in logged
    assert "set tls_ca_file (mqtt.tls_ca_file) to that CA's certificate" in logged
    assert PASSWORD not in logged


@pytest.mark.slow
@_needs_tls_broker
async def test_a_host_name_the_certificate_does_not_list_is_refused(
    tls_broker: TLSBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """Hostname verification stays on, even with a CA file: 127.0.0.2 is not in the SAN."""
    caplog.set_level(logging.WARNING, logger="wactorz")
    with trio.fail_after(LIMIT_S):
        relay = await trio.open_tcp_listeners(0, host="127.0.0.2")
        port = relay[0].socket.getsockname()[1]

        async def forward(downstream: trio.SocketStream) -> None:
            upstream = await trio.open_tcp_stream(tls_broker.broker.host, tls_broker.broker.port)
            async with downstream, upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_pump, downstream, upstream)
                nursery.start_soon(_pump, upstream, downstream)

        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, forward, relay)
            conn = _connection(tls_broker, host="127.0.0.2", port=port)
            async with _running(conn):
                await _eventually(lambda: conn.statistics().failed_connects >= 1, "a refusal")
            nursery.cancel_scope.cancel()
    assert conn.statistics().connects == 0
    assert "does not name this host" in _logged(caplog)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    try:
        async for chunk in source:
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


class _Echo(Actor):
    """Answers every message with the message itself."""

    async def _process(self, message: dict[str, Any]) -> object:
        return {"echo": message}


@pytest.mark.slow
@_needs_tls_broker
async def test_an_actor_behind_a_tls_bridge_answers_a_request_from_another_client(
    tls_broker: TLSBroker, caplog: pytest.LogCaptureFixture
) -> None:
    """The settings' ``tls_ca_file`` reaches the bridge's connection: end to end over TLS."""
    caplog.set_level(logging.DEBUG)
    loaded = load_settings(
        env={
            "WACTORZ_MQTT__ENABLED": "true",
            "WACTORZ_MQTT__PORT": str(tls_broker.broker.port),
            "WACTORZ_MQTT__USERNAME": USER,
            "WACTORZ_MQTT__PASSWORD": PASSWORD,
            "WACTORZ_MQTT__TLS_CA_FILE": str(tls_broker.certificates.ca),
            "WACTORZ_MQTT__TOPIC_PREFIX": f"t{secrets.token_hex(3)}",
            "WACTORZ_MQTT__RECONNECT_MIN_S": "0.05",
            "WACTORZ_MQTT__RECONNECT_MAX_S": "0.2",
        }
    )
    config = loaded.settings.mqtt
    assert config.uses_tls and not config.tls
    p = config.topic_prefix
    with trio.fail_after(LIMIT_S):
        async with ActorSystem(node="tlsnode") as system:
            await system.spawn(_Echo, "echo")
            bridge = await system.spawn(MQTTBridge, config=config)
            client = _connection(tls_broker)
            async with _running(client), client.messages() as stream:
                await client.wait_connected()
                await client.subscribe(f"{p}/replies/#", qos=1)
                await _eventually(lambda: _bridge_connected(bridge), "the bridge to connect")
                request = {"message": {"hi": 1}, "reply_to": f"{p}/replies/a"}
                client.publish(f"{p}/agents/by-name/echo/inbox", json.dumps(request), qos=1)
                reply = await stream.receive()
    assert reply.topic == f"{p}/replies/a"
    assert json.loads(reply.payload) == {"reply": {"echo": {"hi": 1}}, "correlation_id": None}
    assert PASSWORD not in _logged(caplog)


def _bridge_connected(bridge: MQTTBridge) -> bool:
    connection = bridge.bridge_statistics().connection
    return connection is not None and connection.connected


# ---- settings ---------------------------------------------------------------------------


def test_a_missing_ca_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ca.pem"
    with pytest.raises(ConfigError) as info:
        load_settings(env={"WACTORZ_MQTT__TLS_CA_FILE": str(missing)})
    message = str(info.value)
    assert message.startswith("mqtt.tls_ca_file: '/")  # the path, cut short if long
    assert (
        "from WACTORZ_MQTT__TLS_CA_FILE is not valid: expected the path of a readable PEM file"
        in message
    )
    assert "(no such file)" in message
    assert "fix the path or the file's permissions" in message


def test_a_directory_is_no_ca_file(tmp_path: Path) -> None:
    config = tmp_path / "wactorz.yaml"
    config.write_text(f"mqtt:\n  tls_ca_file: {tmp_path}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config, env={})
    assert str(info.value).startswith("mqtt.tls_ca_file: '/")
    assert "from " in str(info.value) and "wactorz.yaml is not valid" in str(info.value)
    assert "(not a file)" in str(info.value)


def test_a_ca_file_in_yaml_implies_tls_and_is_shown_as_a_path(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not checked here: the connection reads it")
    config = tmp_path / "wactorz.yaml"
    config.write_text(f"mqtt:\n  tls_ca_file: {ca}\n")
    loaded = load_settings(config, env={})
    assert loaded.settings.mqtt.tls_ca_file == ca
    assert loaded.settings.mqtt.uses_tls
    # Shown as a path (long values are cut short with their length, so the start is what
    # every temporary directory shows).
    shown = [line for line in render_settings(loaded.settings) if "tls_ca_file" in line]
    assert len(shown) == 1 and shown[0].startswith(f'mqtt.tls_ca_file = "{str(ca)[:40]}')
    assert not load_settings(env={}).settings.mqtt.uses_tls
    assert load_settings(env={"WACTORZ_MQTT__TLS_CA_FILE": ""}).settings.mqtt.tls_ca_file is None


def test_a_ca_file_holding_no_certificate_is_refused_by_the_connection(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("this is not a certificate\n")
    MQTTConfig(tls_ca_file=ca)  # readable: the settings take it
    with pytest.raises(InvalidField) as info:
        MQTTConnection(tls_ca_file=ca)
    assert str(info.value).startswith("tls_ca_file: '/")
    assert "is not valid: expected a readable PEM file of CA certificates (" in str(info.value)
    assert "no certificate" in str(info.value)  # OpenSSL's words for what it found
    assert "point it at the certificate of the CA that signed the broker's" in str(info.value)

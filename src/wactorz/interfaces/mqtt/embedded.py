"""The embedded broker: an MQTT broker the service starts itself, for nodes on one machine.

With ``mqtt.broker: embedded`` (``wactorz run --broker embedded``) the service runs
`EmbeddedBroker` before its bridge: an amqtt broker (pure Python, the ``broker`` extra:
``pip install 'wactorz[broker]'``) in a child process of its own, listening on
``mqtt.host:mqtt.port``. The child ends with its node however the node ends, SIGKILL
included (`wactorz.interfaces.mqtt._broker_child` says how), so no broker is left behind
holding the port. A second node started the same way finds the port taken and uses
the broker already there; if the node that runs the broker stops, one of the others starts
one in its place within a couple of seconds (their connections come back by themselves).

It is meant for a laptop or a test bench: it listens on loopback only and accepts
anonymous clients. Anything larger wants mosquitto or a clustered broker
(``docs/scaling.md``), with credentials, TLS and persistence.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar, Final

import trio

from wactorz.core.actor import Actor
from wactorz.core.registry import ActorSystem

__all__ = ["BROKER_NAME", "EmbeddedBroker", "amqtt_missing"]

logger = logging.getLogger("wactorz.interfaces.mqtt.embedded")

BROKER_NAME: Final = "mqtt-broker"
"""The name the embedded broker's actor runs under."""

_START_TIMEOUT_S: Final = 15.0
_STOP_TIMEOUT_S: Final = 3.0
_TAKE_OVER_POLL_S: Final = 1.0
_PROBE_TIMEOUT_S: Final = 0.5
_CHILD_MODULE: Final = "wactorz.interfaces.mqtt._broker_child"
"""Runs amqtt's broker and ends with this process (see its docstring)."""

INSTALL_HINT: Final = (
    "the embedded broker needs amqtt: pip install 'wactorz[broker]' (or install mosquitto, "
    "run it, and set mqtt.broker to external)"
)


def amqtt_missing() -> str | None:
    """Why the embedded broker cannot run here (amqtt is not installed), or None."""
    if importlib.util.find_spec("amqtt") is None:
        return INSTALL_HINT
    return None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _close_stdin(child: trio.Process) -> None:
    """Close our end of ``child``'s stdin pipe: no fd leaks, and a child still running reads
    EOF there, which stops it too."""
    if child.stdin is not None:
        await trio.aclose_forcefully(child.stdin)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


class EmbeddedBroker(Actor):
    """Runs an amqtt broker on ``host:port`` in a child process, unless one already listens.

    ``workdir`` holds its configuration and log (``amqtt.log``). The broker process is
    `wactorz.interfaces.mqtt._broker_child`, which exits when this process does, however
    this process ends. If the broker process exits, the actor crashes (its supervisor
    starts it again). While another process's broker holds the port, the actor watches it
    and starts its own when it goes away.

    Messages: ``{"get": "status"}`` answers ``{"running_here": bool, "pid": ...,
    "address": "host:port"}``.
    """

    capabilities: ClassVar[tuple[str, ...]] = ("mqtt-broker",)

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 1883,
        workdir: Path = Path(".wactorz/broker"),
    ) -> None:
        super().__init__(system, name=BROKER_NAME if name is None else name)
        self.host = host
        self.port = port
        self.workdir = workdir
        self._child: trio.Process | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running_here(self) -> bool:
        """Whether the broker on the port is this node's own child process."""
        return self._child is not None and self._child.returncode is None

    async def on_start(self) -> None:
        missing = amqtt_missing()
        if missing is not None:
            raise RuntimeError(missing)
        if not _is_loopback(self.host):
            raise RuntimeError(
                f"the embedded broker listens on loopback only, not on {self.host!r}: it takes "
                "anyone's connection. Beyond one machine run mosquitto (or a cluster) with "
                "credentials and TLS, and set mqtt.broker to external (docs/scaling.md)"
            )
        if await trio.to_thread.run_sync(_listening, self.host, self.port):
            logger.info("an MQTT broker already listens on %s: using it", self.address)
            return
        await self._start_child()

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        while True:
            if self._child is not None:
                code = await self._child.wait()
                raise RuntimeError(
                    f"the embedded broker on {self.address} exited with status {code}; "
                    f"its log is {self.workdir / 'amqtt.log'}"
                )
            await trio.sleep(_TAKE_OVER_POLL_S)
            if not await trio.to_thread.run_sync(_listening, self.host, self.port):
                logger.warning("the MQTT broker on %s went away: starting one here", self.address)
                await self._start_child()

    async def on_stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        try:
            if child.returncode is None:
                child.terminate()  # the child shuts the broker down and exits
                with trio.move_on_after(_STOP_TIMEOUT_S) as waited:
                    await child.wait()
                if waited.cancelled_caught:
                    child.kill()
                    with trio.CancelScope(shield=True):
                        await child.wait()
        finally:
            await _close_stdin(child)

    async def _process(self, message: dict[str, Any]) -> object:
        if message == {"get": "status"}:
            child = self._child
            return {
                "running_here": self.running_here,
                "pid": child.pid if child is not None else None,
                "address": self.address,
            }
        from wactorz.core.errors import MessageRejected

        raise MessageRejected("send {'get': 'status'}")

    async def _start_child(self) -> None:
        """Start amqtt and return once it listens; raise (with its log) if it does not."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "amqtt.yaml"
        config.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {self.host}:{self.port}\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n",
            encoding="utf-8",
        )
        log = self.workdir / "amqtt.log"
        command = [sys.executable, "-m", _CHILD_MODULE, str(config.resolve()), str(os.getpid())]
        with log.open("ab") as output:
            # stdin is a pipe that this process holds open and never writes to: the child
            # stops the broker at its EOF, so it ends with this process, even a SIGKILLed one.
            child = await trio.lowlevel.open_process(
                command, stdin=subprocess.PIPE, stdout=output, stderr=subprocess.STDOUT
            )
        self._child = child
        with trio.move_on_after(_START_TIMEOUT_S):
            while child.returncode is None:
                if await trio.to_thread.run_sync(_listening, self.host, self.port):
                    if "Broker startup failed" in log.read_text(errors="replace"):
                        break  # someone else took the port first: use theirs
                    logger.info(
                        "embedded MQTT broker (amqtt, pid %d) listening on %s",
                        child.pid,
                        self.address,
                    )
                    return
                await trio.sleep(0.05)
        await self.on_stop()
        if await trio.to_thread.run_sync(_listening, self.host, self.port):
            logger.info("another node's broker took %s first: using it", self.address)
            return
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(
            f"the embedded broker did not start listening on {self.address}; its log "
            f"({log}) ends:\n{tail}"
        )

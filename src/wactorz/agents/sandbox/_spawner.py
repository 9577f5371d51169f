"""The service's side of the spawner (`_spawner_program`): starting it, taking stubs from it,
handing a run to a stub, and having the spawner reap it.

One spawner per configuration (the cgroups its stubs join and their limits, the network
namespace they make), started on the first run that needs it, in a worker thread, and
kept for the life of the service: it exits when the service does (its end of the socket
sees end of file), killing whatever runs were left. One that died is started again by
the next run.

A run takes a stub the service holds already (the spawner hands one over with the
answer to each ``reap``, ahead of need) or asks for one, sends it the run directly, and
closes its end. Requests to the spawner go one at a time (a lock per Trio run) and each
exchange is shielded from cancellation: the spawner answers at once, and an exchange
cut in half would hand its answer to the next request. A run cancelled meanwhile sees
the cancellation at its next checkpoint, with the pid in hand, so its clean-up kills
what was started.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, final

import attrs
import trio

from wactorz.agents.sandbox._errors import SandboxError

__all__ = ["MARKER", "Spawner", "SpawnerConfig", "Stub", "spawner_for", "spawner_pids"]

MARKER: Final = "wactorz-sandbox-spawner"
"""The last argument of every spawner's command line, to tell it apart in a process list."""

_PROGRAM: Final = Path(__file__).with_name("_spawner_program.py")
_POOL: Final = 2
"""Stubs a spawner keeps ready (each has joined its cgroups and made its namespace)."""
_HELD: Final = 1
"""Stubs the service holds ahead of need, per spawner."""
_HELLO_TIMEOUT_S: Final = 30.0


@final
@attrs.frozen
class SpawnerConfig:
    """What a spawner's stubs do before they are needed."""

    cgroup_roots: tuple[str, ...]
    """Directories where each stub makes its groups (pids, memory), or none."""
    cgroup_limits: tuple[tuple[str, str], ...]
    """The files written in each new group, and their values (its limits)."""
    netns: str | None
    """``"root"``: a network namespace of its own; ``"user"``: one inside a user namespace
    (a service that is not root); None: the host's network."""


@final
@attrs.frozen
class Stub:
    """A stub held by the service: its pid, its cgroups, and the service's end of its socket."""

    pid: int
    cgroups: tuple[str, ...]
    fd: int


@final
class Spawner:
    """A running spawner process."""

    def __init__(self, config: SpawnerConfig) -> None:
        self.config = config
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        arguments = {
            "cgroup_roots": list(config.cgroup_roots),
            "cgroup_limits": dict(config.cgroup_limits),
            "netns": config.netns,
            "pool": _POOL,
        }
        try:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    _PROGRAM.read_text(encoding="utf-8"),
                    str(theirs.fileno()),
                    json.dumps(arguments),
                    MARKER,
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        self._sock = mine
        mine.settimeout(_HELLO_TIMEOUT_S)
        try:
            hello = json.loads(mine.recv(4096) or b"{}")
        except (OSError, ValueError):
            hello = {}
        if "hello" not in hello:
            self.process.kill()
            self.process.wait()
            mine.close()
            raise SandboxError(
                f"the sandbox's spawner ({sys.executable}) did not start; its errors are on "
                "the service's stderr"
            )
        mine.setblocking(False)
        self.dead = False
        self._held: list[Stub] = []
        self._locks: trio.lowlevel.RunVar[trio.Lock] = trio.lowlevel.RunVar("spawner lock")

    def _lock(self) -> trio.Lock:
        try:
            return self._locks.get()
        except LookupError:
            lock = trio.Lock()
            self._locks.set(lock)
            return lock

    async def _exchange(self, message: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        """Send ``message``, return the answer and the fds that came with it."""
        async with self._lock():
            with trio.CancelScope(shield=True):
                try:
                    while True:
                        try:
                            self._sock.send(json.dumps(message).encode())
                            break
                        except BlockingIOError:
                            await trio.lowlevel.wait_writable(self._sock)
                    while True:
                        try:
                            answer, fds, _, _ = socket.recv_fds(self._sock, 1 << 20, 4)
                            break
                        except BlockingIOError:
                            await trio.lowlevel.wait_readable(self._sock)
                except OSError as exc:
                    answer, fds = b"", []
                    failure = str(exc)
                else:
                    failure = "it closed its socket"
        if not answer:
            self.dead = True
            raise SandboxError(
                f"the sandbox's spawner died ({failure}); the next run starts a new one. Its "
                "errors are on the service's stderr"
            )
        for fd in fds:
            os.set_inheritable(fd, False)
        reply: dict[str, Any] = json.loads(answer)
        if "error" in reply:
            for fd in fds:
                os.close(fd)
            raise SandboxError(f"the sandbox's spawner refused a request: {reply['error']}")
        return reply, fds

    @staticmethod
    def _stub(description: dict[str, Any], fds: list[int]) -> Stub:
        return Stub(pid=description["pid"], cgroups=tuple(description["cgroups"]), fd=fds[0])

    async def take_stub(self) -> Stub:
        """A stub for a run: one held already, else one asked for."""
        if self._held:
            return self._held.pop()
        reply, fds = await self._exchange({"op": "stub"})
        return self._stub(reply, fds)

    async def start(self, stub: Stub, spec: dict[str, Any], fds: Sequence[int]) -> None:
        """Send ``stub`` its run (``spec`` and ``fds``) and let go of it. `SandboxError` if
        the stub is gone (the spawner died, or something killed it)."""
        sock = socket.socket(fileno=stub.fd)
        try:
            sock.setblocking(False)
            data = json.dumps({"spec": spec}).encode()
            while True:
                try:
                    socket.send_fds(sock, [data], list(fds))
                    break
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
        except OSError as exc:
            raise SandboxError(f"the sandbox's stub {stub.pid} is gone ({exc})") from None
        finally:
            sock.close()

    async def reap(self, pid: int) -> dict[str, Any]:
        """Reap the run (or unused stub) ``pid``: its exit status and resource usage."""
        reply, fds = await self._exchange(
            {"op": "reap", "pid": pid, "next": len(self._held) < _HELD}
        )
        if "next" in reply and fds:
            self._held.append(self._stub(reply["next"], fds))
        return reply

    def close(self) -> None:
        """Let the spawner go (it kills what runs are left, then exits) and reap it."""
        for stub in self._held:
            with contextlib.suppress(OSError):
                os.close(stub.fd)
        self._held.clear()
        self._sock.close()
        self.process.wait()


_spawners: dict[SpawnerConfig, Spawner] = {}
_spawners_lock = threading.Lock()


def _spawner_sync(config: SpawnerConfig) -> Spawner:
    with _spawners_lock:
        spawner = _spawners.get(config)
        if spawner is None or spawner.dead or spawner.process.poll() is not None:
            if spawner is not None:
                spawner.close()
            spawner = _spawners[config] = Spawner(config)
        return spawner


async def spawner_for(config: SpawnerConfig) -> Spawner:
    """The spawner for ``config``, started (in a worker thread) if need be."""
    spawner = _spawners.get(config)
    if spawner is not None and not spawner.dead and spawner.process.poll() is None:
        return spawner
    return await trio.to_thread.run_sync(_spawner_sync, config)


def spawner_pids() -> set[int]:
    """The pids of the running spawners (for tests that look for stray processes)."""
    return {spawner.process.pid for spawner in _spawners.values()}

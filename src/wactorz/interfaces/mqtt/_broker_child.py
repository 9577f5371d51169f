"""The embedded broker's child process: amqtt's broker, which ends when its node does.

`EmbeddedBroker` runs ``python -m wactorz.interfaces.mqtt._broker_child CONFIG PARENT_PID``
rather than amqtt's own script, so that the broker never outlives its node. A plain child
keeps running after its parent is killed with SIGKILL (or crashes hard): it's reparented
to init and keeps holding the port. Nothing in the dead parent can stop it, so the child
has to notice by itself:

* Its stdin is a pipe. Only the parent holds the write end, keeps it open for its whole
  life and never writes to it. The kernel closes a process's descriptors however it ends,
  so EOF on stdin means the parent is gone. This works on every platform.
* As a second check (POSIX), it compares `os.getppid` with the pid the parent passed once
  a second: a child whose parent died is reparented, so its parent pid changes. This also
  catches a parent that died before the child started watching. It also catches a copy of
  the write end that outlived the parent, such as one inherited by a process forked from
  the node.

Linux's ``PR_SET_PDEATHSIG`` is not used. It fires when the *thread* that forked the
child exits, not the process. Trio forks from a worker thread, which ends after about
10 s idle, and that would kill a healthy broker.

Either way out (parent gone, SIGTERM) shuts the broker down cleanly and exits 0.
SIGINT is ignored: a Ctrl-C in the terminal reaches the whole process group, and the node
stops the broker itself, after its bridge has said goodbye through it. The exit status is 1
when the configuration cannot be read or the broker cannot start (amqtt then logs
``Broker startup failed``, which `EmbeddedBroker` looks for). The log goes to stderr,
which the parent sends to ``amqtt.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Final

__all__ = ["main"]

logger = logging.getLogger("wactorz.interfaces.mqtt.broker_child")

_PARENT_POLL_S: Final = 1.0
_SHUTDOWN_TIMEOUT_S: Final = 5.0
_LOG_FORMAT: Final = "[%(asctime)s] :: %(levelname)s - %(message)s"
_STDIN_FD: Final = 0
"""Read as a descriptor: ``sys.stdin`` may be None, and its buffering is of no use here."""


def _parse(argv: list[str]) -> argparse.Namespace:
    """The configuration file and the parent's pid, from the command line."""
    parser = argparse.ArgumentParser(
        prog="python -m wactorz.interfaces.mqtt._broker_child",
        description="amqtt's broker, stopping when its parent (or stdin) goes away",
    )
    parser.add_argument("config", help="amqtt's broker configuration (YAML)")
    parser.add_argument("parent_pid", type=int, help="the pid of the node that started it")
    return parser.parse_args(argv)


def _watch_stdin(loop: asyncio.AbstractEventLoop, gone: asyncio.Event) -> None:
    """Read stdin until EOF, then `_stop` with ``gone``; in a thread, where a blocking read
    works on any platform.

    Anything written is ignored: the parent never writes. A read error counts as EOF:
    the pipe is unusable, so the parent can't be watched through it any more.
    """
    try:
        while os.read(_STDIN_FD, 4096):
            pass
    except OSError:
        pass
    with contextlib.suppress(RuntimeError):  # the loop is closed: the process is exiting
        loop.call_soon_threadsafe(_stop, gone, "stdin closed: the node is gone")


async def _watch_parent(parent_pid: int, gone: asyncio.Event) -> None:
    """`_stop` with ``gone`` once this process is no longer ``parent_pid``'s child (POSIX only)."""
    if os.name != "posix":
        return  # on Windows a dead parent's pid stays the parent pid: stdin's EOF tells
    while True:  # nothing to wait on: a reparented process is told nothing
        if os.getppid() != parent_pid:
            _stop(gone, f"the node (pid {parent_pid}) is gone")
            return
        await asyncio.sleep(_PARENT_POLL_S)


def _stop(done: asyncio.Event, why: str) -> None:
    """Set ``done`` (once), logging ``why`` the broker stops."""
    if not done.is_set():
        logger.info("stopping the broker: %s", why)
        done.set()


async def _serve(config_file: str, parent_pid: int) -> int:
    """Run the broker from ``config_file`` until the parent is gone or SIGTERM; the exit status."""
    from amqtt.broker import Broker
    from amqtt.errors import BrokerError, PluginError
    from amqtt.utils import read_yaml_config

    try:
        config = read_yaml_config(config_file)
    except OSError as exc:
        # A sentence, no traceback: it's what the node shows from the log's tail.
        logger.error("cannot read the broker's configuration: %s", exc)  # noqa: TRY400
        return 1
    if config is None:
        return 1  # amqtt logged why
    try:
        broker = Broker(config)
    except (BrokerError, PluginError, ValueError) as exc:
        logger.error("the broker's configuration is not valid: %s", exc)  # noqa: TRY400 (same)
        return 1

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    with contextlib.suppress(NotImplementedError):  # Windows: terminate() ends it outright
        loop.add_signal_handler(signal.SIGTERM, _stop, done, "SIGTERM")
    parent = asyncio.create_task(_watch_parent(parent_pid, done))
    threading.Thread(target=_watch_stdin, args=(loop, done), daemon=True).start()
    try:
        try:
            await broker.start()
        except BrokerError:
            return 1  # amqtt logged "Broker startup failed" with the cause
        await done.wait()
        try:
            await asyncio.wait_for(broker.shutdown(), _SHUTDOWN_TIMEOUT_S)
        except TimeoutError:
            logger.warning("the broker did not shut down in %g s: exiting", _SHUTDOWN_TIMEOUT_S)
        return 0
    finally:
        parent.cancel()


def main(argv: list[str] | None = None) -> int:
    """Run the broker as `EmbeddedBroker`'s child (see the module's docstring); exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node stops the broker (see above)
    args = _parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format=_LOG_FORMAT)
    logging.getLogger("transitions").setLevel(logging.WARNING)
    return asyncio.run(_serve(args.config, args.parent_pid))


if __name__ == "__main__":
    sys.exit(main())

"""``wactorz chat``: a terminal client of the web front door, over its WebSocket.

It finds the service (`find_service`), connects with the token as ``Authorization:
Bearer``, then sends each line it reads as one request and prints the answer as it
streams in, before reading the next line:

- a line starting with ``/`` goes as a ``command`` frame, anything else as ``chat`` (the
  MainActor routes ``@name ...`` itself); empty lines are skipped;
- streamed text goes to stdout as it arrives (``stderr`` parts to stderr); tool calls show
  on stderr as ``[tool NAME...]`` and ``[tool NAME: done]``; an error is printed on stderr
  as the service's sentence;
- at a terminal it prompts, with line editing and history (readline); from a pipe it
  reads until end of input, waits for the last reply, and exits:
  ``echo hi | wactorz chat`` prints the reply and ends;
- Ctrl-C while a reply streams cancels it (a ``cancel`` frame); Ctrl-C again, or at the
  prompt, quits.

Exit statuses (`run_chat`): 0 when the last request was answered (or nothing was sent);
1 when the last request ended in an error; 2 for a usage or configuration error (the
caller's); 3 when no service could be reached, it refused the token, or the connection was
lost; 130 when interrupted (Ctrl-C at the prompt, twice, or a last reply cut short by it).

The protocol is ``docs/websocket.md``'s; nothing here is specific to a terminal but the
prompt and the signals, so `run_chat` takes its input and output as arguments.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, Final, Protocol, TextIO, final
from urllib.parse import parse_qs, quote, urlsplit

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from wactorz.config import WebConfig
from wactorz.interfaces.web.runtime_file import read_runtime_files

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "NO_SERVICE",
    "ChatTarget",
    "LineSource",
    "OnceLines",
    "PipeLines",
    "PromptLines",
    "ServiceNotFound",
    "find_service",
    "run_chat",
]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_UNREACHABLE: Final = 3
EXIT_INTERRUPTED: Final = 130

NO_SERVICE: Final = "no wactorz service found: start one with `python -m wactorz`"
CONNECT_TIMEOUT_S: Final = 10.0
SESSION_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
"""What the protocol takes as a session id (``docs/websocket.md``)."""

_CLOSE_GOING_AWAY: Final = 1001
_PROMPT: Final = "> "


class ServiceNotFound(Exception):
    """No service could be reached (or it refused us); ``str()`` says what to do."""


@final
@attrs.frozen
class ChatTarget:
    """Where to connect: the service's address, its token, and how it was found."""

    url: str
    """The service's page, ``http://host:port/``."""
    token: str | None
    found_by: str
    """How it was found, for messages: ``--url``, the runtime file, or the settings."""
    guessed: bool = False
    """True when nothing said a service runs there (the configured address, tried blind)."""

    @property
    def websocket_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme in ("https", "wss") else "ws"
        return f"{scheme}://{parts.netloc}/ws"


def _pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def _port_of(url: str) -> int | None:
    try:
        parts = urlsplit(url)
        return parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    except ValueError:
        return None


def find_service(
    *,
    url: str | None,
    token: str | None,
    web: WebConfig,
    runtime_files: Sequence[Mapping[str, Any]] | None = None,
) -> ChatTarget:
    """Decide where ``wactorz chat`` connects, and with which token.

    - ``url`` (``--url``: the banner's address, with or without ``?token=``, or a
      ``ws://`` one) wins; else the newest runtime file of a service still running
      (`read_runtime_files`); else the configured ``web.host:web.port``.
    - The token: ``token`` (``--token``), else the one in ``url``, else the runtime
      file's for that port (a generated token), else ``web.token`` (``WACTORZ_WEB__TOKEN``).

    ``runtime_files`` defaults to what `read_runtime_files` finds. Raises `ValueError`
    for a ``url`` that is not an http(s) or ws(s) address.
    """
    files = [
        entry
        for entry in (read_runtime_files() if runtime_files is None else runtime_files)
        if _pid_alive(entry.get("pid")) and isinstance(entry.get("url"), str)
    ]
    configured = web.token.reveal() if web.token is not None else None
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
            raise ValueError(
                f"--url takes the service's address, like http://127.0.0.1:8765/ (the "
                f"banner's), not {url!r}"
            )
        in_url = parse_qs(parts.query).get("token", [None])[0]
        port = _port_of(url)
        from_file = next((entry.get("token") for entry in files if entry.get("port") == port), None)
        chosen = token or in_url or from_file or configured
        return ChatTarget(f"{parts.scheme}://{parts.netloc}/", chosen, "--url")
    if files:
        entry = files[0]
        chosen = token or entry.get("token") or configured
        return ChatTarget(str(entry["url"]), chosen, "the service's runtime file")
    host = f"[{web.host}]" if ":" in web.host else web.host
    port = web.port or 8765
    return ChatTarget(
        f"http://{host}:{port}/", token or configured, "web.host and web.port", guessed=True
    )


class LineSource(Protocol):
    """Where the lines to send come from: `next_line` returns None at the end of input."""

    async def next_line(self) -> str | None: ...


@final
class PipeLines:
    """Lines from a file descriptor that is not a terminal, read in a thread.

    ``os.read`` rather than ``sys.stdin``: a thread left blocked in it when the chat ends
    holds no lock the interpreter needs at exit.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._eof = False

    async def next_line(self) -> str | None:
        while b"\n" not in self._buffer and not self._eof:
            chunk = await trio.to_thread.run_sync(os.read, self._fd, 65536, abandon_on_cancel=True)
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True
        if not self._buffer:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", "replace")


@final
class OnceLines:
    """One line (``wactorz chat --once TEXT``), then the end of input."""

    def __init__(self, text: str) -> None:
        self._text: str | None = text

    async def next_line(self) -> str | None:
        await trio.lowlevel.checkpoint()
        text, self._text = self._text, None
        return text


@final
class PromptLines:
    """Lines typed at a terminal after a prompt, with readline's editing and history."""

    def __init__(self, prompt: str = _PROMPT) -> None:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401  (importing it gives input() editing and history)
        self._prompt = prompt

    async def next_line(self) -> str | None:
        try:
            return await trio.to_thread.run_sync(input, self._prompt, abandon_on_cancel=True)
        except EOFError:
            print()  # Ctrl-D: the shell's prompt starts on a line of its own
            return None


@final
class _Conversation:
    """One connection's requests, one at a time, and what it prints about them."""

    def __init__(self, ws: WebSocketConnection, out: TextIO, err: TextIO) -> None:
        self.ws = ws
        self.out = out
        self.err = err
        self.status = EXIT_OK
        self.current: int | None = None
        self.cancelling = False
        self._ids = 0
        self._done = trio.Event()
        self._printed = False  # the current reply printed text on stdout
        self._line_open = False  # ...and its last line has no newline yet

    async def request(self, text: str) -> None:
        """Send ``text`` as chat or command and return once its final frame came."""
        self._ids += 1
        self.current = self._ids
        self.cancelling = False
        self._printed = self._line_open = False
        self._done = trio.Event()
        kind = "command" if text.startswith("/") else "chat"
        await self.ws.send_message(json.dumps({"type": kind, "id": self.current, "text": text}))
        await self._done.wait()
        self.current = None

    async def cancel(self) -> None:
        """Ask the service to cancel the reply that is streaming."""
        if self.current is None or self.cancelling:
            return
        self.cancelling = True
        self._ids += 1
        frame = {"type": "cancel", "id": self._ids, "request": self.current}
        await self.ws.send_message(json.dumps(frame))

    async def receive(self) -> None:
        """Handle the service's frames until the connection closes (`ConnectionClosed`)."""
        while True:
            message = await self.ws.get_message()
            try:
                frame = json.loads(message)
            except ValueError:
                continue
            if isinstance(frame, dict):
                self._handle(frame)

    def _handle(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if frame.get("id") is None and kind == "error":
            self.say(f"the service refused a frame: {frame.get('error')}")
            return
        if self.current is None or frame.get("id") != self.current:
            return  # the answer to a cancel, or a feed frame
        if kind == "stream":
            parts = frame.get("parts")
            for part in parts if isinstance(parts, list) else []:
                if isinstance(part, dict):
                    self._part(part)
        elif kind in ("stream_end", "reply"):
            if not self._printed:
                self._write_answer(frame.get("reply"))
            self._end_line()
            result = frame.get("result")
            cancelled = self.cancelling or (
                isinstance(result, dict)
                and (result.get("cancelled") is True or result.get("stop_reason") == "cancelled")
            )
            if cancelled:
                self.say("(cancelled)")
            self._finish(EXIT_INTERRUPTED if cancelled else EXIT_OK)
        elif kind == "error":
            self._end_line()
            if frame.get("code") == "cancelled":
                self.say("(cancelled)")
                self._finish(EXIT_INTERRUPTED)
            else:
                self.say(str(frame.get("error")))
                self._finish(EXIT_FAILED)

    def _part(self, part: dict[str, Any]) -> None:
        kind = part.get("kind")
        text = part.get("text")
        if kind in ("text", "stdout") and isinstance(text, str):
            self._write(text)
        elif kind == "stderr" and isinstance(text, str):
            self.out.flush()
            self.err.write(text)
            self.err.flush()
        elif kind in ("tool_start", "tool_end"):
            name = part.get("name") or part.get("tool") or "tool"
            failed = kind == "tool_end" and (part.get("error") or part.get("ok") is False)
            state = "..." if kind == "tool_start" else ": failed" if failed else ": done"
            self.out.flush()
            self.err.write(f"[tool {name}{state}] ")
            self.err.flush()

    def _write(self, text: str) -> None:
        if not text:
            return
        self.out.write(text)
        self.out.flush()
        self._printed = True
        self._line_open = not text.endswith("\n")

    def _write_answer(self, answer: object) -> None:
        if answer is None:
            return
        if isinstance(answer, str):
            self._write(answer)
        elif isinstance(answer, dict) and isinstance(answer.get("text"), str):
            self._write(answer["text"])
        else:
            self._write(json.dumps(answer, indent=2, ensure_ascii=False))

    def _end_line(self) -> None:
        if self._line_open:
            self.out.write("\n")
            self.out.flush()
            self._line_open = False

    def say(self, sentence: str) -> None:
        """Print a line of the client's own on stderr, on a line of its own."""
        if self._line_open:
            self.out.write("\n")
            self._line_open = False
        self.out.flush()
        self.err.write(f"{sentence}\n")
        self.err.flush()

    def _finish(self, status: int) -> None:
        self.status = status
        self._done.set()


async def run_chat(
    target: ChatTarget,
    lines: LineSource,
    *,
    session: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
    greet: bool = False,
    on_signals_ready: Callable[[], None] | None = None,
) -> int:
    """Chat with the service at ``target`` until ``lines`` ends; the exit status.

    ``session`` resumes that conversation (else the service makes a new one). ``greet``
    prints who answered and how to quit (at a terminal). SIGINT is handled as the module
    docstring says while this runs (in the main thread; elsewhere it is left alone), and
    ``on_signals_ready`` is called once it is. Raises `ServiceNotFound` if the service
    cannot be reached or refuses the token; a connection lost later is printed and
    returns `EXIT_UNREACHABLE`.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    url = target.websocket_url
    if session is not None:
        url += f"?session={quote(session)}"
    headers = [(b"Authorization", f"Bearer {target.token}".encode())] if target.token else []
    greeted = False
    try:
        async with open_websocket_url(
            url, extra_headers=headers, connect_timeout=CONNECT_TIMEOUT_S
        ) as ws:
            hello = json.loads(await ws.get_message())
            greeted = True
            if greet:
                err.write(
                    f"connected to wactorz {hello.get('version')} on node {hello.get('node')!r} "
                    f"({target.url}), session {hello.get('session')}\n"
                    "type a message, @name message, or /help; Ctrl-C cancels a reply, "
                    "Ctrl-D quits\n"
                )
                err.flush()
            return await _converse(_Conversation(ws, out, err), lines, on_signals_ready)
    except* ConnectionRejected as group:
        raise ServiceNotFound(_refusal(target, _first(group))) from None
    except* (HandshakeError, ConnectionClosed, OSError) as group:
        if greeted:
            raise
        raise ServiceNotFound(_unreachable(target, _first(group))) from None


def _first(group: BaseExceptionGroup[Any]) -> Any:
    """The first exception of ``group`` that is not a group itself."""
    first = group.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _converse(
    conversation: _Conversation,
    lines: LineSource,
    on_signals_ready: Callable[[], None] | None,
) -> int:
    """Read lines and carry them out until the input ends, Ctrl-C, or the connection goes."""
    out, err = conversation.out, conversation.err
    status: int | None = None

    def lost(closed: ConnectionClosed) -> None:
        nonlocal status
        reason = closed.reason
        out.flush()
        if reason is not None and reason.code == _CLOSE_GOING_AWAY:
            err.write("\nthe service stopped; the chat ends\n")
        else:
            detail = "no reason given" if reason is None else str(reason.code)
            if reason is not None and reason.reason:
                detail += f": {reason.reason}"
            err.write(f"\nthe connection to the service was lost ({detail})\n")
        err.flush()
        status = EXIT_UNREACHABLE

    async with trio.open_nursery() as nursery:

        async def receive() -> None:
            try:
                await conversation.receive()
            except ConnectionClosed as closed:
                if status is None:
                    lost(closed)
                nursery.cancel_scope.cancel()

        async def interrupts() -> None:
            nonlocal status
            with _sigint_receiver() as signals:
                if on_signals_ready is not None:
                    on_signals_ready()
                async for _ in signals:
                    if conversation.current is not None and not conversation.cancelling:
                        conversation.say("^C: cancelling the reply (Ctrl-C again quits)")
                        with contextlib.suppress(ConnectionClosed):  # receive() says so
                            await conversation.cancel()
                    else:
                        status = EXIT_INTERRUPTED
                        nursery.cancel_scope.cancel()

        async def talk() -> None:
            try:
                while True:
                    line = await lines.next_line()
                    if line is None:
                        break
                    if line.strip():
                        await conversation.request(line.strip())
            except ConnectionClosed as closed:
                if status is None:
                    lost(closed)
            nursery.cancel_scope.cancel()

        nursery.start_soon(receive)
        nursery.start_soon(interrupts)
        nursery.start_soon(talk)
    if status == EXIT_INTERRUPTED:
        out.flush()
        err.write("\n")
        err.flush()
    return status if status is not None else conversation.status


@contextlib.contextmanager
def _sigint_receiver() -> Iterator[AsyncIterator[int]]:
    """SIGINT as messages, in the main thread; elsewhere, an iterator that never yields."""
    if threading.current_thread() is threading.main_thread():
        with trio.open_signal_receiver(signal.SIGINT) as signals:
            yield signals
        return
    yield _Never()


@final
class _Never:
    def __aiter__(self) -> _Never:
        return self

    async def __anext__(self) -> int:
        await trio.sleep(math.inf)
        raise StopAsyncIteration


def _refusal(target: ChatTarget, exc: ConnectionRejected) -> str:
    where = f"the wactorz service at {target.url}"
    if exc.status_code == 401:
        return (
            f"{where} needs its token: pass --token, set WACTORZ_WEB__TOKEN, or use the "
            "address its banner printed (--url 'http://...?token=...')"
        )
    if exc.status_code == 403:
        return (
            f"{where} refused the token (or this client's address): use the token from "
            "the service's banner or web.token; a service restarted without web.token set "
            "has a new token"
        )
    return f"{where} refused the connection (HTTP {exc.status_code})"


def _unreachable(target: ChatTarget, exc: BaseException) -> str:
    if target.guessed:
        return f"{NO_SERVICE} (nothing answers at {target.url}, web.host and web.port)"
    return (
        f"cannot reach the wactorz service at {target.url} (found by {target.found_by}): "
        f"{exc or type(exc).__name__}; is it running? start one with `python -m wactorz`"
    )

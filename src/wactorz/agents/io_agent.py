"""`IOAgent`: files inside the workspace, shell commands in it, and code blocks run for a reply.

Files: every operation is confined to the workspace directory (``sandbox.root``) by
`wactorz.agents.workspace`, which refuses ``..``, absolute paths, symbolic links (even
one swapped in mid-call), special files and over-size reads and writes, each with a
sentence naming the path and the rule. File operations run in a worker thread, so a
slow disk does not hold up the event loop.

Shell: ``run_shell`` runs a command with ``/bin/sh -c`` in the workspace, through the
same sandbox as `CodeAgent` (the workspace writable, nothing else), streamed and
cancellable like its runs (`wactorz.agents.runs`). Only when ``sandbox.allow_shell`` is
true: otherwise the tool is not offered, and a call says how to enable it.

Code blocks: ``run_code_blocks`` takes text (a model's reply, say), finds its fenced
```` ```python ```` and ```` ```sh ```` / ```` ```bash ```` blocks, runs each in turn through
the CodeAgent (each in a fresh sandbox), and answers with a result per block.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeVar, final

import attrs
import trio

from wactorz.agents.code_agent import CODE_AGENT_NAME
from wactorz.agents.runs import STREAM_PROPERTIES, SandboxedAgent
from wactorz.agents.sandbox import MAX_SNIPPET_BYTES, Policy
from wactorz.agents.streams import Stream, stream_target
from wactorz.agents.workspace import Workspace, WorkspaceError
from wactorz.config import SandboxConfig
from wactorz.core.errors import MessageRejected, WactorzError
from wactorz.core.registry import ActorSystem
from wactorz.core.tools import Tool, tool, tool_call

__all__ = ["IO_AGENT_NAME", "IOAgent", "code_blocks"]

logger = logging.getLogger("wactorz.agents.io")

IO_AGENT_NAME: Final = "io"
"""The name the service gives its IOAgent."""

MAX_BLOCKS: Final = 20
"""Code blocks run for one request, at most."""

_T = TypeVar("_T")

_FENCE = re.compile(
    r"^(?P<indent>[ \t]{0,3})(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n"
    r"(?P<body>.*?)"
    r"^(?P=indent)(?P=fence)[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
_LANGUAGES: Final = {
    "python": "python",
    "py": "python",
    "python3": "python",
    "sh": "sh",
    "bash": "sh",
    "shell": "sh",
    "console": "sh",
}

_PATH: Final = {"type": "string", "minLength": 1, "description": "A path inside the workspace."}
_TEXT_OR_BASE64: Final = {
    "content": {"type": "string", "description": "The text to write (or base64 of bytes)."},
    "base64": {"type": "boolean", "description": "content is base64-encoded bytes."},
}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of ``text`` that can run, as ``(language, code)`` in order.

    A block's language is the first word of its info string: ``python``/``py`` run as
    Python, ``sh``/``bash``/``shell`` as shell; blocks in other languages, or none, are
    skipped (they are examples, not programs).
    """
    found = []
    for match in _FENCE.finditer(text):
        words = match["info"].split()
        language = _LANGUAGES.get(words[0].lower()) if words else None
        if language is not None and match["body"].strip():
            found.append((language, match["body"]))
    return found


class IOAgent(SandboxedAgent):
    """Reads and writes files inside the workspace, runs shell commands and code blocks there."""

    capabilities = ("files", "shell", "code-blocks")

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        config: SandboxConfig | None = None,
        policy: Policy | None = None,
        code_agent: str = CODE_AGENT_NAME,
    ) -> None:
        super().__init__(system, name=name, config=config, policy=policy)
        self.code_agent = code_agent
        """The CodeAgent that runs code blocks (by name or id)."""
        self.workspace: Workspace | None = None
        self._relays: dict[str, _Relay] = {}
        """Streams of code-block jobs, by the stream id their CodeAgent runs send on."""

    async def on_start(self) -> None:
        await super().on_start()
        limit = self.config.max_file_mb * 1024 * 1024
        self.workspace = await trio.to_thread.run_sync(
            lambda: Workspace(self.config.root, max_read_bytes=limit, max_write_bytes=limit)
        )
        if self.config.allow_shell:
            await trio.to_thread.run_sync(self._share_with_runs)

    async def on_stop(self) -> None:
        if self.workspace is not None:
            self.workspace.close()

    def _share_with_runs(self) -> None:
        """Let shell runs, under their own uids, write the workspace: a group of its own.

        When the service is root and runs get a uid of their own, the workspace becomes
        group-owned by a group no account has (just below the runs' uid range), setgid so
        that what is created in it stays in that group, and group-writable.
        """
        assert self.workspace is not None and self.report is not None
        if os.geteuid() != 0 or "user" not in self.report.active:
            return
        gid = self.policy.uid_range[0] - 1
        root = self.workspace.root
        info = os.stat(root, follow_symlinks=False)
        if info.st_gid != gid:
            os.chown(root, -1, gid, follow_symlinks=False)
        os.chmod(root, stat.S_IMODE(info.st_mode) | 0o2070, follow_symlinks=False)

    def _relay(self, relay_id: str, stream: Stream) -> _Relay:
        code_agent = self.system.lookup(self.code_agent)
        if code_agent is None:
            raise MessageRejected(
                f"no CodeAgent named {self.code_agent!r} is running to run code blocks"
            )
        relay = self._relays[relay_id] = _Relay(relay_id, code_agent.id, stream)
        return relay

    def offered_tools(self) -> tuple[Tool, ...]:
        tools = type(self).tools()
        if self.config.allow_shell:
            return tools
        return tuple(t for t in tools if t.name != "run_shell")

    async def _process(self, message: dict[str, Any]) -> object:
        stream_id = message.get("stream")
        relay = self._relays.get(stream_id) if isinstance(stream_id, str) else None
        if relay is not None and self.sender == relay.sender:
            # A code block's output, streamed here by the CodeAgent: on to the job's own
            # stream (waiting while its consumer is behind, so nothing piles up here).
            for part in message.get("parts", ()):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    await relay.stream.write(str(part.get("kind")), part["text"])
            if message.get("end"):
                relay.ended.set()
            return None
        names = ", ".join(t.name for t in self.offered_tools())
        raise MessageRejected(f"call a tool: {{'tool': NAME, 'input': {{...}}}} (tools: {names})")

    async def _files(self, operation: Callable[[Workspace], _T]) -> _T:
        """Run a workspace operation in a worker thread; its refusal becomes the caller's error."""
        workspace = self.workspace
        if workspace is None:
            raise MessageRejected(f"{self.name} has no workspace open: it is not running")
        try:
            return await trio.to_thread.run_sync(operation, workspace)
        except WorkspaceError as exc:
            raise MessageRejected(str(exc)) from None

    # ---- files ---------------------------------------------------------------------------

    @tool(
        "Read a file of the workspace (text, or base64 of bytes), optionally a slice of it.",
        input_schema={
            "type": "object",
            "properties": {
                "path": _PATH,
                "offset": {"type": "integer", "minimum": 0, "description": "Byte to start at."},
                "limit": {"type": "integer", "minimum": 1, "description": "Bytes to read."},
                "binary": {"type": "boolean", "description": "Answer base64 of the bytes."},
            },
            "required": ["path"],
        },
    )
    async def read_file(
        self, path: str, offset: int = 0, limit: int | None = None, binary: bool = False
    ) -> dict[str, Any]:
        content = await self._files(
            lambda w: w.read(path, offset=offset, limit=limit, binary=binary)
        )
        return content.to_json()

    @tool(
        "Write a file of the workspace, replacing it atomically.",
        input_schema={
            "type": "object",
            "properties": {
                "path": _PATH,
                **_TEXT_OR_BASE64,
                "create_parents": {"type": "boolean", "description": "Make missing directories."},
            },
            "required": ["path", "content"],
        },
    )
    async def write_file(
        self, path: str, content: str, base64: bool = False, create_parents: bool = False
    ) -> dict[str, Any]:
        data = _decoded(content, base64)
        entry = await self._files(lambda w: w.write(path, data, create_parents=create_parents))
        return entry.to_json()

    @tool(
        "Append to a file of the workspace (created if missing).",
        input_schema={
            "type": "object",
            "properties": {"path": _PATH, **_TEXT_OR_BASE64},
            "required": ["path", "content"],
        },
    )
    async def append_file(self, path: str, content: str, base64: bool = False) -> dict[str, Any]:
        data = _decoded(content, base64)
        entry = await self._files(lambda w: w.append(path, data))
        return entry.to_json()

    @tool(
        "List a directory of the workspace, optionally by a glob ('*.py', '**/*.txt').",
        input_schema={
            "type": "object",
            "properties": {
                "path": {**_PATH, "description": "The directory (default: the workspace)."},
                "pattern": {"type": "string", "minLength": 1},
                "limit": {"type": "integer", "minimum": 1},
            },
        },
    )
    async def list_files(
        self, path: str = ".", pattern: str | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        listing = await self._files(lambda w: w.list(path, pattern=pattern, limit=limit))
        return listing.to_json()

    @tool(
        "Say what a path of the workspace is: kind, size, modification time.",
        input_schema={"type": "object", "properties": {"path": _PATH}, "required": ["path"]},
    )
    async def stat_file(self, path: str) -> dict[str, Any]:
        return (await self._files(lambda w: w.stat(path))).to_json()

    @tool(
        "Move or rename a file or directory inside the workspace.",
        input_schema={
            "type": "object",
            "properties": {
                "source": _PATH,
                "destination": _PATH,
                "overwrite": {"type": "boolean", "description": "Replace what is there."},
            },
            "required": ["source", "destination"],
        },
    )
    async def move_file(
        self, source: str, destination: str, overwrite: bool = False
    ) -> dict[str, Any]:
        entry = await self._files(lambda w: w.move(source, destination, overwrite=overwrite))
        return entry.to_json()

    @tool(
        "Delete a file, or a directory (recursive: with what it holds).",
        input_schema={
            "type": "object",
            "properties": {"path": _PATH, "recursive": {"type": "boolean"}},
            "required": ["path"],
        },
    )
    async def delete_file(self, path: str, recursive: bool = False) -> dict[str, Any]:
        return (await self._files(lambda w: w.delete(path, recursive=recursive))).to_json()

    @tool(
        "Make a directory in the workspace.",
        input_schema={
            "type": "object",
            "properties": {"path": _PATH, "parents": {"type": "boolean"}},
            "required": ["path"],
        },
    )
    async def make_directory(self, path: str, parents: bool = False) -> dict[str, Any]:
        return (await self._files(lambda w: w.mkdir(path, parents=parents))).to_json()

    # ---- shell and code blocks ------------------------------------------------------------

    @tool(
        "Run a shell command in the workspace, sandboxed; answer with its output and exit.",
        input_schema={
            "type": "object",
            "properties": {
                "command": {"type": "string", "minLength": 1, "maxLength": MAX_SNIPPET_BYTES},
                "stdin": {"type": "string"},
                "timeout_s": {"type": "number", "exclusiveMinimum": 0},
                **STREAM_PROPERTIES,
            },
            "required": ["command"],
        },
    )
    async def run_shell(
        self,
        command: str,
        stdin: str | None = None,
        timeout_s: float | None = None,
        run_id: str | None = None,
        stream_to: object = None,
        stream_id: str | None = None,
    ) -> None:
        if not self.config.allow_shell:
            raise MessageRejected(
                "shell commands are off: set sandbox.allow_shell to true "
                "(WACTORZ_SANDBOX__ALLOW_SHELL=true) to let the agents run them"
            )
        if "\0" in command:
            raise MessageRejected("the command contains a NUL character")
        assert self.workspace is not None
        work = self.sandbox_job(
            ["/bin/sh", "-c", command],
            stdin=stdin.encode() if stdin is not None else None,
            workdir=Path(self.workspace.root),
            timeout_s=timeout_s,
        )
        self.start_job(
            "shell", work, run_id=run_id, target=stream_target(stream_to), stream_id=stream_id
        )

    @tool(
        "Run the fenced python and sh code blocks of a text, in order; a result per block.",
        input_schema={
            "type": "object",
            "properties": {
                "text": {"type": "string", "minLength": 1},
                "timeout_s": {"type": "number", "exclusiveMinimum": 0},
                **STREAM_PROPERTIES,
            },
            "required": ["text"],
        },
    )
    async def run_code_blocks(
        self,
        text: str,
        timeout_s: float | None = None,
        run_id: str | None = None,
        stream_to: object = None,
        stream_id: str | None = None,
    ) -> None:
        blocks = code_blocks(text)
        if not blocks:
            raise MessageRejected(
                "no code block to run: fence code with ```python or ```sh on a line of its own"
            )
        if len(blocks) > MAX_BLOCKS:
            raise MessageRejected(f"{len(blocks)} code blocks: at most {MAX_BLOCKS} run at once")
        target = stream_target(stream_to)

        async def work(job: Any, stream: Stream | None) -> dict[str, Any]:
            results = []
            for number, (language, code) in enumerate(blocks):
                arguments: dict[str, Any] = {"language": language, "code": code}
                if timeout_s is not None:
                    arguments["timeout_s"] = timeout_s
                relay = None
                if stream is not None:
                    await stream.event("block_start", block=number, language=language)
                    relay = self._relay(f"{job.id}/block-{number}", stream)
                    arguments.update(stream_to=self.id, stream_id=relay.id)
                try:
                    result = await self.ask(
                        self.code_agent,
                        tool_call("run_code", arguments),
                        timeout=self.policy.timeout_s + 30,
                    )
                    if relay is not None:
                        with trio.move_on_after(5):  # its last parts may still be queued here
                            await relay.ended.wait()
                except WactorzError as exc:
                    result = {"error": str(exc)}
                finally:
                    if relay is not None:
                        del self._relays[relay.id]
                results.append({"block": number, "language": language, **result})
                if stream is not None:
                    await stream.event("block_end", block=number, exit_code=result.get("exit_code"))
            return {
                "blocks": results,
                "ok": all(r.get("exit_code") == 0 and r.get("killed_by") is None for r in results),
            }

        self.start_job("code-blocks", work, run_id=run_id, target=target, stream_id=stream_id)


@final
@attrs.define
class _Relay:
    """A code block's run streaming to this agent, whose parts go on to a job's stream."""

    id: str
    sender: str
    stream: Stream
    ended: trio.Event = attrs.field(factory=trio.Event)


def _decoded(content: str, is_base64: bool) -> str | bytes:
    if not is_base64:
        return content
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        raise MessageRejected("content is not valid base64 (base64 was true)") from None

"""`CodeAgent`: runs Python and shell snippets in the sandbox, several at once, streaming output.

Every run is a child process in `wactorz.agents.sandbox`, with every isolation layer
this machine gives (reported at start and in each result), in a fresh directory that is
removed afterwards. A snippet's failure (an exception, a non-zero exit, a limit it ran
into) is a normal result, never a crash of the agent. How runs queue, stream and are
cancelled is `wactorz.agents.runs`.

Call it through its tools, e.g. ``await system.call_tool("code", "run_code", {"language":
"python", "code": "print(1)"})``; it answers with ``stdout``, ``stderr``, ``exit_code``,
``timed_out``, ``killed_by``, ``duration_s``, ``truncated``, ``peak_memory_bytes``,
``layers`` and the rest of `wactorz.agents.sandbox.RunResult.to_json`.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from wactorz.agents.runs import STREAM_PROPERTIES, SandboxedAgent
from wactorz.agents.sandbox import MAX_SNIPPET_BYTES, Snippet
from wactorz.agents.streams import stream_target
from wactorz.core.errors import MessageRejected
from wactorz.core.tools import tool

__all__ = ["CODE_AGENT_NAME", "RUN_CODE_SCHEMA", "CodeAgent"]

CODE_AGENT_NAME: Final = "code"
"""The name the service gives its CodeAgent."""

RUN_CODE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {
        "language": {"enum": ["python", "sh"], "description": "python or sh"},
        "code": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_SNIPPET_BYTES,
            "description": "The program text.",
        },
        "stdin": {"type": "string", "description": "What the program reads on stdin."},
        "files": {
            "type": "object",
            "description": "Files to create in the run's directory first: name to text.",
            "additionalProperties": {"type": "string"},
            "maxProperties": 64,
        },
        "timeout_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "Wall-clock limit in seconds (at most the configured one).",
        },
        **STREAM_PROPERTIES,
    },
    "required": ["language", "code"],
}


class CodeAgent(SandboxedAgent):
    """Runs Python and shell snippets in the sandbox and answers with what they printed."""

    capabilities = ("code", "python", "shell")

    async def _process(self, message: dict[str, Any]) -> object:
        raise MessageRejected(
            "call a tool: {'tool': 'run_code', 'input': {'language': 'python', 'code': ...}}, "
            "or cancel_run, list_runs, sandbox_report"
        )

    @tool(
        "Run a Python or shell snippet in a fresh sandbox; answer with its output and exit.",
        input_schema=RUN_CODE_SCHEMA,
    )
    async def run_code(
        self,
        language: Literal["python", "sh"],
        code: str,
        stdin: str | None = None,
        files: dict[str, str] | None = None,
        timeout_s: float | None = None,
        run_id: str | None = None,
        stream_to: object = None,
        stream_id: str | None = None,
    ) -> None:
        try:
            snippet = Snippet(language, code)
        except ValueError as exc:
            raise MessageRejected(str(exc)) from None
        work = self.sandbox_job(
            snippet,
            stdin=stdin.encode() if stdin is not None else None,
            files={name: text.encode() for name, text in (files or {}).items()},
            timeout_s=timeout_s,
        )
        self.start_job(
            language, work, run_id=run_id, target=stream_target(stream_to), stream_id=stream_id
        )

"""``wactorz sandbox doctor`` and ``wactorz sandbox run``: an operator's checks of a machine.

Both use the ``sandbox`` settings as the service would. ``run`` goes through a real
`CodeAgent` in a real `ActorSystem`, so what it shows is what the agents do: the same
policy, the same layers, the same streaming.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Final

import trio

from wactorz.agents.code_agent import CODE_AGENT_NAME, CodeAgent
from wactorz.agents.sandbox import SandboxError, policy_from_config
from wactorz.agents.sandbox import doctor as sandbox_doctor
from wactorz.config import SandboxConfig
from wactorz.core.actor import Actor
from wactorz.core.errors import ActorStartFailed, WactorzError
from wactorz.core.registry import ActorSystem

__all__ = ["EXIT_KILLED", "EXIT_TIMED_OUT", "doctor", "run_snippet"]

EXIT_TIMED_OUT: Final = 124
"""``sandbox run``'s status when the snippet passed its timeout (as ``timeout(1)`` says)."""
EXIT_KILLED: Final = 137
"""``sandbox run``'s status when something else killed it (128 + SIGKILL)."""
_EXIT_FAILED: Final = 1


async def doctor(config: SandboxConfig, as_json: bool) -> int:
    """Print the layers and the live checks; 1 if a required layer or a check failed."""
    policy = policy_from_config(config)
    try:
        report = await sandbox_doctor(policy)
    except SandboxError as exc:
        print(f"wactorz: the sandbox cannot start a run here: {exc}", file=sys.stderr)
        return _EXIT_FAILED
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.format(), end="")
        for warning in report.warnings():
            print(f"warning: {warning}")
    missing = report.missing(policy.require)
    for layer in missing:
        print(f"error: sandbox.require names {layer.name!r}, which is off: {layer.detail}")
    failed = missing or any(not check.passed for check in report.checks)
    return _EXIT_FAILED if failed else 0


class _Printer(Actor):
    """Writes a run's streamed output to this process's stdout and stderr as it comes."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.ended = trio.Event()

    async def _process(self, message: dict[str, Any]) -> object:
        for part in message.get("parts", ()):
            out = sys.stderr if part.get("kind") == "stderr" else sys.stdout
            out.write(part.get("text", ""))
            out.flush()
        if message.get("end"):
            self.ended.set()
        return None


async def run_snippet(
    config: SandboxConfig, language: str, code: str, timeout_s: float | None, as_json: bool
) -> int:
    """Run one snippet through a CodeAgent; print its output (or its result as JSON).

    Returns the snippet's exit status, `EXIT_TIMED_OUT` or `EXIT_KILLED`.
    """
    arguments: dict[str, Any] = {"language": language, "code": code}
    if timeout_s is not None:
        arguments["timeout_s"] = timeout_s
    async with ActorSystem() as system:
        try:
            await system.spawn(CodeAgent, CODE_AGENT_NAME, config=config)
        except ActorStartFailed as exc:
            print(f"wactorz: the code agent could not start: {exc.__cause__}", file=sys.stderr)
            return _EXIT_FAILED
        printer = None
        if not as_json:
            printer = await system.spawn(_Printer, "printer")
            arguments["stream_to"] = printer.id
        try:
            result = await system.call_tool(
                CODE_AGENT_NAME, "run_code", arguments, timeout=config.timeout_s + 30
            )
        except WactorzError as exc:
            print(f"wactorz: {exc}", file=sys.stderr)
            return _EXIT_FAILED
        if printer is not None:
            await printer.ended.wait()
    if as_json:
        print(json.dumps(result, indent=2))
    elif result["killed_by"] is not None:
        print(f"wactorz: the run was stopped: {result['killed_by']}", file=sys.stderr)
    if result["timed_out"]:
        return EXIT_TIMED_OUT
    if result["exit_code"] is None:
        return EXIT_KILLED
    return int(result["exit_code"])

"""`SandboxedAgent`: what the agents that run code share: jobs in the background, cancellable.

A *job* is work started by one request and answered when it ends (`Actor.reply_later`):
a snippet or a shell command in the sandbox, or a series of them. Jobs run in the agent's
`background`, so its mailbox keeps flowing while they do (a ``cancel_run`` or
``list_runs`` is served at once); sandbox runs take one of ``max_concurrent_runs`` slots,
and those past the limit wait their turn, in arrival order. A job is cancelled by a
``cancel_run`` call, by its asker no longer waiting (a timeout, or cancellation: nobody
would read the result), or by the agent stopping; its asker then gets what was seen so
far with ``killed_by: "cancelled"``. A request that names ``stream_to`` gets the output
as it comes (`wactorz.agents.streams`), then the result as the stream's ending.

The sandbox is probed when the agent starts: its start-up log line lists the layers in
force, a layer that is off is a warning saying what is lost, and a layer named in
``sandbox.require`` that this machine cannot give fails the start.
"""

from __future__ import annotations

import codecs
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, final

import attrs
import trio

from wactorz.agents.sandbox import (
    Policy,
    SandboxError,
    SandboxReport,
    Snippet,
    policy_from_config,
    probe,
)
from wactorz.agents.sandbox import run as run_sandboxed
from wactorz.agents.streams import Stream, StreamTarget, open_stream
from wactorz.config import SandboxConfig
from wactorz.core.actor import Actor, DeferredReply
from wactorz.core.errors import MessageRejected
from wactorz.core.registry import ActorSystem
from wactorz.core.tools import tool

__all__ = ["STREAM_PROPERTIES", "SandboxedAgent"]

logger = logging.getLogger("wactorz.agents.runs")

MAX_QUEUED_JOBS: Final = 256
"""Jobs waiting for a slot, at most; more are refused (the agent is overloaded)."""

STREAM_PROPERTIES: Final[dict[str, Any]] = {
    "run_id": {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "description": "An id to cancel the run by (default: the request's message id).",
    },
    "stream_to": {
        "description": "Where output goes while it runs: an actor's name or id, "
        "{'actor': name} or {'topic': topic}. Omit for no streaming.",
        "type": ["string", "object"],
    },
    "stream_id": {
        "description": "The id the stream's messages carry (default: the run's id).",
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
    },
}
"""Input properties every job-starting tool takes, to merge into its schema."""

Job: TypeAlias = Callable[["_Job", Stream | None], Awaitable[dict[str, Any]]]
"""The work of a job: given it and its stream, return the result (JSON-compatible)."""


@final
@attrs.define
class _Job:
    """A job the agent knows of: queued, or running."""

    id: str
    kind: str
    requester: str | None
    queued_at: float
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    state: Literal["queued", "running"] = "queued"
    cancelled_by: str | None = None
    started_at: float | None = None
    seen: dict[str, str] = attrs.field(factory=lambda: {"stdout": "", "stderr": ""})
    """The head of each stream's text as it passed, for the result of a cancelled run."""
    seen_bytes: dict[str, int] = attrs.field(factory=lambda: {"stdout": 0, "stderr": 0})

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.id,
            "kind": self.kind,
            "state": self.state,
            "requester": self.requester,
            "age_s": round(time.monotonic() - self.queued_at, 3),
        }


class SandboxedAgent(Actor):
    """The base of `CodeAgent` and `IOAgent`: sandbox runs as cancellable background jobs.

    Constructed with the sandbox's settings (``config``); ``policy`` overrides the one
    derived from them (tests, embedding programs).
    """

    def __init__(
        self,
        system: ActorSystem | None = None,
        *,
        name: str | None = None,
        config: SandboxConfig | None = None,
        policy: Policy | None = None,
    ) -> None:
        super().__init__(system, name=name)
        self.config = config if config is not None else SandboxConfig()
        self.policy = policy if policy is not None else policy_from_config(self.config)
        """What every run may do; a request's own ``timeout_s`` may only shorten it."""
        self.report: SandboxReport | None = None
        """The layers runs get on this machine, probed when the agent starts."""
        self._jobs: dict[str, _Job] = {}
        self._slots = trio.CapacityLimiter(self.config.max_concurrent_runs)
        self._nursery: trio.Nursery | None = None

    async def on_start(self) -> None:
        self.report = await trio.to_thread.run_sync(probe, self.policy)
        missing = self.report.missing(self.policy.require)
        if missing:
            raise SandboxError(
                "sandbox.require names layers this machine does not give: "
                + "; ".join(f"{layer.name}: {layer.detail}" for layer in missing)
            )
        logger.info("%s: %s", self.name, self.report.summary())
        for warning in self.report.warnings():
            logger.warning("%s: %s", self.name, warning)

    async def background(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # ---- tools ---------------------------------------------------------------------------

    @tool(
        "Cancel a queued or running run; its asker gets what it printed so far.",
        input_schema={
            "type": "object",
            "properties": {"run_id": {"type": "string", "minLength": 1}},
            "required": ["run_id"],
        },
    )
    async def cancel_run(self, run_id: str) -> dict[str, Any]:
        job = self._jobs.get(run_id)
        if job is None:
            return {"run_id": run_id, "cancelled": False, "reason": "no such run in progress"}
        job.cancelled_by = self.current_envelope.sender or "a request"
        job.scope.cancel()
        return {"run_id": run_id, "cancelled": True}

    @tool("List the runs in progress, queued or running.")
    async def list_runs(self) -> list[dict[str, Any]]:
        return [job.to_json() for job in self._jobs.values()]

    @tool("Say which isolation layers runs get on this machine, and why others are off.")
    async def sandbox_report(self) -> dict[str, Any]:
        assert self.report is not None
        return self.report.to_json()

    # ---- jobs ----------------------------------------------------------------------------

    def start_job(
        self,
        kind: str,
        work: Job,
        *,
        run_id: str | None,
        target: StreamTarget | None,
        stream_id: str | None,
    ) -> None:
        """Start ``work`` for the message being handled, answered when it ends.

        Call it from a tool method (it uses `reply_later`). Raises `MessageRejected` when
        the agent is overloaded or ``run_id`` is taken.
        """
        if self._nursery is None:
            raise MessageRejected(f"{self.name} is not running: try again once it has started")
        if len(self._jobs) >= MAX_QUEUED_JOBS + self.config.max_concurrent_runs:
            raise MessageRejected(
                f"{self.name} is busy ({len(self._jobs)} runs in progress): try again later"
            )
        envelope = self.current_envelope
        job_id = run_id if run_id is not None else envelope.id
        if job_id in self._jobs:
            raise MessageRejected(f"a run with id {job_id!r} is in progress: pick another id")
        job = _Job(job_id, kind, envelope.sender, time.monotonic())
        self._jobs[job_id] = job
        later = self.reply_later()
        stream_id = stream_id if stream_id is not None else job_id
        self._nursery.start_soon(
            self._serve_job, later, job, work, target, stream_id, name=f"{self.name}.{job_id}"
        )

    def sandbox_job(
        self,
        command: Snippet | list[str],
        *,
        stdin: bytes | None = None,
        files: dict[str, bytes] | None = None,
        workdir: Path | None = None,
        timeout_s: float | None = None,
    ) -> Job:
        """The work of one sandbox run of ``command``, for `start_job`."""
        policy = self.policy
        if timeout_s is not None and timeout_s < policy.timeout_s:
            policy = attrs.evolve(policy, timeout_s=timeout_s)

        async def work(job: _Job, stream: Stream | None) -> dict[str, Any]:
            decoders = {
                name: codecs.getincrementaldecoder("utf-8")(errors="replace")
                for name in ("stdout", "stderr")
            }
            keep = policy.max_output_bytes

            async def forward(name: Literal["stdout", "stderr"], chunk: bytes) -> None:
                text = decoders[name].decode(chunk)
                job.seen_bytes[name] += len(chunk)
                if len(job.seen[name]) < keep:
                    job.seen[name] += text[: keep - len(job.seen[name])]
                if stream is not None:
                    await stream.write(name, text)

            async with self._slots:
                job.state = "running"
                job.started_at = time.monotonic()
                result = await run_sandboxed(
                    command,
                    policy=policy,
                    stdin=stdin,
                    files=files,
                    workdir=workdir,
                    on_output=forward,
                )
            return result.to_json()

        return work

    async def _serve_job(
        self,
        later: DeferredReply,
        job: _Job,
        work: Job,
        target: StreamTarget | None,
        stream_id: str,
    ) -> None:
        try:
            async with open_stream(self, target, stream_id) as stream:
                try:
                    result = await self._attempt(later, job, work, stream)
                except (SandboxError, OSError, ValueError) as exc:
                    problem = MessageRejected(f"the sandbox could not run it: {exc}")
                    if stream is not None:
                        stream.result = {"run_id": job.id, "error": problem.reason}
                    later.fail(problem)
                    return
                if stream is not None:
                    stream.result = result
            later.answer(result)
        finally:
            self._jobs.pop(job.id, None)

    async def _attempt(
        self, later: DeferredReply, job: _Job, work: Job, stream: Stream | None
    ) -> dict[str, Any]:
        """Do the work; its result, or what was seen of it if the job was cancelled."""
        with job.scope:
            async with trio.open_nursery() as watching:
                watching.start_soon(self._cancel_when_asker_gone, later, job)
                result = await work(job, stream)
                watching.cancel_scope.cancel()
            return {"run_id": job.id, **result}
        return self._cancelled(job)

    async def _cancel_when_asker_gone(self, later: DeferredReply, job: _Job) -> None:
        await later.wait_asker_gone()
        job.cancelled_by = "the asker stopped waiting"
        job.scope.cancel()

    def _cancelled(self, job: _Job) -> dict[str, Any]:
        """The result of a job cancelled before it ended: what it printed, who cancelled it."""
        ran = job.started_at is not None
        return {
            "run_id": job.id,
            "stdout": job.seen["stdout"],
            "stderr": job.seen["stderr"],
            "exit_code": None,
            "signal": "SIGKILL" if ran else None,
            "timed_out": False,
            "killed_by": "cancelled",
            "cancelled_by": job.cancelled_by,
            "duration_s": round(time.monotonic() - job.started_at, 6) if job.started_at else 0.0,
            "truncated": {
                name: job.seen_bytes[name] > len(job.seen[name].encode())
                for name in ("stdout", "stderr")
            },
            "stdout_bytes": job.seen_bytes["stdout"],
            "stderr_bytes": job.seen_bytes["stderr"],
            "peak_memory_bytes": None,
            "cpu_s": None,
            "layers": list(self.report.active) if self.report is not None else [],
        }

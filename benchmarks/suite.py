"""The workloads of the suite, in the order they run, with their sizes and the issue's targets."""

from __future__ import annotations

from typing import Final

from benchmarks import (
    agents,
    fairness,
    lifecycle,
    llm,
    messaging,
    nodes,
    pubsub,
    sandbox,
    supervision,
    web,
)
from benchmarks.harness import Metric, Target, Workload

__all__ = ["WORKLOADS"]

_AWAIT, _BATCHED, _HYPERCORN = "raw-await", "raw-batched", "raw-hypercorn"


def _throughput(key: str, label: str, unit: str, *targets: Target) -> Metric:
    return Metric(key, label, unit, higher_is_better=True, targets=targets)


def _cost(key: str, label: str, unit: str, *targets: Target) -> Metric:
    return Metric(key, label, unit, higher_is_better=False, targets=targets)


_SPAWN_METRICS: Final = (
    _cost("spawn_us", "spawn per actor", "µs", Target(1.0, _AWAIT)),
    _cost("bytes_per_actor", "RSS per idle actor", "B", Target(1.3, _AWAIT)),
    _cost("stop_us", "stop per actor", "µs", Target(1.5, _AWAIT)),
)
_SPAWN_VARIANTS: Final = {
    "wactorz": lifecycle.spawn_wactorz,
    _AWAIT: lifecycle.spawn_raw_await,
    _BATCHED: lifecycle.spawn_raw_batched,
}


def _restart_storm(strategy: str, *targets: Target) -> Workload:
    return Workload(
        key=f"restart-{strategy.replace('_', '-')}",
        title=f"restart storm, {strategy}",
        description=(
            f"a {strategy} supervisor's child crashes on every message, between two idle "
            "siblings; raw-await is the bare loop restarting a task in a nursery"
        ),
        size=5_000,
        quick_size=1_000,
        metrics=(_throughput("restarts_per_s", "restarts", "/s", *targets),),
        variants={
            "wactorz": supervision.restart_wactorz_for(strategy),
            _AWAIT: supervision.restart_raw_await,
        },
    )


WORKLOADS: Final[tuple[Workload, ...]] = (
    Workload(
        key="tell",
        title="tell throughput",
        description="one sender, one receiving actor, small dict messages",
        size=200_000,
        quick_size=100_000,
        metrics=(
            _throughput(
                "msgs_per_s", "throughput", "msgs/s", Target(3.0, _AWAIT), Target(0.4, _BATCHED)
            ),
        ),
        variants={
            "wactorz": messaging.tell_wactorz,
            "wactorz send_nowait": messaging.tell_wactorz_nowait,
            "wactorz unchecked": messaging.tell_wactorz_unchecked,
            _AWAIT: messaging.tell_raw_await,
            _BATCHED: messaging.tell_raw_batched,
        },
    ),
    Workload(
        key="ask",
        title="ask round-trip",
        description="sequential asks to an echo actor, each one timed",
        size=20_000,
        quick_size=10_000,
        metrics=(
            _cost("median_us", "median latency", "µs", Target(1.3, _AWAIT)),
            _cost("p99_us", "p99 latency", "µs", Target(1.6, _AWAIT)),
        ),
        variants={
            "wactorz": messaging.ask_wactorz,
            "wactorz no timeout": messaging.ask_wactorz_no_timeout,
            "wactorz in caller's scope": messaging.ask_wactorz_in_scope,
            _AWAIT: messaging.ask_raw_await,
            _BATCHED: messaging.ask_raw_batched,
        },
    ),
    Workload(
        key="spawn-10k",
        title="spawn 10k idle actors",
        description="spawn one by one, weigh (RSS after gc), stop all; a fresh process per round",
        size=10_000,
        quick_size=10_000,
        metrics=_SPAWN_METRICS,
        variants=_SPAWN_VARIANTS,
        isolated=True,
        quick_rounds=2,
    ),
    Workload(
        key="spawn-100k",
        title="spawn 100k idle actors",
        description="as above, at 100,000 actors (full runs only)",
        size=100_000,
        quick_size=None,
        metrics=_SPAWN_METRICS,
        variants=_SPAWN_VARIANTS,
        isolated=True,
    ),
    Workload(
        key="fan",
        title="fan-out/fan-in",
        description=(
            f"one coordinator, {messaging.FAN_WORKERS:,} workers, a reply to every job "
            "(jobs and replies both count)"
        ),
        size=100_000,
        quick_size=20_000,
        metrics=(
            _throughput(
                "msgs_per_s", "throughput", "msgs/s", Target(3.0, _AWAIT), Target(0.3, _BATCHED)
            ),
        ),
        variants={
            "wactorz": messaging.fan_wactorz,
            "wactorz unchecked": messaging.fan_wactorz_unchecked,
            _AWAIT: messaging.fan_raw_await,
            _BATCHED: messaging.fan_raw_batched,
        },
    ),
    Workload(
        key="pubsub",
        title="pub/sub",
        description=(
            f"one publisher, {pubsub.SUBSCRIBERS} subscribers on {pubsub.FILTER!r}; "
            "size counts published messages"
        ),
        size=2_000,
        quick_size=500,
        metrics=(_throughput("deliveries_per_s", "deliveries", "/s", Target(0.3, _BATCHED)),),
        variants={
            "wactorz": pubsub.pubsub_wactorz,
            _AWAIT: pubsub.pubsub_raw_await,
            _BATCHED: pubsub.pubsub_raw_batched,
        },
    ),
    _restart_storm("one_for_one", Target(0.5, _AWAIT)),
    _restart_storm("rest_for_one"),
    _restart_storm("one_for_all"),
    Workload(
        key="no-loss",
        title="no loss under crashes",
        description=(
            f"a one_for_one-supervised actor crashes on a random {supervision.NO_LOSS_POISON:.0%}"
            " of the messages; every other one must be handled exactly once"
        ),
        size=100_000,
        quick_size=20_000,
        metrics=(
            _throughput("msgs_per_s", "throughput", "msgs/s"),
            _cost("lost", "lost messages", "", Target(0)),
            _cost("duplicated", "duplicate deliveries", "", Target(0)),
            _cost("crashes", "crashes", ""),
        ),
        variants={
            "wactorz": supervision.no_loss_wactorz,
            _AWAIT: supervision.no_loss_raw_await,
            _BATCHED: supervision.no_loss_raw_batched,
        },
    ),
    Workload(
        key="fairness",
        title="fairness under a flood",
        description=(
            "asks to an echo actor and tells to a third one, idle and then while another actor "
            "is flooded with tells; slowdown is flooded / idle median ask latency"
        ),
        size=2_000,
        quick_size=1_000,
        metrics=(
            _cost("slowdown", "ask slowdown under flood", "\N{MULTIPLICATION SIGN}", Target(2.0)),
            _cost("idle_us", "idle ask median", "µs"),
            _cost("flooded_us", "flooded ask median", "µs"),
            _cost("flooded_p99_us", "flooded ask p99", "µs"),
            _cost("idle_tell_us", "idle tell arrival median", "µs"),
            _cost("flooded_tell_us", "flooded tell arrival median", "µs"),
            _cost("flooded_tell_p99_us", "flooded tell arrival p99", "µs"),
            _throughput("flood_msgs_per_s", "flood throughput", "msgs/s"),
        ),
        variants={
            "wactorz": fairness.fairness_wactorz,
            _AWAIT: fairness.fairness_raw_await,
            _BATCHED: fairness.fairness_raw_batched,
        },
    ),
    Workload(
        key="web-ask",
        title="WebSocket ask round-trip",
        description=(
            "sequential asks to an echo actor through the web interface (frame checked, "
            "asked, answered as a reply); raw-hypercorn is a bare hypercorn + Starlette echo "
            "endpoint, raw-await a bare trio-websocket echo server, the same client for all"
        ),
        size=5_000,
        quick_size=1_000,
        metrics=(
            _throughput("round_trips_per_s", "throughput", "/s", Target(0.7, _HYPERCORN)),
            _cost("median_us", "median latency", "µs"),
            _cost("p99_us", "p99 latency", "µs"),
        ),
        variants={"wactorz": web.ask_web, _HYPERCORN: web.ask_hypercorn, _AWAIT: web.ask_raw},
    ),
    Workload(
        key="web-fan-out",
        title=f"event fan-out to {web.FAN_CLIENTS} clients",
        description=(
            f"one lifecycle event (an actor started) reaching {web.FAN_CLIENTS} clients "
            "subscribed to the events feed; the baselines send one frame to as many clients "
            "of a bare hypercorn + Starlette server and of a bare trio-websocket server"
        ),
        size=20,
        quick_size=5,
        metrics=(
            _cost("median_ms", "event to all clients", "ms"),
            _throughput("deliveries_per_s", "deliveries", "/s"),
        ),
        variants={
            "wactorz": web.fan_out_web,
            _HYPERCORN: web.fan_out_hypercorn,
            _AWAIT: web.fan_out_raw,
        },
    ),
    Workload(
        key="web-memory",
        title="memory per idle WebSocket",
        description=(
            "size idle connections held by a client process of their own; RSS growth of the "
            "server's process ÷ connections, a fresh process per round; the baselines hold "
            "as many to a bare hypercorn + Starlette endpoint and a bare trio-websocket server"
        ),
        size=500,
        quick_size=500,
        metrics=(_cost("bytes_per_connection", "RSS per idle connection", "B"),),
        variants={
            "wactorz": web.memory_web,
            _HYPERCORN: web.memory_hypercorn,
            _AWAIT: web.memory_raw,
        },
        isolated=True,
        quick_rounds=2,
    ),
    Workload(
        key="nodes-tell",
        title="cross-node tell throughput",
        description=(
            "an actor on node a tells a counting actor on node b, through mosquitto (QoS 1); "
            "raw-await is bare aiomqtt under trio-asyncio publishing the same payloads"
        ),
        size=10_000,
        quick_size=3_000,
        metrics=(_throughput("msgs_per_s", "throughput", "msgs/s", Target(0.7, _AWAIT)),),
        variants={"wactorz": nodes.tell_nodes, _AWAIT: nodes.tell_bare},
    ),
    Workload(
        key="nodes-ask",
        title="cross-node ask round-trip",
        description=(
            "sequential asks from node a to an actor on node b, through mosquitto (QoS 1); "
            "raw-await is a bare aiomqtt request and response"
        ),
        size=1_000,
        quick_size=300,
        metrics=(
            _cost("median_us", "median latency", "µs", Target(1.5, _AWAIT)),
            _cost("p99_us", "p99 latency", "µs"),
        ),
        variants={"wactorz": nodes.ask_nodes, _AWAIT: nodes.ask_bare},
    ),
    Workload(
        key="code-agent-startup",
        title="a snippet through the CodeAgent",
        description=(
            "print(1) asked of a CodeAgent, every sandbox layer on, one run after another; "
            "raw-await is trio.run_process of the same command"
        ),
        size=100,
        quick_size=30,
        metrics=(_throughput("runs_per_s", "runs", "/s", Target(1 / 1.5, _AWAIT)),),
        variants={"wactorz": agents.startup_agent, _AWAIT: agents.startup_raw},
    ),
    Workload(
        key="io-agent-stream",
        title="output streamed through the IOAgent",
        description=(
            "a shell command printing size MB, streamed by an IOAgent to a consuming actor; "
            "raw-await reads the same command's pipe directly"
        ),
        size=100,
        quick_size=20,
        metrics=(_throughput("mb_per_s", "throughput", "MB/s", Target(0.5, _AWAIT)),),
        variants={"wactorz": agents.stream_agent, _AWAIT: agents.stream_raw},
    ),
    Workload(
        key="llm-stream",
        title="LLM streaming",
        description=(
            "text deltas of one long reply from the fake Messages API through an LLMAgent to a "
            "consuming actor, and the median time to the first delta of 20 short replies; "
            "raw-await is the bare SDK reading the same raw event stream"
        ),
        size=50_000,
        quick_size=20_000,
        metrics=(
            _throughput("deltas_per_s", "text deltas", "/s", Target(0.8, _AWAIT)),
            _cost("first_delta_ms", "time to first delta", "ms"),
        ),
        variants={"wactorz": llm.stream_wactorz, _AWAIT: llm.stream_raw_await},
    ),
    Workload(
        key="llm-sessions",
        title="LLM sessions",
        description=(
            f"{llm.SESSIONS} concurrent sessions of one LLMAgent, size counts turns in all "
            "(history stored in SQLite); raw-await is the bare SDK, a history list per session; "
            "a fresh process per round"
        ),
        size=2_000,
        quick_size=500,
        metrics=(
            _throughput("turns_per_s", "turns", "/s"),
            _cost("bytes_per_session", "RSS per session", "B"),
        ),
        variants={"wactorz": llm.sessions_wactorz, _AWAIT: llm.sessions_raw_await},
        isolated=True,
        quick_rounds=2,
    ),
    Workload(
        key="sandbox-startup",
        title="sandbox start-up",
        description=(
            "print(1) in a Python snippet through wactorz.agents.sandbox.run, one run after "
            "another; raw-await is trio.run_process of the same command; 'no-<layer>' rows "
            "disable one layer (the difference is its cost)"
        ),
        size=40,
        quick_size=15,
        metrics=(
            _cost("median_ms", "run, median", "ms", Target(1.5, _AWAIT)),
            _cost(
                "paired", "run ÷ the bare run just before", "\N{MULTIPLICATION SIGN}", Target(1.5)
            ),
            _cost("p90_ms", "run, p90", "ms"),
        ),
        variants=sandbox.STARTUP_VARIANTS,
    ),
    Workload(
        key="sandbox-concurrent",
        title=f"{sandbox.CONCURRENCY} sandboxed runs at once",
        description=(
            f"{sandbox.CONCURRENCY} print(1) snippets started together, every layer on; "
            f"raw-await is {sandbox.CONCURRENCY} trio.run_process of the same command; "
            "size counts runs per batch, 3 batches per round"
        ),
        size=sandbox.CONCURRENCY,
        quick_size=sandbox.CONCURRENCY,
        metrics=(_cost("batch_ms", "batch", "ms", Target(1.5, _AWAIT)),),
        variants=sandbox.concurrent_variants(),
    ),
)

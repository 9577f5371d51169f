"""``/metrics``: the actor system in the Prometheus text format, and the LLM usage it counts.

`MetricsRegistry.render` builds the exposition on each scrape, from a registry of the web
interface's own (never the process-wide default one), reading the actors' statistics
directly: nothing is computed between scrapes. The families:

- ``wactorz_info{node,version}``: always 1;
- ``wactorz_actors{state}``, ``wactorz_supervisors``: what runs;
- ``wactorz_actor_restarts_total{actor}``, ``wactorz_actor_crashes_total{actor}``,
  ``wactorz_actor_messages_processed_total{actor}``: per actor, by name, over all its
  incarnations;
- ``wactorz_actor_mailbox_depth{actor}``, ``wactorz_actor_mailbox_capacity{actor}``;
- ``wactorz_web_connections``: open WebSocket connections;
- ``wactorz_llm_tokens_total{agent,kind}``, ``wactorz_llm_cost_usd_total{agent}``: what the
  language-model agents used, from the ``llm`` field of their heartbeats or metrics
  (`LLMUsage` says which shapes it reads).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final, final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import wactorz
from wactorz.core.actor import ActorState
from wactorz.core.registry import ActorSystem

__all__ = ["CONTENT_TYPE", "LLMUsage", "MetricsRegistry"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format's content type."""


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


@final
class LLMUsage:
    """Tokens and cost per agent, as monotonic totals, from what the agents report.

    An agent reports cumulative counts in an ``llm`` object of its heartbeat or metrics,
    read defensively (anything else in it is ignored, a malformed one changes nothing):

    - ``"<kind>_tokens": n`` (``input_tokens``, ``output_tokens``,
      ``cache_read_input_tokens``...) or ``"tokens": {"<kind>": n}``: tokens by kind;
    - ``"cost_usd": x``: what they cost.

    A count smaller than the previous one means the agent started counting again (it was
    restarted): the new count is added whole. So the totals only ever grow, as Prometheus
    counters must.
    """

    def __init__(self) -> None:
        self.tokens: Counter[tuple[str, str]] = Counter()
        """(agent, kind) → tokens."""
        self.cost_usd: dict[str, float] = {}
        """agent → US dollars."""
        self._last: dict[tuple[str, str], float] = {}

    def observe(self, agent: str, llm: object) -> None:
        """Take one report (the ``llm`` value of a heartbeat or metrics message) of ``agent``."""
        if not isinstance(llm, Mapping):
            return
        for kind, count in self._token_counts(llm):
            added = self._advance((agent, f"tokens:{kind}"), count)
            if added:
                self.tokens[(agent, kind)] += int(added)
        cost = _number(llm.get("cost_usd"))
        if cost is not None:
            added = self._advance((agent, "cost"), cost)
            self.cost_usd[agent] = self.cost_usd.get(agent, 0.0) + added

    @staticmethod
    def _token_counts(llm: Mapping[str, Any]) -> Iterator[tuple[str, float]]:
        nested = llm.get("tokens")
        if isinstance(nested, Mapping):
            for kind, count in nested.items():
                number = _number(count)
                if isinstance(kind, str) and kind and number is not None:
                    yield kind, number
        for key, count in llm.items():
            number = _number(count)
            if isinstance(key, str) and key.endswith("_tokens") and number is not None:
                yield key[: -len("_tokens")], number

    def _advance(self, key: tuple[str, str], value: float) -> float:
        last = self._last.get(key)
        self._last[key] = value
        if last is None or value < last:
            return value
        return value - last

    def totals(self) -> dict[str, Any]:
        """All agents together: ``{"tokens": {kind: n}, "cost_usd": x}``."""
        tokens: Counter[str] = Counter()
        for (_, kind), count in self.tokens.items():
            tokens[kind] += count
        return {"tokens": dict(tokens), "cost_usd": sum(self.cost_usd.values())}


@final
class _SystemCollector(Collector):
    def __init__(
        self, system: ActorSystem, usage: LLMUsage, connections: Callable[[], int]
    ) -> None:
        self._system = system
        self._usage = usage
        self._connections = connections

    def collect(self) -> Iterable[Metric]:
        system = self._system
        info = GaugeMetricFamily(
            "wactorz_info", "The node and the wactorz version it runs.", labels=["node", "version"]
        )
        info.add_metric([system.node, wactorz.__version__], 1)
        yield info

        stats = [actor.statistics() for actor in system.actors()]
        states = Counter(stat.state for stat in stats)
        actors = GaugeMetricFamily(
            "wactorz_actors", "Registered actors, by state.", labels=["state"]
        )
        for state in ActorState:
            actors.add_metric([state.value], states.get(state, 0))
        yield actors
        yield GaugeMetricFamily(
            "wactorz_supervisors", "Running supervisors.", value=len(system.supervisors())
        )

        restarts = CounterMetricFamily(
            "wactorz_actor_restarts", "Restarts of each actor.", labels=["actor"]
        )
        crashes = CounterMetricFamily(
            "wactorz_actor_crashes", "Crashes of each actor.", labels=["actor"]
        )
        processed = CounterMetricFamily(
            "wactorz_actor_messages_processed", "Messages each actor handled.", labels=["actor"]
        )
        depth = GaugeMetricFamily(
            "wactorz_actor_mailbox_depth", "Messages waiting in each mailbox.", labels=["actor"]
        )
        capacity = GaugeMetricFamily(
            "wactorz_actor_mailbox_capacity",
            "How many messages each mailbox holds.",
            labels=["actor"],
        )
        for stat in stats:
            restarts.add_metric([stat.name], stat.incarnation)
            crashes.add_metric([stat.name], stat.crashes)
            processed.add_metric([stat.name], stat.processed)
            depth.add_metric([stat.name], stat.queued)
            capacity.add_metric([stat.name], stat.capacity)
        yield from (restarts, crashes, processed, depth, capacity)

        yield GaugeMetricFamily(
            "wactorz_web_connections", "Open WebSocket connections.", value=self._connections()
        )

        tokens = CounterMetricFamily(
            "wactorz_llm_tokens",
            "Language-model tokens used, by agent and kind.",
            labels=["agent", "kind"],
        )
        for (agent, kind), count in sorted(self._usage.tokens.items()):
            tokens.add_metric([agent, kind], count)
        yield tokens
        cost = CounterMetricFamily(
            "wactorz_llm_cost_usd",
            "What the language-model agents cost, in US dollars.",
            labels=["agent"],
        )
        for agent, usd in sorted(self._usage.cost_usd.items()):
            cost.add_metric([agent], usd)
        yield cost


@final
class MetricsRegistry:
    """The web interface's own Prometheus registry: renders the families above on demand."""

    def __init__(
        self, system: ActorSystem, usage: LLMUsage, connections: Callable[[], int]
    ) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(_SystemCollector(system, usage, connections))

    def render(self) -> bytes:
        """The exposition, in the Prometheus text format (`CONTENT_TYPE`)."""
        return generate_latest(self._registry)

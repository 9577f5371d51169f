"""The settings schema: every setting wactorz has, its default and what it accepts.

The annotations stay real types (no ``from __future__ import annotations``): cattrs reads
them to structure the loaded values.

This is the one file to edit to add a setting: a typed, defaulted attrs field on the
section it belongs to, with a `Check` from `wactorz.config._checks` saying what it accepts
(and a line in ``wactorz.yaml``, which documents every key). Loading, explaining and the
process-wide copy need no change: they read the schema.
"""

from collections.abc import Iterable, Mapping  # noqa: F401  (Iterable: for pdoc, in `as_strings`'s type)
from pathlib import Path
from typing import Any, Literal, final

import attrs

from wactorz.config._checks import (
    ACTOR_NAMES,
    BOOL,
    DIRECTORY,
    HOST,
    KIND_NAMES,
    KIND_TABLE,
    MIRROR_TOPICS,
    NAME_PATTERNS,
    NODE_NAME,
    OPTIONAL_CA_FILE,
    OPTIONAL_EXECUTABLE,
    OPTIONAL_FILE,
    OPTIONAL_MQTT_TEXT,
    OPTIONAL_SECRET,
    OPTIONAL_TOPIC_PREFIX,
    OPTIONAL_URL,
    PERCENT,
    POSITIVE_INT,
    PRICE_TABLE,
    RATIO,
    SANDBOX_LAYERS,
    SECONDS,
    SECONDS_OR_ZERO,
    TEXT,
    TOPIC_PREFIX,
    USD_PER_MTOK,
    as_optional_path,
    as_path,
    as_secret,
    as_strings,
    int_between,
    one_of,
)
from wactorz.config._errors import InvalidField
from wactorz.config._secret import Secret
from wactorz.core.ids import default_node

__all__ = [
    "DEFAULT_PRICES",
    "BrokerMode",
    "LLMConfig",
    "LogFormat",
    "LogLevel",
    "MQTTConfig",
    "MQTTProtocol",
    "ModelPrice",
    "MonitorConfig",
    "QoS",
    "SandboxConfig",
    "Settings",
    "WebConfig",
]


LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]
QoS = Literal[0, 1, 2]
MQTTProtocol = Literal["auto", "5", "3.1.1"]
BrokerMode = Literal["external", "embedded"]


@final
@attrs.frozen
class ModelPrice:
    """What a model costs, in US dollars per million tokens: one row of `LLMConfig.prices`.

    ``cache_write`` is input written to the prompt cache (5-minute cache), ``cache_read``
    input read from it; unless given they are 1.25 and 0.1 times ``input``, as Anthropic
    prices them.
    """

    input: float = attrs.field(validator=USD_PER_MTOK)
    output: float = attrs.field(validator=USD_PER_MTOK)
    cache_write: float = attrs.field(
        default=attrs.Factory(lambda self: self.input * 1.25, takes_self=True),
        validator=USD_PER_MTOK,
    )
    cache_read: float = attrs.field(
        default=attrs.Factory(lambda self: self.input * 0.1, takes_self=True),
        validator=USD_PER_MTOK,
    )

    def cost(
        self, input_tokens: int, output_tokens: int, cache_read_tokens: int, cache_write_tokens: int
    ) -> float:
        """The dollars these tokens cost (``input_tokens`` excludes the cache's, as counted)."""
        return (
            input_tokens * self.input
            + output_tokens * self.output
            + cache_read_tokens * self.cache_read
            + cache_write_tokens * self.cache_write
        ) / 1_000_000


DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "claude-opus-4-5": ModelPrice(5.0, 25.0, 6.25, 0.50),
    "claude-sonnet-4-5": ModelPrice(3.0, 15.0, 3.75, 0.30),
    "claude-haiku-4-5": ModelPrice(1.0, 5.0, 1.25, 0.10),
}
"""The prices `LLMConfig.prices` starts from (Anthropic's list prices, late 2025)."""


def as_prices(value: Mapping[str, ModelPrice] | None) -> dict[str, ModelPrice]:
    """The price table: `DEFAULT_PRICES`, with what ``value`` gives added or replaced."""
    return {**DEFAULT_PRICES, **(value or {})}


DEFAULT_SYSTEM_PROMPT = (
    "You are the assistant of a wactorz actor system. Answer concisely. When a tool can "
    "answer or act better than you can from memory, use it, and say what it did."
)


@final
@attrs.frozen
class LLMConfig:
    """How to reach the language model, and how the LLM agent converses with it.

    ``enabled`` runs the LLM agent in the service (it starts without a key, and says how to
    set one). ``model`` is the model id; ``api_key`` the key (usually from
    ``ANTHROPIC_API_KEY``; without one the agent answers every turn with how to set it, and
    everything else runs); ``base_url`` a different endpoint (a proxy or gateway), None for
    the provider's own; ``temperature`` from 0 to 1; ``max_tokens`` the reply budget;
    ``timeout`` seconds per request; ``max_retries`` how often the SDK retries a request
    that failed with 408, 409, 429 (honouring ``retry-after``), 5xx or 529, with backoff.

    ``system_prompt`` is the agent's system prompt. ``context_budget_tokens``: when a
    session's history would pass it, only the newest whole turns that fit are sent (the
    oldest are dropped from the request, never summarized; the store keeps them all).
    ``max_tool_iterations`` caps the model's rounds of tool calls in one turn;
    ``tool_timeout_s`` bounds each tool call; a tool's result is cut to
    ``max_tool_result_bytes`` for the model. ``tools`` names the actors whose tools the
    model is offered (the IOAgent ``io`` and CodeAgent ``code`` by default; empty for
    none). ``prices`` maps model ids to `ModelPrice` (a dated id such as
    ``claude-sonnet-4-5-20250929`` takes the price of its longest listed prefix; an
    unknown model costs 0, with a warning). ``history_path`` is the SQLite file of the
    conversations (None: ``history.sqlite3`` under the top-level ``data_dir``).
    """

    enabled: bool = attrs.field(default=True, validator=BOOL)
    model: str = attrs.field(default="claude-sonnet-4-5", validator=TEXT)
    api_key: Secret | None = attrs.field(
        default=None, converter=as_secret, validator=OPTIONAL_SECRET
    )
    base_url: str | None = attrs.field(default=None, validator=OPTIONAL_URL)
    temperature: float = attrs.field(default=0.7, validator=RATIO)
    max_tokens: int = attrs.field(default=4096, validator=POSITIVE_INT)
    timeout: float = attrs.field(default=60.0, validator=SECONDS)
    max_retries: int = attrs.field(
        default=2, validator=int_between(0, 10, "an integer from 0 to 10")
    )
    system_prompt: str = attrs.field(default=DEFAULT_SYSTEM_PROMPT, validator=TEXT)
    context_budget_tokens: int = attrs.field(default=150_000, validator=POSITIVE_INT)
    max_tool_iterations: int = attrs.field(default=10, validator=POSITIVE_INT)
    tool_timeout_s: float = attrs.field(default=60.0, validator=SECONDS)
    max_tool_result_bytes: int = attrs.field(default=100_000, validator=POSITIVE_INT)
    tools: tuple[str, ...] = attrs.field(
        default=("io", "code", "main"), converter=as_strings, validator=ACTOR_NAMES
    )
    prices: Mapping[str, ModelPrice] = attrs.field(
        factory=lambda: dict(DEFAULT_PRICES),
        converter=as_prices,
        validator=PRICE_TABLE,
        hash=False,
    )
    history_path: Path | None = attrs.field(
        default=None, converter=as_optional_path, validator=OPTIONAL_FILE
    )

    def history_file(self, data_dir: Path) -> Path:
        """Where the conversations are stored: ``history_path``, or under ``data_dir``."""
        return self.history_path if self.history_path is not None else data_dir / "history.sqlite3"


@final
@attrs.frozen
class MQTTConfig:
    """The MQTT bridge: off by default, because a fresh machine has no broker.

    ``topic_prefix`` starts every topic wactorz publishes; ``client_id`` None means one derived
    from the node name. ``qos`` applies to what wactorz publishes. While the broker is down the
    bridge retries after ``reconnect_min_s``, doubling up to ``reconnect_max_s``, and keeps at
    most ``buffer_size`` alerts and replies to send once it is back.

    ``mirror_topics`` are local topic filters shared both ways with the broker (under the
    prefix); an inbound request waits ``ask_timeout_s`` for the actor's answer, and payloads
    from the broker over ``max_payload_bytes`` are refused. Answers to requests go only to
    topics under ``reply_prefix`` (None: ``<topic_prefix>/replies``), never into the node's
    own topics. ``protocol`` is "5", "3.1.1", or "auto" (MQTT 5, falling back to 3.1.1 for a
    broker that does not answer it).

    ``tls`` connects over TLS, checking that the broker's certificate names ``host`` and was
    signed by a CA the system trusts. ``tls_ca_file`` names a PEM file of CA certificates to
    trust instead, for a broker whose certificate a private (or self-signed) CA signed; setting
    it implies ``tls`` (see `uses_tls`). The file must exist and be readable when the settings
    load. ``username`` and ``password`` log in; the password is never shown or logged.

    ``broker`` "embedded" makes the service start a broker itself (amqtt, in a process of its
    own) on ``host:port`` unless one already listens there, and run the bridge: two nodes on
    one machine then need nothing installed. "external" (the default) connects to a broker
    someone else runs (mosquitto, or a cluster).

    Nodes: every node sharing the broker and ``topic_prefix`` is one actor system. A node
    beats every ``heartbeat_s``; one silent for ``node_down_after_s`` counts as down. An ask
    to another node is sent again every ``ask_retry_s`` until it is answered (the other node
    handles it once). ``remote_allow`` names the local actors that other nodes and MQTT
    clients may send to (names or shell-style patterns; empty: none). ``kinds`` maps kind
    names to actor classes (``"package.module:Class"``) this node can start by name, and
    ``spawn_allow`` the kinds other nodes may ask it to start (``*``: every kind); nothing
    else can be started from the outside, and no code ever travels.
    """

    enabled: bool = attrs.field(default=False, validator=BOOL)
    host: str = attrs.field(default="127.0.0.1", validator=HOST)
    port: int = attrs.field(
        default=1883, validator=int_between(1, 65535, "an integer from 1 to 65535")
    )
    topic_prefix: str = attrs.field(default="wactorz", validator=TOPIC_PREFIX)
    client_id: str | None = attrs.field(default=None, validator=OPTIONAL_MQTT_TEXT)
    username: str | None = attrs.field(default=None, validator=OPTIONAL_MQTT_TEXT)
    password: Secret | None = attrs.field(
        default=None, converter=as_secret, validator=OPTIONAL_SECRET
    )
    tls: bool = attrs.field(default=False, validator=BOOL)
    tls_ca_file: Path | None = attrs.field(
        default=None, converter=as_optional_path, validator=OPTIONAL_CA_FILE
    )
    keepalive: int = attrs.field(
        default=60, validator=int_between(1, 65535, "an integer number of seconds from 1 to 65535")
    )
    qos: QoS = attrs.field(default=1, validator=one_of(0, 1, 2))
    reconnect_min_s: float = attrs.field(default=1.0, validator=SECONDS)
    reconnect_max_s: float = attrs.field(default=60.0, validator=SECONDS)
    buffer_size: int = attrs.field(default=1000, validator=POSITIVE_INT)
    mirror_topics: tuple[str, ...] = attrs.field(
        default=("shared/#",), converter=as_strings, validator=MIRROR_TOPICS
    )
    ask_timeout_s: float = attrs.field(default=30.0, validator=SECONDS)
    max_payload_bytes: int = attrs.field(default=65536, validator=POSITIVE_INT)
    reply_prefix: str | None = attrs.field(default=None, validator=OPTIONAL_TOPIC_PREFIX)
    protocol: MQTTProtocol = attrs.field(default="auto", validator=one_of("auto", "5", "3.1.1"))
    broker: BrokerMode = attrs.field(default="external", validator=one_of("external", "embedded"))
    heartbeat_s: float = attrs.field(default=2.0, validator=SECONDS)
    node_down_after_s: float = attrs.field(default=6.0, validator=SECONDS)
    ask_retry_s: float = attrs.field(default=2.0, validator=SECONDS)
    remote_allow: tuple[str, ...] = attrs.field(
        default=("*",), converter=as_strings, validator=NAME_PATTERNS
    )
    kinds: Mapping[str, str] = attrs.field(factory=dict, validator=KIND_TABLE, hash=False)
    spawn_allow: tuple[str, ...] = attrs.field(
        default=(), converter=as_strings, validator=KIND_NAMES
    )

    @property
    def uses_tls(self) -> bool:
        """Whether to connect over TLS: ``tls``, or a ``tls_ca_file`` to verify the broker with."""
        return self.tls or self.tls_ca_file is not None

    def __attrs_post_init__(self) -> None:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise InvalidField(
                "reconnect_max_s",
                self.reconnect_max_s,
                f"a number of seconds no smaller than reconnect_min_s ({self.reconnect_min_s})",
            )
        if self.node_down_after_s <= self.heartbeat_s:
            raise InvalidField(
                "node_down_after_s",
                self.node_down_after_s,
                f"a number of seconds larger than heartbeat_s ({self.heartbeat_s}); three "
                "heartbeats or more is usual",
            )
        unknown = sorted(set(self.spawn_allow) - {"*"} - set(self.kinds))
        if unknown:
            raise InvalidField(
                "spawn_allow",
                list(self.spawn_allow),
                f"kinds named in mqtt.kinds (unknown: {', '.join(unknown)}), or '*'",
            )
        own = [f"{self.topic_prefix}/{level}" for level in ("agents", "nodes", "system")]
        prefix = self.reply_prefix
        if prefix is not None and any(prefix == o or prefix.startswith(f"{o}/") for o in own):
            raise InvalidField(
                "reply_prefix",
                prefix,
                f"a topic prefix outside the node's own topics ({', '.join(own)}), "
                f"such as {self.topic_prefix}/replies",
            )


@final
@attrs.frozen
class WebConfig:
    """The web front door: dashboard, ``/healthz``, ``/metrics``, API reference and WebSocket.

    It listens on ``host:port``, loopback only unless ``host`` says otherwise, and ``port``
    0 picks a free port. ``token`` is the secret the WebSocket, ``/metrics`` and the API
    reference require; when it is None a fresh one is generated at every start and the
    banner prints the URL that carries it. The web interface refuses to start beyond
    loopback without a ``token``. A conversation idle for ``session_idle_s`` is over: the
    session's next message starts a new one (the old one stays in the LLM agent's store).
    """

    enabled: bool = attrs.field(default=True, validator=BOOL)
    host: str = attrs.field(default="127.0.0.1", validator=HOST)
    port: int = attrs.field(
        default=8765, validator=int_between(0, 65535, "an integer from 0 to 65535 (0: any free)")
    )
    token: Secret | None = attrs.field(default=None, converter=as_secret, validator=OPTIONAL_SECRET)
    session_idle_s: float = attrs.field(default=8 * 3600.0, validator=SECONDS)


@final
@attrs.frozen
class MonitorConfig:
    """The health monitor: what it samples, how often, and when it raises an alert.

    Every ``interval_s`` it samples the process; it alerts when CPU or memory use passes its
    percentage, when an actor has been silent for ``silent_after_s``, or when a mailbox is fuller
    than ``mailbox_alert_ratio`` of its capacity, and repeats an alert no sooner than
    ``alert_cooldown_s``.
    """

    enabled: bool = attrs.field(default=True, validator=BOOL)
    interval_s: float = attrs.field(default=5.0, validator=SECONDS)
    cpu_alert_percent: float = attrs.field(default=90.0, validator=PERCENT)
    memory_alert_percent: float = attrs.field(default=90.0, validator=PERCENT)
    silent_after_s: float = attrs.field(default=60.0, validator=SECONDS)
    mailbox_alert_ratio: float = attrs.field(default=0.8, validator=RATIO)
    alert_cooldown_s: float = attrs.field(default=300.0, validator=SECONDS_OR_ZERO)


@final
@attrs.frozen
class SandboxConfig:
    """The agents that run code (CodeAgent) and touch files (IOAgent). Off unless enabled.

    ``root`` is the IOAgent's workspace, the one directory its file operations and shell
    commands reach (relative paths are relative to the working directory, ``~`` is
    expanded); shell commands run only if ``allow_shell``. Every run is a child process
    in the sandbox (`wactorz.agents.sandbox`): stopped after ``timeout_s`` of wall clock
    or ``cpu_limit_s`` of CPU, with at most ``memory_limit_mb`` of memory,
    ``max_processes`` processes, ``max_open_files`` open files and files of at most
    ``max_file_mb`` (also the largest file the IOAgent reads or writes at once); the first
    ``max_output_bytes`` of each output stream are kept in its result. At most
    ``max_concurrent_runs`` run at once per agent; later ones wait their turn.

    Runs get no network unless ``network``; ``require`` lists isolation layers to refuse
    to run without (process, user, cgroup, filesystem, network, bubblewrap: the agents
    then fail to start on a machine that lacks one); ``bubblewrap`` adds bwrap around
    every run when it is installed. ``python`` is the interpreter for Python snippets
    (None: the service's own if the runs' user can execute it, else the system's).
    """

    enabled: bool = attrs.field(default=False, validator=BOOL)
    root: Path = attrs.field(
        default=Path(".wactorz/sandbox"), converter=as_path, validator=DIRECTORY
    )
    allow_shell: bool = attrs.field(default=False, validator=BOOL)
    timeout_s: float = attrs.field(default=30.0, validator=SECONDS)
    cpu_limit_s: int = attrs.field(default=30, validator=POSITIVE_INT)
    memory_limit_mb: int = attrs.field(
        default=512, validator=int_between(16, 1 << 30, "a number of MiB, at least 16")
    )
    max_processes: int = attrs.field(default=64, validator=POSITIVE_INT)
    max_open_files: int = attrs.field(
        default=256, validator=int_between(16, 1 << 20, "a number of files, at least 16")
    )
    max_file_mb: int = attrs.field(default=64, validator=POSITIVE_INT)
    max_output_bytes: int = attrs.field(default=65536, validator=POSITIVE_INT)
    max_concurrent_runs: int = attrs.field(default=4, validator=POSITIVE_INT)
    network: bool = attrs.field(default=False, validator=BOOL)
    require: tuple[str, ...] = attrs.field(
        default=(), converter=as_strings, validator=SANDBOX_LAYERS
    )
    bubblewrap: bool = attrs.field(default=False, validator=BOOL)
    python: str | None = attrs.field(default=None, validator=OPTIONAL_EXECUTABLE)

    def __attrs_post_init__(self) -> None:
        from wactorz.agents.sandbox import policy_from_config  # the policy owns its rules

        try:
            policy_from_config(self)
        except ValueError as exc:
            raise InvalidField(
                "require",
                list(self.require),
                f"layers these settings can give ({exc}: allow the layer, or drop it from require)",
            ) from None


@final
@attrs.frozen
class Settings:
    """All of wactorz's configuration.

    ``node`` names this system in actor ids and MQTT topics (default: the host name, reduced to
    letters, digits and underscores). ``log_level`` is DEBUG, INFO, WARNING or ERROR (any case
    when loading); ``log_format`` is "text" for people or "json" for log collectors.
    ``data_dir`` is where the service keeps its files (the LLM agent's conversations),
    relative to the working directory unless absolute.
    """

    node: str = attrs.field(factory=default_node, validator=NODE_NAME)
    log_level: LogLevel = attrs.field(
        default="INFO", validator=one_of("DEBUG", "INFO", "WARNING", "ERROR")
    )
    log_format: LogFormat = attrs.field(default="text", validator=one_of("text", "json"))
    data_dir: Path = attrs.field(default=Path(".wactorz"), converter=as_path, validator=DIRECTORY)
    llm: LLMConfig = attrs.field(factory=LLMConfig)
    mqtt: MQTTConfig = attrs.field(factory=MQTTConfig)
    web: WebConfig = attrs.field(factory=WebConfig)
    monitor: MonitorConfig = attrs.field(factory=MonitorConfig)
    sandbox: SandboxConfig = attrs.field(factory=SandboxConfig)

    def with_overrides(self, overrides: Mapping[str, object]) -> "Settings":
        """Return a copy with the dotted keys in *overrides* changed, e.g. ``{"mqtt.port": 1}``.

        Values are parsed and checked exactly as overrides given to `load_settings` are
        (``"1884"`` is fine for a port); raises `ConfigError` if one is not valid.
        """
        # Loading reads this schema: imported here, not at the top, to keep the order one-way.
        from wactorz.config._converting import CONVERTER, leaves
        from wactorz.config._loading import put, put_overrides, structure_settings

        tree: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for key, value in leaves(CONVERTER.unstructure(self)):
            put(tree, origins, key, value, "current settings")
        put_overrides(tree, origins, overrides, {})
        return structure_settings(tree, origins, file_label=None)

"""Settings: what wactorz can be configured to do, where each value comes from, and the live copy.

The configuration is one frozen `Settings` tree with a section per subsystem (`LLMConfig`,
`MQTTConfig`, `WebConfig`, `MonitorConfig`, `SandboxConfig`). Every field has a default chosen so
that wactorz starts on a fresh machine with no MQTT broker and no API key, binds nothing beyond
loopback, and runs no code and touches no files until told to.

Sources, later ones winning:

1. the defaults declared on the classes below;
2. a YAML file: the ``path`` given to `load_settings` (the CLI's ``--config``), else the file
   named by ``WACTORZ_CONFIG``, else ``./wactorz.yaml`` if it exists, else none. A file that was
   asked for by name but does not exist is an error;
3. the environment: ``WACTORZ_<KEY>`` with ``__`` between nested keys and key names in any case
   (``WACTORZ_MQTT__PORT=1884`` sets ``mqtt.port``), plus the conventional ``ANTHROPIC_API_KEY``
   for ``llm.api_key`` (``WACTORZ_LLM__API_KEY`` wins over it). Values are parsed for the
   field's type: booleans accept true/false, yes/no, on/off and 1/0 in any case, and an empty
   string means "none" for optional fields;
4. explicit overrides: a mapping of dotted keys to values, ``{"mqtt.port": 1884}`` (the CLI's
   flags).

Anything that is not a known key, or not a valid value for its key, raises `ConfigError`, whose
``str()`` is a single line naming the key, the value, where it came from and what is allowed.
`load_settings` also records the source of every effective value, which
`LoadedSettings.render` prints next to it.

Secrets (API key, MQTT password, web token) are held in `Secret`, which shows ``***`` in every
repr, str and f-string; call `Secret.reveal` at the one place that needs the real value.

The process-wide settings::

    settings = get_settings()   # loaded once, lazily, from the file and the environment

Embedding code and tests replace them with `configure` (install a `Settings` you built or
loaded), `reset_settings` (forget them, so the next `get_settings` loads afresh) or, scoped to a
block, ``with override_settings({"mqtt.enabled": True}):`` which installs the current settings
changed by those dotted keys (or a whole `Settings`) and restores the previous ones on exit.
"""

import contextlib
import difflib
import hmac
import ipaddress
import json
import math
import os
import re
import reprlib
import socket
import threading
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, NoReturn, Union, final, get_args, get_origin

import attrs
import cattrs
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn

from wactorz.core.topics import filter_problem, text_problem, topic_problem

__all__ = [
    "CONFIG_PATH_ENV",
    "ENV_PREFIX",
    "ConfigError",
    "LLMConfig",
    "LoadedSettings",
    "LogFormat",
    "LogLevel",
    "MQTTConfig",
    "MonitorConfig",
    "SandboxConfig",
    "Secret",
    "Settings",
    "WebConfig",
    "configure",
    "get_settings",
    "load_settings",
    "override_settings",
    "render_settings",
    "reset_settings",
    "settings_to_dict",
]

ENV_PREFIX: Final = "WACTORZ_"
"""Environment variables starting with this (in any case) set configuration keys."""

CONFIG_PATH_ENV: Final = "WACTORZ_CONFIG"
"""The environment variable naming the YAML file; it is a path, not a configuration key."""

_DEFAULT_CONFIG_FILE: Final = "wactorz.yaml"
_API_KEY_ENV: Final = "ANTHROPIC_API_KEY"

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
LogFormat = Literal["text", "json"]
QoS = Literal[0, 1, 2]
MQTTProtocol = Literal["auto", "5", "3.1.1"]


@final
class ConfigError(Exception):
    """The configuration cannot be loaded: a bad value, an unknown key or an unreadable file.

    ``str(err)`` is one line meant for the user, naming the key, the value, its source and what
    is allowed; it also says how many further problems there are. All of them are in
    `problems`, one line each.
    """

    def __init__(self, *problems: str) -> None:
        super().__init__(*problems)
        self.problems: tuple[str, ...] = problems

    def __str__(self) -> str:
        if not self.problems:
            return "invalid configuration"
        first, more = self.problems[0], len(self.problems) - 1
        if more == 0:
            return first
        return f"{first} (and {more} more problem{'s' if more > 1 else ''})"


@final
class Secret:
    """A string that must not be shown: its repr is ``Secret('***')`` and its str ``***``.

    Wrapping the API key, the broker password and the web token keeps them out of reprs, log
    lines and f-strings by accident. `reveal` returns the value, for the one call that needs it.

    This is deliberately not an attrs class: ``attrs.asdict`` recurses into attrs instances and
    would hand the value out.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"a Secret holds a string, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the secret value itself."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    def __str__(self) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("a Secret cannot be changed; make a new one")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("a Secret cannot be changed; make a new one")

    def __reduce__(self) -> tuple[type["Secret"], tuple[str]]:
        return (Secret, (self._value,))


# --- field validators -------------------------------------------------------------------------


class _InvalidField(ValueError):
    """A field validator rejected a value; carries what the field accepts, for `ConfigError`."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        super().__init__(f"{name}: {_show(value)} is not valid: expected {expected}")
        self.name = name
        self.value = value
        self.expected = expected


@final
@attrs.frozen
class _Check:
    """A field validator that also says, in words, which values it accepts.

    The words are reused by `ConfigError`, so a value that fails while being parsed ('abc' for a
    port) and one that fails the check (70000) are explained the same way.
    """

    accepts: Callable[[Any], bool]
    expected: str

    def __call__(self, instance: object, attribute: "attrs.Attribute[Any]", value: object) -> None:
        if not self.accepts(value):
            raise _InvalidField(attribute.name, value, self.expected)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _int_between(low: int, high: int, expected: str) -> _Check:
    return _Check(lambda v: _is_int(v) and low <= v <= high, expected)


def _number_between(low: float, high: float, expected: str) -> _Check:
    return _Check(lambda v: _is_number(v) and low <= v <= high, expected)


def _one_of(*choices: object) -> _Check:
    return _Check(
        lambda v: any(type(v) is type(c) and v == c for c in choices),
        "one of " + ", ".join(str(c) for c in choices),
    )


_BOOL = _Check(lambda v: isinstance(v, bool), "true or false (yes/no, on/off and 1/0 work too)")
_POSITIVE_INT = _Check(lambda v: _is_int(v) and v > 0, "an integer greater than 0")
_SECONDS = _Check(lambda v: _is_number(v) and v > 0, "a number of seconds greater than 0")
_SECONDS_OR_ZERO = _Check(lambda v: _is_number(v) and v >= 0, "a number of seconds, 0 or more")
_PERCENT = _Check(lambda v: _is_number(v) and 0 < v <= 100, "a percentage above 0, up to 100")
_RATIO = _number_between(0, 1, "a number from 0 to 1")
_TEXT = _Check(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")

_HOST_LABEL: Final = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_HOST_NAME_MAX: Final = 253


def _is_host(value: object) -> bool:
    """An IP address literal (IPv4, or IPv6 without brackets) or a DNS host name.

    A host name is dot-separated labels of 1 to 63 ASCII letters, digits, hyphens and
    underscores, none starting or ending with a hyphen, 253 characters at most, with an optional
    trailing dot. Underscores are allowed because resolvers and container networks accept them
    (``mqtt_broker`` in a compose file). A last label of only digits is refused: ``10.0.0.256``
    is a mistyped address, not a name. The length is checked first, so a huge value costs nothing.
    """
    if not isinstance(value, str) or not 0 < len(value) <= _HOST_NAME_MAX + 1:
        return False
    try:
        ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return True
    name = value.removesuffix(".")
    labels = name.split(".")
    return (
        len(name) <= _HOST_NAME_MAX
        and all(_HOST_LABEL.fullmatch(label) for label in labels)
        and not labels[-1].isdigit()
    )


_HOST = _Check(
    _is_host,
    "an IP address like 127.0.0.1 or ::1, or a host name like broker.lan (labels of 1 to 63 "
    "ASCII letters, digits, '-' or '_' joined by dots, none starting or ending with '-', "
    f"{_HOST_NAME_MAX} characters at most)",
)
_OPTIONAL_SECRET = _Check(
    lambda v: v is None or (isinstance(v, Secret) and v.reveal() != ""),
    "a string, or empty for none",
)
_OPTIONAL_URL = _Check(
    lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"https?://\S+", v) is not None),
    "an http:// or https:// URL, or empty for none",
)
_NODE_NAME = _Check(
    lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_]+", v) is not None,
    "a name made of letters, digits and underscores",
)


def _is_topic_prefix(value: object) -> bool:
    """A topic that MQTT accepts, with no empty level at either end."""
    return (
        isinstance(value, str)
        and topic_problem(value) is None
        and not value.startswith("/")
        and not value.endswith("/")
    )


_TOPIC_PREFIX = _Check(
    _is_topic_prefix,
    "a topic prefix without '+' or '#', control characters or a leading or trailing '/'",
)
_OPTIONAL_MQTT_TEXT = _Check(
    lambda v: v is None or (isinstance(v, str) and v != "" and text_problem(v) is None),
    "a string without control characters, or empty for none",
)
_OPTIONAL_TOPIC_PREFIX = _Check(
    lambda v: v is None or _is_topic_prefix(v),
    "a topic prefix without '+' or '#', control characters or a leading or trailing '/', "
    "or empty for the default",
)
_DIRECTORY = _Check(lambda v: isinstance(v, Path), "a directory path")


def _is_mirror_filter(value: object) -> bool:
    """A topic filter starting with a plain level that the MQTT bridge does not use itself."""
    if filter_problem(value) is not None:
        return False
    assert isinstance(value, str)
    return value.split("/")[0] not in ("", "+", "#", "agents", "nodes", "system", "replies")


_MIRROR_TOPICS = _Check(
    lambda v: isinstance(v, tuple) and all(_is_mirror_filter(f) for f in v),
    "topic filters (a list, or comma-separated) each starting with a plain level other than "
    "agents, nodes, system and replies, like shared/#",
)


def _as_secret(value: str | Secret | None) -> Secret | None:
    """Let code write ``LLMConfig(api_key="sk-...")``; an empty string means no secret."""
    if isinstance(value, str):
        return Secret(value) if value else None
    return value


def _as_filters(value: str | Iterable[str]) -> tuple[str, ...]:
    """Let code write ``MQTTConfig(mirror_topics=["a/#"])``; one string is one filter."""
    return (value,) if isinstance(value, str) else tuple(value)


def _as_path(value: str | os.PathLike[str]) -> Path:
    return Path(value).expanduser()


def _node_from_hostname() -> str:
    """This machine's short host name, reduced to ``[A-Za-z0-9_]+`` so it fits in topics and ids."""
    short = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9_]+", "_", short).strip("_") or "wactorz"


# --- the settings -----------------------------------------------------------------------------


@final
@attrs.frozen
class LLMConfig:
    """How to reach the language model.

    ``model`` is the model id; ``api_key`` the key (usually from ``ANTHROPIC_API_KEY``; without
    one the LLM agents stay unavailable but everything else runs); ``base_url`` a different
    endpoint (a proxy or gateway), None for the provider's own; ``temperature`` from 0 to 1;
    ``max_tokens`` the reply budget; ``timeout`` seconds per request.
    """

    model: str = attrs.field(default="claude-sonnet-4-5", validator=_TEXT)
    api_key: Secret | None = attrs.field(
        default=None, converter=_as_secret, validator=_OPTIONAL_SECRET
    )
    base_url: str | None = attrs.field(default=None, validator=_OPTIONAL_URL)
    temperature: float = attrs.field(default=0.7, validator=_RATIO)
    max_tokens: int = attrs.field(default=4096, validator=_POSITIVE_INT)
    timeout: float = attrs.field(default=60.0, validator=_SECONDS)


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
    """

    enabled: bool = attrs.field(default=False, validator=_BOOL)
    host: str = attrs.field(default="127.0.0.1", validator=_HOST)
    port: int = attrs.field(
        default=1883, validator=_int_between(1, 65535, "an integer from 1 to 65535")
    )
    topic_prefix: str = attrs.field(default="wactorz", validator=_TOPIC_PREFIX)
    client_id: str | None = attrs.field(default=None, validator=_OPTIONAL_MQTT_TEXT)
    username: str | None = attrs.field(default=None, validator=_OPTIONAL_MQTT_TEXT)
    password: Secret | None = attrs.field(
        default=None, converter=_as_secret, validator=_OPTIONAL_SECRET
    )
    tls: bool = attrs.field(default=False, validator=_BOOL)
    keepalive: int = attrs.field(
        default=60, validator=_int_between(1, 65535, "an integer number of seconds from 1 to 65535")
    )
    qos: QoS = attrs.field(default=1, validator=_one_of(0, 1, 2))
    reconnect_min_s: float = attrs.field(default=1.0, validator=_SECONDS)
    reconnect_max_s: float = attrs.field(default=60.0, validator=_SECONDS)
    buffer_size: int = attrs.field(default=1000, validator=_POSITIVE_INT)
    mirror_topics: tuple[str, ...] = attrs.field(
        default=("shared/#",), converter=_as_filters, validator=_MIRROR_TOPICS
    )
    ask_timeout_s: float = attrs.field(default=30.0, validator=_SECONDS)
    max_payload_bytes: int = attrs.field(default=65536, validator=_POSITIVE_INT)
    reply_prefix: str | None = attrs.field(default=None, validator=_OPTIONAL_TOPIC_PREFIX)
    protocol: MQTTProtocol = attrs.field(default="auto", validator=_one_of("auto", "5", "3.1.1"))

    def __attrs_post_init__(self) -> None:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise _InvalidField(
                "reconnect_max_s",
                self.reconnect_max_s,
                f"a number of seconds no smaller than reconnect_min_s ({self.reconnect_min_s})",
            )
        own = [f"{self.topic_prefix}/{level}" for level in ("agents", "nodes", "system")]
        prefix = self.reply_prefix
        if prefix is not None and any(prefix == o or prefix.startswith(f"{o}/") for o in own):
            raise _InvalidField(
                "reply_prefix",
                prefix,
                f"a topic prefix outside the node's own topics ({', '.join(own)}), "
                f"such as {self.topic_prefix}/replies",
            )


@final
@attrs.frozen
class WebConfig:
    """The web interface. It listens on loopback only unless ``host`` says otherwise.

    ``port`` 0 picks a free port. ``token``, when set, must accompany every request.
    """

    enabled: bool = attrs.field(default=True, validator=_BOOL)
    host: str = attrs.field(default="127.0.0.1", validator=_HOST)
    port: int = attrs.field(
        default=8765, validator=_int_between(0, 65535, "an integer from 0 to 65535 (0: any free)")
    )
    token: Secret | None = attrs.field(
        default=None, converter=_as_secret, validator=_OPTIONAL_SECRET
    )


@final
@attrs.frozen
class MonitorConfig:
    """The health monitor: what it samples, how often, and when it raises an alert.

    Every ``interval_s`` it samples the process; it alerts when CPU or memory use passes its
    percentage, when an actor has been silent for ``silent_after_s``, or when a mailbox is fuller
    than ``mailbox_alert_ratio`` of its capacity, and repeats an alert no sooner than
    ``alert_cooldown_s``.
    """

    enabled: bool = attrs.field(default=True, validator=_BOOL)
    interval_s: float = attrs.field(default=5.0, validator=_SECONDS)
    cpu_alert_percent: float = attrs.field(default=90.0, validator=_PERCENT)
    memory_alert_percent: float = attrs.field(default=90.0, validator=_PERCENT)
    silent_after_s: float = attrs.field(default=60.0, validator=_SECONDS)
    mailbox_alert_ratio: float = attrs.field(default=0.8, validator=_RATIO)
    alert_cooldown_s: float = attrs.field(default=300.0, validator=_SECONDS_OR_ZERO)


@final
@attrs.frozen
class SandboxConfig:
    """Limits for the agents that run code or touch files. Off unless enabled.

    Those agents stay inside ``root`` (relative paths are relative to the working directory,
    ``~`` is expanded), run shell commands only if ``allow_shell``, and each run is stopped
    after ``timeout_s``, cut to ``max_output_bytes`` of output and ``memory_limit_mb`` of memory.
    """

    enabled: bool = attrs.field(default=False, validator=_BOOL)
    root: Path = attrs.field(
        default=Path(".wactorz/sandbox"), converter=_as_path, validator=_DIRECTORY
    )
    allow_shell: bool = attrs.field(default=False, validator=_BOOL)
    timeout_s: float = attrs.field(default=30.0, validator=_SECONDS)
    max_output_bytes: int = attrs.field(default=65536, validator=_POSITIVE_INT)
    memory_limit_mb: int = attrs.field(default=512, validator=_POSITIVE_INT)


@final
@attrs.frozen
class Settings:
    """All of wactorz's configuration.

    ``node`` names this system in actor ids and MQTT topics (default: the host name, reduced to
    letters, digits and underscores). ``log_level`` is DEBUG, INFO, WARNING or ERROR (any case
    when loading); ``log_format`` is "text" for people or "json" for log collectors.
    """

    node: str = attrs.field(factory=_node_from_hostname, validator=_NODE_NAME)
    log_level: LogLevel = attrs.field(
        default="INFO", validator=_one_of("DEBUG", "INFO", "WARNING", "ERROR")
    )
    log_format: LogFormat = attrs.field(default="text", validator=_one_of("text", "json"))
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
        tree: dict[str, Any] = {}
        origins: dict[str, str] = {}
        for key, value in _leaves(_converter.unstructure(self)):
            _put(tree, origins, key, value, "current settings")
        _put_overrides(tree, origins, overrides, {})
        return _structure(tree, origins, file_label=None)


@final
@attrs.frozen
class LoadedSettings:
    """The result of `load_settings`: the settings, and where each value came from.

    ``sources`` maps every dotted key (``"mqtt.port"``) to "default", the config file's path,
    the environment variable's name, or the override's source ("override" or the CLI flag).
    ``config_path`` is the YAML file that was read, or None.
    """

    settings: Settings
    sources: dict[str, str]
    config_path: Path | None = None

    def render(self) -> list[str]:
        """The effective configuration as ``key = value  # source`` lines, secrets masked."""
        return render_settings(self.settings, self.sources)


# --- structuring: strings and YAML values into typed fields ------------------------------------

_TRUE_WORDS: Final = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS: Final = frozenset({"false", "0", "no", "off"})


def _structure_bool(value: object, _: type) -> bool:
    # cattrs' default is bool(value), which makes "false" true.
    if isinstance(value, bool):
        return value
    if _is_int(value) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    raise ValueError(f"{value!r} is not a boolean")


def _structure_int(value: object, _: type) -> int:
    # Stricter than int(): no silently truncated floats, no booleans.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return int(value.strip())
    raise TypeError(f"{value!r} is not an integer")


def _structure_float(value: object, _: type) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        number = float(value.strip())
    else:
        raise TypeError(f"{value!r} is not a number")
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _structure_str(value: object, _: type) -> str:
    # Refuse YAML's non-strings: an unquoted `password: 0123` is the number 83.
    if isinstance(value, str):
        return value
    raise TypeError(f"{value!r} is not a string")


def _structure_secret(value: object, _: type) -> Secret:
    return Secret(_structure_str(value, str))


def _structure_topic_filters(value: object, _: type) -> tuple[str, ...]:
    # From the environment a list comes as one string: "shared/#,lab/+/temp".
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple):
        return tuple(_structure_str(item, str) for item in value)
    raise TypeError(f"{value!r} is not a list of topic filters")


def _structure_path(value: object, _: type) -> Path:
    if isinstance(value, str | os.PathLike) and os.fspath(value) != "":
        return Path(value)
    raise TypeError(f"{value!r} is not a path")


def _is_optional(type_: Any) -> bool:
    args = get_args(type_)
    return get_origin(type_) in (Union, types.UnionType) and len(args) == 2 and type(None) in args


def _is_literal(type_: Any) -> bool:
    return get_origin(type_) is Literal


def _make_converter() -> cattrs.Converter:
    converter = cattrs.Converter(forbid_extra_keys=True)
    converter.register_structure_hook(bool, _structure_bool)
    converter.register_structure_hook(int, _structure_int)
    converter.register_structure_hook(float, _structure_float)
    converter.register_structure_hook(str, _structure_str)
    converter.register_structure_hook(Secret, _structure_secret)
    converter.register_structure_hook(Path, _structure_path)
    converter.register_structure_hook_func(
        lambda type_: type_ == tuple[str, ...], _structure_topic_filters
    )
    converter.register_unstructure_hook(Secret, Secret.reveal)
    converter.register_unstructure_hook(Path, str)

    def optional_hook(type_: Any) -> Callable[[object, type], object]:
        (inner,) = (arg for arg in get_args(type_) if arg is not type(None))

        def structure(value: object, _: type) -> object:
            # An environment variable cannot be None; empty is how it says "none".
            if value is None or (isinstance(value, str) and value.strip() == ""):
                return None
            return converter.structure(value, inner)

        return structure

    def literal_hook(type_: Any) -> Callable[[object, type], object]:
        choices = get_args(type_)

        def structure(value: object, _: type) -> object:
            for choice in choices:
                if type(value) is type(choice) and value == choice:
                    return choice
                if isinstance(value, str) and value.strip().lower() == str(choice).lower():
                    return choice
                if isinstance(choice, str) and type(value) is int and str(value) == choice:
                    return choice  # `protocol: 5` in YAML means "5"
            raise ValueError(f"{value!r} is not one of {choices}")

        return structure

    def section_hook(cls: type[Any]) -> Callable[[object, type], object]:
        fields_from_mapping = make_dict_structure_fn(cls, converter)

        def structure(value: object, _: type) -> object:
            # Without this a string would be taken for an iterable of (unknown) keys.
            if value is None:
                value = {}  # a YAML section whose keys are all commented out
            if not isinstance(value, Mapping):
                raise TypeError(f"{value!r} is not a mapping")
            return fields_from_mapping(value, cls)

        return structure

    converter.register_structure_hook_factory(_is_optional, optional_hook)
    converter.register_structure_hook_factory(_is_literal, literal_hook)
    converter.register_structure_hook_factory(attrs.has, section_hook)
    return converter


_converter: Final = _make_converter()
_display_converter: Final = _converter.copy()
_display_converter.register_unstructure_hook(Secret, str)


# --- merging the sources ----------------------------------------------------------------------

_Key = tuple[str, ...]


def _leaves(value: object, prefix: _Key = ()) -> Iterator[tuple[_Key, object]]:
    """Flatten nested mappings into (key path, value) pairs; empty mappings vanish."""
    if isinstance(value, Mapping):
        for name, child in value.items():
            yield from _leaves(child, (*prefix, str(name)))
    else:
        yield prefix, value


def _put(
    tree: dict[str, Any], origins: dict[str, str], key: _Key, value: object, source: str
) -> None:
    """Set *key* in *tree* to *value*, remembering that *source* said so."""
    node = tree
    for name in key[:-1]:
        child = node.get(name)
        if not isinstance(child, dict):
            child = node[name] = {}
        node = child
    node[key[-1]] = value
    dotted = ".".join(key)
    for replaced in [
        k for k in origins if k.startswith(dotted + ".") or dotted.startswith(k + ".")
    ]:
        del origins[replaced]
    origins[dotted] = source


def _put_overrides(
    tree: dict[str, Any],
    origins: dict[str, str],
    overrides: Mapping[str, object],
    override_sources: Mapping[str, str],
) -> None:
    for dotted, value in overrides.items():
        if value is None:
            continue
        source = override_sources.get(dotted, "override")
        for key, leaf in _leaves(value, tuple(dotted.split("."))):
            _put(tree, origins, key, leaf, source)


def _environment_entries(env: Mapping[str, str]) -> Iterator[tuple[_Key, str, str]]:
    """(key path, value, variable name) for each setting the environment makes, weakest first."""
    api_key = env.get(_API_KEY_ENV)
    if api_key:
        yield ("llm", "api_key"), api_key, _API_KEY_ENV
    keys = {
        name: tuple(name[len(ENV_PREFIX) :].lower().split("__"))
        for name in env
        if name.upper().startswith(ENV_PREFIX) and name.upper() != CONFIG_PATH_ENV
    }
    # Whole sections last, so that WACTORZ_MQTT=x is reported rather than silently replaced.
    for name in sorted(keys, key=lambda name: (-len(keys[name]), name)):
        yield keys[name], env[name], name


def _find_config_file(
    path: str | os.PathLike[str] | None, env: Mapping[str, str]
) -> tuple[Path, str] | None:
    """The YAML file to read and how to name it in messages, or None if there is none."""
    if path is not None:
        label, named_by = os.fspath(path), "--config"
    elif env.get(CONFIG_PATH_ENV):
        label, named_by = env[CONFIG_PATH_ENV], CONFIG_PATH_ENV
    else:
        default = Path(_DEFAULT_CONFIG_FILE)
        return (default, f"./{_DEFAULT_CONFIG_FILE}") if default.is_file() else None
    if not Path(label).exists():
        raise ConfigError(
            f"config file {label!r} (from {named_by}) does not exist: "
            "check the path, or create the file"
        )
    return Path(label), label


def _read_yaml(path: Path, label: str) -> Mapping[Any, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {label}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {label} is not UTF-8 text: {exc.reason}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"{label}: invalid YAML{where}: {_one_line(problem)}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML: {_one_line(str(exc))}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{label}: expected a mapping of settings (lines of 'key: value') at the top level, "
            f"got {_kind(data)}"
        )
    return data


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    override_sources: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Load the settings from defaults, the YAML file, the environment and *overrides*.

    *path* is the YAML file (the CLI's ``--config``); without it, ``WACTORZ_CONFIG`` names the
    file, else ``./wactorz.yaml`` is read if it exists. *env* stands in for ``os.environ``.
    *overrides* maps dotted keys to values and wins over everything; keys whose value is None are
    skipped, so unset command-line options can be passed through as they are.
    *override_sources* names, per dotted key, where an override came from (``"--port"``) for
    `LoadedSettings.sources`; it defaults to "override".

    Raises `ConfigError` if a named file does not exist or cannot be read or parsed, or if any
    key is unknown or any value is invalid. Nothing is changed: the process-wide settings are
    replaced only by `configure`.
    """
    environ = os.environ if env is None else env
    found = _find_config_file(path, environ)
    tree: dict[str, Any] = {}
    origins: dict[str, str] = {}
    file_label = None
    if found is not None:
        config_path, file_label = found
        for key, value in _leaves(_read_yaml(config_path, file_label)):
            _put(tree, origins, key, value, file_label)
    for key, text, variable in _environment_entries(environ):
        _put(tree, origins, key, text, variable)
    _put_overrides(tree, origins, overrides or {}, override_sources or {})
    settings = _structure(tree, origins, file_label)
    sources = {".".join(key): origins.get(".".join(key), "default") for key in _field_keys()}
    return LoadedSettings(settings, sources, found[0] if found else None)


# --- explaining what went wrong ---------------------------------------------------------------


def _structure(tree: dict[str, Any], origins: dict[str, str], file_label: str | None) -> Settings:
    try:
        return _converter.structure(tree, Settings)
    except ClassValidationError as exc:
        explainer = _Explainer(tree, origins, file_label)
        raise ConfigError(*explainer.problems(exc, ())) from exc


@final
@attrs.frozen
class _Explainer:
    """Turns a cattrs validation error into one line per problem, using what was merged."""

    tree: Mapping[str, Any]
    origins: Mapping[str, str]
    file_label: str | None

    def problems(self, exc: BaseException, key: _Key) -> Iterator[str]:
        if not isinstance(exc, ClassValidationError):
            yield self._invalid(key, exc)
            return
        with_notes, without_notes = exc.group_exceptions()
        for inner, note in with_notes:
            yield from self.problems(inner, (*key, note.name))
        for inner in without_notes:
            if isinstance(inner, ForbiddenExtraKeysError):
                for name in sorted(inner.extra_fields):
                    yield self._unknown((*key, name), inner.cl)
            elif isinstance(inner, _InvalidField):
                yield self._invalid((*key, inner.name), inner)
            else:
                yield self._invalid(key, inner)

    def _source(self, key: _Key) -> str | None:
        dotted = ".".join(key)
        if dotted in self.origins:
            return self.origins[dotted]
        for known, source in self.origins.items():
            if known.startswith(dotted + ".") or dotted.startswith(known + "."):
                return source
        return None

    def _invalid(self, key: _Key, exc: BaseException) -> str:
        dotted = ".".join(key)
        field = _field_at(key)
        value = _lookup(self.tree, key)
        if value is _MISSING:
            value = exc.value if isinstance(exc, _InvalidField) else _default_of(field)
        expected = exc.expected if isinstance(exc, _InvalidField) else _expected_of(field)
        shown = "'***'" if field is not None and _holds_secret(field) else _show(value)
        source = self._source(key)
        origin = f"from {source}" if source is not None else "(the default)"
        return f"{dotted}: {shown} {origin} is not valid: expected {expected}"

    def _unknown(self, key: _Key, owner: type) -> str:
        dotted = ".".join(key)
        section, name = key[:-1], key[-1]
        known = [field.name for field in attrs.fields(owner)]
        source = self._source(key)
        origin = ""
        if source is not None:
            origin = f" in {source}" if source == self.file_label else f" from {source}"
        under = f" under {'.'.join(section)}" if section else ""
        message = f"unknown key {dotted!r}{origin} (known keys{under}: {', '.join(known)})"
        return message + self._hint(section, name, known, source)

    @staticmethod
    def _hint(section: _Key, name: str, known: list[str], source: str | None) -> str:
        if source is not None and source.upper().startswith(ENV_PREFIX) and not section:
            head, _, rest = name.partition("_")
            inner = _section_type(attrs.fields_dict(Settings).get(head))
            if inner is not None and rest in attrs.fields_dict(inner):
                nested = f"{ENV_PREFIX}{head.upper()}__{rest.upper()}"
                return f"; nested keys take a double underscore: {nested}"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            return f"; did you mean {'.'.join((*section, close[0]))!r}?"
        return ""


_MISSING: Final = object()


def _lookup(tree: Mapping[str, Any], key: _Key) -> object:
    node: object = tree
    for name in key:
        if not isinstance(node, Mapping) or name not in node:
            return _MISSING
        node = node[name]
    return node


def _field_at(key: _Key) -> "attrs.Attribute[Any] | None":
    owner: object = Settings
    field = None
    for name in key:
        if not (isinstance(owner, type) and attrs.has(owner)):
            return None
        field = attrs.fields_dict(owner).get(name)
        if field is None:
            return None
        owner = field.type
    return field


def _default_of(field: "attrs.Attribute[Any] | None") -> object:
    if field is None:
        return None
    factory = getattr(field.default, "factory", None)
    return factory() if callable(factory) else field.default


def _section_type(field: "attrs.Attribute[Any] | None") -> type[Any] | None:
    """The settings class a field holds, if it is a section rather than a value."""
    if field is not None and isinstance(field.type, type) and attrs.has(field.type):
        return field.type
    return None


def _expected_of(field: "attrs.Attribute[Any] | None") -> str:
    if field is None:
        return "a known key"
    section = _section_type(field)
    if section is not None:
        names = ", ".join(f.name for f in attrs.fields(section))
        return f"a section with keys {names}"
    if isinstance(field.validator, _Check):
        return field.validator.expected
    return f"a value of type {field.type}"


def _holds_secret(field: "attrs.Attribute[Any]") -> bool:
    return field.type is Secret or Secret in get_args(field.type)


def _field_keys(owner: type[Any] = Settings, prefix: _Key = ()) -> Iterator[_Key]:
    """The dotted key of every value in the settings tree, in declaration order."""
    for field in attrs.fields(owner):
        section = _section_type(field)
        if section is not None:
            yield from _field_keys(section, (*prefix, field.name))
        else:
            yield (*prefix, field.name)


_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def _show(value: object) -> str:
    if isinstance(value, Secret):
        return "'***'"
    return _short.repr(value)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _kind(value: object) -> str:
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")


# --- showing the settings ---------------------------------------------------------------------


def settings_to_dict(settings: Settings, *, reveal_secrets: bool = False) -> dict[str, Any]:
    """The settings as plain nested dicts of YAML/JSON-ready values.

    Secrets are ``"***"`` unless *reveal_secrets*; `load_settings` structures the revealed form
    back into equal settings.
    """
    converter = _converter if reveal_secrets else _display_converter
    result: dict[str, Any] = converter.unstructure(settings)
    return result


_SHOWN_VALUE_MAX: Final = 80
"""A value whose JSON text is longer is shown cut to this many characters, with its length."""

_SOURCE_COLUMN_MAX: Final = 60
"""The ``# source`` comments line up after the assignments up to this long; longer ones are not
padded, and do not push the column out for the others."""

_SHOWN_SOURCE_MAX: Final = 120
"""A longer source (a deeply nested config file) is shown by its end, which names the file."""

_CUT: Final = "…"


def render_settings(settings: Settings, sources: Mapping[str, str] | None = None) -> list[str]:
    """The settings as ``key = value`` lines (values in JSON notation), secrets masked.

    With *sources* (as in `LoadedSettings.sources`), each line ends with ``# source``, aligned.
    A long value is shown cut, followed by its full length (``"abc…" (5000 characters)``), so
    the lines stay short and rendering costs the same whatever the values hold.
    """
    pairs = [
        (f"{'.'.join(key)} = {_shown_value(value)}", ".".join(key))
        for key, value in _leaves(settings_to_dict(settings))
    ]
    if sources is None:
        return [text for text, _ in pairs]
    width = max((len(text) for text, _ in pairs if len(text) <= _SOURCE_COLUMN_MAX), default=0)
    return [
        f"{text:<{width}}  # {_shown_source(sources.get(key, 'default'))}" for text, key in pairs
    ]


def _shown_value(value: object) -> str:
    """*value* in JSON notation; if that is longer than `_SHOWN_VALUE_MAX`, its start and size."""
    text, whole = _json_within(value, _SHOWN_VALUE_MAX)
    return text if whole else f"{text} ({_size_of(value)})"


def _json_within(value: object, room: int) -> tuple[str, bool]:
    """*value* in JSON notation in about *room* characters, and whether it is shown whole.

    Only as much of a string or a list is looked at as fits, so a huge value costs no more than
    a small one.
    """
    if isinstance(value, str):
        return _json_string_within(value, room)
    if isinstance(value, list):
        return _json_list_within(value, room)
    text = json.dumps(value)
    if len(text) <= room:
        return text, True
    return text[: max(room - len(_CUT), 1)] + _CUT, False


def _json_string_within(value: str, room: int) -> tuple[str, bool]:
    """*value* as a JSON string in *room* characters (cut, it ends ``…"``), and whether whole."""
    parts: list[str] = []
    used = len('""')
    for char in value:
        escaped = _json_char(char)
        if used + len(escaped) > room:
            while parts and used + len(_CUT) > room:
                used -= len(parts.pop())
            return f'"{"".join(parts)}{_CUT}"', False
        parts.append(escaped)
        used += len(escaped)
    return f'"{"".join(parts)}"', True


def _json_char(char: str) -> str:
    """One character as it appears inside a JSON string.

    A lone surrogate (an undecodable byte in an environment variable) is written as its
    ``\\udcxx`` escape: printed as it is, it would stop the output with a UnicodeEncodeError.
    """
    return json.dumps(char, ensure_ascii="\ud800" <= char <= "\udfff")[1:-1]


def _json_list_within(items: list[Any], room: int) -> tuple[str, bool]:
    """The items that fit whole, then ``…`` for the rest; a first item too long is shown cut."""
    parts: list[str] = []
    used = len("[]")
    for index, item in enumerate(items):
        separator = len(", ") if parts else 0
        more = index + 1 < len(items)
        # Keep room for ", …" after this item, in case the ones after it do not fit.
        text, whole = _json_within(item, room - used - separator - len(", " + _CUT) * more)
        if not whole:
            if parts:
                parts.append(_CUT)
            else:
                parts.extend([text, _CUT] if more else [text])
            return f"[{', '.join(parts)}]", False
        parts.append(text)
        used += separator + len(text)
    return f"[{', '.join(parts)}]", True


def _size_of(value: object) -> str:
    """How big *value* is, said after its cut rendering: ``5000 characters``, ``12 items``."""
    if isinstance(value, list):
        return f"{len(value)} item{'s' if len(value) != 1 else ''}"
    count = len(value) if isinstance(value, str) else len(json.dumps(value))
    return f"{count} characters"


def _shown_source(source: str) -> str:
    """*source*, or if it is too long its end (a file path's end names the file)."""
    if len(source) <= _SHOWN_SOURCE_MAX:
        return source
    return _CUT + source[len(source) - _SHOWN_SOURCE_MAX + len(_CUT) :]


# --- the process-wide settings ----------------------------------------------------------------

_lock = threading.Lock()
_current: Settings | None = None


def get_settings() -> Settings:
    """Return the process-wide settings, loading them from the file and environment on first use.

    Raises `ConfigError` if they cannot be loaded; the next call tries again. See `configure`,
    `reset_settings` and `override_settings` to replace them.
    """
    global _current
    with _lock:
        if _current is None:
            _current = load_settings().settings
        return _current


def configure(settings: Settings) -> None:
    """Make *settings* the process-wide settings that `get_settings` returns from now on."""
    global _current
    with _lock:
        _current = settings


def reset_settings() -> None:
    """Forget the process-wide settings; the next `get_settings` loads them afresh."""
    global _current
    with _lock:
        _current = None


@contextlib.contextmanager
def override_settings(changes: Settings | Mapping[str, object]) -> Iterator[Settings]:
    """Within the block, make `get_settings` return other settings; restore the old ones after.

    *changes* is either a complete `Settings` or dotted keys to change in the current settings
    (``{"mqtt.enabled": True}``, validated like `Settings.with_overrides`). Yields the settings
    in force inside the block. Meant for tests and embedding code; blocks must nest properly.
    """
    global _current
    settings = changes if isinstance(changes, Settings) else get_settings().with_overrides(changes)
    with _lock:
        previous, _current = _current, settings
    try:
        yield settings
    finally:
        with _lock:
            _current = previous

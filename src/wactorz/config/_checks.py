"""The project's validator vocabulary: checks that say in words what they accept.

A `Check` is an attrs validator with an ``expected`` sentence, which `ConfigError` reuses,
so a value that fails while being parsed and one that fails its check read alike. The
schema's fields use them, and so do the other attrs classes that check what they are
given (`wactorz.interfaces.mqtt.MQTTConnection`): one way to validate, one shape of error
(`InvalidField`, a `ValueError`). The topic and string checks defer to
`wactorz.core.topics`, the one owner of MQTT's rules.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, final

import attrs

from wactorz.config._errors import InvalidField
from wactorz.config._secret import Secret
from wactorz.core.ids import MAX_NODE_LENGTH, is_node_name
from wactorz.core.topics import filter_problem, text_problem, topic_problem


@final
@attrs.frozen
class Check:
    """A field validator that also says, in words, which values it accepts.

    The words are reused by `ConfigError`, so a value that fails while being parsed ('abc' for a
    port) and one that fails the check (70000) are explained the same way.
    """

    accepts: Callable[[Any], bool]
    expected: str
    explain: Callable[[Any], str | None] | None = None
    """What is wrong with a refused value, when that says more than `expected` alone (which
    character a broker would refuse, and where): added to the error in brackets."""

    def __call__(self, instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        self.check(attribute.name, value)

    def check(self, name: str, value: object) -> None:
        """Raise `InvalidField` for ``name`` unless ``value`` is accepted: the same check of a
        function's argument."""
        if not self.accepts(value):
            problem = self.explain(value) if self.explain is not None else None
            expected = self.expected if problem is None else f"{self.expected} ({problem})"
            raise InvalidField(name, value, expected)


def without_problem(problem: Callable[[Any], str | None], expected: str) -> Check:
    """A check that accepts what ``problem`` finds nothing wrong with, and names what it found."""
    return Check(lambda v: problem(v) is None, expected, explain=problem)


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def int_between(low: int, high: int, expected: str) -> Check:
    return Check(lambda v: is_int(v) and low <= v <= high, expected)


def number_between(low: float, high: float, expected: str) -> Check:
    return Check(lambda v: is_number(v) and low <= v <= high, expected)


def one_of(*choices: object) -> Check:
    return Check(
        lambda v: any(type(v) is type(c) and v == c for c in choices),
        "one of " + ", ".join(str(c) for c in choices),
    )


BOOL = Check(lambda v: isinstance(v, bool), "true or false (yes/no, on/off and 1/0 work too)")
POSITIVE_INT = Check(lambda v: is_int(v) and v > 0, "an integer greater than 0")
SECONDS = Check(lambda v: is_number(v) and v > 0, "a number of seconds greater than 0")
SECONDS_OR_ZERO = Check(lambda v: is_number(v) and v >= 0, "a number of seconds, 0 or more")
PERCENT = Check(lambda v: is_number(v) and 0 < v <= 100, "a percentage above 0, up to 100")
RATIO = number_between(0, 1, "a number from 0 to 1")
TEXT = Check(lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")

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


HOST = Check(
    _is_host,
    "an IP address like 127.0.0.1 or ::1, or a host name like broker.lan (labels of 1 to 63 "
    "ASCII letters, digits, '-' or '_' joined by dots, none starting or ending with '-', "
    f"{_HOST_NAME_MAX} characters at most)",
)
OPTIONAL_SECRET = Check(
    lambda v: v is None or (isinstance(v, Secret) and v.reveal() != ""),
    "a string, or empty for none",
)
OPTIONAL_URL = Check(
    lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"https?://\S+", v) is not None),
    "an http:// or https:// URL, or empty for none",
)
NODE_NAME = Check(is_node_name, f"a name of 1 to {MAX_NODE_LENGTH} letters, digits and underscores")


def _is_topic_prefix(value: object) -> bool:
    """A topic that MQTT accepts, with no empty level at either end."""
    return (
        isinstance(value, str)
        and topic_problem(value) is None
        and not value.startswith("/")
        and not value.endswith("/")
    )


TOPIC_PREFIX = Check(
    _is_topic_prefix,
    "a topic prefix without '+' or '#', control characters or a leading or trailing '/'",
)
OPTIONAL_MQTT_TEXT = Check(
    lambda v: v is None or (isinstance(v, str) and v != "" and text_problem(v) is None),
    "a string without control characters, or empty for none",
)
OPTIONAL_TOPIC_PREFIX = Check(
    lambda v: v is None or _is_topic_prefix(v),
    "a topic prefix without '+' or '#', control characters or a leading or trailing '/', "
    "or empty for the default",
)
DIRECTORY = Check(lambda v: isinstance(v, Path), "a directory path")
OPTIONAL_FILE = Check(
    lambda v: v is None or isinstance(v, Path), "a file path, or empty for the default"
)


def _ca_file_problem(value: object) -> str | None:
    """Why ``value`` cannot be a CA bundle to read, or None if it can (or is None)."""
    if value is None:
        return None
    if not isinstance(value, Path):
        return "not a path"
    if not value.exists():
        return "no such file"
    if not value.is_file():
        return "not a file"
    if not os.access(value, os.R_OK):
        return "this process may not read it"
    return None


OPTIONAL_CA_FILE = without_problem(
    _ca_file_problem,
    "the path of a readable PEM file holding the certificate of the CA that signed the "
    "broker's certificate (fix the path or the file's permissions), or empty for the "
    "system's CAs",
)
"""A CA bundle is checked when the settings load, so that a typo shows at once, not as a
failed TLS handshake on every reconnection."""

_ACTOR_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")
"""An actor's name, as `wactorz.core.actor.check_name` takes it (not imported: the settings
load before the runtime, and importing it would cost the command line its Trio import)."""

ACTOR_NAMES = Check(
    lambda v: (
        isinstance(v, tuple)
        and all(isinstance(name, str) and _ACTOR_NAME.fullmatch(name) for name in v)
    ),
    "actor names (a list, or comma-separated; empty for none), each starting with a letter or "
    "digit, then letters, digits, '_', '.' or '-'",
)


_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_.\-*?\[\]!]{1,128}")

NAME_PATTERNS = Check(
    lambda v: (
        isinstance(v, tuple) and all(isinstance(p, str) and _NAME_PATTERN.fullmatch(p) for p in v)
    ),
    "actor names or shell-style patterns such as 'echo', 'sensor-*' or '*' (a list, or "
    "comma-separated; empty for none)",
)
KIND_NAMES = Check(
    lambda v: (
        isinstance(v, tuple)
        and all(isinstance(k, str) and (k == "*" or _ACTOR_NAME.fullmatch(k)) for k in v)
    ),
    "kinds of actor named in mqtt.kinds, or '*' for all of them (a list, or comma-separated; "
    "empty for none)",
)
_IMPORT_PATH: Final = re.compile(
    r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"
)


def _is_kind_table(value: object) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(kind, str)
        and _ACTOR_NAME.fullmatch(kind) is not None
        and isinstance(path, str)
        and _IMPORT_PATH.fullmatch(path) is not None
        for kind, path in value.items()
    )


KIND_TABLE = Check(
    _is_kind_table,
    "a mapping of kind names (letters, digits, '_', '.', '-') to the import path of an Actor "
    "class, written 'package.module:Class'",
)


def _is_price(value: object) -> bool:
    return is_number(value) and value >= 0  # type: ignore[operator]


USD_PER_MTOK = Check(_is_price, "a price in US dollars per million tokens, 0 or more")


def _is_price_table(value: object) -> bool:
    # Imported here: the schema imports this module.
    from wactorz.config.schema import ModelPrice

    return isinstance(value, Mapping) and all(
        isinstance(model, str) and model.strip() != "" and isinstance(price, ModelPrice)
        for model, price in value.items()
    )


PRICE_TABLE = Check(
    _is_price_table,
    "a mapping of model ids to prices (input, output, cache_write, cache_read: US dollars per "
    "million tokens)",
)


def _is_mirror_filter(value: object) -> bool:
    """A topic filter starting with a plain level that the MQTT bridge does not use itself."""
    if filter_problem(value) is not None:
        return False
    assert isinstance(value, str)
    return value.split("/")[0] not in ("", "+", "#", "agents", "nodes", "system", "replies")


MIRROR_TOPICS = Check(
    lambda v: isinstance(v, tuple) and all(_is_mirror_filter(f) for f in v),
    "topic filters (a list, or comma-separated) each starting with a plain level other than "
    "agents, nodes, system and replies, like shared/#",
)


def _is_layer_list(value: object) -> bool:
    from wactorz.agents.sandbox import LAYERS  # the sandbox owns its layers' names

    return isinstance(value, tuple) and all(isinstance(v, str) and v in LAYERS for v in value)


SANDBOX_LAYERS = Check(
    _is_layer_list,
    "a list of sandbox layers among process, user, cgroup, filesystem, network, bubblewrap",
)
OPTIONAL_EXECUTABLE = Check(
    lambda v: v is None or (isinstance(v, str) and os.path.isabs(v) and "\0" not in v),
    "the absolute path of an executable, or null",
)


def as_secret(value: str | Secret | None) -> Secret | None:
    """Let code write ``LLMConfig(api_key="sk-...")``; an empty string means no secret."""
    if isinstance(value, str):
        return Secret(value) if value else None
    return value


def as_optional_path(value: str | os.PathLike[str] | None) -> Path | None:
    """`as_path`, letting None (and an empty string) through as "the default"."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return as_path(value)


def as_strings(value: str | Iterable[str]) -> tuple[str, ...]:
    """Let code write ``MQTTConfig(mirror_topics=["a/#"])``; one string is one item."""
    return (value,) if isinstance(value, str) else tuple(value)


def as_path(value: str | os.PathLike[str]) -> Path:
    return Path(value).expanduser()

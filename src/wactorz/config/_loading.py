"""Loading the settings: merging the sources, structuring the result, explaining what is wrong."""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, final, get_args

import attrs
import yaml
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError

from wactorz.config._checks import Check
from wactorz.config._converting import CONVERTER, Key, leaves
from wactorz.config._errors import ConfigError, InvalidField, kind_of, one_line, show
from wactorz.config._render import render_settings
from wactorz.config._secret import Secret
from wactorz.config.schema import Settings

__all__ = [
    "CONFIG_PATH_ENV",
    "ENV_PREFIX",
    "LoadedSettings",
    "field_keys",
    "load_settings",
    "put",
    "put_overrides",
    "structure_settings",
]


ENV_PREFIX: Final = "WACTORZ_"
"""Environment variables starting with this (in any case) set configuration keys."""

CONFIG_PATH_ENV: Final = "WACTORZ_CONFIG"
"""The environment variable naming the YAML file; it is a path, not a configuration key."""

_YAML_LOADER: Final = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
"""PyYAML's safe loader, in C where libyaml is there: some 30 times faster on a large file."""

_DEFAULT_CONFIG_FILE: Final = "wactorz.yaml"
_API_KEY_ENV: Final = "ANTHROPIC_API_KEY"


@final
@attrs.frozen
class LoadedSettings:
    """The result of `load_settings`: the settings, and where each value came from.

    ``sources`` maps every dotted key (``"mqtt.port"``) to "default", the config file's path,
    the environment variable's name, or the override's source ("override" or the CLI flag);
    for a mapping (``llm.prices``), the source of the last of its entries that was set.
    ``config_path`` is the YAML file that was read, or None.
    """

    settings: Settings
    sources: dict[str, str]
    config_path: Path | None = None

    def render(self) -> list[str]:
        """The effective configuration as ``key = value  # source`` lines, secrets masked."""
        return render_settings(self.settings, self.sources)


def put(
    tree: dict[str, Any], origins: dict[str, str], key: Key, value: object, source: str
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


def put_overrides(
    tree: dict[str, Any],
    origins: dict[str, str],
    overrides: Mapping[str, object],
    override_sources: Mapping[str, str],
) -> None:
    for dotted, value in overrides.items():
        if value is None:
            continue
        source = override_sources.get(dotted, "override")
        for key, leaf in leaves(value, tuple(dotted.split("."))):
            put(tree, origins, key, leaf, source)


def _environment_entries(env: Mapping[str, str]) -> Iterator[tuple[Key, str, str]]:
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
        data = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        where = ""
        if exc.problem_mark is not None:
            where = f" at line {exc.problem_mark.line + 1}, column {exc.problem_mark.column + 1}"
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"{label}: invalid YAML{where}: {one_line(problem)}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}: invalid YAML: {one_line(str(exc))}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"{label}: expected a mapping of settings (lines of 'key: value') at the top level, "
            f"got {kind_of(data)}"
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
        for key, value in leaves(_read_yaml(config_path, file_label)):
            put(tree, origins, key, value, file_label)
    for key, text, variable in _environment_entries(environ):
        put(tree, origins, key, text, variable)
    put_overrides(tree, origins, overrides or {}, override_sources or {})
    settings = structure_settings(tree, origins, file_label)
    sources = {".".join(key): _source_of(".".join(key), origins) for key in field_keys()}
    return LoadedSettings(settings, sources, found[0] if found else None)


def _source_of(dotted: str, origins: Mapping[str, str]) -> str:
    """Where a field's value came from; for a mapping (``llm.prices``), where its entries did."""
    if dotted in origins:
        return origins[dotted]
    inner = [source for key, source in origins.items() if key.startswith(dotted + ".")]
    return inner[-1] if inner else "default"


# --- explaining what went wrong ---------------------------------------------------------------


def structure_settings(
    tree: dict[str, Any], origins: dict[str, str], file_label: str | None
) -> Settings:
    try:
        return CONVERTER.structure(tree, Settings)
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

    def problems(self, exc: BaseException, key: Key) -> Iterator[str]:
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
            elif isinstance(inner, InvalidField):
                yield self._invalid((*key, inner.name), inner)
            else:
                yield self._invalid(key, inner)

    def _source(self, key: Key) -> str | None:
        dotted = ".".join(key)
        if dotted in self.origins:
            return self.origins[dotted]
        for known, source in self.origins.items():
            if known.startswith(dotted + ".") or dotted.startswith(known + "."):
                return source
        return None

    def _invalid(self, key: Key, exc: BaseException) -> str:
        dotted = ".".join(key)
        field = _field_at(key)
        value = _lookup(self.tree, key)
        if value is _MISSING:
            value = exc.value if isinstance(exc, InvalidField) else _default_of(field)
        expected = exc.expected if isinstance(exc, InvalidField) else _expected_of(field)
        shown = "'***'" if field is not None and _holds_secret(field) else show(value)
        source = self._source(key)
        origin = f"from {source}" if source is not None else "(the default)"
        return f"{dotted}: {shown} {origin} is not valid: expected {expected}"

    def _unknown(self, key: Key, owner: type) -> str:
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
    def _hint(section: Key, name: str, known: list[str], source: str | None) -> str:
        if source is not None and source.upper().startswith(ENV_PREFIX) and not section:
            head, _, rest = name.partition("_")
            inner = section_type(attrs.fields_dict(Settings).get(head))
            if inner is not None and rest in attrs.fields_dict(inner):
                nested = f"{ENV_PREFIX}{head.upper()}__{rest.upper()}"
                return f"; nested keys take a double underscore: {nested}"
        close = difflib.get_close_matches(name, known, n=1)
        if close:
            return f"; did you mean {'.'.join((*section, close[0]))!r}?"
        return ""


_MISSING: Final = object()


def _lookup(tree: Mapping[str, Any], key: Key) -> object:
    node: object = tree
    for name in key:
        if not isinstance(node, Mapping) or name not in node:
            return _MISSING
        node = node[name]
    return node


def _field_at(key: Key) -> attrs.Attribute[Any] | None:
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


def _default_of(field: attrs.Attribute[Any] | None) -> object:
    if field is None:
        return None
    factory = getattr(field.default, "factory", None)
    return factory() if callable(factory) else field.default


def section_type(field: attrs.Attribute[Any] | None) -> type[Any] | None:
    """The settings class a field holds, if it is a section rather than a value."""
    if field is not None and isinstance(field.type, type) and attrs.has(field.type):
        return field.type
    return None


def _expected_of(field: attrs.Attribute[Any] | None) -> str:
    if field is None:
        return "a known key"
    section = section_type(field)
    if section is not None:
        names = ", ".join(f.name for f in attrs.fields(section))
        return f"a section with keys {names}"
    if isinstance(field.validator, Check):
        return field.validator.expected
    return f"a value of type {field.type}"


def _holds_secret(field: attrs.Attribute[Any]) -> bool:
    return field.type is Secret or Secret in get_args(field.type)


def field_keys(owner: type[Any] = Settings, prefix: Key = ()) -> Iterator[Key]:
    """The dotted key of every value in the settings tree, in declaration order."""
    for field in attrs.fields(owner):
        section = section_type(field)
        if section is not None:
            yield from field_keys(section, (*prefix, field.name))
        else:
            yield (*prefix, field.name)

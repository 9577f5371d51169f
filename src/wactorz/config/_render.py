"""Showing the settings: as plain trees, and as bounded ``key = value  # source`` lines."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs

from wactorz.config._converting import CONVERTER, DISPLAY_CONVERTER

if TYPE_CHECKING:
    from wactorz.config.schema import Settings

__all__ = ["render_settings", "settings_to_dict"]


def settings_to_dict(settings: Settings, *, reveal_secrets: bool = False) -> dict[str, Any]:
    """The settings as plain nested dicts of YAML/JSON-ready values.

    Secrets are ``"***"`` unless *reveal_secrets*; `load_settings` structures the revealed form
    back into equal settings.
    """
    converter = CONVERTER if reveal_secrets else DISPLAY_CONVERTER
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
        for key, value in _settings_leaves(settings_to_dict(settings), type(settings))
    ]
    if sources is None:
        return [text for text, _ in pairs]
    width = max((len(text) for text, _ in pairs if len(text) <= _SOURCE_COLUMN_MAX), default=0)
    return [
        f"{text:<{width}}  # {_shown_source(sources.get(key, 'default'))}" for text, key in pairs
    ]


def _settings_leaves(
    tree: Mapping[str, Any], section: type, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], object]]:
    """One (key, value) per setting: sections are walked, a mapping setting is one value."""
    for field in attrs.fields(section):
        value = tree[field.name]
        if isinstance(field.type, type) and attrs.has(field.type):
            yield from _settings_leaves(value, field.type, (*prefix, field.name))
        else:
            yield (*prefix, field.name), value


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

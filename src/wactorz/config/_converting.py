"""Turning strings and YAML values into the schema's typed fields, and settings back into trees."""

from __future__ import annotations

import math
import os
import types
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final, Literal, Union, get_args, get_origin

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn

from wactorz.config._checks import is_int
from wactorz.config._secret import Secret

__all__ = ["CONVERTER", "DISPLAY_CONVERTER", "Key", "leaves"]


_TRUE_WORDS: Final = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS: Final = frozenset({"false", "0", "no", "off"})


def _structure_bool(value: object, _: type) -> bool:
    # cattrs' default is bool(value), which makes "false" true.
    if isinstance(value, bool):
        return value
    if is_int(value) and value in (0, 1):
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


CONVERTER: Final = _make_converter()
DISPLAY_CONVERTER: Final = CONVERTER.copy()
DISPLAY_CONVERTER.register_unstructure_hook(Secret, str)


Key = tuple[str, ...]


def leaves(value: object, prefix: Key = ()) -> Iterator[tuple[Key, object]]:
    """Flatten nested mappings into (key path, value) pairs; empty mappings vanish."""
    if isinstance(value, Mapping):
        for name, child in value.items():
            yield from leaves(child, (*prefix, str(name)))
    else:
        yield prefix, value

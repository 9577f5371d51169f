"""How a configuration problem is told: `ConfigError` for the user, `InvalidField` from a check."""

from __future__ import annotations

import reprlib
from typing import final

from wactorz.config._secret import Secret

__all__ = ["ConfigError", "InvalidField", "kind_of", "one_line", "show"]


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


class InvalidField(ValueError):
    """A field validator rejected a value; carries what the field accepts, for `ConfigError`."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        super().__init__(f"{name}: {show(value)} is not valid: expected {expected}")
        self.name = name
        self.value = value
        self.expected = expected


_short = reprlib.Repr()
_short.maxstring = 60
_short.maxother = 60


def show(value: object) -> str:
    if isinstance(value, Secret):
        return "'***'"
    return _short.repr(value)


def one_line(text: str) -> str:
    return " ".join(text.split())


def kind_of(value: object) -> str:
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean"}
    return names.get(type(value), f"a {type(value).__name__}")

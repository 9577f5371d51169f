"""`Secret`: a string that never shows itself by accident."""

from __future__ import annotations

import hmac
from typing import NoReturn, final

__all__ = ["Secret"]


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

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        return (Secret, (self._value,))

"""What the sandbox can do on this machine: a `Layer` per isolation layer, in a `SandboxReport`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, final

import attrs

__all__ = ["Check", "Layer", "SandboxReport"]


@final
@attrs.frozen
class Layer:
    """One isolation layer: whether runs get it, and why (or what is lost without it).

    ``wanted`` is False for a layer the policy does not ask for (``network=True``,
    ``use_bubblewrap=False``): off, and no cause for a warning. A layer the machine cannot
    give, or that ``Policy.disable`` turned off, is wanted and off: a warning.
    """

    name: str
    active: bool
    detail: str
    wanted: bool = True

    @property
    def status(self) -> str:
        """``on``, ``off``, or ``not asked``."""
        if self.active:
            return "on"
        return "off" if self.wanted else "not asked"


@final
@attrs.frozen
class Check:
    """The outcome of one live check of `doctor`: a layer seen doing its job, or not."""

    name: str
    passed: bool
    detail: str


@final
@attrs.frozen
class SandboxReport:
    """Every layer, on or off and why; the interpreter Python snippets run with; and, from
    `doctor`, the live checks that watched each active layer refuse something."""

    layers: tuple[Layer, ...]
    python: str | None
    python_detail: str
    checks: tuple[Check, ...] = ()

    def layer(self, name: str) -> Layer:
        """The layer called ``name``; `KeyError` naming the known ones otherwise."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        known = ", ".join(layer.name for layer in self.layers)
        raise KeyError(f"no sandbox layer {name!r} (known: {known})")

    @property
    def active(self) -> tuple[str, ...]:
        """The names of the layers runs get, in report order."""
        return tuple(layer.name for layer in self.layers if layer.active)

    def missing(self, required: Iterable[str]) -> list[Layer]:
        """The layers among ``required`` that are off."""
        wanted = set(required)
        return [layer for layer in self.layers if layer.name in wanted and not layer.active]

    def warnings(self) -> list[str]:
        """One line per layer that is off although the policy wanted it (unavailable here, or
        disabled), saying what is lost; then one per failed live check."""
        lines = [
            f"sandbox layer '{layer.name}' is off: {layer.detail}"
            for layer in self.layers
            if not layer.active and layer.wanted
        ]
        lines += [
            f"sandbox check '{check.name}' FAILED: {check.detail}"
            for check in self.checks
            if not check.passed
        ]
        return lines

    def summary(self) -> str:
        """One line for a start-up log: the layers on, then the ones off and why in brief."""
        on = ", ".join(self.active) or "none"
        off = [
            f"{layer.name} ({'LOST' if layer.wanted else 'not asked'})"
            for layer in self.layers
            if not layer.active
        ]
        return f"sandbox layers on: {on}" + (f"; off: {', '.join(off)}" if off else "")

    def format(self) -> str:
        """The report as text for a terminal: a line per layer, the interpreter, the checks."""
        width = max(len(layer.name) for layer in self.layers)
        status_width = max(len(layer.status) for layer in self.layers)
        lines = [
            f"  {layer.name.ljust(width)}  {layer.status.ljust(status_width)}  {layer.detail}"
            for layer in self.layers
        ]
        lines.append(f"  {'python'.ljust(width)}  {'':{status_width}}  {self.python_detail}")
        if self.checks:
            lines.append("live checks:")
            lines += [
                f"  {check.name.ljust(width)}  {'pass' if check.passed else 'FAIL'}  {check.detail}"
                for check in self.checks
            ]
        return "sandbox layers:\n" + "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-compatible data."""
        return {
            "layers": [
                {
                    "name": layer.name,
                    "active": layer.active,
                    "wanted": layer.wanted,
                    "detail": layer.detail,
                }
                for layer in self.layers
            ],
            "python": self.python,
            "python_detail": self.python_detail,
            "checks": [
                {"name": check.name, "passed": check.passed, "detail": check.detail}
                for check in self.checks
            ],
        }

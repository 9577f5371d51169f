"""The process-wide settings: loaded once, lazily, and replaceable by embedding code and tests."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping

from wactorz.config._loading import load_settings
from wactorz.config.schema import Settings

__all__ = ["configure", "get_settings", "override_settings", "reset_settings"]


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

"""The runtime file: where a running web interface says, to local clients only, how to reach it.

``<runtime dir>/web-<port>.json`` holds the URL, the node, the process id and, when the
token was generated at start, the token; clients on the same machine (``wactorz chat``)
read it instead of asking the user. The file is created with mode 0600 in a directory of
mode 0700, so only the user who runs the service can read it, and removed when the web
interface stops. As Jupyter does with its runtime files.

The runtime directory is ``$XDG_RUNTIME_DIR/wactorz``, else ``~/.local/share/wactorz/runtime``
(as Jupyter's). (Not a ``WACTORZ_`` variable: those are all settings.)
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

__all__ = ["read_runtime_files", "remove_runtime_file", "runtime_dir", "write_runtime_file"]


def runtime_dir() -> Path:
    """The directory runtime files go in (see the module docstring); not created here."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return Path(xdg) / "wactorz"
    return Path.home() / ".local" / "share" / "wactorz" / "runtime"


def write_runtime_file(directory: Path, port: int, contents: dict[str, Any]) -> Path:
    """Write ``contents`` as ``web-<port>.json`` in ``directory``, readable by the user only.

    The directory is created with mode 0700 if missing. A file left by an earlier run on the
    same port is replaced; the new one is created with mode 0600 from the start (never
    readable by others, not even for a moment). Raises `OSError` if it cannot be written.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"web-{port}.json"
    partial = directory / f".web-{port}.json.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            json.dump(contents, file, indent=2)
            file.write("\n")
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
    return path


def remove_runtime_file(path: Path) -> None:
    """Remove a runtime file this process wrote, if it is still there and still ours."""
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("pid") == os.getpid():
            path.unlink()


def read_runtime_files(directory: Path | None = None) -> list[dict[str, Any]]:
    """What every runtime file in ``directory`` (default: `runtime_dir`) says, newest first.

    For local clients looking for a running service; unreadable or malformed files are
    skipped.
    """
    found: list[tuple[float, dict[str, Any]]] = []
    for path in (directory or runtime_dir()).glob("web-*.json"):
        with contextlib.suppress(OSError, ValueError):
            contents = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(contents, dict):
                found.append((path.stat().st_mtime, contents))
    return [contents for _, contents in sorted(found, key=lambda item: -item[0])]

"""``/docs/api/python/``: the API reference pdoc renders, made on first request and cached.

The first request for the reference renders it: ``python -m wactorz.interfaces.web.apidocs
DIR`` runs pdoc over the whole ``wactorz`` package in a child process, into a fresh
directory under the cache, which is then renamed into place. A child process rather than a
worker thread: rendering imports every module of the package (what the service never
loads, the MQTT client and trio-asyncio included), and none of that, nor pdoc's memory,
should stay in the service. Later requests, and later runs of the same code, are served
from the cache: its directory is named after the version and a fingerprint of the
package's source files (their paths, sizes and modification times), so an edited source
renders afresh.

The cache is ``$XDG_CACHE_HOME/wactorz/api-docs`` (default ``~/.cache/wactorz/api-docs``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Final, final

import trio

import wactorz

__all__ = ["ApiDocs", "DocsUnavailable", "default_cache_dir"]

logger = logging.getLogger("wactorz.web")

RENDER_TIMEOUT_S: Final = 120.0


class DocsUnavailable(Exception):
    """The reference could not be rendered; ``str()`` says why and what to do."""


def default_cache_dir() -> Path:
    """Where rendered references are kept (see the module docstring)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wactorz" / "api-docs"


def _fingerprint() -> str:
    root = Path(wactorz.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


@final
class ApiDocs:
    """The rendered reference of this process's ``wactorz``, under ``cache_dir``."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self._directory: Path | None = None
        self._lock = trio.Lock()

    async def directory(self) -> Path:
        """The directory holding the rendered HTML, rendering it first if needed.

        Concurrent callers wait for one rendering. Raises `DocsUnavailable` if pdoc fails
        (the next call tries again).
        """
        if self._directory is not None:
            return self._directory
        async with self._lock:
            if self._directory is None:
                self._directory = await self._render()
        return self._directory

    async def _render(self) -> Path:
        version = wactorz.__version__.replace("/", "_")
        target = self.cache_dir / f"{version}-{await trio.to_thread.run_sync(_fingerprint)}"
        if (target / "index.html").is_file():
            return target
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = self.cache_dir / f".rendering-{os.getpid()}-{target.name}"
        shutil.rmtree(partial, ignore_errors=True)
        logger.info("web: rendering the API reference into %s", target)
        try:
            with trio.fail_after(RENDER_TIMEOUT_S):
                result = await trio.run_process(
                    [sys.executable, "-m", "wactorz.interfaces.web.apidocs", str(partial)],
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
        except trio.TooSlowError:
            raise DocsUnavailable(
                f"rendering the API reference took over {RENDER_TIMEOUT_S:g} s; try again"
            ) from None
        if result.returncode != 0 or not (partial / "index.html").is_file():
            shutil.rmtree(partial, ignore_errors=True)
            output = result.stderr.decode(errors="replace").strip().splitlines()
            logger.error(
                "web: rendering the API reference failed (exit status %d): %s",
                result.returncode,
                "\n".join(output[-20:]),
            )
            raise DocsUnavailable(
                "rendering the API reference failed; the service's log has pdoc's output"
            )
        try:
            partial.rename(target)
        except OSError:
            shutil.rmtree(partial, ignore_errors=True)  # another process got there first
            if not (target / "index.html").is_file():
                raise
        return target


def main(argv: list[str]) -> int:
    """Render the reference of ``wactorz`` into the directory ``argv[0]``."""
    import pdoc
    import pdoc.render

    if len(argv) != 1:
        print("usage: python -m wactorz.interfaces.web.apidocs OUTPUT_DIRECTORY", file=sys.stderr)
        return 2
    pdoc.render.configure(search=True, show_source=True)
    pdoc.pdoc("wactorz", output_directory=Path(argv[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

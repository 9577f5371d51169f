"""Hypothesis profiles for the whole suite, chosen with ``HYPOTHESIS_PROFILE`` (default ``ci``).

- ``ci``: enough examples to matter, the whole suite still runs in minutes;
- ``dev``: a quick look while editing;
- ``long``: a deep search, e.g.
  ``HYPOTHESIS_PROFILE=long python -m pytest tests/core/test_supervisor_model.py``.

No profile has a deadline: the Trio-driven tests run whole actor systems per
example, and their timing says nothing about correctness.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

settings.register_profile("ci", max_examples=500, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "long", max_examples=3000, stateful_step_count=100, deadline=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True, scope="session")
def _keep_runtime_files_and_caches_out_of_the_home_directory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[None]:
    """The web interface's runtime files and API-reference cache go to a directory of the
    run, for every test and every service a test starts as a subprocess."""
    saved = {name: os.environ.get(name) for name in ("XDG_RUNTIME_DIR", "XDG_CACHE_HOME")}
    os.environ["XDG_RUNTIME_DIR"] = str(tmp_path_factory.mktemp("runtime"))
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("cache"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

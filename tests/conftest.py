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

from hypothesis import settings

settings.register_profile("ci", max_examples=500, deadline=None, print_blob=True)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.register_profile(
    "long", max_examples=3000, stateful_step_count=100, deadline=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

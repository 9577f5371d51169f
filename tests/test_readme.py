"""The README's quick start runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.read_text().split("```")[1]
    assert "python -m wactorz" in first_block
    assert "nox -s tests" in first_block


def test_quick_start_runs(capsys: pytest.CaptureFixture[str]) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    quick_start = blocks[0]
    exec(compile(quick_start, "README quick start", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == "{'echo': 'hi'}"

"""The README's Python snippets: the quick start runs as written, and every snippet passes
the project's own ``mypy --strict``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parent.parent
README: Final = ROOT / "README.md"
_PYTHON_BLOCK: Final = re.compile(r"```python\n(.*?)```", flags=re.S)

PRELUDES: Final = {
    # The supervision snippet shows a supervisor's calls, not the actors it supervises.
    "sup = Supervisor(system": """\
from typing import Any

from wactorz import Actor, ActorSystem


class DatabaseActor(Actor):
    def __init__(
        self, system: ActorSystem | None = None, *, name: str | None = None, dsn: str
    ) -> None:
        super().__init__(system, name=name)
        self.dsn = dsn

    async def _process(self, message: dict[str, Any]) -> object:
        return None


class CacheActor(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        return None
""",
    # The embedding snippet spawns the quick start's Echo.
    "nursery.start(ActorSystem().run)": """\
from typing import Any

from wactorz import Actor


class Echo(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        return {"echo": message["text"]}
""",
}
"""What the test puts before a snippet that uses names defined elsewhere in the README,
keyed by text that only that snippet contains."""


def python_blocks() -> list[tuple[int, str]]:
    """Each ```python block of the README, with the README line its code starts on."""
    text = README.read_text()
    return [
        (text.count("\n", 0, match.start(1)) + 1, match.group(1))
        for match in _PYTHON_BLOCK.finditer(text)
    ]


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.read_text().split("```")[1]
    assert "python -m wactorz" in first_block
    assert "nox -s tests" in first_block


def test_quick_start_runs(capsys: pytest.CaptureFixture[str]) -> None:
    _, quick_start = python_blocks()[0]
    exec(compile(quick_start, "README quick start", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip() == "{'echo': 'hi'}"


async def test_the_answering_later_example_works_as_described() -> None:
    import trio

    from wactorz.core.actor import Actor
    from wactorz.core.errors import MessageRejected
    from wactorz.core.registry import ActorSystem

    (block,) = [code for _, code in python_blocks() if "class Desk" in code]
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(block, "README desk", "exec"), namespace)
    desk_class = namespace["Desk"]
    assert isinstance(desk_class, type) and issubclass(desk_class, Actor)
    answers: list[object] = []
    async with ActorSystem() as system, trio.open_nursery() as nursery:
        desk = await system.spawn(desk_class, name="desk")
        waiting: dict[str, object] = vars(desk)["waiting"]

        async def ask() -> None:
            answers.append(await system.ask("desk", {"wait_for": "k"}))

        nursery.start_soon(ask)
        while not waiting:
            await trio.sleep(0.001)
        await system.send("desk", {"done": "k"})
        with pytest.raises(MessageRejected, match="wait_for"):
            await system.ask("desk", {"other": 1})
    assert answers == [{"ok": True}]


def test_every_prelude_completes_exactly_one_snippet() -> None:
    blocks = [code for _, code in python_blocks()]
    for marker in PRELUDES:
        assert sum(marker in code for code in blocks) == 1, marker


def test_every_snippet_passes_mypy_strict(tmp_path: Path) -> None:
    snippets = tmp_path / "snippets"
    snippets.mkdir()
    where: dict[str, tuple[int, int]] = {}
    """Each snippet file's name: the README line its code starts on, its prelude's length."""
    for number, (first_line, code) in enumerate(python_blocks(), start=1):
        prelude = "".join(text for marker, text in PRELUDES.items() if marker in code)
        name = f"readme_snippet_{number}.py"
        (snippets / name).write_text(prelude + code)
        where[name] = (first_line, prelude.count("\n"))
    from mypy import api as mypy_api  # the test extra installs mypy

    # One run for all the snippets: mypy spends most of its time reading wactorz and Trio.
    out, err, status = mypy_api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--strict",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            "--no-error-summary",
            "--no-pretty",
            str(snippets),
        ]
    )

    def in_readme(problem: re.Match[str]) -> str:
        first_line, prelude_lines = where[Path(problem[1]).name]
        line = int(problem[2]) - prelude_lines
        if line < 1:
            return f"prelude of the README snippet at line {first_line}, line {problem[2]}:"
        return f"README.md:{first_line + line - 1}:"

    problems = re.sub(r"^(\S*readme_snippet_\d+\.py):(\d+):", in_readme, out, flags=re.M)
    assert status == 0, problems + err

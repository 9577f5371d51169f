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


async def test_the_answering_later_example_works_as_described() -> None:
    import trio

    from wactorz.core.actor import Actor, DeferredReply
    from wactorz.core.errors import MessageRejected
    from wactorz.core.registry import ActorSystem

    (block,) = [
        b
        for b in re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
        if "class Desk" in b
    ]
    namespace = {"Actor": Actor, "DeferredReply": DeferredReply, "MessageRejected": MessageRejected}
    exec(compile(block, "README desk", "exec"), namespace)
    desk_class = namespace["Desk"]
    answers: list[object] = []
    async with ActorSystem() as system, trio.open_nursery() as nursery:
        desk = await system.spawn(desk_class, name="desk")

        async def ask() -> None:
            answers.append(await system.ask("desk", {"wait_for": "k"}))

        nursery.start_soon(ask)
        while not desk.waiting:
            await trio.sleep(0.001)
        await system.send("desk", {"done": "k"})
        with pytest.raises(MessageRejected, match="wait_for"):
            await system.ask("desk", {"other": 1})
    assert answers == [{"ok": True}]

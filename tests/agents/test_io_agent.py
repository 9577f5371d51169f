"""IOAgent in a real actor system: files kept to its workspace, shell and code blocks sandboxed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.agents.test_code_agent import Consumer
from wactorz import ActorSystem, MessageRejected
from wactorz.agents.code_agent import CodeAgent
from wactorz.agents.io_agent import IOAgent, code_blocks
from wactorz.config import SandboxConfig

LIMIT_S = 20.0


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the workspace, with a file no operation may see or change."""
    place = tmp_path / "outside"
    place.mkdir()
    (place / "secret.txt").write_text("do not read")
    return place


def config(tmp_path: Path, **overrides: Any) -> SandboxConfig:
    return SandboxConfig(enabled=True, root=tmp_path / "workspace", **overrides)


@pytest.fixture
async def system() -> AsyncIterator[ActorSystem]:
    async with ActorSystem() as system:
        yield system


async def call(system: ActorSystem, name: str, **arguments: Any) -> Any:
    with trio.fail_after(LIMIT_S):
        return await system.call_tool("io", name, arguments)


async def test_files_round_trip_inside_the_workspace(system: ActorSystem, tmp_path: Path) -> None:
    await system.spawn(IOAgent, "io", config=config(tmp_path))
    root = tmp_path / "workspace"
    assert (await call(system, "make_directory", path="notes"))["kind"] == "dir"
    written = await call(system, "write_file", path="notes/a.txt", content="hello\n")
    assert (written["path"], written["size"]) == ("notes/a.txt", 6)
    await call(system, "append_file", path="notes/a.txt", content="world\n")
    assert (root / "notes/a.txt").read_text() == "hello\nworld\n"
    read = await call(system, "read_file", path="notes/a.txt", offset=6)
    assert (read["data"], read["eof"]) == ("world\n", True)
    await call(system, "write_file", path="bin.dat", content="AAEC/w==", base64=True)
    assert (root / "bin.dat").read_bytes() == b"\x00\x01\x02\xff"
    assert (await call(system, "read_file", path="bin.dat", binary=True))["data"] == "AAEC/w=="
    listing = await call(system, "list_files", pattern="**/*.txt")
    assert [e["path"] for e in listing["entries"]] == ["notes/a.txt"]
    await call(system, "move_file", source="notes/a.txt", destination="b.txt")
    assert (await call(system, "stat_file", path="b.txt"))["size"] == 12
    await call(system, "delete_file", path="notes")
    assert sorted(p.name for p in root.iterdir()) == ["b.txt", "bin.dat"]


@pytest.mark.parametrize(
    ("tool", "arguments", "rule"),
    [
        ("read_file", {"path": "../outside/secret.txt"}, "leaves the workspace"),
        ("read_file", {"path": "/etc/passwd"}, "absolute"),
        ("read_file", {"path": "link/secret.txt"}, "symbolic link"),
        ("write_file", {"path": "link/new.txt", "content": "x"}, "symbolic link"),
        ("list_files", {"path": "link"}, "symbolic link"),
        ("delete_file", {"path": "../outside", "recursive": True}, "leaves the workspace"),
        ("move_file", {"source": "a.txt", "destination": "../outside/a.txt"}, "leaves"),
    ],
)
async def test_escapes_are_refused_naming_the_path_and_the_rule(
    system: ActorSystem,
    tmp_path: Path,
    outside: Path,
    tool: str,
    arguments: dict[str, Any],
    rule: str,
) -> None:
    await system.spawn(IOAgent, "io", config=config(tmp_path))
    root = tmp_path / "workspace"
    (root / "link").symlink_to(outside)
    (root / "a.txt").write_text("a")
    with pytest.raises(MessageRejected, match=rule) as refused:
        await call(system, tool, **arguments)
    shown = arguments.get("path", arguments.get("destination"))
    assert repr(shown) in str(refused.value)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "do not read"


async def test_over_size_reads_and_writes_are_refused(system: ActorSystem, tmp_path: Path) -> None:
    await system.spawn(IOAgent, "io", config=config(tmp_path, max_file_mb=1))
    (tmp_path / "workspace" / "big").write_bytes(b"x" * (2 << 20))
    with pytest.raises(MessageRejected, match="big"):
        await call(system, "read_file", path="big")
    with pytest.raises(MessageRejected, match="new"):
        await call(system, "write_file", path="new", content="y" * (2 << 20))
    assert (await call(system, "read_file", path="big", limit=3))["data"] == "xxx"


async def test_the_shell_is_off_unless_allowed_and_says_how_to_allow_it(
    system: ActorSystem, tmp_path: Path
) -> None:
    await system.spawn(IOAgent, "io", config=config(tmp_path))
    assert "run_shell" not in [owner.tool.name for owner in system.tools()]
    with pytest.raises(MessageRejected, match="no tool named 'run_shell'"):
        await call(system, "run_shell", command="ls")
    agent = system.lookup("io")
    assert isinstance(agent, IOAgent)
    agent.config = config(tmp_path, allow_shell=False)
    with pytest.raises(MessageRejected, match="sandbox.allow_shell"):
        await agent.run_shell("ls")


async def test_a_shell_command_works_in_the_workspace_and_nowhere_else(
    system: ActorSystem, tmp_path: Path, outside: Path
) -> None:
    await system.spawn(IOAgent, "io", config=config(tmp_path, allow_shell=True))
    await call(system, "write_file", path="in.txt", content="from the agent")
    command = (
        f"cat in.txt; echo made > out.txt; echo x > {outside}/escaped.txt; "
        f"cat {outside}/secret.txt; echo end"
    )
    result = await call(system, "run_shell", command=command)
    assert result["stdout"].startswith("from the agent")
    assert result["stdout"].endswith("end\n")
    assert "do not read" not in result["stdout"]
    assert (await call(system, "read_file", path="out.txt"))["data"] == "made\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


async def test_code_blocks_run_in_order_through_the_code_agent_streaming_each(
    system: ActorSystem, tmp_path: Path
) -> None:
    await system.spawn(CodeAgent, "code", config=config(tmp_path))
    await system.spawn(IOAgent, "io", config=config(tmp_path))
    consumer = await system.spawn(Consumer, "consumer")
    text = (
        "Here you go:\n\n```python\nprint('one')\n```\n\nand\n\n"
        '~~~bash\necho two; exit 3\n~~~\n\n```json\n{"not": "run"}\n```\n'
    )
    result = await call(system, "run_code_blocks", text=text, stream_to="consumer")
    with trio.fail_after(LIMIT_S):
        await consumer.ended.wait()
    blocks = result["blocks"]
    assert [(b["language"], b["stdout"], b["exit_code"]) for b in blocks] == [
        ("python", "one\n", 0),
        ("sh", "two\n", 3),
    ]
    assert result["ok"] is False
    parts: list[tuple[str, Any]] = []
    for part in (p for message in consumer.got for p in message["parts"]):
        if "text" in part and parts and parts[-1][0] == part["kind"]:
            parts[-1] = (part["kind"], parts[-1][1] + part["text"])  # one print, two writes
        else:
            parts.append((part["kind"], part.get("text", part.get("block"))))
    assert parts == [
        ("block_start", 0),
        ("stdout", "one\n"),
        ("block_end", 0),
        ("block_start", 1),
        ("stdout", "two\n"),
        ("block_end", 1),
    ]
    with pytest.raises(MessageRejected, match="no code block"):
        await call(system, "run_code_blocks", text="just prose")


def test_code_blocks_are_found_by_their_fence_and_language() -> None:
    text = "```py\na\n```\n```\nno language\n```\n````sh\nb\n```\nc\n````\n```ruby\nd\n```\n"
    assert code_blocks(text) == [("python", "a\n"), ("sh", "b\n```\nc\n")]

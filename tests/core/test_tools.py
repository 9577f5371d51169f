"""Tools: declared once on an actor class, listed by the system, called as checked asks."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from wactorz import Actor, ActorSystem, MessageRejected, Tool, ToolOwner, tool, tool_call

READ_SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "minLength": 1},
        "offset": {"type": "integer", "minimum": 0},
        "lines": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["path"],
}


class Files(Actor):
    """A pretend file server with two tools and ordinary messages besides."""

    def __init__(self, system: ActorSystem | None = None, *, name: str | None = None) -> None:
        super().__init__(system, name=name)
        self.calls: list[tuple[str, int]] = []
        self.plain: list[dict[str, Any]] = []

    async def _process(self, message: dict[str, Any]) -> object:
        self.plain.append(message)
        return {"plain": True}

    @tool("Read a file of the workspace.", input_schema=READ_SCHEMA)
    async def read(self, path: str, offset: int = 0, lines: list[int] | None = None) -> object:
        self.calls.append((path, offset))
        return {"path": path, "offset": offset, "sender": self.current_envelope.sender}

    @tool("Say how many calls were served.", name="count-calls")
    async def count(self) -> int:
        return len(self.calls)

    @tool("Always refuses.")
    async def refuse(self) -> None:
        raise MessageRejected("not today: try tomorrow")


class MoreFiles(Files):
    """Inherits the tools, overrides one, adds one."""

    @tool("Read a file, newer.", input_schema={"type": "object", "properties": {"path": {}}})
    async def read(self, path: str = "", offset: int = 0, lines: list[int] | None = None) -> object:
        return {"newer": path}

    @tool("Delete nothing.")
    async def delete(self) -> str:
        return "deleted nothing"


class Caller(Actor):
    async def _process(self, message: dict[str, Any]) -> object:
        return await self.call_tool(message["to"], "read", {"path": "x"})


def test_tools_are_declared_on_the_class_sorted_by_name() -> None:
    assert [t.name for t in Files.tools()] == ["count-calls", "read", "refuse"]
    (read,) = (t for t in Files.tools() if t.name == "read")
    assert read == Tool(
        "read", "Read a file of the workspace.", {**READ_SCHEMA, "additionalProperties": False}
    )
    assert read.to_json()["input_schema"]["required"] == ["path"]
    assert Actor.tools() == ()
    assert [t.name for t in MoreFiles.tools()] == ["count-calls", "delete", "read", "refuse"]
    assert (
        next(t for t in MoreFiles.tools() if t.name == "read").description == "Read a file, newer."
    )


async def test_the_system_lists_every_tool_of_every_running_actor(system: ActorSystem) -> None:
    files = await system.spawn(Files, "files")
    more = await system.spawn(MoreFiles, "more")
    await system.spawn(Caller, "caller")
    listed = system.tools()
    assert [(o.actor, o.tool.name) for o in listed] == [
        ("files", "count-calls"),
        ("files", "read"),
        ("files", "refuse"),
        ("more", "count-calls"),
        ("more", "delete"),
        ("more", "read"),
        ("more", "refuse"),
    ]
    assert listed[0] == ToolOwner("files", files.id, Files.tools()[0])
    await more.stop()
    assert {o.actor for o in system.tools()} == {"files"}


async def test_a_tool_call_is_an_ask_served_by_the_method(system: ActorSystem) -> None:
    files = await system.spawn(Files, "files")
    caller = await system.spawn(Caller, "caller")
    assert await system.call_tool("files", "read", {"path": "a.txt", "offset": 3}) == {
        "path": "a.txt",
        "offset": 3,
        "sender": None,
    }
    assert await system.ask("files", tool_call("count-calls")) == 1
    assert await system.ask("caller", {"to": "files"}) == {
        "path": "x",
        "offset": 0,
        "sender": caller.id,
    }
    assert await system.ask("files", {"not": "a tool"}) == {"plain": True}
    assert files.plain == [{"not": "a tool"}]
    await system.spawn(MoreFiles, "more")
    assert await system.call_tool("more", "read", {"path": "p"}) == {"newer": "p"}
    assert await system.call_tool("more", "delete") == "deleted nothing"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({}, "input 'path' is a required property"),
        ({"path": 7}, "input.path: 7 is not of type 'string'"),
        ({"path": ""}, "input.path: '' should be non-empty"),
        ({"path": "a", "offset": -1}, "input.offset: -1 is less than the minimum of 0"),
        ({"path": "a", "lines": [1, "x"]}, "input.lines[1]: 'x' is not of type 'integer'"),
        (
            {"path": "a", "mode": "w"},
            "Additional properties are not allowed ('mode' was unexpected)",
        ),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_the_method_never_runs(
    system: ActorSystem, arguments: dict[str, Any], problem: str
) -> None:
    files = await system.spawn(Files, "files")
    with pytest.raises(MessageRejected) as refused:
        await system.call_tool("files", "read", arguments)
    assert problem in str(refused.value)
    assert str(refused.value).startswith("tool 'read': ")
    assert files.calls == []
    assert files.statistics().crashes == 0


async def test_unknown_tools_and_malformed_calls_are_refused_without_a_crash(
    system: ActorSystem,
) -> None:
    files = await system.spawn(Files, "files")
    with pytest.raises(
        MessageRejected, match=r"no tool named 'write' here \(tools: count-calls, read, refuse\)"
    ):
        await system.call_tool("files", "write", {})
    with pytest.raises(MessageRejected, match="takes its input as an object under 'input'"):
        await system.ask("files", {"tool": "read", "input": ["a"]})
    with pytest.raises(MessageRejected, match="no tool named 3"):
        await system.ask("files", {"tool": 3})
    with pytest.raises(MessageRejected, match="not today"):
        await system.call_tool("files", "refuse")
    assert files.statistics().crashes == 0
    assert await system.call_tool("files", "count-calls") == 0


async def test_an_actor_without_tools_sees_a_tool_call_as_a_plain_message(
    system: ActorSystem,
) -> None:
    class Plain(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            return message

    await system.spawn(Plain, "plain")
    assert await system.call_tool("plain", "x", {"a": 1}) == {"tool": "x", "input": {"a": 1}}


def test_declaration_mistakes_are_caught_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError, match="must be an async method"):
        tool("Sync.")(lambda self: None)
    with pytest.raises(TypeError, match="name 'bad name' must be 1-64 letters"):

        class BadName(Actor):
            @tool("x", name="bad name")
            async def go(self) -> None: ...

    with pytest.raises(TypeError, match="give a one-line description"):

        class NoDescription(Actor):
            @tool("  ")
            async def go(self) -> None: ...

    with pytest.raises(TypeError, match="invalid input_schema"):

        class BadSchema(Actor):
            @tool("x", input_schema={"type": "object", "properties": {"a": {"type": "strin"}}})
            async def go(self, a: str = "") -> None: ...

    with pytest.raises(TypeError, match="must describe an object"):

        class NotObject(Actor):
            @tool("x", input_schema={"type": "string"})
            async def go(self) -> None: ...

    with pytest.raises(TypeError, match=r"properties the method does not take: \['b'\]"):

        class Extra(Actor):
            @tool("x", input_schema={"type": "object", "properties": {"b": {}}})
            async def go(self) -> None: ...

    with pytest.raises(TypeError, match=r"must be required in input_schema: \['a'\]"):

        class Unrequired(Actor):
            @tool("x", input_schema={"type": "object", "properties": {"a": {}}})
            async def go(self, a: int) -> None: ...


async def test_a_tool_answer_is_checked_like_any_reply(system: ActorSystem) -> None:
    class Leaky(Actor):
        async def _process(self, message: dict[str, Any]) -> object:
            return None

        @tool("Returns a set, which JSON cannot carry.")
        async def leak(self) -> object:
            return {1, 2}

    await system.spawn(Leaky, "leaky")
    with pytest.raises(Exception, match="JSON"):
        await system.call_tool("leaky", "leak")
    with trio.fail_after(1):
        assert await system.ask("leaky", {}) is None


async def test_an_actor_can_withdraw_a_tool_its_configuration_turns_off(
    system: ActorSystem,
) -> None:
    class Guarded(Files):
        def offered_tools(self) -> tuple[Tool, ...]:
            return tuple(t for t in type(self).tools() if t.name != "read")

    await system.spawn(Guarded, "guarded")
    assert [o.tool.name for o in system.tools()] == ["count-calls", "refuse"]
    with pytest.raises(
        MessageRejected, match=r"no tool named 'read' here \(tools: count-calls, refuse\)"
    ):
        await system.call_tool("guarded", "read", {"path": "x"})

"""Tools: operations an actor offers to other actors (and to language models), by name.

A tool is a method of an actor class marked with `tool`: a name, a one-line description
and a JSON Schema of its input, declared once on the class. Calling one is an ask to the
owning actor with ``{"tool": NAME, "input": {...}}``; the owner checks the input against
the schema before the method runs, so a handler only ever sees input of the declared
shape, and a caller with bad input gets `MessageRejected` naming the field. The schema is
what a language model is shown, so the same declaration serves both kinds of caller.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, TypeVar, final

import attrs
import jsonschema
import jsonschema.exceptions

from wactorz.core.errors import MessageRejected

__all__ = ["Tool", "ToolOwner", "tool", "tool_call"]

TOOL_KEY: Final = "tool"
"""The key that marks a message as a tool call: ``{"tool": NAME, "input": {...}}``."""

_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_MARK: Final = "__wactorz_tool__"

_Handler = TypeVar("_Handler", bound=Callable[..., Awaitable[object]])


@final
@attrs.frozen
class Tool:
    """What a tool is, as its callers see it: name, description and input schema."""

    name: str
    """Unique within its actor class: letters, digits, ``_`` and ``-``, at most 64."""
    description: str
    """One line saying what it does, written for whoever picks the tool (a person or a model)."""
    input_schema: Mapping[str, Any]
    """The JSON Schema of its input: an object whose properties are the method's parameters."""

    def to_json(self) -> dict[str, Any]:
        """The tool as a JSON-compatible dict (``name``, ``description``, ``input_schema``)."""
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": dict(self.input_schema),
        }


@final
@attrs.frozen
class ToolOwner:
    """A tool of a running actor, as `ActorSystem.tools` lists it."""

    actor: str
    """The owning actor's name."""
    actor_id: str
    """The owning actor's id."""
    tool: Tool


def tool_call(name: str, input: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The message that calls tool ``name`` with ``input``: ask the owning actor with it."""
    return {TOOL_KEY: name, "input": dict(input or {})}


def tool(
    description: str, *, input_schema: Mapping[str, Any] | None = None, name: str | None = None
) -> Callable[[_Handler], _Handler]:
    """Mark an ``async`` method of an actor class as a tool.

    ``input_schema`` is the JSON Schema of the input object (default: no input), whose
    properties are passed to the method as keyword arguments; unless it says otherwise,
    properties it does not declare are refused. ``name`` defaults to the method's name.
    What the method returns answers the call (it must be JSON-compatible); raising
    `MessageRejected` refuses the call with a sentence for the caller. Mistakes in the
    declaration (a bad schema, a parameter the schema does not give) raise `TypeError`
    when the class is defined, not at the first call.
    """

    def mark(handler: _Handler) -> _Handler:
        schema: dict[str, Any] = (
            dict(input_schema) if input_schema is not None else {"type": "object"}
        )
        schema.setdefault("additionalProperties", False)
        declared = Tool(
            name=name if name is not None else handler.__name__,
            description=description,
            input_schema=schema,
        )
        _check_declaration(declared, handler)
        setattr(handler, _MARK, declared)
        return handler

    return mark


@final
class BoundTool:
    """A declared tool with its checker and the name of the method that serves it (runtime side)."""

    __slots__ = ("method", "tool", "validator")

    def __init__(self, declared: Tool, method: str) -> None:
        self.tool = declared
        self.method = method
        self.validator = jsonschema.Draft202012Validator(dict(declared.input_schema))


def collect_tools(cls: type) -> dict[str, BoundTool]:
    """The tools of ``cls`` and its bases, by name (a subclass's own declaration wins)."""
    found: dict[str, BoundTool] = {}
    for klass in reversed(cls.__mro__):
        for attribute, value in vars(klass).items():
            declared = getattr(value, _MARK, None)
            if isinstance(declared, Tool):
                for other in [n for n, b in found.items() if b.method == attribute]:
                    del found[other]  # overridden: the subclass's method decides
                found[declared.name] = BoundTool(declared, attribute)
    return found


async def serve_tool_call(
    owner: object,
    tools: Mapping[str, BoundTool],
    message: dict[str, Any],
    offered: tuple[Tool, ...],
) -> object:
    """Serve a tool call ``message`` on ``owner``: check the input, then run the method.

    ``offered`` is what the owner offers now, of the declared ``tools``.
    """
    name = message[TOOL_KEY]
    bound = tools.get(name) if isinstance(name, str) else None
    if bound is None or bound.tool not in offered:
        known = ", ".join(t.name for t in offered) or "none"
        raise MessageRejected(f"no tool named {name!r} here (tools: {known})")
    arguments = message.get("input", {})
    if not isinstance(arguments, dict):
        raise MessageRejected(
            f"tool {bound.tool.name!r} takes its input as an object under 'input', "
            f"not {type(arguments).__name__}"
        )
    problem = jsonschema.exceptions.best_match(bound.validator.iter_errors(arguments))
    if problem is not None:
        raise MessageRejected(f"tool {bound.tool.name!r}: {_explain(problem)}")
    handler: Callable[..., Awaitable[object]] = getattr(owner, bound.method)
    return await handler(**arguments)


def _explain(problem: jsonschema.exceptions.ValidationError) -> str:
    """Say which field of a tool's input is wrong, and how."""
    where = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in problem.absolute_path)
    if problem.validator == "required":
        return f"input{where} {problem.message}"
    if problem.validator == "additionalProperties":
        return f"input{where}: {problem.message}"
    return f"input{where}: {problem.message}" if where else f"input: {problem.message}"


def _check_declaration(declared: Tool, handler: Callable[..., object]) -> None:
    where = f"tool {handler.__qualname__}"
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"{where} must be an async method")
    if not _NAME.fullmatch(declared.name):
        raise TypeError(
            f"{where}: name {declared.name!r} must be 1-64 letters, digits, '_' or '-' "
            "(what language models accept)"
        )
    if not declared.description.strip() or "\n" in declared.description.strip():
        raise TypeError(f"{where}: give a one-line description")
    schema = declared.input_schema
    try:
        jsonschema.Draft202012Validator.check_schema(dict(schema))
    except jsonschema.exceptions.SchemaError as exc:
        raise TypeError(f"{where}: invalid input_schema: {exc.message}") from None
    if schema.get("type") != "object":
        raise TypeError(f'{where}: input_schema must describe an object ("type": "object")')
    parameters = list(inspect.signature(handler).parameters.values())[1:]  # after self
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
    named = {
        p.name: p
        for p in parameters
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    properties = set(schema.get("properties", {}))
    required = set(schema.get("required", []))
    if not takes_any and (extra := sorted(properties - named.keys())):
        raise TypeError(f"{where}: input_schema has properties the method does not take: {extra}")
    missing = sorted(
        p.name
        for p in named.values()
        if p.default is inspect.Parameter.empty and p.name not in required
    )
    if missing:
        raise TypeError(
            f"{where}: parameters without a default must be required in input_schema: {missing}"
        )

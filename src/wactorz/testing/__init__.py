"""Test doubles for programs built on wactorz: a fake Anthropic Messages API.

`FakeMessagesAPI` is a real HTTP server on loopback that the real ``anthropic`` SDK can
be pointed at (``base_url=api.url``); it answers from a script of `Reply`, `ErrorReply`
and `Hang` values (built by `text`, `tool_use`, `reply`, `error` and `hang`) and records
every `RecordedRequest`. `wactorz.testing.messages_api` documents the protocol it speaks
and the faults it can inject. Nothing here imports the SDK.
"""

from wactorz.testing.messages_api import (
    ERROR_TYPES,
    ErrorReply,
    FakeAPIStatistics,
    FakeMessagesAPI,
    Hang,
    RecordedRequest,
    Reply,
    Responder,
    ScriptedReply,
    StreamFault,
    TextBlock,
    ToolUseBlock,
    Usage,
    error,
    hang,
    reply,
    request_problem,
    text,
    tool_use,
)

__all__ = [
    "ERROR_TYPES",
    "ErrorReply",
    "FakeAPIStatistics",
    "FakeMessagesAPI",
    "Hang",
    "RecordedRequest",
    "Reply",
    "Responder",
    "ScriptedReply",
    "StreamFault",
    "TextBlock",
    "ToolUseBlock",
    "Usage",
    "error",
    "hang",
    "reply",
    "request_problem",
    "text",
    "tool_use",
]

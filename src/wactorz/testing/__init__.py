"""Test doubles for programs built on wactorz: a fake Anthropic Messages API.

`FakeMessagesAPI` is a real HTTP server on loopback that the real ``anthropic`` SDK can
be pointed at (``base_url=api.url``); it answers from a script of `Reply`, `ErrorReply`
and `Hang` values (built by `text`, `tool_use`, `reply`, `error` and `hang`) and records
every `RecordedRequest`. `wactorz.testing.messages_api` documents the protocol it speaks
and the faults it can inject. Nothing here imports the SDK.
"""

from wactorz.testing import messages_api
from wactorz.testing.messages_api import *  # noqa: F403  (its own __all__, below)

__all__ = list(messages_api.__all__)

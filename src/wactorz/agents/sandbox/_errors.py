"""What the sandbox raises when it cannot run something as safely as it was asked to."""

from __future__ import annotations

__all__ = ["SandboxError", "SandboxUnavailable"]


class SandboxError(Exception):
    """The sandbox could not set a run up (not the run's own failure, which is a result).

    The message names the step that failed and what the operator can do about it.
    """


class SandboxUnavailable(SandboxError):
    """A layer the policy requires (or a Python interpreter for a Python snippet) cannot be
    had on this machine; the message says which, why, and what to install or enable."""

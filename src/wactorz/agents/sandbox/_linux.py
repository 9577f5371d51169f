"""The few Linux calls the standard library lacks on Python 3.11, bound once through ctypes
(the spawner, `_spawner_program`, binds its own: it imports nothing of the package)."""

from __future__ import annotations

import ctypes
import os
from typing import Final

__all__ = ["CLONE_NEWNET", "CLONE_NEWUSER", "checked", "syscall"]

CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWNET: Final = 0x40000000

_libc: Final = ctypes.CDLL(None, use_errno=True)

syscall: Final = _libc.syscall
syscall.restype = ctypes.c_long


def checked(result: int, what: str) -> int:
    """``result`` of a libc call, or `OSError` with its errno (and ``what``) when it is -1."""
    if result == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result

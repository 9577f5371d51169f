"""The few Linux calls the standard library lacks on Python 3.11, bound once through ctypes.

Each foreign function object is built here, at import, with its argument and result
types, because the sandbox calls them in a freshly forked child (see `_launch`), where
nothing may take a lock: resolving a symbol (``dlsym``) or building a ctypes prototype
there could deadlock on a lock another thread of the service held at the fork.
"""

from __future__ import annotations

import ctypes
import os
from typing import Final

__all__ = [
    "CLONE_NEWNET",
    "CLONE_NEWUSER",
    "PR_SET_NO_NEW_PRIVS",
    "PR_SET_PDEATHSIG",
    "checked",
    "get_errno",
    "prctl",
    "syscall",
    "unshare",
]

CLONE_NEWUSER: Final = 0x10000000
CLONE_NEWNET: Final = 0x40000000
PR_SET_PDEATHSIG: Final = 1
PR_SET_NO_NEW_PRIVS: Final = 38

_libc: Final = ctypes.CDLL(None, use_errno=True)

prctl: Final = _libc.prctl
prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
prctl.restype = ctypes.c_int

unshare: Final = _libc.unshare
unshare.argtypes = [ctypes.c_int]
unshare.restype = ctypes.c_int

syscall: Final = _libc.syscall
syscall.restype = ctypes.c_long

get_errno: Final = ctypes.get_errno


def checked(result: int, what: str) -> int:
    """``result`` of a libc call, or `OSError` with its errno (and ``what``) when it is -1."""
    if result == -1:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    return result

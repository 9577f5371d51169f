"""Landlock through ctypes: which ABI the kernel speaks, and a ruleset built for one run.

Landlock lets an unprivileged process give up access rights for itself and every
process it starts, for good (it survives ``execve``, even as root). Three system calls:
``landlock_create_ruleset`` (444) makes a ruleset fd that *handles* a set of rights,
meaning those rights are denied unless a rule grants them; ``landlock_add_rule`` (445)
grants rights beneath a directory (or on a file); ``landlock_restrict_self`` (446)
enforces the ruleset on the calling thread, after ``PR_SET_NO_NEW_PRIVS``.

The service builds the whole ruleset (`create_ruleset`) and hands its fd to the
spawner's stub (`_spawner_program`), which only calls ``landlock_restrict_self`` on it,
just before it execs the run's program.

Rights appeared over time (ABI 1: files and directories; 2: ``REFER``; 3: ``TRUNCATE``;
4: TCP bind and connect; 5: device ioctls; 6: scoping of abstract unix sockets and
signals; 7: audit flags only). A ruleset handles exactly the rights the running kernel
knows, so on an older kernel the newer rights are simply not restricted (`describe`
says which).
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import attrs

from wactorz.agents.sandbox import _linux

__all__ = ["Confinement", "abi_version", "create_ruleset", "describe"]

_CREATE_RULESET: Final = 444
_ADD_RULE: Final = 445
_CREATE_RULESET_VERSION: Final = 1
_RULE_PATH_BENEATH: Final = 1

EXECUTE: Final = 1 << 0
WRITE_FILE: Final = 1 << 1
READ_FILE: Final = 1 << 2
READ_DIR: Final = 1 << 3
TRUNCATE: Final = 1 << 14
IOCTL_DEV: Final = 1 << 15
_FILE_RIGHTS: Final = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
"""The rights a rule on a file (rather than a directory) may grant."""

_READ: Final = EXECUTE | READ_FILE | READ_DIR
_DEVICE: Final = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV

_NET_BIND_TCP: Final = 1 << 0
_NET_CONNECT_TCP: Final = 1 << 1
_SCOPE_ABSTRACT_UNIX_SOCKET: Final = 1 << 0
_SCOPE_SIGNAL: Final = 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def abi_version() -> int:
    """The Landlock ABI of the running kernel, or 0 if Landlock is absent or disabled."""
    version = int(_linux.syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION))
    return max(version, 0)


def _fs_rights(abi: int) -> int:
    """Every filesystem right the kernel of this ABI knows."""
    if abi >= 5:
        return (1 << 16) - 1
    if abi >= 3:
        return (1 << 15) - 1
    if abi >= 2:
        return (1 << 14) - 1
    return (1 << 13) - 1


def describe(abi: int) -> str:
    """What a ruleset can restrict at this ABI, for the doctor's report."""
    if abi <= 0:
        return "Landlock is not available"
    parts = ["files and directories"]
    if abi < 3:
        parts.append("but not truncation (ABI 3)")
    if abi >= 4:
        parts.append("TCP bind/connect")
    if abi >= 6:
        parts.append("signals and abstract unix sockets to outside the sandbox")
    else:
        parts.append("not signals (ABI 6)")
    return f"Landlock ABI {abi}: " + ", ".join(parts)


@attrs.frozen
class Confinement:
    """What one run may touch, as Landlock will enforce it.

    ``read`` paths (and everything beneath them) may be read and executed, ``write`` paths
    get every right, ``devices`` (files such as ``/dev/null``) may be read and written.
    ``filesystem`` False leaves the filesystem alone (bubblewrap's mount namespace
    confines it instead, and a Landlock domain would forbid bubblewrap's mounts).
    ``deny_tcp`` forbids every TCP bind and connect (ABI 4); ``scope`` forbids signals
    and abstract unix sockets to processes outside the run (ABI 6).
    """

    read: tuple[Path, ...] = ()
    write: tuple[Path, ...] = ()
    devices: tuple[Path, ...] = ()
    filesystem: bool = True
    deny_tcp: bool = False
    scope: bool = False


def create_ruleset(abi: int, confinement: Confinement) -> int:
    """A ruleset fd (close-on-exec) enforcing ``confinement`` at ``abi``; the caller closes it.

    Paths that do not exist are skipped. Raises `OSError` if the kernel refuses the
    ruleset or a rule (a bug, or Landlock disabled since `abi_version` was read).
    """
    attr = _RulesetAttr()
    size = ctypes.sizeof(ctypes.c_uint64)
    if confinement.filesystem:
        attr.handled_access_fs = _fs_rights(abi)
    if confinement.deny_tcp and abi >= 4:
        attr.handled_access_net = _NET_BIND_TCP | _NET_CONNECT_TCP
    if abi >= 4:
        size = 2 * ctypes.sizeof(ctypes.c_uint64)
    if confinement.scope and abi >= 6:
        attr.scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL
    if abi >= 6:
        size = ctypes.sizeof(_RulesetAttr)
    if not (attr.handled_access_fs or attr.handled_access_net or attr.scoped):
        raise ValueError("a Landlock ruleset must restrict something")
    ruleset = _linux.checked(
        int(_linux.syscall(_CREATE_RULESET, ctypes.byref(attr), size, 0)),
        "landlock_create_ruleset",
    )
    try:
        if confinement.filesystem:
            everything = _fs_rights(abi)
            _add_rules(ruleset, confinement.read, _READ & everything)
            _add_rules(ruleset, confinement.devices, _DEVICE & everything)
            _add_rules(ruleset, confinement.write, everything)
    except BaseException:
        os.close(ruleset)
        raise
    return ruleset


def _add_rules(ruleset: int, paths: Iterable[Path], rights: int) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            allowed = rights
            if not stat.S_ISDIR(os.fstat(fd).st_mode):
                allowed &= _FILE_RIGHTS
            rule = _PathBeneathAttr(allowed_access=allowed, parent_fd=fd)
            result = int(
                _linux.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
            )
            _linux.checked(result, f"landlock_add_rule({path})")
        finally:
            os.close(fd)

"""File operations confined to a workspace directory, safe against traversal, symlinks and races.

`Workspace` is the layer under `IOAgent`: read, write, append, list, stat, move, delete
and mkdir on paths relative to one root directory, where the paths come from a language
model or a remote caller and are treated as hostile. Each call is blocking but short
(one file or one directory walk) and thread-safe, meant to run through
``trio.to_thread.run_sync``; a `Workspace` holds no mutable state besides its root's
file descriptor, and never changes the process's working directory.

The rules, each refusal a `WorkspaceError` whose `Rule` names the one broken:

- Paths are relative and ``/``-separated. ``.`` components and repeated slashes are
  dropped; ``..`` removes the previous component and is refused when it would climb above
  the root (`Rule.ESCAPE`), whatever lies on the way: ``a/../b`` is ``b`` even when ``a``
  does not exist. That is sound because nothing is ever resolved through a symlink, so
  the name ``a/..`` cannot mean anything but the root. Absolute paths are refused
  (`Rule.ABSOLUTE`), so are empty paths and anything but a string (`Rule.BAD_PATH`),
  NUL characters (`Rule.NUL_BYTE`), and a component over 255 bytes or a path over 4095
  bytes in UTF-8 (`Rule.NAME_TOO_LONG`).
- No symbolic link is ever followed, inside or out (`Rule.SYMLINK`): not as a directory
  on the way, not as the file read, written or appended to. A link inside pointing inside
  could be allowed, but deciding "inside" means resolving it, which is the race this
  module exists to avoid; use the real path instead. Symlinks already in the tree are
  shown by `Workspace.list` and `Workspace.stat`, and `Workspace.move` and
  `Workspace.delete` act on the link itself, so a planted link can be cleaned up.
- Only regular files are read, written or appended to: FIFOs (which would block),
  sockets and device files are refused without being opened for I/O (`Rule.SPECIAL_FILE`).
- A regular file with more than one hard link is refused for reading and appending unless
  the workspace allows hard links (`Rule.HARD_LINK`): its other name may be outside, e.g.
  a sandboxed program's ``ln /etc/shadow x`` where ``fs.protected_hardlinks`` is off.
  `Workspace.write` replaces the name, never the shared file, so it needs no such rule.
- Reads and writes have a size limit per call (`Rule.READ_TOO_LARGE`,
  `Rule.WRITE_TOO_LARGE`); the root itself cannot be written, moved or deleted
  (`Rule.ROOT`).

How paths are resolved, so that swapping a directory for a symlink mid-call cannot send a
call outside: every path is opened from a file descriptor of the root, never as a
re-joined string. Where the kernel has ``openat2`` (Linux 5.6), the parent directory is
opened in one call with ``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS``;
elsewhere one component at a time with ``O_NOFOLLOW | O_DIRECTORY`` relative to the
previous one. The last component is then opened, created, renamed or removed relative to
its parent's descriptor (``dir_fd=``), with ``O_NOFOLLOW | O_NONBLOCK`` and an ``fstat``
check of what was actually opened. Each failure of the filesystem (a missing file, a
directory that is not empty) is a `WorkspaceError` too, with its own `Rule`, so a caller
catches one type and can show its message as is.
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import ctypes
import enum
import errno
import fnmatch
import functools
import os
import platform
import secrets
import stat
import threading
import weakref
from collections.abc import Iterator
from typing import Any, Final, Literal, final

import attrs

from wactorz.core.errors import WactorzError, brief_repr

__all__ = [
    "MAX_DEPTH",
    "NAME_MAX",
    "PATH_MAX",
    "Entry",
    "EntryKind",
    "FileContent",
    "Listing",
    "Rule",
    "Workspace",
    "WorkspaceError",
]

NAME_MAX: Final = 255
"""The longest name of one path component, in bytes of UTF-8 (Linux's ``NAME_MAX``)."""
PATH_MAX: Final = 4095
"""The longest relative path, in bytes of UTF-8 (Linux's ``PATH_MAX`` less the NUL)."""
MAX_DEPTH: Final = 256
"""How deep `Workspace.list` and a recursive `Workspace.delete` go below their start.

Each level holds one open directory descriptor, so a hostile tree cannot exhaust them."""


class Rule(enum.StrEnum):
    """Why a workspace operation was refused or failed: `WorkspaceError.rule`.

    The first group are the confinement rules and limits (`Rule.is_refusal`): the path or
    the request is not allowed, whatever the filesystem holds. The others report the
    filesystem's answer in the same terms.
    """

    ESCAPE = "escape"
    ABSOLUTE = "absolute"
    SYMLINK = "symlink"
    SPECIAL_FILE = "special-file"
    HARD_LINK = "hard-link"
    NUL_BYTE = "nul-byte"
    NAME_TOO_LONG = "name-too-long"
    BAD_PATH = "bad-path"
    ROOT = "root"
    READ_TOO_LARGE = "read-too-large"
    WRITE_TOO_LARGE = "write-too-large"
    TOO_DEEP = "too-deep"
    NOT_FOUND = "not-found"
    EXISTS = "exists"
    NOT_A_DIRECTORY = "not-a-directory"
    IS_A_DIRECTORY = "is-a-directory"
    NOT_EMPTY = "not-empty"
    NOT_TEXT = "not-text"
    PERMISSION = "permission"
    BAD_ARGUMENT = "bad-argument"
    CLOSED = "closed"
    OS_ERROR = "os-error"

    @property
    def advice(self) -> str:
        """The rule in one sentence, saying what to do instead."""
        return _ADVICE[self]

    @property
    def is_refusal(self) -> bool:
        """True for the confinement rules and size limits, False for filesystem failures."""
        return self in _REFUSALS


_ADVICE: Final[dict[Rule, str]] = {
    Rule.ESCAPE: "paths must stay inside it (no '..' above the root)",
    Rule.ABSOLUTE: "paths are relative to the workspace root (drop the leading '/')",
    Rule.SYMLINK: (
        "symbolic links are never followed in the workspace (use the path of the real "
        "file or directory; a link itself can only be listed, moved or deleted)"
    ),
    Rule.SPECIAL_FILE: (
        "only regular files can be read or written (no FIFOs, sockets or devices; "
        "delete it or use another name)"
    ),
    Rule.HARD_LINK: (
        "a file with several hard links may also be outside the workspace, so it is not "
        "read or appended to (write it anew, which replaces the name, or let the operator "
        "allow hard links)"
    ),
    Rule.NUL_BYTE: "names cannot contain NUL characters",
    Rule.NAME_TOO_LONG: (
        f"a name is at most {NAME_MAX} bytes and a path at most {PATH_MAX} bytes in UTF-8"
    ),
    Rule.BAD_PATH: "give a non-empty path relative to the workspace root ('.' is the root)",
    Rule.ROOT: "the workspace root itself cannot be written, moved or deleted",
    Rule.READ_TOO_LARGE: "read it in pieces with offset and limit",
    Rule.WRITE_TOO_LARGE: "write less per call, e.g. write the start and append the rest",
    Rule.TOO_DEEP: f"directory trees are walked at most {MAX_DEPTH} levels deep",
    Rule.NOT_FOUND: "no such file or directory (list its directory to see what is there)",
    Rule.EXISTS: "the name is taken (delete it first, or choose another name)",
    Rule.NOT_A_DIRECTORY: "a file is used as a directory (check the path with stat)",
    Rule.IS_A_DIRECTORY: "a directory is used as a file (list it, or name a file in it)",
    Rule.NOT_EMPTY: "delete its contents first, or pass recursive=True",
    Rule.NOT_TEXT: "the file is not UTF-8 text (read it with binary=True)",
    Rule.PERMISSION: "the service may not do this (check the owner and mode with stat)",
    Rule.BAD_ARGUMENT: "check the call's arguments",
    Rule.CLOSED: "the workspace was closed (open a new Workspace)",
    Rule.OS_ERROR: "the operating system refused the operation",
}

_REFUSALS: Final = frozenset(
    {
        Rule.ESCAPE,
        Rule.ABSOLUTE,
        Rule.SYMLINK,
        Rule.SPECIAL_FILE,
        Rule.HARD_LINK,
        Rule.NUL_BYTE,
        Rule.NAME_TOO_LONG,
        Rule.BAD_PATH,
        Rule.ROOT,
        Rule.READ_TOO_LARGE,
        Rule.WRITE_TOO_LARGE,
        Rule.TOO_DEEP,
    }
)


class WorkspaceError(WactorzError, OSError):
    """A workspace operation was refused by a `Rule`, or failed in the filesystem.

    ``path`` is the path as the caller gave it, ``rule`` the rule broken. The message
    names both and says what to do next, e.g. ``"'../etc/passwd' leaves the workspace:
    paths must stay inside it (no '..' above the root)"``; it is meant to be shown to the
    caller (or the language model) as is. An `OSError`, so code that handles file errors
    handles these.
    """

    def __init__(self, path: str, rule: Rule, what: str, advice: str | None = None) -> None:
        self.path = path
        self.rule = rule
        super().__init__(f"{brief_repr(path)} {what}: {advice or rule.advice}")


_BECAUSE_OF_ERRNO: Final[dict[int, tuple[Rule, str]]] = {
    errno.ENOENT: (Rule.NOT_FOUND, "does not exist"),
    errno.EEXIST: (Rule.EXISTS, "already exists"),
    errno.ENOTDIR: (Rule.NOT_A_DIRECTORY, "is not a directory, or goes through a file"),
    errno.EISDIR: (Rule.IS_A_DIRECTORY, "is a directory"),
    errno.ENOTEMPTY: (Rule.NOT_EMPTY, "is a directory that is not empty"),
    errno.ELOOP: (Rule.SYMLINK, "goes through a symbolic link"),
    errno.EXDEV: (Rule.ESCAPE, "leaves the workspace"),
    errno.ENXIO: (Rule.SPECIAL_FILE, "is not a regular file"),
    errno.ENAMETOOLONG: (Rule.NAME_TOO_LONG, "is too long"),
    errno.EACCES: (Rule.PERMISSION, "is not accessible"),
    errno.EPERM: (Rule.PERMISSION, "is not accessible"),
}


def _from_os_error(path: str, error: OSError) -> WorkspaceError:
    """The `WorkspaceError` for an `OSError` met while working on ``path``."""
    if isinstance(error, WorkspaceError):
        return error
    known = _BECAUSE_OF_ERRNO.get(error.errno or 0)
    if known is not None:
        return WorkspaceError(path, *known)
    reason = error.strerror or type(error).__name__
    return WorkspaceError(path, Rule.OS_ERROR, f"failed ({reason})")


@contextlib.contextmanager
def _blaming(path: str) -> Iterator[None]:
    """Turn the `OSError` of a block into the `WorkspaceError` that names ``path``."""
    try:
        yield
    except WorkspaceError:
        raise
    except OSError as error:
        raise _from_os_error(path, error) from error


# ---- results ---------------------------------------------------------------------------


class EntryKind(enum.StrEnum):
    """What a name in the workspace is, as `Entry.kind` (never what a symlink points to)."""

    FILE = "file"
    DIRECTORY = "dir"
    SYMLINK = "symlink"
    OTHER = "other"
    """A FIFO, socket or device: listed, moved and deleted, never opened."""


def _kind_of(mode: int) -> EntryKind:
    if stat.S_ISREG(mode):
        return EntryKind.FILE
    if stat.S_ISDIR(mode):
        return EntryKind.DIRECTORY
    if stat.S_ISLNK(mode):
        return EntryKind.SYMLINK
    return EntryKind.OTHER


@final
@attrs.frozen
class Entry:
    """One name in the workspace: what `Workspace.stat` and `Workspace.list` report.

    The mutating operations answer with the `Entry` they acted on: the file written, the
    directory made, the name moved (at its new path) or deleted (as it was).
    """

    path: str
    """Where it is, relative to the root and ``/``-separated (``"."`` for the root):
    pass it back to any operation."""
    kind: EntryKind
    size: int
    """In bytes, of the name itself (a symlink's size is its target's length)."""
    mtime: float
    """Last modification, in seconds since the epoch."""

    @property
    def name(self) -> str:
        """The last component of `path`."""
        return self.path.rpartition("/")[2]

    def to_json(self) -> dict[str, Any]:
        """``{"name", "path", "kind", "size", "mtime"}``, JSON-compatible."""
        return {
            "name": self.name,
            "path": self.path,
            "kind": self.kind.value,
            "size": self.size,
            "mtime": self.mtime,
        }


def _entry(path: str, status: os.stat_result) -> Entry:
    return Entry(
        path=path, kind=_kind_of(status.st_mode), size=status.st_size, mtime=status.st_mtime
    )


@final
@attrs.frozen
class FileContent:
    """What `Workspace.read` read: ``data`` from byte ``offset`` up to ``next_offset``.

    ``data`` is `str` for a text read, `bytes` for a binary one. ``size`` is the file's
    size when it was read, ``eof`` whether the read reached its end; to read on, pass
    ``next_offset`` as the next call's offset.
    """

    path: str
    data: str | bytes
    offset: int
    next_offset: int
    size: int
    eof: bool

    def to_json(self) -> dict[str, Any]:
        """The fields, with ``data`` as text and ``encoding`` ``"utf-8"`` or ``"base64"``."""
        if isinstance(self.data, str):
            encoding, data = "utf-8", self.data
        else:
            encoding, data = "base64", _base64(self.data)
        return {
            "path": self.path,
            "encoding": encoding,
            "data": data,
            "offset": self.offset,
            "next_offset": self.next_offset,
            "size": self.size,
            "eof": self.eof,
        }


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@final
@attrs.frozen
class Listing:
    """What `Workspace.list` found under ``path``, in walk order (names sorted per directory).

    ``truncated`` is True when more entries matched than the limit allowed, or the walk
    stopped at its scan or depth bound before looking at everything.
    """

    path: str
    pattern: str | None
    entries: tuple[Entry, ...]
    truncated: bool

    def to_json(self) -> dict[str, Any]:
        """``{"path", "pattern", "entries": [...], "truncated"}``, JSON-compatible."""
        return {
            "path": self.path,
            "pattern": self.pattern,
            "entries": [entry.to_json() for entry in self.entries],
            "truncated": self.truncated,
        }


# ---- paths -------------------------------------------------------------------------------


def _parse(path: object) -> tuple[str, ...]:
    """The components of a workspace path, ``()`` for the root, or the refusal.

    Only the spelling is checked here; what the names are on disk is checked as they
    are opened.
    """
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise WorkspaceError(repr(path), Rule.BAD_PATH, f"is a {type(path).__name__}")
    if "\x00" in path:
        raise WorkspaceError(path, Rule.NUL_BYTE, "contains a NUL character")
    if not path:
        raise WorkspaceError(path, Rule.BAD_PATH, "is empty")
    if path.startswith("/"):
        raise WorkspaceError(path, Rule.ABSOLUTE, "is absolute")
    try:
        size = len(os.fsencode(path))
    except UnicodeEncodeError:
        raise WorkspaceError(path, Rule.BAD_PATH, "cannot be encoded as a file name") from None
    if size > PATH_MAX:
        raise WorkspaceError(path, Rule.NAME_TOO_LONG, f"is {size} bytes long")
    parts: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not parts:
                raise WorkspaceError(path, Rule.ESCAPE, "leaves the workspace")
            parts.pop()
            continue
        if len(os.fsencode(name)) > NAME_MAX:
            raise WorkspaceError(
                path, Rule.NAME_TOO_LONG, f"has a name of {len(os.fsencode(name))} bytes"
            )
        parts.append(name)
    return tuple(parts)


def _shown(parts: tuple[str, ...]) -> str:
    return "/".join(parts) or "."


def _parse_pattern(pattern: object) -> tuple[str, ...]:
    """The ``/``-separated segments of a glob, refused like a path when it could climb out."""
    if not isinstance(pattern, str) or not pattern:
        raise WorkspaceError(repr(pattern), Rule.BAD_ARGUMENT, "is not a glob pattern")
    if "\x00" in pattern:
        raise WorkspaceError(pattern, Rule.NUL_BYTE, "contains a NUL character")
    if pattern.startswith("/"):
        raise WorkspaceError(
            pattern, Rule.ABSOLUTE, "is an absolute pattern", "patterns are relative to the path"
        )
    segments = tuple(segment for segment in pattern.split("/") if segment not in ("", "."))
    if ".." in segments:
        raise WorkspaceError(
            pattern,
            Rule.ESCAPE,
            "is a pattern with '..'",
            "a pattern matches below the listed directory: list the parent instead",
        )
    if not segments or len(pattern.encode("utf-8", "surrogateescape")) > PATH_MAX:
        raise WorkspaceError(pattern, Rule.BAD_ARGUMENT, "is not a usable glob pattern")
    return segments


@final
@attrs.frozen
class _Glob:
    """A glob over path segments: fnmatch per segment, ``**`` for any number of them.

    Matching runs the pattern as a small automaton (a set of positions in it), so that
    several ``**`` cost no backtracking.
    """

    segments: tuple[str, ...]

    def _closure(self, states: set[int]) -> set[int]:
        todo = list(states)
        while todo:
            state = todo.pop()
            if state < len(self.segments) and self.segments[state] == "**":
                if state + 1 not in states:
                    states.add(state + 1)
                    todo.append(state + 1)
        return states

    def states_after(self, names: tuple[str, ...]) -> set[int]:
        states = self._closure({0})
        for name in names:
            following: set[int] = set()
            for state in states:
                if state == len(self.segments):
                    continue
                segment = self.segments[state]
                if segment == "**":
                    following.add(state)
                elif fnmatch.fnmatchcase(name, segment):
                    following.add(state + 1)
            states = self._closure(following)
            if not states:
                break
        return states

    def matches(self, names: tuple[str, ...]) -> bool:
        return len(self.segments) in self.states_after(names)

    def may_match_below(self, names: tuple[str, ...]) -> bool:
        return any(state < len(self.segments) for state in self.states_after(names))


# ---- the kernel's openat2 and renameat2 ------------------------------------------------


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_SYS_OPENAT2: Final = 437  # the same on x86_64 and aarch64, the machines probed
_RESOLVE_NO_MAGICLINKS: Final = 0x02
_RESOLVE_NO_SYMLINKS: Final = 0x04
_RESOLVE_BENEATH: Final = 0x08
_RESOLVE: Final = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS
_RENAME_NOREPLACE: Final = 1


@functools.cache
def _libc() -> ctypes.CDLL:
    """A private handle on the C library, whose function signatures only this module sets."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.syscall.argtypes = [
        ctypes.c_long,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.POINTER(_OpenHow),
        ctypes.c_size_t,
    ]
    if hasattr(libc, "renameat2"):
        libc.renameat2.restype = ctypes.c_int
        libc.renameat2.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_uint,
        ]
    return libc


def _openat2(dir_fd: int, path: str, flags: int) -> int:
    """``openat2(dir_fd, path, {flags, 0, _RESOLVE})``: a new descriptor, or `OSError`."""
    how = _OpenHow(flags, 0, _RESOLVE)
    fd = _libc().syscall(_SYS_OPENAT2, dir_fd, os.fsencode(path), how, ctypes.sizeof(how))
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), path)
    return int(fd)


def _openat2_works(root_fd: int) -> bool:
    """Whether this machine's kernel (and seccomp policy) lets us call ``openat2``."""
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64"):
        return False
    try:
        os.close(_openat2(root_fd, ".", _DIR_PATH))
    except OSError:
        return False
    return True


def _rename_noreplace(src_fd: int, src: str, dst_fd: int, dst: str) -> None:
    """Rename unless ``dst`` exists, atomically where ``renameat2`` has ``RENAME_NOREPLACE``.

    Elsewhere (old C library, a filesystem without the flag) it checks first: a name made
    in between is replaced, which can only be a name inside the workspace.
    """
    libc = _libc()
    if hasattr(libc, "renameat2"):
        done = libc.renameat2(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), _RENAME_NOREPLACE)
        if done == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS):
            raise OSError(code, os.strerror(code), src)
    try:
        os.stat(dst, dir_fd=dst_fd, follow_symlinks=False)
    except FileNotFoundError:
        os.rename(src, dst, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    else:
        raise OSError(errno.EEXIST, os.strerror(errno.EEXIST), dst)


# ---- the workspace -----------------------------------------------------------------------

_DIR_PATH: Final = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""A directory to resolve names in: needs only search permission, cannot be read."""
_DIR_READ: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
"""A directory to list or fsync."""
_FILE: Final = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
"""Added to every open of a file: a FIFO swapped in must not block us, nor a tty adopt us."""


def _check_regular(path: str, mode: int) -> None:
    """Refuse anything but a regular file, by the rule it breaks."""
    if stat.S_ISREG(mode):
        return
    if stat.S_ISLNK(mode):
        raise WorkspaceError(path, Rule.SYMLINK, "is a symbolic link")
    if stat.S_ISDIR(mode):
        raise WorkspaceError(path, Rule.IS_A_DIRECTORY, "is a directory")
    raise WorkspaceError(path, Rule.SPECIAL_FILE, f"is a {_special_kind(mode)}")


def _special_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device file"
    return "special file"


def _closing(stack: contextlib.ExitStack, fd: int) -> int:
    stack.callback(os.close, fd)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


@final
class Workspace:
    """File operations confined to the directory ``root``: see the module for the rules.

    The root is created (mode 0700, with its parents) if missing; it must be a real
    directory, not a symlink, or `WorkspaceError` is raised. The workspace holds a
    descriptor of it until `close` (or the end of a ``with`` block), so a root renamed or
    replaced later does not redirect it.

    ``max_read_bytes`` and ``max_write_bytes`` bound one read and one write or append;
    ``max_list_entries`` the entries one listing returns, ``max_list_scan`` the names it
    looks at. ``allow_hard_links`` lets files with several hard links be read and
    appended to (see `Rule.HARD_LINK`). ``resolver`` picks how paths are resolved:
    ``"openat2"`` (refused with `OSError` where the kernel lacks it), the component
    ``"walk"``, or ``"auto"``, the first that works.

    Every method is thread-safe and can run concurrently with the others.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        max_read_bytes: int = 8 << 20,
        max_write_bytes: int = 8 << 20,
        max_list_entries: int = 1000,
        max_list_scan: int = 100_000,
        allow_hard_links: bool = False,
        resolver: Literal["auto", "openat2", "walk"] = "auto",
    ) -> None:
        limits = {
            "max_read_bytes": max_read_bytes,
            "max_write_bytes": max_write_bytes,
            "max_list_entries": max_list_entries,
            "max_list_scan": max_list_scan,
        }
        for name, value in limits.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if resolver not in ("auto", "openat2", "walk"):
            raise ValueError(f"resolver must be 'auto', 'openat2' or 'walk', got {resolver!r}")
        self.max_read_bytes: Final = max_read_bytes
        self.max_write_bytes: Final = max_write_bytes
        self.max_list_entries: Final = max_list_entries
        self.max_list_scan: Final = max_list_scan
        self.allow_hard_links: Final = allow_hard_links
        self._root_path = os.path.abspath(os.fspath(root))
        self._root_fd = self._open_root(self._root_path)
        self._close_root = weakref.finalize(self, os.close, self._root_fd)
        self._openat2 = resolver != "walk" and _openat2_works(self._root_fd)
        if resolver == "openat2" and not self._openat2:
            self._close_root()
            raise OSError(errno.ENOSYS, "openat2 is not available on this machine")
        self._lock = threading.Lock()
        self._users = 0
        self._closed = False

    @staticmethod
    def _open_root(path: str) -> int:
        with _blaming(path):
            return Workspace._make_root(path)

    @staticmethod
    def _make_root(path: str) -> int:
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        try:
            fd = os.open(path, _DIR_PATH)
        except NotADirectoryError:
            if os.path.islink(path):
                raise WorkspaceError(
                    path,
                    Rule.SYMLINK,
                    "is a symbolic link",
                    "the workspace root must be a real directory (configure its real path)",
                ) from None
            raise WorkspaceError(
                path,
                Rule.NOT_A_DIRECTORY,
                "is not a directory",
                "the workspace root must be a directory (configure another path)",
            ) from None
        return fd

    # ---- life --------------------------------------------------------------------------

    @property
    def root(self) -> str:
        """The root's absolute path (for messages and logs: no call opens anything by it)."""
        return self._root_path

    @property
    def resolver(self) -> Literal["openat2", "walk"]:
        """How paths are resolved here: one ``openat2`` call, or a component walk."""
        return "openat2" if self._openat2 else "walk"

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def close(self) -> None:
        """Release the root's descriptor; calls already running finish first. Idempotent.

        Later calls raise `WorkspaceError` with `Rule.CLOSED`.
        """
        with self._lock:
            self._closed = True
            if self._users == 0:
                self._close_root()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.resolver
        return f"<Workspace {self._root_path!r} ({state})>"

    @contextlib.contextmanager
    def _using_root(self, path: str) -> Iterator[int]:
        """The root's descriptor, kept open until the block ends even if `close` is called.

        Without this a concurrent `close` could free the number for a new, unrelated
        descriptor, which the call would then resolve paths from.
        """
        with self._lock:
            if self._closed:
                raise WorkspaceError(path, Rule.CLOSED, "cannot be used")
            self._users += 1
        try:
            yield self._root_fd
        finally:
            with self._lock:
                self._users -= 1
                if self._closed and self._users == 0:
                    self._close_root()

    # ---- resolution ----------------------------------------------------------------------

    def _open_directory(
        self, root_fd: int, parts: tuple[str, ...], flags: int, path: str, *, create: bool = False
    ) -> int:
        """A new descriptor (opened with ``flags``) of the directory ``parts`` below the root.

        No symlink is followed on the way; with ``create``, missing directories are made.
        """
        if self._openat2 and not create:
            try:
                return _openat2(root_fd, _shown(parts), flags)
            except NotADirectoryError:
                pass  # which component is not a directory? the walk says, symlink or file
        return self._walk(root_fd, parts, flags, path, create=create)

    def _walk(
        self, root_fd: int, parts: tuple[str, ...], flags: int, path: str, *, create: bool
    ) -> int:
        fd = os.open(".", _DIR_PATH if parts else flags, dir_fd=root_fd)
        try:
            for index, name in enumerate(parts):
                step = flags if index == len(parts) - 1 else _DIR_PATH
                try:
                    following = os.open(name, step, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o777, dir_fd=fd)
                    following = self._open_step(fd, name, step, path)
                except OSError as error:
                    if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    following = self._open_step(fd, name, step, path)
                os.close(fd)
                fd = following
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _open_step(fd: int, name: str, flags: int, path: str) -> int:
        """Open one component again, or say precisely why it is no directory to go through."""
        try:
            return os.open(name, flags, dir_fd=fd)
        except OSError as error:
            if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                raise
            try:
                mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
            except OSError:
                raise error from None
            if stat.S_ISLNK(mode):
                raise WorkspaceError(path, Rule.SYMLINK, "goes through a symbolic link") from None
            raise

    def _parent(
        self,
        stack: contextlib.ExitStack,
        root_fd: int,
        parts: tuple[str, ...],
        path: str,
        flags: int = _DIR_PATH,
        *,
        create: bool = False,
    ) -> int:
        """The descriptor of the directory holding the last of ``parts``, closed with ``stack``."""
        fd = self._open_directory(root_fd, parts[:-1], flags, path, create=create)
        return _closing(stack, fd)

    def _open_file(
        self, parent: int, name: str, flags: int, path: str
    ) -> tuple[int, os.stat_result]:
        """Open the regular file ``name`` in ``parent`` (never a link, FIFO, socket or device).

        Checked before opening, so that a FIFO is not even opened when it can be helped,
        and after, on what was actually opened, in case the name was swapped in between.
        """
        try:
            before = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            if not flags & os.O_CREAT:
                raise
        else:
            _check_regular(path, before.st_mode)
        fd = os.open(name, flags | _FILE, 0o666, dir_fd=parent)
        try:
            opened = os.fstat(fd)
            self._check_opened(path, opened)
        except BaseException:
            os.close(fd)
            raise
        return fd, opened

    def _check_opened(self, path: str, opened: os.stat_result) -> None:
        _check_regular(path, opened.st_mode)
        if opened.st_nlink > 1 and not self.allow_hard_links:
            raise WorkspaceError(path, Rule.HARD_LINK, f"has {opened.st_nlink} hard links")

    @staticmethod
    def _file_parts(
        path: object, action: str, rule: Rule = Rule.ROOT
    ) -> tuple[str, tuple[str, ...]]:
        """The path as shown in errors and its components, refusing the root itself."""
        parts = _parse(path)
        shown = str(os.fspath(path))  # type: ignore[call-overload]  # _parse checked it
        if not parts:
            raise WorkspaceError(shown, rule, f"is the workspace root and cannot be {action}")
        return shown, parts

    # ---- operations --------------------------------------------------------------------

    def read(
        self, path: str, *, offset: int = 0, limit: int | None = None, binary: bool = False
    ) -> FileContent:
        """Read the regular file ``path`` from byte ``offset``, at most ``limit`` bytes.

        Text (``binary=False``) is decoded as UTF-8; a piece cut inside a character ends
        before it (``next_offset`` says where the next piece starts), and invalid UTF-8
        raises `WorkspaceError` with `Rule.NOT_TEXT`. Without ``limit`` the rest of the
        file is read, refused with `Rule.READ_TOO_LARGE` when that is more than
        ``max_read_bytes``, as is a larger ``limit``. An ``offset`` past the end reads
        nothing. Refusals: see the module; a directory is `Rule.IS_A_DIRECTORY`.
        """
        shown, parts = self._file_parts(path, "read", Rule.IS_A_DIRECTORY)
        if not isinstance(offset, int) or offset < 0:
            raise WorkspaceError(shown, Rule.BAD_ARGUMENT, f"cannot be read at offset {offset!r}")
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise WorkspaceError(shown, Rule.BAD_ARGUMENT, f"cannot be read with limit {limit!r}")
        if limit is not None and limit > self.max_read_bytes:
            raise WorkspaceError(
                shown,
                Rule.READ_TOO_LARGE,
                f"cannot be read {limit} bytes at once (at most {self.max_read_bytes})",
            )
        with _blaming(shown), self._using_root(shown) as root, contextlib.ExitStack() as stack:
            parent = self._parent(stack, root, parts, shown)
            fd, status = self._open_file(parent, parts[-1], os.O_RDONLY, shown)
            _closing(stack, fd)
            rest = max(status.st_size - offset, 0)
            if limit is None and rest > self.max_read_bytes:
                raise WorkspaceError(
                    shown,
                    Rule.READ_TOO_LARGE,
                    f"has {rest} bytes from offset {offset}, more than one read's "
                    f"{self.max_read_bytes}",
                )
            # the size fstat saw bounds the read: a file growing meanwhile is read as it was
            data = _pread(fd, rest if limit is None else min(limit, rest), offset)
            eof = offset + len(data) >= status.st_size
            if binary:
                return FileContent(
                    _shown(parts), data, offset, offset + len(data), status.st_size, eof
                )
            return self._decode(fd, shown, parts, data, offset, status.st_size, eof)

    @staticmethod
    def _decode(
        fd: int, shown: str, parts: tuple[str, ...], data: bytes, offset: int, size: int, eof: bool
    ) -> FileContent:
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        try:
            text = decoder.decode(data, final=eof)
            pending = decoder.getstate()[0]
            while pending and not text and len(pending) < 4:
                # the limit ends inside the first character: take that one whole
                more = _pread(fd, 1, offset + len(data))
                if not more:
                    text = decoder.decode(b"", final=True)
                    break
                data += more
                text = decoder.decode(more)
                pending = decoder.getstate()[0]
        except UnicodeDecodeError as error:
            raise WorkspaceError(
                shown, Rule.NOT_TEXT, f"is not UTF-8 at byte {offset + error.start}"
            ) from None
        consumed = len(data) - len(pending)
        return FileContent(
            _shown(parts), text, offset, offset + consumed, size, eof and not pending
        )

    def write(self, path: str, data: str | bytes, *, create_parents: bool = False) -> Entry:
        """Replace the file ``path`` with ``data`` (text is written as UTF-8), atomically.

        The data goes to a new file in the same directory, is flushed to disk, and is
        renamed over ``path``: a reader sees the old content or the new, never a mix, and a
        crash leaves the old file (plus, at worst, a ``.wactorz-write-*`` file). An
        existing file keeps its permissions (not set-user-id or set-group-id) and, where
        the service may set it, its owner.
        ``create_parents`` makes missing directories. Refused: more than
        ``max_write_bytes``, a directory, symlink or special file at ``path``.
        """
        shown, parts = self._file_parts(path, "written")
        payload = self._payload(shown, data)
        with _blaming(shown), self._using_root(shown) as root, contextlib.ExitStack() as stack:
            parent = self._parent(stack, root, parts, shown, _DIR_READ, create=create_parents)
            name = parts[-1]
            try:
                old: os.stat_result | None = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                old = None
            if old is not None:
                _check_regular(shown, old.st_mode)
            temporary = f".wactorz-write-{secrets.token_hex(8)}"
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE
            fd = os.open(temporary, flags, 0o666, dir_fd=parent)
            renamed = False
            try:
                if old is not None:  # its permissions, never set-id bits (as write(2) clears them)
                    os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777)
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, old.st_uid, old.st_gid)
                _write_all(fd, payload)
                os.fsync(fd)
                written = os.fstat(fd)
                os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
                renamed = True
            finally:
                os.close(fd)
                if not renamed:
                    with contextlib.suppress(OSError):
                        os.unlink(temporary, dir_fd=parent)
            os.fsync(parent)
            return _entry(_shown(parts), written)

    def append(self, path: str, data: str | bytes) -> Entry:
        """Add ``data`` (text as UTF-8) at the end of the file ``path``, creating it if missing.

        Not atomic as `write` is: a concurrent reader may see part of it. Refused: more than
        ``max_write_bytes`` at once, a directory, symlink or special file at ``path``, a
        file with several hard links (unless allowed).
        """
        shown, parts = self._file_parts(path, "appended to")
        payload = self._payload(shown, data)
        with _blaming(shown), self._using_root(shown) as root, contextlib.ExitStack() as stack:
            parent = self._parent(stack, root, parts, shown)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
            fd, _ = self._open_file(parent, parts[-1], flags, shown)
            _closing(stack, fd)
            _write_all(fd, payload)
            os.fsync(fd)
            return _entry(_shown(parts), os.fstat(fd))

    def _payload(self, shown: str, data: object) -> bytes:
        if isinstance(data, str):
            try:
                payload = data.encode("utf-8")
            except UnicodeEncodeError as error:
                raise WorkspaceError(
                    shown, Rule.BAD_ARGUMENT, f"cannot take text that is not UTF-8 ({error.reason})"
                ) from None
        elif isinstance(data, bytes | bytearray | memoryview):
            payload = bytes(data)
        else:
            raise WorkspaceError(
                shown, Rule.BAD_ARGUMENT, f"cannot take a {type(data).__name__} (give str or bytes)"
            )
        if len(payload) > self.max_write_bytes:
            raise WorkspaceError(
                shown,
                Rule.WRITE_TOO_LARGE,
                f"cannot take {len(payload)} bytes at once (at most {self.max_write_bytes})",
            )
        return payload

    def list(
        self, path: str = ".", *, pattern: str | None = None, limit: int | None = None
    ) -> Listing:
        """The entries of the directory ``path``, or those below it matching ``pattern``.

        Without a pattern: its direct entries. With one: the entries whose path relative
        to ``path`` matches it, segment by segment; ``*``, ``?`` and ``[...]`` match within
        one name (names starting with a dot included), ``**`` any number of directories,
        none included: ``"*.py"`` looks in ``path`` only, ``"**/*.py"`` at every depth.
        Symlinks are listed, never entered. At most ``limit`` entries (by default and at
        most ``max_list_entries``) in walk order, names sorted in each directory;
        `Listing.truncated` says when there were more.
        """
        parts = _parse(path)
        shown = str(path)
        glob = None if pattern is None else _Glob(_parse_pattern(pattern))
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise WorkspaceError(shown, Rule.BAD_ARGUMENT, f"cannot be listed with limit {limit!r}")
        wanted = self.max_list_entries if limit is None else min(limit, self.max_list_entries)
        with _blaming(shown), self._using_root(shown) as root:
            base = self._open_directory(root, parts, _DIR_READ, shown)
            entries, truncated = _scan(base, parts, glob, wanted, self.max_list_scan)
        return Listing(_shown(parts), pattern, tuple(entries), truncated)

    def stat(self, path: str) -> Entry:
        """What ``path`` is (`Entry`), the name itself when it is a symlink."""
        parts = _parse(path)
        shown = str(path)
        with _blaming(shown), self._using_root(shown) as root, contextlib.ExitStack() as stack:
            if not parts:
                return _entry(".", os.fstat(root))
            parent = self._parent(stack, root, parts, shown)
            return _entry(_shown(parts), os.stat(parts[-1], dir_fd=parent, follow_symlinks=False))

    def move(self, src: str, dst: str, *, overwrite: bool = False) -> Entry:
        """Rename ``src`` to ``dst`` (files, directories, or a symlink itself); answer its `Entry`.

        ``dst`` names the new path, not a directory to move into. An existing ``dst`` is
        refused with `Rule.EXISTS` unless ``overwrite`` (a directory can then replace only
        an empty directory). A directory cannot move below itself.
        """
        shown_src, src_parts = self._file_parts(src, "moved")
        shown_dst, dst_parts = self._file_parts(dst, "replaced")
        if dst_parts[: len(src_parts)] == src_parts:
            if dst_parts == src_parts:
                return self.stat(shown_src)
            raise WorkspaceError(
                shown_dst,
                Rule.BAD_ARGUMENT,
                f"is inside {brief_repr(shown_src)}",
                "a directory cannot be moved into itself",
            )
        with self._using_root(shown_src) as root, contextlib.ExitStack() as stack:
            with _blaming(shown_src):
                src_parent = self._parent(stack, root, src_parts, shown_src)
                status = os.stat(src_parts[-1], dir_fd=src_parent, follow_symlinks=False)
            with _blaming(shown_dst):
                dst_parent = self._parent(stack, root, dst_parts, shown_dst)
            try:
                if overwrite:
                    os.rename(
                        src_parts[-1], dst_parts[-1], src_dir_fd=src_parent, dst_dir_fd=dst_parent
                    )
                else:
                    _rename_noreplace(src_parent, src_parts[-1], dst_parent, dst_parts[-1])
            except OSError as error:
                blamed = shown_src if error.errno == errno.ENOENT else shown_dst
                raise _from_os_error(blamed, error) from error
            return _entry(_shown(dst_parts), status)

    def delete(self, path: str, *, recursive: bool = False) -> Entry:
        """Remove the name ``path`` (a symlink itself, never its target); answer what it was.

        A directory must be empty (`Rule.NOT_EMPTY`) unless ``recursive``, which removes
        its contents first, through directory descriptors, without following symlinks and
        at most `MAX_DEPTH` levels deep (`Rule.TOO_DEEP`). A recursive delete that fails
        midway leaves what it had not reached yet.
        """
        shown, parts = self._file_parts(path, "deleted")
        with _blaming(shown), self._using_root(shown) as root, contextlib.ExitStack() as stack:
            parent = self._parent(stack, root, parts, shown)
            name = parts[-1]
            status = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(status.st_mode):
                os.unlink(name, dir_fd=parent)
            elif recursive:
                _remove_tree(parent, name, shown)
            else:
                os.rmdir(name, dir_fd=parent)
            return _entry(_shown(parts), status)

    def mkdir(self, path: str, *, parents: bool = False) -> Entry:
        """Make the directory ``path``; answer its `Entry`.

        With ``parents``, missing directories on the way are made too and an existing
        directory is fine (``mkdir -p``); without, ``path`` must not exist (`Rule.EXISTS`)
        and its parent must.
        """
        parts = _parse(path)
        shown = str(path)
        with _blaming(shown), self._using_root(shown) as root, contextlib.ExitStack() as stack:
            if not parts:
                if not parents:
                    raise WorkspaceError(shown, Rule.EXISTS, "is the workspace root")
                return _entry(".", os.fstat(root))
            parent = self._parent(stack, root, parts, shown, create=parents)
            name = parts[-1]
            try:
                os.mkdir(name, 0o777, dir_fd=parent)
            except FileExistsError:
                if not parents:
                    raise
            status = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if stat.S_ISLNK(status.st_mode):
                raise WorkspaceError(shown, Rule.SYMLINK, "is a symbolic link")
            if not stat.S_ISDIR(status.st_mode):
                raise WorkspaceError(shown, Rule.EXISTS, "exists and is not a directory")
            return _entry(_shown(parts), status)


def _pread(fd: int, size: int, offset: int) -> bytes:
    """Up to ``size`` bytes at ``offset``, fewer only at the end of the file."""
    pieces: list[bytes] = []
    got = 0
    while got < size:
        piece = os.pread(fd, size - got, offset + got)
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)


@attrs.define
class _Frame:
    """One directory being walked: its descriptor, its path below the start, names left."""

    fd: int
    names: tuple[str, ...]
    left: list[str]


def _scan(
    base: int, base_parts: tuple[str, ...], glob: _Glob | None, limit: int, max_scan: int
) -> tuple[list[Entry], bool]:
    """Walk from the open directory ``base`` (which this closes), depth first, names sorted."""
    found: list[Entry] = []
    frames = [_Frame(base, (), [])]
    scanned = 0
    try:
        frames[0].left = sorted(os.listdir(base), reverse=True)
        while frames:
            frame = frames[-1]
            if not frame.left:
                os.close(frames.pop().fd)
                continue
            name = frame.left.pop()
            scanned += 1
            if scanned > max_scan:
                return found, True
            try:
                status = os.stat(name, dir_fd=frame.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed while we looked
            names = (*frame.names, name)
            if glob is None or glob.matches(names):
                if len(found) == limit:
                    return found, True
                found.append(_entry(_shown(base_parts + names), status))
            if glob is None or not stat.S_ISDIR(status.st_mode):
                continue
            if not glob.may_match_below(names):
                continue
            if len(names) >= MAX_DEPTH:
                return found, True
            try:
                fd = os.open(name, _DIR_READ, dir_fd=frame.fd)
            except OSError:
                continue  # gone, swapped for a link or unreadable: nothing below to list
            frames.append(_Frame(fd, names, []))
            frames[-1].left = sorted(os.listdir(fd), reverse=True)
        return found, False
    finally:
        for frame in frames:
            os.close(frame.fd)


def _remove_tree(parent: int, name: str, shown: str) -> None:
    """Remove the directory ``name`` in ``parent`` and all below it, never through a link.

    Every name is unlinked first (which removes files and symlinks without looking at
    what they point to); only what ``unlink`` calls a directory is opened, with
    ``O_NOFOLLOW``, emptied, and removed.
    """
    frames: list[tuple[int, str, int, list[str]]] = []  # (parent fd, name, fd, names left)
    try:
        top = os.open(name, _DIR_READ, dir_fd=parent)
        frames.append((parent, name, top, os.listdir(top)))
        while frames:
            above, own_name, fd, left = frames[-1]
            if not left:
                frames.pop()
                os.close(fd)
                os.rmdir(own_name, dir_fd=above)
                continue
            child = left.pop()
            try:
                os.unlink(child, dir_fd=fd)
                continue
            except FileNotFoundError:
                continue
            except IsADirectoryError:
                pass
            if len(frames) >= MAX_DEPTH:
                raise WorkspaceError(shown, Rule.TOO_DEEP, f"is more than {MAX_DEPTH} levels deep")
            below = os.open(child, _DIR_READ, dir_fd=fd)
            try:
                names = os.listdir(below)
            except BaseException:
                os.close(below)
                raise
            frames.append((fd, child, below, names))
    finally:
        for _, _, fd, _ in frames:
            os.close(fd)

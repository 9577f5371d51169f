"""The unprivileged uids runs get when the service is root: one per concurrent run.

A uid of its own per run is what makes ``RLIMIT_NPROC`` a per-run limit (it counts the
processes of a uid), keeps runs from signalling or tracing each other, and gives a
reliable way to find every process of a run after it ended, however it tried to leave
its process group: they are exactly the live processes of that uid.

The uids need no passwd entry; any uid of the range that has one (or whose number is a
group's) is skipped, since it belongs to a real account. Which uid is in use is decided
by an exclusive ``flock`` on a file per uid in a root-only directory, so that several
services on one machine (or several test runs) never share a uid, and a lock dies with
the process that held it. The holder writes a note (its pid and the run's directory)
into the file and empties it when the run was cleaned up; a note found by the next
holder means a service died mid-run, and that uid must be swept before use.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import stat
import tempfile
import threading
from pathlib import Path
from typing import Final, final

import attrs

from wactorz.agents.sandbox._errors import SandboxError

__all__ = ["Lease", "UidPool", "lock_directory"]

_RUN_LOCKS: Final = Path("/run/wactorz-sandbox")


@final
@attrs.frozen
class Lease:
    """One uid held for one run; ``stale`` is the note a previous holder left ("" if none)."""

    uid: int
    fd: int
    stale: str


def _is_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        pass
    else:
        return True
    try:
        grp.getgrgid(uid)
    except KeyError:
        return False
    return True


def lock_directory() -> Path:
    """The directory of the uid lock files: ``/run/wactorz-sandbox``, or one in the temporary
    directory where ``/run`` is not writable. Created private to the service's user;
    `SandboxError` if it exists and someone else could write in it."""
    candidates = [_RUN_LOCKS, Path(tempfile.gettempdir()) / f"wactorz-sandbox-{os.geteuid()}"]
    for directory in candidates:
        try:
            directory.mkdir(mode=0o700, exist_ok=True)
        except OSError:
            continue
        info = directory.lstat()
        if (
            not stat.S_ISDIR(info.st_mode)
            or info.st_uid != os.geteuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            raise SandboxError(
                f"{directory} is not a directory private to uid {os.geteuid()}: someone could "
                "forge the sandbox's uid locks there; remove it and start again"
            )
        return directory
    raise SandboxError(
        f"cannot create a directory for the sandbox's uid locks ({', '.join(map(str, candidates))})"
    )


@final
class UidPool:
    """The uids of ``range(first, stop)`` that are no account, handed out one per run."""

    def __init__(self, first: int, stop: int, directory: Path) -> None:
        self.first = first
        self.stop = stop
        self.directory = directory
        self.skipped = [uid for uid in range(first, stop) if _is_account(uid)]
        self._uids = [uid for uid in range(first, stop) if uid not in set(self.skipped)]
        self._next = 0
        self._lock = threading.Lock()
        self.used: set[int] = set()
        """Every uid this process was handed (for statistics, and for tests that look for
        processes a run left)."""

    @property
    def size(self) -> int:
        """How many uids the pool can hand out."""
        return len(self._uids)

    def acquire(self, note: str) -> Lease:
        """Hold the next free uid (round robin, so a uid rests as long as possible between
        runs), writing ``note`` in its lock file. Never blocks; `SandboxError` if every uid
        is in use."""
        with self._lock:
            start = self._next
            for offset in range(len(self._uids)):
                index = (start + offset) % len(self._uids)
                lease = self._try(self._uids[index], note)
                if lease is not None:
                    self._next = index + 1
                    self.used.add(lease.uid)
                    return lease
        raise SandboxError(
            f"all {len(self._uids)} sandbox uids ({self.first}-{self.stop - 1}) are in use by "
            "runs of this or another service: lower the concurrency or widen uid_range"
        )

    def _try(self, uid: int, note: str) -> Lease | None:
        path = self.directory / f"{uid}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        stale = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        return Lease(uid=uid, fd=fd, stale=stale)

    def give_back_unused(self, lease: Lease) -> None:
        """Give back a uid that ran nothing (the probe's), leaving a stale note as it was
        for the run that will recover the uid."""
        try:
            os.ftruncate(lease.fd, 0)
            if lease.stale:
                os.pwrite(lease.fd, lease.stale.encode(), 0)
        finally:
            os.close(lease.fd)

    def release(self, lease: Lease, *, clean: bool) -> None:
        """Give the uid back. Unless ``clean`` (some process of the run might survive), the
        note stays, so that the next holder sweeps the uid first."""
        try:
            if clean:
                os.ftruncate(lease.fd, 0)
        finally:
            os.close(lease.fd)

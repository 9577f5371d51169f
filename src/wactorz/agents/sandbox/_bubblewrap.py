"""bubblewrap's command line around a run (the optional outermost layer).

bubblewrap (``bwrap``, Debian package ``bubblewrap``) starts the program in new user,
pid, ipc, uts, cgroup, network and mount namespaces. Its mount namespace replaces
Landlock as the filesystem layer: the system directories are bound read-only, the
run's directory read-write, and nothing else exists; a Landlock domain would forbid
the mounts bwrap makes. Its pid namespace ends with the process bwrap starts, so
nothing of the run outlives it, even without root.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["bubblewrap_argv"]


def bubblewrap_argv(
    bwrap: str,
    argv: Sequence[str],
    *,
    read: Sequence[Path],
    write: Sequence[Path],
    cwd: Path,
    network: bool,
) -> list[str]:
    """``bwrap`` around ``argv``: every namespace new (the network too unless ``network``),
    the ``read`` paths bound read-only (symbolic links such as Debian's ``/bin ->
    usr/bin`` recreated as links), the ``write`` paths bound read-write, a fresh
    ``/proc`` and a minimal ``/dev``, the root (bwrap's own tmpfs) read-only, a new
    session, and death when the parent dies."""
    command = [bwrap, "--unshare-all"]
    if network:
        command.append("--share-net")
    command += ["--die-with-parent", "--new-session", "--proc", "/proc", "--dev", "/dev"]
    for path in read:
        if path.parts[1:2] in (("proc",), ("dev",)) or not os.path.lexists(path):
            continue
        if path.is_symlink():
            command += ["--symlink", os.readlink(path), str(path)]
        else:
            command += ["--ro-bind", str(path), str(path)]
    for path in write:
        command += ["--bind", str(path), str(path)]
    command += ["--remount-ro", "/", "--chdir", str(cwd), "--"]
    return command + list(argv)

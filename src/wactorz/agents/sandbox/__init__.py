"""The sandbox engine: run untrusted code (a snippet, a shell command) in layers of isolation.

```python
from wactorz.agents.sandbox import Policy, Snippet, run, probe

result = await run(Snippet("python", "print(1)"), policy=Policy(timeout_s=5))
result.stdout, result.exit_code, result.killed_by, result.to_json()
print(probe().format())          # which layers this machine gives, and why
```

A run is one child process and whatever it starts. `run` returns its `RunResult` when
the main process ends, after every process of the run was killed and reaped and its
directory removed; a program that fails, loops or floods is a normal result
(``killed_by`` says what stopped it), never an exception.

The layers, each probed once per `Policy` (`probe`, `doctor`), used when the machine
gives it, reported (`SandboxReport`, `RunResult.layers`) and, when missing, logged as a
warning that says what is lost; ``Policy.require`` refuses to run without a layer
(`SandboxUnavailable`), ``Policy.disable`` turns one off:

- ``process`` (always): its own session and process group, killed as a whole; a private
  directory as cwd, ``HOME`` and ``TMPDIR``, removed afterwards; an allow-listed
  environment (`SAFE_ENVIRONMENT`: nothing of the service's); stdin ``/dev/null``
  unless given; rlimits on CPU, address space, open files, processes, file size, and
  no core dumps; ``no_new_privs``; output kept to ``max_output_bytes`` per stream with
  the service's memory bounded, and the run killed past ``kill_output_bytes``.
- ``user`` (when the service is root): a uid of its own per run, from
  ``Policy.uid_range``, with no groups. Root ignores ``RLIMIT_NPROC`` and may raise its
  own limits, so without this layer a fork bomb is not contained; with it, runs cannot
  signal each other or the service, and every process of the run can be found and
  killed after it, even one that left the process group (double fork and ``setsid``).
- ``cgroup`` (root, cgroup v1): ``pids.max`` and a memory limit for the run's whole tree,
  its peak memory, and the list of its live processes.
- ``filesystem``: Landlock (Linux 5.13+): read and execute only the system directories
  (``/usr``, ``/etc``, ``/proc``...), the interpreter and ``extra_read_paths``; read and
  write only the run's directory (and its workdir). Not the service's home, data or
  project. Landlock also denies TCP bind/connect without ``network`` (ABI 4) and
  signals or abstract unix sockets to outside the run (ABI 6).
- ``network``: unless ``Policy.network``, a network namespace of the run's own (made by
  root, or in an unprivileged user namespace), where only a loopback exists, down; and a
  seccomp filter that refuses to create unix sockets (the host's, such as D-Bus's, are
  files that no namespace hides and Landlock does not guard); socket pairs still work.
- ``bubblewrap`` (``use_bubblewrap`` and ``bwrap`` installed): the run inside bwrap,
  with new user, pid, ipc, uts, net and mount namespaces and read-only binds of the
  system directories; it then confines the filesystem instead of Landlock, whose domain
  would forbid bwrap's mounts.

Python snippets run with ``python -I -u``: with the user layer that must be an
interpreter an unprivileged uid can execute (the service's own may sit in a private
home directory; then the system's ``/usr/bin/python3`` is used, and the report says so).

Every run's process is started by a *spawner*, a small single-threaded helper process
the service starts once (per configuration): it keeps a few *stubs* forked ahead of time
that already joined a fresh cgroup and made a network namespace, so that a run only
pays for what depends on it (its uid, limits, directory, Landlock domain, the exec).
Why a helper rather than a ``preexec_fn`` in the service, or a launcher program, and in
which order a stub applies the layers, is told in ``_spawner_program``; how the end of a
run finds every process in ``_sweep``; how output stays bounded in ``_output``. When the
service dies (even by SIGKILL), its spawner kills every run it had started.

`run` is meant for one Trio event loop per process (the spawner's requests are
serialized per Trio run).
"""

from __future__ import annotations

from wactorz.agents.sandbox._doctor import doctor
from wactorz.agents.sandbox._errors import SandboxError, SandboxUnavailable
from wactorz.agents.sandbox._output import OnOutput, StreamName
from wactorz.agents.sandbox._policy import (
    LAYERS,
    MAX_SNIPPET_BYTES,
    SNIPPET_FILE,
    Policy,
    Snippet,
    policy_from_config,
)
from wactorz.agents.sandbox._probe import probe
from wactorz.agents.sandbox._report import Check, Layer, SandboxReport
from wactorz.agents.sandbox._result import KILLED_BY, RunResult
from wactorz.agents.sandbox._run import SAFE_ENVIRONMENT, run

__all__ = [
    "KILLED_BY",
    "LAYERS",
    "MAX_SNIPPET_BYTES",
    "SAFE_ENVIRONMENT",
    "SNIPPET_FILE",
    "Check",
    "Layer",
    "OnOutput",
    "Policy",
    "RunResult",
    "SandboxError",
    "SandboxReport",
    "SandboxUnavailable",
    "Snippet",
    "StreamName",
    "doctor",
    "policy_from_config",
    "probe",
    "run",
]

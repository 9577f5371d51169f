"""What one sandboxed run may do (`Policy`), and a snippet of code to run (`Snippet`)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, final

import attrs

if TYPE_CHECKING:
    from wactorz.config import SandboxConfig

__all__ = [
    "LAYERS",
    "MAX_SNIPPET_BYTES",
    "SNIPPET_FILE",
    "Policy",
    "Snippet",
    "policy_from_config",
]

MiB: Final = 1 << 20

LAYERS: Final = ("process", "user", "cgroup", "filesystem", "network", "bubblewrap")
"""The isolation layers, in the order they are reported. See `wactorz.agents.sandbox`."""

MAX_SNIPPET_BYTES: Final = 100_000
"""The largest snippet `run` takes (a snippet is code written for the moment; a larger
program goes in as a file, with ``files=``)."""

SNIPPET_FILE: Final = ".wactorz-snippet"
"""The name (plus ``.py`` or ``.sh``) of the file in the run's private directory that holds
a snippet's code. The code is not passed on the command line: any process of the host
may read another's command line in ``/proc``, and another run could read this one's."""

_DEFAULT_UIDS: Final = (60600, 61100)


def _layer_names(value: Iterable[str]) -> frozenset[str]:
    if isinstance(value, str):  # "network" would otherwise become {"n", "e", ...}
        value = (value,)
    return frozenset(value)


def _known_layers(instance: Any, attribute: attrs.Attribute[Any], value: frozenset[str]) -> None:
    unknown = sorted(value - set(LAYERS))
    if unknown:
        raise ValueError(
            f"{attribute.name}: unknown layer {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(LAYERS)})"
        )


def _paths(value: Iterable[str | Path]) -> tuple[Path, ...]:
    if isinstance(value, str | Path):
        value = (value,)
    return tuple(Path(item) for item in value)


def _absolute(instance: Any, attribute: attrs.Attribute[Any], value: tuple[Path, ...]) -> None:
    relative = [str(path) for path in value if not path.is_absolute()]
    if relative:
        raise ValueError(f"{attribute.name}: paths must be absolute, not {', '.join(relative)}")


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0 or (isinstance(value, float) and math.isinf(value)):
        raise ValueError(f"{attribute.name} must be a positive finite number, not {value!r}")


def _at_least(low: int) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(
                f"{attribute.name} must be an integer of at least {low}, not {value!r}"
            )

    return check


def _uid_range(instance: Any, attribute: attrs.Attribute[Any], value: tuple[int, int]) -> None:
    first, stop = value
    if not 1000 <= first < stop <= 2**31:
        raise ValueError(
            f"uid_range must be (first, stop) with 1000 <= first < stop, not {value!r}: "
            "one unprivileged uid per concurrent run, none of them a real account"
        )


@final
@attrs.frozen(kw_only=True)
class Policy:
    """What one sandboxed run may do. Every limit has a default fit for a short snippet.

    Limits are per run: ``timeout_s`` of wall clock for the whole run; ``cpu_s`` CPU
    seconds per process (``RLIMIT_CPU``: SIGXCPU, then SIGKILL a second later);
    ``memory_bytes`` of address space per process (``RLIMIT_AS``) and, with the cgroup
    layer, of memory for the run's whole process tree; ``max_processes`` processes and
    threads (``RLIMIT_NPROC`` for the run's own uid, and the cgroup's ``pids.max``);
    ``max_open_files`` descriptors per process; ``max_file_bytes`` per file written.

    Output: the first ``max_output_bytes`` of each stream are kept in the result; the
    rest is read, counted and dropped, so the service's memory stays bounded however
    much a run prints. A stream that passes ``kill_output_bytes`` in all (default 100
    times ``max_output_bytes``; None: never) gets the run killed as a runaway
    (``killed_by="output_limit"``).

    ``network`` True lets the run use the host's network (by default it gets a network
    namespace of its own, with only a loopback that is down). ``require`` names layers
    the operator refuses to run without: `run` raises `SandboxUnavailable` when one
    cannot be had on this machine. ``disable`` names layers not to use even when they
    are available (to find out whether a layer breaks some program; reported as off).
    ``use_bubblewrap`` adds ``bwrap`` around the run when it is installed.

    ``python`` is the interpreter for Python snippets (None: the service's own if the
    run's user can execute it, else the system's ``python3``). ``extra_read_paths``
    are made readable (and executable) inside the run, besides the system directories.
    ``uid_range`` is ``(first, stop)``: the uids given to runs when the service is root,
    one per concurrent run, none of which may be a real account (the default sits
    between Debian's regular users, below 60000, and systemd's dynamic users, from 61184).
    """

    timeout_s: float = attrs.field(default=30.0, validator=_positive)
    cpu_s: int = attrs.field(default=30, validator=_at_least(1))
    memory_bytes: int = attrs.field(default=512 * MiB, validator=_at_least(16 * MiB))
    max_processes: int = attrs.field(default=64, validator=_at_least(1))
    max_open_files: int = attrs.field(default=256, validator=_at_least(16))
    max_file_bytes: int = attrs.field(default=64 * MiB, validator=_at_least(0))
    max_output_bytes: int = attrs.field(default=1 * MiB, validator=_at_least(0))
    kill_output_bytes: int | None = attrs.field(
        default=attrs.Factory(lambda self: 100 * max(self.max_output_bytes, MiB), takes_self=True),
        validator=attrs.validators.optional(_at_least(1)),
    )
    network: bool = False
    require: frozenset[str] = attrs.field(
        default=frozenset(), converter=_layer_names, validator=_known_layers
    )
    disable: frozenset[str] = attrs.field(
        default=frozenset(), converter=_layer_names, validator=_known_layers
    )
    use_bubblewrap: bool = False
    python: str | None = None
    extra_read_paths: tuple[Path, ...] = attrs.field(
        default=(), converter=_paths, validator=_absolute
    )
    uid_range: tuple[int, int] = attrs.field(
        default=_DEFAULT_UIDS, converter=tuple, validator=_uid_range
    )

    def __attrs_post_init__(self) -> None:
        contradictions = []
        if "process" in self.disable:
            contradictions.append("the process layer cannot be disabled (it is the sandbox)")
        for name in sorted(self.require & self.disable):
            contradictions.append(f"{name!r} is both required and disabled")
        if "network" in self.require and self.network:
            contradictions.append("'network' is required but network=True allows it")
        if "bubblewrap" in self.require and not self.use_bubblewrap:
            contradictions.append("'bubblewrap' is required but use_bubblewrap is False")
        if contradictions:
            raise ValueError("inconsistent sandbox policy: " + "; ".join(contradictions))


@final
@attrs.frozen
class Snippet:
    """Source code to run: ``language`` "python" (run as ``python -I -u FILE``) or "sh"
    (``/bin/sh FILE``), the file being `SNIPPET_FILE` in the run's private directory. At
    most `MAX_SNIPPET_BYTES` of UTF-8, with no NUL character."""

    language: Literal["python", "sh"] = attrs.field(
        validator=attrs.validators.in_(("python", "sh"))
    )
    code: str = attrs.field(validator=attrs.validators.instance_of(str))

    def __attrs_post_init__(self) -> None:
        size = len(self.code.encode("utf-8", "surrogatepass"))
        if size > MAX_SNIPPET_BYTES:
            raise ValueError(
                f"the {self.language} snippet is {size:,} bytes, over the {MAX_SNIPPET_BYTES:,} "
                "a snippet may be: pass the program as a file (files=) and run it by name"
            )
        if "\0" in self.code:
            raise ValueError(f"the {self.language} snippet contains a NUL character")

    @property
    def file_name(self) -> str:
        """The name of the file the code is written to, in the run's private directory."""
        return SNIPPET_FILE + (".py" if self.language == "python" else ".sh")

    def argv(self, python: str | None, path: str) -> list[str]:
        """The command line running this snippet, written to ``path``, with interpreter
        ``python`` (isolated mode, unbuffered output)."""
        if self.language == "sh":
            return ["/bin/sh", path]
        if python is None:
            raise ValueError("no Python interpreter to run a Python snippet with")
        return [python, "-I", "-u", path]


def policy_from_config(config: SandboxConfig) -> Policy:
    """The `Policy` the ``sandbox`` settings describe (what the service's agents run with)."""
    return Policy(
        timeout_s=config.timeout_s,
        cpu_s=config.cpu_limit_s,
        memory_bytes=config.memory_limit_mb * MiB,
        max_processes=config.max_processes,
        max_open_files=config.max_open_files,
        max_file_bytes=config.max_file_mb * MiB,
        max_output_bytes=config.max_output_bytes,
        network=config.network,
        require=frozenset(config.require),
        use_bubblewrap=config.bubblewrap,
        python=config.python,
    )

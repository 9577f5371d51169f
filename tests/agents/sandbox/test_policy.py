"""`Policy` and `Snippet` refuse what makes no sense, with messages that say what would."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from wactorz.agents.sandbox import LAYERS, MAX_SNIPPET_BYTES, SNIPPET_FILE, Policy, Snippet
from wactorz.agents.sandbox._limits import rlimits


def test_defaults_are_the_documented_ones() -> None:
    policy = Policy()
    assert policy.timeout_s == 30.0
    assert policy.memory_bytes == 512 << 20
    assert policy.max_output_bytes == 1 << 20
    assert policy.kill_output_bytes == 100 << 20
    assert not policy.network
    assert policy.require == policy.disable == frozenset()


def test_the_output_kill_follows_the_kept_output_unless_given() -> None:
    assert Policy(max_output_bytes=4 << 20).kill_output_bytes == 400 << 20
    assert Policy(max_output_bytes=10).kill_output_bytes == 100 << 20
    assert Policy(kill_output_bytes=None).kill_output_bytes is None


def test_an_unknown_layer_is_named_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown layer 'landlok'") as info:
        Policy(require={"landlok"})
    assert ", ".join(LAYERS) in str(info.value)


def test_a_single_layer_name_is_not_split_into_letters() -> None:
    assert Policy(require="user").require == frozenset({"user"})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"require": {"cgroup"}, "disable": {"cgroup"}}, "'cgroup' is both required and disabled"),
        ({"require": {"network"}, "network": True}, "network=True allows it"),
        ({"require": {"bubblewrap"}}, "use_bubblewrap is False"),
        ({"disable": {"process"}}, "cannot be disabled"),
    ],
)
def test_contradictions_are_refused(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Policy(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "arguments",
    [
        {"timeout_s": 0},
        {"timeout_s": float("inf")},
        {"cpu_s": 0},
        {"memory_bytes": 1 << 20},
        {"max_processes": 0},
        {"max_open_files": True},
        {"uid_range": (0, 100)},
        {"uid_range": (61000, 61000)},
        {"extra_read_paths": ("relative/path",)},
    ],
)
def test_bad_limits_are_refused(arguments: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Policy(**arguments)  # type: ignore[arg-type]


def test_extra_read_paths_become_paths() -> None:
    assert Policy(extra_read_paths=["/opt/x"]).extra_read_paths == (Path("/opt/x"),)


def test_rlimits_follow_the_policy_and_the_cpu_limit_warns_first() -> None:
    policy = Policy(
        cpu_s=3, max_processes=7, max_open_files=99, max_file_bytes=5, memory_bytes=1 << 30
    )
    limits = {kind: (soft, hard) for kind, soft, hard in rlimits(policy)}
    assert limits[resource.RLIMIT_CPU] == (3, 4)
    assert limits[resource.RLIMIT_NPROC] == (7, 7)
    assert limits[resource.RLIMIT_NOFILE] == (99, 99)
    assert limits[resource.RLIMIT_FSIZE] == (5, 5)
    assert limits[resource.RLIMIT_AS] == (1 << 30, 1 << 30)
    assert limits[resource.RLIMIT_CORE] == (0, 0)


def test_rlimits_never_ask_more_than_the_service_has() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limits = {kind: (s, h) for kind, s, h in rlimits(Policy(max_open_files=hard + 1000))}
    assert limits[resource.RLIMIT_NOFILE] == (hard, hard)


def test_a_snippet_becomes_an_isolated_unbuffered_python_or_a_shell_reading_a_file() -> None:
    python = Snippet("python", "print(1)")
    assert python.file_name == f"{SNIPPET_FILE}.py"
    assert python.argv("/usr/bin/python3", "/run/x.py") == [
        "/usr/bin/python3",
        "-I",
        "-u",
        "/run/x.py",
    ]
    assert Snippet("sh", "echo hi").argv(None, "/run/x.sh") == ["/bin/sh", "/run/x.sh"]
    with pytest.raises(ValueError, match="no Python interpreter"):
        python.argv(None, "/run/x.py")


def test_a_snippet_too_big_for_one_argument_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="pass the program as a file"):
        Snippet("python", "#" * (MAX_SNIPPET_BYTES + 1))
    with pytest.raises(ValueError, match="NUL"):
        Snippet("sh", "echo \0")
    with pytest.raises(ValueError):
        Snippet("ruby", "puts 1")  # type: ignore[arg-type]

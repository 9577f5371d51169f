"""`probe` and `doctor` tell the truth about this machine; a missing layer is a warning that says
what is lost, and a required one is a refusal that says why."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from tests.agents.sandbox.conftest import ROOT, needs_root
from wactorz.agents.sandbox import (
    LAYERS,
    Policy,
    SandboxUnavailable,
    Snippet,
    doctor,
    probe,
    run,
)
from wactorz.agents.sandbox._landlock import abi_version, describe


def _cgroup_v1(controller: str) -> bool:
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, _, fstype, options, *_ = line.split()
        if fstype == "cgroup" and controller in options.split(","):
            return True
    return False


def test_every_layer_is_reported_in_order_with_a_reason() -> None:
    report = probe(Policy())
    assert tuple(layer.name for layer in report.layers) == LAYERS
    assert all(layer.detail for layer in report.layers)
    assert report.layer("process").active
    text = report.format()
    for name in LAYERS:
        assert f"  {name}" in text
    assert "python" in text


def test_the_report_matches_what_this_machine_has() -> None:
    report = probe(Policy(use_bubblewrap=True))
    assert report.layer("user").active is ROOT
    assert report.layer("cgroup").active is (ROOT and _cgroup_v1("pids") and _cgroup_v1("memory"))
    if shutil.which("bwrap"):
        assert report.layer("bubblewrap").active, report.layer("bubblewrap").detail
        assert report.layer("filesystem").detail.startswith("bubblewrap's mount namespace")
    else:
        assert "apt-get install bubblewrap" in report.layer("bubblewrap").detail
    plain = probe(Policy())
    assert plain.layer("filesystem").active is (abi_version() > 0)
    assert plain.layer("network").active
    if ROOT:
        assert plain.python == "/usr/bin/python3" or "not executable" not in plain.python_detail


@needs_root
def test_as_root_on_this_kind_of_machine_every_layer_is_on() -> None:
    """Debian 12, kernel 6.x, root, cgroup v1 and bubblewrap installed: CI and this machine."""
    if not (_cgroup_v1("pids") and shutil.which("bwrap") and abi_version() >= 6):
        pytest.skip("not this kind of machine")
    assert probe(Policy(use_bubblewrap=True)).active == LAYERS
    assert probe(Policy()).active == ("process", "user", "cgroup", "filesystem", "network")
    assert "ABI" in probe(Policy()).layer("filesystem").detail


def test_a_layer_not_asked_for_is_off_without_a_warning() -> None:
    report = probe(Policy(network=True))
    network, bubblewrap = report.layer("network"), report.layer("bubblewrap")
    assert (network.active, network.wanted, network.status) == (False, False, "not asked")
    assert not bubblewrap.wanted
    assert not [line for line in report.warnings() if "network" in line or "bubblewrap" in line]


async def test_a_layer_forced_off_is_a_warning_saying_what_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = Policy(disable={"filesystem", "cgroup"}, max_open_files=255)  # a plan of its own
    with caplog.at_level(logging.WARNING, logger="wactorz.sandbox"):
        result = await run(Snippet("sh", "echo ran"), policy=policy)
    assert result.stdout == "ran\n"
    assert "filesystem" not in result.layers and "cgroup" not in result.layers
    logged = [record.getMessage() for record in caplog.records if record.name == "wactorz.sandbox"]
    assert (
        "sandbox layer 'filesystem' is off: disabled by policy; lost: runs can read whatever "
        "their user may (world-readable files such as the project's) and write wherever it may "
        "(/tmp)"
    ) in logged
    assert any(line.startswith("sandbox layer 'cgroup' is off") for line in logged)
    assert "filesystem (LOST)" in probe(policy).summary()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wactorz.sandbox"):
        await run(Snippet("sh", "true"), policy=policy)
    assert not caplog.records, "the warning is given once per policy, not per run"


@needs_root
async def test_a_required_layer_the_machine_cannot_give_is_refused_with_the_reason() -> None:
    # uid 65534 is nobody's: a range of accounts only leaves the user layer nothing to give.
    policy = Policy(uid_range=(65534, 65535), require={"user"})
    with pytest.raises(SandboxUnavailable, match="user: every uid of uid_range"):
        await run(Snippet("sh", "true"), policy=policy)


def test_the_probe_is_remembered_per_policy() -> None:
    assert probe(Policy(timeout_s=7)) is probe(Policy(timeout_s=7))


def test_landlock_is_described_by_its_abi() -> None:
    assert describe(0) == "Landlock is not available"
    assert "not signals" in describe(5)
    assert "signals" in describe(abi_version()) or abi_version() < 6


async def test_the_doctor_sees_every_active_layer_hold() -> None:
    report = await doctor(Policy(timeout_s=20))
    assert report.checks, report.format()
    failed = [check for check in report.checks if not check.passed]
    assert not failed, report.format()
    checked = {check.name for check in report.checks}
    assert checked == set(report.active)
    assert "live checks:" in report.format()
    assert report.to_json()["checks"]


@pytest.mark.slow
async def test_the_doctor_sees_bubblewrap_hold() -> None:
    policy = Policy(use_bubblewrap=True)
    if not probe(policy).layer("bubblewrap").active:
        pytest.skip(probe(policy).layer("bubblewrap").detail)
    report = await doctor(policy)
    assert [check.name for check in report.checks if not check.passed] == [], report.format()
    assert "bubblewrap" in {check.name for check in report.checks}

"""What every sandbox test checks afterwards, and what the tests share.

After each test (an autouse fixture): no live process of a uid this process's runs were
given, no live child of the test process, no run directory left. A test whose run
leaked fails there even if its own assertions passed.

Runs of this test process make their directories in a temporary directory of its own
(set before any plan is made), so that another process using the sandbox on the same
machine at the same time (another test session) cannot be mistaken for a leak.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from wactorz.agents.sandbox import Policy, probe
from wactorz.agents.sandbox._probe import used_uids
from wactorz.agents.sandbox._spawner import spawner_pids

ROOT = os.geteuid() == 0
UIDS = range(*Policy().uid_range)
TMP = Path(tempfile.mkdtemp(prefix="wactorz-tests-", dir="/tmp"))
TMP.chmod(0o755)  # the runs' users must be able to enter it
tempfile.tempdir = str(TMP)
atexit.register(shutil.rmtree, TMP, ignore_errors=True)

needs_root = pytest.mark.skipif(not ROOT, reason="the service must be root for this layer")


def active(name: str, policy: Policy | None = None) -> bool:
    """Whether layer ``name`` is on for ``policy`` on this machine."""
    return probe(policy).layer(name).active


def needs(*names: str, policy: Policy | None = None) -> pytest.MarkDecorator:
    """Skip unless every layer of ``names`` is on (saying which is off, and why)."""
    report = probe(policy)
    off = [report.layer(name) for name in names if not report.layer(name).active]
    return pytest.mark.skipif(
        bool(off), reason="; ".join(f"layer {layer.name} off: {layer.detail}" for layer in off)
    )


def sandbox_processes() -> list[psutil.Process]:
    """Live (not zombie) processes of the uids runs of this process were given, or children
    of this process (other than the sandbox's spawners, which stay for the life of the
    process). Runs of other processes on the machine, using other uids, are no concern."""
    found = []
    me = os.getpid()
    spawners = spawner_pids()
    uids = used_uids()
    for process in psutil.process_iter(["uids", "status", "ppid"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if process.info["uids"].real in uids or (
                process.info["ppid"] == me and process.pid not in spawners
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def _describe(process: psutil.Process) -> str:
    try:
        return (
            f"pid {process.pid} ppid {process.ppid()} uid {process.uids().real} {process.cmdline()}"
        )
    except psutil.Error as exc:
        return f"pid {process.pid} ({exc})"


def run_directories() -> set[Path]:
    return set(TMP.glob("wactorz-run-*"))


@pytest.fixture(autouse=True)
def _nothing_of_a_run_survives() -> Iterator[None]:
    before = run_directories()
    yield
    deadline = time.monotonic() + 2.0
    while (left := sandbox_processes()) and time.monotonic() < deadline:
        time.sleep(0.02)  # a process the run killed may still be exiting
    described = [_describe(process) for process in left]
    for process in left:
        process.kill()
    assert not left, f"processes of a run survived it: {described}"
    assert run_directories() - before == set(), "a run's directory was left behind"

"""What every sandbox test checks afterwards, and what the tests share.

After each test (an autouse fixture): no live process of any sandbox uid, no live child
of the test process, no run directory left in the temporary directory. A test whose
run leaked fails there even if its own assertions passed.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from wactorz.agents.sandbox import Policy, probe

ROOT = os.geteuid() == 0
UIDS = range(*Policy().uid_range)
TMP = Path(tempfile.gettempdir())

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
    """Live (not zombie) processes of the sandbox's uids, or children of this process."""
    found = []
    me = os.getpid()
    for process in psutil.process_iter(["uids", "status", "ppid"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if process.info["uids"].real in UIDS or (
                process.info["ppid"] == me and process.pid != me
            ):
                found.append(process)
        except psutil.Error:
            continue
    return found


def run_directories() -> set[Path]:
    return set(TMP.glob("wactorz-run-*"))


@pytest.fixture(autouse=True)
def _nothing_of_a_run_survives() -> Iterator[None]:
    before = run_directories()
    yield
    deadline = time.monotonic() + 2.0
    while (left := sandbox_processes()) and time.monotonic() < deadline:
        time.sleep(0.02)  # a process the run killed may still be exiting
    described = [f"{p.pid} {p.info['uids'].real} {p.name()}" for p in left]
    for process in left:
        process.kill()
    assert not left, f"processes of a run survived it: {described}"
    assert run_directories() - before == set(), "a run's directory was left behind"

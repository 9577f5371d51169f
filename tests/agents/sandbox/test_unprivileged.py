"""The engine run by a service that is not root: the hostile programs again, from uid 65534.

The test process is root (as in CI), so it starts a small driver as ``nobody`` with
``setpriv`` and Debian's ``/usr/bin/python3`` (the project's interpreter and its
dependencies live under ``/root``, which ``nobody`` cannot enter). The driver imports
the engine from a world-readable copy of the source and of the pure-Python packages it
needs (trio, attrs, outcome, sniffio, sortedcontainers, idna), runs every scenario and
prints one JSON document, which the tests below read.

Without root there is no per-run uid and no cgroup: the report must say so and what is
lost, the other layers (Landlock, the network namespace, bubblewrap) must still hold,
and a daemon must die with its run when bubblewrap is used.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.agents.sandbox.conftest import ROOT

PACKAGES = ("trio", "attr", "attrs", "outcome", "sniffio", "sortedcontainers", "idna", "wactorz")
NOBODY = 65534
MARKER = "61.4242"  # a daemon sleeps this long: it is found by it afterwards
SETPRIV = shutil.which("setpriv")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not ROOT, reason="this suite already runs unprivileged"),
    pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is not installed"),
    pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="no /usr/bin/python3"),
]

DRIVER = r"""
import json, os, resource, signal, socket, sys, time
import trio
from wactorz.agents.sandbox import Policy, SandboxUnavailable, Snippet, probe, run

SECRET, MARKER = sys.argv[1], sys.argv[2]
results = {}
received = []
# SIGWINCH is ignored by default: if a run could signal outside itself, nothing is harmed.
signal.signal(signal.SIGWINCH, lambda number, frame: received.append(number))

def dirs():
    base = os.environ["TMPDIR"]  # the driver's own: other processes on the machine run too
    return sorted(name for name in os.listdir(base) if name.startswith("wactorz-run-"))

async def py(code, **policy):
    policy.setdefault("timeout_s", 10)
    result = await run(Snippet("python", code), policy=Policy(**policy))
    return result.to_json()

async def main():
    before = dirs()
    results["uid"] = os.getuid()
    results["report"] = probe(Policy()).to_json()
    results["warnings"] = probe(Policy()).warnings()
    results["print"] = await py("print(1)")
    results["environment"] = await py(
        "import os\nprint(sorted(os.environ))\n"
        "try:\n    print(open(f'/proc/{os.getppid()}/environ').read())\n"
        "except OSError as exc:\n    print('refused', exc.strerror)"
    )
    results["read"] = await py(f"print(open({SECRET!r}).read())")
    target = f"/tmp/wactorz-escape-{MARKER}"
    results["write"] = await py(f"open({target!r}, 'x').write('escaped')")
    results["write_escaped"] = os.path.exists(target)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    results["connect"] = await py(
        f"import socket\ns = socket.socket()\ns.settimeout(3)\ns.connect(('127.0.0.1', {port}))"
    )
    for listener in listeners:
        await listener.aclose()
    results["signal"] = await py(
        "import os, signal\n"
        "for target in (os.getppid(), -1):\n"
        "    try:\n        os.kill(target, signal.SIGWINCH)\n        print('sent', target)\n"
        "    except OSError as exc:\n        print('refused', target, exc.strerror)"
    )
    await trio.sleep(0.1)
    results["signals_received"] = received
    results["fork"] = await py(
        "import os, time\nn = 0\nfor _ in range(3000):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n    n += 1\nprint(n)",
        max_processes=40,
    )
    results["memory"] = await py("x = bytearray(4 << 30)", memory_bytes=256 << 20)
    results["cpu"] = await py("while True:\n    pass", cpu_s=1)
    results["timeout"] = await py("import time; time.sleep(30)", timeout_s=0.5)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    results["flood"] = await py(
        "import sys\nb = b'x' * (1 << 20)\nfor _ in range(100):\n    sys.stdout.buffer.write(b)",
        kill_output_bytes=None,
    )
    results["flood"]["stdout"] = ""
    results["flood_grew_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak
    results["bubblewrap_report"] = probe(Policy(use_bubblewrap=True)).to_json()
    if probe(Policy(use_bubblewrap=True)).layer("bubblewrap").active:
        results["daemon"] = await py(
            "import subprocess\n"
            f"subprocess.Popen(['setsid', 'sleep', {MARKER!r}], start_new_session=True)\n"
            "print('left it')",
            use_bubblewrap=True,
        )
        read = f"print(open({SECRET!r}).read())"
        results["bubblewrap_read"] = await py(read, use_bubblewrap=True)
    try:
        await run(Snippet("sh", "true"), policy=Policy(require={"user"}))
        results["require"] = "ran"
    except SandboxUnavailable as exc:
        results["require"] = str(exc)
    results["locked"] = await py(
        "import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\n"
        "os.chmod('a/b/f', 0)\nos.chmod('a/b', 0)\nos.chmod('a', 0)\nos.chmod('.', 0o500)"
    )
    results["after"] = await py("print('fine')")
    results["dirs_left"] = sorted(set(dirs()) - set(before))
    print(json.dumps(results))

trio.run(main)
"""


def _copy_packages(destination: Path) -> None:
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations, name
        source = Path(next(iter(spec.submodule_search_locations)))
        shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))


def _survivors() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "uids", "status"]):
        if (
            process.info["status"] != psutil.STATUS_ZOMBIE
            and process.info["uids"].real == NOBODY
            and MARKER in " ".join(process.info["cmdline"] or ())
        ):
            found.append(process)
    return found


@pytest.fixture(scope="module")
def seen() -> Iterator[dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="wactorz-unprivileged-"))
    secret = home / "secret.txt"
    try:
        home.chmod(0o755)
        _copy_packages(home)
        (home / "driver.py").write_text(DRIVER)
        secret.write_text("the service's secret")
        secret.chmod(0o644)
        scratch = home / "tmp"
        scratch.mkdir()
        os.chown(scratch, NOBODY, NOBODY)
        environment = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": "/nonexistent",
            "LANG": "C.UTF-8",
            "TMPDIR": str(scratch),
            "ANTHROPIC_API_KEY": "sk-test-secret",
        }
        completed = subprocess.run(
            [
                str(SETPRIV),
                f"--reuid={NOBODY}",
                f"--regid={NOBODY}",
                "--clear-groups",
                "/usr/bin/python3",
                "-s",
                str(home / "driver.py"),
                str(secret),
                MARKER,
            ],
            capture_output=True,
            env=environment,
            cwd="/",
            timeout=120,
            check=False,
        )
        assert completed.returncode == 0, completed.stderr.decode()[-3000:]
        yield json.loads(completed.stdout.decode().splitlines()[-1])
    finally:
        left = _survivors()
        for process in left:
            process.kill()
        shutil.rmtree(home)
        Path(f"/tmp/wactorz-escape-{MARKER}").unlink(missing_ok=True)
        assert not left, f"a daemon of the unprivileged driver survived: {left}"


def _layer(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(layer for layer in report["layers"] if layer["name"] == name)


def test_the_driver_really_ran_unprivileged(seen: dict[str, Any]) -> None:
    assert seen["uid"] == NOBODY
    assert seen["print"]["stdout"] == "1\n"
    assert seen["after"]["stdout"] == "fine\n"
    assert seen["locked"]["exit_code"] == 0, seen["locked"]["stderr"]
    assert seen["dirs_left"] == []  # even the one the run locked itself out of


def test_without_root_the_report_says_what_is_lost(seen: dict[str, Any]) -> None:
    user, cgroup = _layer(seen["report"], "user"), _layer(seen["report"], "cgroup")
    assert not user["active"] and user["wanted"]
    assert "not root" in user["detail"] and "can outlive the run" in user["detail"]
    assert not cgroup["active"] and "only root" in cgroup["detail"]
    assert any(line.startswith("sandbox layer 'user' is off") for line in seen["warnings"])
    assert _layer(seen["report"], "filesystem")["active"]
    assert _layer(seen["report"], "network")["active"]
    assert seen["report"]["python"] == "/usr/bin/python3"
    assert "not root" in seen["require"]


def test_without_root_secrets_and_files_stay_out(seen: dict[str, Any]) -> None:
    environment = seen["environment"]["stdout"].splitlines()
    assert environment[0] == "['HOME', 'LANG', 'PATH', 'TMPDIR']"
    assert environment[1].startswith("refused")  # the service's /proc/PID/environ, same uid
    assert "sk-test-secret" not in json.dumps(seen)
    assert "PermissionError" in seen["read"]["stderr"]
    assert "PermissionError" in seen["write"]["stderr"] and not seen["write_escaped"]
    assert "PermissionError" in seen["connect"]["stderr"]


def test_without_root_the_run_cannot_signal_the_service(seen: dict[str, Any]) -> None:
    """Same uid, so only Landlock's signal scope (ABI 6) stands in the way. kill(-1) reports
    success even when every target refused, so the driver counts what it received."""
    if "signals" not in _layer(seen["report"], "filesystem")["detail"]:
        pytest.skip("Landlock before ABI 6 does not scope signals: the report says so")
    assert seen["signal"]["stdout"].splitlines()[0].startswith("refused")
    assert seen["signals_received"] == []


def test_without_root_the_limits_still_hold(seen: dict[str, Any]) -> None:
    assert int(seen["fork"]["stdout"]) < 40
    assert seen["memory"]["exit_code"] == 1 and "MemoryError" in seen["memory"]["stderr"]
    assert seen["cpu"]["killed_by"] == "cpu_limit"
    assert seen["timeout"]["killed_by"] == "timeout"
    assert seen["flood"]["stdout_bytes"] == 100 << 20
    assert seen["flood_grew_kib"] < 24 << 10


def test_without_root_bubblewrap_kills_a_daemon_with_its_run(seen: dict[str, Any]) -> None:
    if "daemon" not in seen:
        pytest.skip(_layer(seen["bubblewrap_report"], "bubblewrap")["detail"])
    assert seen["daemon"]["stdout"] == "left it\n"
    assert not _survivors()
    assert "bubblewrap" in seen["daemon"]["layers"]
    assert "FileNotFoundError" in seen["bubblewrap_read"]["stderr"]

"""`doctor`: the probe's report, plus a live run that tries what each active layer forbids.

A layer can be available and still not hold (a kernel built without some option, a
security module in the way, a bug): the doctor starts one real run under the policy and,
from inside it, reads a world-readable file outside the run's directory, writes beside
it, connects to a TCP listener the doctor opened on 127.0.0.1, signals the service, and
reports its environment, cgroup and pid 1. Each active layer gets a `Check` saying
whether it was seen refusing what it should.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from wactorz.agents.sandbox._policy import Policy, Snippet
from wactorz.agents.sandbox._report import Check, SandboxReport
from wactorz.agents.sandbox._run import SAFE_ENVIRONMENT, plan_async, run

__all__ = ["doctor"]

_PROBE_CODE: Final = r"""
import json, os, socket
seen = {"uid": os.getuid(), "env": sorted(os.environ)}
try:
    seen["cgroup"] = open("/proc/self/cgroup").read()
    seen["pid1"] = open("/proc/1/comm").read().strip()
except OSError as exc:
    seen["cgroup"] = seen["pid1"] = str(exc)
try:
    open(os.environ["WZ_SECRET"]).read()
    seen["read_outside"] = "allowed"
except OSError as exc:
    seen["read_outside"] = str(exc)
try:
    with open(os.environ["WZ_TARGET"], "x") as f:
        f.write("escaped")
    seen["write_outside"] = "allowed"
except OSError as exc:
    seen["write_outside"] = str(exc)
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("127.0.0.1", int(os.environ["WZ_PORT"])))
    seen["connect"] = "allowed"
except OSError as exc:
    seen["connect"] = str(exc)
try:
    socket.socket(socket.AF_UNIX).close()
    seen["unix_socket"] = "allowed"
except OSError as exc:
    seen["unix_socket"] = str(exc)
try:
    os.kill(int(os.environ["WZ_SERVICE"]), 0)
    seen["signal_service"] = "allowed"
except OSError as exc:
    seen["signal_service"] = str(exc)
print(json.dumps(seen))
"""

_ALLOWED_ENV: Final = {*SAFE_ENVIRONMENT, "HOME", "TMPDIR", "PWD", "LC_CTYPE"}
_PROBE_ENV: Final = {"WZ_SECRET", "WZ_TARGET", "WZ_PORT", "WZ_SERVICE"}


async def doctor(policy: Policy | None = None) -> SandboxReport:
    """`probe`'s report for ``policy`` with live checks of every active layer (one real run).

    Never raises for a layer that fails its check: the check says so, and
    `SandboxReport.warnings` lists it. Raises `SandboxError` only if no run can start.
    """
    policy = policy if policy is not None else Policy()
    plan = await plan_async(policy)
    report = plan.report
    if report.python is None:
        return attrs.evolve(
            report,
            checks=(Check("doctor", False, f"no live checks: {report.python_detail}"),),
        )
    token = secrets.token_hex(6)
    base = Path(plan.tmp_base)
    secret = base / f"wactorz-doctor-{token}-secret"
    target = base / f"wactorz-doctor-{token}-written"
    secret.write_text("the doctor's world-readable secret\n")
    secret.chmod(0o644)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    try:
        result = await run(
            Snippet("python", _PROBE_CODE),
            policy=attrs.evolve(policy, timeout_s=min(policy.timeout_s, 20.0), require=frozenset()),
            env={
                "WZ_SECRET": str(secret),
                "WZ_TARGET": str(target),
                "WZ_PORT": str(port),
                "WZ_SERVICE": str(os.getpid()),
            },
        )
    finally:
        for listener in listeners:
            await listener.aclose()
        secret.unlink(missing_ok=True)
        escaped = target.exists()
        target.unlink(missing_ok=True)
    try:
        seen: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        failure = Check(
            "doctor",
            False,
            f"the probing run failed (exit {result.exit_code}, killed by {result.killed_by}): "
            f"{result.stderr.strip()[-500:]}",
        )
        return attrs.evolve(report, checks=(failure,))
    checks = _checks(report, seen, escaped, plan.deny_unix_sockets)
    return attrs.evolve(report, checks=tuple(checks))


def _refused(outcome: str) -> bool:
    return outcome != "allowed"


def _checks(
    report: SandboxReport, seen: dict[str, Any], escaped: bool, deny_unix: bool
) -> list[Check]:
    active = set(report.active)
    checks = []
    leaked = sorted(set(seen["env"]) - _ALLOWED_ENV - _PROBE_ENV)
    checks.append(
        Check(
            "process",
            not leaked,
            f"environment holds only {', '.join(sorted(set(seen['env']) - _PROBE_ENV))}"
            if not leaked
            else f"unexpected environment variables reached the run: {', '.join(leaked)}",
        )
    )
    if "user" in active:
        ok = seen["uid"] != 0 and _refused(seen["signal_service"])
        checks.append(
            Check(
                "user",
                ok,
                f"uid {seen['uid']} inside; signalling the service refused "
                f"({seen['signal_service']})"
                if ok
                else f"uid {seen['uid']}, signalling the service: {seen['signal_service']}",
            )
        )
    if "cgroup" in active:
        # In bubblewrap's cgroup namespace, the run's own group is the root it sees.
        ok = "wactorz-sandbox" in seen["cgroup"] or (
            "bubblewrap" in active and ":pids:/\n" in seen["cgroup"]
        )
        checks.append(
            Check(
                "cgroup",
                ok,
                "the run was in its own cgroup"
                if ok
                else f"the run was not in a sandbox cgroup: {seen['cgroup']!r}",
            )
        )
    if "filesystem" in active:
        ok = _refused(seen["read_outside"]) and _refused(seen["write_outside"]) and not escaped
        checks.append(
            Check(
                "filesystem",
                ok,
                f"reading a world-readable file outside refused ({seen['read_outside']}), "
                f"writing beside it refused ({seen['write_outside']})"
                if ok
                else f"reading outside: {seen['read_outside']}; writing outside: "
                f"{seen['write_outside']}",
            )
        )
    if "network" in active:
        unix_ok = not deny_unix or _refused(seen["unix_socket"])
        ok = _refused(seen["connect"]) and unix_ok
        unix = f"; making a unix socket refused ({seen['unix_socket']})" if deny_unix else ""
        checks.append(
            Check(
                "network",
                ok,
                f"connecting to a listener on the host's 127.0.0.1 refused ({seen['connect']})"
                + unix
                if ok
                else f"connecting to the host's 127.0.0.1: {seen['connect']}; making a unix "
                f"socket: {seen['unix_socket']}",
            )
        )
    if "bubblewrap" in active:
        ok = seen["pid1"] == "bwrap"
        checks.append(
            Check(
                "bubblewrap",
                ok,
                "pid 1 of the run's pid namespace is bwrap"
                if ok
                else f"pid 1 inside is {seen['pid1']!r}, not bwrap",
            )
        )
    return checks

"""``python -m benchmarks``: run the suite, print the table, save every figure as JSON.

``--quick`` runs smaller sizes and fewer rounds (under a minute); ``--only``
picks workloads by key; ``--render FILE`` prints a saved result again
(``--markdown`` for the README).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.harness import measure
from benchmarks.machine import describe_machine
from benchmarks.progress import Progress
from benchmarks.report import build_document, render, write_document
from benchmarks.suite import WORKLOADS

RESULTS = Path(__file__).resolve().parent / "results"


def _parser() -> argparse.ArgumentParser:
    keys = ", ".join(workload.key for workload in WORKLOADS)
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Measure wactorz against raw Trio."
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    parser.add_argument("--rounds", type=int, help="rounds per workload (default: 5, quick: 3)")
    parser.add_argument("--only", help=f"comma-separated workload keys, from: {keys}")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds one variant may take in one round"
    )
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--render", type=Path, metavar="FILE", help="print a saved result")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")
    if args.render is not None:
        document = json.loads(args.render.read_text(encoding="utf-8"))
        sys.stdout.write(render(document, markdown=args.markdown))
        return 0

    workloads = list(WORKLOADS)
    if args.only:
        wanted = [key.strip() for key in args.only.split(",") if key.strip()]
        known = {workload.key for workload in WORKLOADS}
        unknown = [key for key in wanted if key not in known]
        if unknown:
            sys.exit(f"unknown workload {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        workloads = [workload for workload in WORKLOADS if workload.key in wanted]
    if args.quick:
        workloads = [workload for workload in workloads if workload.quick_size is not None]
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 5)
    if rounds < 1:
        sys.exit("--rounds must be at least 1")

    machine = describe_machine()
    started = datetime.now(UTC)
    results = []
    with Progress(len(workloads)) as progress:
        for workload in workloads:
            progress.next_workload(workload.title)
            results.append(
                measure(
                    workload,
                    quick=args.quick,
                    rounds=rounds,
                    timeout_s=args.timeout,
                    status=progress.show,
                )
            )
    document = build_document(
        results,
        mode="quick" if args.quick else "full",
        machine=machine,
        started=started,
        load_after=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    )
    path = write_document(document, args.output)
    sys.stdout.write(render(document, markdown=args.markdown))
    sys.stdout.write(f"\nevery figure: {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

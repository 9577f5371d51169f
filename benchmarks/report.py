"""The results of a run as a JSON document, and that document as a table.

`build_document` turns measured `WorkloadResult`s into a plain, JSON-ready dict
holding every sample; `render` prints such a document, freshly measured or read
back from ``benchmarks/results/``, as a terminal or Markdown table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import BASELINES, WorkloadResult

__all__ = ["build_document", "render", "write_document"]

SCHEMA = 1
_TIMES = "\N{MULTIPLICATION SIGN}"
_DASH = "\N{EN DASH}"


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _checks(result: WorkloadResult) -> list[dict[str, Any]]:
    checks = []
    for metric in result.workload.metrics:
        for target in metric.targets:
            for subject in result.workload.subjects[:1]:  # targets judge the public `send`
                if target.baseline is None:
                    value = result.figure(subject, metric.key).median
                else:
                    value = result.ratio(subject, target.baseline, metric.key)
                checks.append(
                    {
                        "metric": metric.key,
                        "subject": subject,
                        "baseline": target.baseline,
                        "comparison": ">=" if metric.higher_is_better else "<=",
                        "bound": target.bound,
                        "value": _number(value),
                        "met": target.met(value, metric.higher_is_better),
                    }
                )
    return checks


def _workload_document(result: WorkloadResult) -> dict[str, Any]:
    workload = result.workload
    variants: dict[str, Any] = {}
    for variant in workload.variants:
        variants[variant] = {}
        for metric in workload.metrics:
            figure = result.figure(variant, metric.key)
            variants[variant][metric.key] = {
                "median": _number(figure.median),
                "min": _number(figure.minimum),
                "max": _number(figure.maximum),
                "samples": list(figure.samples),
            }
    return {
        "key": workload.key,
        "title": workload.title,
        "description": workload.description,
        "size": result.size,
        "rounds": result.rounds,
        "seconds": round(result.seconds, 3),
        "subjects": workload.subjects,
        "baselines": workload.baselines,
        "metrics": [
            {
                "key": metric.key,
                "label": metric.label,
                "unit": metric.unit,
                "higher_is_better": metric.higher_is_better,
                "targets": [{"baseline": t.baseline, "bound": t.bound} for t in metric.targets],
            }
            for metric in workload.metrics
        ],
        "variants": variants,
        "errors": result.errors,
        "checks": _checks(result),
    }


def build_document(
    results: Sequence[WorkloadResult],
    *,
    mode: str,
    machine: dict[str, Any],
    started: datetime,
    load_after: list[float] | None,
) -> dict[str, Any]:
    """Everything about a run: when, where, how, every sample and every target check."""
    workloads = [_workload_document(result) for result in results]
    checks = [check for workload in workloads for check in workload["checks"]]
    return {
        "schema": SCHEMA,
        "suite": "wactorz benchmarks",
        "mode": mode,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(sum(result.seconds for result in results), 1),
        "machine": machine,
        "load_average_after": load_after,
        "workloads": workloads,
        "summary": {
            "targets_met": sum(check["met"] for check in checks),
            "targets_missed": sum(not check["met"] for check in checks),
        },
    }


def write_document(document: dict[str, Any], directory: Path) -> Path:
    """Save ``document`` as ``<directory>/<UTC time>-<mode>.json`` and return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{stamp}-{document['mode']}.json"
    path.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# ---- rendering -----------------------------------------------------------------------------


def _short(value: float | None) -> str:
    """Three significant digits with an SI suffix: 512k, 2.10M, 18.5, 0.24."""
    if value is None:
        return "—"
    magnitude = abs(value)
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= scale * 0.9995:
            return f"{value / scale:.3g}{suffix}"
    if value == int(value) and magnitude < 1000:
        return f"{int(value)}"
    return f"{value:.3g}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}{_TIMES}" if value < 100 else f"{value:.0f}{_TIMES}"


def _verdict(check: dict[str, Any]) -> str:
    sign = "≥" if check["comparison"] == ">=" else "≤"
    return f"{sign}{check['bound']:g} {'pass' if check['met'] else 'MISS'}"


def _columns(document: dict[str, Any]) -> list[str]:
    """The baselines any workload of ``document`` has, in `BASELINES` order: the table's
    columns (a run without the web workloads has no raw-hypercorn column)."""
    used = {name for workload in document["workloads"] for name in workload["baselines"]}
    return [name for name in BASELINES if name in used] or list(BASELINES[:2])


def _rows(workload: dict[str, Any], columns: list[str]) -> list[list[str]]:
    rows = []
    baselines = workload["baselines"]
    checks = {(c["metric"], c["subject"], c["baseline"]): c for c in workload["checks"]}
    for metric in workload["metrics"]:
        unit = f" ({metric['unit']})" if metric["unit"] else ""
        for subject in workload["subjects"]:
            figure = workload["variants"][subject][metric["key"]]
            label = metric["label"] + unit
            if subject != "wactorz":
                label += f" · {subject.removeprefix('wactorz ')}"
            cell = _short(figure["median"])
            if len(figure["samples"]) > 1:
                cell += f" [{_short(figure['min'])}{_DASH}{_short(figure['max'])}]"
            own = checks.get((metric["key"], subject, None))
            if own is not None:
                cell += f"  {_verdict(own)}"
            row = [label, cell]
            for baseline in columns:
                if baseline not in baselines:
                    row.append("—")
                    continue
                row.append(_short(workload["variants"][baseline][metric["key"]]["median"]))
            for baseline in columns:
                if baseline not in baselines:
                    row.append("")
                    continue
                base = workload["variants"][baseline][metric["key"]]["median"]
                mine = figure["median"]
                ratio = mine / base if mine is not None and base else None
                text = _ratio(ratio)
                check = checks.get((metric["key"], subject, baseline))
                if check is not None:
                    text += f"  {_verdict(check)}"
                row.append(text)
            rows.append(row)
    return rows


def _header(columns: list[str]) -> list[str]:
    return [
        "figure",
        f"wactorz median [min{_DASH}max]",
        *columns,
        *(f"÷ {name.removeprefix('raw-')}" for name in columns),
    ]


def _heading(workload: dict[str, Any]) -> str:
    return (
        f"{workload['title']} — {workload['description']}; "
        f"size {workload['size']:,}, {workload['rounds']} rounds"
    )


def _machine_lines(document: dict[str, Any]) -> list[str]:
    machine = document["machine"]
    load = machine.get("load_average")
    return [
        f"wactorz benchmarks, {document['mode']} run started {document['started']} "
        f"({document['seconds']:.0f} s of measuring)",
        f"{machine['cpu']}, {machine['logical_cores']} cores, "
        f"{machine['memory_bytes'] / 2**30:.1f} GiB; load average at start "
        + (" ".join(f"{x:.2f}" for x in load) if load else "unknown"),
        f"{machine['python']}, trio {machine['trio']}, wactorz {machine['wactorz']} "
        f"at {machine['wactorz_commit']}; {machine['platform']}",
    ]


def _summary(document: dict[str, Any]) -> list[str]:
    missed = []
    for workload in document["workloads"]:
        for check in workload["checks"]:
            if not check["met"]:
                against = f" vs {check['baseline']}" if check["baseline"] else ""
                shown = _ratio if check["baseline"] else _short
                value = shown(check["value"]) if check["value"] is not None else "no figure"
                missed.append(f"{workload['title']}: {check['metric']}{against} {value}")
    summary = document["summary"]
    lines = [f"targets: {summary['targets_met']} met, {summary['targets_missed']} missed"]
    lines += [f"  missed — {line}" for line in missed]
    return lines


def render(document: dict[str, Any], *, markdown: bool = False) -> str:
    """The document as a table: a fixed-width one for a terminal, or Markdown."""
    lines = []
    columns = _columns(document)
    header = _header(columns)
    if markdown:
        lines += [line + "  " for line in _machine_lines(document)] + [""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        for workload in document["workloads"]:
            lines.append(f"| **{_heading(workload)}** |" + " |" * (len(header) - 1))
            for row in _rows(workload, columns):
                lines.append("| " + " | ".join(cell or " " for cell in row) + " |")
            for variant, errors in workload["errors"].items():
                for error in errors:
                    lines.append(f"| ⚠ {variant} {error} |" + " |" * (len(header) - 1))
        first, *missed = _summary(document)
        lines += ["", first, ""] + [f"- {line.strip()}" for line in missed]
        return "\n".join(lines) + "\n"

    table = [header] + [row for w in document["workloads"] for row in _rows(w, columns)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    lines += _machine_lines(document)
    lines += ["", "  " + line(header).rstrip(), "  " + "  ".join("─" * w for w in widths)]
    for workload in document["workloads"]:
        lines.append(_heading(workload))
        lines += ["  " + line(row).rstrip() for row in _rows(workload, columns)]
        for variant, errors in workload["errors"].items():
            lines += [f"  ! {variant} {error}" for error in errors]
    lines += ["", *_summary(document)]
    return "\n".join(lines) + "\n"

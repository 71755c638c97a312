"""Benchmark report: ``summary.md`` (mean ± sd tables, best of each row in bold) and figures."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

from .grid import _COSTS, METHODS, METRICS, TASKS, _ordered, aggregate

_TASK_TITLES = {
    "clustering": "Clustering without dropout",
    "mcar": "Dropout recovery, missing completely at random (MCAR)",
    "mnar": "Dropout recovery, missing not at random (MNAR)",
}
_TASK_METRICS = {
    "clustering": ("ari", "nmi", "ca", "seconds", "peak_rss_mb"),
    "mcar": ("mae", "rmse", "median_l1", "cosine", "ari", "nmi", "ca", "seconds"),
    "mnar": ("mae", "rmse", "median_l1", "cosine", "ari", "nmi", "ca", "seconds"),
}


def _table(stats: dict, rows: list[tuple], methods: list[str], metric: str) -> list[str]:
    higher = METRICS[metric][1]
    digits = 1 if metric in ("seconds", "peak_rss_mb") else 3
    head = ["data set", "rate"] if rows and rows[0][2] else ["data set"]
    lines = ["| " + " | ".join(head + methods) + " |", "|" + "---|" * (len(head) + len(methods))]
    for dataset, task, rate in rows:
        cells = {m: stats.get((dataset, task, rate, m, metric)) for m in methods}
        # No imputation takes no time: raw competes on scores and errors only.
        means = [
            round(c[0], digits) for m, c in cells.items() if c is not None and (m != "raw" or metric not in _COSTS)
        ]
        best = (max(means) if higher else min(means)) if means else None
        out = [dataset] + ([f"{rate:g}"] if rate else [])
        for m in methods:
            c = cells[m]
            if c is None:
                out.append("")
                continue
            text = f"{c[0]:.{digits}f} ± {c[1]:.{digits}f}"
            best_here = round(c[0], digits) == best and len(means) > 1 and (m != "raw" or metric not in _COSTS)
            out.append(f"**{text}**" if best_here else text)
        lines.append("| " + " | ".join(out) + " |")
    return lines


def summary_markdown(records: list[dict]) -> str:
    """The tables of ``summary.md``: one per task and metric, rows data sets (x rates), columns methods."""
    stats = aggregate(records)
    methods = _ordered([r["method"] for r in records], METHODS)
    datasets = _ordered([r["dataset"] for r in records], [])
    seeds = sorted({r["seed"] for r in records})
    lines = [
        "# Benchmark summary",
        "",
        f"{len(records)} records; seeds {', '.join(map(str, seeds))}; mean ± sd over seeds (sd with ddof=0). "
        "Best of each row in bold (highest ARI, NMI, CA, cosine; lowest errors; lowest time and "
        "memory among the imputing methods), compared at the precision shown. Errors are on the dropped entries only.",
    ]
    for task in _ordered([r["task"] for r in records], TASKS):
        rows = sorted(
            {(r["dataset"], task, r["rate"]) for r in records if r["task"] == task},
            key=lambda x: (datasets.index(x[0]), x[2]),
        )
        lines += ["", f"## {_TASK_TITLES[task]}"]
        for metric in _TASK_METRICS[task]:
            if any((d, t, rate, m, metric) in stats for d, t, rate in rows for m in methods):
                lines += ["", f"### {METRICS[metric][0]}", ""] + _table(stats, rows, methods, metric)
    return "\n".join(lines) + "\n"


def write_report(records: list[dict], out: Path, *, figures: bool = True, echo=print) -> None:
    """Write ``summary.md`` and (with matplotlib) the figures into ``out``."""
    if not records:
        return
    (out / "summary.md").write_text(summary_markdown(records))
    if not figures:
        return
    if find_spec("matplotlib") is None:
        echo("sccr: notice: no figures: matplotlib is not installed (pip install 'sccr[benchmark]')")
        return
    from .figures import write_figures

    write_figures(records, out)

"""Benchmark report: ``summary.md`` (mean ± sd tables, best of each row in bold) and figures."""

from __future__ import annotations

from collections import defaultdict
from importlib.util import find_spec
from pathlib import Path

import numpy as np

#: Metric -> (label, True when higher is better).
METRICS = {
    "ari": ("ARI", True),
    "nmi": ("NMI", True),
    "ca": ("CA", True),
    "mae": ("MAE (the paper's \"RMSE\")", False),
    "rmse": ("RMSE (root mean square error)", False),
    "median_l1": ("median L1", False),
    "cosine": ("cosine similarity", True),
    "seconds": ("imputation time (s)", False),
    "peak_rss_mb": ("peak RSS of the process during imputation (MiB)", False),
}
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


_COSTS = ("seconds", "peak_rss_mb")


def _ordered(values, order) -> list:
    present = set(values)
    return [v for v in order if v in present] + sorted(present - set(order))


def aggregate(records: list[dict]) -> dict:
    """``{(dataset, task, rate, method, metric): (mean, sd, n)}`` over seeds (sd with ddof=0).

    Time and memory of the clustering task count each imputation once
    (records that reused an imputation are left out of them).
    """
    groups = defaultdict(list)
    for r in records:
        for metric in METRICS:
            if r.get(metric) is None or (metric in _COSTS and r.get("imputation_reused")):
                continue
            groups[(r["dataset"], r["task"], r["rate"], r["method"], metric)].append(r[metric])
    return {key: (float(np.mean(v)), float(np.std(v)), len(v)) for key, v in groups.items()}


def _table(stats: dict, rows: list[tuple], methods: list[str], metric: str) -> list[str]:
    higher = METRICS[metric][1]
    digits = 1 if metric in ("seconds", "peak_rss_mb") else 3
    head = ["data set", "rate"] if rows and rows[0][2] else ["data set"]
    lines = ["| " + " | ".join(head + methods) + " |", "|" + "---|" * (len(head) + len(methods))]
    for dataset, task, rate in rows:
        cells = {m: stats.get((dataset, task, rate, m, metric)) for m in methods}
        # No imputation takes no time: raw competes on scores and errors only.
        means = [round(c[0], digits) for m, c in cells.items() if c is not None and (m != "raw" or metric not in _COSTS)]
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
    from ._benchmark import METHODS, TASKS

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
        rows = sorted({(r["dataset"], task, r["rate"]) for r in records if r["task"] == task},
                      key=lambda x: (datasets.index(x[0]), x[2]))
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
    from ._figures import write_figures

    write_figures(records, out)

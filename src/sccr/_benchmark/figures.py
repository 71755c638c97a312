"""Benchmark figures (PNG, matplotlib): errors vs rate, clustering bars, UMAPs, gene edges, time vs cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # the object API: no pyplot, no global backend

from .grid import METHODS, UMAP_RATE, _ordered, aggregate

#: Resolution of every PNG.
DPI = 150


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=DPI, bbox_inches="tight")


def errors_vs_rate(stats: dict, dataset: str, methods: list[str], path: Path) -> bool:
    """True RMSE and median L1 against the dropout rate, MCAR solid and MNAR dashed."""
    fig = Figure(figsize=(9, 3.5))
    axes = fig.subplots(1, 2)
    drawn = False
    for ax, metric, label in zip(axes, ("rmse", "median_l1"), ("RMSE", "median L1"), strict=True):
        for i, method in enumerate(methods):
            for task, style in (("mcar", "-"), ("mnar", "--")):
                points = sorted(
                    (k[2], v[0], v[1])
                    for k, v in stats.items()
                    if k[0] == dataset and k[1] == task and k[3] == method and k[4] == metric
                )
                if points:
                    x, y, e = map(np.array, zip(*points, strict=True))
                    ax.errorbar(x, y, yerr=e, fmt=style + "o", color=f"C{i}", ms=3, label=f"{method} ({task.upper()})")
                    drawn = True
        ax.set(xlabel="dropout rate", ylabel=label, title=f"{dataset}: {label}")
    if drawn:
        axes[1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        _save(fig, path)
    return drawn


def clustering_bars(stats: dict, datasets: list[str], methods: list[str], path: Path) -> None:
    """ARI, NMI and CA without dropout: bars per data set and method, sd as error bars."""
    fig = Figure(figsize=(12, 3.5))
    axes = fig.subplots(1, 3)
    width = 0.8 / len(methods)
    for ax, metric in zip(axes, ("ari", "nmi", "ca"), strict=True):
        for i, method in enumerate(methods):
            vals = [stats.get((d, "clustering", 0.0, method, metric), (np.nan, 0.0))[:2] for d in datasets]
            ax.bar(
                np.arange(len(datasets)) + i * width,
                [v[0] for v in vals],
                width,
                yerr=[v[1] for v in vals],
                label=method,
                color=f"C{i}",
            )
        ax.set_xticks(np.arange(len(datasets)) + 0.4 - width / 2, datasets, fontsize=7)
        ax.set(title=metric.upper(), ylim=(0, 1))
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    _save(fig, path)


def umap_grid(folder: Path, dataset: str, methods: list[str], path: Path) -> bool:
    """UMAP of every method (columns) without and with MCAR dropout at ``UMAP_RATE`` (rows), coloured by cell type.

    Only the rows and methods that have an embedding appear; the cell types get a legend.
    """
    from matplotlib import colormaps
    from matplotlib.lines import Line2D

    rows = [("clustering", 0.0, "no dropout"), ("mcar", UMAP_RATE, f"{UMAP_RATE:.0%} MCAR")]
    files = {(m, t): folder / f"{dataset}__{m}__{t}__{rate}.npz" for m in methods for t, rate, _ in rows}
    rows = [row for row in rows if any(files[(m, row[0])].exists() for m in methods)]
    methods = [m for m in methods if any(files[(m, t)].exists() for t, _, _ in rows)]
    if not rows:
        return False
    fig = Figure(figsize=(1.9 * len(methods) + 1.6, 2.1 * len(rows) + 0.4))
    axes = fig.subplots(len(rows), len(methods), squeeze=False)
    types = None
    for r, (task, _, title) in enumerate(rows):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if files[(method, task)].exists():
                with np.load(files[(method, task)]) as z:
                    types, codes = np.unique(z["labels"], return_inverse=True)
                    ax.scatter(*z["embedding"].T, c=codes % 20, cmap="tab20", vmin=0, vmax=19, s=0.5, rasterized=True)
            ax.set_title(f"{method}\n{title}", fontsize=7)
    if types is not None:
        colours = colormaps["tab20"]
        handles = [
            Line2D([], [], ls="", marker="o", ms=4, color=colours(i % 20 / 19), label=str(t))
            for i, t in enumerate(types)
        ]
        fig.legend(
            handles=handles,
            title="cell type",
            fontsize=6,
            title_fontsize=7,
            loc="center left",
            bbox_to_anchor=(1.0, 0.5),
            frameon=False,
        )
    fig.suptitle(f"{dataset}: UMAP coloured by cell type", fontsize=9)
    _save(fig, path)
    return True


def gene_edges(records: list[dict], datasets: list[str], path: Path) -> bool:
    """Share of associating and dissociating gene-gene edges: data's top-|r| pairs, scBFP's graph, scCR's graph.

    Only the sources that ran appear; the legend sits beside the bars.
    """
    sources = (("raw", "data (top |r|)"), ("scbfp", "scBFP graph"), ("sccr", "scCR graph"))
    found = {(r["dataset"], r["method"]): r["gene_edges"] for r in records if "gene_edges" in r}
    sources = [(m, label) for m, label in sources if any(key[1] == m for key in found)]
    if not found:
        return False
    fig = Figure(figsize=(1.1 * len(sources) * len(datasets) + 1.8, 3))
    axes = fig.subplots(1, len(datasets), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        for x, (method, _) in enumerate(sources):
            e = found.get((dataset, method))
            if e is None:
                continue
            total = e["associating"] + e["dissociating"]
            share = e["associating"] / total if total else 0.0
            ax.bar(x, share, color="C0", label="associating (r > 0)")
            ax.bar(x, 1 - share, bottom=share, color="C3", label="dissociating (r < 0)")
        ax.set_xticks(range(len(sources)), [s[1] for s in sources], fontsize=7)
        ax.set(title=dataset, ylabel="share of edges", ylim=(0, 1))
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles[:2], labels[:2], fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    _save(fig, path)
    return True


def time_vs_cells(records: list[dict], methods: list[str], path: Path) -> None:
    """Mean imputation time of each method against the number of cells (one point per data set).

    With a single number of cells the times are bars, one per method.
    """
    times = {method: {} for method in methods}
    for r in records:
        if r["method"] in times and not r.get("imputation_reused"):
            times[r["method"]].setdefault(r["n_cells"], []).append(r["seconds"])
    sizes = sorted({n for by_n in times.values() for n in by_n})
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    if len(sizes) == 1:
        ran = [m for m in methods if times[m]]
        ax.bar(range(len(ran)), [np.mean(times[m][sizes[0]]) for m in ran], color=[f"C{methods.index(m)}" for m in ran])
        ax.set_xticks(range(len(ran)), ran, fontsize=7)
        ax.set(ylabel="imputation time (s)", yscale="log", title=f"imputation time, {sizes[0]} cells")
    else:
        for i, method in enumerate(methods):
            if times[method]:
                n = sorted(times[method])
                ax.plot(n, [np.mean(times[method][k]) for k in n], "o-", color=f"C{i}", label=method, ms=4)
        ax.set(xlabel="cells", ylabel="imputation time (s)", yscale="log", title="time vs number of cells")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    _save(fig, path)


def write_figures(records: list[dict], out: Path) -> None:
    """All figures of the report into ``out/figures``."""
    folder = out / "figures"
    folder.mkdir(exist_ok=True)
    stats = aggregate(records)
    methods = _ordered([r["method"] for r in records], METHODS)
    datasets = _ordered([r["dataset"] for r in records], [])
    for dataset in datasets:
        errors_vs_rate(stats, dataset, methods, folder / f"errors_{dataset}.png")
        umap_grid(out / "embeddings", dataset, methods, folder / f"umap_{dataset}.png")
    if any(r["task"] == "clustering" for r in records):
        clustering_bars(stats, datasets, methods, folder / "clustering.png")
    gene_edges(records, datasets, folder / "gene_edges.png")
    time_vs_cells(records, methods, folder / "time_vs_cells.png")

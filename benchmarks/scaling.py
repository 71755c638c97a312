"""Time and peak memory of ``sccr impute`` against the number of cells, up to a million.

Usage: python benchmarks/scaling.py [--sizes 10000,30000,100000,300000,1000000]
       [--source ../shared/data/pbmc4k_top2000.h5ad] [--work /tmp/sccr-scaling]
       [--n-jobs 2] [--out benchmarks/results/scaling.json] [--figure docs/figures/scaling.png]

Inputs are built from real cells (``benchmarks/resample.py``: cells of the source drawn
with replacement, counts binomially thinned to 80%), 2000 genes. Each size runs the
command line end to end in a child process, as a user would:
``sccr impute IN OUT --preprocess paper``; wall time and the child's peak RSS (from
``wait4``) are measured, the stage timings are read from the output's ``uns``. Quality:
the imputed layer (and, for reference, the log-normalised input) is reduced to 50
principal components (exact PCA from the covariance, accumulated over blocks of
rows) and clustered with KMeans (as many clusters as cell types, n_init=10,
random_state 0, 1 and 2); ARI against the source cells' labels, mean and sd over the seeds. A fitted slope of
log(time) and log(peak RSS) against log(cells) summarises the scaling.
Results are appended per size to the JSON (a rerun skips sizes already there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

#: Rows per block when the imputed layer is read back for scoring.
BLOCK = 32768


def run_child(argv: list[str]) -> tuple[float, float, str]:
    """Run ``argv``; return its wall seconds, its peak RSS (MiB, from wait4) and its stderr."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {err}")
    return seconds, usage.ru_maxrss / 1024, err


def _blocks(dataset, transform=None):
    n = dataset.shape[0]
    for start in range(0, n, BLOCK):
        block = dataset[start : start + BLOCK]
        block = block.toarray() if hasattr(block, "toarray") else np.asarray(block)
        yield block.astype(np.float64) if transform is None else transform(block)


def pca_embedding(read_blocks, n_components: int = 50) -> np.ndarray:
    """Top principal components of a matrix given as repeatable row blocks (two passes)."""
    total, gram, n = None, None, 0
    for block in read_blocks():
        total = block.sum(axis=0) if total is None else total + block.sum(axis=0)
        gram = block.T @ block if gram is None else gram + block.T @ block
        n += block.shape[0]
    mean = total / n
    covariance = gram / n - np.outer(mean, mean)
    values, vectors = np.linalg.eigh(covariance)
    top = vectors[:, np.argsort(values)[::-1][:n_components]]
    return np.vstack([(block - mean) @ top for block in read_blocks()]).astype(np.float32)


#: KMeans seeds of the quality check (its ARI moves by a few hundredths between seeds).
SEEDS = (0, 1, 2)


def cluster_ari(embedding: np.ndarray, labels: np.ndarray) -> list[float]:
    """ARI of KMeans (as many clusters as labels, n_init=10) for each of :data:`SEEDS`."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    n_types = len(np.unique(labels))
    return [
        float(
            adjusted_rand_score(labels, KMeans(n_clusters=n_types, n_init=10, random_state=seed).fit_predict(embedding))
        )
        for seed in SEEDS
    ]


def score(output: Path, key: str) -> dict:
    """ARI of the imputed layer and of the log-normalised X of ``output`` against obs['celltype']."""
    import anndata as ad
    import h5py
    from anndata.io import read_elem, sparse_dataset

    with h5py.File(output, "r") as f:
        labels = np.asarray(read_elem(f["obs"])["celltype"]).astype(str)
        layer = f["layers"][key]
        X = f["X"] if isinstance(f["X"], h5py.Dataset) else sparse_dataset(f["X"])
        imputed = cluster_ari(pca_embedding(lambda: _blocks(layer)), labels)
        raw = cluster_ari(pca_embedding(lambda: _blocks(X)), labels)
        record = read_elem(f["uns"][key])
    del ad
    return {
        "ari_imputed": float(np.mean(imputed)),
        "ari_imputed_sd": float(np.std(imputed, ddof=1)),
        "ari_imputed_seeds": imputed,
        "ari_log_normalised": float(np.mean(raw)),
        "ari_log_normalised_sd": float(np.std(raw, ddof=1)),
        "ari_log_normalised_seeds": raw,
        "timings": record["timings"],
        "knn_used": record["params"]["knn_used"],
        "out_of_core": bool(record["params"]["out_of_core"]),
        "input_on_disk": bool(record["params"].get("input_on_disk", False)),
    }


def fitted_slope(x: list[float], y: list[float]) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


#: Stage groups plotted beside the whole command: the pipeline's timings (``uns['sccr']['timings']``) summed.
STAGE_GROUPS = {
    "cell graphs (3 k-NN searches)": ("knn_cells_1", "knn_cells_2", "knn_cells_3"),
    "propagation over cells (3 stages)": ("hard_fp_1", "hard_fp_2", "soft_fp"),
    "gene graph + propagation over genes": ("gene_graph", "gene_fp"),
}


def stage_seconds(row: dict) -> dict[str, float]:
    return {name: sum(row["timings"][stage] for stage in stages) for name, stages in STAGE_GROUPS.items()}


def plot(rows: list[dict], figure: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r["cells"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    series = {"whole command": [r["seconds"] for r in rows]}
    for r in rows:
        for name, seconds in stage_seconds(r).items():
            series.setdefault(name, []).append(seconds)
    for name, values in series.items():
        style = "o-" if name == "whole command" else "s--"
        axes[0].loglog(cells, values, style, label=f"{name} (slope {fitted_slope(cells, values):.2f})")
    peaks = [r["peak_rss_mib"] for r in rows]
    axes[1].loglog(cells, peaks, "o-", label=f"peak RSS (slope {fitted_slope(cells, peaks):.2f})")
    for ax, values in ((axes[0], series["whole command"]), (axes[1], peaks)):
        ax.loglog(
            cells, [values[0] * c / cells[0] for c in cells], ":", color="grey", label="linear from the first point"
        )
        ax.set_xlabel("cells (2000 genes)")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("seconds")
    axes[1].set_ylabel("MiB")
    axes[0].set_title("time: sccr impute, whole command, and its stages")
    axes[1].set_title("peak memory of the process")
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000,300000,1000000")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "pbmc4k_top2000.h5ad")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sccr-scaling"))
    parser.add_argument("--n-jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--extra", default="", help="more options for sccr impute, e.g. '--knn approx'")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scaling.json")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "scaling.png")
    args = parser.parse_args()

    import anndata as ad

    from resample import resample

    args.work.mkdir(parents=True, exist_ok=True)
    report = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    done = {r["cells"] for r in report["runs"]}
    source = ad.read_h5ad(args.source)
    for n in (int(s) for s in args.sizes.split(",")):
        if n in done:
            print(f"{n} cells: already measured, skipped")
            continue
        data, output = args.work / f"cells_{n}.h5ad", args.work / f"cells_{n}.imputed.h5ad"
        if not data.exists():
            resample(source, n, keep=0.8, seed=0).write_h5ad(data)
        argv = [
            sys.executable,
            "-m",
            "sccr.cli",
            "impute",
            str(data),
            str(output),
            "--preprocess",
            "paper",
            "--n-jobs",
            str(args.n_jobs),
            "--force",
            "--quiet",
            *args.extra.split(),
        ]
        seconds, peak, _ = run_child(argv)
        row = {
            "cells": n,
            "genes": source.n_vars,
            "seconds": seconds,
            "peak_rss_mib": peak,
            "command": " ".join(["sccr", *argv[3:]]),
            **score(output, "sccr"),
        }
        output.unlink()
        report["runs"].append(row)
        report["runs"].sort(key=lambda r: r["cells"])
        report.update(
            {
                "source": str(args.source.name),
                "n_jobs": args.n_jobs,
                "resampling": "cells drawn with replacement, counts Binomial(count, 0.8), seed 0",
            }
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        print(
            f"{n:>8} cells: {seconds:8.1f} s, peak RSS {peak:8.0f} MiB, ARI imputed {row['ari_imputed']:.3f} "
            f"± {row['ari_imputed_sd']:.3f} (log-normalised {row['ari_log_normalised']:.3f} "
            f"± {row['ari_log_normalised_sd']:.3f}), knn {row['knn_used']}, "
            f"{'out of core' if row['out_of_core'] else 'in memory'}",
            flush=True,
        )
    rows = report["runs"]
    if len(rows) >= 2:
        cells = [r["cells"] for r in rows]
        report["slope_time"] = fitted_slope(cells, [r["seconds"] for r in rows])
        report["slope_peak_rss"] = fitted_slope(cells, [r["peak_rss_mib"] for r in rows])
        report["slope_stages"] = {
            name: fitted_slope(cells, [stage_seconds(r)[name] for r in rows]) for name in STAGE_GROUPS
        }
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        plot(rows, args.figure)
        print(
            f"slopes (log-log): time {report['slope_time']:.2f}, peak RSS {report['slope_peak_rss']:.2f}; "
            f"wrote {args.out} and {args.figure}"
        )


if __name__ == "__main__":
    main()

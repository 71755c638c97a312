"""Memory guard check: estimated vs measured peak memory of a run, on the shared real data.

Usage: python benchmarks/memory.py [--n-jobs 2] [--out benchmarks/results/memory.json]

Each case runs in a fresh process: it imports sccr and warms numba on a tiny
input, loads and preprocesses a data set (the paper's preprocessing; Worm Neuron
also tiled 5 times over its cells, to see how the estimate scales), validates it,
resets the process's peak RSS (``/proc/self/clear_refs``) and runs the pipeline.
"Measured" is the peak RSS during the run minus the RSS just before it, which is
what ``sccr._memory.estimate_peak_bytes`` predicts. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = Path(os.environ.get("SCCR_SHARED", HERE.parents[1] / "shared")) / "data"
#: (data set, genes kept by the preprocessing, times the cells are tiled)
DATASETS = [
    ("mouse_bladder_top2000", 2000, 1),
    ("pbmc4k_top2000", 2000, 1),
    ("worm_neuron", 2000, 1),
    ("worm_neuron", 2000, 5),
    ("pbmc3k_unlabeled", 8000, 1),
]
CASES = [(d, g, t, m, layout) for d, g, t in DATASETS for m in ("sccr", "scfp", "scbfp") for layout in ("sparse", "dense")]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def one_case(dataset: str, n_genes: int, tile: int, method: str, layout: str, n_jobs: int) -> dict:
    """Measure one run in this process (see the module docstring)."""
    import gc

    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    import sccr
    from sccr._memory import estimate_peak_bytes
    from sccr._pipeline import run
    from sccr._validation import check_expression, check_params

    rng = np.random.default_rng(0)
    sccr.SCCR(k=3, n_iter=1, n_jobs=n_jobs, method=method).fit(rng.random((20, 8), dtype=np.float32))
    adata = sccr.pp.preprocess_paper(ad.read_h5ad(DATA / f"{dataset}.h5ad"), n_top_genes=n_genes)
    X = sp.vstack([adata.X] * tile, format="csr")
    del adata
    if layout == "dense":
        X = X.toarray()
    p = check_params(method=method, k=15, k_gene=2, n_iter=40, alpha=0.05, beta=0.99, gamma=0.01,
                     sym_final=True, knn="auto", n_jobs=n_jobs, progress=False)
    X = check_expression(X, p.k)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status_kib("VmRSS") * 1024
    run(X, p)
    measured = _status_kib("VmHWM") * 1024 - before
    n, g = X.shape
    estimate = estimate_peak_bytes(n, g, X.nnz if sp.issparse(X) else None, method=method, k=15, k_gene=2, n_jobs=n_jobs)
    return {"dataset": dataset if tile == 1 else f"{dataset} x{tile}", "cells": n, "genes": g, "method": method,
            "layout": layout, "measured_mib": measured / 2**20, "estimate_mib": estimate / 2**20,
            "estimate_over_measured": estimate / measured}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "results" / "memory.json"))
    parser.add_argument("--one", nargs=5, metavar=("DATASET", "GENES", "TILE", "METHOD", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        dataset, genes, tile, method, layout = args.one
        print(json.dumps(one_case(dataset, int(genes), int(tile), method, layout, args.n_jobs)))
        return
    rows = []
    for case in CASES:
        argv = [sys.executable, __file__, "--n-jobs", str(args.n_jobs), "--one", *map(str, case)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"{row['dataset']:>24} {row['cells']:>6} x {row['genes']:<5} {method_layout(row):<13} "
              f"measured {row['measured_mib']:7.0f} MiB  estimate {row['estimate_mib']:7.0f} MiB  "
              f"ratio {row['estimate_over_measured']:.2f}", flush=True)
    Path(args.out).write_text(json.dumps({"n_jobs": args.n_jobs, "cases": rows}, indent=1) + "\n")


def method_layout(row: dict) -> str:
    return f"{row['method']}/{row['layout']}"


if __name__ == "__main__":
    main()

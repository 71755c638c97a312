"""Memory guard check: estimated vs measured peak memory of a run, on the shared real data.

Usage: python benchmarks/memory.py [--n-jobs 2] [--cells x5,r100000] [--out benchmarks/results/memory.json]

Each case runs in a fresh process: it imports sccr and warms numba on a tiny
input, loads and preprocesses a data set (the paper's preprocessing; Worm Neuron
also tiled 5 times over its cells, and PBMC 4k resampled to 100,000 cells with
``benchmarks/resample.py``, to see how the estimate scales), validates it,
resets the process's peak RSS (``/proc/self/clear_refs``) and runs the pipeline's stages
(``sccr._engine.pipeline.run_stages``, as ``Job.execute`` does), in memory or out of
core (scratch files), whatever the memory plan would choose. The neighbour search is the default
(``knn="auto"``: approximate from 20,000 cells on). "Measured" is the peak RSS
during the run minus the RSS just before it, which is what
``sccr._engine.memory.estimate_peak_bytes`` predicts. Linux only.
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
#: (data set, genes kept by the preprocessing, cells: "" as is, "x5" tiled 5 times, "r100000" resampled)
DATASETS = [
    ("mouse_bladder_top2000", 2000, ""),
    ("pbmc4k_top2000", 2000, ""),
    ("worm_neuron", 2000, ""),
    ("worm_neuron", 2000, "x5"),
    ("pbmc3k_unlabeled", 8000, ""),
]
CASES = [
    (d, g, c, m, layout, "memory")
    for d, g, c in DATASETS
    for m in ("sccr", "scfp", "scbfp")
    for layout in ("sparse", "dense")
]
CASES += [("worm_neuron", 2000, "x5", m, "sparse", "scratch") for m in ("sccr", "scfp", "scbfp")]
CASES += [("pbmc4k_top2000", 2000, "r100000", "sccr", "sparse", where) for where in ("memory", "scratch")]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def one_case(dataset: str, n_genes: int, cells: str, method: str, layout: str, where: str, n_jobs: int) -> dict:
    """Measure one run in this process (see the module docstring)."""
    import gc

    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    import sccr
    from sccr._engine.checks import check_expression
    from sccr._engine.execution import Execution, executing
    from sccr._engine.graph import resolve_knn
    from sccr._engine.matrix import Workspace
    from sccr._engine.memory import estimate_peak_bytes
    from sccr._engine.pipeline import run_stages
    from sccr._options import Options

    rng = np.random.default_rng(0)
    sccr.SCCR(k=3, n_iter=1, n_jobs=n_jobs, method=method).fit(rng.random((20, 8), dtype=np.float32))
    adata = ad.read_h5ad(DATA / f"{dataset}.h5ad")
    if cells.startswith("r"):
        sys.path.insert(0, str(HERE))
        from resample import resample

        adata = resample(adata, int(cells[1:]), keep=0.8, seed=0)
    adata = sccr.pp.preprocess_paper(adata, n_top_genes=n_genes)
    X = sp.vstack([adata.X] * int(cells[1:]), format="csr") if cells.startswith("x") else adata.X
    del adata
    if layout == "dense":
        X = X.toarray()
    p = Options(
        method=method,
        k=15,
        k_gene=2,
        n_iter=40,
        alpha=0.05,
        beta=0.99,
        gamma=0.01,
        sym_final=True,
        knn="auto",
        n_jobs=n_jobs,
        progress=False,
    )
    X = check_expression(X, p.k)
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status_kib("VmRSS") * 1024
    # The stages as Job.execute runs them, in the layout this case asks for (not the one the memory plan would pick).
    with Workspace(out_of_core=where == "scratch") as workspace, executing(Execution(n_jobs=p.n_jobs)):
        run_stages(X, p, workspace=workspace)
    measured = _status_kib("VmHWM") * 1024 - before
    n, g = X.shape
    knn = resolve_knn(p.knn, n)
    estimate = estimate_peak_bytes(
        n,
        g,
        X.nnz if sp.issparse(X) else None,
        method=method,
        k=15,
        k_gene=2,
        n_jobs=p.n_jobs,
        out_of_core=where == "scratch",
        exact=knn == "exact",
    )
    name = dataset + {"": "", "x": f" x{cells[1:]}", "r": f" resampled to {cells[1:]}"}[cells[:1]]
    return {
        "dataset": name,
        "cells": n,
        "genes": g,
        "method": method,
        "layout": layout,
        "where": where,
        "knn": knn,
        "measured_mib": measured / 2**20,
        "estimate_mib": estimate / 2**20,
        "estimate_over_measured": estimate / measured,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument(
        "--cells",
        help="rerun only the cases of these cell specs (e.g. 'x5,r100000'); "
        "the other cases of an existing --out are kept",
    )
    parser.add_argument("--out", default=str(HERE / "results" / "memory.json"))
    parser.add_argument(
        "--one", nargs=6, metavar=("DATASET", "GENES", "CELLS", "METHOD", "LAYOUT", "WHERE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.one:
        dataset, genes, cells, method, layout, where = args.one
        print(json.dumps(one_case(dataset, int(genes), cells, method, layout, where, args.n_jobs)))
        return
    cases = CASES if args.cells is None else [c for c in CASES if c[2] in args.cells.split(",")]
    rows = []
    for case in cases:
        argv = [sys.executable, __file__, "--n-jobs", str(args.n_jobs), "--one", *map(str, case)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=True)
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(
            f"{row['dataset']:>24} {row['cells']:>6} x {row['genes']:<5} {method_layout(row):<13} "
            f"measured {row['measured_mib']:7.0f} MiB  estimate {row['estimate_mib']:7.0f} MiB  "
            f"ratio {row['estimate_over_measured']:.2f}",
            flush=True,
        )
    out = Path(args.out)
    if args.cells is not None and out.exists():
        fresh = {_key(row): row for row in rows}
        kept = [fresh.pop(_key(row), row) for row in json.loads(out.read_text())["cases"]]
        rows = kept + list(fresh.values())
    out.write_text(json.dumps({"n_jobs": args.n_jobs, "cases": rows}, indent=1) + "\n")


def _key(row: dict) -> tuple:
    return row["dataset"], row["method"], row["layout"], row["where"]


def method_layout(row: dict) -> str:
    return f"{row['method']}/{row['layout']}/{row['where']}"


if __name__ == "__main__":
    main()

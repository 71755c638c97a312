"""Speed and memory of full scCR on Worm Neuron (4186 cells x 2000 genes), float32.

Usage: python benchmarks/speed.py [--repeats 3] [--n-jobs 2] [--out benchmarks/results/speed.json]

Each repeat runs in a fresh process (load, preprocess, impute), so its peak RSS
is its own; the first process also pays numba's one-off compilation (cached on
disk afterwards) and is reported apart. Also measures the propagation kernel
alone on the run's own cell graph, to compare the pipeline's throughput with
what this machine's cores give for that kernel (and with scipy's sparse product).
Prints a summary and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE_SECONDS = 100.8  # the authors' code, imputation alone, 2 cores, CPU PyTorch (issue #2)
PROPAGATION_STAGES = ("hard_fp_1", "gene_fp", "hard_fp_2", "soft_fp")


def _preprocessed():
    import sccr

    return sccr.pp.preprocess_paper(sccr.datasets.worm_neuron())


def one_run(n_jobs: int) -> dict:
    """Load, preprocess and impute once in this process; report time, work and peak RSS."""
    from sccr._engine import run
    from sccr._options import Options
    from sccr._resources import peak_rss_mb

    adata = _preprocessed()
    rss_before = peak_rss_mb()
    options = Options(
        method="sccr",
        k=15,
        k_gene=2,
        n_iter=40,
        alpha=0.05,
        beta=0.99,
        gamma=0.01,
        sym_final=False,
        knn="auto",
        n_jobs=n_jobs,
        progress=False,
    )
    start = time.perf_counter()
    result = run(adata.X, options)  # checks the input and plans memory, as before inside the timed span
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "timings": result.timings,
        "work": result.work,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_before_impute_mb": rss_before,
    }


def kernel_throughput(n_jobs: int) -> dict:
    """Multiply-adds per second of one hard propagation on the real first cell graph."""
    import scipy.sparse as sp

    from sccr._engine.execution import Execution, executing
    from sccr._engine.graph import knn_graph
    from sccr._engine.propagation import propagate

    X = _preprocessed().X
    A = knn_graph(X, 15, sym=True)
    work = A.nnz * X.shape[1] * 40
    out = {"graph_nnz": int(A.nnz), "macs": int(work)}
    with executing(Execution(n_jobs=n_jobs)):
        propagate(A, X, 1, hard=True)  # compile / warm caches
        for chunk in (16, 32, 64, 128, 256):
            times = []
            for _ in range(3):
                start = time.perf_counter()
                propagate(A, X, 40, hard=True, chunk=chunk)
                times.append(time.perf_counter() - start)
            out[f"chunk_{chunk}_gmacs"] = work / float(np.median(times)) / 1e9
    dense, A32 = X.toarray(), sp.csr_matrix(A)
    start = time.perf_counter()
    for _ in range(5):
        A32 @ dense
    out["scipy_spmm_gmacs"] = A.nnz * X.shape[1] * 5 / (time.perf_counter() - start) / 1e9
    out["best_gmacs"] = max(v for k, v in out.items() if k.startswith("chunk_"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "speed.json")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kernel", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one or args.kernel:
        print(json.dumps(one_run(args.n_jobs) if args.one else kernel_throughput(args.n_jobs)))
        return

    def child(flag: str) -> dict:
        cmd = [sys.executable, __file__, flag, "--n-jobs", str(args.n_jobs)]
        return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)

    first = child("--one")
    runs = [child("--one") for _ in range(args.repeats)]
    kernel = child("--kernel")
    median = lambda xs: float(np.median(xs))  # noqa: E731
    stages = {s: median([r["timings"][s] for r in runs]) for s in runs[0]["timings"]}
    prop_seconds = sum(stages[s] for s in PROPAGATION_STAGES)
    prop_work = sum(runs[0]["work"][s] for s in PROPAGATION_STAGES)
    total = median([r["seconds"] for r in runs])
    report = {
        "dataset": "worm_neuron, paper preprocessing, 4186 x 2000, float32",
        "settings": "scCR defaults, sym_final=False (authors' Worm Neuron setting)",
        "n_jobs": args.n_jobs,
        "repeats": args.repeats,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "impute_seconds_median": total,
        "impute_seconds_runs": [r["seconds"] for r in runs],
        "impute_seconds_first_process": first["seconds"],
        "speedup_vs_reference": REFERENCE_SECONDS / total,
        "reference_seconds": REFERENCE_SECONDS,
        "stage_seconds_median": stages,
        "peak_rss_mb_median": median([r["peak_rss_mb"] for r in runs]),
        "peak_rss_before_impute_mb_median": median([r["peak_rss_before_impute_mb"] for r in runs]),
        "propagation_macs": prop_work,
        "propagation_seconds": prop_seconds,
        "propagation_gmacs": prop_work / prop_seconds / 1e9,
        "kernel": kernel,
        "kernel_ratio_best_over_pipeline": kernel["best_gmacs"] / (prop_work / prop_seconds / 1e9),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"scCR on Worm Neuron, {args.n_jobs} threads, median of {args.repeats} fresh processes:")
    run_list = ", ".join(f"{r['seconds']:.2f}" for r in runs)
    print(
        f"  imputation {total:.2f} s (runs: {run_list}; "
        f"first process incl. compilation {first['seconds']:.2f} s); reference {REFERENCE_SECONDS} s "
        f"-> {REFERENCE_SECONDS / total:.1f}x faster"
    )
    print("  stages: " + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()))
    print(
        f"  peak RSS {report['peak_rss_mb_median']:.0f} MiB (after loading+preprocessing, before imputing: "
        f"{report['peak_rss_before_impute_mb_median']:.0f} MiB)"
    )
    print(
        f"  propagation: {prop_work / 1e9:.1f} G multiply-adds in {prop_seconds:.2f} s = {report['propagation_gmacs']:.1f} GMAC/s; "
        f"kernel alone best {kernel['best_gmacs']:.1f} GMAC/s (ratio {report['kernel_ratio_best_over_pipeline']:.2f}); "
        f"scipy sparse x dense {kernel['scipy_spmm_gmacs']:.1f} GMAC/s"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

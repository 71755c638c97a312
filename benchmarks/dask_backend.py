"""Dask backend against the local backend on Worm Neuron (4186 cells x 2000 genes): time and agreement.

Usage: python benchmarks/dask_backend.py [--repeats 3] [--workers 2] [--out benchmarks/results/dask.json]

Local: ``n_jobs=workers`` threads in this process. Dask: a LocalCluster of
``workers`` single-threaded worker processes on the same machine, so both use
the same cores. Every configuration runs once to warm up (numba loads its
compiled kernel in each worker process) and then ``repeats`` times; the median
is reported. The dask runs come first, so that the client's peak RSS (which
includes loading and preprocessing) is theirs; each worker reports its own. Agreement: the largest absolute difference of the imputed matrices
and whether the cell and gene graphs are identical. Prints a summary and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: scCR defaults with the authors' Worm Neuron setting (as benchmarks/speed.py).
SETTINGS = dict(method="sccr", sym_final=False, progress=False)


def timed_runs(X, repeats: int, **options) -> tuple[list[float], object]:
    """Seconds of ``repeats`` fits after one warm-up, and the last fitted model."""
    import sccr

    model = sccr.SCCR(**SETTINGS, **options).fit(X)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        model = sccr.SCCR(**SETTINGS, **options).fit(X)
        seconds.append(time.perf_counter() - start)
    return seconds, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "dask.json")
    args = parser.parse_args()

    import distributed

    import sccr
    from sccr._resources import peak_rss_mb

    X = sccr.pp.preprocess_paper(sccr.datasets.worm_neuron()).X
    with (
        distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        dask_seconds, remote = timed_runs(X, args.repeats, n_jobs=args.workers, backend="dask", client=client)
        worker_peaks = sorted(client.run(peak_rss_mb).values())
    client_peak = peak_rss_mb()  # before the local runs, which could only raise it
    local_seconds, local = timed_runs(X, args.repeats, n_jobs=args.workers)

    median = lambda xs: float(np.median(xs))  # noqa: E731
    stages = lambda model: {k: round(v, 3) for k, v in model.timings_.items()}  # noqa: E731
    report = {
        "dataset": f"worm_neuron, paper preprocessing, {X.shape[0]} x {X.shape[1]}, float32",
        "settings": "scCR defaults, sym_final=False",
        "workers": args.workers,
        "repeats": args.repeats,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "local_seconds_median": median(local_seconds),
        "local_seconds_runs": local_seconds,
        "dask_seconds_median": median(dask_seconds),
        "dask_seconds_runs": dask_seconds,
        "dask_worker_peak_rss_mb": worker_peaks,
        "dask_client_peak_rss_mb": client_peak,
        "local_stage_seconds_last": stages(local),
        "dask_stage_seconds_last": stages(remote),
        "max_abs_difference": float(np.abs(remote.imputed_ - local.imputed_).max()),
        "cell_graph_identical": bool((remote.cell_graph_ != local.cell_graph_).nnz == 0),
        "gene_graph_identical": bool((remote.gene_graph_ != local.gene_graph_).nnz == 0),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"scCR on Worm Neuron {X.shape[0]} x {X.shape[1]}, median of {args.repeats} after a warm-up:")
    print(f"  local, {args.workers} threads: {report['local_seconds_median']:.2f} s")
    print(f"  dask, LocalCluster {args.workers} workers x 1 thread: {report['dask_seconds_median']:.2f} s")
    print(
        f"  peak RSS: dask client {client_peak:.0f} MiB, workers "
        + ", ".join(f"{p:.0f}" for p in worker_peaks)
        + " MiB"
    )
    print(
        f"  max |dask - local| = {report['max_abs_difference']:.3g}; graphs identical: "
        f"cell {report['cell_graph_identical']}, gene {report['gene_graph_identical']}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

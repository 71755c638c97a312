"""A dense input matrix read lazily: ``sccr impute`` on a .zarr store whose X is dense, under a memory budget.

Usage: python benchmarks/streamed_input.py [--cells 1000000] [--memory-budget 10G]
       [--source ../shared/data/pbmc4k_top2000.h5ad] [--work /tmp/sccr-streamed]
       [--n-jobs 2] [--out benchmarks/results/streamed_input.json]  (a run replaces the one of its size)

The input is built as in ``scaling.py`` (``resample.py``: cells drawn with replacement,
counts Binomial(count, 0.8)), preprocessed as the paper does, and stored *dense*
(float32, 4 bytes per cell x gene: 7.5 GiB at 1M x 2000) as X of a .zarr store, written
block by block. The command line then imputes it into an .h5ad file with
``--memory-budget``: held in memory, the input alone would take most of that budget, so
the run streams it into a scratch file (checking it on the way) and keeps every
N x G matrix on disk. Measured as in ``scaling.py``: wall time and the child's peak RSS,
stage timings from the output's ``uns``, KMeans ARI of the imputed layer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

#: Rows per block when the dense input is written.
WRITE_ROWS = 16384


def write_dense_zarr(adata, path: Path) -> None:
    """``adata`` (sparse X) as a .zarr store whose X is a dense float32 array, written in row blocks."""
    import anndata as ad
    import zarr

    sparse = adata.X
    shell = ad.AnnData(obs=adata.obs, var=adata.var, uns=adata.uns)
    shell.write_zarr(path)
    root = zarr.open_group(path, mode="r+", use_consolidated=False)
    n, g = sparse.shape
    X = root.create_array("X", shape=(n, g), dtype="float32", chunks=(WRITE_ROWS, g))
    X.attrs.update({"encoding-type": "array", "encoding-version": "0.2.0"})
    for start in range(0, n, WRITE_ROWS):
        X[start : start + WRITE_ROWS] = sparse[start : start + WRITE_ROWS].toarray()
    zarr.consolidate_metadata(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--memory-budget", default="10G")
    parser.add_argument("--source", type=Path, default=ROOT.parent / "shared" / "data" / "pbmc4k_top2000.h5ad")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sccr-streamed"))
    parser.add_argument("--n-jobs", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "streamed_input.json")
    args = parser.parse_args()

    import anndata as ad

    import sccr
    from resample import resample
    from scaling import run_child, score

    args.work.mkdir(parents=True, exist_ok=True)
    data, output = args.work / f"cells_{args.cells}.dense.zarr", args.work / f"cells_{args.cells}.imputed.h5ad"
    if not data.exists():
        start = time.perf_counter()
        counts = resample(ad.read_h5ad(args.source), args.cells, keep=0.8, seed=0)
        logged = sccr.pp.preprocess_paper(counts, n_top_genes=counts.n_vars)
        del counts
        write_dense_zarr(logged, data)
        print(
            f"wrote {data} ({logged.n_obs} x {logged.n_vars}, dense) in {time.perf_counter() - start:.1f} s", flush=True
        )
        del logged
    argv = [
        sys.executable,
        "-m",
        "sccr.cli",
        "impute",
        str(data),
        str(output),
        "--memory-budget",
        args.memory_budget,
        "--n-jobs",
        str(args.n_jobs),
        "--force",
        "--quiet",
    ]
    seconds, peak, _ = run_child(argv)
    row = {
        "cells": args.cells,
        "seconds": seconds,
        "peak_rss_mib": peak,
        "memory_budget": args.memory_budget,
        "input": "dense float32 X of a .zarr store",
        "command": " ".join(["sccr", *argv[3:]]),
        **score(output, "sccr"),
    }
    output.unlink()
    report = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    report["runs"] = sorted([r for r in report["runs"] if r["cells"] != args.cells] + [row], key=lambda r: r["cells"])
    report.update(
        {
            "source": args.source.name,
            "n_jobs": args.n_jobs,
            "resampling": "cells drawn with replacement, counts Binomial(count, 0.8), seed 0",
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"{args.cells} cells, dense input streamed: {seconds:.1f} s, peak RSS {peak:.0f} MiB, ARI imputed "
        f"{row['ari_imputed']:.3f} ± {row['ari_imputed_sd']:.3f}; wrote {args.out}"
    )


if __name__ == "__main__":
    main()

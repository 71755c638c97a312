"""Build large inputs from real cells: draw cells with replacement, thin their counts binomially.

Usage: python benchmarks/resample.py SOURCE.h5ad N_CELLS OUT.h5ad [--keep 0.8] [--seed 0]

There is no real data set above ~10k cells in ``../shared/data``; scaling figures use
inputs made here. Each output cell is a source cell drawn uniformly with replacement,
every count of which is replaced by Binomial(count, keep): a new sampling of the same
molecules at ``keep`` of the depth, so two draws of one source cell differ as two
cells of one type do, not as exact duplicates. Genes are those of the source, labels
(``obs['celltype']``) and the source cell (``obs['source_cell']``) are carried over.
Output: raw counts, CSR float32, written in one piece (the counts of 1M cells x 2000
genes at pbmc4k's density take about 1.3 GiB).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

#: Cells generated per step (bounds the temporaries).
CHUNK = 65536


def resample(source: ad.AnnData, n_cells: int, *, keep: float = 0.8, seed: int = 0) -> ad.AnnData:
    """``n_cells`` cells drawn with replacement from ``source`` (raw counts), counts thinned with ``keep``."""
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(source.X, dtype=np.float32)
    counts = np.rint(X.data).astype(np.int64)
    if not np.allclose(counts, X.data):
        raise ValueError("the source must hold raw (integer) counts")
    drawn = rng.integers(0, X.shape[0], size=n_cells)
    pieces = []
    for start in range(0, n_cells, CHUNK):
        rows = drawn[start : start + CHUNK]
        sub = X[rows]
        sub.data = rng.binomial(np.rint(sub.data).astype(np.int64), keep).astype(np.float32)
        sub.eliminate_zeros()
        pieces.append(sub)
    out = sp.vstack(pieces, format="csr", dtype=np.float32)
    obs = pd.DataFrame(
        {
            "celltype": source.obs["celltype"].to_numpy()[drawn],
            "source_cell": source.obs_names.to_numpy()[drawn],
        },
        index=[f"c{i}" for i in range(n_cells)],
    )
    obs["celltype"] = obs["celltype"].astype("category")
    uns = {"resampled": {"source": str(source.uns.get("source", "")), "n_cells": n_cells, "keep": keep, "seed": seed}}
    return ad.AnnData(out, obs=obs, var=source.var[[]].copy(), uns=uns)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("n_cells", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--keep", type=float, default=0.8, help="binomial thinning probability")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    adata = resample(ad.read_h5ad(args.source), args.n_cells, keep=args.keep, seed=args.seed)
    adata.write_h5ad(args.out)
    print(f"{args.out}: {adata.n_obs} x {adata.n_vars}, {adata.X.nnz} non-zeros, {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()

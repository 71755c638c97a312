"""Recall and time of the approximate k-NN search from 30k to 1M resampled cells (docs/scaling.md).

Usage: python benchmarks/knn_scale.py [--sizes 30000,100000,300000,1000000] [--matrix x|d0]
       [--set NAME=VALUE ...] [--label final] [--work /tmp/sccr-scaling]
       [--out benchmarks/results/knn_scale.json]

Inputs: ``WORK/cells_N.h5ad`` as ``benchmarks/scaling.py`` makes them (pbmc4k_top2000
resampled, ``benchmarks/resample.py``), preprocessed with ``sccr.pp.preprocess_paper``.
``--matrix x`` searches the sparse log-normalised X, as the first cell graph does;
``--matrix d0`` the dense hard propagation of X on its approximate graph, as the later
graphs see. ``--set`` changes constants of ``sccr._engine.ann`` for the run (e.g.
``--set N_REFINE=1 --set MAX_CLUSTER_FACTOR=1000000`` is the search before cluster
splitting and the second NN-descent round).

Exact neighbours are computed for 2000 rows drawn at random (seed 1) against all rows
(float32 products of the row-normalised matrix). recall@16 (k = 15 plus the row
itself): a returned neighbour counts when its exact cosine is at least the row's exact
16th (resampled copies of one source cell make near-ties; any tied row counts).
similarity ratio: the sum of the 16 returned similarities over the sum of the exact top
16, averaged over the rows: how much weaker the neighbours found are than the best.
Seconds: the search alone, 2 threads, first call in the process (numba loaded from cache).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from sccr import pp
from sccr._engine import ann
from sccr._engine.execution import Execution, executing
from sccr._engine.graph import knn_graph
from sccr._engine.propagation import propagate

HERE = Path(__file__).resolve().parent
QUERIES, QUERY_BLOCK, K1 = 2000, 250, 16


def load(path: Path, matrix: str):
    X = sp.csr_matrix(pp.preprocess_paper(ad.read_h5ad(path)).X, dtype=np.float32)
    if matrix == "d0":
        A = knn_graph(X, 15, sym=True, knn="approx", random_state=0)
        return propagate(A, X, 40, hard=True)
    return X


def quality(M, indices: np.ndarray) -> tuple[float, float]:
    """(recall@16, similarity ratio) on :data:`QUERIES` random rows against exact neighbours."""
    n = M.shape[0]
    if sp.issparse(M):
        norms = np.sqrt(np.asarray(M.multiply(M).sum(axis=1)).ravel())
        Mn = sp.csr_matrix(sp.diags(1 / np.maximum(norms, 1e-30)) @ M)
    else:
        Mn = M / np.maximum(np.linalg.norm(M, axis=1, keepdims=True), 1e-30)
    rows = np.sort(np.random.default_rng(1).choice(n, min(QUERIES, n), replace=False))
    found, ratio = [], []
    for start in range(0, rows.size, QUERY_BLOCK):
        q = rows[start : start + QUERY_BLOCK]
        Q = Mn[q].toarray() if sp.issparse(Mn) else Mn[q]
        S = np.asarray(Mn @ Q.T).T  # queries x n exact cosines
        top = -np.partition(-S, K1 - 1, axis=1)[:, :K1]
        got = np.take_along_axis(S, indices[q, :K1], axis=1)
        found.append(got >= top.min(axis=1, keepdims=True) - 1e-6)
        ratio.append(got.sum(axis=1) / top.sum(axis=1))
    return float(np.concatenate(found).mean()), float(np.concatenate(ratio).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="30000,100000,300000,1000000")
    parser.add_argument("--matrix", choices=["x", "d0"], default="x")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--label", default="final")
    parser.add_argument("--work", type=Path, default=Path("/tmp/sccr-scaling"))
    parser.add_argument("--out", type=Path, default=HERE / "results" / "knn_scale.json")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        name, value = item.split("=")
        if not hasattr(ann, name):
            raise SystemExit(f"sccr._engine.ann has no constant {name}")
        overrides[name] = int(value)
        setattr(ann, name, int(value))
    records = json.loads(args.out.read_text())["runs"] if args.out.exists() else []
    for n in (int(s) for s in args.sizes.split(",")):
        with executing(Execution(n_jobs=2)):  # 2 threads for BLAS and numba, restored after
            M = load(args.work / f"cells_{n}.h5ad", args.matrix)
            start = time.perf_counter()
            indices, _ = ann.approximate_neighbours(M, K1, random_state=0)
            seconds = time.perf_counter() - start
        recall, ratio = quality(M, indices)
        record = {
            "label": args.label,
            "overrides": overrides,
            "matrix": args.matrix,
            "cells": n,
            "seconds": seconds,
            "recall16": recall,
            "similarity_ratio": ratio,
            "stages": dict(ann.last_timings),
        }
        records = [r for r in records if (r["label"], r["matrix"], r["cells"]) != (args.label, args.matrix, n)] + [
            record
        ]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": records}, indent=1) + "\n")
        print(
            f"{args.label:>10} {args.matrix:>3} {n:>8} cells: {seconds:7.1f} s, recall@16 {recall:.4f}, "
            f"similarity ratio {ratio:.5f}, stages { ({k: round(v, 1) for k, v in ann.last_timings.items()}) }",
            flush=True,
        )


if __name__ == "__main__":
    main()

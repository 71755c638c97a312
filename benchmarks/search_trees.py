"""One approximate neighbour search in this process, timed, for a same-run control of two source trees.

Usage (alternate the trees yourself, a fresh process each; inputs from ``benchmarks/resample.py``):

    git worktree add /tmp/base BASELINE
    for r in 1 2 3; do for tree in /tmp/base .; do
        PYTHONPATH=$tree/src python benchmarks/search_trees.py /tmp/sccr-scaling/cells_300000.h5ad
    done; done > search_trees.jsonl

Reads the counts, preprocesses them with ``sccr.pp.preprocess_paper`` and searches the sparse X
as the first cell graph does (k = 15, 2 threads; a first search on 3000 rows loads the compiled
kernels); ``--dense`` searches it as a dense array, the path of the second and third cell graphs
(whose matrices are dense). Prints one JSON line: the tree, seconds, the search's stage times and a digest of the
neighbours and similarities (equal digests: the two trees found the same graph bit for bit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import anndata as ad

import sccr
from sccr import pp
from sccr._engine import ann
from sccr._engine.execution import Execution, executing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="raw counts (.h5ad), e.g. from benchmarks/resample.py")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--dense", action="store_true", help="search the matrix as a dense float32 array")
    args = parser.parse_args()
    X = pp.preprocess_paper(ad.read_h5ad(args.input)).X
    if args.dense:
        X = X.toarray()
    with executing(Execution(n_jobs=args.n_jobs, progress=False)):
        ann.approximate_neighbours(X[:3000], 16, random_state=0)
        start = time.perf_counter()
        indices, values = ann.approximate_neighbours(X, 16, random_state=0)
        seconds = time.perf_counter() - start
    tree = Path(sccr.__file__).resolve().parents[2]
    digest = hashlib.sha256(indices.tobytes() + values.tobytes()).hexdigest()[:16]
    stages = {name: round(value, 2) for name, value in ann.last_timings.items()}
    print(
        json.dumps(
            {
                "tree": str(tree),
                "cells": X.shape[0],
                "dense": args.dense,
                "seconds": round(seconds, 2),
                "stages": stages,
                "digest": digest,
            }
        )
    )


if __name__ == "__main__":
    main()

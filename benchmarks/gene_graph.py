"""The signed gene graph's stage in this process, timed, for a same-run control of two source trees.

Usage (alternate the trees yourself, a fresh process each; inputs from ``benchmarks/resample.py``):

    git worktree add /tmp/base BASELINE
    for r in 1 2 3; do for tree in /tmp/base .; do
        PYTHONPATH=$tree/src python benchmarks/gene_graph.py /tmp/sccr-scaling/cells_300000.h5ad
    done; done > gene_graph.jsonl

Reads the counts, preprocesses them with ``sccr.pp.preprocess_paper``, writes them densified to a
scratch file of 64-column panels (``--scratch``, reused when present; the layout of the
pre-imputation D0 at scale) and runs what the pipeline's ``gene_graph`` stage runs on it
(``standardisation``, then ``signed_gene_neighbours`` with k_gene = 2) on 2 threads, after a
small run that loads the compiled kernels. Prints one JSON line: the tree, the seconds of each
part and a digest of the gene neighbours and correlations (equal digests: the same graph bit for bit).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import anndata as ad
import numpy as np

import sccr
from sccr import pp
from sccr._engine.execution import Execution, executing
from sccr._engine.graph import signed_gene_neighbours
from sccr._engine.matrix import PANEL_WIDTH, PanelFile
from sccr._engine.pipeline import standardisation


def scratch_copy(input_path: Path, scratch: Path) -> PanelFile:
    """The preprocessed input, dense, in a panel file (written once)."""
    X = pp.preprocess_paper(ad.read_h5ad(input_path)).X.tocsc()
    shape = X.shape
    if not scratch.exists():
        panels = PanelFile(scratch.with_suffix(".partial"), shape)
        for start in range(0, shape[1], PANEL_WIDTH):
            panels.write_columns(start, X[:, start : start + PANEL_WIDTH].toarray())
        del panels
        scratch.with_suffix(".partial").rename(scratch)
    return PanelFile(scratch, shape, readonly=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="raw counts (.h5ad), e.g. from benchmarks/resample.py")
    parser.add_argument(
        "--scratch", type=Path, default=None, help="panel file of the dense matrix (default: beside the input)"
    )
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    scratch = args.scratch or args.input.with_suffix(".dense.panels")
    D = scratch_copy(args.input, scratch)
    with executing(Execution(n_jobs=args.n_jobs, progress=False)):
        small = np.random.default_rng(0).random((300, 40), dtype=np.float32)
        signed_gene_neighbours(small, *standardisation(small), 2)
        start = time.perf_counter()
        mean, std = standardisation(D)
        middle = time.perf_counter()
        indices, correlations = signed_gene_neighbours(D, mean, std, 2)
        stop = time.perf_counter()
    tree = Path(sccr.__file__).resolve().parents[2]
    digest = hashlib.sha256(indices.tobytes() + correlations.tobytes()).hexdigest()[:16]
    record = {
        "tree": str(tree),
        "cells": D.shape[0],
        "genes": D.shape[1],
        "standardisation_s": round(middle - start, 3),
        "neighbours_s": round(stop - middle, 3),
        "seconds": round(stop - start, 3),
        "digest": digest,
    }
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

"""Helpers shared by the tests: synthetic data generators and the location of the real data.

Real data live outside the repository in ``../shared`` (or in ``$SCCR_SHARED``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("SCCR_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "data"
REFERENCE = SHARED / "reference"
BLADDER = "mouse_bladder_top2000"


def make_expression(n_cells: int = 60, n_genes: int = 30, *, seed: int = 0, n_groups: int = 3) -> np.ndarray:
    """Log-normalised, non-negative float32 cells x genes with ~60% zeros and group structure.

    Poisson counts around group-specific gene means, scaled to the median total
    and log1p-transformed, like ``normalize_total`` + ``log1p``.
    """
    rng = np.random.default_rng(seed)
    groups = np.arange(n_cells) % n_groups
    gene_means = rng.gamma(0.6, 1.0, size=(n_groups, n_genes))
    counts = rng.poisson(gene_means[groups] * rng.uniform(0.6, 1.4, size=(n_cells, 1)))
    counts[counts.sum(axis=1) == 0, 0] = 1  # no empty cell
    empty = np.flatnonzero(counts.sum(axis=0) == 0)
    counts[empty % n_cells, empty] = 1  # no empty gene: the default data gives no warning
    totals = counts.sum(axis=1, keepdims=True)
    return np.log1p(counts / totals * np.median(totals)).astype(np.float32)


def make_counts(n_cells: int = 80, n_genes: int = 40, *, seed: int = 0) -> np.ndarray:
    """Raw integer counts (float32), with group structure."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n_cells) % 3
    gene_means = rng.gamma(0.8, 1.5, size=(3, n_genes))
    return rng.poisson(gene_means[groups]).astype(np.float32)


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not available ({path})")
    return path


def bladder_genes() -> list[str]:
    path = require(REFERENCE / f"{BLADDER}.genes.txt")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def in_threads(n_jobs: int, function, *args, **kwargs):
    """``function(*args, **kwargs)`` run inside an engine execution of ``n_jobs`` threads."""
    from sccr._engine.execution import Execution, executing

    with executing(Execution(n_jobs=n_jobs)):
        return function(*args, **kwargs)


def run_options(X, *, chunk: int | None = None, **options):
    """The engine's entry on ``X`` with ``options`` (checked, memory planned); ``chunk``: columns per propagation chunk."""
    from sccr._engine import prepare
    from sccr._options import Options

    with prepare(X, Options(**options)) as job:
        return job.execute(chunk=chunk)


def row_block_search(M, n_neighbours: int):
    """Exact top ``n_neighbours`` by the row-block search (every row's full float32 row of cosines,
    the Dask workers' search): the reference :func:`sccr._engine.graph.symmetric_top` must equal."""
    import scipy.sparse as sp

    from sccr._engine import graph

    M = sp.csr_matrix(M, dtype=np.float32) if sp.issparse(M) else np.ascontiguousarray(M, dtype=np.float32)
    Mn = graph._row_normalised(M)
    n = M.shape[0]
    step = graph.similarity_block_rows(n)
    blocks = ((start, graph.cosine_block(Mn, start, start + step)) for start in range(0, n, step))
    return graph.top_neighbours(blocks, n, n_neighbours, exact=graph.ExactCosine(M))

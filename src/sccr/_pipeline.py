"""The scCR pipeline and its predecessors scFP and scBFP, on arrays.

Data flows one way: validated input -> graphs (``_graph``) -> propagation
(``_propagation``) -> imputed matrix. ALGORITHM.md gives every step.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ._graph import knn_graph, signed_gene_graph
from ._propagation import DEFAULT_CHUNK, propagate, propagate_chunks

METHODS = ("sccr", "scfp", "scbfp")

#: Cells per chunk in the gene-wise stage (genes are nodes, cells are features).
GENE_STAGE_CELL_CHUNK = 64


@dataclass
class Params:
    """Options shared by every method; see :func:`sccr.impute` for their meaning."""

    method: str = "sccr"
    k: int = 15
    k_gene: int = 2
    n_iter: int = 40
    alpha: float = 0.05
    beta: float = 0.99
    gamma: float = 0.01
    sym_final: bool = True
    knn: str = "auto"
    n_jobs: int = 1
    progress: bool = False
    chunk: int = DEFAULT_CHUNK


@dataclass
class Result:
    """What a run produces: the imputed matrix, the graphs worth keeping, stage timings."""

    imputed: np.ndarray
    cell_graph: sp.csr_matrix
    gene_graph: sp.csr_matrix | None
    timings: dict[str, float] = field(default_factory=dict)
    #: Multiply-adds done by each propagation stage (for throughput figures).
    work: dict[str, int] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.work: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def _row_chunks(n: int, size: int = 4096):
    return (slice(start, start + size) for start in range(0, n, size))


def standardisation(D: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and deviations (ddof=1) for step 2b, as float32.

    A column of zero deviation gets the mean of all deviations instead (the
    mean over the 2G columns of ``[D, -D]`` equals the mean over the G columns).
    """
    n, g = D.shape
    mean = np.zeros(g, dtype=np.float64)
    for rows in _row_chunks(n):
        mean += D[rows].sum(axis=0, dtype=np.float64)
    mean /= n
    squares = np.zeros(g, dtype=np.float64)
    for rows in _row_chunks(n):
        squares += np.square(D[rows] - mean).sum(axis=0)
    std = np.sqrt(squares / (n - 1)) if n > 1 else squares
    std[std == 0] = std.mean()
    std[std == 0] = 1.0  # every column constant: Z is all zeros whatever the divisor
    return mean.astype(np.float32), std.astype(np.float32)


def propagate_over_genes(
    S: sp.csr_matrix,
    D: np.ndarray,
    X: np.ndarray | sp.csr_matrix,
    mean: np.ndarray,
    std: np.ndarray,
    p: Params,
) -> np.ndarray:
    """Step 2d-e: hard propagation of standardised ``D`` over the signed gene graph ``S``.

    Entries observed in ``X`` keep their standardised value. Works on chunks of
    cells (each cell is independent here) and returns the de-standardised result.
    """
    n = D.shape[0]
    out = np.empty_like(D)
    starts = list(range(0, n, GENE_STAGE_CELL_CHUNK))

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        rows = slice(starts[i], starts[i] + GENE_STAGE_CELL_CHUNK)
        Z = (D[rows] - mean) / std
        observed = X[rows].toarray() != 0 if sp.issparse(X) else X[rows] != 0
        return Z.T, observed.T

    def store(i: int, block: np.ndarray) -> None:
        out[starts[i] : starts[i] + GENE_STAGE_CELL_CHUNK] = block.T * std + mean

    propagate_chunks(
        S, len(starts), load, store, n_iter=p.n_iter, hard=True,
        n_jobs=p.n_jobs, desc="gene-wise propagation", progress=p.progress,
    )
    return out


def _propagate_stage(t: _Timer, stage: str, A: sp.csr_matrix, X, p: Params, *, hard: bool, desc: str) -> np.ndarray:
    with t.stage(stage):
        out = propagate(
            A, X, p.n_iter, hard=hard, beta=p.beta, chunk=p.chunk,
            n_jobs=p.n_jobs, desc=desc, progress=p.progress,
        )
    t.work[stage] = int(A.nnz) * X.shape[1] * p.n_iter
    return out


def _run_sccr(X, p: Params, t: _Timer) -> Result:
    with t.stage("knn_cells_1"):
        A1 = knn_graph(X, p.k, sym=True)
    D0 = _propagate_stage(t, "hard_fp_1", A1, X, p, hard=True, desc="pre-imputation")
    with t.stage("gene_graph"):
        mean, std = standardisation(D0)
        S = signed_gene_graph(D0, mean, std, p.k_gene)
    with t.stage("gene_fp"):
        C = propagate_over_genes(S, D0, X, mean, std, p)
    t.work["gene_fp"] = int(S.nnz) * D0.shape[0] * p.n_iter
    with t.stage("knn_cells_2"):
        A2 = knn_graph(C, p.k, sym=True)
    del C
    D1 = _propagate_stage(t, "hard_fp_2", A2, X, p, hard=True, desc="refined propagation")
    with t.stage("blend"):
        B = D1
        B *= np.float32(1.0 - p.alpha)
        B += np.float32(p.alpha) * D0
    del D0, D1
    with t.stage("knn_cells_3"):
        A3 = knn_graph(B, p.k, sym=p.sym_final)
    F = _propagate_stage(t, "soft_fp", A3, X, p, hard=False, desc="denoising")
    with t.stage("output"):
        F *= np.float32(1.0 - p.gamma)
        F += np.float32(p.gamma) * B
    return Result(F, A3, S, t.timings, t.work)


def _run_scfp(X, p: Params, t: _Timer) -> Result:
    with t.stage("knn_cells_1"):
        A1 = knn_graph(X, p.k, sym=True)
    D0 = _propagate_stage(t, "hard_fp_1", A1, X, p, hard=True, desc="pre-imputation")
    with t.stage("knn_cells_2"):
        A2 = knn_graph(D0, p.k, sym=p.sym_final)
    F = _propagate_stage(t, "soft_fp", A2, D0, p, hard=False, desc="denoising")
    return Result(F, A2, None, t.timings, t.work)


def _run_scbfp(X, p: Params, t: _Timer) -> Result:
    with t.stage("gene_graph"):
        XT = X.T.tocsr() if sp.issparse(X) else X.T
        Ag = knn_graph(XT, p.k_gene, sym=True, norm="sym")
    Dg = _propagate_stage(t, "gene_fp", Ag, XT, p, hard=True, desc="gene-wise propagation").T
    with t.stage("knn_cells_1"):
        A = knn_graph(Dg, p.k, sym=p.sym_final)
    F = _propagate_stage(t, "soft_fp", A, Dg, p, hard=False, desc="denoising")
    return Result(F, A, Ag, t.timings, t.work)


_RUNNERS = {"sccr": _run_sccr, "scfp": _run_scfp, "scbfp": _run_scbfp}


def run(X: np.ndarray | sp.csr_matrix, p: Params) -> Result:
    """Impute validated ``X`` (cells x genes, float32, dense or CSR) with method ``p.method``."""
    t = _Timer()
    start = time.perf_counter()
    with threadpool_limits(limits=p.n_jobs):
        result = _RUNNERS[p.method](X, p, t)
    result.imputed = np.ascontiguousarray(result.imputed, dtype=np.float32)
    t.timings["total"] = time.perf_counter() - start
    return result

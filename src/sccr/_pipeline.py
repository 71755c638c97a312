"""The scCR pipeline and its predecessors scFP and scBFP, on arrays.

Data flows one way: validated input -> graphs (``_graph``) -> propagation
(``_propagation``) -> imputed matrix. ALGORITHM.md gives every step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from ._graph import knn_graph, signed_gene_graph
from ._propagation import DEFAULT_CHUNK, propagate, propagate_chunks
from ._store import PanelFile, SliceStore, Workspace, as_store

METHODS = ("sccr", "scfp", "scbfp")

#: Cells per chunk in the gene-wise stage (genes are nodes, cells are features).
GENE_STAGE_CELL_CHUNK = 64
#: Cells per block when statistics and correlations are accumulated over cells.
GRAM_CELL_CHUNK = 4096


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
    random_state: int | None = 0
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


def standardisation(D: np.ndarray | SliceStore) -> tuple[np.ndarray, np.ndarray]:
    """Column means and deviations (ddof=1) of ``D`` for step 2b, as float32.

    A column of zero deviation gets the mean of all deviations instead (the
    mean over the 2G columns of ``[D, -D]`` equals the mean over the G columns).
    """
    D = as_store(D)
    n, g = D.shape
    mean = np.zeros(g, dtype=np.float64)
    for _, block in D.iter_row_blocks(GRAM_CELL_CHUNK):
        mean += block.sum(axis=0, dtype=np.float64)
    mean /= n
    squares = np.zeros(g, dtype=np.float64)
    for _, block in D.iter_row_blocks(GRAM_CELL_CHUNK):
        squares += np.square(block - mean).sum(axis=0)
    std = np.sqrt(squares / (n - 1)) if n > 1 else squares
    std[std == 0] = std.mean()
    std[std == 0] = 1.0  # every column constant: Z is all zeros whatever the divisor
    return mean.astype(np.float32), std.astype(np.float32)


def _dense_rows(X, start: int, stop: int) -> np.ndarray:
    if isinstance(X, SliceStore):
        return X.rows(start, stop)
    rows = X[start:stop]
    return rows.toarray() if sp.issparse(rows) else np.asarray(rows)


def _propagate_cells_as_features(
    S: sp.csr_matrix,
    n_cells: int,
    load_rows: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]],
    store_rows: Callable[[int, np.ndarray], None],
    p: Params,
) -> None:
    """Hard propagation over a gene graph ``S`` (genes are nodes, cells are features).

    Works on chunks of cells, each independent here: ``load_rows(start, stop)``
    gives their starting values (cells x genes) and the entries kept fixed
    (``None``: the non-zeros), ``store_rows(start, block)`` takes the result.
    """
    starts = list(range(0, n_cells, GENE_STAGE_CELL_CHUNK))

    def load(i: int) -> tuple[np.ndarray, np.ndarray | None]:
        x0, observed = load_rows(starts[i], starts[i] + GENE_STAGE_CELL_CHUNK)
        return x0.T, None if observed is None else observed.T

    def store(i: int, block: np.ndarray) -> None:
        store_rows(starts[i], block.T)

    propagate_chunks(
        S, len(starts), load, store, n_iter=p.n_iter, hard=True,
        n_jobs=p.n_jobs, desc="gene-wise propagation", progress=p.progress,
    )


def propagate_over_genes(
    S: sp.csr_matrix,
    D: np.ndarray | SliceStore,
    X: np.ndarray | sp.csr_matrix,
    mean: np.ndarray,
    std: np.ndarray,
    p: Params,
    out: SliceStore | None = None,
) -> np.ndarray | SliceStore:
    """Steps 2d-e: hard propagation of standardised ``D`` over the signed gene graph ``S``.

    Entries observed in ``X`` keep their standardised value. Returns the
    de-standardised result (``out`` when given, else a new array).
    """
    D = as_store(D)
    target = SliceStore(np.empty(D.shape, dtype=np.float32)) if out is None else out

    def standardised(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return (D.rows(start, stop) - mean) / std, _dense_rows(X, start, stop) != 0

    def destandardised(start: int, block: np.ndarray) -> None:
        target.write_rows(start, block * std + mean)

    _propagate_cells_as_features(S, D.shape[0], standardised, destandardised, p)
    return target.array if out is None else target


def _propagate_stage(
    t: _Timer, stage: str, A: sp.csr_matrix, X0, p: Params, out: SliceStore, *, hard: bool, desc: str,
    blend: tuple[float, SliceStore] | None = None,
) -> SliceStore:
    with t.stage(stage):
        propagate(
            A, X0, p.n_iter, hard=hard, beta=p.beta, chunk=p.chunk,
            n_jobs=p.n_jobs, desc=desc, progress=p.progress, out=out, blend=blend,
        )
    t.work[stage] = int(A.nnz) * X0.shape[1] * p.n_iter
    return out


def _knn_stage(t: _Timer, stage: str, M, k: int, p: Params, *, sym: bool) -> sp.csr_matrix:
    """A cell graph over the rows of ``M``: an array, or a scratch file read in blocks (approximate search)."""
    with t.stage(stage):
        if isinstance(M, SliceStore) and not isinstance(M, PanelFile):
            M = M.to_array()
        return knn_graph(M, k, sym=sym, knn=p.knn, random_state=p.random_state, n_jobs=p.n_jobs)


def _run_sccr(X, p: Params, t: _Timer, ws: Workspace, out: SliceStore) -> Result:
    shape = X.shape
    columns = sp.csc_matrix(X) if sp.issparse(X) else X  # converted once for the three propagations
    A1 = _knn_stage(t, "knn_cells_1", X, p.k, p, sym=True)
    D0 = _propagate_stage(t, "hard_fp_1", A1, columns, p, ws.new("D0", shape, p.chunk), hard=True, desc="pre-imputation")
    del A1
    with t.stage("gene_graph"):
        mean, std = standardisation(D0)
        S = signed_gene_graph(D0, mean, std, p.k_gene)
    with t.stage("gene_fp"):
        C = propagate_over_genes(S, D0, X, mean, std, p, out=ws.new("C", shape, p.chunk))
    t.work["gene_fp"] = int(S.nnz) * shape[0] * p.n_iter
    A2 = _knn_stage(t, "knn_cells_2", C, p.k, p, sym=True)
    ws.free(C)
    # Step 4, fused into the store of each chunk: B = (1 - alpha) * D1 + alpha * D0.
    B = _propagate_stage(
        t, "hard_fp_2", A2, columns, p, ws.new("B", shape, p.chunk), hard=True,
        desc="refined propagation", blend=(p.alpha, D0),
    )
    ws.free(D0)
    del A2
    A3 = _knn_stage(t, "knn_cells_3", B, p.k, p, sym=p.sym_final)
    # Step 6, fused likewise: output = (1 - gamma) * F + gamma * B.
    _propagate_stage(t, "soft_fp", A3, columns, p, out, hard=False, desc="denoising", blend=(p.gamma, B))
    ws.free(B)
    return Result(out, A3, S, t.timings, t.work)


def _run_scfp(X, p: Params, t: _Timer, ws: Workspace, out: SliceStore) -> Result:
    A1 = _knn_stage(t, "knn_cells_1", X, p.k, p, sym=True)
    D0 = _propagate_stage(t, "hard_fp_1", A1, X, p, ws.new("D0", X.shape, p.chunk), hard=True, desc="pre-imputation")
    del A1
    A2 = _knn_stage(t, "knn_cells_2", D0, p.k, p, sym=p.sym_final)
    _propagate_stage(t, "soft_fp", A2, D0, p, out, hard=False, desc="denoising")
    ws.free(D0)
    return Result(out, A2, None, t.timings, t.work)


def _run_scbfp(X, p: Params, t: _Timer, ws: Workspace, out: SliceStore) -> Result:
    with t.stage("gene_graph"):
        if isinstance(X, SliceStore):  # an input streamed into a scratch file: genes x cells in memory
            XT = np.ascontiguousarray(X.to_array().T)
        else:
            XT = X.T.tocsr() if sp.issparse(X) else X.T
        Ag = knn_graph(XT, p.k_gene, sym=True, norm="sym")
        del XT
    Dg = ws.new("Dg", X.shape, p.chunk)
    with t.stage("gene_fp"):
        _propagate_cells_as_features(Ag, X.shape[0], lambda a, b: (_dense_rows(X, a, b), None), Dg.write_rows, p)
    t.work["gene_fp"] = int(Ag.nnz) * X.shape[0] * p.n_iter
    A = _knn_stage(t, "knn_cells_1", Dg, p.k, p, sym=p.sym_final)
    _propagate_stage(t, "soft_fp", A, Dg, p, out, hard=False, desc="denoising")
    ws.free(Dg)
    return Result(out, A, Ag, t.timings, t.work)


_RUNNERS = {"sccr": _run_sccr, "scfp": _run_scfp, "scbfp": _run_scbfp}


def run(
    X: np.ndarray | sp.csr_matrix | SliceStore,
    p: Params,
    *,
    workspace: Workspace | None = None,
    out: SliceStore | None = None,
) -> Result:
    """Impute validated ``X`` (cells x genes, float32: dense, CSR, or a store such as a scratch file) with method ``p.method``.

    ``workspace`` makes the intermediate matrices (default: numpy arrays); ``out``
    receives the imputed matrix (default: a new array, returned as ``Result.imputed``).
    """
    t = _Timer()
    start = time.perf_counter()
    ws = Workspace() if workspace is None else workspace
    target = SliceStore(np.empty(X.shape, dtype=np.float32)) if out is None else out
    with threadpool_limits(limits=p.n_jobs):
        result = _RUNNERS[p.method](X, p, t, ws, target)
    result.imputed = target.array if out is None else target
    t.timings["total"] = time.perf_counter() - start
    return result

"""The scCR pipeline and its predecessors scFP and scBFP: the stages, in order.

Data flows one way: validated input -> graphs (:mod:`.graph`) -> propagation
(:mod:`.propagation`) -> imputed matrix, every N x G matrix made by a
:class:`~.matrix.Workspace`. ALGORITHM.md gives every step. Enter through
:mod:`sccr._engine.entry`, which validates and plans memory first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from .._options import Options
from .genes import GeneSelection, graph_columns, ride_along, scfp_stages, sccr_stages
from .graph import (
    batched_neighbours, graph_from_neighbours, knn_graph, knn_neighbours, neighbour_distances, signed_gene_neighbours,
)
from .matrix import PANEL_WIDTH, ROW_BLOCK, DenseMatrix, Matrix, PanelFile, SparseMatrix, Workspace, as_matrix
from .propagation import propagate, propagate_chunks

#: Where each method's memory can peak, in the order its runner below goes, as
#: (N x G float32 matrices of the pipeline held in memory, what runs beside them):
#: ``"input"`` the first cell graph, over the input; ``"transposed"`` scBFP's exact
#: gene graph over the input; ``"correlations"`` scCR's gene-gene correlations;
#: ``"search"`` a cell graph over one of the held matrices; ``"output"`` the
#: output being filled. scCR holds D0 and C for its second cell graph, then D0 and B.
#: :func:`sccr._engine.memory.estimate_peak_bytes` prices each.
MEMORY_PEAKS = {
    "sccr": ((0, "input"), (2, "correlations"), (2, "search"), (2, None), (1, "search"), (1, "output")),
    "scfp": ((0, "input"), (1, "search"), (1, "output")),
    "scbfp": ((0, "transposed"), (1, "search"), (1, "output")),
}
#: With genes riding along (ALGORITHM.md, "Graph genes and propagated genes"), the stages above run over
#: the graph genes into one N x G_graph matrix; then it is held while the riding genes' super-panels
#: (``"ride"``) fill the output over all genes.
RIDE_ALONG_PEAK = (1, "ride")


@dataclass
class Result:
    """What a run produces: the imputed matrix, the graphs worth keeping, stage timings."""

    imputed: np.ndarray | Matrix
    cell_graph: sp.csr_matrix
    #: Cosine distances from each cell to the neighbours of its final graph (scanpy's ``distances``).
    cell_distances: sp.csr_matrix
    gene_graph: sp.csr_matrix | None
    #: scCR: the Pearson correlation (over the pre-imputation) of every edge each gene chose
    #: (G x G, signed, self excluded), the evidence behind ``gene_graph``.
    gene_correlations: sp.csr_matrix | None = None
    timings: dict[str, float] = field(default_factory=dict)
    #: Multiply-adds done by each propagation stage (for throughput figures).
    work: dict[str, int] = field(default_factory=dict)
    #: What the engine decided for this run (set by :meth:`sccr._engine.entry.Job.execute`).
    decisions: Decisions | None = None
    #: With genes riding along: the cell graphs each riding gene was propagated over, in order.
    propagation_graphs: tuple[sp.csr_matrix, ...] | None = None
    #: With a gene selection: which genes built the graphs and which were imputed.
    genes: GeneSelection | None = None


@dataclass(frozen=True)
class Decisions:
    """What the engine chose for a run, recorded with its result."""

    n_jobs: int
    knn_used: str
    out_of_core: bool
    input_on_disk: bool
    scheduler: str | None


class _Timer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.work: dict[str, int] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def standardisation(D) -> tuple[np.ndarray, np.ndarray]:
    """Column means and deviations (ddof=1) of ``D`` for step 2b, as float32.

    A column of zero deviation gets the mean of all deviations instead (the
    mean over the 2G columns of ``[D, -D]`` equals the mean over the G columns).
    """
    D = as_matrix(D)
    n, g = D.shape
    mean = np.zeros(g, dtype=np.float64)
    for _, block in D.row_blocks(ROW_BLOCK):
        mean += block.sum(axis=0, dtype=np.float64)
    mean /= n
    squares = np.zeros(g, dtype=np.float64)
    for _, block in D.row_blocks(ROW_BLOCK):
        squares += np.square(block - mean).sum(axis=0)
    std = np.sqrt(squares / (n - 1)) if n > 1 else squares
    std[std == 0] = std.mean()
    std[std == 0] = 1.0  # every column constant: Z is all zeros whatever the divisor
    return mean.astype(np.float32), std.astype(np.float32)


def _propagate_cells_as_features(
    S: sp.csr_matrix,
    n_cells: int,
    load_rows: Callable[[int, int], tuple[np.ndarray, np.ndarray | None]],
    store_rows: Callable[[int, np.ndarray], None],
    n_iter: int,
) -> None:
    """Hard propagation over a gene graph ``S`` (genes are nodes, cells are features).

    Works on chunks of cells, each independent here: ``load_rows(start, stop)``
    gives their starting values (cells x genes) and the entries kept fixed
    (``None``: the non-zeros), ``store_rows(start, block)`` takes the result.
    """
    starts = list(range(0, n_cells, PANEL_WIDTH))

    def load(i: int) -> tuple[np.ndarray, np.ndarray | None]:
        x0, observed = load_rows(starts[i], starts[i] + PANEL_WIDTH)
        return x0.T, None if observed is None else observed.T

    def store(i: int, block: np.ndarray) -> None:
        store_rows(starts[i], block.T)

    propagate_chunks(S, len(starts), load, store, n_iter=n_iter, hard=True, desc="gene-wise propagation")


def propagate_over_genes(
    S: sp.csr_matrix,
    D,
    X,
    mean: np.ndarray,
    std: np.ndarray,
    n_iter: int,
    out: DenseMatrix | PanelFile | None = None,
) -> np.ndarray | Matrix:
    """Steps 2d-e: hard propagation of standardised ``D`` over the signed gene graph ``S``.

    Entries observed in ``X`` keep their standardised value. Returns the
    de-standardised result (``out`` when given, else a new array).
    """
    D, X = as_matrix(D), as_matrix(X)
    target = DenseMatrix(np.empty(D.shape, dtype=np.float32)) if out is None else out

    def standardised(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        return (D.rows(start, stop) - mean) / std, X.rows(start, stop) != 0

    def destandardised(start: int, block: np.ndarray) -> None:
        target.write_rows(start, block * std + mean)

    _propagate_cells_as_features(S, D.shape[0], standardised, destandardised, n_iter)
    return target.array if out is None else target


def _propagate_stage(
    t: _Timer, stage: str, A: sp.csr_matrix, X0: Matrix, p: Options, out: Matrix, *, hard: bool, desc: str,
    chunk: int, blend: tuple[float, Matrix] | None = None,
) -> Matrix:
    with t.stage(stage):
        propagate(A, X0, p.n_iter, hard=hard, beta=p.beta, chunk=chunk, desc=desc, out=out, blend=blend)
    t.work[stage] = int(A.nnz) * X0.shape[1] * p.n_iter
    return out


@dataclass(frozen=True)
class Batches:
    """Batch of every cell (integer codes) and how the cell graphs find neighbours across batches."""

    codes: np.ndarray
    mode: str = "balanced"
    #: The batch of each code, for messages.
    names: tuple | None = None


def _neighbours(M: Matrix, p: Options, batches: Batches | None, desc: str) -> tuple[np.ndarray, np.ndarray]:
    if batches is None:
        return knn_neighbours(M, p.k, knn=p.knn, random_state=p.random_state, desc=desc)
    return batched_neighbours(
        M, p.k, batches.codes, mode=batches.mode, knn=p.knn, random_state=p.random_state, desc=desc
    )


def _knn_stage(
    t: _Timer, stage: str, M: Matrix, p: Options, *, sym: bool, desc: str, batches: Batches | None = None
) -> sp.csr_matrix:
    """A cell graph over the rows of ``M`` (read whole for the exact search, in row blocks for the approximate one)."""
    with t.stage(stage):
        if batches is None:
            return knn_graph(M, p.k, sym=sym, knn=p.knn, random_state=p.random_state, desc=desc)
        return graph_from_neighbours(*_neighbours(M, p, batches, desc), sym=sym)


def _final_knn_stage(
    t: _Timer, stage: str, M: Matrix, p: Options, *, desc: str, batches: Batches | None = None
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The final cell graph (``sym_final``) and the distances to its neighbours."""
    with t.stage(stage):
        indices, values = _neighbours(M, p, batches, desc)
        return graph_from_neighbours(indices, values, sym=p.sym_final), neighbour_distances(indices, values)


def _signed_correlations(indices: np.ndarray, correlations: np.ndarray) -> sp.csr_matrix:
    """The correlations of the edges each gene chose, as a sparse G x G matrix without the self-edges."""
    g, m = indices.shape
    rows = np.repeat(np.arange(g), m)
    keep = indices.ravel() != rows
    C = sp.csr_matrix((correlations.ravel()[keep], (rows[keep], indices.ravel()[keep])), shape=(g, g), dtype=np.float32)
    C.sort_indices()
    return C


def _run_sccr(
    X: Matrix, p: Options, t: _Timer, ws: Workspace, out: Matrix, chunk: int, batches: Batches | None, keep: list | None
) -> Result:
    shape = X.shape
    A1 = _knn_stage(t, "knn_cells_1", X, p, sym=True, desc="cell graph 1", batches=batches)
    D0 = _propagate_stage(t, "hard_fp_1", A1, X, p, ws.new("D0", shape, chunk), hard=True, desc="pre-imputation", chunk=chunk)
    if keep is not None:
        keep.append(A1)
    del A1
    with t.stage("gene_graph"):
        mean, std = standardisation(D0)
        indices, correlations = signed_gene_neighbours(D0, mean, std, p.k_gene)
        S = graph_from_neighbours(indices, correlations, sym=True)
        R = _signed_correlations(indices, correlations)
    with t.stage("gene_fp"):
        C = propagate_over_genes(S, D0, X, mean, std, p.n_iter, out=ws.new("C", shape, chunk))
    t.work["gene_fp"] = int(S.nnz) * shape[0] * p.n_iter
    A2 = _knn_stage(t, "knn_cells_2", C, p, sym=True, desc="cell graph 2", batches=batches)
    ws.free(C)
    # Step 4, fused into the store of each chunk: B = (1 - alpha) * D1 + alpha * D0.
    B = _propagate_stage(
        t, "hard_fp_2", A2, X, p, ws.new("B", shape, chunk), hard=True,
        desc="refined propagation", chunk=chunk, blend=(p.alpha, D0),
    )
    ws.free(D0)
    if keep is not None:
        keep.append(A2)
    del A2
    A3, distances = _final_knn_stage(t, "knn_cells_3", B, p, desc="cell graph 3", batches=batches)
    # Step 6, fused likewise: output = (1 - gamma) * F + gamma * B.
    _propagate_stage(t, "soft_fp", A3, X, p, out, hard=False, desc="denoising", chunk=chunk, blend=(p.gamma, B))
    ws.free(B)
    return Result(out, A3, distances, S, R, t.timings, t.work)


def _run_scfp(
    X: Matrix, p: Options, t: _Timer, ws: Workspace, out: Matrix, chunk: int, batches: Batches | None, keep: list | None
) -> Result:
    A1 = _knn_stage(t, "knn_cells_1", X, p, sym=True, desc="cell graph 1", batches=batches)
    D0 = _propagate_stage(t, "hard_fp_1", A1, X, p, ws.new("D0", X.shape, chunk), hard=True, desc="pre-imputation", chunk=chunk)
    if keep is not None:
        keep.append(A1)
    del A1
    A2, distances = _final_knn_stage(t, "knn_cells_2", D0, p, desc="cell graph 2", batches=batches)
    _propagate_stage(t, "soft_fp", A2, D0, p, out, hard=False, desc="denoising", chunk=chunk)
    ws.free(D0)
    return Result(out, A2, distances, None, None, t.timings, t.work)


def _run_scbfp(
    X: Matrix, p: Options, t: _Timer, ws: Workspace, out: Matrix, chunk: int, batches: Batches | None, keep: list | None
) -> Result:
    with t.stage("gene_graph"):
        source = X.array if isinstance(X, SparseMatrix) else X.to_array()  # genes x cells in memory
        XT = source.T.tocsr() if sp.issparse(source) else np.ascontiguousarray(source.T)
        del source
        Ag = knn_graph(XT, p.k_gene, sym=True, norm="sym", desc="gene graph")
        del XT
    Dg = ws.new("Dg", X.shape, chunk)
    with t.stage("gene_fp"):
        _propagate_cells_as_features(Ag, X.shape[0], lambda a, b: (X.rows(a, b), None), Dg.write_rows, p.n_iter)
    t.work["gene_fp"] = int(Ag.nnz) * X.shape[0] * p.n_iter
    A, distances = _final_knn_stage(t, "knn_cells_1", Dg, p, desc="cell graph", batches=batches)
    _propagate_stage(t, "soft_fp", A, Dg, p, out, hard=False, desc="denoising", chunk=chunk)
    ws.free(Dg)
    return Result(out, A, distances, Ag, None, t.timings, t.work)


_RUNNERS = {"sccr": _run_sccr, "scfp": _run_scfp, "scbfp": _run_scbfp}


def run_stages(
    X, p: Options, *, workspace: Workspace | None = None, out: Matrix | None = None, chunk: int = PANEL_WIDTH,
    genes: GeneSelection | None = None, batches: Batches | None = None,
) -> Result:
    """Impute validated ``X`` (cells x genes, float32: dense, CSR, or a :class:`~.matrix.Matrix`) with ``p.method``.

    Runs inside the current :class:`~.execution.Execution` (threads, bars,
    remote executor). ``workspace`` makes the intermediate matrices (default:
    numpy arrays); ``out`` receives the imputed matrix (default: a new array,
    returned as ``Result.imputed``); ``chunk``: columns per propagation chunk
    (changes no result). ``genes``: the graph genes and the imputed genes
    (ALGORITHM.md, "Graph genes and propagated genes"; ``None``: every gene is both);
    ``batches``: build every cell graph batch by batch.
    """
    t = _Timer()
    start = time.perf_counter()
    X = as_matrix(X)
    ws = Workspace() if workspace is None else workspace
    target = DenseMatrix(np.empty(X.shape, dtype=np.float32)) if out is None else out
    if genes is None or genes.trivial:
        result = _RUNNERS[p.method](X, p, t, ws, target, chunk, batches, None)
    else:
        with t.stage("graph_genes"):
            Xg = graph_columns(X, genes.graph)
        graph_output = ws.new("graph_output", Xg.shape, chunk)
        kept: list[sp.csr_matrix] = []
        result = _RUNNERS[p.method](Xg, p, t, ws, graph_output, chunk, batches, kept)
        del Xg
        graphs = (*kept, result.cell_graph)
        stages = sccr_stages(*graphs, p, chunk) if p.method == "sccr" else scfp_stages(*graphs, p, chunk)
        if p.method == "scbfp":  # no gene rides along (refused in prepare): the graph genes' result and the input
            graphs, stages = (), None
        with t.stage("riding_genes"):
            ride_along(X, genes, graph_output, stages, target, chunk=chunk)
        t.work["riding_genes"] = sum(int(A.nnz) for A in graphs) * genes.n_riding * p.n_iter
        ws.free(graph_output)
        result.propagation_graphs = graphs or None
        result.genes = genes
    result.imputed = target.array if out is None else target
    t.timings["total"] = time.perf_counter() - start
    return result

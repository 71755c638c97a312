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
from .execution import Execution, executing
from .genes import GeneSelection, graph_columns, ride_along, sccr_stages, scfp_stages
from .graph import (
    batched_neighbours,
    graph_from_neighbours,
    knn_graph,
    knn_neighbours,
    neighbour_distances,
    signed_gene_neighbours,
)
from .matrix import PANEL_WIDTH, ROW_BLOCK, DenseMatrix, Matrix, PanelFile, SparseMatrix, Workspace, as_matrix
from .propagation import propagate, propagate_chunks
from .statistics import column_squared_deviations, column_sums

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
    #: The last stage a checkpoint held when the run started (``None``: it ran every stage).
    resumed_after: str | None = None


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
        mean += column_sums(block)
    mean /= n
    squares = np.zeros(g, dtype=np.float64)
    for _, block in D.row_blocks(ROW_BLOCK):
        squares += column_squared_deviations(block, mean)
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
    t: _Timer,
    stage: str,
    A: sp.csr_matrix,
    X0: Matrix,
    p: Options,
    out: Matrix,
    *,
    hard: bool,
    desc: str,
    chunk: int,
    blend: tuple[float, Matrix] | None = None,
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


@dataclass(frozen=True)
class Stage:
    """One stage of a method: ``run`` reads what earlier stages left in ``r.state`` and adds its own result.

    ``keep`` names what the later stages use: the state kept after this stage (the
    rest is freed) and what a checkpoint stores. The last stage returns the :class:`Result`.
    """

    name: str
    run: Callable[[_Run], Result | None]
    keep: tuple[str, ...] = ()


@dataclass
class _Run:
    """What the stages of one run share: the input, options, timer, workspace, output, and the state between stages."""

    X: Matrix
    p: Options
    t: _Timer
    ws: Workspace
    out: Matrix
    chunk: int
    batches: Batches | None = None
    #: With genes riding along: the cell graphs that are not the final one, collected for them.
    kept: list | None = None
    state: dict = field(default_factory=dict)

    def __getitem__(self, name: str):
        return self.state[name]


# scCR (ALGORITHM.md, steps 1-6).


def _sccr_knn_1(r: _Run) -> None:
    r.state["A1"] = _knn_stage(r.t, "knn_cells_1", r.X, r.p, sym=True, desc="cell graph 1", batches=r.batches)
    if r.kept is not None:
        r.kept.append(r.state["A1"])


def _sccr_hard_fp_1(r: _Run) -> None:
    D0 = r.ws.new("D0", r.X.shape, r.chunk)
    r.state["D0"] = _propagate_stage(
        r.t, "hard_fp_1", r["A1"], r.X, r.p, D0, hard=True, desc="pre-imputation", chunk=r.chunk
    )


def _sccr_gene_graph(r: _Run) -> None:
    with r.t.stage("gene_graph"):
        mean, std = standardisation(r["D0"])
        indices, correlations = signed_gene_neighbours(r["D0"], mean, std, r.p.k_gene)
        S = graph_from_neighbours(indices, correlations, sym=True)
        R = _signed_correlations(indices, correlations)
    r.state.update(mean=mean, std=std, S=S, R=R)


def _sccr_gene_fp(r: _Run) -> None:
    with r.t.stage("gene_fp"):
        C = propagate_over_genes(
            r["S"], r["D0"], r.X, r["mean"], r["std"], r.p.n_iter, out=r.ws.new("C", r.X.shape, r.chunk)
        )
    r.t.work["gene_fp"] = int(r["S"].nnz) * r.X.shape[0] * r.p.n_iter
    r.state["C"] = C


def _sccr_knn_2(r: _Run) -> None:
    r.state["A2"] = _knn_stage(r.t, "knn_cells_2", r["C"], r.p, sym=True, desc="cell graph 2", batches=r.batches)
    if r.kept is not None:
        r.kept.append(r.state["A2"])


def _sccr_hard_fp_2(r: _Run) -> None:
    # Step 4, fused into the store of each chunk: B = (1 - alpha) * D1 + alpha * D0.
    r.state["B"] = _propagate_stage(
        r.t,
        "hard_fp_2",
        r["A2"],
        r.X,
        r.p,
        r.ws.new("B", r.X.shape, r.chunk),
        hard=True,
        desc="refined propagation",
        chunk=r.chunk,
        blend=(r.p.alpha, r["D0"]),
    )


def _sccr_knn_3(r: _Run) -> None:
    r.state["A3"], r.state["distances"] = _final_knn_stage(
        r.t, "knn_cells_3", r["B"], r.p, desc="cell graph 3", batches=r.batches
    )


def _sccr_soft_fp(r: _Run) -> Result:
    # Step 6, fused likewise: output = (1 - gamma) * F + gamma * B.
    _propagate_stage(
        r.t, "soft_fp", r["A3"], r.X, r.p, r.out, hard=False, desc="denoising", chunk=r.chunk, blend=(r.p.gamma, r["B"])
    )
    return Result(r.out, r["A3"], r["distances"], r["S"], r["R"], r.t.timings, r.t.work)


def soft_propagate(graph: sp.csr_matrix, X, *, n_iter: int, beta: float, n_jobs: int = 1) -> np.ndarray:
    """``soft(graph, X, n_iter, beta)`` alone, as scCR's step 6 computes it before its blend.

    With the final cell graph ``A3`` and the blend ``B`` of a run (the output of a run with
    ``gamma=1`` is ``B``), ``blend_into(soft_propagate(A3, X, ...), gamma, B)`` is that run's
    output for any ``beta`` and ``gamma``, bit for bit: the same kernel, and the blend's
    arithmetic is :func:`~.propagation.blend_into` in both. :func:`sccr.tl.tune` uses it.
    """
    with executing(Execution(n_jobs)):
        return propagate(graph, X, n_iter, hard=False, beta=beta, desc="denoising")


# scFP: hard FP on the k-NN graph of X, then soft FP on a graph rebuilt from it.


def _scfp_knn_2(r: _Run) -> None:
    r.state["A2"], r.state["distances"] = _final_knn_stage(
        r.t, "knn_cells_2", r["D0"], r.p, desc="cell graph 2", batches=r.batches
    )


def _scfp_soft_fp(r: _Run) -> Result:
    _propagate_stage(r.t, "soft_fp", r["A2"], r["D0"], r.p, r.out, hard=False, desc="denoising", chunk=r.chunk)
    return Result(r.out, r["A2"], r["distances"], None, None, r.t.timings, r.t.work)


# scBFP: hard FP over a gene graph, then soft FP over cells.


def _scbfp_gene_graph(r: _Run) -> None:
    X = r.X
    with r.t.stage("gene_graph"):
        source = X.array if isinstance(X, SparseMatrix) else X.to_array()  # genes x cells in memory
        XT = source.T.tocsr() if sp.issparse(source) else np.ascontiguousarray(source.T)
        del source
        r.state["Ag"] = knn_graph(XT, r.p.k_gene, sym=True, norm="sym", desc="gene graph")
        del XT


def _scbfp_gene_fp(r: _Run) -> None:
    X, Ag = r.X, r["Ag"]
    Dg = r.ws.new("Dg", X.shape, r.chunk)
    with r.t.stage("gene_fp"):
        _propagate_cells_as_features(Ag, X.shape[0], lambda a, b: (X.rows(a, b), None), Dg.write_rows, r.p.n_iter)
    r.t.work["gene_fp"] = int(Ag.nnz) * X.shape[0] * r.p.n_iter
    r.state["Dg"] = Dg


def _scbfp_knn(r: _Run) -> None:
    r.state["A"], r.state["distances"] = _final_knn_stage(
        r.t, "knn_cells_1", r["Dg"], r.p, desc="cell graph", batches=r.batches
    )


def _scbfp_soft_fp(r: _Run) -> Result:
    _propagate_stage(r.t, "soft_fp", r["A"], r["Dg"], r.p, r.out, hard=False, desc="denoising", chunk=r.chunk)
    return Result(r.out, r["A"], r["distances"], r["Ag"], None, r.t.timings, r.t.work)


#: Each method's stages in order, with what each keeps for the later ones.
STAGES: dict[str, tuple[Stage, ...]] = {
    "sccr": (
        Stage("knn_cells_1", _sccr_knn_1, ("A1",)),
        Stage("hard_fp_1", _sccr_hard_fp_1, ("D0",)),
        Stage("gene_graph", _sccr_gene_graph, ("D0", "mean", "std", "S", "R")),
        Stage("gene_fp", _sccr_gene_fp, ("D0", "C", "S", "R")),
        Stage("knn_cells_2", _sccr_knn_2, ("D0", "A2", "S", "R")),
        Stage("hard_fp_2", _sccr_hard_fp_2, ("B", "S", "R")),
        Stage("knn_cells_3", _sccr_knn_3, ("B", "A3", "distances", "S", "R")),
        Stage("soft_fp", _sccr_soft_fp),
    ),
    "scfp": (
        Stage("knn_cells_1", _sccr_knn_1, ("A1",)),
        Stage("hard_fp_1", _sccr_hard_fp_1, ("D0",)),
        Stage("knn_cells_2", _scfp_knn_2, ("D0", "A2", "distances")),
        Stage("soft_fp", _scfp_soft_fp),
    ),
    "scbfp": (
        Stage("gene_graph", _scbfp_gene_graph, ("Ag",)),
        Stage("gene_fp", _scbfp_gene_fp, ("Ag", "Dg")),
        Stage("knn_cells_1", _scbfp_knn, ("Ag", "Dg", "A", "distances")),
        Stage("soft_fp", _scbfp_soft_fp),
    ),
}
#: The N x G matrices among the states (the rest are graphs and column statistics).
MATRIX_STATES = frozenset({"D0", "C", "B", "Dg"})


def stage_names(method: str) -> list[str]:
    return [stage.name for stage in STAGES[method]]


def _drop(r: _Run, keep: tuple[str, ...]) -> None:
    """Free what the later stages do not use (a scratch file is deleted at once)."""
    for name in [name for name in r.state if name not in keep]:
        value = r.state.pop(name)
        if isinstance(value, Matrix):
            r.ws.free(value)


def _run_method(r: _Run, checkpoint=None) -> Result:
    """The stages of ``r.p.method`` in order, from after the checkpoint's last stage, keeping each in it."""
    t, stages, first = r.t, STAGES[r.p.method], 0
    if checkpoint is not None and checkpoint.stage is not None:
        first = stage_names(r.p.method).index(checkpoint.stage) + 1
        with t.stage("resume"):  # reading the kept state back
            r.state = checkpoint.load(r.ws)
        t.timings.update(checkpoint.manifest.get("timings", {}))
        t.work.update(checkpoint.manifest.get("work", {}))
    result = None
    for i, stage in enumerate(stages[first:], start=first):
        result = stage.run(r)
        if i + 1 < len(stages):
            _drop(r, stage.keep)
            if checkpoint is not None:
                with t.stage("checkpoint"):
                    checkpoint.save(
                        stage.name, dict(r.state), {k: v for k, v in t.timings.items() if k != "checkpoint"}, t.work
                    )
    _drop(r, ())
    return result


def run_stages(
    X,
    p: Options,
    *,
    workspace: Workspace | None = None,
    out: Matrix | None = None,
    chunk: int = PANEL_WIDTH,
    genes: GeneSelection | None = None,
    batches: Batches | None = None,
    checkpoint=None,
) -> Result:
    """Impute validated ``X`` (cells x genes, float32: dense, CSR, or a :class:`~.matrix.Matrix`) with ``p.method``.

    Runs inside the current :class:`~.execution.Execution` (threads, bars,
    remote executor). ``workspace`` makes the intermediate matrices (default:
    numpy arrays); ``out`` receives the imputed matrix (default: a new array,
    returned as ``Result.imputed``); ``chunk``: columns per propagation chunk
    (changes no result). ``genes``: the graph genes and the imputed genes
    (ALGORITHM.md, "Graph genes and propagated genes"; ``None``: every gene is both);
    ``batches``: build every cell graph batch by batch. ``checkpoint`` (a
    :class:`~.checkpoint.Checkpoint`, only without riding genes): the run starts after
    its last finished stage, and keeps each stage it finishes there.
    """
    t = _Timer()
    start = time.perf_counter()
    X = as_matrix(X)
    ws = Workspace() if workspace is None else workspace
    target = DenseMatrix(np.empty(X.shape, dtype=np.float32)) if out is None else out
    if genes is None or genes.trivial:
        result = _run_method(_Run(X, p, t, ws, target, chunk, batches), checkpoint)
    else:
        with t.stage("graph_genes"):
            Xg = graph_columns(X, genes.graph)
        graph_output = ws.new("graph_output", Xg.shape, chunk)
        kept: list[sp.csr_matrix] = []
        result = _run_method(_Run(Xg, p, t, ws, graph_output, chunk, batches, kept))
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

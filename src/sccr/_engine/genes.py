"""Gene selection: the genes the graphs are built from, and the other genes that ride along.

ALGORITHM.md, "Graph genes and propagated genes": the three cell graphs and the
signed gene graph are built from the *graph genes* only (scanpy's highly
variable genes, typically); every other *imputed* gene is propagated over the
same three cell graphs, in the same stages, with the same arithmetic, column by
column. Propagation is per column, so a graph gene's output is bitwise the
same whether or not other genes ride along, and a riding gene's output is
exactly those stages run on its column alone.

:func:`ride_along` runs the riding genes in super-panels of columns in the
order of the input, so that the output is written in contiguous column blocks
(the chunks of an .h5ad or .zarr layer) and never held whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._errors import InputError
from .matrix import PANEL_WIDTH, RIDE_ALONG_BYTES, ROW_BLOCK, DenseMatrix, Matrix, PanelFile, SparseMatrix, as_matrix
from .propagation import propagate

#: Above this many graph genes, building the graphs from all genes is warned about (faces' choice).
MANY_GRAPH_GENES = 5000


@dataclass(frozen=True)
class GeneSelection:
    """Which columns of the input build the graphs and which are imputed.

    Attributes
    ----------
    graph
        Sorted column indices of the graph genes (at least ``k_gene + 1`` of them).
    imputed
        Boolean mask over all columns: the imputed genes (the graph genes are always among them).
    """

    graph: np.ndarray
    imputed: np.ndarray

    def __post_init__(self) -> None:
        graph = np.unique(np.asarray(self.graph, dtype=np.int64))
        imputed = np.asarray(self.imputed, dtype=bool).copy()
        imputed[graph] = True
        object.__setattr__(self, "graph", graph)
        object.__setattr__(self, "imputed", imputed)

    @property
    def n_genes(self) -> int:
        return int(self.imputed.size)

    @property
    def n_riding(self) -> int:
        """Imputed genes that are not graph genes."""
        return int(self.imputed.sum()) - int(self.graph.size)

    @property
    def trivial(self) -> bool:
        """Every gene builds the graphs and is imputed: the plain pipeline, unchanged."""
        return self.graph.size == self.imputed.size

    @classmethod
    def from_masks(cls, graph: np.ndarray, imputed: np.ndarray) -> GeneSelection:
        return cls(np.flatnonzero(np.asarray(graph, dtype=bool)), imputed)


def column_variances(M) -> np.ndarray:
    """Variance (ddof=1, float64) of every column of ``M``, over row blocks (any :class:`Matrix`, array or sparse)."""
    M = as_matrix(M)
    n, g = M.shape
    total = np.zeros(g, dtype=np.float64)
    squares = np.zeros(g, dtype=np.float64)
    for _, block in M.row_blocks(ROW_BLOCK):
        if sp.issparse(block):
            block = sp.csr_matrix(block, dtype=np.float64)
            total += np.asarray(block.sum(axis=0)).ravel()
            squares += np.asarray(block.multiply(block).sum(axis=0)).ravel()
        else:
            block = np.asarray(block, dtype=np.float64)
            total += block.sum(axis=0)
            squares += np.square(block).sum(axis=0)
    mean = total / max(n, 1)
    return np.maximum(squares - n * mean**2, 0.0) / max(n - 1, 1)


def top_variance_genes(M, n_top: int) -> np.ndarray:
    """Sorted indices of the ``n_top`` columns of highest variance (ties: lower index first)."""
    variances = column_variances(M)
    order = np.lexsort((np.arange(variances.size), -variances))
    return np.sort(order[:n_top])


class ColumnSubset(Matrix):
    """Columns ``index`` (sorted) of a matrix, read lazily in row blocks or column blocks."""

    def __init__(self, base: Matrix, index: np.ndarray) -> None:
        self.base, self.index = base, np.asarray(index, dtype=np.int64)
        self.shape = (base.shape[0], int(self.index.size))

    def row_blocks(self, rows: int = ROW_BLOCK):
        for start, block in self.base.row_blocks(rows):
            yield start, block[:, self.index]

    def rows(self, start: int, stop: int) -> np.ndarray:
        return self.base.rows(start, stop)[:, self.index]

    def columns(self, start: int, stop: int) -> np.ndarray:
        return take_columns(self.base, self.index[start:stop])


def take_columns(M: Matrix, index: np.ndarray) -> np.ndarray:
    """Columns ``index`` (sorted) of ``M`` as a dense float32 N x len(index) array."""
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0:
        return np.empty((M.shape[0], 0), dtype=np.float32)
    if isinstance(M, DenseMatrix):
        return np.asarray(M.array[:, index], dtype=np.float32)
    if isinstance(M, SparseMatrix):
        M.columns(0, 0)  # makes its CSC copy once
        return M._csc[:, index].toarray()
    width = M.width if isinstance(M, PanelFile) else PANEL_WIDTH
    first = index[0] - index[0] % width
    stop = min(M.shape[1], -(-(int(index[-1]) + 1) // width) * width)  # whole panels
    return M.columns(int(first), stop)[:, index - first]


def graph_columns(X: Matrix, graph: np.ndarray) -> Matrix:
    """The graph genes' columns of the input: a copy for a matrix in memory, a lazy view of a scratch file."""
    if isinstance(X, SparseMatrix):
        subset = X.array[:, graph]
        subset.sort_indices()  # canonical, as the subset itself would be after the input checks
        return SparseMatrix(subset)
    if isinstance(X, DenseMatrix) and isinstance(X.array, np.ndarray):
        return DenseMatrix(np.ascontiguousarray(X.array[:, graph]))
    return ColumnSubset(X, graph)


def ride_along_width(n_cells: int, chunk: int = PANEL_WIDTH) -> int:
    """Columns per super-panel of :func:`ride_along`: five N x w float32 blocks in :data:`RIDE_ALONG_BYTES`."""
    panels = RIDE_ALONG_BYTES // (5 * 4 * max(n_cells, 1) * chunk)
    return chunk * int(min(max(panels, 1), 32))


def ride_along(
    X: Matrix,
    genes: GeneSelection,
    graph_output: Matrix,
    stages,
    out,
    *,
    chunk: int = PANEL_WIDTH,
    width: int | None = None,
) -> None:
    """Write every column of ``out`` (N x all genes), in order, super-panel by super-panel.

    Graph genes come from ``graph_output`` (the pipeline's result over the graph
    genes); riding genes are computed here by ``stages(x0)`` (the method's
    propagations over its kept cell graphs, on a dense N x m block); genes that
    are not imputed keep their input values.
    """
    n, g = X.shape
    width = ride_along_width(n, chunk) if width is None else width
    position = np.full(g, -1, dtype=np.int64)
    position[genes.graph] = np.arange(genes.graph.size)
    for start in range(0, g, width):
        stop = min(g, start + width)
        columns = np.arange(start, stop)
        is_graph = position[start:stop] >= 0
        riding = columns[genes.imputed[start:stop] & ~is_graph]
        kept = columns[~genes.imputed[start:stop]]
        block = np.empty((n, stop - start), dtype=np.float32)
        if riding.size:
            block[:, riding - start] = stages(take_columns(X, riding))
        if is_graph.any():
            block[:, is_graph] = take_columns(graph_output, position[start:stop][is_graph])
        if kept.size:
            block[:, kept - start] = take_columns(X, kept)
        out.write_columns(start, block)


def sccr_stages(A1: sp.csr_matrix, A2: sp.csr_matrix, A3: sp.csr_matrix, p, chunk: int = PANEL_WIDTH):
    """scCR's propagations of a block of columns: hard over A1, hard over A2 with the blend, soft over A3 with the output blend."""

    def stages(x0: np.ndarray) -> np.ndarray:
        d0 = propagate(A1, x0, p.n_iter, hard=True, chunk=chunk, desc="riding genes: pre-imputation")
        b = propagate(
            A2, x0, p.n_iter, hard=True, chunk=chunk, desc="riding genes: refined", blend=(p.alpha, DenseMatrix(d0))
        )
        del d0
        return propagate(
            A3,
            x0,
            p.n_iter,
            hard=False,
            beta=p.beta,
            chunk=chunk,
            desc="riding genes: denoising",
            blend=(p.gamma, DenseMatrix(b)),
        )

    return stages


def scfp_stages(A1: sp.csr_matrix, A2: sp.csr_matrix, p, chunk: int = PANEL_WIDTH):
    """scFP's propagations of a block of columns: hard over A1, then soft over A2 anchored to that result."""

    def stages(x0: np.ndarray) -> np.ndarray:
        d0 = propagate(A1, x0, p.n_iter, hard=True, chunk=chunk, desc="riding genes: pre-imputation")
        return propagate(A2, d0, p.n_iter, hard=False, beta=p.beta, chunk=chunk, desc="riding genes: denoising")

    return stages


def check_selection(genes: GeneSelection, shape: tuple[int, int], method: str, k_gene: int) -> None:
    """Refuse a selection that does not fit the input or the method."""
    if genes.n_genes != shape[1]:
        raise ValueError(f"gene selection covers {genes.n_genes} genes, the matrix has {shape[1]}")
    if method == "scbfp" and genes.n_riding:
        raise InputError(
            "method='scbfp' builds its gene graph over every imputed gene, so no gene can ride along its cell graph; "
            "leave mask_var and n_top_genes unset (its graph genes are then the imputed genes) or use method='sccr'"
        )
    if method != "scfp" and genes.graph.size < k_gene + 1:
        raise InputError(
            f"only {genes.graph.size} graph genes for k_gene={k_gene}; need at least k_gene + 1: "
            "select more genes (mask_var=, n_top_genes=) or lower k_gene"
        )


def check_batches(codes: np.ndarray, n_cells: int, k: int, mode: str, names=None) -> None:
    """Refuse batch codes that do not give every cell its neighbours (``mode``: see :data:`~.graph.BATCH_MODES`)."""
    from .graph import BATCH_MODES

    if mode not in BATCH_MODES:
        raise InputError(f"batch_mode must be one of {', '.join(BATCH_MODES)}; got {mode!r}")
    if codes.shape != (n_cells,):
        raise ValueError(f"{codes.shape} batch codes for {n_cells} cells")
    labels, sizes = np.unique(codes, return_counts=True)
    need = k + 1 if mode == "within" else -(-(k + 1) // labels.size)
    if sizes.min() < need:
        raise InputError(
            f"batch {(names[int(labels[sizes.argmin()])] if names is not None else int(labels[sizes.argmin()]))!r} has only {int(sizes.min())} cells, and batch_mode={mode!r} "
            f"takes {need} neighbours from each batch; merge small batches or lower k"
        )

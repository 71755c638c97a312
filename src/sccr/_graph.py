"""k-nearest-neighbour graphs (ALGORITHM.md, building block 1).

Everything here is blockwise: similarities are computed for a block of rows at a
time and reduced to the top ``k + 1`` entries at once, so no ``n x n`` array is
ever held. Ties in similarity are broken towards the lower node index, which
makes every graph deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import scipy.sparse as sp

from ._executor import current_executor
from ._store import SliceStore, as_store

#: Float32 products of unit vectors are this close to exact (far below for d < 10^5):
#: candidates within it of the k-th similarity are re-ranked on exact values.
CANDIDATE_TOLERANCE = 1e-4
#: At most this many candidates beyond k + 1 per row are re-ranked exactly; with more
#: tied rows than that (mass duplicates), the float32 order picks among the rest.
MAX_EXTRA_CANDIDATES = 256

#: Number of similarities held at once by the blockwise search (32 MiB of float32).
SIMILARITY_BLOCK_ELEMENTS = 1 << 23

#: ``knn="auto"`` uses the approximate search from this many rows on (docs/knn.md: the
#: times cross near 8k rows; 20k keeps the exact graph for data sets of usual size, and
#: the exact search costs under a minute per graph there).
APPROX_MIN_CELLS = 20_000
KNN_METHODS = ("exact", "approx", "auto")


def resolve_knn(knn: str, n_rows: int) -> str:
    """``"exact"`` or ``"approx"``: the search ``knn_graph`` runs for ``knn`` on ``n_rows`` rows."""
    if knn not in KNN_METHODS:
        raise ValueError(f"knn must be one of {KNN_METHODS}, got {knn!r}")
    if knn == "auto":
        return "approx" if n_rows >= APPROX_MIN_CELLS else "exact"
    return knn


def _row_normalised(M: np.ndarray | sp.spmatrix) -> np.ndarray | sp.csr_matrix:
    """Rows scaled to unit L2 norm in float32; all-zero rows stay zero."""
    if sp.issparse(M):
        M = sp.csr_matrix(M, dtype=np.float32, copy=True)
        norms = np.sqrt(np.asarray(M.multiply(M).sum(axis=1), dtype=np.float32).ravel())
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        M.data *= np.repeat(scale, np.diff(M.indptr))
        return M
    M = np.asarray(M, dtype=np.float32)
    norms = np.linalg.norm(M, axis=1)
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return M * scale[:, None]


def similarity_block_rows(n: int) -> int:
    """Rows per block of the ``n x n`` similarity search (every backend uses the same blocks)."""
    return max(1, min(n, SIMILARITY_BLOCK_ELEMENTS // max(n, 1)))


def cosine_block(Mn: np.ndarray | sp.csr_matrix, start: int, stop: int) -> np.ndarray:
    """Float32 cosine similarities of rows ``start..stop`` of row-normalised ``Mn`` to all rows."""
    if sp.issparse(Mn):
        rows = Mn[start:stop].toarray()
        # (n x d sparse) @ (d x b dense): cost scales with the non-zeros of M.
        return np.ascontiguousarray((Mn @ rows.T).T)
    return Mn[start:stop] @ Mn.T


def _cosine_blocks(Mn: np.ndarray | sp.csr_matrix) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, S)``: float32 cosine similarities of a block of rows to all rows."""
    n = Mn.shape[0]
    block = similarity_block_rows(n)
    for start in range(0, n, block):
        yield start, cosine_block(Mn, start, start + block)


def _exact_cosine(M: np.ndarray | sp.csr_matrix) -> Callable[[int, np.ndarray], np.ndarray]:
    """``f(start, cols)``: float64 cosines of rows ``start..start + b`` with candidate rows ``cols``.

    Rows are normalised before the dot product (as in the specification), so
    parallel rows get exactly equal similarities and the index tie-break applies.
    """
    if sp.issparse(M):
        M = sp.csr_matrix(M, dtype=np.float64, copy=True)
        norms = np.sqrt(np.asarray(M.multiply(M).sum(axis=1)).ravel())
    else:
        norms = np.sqrt(np.einsum("ij,ij->i", M, M, dtype=np.float64))
    divisor = np.where(norms > 0, norms, 1.0)  # all-zero rows stay zero
    if sp.issparse(M):
        M.data /= np.repeat(divisor, np.diff(M.indptr))
    step = max(1, SIMILARITY_BLOCK_ELEMENTS // (8 * max(M.shape[1], 1)))

    def unit_rows(index: np.ndarray):
        if sp.issparse(M):
            return M[index]
        return M[index].astype(np.float64) / divisor[index, None]

    def dots(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        left, right = unit_rows(rows), unit_rows(cols)
        if sp.issparse(M):
            return np.asarray(left.multiply(right).sum(axis=1)).ravel()
        return np.einsum("ij,ij->i", left, right)

    def cosine(start: int, cols: np.ndarray) -> np.ndarray:
        b, c = cols.shape
        rows = np.repeat(np.arange(start, start + b), c)
        flat = cols.ravel()
        out = np.concatenate([dots(rows[s : s + step], flat[s : s + step]) for s in range(0, rows.size, step)])
        # Rounded to float32: mathematically equal cosines (parallel or duplicated
        # rows) become bitwise equal whatever the summation order, so the index
        # tie-break decides, not rounding noise.
        return out.reshape(b, c).astype(np.float32)

    return cosine


def _candidates(key: np.ndarray, m: int) -> np.ndarray:
    """Columns of the ``m`` largest keys of every row; at the cut-off, lower columns first."""
    b = key.shape[0]
    kth = -np.partition(-key, m - 1, axis=1)[:, m - 1]
    above = key > kth[:, None]
    need = m - above.sum(axis=1)
    equal = key == kth[:, None]
    keep = above | (equal & (np.cumsum(equal, axis=1) <= need[:, None]))
    return np.nonzero(keep)[1].reshape(b, m)


def top_neighbours(
    blocks: Iterator[tuple[int, np.ndarray]],
    n: int,
    n_neighbours: int,
    *,
    signed: bool = False,
    exact: Callable[[int, np.ndarray], np.ndarray] | None = None,
    margin: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n_neighbours`` entries of every row of a similarity matrix given in row blocks.

    Parameters
    ----------
    blocks
        ``(start, S)`` pairs covering rows ``0..n`` in order; ``S`` is ``b x n``.
    n_neighbours
        How many entries each row keeps (``k + 1`` with the node itself).
    signed
        Rank by absolute value instead of value (the signed gene graph).
    exact
        ``exact(start, cols)`` recomputes the similarities of the candidate
        columns precisely, so the rounding of the block cannot reorder near-ties.
    margin
        Extra candidates taken from each block row before the final ranking.

    Returns
    -------
    indices, values
        ``n x n_neighbours`` arrays, ordered by decreasing rank within each row;
        equal similarities go to the lower column index (signed: positive
        before negative, then the lower column index, which is the order of
        the concatenated ``[Z, -Z]`` graph).
    """
    m = min(n_neighbours, n)
    indices = np.empty((n, m), dtype=np.int64)
    values = np.empty((n, m), dtype=np.float32)
    for start, S in blocks:
        b = S.shape[0]
        indices[start : start + b], values[start : start + b] = block_top(
            start, S, m, signed=signed, exact=exact, margin=margin
        )
    return indices, values


def block_top(
    start: int,
    S: np.ndarray,
    m: int,
    *,
    signed: bool = False,
    exact: Callable[[int, np.ndarray], np.ndarray] | None = None,
    margin: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``m`` entries of the rows ``start..start + b`` given by the ``b x n`` block ``S``.

    One block of :func:`top_neighbours` (same parameters), so that a block can
    be ranked wherever it is computed.
    """
    n = S.shape[1]
    rows = np.arange(S.shape[0])[:, None]
    block_key = np.abs(S) if signed else S
    n_candidates = min(n, m + margin)
    if exact is not None:
        # Every entry within rounding distance of the m-th largest is a
        # candidate, so exact ties (duplicated rows) are all re-ranked.
        # Ties at or below 0 do not matter (such weights are clipped to 0),
        # and at most MAX_EXTRA_CANDIDATES more are taken, which bounds the cost.
        kth = -np.partition(-block_key, m - 1, axis=1)[:, m - 1]
        floor = np.maximum(kth - CANDIDATE_TOLERANCE, np.finfo(np.float32).tiny)
        near = int((block_key >= floor[:, None]).sum(axis=1).max())
        n_candidates = min(n, max(n_candidates, min(near, m + MAX_EXTRA_CANDIDATES)))
    cols = _candidates(block_key, n_candidates)
    sims = exact(start, cols) if exact is not None else S[rows, cols]
    key = np.abs(sims) if signed else sims
    # Ties: lower column first; signed, positive before negative (node h
    # before node G + h in the concatenated graph), then lower column.
    tiebreak = cols + n * (sims < 0) if signed else cols
    order = np.lexsort((tiebreak, -key), axis=1)[:, :m]
    return cols[rows, order], sims[rows, order]


def graph_from_neighbours(
    indices: np.ndarray, values: np.ndarray, *, sym: bool, norm: str = "row"
) -> sp.csr_matrix:
    """Sparse propagation graph from top-k lists (steps 3 to 6 of building block 1).

    Negative values are clipped to 0 unless the graph is signed (then ``values``
    carry the sign and the magnitudes are what is normalised). A self-loop of
    weight 1 is added, the graph is symmetrised if ``sym`` and normalised by rows
    (``norm="row"``, row-stochastic) or symmetrically (``norm="sym"``,
    ``D^-1/2 A D^-1/2``, used by scBFP's gene graph).
    """
    n, m = indices.shape
    rows = np.repeat(np.arange(n), m)
    data = values.ravel().astype(np.float32)
    A = sp.csr_matrix((data, (rows, indices.ravel())), shape=(n, n), dtype=np.float32)
    A = A + sp.identity(n, dtype=np.float32, format="csr")
    if sym:
        A = (A + A.T) * np.float32(0.5)
    A = sp.csr_matrix(A, dtype=np.float32)
    A.eliminate_zeros()
    A.sort_indices()
    degree = np.asarray(abs(A).sum(axis=1), dtype=np.float32).ravel()
    inv = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    if norm == "row":
        A.data *= np.repeat(inv, np.diff(A.indptr))
    elif norm == "sym":
        inv_sqrt = np.sqrt(inv)
        A.data *= np.repeat(inv_sqrt, np.diff(A.indptr)) * inv_sqrt[A.indices]
    else:
        raise ValueError(f"norm must be 'row' or 'sym', got {norm!r}")
    return A


def knn_graph(
    M,
    k: int,
    *,
    sym: bool,
    norm: str = "row",
    knn: str = "exact",
    random_state: int | None = 0,
    n_jobs: int = 1,
) -> sp.csr_matrix:
    """Cosine k-NN graph over the rows of ``M`` (ALGORITHM.md, building block 1).

    ``knn="exact"``: candidates are found with float32 products and ranked on exact
    (float64) cosines. ``knn="approx"``: :func:`sccr._ann.approximate_neighbours`
    (candidates from a projection, scored with the exact cosine; ``random_state``
    and ``n_jobs`` apply to it only); ``M`` may then also be an object read in row
    blocks (``shape`` and ``iter_row_blocks``). ``knn="auto"``: approximate from
    :data:`APPROX_MIN_CELLS` rows on (:func:`resolve_knn`).
    Each row keeps its ``k + 1`` most similar rows (itself included), negative
    similarities become 0, a self-loop of weight 1 is added, the graph is
    symmetrised when ``sym`` and normalised so that every row sums to 1.

    Returns
    -------
    scipy.sparse.csr_matrix
        ``n x n``, float32, with about ``k + 1`` to ``2 (k + 1)`` entries per row.
    """
    if resolve_knn(knn, M.shape[0]) == "approx":
        from ._ann import approximate_neighbours

        indices, values = approximate_neighbours(M, k + 1, random_state=random_state, n_jobs=n_jobs)
        np.maximum(values, 0, out=values)
        return graph_from_neighbours(indices, values, sym=sym, norm=norm)
    if hasattr(M, "iter_row_blocks") and not isinstance(M, np.ndarray) and not sp.issparse(M):
        M = np.concatenate([block for _, block in M.iter_row_blocks(4096)])  # exact: all rows in memory
    if sp.issparse(M):
        M = sp.csr_matrix(M, dtype=np.float32)
    else:
        M = np.ascontiguousarray(M, dtype=np.float32)
    executor = current_executor()
    if executor is not None:  # same blocks and ranking, on the executor's workers
        indices, values = executor.top_neighbours(M, k + 1)
    else:
        indices, values = top_neighbours(
            _cosine_blocks(_row_normalised(M)), M.shape[0], k + 1,
            exact=_exact_cosine(M),
        )
    np.maximum(values, 0, out=values)
    return graph_from_neighbours(indices, values, sym=sym, norm=norm)


def _standardised_gram_blocks(
    D: SliceStore, mean: np.ndarray, scale: np.ndarray, cell_chunk: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield the gene-gene cosine matrix of the standardised columns of ``D`` in row blocks.

    The cosine of two standardised columns is their Pearson correlation; it is
    accumulated over chunks of cells in float64 so that ``D`` is never copied whole.
    """
    n, g = D.shape
    block = max(1, min(g, SIMILARITY_BLOCK_ELEMENTS // (2 * max(g, 1))))
    for start in range(0, g, block):
        stop = min(g, start + block)
        gram = np.zeros((stop - start, g), dtype=np.float64)
        for _, rows in D.iter_row_blocks(cell_chunk):
            Z = ((rows - mean) / scale).astype(np.float64)
            gram += Z[:, start:stop].T @ Z
        yield start, gram


def signed_gene_graph(
    D: np.ndarray | SliceStore, mean: np.ndarray, scale: np.ndarray, k: int, *, cell_chunk: int = 4096
) -> sp.csr_matrix:
    """Signed G x G gene graph equal to the 2G-node graph of scCR step 2c.

    ``knn([Z, -Z]^T, k, sym=True)`` is mirror-symmetric, so it is fully described
    by the signed matrix ``S[g, h] = W[g, h] - W[g, G + h]``: a gene's neighbours
    are the ``k`` genes of largest absolute correlation, with the sign of that
    correlation (associating +, dissociating -). Rows are normalised by the sum
    of absolute weights, which is the row sum of the 2G-node graph.
    """
    D = as_store(D)
    g = D.shape[1]
    # Column norms of Z: diag of the Gram matrix, computed over cell chunks.
    norms = np.zeros(g, dtype=np.float64)
    for _, rows in D.iter_row_blocks(cell_chunk):
        Z = (rows - mean) / scale
        norms += np.einsum("ij,ij->j", Z, Z, dtype=np.float64)
    norms = np.sqrt(norms)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)

    def correlation_blocks() -> Iterator[tuple[int, np.ndarray]]:
        for start, gram in _standardised_gram_blocks(D, mean, scale, cell_chunk):
            corr = gram * inv[start : start + gram.shape[0], None] * inv[None, :]
            yield start, corr.astype(np.float32)

    indices, values = top_neighbours(correlation_blocks(), g, k + 1, signed=True)
    return graph_from_neighbours(indices, values, sym=True)


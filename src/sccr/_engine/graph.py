"""k-nearest-neighbour graphs (ALGORITHM.md, building block 1).

Everything here is blockwise: similarities are computed for a block of rows at a
time and reduced to the top ``k + 1`` entries at once, so no ``n x n`` array is
ever held. Ties in similarity are broken towards the lower node index, which
makes every graph deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from .execution import current
from .matrix import ROW_BLOCK, SIMILARITY_BLOCK_ELEMENTS, Matrix, as_matrix, in_memory
from .statistics import standardised

#: Float32 products of unit vectors are this close to exact (far below for d < 10^5):
#: candidates within it of the k-th similarity are re-ranked on exact values.
CANDIDATE_TOLERANCE = 1e-4
#: At most this many candidates beyond k + 1 per row are re-ranked exactly; with more
#: tied rows than that (mass duplicates), the float32 order picks among the rest.
MAX_EXTRA_CANDIDATES = 256

#: A sparse matrix with at least this share of non-zeros is multiplied in dense chunks of
#: rows: a float32 matrix product (BLAS, all threads) does about 30 times the multiply-adds
#: per second of scipy's single-threaded sparse product (docs/speed.md, roofline).
DENSE_PRODUCT_MIN_DENSITY = 0.02

#: ``knn="auto"`` uses the approximate search from this many rows on (docs/knn.md: the
#: times cross near 8k rows; 20k keeps the exact graph for data sets of usual size, and
#: the exact search costs under a minute per graph there).
APPROX_MIN_CELLS = 20_000


def resolve_knn(knn: str, n_rows: int) -> str:
    """``"exact"`` or ``"approx"``: the search ``knn_graph`` runs for ``knn`` (validated) on ``n_rows`` rows."""
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


def cosine_block(
    Mn: np.ndarray | sp.csr_matrix, start: int, stop: int, first: int = 0, last: int | None = None
) -> np.ndarray:
    """Float32 cosine similarities of rows ``start..stop`` of row-normalised ``Mn`` to rows ``first..last`` (all).

    These only choose the candidates that :class:`ExactCosine` ranks, so how they are
    summed does not change the graph.
    """
    last = Mn.shape[0] if last is None else last
    if not sp.issparse(Mn):
        return Mn[start:stop] @ Mn[first:last].T
    rows = Mn[start:stop].toarray()
    n, d = Mn.shape
    if Mn.nnz < DENSE_PRODUCT_MIN_DENSITY * n * d:
        # (n x d sparse) @ (d x b dense): cost scales with the non-zeros of M.
        return np.ascontiguousarray((Mn[first:last] @ rows.T).T)
    S = np.empty((rows.shape[0], last - first), dtype=np.float32)
    step = rows.shape[0]
    for a in range(first, last, step):
        b = min(last, a + step)
        S[:, a - first : b - first] = rows @ Mn[a:b].toarray().T
    return S


def _in_slices(task, first: int, last: int, n_jobs: int, pool: ThreadPoolExecutor | None = None) -> None:
    """Run ``task(a, b)`` on up to ``n_jobs`` consecutive slices of rows ``first..last``, on threads.

    The threads are ``pool``'s, or those of a pool made for the call; one slice runs here.
    """
    bounds = np.linspace(first, last, max(1, min(n_jobs, last - first)) + 1).astype(int)
    if bounds.size <= 2:
        task(first, last)
    elif pool is not None:
        list(pool.map(task, bounds[:-1], bounds[1:]))
    else:
        with ThreadPoolExecutor(max_workers=bounds.size - 1) as own:
            list(own.map(task, bounds[:-1], bounds[1:]))


class ExactCosine:
    """Exact cosines between rows of ``M`` (float64 products of the float32 rows), to rank a block's candidates.

    Rows are divided by their float64 norms (all-zero rows stay zero) and the result
    is rounded to float32, so mathematically equal cosines (parallel or duplicated
    rows) become equal whatever the summation order, and the index tie-break
    decides, not rounding noise. :meth:`top` runs the kernels of :mod:`.ranking`.
    """

    def __init__(self, M: np.ndarray | sp.csr_matrix) -> None:
        if sp.issparse(M):
            M = sp.csr_matrix(M, dtype=np.float32, copy=True)
            M.sum_duplicates()
            square = sp.csr_matrix((np.square(M.data, dtype=np.float64), M.indices, M.indptr), shape=M.shape)
            squares = np.asarray(square.sum(axis=1)).ravel()
        else:
            M = np.ascontiguousarray(M, dtype=np.float32)
            squares = np.einsum("ij,ij->i", M, M, dtype=np.float64)
        norms = np.sqrt(squares)
        self.M = M
        self.inverse_norms = 1.0 / np.where(norms > 0, norms, 1.0)

    def __call__(self, start: int, cols: np.ndarray) -> np.ndarray:
        """Float32-rounded exact cosines of rows ``start..start + b`` with the ``b x c`` columns ``cols``."""
        b, c = cols.shape
        rows = np.repeat(np.arange(start, start + b), c)
        flat = cols.ravel()
        if sp.issparse(self.M):
            dots = np.asarray(self.M[rows].astype(np.float64).multiply(self.M[flat]).sum(axis=1)).ravel()
        else:
            dots = np.einsum("ij,ij->i", self.M[rows], self.M[flat], dtype=np.float64)
        return (dots * self.inverse_norms[rows] * self.inverse_norms[flat]).reshape(b, c).astype(np.float32)

    def top(self, start: int, S: np.ndarray, m: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top ``m`` of rows ``start..start + b``, whose float32 cosines to every row are ``S`` (``b x n``).

        Slices of rows run on the threads of the current execution.
        """
        from . import ranking

        S = np.ascontiguousarray(S, dtype=np.float32)
        b, n = S.shape
        m = min(m, n)
        cols = np.empty((b, m), dtype=np.int64)
        sims = np.empty((b, m), dtype=np.float32)
        limits = (m, margin, MAX_EXTRA_CANDIDATES, np.float32(CANDIDATE_TOLERANCE))
        M = self.M

        def rank(first: int, last: int) -> None:
            block, out = S[first:last], (cols[first:last], sims[first:last])
            if sp.issparse(M):
                ranking.exact_top_sparse(
                    block, start + first, M.indptr, M.indices, M.data, M.shape[1], self.inverse_norms, *limits, *out
                )
            else:
                ranking.exact_top_dense(block, start + first, M, self.inverse_norms, *limits, *out)

        _in_slices(rank, 0, b, current().n_jobs)
        return cols, sims


#: Rows per tile of the symmetric exact search (:func:`symmetric_top`): the smaller the tiles, the
#: closer the work to half the full product (the tiles on the diagonal are computed whole).
TILE_ROWS = 512


def symmetric_search_bytes(n: int, n_neighbours: int, margin: int = 8) -> int:
    """Bytes :func:`symmetric_top` adds beside its matrix: the per-row buffers, a tile and its transpose."""
    capacity = min(n, n_neighbours + max(margin, MAX_EXTRA_CANDIDATES))
    return n * (2 * capacity * (4 + 4) + 3 * 8) + 2 * 4 * min(n, TILE_ROWS) ** 2


def symmetric_tiles(n: int) -> int:
    """Number of row blocks of the symmetric exact search over ``n`` rows (one progress step each)."""
    return -(-n // min(n, TILE_ROWS)) if n else 0


def symmetric_top(
    M: np.ndarray | sp.csr_matrix, n_neighbours: int, bar, margin: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``n_neighbours`` of every row of ``M`` by cosine, each pair's float32 cosine computed once.

    The neighbours of :func:`top_neighbours` with ``exact=ExactCosine(M)`` over all blocks, in about
    half the multiply-adds: the float32 cosine matrix is symmetric, so only the tiles of its upper
    triangle are computed, and each tile's rows and columns feed bounded per-row buffers
    (:func:`sccr._engine.ranking.absorb`) that keep the best entries a row has seen, columns
    arriving in increasing order; the candidates taken from them and their exact ranking are
    those of the row-block search. A row block is ranked as soon as its last tile is in, and
    ``bar`` advances once per row block. Memory: ``16 (k + 1 + 256)`` bytes per row and one tile.
    """
    from . import ranking

    exact = ExactCosine(M)
    Mn = _row_normalised(M)
    n = Mn.shape[0]
    m = min(n_neighbours, n)
    capacity = min(n, m + max(margin, MAX_EXTRA_CANDIDATES))
    values = np.empty((n, 2 * capacity), dtype=np.float32)
    columns = np.empty((n, 2 * capacity), dtype=np.int32)
    size = np.zeros(n, dtype=np.int64)
    low = np.full(n, -np.inf, dtype=np.float32)
    next_bound = np.zeros(n, dtype=np.int64)
    indices = np.empty((n, m), dtype=np.int64)
    sims = np.empty((n, m), dtype=np.float32)
    limits = (m, margin, MAX_EXTRA_CANDIDATES, np.float32(CANDIDATE_TOLERANCE))
    buffers = (capacity, values, columns, size, low, next_bound, n, m, margin, np.float32(CANDIDATE_TOLERANCE))
    n_jobs = current().n_jobs

    def rank(first: int, last: int) -> None:
        out = (indices[first:last], sims[first:last])
        if sp.issparse(exact.M):
            A = exact.M
            ranking.rank_buffered_sparse(
                first,
                last,
                n,
                values,
                columns,
                size,
                A.indptr,
                A.indices,
                A.data,
                A.shape[1],
                exact.inverse_norms,
                *limits,
                *out,
            )
        else:
            ranking.rank_buffered_dense(
                first, last, n, values, columns, size, exact.M, exact.inverse_norms, *limits, *out
            )

    # Every step, products included, runs on this pool's threads with BLAS on one thread each: a
    # multi-threaded BLAS call between the kernels would leave BLAS threads spinning for the CPU
    # the kernels need (on 2 cores the search took about 1.3x as long).
    with ThreadPoolExecutor(max_workers=n_jobs) as pool, threadpool_limits(limits=1, user_api="blas"):

        def tile(row0: int, row1: int, col0: int, col1: int) -> np.ndarray:
            """The float32 cosines of rows ``row0..row1`` to rows ``col0..col1``, row slices on the threads."""
            T = np.empty((row1 - row0, col1 - col0), dtype=np.float32)

            def part(a: int, b: int) -> None:
                T[a:b] = cosine_block(Mn, row0 + a, row0 + b, col0, col1)

            _in_slices(part, 0, row1 - row0, n_jobs, pool)
            return T

        def feed(T: np.ndarray, row0: int, col0: int) -> None:
            """Rows ``row0...`` of the cosine matrix, columns ``col0...``, into their rows' buffers."""
            _in_slices(lambda a, b: ranking.absorb(T, row0, col0, a, b, *buffers), 0, T.shape[0], n_jobs, pool)

        step = min(n, TILE_ROWS)
        for start in range(0, n, step):
            stop = min(n, start + step)
            for first in range(start, n, step):
                T = tile(start, stop, first, min(n, first + step))
                feed(T, start, first)
                if first > start:
                    feed(np.ascontiguousarray(T.T), first, start)
            _in_slices(rank, start, stop, n_jobs, pool)
            bar.update()
    return indices, sims


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
    exact: ExactCosine | None = None,
    margin: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n_neighbours`` entries of every row of a similarity matrix given in row blocks.

    Parameters
    ----------
    blocks
        ``(start, S)`` pairs covering rows ``0..n`` in order; ``S`` is ``b x n``.
    n_neighbours
        How many entries each row keeps (``k + 1`` with the node itself).
    exact
        Recomputes the similarities of the candidate columns precisely, so the
        rounding of the block cannot reorder near-ties.
    margin
        Extra candidates taken from each block row before the final ranking.

    Returns
    -------
    indices, values
        ``n x n_neighbours`` arrays, in decreasing similarity within each row;
        equal similarities go to the lower column index.
    """
    m = min(n_neighbours, n)
    indices = np.empty((n, m), dtype=np.int64)
    values = np.empty((n, m), dtype=np.float32)
    for start, S in blocks:
        b = S.shape[0]
        indices[start : start + b], values[start : start + b] = block_top(start, S, m, exact=exact, margin=margin)
    return indices, values


def block_top(
    start: int,
    S: np.ndarray,
    m: int,
    *,
    exact: ExactCosine | None = None,
    margin: int = 8,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``m`` entries of the rows ``start..start + b`` given by the ``b x n`` block ``S``.

    One block of :func:`top_neighbours` (same parameters), so that a block can
    be ranked wherever it is computed. With ``exact``, every entry within rounding
    distance (:data:`CANDIDATE_TOLERANCE`) of a row's ``m``-th largest is a candidate,
    so exact ties (duplicated rows) are all re-ranked; at most
    :data:`MAX_EXTRA_CANDIDATES` more than ``m`` are taken, which bounds the cost.
    """
    if exact is not None:
        return exact.top(start, S, m, margin)
    n = S.shape[1]
    rows = np.arange(S.shape[0])[:, None]
    cols = _candidates(S, min(n, m + margin))
    sims = S[rows, cols]
    order = np.lexsort((cols, -sims), axis=1)[:, :m]
    return cols[rows, order], sims[rows, order]


def graph_from_neighbours(indices: np.ndarray, values: np.ndarray, *, sym: bool, norm: str = "row") -> sp.csr_matrix:
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
    desc: str = "neighbour search",
) -> sp.csr_matrix:
    """Cosine k-NN graph over the rows of ``M`` (ALGORITHM.md, building block 1).

    The neighbours are those of :func:`knn_neighbours` (same ``M``, ``k``, ``knn``,
    ``random_state``, ``desc``). Each row keeps its ``k + 1`` most similar rows
    (itself included), negative similarities become 0, a self-loop of weight 1 is
    added, the graph is symmetrised when ``sym`` and normalised so that every row
    sums to 1 (``norm="row"``; ``"sym"``: symmetric normalisation).

    Returns
    -------
    scipy.sparse.csr_matrix
        ``n x n``, float32, with about ``k + 1`` to ``2 (k + 1)`` entries per row.
    """
    indices, values = knn_neighbours(M, k, knn=knn, random_state=random_state, desc=desc)
    return graph_from_neighbours(indices, values, sym=sym, norm=norm)


def knn_neighbours(
    M, k: int, *, knn: str = "exact", random_state: int | None = 0, desc: str = "neighbour search"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k + 1`` most cosine-similar rows of every row of ``M`` (itself included), similarities clipped at 0.

    ``knn="exact"``: candidates are found with float32 products and ranked on exact
    (float64) cosines. ``knn="approx"``: :func:`sccr._engine.ann.approximate_neighbours`
    (candidates from a projection, scored with the exact cosine; ``random_state``
    applies to it only). ``knn="auto"``: approximate from :data:`APPROX_MIN_CELLS`
    rows on (:func:`resolve_knn`). ``M``: an array, a sparse matrix or a
    :class:`~sccr._engine.matrix.Matrix` (the exact search reads it into memory).
    Threads, the progress bar (``desc``) and a remote executor come from
    :func:`sccr._engine.execution.current`.

    Returns
    -------
    indices, values
        ``n x (k + 1)`` int64 and float32, by decreasing similarity (ties: lower index first).
    """
    if resolve_knn(knn, M.shape[0]) == "approx":
        from .ann import approximate_neighbours

        indices, values = approximate_neighbours(M, k + 1, random_state=random_state, desc=desc)
    else:
        indices, values = exact_neighbours(M, k + 1, desc=desc)
    np.maximum(values, 0, out=values)
    return indices, values


def exact_neighbours(M, n_neighbours: int, *, desc: str = "neighbour search") -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine top ``n_neighbours`` of every row of ``M`` (read into memory), similarities not clipped.

    Locally :func:`symmetric_top`; with a remote executor, its workers rank independent row
    blocks (:func:`block_top`), which gives the same neighbours. The progress bar (``desc``),
    threads and executor come from :func:`sccr._engine.execution.current`.
    """
    execution = current()
    M = in_memory(M)
    M = sp.csr_matrix(M, dtype=np.float32) if sp.issparse(M) else np.ascontiguousarray(M, dtype=np.float32)
    n = M.shape[0]
    if execution.remote is not None:
        n_blocks = -(-n // similarity_block_rows(n))
        with execution.bar(desc, n_blocks) as bar:
            indices, values = execution.remote.top_neighbours(M, n_neighbours)
            bar.update(n_blocks)
        return indices, values
    with execution.bar(desc, symmetric_tiles(n)) as bar:
        return symmetric_top(M, n_neighbours, bar)


def neighbour_distances(indices: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
    """Cosine distances (``1 - similarity``) from every row to its neighbours, itself excluded (scanpy's ``distances``)."""
    n, m = indices.shape
    rows = np.repeat(np.arange(n), m)
    keep = indices.ravel() != rows
    distance = np.maximum(1.0 - values.ravel()[keep], 0.0).astype(np.float32)
    # An explicit zero would vanish from the sparse matrix: a duplicate at distance 0 keeps the smallest positive float.
    distance[distance == 0] = np.finfo(np.float32).tiny
    D = sp.csr_matrix((distance, (rows[keep], indices.ravel()[keep])), shape=(n, n), dtype=np.float32)
    D.sort_indices()
    return D


def _standardised_gram_blocks(
    D: Matrix, mean: np.ndarray, scale: np.ndarray, cell_chunk: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield the Gram matrix of the standardised columns ``Z`` of ``D`` in row blocks, and the column norms of ``Z``.

    Accumulated over chunks of cells in float64 so that ``D`` is never copied whole;
    the norms (float64, every column) come with the first block, from the same pass over ``D``.
    """
    n, g = D.shape
    block = gene_block_rows(g)
    squares = np.zeros(g, dtype=np.float64)
    for start in range(0, g, block):
        stop = min(g, start + block)
        gram = np.zeros((stop - start, g), dtype=np.float64)
        for _, rows in D.row_blocks(cell_chunk):
            Z, chunk_squares = standardised(rows, mean, scale)
            if start == 0:
                squares += chunk_squares
            gram += Z[:, start:stop].T @ Z
        yield start, gram, np.sqrt(squares)


def gene_block_rows(n_genes: int) -> int:
    """Genes per block of the gene-gene correlations."""
    return max(1, min(n_genes, SIMILARITY_BLOCK_ELEMENTS // (2 * max(n_genes, 1))))


def signed_gene_graph(D, mean: np.ndarray, scale: np.ndarray, k: int, *, cell_chunk: int = ROW_BLOCK) -> sp.csr_matrix:
    """Signed G x G gene graph equal to the 2G-node graph of scCR step 2c.

    ``knn([Z, -Z]^T, k, sym=True)`` is mirror-symmetric, so it is fully described
    by the signed matrix ``S[g, h] = W[g, h] - W[g, G + h]``: a gene's neighbours
    are the ``k`` genes of largest absolute correlation, with the sign of that
    correlation (associating +, dissociating -). Rows are normalised by the sum
    of absolute weights, which is the row sum of the 2G-node graph.
    """
    indices, correlations = signed_gene_neighbours(D, mean, scale, k, cell_chunk=cell_chunk)
    return graph_from_neighbours(indices, correlations, sym=True)


def signed_gene_neighbours(
    D, mean: np.ndarray, scale: np.ndarray, k: int, *, cell_chunk: int = ROW_BLOCK, margin: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Each gene's ``k + 1`` partners of largest absolute Pearson correlation over the columns of ``D`` (itself first).

    Returns ``(indices, correlations)`` (float32), ``G x (k + 1)``, in decreasing ``|r|``; equal ``|r|``
    go positive before negative, then to the lower gene (:func:`~.ranking.signed_top`, with
    ``margin`` extra candidates per gene). :func:`graph_from_neighbours` turns them into the
    signed gene graph.
    """
    from .ranking import signed_top

    D = as_matrix(D)
    g = D.shape[1]
    m = min(k + 1, g)
    indices = np.empty((g, m), dtype=np.int64)
    correlations = np.empty((g, m), dtype=np.float32)
    with current().bar("gene graph", -(-g // gene_block_rows(g))) as bar:
        for start, gram, norms in _standardised_gram_blocks(D, mean, scale, cell_chunk):
            inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
            stop = start + gram.shape[0]
            signed_top(gram, inv[start:stop], inv, m, margin, indices[start:stop], correlations[start:stop])
            bar.update()
    return indices, correlations


#: How a cell graph finds neighbours across batches (``batch_key=``): ``"balanced"``, about
#: (k + 1) / B from each of the B batches (the BBKNN idea); ``"within"``, all k + 1 from the cell's own batch.
BATCH_MODES = ("balanced", "within")


def _cross_top(Qn, Rn, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` rows of row-normalised ``Rn`` most cosine-similar to each row of ``Qn`` (float32, ties: lower index)."""
    nq, nr = Qn.shape[0], Rn.shape[0]
    m = min(m, nr)
    indices = np.empty((nq, m), dtype=np.int64)
    values = np.empty((nq, m), dtype=np.float32)
    step = similarity_block_rows(nr)
    RnT = Rn.T.tocsr() if sp.issparse(Rn) else Rn.T
    for start in range(0, nq, step):
        S = Qn[start : start + step] @ RnT
        S = S.toarray() if sp.issparse(S) else np.asarray(S)
        S = S.astype(np.float32, copy=False)
        indices[start : start + step], values[start : start + step] = block_top(0, S, m)
    return indices, values


def batched_neighbours(
    M,
    k: int,
    batches: np.ndarray,
    *,
    mode: str = "balanced",
    knn: str = "exact",
    random_state: int | None = 0,
    desc: str = "neighbour search",
) -> tuple[np.ndarray, np.ndarray]:
    """Neighbours of every row of ``M`` found batch by batch (``batches``: an integer code per row).

    ``"within"``: each row's ``k + 1`` neighbours (itself included) by :func:`knn_neighbours`
    among the rows of its own batch. ``"balanced"``: ``ceil((k + 1) / B)`` from each of the
    ``B`` batches, its own batch (itself included) by :func:`knn_neighbours`, the others by an
    exact float32 cosine search of that batch. Similarities are clipped at 0, as in :func:`knn_neighbours`.
    """
    M = in_memory(M)
    M = sp.csr_matrix(M, dtype=np.float32) if sp.issparse(M) else np.ascontiguousarray(M, dtype=np.float32)
    labels = np.unique(batches)
    members = [np.flatnonzero(batches == b) for b in labels]
    per_batch = k + 1 if mode == "within" else -(-(k + 1) // len(labels))
    n = M.shape[0]
    width = per_batch if mode == "within" else per_batch * len(labels)
    indices = np.zeros((n, width), dtype=np.int64)
    values = np.zeros((n, width), dtype=np.float32)
    normalised = [_row_normalised(M[rows]) for rows in members] if mode == "balanced" else None
    for a, rows in enumerate(members):
        own_i, own_v = knn_neighbours(
            M[rows], per_batch - 1, knn=knn, random_state=random_state, desc=f"{desc} (batch {a + 1})"
        )
        parts_i, parts_v = [rows[own_i]], [own_v]
        if mode == "balanced":
            for b, other in enumerate(members):
                if b != a:
                    i, v = _cross_top(normalised[a], normalised[b], per_batch)
                    parts_i.append(other[i])
                    parts_v.append(np.maximum(v, 0))
        indices[rows], values[rows] = np.hstack(parts_i), np.hstack(parts_v)
    return indices, values

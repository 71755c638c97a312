"""Approximate cosine k-NN for large numbers of rows (``knn="approx"``, docs/knn.md).

The exact search (:mod:`sccr._engine.graph`) costs ``O(N^2 G)``; this one costs about
``O(N G (d + c))`` and never holds a dense ``N x G`` matrix. It reads the matrix
in row blocks, in :data:`N_PASSES_PCA` + (1 + :data:`N_REFINE`) x ``ceil(G / w)``
sequential passes (``w``: columns that fit in :data:`SLICE_BYTES`; a matrix held
in memory is not copied):

1. **Projection.** Uncentred truncated SVD of the row-normalised matrix to
   :data:`N_COMPONENTS` dimensions. The basis is fitted (randomized subspace
   iteration) on :data:`PCA_SAMPLE_ROWS` rows drawn at random in a first pass;
   a second pass projects every row on it.
2. **Candidates.** The projected rows are split into clusters of about
   :data:`CLUSTER_SIZE` rows (k-means on a sample; clusters of more than
   :data:`MAX_CLUSTER_FACTOR` times that are split again); every cluster is searched by
   brute force (one matrix product) against the rows of its :data:`N_PROBE`
   nearest clusters, ranked by the inner product of the projections (the part of
   the cosine that the projection keeps). Each row keeps :data:`N_CANDIDATES`.
3. **Exact scoring.** Every candidate pair is scored with the exact cosine in
   the full ``G`` dimensions (float64 sums of float32 entries over the
   normalised rows, rounded to float32, as in the exact search). A pair listed
   both ways round (a third of the first candidates on resampled cells) is summed
   once: the sum is the same bit for bit in either order of its rows.
4. **Refinement.** :data:`N_REFINE` round(s) of NN-descent: a row's new
   candidates are the current neighbours of its neighbours and the rows that
   have it as a neighbour; they are scored exactly as in step 3.

The projection only proposes candidates: every returned similarity is the exact
cosine in the full space (within float32 rounding), so the weights of the graph
are those the exact search gives for the same pairs, and each row's list is the
exact top of the candidates it was offered. Rows come out ranked by decreasing
similarity, ties to the lower row index, as :func:`sccr._engine.graph.top_neighbours`.

Determinism: random numbers come from ``random_state``; the exact scores are
computed pair by pair in a fixed order (independent of threads); the projection
and the candidate search use BLAS products limited to ``n_jobs`` threads, so the
result is reproducible for a given ``random_state`` and ``n_jobs``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from numba import get_num_threads, njit, prange
from threadpoolctl import threadpool_limits

from .execution import current
from .matrix import ROW_BLOCK, SLICE_BYTES, DenseMatrix, Matrix, SparseMatrix, as_matrix, unsigned_indices

#: Dimension of the projection that proposes candidates.
N_COMPONENTS = 192
#: Rows drawn (first pass) to fit the projection basis.
PCA_SAMPLE_ROWS = 50_000
#: Extra sketch columns and subspace iterations of the randomized SVD of the sample.
OVERSAMPLING = 16
N_POWER_ITERATIONS = 3
#: Sequential passes over the rows for the projection (sample + norms, then project).
N_PASSES_PCA = 2
#: Target number of rows per cluster of the candidate search.
CLUSTER_SIZE = 1000
#: Clusters searched for the rows of a cluster (its own and the nearest others).
N_PROBE = 8
#: Clusters of more than this many times ``CLUSTER_SIZE`` rows are split by k-means on
#: their own rows (dense regions, e.g. many cells of one type, make clusters of 10x the target).
MAX_CLUSTER_FACTOR = 2
#: Candidates per row proposed by the projection (before exact scoring).
N_CANDIDATES = 48
#: Rounds of neighbour-of-neighbour refinement with exact scores.
N_REFINE = 2
#: Columns summed together (float64) in the dense scoring kernel; slices are multiples of it.
TILE = 256
#: k-means: rows sampled per cluster to fit the centroids, and iterations.
KMEANS_SAMPLE_PER_CLUSTER = 32
KMEANS_ITERATIONS = 10

#: Seconds spent in each stage by the last call (for the benchmarks).
last_timings: dict[str, float] = {}


def _blocks(source: Matrix) -> Iterator[tuple[int, np.ndarray | sp.csr_matrix]]:
    """One pass over ``source`` in row blocks, checked to be consecutive and complete."""
    it = source.row_blocks(ROW_BLOCK)
    n, g = source.shape
    expected = 0
    for start, block in it:
        if start != expected or block.ndim != 2 or block.shape[1] != g:
            raise ValueError(
                f"row_blocks must yield consecutive blocks of {g} columns from row 0: "
                f"expected start {expected}, got {start} with shape {block.shape}"
            )
        if not sp.issparse(block):
            block = np.asarray(block, dtype=np.float32)
        yield start, block
        expected = start + block.shape[0]
    if expected != n:
        raise ValueError(f"row_blocks covered {expected} rows, the matrix has {n}")


def _row_norms(block) -> np.ndarray:
    """Float64 L2 norms of the rows of a block."""
    if sp.issparse(block):
        return np.sqrt(np.asarray(block.multiply(block).sum(axis=1), dtype=np.float64).ravel())
    return np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))


def _normalised(block, inv: np.ndarray):
    """Rows of ``block`` times ``inv`` (float32)."""
    if sp.issparse(block):
        return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ block, dtype=np.float32)
    return block * inv.astype(np.float32)[:, None]


def _inverse(norms: np.ndarray) -> np.ndarray:
    return np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)


def fit_basis(sample, n_components: int, rng: np.random.Generator) -> np.ndarray:
    """Top right singular vectors (``G x d`` float32) of ``sample`` (rows already normalised).

    Randomized subspace iteration (Halko et al. 2011, algorithm 4.4) with a
    Rayleigh-Ritz step; the sample is in memory (dense or sparse).
    """
    n, g = sample.shape
    d = max(1, min(n_components, g, n))
    width = min(g, n, d + OVERSAMPLING)
    # Multi-threaded OpenBLAS takes seconds on these small QRs (60x slower measured):
    # the factorisations run on one thread, the products on n_jobs.
    with threadpool_limits(limits=1, user_api="blas"):
        Q = np.linalg.qr(rng.standard_normal((g, width)))[0]
    for _ in range(N_POWER_ITERATIONS):
        Z = np.asarray(sample.T @ np.asarray(sample @ Q.astype(np.float32)), dtype=np.float64)
        with threadpool_limits(limits=1, user_api="blas"):
            Q = np.linalg.qr(Z)[0]
    Y = np.asarray(sample @ Q.astype(np.float32), dtype=np.float64)
    with threadpool_limits(limits=1, user_api="blas"):
        w, U = np.linalg.eigh(Y.T @ Y)
    order = np.argsort(-w, kind="stable")[:d]
    return np.ascontiguousarray((Q @ U[:, order]).astype(np.float32))


def project(source: Matrix, n_components: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Projections ``Mn V`` (``N x d`` float32) and float64 row norms, in two passes over the rows.

    ``Mn`` is the row-normalised matrix and ``V`` its top right singular vectors,
    fitted on :data:`PCA_SAMPLE_ROWS` rows drawn without replacement.
    """
    n, g = source.shape
    picked = np.sort(rng.choice(n, size=min(n, PCA_SAMPLE_ROWS), replace=False))
    norms = np.empty(n, dtype=np.float64)
    parts = []  # sparse rows of the sample; dense ones are written into place (no second copy)
    sample = None
    for start, block in _blocks(source):
        stop = start + block.shape[0]
        norms[start:stop] = _row_norms(block)
        lo, hi = np.searchsorted(picked, [start, stop])
        if hi > lo:
            rows = _normalised(block[picked[lo:hi] - start], _inverse(norms[picked[lo:hi]]))
            if sp.issparse(rows):
                parts.append(rows)
            else:
                if sample is None:
                    sample = np.empty((picked.size, g), dtype=np.float32)
                sample[lo:hi] = rows
    if parts:
        sample = sp.vstack(parts, format="csr")
    del parts
    V = fit_basis(sample, n_components, rng)
    del sample
    P = np.empty((n, V.shape[1]), dtype=np.float32)
    inv = _inverse(norms)
    for start, block in _blocks(source):
        stop = start + block.shape[0]
        P[start:stop] = np.asarray(_normalised(block, inv[start:stop]) @ V)
    return P, norms


def _kmeans(P: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Centroids of Lloyd's k-means (Euclidean) fitted on a sample of the rows of ``P``."""
    n = P.shape[0]
    sample = P[np.sort(rng.choice(n, size=min(n, n_clusters * KMEANS_SAMPLE_PER_CLUSTER), replace=False))]
    centroids = sample[np.sort(rng.choice(sample.shape[0], size=n_clusters, replace=False))].copy()
    for _ in range(KMEANS_ITERATIONS):
        labels = _assign(sample, centroids)
        order = np.argsort(labels, kind="stable")
        counts = np.bincount(labels, minlength=n_clusters)
        sums = np.add.reduceat(sample[order].astype(np.float64), np.r_[0, np.cumsum(counts)[:-1]], axis=0)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return centroids


def _assign(P: np.ndarray, centroids: np.ndarray, block: int = 4 * ROW_BLOCK) -> np.ndarray:
    """Index of the nearest centroid of every row of ``P``."""
    c2 = np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty(P.shape[0], dtype=np.int64)
    for s in range(0, P.shape[0], block):
        out[s : s + block] = np.argmin(c2[None, :] - 2 * (P[s : s + block] @ centroids.T), axis=1)
    return out


def _split_large_clusters(
    P: np.ndarray, labels: np.ndarray, centroids: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split every cluster of more than ``MAX_CLUSTER_FACTOR * CLUSTER_SIZE`` rows, again until none is left.

    A cluster is split into ``round(size / CLUSTER_SIZE)`` parts by :func:`_kmeans`
    on its rows (a part that is still too large is split in turn; rows that k-means
    cannot separate stay together). Returns the labels and centroids of the
    non-empty clusters; clusters left whole keep their label order and centroid.
    """
    labels = labels.copy()
    centroids = list(centroids)
    limit = MAX_CLUSTER_FACTOR * CLUSTER_SIZE
    pending = [int(c) for c in np.flatnonzero(np.bincount(labels, minlength=len(centroids)) > limit)]
    while pending:
        cluster = pending.pop()
        rows = np.flatnonzero(labels == cluster)
        sub_centroids = _kmeans(P[rows], int(round(rows.size / CLUSTER_SIZE)), rng)
        sub = _assign(P[rows], sub_centroids)
        if np.all(sub == sub[0]):
            continue
        ids = np.r_[cluster, len(centroids) + np.arange(len(sub_centroids) - 1)]
        labels[rows] = ids[sub]
        centroids[cluster] = sub_centroids[0]
        centroids.extend(sub_centroids[1:])
        pending += [int(ids[j]) for j in np.flatnonzero(np.bincount(sub, minlength=len(ids)) > limit)]
    used, labels = np.unique(labels, return_inverse=True)
    return labels.astype(np.int64), np.asarray(centroids, dtype=np.float32)[used]


@njit(cache=True)
def _sampled_cut(row, stride, r):  # pragma: no cover - numba
    """The ``r``-th largest of ``row[::stride]``, by insertion into a sorted buffer of ``r``."""
    top = np.full(r, -np.inf, dtype=row.dtype)  # descending
    for q in range(0, row.size, stride):
        v = row[q]
        if v > top[r - 1]:
            j = r - 1
            while j > 0 and top[j - 1] < v:
                top[j] = top[j - 1]
                j -= 1
            top[j] = v
    return top[r - 1]


@njit(cache=True)
def _select_row(row, c, out):  # pragma: no cover - numba
    """Columns of the ``c`` largest entries of ``row``: the larger ones, then those tied at the cut-off (lower first).

    A threshold from a strided sample (its ``2c/stride + 2``-th largest) keeps about
    ``2c`` entries; the exact cut-off is then found among them. If fewer than ``c``
    pass (unlucky sample), the whole row is partitioned.
    """
    p = row.size
    stride = 8
    cut = -np.inf
    if p >= 16 * c:
        cut = _sampled_cut(row, stride, min(-(-p // stride), 2 * c // stride + 2))
    buf = np.empty(p, dtype=np.int64)
    k = 0
    for q in range(p):  # branch-free: every column is written, only those that pass are kept
        buf[k] = q
        k += row[q] >= cut
    if k < c:  # the sample was unlucky: every entry is a candidate
        k = p
        for q in range(p):
            buf[q] = q
    vals = np.empty(k, dtype=row.dtype)
    for t in range(k):
        vals[t] = -row[buf[t]]
    kth = np.partition(vals, c - 1)[c - 1]
    w = 0
    for t in range(k):
        if vals[t] < kth:
            out[w] = buf[t]
            w += 1
    for t in range(k):
        if w >= c:
            break
        if vals[t] == kth:
            out[w] = buf[t]
            w += 1


@njit(nogil=True, cache=True)
def _select_top(S, c, out):  # pragma: no cover - numba
    """Columns of the ``c`` largest entries of every row of ``S`` (at the cut-off, lower columns)."""
    for r in range(S.shape[0]):
        _select_row(S[r], c, out[r])


def propose_candidates(P: np.ndarray, n_candidates: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Candidates by largest inner product of projections within nearby clusters.

    Returns ``(cand, labels)``: ``N x min(n_candidates, N)`` row indices and the
    cluster of every row.
    """
    n = P.shape[0]
    c = min(n_candidates, n)
    n_clusters = max(1, int(round(n / CLUSTER_SIZE)))
    if n_clusters == 1:
        labels = np.zeros(n, dtype=np.int64)
        probe = np.zeros((1, 1), dtype=np.int64)
    else:
        centroids = _kmeans(P, n_clusters, rng)
        labels, centroids = _split_large_clusters(P, _assign(P, centroids), centroids, rng)
        n_clusters = centroids.shape[0]
        c2 = np.einsum("ij,ij->i", centroids, centroids)
        dist = c2[:, None] + c2[None, :] - 2 * (centroids @ centroids.T)
        dist[np.arange(n_clusters), np.arange(n_clusters)] = -np.inf  # a cluster probes itself first
        probe = np.argsort(dist, axis=1, kind="stable")[:, : min(N_PROBE, n_clusters)]
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(probe) + 1))
    members = [order[bounds[i] : bounds[i + 1]] for i in range(len(probe))]
    out = np.empty((n, c), dtype=np.int64)

    def search(cl: int) -> None:
        rows = members[cl]
        if rows.size == 0:
            return
        pool = np.concatenate([members[j] for j in probe[cl]])
        if pool.size < c:  # tiny pools: all rows
            pool = np.arange(n)
        Pp = P[pool]
        step = max(1, (1 << 22) // pool.size)
        for s in range(0, rows.size, step):
            q = rows[s : s + step]
            top = np.empty((q.size, c), dtype=np.int64)
            _select_top(P[q] @ Pp.T, c, top)
            out[q] = pool[top]

    # One cluster per thread, each with its own single-threaded products: multi-threaded BLAS
    # alternating with the selection would leave threads spinning for each other's CPU.
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=current().n_jobs) as threads:
        list(threads.map(search, range(len(members))))
    return out, labels


@njit(cache=True)
def _position(cidx, lo, hi, v):  # pragma: no cover - numba
    """Index of ``v`` in the ascending ``cidx[lo:hi]``, or -1."""
    p = lo + np.searchsorted(cidx[lo:hi], v)
    return p if p < hi and cidx[p] == v else -1


@njit(parallel=True, cache=True)
def _mirrored(cptr, cidx):  # pragma: no cover - numba
    """Flags the pairs ``(i, j)``, ``j < i``, whose mirror ``(j, i)`` is listed too (rows of ``cidx`` ascending).

    A pair's score is the same float64 sum both ways round (the same products in the same
    column order), so a flagged pair is not summed: :func:`_copy_mirrored` copies its mirror's.
    """
    flags = np.zeros(cidx.size, dtype=np.bool_)
    for i in prange(cptr.size - 1):
        for e in range(cptr[i], cptr[i + 1]):
            j = cidx[e]
            flags[e] = j < i and _position(cidx, cptr[j], cptr[j + 1], i) >= 0
    return flags


@njit(parallel=True, cache=True)
def _copy_mirrored(cptr, cidx, mirrored, out):  # pragma: no cover - numba
    """``out[e] = out[mirror of e]`` for every flagged pair (:func:`_mirrored`)."""
    for i in prange(cptr.size - 1):
        for e in range(cptr[i], cptr[i + 1]):
            if mirrored[e]:
                j = cidx[e]
                out[e] = out[_position(cidx, cptr[j], cptr[j + 1], i)]


@njit(parallel=True, cache=True)
def _score_sparse(indptr, indices, data, g, order, cptr, cidx, mirrored, out):  # pragma: no cover - numba
    """``out[e] = <row i, row cidx[e]>`` for ``e`` in ``cptr[i]:cptr[i+1]``, unless ``mirrored[e]``; CSR rows of unit norm, float64.

    Rows are visited in ``order`` (by cluster) so that candidate rows are read
    while in cache; every pair is summed in the same order whatever the threads.
    Positions and column indices are unsigned (``indices`` a uint view): no negative-index
    wraparound on the loads.
    """
    n = order.size
    chunk = 256
    for ch in prange((n + chunk - 1) // chunk):
        dense = np.zeros(g, dtype=np.float64)
        for pp in range(ch * chunk, min(n, (ch + 1) * chunk)):
            i = order[pp]
            for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
                dense[indices[p]] = data[p]
            for e in range(cptr[i], cptr[i + 1]):
                if mirrored[e]:
                    continue
                j = cidx[e]
                acc = 0.0
                for p in range(np.uint64(indptr[j]), np.uint64(indptr[j + 1])):
                    acc += dense[indices[p]] * data[p]
                out[e] = acc
            for p in range(np.uint64(indptr[i]), np.uint64(indptr[i + 1])):
                dense[indices[p]] = 0.0


@njit(parallel=True, cache=True, fastmath=True)
def _accumulate_dense(S, order, cptr, cidx, mirrored, out):  # pragma: no cover - numba
    """``out[e] += <S[i], S[cidx[e]]>`` (float64) for a column slice ``S`` of all rows, unless ``mirrored[e]``.

    Columns are taken :data:`TILE` at a time and rows in ``order`` (by cluster),
    so that the candidate rows of a cluster stay in cache.
    """
    n, w = S.shape
    chunk = 64
    for t0 in range(0, w, 256):
        t1 = min(w, t0 + 256)
        for ch in prange((n + chunk - 1) // chunk):
            for pp in range(ch * chunk, min(n, (ch + 1) * chunk)):
                i = order[pp]
                for e in range(cptr[i], cptr[i + 1]):
                    if mirrored[e]:
                        continue
                    j = cidx[e]
                    acc = 0.0
                    # Unsigned column numbers (the same values): the loads skip the negative-index
                    # wraparound and become contiguous vector loads instead of gathers (2.4x).
                    for q in range(np.uint64(t0), np.uint64(t1)):
                        acc += np.float64(S[i, q]) * np.float64(S[j, q])
                    out[e] += acc


class _Scorer:
    """Exact cosines of the candidate pairs ``(i, cidx[e])``, ``e`` in ``cptr[i]:cptr[i+1]``."""

    def __init__(self, source: Matrix, norms: np.ndarray, order: np.ndarray):
        self.source = source
        self.inv = _inverse(norms)
        self.order = order
        self.sparse = None
        if isinstance(source, SparseMatrix):
            X = sp.csr_matrix(source.array, dtype=np.float64, copy=True)
            X.data *= np.repeat(self.inv, np.diff(X.indptr))
            X.sort_indices()
            self.sparse = X

    def __call__(self, cptr: np.ndarray, cidx: np.ndarray) -> np.ndarray:
        """Scores of the pairs; every row of ``cidx`` ascending and distinct. A pair listed both ways round is summed once."""
        n, g = self.source.shape
        mirrored = _mirrored(cptr, cidx)
        out = np.zeros(cidx.size, dtype=np.float64)
        if self.sparse is not None:  # rows already normalised: one float64 sum per pair
            X = self.sparse
            _score_sparse(X.indptr, unsigned_indices(X), X.data, g, self.order, cptr, cidx, mirrored, out)
        elif isinstance(self.source, DenseMatrix) and isinstance(self.source.array, np.ndarray):
            S = np.ascontiguousarray(self.source.array, dtype=np.float32)
            _accumulate_dense(S, self.order, cptr, cidx, mirrored, out)
        else:
            width = max(TILE, SLICE_BYTES // (4 * max(n, 1)) // TILE * TILE)
            for g0 in range(0, g, width):
                S = self._column_slice(g0, min(g, g0 + width))
                _accumulate_dense(S, self.order, cptr, cidx, mirrored, out)
                del S
        _copy_mirrored(cptr, cidx, mirrored, out)
        if self.sparse is not None:
            return out.astype(np.float32)
        return _scaled(out, cptr, cidx, self.inv)

    def _column_slice(self, g0: int, g1: int) -> np.ndarray:
        """Columns ``g0..g1`` of every row (a scratch file of column panels reads them directly)."""
        return np.ascontiguousarray(self.source.columns(g0, g1), dtype=np.float32)


def search_bytes(n_rows: int, n_cols: int, *, streamed: bool, n_jobs: int = 1) -> int:
    """Peak bytes :func:`approximate_neighbours` adds for an ``n_rows x n_cols`` matrix on ``n_jobs`` threads.

    The normalised PCA sample (:data:`PCA_SAMPLE_ROWS` rows) with its products in the
    subspace iteration, the projections, the candidate lists with their scores (about
    ``N_CANDIDATES`` per row, then as many again in the refinement round, with a byte per pair
    flagging those listed both ways round), the refinement's
    marking arrays (8 bytes per row and thread), and, for a matrix read in blocks, one
    column slice of at most :data:`SLICE_BYTES`.
    """
    per_row = 4 * N_COMPONENTS + 2 * (N_CANDIDATES + 1) * (8 + 8 + 4 + 1) + 64 + 8 * max(1, n_jobs)
    # The normalised sample, and its product with the basis (float32, then float64) in the subspace iteration.
    sample_rows = min(n_rows, PCA_SAMPLE_ROWS)
    sample = 4 * sample_rows * n_cols + (4 + 8) * sample_rows * (N_COMPONENTS + OVERSAMPLING)
    return n_rows * per_row + sample + (min(SLICE_BYTES, 4 * n_rows * n_cols) if streamed else 0)


@njit(parallel=True, cache=True)
def _scaled(out, cptr, cidx, inv):  # pragma: no cover - numba
    """``out[e] * inv[i] * inv[cidx[e]]`` rounded to float32 (dot products of raw rows to cosines)."""
    res = np.empty(out.size, dtype=np.float32)
    for i in prange(cptr.size - 1):
        for e in range(cptr[i], cptr[i + 1]):
            res[e] = np.float32(out[e] * inv[i] * inv[cidx[e]])
    return res


@njit(parallel=True, cache=True)
def _merge_new(indices, values, cptr, cidx, csim):  # pragma: no cover - numba
    """Current lists (best first) merged with new distinct candidates; best ``m`` kept in place."""
    n, m = indices.shape
    for i in prange(n):
        k = m + cptr[i + 1] - cptr[i]
        idx = np.empty(k, dtype=np.int64)
        sim = np.empty(k, dtype=np.float32)
        idx[:m] = indices[i]
        sim[:m] = values[i]
        idx[m:] = cidx[cptr[i] : cptr[i + 1]]
        sim[m:] = csim[cptr[i] : cptr[i + 1]]
        _write_best(i, idx, sim, m, indices, values)


@njit(cache=True)
def _write_best(i, idx, sim, m, indices, values):  # pragma: no cover - numba
    """Row ``i`` of ``indices``/``values``: the best ``m`` of candidates ``idx`` by (similarity desc, index asc)."""
    by_index = np.argsort(idx)
    key = -sim[by_index].astype(np.float64)
    best = by_index[np.argsort(key, kind="mergesort")]
    for t in range(m):
        indices[i, t] = idx[best[t]]
        values[i, t] = sim[best[t]]


@njit(parallel=True, cache=True)
def _merge_top(cptr, cidx, csim, m, indices, values):  # pragma: no cover - numba
    """Best ``m`` candidates of every row by (similarity desc, index asc); a row's candidates are distinct."""
    n = cptr.size - 1
    for i in prange(n):
        idx = cidx[cptr[i] : cptr[i + 1]]
        sim = csim[cptr[i] : cptr[i + 1]]
        _write_best(i, idx, sim, m, indices, values)


@njit(parallel=True, cache=True)
def _refine(indices, scored_ptr, scored_idx, rptr, ridx, count_only, out_ptr, out_idx, n_slices):  # pragma: no cover
    """New candidates of every row: neighbours of its neighbours and its reverse neighbours, unscored ones.

    ``scored_idx[scored_ptr[i]:scored_ptr[i+1]]`` are the rows already scored for row
    ``i``. With ``count_only``, writes the counts to ``out_ptr[i + 1]``; otherwise
    the candidates, ascending, to ``out_idx[out_ptr[i]:]``. The rows are split into
    ``n_slices`` consecutive slices, each with an ``N``-sized array in which a row marks
    its scored and proposed rows with its own number: each new candidate is written
    once, without sorting all the proposals.
    """
    n, m = indices.shape
    for sl in prange(n_slices):
        seen = np.full(n, -1, dtype=np.int64)
        for i in range(sl * n // n_slices, (sl + 1) * n // n_slices):
            for e in range(scored_ptr[i], scored_ptr[i + 1]):
                seen[scored_idx[e]] = i
            base = out_ptr[i]
            w = 0
            for t in range(m * m + rptr[i + 1] - rptr[i]):
                v = indices[indices[i, t // m], t % m] if t < m * m else ridx[rptr[i] + t - m * m]
                if seen[v] != i:
                    seen[v] = i
                    if not count_only:
                        out_idx[base + w] = v
                    w += 1
            if count_only:
                out_ptr[i + 1] = w
            else:
                out_idx[base : base + w].sort()


@njit(parallel=True, cache=True)
def _sort_rows(ptr, idx):  # pragma: no cover - numba
    """Sort every row ``idx[ptr[i]:ptr[i+1]]`` of a CSR index list in place."""
    for i in prange(ptr.size - 1):
        idx[ptr[i] : ptr[i + 1]] = np.sort(idx[ptr[i] : ptr[i + 1]])


@njit(cache=True)
def _reverse_lists(indices, cap):  # pragma: no cover - numba
    """For every row, up to ``cap`` rows that list it (lowest indices first), as CSR arrays.

    A counting sort: rows are visited in increasing order, so each list comes out ascending.
    """
    n, m = indices.shape
    ptr = np.zeros(n + 1, dtype=np.int64)
    for i in range(n):
        for t in range(m):
            v = indices[i, t]
            if ptr[v + 1] < cap:
                ptr[v + 1] += 1
    for v in range(n):
        ptr[v + 1] += ptr[v]
    fill = ptr[:-1].copy()
    idx = np.empty(ptr[n], dtype=np.int64)
    for i in range(n):
        for t in range(m):
            v = indices[i, t]
            if fill[v] < ptr[v + 1]:
                idx[fill[v]] = i
                fill[v] += 1
    return ptr, idx


def _refine_candidates(indices, scored_ptr, scored_idx):
    n = indices.shape[0]
    rptr, ridx = _reverse_lists(indices, indices.shape[1])
    ptr = np.zeros(n + 1, dtype=np.int64)
    n_slices = min(n, get_num_threads())  # one marking array per thread (search_bytes counts them)
    _refine(indices, scored_ptr, scored_idx, rptr, ridx, True, ptr, np.empty(0, dtype=np.int64), n_slices)
    np.cumsum(ptr, out=ptr)
    idx = np.empty(ptr[-1], dtype=np.int64)
    _refine(indices, scored_ptr, scored_idx, rptr, ridx, False, ptr, idx, n_slices)
    return ptr, idx


def _union(ptr_a, idx_a, ptr_b, idx_b):
    """Row-wise concatenation of two CSR index lists."""
    n = ptr_a.size - 1
    counts = np.diff(ptr_a) + np.diff(ptr_b)
    ptr = np.r_[0, np.cumsum(counts)].astype(np.int64)
    rows_a = np.repeat(np.arange(n), np.diff(ptr_a))
    rows_b = np.repeat(np.arange(n), np.diff(ptr_b))
    pos_a = ptr[rows_a] + (np.arange(idx_a.size) - ptr_a[rows_a])
    pos_b = ptr[rows_b] + np.diff(ptr_a)[rows_b] + (np.arange(idx_b.size) - ptr_b[rows_b])
    idx = np.empty(ptr[-1], dtype=np.int64)
    idx[pos_a] = idx_a
    idx[pos_b] = idx_b
    return ptr, idx, pos_a, pos_b


def approximate_neighbours(
    M, n_neighbours: int, *, random_state: int | None, desc: str = "neighbour search"
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate cosine top-``n_neighbours`` of every row of ``M`` (the row itself included).

    Parameters
    ----------
    M
        ``N x G`` numpy array, scipy sparse matrix, or :class:`~sccr._engine.matrix.Matrix`
        (read in a few sequential passes of row blocks, see the module doc).
    n_neighbours
        Entries kept per row (``k + 1`` with the row itself).
    random_state
        Seed of the row sample, the projection and the clustering.
    desc
        Label of the progress bar (one step per phase).

    Threads (BLAS and the compiled loops) and the progress bar come from the
    current :class:`~sccr._engine.execution.Execution`.

    Returns
    -------
    indices, values
        ``N x min(n_neighbours, N)`` int64 row indices and float32 exact cosine
        similarities (full space), every row by decreasing similarity, ties to
        the lower index, as :func:`sccr._engine.graph.top_neighbours` gives them. A row
        is its own first neighbour unless it is all zeros or has exact duplicates
        of lower index.
    """
    source = as_matrix(M)
    n, g = source.shape
    m = min(int(n_neighbours), n)
    if n == 0 or m == 0:
        return np.empty((n, m), dtype=np.int64), np.empty((n, m), dtype=np.float32)
    rng = np.random.default_rng(random_state)
    timings = {}
    clock = time.perf_counter()
    bar = current().bar(desc, 4, unit="phase")

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now
        bar.update()

    with bar:
        P, norms = project(source, N_COMPONENTS, rng)
        lap("project")
        cand, labels = propose_candidates(P, max(N_CANDIDATES, m), rng)
        del P
        lap("candidates")
        # Every row also scores itself; duplicates go.
        cand = np.concatenate([np.arange(n)[:, None], cand], axis=1)
        cand.sort(axis=1)
        keep = np.ones(cand.shape, dtype=bool)
        keep[:, 1:] = cand[:, 1:] != cand[:, :-1]
        ptr = np.r_[0, np.cumsum(keep.sum(axis=1))].astype(np.int64)
        idx = cand[keep]
        del cand, keep
        scorer = _Scorer(source, norms, np.argsort(labels, kind="stable"))
        sims = scorer(ptr, idx)
        lap("score")
        indices = np.empty((n, m), dtype=np.int64)
        values = np.empty((n, m), dtype=np.float32)
        _merge_top(ptr, idx, sims, m, indices, values)
        del sims
        for r in range(N_REFINE):
            new_ptr, new_idx = _refine_candidates(indices, ptr, idx)
            timings[f"refine_candidates_per_row_{r}"] = float(new_idx.size / n)
            new_sims = scorer(new_ptr, new_idx)
            _merge_new(indices, values, new_ptr, new_idx, new_sims)
            if r + 1 < N_REFINE:  # the next round skips every row scored so far
                ptr, idx, _, _ = _union(ptr, idx, new_ptr, new_idx)
                _sort_rows(ptr, idx)
            del new_ptr, new_idx, new_sims
        lap("refine")
    last_timings.clear()
    last_timings.update(timings)
    return indices, values

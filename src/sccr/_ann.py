"""Approximate cosine k-NN for large numbers of rows (``knn="approx"``, docs/knn.md).

The exact search (:mod:`sccr._graph`) costs ``O(N^2 G)``; this one costs about
``O(N G (d + c))`` and never holds a dense ``N x G`` matrix:

1. **Projection.** Uncentred truncated SVD of the row-normalised matrix to ``d``
   dimensions, by randomized subspace iteration streamed over row blocks
   (:data:`PCA_PASSES` sequential passes). Only the ``N x (d + 16)`` sketch is kept.
2. **Candidates.** The projected rows are split into clusters of about
   :data:`CLUSTER_SIZE` rows (k-means on a sample); every cluster is searched by
   brute force (one matrix product) against the rows of its :data:`N_PROBE`
   nearest clusters, ranking by inner product of the projections (the part of
   the cosine the projection keeps). Each row keeps :data:`N_CANDIDATES`.
3. **Exact scoring.** The candidates are scored with the exact cosine in the
   full ``G`` dimensions (float64 sums of the normalised rows, rounded to
   float32 as in the exact search). A sparse matrix in memory is scored
   directly; a dense one is read in column slices of at most
   :data:`SLICE_BYTES`, one sequential pass over the rows per slice.
4. **Refinement.** :data:`N_REFINE` rounds of neighbour-of-neighbour search
   (one round of NN-descent): the candidates of a row become the current
   neighbours of its neighbours and the rows that have it as a neighbour, and
   they are scored exactly as in step 3.

The projection only proposes candidates: every returned similarity is an exact
cosine in the full space, so the returned values are those the exact search
gives for the same pairs, and a row's list is the exact top of the candidates
it was offered. Rows come out ranked by decreasing similarity, ties to the
lower row index, like :func:`sccr._graph.top_neighbours`.

Determinism: the random numbers come from ``random_state``; the exact scores
are computed row by row (independent of threads); the projection and candidate
steps use BLAS matrix products limited to ``n_jobs`` threads, so results are
reproducible for a given ``random_state`` and ``n_jobs`` (and in practice for
any ``n_jobs``, as a BLAS rounding difference can only change which of two
equally good candidates is proposed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numba
import numpy as np
import scipy.sparse as sp
from numba import njit, prange
from threadpoolctl import threadpool_limits

#: Dimension of the projection that proposes candidates.
N_COMPONENTS = 64
#: Extra sketch columns of the randomized SVD (oversampling).
OVERSAMPLING = 16
#: Sequential passes over the rows for the randomized SVD (subspace iterations).
PCA_PASSES = 3
#: Target number of rows per cluster of the candidate search.
CLUSTER_SIZE = 1000
#: Clusters searched for the rows of a cluster (its own and the nearest others).
N_PROBE = 8
#: Candidates per row proposed by the projection (before exact scoring).
N_CANDIDATES = 48
#: Rounds of neighbour-of-neighbour refinement with exact scores.
N_REFINE = 1
#: Rows per block when the matrix is read in row blocks.
BLOCK_ROWS = 4096
#: Memory for one column slice of a dense matrix during exact scoring.
SLICE_BYTES = 1 << 30
#: k-means: rows sampled per cluster to fit the centroids, and iterations.
KMEANS_SAMPLE_PER_CLUSTER = 64
KMEANS_ITERATIONS = 10


class RowBlocks(Protocol):
    """A matrix read in row blocks: ``iter_row_blocks(rows)`` yields ``(start, dense block)`` in order."""

    shape: tuple[int, int]

    def iter_row_blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]: ...


class InMemoryRows:
    """Row-block view of an in-memory array or sparse matrix (no copy of the whole).

    ``iter_row_blocks`` yields dense float32 blocks, as a store on disk would;
    :attr:`matrix` keeps the original for the steps that can use it directly.
    """

    def __init__(self, M: np.ndarray | sp.spmatrix):
        if sp.issparse(M):
            self.matrix = sp.csr_matrix(M, dtype=np.float32)
        else:
            self.matrix = np.asarray(M, dtype=np.float32)
            if self.matrix.ndim != 2:
                raise ValueError(f"expected a 2-D matrix, got shape {self.matrix.shape}")
        self.shape = self.matrix.shape

    def iter_row_blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        for start in range(0, self.shape[0], rows):
            block = self.matrix[start : start + rows]
            yield start, block.toarray() if sp.issparse(block) else block

    def _blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray | sp.csr_matrix]]:
        """Like :meth:`iter_row_blocks`, sparse blocks left sparse (cheaper products)."""
        for start in range(0, self.shape[0], rows):
            yield start, self.matrix[start : start + rows]


def as_row_blocks(M) -> RowBlocks:
    """``M`` itself if it reads in row blocks, else an :class:`InMemoryRows` over it."""
    if hasattr(M, "iter_row_blocks") and hasattr(M, "shape"):
        return M
    return InMemoryRows(M)


def _blocks(source: RowBlocks, rows: int = BLOCK_ROWS) -> Iterator[tuple[int, np.ndarray | sp.csr_matrix]]:
    """One pass over ``source`` in row blocks, checked to be in order and complete."""
    it = source._blocks(rows) if isinstance(source, InMemoryRows) else source.iter_row_blocks(rows)
    n = source.shape[0]
    expected = 0
    for start, block in it:
        if start != expected or block.ndim != 2 or block.shape[1] != source.shape[1]:
            raise ValueError(
                f"iter_row_blocks must yield consecutive blocks of {source.shape[1]} columns from row 0: "
                f"expected start {expected}, got {start} with shape {block.shape}"
            )
        if not sp.issparse(block):
            block = np.asarray(block, dtype=np.float32)
        yield start, block
        expected = start + block.shape[0]
    if expected != n:
        raise ValueError(f"iter_row_blocks covered {expected} rows, the matrix has {n}")


def _row_norms(block) -> np.ndarray:
    """Float64 L2 norms of the rows of a block."""
    if sp.issparse(block):
        return np.sqrt(np.asarray(block.multiply(block).sum(axis=1), dtype=np.float64).ravel())
    return np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64))


def _normalised(block, norms: np.ndarray):
    """Rows of ``block`` divided by ``norms`` (zero rows stay zero), float32."""
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
    if sp.issparse(block):
        return sp.csr_matrix(sp.diags(scale) @ block, dtype=np.float32)
    return block * scale[:, None]


def project(source: RowBlocks, n_components: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Streamed uncentred truncated SVD of the row-normalised matrix.

    Randomized subspace iteration (Halko et al. 2011, algorithm 4.4 with a
    Rayleigh-Ritz step): every pass computes ``Y = Mn Q`` and ``Mn^T Y`` block by
    block. Returns the projections ``Mn V`` (``n x d`` float32, ``V`` the top right
    singular vectors) and the float64 row norms of the input.
    """
    n, g = source.shape
    d = max(1, min(n_components, g, n))
    width = min(g, n, d + OVERSAMPLING)
    Q = np.linalg.qr(rng.standard_normal((g, width)))[0].astype(np.float32)
    Y = np.empty((n, width), dtype=np.float32)
    norms = np.empty(n, dtype=np.float64)
    for p in range(PCA_PASSES):
        Z = np.zeros((g, width), dtype=np.float64)
        for start, block in _blocks(source):
            stop = start + block.shape[0]
            if p == 0:
                norms[start:stop] = _row_norms(block)
            Bn = _normalised(block, norms[start:stop])
            Yb = np.asarray(Bn @ Q, dtype=np.float32)
            Y[start:stop] = Yb
            Z += np.asarray(Bn.T @ Yb, dtype=np.float64)
        if p < PCA_PASSES - 1:
            Q = np.linalg.qr(Z)[0].astype(np.float32)
    # Rayleigh-Ritz: Q^T Mn^T Mn Q = U diag(s^2) U^T, so Mn V ~ Y U.
    H = Q.astype(np.float64).T @ Z
    w, U = np.linalg.eigh((H + H.T) / 2)
    order = np.argsort(-w, kind="stable")[:d]
    return np.ascontiguousarray(Y @ U[:, order].astype(np.float32)), norms


def _kmeans(P: np.ndarray, n_clusters: int, rng: np.random.Generator) -> np.ndarray:
    """Centroids of Lloyd's k-means on a sample of the rows of ``P`` (Euclidean)."""
    n = P.shape[0]
    sample = P[np.sort(rng.choice(n, size=min(n, n_clusters * KMEANS_SAMPLE_PER_CLUSTER), replace=False))]
    centroids = sample[rng.choice(sample.shape[0], size=n_clusters, replace=False)].copy()
    for _ in range(KMEANS_ITERATIONS):
        labels = _assign(sample, centroids)
        sums = np.zeros_like(centroids, dtype=np.float64)
        np.add.at(sums, labels, sample)
        counts = np.bincount(labels, minlength=n_clusters)
        filled = counts > 0
        centroids[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    return centroids


def _assign(P: np.ndarray, centroids: np.ndarray, block: int = 65536) -> np.ndarray:
    """Index of the nearest centroid of every row of ``P``."""
    c2 = np.einsum("ij,ij->i", centroids, centroids)
    out = np.empty(P.shape[0], dtype=np.int64)
    for s in range(0, P.shape[0], block):
        out[s : s + block] = np.argmin(c2[None, :] - 2 * (P[s : s + block] @ centroids.T), axis=1)
    return out


def propose_candidates(P: np.ndarray, n_candidates: int, rng: np.random.Generator) -> np.ndarray:
    """``n x c`` candidate rows by largest inner product of projections, within nearby clusters.

    ``c = min(n_candidates, n)``; a row's own index is not forced in (it is added later).
    """
    n = P.shape[0]
    c = min(n_candidates, n)
    n_clusters = max(1, int(round(n / CLUSTER_SIZE)))
    if n_clusters == 1:
        labels = np.zeros(n, dtype=np.int64)
        probe = np.zeros((1, 1), dtype=np.int64)
    else:
        centroids = _kmeans(P, n_clusters, rng)
        labels = _assign(P, centroids)
        c2 = np.einsum("ij,ij->i", centroids, centroids)
        dist = c2[:, None] + c2[None, :] - 2 * (centroids @ centroids.T)
        probe = np.argsort(dist, axis=1, kind="stable")[:, : min(N_PROBE, n_clusters)]
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(probe) + 1))
    members = [order[bounds[i] : bounds[i + 1]] for i in range(len(probe))]
    out = np.empty((n, c), dtype=np.int64)
    for cl, rows in enumerate(members):
        if rows.size == 0:
            continue
        pool = np.concatenate([members[j] for j in probe[cl]])
        if pool.size < c:  # tiny pools: fall back to all rows
            pool = np.arange(n)
        Pp = P[pool]
        step = max(1, (1 << 22) // pool.size)
        for s in range(0, rows.size, step):
            q = rows[s : s + step]
            S = P[q] @ Pp.T
            top = np.argpartition(-S, c - 1, axis=1)[:, :c]
            out[q] = pool[top]
    return out


@njit(parallel=True, cache=True)
def _score_sparse(indptr, indices, data, cand, out):  # pragma: no cover - numba
    """``out[i, t] = <row i, row cand[i, t]>`` (float64) of a CSR matrix with unit rows; -1 skipped."""
    n, c = cand.shape
    g = 0
    for i in range(indices.size):
        if indices[i] + 1 > g:
            g = indices[i] + 1
    for i in prange(n):
        dense = np.zeros(max(g, 1), dtype=np.float64)
        for p in range(indptr[i], indptr[i + 1]):
            dense[indices[p]] = data[p]
        for t in range(c):
            j = cand[i, t]
            if j < 0:
                continue
            acc = 0.0
            for p in range(indptr[j], indptr[j + 1]):
                acc += dense[indices[p]] * data[p]
            out[i, t] = acc


@njit(parallel=True, cache=True)
def _accumulate_dense(S, cand, out):  # pragma: no cover - numba
    """``out[i, t] += <S[i], S[cand[i, t]]>`` in float64, for a column slice ``S`` of all rows."""
    n, c = cand.shape
    w = S.shape[1]
    for i in prange(n):
        for t in range(c):
            j = cand[i, t]
            if j < 0:
                continue
            acc = 0.0
            for q in range(w):
                acc += np.float64(S[i, q]) * np.float64(S[j, q])
            out[i, t] += acc


class _Scorer:
    """Exact cosines of candidate pairs ``(i, cand[i, t])`` of the full matrix."""

    def __init__(self, source: RowBlocks, norms: np.ndarray):
        self.source = source
        self.norms = norms
        self.inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self.sparse = None
        if isinstance(source, InMemoryRows) and sp.issparse(source.matrix):
            X = sp.csr_matrix(source.matrix, dtype=np.float64, copy=True)
            X.data *= np.repeat(self.inv, np.diff(X.indptr))
            X.sort_indices()
            self.sparse = X

    def __call__(self, cand: np.ndarray) -> np.ndarray:
        n, g = self.source.shape
        out = np.zeros(cand.shape, dtype=np.float64)
        if self.sparse is not None:
            X = self.sparse
            _score_sparse(X.indptr, X.indices, X.data, cand, out)
            return out.astype(np.float32)
        width = int(max(1, min(g, SLICE_BYTES // (4 * max(n, 1)))))
        for g0 in range(0, g, width):
            g1 = min(g, g0 + width)
            if isinstance(self.source, InMemoryRows):
                S = self.source.matrix[:, g0:g1]
                if g1 - g0 == g:
                    S = np.ascontiguousarray(S)
                else:
                    S = np.ascontiguousarray(S)
            else:
                S = np.empty((n, g1 - g0), dtype=np.float32)
                for start, block in _blocks(self.source):
                    S[start : start + block.shape[0]] = block[:, g0:g1]
            _accumulate_dense(S, cand, out)
            del S
        out *= self.inv[:, None]
        valid = cand >= 0
        out[valid] *= self.inv[cand[valid]]
        return out.astype(np.float32)


def _top(cand: np.ndarray, sims: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``m`` distinct candidates of every row by (similarity desc, index asc); -1 are padding."""
    n = cand.shape[0]
    key = np.where(cand >= 0, sims, -np.inf).astype(np.float64)
    idx = np.where(cand >= 0, cand, np.iinfo(np.int64).max)
    order = np.lexsort((idx, -key), axis=1)
    cand = np.take_along_axis(cand, order, axis=1)
    sims = np.take_along_axis(sims, order, axis=1)
    # Drop duplicates (sorted next to each other: equal index, equal score).
    dup = np.zeros(cand.shape, dtype=bool)
    dup[:, 1:] = (cand[:, 1:] == cand[:, :-1]) & (cand[:, 1:] >= 0)
    order = np.argsort(dup, axis=1, kind="stable")[:, :m]
    rows = np.arange(n)[:, None]
    return cand[rows, order], sims[rows, order]


def _refine_candidates(indices: np.ndarray, scored: np.ndarray) -> np.ndarray:
    """Neighbours of neighbours and reverse neighbours of every row, minus those already scored (-1 padded)."""
    n, m = indices.shape
    forward = indices[indices].reshape(n, m * m)
    # Reverse lists: row j gets every i with j in indices[i] (at most m of them kept).
    src = np.repeat(np.arange(n), m)
    dst = indices.ravel()
    order = np.argsort(dst, kind="stable")
    src, dst = src[order], dst[order]
    rank = np.arange(dst.size) - np.searchsorted(dst, dst)
    keep = rank < m
    reverse = np.full((n, m), -1, dtype=np.int64)
    reverse[dst[keep], rank[keep]] = src[keep]
    new = np.concatenate([forward, reverse], axis=1)
    new.sort(axis=1)
    dup = np.zeros(new.shape, dtype=bool)
    dup[:, 1:] = new[:, 1:] == new[:, :-1]
    # Already scored: compare each entry with the sorted scored list of its row.
    done = np.sort(scored, axis=1)
    pos = np.minimum(_row_searchsorted(done, new), done.shape[1] - 1)
    seen = np.take_along_axis(done, pos, axis=1) == new
    new[dup | seen] = -1
    width = int((new >= 0).sum(axis=1).max()) if new.size else 0
    order = np.argsort(new < 0, axis=1, kind="stable")[:, : max(width, 1)]
    return np.take_along_axis(new, order, axis=1)


def _row_searchsorted(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``np.searchsorted(a[i], v[i])`` for every row (``a`` rows sorted)."""
    n = a.shape[0]
    span = np.int64(max(int(a.max(initial=0)), int(v.max(initial=0))) + 2)
    offset = np.arange(n, dtype=np.int64)[:, None] * span
    flat = np.searchsorted((a + 1 + offset).ravel(), (v + 1 + offset).ravel())
    return flat.reshape(v.shape) - np.arange(n)[:, None] * a.shape[1]


def approximate_neighbours(
    M, n_neighbours: int, *, random_state: int | None, n_jobs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate cosine top-``n_neighbours`` of every row of ``M`` (the row itself included).

    Parameters
    ----------
    M
        ``N x G`` numpy array, scipy sparse matrix, or any object with ``shape`` and
        ``iter_row_blocks(rows)`` yielding ``(start, dense float32 block)`` in order
        (each call a new pass; a few sequential passes are made).
    n_neighbours
        Entries kept per row (``k + 1`` with the row itself).
    random_state
        Seed of the projection and of the clustering.
    n_jobs
        Threads (BLAS and the scoring loops); the global settings are restored.

    Returns
    -------
    indices, values
        ``N x min(n_neighbours, N)`` int64 row indices and float32 exact cosine
        similarities (in the full space), each row by decreasing similarity, ties
        to the lower index, as :func:`sccr._graph.top_neighbours` gives them.
    """
    source = as_row_blocks(M)
    n, g = source.shape
    m = min(int(n_neighbours), n)
    if n == 0 or m == 0:
        return np.empty((n, m), dtype=np.int64), np.empty((n, m), dtype=np.float32)
    rng = np.random.default_rng(random_state)
    previous = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n_jobs), numba.config.NUMBA_NUM_THREADS)))
    try:
        with threadpool_limits(limits=max(1, int(n_jobs))):
            P, norms = project(source, N_COMPONENTS, rng)
            cand = propose_candidates(P, max(N_CANDIDATES, m), rng)
            del P
            cand = np.concatenate([np.arange(n)[:, None], cand], axis=1)  # every row scores itself
            cand = _dedupe(cand)
            scorer = _Scorer(source, norms)
            sims = scorer(cand)
            indices, values = _top(cand, sims, m)
            scored = cand
            for _ in range(N_REFINE):
                new = _refine_candidates(indices, scored)
                new_sims = scorer(new)
                indices, values = _top(
                    np.concatenate([indices, new], axis=1), np.concatenate([values, new_sims], axis=1), m
                )
                scored = np.concatenate([scored, new], axis=1)
    finally:
        numba.set_num_threads(previous)
    return np.ascontiguousarray(indices, dtype=np.int64), np.ascontiguousarray(values, dtype=np.float32)


def _dedupe(cand: np.ndarray) -> np.ndarray:
    """Repeated entries of a row replaced by -1."""
    s = np.sort(cand, axis=1)
    dup = np.zeros(s.shape, dtype=bool)
    dup[:, 1:] = s[:, 1:] == s[:, :-1]
    s[dup] = -1
    return s

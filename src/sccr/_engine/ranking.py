"""Numba kernels that rank one block of a cosine search: candidates from float32, order from exact values.

For every row of a ``b x n`` block of float32 similarities, :func:`exact_top` keeps
the candidates a float32 product cannot order reliably (every entry within
``tolerance`` of the row's ``m``-th largest, at least ``m + margin`` and at most
``m + max_extra`` of them), recomputes their cosines in float64 from the
un-normalised rows, rounds them to float32 and keeps the ``m`` largest, ties to the
lower column. This is :func:`sccr._engine.graph.block_top`'s exact ranking, done
row by row in compiled code without gathering candidate rows into new arrays. The
kernels release the GIL: the caller runs slices of rows on its threads.

The symmetric search (:func:`sccr._engine.graph.symmetric_top`) computes every pair's float32
cosine once, in tiles of the upper triangle, and feeds each tile's rows and columns to
per-row buffers (:func:`absorb`) that keep at least the ``capacity`` best entries seen so far;
the same candidates are then taken from them (:func:`rank_buffered_dense`, :func:`rank_buffered_sparse`).

:func:`signed_top` ranks the rows of the signed gene graph (by absolute correlation) the same
way: candidates in a bounded buffer, then a stable order.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_TINY = np.float32(np.finfo(np.float32).tiny)


@njit(nogil=True, cache=True)
def _insert(values, columns, size, value, column):  # pragma: no cover
    """Insert into the first ``size`` entries of ``values``/``columns`` (by value, then column); return the new size."""
    capacity = values.size
    if size == capacity:
        if value <= values[size - 1]:  # scanned in column order: an equal value has a higher column
            return size
        size -= 1
    p = size
    while p > 0 and values[p - 1] < value:
        values[p] = values[p - 1]
        columns[p] = columns[p - 1]
        p -= 1
    values[p] = value
    columns[p] = column
    return size + 1


@njit(nogil=True, cache=True)
def _floor(kth, tolerance):  # pragma: no cover
    """Smallest similarity still a candidate of a row whose ``m``-th best is ``kth``."""
    return max(np.float32(kth - tolerance), _TINY)


@njit(nogil=True, cache=True)
def _kth_largest(values, k):  # pragma: no cover
    """The ``k``-th largest of ``values`` (1-based)."""
    return -np.partition(-values, k - 1)[k - 1]


@njit(nogil=True, cache=True)
def _candidates(key, m, margin, max_extra, tolerance, values, columns):  # pragma: no cover
    """Candidate columns of one row (see the module docstring), in ``columns[:count]``; returns ``count``."""
    n = key.size
    want = min(n, m + margin)
    size = 0
    for j in range(n):
        size = _insert(values[:want], columns[:want], size, key[j], j)
    floor = _floor(values[min(m, n) - 1], tolerance)
    near = 0
    for j in range(n):
        if key[j] >= floor:
            near += 1
    count = min(n, max(want, min(near, m + max_extra)))
    if count == want:
        return count
    size = 0  # more candidates than the first pass kept: select them again with the larger capacity
    for j in range(n):
        if key[j] >= floor:
            size = _insert(values[:count], columns[:count], size, key[j], j)
    return size


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _dense_dot(a, b):  # pragma: no cover
    total = 0.0
    for q in range(a.size):
        total += np.float64(a[q]) * np.float64(b[q])
    return total


@njit(nogil=True, cache=True, fastmath={"reassoc", "contract"})
def _sparse_dot(dense_row, indices, data):  # pragma: no cover
    total = 0.0
    for p in range(indices.size):
        total += dense_row[indices[p]] * np.float64(data[p])
    return total


@njit(nogil=True, cache=True)
def _ranked(key, tiebreak):  # pragma: no cover
    """Positions in decreasing ``key``, equal keys in increasing ``tiebreak``."""
    order = np.argsort(tiebreak, kind="mergesort")
    return order[np.argsort(-key[order], kind="mergesort")]  # stable: equal keys keep the tiebreak order


@njit(nogil=True, cache=True)
def _best(cols, sims, m, out_cols, out_sims):  # pragma: no cover
    """The ``m`` largest ``sims`` (ties: lower column) into ``out_*``, in decreasing order."""
    order = _ranked(sims, cols)
    for r in range(m):
        out_cols[r] = cols[order[r]]
        out_sims[r] = sims[order[r]]


@njit(nogil=True, cache=True)
def signed_top(gram, row_scale, col_scale, m, margin, out_cols, out_sims):  # pragma: no cover
    """The ``m`` largest ``|S|`` of every row of ``S = float32(gram * row_scale[:, None] * col_scale)``, in decreasing rank.

    ``S`` (the correlations from a Gram block and inverse norms) is computed entry by entry,
    never whole. Candidates: a row's ``m + margin`` largest ``|S|``, ties to the lower column.
    Ranked by ``|S|``; equal values put positive before negative, then the lower column (the
    order of the concatenated ``[Z, -Z]`` gene graph).
    """
    b, n = gram.shape
    want = min(n, m + margin)
    keys = np.empty(want, dtype=np.float32)
    cols = np.empty(want, dtype=np.int64)
    tiebreak = np.empty(want, dtype=np.int64)
    sims = np.empty(want, dtype=np.float32)
    for r in range(b):
        size = 0
        for j in range(n):
            size = _insert(keys, cols, size, abs(np.float32(gram[r, j] * row_scale[r] * col_scale[j])), j)
        for c in range(want):
            sims[c] = np.float32(gram[r, cols[c]] * row_scale[r] * col_scale[cols[c]])
            tiebreak[c] = cols[c] + n * (sims[c] < 0)
        order = _ranked(keys, tiebreak)
        for c in range(m):
            out_cols[r, c] = cols[order[c]]
            out_sims[r, c] = sims[order[c]]


@njit(nogil=True, cache=True)
def _rank_dense(i, columns, M, inverse_norms, m, out_cols, out_sims):  # pragma: no cover
    """Exact cosines of row ``i`` of dense ``M`` with rows ``columns``; their best ``m`` into ``out_*``."""
    sims = np.empty(columns.size, dtype=np.float32)
    for c in range(columns.size):
        j = columns[c]
        sims[c] = np.float32(_dense_dot(M[i], M[j]) * inverse_norms[i] * inverse_norms[j])
    _best(columns.copy(), sims, m, out_cols, out_sims)


@njit(nogil=True, cache=True)
def _rank_sparse(
    i, columns, indptr, indices, data, inverse_norms, dense_row, m, out_cols, out_sims
):  # pragma: no cover
    """:func:`_rank_dense` for a CSR matrix; ``dense_row``: zeros of the width of a row (left zero)."""
    for p in range(indptr[i], indptr[i + 1]):
        dense_row[indices[p]] = data[p]
    sims = np.empty(columns.size, dtype=np.float32)
    for c in range(columns.size):
        j = columns[c]
        dot = _sparse_dot(dense_row, indices[indptr[j] : indptr[j + 1]], data[indptr[j] : indptr[j + 1]])
        sims[c] = np.float32(dot * inverse_norms[i] * inverse_norms[j])
    for p in range(indptr[i], indptr[i + 1]):
        dense_row[indices[p]] = 0.0
    _best(columns.copy(), sims, m, out_cols, out_sims)


@njit(nogil=True, cache=True)
def exact_top_dense(
    S, start, M, inverse_norms, m, margin, max_extra, tolerance, out_cols, out_sims
):  # pragma: no cover
    """Exact top ``m`` of rows ``start..start + b`` of dense float32 ``M`` (``S``: their float32 cosines) into ``out_*``."""
    b, n = S.shape
    values = np.empty(min(n, m + max(margin, max_extra)), dtype=np.float32)
    columns = np.empty(values.size, dtype=np.int64)
    for r in range(b):
        count = _candidates(S[r], m, margin, max_extra, tolerance, values, columns)
        _rank_dense(start + r, columns[:count], M, inverse_norms, m, out_cols[r], out_sims[r])


@njit(nogil=True, cache=True)
def exact_top_sparse(
    S, start, indptr, indices, data, width, inverse_norms, m, margin, max_extra, tolerance, out_cols, out_sims
):  # pragma: no cover
    """:func:`exact_top_dense` for a float32 CSR matrix (``indptr``, ``indices``, ``data``) of ``width`` columns."""
    b, n = S.shape
    values = np.empty(min(n, m + max(margin, max_extra)), dtype=np.float32)
    columns = np.empty(values.size, dtype=np.int64)
    dense_row = np.zeros(width, dtype=np.float64)
    for r in range(b):
        count = _candidates(S[r], m, margin, max_extra, tolerance, values, columns)
        _rank_sparse(
            start + r, columns[:count], indptr, indices, data, inverse_norms, dense_row, m, out_cols[r], out_sims[r]
        )


# --- the symmetric search: per-row buffers fed by tiles ----------------------------------------


@njit(nogil=True, cache=True)
def _compact(values, columns, size, capacity):  # pragma: no cover
    """Keep the best ``capacity`` of ``size`` buffered entries in their order; return the new size.

    Entries arrive in increasing column order, so among equal values the earlier ones (lower
    columns) are kept, as in :func:`_candidates`.
    """
    if size <= capacity:
        return size
    last = _kth_largest(values[:size], capacity)
    ties = capacity
    for t in range(size):
        if values[t] > last:
            ties -= 1
    kept = 0
    for t in range(size):
        v = values[t]
        if v > last or (v == last and ties > 0):
            if v == last:
                ties -= 1
            values[kept] = v
            columns[kept] = columns[t]
            kept += 1
    return kept


@njit(nogil=True, cache=True)
def _bound(values, size, n, m, margin, tolerance):  # pragma: no cover
    """The least similarity a later entry needs to become a candidate of a row whose buffer is ``values[:size]``.

    A candidate is among the row's best ``m + margin`` or within ``tolerance`` of its ``m``-th
    best; both of these only rise as entries arrive, so an entry below both bounds of the
    buffer now can never become one.
    """
    kth = _kth_largest(values[:size], min(m, n))
    return min(_kth_largest(values[:size], min(n, m + margin)), np.float32(kth - tolerance))


@njit(nogil=True, cache=True)
def _drop_below(values, columns, size, bound):  # pragma: no cover
    """Remove the entries below ``bound`` from a buffer, keeping the order of the others; return the new size."""
    kept = 0
    for t in range(size):
        if values[t] >= bound:
            values[kept] = values[t]
            columns[kept] = columns[t]
            kept += 1
    return kept


@njit(nogil=True, cache=True)
def absorb(
    T, row0, col0, first, last, capacity, values, columns, size, low, next_bound, n, m, margin, tolerance
):  # pragma: no cover
    """Feed rows ``first..last`` of tile ``T`` (rows ``row0 + r``, columns ``col0 + q``) to their rows' buffers.

    A row's buffer (``values[i]``, ``columns[i]``, ``2 * capacity`` long, ``size[i]`` used) takes
    every entry at or above ``low[i]``, which rises (:func:`_bound`, the entries below it leave)
    once ``m + margin`` more have come in (``next_bound[i]``); when it would overflow it keeps its
    best ``capacity``, and none below the last of them can enter later (a later column loses a
    tie). The buffer always
    holds every entry that :func:`_candidates` would take from the whole row.
    """
    w = T.shape[1]
    want = min(n, m + margin)
    for r in range(first, last):
        i = row0 + r
        x = T[r]
        bound = low[i]
        count = 0
        for q in range(w):
            count += x[q] >= bound
        if count == 0:
            continue
        k = size[i]
        vi, ci = values[i], columns[i]
        if k + count > vi.size:  # merge and keep the best: in a scratch array as long as both
            vi = np.concatenate((vi[:k], np.empty(count, dtype=vi.dtype)))
            ci = np.concatenate((ci[:k], np.empty(count, dtype=ci.dtype)))
        for q in range(w):
            if x[q] >= bound:
                vi[k] = x[q]
                ci[k] = col0 + q
                k += 1
        if k > values.shape[1]:
            k = _compact(vi, ci, k, capacity)
            values[i, :k] = vi[:k]
            columns[i, :k] = ci[:k]
            bound = max(bound, vi[:k].min())
        if k >= next_bound[i] and k >= want:
            bound = max(bound, _bound(values[i], k, n, m, margin, tolerance))
            k = _drop_below(values[i], columns[i], k, bound)
            next_bound[i] = k + want
        low[i] = bound
        size[i] = k


@njit(nogil=True, cache=True)
def _buffered_candidates(values, columns, size, n, m, margin, max_extra, tolerance):  # pragma: no cover
    """The candidate columns of one row from its buffer: those :func:`_candidates` takes from the whole row."""
    size = _compact(values, columns, size, m + max(margin, max_extra))
    floor = _floor(_kth_largest(values[:size], min(m, n)), tolerance)
    near = 0
    for t in range(size):
        if values[t] >= floor:
            near += 1
    count = _compact(values, columns, size, min(size, max(min(n, m + margin), min(near, m + max_extra))))
    return columns[:count].astype(np.int64)


@njit(nogil=True, cache=True)
def rank_buffered_dense(
    first, last, n, values, columns, size, M, inverse_norms, m, margin, max_extra, tolerance, out_cols, out_sims
):  # pragma: no cover
    """Exact top ``m`` of rows ``first..last`` of dense ``M`` from their buffers into ``out_*`` (rows offset by ``first``)."""
    for i in range(first, last):
        cand = _buffered_candidates(values[i], columns[i], size[i], n, m, margin, max_extra, tolerance)
        _rank_dense(i, cand, M, inverse_norms, m, out_cols[i - first], out_sims[i - first])


@njit(nogil=True, cache=True)
def rank_buffered_sparse(
    first,
    last,
    n,
    values,
    columns,
    size,
    indptr,
    indices,
    data,
    width,
    inverse_norms,
    m,
    margin,
    max_extra,
    tolerance,
    out_cols,
    out_sims,
):  # pragma: no cover
    """:func:`rank_buffered_dense` for a float32 CSR matrix of ``width`` columns."""
    dense_row = np.zeros(width, dtype=np.float64)
    for i in range(first, last):
        cand = _buffered_candidates(values[i], columns[i], size[i], n, m, margin, max_extra, tolerance)
        _rank_sparse(
            i, cand, indptr, indices, data, inverse_norms, dense_row, m, out_cols[i - first], out_sims[i - first]
        )

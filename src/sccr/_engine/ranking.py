"""Numba kernels that rank one block of a cosine search: candidates from float32, order from exact values.

For every row of a ``b x n`` block of float32 similarities, :func:`exact_top` keeps
the candidates a float32 product cannot order reliably (every entry within
``tolerance`` of the row's ``m``-th largest, at least ``m + margin`` and at most
``m + max_extra`` of them), recomputes their cosines in float64 from the
un-normalised rows, rounds them to float32 and keeps the ``m`` largest, ties to the
lower column. This is :func:`sccr._engine.graph.block_top`'s exact ranking, done
row by row in compiled code without gathering candidate rows into new arrays. The
kernels release the GIL: the caller runs slices of rows on its threads.
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
def _candidates(key, m, margin, max_extra, tolerance, values, columns):  # pragma: no cover
    """Candidate columns of one row (see the module docstring), in ``columns[:count]``; returns ``count``."""
    n = key.size
    want = min(n, m + margin)
    size = 0
    for j in range(n):
        size = _insert(values[:want], columns[:want], size, key[j], j)
    kth = values[min(m, n) - 1]
    floor = max(np.float32(kth - tolerance), _TINY)
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
def _best(cols, sims, m, out_cols, out_sims):  # pragma: no cover
    """The ``m`` largest ``sims`` (ties: lower column) into ``out_*``, in decreasing order."""
    order = np.argsort(cols, kind="mergesort")
    cols, sims = cols[order], sims[order]
    order = np.argsort(-sims, kind="mergesort")  # stable: equal similarities keep the lower column first
    for r in range(m):
        out_cols[r] = cols[order[r]]
        out_sims[r] = sims[order[r]]


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
        i = start + r
        sims = np.empty(count, dtype=np.float32)
        for c in range(count):
            j = columns[c]
            sims[c] = np.float32(_dense_dot(M[i], M[j]) * inverse_norms[i] * inverse_norms[j])
        _best(columns[:count].copy(), sims, m, out_cols[r], out_sims[r])


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
        i = start + r
        for p in range(indptr[i], indptr[i + 1]):
            dense_row[indices[p]] = data[p]
        sims = np.empty(count, dtype=np.float32)
        for c in range(count):
            j = columns[c]
            dot = _sparse_dot(dense_row, indices[indptr[j] : indptr[j + 1]], data[indptr[j] : indptr[j + 1]])
            sims[c] = np.float32(dot * inverse_norms[i] * inverse_norms[j])
        for p in range(indptr[i], indptr[i + 1]):
            dense_row[indices[p]] = 0.0
        _best(columns[:count].copy(), sims, m, out_cols[r], out_sims[r])

"""Compiled kernel of molecular cross-validation: every loss of one imputation in one pass over its rows.

:meth:`sccr.tl._score._MCVData.details` gives the formulas. The kernel reads the dense
imputation once and walks the sparse rows of the input (half 1) and of the target (half 2)
beside it; the two corrections of the log scale (``convert_log1p``, ``invert_log1p``) are
linear interpolations on the same tables, with the same arithmetic as ``numpy.interp``
(bitwise the same results), found through an index on the bits of the float32 value instead
of a binary search over the whole table.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Mantissa bits of a float32 dropped by the index: 2^(23 - 13) = 1024 buckets per octave.
_SHIFT = 13


class Table:
    """``numpy.interp(x, xp, fp)`` at float32 ``x``, for increasing, non-negative ``xp``, as arrays the kernel reads.

    A non-negative float32's bits, read as an integer, grow with its value; dropping the last
    :data:`_SHIFT` bits leaves exponent and leading mantissa bits, the index of the value's bucket
    (1024 per octave). These tables' abscissae are dense near 0 (geometric) and evenly spaced further
    out, so most buckets hold no node: a value there is interpolated from the bucket's lower node,
    read from ``cells`` in one place; in the others ``start`` (the last node at or below the
    bucket's lower edge) begins a short search.
    """

    def __init__(self, xp: np.ndarray, fp: np.ndarray) -> None:
        xp = np.asarray(xp, dtype=np.float64)
        fp = np.asarray(fp, dtype=np.float64)
        if xp.ndim != 1 or xp.shape != fp.shape or xp.size < 3 or xp[0] < 0 or np.any(np.diff(xp) <= 0):
            raise ValueError("xp must be non-negative, strictly increasing and as long as fp (at least three points)")
        self.xp, self.fp = xp, fp
        self.slopes = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])  # as numpy.interp computes them
        first, last = (int(np.float32(v).view(np.int32)) >> _SHIFT for v in (xp[1], xp[-1]))
        self.base = first
        edges = ((np.arange(first, last + 2, dtype=np.int64) << _SHIFT).astype(np.int32)).view(np.float32)
        start = np.searchsorted(xp, edges.astype(np.float64), side="right") - 1
        self.start = np.clip(start, 0, xp.size - 2).astype(np.int32)
        #: per bucket: its lower node, that node's value and slope (read together); the slope is nan
        #: where a node lies inside the bucket (or below the first), which the kernel then searches
        lower = self.start[:-1]
        self.cells = np.stack([xp[lower], fp[lower], self.slopes[lower]], axis=1)
        self.cells[self.start[1:] != lower, 2] = np.nan
        self.cells[0, 2] = np.nan

    def arrays(self) -> tuple:
        return self.xp, self.fp, self.slopes, self.start, self.base, self.cells

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The interpolation of float32 ``x`` (as float64), for tests against ``numpy.interp``."""
        x = np.ascontiguousarray(x, dtype=np.float32).ravel()
        out = np.empty(x.size)
        _interp_into(x, x.view(np.int32), *self.arrays(), out)
        return out


@njit(nogil=True, cache=True, fastmath=False)
def _interp_into(values, bits, xp, fp, slopes, start, base, cells, out):  # pragma: no cover
    """``out[:] = numpy.interp(numpy.maximum(values, 0), xp, fp)`` for float32 ``values`` (``bits``: their bits).

    Ends held constant (``xp[0] >= 0``: every value at or below 0 gives ``fp[0]``), exact at
    nodes, ``slope * (x - xp[j]) + fp[j]`` between: numpy's arithmetic. (One loop, not a function
    per value: numba compiles a per-value function inlined here several times slower.)
    """
    last = xp.size - 1
    for k in range(values.size):
        x = np.float64(values[k])  # nan falls through every test below and comes out nan, as from numpy
        if x >= xp[last]:
            out[k] = fp[last]
            continue
        if x <= xp[0]:
            out[k] = fp[0]
            continue
        bucket = min(max((bits[k] >> _SHIFT) - base, 0), cells.shape[0] - 1)
        slope = cells[bucket, 2]
        if slope == slope:  # no node inside the bucket: x lies after its lower node
            node = cells[bucket, 0]
            out[k] = cells[bucket, 1] if node == x else slope * (x - node) + cells[bucket, 1]
            continue
        lo = start[bucket]
        while lo > 0 and xp[lo] > x:  # only below the first bucket
            lo -= 1
        while xp[lo + 1] <= x:  # a node or a few (xp[last] > x ends it)
            lo += 1
        out[k] = fp[lo] if xp[lo] == x else slopes[lo] * (x - xp[lo]) + fp[lo]


@njit(nogil=True, cache=True, fastmath=False)
def _mcv_rows(  # pragma: no cover
    imputed,
    imputed_bits,
    in_indptr,
    in_indices,
    in_data,
    t_indptr,
    t_indices,
    t_data,
    counts,
    depth,
    floor,
    identity,
    c_xp,
    c_fp,
    c_slopes,
    c_start,
    c_base,
    c_cells,
    i_xp,
    i_fp,
    i_slopes,
    i_start,
    i_base,
    i_cells,
    squares,
    poisson,
    change,
):
    """Per row of ``imputed`` (rows ``0..n`` of the halves' CSR arrays, already offset by the caller).

    ``squares``: sum over genes of ``(float32(convert(v)) - target)^2`` (``v`` itself when ``identity``); ``poisson``: of
    ``mu - y log mu`` with ``mu = max(invert(v) * depth, floor)`` (``log y!`` is added by the
    caller, it does not depend on the imputation); ``change``: of ``float32(v - input)^2``.
    """
    n, g = imputed.shape
    converted = np.empty(g)
    means = np.empty(g)
    for i in range(n):
        row = imputed[i]
        if not identity:
            _interp_into(row, imputed_bits[i], c_xp, c_fp, c_slopes, c_start, c_base, c_cells, converted)
        _interp_into(row, imputed_bits[i], i_xp, i_fp, i_slopes, i_start, i_base, i_cells, means)
        q, q_end = in_indptr[i], in_indptr[i + 1]
        t, t_end = t_indptr[i], t_indptr[i + 1]
        s = 0.0
        ps = 0.0
        cs = 0.0
        d = depth[i]
        for j in range(g):
            v = row[j]
            predicted = np.float64(v) if identity else np.float64(np.float32(converted[j]))
            mu = max(means[j] * d, floor)
            observed = np.float32(0.0)
            if q < q_end and in_indices[q] == j:
                observed = in_data[q]
                q += 1
            diff = np.float32(v - observed)
            cs += np.float64(diff * diff)
            if t < t_end and t_indices[t] == j:
                e = predicted - np.float64(t_data[t])
                ps += mu - counts[t] * np.log(mu)
                t += 1
            else:
                e = predicted
                ps += mu
            s += e * e
        squares[i] = s
        poisson[i] = ps
        change[i] = cs

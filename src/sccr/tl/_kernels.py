"""Compiled kernel of molecular cross-validation: every loss of one imputation in one pass over its rows.

:meth:`sccr.tl._score._MCVData.details` gives the formulas. The kernel reads the dense
imputation once and walks the sparse rows of the input (half 1) and of the target (half 2)
beside it; the two corrections of the log scale (``convert_log1p``, ``invert_log1p``) are
linear interpolations on the same tables, with the same arithmetic as ``numpy.interp``
(bitwise the same results), found through an index by octave instead of a binary search
over all of it.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

#: Buckets per octave of the index over a table's abscissae (by exponent and leading mantissa bits).
_PER_OCTAVE = 1024


class Table:
    """``numpy.interp(x, xp, fp)`` for increasing, non-negative ``xp``, as arrays the kernel reads.

    The abscissae of these tables are dense near 0 (geometric) and spaced evenly further out,
    so they are indexed by octave: ``x = m 2^e`` falls in bucket
    ``(e - e_min) * _PER_OCTAVE + floor((2 m - 1) * _PER_OCTAVE)``, which holds a node or two.
    """

    def __init__(self, xp: np.ndarray, fp: np.ndarray) -> None:
        xp = np.asarray(xp, dtype=np.float64)
        fp = np.asarray(fp, dtype=np.float64)
        if xp.ndim != 1 or xp.shape != fp.shape or xp.size < 3 or xp[0] < 0 or np.any(np.diff(xp) <= 0):
            raise ValueError("xp must be non-negative, strictly increasing and as long as fp (at least three points)")
        self.xp, self.fp = xp, fp
        self.slopes = (fp[1:] - fp[:-1]) / (xp[1:] - xp[:-1])  # as numpy.interp computes them
        self.e_min = int(np.frexp(xp[1])[1])
        octaves = int(np.frexp(xp[-1])[1]) - self.e_min + 1
        bucket = np.arange(octaves * _PER_OCTAVE)
        edges = np.ldexp(0.5 + (bucket % _PER_OCTAVE) / (2 * _PER_OCTAVE), self.e_min + bucket // _PER_OCTAVE)
        edges[0] = xp[0]
        #: the last node at or below the lower edge of each bucket, and one past the end
        start = np.searchsorted(xp, edges, side="right") - 1
        self.start = np.clip(np.append(start, xp.size - 2), 0, xp.size - 2).astype(np.int64)

    def arrays(self) -> tuple:
        return self.xp, self.fp, self.slopes, self.start, self.e_min

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The interpolation of ``x`` (float64), for tests against ``numpy.interp``."""
        x = np.ascontiguousarray(x, dtype=np.float64).ravel()
        out = np.empty_like(x)
        _interp_many(x, *self.arrays(), out)
        return out


@njit(nogil=True, cache=True, fastmath=False)
def _interp(x, xp, fp, slopes, start, e_min):  # pragma: no cover
    """``numpy.interp(x, xp, fp)``: ends held constant, exact at nodes, ``slope * (x - xp[j]) + fp[j]`` between."""
    last = xp.size - 1
    if x >= xp[last]:
        return fp[last]
    if x <= xp[0]:
        return fp[0]
    m, e = math.frexp(x)
    bucket = (e - e_min) * _PER_OCTAVE + int((2.0 * m - 1.0) * _PER_OCTAVE)
    bucket = min(max(bucket, 0), start.size - 2)
    lo, hi = start[bucket], start[bucket + 1] + 1
    while lo > 0 and xp[lo] > x:  # an edge rounded the other way: widen the bracket
        lo -= 1
    while hi < last and xp[hi] <= x:
        hi += 1
    while hi - lo > 1:  # xp[lo] <= x < xp[hi]
        mid = (lo + hi) // 2
        if xp[mid] <= x:
            lo = mid
        else:
            hi = mid
    if xp[lo] == x:
        return fp[lo]
    return slopes[lo] * (x - xp[lo]) + fp[lo]


@njit(nogil=True, cache=True, fastmath=False)
def _interp_many(x, xp, fp, slopes, start, e_min, out):  # pragma: no cover
    for i in range(x.size):
        out[i] = _interp(x[i], xp, fp, slopes, start, e_min)


@njit(nogil=True, cache=True, fastmath=False)
def _mcv_rows(  # pragma: no cover
    imputed,
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
    c_e_min,
    i_xp,
    i_fp,
    i_slopes,
    i_start,
    i_e_min,
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
    for i in range(n):
        row = imputed[i]
        q, q_end = in_indptr[i], in_indptr[i + 1]
        t, t_end = t_indptr[i], t_indptr[i + 1]
        s = 0.0
        ps = 0.0
        cs = 0.0
        d = depth[i]
        for j in range(g):
            v = row[j]
            x = max(np.float64(v), 0.0)
            if identity:
                predicted = np.float64(v)
            else:
                predicted = np.float64(np.float32(_interp(x, c_xp, c_fp, c_slopes, c_start, c_e_min)))
            mu = max(_interp(x, i_xp, i_fp, i_slopes, i_start, i_e_min) * d, floor)
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

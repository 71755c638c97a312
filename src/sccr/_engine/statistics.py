"""Compiled per-column statistics of dense row blocks: the sums behind the gene graph's standardisation.

Each kernel adds row after row into float64, so its sums are those of numpy's reductions
over the rows of a C-ordered block (``block.sum(axis=0, dtype=float64)``,
``np.einsum("ij,ij->j", Z, Z, dtype=float64)``) bit for bit, in one pass and without the
block-sized temporaries numpy makes.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def column_sums(block: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Float64 sums of the columns of ``block``, adding row after row (as numpy's ``block.sum(axis=0, dtype=float64)``)."""
    sums = np.zeros(block.shape[1], dtype=np.float64)
    for i in range(block.shape[0]):
        for j in range(block.shape[1]):
            sums[j] += np.float64(block[i, j])
    return sums


@njit(nogil=True, cache=True)
def column_squared_deviations(block: np.ndarray, center: np.ndarray) -> np.ndarray:  # pragma: no cover
    """Float64 sums of ``(block[:, j] - center[j]) ** 2`` over the rows, adding row after row, without temporaries."""
    sums = np.zeros(block.shape[1], dtype=np.float64)
    for i in range(block.shape[0]):
        for j in range(block.shape[1]):
            deviation = np.float64(block[i, j]) - center[j]
            sums[j] += deviation * deviation
    return sums


@njit(nogil=True, cache=True)
def standardised(
    block: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
    """``Z = (block - mean) / scale`` in float32, returned as float64, and the float64 column sums of ``Z ** 2`` (row after row), in one pass."""
    n, g = block.shape
    Z = np.empty((n, g), dtype=np.float64)
    squares = np.zeros(g, dtype=np.float64)
    for i in range(n):
        for j in range(g):
            z = np.float64((block[i, j] - mean[j]) / scale[j])
            Z[i, j] = z
            squares[j] += z * z
    return Z, squares

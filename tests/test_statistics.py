"""Per-column sums of the gene graph's standardisation: float64, row after row, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from sccr._engine.statistics import column_squared_deviations, column_sums, standardised

SHAPES = [(1, 3), (7, 5), (300, 41)]


def block_of(shape, dtype):
    rng = np.random.default_rng(shape[0])
    return (rng.random(shape) * 3 * (rng.random(shape) < 0.4)).astype(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sums_add_row_after_row(shape, dtype):
    block = block_of(shape, dtype)
    center = np.random.default_rng(1).random(shape[1])
    sums, squares = np.zeros(shape[1]), np.zeros(shape[1])
    for row in block:
        sums += row.astype(np.float64)
        squares += np.square(row.astype(np.float64) - center)
    np.testing.assert_array_equal(column_sums(block), sums)
    np.testing.assert_array_equal(column_squared_deviations(block, center), squares)
    np.testing.assert_allclose(column_sums(block), block.sum(axis=0, dtype=np.float64), rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_standardised_is_float32_arithmetic_widened(shape):
    """Z is computed in float32 (as ``(block - mean) / scale`` on float32 arrays) and widened;
    its squares are summed in float64, row after row."""
    block = block_of(shape, np.float32)
    rng = np.random.default_rng(2)
    mean = rng.random(shape[1]).astype(np.float32)
    scale = (rng.random(shape[1]) + 0.5).astype(np.float32)
    Z, squares = standardised(block, mean, scale)
    expected = ((block - mean) / scale).astype(np.float64)
    assert Z.dtype == np.float64
    np.testing.assert_array_equal(Z, expected)
    sums = np.zeros(shape[1])
    for row in expected:
        sums += row * row
    np.testing.assert_array_equal(squares, sums)

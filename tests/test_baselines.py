"""Baselines of the benchmark: ALRA (step by step on hand-derived cases), k-NN smoothing, MAGIC, raw."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from sccr._benchmark.baselines import alra, alra_choose_k, alra_threshold_rescale, knn_smooth, magic, raw

# --- ALRA ---------------------------------------------------------------------------------


def test_choose_k_picks_last_spacing_far_above_the_noise():
    # 101 singular values: spacings 1..100; spacing 3 is huge, spacing 5 large, the rest noise.
    gaps = np.where(np.arange(100) % 2 == 0, 0.1, 0.2)
    gaps[2] = 50.0
    gaps[4] = 5.0  # (5 - 0.15) / sd(noise) ~ 95 sd: above the 6 sd threshold
    s = 100.0 - np.concatenate([[0.0], np.cumsum(gaps)])
    assert alra_choose_k(s) == 5
    gaps[4] = 0.3  # now ~3 sd: not enough, so the last significant spacing is number 3
    s = 100.0 - np.concatenate([[0.0], np.cumsum(gaps)])
    assert alra_choose_k(s) == 3


def test_choose_k_needs_enough_values():
    with pytest.raises(ValueError, match="singular values"):
        alra_choose_k(np.arange(50.0)[::-1])


def test_threshold_rescale_hand_case():
    # Column 0: threshold |q(0.001)| = 0.0994 zeroes -0.1 and 0.05; kept L [1, 2, 3] (mean 2, sd 1)
    #   is mapped onto A's non-zeros [2, 4, 6] (mean 4, sd 2): 2 L; cell 0 (observed 2, zeroed) is restored.
    # Column 1: |q| = 0.4972 zeroes -0.5 and 0.2; A's non-zeros [1, 1, 7] have mean 3, sd sqrt(12):
    #   L [1, 2, 3] -> sqrt(12) L + 3 - 2 sqrt(12) = [-0.46, 3, 6.46]; the negative becomes 0 and,
    #   being observed (1), is restored.
    # Column 2: A has one non-zero (sd undefined): kept L values stay as they are.
    L = np.array([[-0.1, -0.5, 0.0], [0.05, 1, 0.0], [1, 2, 0.5], [2, 3, 1], [3, 0.2, 2]], dtype=np.float32)
    A = np.array([[2, 0, 0], [0, 1, 0], [4, 1, 0], [6, 7, 3], [8, 0, 0]], dtype=np.float32)
    A[4, 0] = 0  # column 0 non-zeros: 2, 4, 6
    r12 = np.sqrt(12)
    expected = np.array(
        [[2, 0, 0], [0, 1, 0], [2, 2 * r12 + 3 - 2 * r12, 0.5], [4, 3 * r12 + 3 - 2 * r12, 1], [6, 0, 2]],
        dtype=np.float32,
    )
    np.testing.assert_allclose(alra_threshold_rescale(A, L), expected, rtol=1e-5, atol=1e-6)


def test_alra_on_exact_rank_one_matrix():
    # The rank-1 approximation of a rank-1 matrix is the matrix. With 30 cells the 0.001
    # quantile of a gene lies between its two smallest values, so only the smallest is zeroed
    # (and, being observed, restored); the others are mapped linearly onto the mean and sd
    # of all of the gene's values.
    rng = np.random.default_rng(0)
    A = np.outer(rng.uniform(1, 2, 30), rng.uniform(1, 3, 6)).astype(np.float64)
    expected = A.copy()
    for j in range(A.shape[1]):
        rest = np.delete(A[:, j], A[:, j].argmin())
        scaled = (A[:, j] - rest.mean()) * A[:, j].std(ddof=1) / rest.std(ddof=1) + A[:, j].mean()
        expected[:, j] = np.where(A[:, j] == A[:, j].min(), A[:, j], scaled)
    np.testing.assert_allclose(alra(A.astype(np.float32), k=1), expected, rtol=1e-4)


def test_alra_keeps_observed_values_and_fills_dropped_ones():
    rng = np.random.default_rng(1)
    A = np.outer(rng.uniform(1, 2, 60), rng.uniform(1, 2, 12)).astype(np.float32)
    dropped = A.copy()
    dropped[rng.random(A.shape) < 0.1] = 0
    out = alra(sp.csr_matrix(dropped), k=1)
    observed = dropped != 0
    assert out.dtype == np.float32 and out.shape == A.shape
    assert (out[observed] > 0).all()
    # A rank-1 truth: the dropped entries come back close to it.
    assert np.abs(out[~observed] - A[~observed]).mean() < 0.2 * A[~observed].mean()


def test_alra_chooses_rank_on_its_own(X):
    out = alra(X)
    assert out.shape == X.shape and (out >= 0).all()
    np.testing.assert_array_equal(out, alra(X))  # fixed random state


# --- k-NN smoothing, raw, MAGIC -----------------------------------------------------------


def test_knn_smooth_hand_case():
    X = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    expected = np.array([[0.95, 0.05], [0.95, 0.05], [0.05, 0.95], [0.05, 0.95]], dtype=np.float32)
    np.testing.assert_allclose(knn_smooth(X, k=1), expected, rtol=1e-6)
    np.testing.assert_allclose(knn_smooth(sp.csr_matrix(X), k=1), expected, rtol=1e-6)
    # k = n - 1 and all similarities positive: every cell becomes the mean of all cells.
    Y = X + np.float32(0.1)
    np.testing.assert_allclose(knn_smooth(Y, k=3), np.tile(Y.mean(axis=0), (4, 1)), rtol=1e-6)


def test_knn_smooth_ignores_cells_of_zero_similarity():
    X = np.array([[1, 0], [2, 0], [0, 1]], dtype=np.float32)
    np.testing.assert_allclose(knn_smooth(X, k=2), [[1.5, 0], [1.5, 0], [0, 1]])


def test_raw_is_a_dense_copy(X):
    out = raw(sp.csr_matrix(X))
    np.testing.assert_array_equal(out, X)
    out[0, 0] = -1
    assert X[0, 0] != -1


def test_magic_exact_solver(X):
    pytest.importorskip("magic")
    out = magic(X)
    assert out.shape == X.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, magic(sp.csr_matrix(X)))
    # Diffusion smooths: cells become more alike than in the data.
    assert out.std(axis=0).mean() < X.std(axis=0).mean()

"""The paper's evaluation: dropout masks, imputation errors, clustering scores."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from helpers import BLADDER
from sccr._evaluation import clustering_accuracy, clustering_scores, drop_entries, drop_entries_mnar, imputation_errors

# --- clustering accuracy -----------------------------------------------------------------


def test_accuracy_perfect_and_permuted():
    labels = np.array(["a", "a", "b", "b", "c", "c"])
    assert clustering_accuracy(labels, labels) == 1.0
    assert clustering_accuracy(labels, [2, 2, 0, 0, 1, 1]) == 1.0


def test_accuracy_one_error():
    assert clustering_accuracy([0, 0, 0, 1, 1, 1], [1, 1, 0, 0, 0, 0]) == pytest.approx(5 / 6)


def test_accuracy_more_clusters_than_labels():
    # 3 clusters for 2 labels: the best one-to-one matching leaves one cluster unmatched.
    assert clustering_accuracy(["a", "a", "b", "b"], [0, 1, 2, 2]) == pytest.approx(3 / 4)
    assert clustering_accuracy([0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 2, 2]) == pytest.approx(4 / 6)


def test_accuracy_fewer_clusters_than_labels():
    assert clustering_accuracy([0, 1, 2, 2], [5, 5, 7, 7]) == pytest.approx(3 / 4)


def test_accuracy_is_one_to_one_not_majority():
    # Majority vote would give 1.0; a one-to-one matching cannot reuse label 0.
    assert clustering_accuracy([0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 1]) == pytest.approx(4 / 6)


def test_clustering_scores_separable_data():
    rng = np.random.default_rng(0)
    labels = np.repeat(["x", "y", "z"], 20)
    centres = np.array([[0, 0], [10, 0], [0, 10]])
    X = (centres[np.repeat(np.arange(3), 20)] + rng.normal(scale=0.5, size=(60, 2))).astype(np.float32)
    scores = clustering_scores(X, labels, seed=0, n_init=5)
    assert scores == {"ari": 1.0, "nmi": pytest.approx(1.0), "ca": 1.0}
    assert clustering_scores(sp.csr_matrix(X), labels, seed=0, n_init=5)["ari"] == 1.0


def test_clustering_scores_random_labels_low():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(90, 4)).astype(np.float32)
    labels = rng.integers(0, 3, size=90)
    scores = clustering_scores(X, labels, seed=0, n_init=3)
    assert abs(scores["ari"]) < 0.1 and scores["ca"] < 0.6


# --- imputation errors --------------------------------------------------------------------


def test_imputation_errors_hand_case():
    imputed = np.array([1.0, 2.0, 3.0, 4.0])
    truth = np.array([1.0, 2.0, 3.0, 8.0])  # one error of 4
    e = imputation_errors(imputed, truth)
    assert e["rmse"] == pytest.approx(np.sqrt(16 / 4))  # 2
    assert e["mae"] == pytest.approx(4 / 4)  # 1: what the paper calls "RMSE"
    assert e["rmse"] != pytest.approx(e["mae"])
    assert e["median_l1"] == pytest.approx(0.0)
    assert e["cosine"] == pytest.approx((1 + 4 + 9 + 32) / (np.sqrt(30) * np.sqrt(78)))


def test_imputation_errors_median_and_cosine():
    e = imputation_errors([1.0, 0.0, 3.0], [2.0, 0.0, 1.0])  # |err| = 1, 0, 2
    assert e["median_l1"] == pytest.approx(1.0)
    assert e["mae"] == pytest.approx(1.0)
    assert e["rmse"] == pytest.approx(np.sqrt(5 / 3))
    assert e["cosine"] == pytest.approx(5 / (np.sqrt(10) * np.sqrt(5)))
    assert imputation_errors([0.0, 0.0], [1.0, 2.0])["cosine"] == 0.0
    assert imputation_errors([1.0, 2.0], [2.0, 4.0])["cosine"] == pytest.approx(1.0)


# --- dropout masks ------------------------------------------------------------------------


def reference_recipe(X: np.ndarray, rate: float, seed: int):
    """The reference code's draw, verbatim (global numpy RNG)."""
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        i, j = np.nonzero(X)
        ix = np.random.choice(range(len(i)), int(np.floor(rate * len(i))), replace=False)
    finally:
        np.random.set_state(state)
    return i[ix], j[ix]


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_drop_count_and_only_nonzeros(X, rate):
    dropped, rows, cols = drop_entries(X, rate, 0)
    nnz = np.count_nonzero(X)
    assert len(rows) == len(cols) == int(np.floor(rate * nnz))
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == len(rows)  # no duplicates
    assert (X[rows, cols] != 0).all()
    assert (dropped[rows, cols] == 0).all()
    keep = np.ones_like(X, dtype=bool)
    keep[rows, cols] = False
    np.testing.assert_array_equal(dropped[keep], X[keep])
    assert np.count_nonzero(dropped) == nnz - len(rows)
    assert dropped.dtype == np.float32


def test_drop_reproducible_and_seed_dependent(X):
    a = drop_entries(X, 0.3, 5)
    b = drop_entries(X, 0.3, 5)
    c = drop_entries(X, 0.3, 6)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[0], b[0])
    assert not (np.array_equal(a[1], c[1]) and np.array_equal(a[2], c[2]))


def test_drop_does_not_touch_global_rng_or_input(X):
    before = X.copy()
    np.random.seed(123)
    expected_next = np.random.random()
    np.random.seed(123)
    drop_entries(X, 0.2, 0)
    assert np.random.random() == expected_next
    np.testing.assert_array_equal(X, before)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_drop_equals_reference_recipe(X, seed):
    rows, cols = reference_recipe(X, 0.2, seed)
    _, r, c = drop_entries(X, 0.2, seed)
    np.testing.assert_array_equal(r, rows)
    np.testing.assert_array_equal(c, cols)


def test_drop_sparse_equals_dense(X):
    Xs = sp.csr_matrix(X)
    data = Xs.data.copy()
    dense, r1, c1 = drop_entries(X, 0.4, 1)
    sparse, r2, c2 = drop_entries(Xs, 0.4, 1)
    assert sp.issparse(sparse) and sparse.dtype == np.float32
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(sparse.toarray(), dense)
    assert sparse.nnz == np.count_nonzero(dense)  # dropped entries are not stored
    np.testing.assert_array_equal(Xs.data, data)


def test_drop_sparse_ignores_explicit_zeros(X):
    Xs = sp.csr_matrix(X)
    Xs.data[:3] = 0.0  # stored zeros are not non-zeros
    dense = Xs.toarray()
    _, r1, c1 = drop_entries(dense, 0.2, 0)
    _, r2, c2 = drop_entries(Xs, 0.2, 0)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(c1, c2)


def test_drop_rate_zero_and_one(X):
    dropped, rows, _ = drop_entries(X, 0.0, 0)
    assert len(rows) == 0
    np.testing.assert_array_equal(dropped, X)
    dropped, rows, _ = drop_entries(X, 1.0, 0)
    assert len(rows) == np.count_nonzero(X)
    assert not dropped.any()


def test_drop_matches_reference_entries_on_real_data(bladder, reference_dir):
    ref = np.load(reference_dir / f"{BLADDER}_d0.2_s0.npz")
    X = bladder.X
    _, rows, cols = drop_entries(X, 0.2, 0)
    np.testing.assert_array_equal(rows, ref["dropped_rows"])
    np.testing.assert_array_equal(cols, ref["dropped_cols"])
    r, c = reference_recipe(X.toarray(), 0.2, 0)
    np.testing.assert_array_equal(rows, r)
    np.testing.assert_array_equal(cols, c)


# --- missing-not-at-random masks -----------------------------------------------------------


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_mnar_count_and_only_nonzeros(X, rate):
    dropped, rows, cols = drop_entries_mnar(X, rate, 0)
    nnz = np.count_nonzero(X)
    assert len(rows) == int(np.floor(rate * nnz))
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == len(rows)
    assert (X[rows, cols] != 0).all() and (dropped[rows, cols] == 0).all()
    assert np.count_nonzero(dropped) == nnz - len(rows)
    assert dropped.dtype == np.float32


def test_mnar_reproducible_seed_dependent_and_sparse_equals_dense(X):
    a = drop_entries_mnar(X, 0.3, 5)
    b = drop_entries_mnar(sp.csr_matrix(X), 0.3, 5)
    c = drop_entries_mnar(X, 0.3, 6)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[0], b[0].toarray())
    assert not (np.array_equal(a[1], c[1]) and np.array_equal(a[2], c[2]))


def test_mnar_drops_low_values_more_often():
    rng = np.random.default_rng(0)
    X = rng.uniform(0.1, 6.0, size=(200, 100)).astype(np.float32)
    values = X.ravel()
    for rate in (0.2, 0.4):
        _, r, c = drop_entries_mnar(X, rate, 0)
        _, r0, c0 = drop_entries(X, rate, 0)
        # Uniform dropout keeps the mean; MNAR removes mostly low values.
        assert X[r0, c0].mean() == pytest.approx(values.mean(), rel=0.03)
        assert X[r, c].mean() < 0.8 * values.mean()
        low, high = values < np.quantile(values, 0.25), values > np.quantile(values, 0.75)
        mask = np.zeros(X.shape, dtype=bool)
        mask[r, c] = True
        assert mask.ravel()[low].mean() > 2 * mask.ravel()[high].mean()


def test_mnar_rate_zero_and_one(X):
    dropped, rows, _ = drop_entries_mnar(X, 0.0, 0)
    assert len(rows) == 0
    np.testing.assert_array_equal(dropped, X)
    dropped, rows, _ = drop_entries_mnar(X, 1.0, 0)
    assert len(rows) == np.count_nonzero(X) and not dropped.any()

"""k-NN graphs (ALGORITHM.md building block 1): sccr._engine.graph.knn_graph."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from helpers import row_block_search
from sccr._engine import graph as _graph
from sccr._engine.graph import knn_graph

S2 = 1 / np.sqrt(2)

# Four 2-D points: cosines are 1/sqrt(2), 0 or negative, with one exact tie (row 1).
HAND = np.array([[1, 0], [1, 1], [0, 1], [-1, 0]], dtype=np.float32)


def row_normalise(A: np.ndarray) -> np.ndarray:
    return A / A.sum(axis=1, keepdims=True)


def test_hand_case_unsymmetrised():
    # k=1: every row keeps itself and its single most similar other row.
    # row 1 ties between rows 0 and 2 (both 1/sqrt 2): row 0 wins (lower index).
    # row 3 is anti-parallel to row 0; its best other row is row 2 at similarity 0.
    expected = row_normalise(
        np.array(
            [
                [2, S2, 0, 0],
                [S2, 2, 0, 0],
                [0, S2, 2, 0],
                [0, 0, 0, 2],
            ]
        )
    )
    A = knn_graph(HAND, 1, sym=False)
    np.testing.assert_allclose(A.toarray(), expected, rtol=1e-6, atol=1e-7)


def test_hand_case_symmetrised():
    A = np.array([[2, S2, 0, 0], [S2, 2, 0, 0], [0, S2, 2, 0], [0, 0, 0, 2]])
    expected = row_normalise((A + A.T) / 2)
    got = knn_graph(HAND, 1, sym=True)
    np.testing.assert_allclose(got.toarray(), expected, rtol=1e-6, atol=1e-7)
    # Row 1 gained row 2 through symmetrisation: weight (1/sqrt 2)/2 before normalising.
    assert got[1, 2] == pytest.approx((S2 / 2) / (2 + S2 + S2 / 2), rel=1e-6)


def test_hand_case_sym_norm():
    A = np.array([[2, S2, 0, 0], [S2, 2, 0, 0], [0, S2, 2, 0], [0, 0, 0, 2]])
    A = (A + A.T) / 2
    d = A.sum(axis=1)
    expected = A / np.sqrt(np.outer(d, d))
    got = knn_graph(HAND, 1, sym=True, norm="sym").toarray()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got, got.T, atol=1e-7)
    assert not np.allclose(got.sum(axis=1), 1.0)  # sym normalisation is not row-stochastic here


def test_self_weight_is_two_before_normalising():
    # Three orthogonal points: nobody has a positive neighbour, so the self-loop (1)
    # plus the kept self-similarity (1) is the only weight.
    M = np.eye(3, dtype=np.float32)
    A = knn_graph(M, 2, sym=False)
    np.testing.assert_array_equal(A.toarray(), np.eye(3, dtype=np.float32))
    # With a neighbour at similarity s the self weight is 2 / (2 + s).
    M = np.array([[1, 0], [1, 1]], dtype=np.float32)
    A = knn_graph(M, 1, sym=False)
    assert A[0, 0] == pytest.approx(2 / (2 + S2), rel=1e-6)
    assert A[0, 1] == pytest.approx(S2 / (2 + S2), rel=1e-6)


def test_negative_similarities_clipped():
    M = np.array([[1, 0], [-1, 0.1]], dtype=np.float32)  # cosine about -0.995
    A = knn_graph(M, 1, sym=True)
    np.testing.assert_array_equal(A.toarray(), np.eye(2, dtype=np.float32))
    assert (A.data >= 0).all()


def test_all_zero_row_keeps_only_self_loop():
    M = np.array([[1, 0], [0, 0], [1, 1], [2, 1]], dtype=np.float32)
    for sym in (False, True):
        A = knn_graph(M, 2, sym=sym).toarray()
        np.testing.assert_array_equal(A[1], [0, 1, 0, 0])
        np.testing.assert_array_equal(A[:, 1], [0, 1, 0, 0])
        np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=1e-6)


def test_ties_broken_towards_lower_index():
    # The hub (row 3) is equally similar (1/sqrt 3) to rows 0, 1, 2.
    M = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], dtype=np.float32)
    A = knn_graph(M, 1, sym=False)
    assert set(A[3].indices) == {0, 3}
    A = knn_graph(M, 2, sym=False)
    assert set(A[3].indices) == {0, 1, 3}
    # Same hub placed first: the lower-index rows among the tied ones still win.
    M2 = M[[3, 0, 1, 2]]
    A2 = knn_graph(M2, 2, sym=False)
    assert set(A2[0].indices) == {0, 1, 2}


def test_ties_after_exact_recomputation_stay_lower_index():
    # Many exact duplicates: each row's k + 1 must be the lowest-index copies.
    base = np.array([[1, 2, 0], [0, 1, 3]], dtype=np.float32)
    M = base[[0, 1, 0, 1, 0, 1, 0, 1]]
    A = knn_graph(M, 1, sym=False)
    for i in range(M.shape[0]):
        twins = [j for j in range(M.shape[0]) if np.array_equal(M[j], M[i])]
        kept = set(A[i].indices)
        assert kept == set(twins[:2]) | {i}, (i, kept)
    np.testing.assert_allclose(A.toarray(), naive.knn(M, 1, sym=False), atol=1e-7)


@pytest.mark.parametrize("sparse", [False, True])
def test_more_tied_rows_than_the_margin_keep_the_lowest_indices(sparse):
    # 40 scaled copies of one profile among noise rows: every copy ties with 39 others, far
    # more than k + 1 + margin candidates, and all of them must be re-ranked exactly.
    rng = np.random.default_rng(3)
    noise = rng.poisson(1.0, size=(30, 12)).astype(np.float32)
    profile = rng.uniform(1, 2, size=12).astype(np.float32)
    copies = profile * np.arange(1, 41, dtype=np.float32)[:, None]
    M = np.vstack([noise[:15], copies, noise[15:]])
    twins = list(range(15, 55))
    indices, values = _graph.knn_neighbours(sp.csr_matrix(M) if sparse else M, 5)
    for i in twins:
        assert sorted(indices[i]) == twins[:6], i
        assert np.all(values[i] == values[i][0])


def test_parallel_rows_tie_broken_towards_lower_index():
    # Rows 1 and 2 are parallel: both scale to the unit vector (1, 0), so row 0 is exactly
    # as similar to each; the documented tie-break keeps row 1.
    M = np.array([[0.9, 0.6], [0.3, 0.0], [0.9, 0.0]], dtype=np.float32)
    A = knn_graph(M, 1, sym=False)
    assert set(A[0].indices) == {0, 1}


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_matches_dense_reimplementation(sym, k):
    rng = np.random.default_rng(1)
    M = rng.normal(size=(25, 6)).astype(np.float32)  # mixed signs: many negative cosines
    M[4] = 0  # an all-zero row
    got = knn_graph(M, k, sym=sym)
    np.testing.assert_allclose(got.toarray(), naive.knn(M, k, sym=sym), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sym", [False, True])
def test_matches_dense_reimplementation_on_expression(X, sym):
    got = knn_graph(X, 5, sym=sym)
    np.testing.assert_allclose(got.toarray(), naive.knn(X, 5, sym=sym), rtol=1e-6, atol=1e-7)


def test_sym_norm_matches_dense_reimplementation(X):
    got = knn_graph(X.T, 2, sym=True, norm="sym")
    np.testing.assert_allclose(got.toarray(), naive.knn(X.T, 2, sym=True, norm="sym"), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("sym", [False, True])
def test_rows_sum_to_one_and_float32(X, sym):
    A = knn_graph(X, 5, sym=sym)
    assert sp.isspmatrix_csr(A) or isinstance(A, sp.csr_array)
    assert A.dtype == np.float32
    assert A.shape == (X.shape[0], X.shape[0])
    np.testing.assert_allclose(np.asarray(A.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    assert (A.diagonal() > 0).all()


def test_entries_per_row(X):
    k = 5
    directed = knn_graph(X, k, sym=False)
    per_row = np.diff(directed.indptr)
    assert per_row.max() <= k + 1
    assert per_row.min() >= 1
    # Symmetrising keeps exactly the union of both directions (hubs may exceed 2(k + 1)).
    union = ((directed != 0) + (directed.T != 0)).astype(bool)
    sym = knn_graph(X, k, sym=True)
    assert ((sym != 0).astype(bool) != union).nnz == 0


def test_symmetrisation_gives_symmetric_pattern_and_weights(X):
    A = knn_graph(X, 4, sym=True)
    assert ((A != 0) != (A.T != 0)).nnz == 0
    # Row normalisation of a symmetric W: A[i, j] / A[j, i] == deg_j / deg_i, and the
    # self-loop weight of W is 2 for every node here, so deg_i = 2 / A[i, i].
    Ad = A.toarray().astype(np.float64)
    deg = 2.0 / Ad.diagonal()
    W = Ad * deg[:, None]
    np.testing.assert_allclose(W, W.T, rtol=1e-5, atol=1e-7)
    Asym = knn_graph(X, 4, sym=True, norm="sym").toarray()
    np.testing.assert_allclose(Asym, Asym.T, atol=1e-7)
    directed = knn_graph(X, 4, sym=False)
    assert ((directed != 0) != (directed.T != 0)).nnz > 0


def test_k_larger_than_rows_keeps_everything():
    M = np.abs(np.random.default_rng(2).normal(size=(5, 3))).astype(np.float32) + 0.1
    A = knn_graph(M, 10, sym=False)
    assert A.nnz == 25  # all cosines of positive vectors are positive
    np.testing.assert_allclose(A.toarray(), naive.knn(M, 10, sym=False), rtol=1e-6)


@pytest.mark.parametrize("min_density", [0.0, 1.1])  # sparse products done as dense chunks, or sparse
def test_sparse_input_equals_dense(X, monkeypatch, min_density):
    monkeypatch.setattr(_graph, "DENSE_PRODUCT_MIN_DENSITY", min_density)
    monkeypatch.setattr(_graph, "SIMILARITY_BLOCK_ELEMENTS", 7 * X.shape[0] + 3)  # several blocks and chunks
    monkeypatch.setattr(_graph, "TILE_ROWS", 11)
    for sym in (False, True):
        dense = knn_graph(X, 5, sym=sym)
        sparse = knn_graph(sp.csr_matrix(X), 5, sym=sym)
        np.testing.assert_array_equal(dense.indices, sparse.indices)
        np.testing.assert_array_equal(dense.indptr, sparse.indptr)
        np.testing.assert_allclose(dense.data, sparse.data, rtol=1e-6)


def test_blockwise_search_independent_of_block_size(X, monkeypatch):
    whole = knn_graph(X, 5, sym=True)
    monkeypatch.setattr(_graph, "SIMILARITY_BLOCK_ELEMENTS", 7 * X.shape[0] + 3)  # 7 rows a block
    monkeypatch.setattr(_graph, "TILE_ROWS", 7)
    blocked = knn_graph(X, 5, sym=True)
    blocked_sparse = knn_graph(sp.csr_matrix(X), 5, sym=True)
    for other in (blocked, blocked_sparse):
        np.testing.assert_array_equal(whole.indices, other.indices)
        np.testing.assert_array_equal(whole.indptr, other.indptr)
        np.testing.assert_allclose(whole.data, other.data, rtol=1e-6)


# --- the symmetric exact search equals the row-block one -----------------------------------


def tricky_rows(n_copies: int = 200, seed: int = 0) -> np.ndarray:
    """Noise rows, an all-zero row, scaled copies of one profile (exact ties after the float64
    re-ranking) and near-copies within float32 rounding of each other."""
    rng = np.random.default_rng(seed)
    noise = rng.poisson(1.0, size=(120, 9)).astype(np.float32)
    profile = rng.uniform(1, 2, size=9).astype(np.float32)
    copies = profile * rng.uniform(0.5, 3, size=n_copies).astype(np.float32)[:, None]
    near = profile * (1 + rng.uniform(-3e-7, 3e-7, size=(40, 9))).astype(np.float32)
    return np.vstack([noise[:60], np.zeros((1, 9), np.float32), copies, noise[60:], near])


def symmetric_search(M, n_neighbours: int):
    M = sp.csr_matrix(M, dtype=np.float32) if sp.issparse(M) else np.ascontiguousarray(M, dtype=np.float32)
    with _graph.current().bar("test", 1) as bar:
        return _graph.symmetric_top(M, n_neighbours, bar)


@pytest.mark.parametrize("tile", [7, 64, 10_000])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("n_neighbours", [1, 4, 16, 600])
def test_symmetric_search_equals_row_block_search(monkeypatch, tile, sparse, n_neighbours):
    # 240 tied or near-tied rows: fewer than the 256 extra candidates re-ranked exactly, so the
    # result does not depend on how the float32 products round (tiny tiles round differently).
    monkeypatch.setattr(_graph, "TILE_ROWS", tile)
    M = sp.csr_matrix(tricky_rows()) if sparse else tricky_rows()
    got, want = symmetric_search(M, n_neighbours), row_block_search(M, n_neighbours)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("tile", [7, 64])
def test_symmetric_search_with_more_ties_than_candidates_keeps_tied_rows(monkeypatch, tile):
    # 300 exact copies: more ties than MAX_EXTRA_CANDIDATES, so which copies are re-ranked is
    # decided by float32 rounding (documented); every copy's neighbours are copies, all at 1.
    monkeypatch.setattr(_graph, "TILE_ROWS", tile)
    M = tricky_rows(n_copies=300)
    copies = np.arange(61, 361)
    indices, values = symmetric_search(M, 16)
    assert np.isin(indices[copies], copies).all()
    np.testing.assert_allclose(values[copies], 1, atol=1e-6)


@pytest.mark.parametrize("n_jobs", [1, 3])
def test_symmetric_search_equals_row_block_search_on_expression(X, monkeypatch, n_jobs):
    from sccr._engine.execution import Execution, executing

    monkeypatch.setattr(_graph, "TILE_ROWS", 13)
    with executing(Execution(n_jobs=n_jobs)):
        got = _graph.knn_neighbours(X, 7)
    want = row_block_search(X, 8)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], np.maximum(want[1], 0))


def test_deterministic(X):
    a = knn_graph(X, 5, sym=True)
    b = knn_graph(X, 5, sym=True)
    assert (a != b).nnz == 0


def test_input_not_mutated(X):
    before = X.copy()
    knn_graph(X, 5, sym=True)
    np.testing.assert_array_equal(X, before)
    Xs = sp.csr_matrix(X)
    data = Xs.data.copy()
    knn_graph(Xs, 5, sym=True)
    np.testing.assert_array_equal(Xs.data, data)


def test_unknown_norm_rejected():
    with pytest.raises(ValueError, match="norm"):
        knn_graph(HAND, 1, sym=True, norm="column")


# --- property-based: random shapes and k against the dense oracle ---------------------


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 30),
    d=st.integers(1, 8),
    k=st.integers(1, 12),
    sym=st.booleans(),
    zero_fraction=st.sampled_from([0.0, 0.5, 0.8]),
    sparse=st.booleans(),
)
def test_random_inputs_equal_dense_oracle(seed, n, d, k, sym, zero_fraction, sparse):
    # Continuous random values, every row all-zero or with >= 2 non-zeros: no two rows are
    # parallel, so the only exact ties are the zero similarities (see test_parallel_rows_tie).
    rng = np.random.default_rng(seed)
    M = (rng.random((n, d)) * (rng.random((n, d)) >= zero_fraction)).astype(np.float32)
    single = np.count_nonzero(M, axis=1) == 1
    M[single] = 0.0
    A = knn_graph(sp.csr_matrix(M) if sparse else M, k, sym=sym)
    assert A.dtype == np.float32
    np.testing.assert_allclose(A.toarray(), naive.knn(M, k, sym=sym), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(A.sum(axis=1)).ravel(), 1.0, rtol=1e-6)

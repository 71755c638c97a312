"""Feature propagation (ALGORITHM.md building block 2): sccr._engine.propagation.propagate."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from helpers import in_threads
from sccr._engine.graph import knn_graph
from sccr._engine.propagation import locality_order, propagate, propagate_block, reorder_graph


@pytest.fixture
def A(X):
    return knn_graph(X, 5, sym=True)


def test_hard_keeps_observed_entries_exactly(A, X):
    out = propagate(A, X, 20, hard=True)
    observed = X != 0
    np.testing.assert_array_equal(out[observed], X[observed])
    # ... and fills in (most of) the rest.
    assert (out[~observed] > 0).mean() > 0.5


@pytest.mark.parametrize("n_iter", [1, 2, 7, 40])
def test_hard_equals_naive_loop(A, X, n_iter):
    out = propagate(A, X, n_iter, hard=True)
    np.testing.assert_allclose(out, naive.hard(A, X, n_iter), rtol=1e-5, atol=1e-6)


def test_hard_one_step_by_hand():
    A = sp.csr_matrix(np.array([[0.5, 0.5, 0], [0.25, 0.5, 0.25], [0, 0.5, 0.5]], dtype=np.float32))
    X0 = np.array([[2.0, 0.0], [0.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = propagate(A, X0, 1, hard=True)
    # A @ X0 = [[1, 2], [0.5, 2], [0, 2]], then the observed (2 at [0,0], 4 at [1,1]) come back.
    np.testing.assert_array_equal(out, np.array([[2, 2], [0.5, 4], [0, 2]], dtype=np.float32))
    out = propagate(A, X0, 2, hard=True)
    # second step from [[2, 2], [0.5, 4], [0, 2]]: A @ . = [[1.25, 3], [0.75, 3], [0.25, 3]]
    np.testing.assert_allclose(out, [[2, 3], [0.75, 4], [0.25, 3]], rtol=1e-7)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.99, 1.0])
def test_soft_equals_naive_loop(A, X, beta):
    out = propagate(A, X, 15, hard=False, beta=beta)
    np.testing.assert_allclose(out, naive.soft(A, X, 15, beta), rtol=1e-5, atol=1e-6)


def test_soft_one_step_by_hand():
    A = sp.csr_matrix(np.array([[0.5, 0.5], [0.5, 0.5]], dtype=np.float32))
    X0 = np.array([[2.0], [0.0]], dtype=np.float32)
    out = propagate(A, X0, 1, hard=False, beta=0.75)
    # 0.75 * [1, 1] + 0.25 * [2, 0]
    np.testing.assert_allclose(out, [[1.25], [0.75]], rtol=1e-7)


def test_soft_changes_observed_entries(A, X):
    out = propagate(A, X, 10, hard=False, beta=0.9)
    assert not np.allclose(out[X != 0], X[X != 0])


@pytest.mark.parametrize("chunk", [1, 3, 7, 1000])
@pytest.mark.parametrize("hard", [True, False])
def test_chunked_equals_unchunked(A, X, chunk, hard):
    whole = propagate(A, X, 12, hard=hard, beta=0.9, chunk=X.shape[1])
    chunked = propagate(A, X, 12, hard=hard, beta=0.9, chunk=chunk)
    np.testing.assert_array_equal(chunked, whole)


@pytest.mark.parametrize("hard", [True, False])
def test_threads_equal_single_thread(A, X, hard):
    one = in_threads(1, propagate, A, X, 12, hard=hard, beta=0.9, chunk=4)
    two = in_threads(2, propagate, A, X, 12, hard=hard, beta=0.9, chunk=4)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("hard", [True, False])
def test_sparse_input_equals_dense(A, X, hard):
    dense = propagate(A, X, 12, hard=hard, beta=0.9, chunk=7)
    for fmt in (sp.csr_matrix, sp.csc_matrix, sp.coo_matrix):
        np.testing.assert_array_equal(propagate(A, fmt(X), 12, hard=hard, beta=0.9, chunk=7), dense)


def test_sparse_explicit_zeros_are_not_observed(A, X):
    # Stored zeros must behave like missing entries, not like observed zeros.
    coo = sp.coo_matrix(X)
    extra_rows = np.array([0, 1])
    extra_cols = np.array([np.flatnonzero(X[0] == 0)[0], np.flatnonzero(X[1] == 0)[0]])
    Xs = sp.csr_matrix(
        (np.r_[coo.data, 0.0, 0.0], (np.r_[coo.row, extra_rows], np.r_[coo.col, extra_cols])),
        shape=X.shape,
        dtype=np.float32,
    )
    assert Xs.nnz == coo.nnz + 2
    np.testing.assert_array_equal(propagate(A, Xs, 8, hard=True), propagate(A, X, 8, hard=True))


@pytest.mark.parametrize("hard", [True, False])
def test_zero_iterations_returns_input(A, X, hard):
    out = propagate(A, X, 0, hard=hard, beta=0.5)
    np.testing.assert_array_equal(out, X)
    assert out is not X
    np.testing.assert_array_equal(propagate(A, sp.csr_matrix(X), 0, hard=hard), X)


def test_output_is_float32_dense(A, X):
    out = propagate(A, sp.csr_matrix(X.astype(np.float64)), 3, hard=True)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == X.shape


def test_input_not_mutated(A, X):
    before = X.copy()
    propagate(A, X, 5, hard=True)
    in_threads(2, propagate, A, X, 5, hard=False, beta=0.5, chunk=3)
    np.testing.assert_array_equal(X, before)
    Xs = sp.csr_matrix(X)
    data, indices = Xs.data.copy(), Xs.indices.copy()
    propagate(A, Xs, 5, hard=True, chunk=3)
    np.testing.assert_array_equal(Xs.data, data)
    np.testing.assert_array_equal(Xs.indices, indices)
    a_data = A.data.copy()
    propagate(A, X, 5, hard=True)
    np.testing.assert_array_equal(A.data, a_data)


def test_noncontiguous_input(A, X):
    Xf = np.asfortranarray(X)
    np.testing.assert_array_equal(propagate(A, Xf, 6, hard=True, chunk=4), propagate(A, X, 6, hard=True, chunk=4))
    wide = np.repeat(X, 2, axis=1)[:, ::2]  # a strided view equal to X
    np.testing.assert_array_equal(propagate(A, wide, 6, hard=True, chunk=4), propagate(A, X, 6, hard=True, chunk=4))


def test_columns_propagate_independently(A, X):
    full = propagate(A, X, 9, hard=True, chunk=5)
    single = propagate(A, X[:, [11]], 9, hard=True)
    np.testing.assert_array_equal(full[:, [11]], single)


def sequential_float32(A: sp.csr_matrix, x0: np.ndarray, n_iter: int, *, hard: bool, beta: float) -> np.ndarray:
    """Each row's neighbours added one at a time, in stored order, in float32: the sums the kernel must make."""
    observed, beta = x0 != 0, np.float32(beta)
    anchor = (np.float32(1) - beta) * x0
    cur = x0.copy()
    for _ in range(n_iter):
        nxt = np.zeros_like(cur)
        for i in range(A.shape[0]):
            for p in range(A.indptr[i], A.indptr[i + 1]):
                nxt[i] = nxt[i] + A.data[p] * cur[A.indices[p]]
        cur = np.where(observed, x0, nxt) if hard else beta * nxt + anchor
    return cur


@pytest.mark.parametrize("hard", [True, False])
def test_kernel_sums_neighbours_in_stored_order_bitwise(hard):
    # Rows of 1 to 10 neighbours, unsorted: groups of four and every remainder.
    rng = np.random.default_rng(3)
    n = 30
    rows = [rng.choice(n, size=1 + i % 10, replace=False) for i in range(n)]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    data = rng.random(indptr[-1], dtype=np.float32) / 3
    A = sp.csr_matrix((data, np.concatenate(rows), indptr), shape=(n, n))
    x0 = rng.random((n, 19), dtype=np.float32) * (rng.random((n, 19)) < 0.4)
    out = propagate_block(A, x0, None, n_iter=6, hard=hard, beta=0.7)
    np.testing.assert_array_equal(out, sequential_float32(A, x0, 6, hard=hard, beta=0.7))


# --- renumbering for locality ---------------------------------------------------------


def shuffled_path(n: int, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray]:
    """The path graph 0-1-...-(n-1) (row-stochastic, self-loops), its nodes relabelled at random."""
    labels = np.random.default_rng(seed).permutation(n)
    rows, cols = [], []
    for i in range(n):
        for j in (i - 1, i, i + 1):
            if 0 <= j < n:
                rows.append(labels[i])
                cols.append(labels[j])
    A = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n, n))
    return sp.csr_matrix(A.multiply(1 / A.sum(axis=1)), dtype=np.float32), labels


def bandwidth(A: sp.csr_matrix) -> int:
    coo = A.tocoo()
    return int(np.abs(coo.row - coo.col).max())


def test_locality_order_puts_path_neighbours_next_to_each_other():
    A, _ = shuffled_path(200)
    assert bandwidth(A) > 100
    order = locality_order(A)
    np.testing.assert_array_equal(np.sort(order), np.arange(200))
    assert bandwidth(reorder_graph(A, order)) == 1


def test_locality_order_of_a_directed_graph_is_a_permutation():
    rng = np.random.default_rng(3)
    A = sp.csr_matrix(rng.random((40, 40)) * (rng.random((40, 40)) < 0.1), dtype=np.float32)  # not symmetric
    np.testing.assert_array_equal(np.sort(locality_order(A)), np.arange(40))


def test_reorder_graph_relabels_nodes_and_keeps_each_rows_stored_order():
    rng = np.random.default_rng(1)
    A = sp.csr_matrix(rng.random((30, 30)) * (rng.random((30, 30)) < 0.2), dtype=np.float32)
    A.indices = np.ascontiguousarray(A.indices[::-1])  # stored order that is not sorted ...
    A.data = np.ascontiguousarray(A.data[::-1])
    A = sp.csr_matrix((A.data, A.indices, A.indptr[-1] - A.indptr[::-1]), shape=A.shape)  # ... in reversed rows
    assert any(np.any(np.diff(A.indices[A.indptr[i] : A.indptr[i + 1]]) < 0) for i in range(30))
    order = rng.permutation(30)
    B = reorder_graph(A, order)
    np.testing.assert_array_equal(B.toarray(), A.toarray()[np.ix_(order, order)])
    inverse = np.argsort(order)
    for new, old in enumerate(order):
        np.testing.assert_array_equal(
            B.data[B.indptr[new] : B.indptr[new + 1]], A.data[A.indptr[old] : A.indptr[old + 1]]
        )
        np.testing.assert_array_equal(
            B.indices[B.indptr[new] : B.indptr[new + 1]], inverse[A.indices[A.indptr[old] : A.indptr[old + 1]]]
        )


@pytest.mark.parametrize("hard", [True, False])
def test_renumbered_propagation_is_bitwise_the_kernel_in_the_original_numbering(hard):
    A, labels = shuffled_path(300, seed=2)
    rng = np.random.default_rng(0)
    X0 = (rng.random((300, 70)) * (rng.random((300, 70)) < 0.3)).astype(np.float32)
    out = in_threads(2, propagate, A, X0, 25, hard=hard, beta=0.9)
    np.testing.assert_array_equal(out, propagate_block(A, X0, None, n_iter=25, hard=hard, beta=0.9))


# --- property-based: random graphs, shapes, chunkings ---------------------------------


def random_graph(rng, n: int, density: float) -> sp.csr_matrix:
    W = rng.random((n, n)) * (rng.random((n, n)) < density) + np.eye(n)
    return sp.csr_matrix((W / W.sum(axis=1, keepdims=True)).astype(np.float32))


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 25),
    g=st.integers(1, 12),
    n_iter=st.integers(0, 6),
    chunk=st.integers(1, 13),
    n_jobs=st.sampled_from([1, 2]),
    hard=st.booleans(),
    beta=st.floats(0.0, 1.0),
)
def test_random_inputs_equal_naive(seed, n, g, n_iter, chunk, n_jobs, hard, beta):
    rng = np.random.default_rng(seed)
    A = random_graph(rng, n, 0.3)
    X0 = (rng.random((n, g)) * (rng.random((n, g)) < 0.4)).astype(np.float32)
    out = in_threads(n_jobs, propagate, A, X0, n_iter, hard=hard, beta=beta, chunk=chunk)
    expected = naive.hard(A, X0, n_iter) if hard else naive.soft(A, X0, n_iter, np.float32(beta))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    if hard:
        np.testing.assert_array_equal(out[X0 != 0], X0[X0 != 0])
    np.testing.assert_array_equal(out, in_threads(1, propagate, A, X0, n_iter, hard=hard, beta=beta, chunk=g))

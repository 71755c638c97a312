"""The scCR pipeline (and scFP, scBFP) end to end on small synthetic matrices."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import naive
import sccr
from helpers import make_expression, run_options
from sccr._engine.graph import knn_graph, signed_gene_graph
from sccr._engine.pipeline import propagate_over_genes, standardisation
from sccr._engine.propagation import propagate
from sccr._options import Options

FAST = dict(k=5, n_iter=10, n_jobs=1)


def impute(X, **kw):
    return sccr.SCCR(**{**FAST, **kw}).fit_transform(X)


def test_output_type_shape_finite(X):
    out = impute(X)
    assert isinstance(out, np.ndarray)
    assert out.dtype == np.float32
    assert out.shape == X.shape
    assert np.isfinite(out).all()
    assert out.flags.c_contiguous


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(gamma=1.0),
        dict(gamma=0.0, alpha=0.5, beta=0.9),
        dict(k=4, k_gene=3, n_iter=20, sym_final=False),
    ],
    ids=["defaults", "gamma1", "gamma0", "nosym"],
)
def test_sccr_equals_dense_oracle(seed, kw):
    """The whole of ALGORITHM.md steps 1-6, with the 2G-node gene graph, in dense float64."""
    X = make_expression(seed=seed)
    params = {**FAST, **kw}
    expected = naive.sccr(X, **{k: v for k, v in params.items() if k != "n_jobs"})
    np.testing.assert_allclose(impute(X, **kw), expected, rtol=1e-5, atol=5e-6)


def test_scfp_equals_dense_oracle(X):
    np.testing.assert_allclose(impute(X, method="scfp"), naive.scfp(X, k=5, n_iter=10), rtol=1e-5, atol=5e-6)


def test_scbfp_equals_dense_oracle(X):
    np.testing.assert_allclose(impute(X, method="scbfp"), naive.scbfp(X, k=5, n_iter=10), rtol=1e-5, atol=5e-6)


def blend_and_final(X, p: Options):
    """B and F of steps 4-5 from the package's own building blocks."""
    D0 = propagate(knn_graph(X, p.k, sym=True), X, p.n_iter, hard=True)
    mean, std = standardisation(D0)
    C = propagate_over_genes(signed_gene_graph(D0, mean, std, p.k_gene), D0, X, mean, std, p.n_iter)
    D1 = propagate(knn_graph(C, p.k, sym=True), X, p.n_iter, hard=True)
    B = p.alpha * D0.astype(np.float64) + (1 - p.alpha) * D1
    F = propagate(knn_graph(B.astype(np.float32), p.k, sym=p.sym_final), X, p.n_iter, hard=False, beta=p.beta)
    return B, F


def test_gamma_one_returns_the_blend(X):
    B, _ = blend_and_final(X, Options(k=5, n_iter=10, n_jobs=1))
    np.testing.assert_allclose(impute(X, gamma=1.0), B, rtol=1e-6, atol=1e-6)


def test_output_is_gamma_mix_of_final_and_blend(X):
    p = Options(k=5, n_iter=10, n_jobs=1, gamma=0.3)
    B, F = blend_and_final(X, p)
    np.testing.assert_allclose(impute(X, gamma=0.3), 0.7 * F + 0.3 * B, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(impute(X, gamma=0.0), F, rtol=1e-5, atol=1e-6)


def test_hard_stages_keep_observed_values(X):
    # gamma=1, alpha anything: B mixes two hard propagations, both keep the observed values.
    out = impute(X, gamma=1.0, alpha=0.3)
    np.testing.assert_allclose(out[X != 0], X[X != 0], rtol=1e-6)


def test_same_input_twice_identical(X):
    np.testing.assert_array_equal(impute(X), impute(X))
    np.testing.assert_array_equal(impute(X, method="scbfp"), impute(X, method="scbfp"))


@pytest.mark.parametrize("method", ["sccr", "scfp", "scbfp"])
def test_input_not_mutated(X, method):
    before = X.copy()
    impute(X, method=method)
    np.testing.assert_array_equal(X, before)
    Xs = sp.csr_matrix(X)
    data, indices, indptr = Xs.data.copy(), Xs.indices.copy(), Xs.indptr.copy()
    impute(Xs, method=method)
    np.testing.assert_array_equal(Xs.data, data)
    np.testing.assert_array_equal(Xs.indices, indices)
    np.testing.assert_array_equal(Xs.indptr, indptr)


def test_sparse_with_unsorted_indices_and_explicit_zeros_not_mutated(X):
    ref = sp.csr_matrix(X)
    # the same matrix with every row's entries stored in reverse order, plus stored zeros
    indices, data = ref.indices.copy(), ref.data.copy()
    for r in range(ref.shape[0]):
        lo, hi = ref.indptr[r], ref.indptr[r + 1]
        indices[lo:hi] = indices[lo:hi][::-1]
        data[lo:hi] = data[lo:hi][::-1]
    data[::7] = 0.0  # explicit zeros: these entries become unobserved
    Xs = sp.csr_matrix((data, indices, ref.indptr.copy()), shape=X.shape)
    assert not Xs.has_sorted_indices
    snapshot = (Xs.data.copy(), Xs.indices.copy(), Xs.indptr.copy())
    out = impute(Xs)
    for a, b in zip((Xs.data, Xs.indices, Xs.indptr), snapshot, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(out, impute(Xs.toarray()), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["sccr", "scfp", "scbfp"])
def test_methods_run_and_differ(X, method):
    out = impute(X, method=method)
    assert out.shape == X.shape and np.isfinite(out).all()
    assert not np.allclose(out, X)
    # imputation fills dropouts
    assert (out[X == 0] > 0).mean() > 0.5


def test_methods_give_different_results(X):
    a, b, c = (impute(X, method=m) for m in ("sccr", "scfp", "scbfp"))
    assert not np.allclose(a, b) and not np.allclose(a, c) and not np.allclose(b, c)


@pytest.mark.parametrize("method", ["sccr", "scfp", "scbfp"])
def test_threads_identical(X, method):
    one = impute(X, method=method, n_jobs=1)
    two = impute(X, method=method, n_jobs=2)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("method", ["sccr", "scfp", "scbfp"])
def test_dense_and_csr_identical(X, method):
    np.testing.assert_allclose(impute(sp.csr_matrix(X), method=method), impute(X, method=method), rtol=1e-6, atol=1e-6)


def test_chunk_size_does_not_change_result(X):
    a = run_options(X, k=5, n_iter=10, chunk=64)
    b = run_options(X, k=5, n_iter=10, chunk=3)
    np.testing.assert_array_equal(a.imputed, b.imputed)


@pytest.mark.parametrize("method", ["sccr", "scfp", "scbfp"])
def test_zero_iterations(X, method):
    out = impute(X, method=method, n_iter=0)
    assert out.shape == X.shape and np.isfinite(out).all()
    if method != "scbfp":  # every stage returns its input: the output is X itself
        np.testing.assert_allclose(out, X, rtol=1e-6, atol=1e-7)


def test_run_result(X):
    result = run_options(X, k=5, n_iter=10)
    assert result.cell_graph.shape == (60, 60)
    np.testing.assert_allclose(np.asarray(result.cell_graph.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    assert result.gene_graph.shape == (30, 30)
    # The blends of steps 4 and 6 are fused into hard_fp_2 and soft_fp.
    expected_stages = {
        "knn_cells_1",
        "hard_fp_1",
        "gene_graph",
        "gene_fp",
        "knn_cells_2",
        "hard_fp_2",
        "knn_cells_3",
        "soft_fp",
        "total",
    }
    assert set(result.timings) == expected_stages
    assert all(t >= 0 for t in result.timings.values())
    assert run_options(X, k=5, n_iter=10, method="scfp").gene_graph is None


def test_final_graph_symmetry_follows_sym_final(X):
    sym = run_options(X, k=5, n_iter=10, sym_final=True).cell_graph
    nosym = run_options(X, k=5, n_iter=10, sym_final=False).cell_graph
    assert ((sym != 0) != (sym.T != 0)).nnz == 0
    assert ((nosym != 0) != (nosym.T != 0)).nnz > 0
    assert np.diff(nosym.indptr).max() <= 6


def test_all_zero_gene_and_cell(X):
    X = X.copy()
    X[:, 3] = 0.0
    X[7] = 0.0
    with pytest.warns(sccr.InputWarning, match="no non-zero value in 1 of 60 cells and 1 of 30 genes"):
        out = impute(X)
    assert np.isfinite(out).all()
    # An empty cell has only its self-loop in the first graph (D0 row stays 0), but the
    # gene stage gives it a profile (its standardised zeros propagate over genes), so the
    # refined graph connects it: it ends imputed, exactly as in the dense oracle.
    np.testing.assert_allclose(out, naive.sccr(X, k=5, n_iter=10), rtol=1e-5, atol=5e-6)
    D0 = propagate(knn_graph(X, 5, sym=True), X, 10, hard=True)
    np.testing.assert_array_equal(D0[7], 0.0)
    np.testing.assert_array_equal(D0[:, 3], 0.0)

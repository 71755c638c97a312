"""Properties that hold for any valid input, checked on small random matrices (hypothesis).

Inputs have continuous random values and at least two non-zeros per cell, so
no two cells are exactly equally similar to a third (cosine similarity ignores
scale: cells with one non-zero in the same gene, or with none, are parallel).
The k-NN graphs break exact ties towards the lower index, so with ties a
permutation of the cells would legitimately change the graphs and the output.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sccr
from sccr._engine.graph import knn_graph
from sccr._engine.propagation import propagate

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def expression(draw, *, min_cells: int = 6, max_cells: int = 24, max_genes: int = 10) -> np.ndarray:
    """Non-negative float32 cells x genes, continuous values, at least 2 non-zeros per cell."""
    n = draw(st.integers(min_cells, max_cells))
    g = draw(st.integers(3, max_genes))
    density = draw(st.floats(0.1, 0.9))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    observed = rng.random((n, g)) < density
    for row in observed:
        row[rng.choice(g, size=2, replace=False)] = True
    return (rng.uniform(0.05, 4.0, size=(n, g)) * observed).astype(np.float32)


@st.composite
def run_options(draw, X: np.ndarray) -> dict:
    n, g = X.shape
    return dict(
        method=draw(st.sampled_from(["sccr", "scfp", "scbfp"])),
        k=draw(st.integers(1, min(6, n - 1))),
        k_gene=draw(st.integers(1, min(3, g - 1))),
        n_iter=draw(st.integers(0, 6)),
        sym_final=draw(st.booleans()),
        n_jobs=1,
    )


def impute(X, **options) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sccr.InputWarning)  # empty cells or genes are valid input
        return sccr.SCCR(**options).fit_transform(X)


@SETTINGS
@given(data=st.data(), X=expression())
def test_output_is_finite_float32(data, X):
    out = impute(X, **data.draw(run_options(X)))
    assert out.dtype == np.float32 and out.shape == X.shape and np.isfinite(out).all()


@SETTINGS
@given(data=st.data(), X=expression(), sparse=st.booleans())
def test_hard_propagation_keeps_observed_entries(data, X, sparse):
    A = knn_graph(X, data.draw(st.integers(1, X.shape[0] - 1)), sym=True)
    out = propagate(A, sp.csr_matrix(X) if sparse else X, data.draw(st.integers(0, 8)), hard=True)
    observed = X != 0
    np.testing.assert_array_equal(out[observed], X[observed])


@SETTINGS
@given(data=st.data(), X=expression(), sym=st.booleans(), sparse=st.booleans())
def test_graph_rows_sum_to_one(data, X, sym, sparse):
    A = knn_graph(sp.csr_matrix(X) if sparse else X, data.draw(st.integers(1, X.shape[0] - 1)), sym=sym)
    assert A.shape == (X.shape[0],) * 2 and (A.data >= 0).all()
    np.testing.assert_allclose(np.asarray(A.sum(axis=1)).ravel(), 1.0, rtol=1e-5)


@SETTINGS
@given(data=st.data(), X=expression(), seed=st.integers(0, 2**31 - 1))
def test_same_seed_same_output(data, X, seed):
    options = data.draw(run_options(X))
    first = impute(X, random_state=seed, **options)
    np.testing.assert_array_equal(impute(X, random_state=seed, **options), first)
    np.testing.assert_array_equal(impute(sp.csr_matrix(X), random_state=seed, **{**options, "n_jobs": 2}), first)


@SETTINGS
@given(data=st.data(), X=expression(min_cells=8), seed=st.integers(0, 2**32 - 1))
def test_permuting_cells_permutes_output(data, X, seed):
    options = data.draw(run_options(X))
    order = np.random.default_rng(seed).permutation(X.shape[0])
    # Summation order changes with the cell order, hence a float32 rounding tolerance.
    np.testing.assert_allclose(impute(X[order], **options), impute(X, **options)[order], rtol=1e-4, atol=1e-5)

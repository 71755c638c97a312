"""Input checks: every bad input raises sccr.InputError (a ValueError) naming the problem."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sccr

FAST = dict(k=5, n_iter=2, n_jobs=1)


def test_input_error_is_value_error():
    assert issubclass(sccr.InputError, ValueError)
    assert issubclass(sccr.CountsWarning, UserWarning)


def both_apis(X, **kw):
    """Yield callables running the array and the AnnData API on X."""
    params = {**FAST, **kw}
    yield lambda: sccr.SCCR(**params).fit(X)
    yield lambda: sccr.impute(ad.AnnData(X=X), **params)


def with_value(X, value, sparse=False):
    X = X.copy()
    X[3, 4] = value
    return sp.csr_matrix(X) if sparse else X


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize(
    "value,match",
    [(np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (-np.inf, "NaN or infinite"), (-0.5, "negative values")],
    ids=["nan", "inf", "-inf", "negative"],
)
def test_bad_values(X, value, match, sparse):
    for call in both_apis(with_value(X, value, sparse)):
        with pytest.raises(sccr.InputError, match=match):
            call()


@pytest.mark.parametrize("shape", [(0, 30), (60, 0), (0, 0)])
def test_empty_matrix(shape):
    X = np.zeros(shape, dtype=np.float32)
    for call in both_apis(X):
        with pytest.raises(sccr.InputError, match="empty"):
            call()
    with pytest.raises(sccr.InputError, match="empty"):
        sccr.SCCR(**FAST).fit(sp.csr_matrix(shape, dtype=np.float32))


def test_not_two_dimensional():
    with pytest.raises(sccr.InputError, match="2-D"):
        sccr.SCCR(**FAST).fit(np.ones(10, dtype=np.float32))


def test_non_numeric():
    with pytest.raises(sccr.InputError, match="dtype"):
        sccr.SCCR(**FAST).fit(np.array([["a", "b"]] * 10))


def test_anndata_passed_to_array_api(adata):
    with pytest.raises(sccr.InputError, match="AnnData"):
        sccr.SCCR(**FAST).fit(adata)


@pytest.mark.parametrize("n_cells", [1, 5])
def test_fewer_cells_than_k_plus_one(X, n_cells):
    for call in both_apis(X[:n_cells]):
        with pytest.raises(sccr.InputError, match=r"k \+ 1"):
            call()


def test_exactly_k_plus_one_cells_is_enough(X):
    with pytest.warns(sccr.InputWarning, match="genes"):  # six cells leave some genes without a value
        out = sccr.SCCR(**FAST).fit_transform(X[:6])
    assert out.shape == (6, 30)


def test_unknown_layer(adata):
    with pytest.raises(sccr.InputError, match="layer 'nope' not found.*'log'"):
        sccr.impute(adata, layer="nope", **FAST)


def test_missing_X_without_layer(adata):
    adata.X = None
    with pytest.raises(sccr.InputError, match="adata.X is empty"):
        sccr.impute(adata, **FAST)


def test_raw_counts_warn(X):
    counts = np.round(np.expm1(X) * 3).astype(np.float32)
    assert counts.max() > 1
    with pytest.warns(sccr.CountsWarning, match="raw counts"):
        sccr.SCCR(**FAST).fit(counts)
    with pytest.warns(sccr.CountsWarning):
        sccr.impute(ad.AnnData(X=sp.csr_matrix(counts)), **FAST)


def test_log_normalised_does_not_warn(X):
    with warnings.catch_warnings():
        warnings.simplefilter("error", sccr.CountsWarning)
        sccr.SCCR(**FAST).fit(X)


@pytest.mark.parametrize(
    "param,value,match",
    [
        ("k", 0, "k must be an integer >= 1"),
        ("k", 2.5, "k must be an integer"),
        ("k", True, "k must be an integer"),
        ("k_gene", 0, "k_gene must be an integer >= 1"),
        ("n_iter", -1, "n_iter must be an integer >= 0"),
        ("alpha", 1.5, r"alpha must be in \[0, 1\]"),
        ("alpha", "much", "alpha must be a number"),
        ("beta", -0.1, r"beta must be in \[0, 1\]"),
        ("gamma", 2, r"gamma must be in \[0, 1\]"),
        ("gamma", float("nan"), "gamma must be in"),
        ("method", "x", "method must be one of sccr, scfp, scbfp"),
        ("knn", "x", "knn must be one of auto, exact"),
        ("n_jobs", 0, "n_jobs must be a positive integer"),
        ("n_jobs", -2, "n_jobs must be a positive integer"),
        ("n_jobs", 1.5, "n_jobs must be a positive integer"),
    ],
)
def test_bad_params(X, param, value, match):
    for call in both_apis(X, **{param: value}):
        with pytest.raises(sccr.InputError, match=match):
            call()


def test_bad_params_checked_before_any_work(adata):
    before = sorted(adata.layers.keys())
    with pytest.raises(sccr.InputError):
        sccr.impute(adata, k=0)
    assert sorted(adata.layers.keys()) == before and "sccr" not in adata.uns


def test_errors_are_catchable_as_value_error(X):
    with pytest.raises(ValueError):
        sccr.SCCR(k=0).fit(X)

"""Array API: sccr.SCCR, a scikit-learn style transformer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.utils.estimator_checks import parametrize_with_checks

import sccr
from helpers import run_options
from sccr._options import DEFAULTS as OPTION_DEFAULTS

FAST = dict(k=5, n_iter=10, n_jobs=1)
DEFAULTS = dict(
    method="sccr",
    k=15,
    k_gene=2,
    n_iter=40,
    alpha=0.05,
    beta=0.99,
    gamma=0.01,
    sym_final=True,
    knn="auto",
    random_state=0,
    n_jobs=None,
    progress=None,
    backend="local",
    client=None,
    memory_budget=None,
    scratch_dir=None,
)


def test_defaults_match_algorithm():
    assert sccr.SCCR().get_params() == DEFAULTS
    p = OPTION_DEFAULTS
    assert (p.k, p.k_gene, p.n_iter, p.alpha, p.beta, p.gamma, p.sym_final) == (15, 2, 40, 0.05, 0.99, 0.01, True)


def test_sklearn_params_and_clone():
    est = sccr.SCCR(k=7, gamma=0.5)
    assert est.get_params()["k"] == 7
    est.set_params(k=9, method="scfp")
    assert est.k == 9 and est.method == "scfp"
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert not hasattr(twin, "imputed_")


def test_fit_returns_self_and_sets_attributes(X):
    est = sccr.SCCR(**FAST)
    assert est.fit(X) is est
    assert est.imputed_.shape == X.shape and est.imputed_.dtype == np.float32
    assert est.n_features_in_ == X.shape[1]
    assert sp.issparse(est.cell_graph_) and est.cell_graph_.shape == (60, 60)
    np.testing.assert_allclose(np.asarray(est.cell_graph_.sum(axis=1)).ravel(), 1.0, rtol=1e-6)
    G = est.gene_graph_
    assert G.shape == (30, 30)
    np.testing.assert_allclose(np.abs(G.toarray()).sum(axis=1), 1.0, rtol=1e-6)
    assert "total" in est.timings_ and est.timings_["total"] > 0


def test_fit_transform_equals_fit_then_imputed(X):
    a = sccr.SCCR(**FAST).fit_transform(X)
    b = sccr.SCCR(**FAST).fit(X).imputed_
    np.testing.assert_array_equal(a, b)


def test_equals_pipeline_run(X):
    expected = run_options(X, k=5, n_iter=10, n_jobs=1).imputed
    np.testing.assert_array_equal(sccr.SCCR(**FAST).fit_transform(X), expected)


def test_gene_graph_per_method(X):
    assert sccr.SCCR(method="scfp", **FAST).fit(X).gene_graph_ is None
    g = sccr.SCCR(method="scbfp", **FAST).fit(X).gene_graph_
    assert g.shape == (30, 30) and (g.data >= 0).all()


@pytest.mark.parametrize(
    "convert",
    [
        lambda X: X.astype(np.float64),
        lambda X: X.tolist(),
        lambda X: sp.csc_matrix(X),
        lambda X: sp.coo_matrix(X),
        lambda X: sp.csr_array(X),
        lambda X: np.asfortranarray(X),
    ],
    ids=["float64", "list", "csc", "coo", "csr_array", "fortran"],
)
def test_accepts_array_likes(X, convert):
    expected = sccr.SCCR(**FAST).fit_transform(X)
    np.testing.assert_allclose(sccr.SCCR(**FAST).fit_transform(convert(X)), expected, rtol=1e-6, atol=1e-6)


def test_accepts_dataframe(X):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=[f"g{j}" for j in range(X.shape[1])])
    np.testing.assert_array_equal(sccr.SCCR(**FAST).fit_transform(df), sccr.SCCR(**FAST).fit_transform(X))


def test_random_state_does_not_change_exact_result(X):
    a = sccr.SCCR(random_state=0, **FAST).fit_transform(X)
    b = sccr.SCCR(random_state=123, **FAST).fit_transform(X)
    np.testing.assert_array_equal(a, b)


def test_knn_exact_equals_auto(X):
    np.testing.assert_array_equal(
        sccr.SCCR(knn="exact", **FAST).fit_transform(X), sccr.SCCR(knn="auto", **FAST).fit_transform(X)
    )


@pytest.mark.parametrize("n_jobs", [None, -1, 2])
def test_n_jobs_all_cores_same_result(X, n_jobs):
    expected = sccr.SCCR(**FAST).fit_transform(X)
    out = sccr.SCCR(k=5, n_iter=10, n_jobs=n_jobs).fit_transform(X)
    np.testing.assert_array_equal(out, expected)


def test_refit_replaces_attributes(X):
    est = sccr.SCCR(**FAST)
    est.fit(X)
    est.fit(X[:40, :20])
    assert est.imputed_.shape == (40, 20) and est.n_features_in_ == 20
    assert est.cell_graph_.shape == (40, 40)


def test_progress_bar_does_not_change_result(X, capsys):
    a = sccr.SCCR(progress=True, **FAST).fit_transform(X)
    b = sccr.SCCR(progress=False, **FAST).fit_transform(X)
    np.testing.assert_array_equal(a, b)


def test_every_stage_has_a_bar_that_stays(X, capsys):
    sccr.SCCR(progress=True, **FAST).fit(X)
    err = capsys.readouterr().err
    stages = [
        "cell graph 1",
        "pre-imputation",
        "gene graph",
        "gene-wise propagation",
        "cell graph 2",
        "refined propagation",
        "cell graph 3",
        "denoising",
    ]
    finished = [line for line in err.replace("\r", "\n").splitlines() if "100%" in line]
    assert [next(s for s in stages if line.startswith(s)) for line in finished] == stages
    sccr.SCCR(progress=False, **FAST).fit(X)
    assert capsys.readouterr().err == ""


_OWN_WORDS = (
    "sccr refuses this input with its own message, which names the problem and the fix "
    "(docs/errors.md; the refusal itself is tested in test_bad_inputs.py), not scikit-learn's wording"
)
#: The checks scikit-learn expects to fail, each with its reason.
EXPECTED_FAILED_CHECKS = {
    "check_positive_only_tag_during_fit": _OWN_WORDS,
    "check_complex_data": _OWN_WORDS,
    "check_estimators_empty_data_messages": _OWN_WORDS,
    "check_fit2d_1sample": _OWN_WORDS + "; one cell has no neighbours (k + 1 cells are needed)",
    "check_fit2d_1feature": _OWN_WORDS + "; cosine similarity between cells needs at least 2 genes",
    "check_dtype_object": "an object array of numbers is imputed; one holding other objects is refused with "
    "sccr.InputError (a ValueError naming the dtype), where scikit-learn expects a TypeError",
}


SKLEARN_CHECKS = parametrize_with_checks(
    [sccr.SCCR(k=3, k_gene=1, n_iter=3, n_jobs=1, progress=False)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED_CHECKS,
)
# scikit-learn 1.6 hands pytest a generator, which pytest 9 deprecates (an error here): make it a list.
SKLEARN_CHECKS = pytest.mark.parametrize(SKLEARN_CHECKS.args[0], list(SKLEARN_CHECKS.args[1]), **SKLEARN_CHECKS.kwargs)


@SKLEARN_CHECKS
def test_scikit_learn_compatible(estimator, check):
    """scikit-learn's estimator checks (transductive: fit_transform only, no transform of new data)."""
    with warnings.catch_warnings():
        # The checks' random data is not expression data: all-zero genes and whole numbers are expected there.
        warnings.simplefilter("ignore", sccr.InputWarning)
        check(estimator)

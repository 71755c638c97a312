"""The paper's preprocessing: sccr.pp.preprocess_paper (and scanpy-style input)."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sccr
from helpers import make_counts

# 5 cells x 5 genes, worked by hand:
# - cell c1 and gene g1 are all zero: dropped in step 1;
# - count variances (ddof=0) over cells c0, c2, c3, c4:
#   g0 [1,2,1,1] 0.1875, g2 [3,1,0,4] 2.5, g3 [0,0,0,2] 0.75, g4 [0,4,0,0] 3.0;
# - top 2 in ascending variance: g2, g4;
# - cell c3 only has counts in g0: dropped in step 3;
# - totals over (g2, g4): c0 3, c2 5, c4 4 -> median 4 -> size factors 0.75, 1.25, 1.
COUNTS = np.array(
    [
        [1, 0, 3, 0, 0],
        [0, 0, 0, 0, 0],
        [2, 0, 1, 0, 4],
        [1, 0, 0, 0, 0],
        [1, 0, 4, 2, 0],
    ],
    dtype=np.float32,
)


@pytest.fixture
def counts() -> ad.AnnData:
    a = ad.AnnData(X=sp.csr_matrix(COUNTS), obs={"celltype": list("abcde")})
    a.obs_names = [f"c{i}" for i in range(5)]
    a.var_names = [f"g{j}" for j in range(5)]
    return a


def test_hand_case(counts):
    out = sccr.pp.preprocess_paper(counts, n_top_genes=2)
    assert list(out.var_names) == ["g2", "g4"]
    assert list(out.obs_names) == ["c0", "c2", "c4"]
    assert list(out.obs["celltype"]) == ["a", "c", "e"]
    expected = np.log1p(np.array([[3 / 0.75, 0], [1 / 1.25, 4 / 1.25], [4 / 1.0, 0]]))
    assert sp.issparse(out.X) and out.X.dtype == np.float32
    np.testing.assert_allclose(out.X.toarray(), expected, rtol=1e-6)
    np.testing.assert_array_equal(out.layers["counts"].toarray(), [[3, 0], [1, 4], [4, 0]])
    np.testing.assert_allclose(out.obs["size_factor"], [0.75, 1.25, 1.0], rtol=1e-6)
    info = out.uns["sccr_preprocess"]
    assert (info["cells_in"], info["genes_in"], info["cells_out"], info["genes_out"]) == (5, 5, 3, 2)
    assert info["gene_list_given"] is False


def test_every_cell_scaled_to_median_total(counts):
    out = sccr.pp.preprocess_paper(counts, n_top_genes=3)
    totals = np.expm1(out.X.toarray().astype(np.float64)).sum(axis=1)
    raw_totals = out.layers["counts"].toarray().sum(axis=1)
    np.testing.assert_allclose(totals, np.median(raw_totals), rtol=1e-5)


def test_ascending_variance_order_and_zero_gene_dropped(counts):
    out = sccr.pp.preprocess_paper(counts, n_top_genes=10)
    assert list(out.var_names) == ["g0", "g3", "g2", "g4"]  # g1 (no counts) is gone
    assert list(out.obs_names) == ["c0", "c2", "c3", "c4"]  # only the empty cell is gone


def test_top_genes_on_larger_data_are_highest_variance():
    counts = make_counts(80, 40, seed=1)
    a = ad.AnnData(X=counts)
    a.var_names = [f"g{j}" for j in range(40)]
    out = sccr.pp.preprocess_paper(a, n_top_genes=10)
    var = counts.astype(np.float64).var(axis=0)
    expected = np.argsort(var, kind="stable")[-10:]
    assert list(out.var_names) == [f"g{j}" for j in expected]
    assert np.all(np.diff(var[expected]) >= 0)


def test_gene_list_respected_in_order(counts):
    out = sccr.pp.preprocess_paper(counts, genes=["g4", "g0"])
    assert list(out.var_names) == ["g4", "g0"]
    assert list(out.obs_names) == ["c0", "c2", "c3", "c4"]  # c0 has g0 now
    totals = np.array([1, 6, 1, 1], dtype=np.float64)  # (g4 + g0) per cell
    expected = np.log1p(np.array([[0, 1], [4, 2], [0, 1], [0, 1]]) / (totals / np.median(totals))[:, None])
    np.testing.assert_allclose(out.X.toarray(), expected, rtol=1e-6)
    assert out.uns["sccr_preprocess"]["gene_list_given"] is True


@pytest.mark.parametrize("genes", [["g2", "nope"], ["g1"]], ids=["absent", "no_counts"])
def test_missing_gene_is_an_error(counts, genes):
    with pytest.raises(ValueError, match="absent or have no counts"):
        sccr.pp.preprocess_paper(counts, genes=genes)


def test_input_not_mutated(counts):
    X = counts.X.copy()
    obs, var = counts.obs.copy(), counts.var.copy()
    sccr.pp.preprocess_paper(counts, n_top_genes=2)
    np.testing.assert_array_equal(counts.X.toarray(), X.toarray())
    assert counts.obs.equals(obs) and counts.var.equals(var)
    assert list(counts.layers.keys()) == [] and "sccr_preprocess" not in counts.uns


def test_dense_input_and_layer(counts):
    sparse_out = sccr.pp.preprocess_paper(counts, n_top_genes=3)
    dense = counts.copy()
    dense.X = COUNTS.copy()
    np.testing.assert_array_equal(sccr.pp.preprocess_paper(dense, n_top_genes=3).X.toarray(), sparse_out.X.toarray())
    layered = counts.copy()
    layered.layers["raw"] = layered.X.copy()
    layered.X = sp.csr_matrix(np.ones_like(COUNTS))
    out = sccr.pp.preprocess_paper(layered, n_top_genes=3, layer="raw")
    np.testing.assert_array_equal(out.X.toarray(), sparse_out.X.toarray())


def test_negative_counts_rejected(counts):
    counts.X = sp.csr_matrix(-COUNTS)
    with pytest.raises(sccr.InputError, match="negative"):
        sccr.pp.preprocess_paper(counts)


def test_count_variance_matches_numpy():
    counts = make_counts(50, 20, seed=2)
    expected = counts.astype(np.float64).var(axis=0)
    np.testing.assert_allclose(sccr.pp.count_variance(counts), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(sccr.pp.count_variance(sp.csr_matrix(counts)), expected, rtol=1e-10, atol=1e-12)


def test_reference_gene_list_on_real_data(bladder):
    assert bladder.shape == (2746, 2000)
    assert bladder.X.dtype == np.float32
    assert (bladder.X.data > 0).all()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_n_top_genes_is_rejected(counts, bad):
    with pytest.raises(sccr.InputError, match="n_top_genes must be an integer >= 1"):
        sccr.pp.preprocess_paper(counts, n_top_genes=bad)


def scanpy_style(counts: np.ndarray) -> np.ndarray:
    """normalize_total (to the median total) then log1p, as scanpy does, in plain numpy."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.log1p(counts / totals * np.median(totals)).astype(np.float32)


def test_scanpy_style_input_accepted_without_warnings():
    counts = make_counts(80, 40, seed=3)
    counts = counts[counts.sum(axis=1) > 0]
    a = ad.AnnData(X=sp.csr_matrix(scanpy_style(counts)))
    a.layers["counts"] = sp.csr_matrix(counts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sccr.impute(a, k=5, n_iter=5, n_jobs=1)
    assert np.isfinite(a.layers["sccr"]).all()
    # ... while the raw counts next to them are flagged
    with pytest.warns(sccr.CountsWarning):
        sccr.impute(a, layer="counts", key_added="raw", k=5, n_iter=5, n_jobs=1)


def test_preprocessed_output_accepted_without_warnings(counts):
    a = ad.AnnData(X=sp.csr_matrix(make_counts(80, 40, seed=4)))
    out = sccr.pp.preprocess_paper(a, n_top_genes=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sccr.impute(out, k=5, n_iter=5, n_jobs=1)

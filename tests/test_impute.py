"""AnnData API: sccr.impute, in scanpy's conventions."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sccr

FAST = dict(k=5, n_iter=10, n_jobs=1)


def snapshot(a: ad.AnnData) -> dict:
    X = a.X.toarray() if sp.issparse(a.X) else np.array(a.X)
    return {
        "X": X,
        "layers": sorted(a.layers.keys()),
        "obsp": sorted(a.obsp.keys()),
        "varp": sorted(a.varp.keys()),
        "uns": sorted(a.uns.keys()),
        "obs": a.obs.copy(),
        "var": a.var.copy(),
        "log": np.array(a.layers["log"]),
    }


def assert_unchanged(a: ad.AnnData, before: dict) -> None:
    after = snapshot(a)
    np.testing.assert_array_equal(after["X"], before["X"])
    np.testing.assert_array_equal(after["log"], before["log"])
    for key in ("layers", "obsp", "varp", "uns"):
        assert after[key] == before[key], key
    assert after["obs"].equals(before["obs"]) and after["var"].equals(before["var"])


def test_in_place_writes_all_outputs(adata):
    assert sccr.impute(adata, **FAST) is None
    imputed = adata.layers["sccr"]
    assert isinstance(imputed, np.ndarray) and imputed.dtype == np.float32
    assert imputed.shape == adata.shape and np.isfinite(imputed).all()

    conn = adata.obsp["sccr_connectivities"]
    assert sp.issparse(conn) and conn.shape == (adata.n_obs, adata.n_obs)
    np.testing.assert_allclose(np.asarray(conn.sum(axis=1)).ravel(), 1.0, rtol=1e-6)

    gene_graph = adata.varp["sccr_gene_graph"]
    assert sp.issparse(gene_graph) and gene_graph.shape == (adata.n_vars, adata.n_vars)
    g = gene_graph.toarray()
    np.testing.assert_allclose(np.abs(g).sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.sign(g), np.sign(g.T))


def test_uns_records_params_versions_timings(adata):
    sccr.impute(adata, gamma=0.2, sym_final=False, **FAST)
    uns = adata.uns["sccr"]
    params = uns["params"]
    assert params["method"] == "sccr"
    assert (params["k"], params["n_iter"], params["gamma"], params["sym_final"]) == (5, 10, 0.2, False)
    assert (params["k_gene"], params["alpha"], params["beta"]) == (2, 0.05, 0.99)
    assert params["layer"] is None and params["n_jobs"] == 1 and params["knn_used"] == "exact"
    assert params["backend"] == "local" and params["scheduler"] is None and "client" not in params
    versions = uns["versions"]
    for name in ("python", "sccr", "numpy", "scipy", "anndata"):
        assert name in versions
    assert versions["sccr"] == sccr.__version__
    assert uns["timings"]["total"] > 0


def test_copy_returns_new_object_and_leaves_input(adata):
    before = snapshot(adata)
    out = sccr.impute(adata, copy=True, **FAST)
    assert isinstance(out, ad.AnnData) and out is not adata
    assert "sccr" in out.layers and "sccr" in out.uns
    assert "sccr_connectivities" in out.obsp and "sccr_gene_graph" in out.varp
    assert_unchanged(adata, before)
    np.testing.assert_array_equal(out.X.toarray(), before["X"])


def test_copy_false_returns_none_and_modifies(adata):
    before = adata.X.toarray()
    assert sccr.impute(adata, copy=False, **FAST) is None
    assert "sccr" in adata.layers
    np.testing.assert_array_equal(adata.X.toarray(), before)  # X itself is never overwritten


def test_layer_is_read(adata):
    adata.X = sp.csr_matrix(adata.layers["log"] * 2)
    sccr.impute(adata, layer="log", **FAST)
    expected = sccr.SCCR(**FAST).fit_transform(adata.layers["log"])
    np.testing.assert_array_equal(adata.layers["sccr"], expected)
    from_x = sccr.SCCR(**FAST).fit_transform(adata.X)
    assert not np.allclose(adata.layers["sccr"], from_x)
    assert adata.uns["sccr"]["params"]["layer"] == "log"


def test_layer_with_empty_X(adata):
    adata.X = None
    sccr.impute(adata, layer="log", **FAST)
    np.testing.assert_array_equal(adata.layers["sccr"], sccr.SCCR(**FAST).fit_transform(adata.layers["log"]))


def test_key_added(adata):
    sccr.impute(adata, key_added="mine", **FAST)
    assert "mine" in adata.layers and "mine" in adata.uns
    assert "mine_connectivities" in adata.obsp and "mine_gene_graph" in adata.varp
    assert "sccr" not in adata.layers and "sccr" not in adata.uns
    assert not any(k.startswith("sccr") for k in [*adata.obsp.keys(), *adata.varp.keys()])


def test_two_methods_side_by_side(adata):
    sccr.impute(adata, key_added="fp", method="scfp", **FAST)
    sccr.impute(adata, key_added="cr", method="sccr", **FAST)
    assert "fp_gene_graph" not in adata.varp  # scFP has no gene graph
    assert "cr_gene_graph" in adata.varp
    assert adata.uns["fp"]["params"]["method"] == "scfp"
    assert not np.allclose(adata.layers["fp"], adata.layers["cr"])


@pytest.mark.parametrize("method", ["sccr", "scfp", "scbfp"])
def test_array_api_equals_anndata_api(adata, method):
    sccr.impute(adata, method=method, **FAST)
    expected = sccr.SCCR(method=method, **FAST).fit_transform(adata.X)
    np.testing.assert_array_equal(adata.layers["sccr"], expected)
    est = sccr.SCCR(method=method, **FAST).fit(adata.X)
    assert (adata.obsp["sccr_connectivities"] != est.cell_graph_).nnz == 0


def test_dense_X(adata):
    dense = adata.copy()
    dense.X = dense.X.toarray()
    sccr.impute(adata, **FAST)
    sccr.impute(dense, **FAST)
    np.testing.assert_allclose(dense.layers["sccr"], adata.layers["sccr"], rtol=1e-6, atol=1e-6)


def test_result_survives_h5ad_round_trip(adata, tmp_path):
    sccr.impute(adata, **FAST)
    path = tmp_path / "out.h5ad"
    adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    np.testing.assert_array_equal(back.layers["sccr"], adata.layers["sccr"])
    assert (back.obsp["sccr_connectivities"] != adata.obsp["sccr_connectivities"]).nnz == 0
    assert back.uns["sccr"]["params"]["k"] == 5


@pytest.mark.filterwarnings("ignore:no non-zero value in:sccr.InputWarning")  # genes emptied by the dropout
def test_gene_graph_is_signed_on_real_data(bladder):
    sub = bladder[:300].copy()
    sccr.impute(sub, k=5, n_iter=5, n_jobs=2)
    g = sub.varp["sccr_gene_graph"]
    assert (g.data > 0).any() and (g.data < 0).any()
    np.testing.assert_allclose(np.abs(g.toarray()).sum(axis=1), 1.0, rtol=1e-5)

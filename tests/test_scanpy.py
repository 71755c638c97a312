"""sccr's cell graph plugs into scanpy: sc.tl.umap and sc.tl.leiden with neighbors_key."""

from __future__ import annotations

import numpy as np
import pytest

sc = pytest.importorskip("scanpy")  # in the [test] extra

import sccr  # noqa: E402


def test_uns_follows_the_neighbors_layout(adata):
    sccr.impute(adata, k=5, n_iter=10, n_jobs=1)
    record = adata.uns["sccr"]
    assert record["connectivities_key"] == "sccr_connectivities" and record["distances_key"] == "sccr_distances"
    assert record["params"]["method"] == "sccr" and record["params"]["n_neighbors"] == 6
    distances = adata.obsp["sccr_distances"]
    assert distances.shape == (adata.n_obs, adata.n_obs) and (distances.diagonal() == 0).all()
    assert (np.diff(distances.indptr) <= 5).all() and (distances.data > 0).all() and (distances.data <= 1).all()


def test_umap_and_leiden_use_the_sccr_graph(adata):
    sccr.impute(adata, k=5, n_iter=10, n_jobs=1)
    sc.tl.umap(adata, neighbors_key="sccr", random_state=0)
    assert adata.obsm["X_umap"].shape == (adata.n_obs, 2) and np.isfinite(adata.obsm["X_umap"]).all()
    sc.tl.leiden(adata, neighbors_key="sccr", flavor="igraph", n_iterations=2, directed=False, random_state=0)
    assert adata.obs["leiden"].nunique() >= 2

"""sccr.get.gene_partners: the signed gene graph as a tidy table, with the correlations behind it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sccr
from sccr._engine.graph import knn_graph
from sccr._engine.propagation import propagate

FAST = dict(k=5, n_iter=10, n_jobs=1)


@pytest.fixture
def imputed(adata):
    sccr.impute(adata, **FAST)
    return adata


def test_table_matches_the_graph_and_the_correlations(imputed, X):
    graph = imputed.varp["sccr_gene_graph"].tocsr()
    D0 = propagate(knn_graph(X, 5, sym=True), X, 10, hard=True)  # the pre-imputation the gene graph is built on
    for g, gene in enumerate(imputed.var_names[:10]):
        table = sccr.get.gene_partners(imputed, gene, n=50)
        assert list(table.columns) == [
            "gene",
            "partner",
            "sign",
            "weight",
            "correlation",
            "partner_cells",
            "gene_cells",
        ]
        row = graph[g]
        expected = {imputed.var_names[h]: w for h, w in zip(row.indices, row.data, strict=True) if h != g}
        assert dict(zip(table["partner"], table["weight"], strict=True)) == pytest.approx(expected)
        assert (np.diff(np.abs(table["weight"].to_numpy())) <= 0).all()  # strongest first
        for partner, sign, correlation in zip(table["partner"], table["sign"], table["correlation"], strict=True):
            h = imputed.var_names.get_loc(partner)
            assert correlation == pytest.approx(np.corrcoef(D0[:, g], D0[:, h])[0, 1], abs=1e-4)
            assert (sign == "associating") == (correlation > 0)
        assert (table["gene_cells"] == int((X[:, g] != 0).sum())).all()
        assert table["partner_cells"].tolist() == [
            int((X[:, imputed.var_names.get_loc(p)] != 0).sum()) for p in table["partner"]
        ]


def test_sign_filter_and_n(imputed):
    both = pd.concat([sccr.get.gene_partners(imputed, g, n=50) for g in imputed.var_names])
    assert set(both["sign"]) == {"associating", "dissociating"}
    gene = both[both["sign"] == "dissociating"]["gene"].iloc[0]
    only = sccr.get.gene_partners(imputed, gene, sign="dissociating")
    assert len(only) >= 1 and (only["sign"] == "dissociating").all() and (only["weight"] < 0).all()
    assert len(sccr.get.gene_partners(imputed, gene, n=1)) == 1


def test_bad_input(adata):
    imputed = adata.copy()
    sccr.impute(imputed, **FAST)
    with pytest.raises(sccr.InputError, match="no gene graph under key 'sccr'"):
        sccr.get.gene_partners(adata, "g0")  # not imputed
    with pytest.raises(sccr.InputError, match="gene 'CD3E' not found in adata.var_names"):
        sccr.get.gene_partners(imputed, "CD3E")
    with pytest.raises(sccr.InputError, match="sign must be"):
        sccr.get.gene_partners(imputed, "g0", sign="positive")
    with pytest.raises(sccr.InputError, match="n must be a positive integer"):
        sccr.get.gene_partners(imputed, "g0", n=0)
    with pytest.raises(sccr.InputError, match="no gene graph under key 'other'"):
        sccr.get.gene_partners(imputed, "g0", key="other")

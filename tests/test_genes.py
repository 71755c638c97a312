"""Graph genes and riding genes (ALGORITHM.md, "Graph genes and propagated genes"), genes=, mask_var=, batch_key=."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import naive
import sccr
from helpers import make_expression
from sccr._engine import GeneSelection, prepare
from sccr._engine.genes import ride_along, sccr_stages
from sccr._engine.matrix import DenseMatrix
from sccr._engine.memory import estimate_peak_bytes, estimate_selection_peak_bytes
from sccr._options import Options

FAST = dict(k=5, n_iter=10, n_jobs=1, progress=False)


@pytest.fixture
def wide() -> ad.AnnData:
    """90 cells x 70 genes; genes 0-29 flagged highly variable, every third of the others a copy of an HVG."""
    X = make_expression(90, 70, seed=3)
    hvg = np.zeros(70, dtype=bool)
    hvg[:30] = True
    X[:, 40] = X[:, 7]  # a riding gene identical to a graph gene
    a = ad.AnnData(X=sp.csr_matrix(X), obs={"batch": np.where(np.arange(90) % 2, "b", "a")})
    a.var_names = [f"g{j}" for j in range(70)]
    a.var["highly_variable"] = hvg
    return a


def test_graph_genes_are_bitwise_the_hvg_run(wide):
    """For the graph genes the result is bitwise today's run on the HVG subset; the graphs are its graphs."""
    sub = wide[:, wide.var["highly_variable"]].copy()
    del sub.var["highly_variable"]
    sccr.impute(sub, **FAST)
    sccr.impute(wide, **FAST)
    hvg = wide.var["highly_variable"].to_numpy()
    np.testing.assert_array_equal(wide.layers["sccr"][:, hvg], sub.layers["sccr"])
    assert (wide.obsp["sccr_connectivities"] != sub.obsp["sccr_connectivities"]).nnz == 0
    G = wide.varp["sccr_gene_graph"]
    assert (G[hvg][:, hvg] != sub.varp["sccr_gene_graph"]).nnz == 0 and G[~hvg].nnz == 0 and G[:, ~hvg].nnz == 0
    assert wide.var["sccr_graph_gene"].tolist() == hvg.tolist() and wide.var["sccr_imputed"].all()
    assert wide.uns["sccr"]["params"]["n_graph_genes"] == 30


def test_a_riding_gene_is_its_stages_alone(wide):
    """A gene outside the graph genes equals the scCR stages run on its column alone over the same three cell graphs."""
    X = wide.X.toarray()
    options = Options(**FAST)
    selection = GeneSelection(np.arange(30), np.ones(70, dtype=bool))
    with prepare(wide.X, options, genes=selection) as job:
        result = job.execute()
    A1, A2, A3 = result.propagation_graphs
    assert (A3 != result.cell_graph).nnz == 0
    p = options
    for j in (35, 41, 69):
        x = X[:, [j]]
        d0 = naive.hard(A1, x, p.n_iter)
        b = p.alpha * d0 + (1 - p.alpha) * naive.hard(A2, x, p.n_iter)
        expected = (1 - p.gamma) * naive.soft(A3, x, p.n_iter, p.beta) + p.gamma * b
        np.testing.assert_allclose(result.imputed[:, [j]], expected, rtol=1e-5, atol=1e-6)
        alone = np.empty_like(x)
        ride_along(
            DenseMatrix(x),
            GeneSelection(np.array([], dtype=np.int64), np.ones(1, bool)),
            DenseMatrix(np.empty((90, 0), np.float32)),
            sccr_stages(A1, A2, A3, p),
            DenseMatrix(alone),
        )
        np.testing.assert_array_equal(result.imputed[:, [j]], alone)  # bitwise: the same kernel on one column
    # A riding copy of a graph gene gets bitwise the graph gene's output: the very same stages.
    np.testing.assert_array_equal(result.imputed[:, 40], result.imputed[:, 7])


def test_genes_hvg_and_a_list(wide):
    all_genes = sccr.impute(wide, copy=True, **FAST)
    hvg = sccr.impute(wide, genes="hvg", copy=True, **FAST)
    listed = sccr.impute(wide, genes=["g50", "g60"], copy=True, **FAST)
    graph = wide.var["highly_variable"].to_numpy()
    X = wide.X.toarray()
    np.testing.assert_array_equal(hvg.layers["sccr"][:, graph], all_genes.layers["sccr"][:, graph])
    np.testing.assert_array_equal(hvg.layers["sccr"][:, ~graph], X[:, ~graph])  # not imputed: the input
    imputed = listed.var["sccr_imputed"].to_numpy()
    assert imputed.sum() == 32 and imputed[50] and imputed[60]
    np.testing.assert_array_equal(listed.layers["sccr"][:, imputed], all_genes.layers["sccr"][:, imputed])
    np.testing.assert_array_equal(listed.layers["sccr"][:, ~imputed], X[:, ~imputed])
    with pytest.raises(sccr.InputError, match="1 of the 2 requested genes are not in var_names"):
        sccr.impute(wide, genes=["g1", "nope"], copy=True, **FAST)


def test_mask_var_and_n_top_genes(wide):
    wide.var["mine"] = np.arange(70) >= 40
    by_column = sccr.impute(wide, mask_var="mine", copy=True, **FAST)
    by_array = sccr.impute(wide, mask_var=wide.var["mine"].to_numpy(), copy=True, **FAST)
    np.testing.assert_array_equal(by_column.layers["sccr"], by_array.layers["sccr"])
    assert by_column.var["sccr_graph_gene"].tolist() == wide.var["mine"].tolist()
    plain = wide.copy()
    del plain.var["highly_variable"]
    top = sccr.impute(plain, n_top_genes=20, copy=True, **FAST)
    variance = plain.X.toarray().astype(np.float64).var(axis=0, ddof=1)
    assert set(np.flatnonzero(top.var["sccr_graph_gene"])) == set(np.argsort(-variance, kind="stable")[:20])
    with pytest.raises(sccr.InputError, match="is not a column of var"):
        sccr.impute(wide, mask_var="absent", copy=True, **FAST)
    with pytest.raises(sccr.InputError, match="must be a boolean mask"):
        sccr.impute(wide, mask_var=np.ones(3, bool), copy=True, **FAST)
    with pytest.raises(sccr.InputError, match="only 2 graph genes for k_gene=2"):
        sccr.impute(wide, mask_var=np.arange(70) < 2, copy=True, **FAST)


def test_without_a_mask_every_gene_builds_the_graphs_as_before(adata):
    """No highly_variable column: the plain pipeline, bitwise, and no new entries."""
    before = sccr.SCCR(k=5, n_iter=10, n_jobs=1).fit_transform(adata.X)
    sccr.impute(adata, **FAST)
    np.testing.assert_array_equal(adata.layers["sccr"], before)
    assert "sccr_imputed" not in adata.var and "n_graph_genes" not in adata.uns["sccr"]["params"]


def test_many_genes_without_a_mask_warn(monkeypatch, adata):
    monkeypatch.setattr(sccr._engine.genes, "MANY_GRAPH_GENES", 10)
    monkeypatch.setattr(sccr._engine, "MANY_GRAPH_GENES", 10)
    with pytest.warns(sccr.InputWarning, match="building the cell and gene graphs from all 30 genes"):
        sccr.impute(adata, **FAST)


def test_scfp_rides_along_and_scbfp_refuses_an_explicit_mask(wide):
    graph = wide.var["highly_variable"].to_numpy()
    sub = wide[:, graph].copy()
    del sub.var["highly_variable"]
    out = sccr.impute(wide, method="scfp", copy=True, **FAST)
    np.testing.assert_array_equal(
        out.layers["sccr"][:, graph], sccr.impute(sub, method="scfp", copy=True, **FAST).layers["sccr"]
    )
    np.testing.assert_array_equal(out.layers["sccr"][:, 40], out.layers["sccr"][:, 7])
    plain = sccr.impute(wide, method="scbfp", copy=True, **FAST)  # the implicit mask is not used by scBFP
    assert "sccr_imputed" not in plain.var
    with pytest.raises(sccr.InputError, match="method='scbfp' builds its gene graph over every imputed gene"):
        sccr.impute(wide, method="scbfp", mask_var="highly_variable", copy=True, **FAST)


def test_impute_file_and_cli_write_every_gene(tmp_path, wide):
    from sccr.cli import main

    src = tmp_path / "in.h5ad"
    wide.write_h5ad(src)
    expected = sccr.impute(wide, copy=True, **FAST).layers["sccr"]
    for name in ("out.h5ad", "out.zarr"):
        sccr.impute_file(src, tmp_path / name, **FAST)
        got = ad.read_zarr(tmp_path / name) if name.endswith("zarr") else ad.read_h5ad(tmp_path / name)
        np.testing.assert_array_equal(got.layers["sccr"], expected)
        assert got.var["sccr_graph_gene"].sum() == 30 and got.var["sccr_imputed"].all()
    genes_file = tmp_path / "genes.txt"
    genes_file.write_text("g50\n# a comment\ng60\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # main() installs its own warning printer
        assert (
            main(
                [
                    "impute",
                    str(src),
                    str(tmp_path / "cli.zarr"),
                    "--genes",
                    str(genes_file),
                    "--k",
                    "5",
                    "--n-iter",
                    "10",
                    "--n-jobs",
                    "1",
                    "--quiet",
                ]
            )
            == 0
        )
    got = ad.read_zarr(tmp_path / "cli.zarr")
    assert got.var["sccr_imputed"].sum() == 32
    np.testing.assert_array_equal(got.layers["sccr"][:, 50], expected[:, 50])


def test_out_of_core_riding_genes_are_bitwise_the_same(tmp_path, wide):
    in_memory = sccr.impute(wide, copy=True, **FAST).layers["sccr"]
    src = tmp_path / "in.h5ad"
    wide.write_h5ad(src)
    budget = estimate_selection_peak_bytes(
        90,
        70,
        30,
        None,
        method="sccr",
        k=5,
        k_gene=2,
        n_jobs=1,
        out_of_core=True,
        output_in_memory=False,
        input_on_disk=True,
    )
    model = sccr.impute_file(src, tmp_path / "out.zarr", memory_budget=budget, **FAST, scratch_dir=str(tmp_path))
    assert model.out_of_core_ and model.input_on_disk_
    np.testing.assert_array_equal(ad.read_zarr(tmp_path / "out.zarr").layers["sccr"], in_memory)


def test_memory_plan_is_linear_in_the_riding_genes_and_refuses_the_dense_layer():
    common = dict(method="sccr", k=15, k_gene=2, n_jobs=2, exact=False)
    hvg = estimate_selection_peak_bytes(100_000, 2_000, 2_000, None, output_in_memory=False, **common)
    wide_ = [
        estimate_selection_peak_bytes(100_000, g, 2_000, None, output_in_memory=False, **common)
        for g in (4_000, 14_000, 30_000)
    ]
    assert wide_[0] == wide_[1] == wide_[2] <= 8 << 30  # out of memory, the riding genes cost blocks only
    assert hvg <= estimate_peak_bytes(100_000, 2_000, None, **common) + (1 << 30)
    in_memory = [estimate_selection_peak_bytes(100_000, g, 2_000, None, **common) for g in (4_000, 14_000)]
    assert in_memory[1] - in_memory[0] == 4 * 100_000 * 10_000  # the dense layer itself
    X = make_expression(90, 70, seed=3)
    without_layer = estimate_selection_peak_bytes(
        90, 70, 30, None, method="sccr", k=5, k_gene=2, n_jobs=1, out_of_core=True, output_in_memory=False
    )
    big = dict(FAST, memory_budget=without_layer + 100)  # everything fits but the dense layer (25 KiB)
    with pytest.raises(sccr.InputError, match=r"the imputed layer of 90 cells x 70 genes takes .* impute fewer genes"):
        with prepare(X, Options(**big), genes=GeneSelection(np.arange(30), np.ones(70, bool))):
            pass


@pytest.mark.parametrize("mode", ["balanced", "within"])
def test_batch_key_builds_cell_graphs_per_batch(wide, mode):
    out = sccr.impute(wide, batch_key="batch", batch_mode=mode, copy=True, **FAST)
    A = out.obsp["sccr_distances"].tocoo()
    batch = wide.obs["batch"].to_numpy()
    same = batch[A.row] == batch[A.col]
    if mode == "within":
        assert same.all()
    else:
        per_cell = np.bincount(A.row[~same], minlength=90)
        assert (per_cell == 3).all()  # ceil(6 / 2) from the other batch, 3 from its own (itself included)
    assert out.uns["sccr"]["params"]["batch_key"] == "batch"
    with pytest.raises(sccr.InputError, match="is not a column of obs"):
        sccr.impute(wide, batch_key="nope", copy=True, **FAST)
    small = wide.copy()
    small.obs["batch"] = ["x"] + ["y"] * 89
    with pytest.raises(sccr.InputError, match="batch 'x' has only 1 cells"):
        sccr.impute(small, batch_key="batch", batch_mode=mode, copy=True, **FAST)

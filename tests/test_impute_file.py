"""File API: sccr.impute_file, the .h5ad-to-.h5ad path of ``sccr impute``."""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pytest

import sccr

FAST = dict(k=5, n_iter=10, n_jobs=1)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("memory_budget", [None, "out of core"])
def test_equals_impute_and_leaves_the_input_alone(adata, tmp_path, memory_budget):
    source, target = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    adata.write_h5ad(source)
    before = digest(source)
    options = dict(layer="log", key_added="imp", **FAST)
    if memory_budget is not None:  # a budget only an out-of-core run fits
        from sccr._engine.memory import estimate_peak_bytes

        n, g = adata.shape
        options["memory_budget"] = estimate_peak_bytes(
            n, g, None, method="sccr", k=5, k_gene=2, n_jobs=1, out_of_core=True, output_in_memory=False
        )
    model = sccr.impute_file(source, target, **options)
    assert digest(source) == before
    assert model.out_of_core_ is (memory_budget is not None)
    assert not hasattr(model, "imputed_")  # the matrix is in the file, not in memory
    expected = sccr.impute(adata, copy=True, layer="log", key_added="imp", **FAST)
    written = ad.read_h5ad(target)
    np.testing.assert_array_equal(written.layers["imp"], expected.layers["imp"])
    assert (written.obsp["imp_connectivities"] != expected.obsp["imp_connectivities"]).nnz == 0
    assert written.uns["imp"]["params"]["layer"] == "log"
    np.testing.assert_array_equal(written.layers["log"], adata.layers["log"])  # the input's elements are kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "out.h5ad"]


def test_refuses_to_replace_an_existing_output_unless_forced(adata, tmp_path):
    source, target = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    adata.write_h5ad(source)
    target.write_bytes(b"mine")
    with pytest.raises(sccr.InputError, match="already exists"):
        sccr.impute_file(source, target, layer="log", **FAST)
    assert target.read_bytes() == b"mine"
    sccr.impute_file(source, target, layer="log", force=True, **FAST)
    assert "sccr" in ad.read_h5ad(target).layers


def test_backed_anndata_message_points_here(adata, tmp_path):
    adata.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    try:
        with pytest.raises(sccr.InputError, match=r"sccr\.impute_file\(path, output_path\)"):
            sccr.impute(backed, layer="log", **FAST)
    finally:
        backed.file.close()


# --- the input read lazily: streamed into a scratch file when only that fits -------------------


def tree_digest(path) -> str:
    """One digest of a file, or of every file of a folder (a zarr store) with its relative name."""
    if path.is_file():
        return digest(path)
    parts = [f"{p.relative_to(path)}:{digest(p)}" for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def write(adata, path):
    if path.suffix == ".zarr":
        adata.write_zarr(path)
    else:
        adata.write_h5ad(path)
    return path


def read(path):
    return ad.read_zarr(path) if path.suffix == ".zarr" else ad.read_h5ad(path)


def streaming_budget(shape, *, method="sccr", knn="exact", k=5):
    """A memory budget that only a run with its input streamed to a scratch file fits."""
    from sccr._engine.memory import estimate_peak_bytes

    return estimate_peak_bytes(
        *shape,
        None,
        method=method,
        k=k,
        k_gene=2,
        n_jobs=1,
        out_of_core=True,
        output_in_memory=False,
        exact=knn == "exact",
        input_on_disk=True,
    )


def stored_as(adata, layout):
    """A copy of ``adata`` whose X holds the 'log' matrix as a dense, CSR or CSC matrix."""
    import scipy.sparse as sp

    out = adata.copy()
    dense = np.asarray(adata.layers["log"])
    out.X = {"dense": dense, "csr": sp.csr_matrix(dense), "csc": sp.csc_matrix(dense)}[layout]
    return out


@pytest.mark.parametrize("layout", ["dense", "csr", "csc"])
@pytest.mark.parametrize("method,knn", [("sccr", "exact"), ("sccr", "approx"), ("scfp", "exact"), ("scbfp", "exact")])
def test_streamed_input_gives_the_in_memory_result(adata, tmp_path, monkeypatch, layout, method, knn):
    """An input streamed block by block into a scratch file gives, bitwise, what the dense matrix gives in memory."""
    monkeypatch.setattr("sccr._io.READ_BLOCK_BYTES", 7 * 4 * adata.n_vars)  # blocks of 7 rows (or 64 columns)
    source = write(stored_as(adata, layout), tmp_path / "in.h5ad")
    options = dict(FAST, method=method, knn=knn)
    model = sccr.impute_file(
        source,
        tmp_path / "out.h5ad",
        scratch_dir=str(tmp_path),
        memory_budget=streaming_budget(adata.shape, method=method, knn=knn),
        **options,
    )
    assert model.out_of_core_ and model.input_on_disk_
    expected = sccr.SCCR(**options).fit(np.asarray(adata.layers["log"]))
    written = ad.read_h5ad(tmp_path / "out.h5ad")
    np.testing.assert_array_equal(written.layers["sccr"], expected.imputed_)
    assert (written.obsp["sccr_connectivities"] != expected.cell_graph_).nnz == 0
    assert written.uns["sccr"]["params"]["input_on_disk"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "out.h5ad"]  # no scratch left


def test_the_plan_reads_the_input_into_memory_when_it_fits(adata, tmp_path):
    source = write(adata, tmp_path / "in.h5ad")
    model = sccr.impute_file(source, tmp_path / "out.h5ad", layer="log", **FAST)
    assert not model.out_of_core_ and not model.input_on_disk_
    assert not ad.read_h5ad(tmp_path / "out.h5ad").uns["sccr"]["params"]["input_on_disk"]


def streamed_failure(adata, tmp_path, monkeypatch, change):
    """The warnings and error of imputing ``change(matrix)`` from a file, streamed in blocks of 7 rows, and in memory."""
    import warnings

    monkeypatch.setattr("sccr._io.READ_BLOCK_BYTES", 7 * 4 * adata.n_vars)
    bad = adata.copy()
    bad.X = change(np.asarray(adata.layers["log"]).copy())
    source = write(bad, tmp_path / "in.h5ad")
    outcomes = []
    for run in (
        lambda: sccr.impute_file(
            source,
            tmp_path / "out.h5ad",
            scratch_dir=str(tmp_path),
            memory_budget=streaming_budget(adata.shape),
            **FAST,
        ),
        lambda: sccr.SCCR(**FAST).fit(bad.X),
    ):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                run()
                error = None
            except sccr.InputError as err:
                error = str(err)
        outcomes.append((error, sorted(str(w.message) for w in caught if issubclass(w.category, sccr.InputWarning))))
    assert sorted(p.name for p in tmp_path.iterdir()) in (["in.h5ad"], ["in.h5ad", "out.h5ad"])
    return outcomes


def nan_in_three_blocks(M):
    M[[0, 20, 59], [1, 2, 3]] = np.nan
    return M


def negative_late(M):
    M[58, 4] = -0.5
    return M


def zero_cell_and_gene(M):
    M[44] = 0
    M[:, 7] = 0
    return M


@pytest.mark.parametrize(
    "change,phrase",
    [
        (nan_in_three_blocks, "contains 3 NaN or infinite values"),
        (negative_late, "negative values (min -0.5)"),
        (lambda M: np.zeros_like(M), "no non-zero value, so there is nothing to propagate"),
    ],
)
def test_streamed_input_is_refused_with_the_in_memory_message(adata, tmp_path, monkeypatch, change, phrase):
    (streamed, _), (in_memory, _) = streamed_failure(adata, tmp_path, monkeypatch, change)
    assert phrase in streamed and streamed == in_memory
    assert not (tmp_path / "out.h5ad").exists()


@pytest.mark.parametrize(
    "change,phrase",
    [
        (lambda M: np.round(M * 10), "looks like raw counts"),
        (zero_cell_and_gene, "1 of 60 cells and 1 of 30 genes"),
    ],
)
def test_streamed_input_warns_as_in_memory(adata, tmp_path, monkeypatch, change, phrase):
    (error, streamed), (_, in_memory) = streamed_failure(adata, tmp_path, monkeypatch, change)
    assert error is None and any(phrase in w for w in streamed) and streamed == in_memory


# --- zarr stores ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source_name,target_name",
    [
        ("in.zarr", "out.zarr"),
        ("in.h5ad", "out.zarr"),
        ("in.zarr", "out.h5ad"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_zarr_input_and_output(adata, tmp_path, source_name, target_name, stream):
    adata.obsm["X_pca"] = np.arange(adata.n_obs * 2, dtype=np.float64).reshape(-1, 2)
    adata.uns["note"] = {"kept": "yes"}
    source = write(adata, tmp_path / source_name)
    before = tree_digest(source)
    options = dict(layer="log", key_added="imp", **FAST)
    if stream:
        options.update(memory_budget=streaming_budget(adata.shape), scratch_dir=str(tmp_path))
    model = sccr.impute_file(source, tmp_path / target_name, **options)
    assert model.input_on_disk_ is stream
    assert tree_digest(source) == before
    expected = sccr.impute(adata, copy=True, layer="log", key_added="imp", **FAST)
    written = read(tmp_path / target_name)
    np.testing.assert_array_equal(written.layers["imp"], expected.layers["imp"])
    assert (written.obsp["imp_connectivities"] != expected.obsp["imp_connectivities"]).nnz == 0
    assert (written.X != adata.X).nnz == 0 and written.X.format == "csr"  # the input's elements, copied
    np.testing.assert_array_equal(written.layers["log"], adata.layers["log"])
    np.testing.assert_array_equal(written.obsm["X_pca"], adata.obsm["X_pca"])
    assert written.uns["note"]["kept"] == "yes" and list(written.obs["group"]) == list(adata.obs["group"])
    assert list(written.obs_names) == list(adata.obs_names) and list(written.var_names) == list(adata.var_names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source_name, target_name])


def test_zarr_output_is_replaced_only_when_forced_and_only_when_complete(adata, tmp_path, monkeypatch):
    source = write(adata, tmp_path / "in.zarr")
    target = tmp_path / "out.zarr"
    sccr.impute_file(source, target, layer="log", **FAST)
    first = tree_digest(target)
    with pytest.raises(sccr.InputError, match="already exists"):
        sccr.impute_file(source, target, layer="log", **FAST)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("sccr._engine.pipeline.signed_gene_neighbours", interrupted)
    with pytest.raises(KeyboardInterrupt):
        sccr.impute_file(source, target, layer="log", force=True, **FAST)
    assert tree_digest(target) == first  # the old output is kept whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "out.zarr"]
    monkeypatch.undo()
    sccr.impute_file(source, target, layer="log", force=True, k=6, n_iter=10, n_jobs=1)
    assert read(target).uns["sccr"]["params"]["k"] == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.zarr", "out.zarr"]


@pytest.mark.parametrize(
    "make,phrase",
    [
        (lambda p: p.mkdir(), "is a folder but not a zarr store"),
        (lambda p: p.write_text("x"), "is not an HDF5/.h5ad file (nor a .zarr store)"),
    ],
)
def test_bad_zarr_inputs(tmp_path, make, phrase):
    source = tmp_path / "in.zarr"
    make(source)
    with pytest.raises(sccr.InputError, match=phrase.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        sccr.impute_file(source, tmp_path / "out.h5ad", **FAST)


def test_zarr_output_path_that_is_a_file_is_refused(adata, tmp_path):
    source = write(adata, tmp_path / "in.h5ad")
    (tmp_path / "out.zarr").write_text("mine")
    with pytest.raises(sccr.InputError, match="is a file, not a zarr store"):
        sccr.impute_file(source, tmp_path / "out.zarr", layer="log", force=True, **FAST)
    assert (tmp_path / "out.zarr").read_text() == "mine"


def test_a_non_matrix_element_is_refused(adata, tmp_path):
    import h5py

    source = write(adata, tmp_path / "in.h5ad")
    with h5py.File(source, "r+") as f:  # a layer that anndata would read as a dataframe
        f.copy(f["obs"], "layers/table")
    with pytest.raises(sccr.InputError, match="layers/table is stored as 'dataframe', not as a matrix"):
        sccr.impute_file(source, tmp_path / "out.h5ad", layer="table", **FAST)

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
        from sccr._memory import estimate_peak_bytes

        n, g = adata.shape
        options["memory_budget"] = estimate_peak_bytes(n, g, None, method="sccr", k=5, k_gene=2, n_jobs=1,
                                                       out_of_core=True, output_in_memory=False)
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

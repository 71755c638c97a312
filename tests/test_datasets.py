"""Bundled data: sccr.datasets."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

import sccr
from helpers import DATA


def test_worm_neuron():
    a = sccr.datasets.worm_neuron()
    assert a.shape == (4186, 13488)
    assert sp.issparse(a.X) and a.X.dtype == np.float32
    assert a.obs["celltype"].nunique() == 10
    assert "source" in a.uns
    data = a.X.data
    assert (data > 0).all() and np.array_equal(data, np.round(data))  # raw counts
    shared = DATA / "worm_neuron.h5ad"
    if shared.exists():
        other = ad.read_h5ad(shared)
        assert (a.X != other.X).nnz == 0
        assert list(a.obs["celltype"]) == list(other.obs["celltype"])

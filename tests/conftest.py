"""Shared fixtures: small synthetic log-normalised matrices and the real mouse bladder data.

Synthetic matrices are made with a fixed numpy seed so every run sees the same
numbers. Tests that need the real data (``../shared``) are skipped when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from helpers import BLADDER, DATA, REFERENCE, bladder_genes, make_expression, require


@pytest.fixture
def X() -> np.ndarray:
    """60 cells x 30 genes, log-normalised, ~60% zeros."""
    return make_expression()


@pytest.fixture
def adata(X) -> ad.AnnData:
    """The synthetic matrix as an AnnData with named cells and genes and a 'log' layer."""
    a = ad.AnnData(
        X=sp.csr_matrix(X),
        obs={"group": (np.arange(X.shape[0]) % 3).astype(str)},
    )
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.var_names = [f"g{j}" for j in range(a.n_vars)]
    a.layers["log"] = X.copy()
    return a


@pytest.fixture(scope="session")
def bladder_raw() -> ad.AnnData:
    """Raw counts of the mouse bladder data (2746 cells x 2003 genes)."""
    return ad.read_h5ad(require(DATA / f"{BLADDER}.h5ad"))


@pytest.fixture(scope="session")
def bladder(bladder_raw) -> ad.AnnData:
    """Mouse bladder, preprocessed as the paper does with the reference's gene list.

    Session-scoped: tests must not modify it (take ``.copy()`` first).
    """
    import sccr

    return sccr.pp.preprocess_paper(bladder_raw, genes=bladder_genes())


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return require(REFERENCE)

"""The paper's preprocessing of raw counts (ALGORITHM.md, evaluation protocol)."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ._adata import get_matrix
from ._engine import check_counts
from ._errors import InputError
from ._options import _check_int


def count_variance(X: sp.spmatrix | np.ndarray) -> np.ndarray:
    """Per-gene variance (ddof=0) of a count matrix, accurate (float64) and sparse-aware.

    The reference code ranks a float32 variance of the densified matrix, whose
    rounding reorders near-equal genes at the cut-off; pass its gene list to
    :func:`preprocess_paper` to compare with it exactly.
    """
    X = sp.csr_matrix(X, dtype=np.float64) if sp.issparse(X) else np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    mean = np.asarray(X.sum(axis=0)).ravel() / n
    squares = np.asarray(X.multiply(X).sum(axis=0)).ravel() if sp.issparse(X) else (X * X).sum(axis=0)
    return np.maximum(squares / n - mean * mean, 0.0)


def _totals(X) -> np.ndarray:
    return np.asarray(X.sum(axis=1)).ravel()


def preprocess_paper(
    adata: ad.AnnData,
    *,
    n_top_genes: int = 2000,
    genes: Sequence[str] | None = None,
    layer: str | None = None,
) -> ad.AnnData:
    """Preprocess raw counts exactly as the scCR paper (and its reference code) does.

    1. drop cells and genes with a total count below 1;
    2. keep the ``n_top_genes`` genes of highest count variance, in ascending
       order of variance (ties: lower index first), or exactly ``genes`` if given;
    3. drop cells left with no counts in those genes;
    4. scale every cell to the median total count, then ``log1p``.

    Parameters
    ----------
    adata
        Raw counts in ``X`` (or ``layer``), cells x genes. Not modified.
    n_top_genes
        Number of highly variable genes to keep.
    genes
        Explicit gene list (and column order) to keep instead of ranking, e.g.
        the list the reference code selected, to compare with it exactly.
    layer
        Read counts from ``adata.layers[layer]`` instead of ``X``.

    Returns
    -------
    anndata.AnnData
        A new object: log-normalised float32 CSR in ``X``, the selected raw counts
        in ``layers['counts']``, the steps recorded in ``uns['sccr_preprocess']``.
    """
    if genes is None:
        _check_int("n_top_genes", n_top_genes, 1)
    counts = check_counts(get_matrix(adata, layer))
    fractional = counts.data[counts.data != np.round(counts.data)]
    if fractional.size:
        where = "X" if layer is None else f"layers[{layer!r}]"
        raise InputError(
            f"the paper's preprocessing expects raw counts, but {where} holds {fractional.size} non-integer values "
            f"(e.g. {float(fractional[0]):.3g}, max {float(counts.data.max()):.3g}): it looks normalised or log-transformed "
            "already; pass the raw counts (layer=..., e.g. 'counts') or impute it as it is without this preprocessing "
            "(command line: --preprocess none)"
        )
    n_cells0, n_genes0 = counts.shape
    cell_ok = _totals(counts) >= 1
    gene_ok = np.asarray(counts[cell_ok].sum(axis=0)).ravel() >= 1
    var_names = adata.var_names[gene_ok]
    counts = counts[cell_ok][:, gene_ok]
    if genes is not None:
        missing = [name for name in genes if name not in set(var_names)]
        if missing:
            raise InputError(
                f"{len(missing)} of the requested genes are absent or have no counts "
                f"(first: {missing[:3]}); pass genes present in adata.var_names"
            )
        order = var_names.get_indexer(list(genes))
    else:
        variance = count_variance(counts)
        order = np.argsort(variance, kind="stable")[-int(n_top_genes) :]
    counts = counts[:, order]
    totals = _totals(counts)
    cell_kept = totals >= 1
    counts, totals = counts[cell_kept], totals[cell_kept]
    size_factor = (totals / np.median(totals)).astype(np.float32)
    X = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    X.data /= np.repeat(size_factor, np.diff(X.indptr))
    np.log1p(X.data, out=X.data)

    cell_index = np.flatnonzero(cell_ok)[cell_kept]
    out = ad.AnnData(
        X=X,
        obs=adata.obs.iloc[cell_index].copy(),
        var=adata.var.loc[var_names[order]].copy(),
    )
    out.layers["counts"] = sp.csr_matrix(counts, dtype=np.float32)
    out.obs["size_factor"] = size_factor
    out.uns["sccr_preprocess"] = {
        "protocol": "paper",
        "n_top_genes": int(len(order)),
        "gene_list_given": genes is not None,
        "cells_in": int(n_cells0),
        "genes_in": int(n_genes0),
        "cells_out": int(out.n_obs),
        "genes_out": int(out.n_vars),
    }
    return out

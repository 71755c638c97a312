"""Tidy views of what :func:`sccr.impute` learned: a gene's partners in the signed gene graph."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._errors import InputError

SIGNS = ("associating", "dissociating")


def _gene_graph(adata: ad.AnnData, key: str) -> tuple[sp.csr_matrix, sp.csr_matrix | None, dict]:
    """The gene graph, its correlations and the run record under ``key``, with errors that say what to run."""
    record = adata.uns.get(key)
    graph_key = f"{key}_gene_graph"
    if not isinstance(record, dict) or graph_key not in adata.varp:
        raise InputError(
            f"no gene graph under key {key!r} (adata.varp[{graph_key!r}]); run sccr.impute(adata, key_added={key!r}) "
            "with method='sccr' or 'scbfp' first"
        )
    correlations = adata.varp.get(f"{key}_gene_correlations")
    return sp.csr_matrix(adata.varp[graph_key]), None if correlations is None else sp.csr_matrix(correlations), record


def gene_partners(
    adata: ad.AnnData, gene: str, *, sign: str | None = None, n: int = 10, key: str = "sccr"
) -> pd.DataFrame:
    """The partners of ``gene`` in the signed gene graph of :func:`sccr.impute`, strongest first.

    Parameters
    ----------
    adata
        An AnnData imputed by :func:`sccr.impute` (``key_added=key``).
    gene
        A name in ``adata.var_names``.
    sign
        ``"associating"`` (co-expressed, correlation > 0), ``"dissociating"``
        (anti-correlated) or ``None`` (both).
    n
        At most this many partners.
    key
        The ``key_added`` of the run.

    Returns
    -------
    pandas.DataFrame
        One row per partner: ``partner``; ``sign``; ``weight``, its weight in the
        gene's row of the propagation graph (``varp[key + '_gene_graph']``, rows
        sum to 1 in absolute value, the gene's own self-loop excluded here);
        ``correlation``, the Pearson correlation of the two genes over the
        pre-imputation, the evidence the graph was built on (scCR; ``NaN`` for
        scBFP, whose gene graph is not signed); ``partner_cells`` and
        ``gene_cells``, the cells in which each was observed (non-zero) in the
        imputed input. Ordered by decreasing ``|weight|``.
    """
    if sign not in (None, *SIGNS):
        raise InputError(f"sign must be 'associating', 'dissociating' or None, got {sign!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    graph, correlations, record = _gene_graph(adata, key)
    if gene not in adata.var_names:
        raise InputError(
            f"gene {gene!r} not found in adata.var_names; pass one of its names (e.g. {adata.var_names[0]!r})"
        )
    g = adata.var_names.get_loc(gene)
    row = graph[g]
    partners, weights = row.indices, row.data
    keep = partners != g
    partners, weights = partners[keep], weights[keep]
    if correlations is not None:
        # An edge may come from either gene's choice (the graph is symmetrised): take the correlation either way.
        chosen, chosen_by = correlations[g].toarray().ravel(), correlations[:, g].toarray().ravel()
        corr = np.where(chosen != 0, chosen, chosen_by)[partners]
    else:
        corr = np.full(partners.size, np.nan)
    layer = record.get("params", {}).get("layer")
    X = adata.X if layer is None else adata.layers[layer]
    observed = np.asarray((X != 0).sum(axis=0)).ravel()
    table = pd.DataFrame(
        {
            "gene": gene,
            "partner": adata.var_names[partners],
            "sign": np.where(weights > 0, "associating", "dissociating"),
            "weight": weights.astype(np.float64),
            "correlation": corr.astype(np.float64),
            "partner_cells": observed[partners].astype(np.int64),
            "gene_cells": int(observed[g]),
        }
    )
    if sign is not None:
        table = table[table["sign"] == sign]
    order = np.argsort(-np.abs(table["weight"].to_numpy()), kind="stable")
    return table.iloc[order[:n]].reset_index(drop=True)

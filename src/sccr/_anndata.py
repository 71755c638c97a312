"""AnnData API in scanpy's conventions."""

from __future__ import annotations

import anndata as ad

from ._estimator import SCCR
from ._validation import check_key_added, get_matrix, warn_duplicate_names
from ._versions import versions


def impute(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    key_added: str = "sccr",
    method: str = "sccr",
    k: int = 15,
    k_gene: int = 2,
    n_iter: int = 40,
    alpha: float = 0.05,
    beta: float = 0.99,
    gamma: float = 0.01,
    sym_final: bool = True,
    knn: str = "auto",
    random_state: int | None = 0,
    n_jobs: int | None = None,
    progress: bool | None = None,
    backend: str = "local",
    client=None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Impute log-normalised expression with scCR (or its predecessors scFP, scBFP).

    Parameters
    ----------
    adata
        Cells x genes; log-normalised, non-negative expression in ``X`` or ``layer``
        (the output of :func:`sccr.pp.preprocess_paper`, or of scanpy's
        ``normalize_total`` + ``log1p``). Zeros are treated as unobserved.
    layer
        Layer to impute instead of ``X``.
    key_added
        Name of the outputs (entries of that name are replaced, as in scanpy):
        ``layers[key_added]`` (imputed, dense float32),
        ``uns[key_added]`` (parameters, versions, timings),
        ``obsp[key_added + '_connectivities']`` (final cell graph) and, except for
        scFP, ``varp[key_added + '_gene_graph']`` (gene-gene graph; for scCR signed:
        associating > 0, dissociating < 0).
    method
        ``"sccr"``, ``"scfp"`` or ``"scbfp"``.
    k
        Neighbours per cell in the cell graphs.
    k_gene
        Neighbours per gene in the gene graph.
    n_iter
        Propagation iterations of every stage.
    alpha
        Weight of the pre-imputation in the blend of step 4.
    beta
        Propagation weight of the soft (denoising) stage.
    gamma
        Weight of the blend in the output (``1`` returns the blend itself, as in
        the paper's dropout-recovery runs).
    sym_final
        Symmetrise the final cell graph.
    knn
        Neighbour search: ``"exact"``; ``"auto"`` currently always exact.
    random_state
        Seed recorded for the randomised parts (approximate search); exact runs
        are deterministic whatever its value.
    n_jobs
        Threads (``None`` or ``-1``: all available cores).
    progress
        Progress bar per stage (``None``: only on a terminal).
    backend
        ``"local"`` (threads of this process) or ``"dask"``: propagation chunks
        and exact k-NN row blocks run on the workers of a dask.distributed
        cluster, with results equal to the local backend's (see docs/dask.md).
    client
        The ``distributed.Client`` for ``backend="dask"``; ``None`` uses the
        active client.
    copy
        Return a new AnnData and leave ``adata`` untouched. With ``copy=False`` a
        view becomes an actual AnnData (anndata's ``ImplicitModificationWarning``),
        as in scanpy; its parent is not modified.

    Returns
    -------
    AnnData or None
        The new object if ``copy``, else ``None`` (``adata`` is updated in place).
    """
    check_key_added(key_added, layer)
    X = get_matrix(adata, layer)
    warn_duplicate_names(adata)
    model = SCCR(
        method=method, k=k, k_gene=k_gene, n_iter=n_iter, alpha=alpha, beta=beta, gamma=gamma,
        sym_final=sym_final, knn=knn, random_state=random_state, n_jobs=n_jobs, progress=progress,
        backend=backend, client=client,
    )
    model.fit(X)

    params = model.get_params()
    del params["client"]  # recorded as the scheduler's address
    adata = adata.copy() if copy else adata
    adata.layers[key_added] = model.imputed_
    adata.obsp[f"{key_added}_connectivities"] = model.cell_graph_
    if model.gene_graph_ is not None:
        adata.varp[f"{key_added}_gene_graph"] = model.gene_graph_
    adata.uns[key_added] = {
        "params": {
            "layer": layer, **params, "n_jobs": model.n_jobs_, "knn_used": "exact",
            "scheduler": model.scheduler_,
        },
        "versions": versions(),
        "timings": model.timings_,
    }
    return adata if copy else None

"""AnnData API in scanpy's conventions."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import anndata as ad

from ._estimator import SCCR
from ._io import (
    atomic_output, check_output_path, copy_anndata, create_layer, open_for_update, open_matrix,
    output_format, read_anndata, write_anndata, write_element,
)
from ._preprocess import preprocess_paper
from ._propagation import DEFAULT_CHUNK
from ._store import SliceStore, Workspace
from ._validation import InputError, check_key_added, get_matrix, warn_duplicate_names
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
    memory_budget: int | str | None = None,
    scratch_dir: str | None = None,
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
        Neighbour search for the cell graphs: ``"exact"``, ``"approx"`` (candidates
        from a projection, scored with the exact cosine; see docs/knn.md) or
        ``"auto"`` (approximate from 20,000 cells on). Gene graphs are always exact.
    random_state
        Seed of the approximate search (exact runs are deterministic whatever its
        value); with a given seed and ``n_jobs``, runs are reproducible.
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
    memory_budget
        Memory the run may use, in bytes or as a size such as ``"8G"`` (``None``:
        what is available now). When the run does not fit in it, its intermediate
        N x G matrices go to scratch files (same result, bitwise); when it does
        not fit even so, it is refused before it starts.
    scratch_dir
        Folder for those scratch files (``None``: the system's temporary folder);
        they are deleted at the end, also after an error.
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
    warn_duplicate_names(adata.obs_names, adata.var_names)
    model = SCCR(
        method=method, k=k, k_gene=k_gene, n_iter=n_iter, alpha=alpha, beta=beta, gamma=gamma,
        sym_final=sym_final, knn=knn, random_state=random_state, n_jobs=n_jobs, progress=progress,
        backend=backend, client=client, memory_budget=memory_budget, scratch_dir=scratch_dir,
    ).fit(X)
    adata = adata.copy() if copy else adata
    adata.layers[key_added] = model.imputed_
    for where, key, value in _outputs(model, key_added, layer):
        getattr(adata, where)[key] = value
    return adata if copy else None


def _outputs(model: SCCR, key_added: str, layer: str | None) -> list[tuple[str, str, object]]:
    """``(where, key, value)`` of what a fitted ``model`` adds to an AnnData besides the layer."""
    params = model.get_params()
    del params["client"]  # recorded as the scheduler's address
    record = {
        "params": {
            "layer": layer, **params, "n_jobs": model.n_jobs_, "knn_used": model.knn_used_,
            "scheduler": model.scheduler_, "out_of_core": model.out_of_core_,
            "input_on_disk": model.input_on_disk_,
        },
        "versions": versions(),
        "timings": model.timings_,
    }
    outputs = [("obsp", f"{key_added}_connectivities", model.cell_graph_), ("uns", key_added, record)]
    if model.gene_graph_ is not None:
        outputs.append(("varp", f"{key_added}_gene_graph", model.gene_graph_))
    return outputs


def impute_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    layer: str | None = None,
    key_added: str = "sccr",
    preprocess: str = "none",
    n_top_genes: int = 2000,
    force: bool = False,
    echo: Callable[[str], None] = lambda message: None,
    **options,
) -> SCCR:
    """Impute an .h5ad file or .zarr store into a new one, streaming the imputed layer to disk (the ``sccr impute`` command).

    For inputs too large to hold next to their dense imputed matrix: without
    preprocessing only the matrix to impute and the cell and gene names are
    read, and the imputed matrix is written panel by panel into the output,
    never held whole in memory. The matrix itself is read into memory when the
    run fits there; otherwise (see ``memory_budget``) it is streamed block by
    block into a scratch file and checked on the way, so that it is never in
    memory whole either. The output is a copy of ``input`` with what
    :func:`impute` adds (layer, graphs, record), written to a temporary file or
    folder beside ``output`` and renamed at the end; ``input`` is never modified.

    Parameters
    ----------
    input, output
        Paths of .h5ad files or .zarr stores (the output's format follows its
        suffix: ``.zarr`` or else .h5ad; across formats the input is copied
        element by element, its matrices in blocks); ``output`` must not exist
        unless ``force``.
    layer, key_added
        As in :func:`impute`.
    preprocess
        ``"none"``: the matrix is log-normalised; ``"paper"``: it holds raw counts and
        :func:`sccr.pp.preprocess_paper` (``n_top_genes``) is applied first (this
        reads the whole file into memory).
    force
        Replace an existing ``output``.
    echo
        Receives progress messages (the command line prints them).
    **options
        The options of :func:`impute` (``method``, ``k``, ..., ``memory_budget``).

    Returns
    -------
    SCCR
        The fitted model (graphs, timings, ``out_of_core_``, ``input_on_disk_``, ...)
        without ``imputed_``: the imputed matrix is ``layers[key_added]`` of the output.
    """
    output = check_output_path(output, inputs=(input,), force=force)
    kind = output_format(output)
    check_key_added(key_added, layer)
    model = SCCR(**options)
    with ExitStack() as stack:
        workspace = stack.enter_context(Workspace(scratch_dir=model.scratch_dir))
        adata = None
        if preprocess == "paper":
            adata = preprocess_paper(read_anndata(input), n_top_genes=n_top_genes, layer=layer)
            layer, X, obs_names, var_names = None, adata.X, adata.obs_names, adata.var_names
            echo(f"preprocessed (paper): {adata.n_obs} cells x {adata.n_vars} genes")
        elif preprocess == "none":
            X, obs_names, var_names = stack.enter_context(open_matrix(input, layer))
        else:
            raise InputError(f"preprocess must be 'paper' or 'none', got {preprocess!r}")
        warn_duplicate_names(obs_names, var_names)
        prepared = model._prepare(X, output_in_memory=False, workspace=workspace)
        del X
        if prepared.input_on_disk:
            echo(f"streamed the input matrix into a scratch file ({prepared.X.shape[0]} cells x {prepared.X.shape[1]} genes)")
        with atomic_output(output) as tmp:
            if adata is None:
                copy_anndata(Path(input), tmp, kind)
            else:
                write_anndata(adata, tmp, kind)
                del adata
            with open_for_update(tmp, kind) as f:
                layer_out = create_layer(f, key_added, prepared.X.shape, DEFAULT_CHUNK)
                model._run(prepared, out=SliceStore(layer_out), workspace=workspace)
                for where, key, value in _outputs(model, key_added, layer):
                    write_element(f, where, key, value)
    del model.imputed_  # the layer of a file that is now closed
    return model

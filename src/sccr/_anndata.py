"""The AnnData face: :func:`impute` (in memory) and :func:`impute_file` (file to file), in scanpy's conventions."""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ._adata import batch_codes, check_anndata, check_key_added, get_matrix, select_genes, warn_duplicate_names
from ._engine import DenseMatrix, Result, check_checkpoint_folder, no_space_named, prepare
from ._errors import InputError
from ._estimator import SCCR
from ._io import (
    add_column,
    added_bytes,
    atomic_output,
    check_output_path,
    copy_anndata,
    create_layer,
    open_for_update,
    open_matrix,
    output_bytes,
    output_format,
    output_lock,
    read_anndata,
    read_column,
    reserve_space,
    sweep_notes,
    write_anndata,
    write_element,
)
from ._options import DEFAULTS, OPTION_NAMES, Options, with_options_doc
from ._preprocess import preprocess_paper
from ._versions import versions

PREPROCESSING = ("none", "paper")


@with_options_doc
def impute(
    adata: ad.AnnData,
    *,
    layer: str | None = None,
    key_added: str = "sccr",
    genes: str | list = "all",
    mask_var: str | np.ndarray | None = None,
    n_top_genes: int | None = None,
    batch_key: str | None = None,
    batch_mode: str = "balanced",
    method: str = DEFAULTS.method,
    k: int = DEFAULTS.k,
    k_gene: int = DEFAULTS.k_gene,
    n_iter: int = DEFAULTS.n_iter,
    alpha: float = DEFAULTS.alpha,
    beta: float = DEFAULTS.beta,
    gamma: float = DEFAULTS.gamma,
    sym_final: bool = DEFAULTS.sym_final,
    knn: str = DEFAULTS.knn,
    random_state: int | None = DEFAULTS.random_state,
    n_jobs: int | None = DEFAULTS.n_jobs,
    progress: bool | None = DEFAULTS.progress,
    backend: str = DEFAULTS.backend,
    client=DEFAULTS.client,
    memory_budget: int | str | None = DEFAULTS.memory_budget,
    scratch_dir: str | None = DEFAULTS.scratch_dir,
    copy: bool = False,
) -> ad.AnnData | None:
    """Impute log-normalised expression with scCR (or its predecessors scFP, scBFP).

    Parameters
    ----------
    adata
        Cells x genes; log-normalised, non-negative expression in ``X`` or ``layer``
        (the output of :func:`sccr.pp.preprocess_paper`, or of scanpy's
        ``normalize_total`` + ``log1p``). Zeros are treated as unobserved. For a
        numpy array or scipy sparse matrix use :class:`sccr.SCCR`.
    layer
        Layer to impute instead of ``X``.
    key_added
        Name of the outputs (entries of that name are replaced, as in scanpy):
        ``layers[key_added]`` (imputed, dense float32); the final cell graph as
        ``obsp[key_added + '_connectivities']`` and ``obsp[key_added + '_distances']``
        with ``uns[key_added]`` in the layout of ``sc.pp.neighbors`` (so that
        ``sc.tl.umap(adata, neighbors_key=key_added)`` and ``sc.tl.leiden`` use it;
        ``uns[key_added]['params']`` also records the options, versions and timings);
        except for scFP, ``varp[key_added + '_gene_graph']`` (gene-gene propagation
        weights; for scCR signed: associating > 0, dissociating < 0) and, for scCR,
        ``varp[key_added + '_gene_correlations']`` (the Pearson correlation behind
        each chosen gene edge; see :func:`sccr.get.gene_partners`). When the graphs
        use only some genes (below), ``var[key_added + '_graph_gene']`` and
        ``var[key_added + '_imputed']`` say which genes built the graphs and which
        were imputed, and the gene graphs are over the graph genes (zero elsewhere).
    genes
        The genes imputed (ALGORITHM.md, "Graph genes and propagated genes"):
        ``"all"`` (every gene), ``"hvg"`` (the graph genes only) or a list of gene
        names (with the graph genes). The layer covers every gene of ``adata``;
        the columns of genes not imputed hold their input values, unchanged.
    mask_var
        The genes the cell graphs and the gene graph are built from: a boolean
        ``var`` column or a boolean array (scanpy's convention). ``None``:
        ``var['highly_variable']`` when present, else the ``n_top_genes`` of highest
        variance when given, else every gene (with a warning above 5000 genes).
        Every other imputed gene is propagated over the same cell graphs, in the
        same stages; its cost is linear in their number (no extra neighbour search).
    n_top_genes
        Without a mask: build the graphs from this many genes of highest variance
        of the matrix imputed.
    batch_key
        An ``obs`` column of batches: every cell graph finds each cell's neighbours
        batch by batch (``batch_mode``), so that neighbours do not all come from the cell's own batch.
    batch_mode
        ``"balanced"`` (about (k + 1) / B neighbours from each of the B batches, the BBKNN idea)
        or ``"within"`` (all k + 1 from the cell's own batch; batches are then imputed apart).
    {options}
    copy
        Return a new AnnData and leave ``adata`` untouched; required for a view
        (``adata[:, genes]``), whose parent sccr cannot write into.

    Returns
    -------
    AnnData or None
        The new object if ``copy``, else ``None`` (``adata`` is updated in place).
    """
    arguments = locals()
    check_anndata(adata, "sccr.impute")
    check_key_added(key_added, layer)
    if adata.is_view and not copy:
        raise InputError(
            "adata is a view (e.g. adata[:, genes]) and what sccr writes into it would not reach its parent; "
            "impute a copy (sub = adata[:, genes].copy(); sccr.impute(sub)) or pass copy=True to get a new AnnData"
        )
    X = get_matrix(adata, layer)
    warn_duplicate_names(adata.obs_names, adata.var_names)
    options = Options(**{name: arguments[name] for name in OPTION_NAMES})
    var = adata.var
    selection = select_genes(
        adata.var_names,
        lambda name: var[name].to_numpy() if name in var.columns else None,
        X,
        genes=genes,
        mask_var=mask_var,
        n_top_genes=n_top_genes,
        method=options.method,
    )
    batches = None if batch_key is None else batch_codes(_obs_column(adata.obs, batch_key), batch_key, batch_mode)
    with prepare(X, options, genes=selection, batches=batches) as job:
        result = job.execute()
    adata = adata.copy() if copy else adata
    adata.layers[key_added] = result.imputed
    selected = _selection_record(genes, mask_var, n_top_genes, batch_key, batch_mode)
    for where, key, value in _outputs(result, options, key_added, layer, selected):
        if where == "var":
            adata.var[key] = value
        else:
            getattr(adata, where)[key] = value
    return adata if copy else None


def _obs_column(obs, batch_key: str):
    if batch_key not in obs.columns:
        raise InputError(
            f"batch_key={batch_key!r} is not a column of obs; pass the obs column that holds each cell's batch"
        )
    return obs[batch_key].to_numpy()


def _selection_record(genes, mask_var, n_top_genes, batch_key, batch_mode) -> dict:
    """How the genes and batches were chosen, for ``uns[key_added]['params']``."""
    return {
        "genes": genes if isinstance(genes, str) else "list",
        "mask_var": mask_var if isinstance(mask_var, str) or mask_var is None else "array",
        "n_top_genes": n_top_genes,
        "batch_key": batch_key,
        "batch_mode": batch_mode if batch_key is not None else None,
    }


def _embed(G: sp.csr_matrix, index: np.ndarray, n: int) -> sp.csr_matrix:
    """A graph over the genes ``index`` as an ``n x n`` matrix over all genes (zero elsewhere)."""
    coo = G.tocoo()
    out = sp.csr_matrix((coo.data, (index[coo.row], index[coo.col])), shape=(n, n), dtype=G.dtype)
    out.sort_indices()
    return out


def _outputs(
    result: Result, options: Options, key_added: str, layer: str | None, selected: dict | None = None
) -> list[tuple[str, str, object]]:
    """``(where, key, value)`` of what a run adds to an AnnData besides the imputed layer."""
    decisions = result.decisions
    genes = result.genes
    if (
        selected is not None
        and selected["genes"] == "all"
        and selected["mask_var"] is None
        and selected["n_top_genes"] is None
        and selected["batch_key"] is None
    ):
        selected = None  # the plain run records what it always recorded
    params = {
        # What scanpy's neighbors readers look for (sc.tl.umap, sc.tl.leiden with neighbors_key=key_added).
        "n_neighbors": options.k + 1,
        "method": "sccr",
        "metric": "cosine",
        "layer": layer,
        **options.record(),
        "n_jobs": decisions.n_jobs,
        "knn_used": decisions.knn_used,
        "scheduler": decisions.scheduler,
        "out_of_core": decisions.out_of_core,
        "input_on_disk": decisions.input_on_disk,
        **({} if selected is None else {k: v for k, v in selected.items() if v is not None}),
    }
    if genes is not None:
        params["n_graph_genes"], params["n_imputed_genes"] = int(genes.graph.size), int(genes.imputed.sum())
    if decisions.resumed_after is not None:
        params["resumed_after"] = decisions.resumed_after
    record = {
        "connectivities_key": f"{key_added}_connectivities",
        "distances_key": f"{key_added}_distances",
        "params": params,
        "versions": versions(),
        "timings": result.timings,
    }
    outputs = [
        ("obsp", record["connectivities_key"], result.cell_graph),
        ("obsp", record["distances_key"], result.cell_distances),
        ("uns", key_added, record),
    ]
    embed = (lambda G: G) if genes is None else (lambda G: _embed(G, genes.graph, genes.n_genes))
    if result.gene_graph is not None:
        outputs.append(("varp", f"{key_added}_gene_graph", embed(result.gene_graph)))
    if result.gene_correlations is not None:
        outputs.append(("varp", f"{key_added}_gene_correlations", embed(result.gene_correlations)))
    if genes is not None:
        graph = np.zeros(genes.n_genes, dtype=bool)
        graph[genes.graph] = True
        outputs += [("var", f"{key_added}_graph_gene", graph), ("var", f"{key_added}_imputed", genes.imputed.copy())]
    return outputs


def impute_file(
    input: str | os.PathLike,
    output: str | os.PathLike,
    *,
    layer: str | None = None,
    key_added: str = "sccr",
    genes: str | list = "all",
    mask_var: str | None = None,
    n_top_genes: int | None = None,
    batch_key: str | None = None,
    batch_mode: str = "balanced",
    preprocess: str = "none",
    force: bool = False,
    checkpoint: str | os.PathLike | None = None,
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

    Faults: a second run writing the same ``output`` is refused while this one
    runs (a lock file beside it); what runs killed earlier left beside ``output``
    or in the scratch folder is removed first (and named through ``echo``); a run
    whose files do not fit on disk is refused before it starts, and a full disk
    met on the way is one error naming the folder (see docs/errors.md, "Faults").

    Parameters
    ----------
    input, output
        Paths of .h5ad files or .zarr stores (the output's format follows its
        suffix, ``.h5ad`` or ``.zarr``; across formats the input is copied
        element by element, its matrices in blocks); ``output`` must not exist
        unless ``force``.
    layer, key_added, genes, mask_var, batch_key, batch_mode
        As in :func:`impute` (``mask_var``: a column of the file's ``var``). The
        riding genes are propagated super-panel by super-panel and the layer is
        written in column blocks: the cost in memory of imputing every gene is
        those blocks, not the N x all-genes matrix.
    n_top_genes
        ``preprocess="none"``: as in :func:`impute`. ``"paper"``: the genes the
        paper's preprocessing keeps (default 2000), which then all build the graphs.
    preprocess
        ``"none"``: the matrix is log-normalised; ``"paper"``: it holds raw counts and
        :func:`sccr.pp.preprocess_paper` (``n_top_genes``) is applied first (this
        reads the whole file into memory; ``genes`` then applies to the genes it keeps).
    force
        Replace an existing ``output``.
    checkpoint
        A folder (made if missing) where each finished stage's result is kept, with
        a fingerprint of the input and the options: rerunning the same call after the
        run was killed resumes after the last finished stage, with bitwise the same
        output. A checkpoint made for another input, other options or another
        version of sccr is discarded. It is deleted once the output is written.
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
    if preprocess not in PREPROCESSING:
        raise InputError(f"preprocess must be 'paper' or 'none', got {preprocess!r}")
    opts = Options.from_kwargs(**options)  # every option checked before anything is read
    if checkpoint is not None:
        checkpoint = check_checkpoint_folder(checkpoint)
    folder = output.resolve().parent
    for note in sweep_notes(folder):
        echo(note)
    with ExitStack() as stack:
        previous = stack.enter_context(output_lock(output))
        if previous is not None:
            echo(f"took over the lock of {str(output)!r} from sccr run {previous.describe()}, which has ended")
        adata = None
        if preprocess == "paper":
            adata = preprocess_paper(
                read_anndata(input), n_top_genes=2000 if n_top_genes is None else n_top_genes, layer=layer
            )
            layer, source, obs_names, var_names = None, adata.X, adata.obs_names, adata.var_names
            echo(f"preprocessed (paper): {adata.n_obs} cells x {adata.n_vars} genes")
            var_column = lambda name: adata.var[name].to_numpy() if name in adata.var.columns else None  # noqa: E731
            obs_column = lambda name: adata.obs[name].to_numpy() if name in adata.obs.columns else None  # noqa: E731
            top = None
        else:
            source, obs_names, var_names = stack.enter_context(open_matrix(input, layer))
            var_column = lambda name: read_column(input, "var", name)  # noqa: E731
            obs_column = lambda name: read_column(input, "obs", name)  # noqa: E731
            top = n_top_genes
        warn_duplicate_names(obs_names, var_names)
        selection = select_genes(
            var_names, var_column, source, genes=genes, mask_var=mask_var, n_top_genes=top, method=opts.method
        )
        batches = None
        if batch_key is not None:
            column = obs_column(batch_key)
            if column is None:
                raise InputError(
                    f"batch_key={batch_key!r} is not a column of obs; pass the obs column that holds each cell's batch"
                )
            batches = batch_codes(column, batch_key, batch_mode)
        output_size = output_bytes(Path(input) if adata is None else None, source.shape, opts.k, opts.k_gene)
        if adata is not None:
            output_size += adata.X.data.nbytes if hasattr(adata.X, "data") else adata.X.nbytes
        job = stack.enter_context(
            prepare(
                source,
                opts,
                output_in_memory=False,
                checkpoint=checkpoint,
                disk=[(folder, output_size, "the output")],
                genes=selection,
                batches=batches,  # the output's disk space: checked through disk=
            )
        )
        if selection is not None:
            echo(
                f"graphs from {selection.graph.size} genes; imputing {int(selection.imputed.sum())} of {selection.n_genes} genes"
            )
        del source
        for note in job.notes:
            echo(note)
        if job.decisions.input_on_disk:
            echo(f"streamed the input matrix into a scratch file ({job.shape[0]} cells x {job.shape[1]} genes)")
        with no_space_named(folder, "the output", output_size), atomic_output(output) as tmp:
            if adata is None:
                copy_anndata(Path(input), tmp, kind)
            else:
                write_anndata(adata, tmp, kind)
                del adata
            if kind == "h5ad":
                reserve_space(tmp, added_bytes(job.shape, opts.k, opts.k_gene))
            with open_for_update(tmp, kind) as f:
                result = job.execute(out=DenseMatrix(create_layer(f, key_added, job.shape)))
                selected = _selection_record(genes, mask_var, n_top_genes, batch_key, batch_mode)
                for where, key, value in _outputs(result, opts, key_added, layer, selected):
                    if where == "var":
                        add_column(f, "var", key, value)
                    else:
                        write_element(f, where, key, value)
        job.commit()
        model = SCCR(**options)
        model._set_fitted(result, job.X)
    del model.imputed_  # the layer of a file that is now closed
    return model

"""Getting the matrix to impute out of an AnnData, and checking the names sccr writes into it."""

from __future__ import annotations

import warnings

import anndata as ad

from ._errors import InputError, InputWarning


def check_anndata(adata, function: str) -> ad.AnnData:
    """``adata`` itself if it is an AnnData, else an error pointing to the array API."""
    if not isinstance(adata, ad.AnnData):
        raise InputError(
            f"{function} takes an AnnData, got {type(adata).__name__}; for a numpy array or scipy sparse "
            "matrix use sccr.SCCR().fit_transform(X)"
        )
    return adata


def get_matrix(adata: ad.AnnData, layer: str | None):
    """``adata.X`` or ``adata.layers[layer]`` of an in-memory AnnData, with a clear error otherwise."""
    if adata.isbacked:
        raise InputError(
            f"adata is backed by the file {str(adata.filename)!r} and sccr needs it in memory; "
            "load it with adata = adata.to_memory() first, or impute the file without loading it "
            "with sccr.impute_file(path, output_path) (command line: sccr impute)"
        )
    if layer is None:
        if adata.X is None:
            raise InputError("adata.X is empty (None); pass layer= naming the layer to impute")
        return adata.X
    if layer not in adata.layers:
        known = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise InputError(
            f"layer {layer!r} not found in adata.layers (available: {known}); pass one of them or layer=None for X"
        )
    return adata.layers[layer]


def check_key_added(key_added, layer: str | None) -> str:
    """A name usable for the output layer, uns, obsp and varp entries, distinct from the input layer."""
    if not isinstance(key_added, str) or not key_added or "/" in key_added:
        raise InputError(f"key_added must be a non-empty name without '/', got {key_added!r}")
    if key_added == layer:
        raise InputError(f"key_added={key_added!r} would overwrite the input layer; choose another key_added")
    return key_added


def warn_duplicate_names(obs_names, var_names) -> None:
    """Warn when cell or gene names repeat: imputation works by position, but lookups by name become ambiguous."""
    for axis, names in (("obs", obs_names), ("var", var_names)):
        if not names.is_unique:
            warnings.warn(
                f"{int(names.duplicated().sum())} duplicate {axis}_names (first: {names[names.duplicated()][0]!r}); "
                f"sccr imputes by position, but results looked up by name are ambiguous: call adata.{axis}_names_make_unique() first",
                InputWarning,
                stacklevel=3,
            )


GENE_CHOICES = ("all", "hvg")


def select_genes(var_names, var_column, X, *, genes, mask_var, n_top_genes, method: str):
    """The graph genes and the imputed genes (ALGORITHM.md, "Graph genes and propagated genes").

    ``var_column(name)``: a column of ``var`` as an array, or ``None`` when there is
    no such column (in memory or read from a file). ``X``: the matrix to impute, for
    ``n_top_genes`` (any matrix the engine reads in row blocks). Returns a
    :class:`sccr._engine.GeneSelection`, or ``None`` when every gene builds the
    graphs and is imputed (the plain pipeline).
    """
    import numpy as np

    from ._engine import MANY_GRAPH_GENES, GeneSelection, top_variance_genes

    g = len(var_names)
    imputed = _requested(var_names, genes)
    if g == 0:
        return None  # the matrix checks say what is wrong
    explicit = mask_var is not None or n_top_genes is not None
    if mask_var is None:
        column = var_column("highly_variable")
        mask = None if column is None else _as_mask(column, "var['highly_variable']", g)
        source = "highly_variable"
    elif isinstance(mask_var, str):
        column = var_column(mask_var)
        if column is None:
            raise InputError(
                f"mask_var={mask_var!r} is not a column of var; pass the name of a boolean var column or a boolean array"
            )
        mask, source = _as_mask(column, f"var[{mask_var!r}]", g), mask_var
    else:
        mask, source = _as_mask(mask_var, "mask_var", g), "mask_var"
    hvg_only = isinstance(genes, str) and genes == "hvg"
    if method == "scbfp" and not explicit and not hvg_only:
        mask = None  # scBFP's gene graph is over the imputed genes themselves
    if mask is None and n_top_genes is not None:
        if isinstance(n_top_genes, bool) or not isinstance(n_top_genes, (int, np.integer)) or n_top_genes < 1:
            raise InputError(f"n_top_genes must be a positive integer or None, got {n_top_genes!r}")
        mask = np.zeros(g, dtype=bool)
        mask[top_variance_genes(X, min(int(n_top_genes), g))] = True
    if mask is None:
        scbfp = method == "scbfp" and not hvg_only
        mask = imputed.copy() if scbfp else np.ones(g, dtype=bool)
        if mask.sum() > MANY_GRAPH_GENES and not scbfp:
            warnings.warn(
                f"building the cell and gene graphs from all {g} genes (no var['highly_variable'], no mask_var, "
                "no n_top_genes); rare genes then weigh on the graphs and the run is slower: run "
                "sc.pp.highly_variable_genes first, or pass mask_var= or n_top_genes= (every gene is still imputed)",
                InputWarning,
                stacklevel=3,
            )
    if not mask.any():
        raise InputError(
            f"{source} selects no gene; select the genes to build the graphs from (mask_var=, n_top_genes=)"
        )
    if hvg_only:
        imputed = mask.copy()
    selection = GeneSelection.from_masks(mask, imputed)
    return None if selection.trivial else selection


def _requested(var_names, genes):
    import numpy as np

    g = len(var_names)
    if isinstance(genes, str):
        if genes not in GENE_CHOICES:
            raise InputError(f"genes must be 'all', 'hvg' or a list of gene names, got {genes!r}")
        return np.ones(g, dtype=bool) if genes == "all" else np.zeros(g, dtype=bool)
    names = [str(name) for name in genes]
    positions = (
        var_names.get_indexer(names)
        if var_names.is_unique
        else np.array([var_names.get_loc(n) if n in var_names else -1 for n in names])
    )
    missing = [name for name, at in zip(names, positions, strict=True) if at < 0]
    if missing:
        raise InputError(
            f"{len(missing)} of the {len(names)} requested genes are not in var_names (first: {missing[0]!r}); "
            "check their spelling and the gene identifiers used (symbols or ids)"
        )
    imputed = np.zeros(g, dtype=bool)
    imputed[np.asarray(positions, dtype=np.int64)] = True
    return imputed


def _as_mask(values, what: str, g: int):
    import numpy as np

    mask = np.asarray(values)
    if mask.shape != (g,) or mask.dtype != bool:
        raise InputError(
            f"{what} must be a boolean mask of one value per gene ({g}), got dtype {mask.dtype} and shape {mask.shape}"
        )
    return mask


def batch_codes(column, batch_key: str, mode: str):
    """The :class:`sccr._engine.Batches` of an obs column (any values: categories, strings, numbers)."""
    import numpy as np
    import pandas as pd

    from ._engine import BATCH_MODES, Batches

    if mode not in BATCH_MODES:
        raise InputError(f"batch_mode must be one of {', '.join(BATCH_MODES)}; got {mode!r}")
    values = pd.Series(np.asarray(column))
    if values.isna().any():
        raise InputError(f"obs[{batch_key!r}] has {int(values.isna().sum())} missing values; give every cell a batch")
    codes, names = pd.factorize(values, sort=True)
    return Batches(codes.astype(np.int64), mode, tuple(str(name) for name in names))

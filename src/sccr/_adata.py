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
        raise InputError(f"layer {layer!r} not found in adata.layers (available: {known}); pass one of them or layer=None for X")
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

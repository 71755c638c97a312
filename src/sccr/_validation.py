"""Input checks, done once at the boundary; every message names the problem and the fix."""

from __future__ import annotations

import os
import warnings

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ._pipeline import METHODS, Params

KNN_MODES = ("auto", "exact", "approx")


class InputError(ValueError):
    """Bad input from the user: the message says what is wrong and how to fix it."""


class InputWarning(UserWarning):
    """Input that sccr can impute but that is probably not what the user meant.

    ``warnings.simplefilter("error", sccr.InputWarning)`` turns every such case into an error.
    """


class CountsWarning(InputWarning):
    """The matrix looks like raw counts where log-normalised expression is expected."""


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


def _as_float32(X) -> np.ndarray | sp.csr_matrix:
    if isinstance(X, (ad.AnnData,)):
        raise InputError("got an AnnData where a matrix was expected; use sccr.impute(adata) for AnnData")
    if sp.issparse(X):
        _check_real(X)
        return sp.csr_matrix(X, dtype=np.float32)
    if hasattr(X, "toarray") and not isinstance(X, np.ndarray):  # anndata backed/other array types
        X = X.toarray()
    X = np.asarray(X)
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise InputError(f"matrix has dtype {X.dtype}; expected numbers (float32 is best)")
    _check_real(X)
    return np.asarray(X, dtype=np.float32)


def _check_real(X) -> None:
    if X.dtype.kind == "c":
        raise InputError(f"matrix has complex dtype {X.dtype}; pass real expression values (e.g. np.abs(X) or X.real)")


def _values(X) -> np.ndarray:
    return X.data if sp.issparse(X) else X


def _check_shape_and_finite(X, what: str) -> None:
    if X.ndim != 2:
        raise InputError(f"{what} must be 2-D (cells x genes), got {X.ndim}-D")
    n, g = X.shape
    if n == 0 or g == 0:
        raise InputError(f"{what} is empty ({n} cells x {g} genes); pass a matrix with cells and genes")
    values = _values(X)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise InputError(f"{what} contains {bad} NaN or infinite values; remove or replace them (e.g. np.nan_to_num) before imputing")
    if values.size and values.min() < 0:
        raise InputError(
            f"{what} has negative values (min {values.min():.3g}); sccr needs non-negative "
            "log-normalised expression: pass the layer before scaling/centering (e.g. not the output of sc.pp.scale)"
        )


def check_counts(X) -> sp.csr_matrix:
    """Raw counts for preprocessing: finite, non-negative, float32 CSR."""
    X = _as_float32(X)
    _check_shape_and_finite(X, "count matrix")
    return sp.csr_matrix(X)


def _observed_per_cell_and_gene(X) -> tuple[np.ndarray, np.ndarray]:
    """Non-zero entries per row and per column of canonical CSR or dense ``X``."""
    if sp.issparse(X):
        return np.diff(X.indptr), np.bincount(X.indices, minlength=X.shape[1])
    cells = np.empty(X.shape[0], dtype=np.int64)
    genes = np.zeros(X.shape[1], dtype=np.int64)
    for start in range(0, X.shape[0], 4096):  # a bool copy of 4096 rows at a time
        observed = X[start : start + 4096] != 0
        cells[start : start + 4096] = observed.sum(axis=1)
        genes += observed.sum(axis=0)
    return cells, genes


def _check_empty_cells_and_genes(X) -> None:
    """Refuse a matrix without any non-zero value; warn about cells and genes that are zero everywhere."""
    cells, genes = _observed_per_cell_and_gene(X)
    if not cells.any():
        raise InputError("expression matrix has no non-zero value, so there is nothing to propagate; check that the right matrix or layer was passed")
    parts = [
        f"{int((counts == 0).sum())} of {counts.size} {axis}"
        for axis, counts in (("cells", cells), ("genes", genes))
        if (counts == 0).any()
    ]
    if parts:
        warnings.warn(
            f"no non-zero value in {' and '.join(parts)}; they are kept, but what is imputed for them "
            "carries no information of their own; drop them first with sc.pp.filter_cells(adata, min_counts=1) "
            "and sc.pp.filter_genes(adata, min_cells=1) (sccr.pp.preprocess_paper does this)",
            InputWarning,
            stacklevel=4,
        )


def check_expression(X, k: int, *, k_gene: int | None = None) -> np.ndarray | sp.csr_matrix:
    """Log-normalised expression for imputation with ``k`` cell neighbours: float32, dense or CSR, validated.

    ``k_gene``: neighbours per gene when the method builds a gene graph (then at
    least ``k_gene + 1`` genes are needed). Warns (:class:`CountsWarning`) when the
    matrix looks like raw counts and (:class:`InputWarning`) when cells or genes are
    zero everywhere.
    """
    X = _as_float32(X)
    _check_shape_and_finite(X, "expression matrix")
    n, g = X.shape
    if n < k + 1:
        raise InputError(f"only {n} cells for k={k} neighbours; need at least k + 1 = {k + 1} cells, or lower k")
    if g < 2:
        raise InputError("only 1 gene: cosine similarity between cells needs at least 2 genes; pass more genes")
    if k_gene is not None and g < k_gene + 1:
        raise InputError(f"only {g} genes for k_gene={k_gene} neighbours; need at least k_gene + 1 = {k_gene + 1} genes, or lower k_gene")
    values = _values(X)
    nonzero = values[values != 0]
    if nonzero.size and nonzero.max() > 1 and np.all(nonzero == np.round(nonzero)):
        warnings.warn(
            "the matrix holds only whole numbers: it looks like raw counts, but sccr expects "
            "log-normalised expression; run sccr.pp.preprocess_paper(adata) or "
            "sc.pp.normalize_total(adata) + sc.pp.log1p(adata) first (command line: --preprocess paper)",
            CountsWarning,
            stacklevel=3,
        )
    if sp.issparse(X):
        if not X.has_canonical_format or (X.data == 0).any():
            X = X.copy()  # never reorder or prune the caller's own matrix
            X.sum_duplicates()
            X.eliminate_zeros()
    else:
        X = np.ascontiguousarray(X)
    _check_empty_cells_and_genes(X)
    return X


def check_scratch_dir(scratch_dir) -> None:
    """``None`` (the system's temporary folder) or an existing, writable folder for scratch files."""
    if scratch_dir is None:
        return
    if not os.path.isdir(scratch_dir):
        raise InputError(f"scratch folder {str(scratch_dir)!r} does not exist; create it or pass another folder")
    if not os.access(scratch_dir, os.W_OK):
        raise InputError(f"scratch folder {str(scratch_dir)!r} is not writable; pass another folder")


def resolve_n_jobs(n_jobs: int | None) -> int:
    """``None`` or ``-1``: every core this process may use."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if n_jobs is None or n_jobs == -1:
        return available
    if not isinstance(n_jobs, (int, np.integer)) or n_jobs < 1:
        raise InputError(f"n_jobs must be a positive integer, -1 or None, got {n_jobs!r}")
    return int(n_jobs)


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_fraction(name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"{name} must be in [0, 1], got {value}")
    return value


def _check_seed(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"random_state must be a non-negative integer or None, got {value!r}")
    return int(value)


def check_params(
    *, method, k, k_gene, n_iter, alpha, beta, gamma, sym_final, knn, n_jobs, progress, random_state=0
) -> Params:
    """Validate the options of :func:`sccr.impute` and :class:`sccr.SCCR` into :class:`Params`."""
    from ._progress import resolve_progress

    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if knn not in KNN_MODES:
        raise InputError(f"knn must be one of {', '.join(KNN_MODES)}; got {knn!r}")
    return Params(
        method=method,
        k=_check_int("k", k, 1),
        k_gene=_check_int("k_gene", k_gene, 1),
        n_iter=_check_int("n_iter", n_iter, 0),
        alpha=_check_fraction("alpha", alpha),
        beta=_check_fraction("beta", beta),
        gamma=_check_fraction("gamma", gamma),
        sym_final=bool(sym_final),
        knn=knn,
        random_state=_check_seed(random_state),
        n_jobs=resolve_n_jobs(n_jobs),
        progress=resolve_progress(progress),
    )

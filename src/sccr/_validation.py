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
        check_dtype(X.dtype)
        return sp.csr_matrix(X, dtype=np.float32)
    if hasattr(X, "toarray") and not isinstance(X, np.ndarray):  # anndata backed/other array types
        X = X.toarray()
    X = np.asarray(X)
    check_dtype(X.dtype)
    return np.asarray(X, dtype=np.float32)


def check_dtype(dtype: np.dtype) -> None:
    """Refuse a matrix whose values are not real numbers (strings, objects, complex)."""
    if dtype == object or not (np.issubdtype(dtype, np.number) or dtype == bool):
        raise InputError(f"matrix has dtype {dtype}; expected numbers (float32 is best)")
    if dtype.kind == "c":
        raise InputError(f"matrix has complex dtype {dtype}; pass real expression values (e.g. np.abs(X) or X.real)")


def check_shape(shape: tuple[int, ...], what: str) -> None:
    if len(shape) != 2:
        raise InputError(f"{what} must be 2-D (cells x genes), got {len(shape)}-D")
    n, g = shape
    if n == 0 or g == 0:
        raise InputError(f"{what} is empty ({n} cells x {g} genes); pass a matrix with cells and genes")


class ValueSummary:
    """What the value checks need, gathered over blocks of a matrix: in memory or read from a file block by block.

    :meth:`add` takes dense or canonical CSR/CSC blocks at any position, so a
    matrix can be checked while it is streamed; the checks then give the same
    messages as for the whole matrix at once.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.n_nonfinite = 0
        self.minimum = np.inf
        self.max_nonzero = -np.inf
        self.whole_numbers = True  # every non-zero value is a whole number
        self.per_cell = np.zeros(shape[0], dtype=np.int64)  # non-zeros of each cell
        self.per_gene = np.zeros(shape[1], dtype=np.int64)

    def add(self, block, row: int = 0, col: int = 0) -> None:
        """Count the values of ``block``, whose first entry is at ``(row, col)`` of the matrix."""
        values = block.data if sp.issparse(block) else block
        finite = np.isfinite(values)
        if not finite.all():
            self.n_nonfinite += int(values.size - np.count_nonzero(finite))
            return  # refused anyway: the other statistics are not needed
        if values.size:
            self.minimum = min(self.minimum, float(values.min()))
        nonzero = values[values != 0]
        if nonzero.size:
            self.max_nonzero = max(self.max_nonzero, float(nonzero.max()))
            self.whole_numbers = self.whole_numbers and bool(np.all(nonzero == np.round(nonzero)))
        n, g = block.shape
        if sp.issparse(block):
            csr = sp.csr_matrix(block)
            self.per_cell[row : row + n] += np.diff(csr.indptr)
            self.per_gene[col : col + g] += np.bincount(csr.indices, minlength=g)
        else:
            observed = block != 0
            self.per_cell[row : row + n] += observed.sum(axis=1)
            self.per_gene[col : col + g] += observed.sum(axis=0)

    def check_values(self, what: str) -> None:
        """Refuse NaN, infinite and negative values."""
        if self.n_nonfinite:
            raise InputError(f"{what} contains {self.n_nonfinite} NaN or infinite values; remove or replace them (e.g. np.nan_to_num) before imputing")
        if self.minimum < 0:
            raise InputError(
                f"{what} has negative values (min {self.minimum:.3g}); sccr needs non-negative "
                "log-normalised expression: pass the layer before scaling/centering (e.g. not the output of sc.pp.scale)"
            )

    def check_expression(self, shape: tuple[int, int], k: int, k_gene: int | None) -> None:
        """The checks of :func:`check_expression` on the summarised matrix of ``shape``."""
        self.check_values("expression matrix")
        n, g = shape
        if n < k + 1:
            raise InputError(f"only {n} cells for k={k} neighbours; need at least k + 1 = {k + 1} cells, or lower k")
        if g < 2:
            raise InputError("only 1 gene: cosine similarity between cells needs at least 2 genes; pass more genes")
        if k_gene is not None and g < k_gene + 1:
            raise InputError(f"only {g} genes for k_gene={k_gene} neighbours; need at least k_gene + 1 = {k_gene + 1} genes, or lower k_gene")
        if self.max_nonzero > 1 and self.whole_numbers:
            warnings.warn(
                "the matrix holds only whole numbers: it looks like raw counts, but sccr expects "
                "log-normalised expression; run sccr.pp.preprocess_paper(adata) or "
                "sc.pp.normalize_total(adata) + sc.pp.log1p(adata) first (command line: --preprocess paper)",
                CountsWarning,
                stacklevel=4,
            )
        if not self.per_cell.any():
            raise InputError("expression matrix has no non-zero value, so there is nothing to propagate; check that the right matrix or layer was passed")
        parts = [
            f"{int((counts == 0).sum())} of {counts.size} {axis}"
            for axis, counts in (("cells", self.per_cell), ("genes", self.per_gene))
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


def canonical(X: sp.spmatrix) -> sp.spmatrix:
    """``X`` without duplicate or explicit zero entries (a copy when it has any: the caller's matrix is never changed)."""
    if not X.has_canonical_format or (X.data == 0).any():
        X = X.copy()
        X.sum_duplicates()
        X.eliminate_zeros()
    return X


#: Rows per block when a dense in-memory matrix is summarised (a bool copy of this many rows at a time).
SUMMARY_ROWS = 4096


def summarise(X: np.ndarray | sp.csr_matrix) -> ValueSummary:
    """The :class:`ValueSummary` of a float32 matrix in memory (canonical when sparse)."""
    summary = ValueSummary(X.shape)
    if sp.issparse(X):
        summary.add(X)
    else:
        for start in range(0, X.shape[0], SUMMARY_ROWS):
            summary.add(X[start : start + SUMMARY_ROWS], start)
    return summary


def check_counts(X) -> sp.csr_matrix:
    """Raw counts for preprocessing: finite, non-negative, float32 CSR."""
    X = _as_float32(X)
    check_shape(X.shape, "count matrix")
    summarise(X).check_values("count matrix")
    return sp.csr_matrix(X)


def check_expression(X, k: int, *, k_gene: int | None = None) -> np.ndarray | sp.csr_matrix:
    """Log-normalised expression for imputation with ``k`` cell neighbours: float32, dense or CSR, validated.

    ``k_gene``: neighbours per gene when the method builds a gene graph (then at
    least ``k_gene + 1`` genes are needed). Warns (:class:`CountsWarning`) when the
    matrix looks like raw counts and (:class:`InputWarning`) when cells or genes are
    zero everywhere.
    """
    X = _as_float32(X)
    check_shape(X.shape, "expression matrix")
    X = canonical(X) if sp.issparse(X) else np.ascontiguousarray(X)
    summarise(X).check_expression(X.shape, k, k_gene)
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

"""Checks of the matrix to impute, done once at the boundary (in memory, or block by block while it streams).

Every message names the problem and the fix.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from .._errors import CountsWarning, InputError, InputWarning
from .matrix import ROW_BLOCK


def _as_float32(X) -> np.ndarray | sp.csr_matrix:
    if hasattr(X, "obs") and hasattr(X, "var") and hasattr(X, "layers"):  # an AnnData, without importing anndata
        raise InputError("got an AnnData where a matrix was expected; use sccr.impute(adata) for AnnData")
    if sp.issparse(X):
        check_dtype(X.dtype)
        return sp.csr_matrix(X, dtype=np.float32)
    if hasattr(X, "toarray") and not isinstance(X, np.ndarray):  # anndata backed/other array types
        X = X.toarray()
    X = np.asarray(X)
    if X.dtype == object:  # numbers held as Python objects are numbers; anything else is refused below
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError):
            pass
    check_dtype(X.dtype)
    return np.asarray(X, dtype=np.float32)


def check_dtype(dtype: np.dtype) -> None:
    """Refuse a matrix whose values are not real numbers (strings, objects, complex)."""
    if dtype.kind in "OUSV" or not (np.issubdtype(dtype, np.number) or dtype.kind == "b"):
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
            raise InputError(
                f"{what} contains {self.n_nonfinite} NaN or infinite values; remove or replace them (e.g. np.nan_to_num) before imputing"
            )
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
            raise InputError(
                f"only {g} genes for k_gene={k_gene} neighbours; need at least k_gene + 1 = {k_gene + 1} genes, or lower k_gene"
            )
        if self.max_nonzero > 1 and self.whole_numbers:
            warnings.warn(
                "the matrix holds only whole numbers: it looks like raw counts, but sccr expects "
                "log-normalised expression; run sccr.pp.preprocess_paper(adata) or "
                "sc.pp.normalize_total(adata) + sc.pp.log1p(adata) first (command line: --preprocess paper)",
                CountsWarning,
                stacklevel=4,
            )
        if not self.per_cell.any():
            raise InputError(
                "expression matrix has no non-zero value, so there is nothing to propagate; check that the right matrix or layer was passed"
            )
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


def summarise(X: np.ndarray | sp.csr_matrix) -> ValueSummary:
    """The :class:`ValueSummary` of a float32 matrix in memory (canonical when sparse)."""
    summary = ValueSummary(X.shape)
    if sp.issparse(X):
        summary.add(X)
    else:
        for start in range(0, X.shape[0], ROW_BLOCK):  # a bool copy of this many rows at a time
            summary.add(X[start : start + ROW_BLOCK], start)
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

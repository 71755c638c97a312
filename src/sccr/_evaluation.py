"""The paper's evaluation: dropout masks, imputation errors, clustering scores."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def _nonzeros(X: np.ndarray | sp.spmatrix) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray, np.ndarray, np.ndarray]:
    """A float32 copy of ``X`` and its non-zeros in row-major order: ``copy, rows, cols, values``."""
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        X.eliminate_zeros()
        X.sort_indices()
        i, j = X.nonzero()  # row-major, the order of X.data
        return X, i, j, X.data
    X = np.array(X, dtype=np.float32)
    i, j = np.nonzero(X)
    return X, i, j, X[i, j]


def _drop(
    X: np.ndarray | sp.csr_matrix, i: np.ndarray, j: np.ndarray, pick: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero the non-zeros ``pick`` (indices into ``i, j``) of ``X`` in place; CSR keeps no zeros."""
    if sp.issparse(X):
        X.data[pick] = 0
        X.eliminate_zeros()
    else:
        X[i[pick], j[pick]] = 0
    return X, i[pick], j[pick]


def drop_entries(X: np.ndarray | sp.spmatrix, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero a fraction ``rate`` of the non-zero entries, chosen uniformly at random.

    Draws exactly as the reference code does (``np.random.seed(seed)``, the
    non-zeros in row-major order, ``choice(..., floor(rate * nnz), replace=False)``),
    so the same seed drops the same entries.

    Returns
    -------
    dropped, rows, cols
        A float32 copy of ``X`` (same format) with the entries zeroed, and their positions.
    """
    X, i, j, _ = _nonzeros(X)
    pick = np.random.RandomState(seed).choice(len(i), int(np.floor(rate * len(i))), replace=False)
    return _drop(X, i, j, pick)


def drop_entries_mnar(X: np.ndarray | sp.spmatrix, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zero a fraction ``rate`` of the non-zero entries, low values more likely than high ones.

    Missing not at random: exactly ``floor(rate * nnz)`` distinct non-zero entries
    are drawn one after another without replacement, each draw picking a remaining
    entry with probability proportional to ``exp(-x / m)``, where ``x`` is its
    value and ``m`` the mean of all non-zero values (an entry at the mean is
    ``e`` times less likely to go than one near 0). The draws are made at once as an
    exponential race: entry ``e`` gets the key ``E_e * exp(x_e / m)`` with
    ``E_e ~ Exp(1)`` from ``numpy.random.default_rng(seed)`` (one per non-zero,
    row-major order), and the entries with the smallest keys are dropped.

    Returns the same as :func:`drop_entries` (positions in row-major order).
    """
    X, i, j, values = _nonzeros(X)
    n_drop = int(np.floor(rate * len(i)))
    keys = np.random.default_rng(seed).exponential(size=len(i))
    if len(i):
        keys *= np.exp(values / np.abs(values).mean())
    pick = np.sort(np.argsort(keys, kind="stable")[:n_drop])
    return _drop(X, i, j, pick)


def imputation_errors(imputed: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Errors on the dropped entries (1-D arrays of imputed and true values).

    ``rmse`` is the root mean square error; ``mae`` the mean absolute error,
    which is what the reference code and the paper report as "RMSE";
    ``median_l1`` the median absolute error; ``cosine`` the cosine similarity.
    """
    x = np.asarray(imputed, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    err = x - y
    denom = np.linalg.norm(x) * np.linalg.norm(y)
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "median_l1": float(np.median(np.abs(err))),
        "cosine": float(x @ y / denom) if denom > 0 else 0.0,
    }


def clustering_accuracy(labels, predicted) -> float:
    """Accuracy after the best one-to-one matching of clusters to labels (Hungarian method).

    With more clusters than labels, unmatched clusters count as errors.
    """
    _, true_codes = np.unique(np.asarray(labels), return_inverse=True)
    _, pred_codes = np.unique(np.asarray(predicted), return_inverse=True)
    counts = np.zeros((pred_codes.max() + 1, true_codes.max() + 1), dtype=np.int64)
    np.add.at(counts, (pred_codes, true_codes), 1)
    r, c = linear_sum_assignment(counts, maximize=True)
    return float(counts[r, c].sum() / len(true_codes))


def clustering_scores(X: np.ndarray, labels, *, seed: int = 0, n_init: int = 20) -> dict[str, float]:
    """KMeans with as many clusters as labels, then ARI, NMI and clustering accuracy."""
    labels = np.asarray(labels)
    n_clusters = len(np.unique(labels))
    X = X.toarray() if sp.issparse(X) else X
    predicted = KMeans(n_clusters, n_init=n_init, random_state=seed).fit_predict(np.asarray(X, dtype=np.float32))
    return {
        "ari": float(adjusted_rand_score(labels, predicted)),
        "nmi": float(normalized_mutual_info_score(labels, predicted)),
        "ca": clustering_accuracy(labels, predicted),
    }

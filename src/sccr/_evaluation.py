"""The paper's evaluation: dropout masks, imputation errors, clustering scores."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


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
    if sp.issparse(X):
        X = sp.csr_matrix(X, dtype=np.float32, copy=True)
        X.eliminate_zeros()
        X.sort_indices()
        i, j = X.nonzero()
    else:
        X = np.array(X, dtype=np.float32)
        i, j = np.nonzero(X)
    pick = np.random.RandomState(seed).choice(len(i), int(np.floor(rate * len(i))), replace=False)
    rows, cols = i[pick], j[pick]
    if sp.issparse(X):
        X = X.tolil()
        X[rows, cols] = 0
        X = X.tocsr()
        X.eliminate_zeros()
    else:
        X[rows, cols] = 0
    return X, rows, cols


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

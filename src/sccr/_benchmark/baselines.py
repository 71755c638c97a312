"""Baseline imputation methods the benchmark compares scCR with.

Each takes a log-normalised matrix (cells x genes, dense or CSR) and returns a
dense float32 imputed matrix of the same shape. All are deterministic: the
randomised ones use a fixed seed, so equal inputs give equal outputs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils.extmath import randomized_svd

from .._engine import knn_graph


def _dense(X) -> np.ndarray:
    return np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)


def raw(X) -> np.ndarray:
    """No imputation: the input as a dense float32 array."""
    return _dense(X).copy()


def knn_smooth(X, *, k: int = 15) -> np.ndarray:
    """Plain k-NN smoothing: each cell becomes the unweighted mean of itself and its neighbours.

    The neighbours are the ``k`` cells of highest cosine similarity (sccr's exact
    search, ties to the lower index) with a positive similarity; one averaging step,
    no propagation and no weighting by similarity.
    """
    A = knn_graph(X, k, sym=False)  # the self-loop plus the k + 1 best (the cell itself among them)
    A.data[:] = 1.0
    A = sp.diags(1.0 / np.asarray(A.sum(axis=1)).ravel()).astype(np.float32) @ A
    return np.asarray(A @ _dense(X), dtype=np.float32)


def alra_choose_k(s: np.ndarray, *, noise_start: int = 80, n_sd: float = 6.0) -> int:
    """ALRA's rank rule (Linderman et al. 2022) from singular values ``s`` (descending).

    The spacings ``s[i] - s[i + 1]`` from spacing ``noise_start`` on (1-based, as
    in the paper) describe noise; ``k`` is the largest ``i`` (1-based) whose spacing
    exceeds their mean by more than ``n_sd`` standard deviations (ddof=1).
    """
    gaps = s[:-1] - s[1:]
    noise = gaps[noise_start - 1 :]
    if len(noise) < 2:
        raise ValueError(f"need at least {noise_start + 2} singular values, got {len(s)}")
    z = (gaps - noise.mean()) / noise.std(ddof=1)
    above = np.flatnonzero(z > n_sd)
    return int(above[-1] + 1) if len(above) else 1


def _nonzero_mean_sd(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (ddof=1) of the non-zero entries; NaN where undefined."""
    nz = M != 0
    count = nz.sum(axis=0)
    total = np.where(nz, M, 0).sum(axis=0, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        squares = np.where(nz, (M - mean) ** 2, 0).sum(axis=0, dtype=np.float64)
        sd = np.sqrt(squares / (count - 1))
    return mean, np.where(count > 1, sd, np.nan)


def alra(
    X,
    *,
    k: int | None = None,
    max_rank: int = 100,
    n_power_iter: int = 10,
    quantile: float = 0.001,
    random_state: int = 0,
) -> np.ndarray:
    """ALRA: adaptively thresholded low-rank approximation (Linderman et al. 2022).

    1. rank ``k``: :func:`alra_choose_k` on the top ``max_rank`` singular values
       of a randomised SVD (2 power iterations); with fewer than ``max_rank + 1``
       cells or genes, ``max_rank`` becomes ``min(n, g) - 1`` and the noise
       spacings start at 80% of it;
    2. ``L``: the rank-``k`` randomised SVD of ``X`` (``n_power_iter`` iterations);
    3. per gene, entries of ``L`` at or below ``|q|``, the ``quantile`` of that
       gene's column of ``L``, become 0 (the negative tail measures the noise, so
       the symmetric positive band is zeroed as well);
    4. per gene, the kept values are rescaled linearly so that their mean and
       sample sd match those of the gene's observed non-zeros (genes where either
       sd is undefined or that of ``L`` is 0 are left unscaled); negatives become 0;
    5. observed non-zeros that ended at 0 get their observed value back.
    """
    A = _dense(X)
    n, g = A.shape
    if k is None:
        top = min(max_rank, min(n, g) - 1)
        noise_start = 80 if top == max_rank else max(1, int(0.8 * top))
        s = randomized_svd(A, top, n_iter=2, random_state=random_state)[1]
        k = alra_choose_k(s, noise_start=noise_start)
    U, s, Vt = randomized_svd(A, k, n_iter=n_power_iter, random_state=random_state)
    L = ((U * s) @ Vt).astype(np.float32)
    return alra_threshold_rescale(A, L, quantile=quantile)


def alra_threshold_rescale(A: np.ndarray, L: np.ndarray, *, quantile: float = 0.001) -> np.ndarray:
    """Steps 3 to 5 of :func:`alra`: observed ``A`` and its low-rank approximation ``L``."""
    threshold = np.abs(np.quantile(L, quantile, axis=0))
    L = np.where(L > threshold, L, 0).astype(np.float32)
    mean_l, sd_l = _nonzero_mean_sd(L)
    mean_a, sd_a = _nonzero_mean_sd(A)
    scale = ~np.isnan(sd_l) & ~np.isnan(sd_a) & (sd_l != 0)
    ratio = np.where(scale, sd_a / np.where(scale, sd_l, 1), 1.0)
    shift = np.where(scale, mean_a - mean_l * ratio, 0.0)
    out = np.where(L != 0, L * ratio + shift, 0).astype(np.float32)
    np.maximum(out, 0, out=out)
    restore = (A != 0) & (out == 0)
    out[restore] = A[restore]
    return out


def magic(X, *, n_jobs: int = 1, random_state: int = 0) -> np.ndarray:
    """MAGIC (van Dijk et al. 2018) from magic-impute: its exact solver, its defaults otherwise.

    Raises ``ImportError`` when magic-impute is not installed (``pip install 'sccr[benchmark]'``).
    """
    import magic as magic_impute

    op = magic_impute.MAGIC(solver="exact", n_jobs=n_jobs, random_state=random_state, verbose=0)
    return np.asarray(op.fit_transform(sp.csr_matrix(X) if sp.issparse(X) else _dense(X)), dtype=np.float32)

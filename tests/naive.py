"""Straightforward dense float64 re-implementations of ALGORITHM.md, for comparison.

Nothing here is clever: full similarity matrices, explicit loops, the 2G-node
gene graph built by concatenation. These are the oracles the package is checked
against on small inputs.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def dense(M) -> np.ndarray:
    return M.toarray() if sp.issparse(M) else np.asarray(M)


def cosine(M) -> np.ndarray:
    """Cosine similarity of the rows of ``M``; an all-zero row has similarity 0 to everything."""
    M = dense(M).astype(np.float64)
    norms = np.linalg.norm(M, axis=1)
    Mn = M / np.where(norms > 0, norms, 1.0)[:, None]
    return Mn @ Mn.T


def knn(M, k: int, sym: bool, norm: str = "row") -> np.ndarray:
    """Building block 1, dense: top k+1 (ties to the lower index), clip, +I, symmetrise, normalise."""
    S = cosine(M)
    n = S.shape[0]
    A = np.zeros((n, n))
    for i in range(n):
        keep = sorted(range(n), key=lambda j: (-S[i, j], j))[: k + 1]
        A[i, keep] = S[i, keep]
    A = np.maximum(A, 0.0)
    A += np.eye(n)
    if sym:
        A = (A + A.T) / 2
    degree = np.abs(A).sum(axis=1)
    inv = np.divide(1.0, degree, out=np.zeros_like(degree), where=degree > 0)
    if norm == "row":
        return A * inv[:, None]
    return A * np.sqrt(inv)[:, None] * np.sqrt(inv)[None, :]


def hard(A, X0, n_iter: int, keep=None) -> np.ndarray:
    """out = A @ out, then restore X0 where ``keep`` (default: X0 != 0), ``n_iter`` times."""
    A = dense(A).astype(np.float64)
    X0 = dense(X0).astype(np.float64)
    keep = X0 != 0 if keep is None else np.asarray(keep)
    out = X0.copy()
    for _ in range(n_iter):
        out = A @ out
        out[keep] = X0[keep]
    return out


def soft(A, X0, n_iter: int, beta: float) -> np.ndarray:
    """out = beta * (A @ out) + (1 - beta) * X0, ``n_iter`` times."""
    A = dense(A).astype(np.float64)
    X0 = dense(X0).astype(np.float64)
    out = X0.copy()
    for _ in range(n_iter):
        out = beta * (A @ out) + (1 - beta) * X0
    return out


def signed_top(S, m: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``m`` entries of largest ``|S|``: the ``m + margin`` largest (ties: lower column) are
    the candidates, ranked by ``|S|``, then positive before negative, then lower column."""
    S = np.asarray(S)
    n = S.shape[1]
    rows = []
    for s in S:
        candidates = sorted(range(n), key=lambda j: (-abs(s[j]), j))[: m + margin]
        rows.append(sorted(candidates, key=lambda j: (-abs(s[j]), j + n * (s[j] < 0)))[:m])
    indices = np.array(rows, dtype=np.int64).reshape(S.shape[0], m)
    return indices, np.take_along_axis(S, indices, axis=1)


def standardise_2g(D) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 2a-b: Dc = [D, -D], column mean and deviation (ddof=1, zero -> mean of all), Z."""
    D = dense(D).astype(np.float64)
    Dc = np.hstack([D, -D])
    mean = Dc.mean(axis=0)
    std = Dc.std(axis=0, ddof=1)
    std[std == 0] = std.mean()
    return mean, std, (Dc - mean) / std


def gene_stage_2g(D, X, k_gene: int, n_iter: int, graph=knn) -> tuple[np.ndarray, np.ndarray]:
    """Step 2 in its concatenated form; returns (C, the 2G x 2G graph)."""
    X = dense(X)
    G = X.shape[1]
    mean, std, Z = standardise_2g(D)
    Ag = dense(graph(Z.T.astype(np.float32), k_gene, sym=True))
    keep = np.hstack([X, -X]).T != 0
    out = hard(Ag, Z.T, n_iter, keep=keep)
    C = out.T * std + mean
    return C[:, :G], Ag


def sccr(X, *, k=15, k_gene=2, n_iter=40, alpha=0.05, beta=0.99, gamma=0.01, sym_final=True) -> np.ndarray:
    """The whole of scCR (ALGORITHM.md steps 1-6), dense, with the 2G-node gene graph."""
    X = dense(X).astype(np.float64)
    D0 = hard(knn(X, k, sym=True), X, n_iter)
    C, _ = gene_stage_2g(D0, X, k_gene, n_iter)
    D1 = hard(knn(C, k, sym=True), X, n_iter)
    B = alpha * D0 + (1 - alpha) * D1
    F = soft(knn(B, k, sym=sym_final), X, n_iter, beta)
    return (1 - gamma) * F + gamma * B


def scfp(X, *, k=15, n_iter=40, beta=0.99, sym_final=True) -> np.ndarray:
    """scFP as the package documents it: hard FP on knn(X), soft FP of that on knn(result)."""
    X = dense(X).astype(np.float64)
    D0 = hard(knn(X, k, sym=True), X, n_iter)
    return soft(knn(D0, k, sym=sym_final), D0, n_iter, beta)


def scbfp(X, *, k=15, k_gene=2, n_iter=40, beta=0.99, sym_final=True) -> np.ndarray:
    """scBFP as the package documents it: hard FP over a sym-normalised gene graph, then soft FP over cells."""
    X = dense(X).astype(np.float64)
    Dg = hard(knn(X.T, k_gene, sym=True, norm="sym"), X.T, n_iter).T
    return soft(knn(Dg, k, sym=sym_final), Dg, n_iter, beta)

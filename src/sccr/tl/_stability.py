"""Stability of an imputation under perturbations that should not matter."""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Perturbations :func:`stability` knows.
PERTURBATIONS = ("jitter", "permute", "approx", "rerun")
#: A cell whose imputed row moves by more than this (log-normalised units) counts as moved.
MOVED = 0.1
#: Verdict thresholds: fragile when clusterings of reruns agree below FRAGILE_ARI, or more than
#: FRAGILE_MOVED of the cells move; stable when they agree at STABLE_ARI or above and at most
#: STABLE_MOVED of the cells move.
FRAGILE_ARI, FRAGILE_MOVED = 0.9, 0.05
STABLE_ARI, STABLE_MOVED = 0.98, 0.01


def default_n_clusters(n_cells: int) -> int:
    """KMeans clusters used when none are given: ``round(sqrt(n_cells / 50))``, between 2 and 20."""
    return int(np.clip(round(np.sqrt(n_cells / 50)), 2, 20))


def jitter_matrix(X, *, ulps: float, random_state: int | None):
    """``X`` with every non-zero multiplied by ``1 + ulps * eps * u``, ``u ~ U(-1, 1)``, ``eps`` float32's epsilon.

    Zeros stay zeros (the observed pattern is kept): a change at float32 rounding level.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(random_state)
    eps = np.finfo(np.float32).eps

    def factors(n: int) -> np.ndarray:  # one per non-zero, in row-major order (dense and sparse alike)
        return (1 + ulps * eps * rng.uniform(-1, 1, n)).astype(np.float32)

    if sp.issparse(X):
        Y = sp.csr_matrix(X, dtype=np.float32, copy=True)
        Y.sum_duplicates()
        Y.eliminate_zeros()
        Y.data *= factors(Y.nnz)
        return Y
    Y = np.array(X, dtype=np.float32)
    where = np.nonzero(Y)
    Y[where] *= factors(len(where[0]))
    return Y


def _neighbour_changes(G0, G1) -> np.ndarray:
    """Per row: how many neighbours one graph has that the other has not (the larger of the two counts)."""
    import scipy.sparse as sp

    B0 = sp.csr_matrix(G0, copy=True)
    B1 = sp.csr_matrix(G1, copy=True)
    for B in (B0, B1):
        B.eliminate_zeros()
        B.data = np.ones_like(B.data, dtype=np.int8)
    D = (B0.astype(np.int16) - B1.astype(np.int16)).tocsr()
    D.eliminate_zeros()
    lost = np.asarray((D > 0).sum(axis=1)).ravel()
    gained = np.asarray((D < 0).sum(axis=1)).ravel()
    return np.maximum(lost, gained)


def _clusters(M: np.ndarray, n_clusters: int, random_state: int | None, n_init: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters, n_init=n_init, random_state=random_state).fit_predict(np.asarray(M, dtype=np.float32))


#: Principal components of the reference run in which the clusterings over several K are made.
N_PCS = 50


def cluster_range(n_clusters: int, n_cells: int) -> list[int]:
    """Cluster counts of the agreement over several K: half, once and twice ``n_clusters`` (at least 2, below ``n_cells``)."""
    values = {max(2, round(n_clusters / 2)), n_clusters, 2 * n_clusters}
    return sorted(v for v in values if 2 <= v < n_cells) or [min(2, n_cells - 1)]


class _Projection:
    """The reference run's leading principal components; every run is projected on the same axes."""

    def __init__(self, reference: np.ndarray, n_components: int, random_state: int | None) -> None:
        from sklearn.utils.extmath import randomized_svd

        M = np.asarray(reference, dtype=np.float64)
        self.mean = M.mean(axis=0)
        k = max(1, min(n_components, min(M.shape) - 1))
        _, _, self.axes = randomized_svd(M - self.mean, k, random_state=0 if random_state is None else random_state)

    def __call__(self, M: np.ndarray) -> np.ndarray:
        return ((np.asarray(M, dtype=np.float64) - self.mean) @ self.axes.T).astype(np.float32)


def reassigned(labels0: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per cell: whether its cluster changed, after matching the two clusterings' clusters one to one (most shared cells)."""
    from scipy.optimize import linear_sum_assignment

    a, ia = np.unique(labels0, return_inverse=True)
    b, ib = np.unique(labels, return_inverse=True)
    table = np.zeros((len(a), len(b)), dtype=np.int64)
    np.add.at(table, (ia, ib), 1)
    rows, cols = linear_sum_assignment(-table)
    match = np.full(len(a), -1)
    match[rows] = cols
    return match[ia] != ib


def verdict(min_ari: float, moved_fraction: float) -> tuple[str, str]:
    """``("fragile" | "sensitive" | "stable", sentence)`` from the clustering agreement and the share of moved cells."""
    if min_ari < FRAGILE_ARI or moved_fraction > FRAGILE_MOVED:
        return "fragile", (
            f"FRAGILE: reruns under perturbations that should not matter move {100 * moved_fraction:.1f}% of the cells by more "
            f"than {MOVED} and clusterings of the reruns agree only down to ARI {min_ari:.3f}; single runs of this "
            "setting are not reproducible in their details: do not trust single-run cluster boundaries or the values "
            "of the moved cells (obs), compare several runs or choose a setting that is stable"
        )
    if min_ari >= STABLE_ARI and moved_fraction <= STABLE_MOVED:
        return "stable", (
            f"stable: reruns under perturbations that should not matter move {100 * moved_fraction:.1f}% of the cells by more "
            f"than {MOVED} and clusterings of the reruns agree at ARI >= {min_ari:.3f}"
        )
    return "sensitive", (
        f"sensitive: reruns under perturbations that should not matter move {100 * moved_fraction:.1f}% of the cells by more "
        f"than {MOVED} and clusterings of the reruns agree down to ARI {min_ari:.3f}; results hold overall, "
        "but check the cells flagged in obs before interpreting them one by one"
    )


def stability(
    adata,
    *,
    n_runs: int = 5,
    random_state: int | None = 0,
    method: str = "sccr",
    params: Mapping[str, Any] | None = None,
    layer: str | None = None,
    perturbations: Sequence[str] = ("jitter", "permute", "approx"),
    jitter_ulps: float = 4.0,
    n_clusters: int | None = None,
    n_init: int = 10,
    key_added: str = "sccr_stability",
    n_jobs: int | None = None,
    progress: bool | None = None,
    keep_runs: bool = False,
) -> dict[str, Any]:
    """Rerun an imputation under perturbations that should not matter and report what moves.

    Run ``i`` (``0 .. n_runs - 1``) applies ``perturbations[i % len(perturbations)]``
    with seed ``random_state + 1 + i``: ``"jitter"`` multiplies every observed value
    by ``1 + jitter_ulps * eps * u`` (``eps`` float32's epsilon, ``u ~ U(-1, 1)``);
    ``"permute"`` imputes the cells in a random order (results are put back in the
    original order); ``"approx"`` switches the cell graphs' neighbour search between
    exact and approximate; ``"rerun"`` runs again on the same input (an exactly
    reproducible run reports zero change). Each run is compared with a reference run
    on the unperturbed input.

    Parameters
    ----------
    adata
        Cells x genes, log-normalised in ``X`` or ``layer`` (raw counts are normalised first).
    n_runs
        Perturbed runs.
    random_state
        Seed of the perturbations, of the imputation and of KMeans.
    method, params
        The setting to check, as in :func:`sccr.tl.score`.
    layer
        Layer to impute instead of ``X``.
    perturbations
        Kinds to cycle through (see above).
    jitter_ulps
        Size of the jitter in units of float32's relative rounding.
    n_clusters
        KMeans clusters for the agreement of clusterings (default: :func:`default_n_clusters`).
        The agreement over several K (``fragility_multi_k``, ``cells_reassigned``) uses
        half, once and twice this (:func:`cluster_range`), in the reference run's first
        :data:`N_PCS` principal components (every run projected on the same axes).
    n_init
        KMeans restarts (same seed for every run).
    key_added
        Writes ``obs[key_added + '_neighbours_changed']`` (largest number over the runs
        of final cell-graph neighbours that changed), ``obs[key_added + '_reassigned']``
        (share of runs and K in which the cell changed cluster), ``obs[key_added + '_max_change']``
        (largest absolute change of the cell's imputed row over genes and runs) and
        ``uns[key_added]`` (the returned summary; ``runs`` as a DataFrame, so that it can be written to .h5ad).
    n_jobs, progress
        Threads; progress bar over the runs (``None``: on a terminal).
    keep_runs
        Add the imputed matrices (reference first) to the returned dict under ``"runs_imputed"``
        (not to ``uns``).

    Returns
    -------
    dict
        ``verdict`` (``"stable"``, ``"sensitive"`` or ``"fragile"``) and ``message`` (a plain
        sentence), ``fragility`` (1 - the lowest ARI between the reference clustering and a
        rerun's), ``ari_min``, ``ari_mean``, ``fragility_multi_k`` (the mean over the
        cluster counts of :func:`cluster_range` of 1 - the lowest ARI of a rerun's
        clustering with the reference's; less tied to one K than ``fragility``),
        ``ari_min_by_k``, ``cells_reassigned`` (mean over runs and K of the share of cells
        whose cluster changed, clusters matched one to one), ``cells_neighbours_changed`` and
        ``cells_moved`` (fractions), ``max_change``, ``mean_abs_change``, ``mean_sd``
        (mean over entries of the standard deviation across all runs), ``runs`` (one record
        per run) and the settings.
    """
    import scipy.sparse as sp
    from sklearn.metrics import adjusted_rand_score

    from .._adata import check_key_added
    from .._engine import resolve_knn
    from .._errors import InputError, InputWarning
    from .._estimator import SCCR
    from .._options import _check_int, _check_seed, resolve_progress
    from ._score import check_method, check_params, expression

    method = check_method(method)
    if not isinstance(method, str) or method == "none":
        raise InputError(f"stability needs an imputation method ('sccr', 'scfp' or 'scbfp'), got {method!r}")
    params = check_params(method, params)
    _check_int("n_runs", n_runs, 1)
    random_state = _check_seed(random_state)
    check_key_added(key_added, layer)
    perturbations = tuple(perturbations)
    bad = [p for p in perturbations if p not in PERTURBATIONS]
    if bad or not perturbations:
        raise InputError(
            f"perturbations must be a non-empty list of {', '.join(map(repr, PERTURBATIONS))}; got {list(perturbations)!r}"
        )
    X = expression(adata, layer=layer)
    X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    n_clusters = default_n_clusters(n) if n_clusters is None else _check_int("n_clusters", n_clusters, 2)
    base_seed = 0 if random_state is None else random_state
    knn_ref = resolve_knn(params.get("knn", "auto"), n)

    def run(M, **overrides):
        options = {**params, **overrides}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)
            model = SCCR(method=method, **options, n_jobs=n_jobs, progress=False).fit(M)
        return model.imputed_, sp.csr_matrix(model.cell_graph_)

    from tqdm.auto import tqdm

    start = time.perf_counter()
    bar = tqdm(total=n_runs + 1, desc="stability", disable=not resolve_progress(progress), leave=False, unit="run")
    reference, graph0 = run(X, random_state=random_state)
    bar.update()
    labels0 = _clusters(reference, n_clusters, random_state, n_init)
    ks = cluster_range(n_clusters, n)
    project = _Projection(reference, N_PCS, random_state)
    projected0 = project(reference)
    labels0_k = {k: _clusters(projected0, k, random_state, n_init) for k in ks}
    switched = np.zeros(n, dtype=np.int64)  # cluster changes of each cell over runs and K
    changed = np.zeros(n, dtype=np.int64)
    max_change = np.zeros(n, dtype=np.float32)
    mean = reference.astype(np.float64)
    m2 = np.zeros_like(mean)
    runs, kept = [], [reference] if keep_runs else []
    for i in range(n_runs):
        kind = perturbations[i % len(perturbations)]
        seed = base_seed + 1 + i
        record: dict[str, Any] = {"kind": kind, "seed": seed}
        if kind == "jitter":
            imputed, graph = run(jitter_matrix(X, ulps=jitter_ulps, random_state=seed), random_state=random_state)
        elif kind == "permute":
            order = np.random.default_rng(seed).permutation(n)
            back = np.argsort(order)
            imputed, graph = run(X[order], random_state=random_state)
            imputed, graph = imputed[back], graph[back][:, back]
        elif kind == "approx":
            other = "approx" if knn_ref == "exact" else "exact"
            record["knn"] = other
            imputed, graph = run(X, knn=other, random_state=seed)
        else:
            imputed, graph = run(X, random_state=random_state)
        delta = np.abs(imputed - reference)
        row_change = delta.max(axis=1)
        cell_changes = _neighbour_changes(graph0, graph)
        labels = _clusters(imputed, n_clusters, random_state, n_init)
        projected = project(imputed)
        ari_k, moved_k = {}, []
        for k in ks:
            labels_k = _clusters(projected, k, random_state, n_init)
            ari_k[k] = float(adjusted_rand_score(labels0_k[k], labels_k))
            changed_k = reassigned(labels0_k[k], labels_k)
            switched += changed_k
            moved_k.append(float(changed_k.mean()))
        record.update(
            ari_by_k={str(k): v for k, v in ari_k.items()},
            cells_reassigned=float(np.mean(moved_k)),
            cells_neighbours_changed=float(np.mean(cell_changes > 0)),
            cells_moved=float(np.mean(row_change > MOVED)),
            max_change=float(row_change.max()),
            mean_abs_change=float(delta.mean()),
            ari=float(adjusted_rand_score(labels0, labels)),
        )
        runs.append(record)
        changed = np.maximum(changed, cell_changes)
        max_change = np.maximum(max_change, row_change)
        step = imputed.astype(np.float64) - mean  # Welford over the reference and the runs
        mean += step / (i + 2)
        m2 += step * (imputed - mean)
        if keep_runs:
            kept.append(imputed)
        bar.update()
    bar.close()
    aris = np.array([r["ari"] for r in runs])
    ari_min_k = {str(k): float(min(r["ari_by_k"][str(k)] for r in runs)) for k in ks}
    moved = float(np.mean(max_change > MOVED))
    kind, message = verdict(float(aris.min()), moved)
    summary: dict[str, Any] = {
        "verdict": kind,
        "message": message,
        "fragility": float(1 - aris.min()),
        "ari_min": float(aris.min()),
        "ari_mean": float(aris.mean()),
        "fragility_multi_k": float(np.mean([1 - v for v in ari_min_k.values()])),
        "ari_min_by_k": ari_min_k,
        "cells_reassigned": float(np.mean([r["cells_reassigned"] for r in runs])),
        "cluster_range": [int(k) for k in ks],
        "cells_neighbours_changed": float(np.mean(changed > 0)),
        "cells_moved": moved,
        "max_change": float(max_change.max()),
        "mean_abs_change": float(np.mean([r["mean_abs_change"] for r in runs])),
        "mean_sd": float(np.sqrt(m2 / (n_runs)).mean()),
        "runs": runs,
        "method": method,
        "params": dict(params),
        "n_runs": int(n_runs),
        "perturbations": list(perturbations),
        "jitter_ulps": float(jitter_ulps),
        "knn_reference": knn_ref,
        "n_clusters": int(n_clusters),
        "random_state": random_state,
        "thresholds": {
            "moved": MOVED,
            "fragile_ari": FRAGILE_ARI,
            "fragile_moved": FRAGILE_MOVED,
            "stable_ari": STABLE_ARI,
            "stable_moved": STABLE_MOVED,
        },
        "seconds": time.perf_counter() - start,
    }
    adata.obs[f"{key_added}_neighbours_changed"] = changed
    adata.obs[f"{key_added}_max_change"] = max_change
    adata.obs[f"{key_added}_reassigned"] = (switched / (n_runs * len(ks))).astype(np.float32)
    import pandas as pd

    from ._tune import _safe

    flat = [
        {**{k: v for k, v in r.items() if k != "ari_by_k"}, **{f"ari_k{k}": v for k, v in r["ari_by_k"].items()}}
        for r in runs
    ]
    adata.uns[key_added] = {**_safe({k: v for k, v in summary.items() if k != "runs"}), "runs": pd.DataFrame(flat)}
    out = dict(summary)
    if keep_runs:
        out["runs_imputed"] = kept
    return out

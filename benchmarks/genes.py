"""Evidence for graph genes, riding genes and batches (docs/scaling.md, "Every gene, and batches").

    python benchmarks/genes.py time hvg|all     # PBMC 3k: time and peak RSS of one imputation (fresh process)
    python benchmarks/genes.py recovery        # PBMC 3k: 20% of the non-HVG genes' observed entries held out
    python benchmarks/genes.py umap            # PBMC 3k: imputed marker genes on a UMAP (docs/figures/genes_pbmc3k_markers.png)
    python benchmarks/genes.py batches         # PBMC 4k: two pseudo-batches with a planted shift
    python benchmarks/genes.py big DIR         # 100k cells resampled from PBMC 3k, all genes: sccr impute --genes all to zarr

Each prints one JSON line per measurement and appends it to benchmarks/results/genes.jsonl.
PBMC 3k is /work/shared/data/pbmc3k_unlabeled.h5ad (or $SCCR_SHARED/data/...): genes with any
count (13,714), sc.pp.normalize_total + sc.pp.log1p, sc.pp.highly_variable_genes(n_top_genes=2000).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCCR_SHARED", ROOT.parent / "shared"))
if not SHARED.exists():
    SHARED = Path("/work/shared")
RESULTS = ROOT / "benchmarks" / "results" / "genes.jsonl"
N_JOBS = int(os.environ.get("SCCR_BENCH_JOBS", "2"))
MARKERS = ["CD3E", "CD8A", "MS4A1", "CD79A", "CD14", "LYZ", "FCGR3A", "NKG7", "GNLY", "PPBP", "FCER1A", "IL7R"]


def emit(record: dict) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with RESULTS.open("a") as f:
        f.write(line + "\n")


def pbmc3k():
    import scanpy as sc

    a = sc.read_h5ad(SHARED / "data" / "pbmc3k_unlabeled.h5ad")
    sc.pp.filter_genes(a, min_counts=1)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=2000)
    a.X = a.X.astype(np.float32)
    return a


def run_time(mode: str) -> None:
    import sccr
    from sccr._resources import peak_rss_mb

    a = pbmc3k()
    start = time.perf_counter()
    sccr.impute(a, genes=mode, n_jobs=N_JOBS, progress=False)
    seconds = time.perf_counter() - start
    timings = {k: round(v, 2) for k, v in a.uns["sccr"]["timings"].items()}
    emit(
        {
            "what": "pbmc3k_time",
            "genes": mode,
            "shape": list(a.shape),
            "n_imputed": int(a.var.get("sccr_imputed", np.ones(1)).sum()),
            "seconds": round(seconds, 2),
            "peak_rss_mib": round(peak_rss_mb(), 1),
            "timings": timings,
            "n_jobs": N_JOBS,
        }
    )


def errors(truth: np.ndarray, guess: np.ndarray) -> dict:
    d = guess.astype(np.float64) - truth.astype(np.float64)
    cos = float(truth @ guess / (np.linalg.norm(truth) * np.linalg.norm(guess) + 1e-30))
    return {
        "rmse": round(float(np.sqrt(np.mean(d**2))), 4),
        "mae": round(float(np.mean(np.abs(d))), 4),
        "median_l1": round(float(np.median(np.abs(d))), 4),
        "cosine": round(cos, 4),
    }


def run_recovery(seed: int = 0, rate: float = 0.2) -> None:
    import scipy.sparse as sp

    import sccr

    a = pbmc3k()
    hvg = a.var["highly_variable"].to_numpy()
    X = sp.csr_matrix(a.X)
    coo = X.tocoo()
    candidates = np.flatnonzero(~hvg[coo.col])  # observed entries of genes outside the HVGs
    rng = np.random.default_rng(seed)
    held = rng.choice(candidates, size=int(rate * candidates.size), replace=False)
    rows, cols, truth = coo.row[held], coo.col[held], coo.data[held].copy()
    data = coo.data.copy()
    data[held] = 0
    masked = sp.csr_matrix((data, (coo.row, coo.col)), shape=X.shape, dtype=np.float32)
    masked.eliminate_zeros()
    a.X = masked
    base = {
        "what": "pbmc3k_recovery",
        "seed": seed,
        "rate": rate,
        "n_held_out": int(held.size),
        "n_genes": int(a.n_vars),
        "hvg_from": "the unmasked data (the held-out entries are all outside them)",
    }
    emit({**base, "method": "no imputation", **errors(truth, np.zeros_like(truth))})
    for gamma in (0.01, 1.0):
        start = time.perf_counter()
        out = sccr.impute(a, gamma=gamma, n_jobs=N_JOBS, progress=False, copy=True)
        seconds = time.perf_counter() - start
        L = out.layers["sccr"]
        emit(
            {
                **base,
                "method": f"sccr genes='all' gamma={gamma}",
                "seconds": round(seconds, 1),
                **errors(truth, L[rows, cols]),
            }
        )
        if gamma == 0.01:
            for threshold in (0.01, 0.05, 0.1):  # what a sparse output that zeroes small values would cost
                kept = np.where(L >= threshold, L, 0)
                emit(
                    {
                        **base,
                        "method": f"sccr gamma=0.01, values < {threshold} set to 0",
                        "density": round(float((kept > 0).mean()), 4),
                        "dense_density": round(float((L > 0).mean()), 4),
                        "change_rmse_all_entries": round(
                            float(np.sqrt(np.mean((kept - L).astype(np.float64) ** 2))), 5
                        ),
                        **errors(truth, kept[rows, cols]),
                    }
                )
            del kept
    try:
        import magic
    except ImportError:
        emit({**base, "method": "MAGIC", "skipped": "magic-impute not installed"})
        return
    start = time.perf_counter()
    M = magic.MAGIC(random_state=seed, n_jobs=N_JOBS, verbose=0).fit_transform(masked.toarray())
    emit(
        {
            **base,
            "method": "MAGIC (defaults, all genes)",
            "seconds": round(time.perf_counter() - start, 1),
            **errors(truth, np.asarray(M)[rows, cols]),
        }
    )


def run_umap() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    import sccr

    a = pbmc3k()
    sccr.impute(a, n_jobs=N_JOBS, progress=False)
    sc.pp.pca(a, n_comps=50, mask_var="highly_variable", random_state=0)
    sc.pp.neighbors(a, n_neighbors=15, random_state=0)
    sc.tl.umap(a, random_state=0)
    markers = [g for g in MARKERS if g in a.var_names]
    fig, axes = plt.subplots(2, len(markers), figsize=(2.2 * len(markers), 4.6))
    xy = a.obsm["X_umap"]
    for j, gene in enumerate(markers):
        col = a.var_names.get_loc(gene)
        for i, (values, label) in enumerate(
            ((a.X[:, col].toarray().ravel(), "log-normalised"), (a.layers["sccr"][:, col], "sccr"))
        ):
            ax = axes[i, j]
            order = np.argsort(values)
            ax.scatter(xy[order, 0], xy[order, 1], c=values[order], s=1, cmap="viridis", rasterized=True)
            ax.set_xticks([]), ax.set_yticks([])
            hv = "HVG" if a.var["highly_variable"].iloc[col] else "not HVG"
            ax.set_title(f"{gene} ({hv})" if i == 0 else "imputed", fontsize=8)
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    out = ROOT / "docs" / "figures" / "genes_pbmc3k_markers.png"
    fig.savefig(out, dpi=110)
    emit(
        {
            "what": "pbmc3k_umap",
            "figure": str(out.relative_to(ROOT)),
            "markers": markers,
            "not_hvg": [g for g in markers if not a.var["highly_variable"].loc[g]],
        }
    )


def ilisi(E: np.ndarray, batch: np.ndarray, k: int = 30) -> float:
    """Mean inverse Simpson index of the batches among each cell's k nearest neighbours (1: unmixed, B: fully mixed)."""
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k).fit(E).kneighbors(E, return_distance=False)
    labels = np.unique(batch)
    share = np.stack([(batch[idx] == b).mean(axis=1) for b in labels], axis=1)
    return float(np.mean(1.0 / np.sum(share**2, axis=1)))


def embed(M, seed: int = 0) -> np.ndarray:
    from sklearn.decomposition import PCA

    M = M.toarray() if hasattr(M, "toarray") else np.asarray(M)
    return PCA(n_components=30, random_state=seed).fit_transform(M)


def scores(M, batch: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    E = embed(M)
    clusters = KMeans(n_clusters=len(np.unique(labels)), n_init=10, random_state=0).fit_predict(E)
    return {
        "ilisi": round(ilisi(E, batch), 3),
        "ari_celltype": round(adjusted_rand_score(labels, clusters), 4),
        "silhouette_celltype": round(float(silhouette_score(E, labels)), 4),
        "ari_batch": round(adjusted_rand_score(batch, clusters), 4),
    }


def run_batches(seed: int = 0, shift: float = 1.0, fraction: float = 0.2) -> None:
    import anndata as ad
    import scipy.sparse as sp

    import sccr

    raw = ad.read_h5ad(SHARED / "data" / "pbmc4k_top2000.h5ad")
    a = sccr.pp.preprocess_paper(raw)
    labels = a.obs["celltype"].astype(str).to_numpy()
    rng = np.random.default_rng(seed)
    batch = np.where(rng.random(a.n_obs) < 0.5, "A", "B")
    genes = rng.choice(a.n_vars, size=int(fraction * a.n_vars), replace=False)
    X = sp.csr_matrix(a.X, dtype=np.float32)
    shifted = X.tocsc()
    in_b = batch == "B"
    for g in genes:  # batch B: observed values of 20% of the genes raised by `shift` (log scale)
        lo, hi = shifted.indptr[g], shifted.indptr[g + 1]
        rows = shifted.indices[lo:hi]
        shifted.data[lo:hi] += np.float32(shift) * in_b[rows]
    a.X = shifted.tocsr()
    a.obs["batch"] = batch
    base = {
        "what": "batches_pbmc4k",
        "seed": seed,
        "shift": shift,
        "shifted_genes": int(genes.size),
        "n_cells": int(a.n_obs),
    }
    emit({**base, "run": "clean data (no shift), not imputed", **scores(X, batch, labels)})
    emit({**base, "run": "not imputed", **scores(a.X, batch, labels)})
    for run, extra in (
        ("sccr, no batch_key", {}),
        ("sccr, batch_mode='balanced'", {"batch_key": "batch", "batch_mode": "balanced"}),
        ("sccr, batch_mode='within'", {"batch_key": "batch", "batch_mode": "within"}),
    ):
        start = time.perf_counter()
        out = sccr.impute(a, n_jobs=N_JOBS, progress=False, copy=True, **extra)
        emit(
            {
                **base,
                "run": run,
                "seconds": round(time.perf_counter() - start, 1),
                **scores(out.layers["sccr"], batch, labels),
            }
        )


def run_big(folder: str, n_cells: int = 100_000) -> None:
    """Input: PBMC 3k cells (raw, genes with a count) drawn with replacement, counts thinned to 80%
    (benchmarks/resample.py), then normalize_total + log1p + highly_variable_genes(2000), sparse .h5ad.
    Measured: the whole command ``sccr impute IN OUT.zarr --genes all`` under /usr/bin/time -v."""
    import subprocess

    import scanpy as sc

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from resample import resample

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / f"pbmc3k_all_{n_cells}.h5ad"
    if not src.exists():
        raw = sc.read_h5ad(SHARED / "data" / "pbmc3k_unlabeled.h5ad")
        sc.pp.filter_genes(raw, min_counts=1)
        big = resample(raw, n_cells)
        sc.pp.normalize_total(big)
        sc.pp.log1p(big)
        sc.pp.highly_variable_genes(big, n_top_genes=2000)
        big.X = big.X.astype(np.float32)
        big.write_h5ad(src)
    out = folder / f"pbmc3k_all_{n_cells}.zarr"
    command = [
        "/usr/bin/time",
        "-v",
        sys.executable,
        "-m",
        "sccr.cli",
        "impute",
        str(src),
        str(out),
        "--genes",
        "all",
        "--n-jobs",
        str(N_JOBS),
        "--force",
        "--quiet",
    ]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    rss = [line for line in proc.stderr.splitlines() if "Maximum resident set size" in line]
    peak = int(rss[0].split(":")[1]) / 1024 if rss else None
    emit(
        {
            "what": "big_all_genes",
            "n_cells": n_cells,
            "command": " ".join(command[2:]),
            "returncode": proc.returncode,
            "seconds": round(seconds, 1),
            "peak_rss_mib": peak,
            "stderr_tail": proc.stderr[-300:] if proc.returncode else "",
        }
    )


if __name__ == "__main__":
    command = sys.argv[1]
    if command == "time":
        run_time(sys.argv[2])
    elif command == "recovery":
        run_recovery()
    elif command == "umap":
        run_umap()
    elif command == "batches":
        run_batches()
    elif command == "big":
        run_big(sys.argv[2])
    else:
        raise SystemExit(__doc__)

"""Choice of the approximate k-NN search and of the ``knn="auto"`` switch point (docs/knn.md).

Usage (each case runs in its own process under ``flock /tmp/sccr-heavy.lock``):

    python benchmarks/knn_choice.py prepare            # resampled pbmc inputs, exact neighbours, D0
    python benchmarks/knn_choice.py run [--groups recall,alternatives,scaling,switch,ari] [--no-lock]
    python benchmarks/knn_choice.py table              # print benchmarks/results/knn_choice.json

Inputs: pbmc4k_top2000 resampled to N cells (benchmarks/resample.py), preprocessed
(``sccr.pp.preprocess_paper``): X is the sparse log-normalised matrix, D0 the hard
propagation of X on its exact k-NN graph (``propagate(knn_graph(X, 15, sym=True), X, 40)``),
dense, as the pipeline's later graphs see. Recall@16 (k = 15 plus the row itself): a
returned neighbour counts as found when its exact cosine is at least the exact 16th
similarity of the row (duplicated source cells make ties; any tied row is correct).
Peak RSS: the process's high-water mark during the search minus the RSS just before
it (``/proc/self/clear_refs``), i.e. what the search adds on top of its input.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("SCCR_SHARED", ROOT.parent / "shared"))
WORK = Path(os.environ.get("SCCR_KNN_WORK", "/tmp/knn"))
OUT = HERE / "results" / "knn_choice.json"
LOCK = "/tmp/sccr-heavy.lock"
K1 = 16
SIZES = {"20k": 20_000, "50k": 50_000, "100k": 100_000, "200k": 200_000}


# --------------------------------------------------------------------------- helpers
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _measure(fn):
    """(result, seconds, peak RSS MiB added, RSS MiB before)."""
    import gc

    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    return out, seconds, (_status_kib("VmHWM") - before) / 1024, before / 1024


def _load(size: str, matrix: str):
    import numpy as np
    import scipy.sparse as sp

    if matrix == "X":
        return sp.load_npz(WORK / f"X_{size}.npz")
    return np.load(WORK / f"D0_{size}.npy")


def _recall(indices, M, size: str, matrix: str, rows: int | None = None) -> float | None:
    import numpy as np

    from sccr._engine.graph import ExactCosine

    path = WORK / f"exact_{matrix}_{size}.npz"
    if rows is not None or not path.exists():
        return None
    threshold = np.load(path)["val"][:, -1:]
    sims = ExactCosine(M)(0, indices[:, :K1])
    return float((sims >= threshold).sum(axis=1).clip(max=K1).mean() / K1)


def _sources():
    """The two matrices read in row blocks, as :class:`sccr._engine.matrix.Matrix` subclasses
    (made here so that ``run`` and ``table`` do not import sccr)."""
    import numpy as np

    from sccr._engine.matrix import ROW_BLOCK, Matrix

    class Streamed(Matrix):
        """A dense in-memory matrix read only through ``row_blocks`` (as a store on disk; the
        exact scoring gathers its column slices from one pass over the row blocks)."""

        def __init__(self, M):
            self._M = M
            self.shape = M.shape

        def row_blocks(self, rows=ROW_BLOCK):
            for start in range(0, self.shape[0], rows):
                yield start, self._M[start : start + rows]

    class Synthetic(Matrix):
        """``n`` dense rows made on the fly: rows of D0 (50k) drawn with replacement, every entry
        times ``1 + 0.1 z`` (z normal): a smooth dense matrix of any size that is never held whole."""

        def __init__(self, base, n: int, seed: int = 0):
            self.base = base
            self.shape = (n, base.shape[1])
            self.rows = np.random.default_rng(seed).integers(0, base.shape[0], size=n)
            self.seed = seed

        def row_blocks(self, rows=ROW_BLOCK):
            for start in range(0, self.shape[0], rows):
                stop = min(self.shape[0], start + rows)
                rng = np.random.default_rng([self.seed, start])
                block = self.base[self.rows[start:stop]]
                yield start, (block * (1 + 0.1 * rng.standard_normal(block.shape, dtype=np.float32))).astype(np.float32)

    return Streamed, Synthetic


# --------------------------------------------------------------------------- cases
def case_ours(size, matrix, *, streamed=False, rows=None, refine=None, n_jobs=2, **_):
    from sccr._engine import ann
    from sccr._engine.execution import Execution, executing

    Streamed, Synthetic = _sources()
    if refine is not None:
        ann.N_REFINE = refine
    if matrix == "synthetic":
        M = Synthetic(_load("50k", "D0"), SIZES[size])
    else:
        M = _load(size, matrix)
        if rows:
            M = M[:rows]
    with executing(Execution(n_jobs=n_jobs)):  # n_jobs threads for BLAS and numba
        ann.approximate_neighbours(_load("20k", "X")[:500], K1, random_state=0)  # compile
        src = Streamed(M) if streamed else M
        (indices, _), seconds, rss, base = _measure(lambda: ann.approximate_neighbours(src, K1, random_state=0))
    return {
        "seconds": seconds,
        "peak_rss_added_mib": rss,
        "rss_before_mib": base,
        "stages": dict(ann.last_timings),
        "recall": _recall(indices, M, size, matrix, rows),
    }


def case_exact(size, matrix, *, rows=None, **_):
    from sccr._engine.graph import exact_neighbours

    M = _load(size, matrix)
    if rows:
        M = M[:rows]
    (indices, _), seconds, rss, base = _measure(lambda: exact_neighbours(M, K1))
    return {"seconds": seconds, "peak_rss_added_mib": rss, "rss_before_mib": base}


def case_pynndescent(size, matrix, *, n_jobs=2, **_):
    import warnings

    from pynndescent import NNDescent

    M = _load(size, matrix)
    warnings.filterwarnings("ignore")
    _ = NNDescent(M[:2000], n_neighbors=K1, metric="cosine", random_state=0, n_jobs=n_jobs).neighbor_graph  # compile

    def go():
        return NNDescent(M, n_neighbors=K1, metric="cosine", random_state=0, n_jobs=n_jobs).neighbor_graph

    (indices, _), seconds, rss, base = _measure(go)
    return {
        "seconds": seconds,
        "peak_rss_added_mib": rss,
        "rss_before_mib": base,
        "recall": _recall(indices, M, size, matrix),
    }


def case_hnswlib(size, matrix, *, n_jobs=2, **_):
    """Candidates from hnswlib (inner product on the same projection) instead of the clusters,
    then the same exact scoring, no refinement: compares the candidate generators alone."""
    import hnswlib
    import numpy as np

    from sccr._engine import ann
    from sccr._engine.execution import Execution, executing
    from sccr._engine.matrix import as_matrix

    M = _load(size, matrix)

    def go():
        rng = np.random.default_rng(0)
        t0 = time.perf_counter()
        src = as_matrix(M)
        P, norms = ann.project(src, ann.N_COMPONENTS, rng)
        t1 = time.perf_counter()
        index = hnswlib.Index(space="ip", dim=P.shape[1])
        index.init_index(max_elements=P.shape[0], ef_construction=100, M=16, random_seed=0)
        index.add_items(P, num_threads=1)  # one thread: the insertion order fixes the graph
        index.set_ef(96)
        labels, _ = index.knn_query(P, k=ann.N_CANDIDATES, num_threads=n_jobs)
        t2 = time.perf_counter()
        cand = np.concatenate([np.arange(P.shape[0])[:, None], labels.astype(np.int64)], axis=1)
        cand.sort(axis=1)
        keep = np.ones(cand.shape, dtype=bool)
        keep[:, 1:] = cand[:, 1:] != cand[:, :-1]
        ptr = np.r_[0, np.cumsum(keep.sum(axis=1))].astype(np.int64)
        idx = cand[keep]
        sims = ann._Scorer(src, norms, np.arange(P.shape[0]))(ptr, idx)
        ind = np.empty((P.shape[0], K1), dtype=np.int64)
        val = np.empty((P.shape[0], K1), dtype=np.float32)
        ann._merge_top(ptr, idx, sims, K1, ind, val)
        return ind, {"project": t1 - t0, "hnsw_build_query": t2 - t1, "score": time.perf_counter() - t2}

    with executing(Execution(n_jobs=n_jobs)):  # n_jobs threads for BLAS and numba
        (indices, stages), seconds, rss, base = _measure(go)
    return {
        "seconds": seconds,
        "peak_rss_added_mib": rss,
        "rss_before_mib": base,
        "stages": stages,
        "recall": _recall(indices, M, size, matrix),
    }


def exact_lists(M):
    from sccr._engine.graph import exact_neighbours

    return exact_neighbours(M, K1)


def case_ari(dataset, *, mode, seeds=(0, 1, 2), n_jobs=2, **_):
    import numpy as np
    from threadpoolctl import threadpool_limits

    from sccr._benchmark.runner import load_dataset
    from sccr._engine import ann
    from sccr._engine import prepare as prepare_run
    from sccr._engine.execution import Execution, executing
    from sccr._engine.graph import ExactCosine
    from sccr._evaluation import clustering_scores
    from sccr._options import Options

    # Approximate modes: every cell graph of the pipeline (the intermediate ones and the final one)
    # by the approximate search, seed 0; exact modes: knn="auto", exact below 20,000 cells.
    knn = "auto" if mode in ("exact", "exact_perturbed") else "approx"
    if mode == "approx_cluster300":
        ann.CLUSTER_SIZE = 300
    data = load_dataset(SHARED / "data" / f"{dataset}.h5ad", label_key="celltype", genes_dir=SHARED / "reference")
    recall = None
    if mode == "exact_perturbed":  # the exact pipeline on X times (1 + 1e-4 z): how much KMeans moves anyway
        X = data.X.copy()
        X.data *= 1 + 1e-4 * np.random.default_rng(0).standard_normal(X.data.size).astype(np.float32)
        data.X = X
    elif mode != "exact":  # recall@16 of the first graph's lists (on X)
        with executing(Execution(n_jobs=n_jobs)):
            indices, _ = ann.approximate_neighbours(data.X, K1, random_state=0)
        threshold = exact_lists(data.X)[1][:, -1:]
        sims = ExactCosine(data.X)(0, indices)
        recall = float((sims >= threshold).sum(axis=1).clip(max=K1).mean() / K1)
    options = Options(
        method="sccr", knn=knn, random_state=0, n_jobs=n_jobs, progress=False, sym_final=dataset != "worm_neuron"
    )
    with prepare_run(data.X, options) as job:  # checks and memory plan outside the measured span
        result, seconds, rss, _ = _measure(job.execute)
    if result.decisions.knn_used != ("exact" if knn == "auto" else "approx"):
        raise RuntimeError(f"mode {mode} ran the {result.decisions.knn_used} search")
    scores = []
    with threadpool_limits(limits=1):
        for seed in seeds:
            scores.append(clustering_scores(result.imputed, data.labels, seed=seed))
    ari = [s["ari"] for s in scores]
    return {
        "seconds": seconds,
        "n_cells": int(data.X.shape[0]),
        "recall_X": recall,
        "ari": ari,
        "ari_mean": float(np.mean(ari)),
        "nmi_mean": float(np.mean([s["nmi"] for s in scores])),
        "ca_mean": float(np.mean([s["ca"] for s in scores])),
        "graph_seconds": {k: v for k, v in result.timings.items() if "graph" in k or "knn" in k},
    }


CASES = {
    "ours": case_ours,
    "exact": case_exact,
    "pynndescent": case_pynndescent,
    "hnswlib": case_hnswlib,
    "ari": case_ari,
}

GROUPS = {
    "recall": [
        *({"case": "ours", "size": s, "matrix": m} for s in ("20k", "50k") for m in ("X", "D0")),
        *({"case": "ours", "size": s, "matrix": "D0", "streamed": True} for s in ("20k", "50k")),
        *({"case": "ours", "size": s, "matrix": m, "refine": 0} for s in ("20k", "50k") for m in ("X", "D0")),
        *({"case": "exact", "size": "20k", "matrix": m} for m in ("X", "D0")),
    ],
    "alternatives": [
        *({"case": c, "size": "20k", "matrix": m} for c in ("pynndescent", "hnswlib") for m in ("X", "D0")),
    ],
    "scaling": [
        *({"case": "ours", "size": s, "matrix": "X"} for s in ("100k", "200k")),
        *({"case": "ours", "size": s, "matrix": "synthetic"} for s in ("100k", "200k")),
    ],
    "switch": [
        *(
            {"case": c, "size": "20k", "matrix": m, "rows": r}
            for r in (2000, 5000, 10000)
            for m in ("X", "D0")
            for c in ("exact", "ours")
        ),
    ],
    "ari": [
        *(
            {"case": "ari", "dataset": d, "mode": mode}
            for d in ("worm_neuron", "mouse_bladder_top2000", "pbmc4k_top2000")
            for mode in ("exact", "approx", "approx_cluster300", "exact_perturbed")
        ),
    ],
}


def prepare() -> None:
    """Resampled inputs, preprocessed X, exact neighbours and D0 (20k, 50k), X only (100k, 200k)."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    import sccr
    from sccr._engine.execution import Execution, executing
    from sccr._engine.graph import exact_neighbours, knn_graph
    from sccr._engine.propagation import propagate

    WORK.mkdir(parents=True, exist_ok=True)
    for size, n in SIZES.items():
        raw = WORK / f"pbmc_{size}.h5ad"
        if not raw.exists():
            subprocess.run(
                [
                    sys.executable,
                    str(HERE / "resample.py"),
                    str(SHARED / "data" / "pbmc4k_top2000.h5ad"),
                    str(n),
                    str(raw),
                ],
                check=True,
            )
        if not (WORK / f"X_{size}.npz").exists():
            X = sp.csr_matrix(sccr.pp.preprocess_paper(ad.read_h5ad(raw)).X, dtype=np.float32)
            sp.save_npz(WORK / f"X_{size}.npz", X)
        if size in ("20k", "50k") and not (WORK / f"exact_D0_{size}.npz").exists():
            X = sp.load_npz(WORK / f"X_{size}.npz")
            idx, val = exact_neighbours(X, K1)
            np.savez(WORK / f"exact_X_{size}.npz", idx=idx, val=val)
            A = knn_graph(X, 15, sym=True)
            with executing(Execution(n_jobs=2)):
                D0 = np.ascontiguousarray(propagate(A, X, 40, hard=True), dtype=np.float32)
            np.save(WORK / f"D0_{size}.npy", D0)
            idx, val = exact_neighbours(D0, K1)
            np.savez(WORK / f"exact_D0_{size}.npz", idx=idx, val=val)


def run(groups: list[str], *, lock: bool = True) -> None:
    """Run every case of ``groups``, each in a fresh process; under the lock unless ``lock`` is
    false (for figures that are not timings: recall, ARI; their seconds are then marked unlocked)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    for group in groups:
        for spec in GROUPS[group]:
            key = json.dumps(spec, sort_keys=True)
            cmd = (["flock", LOCK] if lock else []) + [sys.executable, __file__, "case", key]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            if proc.returncode != 0:
                out = {
                    "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc {proc.returncode}"
                }
            else:
                out = json.loads(proc.stdout.strip().splitlines()[-1])
            print(group, key, json.dumps(out), flush=True)
            # Re-read before writing: two runs (locked and unlocked groups) may share the file.
            results = json.loads(OUT.read_text()) if OUT.exists() else {}
            results[key] = {**spec, "group": group, "timed_under_lock": lock, **out}
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(results, indent=1))


def table() -> None:
    results = json.loads(OUT.read_text())
    print(f"{'group':12} {'case':12} {'size':5} {'matrix':9} {'extra':24} {'seconds':>8} {'rss+MiB':>8} {'recall':>7}")
    for r in results.values():
        extra = ",".join(f"{k}={r[k]}" for k in ("streamed", "refine", "rows", "dataset", "mode") if k in r)
        rec = r.get("recall")
        print(
            f"{r['group']:12} {r['case']:12} {r.get('size', ''):5} {r.get('matrix', ''):9} {extra:24} "
            f"{r.get('seconds', float('nan')):8.1f} {r.get('peak_rss_added_mib', float('nan')):8.0f} "
            f"{'' if rec is None else format(rec, '.4f'):>7}"
            + (f"  ARI {r['ari_mean']:.4f} {[round(a, 4) for a in r['ari']]}" if "ari_mean" in r else "")
            + (f" recall(X) {r['recall_X']:.4f}" if r.get("recall_X") is not None else "")
            + (f"  {r['error']}" if "error" in r else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare", "run", "table", "case"])
    parser.add_argument("spec", nargs="?")
    parser.add_argument("--groups", default=",".join(GROUPS))
    parser.add_argument("--no-lock", action="store_true", help="do not take the lock (recall and ARI only)")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare()
    elif args.command == "run":
        run(args.groups.split(","), lock=not args.no_lock)
    elif args.command == "table":
        table()
    else:
        spec = json.loads(args.spec)
        print(json.dumps(CASES[spec.pop("case")](**spec)))


if __name__ == "__main__":
    main()

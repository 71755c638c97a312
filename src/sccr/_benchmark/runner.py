"""``sccr benchmark``: the paper's evaluation protocol on labelled data sets, against baselines.

The grid is data set x task x (rate, seed) x method. Every cell of it is one
record appended to ``results.jsonl`` as soon as it is done, so an interrupted run
resumes where it stopped. ``_report`` turns the records into ``summary.md`` and figures.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from .._engine import run
from .._errors import InputError
from .._evaluation import clustering_scores, drop_entries, drop_entries_mnar, imputation_errors
from .._options import DEFAULTS, Options, resolve_n_jobs, resolve_progress
from .._resources import PeakRSS
from .._versions import versions
from . import baselines
from .grid import METHODS, OPTIONAL_MODULES, PAPER_GAMMA, PAPER_SYM_FINAL, TASKS, UMAP_RATE
from .report import write_report

_DROPS = {"mcar": drop_entries, "mnar": drop_entries_mnar}
#: KMeans runs on one thread: with two OpenMP threads on a busy 2-core machine it ran 10-20x
#: slower (threads spinning at barriers), with the same labels on every case checked.
KMEANS_THREADS = 1


@dataclass
class Dataset:
    """A preprocessed, labelled data set."""

    name: str
    X: sp.csr_matrix
    labels: np.ndarray
    preprocess: dict


def load_dataset(source: str | os.PathLike, *, label_key: str, genes_dir: str | os.PathLike | None = None) -> Dataset:
    """Read raw counts (a path, or ``"worm_neuron"`` for the bundled set) and preprocess as the paper does.

    With ``genes_dir``, the genes listed in ``<genes_dir>/<name>.genes.txt`` (one
    per line) are kept when that file exists, e.g. the reference's lists.
    """
    from .._io import read_anndata
    from .._preprocess import preprocess_paper
    from ..datasets import worm_neuron

    if str(source) == "worm_neuron" and not Path(source).exists():
        name, adata = "worm_neuron", worm_neuron()
    else:
        name, adata = Path(source).name.removesuffix(".h5ad"), read_anndata(source)
    if label_key not in adata.obs:
        raise InputError(
            f"{str(source)!r} has no obs column {label_key!r} (columns: {', '.join(map(str, adata.obs.columns)) or 'none'}); pass --label-key"
        )
    genes_file = Path(genes_dir) / f"{name}.genes.txt" if genes_dir is not None else None
    genes = genes_file.read_text().split() if genes_file is not None and genes_file.exists() else None
    adata = preprocess_paper(adata, genes=genes)
    labels = adata.obs[label_key].to_numpy()
    if (adata.obs[label_key].isna()).any():
        raise InputError(f"{str(source)!r}: obs[{label_key!r}] has missing labels; drop those cells first")
    return Dataset(
        name, sp.csr_matrix(adata.X), labels, {"genes": str(genes_file) if genes else "top 2000 by count variance"}
    )


def method_params(method: str, dataset: str, task: str) -> dict:
    """The settings the benchmark uses for ``method`` (recorded with every result).

    scCR/scFP/scBFP: the package defaults (the paper's), with scCR's ``gamma``
    from :data:`PAPER_GAMMA` and ``sym_final`` from :data:`PAPER_SYM_FINAL`
    (True elsewhere). Baselines: their own defaults, fixed random states.
    """
    if method in ("sccr", "scfp", "scbfp"):
        paper = {"gamma": PAPER_GAMMA[task], "sym_final": PAPER_SYM_FINAL.get(dataset, True)}
        keys = (
            ("k", "k_gene", "n_iter", "alpha", "beta", "gamma", "sym_final")
            if method == "sccr"
            else ("k", "k_gene", "n_iter", "beta", "sym_final")
        )
        return {key: paper.get(key, getattr(DEFAULTS, key)) for key in keys}
    return {
        "raw": {},
        "knn": {"k": 15},
        "alra": {"max_rank": 100, "n_power_iter": 10, "quantile": 0.001, "random_state": 0},
        "magic": {"solver": "exact", "random_state": 0},
    }[method]


def impute(method: str, X: sp.csr_matrix, params: dict, *, n_jobs: int) -> tuple[np.ndarray, sp.csr_matrix | None]:
    """Run one method; returns the imputed matrix and its gene graph (scCR, scBFP) or None."""
    if method in ("sccr", "scfp", "scbfp"):
        # Through the engine's entry: checked, memory planned; exact neighbours as in the paper's sizes.
        result = run(X, Options(method=method, n_jobs=n_jobs, progress=False, **params))
        return result.imputed, result.gene_graph if method != "scfp" else None
    if method == "magic":
        return baselines.magic(X, n_jobs=n_jobs, random_state=params["random_state"]), None
    if method == "alra":
        return baselines.alra(X, **params), None
    if method == "knn":
        return baselines.knn_smooth(X, **params), None
    return baselines.raw(X), None


def gene_edge_signs(G: sp.spmatrix) -> dict[str, int]:
    """Associating (positive) and dissociating (negative) edges of a gene graph, self-loops and duplicates (g-h, h-g) excluded."""
    upper = sp.triu(sp.csr_matrix(G) + sp.csr_matrix(G).T, k=1).tocsr()
    upper.eliminate_zeros()
    return {"associating": int((upper.data > 0).sum()), "dissociating": int((upper.data < 0).sum())}


def data_gene_edges(X: sp.csr_matrix, k_gene: int = 2) -> dict[str, int]:
    """Signs of each gene's ``k_gene`` partners of largest |Pearson r| in the data (the graphs' yardstick)."""
    D = X.toarray().astype(np.float64)
    D -= D.mean(axis=0)
    norms = np.linalg.norm(D, axis=0)
    D /= np.where(norms > 0, norms, 1.0)
    R = D.T @ D
    np.fill_diagonal(R, 0.0)
    top = np.argsort(-np.abs(R), axis=1, kind="stable")[:, :k_gene]
    rows = np.repeat(np.arange(R.shape[0]), k_gene)
    G = sp.csr_matrix((np.sign(R[rows, top.ravel()]), (rows, top.ravel())), shape=R.shape)
    G.data = np.sign(G.data)
    return gene_edge_signs(G)


def record_key(record: dict) -> str:
    """What identifies a result: data set, method, task, rate, seed, parameters, preprocessing."""
    fields = ("dataset", "method", "task", "rate", "seed", "params", "preprocess", "label_key")
    return json.dumps({f: record[f] for f in fields}, sort_keys=True)


def read_records(path: Path) -> list[dict]:
    """Records of a ``results.jsonl``; an incomplete last line (interrupted write) is ignored."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _drop_partial_line(path: Path) -> None:
    """Cut an unfinished last line (a write interrupted midway) so appends start on a fresh line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _umap(M: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from umap import UMAP

    pcs = PCA(n_components=min(50, *M.shape), random_state=seed).fit_transform(M)
    return UMAP(random_state=seed, n_jobs=1).fit_transform(pcs).astype(np.float32)


def _check_grid(methods, tasks, rates, seeds) -> None:
    for name, given, allowed in (("method", methods, METHODS), ("task", tasks, TASKS)):
        unknown = [x for x in given if x not in allowed]
        if unknown or not given:
            raise InputError(f"unknown or no {name}(s) {unknown}; choose from {', '.join(allowed)}")
    if any(not 0 < r < 1 for r in rates) and any(t != "clustering" for t in tasks):
        raise InputError(f"rates must lie strictly between 0 and 1, got {list(rates)}")
    if not seeds or any(int(s) != s or s < 0 for s in seeds):
        raise InputError(f"seeds must be non-negative integers, got {list(seeds)}")


def available_methods(methods: Sequence[str], echo=print) -> list[str]:
    """``methods`` without those whose optional dependency is missing (one notice each)."""
    kept = []
    for m in methods:
        module = OPTIONAL_MODULES.get(m)
        if module is not None and find_spec(module) is None:
            echo(f"sccr: notice: skipping {m}: {module} is not installed (pip install 'sccr[benchmark]')")
            continue
        kept.append(m)
    return kept


def benchmark(
    datasets: Sequence[str | os.PathLike],
    *,
    out: str | os.PathLike,
    methods: Sequence[str] = METHODS,
    tasks: Sequence[str] = TASKS,
    rates: Sequence[float] = (0.2, 0.4, 0.8),
    seeds: Sequence[int] = (0, 1, 2),
    label_key: str = "celltype",
    genes_dir: str | os.PathLike | None = None,
    n_jobs: int | None = None,
    figures: bool = True,
    resume: bool = True,
    progress: bool | None = None,
    echo=print,
) -> list[dict]:
    """Run the paper's evaluation protocol on labelled data sets for several methods.

    Each data set (raw counts in ``X``, labels in ``obs[label_key]``; a path or
    ``"worm_neuron"``) is preprocessed as the paper does; every method gets the
    same (dropped) matrix. Tasks: ``clustering`` (no dropout), ``mcar`` (uniform
    dropout, :func:`~sccr._evaluation.drop_entries`) and ``mnar`` (low values
    dropped more often, :func:`~sccr._evaluation.drop_entries_mnar`) at each rate
    and seed. Every record has the clustering scores (KMeans, ``random_state=seed``),
    the errors on the dropped entries for dropout tasks, the imputation's wall
    time and the process's peak RSS during it.

    Records go to ``out/results.jsonl`` (one JSON object per line, written and
    synced one at a time); records already there with the same key are skipped
    (with ``resume=False`` the file is emptied first, once the inputs are read).
    The clustering task imputes each method once per data set, whatever the
    seed (only KMeans depends on it): the other seeds' records carry the same
    ``seconds`` and ``peak_rss_mb`` with ``imputation_reused: true``.
    Then ``summary.md`` and, with ``figures`` (needs matplotlib, umap-learn), PNGs.

    Returns
    -------
    list of dict
        All records in ``results.jsonl`` after the run.
    """
    methods, tasks = list(methods), list(tasks)
    rates = [float(r) for r in rates]
    seeds = [int(s) for s in seeds]
    _check_grid(methods, tasks, rates, seeds)
    methods = available_methods(methods, echo)
    n_jobs = resolve_n_jobs(n_jobs)
    if figures and find_spec("umap") is None:
        echo("sccr: notice: no UMAP embeddings: umap-learn is not installed (pip install 'sccr[benchmark]')")
    loaded = [load_dataset(d, label_key=label_key, genes_dir=genes_dir) for d in datasets]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    if not resume:
        results.unlink(missing_ok=True)
    _drop_partial_line(results)
    done = {record_key(r) for r in read_records(results)}
    n_units = sum(len(seeds) * (1 if t == "clustering" else len(rates)) for t in tasks) * len(loaded) * len(methods)
    common = {"label_key": label_key, "n_jobs": n_jobs, "versions": versions()}
    skipped = 0
    with tqdm(total=n_units, desc="benchmark", unit="run", disable=not resolve_progress(progress)) as bar:
        for data in loaded:
            clustering_runs: dict[str, dict] = {}  # method -> its one imputation of the undropped data
            for task in tasks:
                for rate in [0.0] if task == "clustering" else rates:
                    for seed in seeds:
                        dropped = None if task == "clustering" else _DROPS[task](data.X, rate, seed)
                        for method in methods:
                            bar.set_postfix_str(f"{data.name} {task} {rate} s{seed} {method}")
                            base = {
                                "dataset": data.name,
                                "method": method,
                                "task": task,
                                "rate": rate,
                                "seed": seed,
                                "params": method_params(method, data.name, task),
                                "preprocess": data.preprocess,
                                **common,
                            }
                            if record_key(base) in done:
                                skipped += 1
                            else:
                                _append(
                                    results,
                                    _evaluate(
                                        base, data, dropped, clustering_runs, out=out, figures=figures, seeds=seeds
                                    ),
                                )
                            bar.update()
    if skipped:
        echo(
            f"sccr: notice: {skipped} of {n_units} records were already in {results} and were skipped (--force recomputes them)"
        )
    records = read_records(results)
    write_report(records, out, figures=figures, echo=echo)
    return records


def _evaluate(
    base: dict, data: Dataset, dropped, clustering_runs: dict, *, out: Path, figures: bool, seeds: list[int]
) -> dict:
    """Impute (or reuse the clustering task's imputation), score, and return the record."""
    method, task, rate, seed = base["method"], base["task"], base["rate"], base["seed"]
    reused = task == "clustering" and method in clustering_runs
    if reused:
        run_info = clustering_runs[method]
    else:
        run_info = _run_method(
            method, data.X if dropped is None else dropped[0], base["params"], data, task, base["n_jobs"]
        )
        if task == "clustering":
            clustering_runs[method] = run_info
    imputed = run_info["imputed"]
    record = {
        **base,
        "n_cells": int(data.X.shape[0]),
        "n_genes": int(data.X.shape[1]),
        "seconds": run_info["seconds"],
        "peak_rss_mb": run_info["peak_rss_mb"],
        "imputation_reused": reused,
    }
    start = time.perf_counter()
    with threadpool_limits(limits=KMEANS_THREADS):
        record.update(clustering_scores(imputed, data.labels, seed=seed))
    record["kmeans_seconds"] = time.perf_counter() - start
    if dropped is not None:
        _, rows, cols = dropped
        truth = np.asarray(data.X[rows, cols], dtype=np.float64).ravel()
        record.update(imputation_errors(imputed[rows, cols], truth))
        record["n_dropped"] = int(len(rows))
    if "gene_edges" in run_info and not reused:
        record["gene_edges"] = run_info["gene_edges"]
    if figures and seed == seeds[0] and (task == "clustering" or (task == "mcar" and rate == UMAP_RATE)):
        _save_embedding(out, record, imputed, data.labels)
    record["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return record


def _run_method(method: str, X, params: dict, data: Dataset, task: str, n_jobs: int) -> dict:
    """Impute under the timer and the RSS sampler; add the gene-edge signs for the clustering task."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # MAGIC warns about genes left without counts by dropout; every method gets them alike.
        warnings.filterwarnings("ignore", message="Input matrix contains unexpressed genes")
        with PeakRSS() as rss:
            start = time.perf_counter()
            imputed, gene_graph = impute(method, X, params, n_jobs=n_jobs)
            seconds = time.perf_counter() - start
    info = {"imputed": imputed, "seconds": seconds, "peak_rss_mb": rss.peak_mb}
    if task == "clustering":
        if gene_graph is not None:
            info["gene_edges"] = gene_edge_signs(gene_graph)
        elif method == "raw":
            info["gene_edges"] = data_gene_edges(data.X)
    return info


def _save_embedding(out: Path, record: dict, imputed: np.ndarray, labels: np.ndarray) -> None:
    if find_spec("umap") is None:
        return
    folder = out / "embeddings"
    folder.mkdir(exist_ok=True)
    name = f"{record['dataset']}__{record['method']}__{record['task']}__{record['rate']}.npz"
    np.savez_compressed(folder / name, embedding=_umap(imputed, record["seed"]), labels=labels.astype(str))

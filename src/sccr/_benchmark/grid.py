"""What the benchmark runs and measures: methods, tasks, the paper's per-data-set settings, metrics and their aggregation."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

METHODS = ("raw", "sccr", "scfp", "scbfp", "magic", "alra", "knn")
TASKS = ("clustering", "mcar", "mnar")
#: Module each optional method needs (the ``benchmark`` extra installs them).
OPTIONAL_MODULES = {"magic": "magic"}
#: The authors' per-data-set choice: their Worm Neuron runs leave the final cell graph unsymmetrised.
PAPER_SYM_FINAL = {"worm_neuron": False}
#: scCR's output blend, as the authors' run script sets it: without dropout / with dropout.
PAPER_GAMMA = {"clustering": 0.01, "mcar": 1.0, "mnar": 1.0}
#: A UMAP is stored for the clustering task and for MCAR at this rate (the paper's 80%).
UMAP_RATE = 0.8
#: Metric -> (label, True when higher is better).
METRICS = {
    "ari": ("ARI", True),
    "nmi": ("NMI", True),
    "ca": ("CA", True),
    "mae": ('MAE (the paper\'s "RMSE")', False),
    "rmse": ("RMSE (root mean square error)", False),
    "median_l1": ("median L1", False),
    "cosine": ("cosine similarity", True),
    "seconds": ("imputation time (s)", False),
    "peak_rss_mb": ("peak RSS of the process during imputation (MiB)", False),
}

_COSTS = ("seconds", "peak_rss_mb")


def _ordered(values, order) -> list:
    present = set(values)
    return [v for v in order if v in present] + sorted(present - set(order))


def aggregate(records: list[dict]) -> dict:
    """``{(dataset, task, rate, method, metric): (mean, sd, n)}`` over seeds (sd with ddof=0).

    Time and memory of the clustering task count each imputation once
    (records that reused an imputation are left out of them).
    """
    groups = defaultdict(list)
    for r in records:
        for metric in METRICS:
            if r.get(metric) is None or (metric in _COSTS and r.get("imputation_reused")):
                continue
            groups[(r["dataset"], r["task"], r["rate"], r["method"], metric)].append(r[metric])
    return {key: (float(np.mean(v)), float(np.std(v)), len(v)) for key, v in groups.items()}

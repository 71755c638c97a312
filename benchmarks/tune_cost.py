"""The cost of ``sccr.tl.tune`` in units of one imputation of the same data, in the same process.

For each labelled shared data set (paper preprocessing with the reference's gene list): one
imputation with the defaults (``sccr.SCCR().fit_transform``) ``--repeats`` times (the control:
the median is "one imputation"), then ``sccr.tl.tune`` with its defaults (``--repeats`` times,
nothing reused). Prints and saves seconds, the ratio of the medians, the choice, its score and
the runs tune made. Labels are not read.

To compare two versions, run it with each on ``PYTHONPATH`` in the same session, e.g.
``git worktree add /tmp/base <rev>`` and ``PYTHONPATH=/tmp/base/src python benchmarks/tune_cost.py
--label base --out /tmp/base.json``; a version without ``screen`` or ``denoisings`` just lacks those fields.

Usage: python benchmarks/tune_cost.py [--datasets a,b] [--repeats 3] [--n-jobs 2] [--label new]
[--out benchmarks/results/tune_cost.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

from trust import DATASETS, load

import sccr
import sccr.tl

HERE = Path(__file__).resolve().parent


def plain(value):
    return value.item() if hasattr(value, "item") else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--label", default="current")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tune_cost.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    result = {
        "label": args.label,
        "sccr": sccr.__file__,
        "machine": platform.processor() or platform.machine(),
        "n_jobs": args.n_jobs,
        "datasets": {},
    }
    for name in args.datasets.split(","):
        adata = load(name)
        sccr.SCCR(n_jobs=args.n_jobs, progress=False).fit_transform(adata.X[:200])  # compile the kernels first
        impute = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            sccr.SCCR(n_jobs=args.n_jobs, progress=False).fit_transform(adata.X)
            impute.append(time.perf_counter() - start)
        tune, info = [], None
        for _ in range(args.repeats):
            a = adata.copy()
            start = time.perf_counter()
            sccr.tl.tune(a, n_jobs=args.n_jobs, progress=False, resume=False)
            tune.append(time.perf_counter() - start)
            info = a.uns["sccr_tune"]
        one, all_ = statistics.median(impute), statistics.median(tune)
        result["datasets"][name] = {
            "shape": list(adata.shape),
            "impute_seconds": impute,
            "tune_seconds": tune,
            "ratio": all_ / one,
            "best": {k: plain(v) for k, v in info["best"].items()},
            "best_score": float(info["best_score"]),
            "cost": {k: plain(v) for k, v in info["cost"].items()},
        }
        print(
            f"{name}: one imputation {one:.2f} s, tune {all_:.1f} s = {all_ / one:.1f} x; "
            f"best {result['datasets'][name]['best']} ({info['best_score']:.7f}); runs {plain(info['cost']['imputations'])}",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()

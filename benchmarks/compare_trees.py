"""Same-run control for a code change: two source trees of sccr imputing Worm Neuron, alternating.

Usage: python benchmarks/compare_trees.py BASELINE_TREE [CHANGED_TREE (default: this checkout)]
       [--rounds 5] [--n-jobs 2] [--replicate 1] [--out benchmarks/results/compare_trees.json]

A baseline tree is any checkout of sccr, e.g. ``git worktree add /tmp/base HEAD~1``. Each
round runs one fresh process per tree, in turn, that imports sccr from that tree's ``src``
and does what ``benchmarks/speed.py`` does for sccr (load, preprocess, impute twice; the second
call is timed), so machine noise falls on both alike. Prints and saves the medians of the whole
imputation and of every stage, and checks that both trees impute the same values bit for bit.
``--replicate R`` imputes R copies of the preprocessed cells instead, each non-zero times a
factor drawn uniformly from [0.9, 1.1] (seed 0): 4186 R cells, so that sizes where the exact
search dominates can be timed (below 20,000 cells the search is exact).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

CHILD = r"""
import json, sys
tree = sys.argv[1]
sys.path[:0] = [tree + "/src", sys.argv[2]]
import numpy as np
import speed

replicate = int(sys.argv[4])
if replicate > 1:
    import anndata as ad
    import scipy.sparse as sp

    original = speed._preprocessed

    def replicated():
        X = sp.csr_matrix(original().X, dtype=np.float32)
        copies = [X.copy() for _ in range(replicate)]
        rng = np.random.default_rng(0)
        for copy in copies:
            copy.data *= rng.uniform(0.9, 1.1, size=copy.nnz).astype(np.float32)
        return ad.AnnData(sp.vstack(copies, format="csr"))

    speed._preprocessed = replicated
print("JSON" + json.dumps(speed.run_sccr(int(sys.argv[3]), digest=True)))
"""


def run_tree(tree: Path, n_jobs: int, replicate: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(tree), str(HERE), str(n_jobs), str(replicate)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("JSON")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"the run of {tree} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][4:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path)
    parser.add_argument("changed", type=Path, nargs="?", default=HERE.parent)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--replicate", type=int, default=1, help="impute this many jittered copies of the cells")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "compare_trees.json")
    args = parser.parse_args()
    trees = {"baseline": args.baseline.resolve(), "changed": args.changed.resolve()}
    for tree in trees.values():  # compile (or load) each tree's kernels before timing
        run_tree(tree, args.n_jobs, args.replicate)
    runs = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, tree in trees.items():
            runs[name].append(run_tree(tree, args.n_jobs, args.replicate))
    report = {
        "trees": {k: str(v) for k, v in trees.items()},
        "rounds": args.rounds,
        "n_jobs": args.n_jobs,
        "replicate": args.replicate,
    }
    for name, rs in runs.items():
        stages = {s: float(np.median([r["timings"][s] for r in rs])) for s in rs[0]["timings"]}
        report[name] = {
            "seconds_median": float(np.median([r["seconds"] for r in rs])),
            "seconds_runs": [r["seconds"] for r in rs],
            "stage_seconds_median": stages,
            "digests": sorted({r["digest"] for r in rs}),
        }
        print(
            f"{name:9s} {report[name]['seconds_median']:.3f} s  " + "  ".join(f"{s} {v:.3f}" for s, v in stages.items())
        )
    report["ratio"] = report["baseline"]["seconds_median"] / report["changed"]["seconds_median"]
    report["bitwise_equal"] = report["baseline"]["digests"] == report["changed"]["digests"]
    print(f"baseline / changed = {report['ratio']:.2f}; imputed values bitwise equal: {report['bitwise_equal']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""More KMeans seeds for the clustering rows of docs/trust.md, on the settings ``trust.py`` chose.

Usage: python benchmarks/trust_seeds.py [--seeds 10] [--n-jobs 2] [--out benchmarks/results/trust_seeds.json]

Reads the tuned setting of every data set from ``benchmarks/results/trust.json`` (what
``sccr.tl.tune`` chose without labels; nothing is chosen here), imputes each set with no
imputation, the defaults and that setting, and clusters each result with KMeans (as many
clusters as cell types, ``n_init=20``) for seeds ``0 .. seeds - 1``. Prints and saves the ARI of
every seed, the mean and sd per setting, and the tuned minus none difference with its standard
error (seeds paired: the same seed clusters both matrices).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from trust import DEFAULTS, impute, load

from sccr._evaluation import clustering_scores

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--trust", type=Path, default=HERE / "results" / "trust.json")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "trust_seeds.json")
    args = parser.parse_args()
    chosen = json.loads(args.trust.read_text())["datasets"]
    results = {}
    for name, record in chosen.items():
        adata = load(name)
        labels = adata.obs["celltype"].to_numpy()
        settings = {"none": {"method": "none"}, "defaults": DEFAULTS, "tuned": record["tune"]["best"]}
        aris = {}
        for label, setting in settings.items():
            M, _ = impute(adata.X, setting, args.n_jobs)
            aris[label] = [clustering_scores(M, labels, seed=s, n_init=20)["ari"] for s in range(args.seeds)]
        difference = np.subtract(aris["tuned"], aris["none"])
        results[name] = {
            "settings": settings,
            "ari": aris,
            "mean": {k: float(np.mean(v)) for k, v in aris.items()},
            "sd": {k: float(np.std(v)) for k, v in aris.items()},
            "tuned_minus_none": float(difference.mean()),
            "tuned_minus_none_se": float(difference.std(ddof=1) / np.sqrt(args.seeds)),
        }
        line = "  ".join(f"{k} {np.mean(v):.3f} ± {np.std(v):.3f}" for k, v in aris.items())
        print(
            f"{name}: {line}; tuned - none {difference.mean():+.3f} (se {results[name]['tuned_minus_none_se']:.3f})",
            flush=True,
        )
    record = {
        "seeds": args.seeds,
        "command": f"python benchmarks/trust_seeds.py --seeds {args.seeds}",
        "datasets": results,
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

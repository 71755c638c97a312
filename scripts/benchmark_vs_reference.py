"""Compare the scCR rows of a benchmark run with the authors' reference metrics.

Usage: python scripts/benchmark_vs_reference.py RESULTS.jsonl [--reference ../shared/reference]

For every reference ``NAME_d{rate}_s{seed}.json`` with a matching ``sccr`` record
(clustering task for rate 0, MCAR otherwise: same protocol, same seed), prints a
Markdown table of ours / reference for ARI, NMI, CA and, with dropout, the paper's
"RMSE" (a mean absolute error) and the true RMSE.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from sccr._benchmark.runner import read_records

ROOT = Path(__file__).resolve().parents[1]
PAIRS = (("ari", "ari"), ("nmi", "nmi"), ("ca", "ca"), ("mae", "rmse_official"), ("rmse", "rmse_true"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--reference", default=str(ROOT.parent / "shared" / "reference"))
    args = parser.parse_args()
    ours = {
        (r["dataset"], r["task"], r["rate"], r["seed"]): r
        for r in read_records(Path(args.results))
        if r["method"] == "sccr"
    }
    print(
        "| data set | rate | seed | ARI ours / ref | NMI ours / ref | CA ours / ref | paper's RMSE (MAE) ours / ref | RMSE ours / ref |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for path in sorted(Path(args.reference).glob("*_d*_s*.json")):
        name, rate, seed = re.fullmatch(r"(.+)_d([\d.]+)_s(\d+)", path.stem).groups()
        rate, seed = float(rate), int(seed)
        record = ours.get((name, "clustering" if rate == 0 else "mcar", rate, seed))
        if record is None:
            continue
        ref = json.loads(path.read_text())
        cells = [f"{record[a]:.4f} / {ref[b]:.4f}" if b in ref else "" for a, b in PAIRS]
        print(f"| {name} | {rate:g} | {seed} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

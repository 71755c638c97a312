"""Compare sccr with the authors' reference code on every shared data set and setting.

Usage: python scripts/fidelity.py [--shared ../shared] [--out docs/fidelity.json]

For each ``NAME_d{rate}_s{seed}`` in ``shared/reference`` it preprocesses the data
with the reference's gene list, drops the same entries (rate > 0), runs scCR with
the reference's settings, and compares the sampled values, column statistics,
dropped entries and metrics. Prints a Markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import anndata as ad
import numpy as np

import sccr
from sccr._evaluation import clustering_scores, drop_entries, imputation_errors
from sccr._versions import versions

ROOT = Path(__file__).resolve().parents[1]


def compare(shared: Path, name: str, rate: float, seed: int, cache: dict) -> dict:
    ref = json.loads((shared / "reference" / f"{name}_d{rate}_s{seed}.json").read_text())
    genes = (shared / "reference" / f"{name}.genes.txt").read_text().split()
    args = ref["official_args"]
    key = (name, rate, seed if rate > 0 else 0)
    if key not in cache:
        data = sccr.pp.preprocess_paper(ad.read_h5ad(shared / "data" / f"{name}.h5ad"), genes=genes)
        X = data.X
        rows = cols = None
        if rate > 0:
            X, rows, cols = drop_entries(data.X, rate, seed)
        start = time.perf_counter()
        model = sccr.SCCR(
            k=args["k"],
            k_gene=args["k_col"],
            n_iter=args["iter"],
            alpha=args["alpha"],
            beta=args["beta"],
            gamma=args["gamma"],
            sym_final=args["sym"],
            progress=False,
        )
        imputed = model.fit_transform(X)
        cache[key] = (data, imputed, rows, cols, time.perf_counter() - start)
    data, imputed, rows, cols, seconds = cache[key]

    row = {
        "dataset": name,
        "rate": rate,
        "seed": seed,
        "sym_final": args["sym"],
        "gamma": args["gamma"],
        "seconds": seconds,
    }
    npz_path = shared / "reference" / f"{name}_d{rate}_s{seed}.npz"
    if npz_path.exists():
        npz = np.load(npz_path)
        diff = np.abs(imputed[npz["rows"], npz["cols"]] - npz["values"])
        row.update(
            within_1e3=float(np.mean(diff <= 1e-3)),
            max_abs_diff=float(diff.max()),
            col_mean_diff=float(np.abs(imputed.mean(axis=0) - npz["col_mean"]).max()),
            col_std_diff=float(np.abs(imputed.std(axis=0) - npz["col_std"]).max()),
        )
        if "dropped_rows" in npz:
            ours = set(zip(rows.tolist(), cols.tolist(), strict=True))
            theirs = set(zip(npz["dropped_rows"].tolist(), npz["dropped_cols"].tolist(), strict=True))
            row["same_dropped"] = ours == theirs
    labels = data.obs["celltype"].to_numpy()
    scores = clustering_scores(imputed, labels, seed=seed)
    for metric in ("ari", "nmi", "ca"):
        row[metric], row[f"ref_{metric}"] = scores[metric], ref[metric]
    if rate > 0:
        truth = np.asarray(data.X[rows, cols]).ravel()
        errors = imputation_errors(imputed[rows, cols], truth)
        row.update({k: errors[k] for k in ("rmse", "mae", "median_l1", "cosine")})
        row.update(
            ref_rmse=ref["rmse_true"],
            ref_mae=ref["rmse_official"],
            ref_median_l1=ref["median_l1"],
            ref_cosine=ref["cosine"],
        )
    row["ref_seconds"] = ref["impute_time_s"]
    return row


def markdown(rows: list[dict]) -> str:
    head = (
        "| data set | drop | seed | values within 1e-3 | max diff | col mean / std diff | ARI ours / ref | NMI ours / ref | CA ours / ref | errors ours / ref |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        values = f"{r['within_1e3']:.2%}" if "within_1e3" in r else "(not sampled)"
        maxd = f"{r['max_abs_diff']:.1e}" if "max_abs_diff" in r else ""
        cols = f"{r['col_mean_diff']:.1e} / {r['col_std_diff']:.1e}" if "col_mean_diff" in r else ""
        errors = ""
        if r["rate"] > 0:
            errors = (
                f"RMSE {r['rmse']:.4f} / {r['ref_rmse']:.4f}; MAE {r['mae']:.4f} / {r['ref_mae']:.4f}; "
                f"median L1 {r['median_l1']:.4f} / {r['ref_median_l1']:.4f}; cosine {r['cosine']:.4f} / {r['ref_cosine']:.4f}"
                + ("; same dropped entries" if r.get("same_dropped") else "; DROPPED ENTRIES DIFFER")
            )
        lines.append(
            f"| {r['dataset']} | {r['rate']} | {r['seed']} | {values} | {maxd} | {cols} | "
            f"{r['ari']:.4f} / {r['ref_ari']:.4f} | {r['nmi']:.4f} / {r['ref_nmi']:.4f} | {r['ca']:.4f} / {r['ref_ca']:.4f} | {errors} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "fidelity.json")
    args = parser.parse_args()
    pattern = re.compile(r"(.+)_d([0-9.]+)_s(\d+)\.json$")
    runs = sorted(
        (m.group(1), float(m.group(2)), int(m.group(3)))
        for p in (args.shared / "reference").glob("*.json")
        if (m := pattern.match(p.name))
    )
    cache: dict = {}
    rows = [compare(args.shared, *run, cache) for run in runs]
    table = markdown(rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"versions": versions(), "runs": rows}, indent=1))
    args.out.with_suffix(".md").write_text(table + "\n")
    print(f"\nwrote {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()

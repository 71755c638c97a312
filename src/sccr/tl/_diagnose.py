"""``diagnose``: should this data be imputed, with which settings, and which results can be trusted?

Also the command-line entries ``sccr tune`` and ``sccr diagnose`` (:func:`add_cli`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Below this relative improvement over no imputation, imputing is called marginal.
MARGINAL = 0.01


def diagnose(
    adata,
    *,
    out: str | os.PathLike | None = None,
    grid: Mapping[str, Sequence] | None = None,
    strategy: str = "auto",
    layer: str | None = None,
    counts_layer: str | None = None,
    random_state: int | None = 0,
    n_jobs: int | None = None,
    n_runs: int = 5,
    null_threshold: float = 0.5,
    max_imputations: int = 16,
    figures: bool = True,
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
    n_splits: int | None = None,
    select: str = "one_se",
    screen: bool = True,
) -> dict[str, Any]:
    """Tune, check stability and the permutation null, and write a short report.

    Runs :func:`sccr.tl.tune`; then :func:`sccr.tl.stability` and
    :func:`sccr.tl.null_check` on the best setting (on the best setting that imputes
    when no imputation scores best, to say what imputing would cost).

    Parameters
    ----------
    adata
        As for :func:`sccr.tl.tune` (updated: ``uns['sccr_tune']``, ``uns['sccr_stability']``,
        ``uns['sccr_null']``, ``obs['sccr_stability_*']``).
    out
        Folder for ``report.md``, ``tune.csv``, ``tune.jsonl`` (checkpoint: a rerun resumes),
        ``diagnose.json`` and ``figures/`` (``None``: nothing written).
    grid, strategy, layer, counts_layer, random_state, n_jobs, max_imputations, n_splits, select, screen
        As in :func:`sccr.tl.tune`.
    n_runs
        Perturbed reruns of :func:`sccr.tl.stability`.
    null_threshold
        Correlation threshold of :func:`sccr.tl.null_check`.
    figures
        Write the figures (needs matplotlib).
    progress, echo
        Progress bars; receiver of short notes (e.g. ``print``).

    Returns
    -------
    dict
        ``answer`` (``"impute"``, ``"marginal"`` or ``"do not impute"``), ``best``,
        ``checked`` (the setting checked), ``improvement`` (relative to no imputation),
        ``tune``, ``stability``, ``null`` (summaries) and ``report`` (markdown text).
    """
    from ._score import null_check
    from ._stability import stability
    from ._tune import tune

    say = echo or (lambda msg: None)
    start = time.perf_counter()
    folder = None
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
    table = tune(
        adata,
        grid=grid,
        strategy=strategy,
        layer=layer,
        counts_layer=counts_layer,
        random_state=random_state,
        n_jobs=n_jobs,
        max_imputations=max_imputations,
        checkpoint=None if folder is None else folder / "tune.jsonl",
        progress=progress,
        echo=echo,
        n_splits=n_splits,
        select=select,
        screen=screen,
    )
    info = adata.uns["sccr_tune"]
    best = dict(info["best"])
    imputing = table[table["method"] != "none"]
    if best["method"] != "none":
        checked = best
    elif len(imputing):
        checked = _row_setting(imputing.iloc[0])
    else:
        checked = None
    none_score, best_score = float(info["none_score"]), float(info["best_score"])
    improvement = (none_score - best_score) / none_score if none_score > 0 else 0.0
    answer = "do not impute" if best["method"] == "none" else ("marginal" if improvement < MARGINAL else "impute")
    say(f"tuned: best {best} ({answer}, {100 * improvement:.1f}% better than no imputation)")
    stab = null = None
    if checked is not None:
        method, params = checked["method"], {k: v for k, v in checked.items() if k != "method"}
        stab = stability(
            adata,
            n_runs=n_runs,
            random_state=random_state,
            method=method,
            params=params,
            layer=layer,
            n_jobs=n_jobs,
            progress=progress,
        )
        say(stab["message"])
        null = null_check(
            adata,
            method=method,
            params=params,
            layer=layer,
            random_state=random_state,
            n_jobs=n_jobs,
            threshold=null_threshold,
        )
    result = {
        "answer": answer,
        "best": best,
        "checked": checked,
        "improvement": improvement,
        "none_score": none_score,
        "best_score": best_score,
        "strategy": info["config"]["strategy"],
        "tune": {"cost": dict(info["cost"]), "rows": table.to_dict(orient="records")},
        "stability": None if stab is None else {k: v for k, v in stab.items() if k != "runs_imputed"},
        "null": null,
        "seconds": 0.0,
    }
    result["seconds"] = time.perf_counter() - start
    figure_files = {}
    if folder is not None:
        table.to_csv(folder / "tune.csv", index=False)
        if figures:
            figure_files = _write_figures(adata, folder / "figures", stab is not None)
        result["report"] = write_report(result, folder / "report.md", figures=figure_files)
        with open(folder / "diagnose.json", "w") as f:
            json.dump(_jsonable(result), f, indent=1)
    else:
        result["report"] = report_text(result, figures={})
    return result


def _row_setting(row) -> dict[str, Any]:
    from ._score import METHOD_KEYS

    setting = {"method": row["method"]}
    for k in METHOD_KEYS[row["method"]]:
        if k in row and row[k] == row[k]:  # not NaN
            v = row[k]
            setting[k] = int(v) if k in ("k", "k_gene", "n_iter") else (v.item() if hasattr(v, "item") else v)
    return setting


def _write_figures(adata, folder: Path, checked: bool) -> dict[str, str]:
    from .. import pl

    folder.mkdir(parents=True, exist_ok=True)
    files = {"tune": folder / "tune.png"}
    pl.tune_curves(adata, save=files["tune"])
    if checked:
        files["stability"] = folder / "stability.png"
        pl.stability_cells(adata, save=files["stability"])
        files["null"] = folder / "null.png"
        pl.null_correlations(adata, save=files["null"])
    return {k: f"figures/{v.name}" for k, v in files.items()}


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    return value


def _kwargs(setting: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in setting.items())


def _number(value) -> str:
    return f"{value:.2g}" if isinstance(value, (int, float)) and np.isfinite(value) else "-"


def report_text(result: Mapping[str, Any], *, figures: Mapping[str, str]) -> str:
    """The markdown report of :func:`diagnose`."""
    best, checked, answer = result["best"], result["checked"], result["answer"]
    pct = 100 * result["improvement"]
    lines = ["# sccr diagnose", ""]
    lines += ["## Should I impute this data?", ""]
    what = "molecular cross-validation (MCV MSE)" if result["strategy"] == "mcv" else "masked-entry recovery (RMSE)"
    if answer == "do not impute" and _best_imputing_score(result) < result["none_score"]:
        lines.append(
            f"**No.** No imputation is within one standard error of the best imputation tried on {what} "
            f"({result['none_score']:.5g} against {_best_imputing_score(result):.5g}): imputing is not measurably better."
        )
    elif answer == "do not impute":
        lines.append(
            f"**No.** No imputation scores best on {what}: {result['none_score']:.5g} against "
            f"{_best_imputing_score(result):.5g} for the best imputation tried."
        )
    elif answer == "marginal":
        lines.append(
            f"**Marginal.** The best setting scores {pct:.1f}% better than no imputation on {what} "
            f"({result['best_score']:.5g} against {result['none_score']:.5g}); downstream results may not change."
        )
    else:
        lines.append(
            f"**Yes.** The best setting scores {pct:.1f}% better than no imputation on {what} "
            f"({result['best_score']:.5g} against {result['none_score']:.5g})."
        )
    if result["strategy"] == "mask":
        lines.append(
            "Without raw counts this is masked-entry recovery, which favours imputation by design "
            "(held-out entries are 0 without it); pass the raw counts for a fair comparison with no imputation."
        )
    lines += ["", "This is a label-free score of how well each setting predicts held-out data, not of clustering.", ""]
    lines += ["## With which settings?", ""]
    if best["method"] == "none":
        lines.append(
            "Keep the data as it is. If you impute anyway, the best setting tried is "
            f"`sccr.impute(adata, {_kwargs(checked)})`."
        )
    else:
        lines.append(f"`sccr.impute(adata, {_kwargs(best)})`")
    cost = result["tune"]["cost"]
    lines += [
        "",
        (
            f"{len(result['tune']['rows'])} settings scored ({cost['search']} search, {cost['imputations']} whole runs "
            f"and {cost.get('denoisings', 0)} last-step propagations, {cost['seconds']:.0f} s); the five lowest scores:"
        ),
        "",
    ]
    rows = result["tune"]["rows"][:5]
    rows += [r for r in result["tune"]["rows"][5:] if r.get("chosen")]  # the chosen one, wherever it ranks

    def verdict(r) -> str:
        if r.get("chosen"):
            return "**chosen**"
        if r.get("tied"):
            return "tied with the lowest"
        return "" if r.get("splits", 1) >= cost.get("n_splits", 1) else "screened out after the first split"

    lines += ["| setting | score | standard error of the difference from the lowest | |", "|---|---|---|---|"] + [
        f"| {r['setting']} | {r['score']:.5g} | {_number(r.get('se'))} | {verdict(r)} |" for r in rows
    ]
    chosen = next((r for r in result["tune"]["rows"] if r.get("chosen")), None)
    if chosen is not None and chosen is not result["tune"]["rows"][0]:
        lines += [
            "",
            "The chosen setting is within one standard error of the lowest score and changes the data least "
            "among those that are (the one-standard-error rule: a setting that is not measurably better than a "
            "milder one, or than no imputation, is not chosen).",
        ]
    if "tune" in figures:
        lines += ["", f"![score against each option]({figures['tune']})"]
    lines += ["", "## Which results can I trust?", ""]
    stab, null = result["stability"], result["null"]
    if stab is None:
        lines.append("No imputing setting was scored, so nothing was checked.")
    else:
        lines.append(f"Checked setting: `{_kwargs(checked)}`.")
        lines += ["", f"**Stability.** {stab['message'][0].upper() + stab['message'][1:]}.", ""]
        lines.append(
            f"Over {stab['n_runs']} reruns ({', '.join(stab['perturbations'])}): "
            f"{100 * stab['cells_neighbours_changed']:.1f}% of the cells changed final neighbours, "
            f"imputed values moved by up to {stab['max_change']:.3g} (mean {stab['mean_abs_change']:.2g}), "
            f"KMeans ({stab['n_clusters']} clusters) agreed with the reference at ARI {stab['ari_min']:.3f} "
            f"to {max(r['ari'] for r in stab['runs']):.3f}. "
            "Per cell: `obs['sccr_stability_max_change']`, `obs['sccr_stability_neighbours_changed']`."
        )
        if "stability" in figures:
            lines += ["", f"![stability per cell]({figures['stability']})"]
        t = null["threshold"]
        lines += [
            "",
            (
                "**Spurious structure (permutation null).** "
                "After imputing data whose genes were shuffled independently (no real gene-gene structure), "
                f"{null['null']['associating']} gene pairs correlate above {t:g} and {null['null']['dissociating']} below -{t:g}; "
                f"on the real data {null['real']['associating']} and {null['real']['dissociating']}."
            ),
        ]
        if null["null"]["associating"] + null["null"]["dissociating"] > 0:
            lines.append(
                "Correlations of that size after imputation are therefore not evidence by themselves: "
                "compare them with the null distribution, not with 0."
            )
        else:
            lines.append("Imputation creates no correlation of that size from nothing here.")
        if "edges" in null:
            e = null["edges"]
            lines.append(
                f"Gene graph: {e['associating']['n_survive']} of {e['associating']['n_edges']} associating and "
                f"{e['dissociating']['n_survive']} of {e['dissociating']['n_edges']} dissociating edges are stronger "
                f"after imputation than {100 * null['quantile']:g}% of the same kind of edges built on the null; "
                "treat the others as possibly spurious."
            )
        if "null" in figures:
            lines += ["", f"![null against real correlations]({figures['null']})"]
    lines += ["", f"_sccr diagnose, {result['seconds']:.0f} s. Method and caveats: docs/trust.md._", ""]
    return "\n".join(lines)


def _best_imputing_score(result) -> float:
    scores = [r["score"] for r in result["tune"]["rows"] if r["method"] != "none"]
    return min(scores) if scores else float("nan")


def write_report(
    result: Mapping[str, Any], path: str | os.PathLike, *, figures: Mapping[str, str] | None = None
) -> str:
    """Write :func:`report_text` to ``path`` and return it."""
    text = report_text(result, figures=figures or {})
    Path(path).write_text(text)
    return text


# ---------------------------------------------------------------------------------------------
# command line


def _add_common(p) -> None:
    p.add_argument(
        "input",
        metavar="INPUT",
        help="an .h5ad file or .zarr store: raw counts, or log-normalised with raw counts in a layer",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder (created if missing; a rerun resumes from DIR/tune.jsonl)",
    )
    p.add_argument("--layer", default=None, help="layer of log-normalised expression instead of X")
    p.add_argument(
        "--counts-layer",
        default=None,
        help="layer of raw counts (default: X when it holds counts, else layers['counts'])",
    )
    p.add_argument(
        "--preprocess",
        default="auto",
        choices=["auto", "paper", "none"],
        help="'paper': INPUT holds raw counts, apply the paper's preprocessing first; 'auto' (default): do so when X holds whole numbers; 'none': use INPUT as it is",
    )
    p.add_argument("--n-top-genes", type=int, default=2000, help="genes kept by the preprocessing (default: 2000)")
    p.add_argument(
        "--strategy",
        default="auto",
        choices=["auto", "mcv", "mask"],
        help="scoring: molecular cross-validation, masked entries, or auto (MCV when counts exist)",
    )
    p.add_argument(
        "--grid",
        default=None,
        metavar="JSON",
        help='grid as JSON, e.g. \'{"k": [5, 15], "beta": [0.9, 0.99]}\' (default: the documented grid)',
    )
    p.add_argument(
        "--max-imputations",
        type=int,
        default=16,
        help="budget of the coordinate search in whole runs, on the first split (default: 16)",
    )
    p.add_argument("--n-splits", type=int, default=None, help="independent MCV splits per setting (default: 3)")
    p.add_argument(
        "--no-screen",
        dest="screen",
        action="store_false",
        help="score every setting on every split (default: only those within 3 standard errors of the lowest on "
        "the first split go on to the others)",
    )
    p.add_argument(
        "--select",
        default="one_se",
        choices=["one_se", "min"],
        help="'one_se' (default): the setting changing the data least among those within one standard error of the "
        "lowest score (no imputation included); 'min': the lowest score",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--n-jobs", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes")


def add_cli(subparsers) -> None:
    """Register ``tune`` and ``diagnose`` on an argparse subparsers object.

    Each parser gets ``handler`` as a default (``args.handler(args)`` runs the command).
    """
    p = subparsers.add_parser(
        "tune",
        help="choose imputation settings without labels",
        description="Score a grid of imputation settings on INPUT without labels (molecular cross-validation when raw "
        "counts are available, else masked entries) and write DIR/tune.csv (best first), DIR/best.json (keyword "
        'arguments for sccr.impute, or {"method": "none"}) and DIR/tune.jsonl (a rerun resumes from it).',
    )
    _add_common(p)
    p.add_argument(
        "--search",
        default="auto",
        choices=["auto", "grid", "coordinate"],
        help="whole grid, coordinate search, or auto (default)",
    )
    p.set_defaults(handler=tune_command)
    p = subparsers.add_parser(
        "diagnose",
        help="should I impute, with which settings, which results can I trust?",
        description="Tune (as sccr tune), then rerun the best setting under perturbations that should not matter and "
        "impute a permutation null; write DIR/report.md with figures in DIR/figures/, DIR/tune.csv and DIR/diagnose.json.",
    )
    _add_common(p)
    p.add_argument("--n-runs", type=int, default=5, help="perturbed reruns for the stability check (default: 5)")
    p.add_argument(
        "--null-threshold", type=float, default=0.5, help="correlation threshold of the null check (default: 0.5)"
    )
    p.add_argument("--no-figures", action="store_true", help="write the report without figures")
    p.set_defaults(handler=diagnose_command)


def _load(args):
    """Read INPUT and preprocess it as asked; returns ``(adata, layer, counts_layer)``."""
    from .._adata import get_matrix
    from .._errors import InputError
    from .._io import read_anndata
    from .._preprocess import preprocess_paper
    from ._score import _whole_numbers

    if not os.path.exists(args.input):
        raise InputError(f"input {args.input!r} does not exist; pass an .h5ad file or a .zarr store")
    adata = read_anndata(args.input)
    layer, counts_layer = args.layer, args.counts_layer
    counts_in_x = _whole_numbers(get_matrix(adata, layer if args.preprocess == "none" else None))
    if args.preprocess == "paper" or (args.preprocess == "auto" and layer is None and counts_in_x):
        if not counts_in_x and args.preprocess == "paper":
            raise InputError(
                "--preprocess paper needs raw counts in X; pass --preprocess none for log-normalised input"
            )
        adata = preprocess_paper(adata, n_top_genes=args.n_top_genes)
        layer, counts_layer = None, "counts"
    return adata, layer, counts_layer


def _grid(text: str | None):
    from .._errors import InputError

    if text is None:
        return None
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"--grid is not valid JSON ({err.msg}); write it like '{{\"k\": [5, 15]}}'") from None
    if not isinstance(grid, dict):
        raise InputError("--grid must be a JSON object of option -> list of values, e.g. '{\"k\": [5, 15]}'")
    return grid


def _echo(args) -> Callable[[str], None]:
    return (lambda msg: None) if args.quiet else (lambda msg: print(f"sccr: {msg}", file=sys.stderr))


def tune_command(args) -> None:
    """``sccr tune INPUT --out DIR``."""
    from ._tune import tune

    grid = _grid(args.grid)
    adata, layer, counts_layer = _load(args)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    echo = _echo(args)
    table = tune(
        adata,
        grid=grid,
        strategy=args.strategy,
        layer=layer,
        counts_layer=counts_layer,
        random_state=args.seed,
        n_jobs=args.n_jobs,
        search=args.search,
        max_imputations=args.max_imputations,
        n_splits=args.n_splits,
        select=args.select,
        screen=args.screen,
        checkpoint=folder / "tune.jsonl",
        progress=False if args.quiet else None,
        echo=echo,
    )
    table.to_csv(folder / "tune.csv", index=False)
    best = _jsonable(dict(adata.uns["sccr_tune"]["best"]))
    (folder / "best.json").write_text(json.dumps(best) + "\n")
    echo(f"best: {best}; wrote {folder / 'tune.csv'} and {folder / 'best.json'}")


def diagnose_command(args) -> None:
    """``sccr diagnose INPUT --out DIR``."""
    grid = _grid(args.grid)
    adata, layer, counts_layer = _load(args)
    echo = _echo(args)
    result = diagnose(
        adata,
        out=args.out,
        grid=grid,
        strategy=args.strategy,
        layer=layer,
        counts_layer=counts_layer,
        random_state=args.seed,
        n_jobs=args.n_jobs,
        n_runs=args.n_runs,
        null_threshold=args.null_threshold,
        max_imputations=args.max_imputations,
        n_splits=args.n_splits,
        select=args.select,
        screen=args.screen,
        figures=not args.no_figures,
        progress=False if args.quiet else None,
        echo=echo,
    )
    echo(f"answer: {result['answer']}; wrote {Path(args.out) / 'report.md'}")

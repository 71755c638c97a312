"""Choose an imputation setting without labels: score a grid of settings (:func:`sccr.tl.score`) and keep the best."""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

#: The default grid (``tune(grid=None)``): the published defaults and, around them, less and more
#: smoothing (``beta``, ``n_iter``, ``gamma``), smaller and larger neighbourhoods (``k``), and scFP.
#: Its full product is 72 settings and 24 whole runs, so it is searched coordinate by coordinate.
DEFAULT_GRID: dict[str, list] = {
    "method": ["sccr", "scfp"],
    "beta": [0.5, 0.9, 0.99],
    "gamma": [0.01, 0.3, 1.0],
    "n_iter": [10, 40],
    "k": [5, 15, 30],
}
#: Order in which the coordinate search visits the options (method last).
AXES = ("beta", "gamma", "n_iter", "k", "k_gene", "alpha", "sym_final", "knn", "method")
#: ``search="auto"`` scores the whole grid when that costs at most this many imputations (per split).
FULL_GRID_MAX = 10
#: Ways :func:`tune` picks the setting from the scored ones.
SELECT = ("one_se", "min")
#: Independent MCV splits each setting is scored on (``tune(n_splits=None)``).
DEFAULT_N_SPLITS = 3
#: ``tune(screen=True)``: a setting first scored on one split is scored on the others only when its
#: score there is within this many standard errors of that split's lowest (otherwise it cannot be
#: chosen: the one-standard-error rule ties settings within one standard error of the lowest mean).
SCREEN_SE = 3.0


def check_grid(grid: Mapping[str, Sequence] | None) -> dict[str, list]:
    """The grid as ``{option: [values]}``, every key an option and every value valid."""
    from .._errors import InputError
    from .._options import Options
    from ._score import DEFAULTS, METHODS, PARAM_KEYS

    grid = DEFAULT_GRID if grid is None else grid
    if not isinstance(grid, Mapping) or not grid:
        raise InputError(
            "grid must be a non-empty dict of option -> list of values, e.g. {'k': [5, 15], 'beta': [0.9, 0.99]}"
        )
    allowed = ("method", *PARAM_KEYS)
    unknown = [key for key in grid if key not in allowed]
    if unknown:
        raise InputError(
            f"grid keys {', '.join(map(repr, unknown))} are not options of sccr.impute; use only {', '.join(allowed)} "
            "(random_state, n_jobs and layer are arguments of tune itself)"
        )
    out: dict[str, list] = {}
    for key, values in grid.items():
        values = [values] if isinstance(values, (str, int, float, bool)) else list(values)
        if not values:
            raise InputError(f"grid[{key!r}] is empty; give at least one value")
        if key == "method":
            bad = [v for v in values if v not in METHODS]
            if bad:
                raise InputError(
                    f"grid['method'] has {', '.join(map(repr, bad))}; methods are {', '.join(map(repr, METHODS))}"
                )
        else:
            for value in values:
                Options(method="sccr", **{**DEFAULTS, key: value}, n_jobs=1, progress=False)
        out[key] = list(dict.fromkeys(values))
    return out


def _setting_key(method: str, params: Mapping[str, Any]) -> str:
    return json.dumps([method, sorted((k, v) for k, v in params.items())])


def _describe(method: str, params: Mapping[str, Any]) -> str:
    return method if method == "none" else method + "(" + ", ".join(f"{k}={v}" for k, v in sorted(params.items())) + ")"


def _start(grid: dict[str, list], method: str) -> dict[str, Any]:
    """For each option of ``method`` in the grid, its value nearest the published default."""
    from ._score import DEFAULTS, METHOD_KEYS

    start = {}
    for key in METHOD_KEYS[method]:
        if key not in grid:
            continue
        values, default = grid[key], DEFAULTS[key]
        if default in values:
            start[key] = default
        elif (
            isinstance(default, (int, float))
            and not isinstance(default, bool)
            and all(isinstance(v, (int, float)) for v in values)
        ):
            start[key] = min(values, key=lambda v: (abs(v - default), v))
        else:
            start[key] = values[0]
    return start


def _settings(grid: dict[str, list]) -> list[tuple[str, dict[str, Any]]]:
    """Every setting of the grid (each method with the options that apply to it)."""
    from ._score import METHOD_KEYS

    out = []
    for method in grid.get("method", ["sccr"]):
        if method == "none":
            continue
        keys = [k for k in grid if k != "method" and k in METHOD_KEYS[method]]
        for values in itertools.product(*(grid[k] for k in keys)):
            out.append((method, dict(zip(keys, values, strict=True))))
    return out


def grid_cost(grid: dict[str, list]) -> int:
    """Whole runs needed to score the whole grid (scCR settings that differ only in ``beta`` and ``gamma`` share one)."""
    return len(
        {
            _setting_key(method, {k: v for k, v in params.items() if k not in ("beta", "gamma")})
            if method == "sccr"
            else _setting_key(method, params)
            for method, params in _settings(grid)
        }
    )


def _safe(value):
    """A value anndata can write to .h5ad (``None`` becomes the string ``"None"``)."""
    if value is None:
        return "None"
    if isinstance(value, Mapping):
        return {str(k): _safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_safe(v) for v in value]
    return value


def _splits_of(record: Mapping[str, Any], n_splits: int) -> list[int]:
    """The splits a record was scored on (records of earlier versions: all of them)."""
    return list(record.get("splits", range(n_splits)))


def _first_score(record: Mapping[str, Any]) -> float:
    """A record's score on the first split (records of earlier versions without one: their mean)."""
    return record.get("score_splits", [record["score"]])[0]


class _Runner:
    """Scores settings once each, from a checkpoint file or earlier results when they match.

    ``search_splits``: the splits a setting is first scored on (``None``: all; ``[0]`` when
    screening); :meth:`complete` scores the others.
    """

    def __init__(self, scorer, config: dict, checkpoint, previous: list[dict], bar, budget: int, search_splits) -> None:
        self.scorer = scorer
        self.config = config
        self.checkpoint = checkpoint
        self.bar = bar
        self.budget = budget
        self.n_splits = scorer.n_splits
        self.search_splits = search_splits
        self.records: dict[str, dict] = {}  # scored (or reused) in this call
        self.order: list[str] = []
        self.reused = 0
        self.available: dict[str, dict] = {}  # from the checkpoint and earlier calls: the most splits
        for record in previous:
            if record.get("config") == config:
                key = _setting_key(record["method"], record["params"])
                known = self.available.get(key)
                if known is None or len(_splits_of(record, self.n_splits)) > len(_splits_of(known, self.n_splits)):
                    self.available[key] = record

    def exhausted(self) -> bool:
        return self.scorer.n_imputations >= self.budget

    def search_score(self, record: Mapping[str, Any]) -> float:
        """What the search compares: the first split's score when screening, else the mean."""
        return _first_score(record) if self.search_splits is not None else record["score"]

    def _score(self, method: str, params: dict[str, Any], stage: str, splits) -> dict:
        before, start = self.scorer.n_imputations, time.perf_counter()
        scores = self.scorer.evaluate(method, params, splits)
        return {
            "method": method,
            "params": params,
            **scores,
            "stage": stage,
            "reused": False,
            "imputations": self.scorer.n_imputations - before,
            "seconds": time.perf_counter() - start,
            "config": self.config,
        }

    def _keep(self, key: str, record: dict) -> None:
        self.records[key] = record
        if self.checkpoint is not None and not record["reused"]:
            with open(self.checkpoint, "a") as f:
                f.write(json.dumps({k: v for k, v in record.items() if k != "reused"}) + "\n")

    def __call__(self, method: str, params: dict[str, Any], stage: str) -> dict:
        key = _setting_key(method, params)
        if key in self.records:
            return self.records[key]
        if key in self.available:
            self.records[key] = dict(self.available[key], stage=stage, reused=True)
            self.reused += 1
            if self.search_splits is None:
                self.complete(key)
        else:
            self._keep(key, self._score(method, params, stage, self.search_splits))
        self.order.append(key)
        self.bar.update()
        self.bar.set_postfix_str(f"best {min(self.search_score(r) for r in self.records.values()):.5g}")
        return self.records[key]

    def complete(self, key: str) -> None:
        """Score a setting on the splits it has not been scored on."""
        record = self.records[key]
        missing = [i for i in range(self.n_splits) if i not in _splits_of(record, self.n_splits)]
        if not missing:
            return
        if "loss_splits" not in record:  # restored from a table: no losses per split to join, score again
            missing = list(range(self.n_splits))
        extra = self._score(record["method"], record["params"], record["stage"], missing)
        spent = {"imputations": 0, "seconds": 0.0} if record["reused"] else record  # by this call
        merged = {
            **record,
            **(self.scorer.combine(record, extra) if len(missing) < self.n_splits else extra),
            "reused": False,
            "imputations": spent.get("imputations", 0) + extra["imputations"],
            "seconds": spent.get("seconds", 0.0) + extra["seconds"],
        }
        self._keep(key, merged)


def _read_checkpoint(path) -> list[dict]:
    if path is None or not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut short by an interrupted run
                    continue
    return records


def tune(
    adata,
    *,
    grid: Mapping[str, Sequence] | None = None,
    method: str = "sccr",
    strategy: str = "auto",
    layer: str | None = None,
    counts_layer: str | None = None,
    random_state: int | None = 0,
    n_jobs: int | None = None,
    search: str = "auto",
    max_imputations: int = 16,
    max_sweeps: int = 2,
    split: float | None = None,
    mask_rate: float = 0.1,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = True,
    key_added: str = "sccr_tune",
    progress: bool | None = None,
    echo: Callable[[str], None] | None = None,
    n_splits: int | None = None,
    select: str = "one_se",
    screen: bool = True,
):
    """Score a grid of imputation settings without labels and keep the best.

    Parameters
    ----------
    adata
        Cells x genes, as for :func:`sccr.tl.score` (log-normalised with raw counts in a
        layer, e.g. the output of :func:`sccr.pp.preprocess_paper`, or raw counts).
    grid
        ``{option: [values]}`` over ``method`` and the options of :func:`sccr.impute`
        (default :data:`DEFAULT_GRID`: ``method`` sccr/scfp, ``beta`` 0.5/0.9/0.99,
        ``gamma`` 0.01/0.3/1 (scCR only), ``n_iter`` 10/40, ``k`` 5/15/30). Options not
        in the grid keep their defaults. "No imputation" is always scored as a row.
    method
        The method when the grid has no ``method`` key.
    strategy, layer, counts_layer, random_state, n_jobs, split, mask_rate
        As in :func:`sccr.tl.score`; the same splits (or masks) are shared by every setting.
        ``split=None`` is :data:`sccr.tl._score.DEFAULT_SPLIT` (0.9).
    n_splits
        Independent splits (as in :func:`sccr.tl.score`) each setting
        is imputed on; its losses are their means (``None``: :data:`DEFAULT_N_SPLITS`, 3).
    screen
        With several MCV splits: score every setting on the first split, then only those
        within :data:`SCREEN_SE` (3) standard errors of that split's lowest (and no
        imputation) on the others; the others cannot be chosen, and their ``score`` is
        estimated from the first split (the lowest's mean plus their difference from it
        there; ``splits`` says 1). ``False``: every setting on every split.
    select
        ``"one_se"`` (default): among the settings whose score is within one standard
        error of the lowest (the standard error of the paired difference over groups of
        cells, :func:`sccr.tl._score.paired_se`; no imputation included), the one that
        changes the data least (lowest ``change``): a setting that is not measurably
        better than a milder one, or than no imputation, is not chosen. With masks
        (no standard errors) it is ``"min"``. ``"min"``: the lowest score.
    search
        ``"grid"``: every setting; ``"coordinate"``: from the published defaults, one
        option at a time over its values (the others fixed at the best so far), for up
        to ``max_sweeps`` sweeps or ``max_imputations`` imputations, stopping early when
        a sweep changes nothing; ``"auto"``: the whole grid when it costs at most
        :data:`FULL_GRID_MAX` imputations, else the coordinate search.
    max_imputations, max_sweeps
        Limits of the coordinate search: ``max_imputations`` whole runs on the first split
        when screening, else on each split (scCR settings that differ only in ``beta`` and
        ``gamma`` share one run, and each repeats only its last step).
    checkpoint
        A JSON-lines file: every scored setting is appended to it, and with ``resume``
        settings already there (same data, split and seed) are not scored again.
    resume
        Reuse settings found in ``checkpoint`` and in ``adata.uns[key_added]``.
    key_added
        Results go to ``adata.uns[key_added]``: ``best`` (keyword arguments for
        :func:`sccr.impute`, or ``{"method": "none"}``), ``table``, ``config``, ``cost``.
    progress
        Progress bar and cost notes on standard error (``None``: on a terminal).
    echo
        Receives the cost notes instead (e.g. ``print``).

    Returns
    -------
    pandas.DataFrame
        One row per scored setting, lowest ``score`` first: ``setting``,
        ``method``, the options, ``score`` and every loss, ``score_sd`` (over the splits),
        ``change``, ``se`` (standard error of its difference from the lowest score),
        ``tied`` (within one ``se`` of it), ``chosen``, ``stage`` of the search,
        ``default`` (the published defaults), ``imputations`` and ``seconds``.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    from .._adata import check_key_added
    from .._errors import InputError
    from .._options import _check_int, resolve_progress
    from ._score import DEFAULT_SPLIT, DEFAULTS, METHOD_KEYS, N_GROUPS, Scorer, check_memory, check_method

    grid = check_grid(grid)
    if "method" not in grid:
        method = check_method(method)
        if not isinstance(method, str):
            raise InputError("tune needs a method name ('sccr', 'scfp' or 'scbfp'), not a function")
        grid = {"method": [method], **grid}
    if search not in ("auto", "grid", "coordinate"):
        raise InputError(f"search must be 'auto', 'grid' or 'coordinate'; got {search!r}")
    _check_int("max_imputations", max_imputations, 1)
    _check_int("max_sweeps", max_sweeps, 1)
    check_key_added(key_added, layer)
    if select not in SELECT:
        raise InputError(f"select must be one of {', '.join(map(repr, SELECT))}; got {select!r}")
    n_splits = DEFAULT_N_SPLITS if n_splits is None else _check_int("n_splits", n_splits, 1)
    if not isinstance(screen, bool):
        raise InputError(f"screen must be True or False, got {screen!r}")
    show = resolve_progress(progress)
    say = (
        echo
        if echo is not None
        else ((lambda msg: tqdm.write(f"sccr tune: {msg}", file=sys.stderr)) if show else (lambda msg: None))
    )

    start_time = time.perf_counter()
    scorer = Scorer(
        adata,
        strategy=strategy,
        layer=layer,
        counts_layer=counts_layer,
        random_state=random_state,
        n_jobs=n_jobs,
        split=DEFAULT_SPLIT if split is None else split,
        mask_rate=mask_rate,
        n_splits=n_splits,
    )
    config = json.loads(json.dumps(_safe(scorer.config)))
    config["fingerprint"] = _fingerprint(scorer.data.input)
    check_memory(scorer, k=max(grid.get("k", [DEFAULTS["k"]])))
    screening = screen and n_splits > 1 and scorer.strategy == "mcv"  # masks have no standard errors
    full_cost = grid_cost(grid)
    n_settings = len(_settings(grid))
    mode = search if search != "auto" else ("grid" if full_cost <= FULL_GRID_MAX else "coordinate")
    planned = full_cost if mode == "grid" else min(max_imputations, full_cost)
    splits_note = (
        f" on the first of {n_splits} splits, then the settings within {SCREEN_SE:g} standard errors of the "
        "lowest on the others"
        if screening
        else (f" on each of {n_splits} splits" if n_splits > 1 else "")
    )
    say(
        f"{n_settings} settings in the grid (all of them: {full_cost} whole runs{splits_note}; scCR settings that "
        "differ only in beta and gamma share one, each beta adding one propagation and each gamma a blend); "
        + (
            "scoring all of them"
            if mode == "grid"
            else f"coordinate search from the defaults, at most {planned} whole runs{splits_note}"
        )
        + f", each of a {scorer.data.shape[0]} x {scorer.data.shape[1]} matrix ({scorer.strategy})"
    )
    previous = _read_checkpoint(checkpoint) if resume else []
    if resume and key_added in adata.uns and "table" in adata.uns[key_added]:
        previous += _records_from_table(adata.uns[key_added])
    bar = tqdm(
        total=1 + (n_settings if mode == "grid" else _sweep_settings(grid)),
        desc="tune",
        disable=not show,
        leave=False,
        unit="setting",
    )
    runner = _Runner(
        scorer,
        config,
        checkpoint,
        previous,
        bar,
        budget=(full_cost if mode == "grid" else max_imputations) * (1 if screening else n_splits),
        search_splits=[0] if screening else None,
    )
    runner("none", {}, "baseline")
    if mode == "grid":
        for m, params in _settings(grid):
            runner(m, params, "grid")
    else:
        _coordinate_search(runner, grid, max_sweeps)
    contenders = _contenders(runner) if screening else list(runner.order)
    if screening:
        bar.total += len(contenders)
        bar.refresh()
        for key in contenders:
            runner.complete(key)
            bar.update()
    bar.close()
    seconds = time.perf_counter() - start_time
    one_run = float(np.median(scorer.run_seconds)) if scorer.run_seconds else None  # one imputation, typically
    if scorer.n_imputations:
        say(
            f"{scorer.n_imputations} whole runs and {scorer.n_denoisings} last-step propagations in {seconds:.1f} s"
            + ("" if one_run is None else f", {seconds / one_run:.1f} times one imputation ({one_run:.1f} s)")
            + f"; {runner.reused} settings reused"
            + (
                f"; {len(contenders)} of {len(runner.order)} settings scored on all {n_splits} splits"
                if screening
                else ""
            )
        )

    option_keys = [k for k in AXES if k != "method" and any(k in runner.records[key]["params"] for key in runner.order)]
    chosen_key, lowest_key, se, tied = _select(runner, select, contenders)
    estimated = _estimated_scores(runner, contenders)
    rows = []
    for key in runner.order:
        r = runner.records[key]
        losses = {k: v for k, v in r.items() if k.startswith(("mcv_", "mask_"))}
        is_default = r["method"] == "sccr" and all(
            r["params"].get(k, DEFAULTS[k]) == DEFAULTS[k] for k in METHOD_KEYS["sccr"]
        )
        splits = r.get("score_splits") or [r["score"]]  # (earlier versions stored no splits for masks)
        rows.append(
            {
                "_key": key,
                "setting": _describe(r["method"], r["params"]),
                "method": r["method"],
                **{k: r["params"].get(k, np.nan) for k in option_keys},
                "score": estimated[key],
                **losses,
                "splits": len(splits),
                "score_sd": float(np.std(splits, ddof=1)) if len(splits) > 1 else np.nan,
                "change": float(r.get("change", np.nan)),
                "se": se[key],
                "tied": bool(tied[key]),
                "chosen": key == chosen_key,
                "stage": r["stage"],
                "default": bool(is_default),
                "reused": bool(r["reused"]),
                "imputations": int(r.get("imputations", 0)),
                "seconds": float(r.get("seconds", 0.0)),
            }
        )
    table = pd.DataFrame(rows).sort_values("score", kind="stable").reset_index(drop=True)
    keys = list(table["_key"])
    table = table.drop(columns="_key")
    has_groups = all(runner.records[k].get("cell_groups") is not None for k in keys)
    best_record, lowest_record = runner.records[chosen_key], runner.records[lowest_key]

    def as_setting(record):
        return {"method": "none"} if record["method"] == "none" else {"method": record["method"], **record["params"]}

    best = as_setting(best_record)
    none_score = float(table.loc[table["method"] == "none", "score"].iloc[0])
    cost = {
        "search": mode,
        "grid_settings": n_settings,
        "full_grid_imputations": full_cost,
        "n_splits": n_splits,
        "imputations": int(scorer.n_imputations),
        "denoisings": int(scorer.n_denoisings),
        "reused": int(runner.reused),
        "seconds": float(seconds),
        "imputation_seconds": float(scorer.seconds),
        "one_imputation_seconds": np.nan if one_run is None else float(one_run),
    }
    adata.uns[key_added] = {
        "best": best,
        "best_score": float(best_record["score"]),
        "none_score": none_score,
        "lowest": as_setting(lowest_record),
        "lowest_score": float(lowest_record["score"]),
        "select": select if has_groups else "min",
        "table": table.astype({c: str for c in table.columns if table[c].dtype == object}),
        "config": config,
        "cost": cost,
        "grid": {k: [_safe(v) for v in vs] for k, vs in grid.items()},
    }
    # per row of the table and split (nan: not scored there): the scores and group losses, for reuse
    score_splits = np.full((len(keys), n_splits), np.nan)
    cell_groups = np.full((len(keys), n_splits, min(N_GROUPS, scorer.data.shape[0])), np.nan)
    for row, key in enumerate(keys):
        r = runner.records[key]
        for i, split in enumerate(_splits_of(r, n_splits)):
            score_splits[row, split] = r["score_splits"][i] if "score_splits" in r else np.nan
            if has_groups:
                cell_groups[row, split] = r["cell_groups"][i]
    adata.uns[key_added]["score_splits"] = score_splits
    if has_groups:
        adata.uns[key_added]["cell_groups"] = cell_groups
    table.attrs.update(best=best, cost=cost, config=config)
    return table


def _common_groups(a: Mapping[str, Any], b: Mapping[str, Any], n_splits: int):
    """The group losses of two records on the splits both were scored on."""
    ga, gb = a.get("cell_groups"), b.get("cell_groups")
    if ga is None or gb is None:
        return None, None
    sa, sb = _splits_of(a, n_splits), _splits_of(b, n_splits)
    both = [i for i in sa if i in sb]
    return [ga[sa.index(i)] for i in both], [gb[sb.index(i)] for i in both]


def _contenders(runner: _Runner) -> list[str]:
    """The settings that can still be chosen after the first split (:data:`SCREEN_SE`), no imputation included."""
    from ._score import paired_se

    records = runner.records
    first = {key: _first_score(records[key]) for key in runner.order}
    lowest = min(runner.order, key=first.get)
    out = []
    for key in runner.order:
        if key != lowest and records[key]["method"] != "none":
            se = paired_se(*_common_groups(records[key], records[lowest], runner.n_splits))
            if np.isfinite(se) and first[key] - first[lowest] > SCREEN_SE * se:
                continue
        out.append(key)
    return out


def _estimated_scores(runner: _Runner, contenders: list[str]) -> dict[str, float]:
    """Each setting's score: its mean over the splits, or for one screened out after the first split,
    the mean of that split's lowest plus its difference from it there (the noise of the split cancels)."""
    records = runner.records
    out = {key: records[key]["score"] for key in contenders}
    anchor = records[min(contenders, key=lambda k: _first_score(records[k]))]
    for key in runner.order:
        if key not in out:
            out[key] = anchor["score"] + _first_score(records[key]) - _first_score(anchor)
    return out


def _select(runner: _Runner, select: str, contenders: list[str]) -> tuple[str, str, dict[str, float], dict[str, bool]]:
    """The chosen setting, the lowest-scoring one, and each setting's standard error and tie with the lowest.

    Only ``contenders`` (the settings scored on every split) can be the lowest, tied or chosen.
    ``se`` is the standard error of the difference between a setting's score and the lowest on
    the splits both were scored on (:func:`sccr.tl._score.paired_se`; 0 for the lowest itself,
    ``nan`` without group losses); ``tied``: the difference is at most ``se``. ``"one_se"``
    chooses, among the tied, the one with the least ``change`` (no imputation has none), then the
    lowest score.
    """
    from ._score import paired_se

    records = runner.records
    lowest = min(contenders, key=lambda k: records[k]["score"])  # first scored wins exact ties
    se, tied = {}, {}
    for key in runner.order:
        r = records[key]
        se[key] = 0.0 if key == lowest else paired_se(*_common_groups(r, records[lowest], runner.n_splits))
        tied[key] = key == lowest or (
            key in contenders and bool(r["score"] - records[lowest]["score"] <= se[key])  # nan: not tied
        )
    if select == "min":
        return lowest, lowest, se, tied
    candidates = [k for k in runner.order if tied[k]]

    def change(key):
        value = records[key].get("change")
        return 0.0 if records[key]["method"] == "none" else (np.inf if value is None else float(value))

    chosen = min(candidates, key=lambda k: (change(k), records[k]["score"]))
    return chosen, lowest, se, tied


def _params_of(row, option_keys: list[str]) -> dict[str, Any]:
    from ._score import METHOD_KEYS

    out = {}
    for k in option_keys:
        v = row[k]
        if k in METHOD_KEYS[row["method"]] and not (isinstance(v, float) and np.isnan(v)):
            out[k] = v.item() if hasattr(v, "item") else v
    return out


def _records_from_table(uns: Mapping) -> list[dict]:
    """Earlier results stored by :func:`tune` in ``uns`` as records for reuse."""
    table, config = uns["table"], uns.get("config")
    if config is None:
        return []
    config = json.loads(
        json.dumps(_safe(dict(config)), default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v))
    )
    option_keys = [k for k in AXES if k != "method" and k in table.columns]
    groups, score_splits = uns.get("cell_groups"), uns.get("score_splits")
    if groups is not None and len(groups) != len(table):
        groups = None
    if score_splits is not None and len(score_splits) != len(table):
        score_splits = None
    records = []
    n_splits = int(config.get("n_splits", 1))
    for i, (_, row) in enumerate(table.iterrows()):
        scores = {k: float(row[k]) for k in table.columns if str(k).startswith(("mcv_", "mask_"))}
        scored = list(range(n_splits))
        if score_splits is not None:
            scored = [j for j in scored if np.isfinite(score_splits[i][j])]
            scores["score_splits"] = [float(score_splits[i][j]) for j in scored]
            scores["score"] = float(np.mean(scores["score_splits"]))  # (the table estimates screened-out scores)
        elif "splits" in table.columns and row["splits"] < n_splits:
            continue
        else:
            scores["score"] = float(row["score"])
        scores["splits"] = scored
        if "change" in table.columns and np.isfinite(row["change"]):
            scores["change"] = float(row["change"])
        if groups is not None:
            scores["cell_groups"] = [np.asarray(groups[i][j]).tolist() for j in scored]
        params = _params_of(row, option_keys)
        params = {k: (int(v) if k in ("k", "k_gene", "n_iter") else v) for k, v in params.items()}
        records.append(
            {"method": row["method"], "params": params, **scores, "config": config, "imputations": 0, "seconds": 0.0}
        )
    return records


def _fingerprint(X) -> list:
    """A cheap summary of the matrix a checkpoint was made on (shape, non-zeros, sum)."""
    import scipy.sparse as sp

    values = X.data if sp.issparse(X) else np.asarray(X)
    return [
        int(X.shape[0]),
        int(X.shape[1]),
        int(np.count_nonzero(values)),
        round(float(values.sum(dtype=np.float64)), 3),
    ]


def _sweep_settings(grid: dict[str, list]) -> int:
    """Settings the first sweep of the coordinate search scores (for the progress bar)."""
    from ._score import METHOD_KEYS

    methods = [m for m in grid["method"] if m != "none"]
    if not methods:
        return 0
    method = "sccr" if "sccr" in methods else methods[0]
    axes = [a for a in AXES if a != "method" and a in grid and len(grid[a]) > 1 and a in METHOD_KEYS[method]]
    return 1 + sum(len(grid[a]) - 1 for a in axes) + max(len(methods) - 1, 0)


def _coordinate_search(runner: _Runner, grid: dict[str, list], max_sweeps: int) -> None:
    from ._score import METHOD_KEYS

    methods = [m for m in grid["method"] if m != "none"]
    if not methods:
        return
    method = "sccr" if "sccr" in methods else methods[0]
    params = _start(grid, method)
    best = runner(method, params, "start")
    for sweep in range(1, max_sweeps + 1):
        if sweep > 1:
            runner.bar.total += _sweep_settings(grid) - 1
            runner.bar.refresh()
        changed = False
        for axis in AXES:
            if runner.exhausted():
                return
            if axis == "method":
                if len(methods) < 2:
                    continue
                candidates = []
                for m in methods:
                    p = {k: v for k, v in params.items() if k in METHOD_KEYS[m]}
                    p.update({k: v for k, v in _start(grid, m).items() if k not in p})
                    candidates.append((m, p))
            elif axis in grid and len(grid[axis]) > 1 and axis in METHOD_KEYS[method]:
                candidates = [(method, {**params, axis: v}) for v in grid[axis]]
            else:
                continue
            for m, p in candidates:
                if runner.exhausted():
                    break
                record = runner(m, p, f"sweep {sweep}: {axis}")
                if runner.search_score(record) < runner.search_score(best):
                    best, method, params, changed = record, m, dict(p), True
        if not changed:
            return

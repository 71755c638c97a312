"""sccr.tl.tune: grid, search, resume, progress, bad grids; the diagnose report and the tune/diagnose commands."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sccr
import sccr.pl
import sccr.tl
from sccr.cli import build_parser, main
from sccr.tl._score import normalise_counts
from sccr.tl._tune import DEFAULT_GRID, check_grid, grid_cost

SMALL = {"method": ["sccr"], "k": [5, 10, 100], "beta": [0.5, 0.99]}  # 6 settings: scored whole


def planted(n_per: int = 40, n_genes: int = 40, *, seed: int = 0) -> ad.AnnData:
    """Three groups of cells, Poisson counts; log-normalised X and raw counts in layers['counts']."""
    rng = np.random.default_rng(seed)
    means = rng.gamma(0.6, 2.0, size=(3, n_genes))
    groups = np.repeat(np.arange(3), n_per)
    counts = rng.poisson(means[groups] * rng.uniform(0.5, 1.5, size=(len(groups), 1)) * 3).astype(np.float32)
    a = ad.AnnData(X=normalise_counts(counts)[0])
    a.layers["counts"] = sp.csr_matrix(counts)
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.var_names = [f"g{j}" for j in range(a.n_vars)]
    return a


def test_default_grid_is_documented_and_valid():
    grid = check_grid(None)
    assert grid == DEFAULT_GRID
    assert grid_cost(grid) == 24  # 72 settings; scCR settings that differ only in beta and gamma share one run
    assert grid_cost({"method": ["sccr"], "gamma": [0.01, 0.3, 1.0], "beta": [0.5, 0.9]}) == 1
    assert grid_cost({"method": ["scfp"], "beta": [0.5, 0.9]}) == 2


def test_tune_scores_every_setting_of_a_small_grid(tmp_path):
    a = planted()
    table = sccr.tl.tune(a, grid=SMALL, n_jobs=1)
    assert isinstance(table, pd.DataFrame)
    assert len(table) == 7 and (table["method"] == "none").sum() == 1  # 6 settings and no imputation
    assert table["score"].is_monotonic_increasing
    info = a.uns["sccr_tune"]
    cost = info["cost"]
    assert cost["search"] == "grid" and 3 <= cost["imputations"] < 3 * 3  # one run per k on the first split,
    assert (table["splits"] == 3).sum() >= 2  # then the contenders (and no imputation) on the other two
    whole = sccr.tl.tune(a.copy(), grid=SMALL, n_jobs=1, screen=False, resume=False)
    cost = whole.attrs["cost"]
    assert cost["imputations"] == 3 * 3 and cost["denoisings"] == 6 * 3  # every setting on all 3 splits
    assert (whole["splits"] == 3).all()
    assert info["cost"]["n_splits"] == 3 and info["config"]["n_splits"] == 3
    assert table["chosen"].sum() == 1 and table.loc[0, "tied"] and table.loc[0, "se"] == 0
    best = info["best"]
    assert best["method"] == "sccr" and best["k"] != 100  # neighbourhoods spanning every group lose
    assert best == table.attrs["best"]
    out = sccr.impute(a, **{k: v for k, v in best.items()}, copy=True)  # what impute accepts
    assert out.layers["sccr"].shape == a.shape
    a.write_h5ad(tmp_path / "tuned.h5ad")  # everything stored is writable
    assert "sccr_tune" in ad.read_h5ad(tmp_path / "tuned.h5ad").uns


def test_no_imputation_can_win():
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(1.0, 60.0, size=(80, 30))).astype(np.float32)  # every cell its own deep profile
    a = ad.AnnData(X=sp.csr_matrix(counts))
    table = sccr.tl.tune(a, grid={"method": ["scfp"], "k": [10, 40]}, n_jobs=1)
    assert table.loc[0, "method"] == "none"
    assert a.uns["sccr_tune"]["best"] == {"method": "none"}


def test_coordinate_search_stays_within_budget():
    a = planted()
    table = sccr.tl.tune(a, n_jobs=1, max_imputations=6, n_splits=1)  # the default grid: 24 whole runs in full
    cost = a.uns["sccr_tune"]["cost"]
    assert cost["search"] == "coordinate" and cost["imputations"] <= 6 and cost["full_grid_imputations"] == 24
    assert table.loc[table["stage"] == "start", "default"].all()  # the search starts at the published defaults
    assert (table["default"]).sum() == 1


def test_resume_from_checkpoint(tmp_path):
    a = planted()
    path = tmp_path / "tune.jsonl"
    first = sccr.tl.tune(a.copy(), grid=SMALL, n_jobs=1, n_splits=1, checkpoint=path)
    lines = path.read_text().splitlines()
    assert len(lines) == 7
    b = a.copy()
    again = sccr.tl.tune(b, grid=SMALL, n_jobs=1, n_splits=1, checkpoint=path)
    assert b.uns["sccr_tune"]["cost"]["imputations"] == 0 and again["reused"].all()
    pd.testing.assert_series_equal(first["score"], again["score"])
    path.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # interrupted while writing the fourth
    c = a.copy()
    sccr.tl.tune(c, grid=SMALL, n_jobs=1, n_splits=1, checkpoint=path)
    assert c.uns["sccr_tune"]["cost"]["imputations"] == 2  # three reused (one of them no imputation): k=10, k=100 left
    other_seed = a.copy()
    sccr.tl.tune(other_seed, grid=SMALL, n_jobs=1, n_splits=1, checkpoint=path, random_state=1)
    assert other_seed.uns["sccr_tune"]["cost"]["imputations"] == 3  # another split: nothing reused (one run per k)


def test_resume_from_uns():
    a = planted()
    sccr.tl.tune(a, grid=SMALL, n_jobs=1, n_splits=1)
    table = sccr.tl.tune(a, grid={**SMALL, "k": [5, 10, 100, 20]}, n_jobs=1, n_splits=1)
    assert a.uns["sccr_tune"]["cost"]["imputations"] == 1 and table["reused"].sum() == 7  # k=20: one run, two betas


def test_progress_and_cost_are_reported(capsys):
    a = planted()
    notes = []
    sccr.tl.tune(a, grid=SMALL, n_jobs=1, n_splits=1, echo=notes.append)
    assert "6 settings in the grid" in notes[0] and "3 whole runs" in notes[0]
    assert notes[-1].startswith("3 whole runs and 6 last-step propagations in") and "times one imputation" in notes[-1]
    sccr.tl.tune(planted(), grid=SMALL, n_jobs=1, n_splits=1, progress=True)
    err = capsys.readouterr().err
    assert "tune" in err and "7/7" in err and "sccr tune: 6 settings in the grid" in err


def test_bad_grids_are_refused():
    a = planted()
    with pytest.raises(
        sccr.InputError, match=r"grid keys 'neighbours' are not options of sccr.impute; use only method, k"
    ):
        sccr.tl.tune(a, grid={"neighbours": [5]})
    with pytest.raises(sccr.InputError, match=r"grid\['method'\] has 'magic'"):
        sccr.tl.tune(a, grid={"method": ["magic"]})
    with pytest.raises(sccr.InputError, match="k must be an integer >= 1"):
        sccr.tl.tune(a, grid={"k": [0, 5]})
    with pytest.raises(sccr.InputError, match=r"grid\['beta'\] is empty"):
        sccr.tl.tune(a, grid={"beta": []})
    with pytest.raises(sccr.InputError, match="search must be"):
        sccr.tl.tune(a, grid=SMALL, search="random")
    with pytest.raises(sccr.InputError, match="needs raw counts"):
        sccr.tl.tune(ad.AnnData(X=a.X.copy()), grid=SMALL, strategy="mcv")


def test_tune_figure(tmp_path):
    pytest.importorskip("matplotlib")
    a = planted()
    sccr.tl.tune(a, grid=SMALL, n_jobs=1)
    fig = sccr.pl.tune_curves(a, save=tmp_path / "tune.png")
    assert len(fig.axes) == 2 and (tmp_path / "tune.png").stat().st_size > 0  # k and beta varied


def test_diagnose_report(tmp_path):
    pytest.importorskip("matplotlib")
    a = planted()
    result = sccr.tl.diagnose(a, out=tmp_path, grid=SMALL, n_runs=2, n_jobs=1)
    assert result["answer"] == "impute" and result["best"] == dict(a.uns["sccr_tune"]["best"])
    report = (tmp_path / "report.md").read_text()
    for heading in ("Should I impute this data?", "With which settings?", "Which results can I trust?"):
        assert heading in report
    assert "sccr.impute(adata, method='sccr'" in report
    assert report.count("**chosen**") == 1  # the chosen row is marked in the table of the best five
    rows = result["tune"]["rows"]
    if not rows[0]["chosen"]:
        assert "one-standard-error rule" in report
    for name in ("tune.png", "stability.png", "null.png"):
        assert (tmp_path / "figures" / name).stat().st_size > 0
    assert json.loads((tmp_path / "diagnose.json").read_text())["answer"] == "impute"


def test_commands(tmp_path, capsys):
    a = planted()
    a.X = a.layers["counts"].copy()  # raw counts in X: preprocessed by --preprocess auto
    del a.layers["counts"]
    path = tmp_path / "in.h5ad"
    a.write_h5ad(path)
    args = build_parser().parse_args(
        ["tune", str(path), "--out", str(tmp_path / "t"), "--grid", json.dumps(SMALL), "--n-jobs", "1"]
    )
    assert args.handler.__name__ == "tune_command"  # `sccr tune` and `sccr diagnose` are subcommands of sccr
    assert (
        main(["tune", str(path), "--out", str(tmp_path / "t"), "--grid", json.dumps(SMALL), "--n-jobs", "1", "--quiet"])
        == 0
    )
    best = json.loads((tmp_path / "t" / "best.json").read_text())
    assert best["method"] == "sccr" and (tmp_path / "t" / "tune.csv").exists()
    assert set(pd.read_csv(tmp_path / "t" / "tune.csv")["splits"]) == {1, 3}  # screened after the first split
    assert (
        main(["tune", str(path), "--out", str(tmp_path / "w"), "--grid", json.dumps(SMALL), "--no-screen", "--quiet"])
        == 0
    )
    assert (pd.read_csv(tmp_path / "w" / "tune.csv")["splits"] == 3).all()
    assert main(["tune", str(path), "--out", str(tmp_path / "t"), "--grid", '{"kk": [1]}']) == 2
    assert "sccr: error: grid keys 'kk' are not options" in capsys.readouterr().err
    assert main(["tune", str(tmp_path / "missing.h5ad"), "--out", str(tmp_path / "t")]) == 2
    assert (
        main(
            [
                "diagnose",
                str(path),
                "--out",
                str(tmp_path / "d"),
                "--grid",
                json.dumps(SMALL),
                "--n-runs",
                "1",
                "--n-jobs",
                "1",
                "--quiet",
                "--no-figures",
            ]
        )
        == 0
    )
    assert "Should I impute" in (tmp_path / "d" / "report.md").read_text()


def _fake_runner(rows):
    """A _Runner-like object holding scored records: (name, method, score, change, groups)."""
    from types import SimpleNamespace

    records = {
        name: {"method": method, "params": {}, "score": score, "change": change, "cell_groups": groups}
        for name, method, score, change, groups in rows
    }
    return SimpleNamespace(records=records, order=[r[0] for r in rows], n_splits=2)


def _select_all(runner, select):
    from sccr.tl._tune import _select

    return _select(runner, select, list(runner.order))  # every setting scored on every split


def test_one_se_rule_prefers_the_mildest_tied_setting():

    rng = np.random.default_rng(0)
    base = rng.normal(1.0, 0.1, size=(2, 50))
    rows = [
        ("none", "none", base.mean() + 0.5, 0.0, (base + 0.5).tolist()),  # clearly worse: not tied
        ("strong", "sccr", base.mean(), 0.9, base.tolist()),  # the lowest score
        ("mild", "sccr", base.mean() + 0.001, 0.2, (base + 0.001 + rng.normal(0, 0.05, (2, 50))).tolist()),
        ("other", "sccr", base.mean() + 0.3, 0.1, (base + 0.3).tolist()),  # milder still, but not tied
    ]
    chosen, lowest, se, tied = _select_all(_fake_runner(rows), "one_se")
    assert lowest == "strong" and se["strong"] == 0
    assert tied == {"none": False, "strong": True, "mild": True, "other": False}
    assert chosen == "mild"  # tied with the lowest and changes the data less
    assert _select_all(_fake_runner(rows), "min")[0] == "strong"
    rows[0] = ("none", "none", base.mean() + 0.0005, 0.0, (base + 0.0005 + rng.normal(0, 0.05, (2, 50))).tolist())
    assert _select_all(_fake_runner(rows), "one_se")[0] == "none"  # imputing is not measurably better: do not impute
    no_groups = [(n, m, s, c, None) for n, m, s, c, _ in rows]
    chosen, lowest, se, tied = _select_all(_fake_runner(no_groups), "one_se")
    assert chosen == lowest == "strong" and np.isnan(se["mild"])  # without standard errors: the lowest


def test_tune_one_se_rule_end_to_end():
    a = planted()
    table = sccr.tl.tune(a, grid=SMALL, n_jobs=1, n_splits=2)
    info = a.uns["sccr_tune"]
    lowest = table.iloc[0]
    assert info["select"] == "one_se" and info["lowest_score"] == lowest["score"]
    assert info["cell_groups"].shape == (len(table), 2, 100 if a.n_obs >= 100 else a.n_obs)
    tied = table[table["tied"]]
    assert ((tied["score"] - lowest["score"]) <= tied["se"]).all()
    assert ((table.loc[~table["tied"], "score"] - lowest["score"]) > table.loc[~table["tied"], "se"]).all()
    chosen = table[table["chosen"]].iloc[0]
    assert chosen["tied"] and chosen["change"] == tied["change"].min()
    assert info["best_score"] == chosen["score"]
    assert (table["method"] == "none").any() and table.loc[table["method"] == "none", "change"].iloc[0] == 0
    again = sccr.tl.tune(a, grid=SMALL, n_jobs=1, n_splits=2)  # resumed from uns: same choice and errors
    assert a.uns["sccr_tune"]["cost"]["imputations"] == 0 and a.uns["sccr_tune"]["best"] == info["best"]
    np.testing.assert_allclose(again["se"], table["se"])
    b = planted()
    sccr.tl.tune(b, grid=SMALL, n_jobs=1, n_splits=2, select="min")
    assert b.uns["sccr_tune"]["best"] == b.uns["sccr_tune"]["lowest"]
    with pytest.raises(sccr.InputError, match="select must be one of"):
        sccr.tl.tune(b, grid=SMALL, select="best")


def test_tune_with_masks_selects_the_lowest():
    a = planted()
    masked = ad.AnnData(X=a.X.copy())
    table = sccr.tl.tune(masked, grid=SMALL, n_jobs=1, n_splits=1)
    info = masked.uns["sccr_tune"]
    assert info["config"]["strategy"] == "mask" and info["select"] == "min"
    assert info["best"] == info["lowest"] and table.loc[0, "chosen"] and "cell_groups" not in info


def test_screening_scores_on_every_split_only_what_can_be_chosen():
    from sccr.tl._score import paired_se
    from sccr.tl._tune import SCREEN_SE

    a = planted()
    table = sccr.tl.tune(a, grid=SMALL, n_jobs=1)  # 3 splits, screened after the first
    info = a.uns["sccr_tune"]
    first, groups = info["score_splits"][:, 0], info["cell_groups"]
    assert set(table["splits"]) == {1, 3} and table.loc[table["method"] == "none", "splits"].item() == 3
    assert np.isnan(info["score_splits"][table["splits"] == 1, 1:]).all()
    anchor = int(np.argmin(first))  # the first split's lowest, scored on all three
    assert table.loc[anchor, "splits"] == 3
    for row in np.flatnonzero(table["splits"] == 1):
        se = paired_se(groups[row, :1], groups[anchor, :1])
        assert first[row] - first[anchor] > SCREEN_SE * se  # screened out: far from the lowest
        assert table.loc[row, "score"] == pytest.approx(
            info["score_splits"][anchor].mean() + first[row] - first[anchor]
        )
        assert not table.loc[row, "tied"] and not table.loc[row, "chosen"]
    whole = sccr.tl.tune(a.copy(), grid=SMALL, n_jobs=1, screen=False, resume=False)
    assert whole.attrs["best"] == info["best"]  # the same choice, at a fraction of the runs
    assert info["cost"]["imputations"] < whole.attrs["cost"]["imputations"]
    contenders = table[table["splits"] == 3].set_index("setting")["score"]
    pd.testing.assert_series_equal(contenders, whole.set_index("setting")["score"][contenders.index])


def test_screened_settings_are_completed_on_resume_without_rescoring_the_first_split(tmp_path):
    a = planted()
    path = tmp_path / "tune.jsonl"
    sccr.tl.tune(a.copy(), grid=SMALL, n_jobs=1, checkpoint=path)  # some settings on the first split only
    again = sccr.tl.tune(a.copy(), grid=SMALL, n_jobs=1, checkpoint=path, screen=False)  # now all on all three
    assert (again["splits"] == 3).all()
    screened = sum(1 for line in path.read_text().splitlines() if json.loads(line).get("splits") == [0])
    assert screened >= 1
    cost = again.attrs["cost"]
    assert cost["imputations"] >= 2 and cost["reused"] == len(again)  # only the missing splits were run
    whole = sccr.tl.tune(a.copy(), grid=SMALL, n_jobs=1, screen=False, resume=False)
    pd.testing.assert_series_equal(again["score"], whole["score"])


def test_screen_must_be_a_bool():
    with pytest.raises(sccr.InputError, match="screen must be True or False"):
        sccr.tl.tune(planted(), grid=SMALL, screen="yes")


def test_scoring_that_does_not_fit_in_memory_is_refused_before_any_run(monkeypatch, tmp_path):
    import sccr._engine

    monkeypatch.delenv("SCCR_SKIP_MEMORY_CHECK", raising=False)
    monkeypatch.setattr(sccr._engine, "available_bytes", lambda: 10_000)
    a = planted()
    path = tmp_path / "tune.jsonl"
    with pytest.raises(sccr.InputError, match=r"scoring imputations of 120 cells x 40 genes needs about .* available"):
        sccr.tl.tune(a, grid=SMALL, checkpoint=path)
    assert not path.exists() and "sccr_tune" not in a.uns  # nothing ran
    with pytest.raises(sccr.InputError, match="scoring imputations"):
        sccr.tl.score(a, method="sccr")
    assert sccr.tl.score(a, method="none")["score"] > 0  # no imputation: nothing to plan
    monkeypatch.setenv("SCCR_SKIP_MEMORY_CHECK", "1")
    sccr.tl.tune(a, grid={"k": [5]}, n_splits=1)

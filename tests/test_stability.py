"""sccr.tl.stability: zero change where nothing can change, planted near-ties detected, outputs and bad input."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sccr
import sccr.pl
import sccr.tl
from sccr.tl._stability import jitter_matrix


def separated(n_per: int = 30, n_genes: int = 20, seed: int = 0) -> np.ndarray:
    """Three well-separated groups of cells: log-normalised, non-negative, no near-ties of consequence."""
    rng = np.random.default_rng(seed)
    profiles = np.zeros((3, n_genes), dtype=np.float32)
    for g in range(3):
        profiles[g, g * 6 : g * 6 + 6] = 3.0
    X = np.repeat(profiles, n_per, axis=0) + rng.uniform(0, 0.3, size=(3 * n_per, n_genes)).astype(np.float32)
    X[rng.random(X.shape) < 0.3] = 0
    return X


def near_tie() -> tuple[np.ndarray, int]:
    """Groups A and B and one cell exactly as similar to the first cell of A as to the first of B.

    With k=1 its only neighbour is one of them, decided at rounding level; A and B
    differ in the genes the tied cell does not express, so its imputed row depends on the choice.
    """
    A = np.array([2, 0, 1, 0, 1.5, 0], np.float32)
    B = np.array([0, 2, 1, 0, 0, 1.5], np.float32)
    rows = []
    for profile, marker in ((A, 4), (B, 5)):
        for i in range(8):
            row = profile.copy()
            row[marker] += 0.1 * i  # less similar to the tied cell than the group's first cell
            rows.append(row)
    rows.append(np.array([1, 1, 1, 0, 0, 0], np.float32))
    return np.vstack(rows), len(rows) - 1


@pytest.mark.parametrize("method", ["sccr", "scfp"])
def test_exactly_reproducible_input_reports_zero_change(method):
    a = ad.AnnData(X=sp.csr_matrix(separated()))
    result = sccr.tl.stability(a, n_runs=2, method=method, perturbations=("rerun",), n_jobs=1)
    assert result["max_change"] == 0.0 and result["mean_sd"] == 0.0
    assert result["cells_neighbours_changed"] == 0.0 and result["ari_min"] == 1.0
    assert result["verdict"] == "stable" and result["message"].startswith("stable")
    assert (a.obs["sccr_stability_neighbours_changed"] == 0).all() and (a.obs["sccr_stability_max_change"] == 0).all()


def test_rounding_level_perturbations_do_not_move_separated_data():
    a = ad.AnnData(X=separated())
    result = sccr.tl.stability(a, n_runs=4, perturbations=("jitter", "permute"), n_jobs=1)
    assert result["cells_neighbours_changed"] == 0.0
    assert result["max_change"] < 1e-4  # float32 rounding only: the permuted run was put back in order
    assert result["verdict"] == "stable"
    assert [r["kind"] for r in result["runs"]] == ["jitter", "permute", "jitter", "permute"]


@pytest.mark.parametrize("method", ["sccr", "scfp"])
def test_planted_near_tie_is_detected(method):
    X, tied = near_tie()
    a = ad.AnnData(X=X)
    result = sccr.tl.stability(
        a,
        n_runs=4,
        method=method,
        params={"k": 1, "k_gene": 1},
        perturbations=("jitter", "permute"),
        n_clusters=2,
        n_jobs=1,
    )
    assert a.obs["sccr_stability_neighbours_changed"].iloc[tied] >= 1
    assert a.obs["sccr_stability_max_change"].iloc[tied] > 0.5
    assert int(np.argmax(a.obs["sccr_stability_max_change"])) == tied  # the tied cell moves most
    assert result["verdict"] == "fragile" and result["message"].startswith("FRAGILE")


def test_jitter_is_at_rounding_level_and_keeps_zeros():
    X = separated()
    Y = jitter_matrix(X, ulps=4, random_state=0)
    np.testing.assert_array_equal(Y == 0, X == 0)
    assert np.max(np.abs(Y - X) / np.maximum(X, 1e-30)) <= 5 * np.finfo(np.float32).eps
    Ys = jitter_matrix(sp.csr_matrix(X), ulps=4, random_state=0)
    np.testing.assert_array_equal(Ys.toarray(), Y)


def test_outputs_are_stored_and_writable(tmp_path):
    a = ad.AnnData(X=separated())
    result = sccr.tl.stability(a, n_runs=2, perturbations=("jitter",), n_jobs=1, keep_runs=True, key_added="st")
    assert len(result["runs_imputed"]) == 3 and "runs_imputed" not in a.uns["st"]
    assert {"st_neighbours_changed", "st_max_change"} <= set(a.obs)
    assert a.uns["st"]["n_clusters"] == 2  # round(sqrt(90 / 50))
    a.write_h5ad(tmp_path / "s.h5ad")
    back = ad.read_h5ad(tmp_path / "s.h5ad")
    assert (
        list(back.uns["st"]["runs"]["kind"]) == ["jitter", "jitter"] and back.uns["st"]["verdict"] == result["verdict"]
    )


def test_stability_figure(tmp_path):
    pytest.importorskip("matplotlib")
    a = ad.AnnData(X=separated())
    sccr.tl.stability(a, n_runs=1, perturbations=("jitter",), n_jobs=1)
    ax = sccr.pl.stability_cells(a, save=tmp_path / "s.png")
    assert ax.get_title() == "stability: stable" and (tmp_path / "s.png").stat().st_size > 0


def test_bad_input():
    a = ad.AnnData(X=separated())
    with pytest.raises(sccr.InputError, match="stability needs an imputation method"):
        sccr.tl.stability(a, method="none")
    with pytest.raises(sccr.InputError, match="perturbations must be"):
        sccr.tl.stability(a, perturbations=("shake",))
    with pytest.raises(sccr.InputError, match="n_runs must be an integer >= 1"):
        sccr.tl.stability(a, n_runs=0)
    with pytest.raises(sccr.InputError, match="'kk'"):
        sccr.tl.stability(a, params={"kk": 2})


def test_agreement_over_several_cluster_counts():
    from sccr.tl._stability import cluster_range, reassigned

    assert cluster_range(7, 1000) == [4, 7, 14] and cluster_range(2, 1000) == [2, 4] and cluster_range(9, 12) == [4, 9]
    labels = np.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(reassigned(labels, (labels + 1) % 3), np.zeros(6, bool))  # renamed: none moved
    np.testing.assert_array_equal(reassigned(labels, np.array([0, 1, 1, 1, 2, 2])), [0, 1, 0, 0, 0, 0])
    a = ad.AnnData(X=sp.csr_matrix(separated()))
    result = sccr.tl.stability(a, n_runs=2, perturbations=("rerun",), n_jobs=1, n_clusters=3)
    assert result["cluster_range"] == [2, 3, 6] and set(result["ari_min_by_k"]) == {"2", "3", "6"}
    assert result["fragility_multi_k"] == 0.0 and result["cells_reassigned"] == 0.0
    assert (a.obs["sccr_stability_reassigned"] == 0).all()
    assert {"ari_k2", "ari_k3", "ari_k6", "cells_reassigned"} <= set(a.uns["sccr_stability"]["runs"].columns)


def test_reassigned_cells_are_counted_per_cell():
    rng = np.random.default_rng(1)
    X = rng.uniform(0, 1, size=(60, 8)).astype(np.float32)  # no structure: clusterings are arbitrary
    a = ad.AnnData(X=X)
    result = sccr.tl.stability(
        a, n_runs=3, perturbations=("approx", "permute"), n_jobs=1, n_clusters=4, params={"k": 5}
    )
    share = a.obs["sccr_stability_reassigned"].to_numpy()
    assert ((share >= 0) & (share <= 1)).all()
    assert result["cells_reassigned"] == pytest.approx(share.mean(), abs=1e-6)
    assert 0 <= result["fragility_multi_k"] <= 2

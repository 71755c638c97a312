"""sccr.tl.score: molecular cross-validation, masked entries, and the permutation null (sccr.tl.null_check)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import sccr
import sccr.pl
import sccr.tl
from sccr.tl._score import (
    Scorer,
    binomial_split,
    convert_log1p,
    expected_log1p,
    gene_correlations,
    invert_log1p,
    normalise_counts,
    permute_genes,
)


def planted_counts(
    n_per: int = 40, n_genes: int = 40, *, n_groups: int = 3, seed: int = 0, scale: float = 3.0, depth: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Poisson counts around group-specific gene means: cells x genes, and the group of each cell."""
    rng = np.random.default_rng(seed)
    means = rng.gamma(0.6, 2.0, size=(n_groups, n_genes))
    groups = np.repeat(np.arange(n_groups), n_per)
    factor = rng.uniform(0.5, 1.5, size=len(groups)) if depth else np.ones(len(groups))
    return rng.poisson(means[groups] * factor[:, None] * scale).astype(np.float32), groups


def counts_adata(counts: np.ndarray) -> ad.AnnData:
    """Log-normalised X with the raw counts in layers['counts'], as sccr.pp.preprocess_paper leaves it."""
    a = ad.AnnData(X=normalise_counts(counts)[0])
    a.layers["counts"] = sp.csr_matrix(counts)
    return a


# --- binomial split ---------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [True, False])
def test_binomial_split_is_exact(sparse):
    counts, _ = planted_counts()
    X = sp.csr_matrix(counts) if sparse else counts
    X1, X2 = binomial_split(X, 0.5, random_state=1)
    X1 = X1.toarray() if sparse else X1
    X2 = X2.toarray() if sparse else X2
    np.testing.assert_array_equal(X1 + X2, counts)
    assert X1.min() >= 0 and X2.min() >= 0
    assert X1.dtype.kind == "i" and X2.dtype.kind == "i"


def test_binomial_split_halves_have_equal_expectation():
    counts = np.full((200, 100), 10.0, dtype=np.float32)  # 200,000 molecules
    X1, X2 = binomial_split(counts, 0.5, random_state=0)
    assert abs(X1.sum() - X2.sum()) / counts.sum() < 0.01
    # per entry: X1 ~ Binomial(10, 0.5): mean 5, variance 2.5
    assert abs(X1.mean() - 5) < 0.05 and abs(X1.var() - 2.5) < 0.1
    X1, X2 = binomial_split(counts, 0.9, random_state=0)
    assert abs(X1.sum() / counts.sum() - 0.9) < 0.01


def test_binomial_split_is_reproducible_and_refuses_non_counts():
    counts, _ = planted_counts()
    a1, _ = binomial_split(counts, random_state=3)
    a2, _ = binomial_split(counts, random_state=3)
    np.testing.assert_array_equal(a1, a2)
    with pytest.raises(sccr.InputError, match="negative"):
        binomial_split(-counts - 1)
    with pytest.raises(sccr.InputError, match="split"):
        binomial_split(counts, 1.5)


# --- normalisation and the depth correction ----------------------------------------------------


def test_normalisation_is_the_papers():
    counts, _ = planted_counts()
    a = ad.AnnData(X=sp.csr_matrix(counts))
    a.var_names = [f"g{j}" for j in range(a.n_vars)]
    paper = sccr.pp.preprocess_paper(a, genes=list(a.var_names))
    mine = normalise_counts(counts)[0]
    np.testing.assert_allclose(mine.toarray(), paper.X.toarray(), rtol=1e-6, atol=1e-6)


def test_expected_log1p_matches_poisson_samples():
    rng = np.random.default_rng(0)
    lam = np.array([0.0, 0.05, 0.7, 3.0, 40.0, 150.0])
    sampled = np.array([np.log1p(rng.poisson(x, 200_000)).mean() for x in lam])
    np.testing.assert_allclose(expected_log1p(lam), sampled, atol=3e-3)


def test_depth_correction():
    rng = np.random.default_rng(1)
    lam = np.array([0.1, 1.0, 5.0, 30.0])
    at_a = np.array([np.log1p(rng.poisson(0.9 * x, 200_000)).mean() for x in lam])
    at_b = np.array([np.log1p(rng.poisson(0.1 * x, 200_000)).mean() for x in lam])
    np.testing.assert_allclose(convert_log1p(at_a, 0.9, 0.1), at_b, atol=5e-3)
    values = np.array([0.0, 0.3, 1.2])
    np.testing.assert_array_equal(convert_log1p(values, 0.5, 0.5), values)  # the identity for an even split
    np.testing.assert_allclose(expected_log1p(invert_log1p(values)), values, atol=1e-4)


# --- scores ------------------------------------------------------------------------------------


def test_no_imputation_scores_the_input_itself():
    counts, _ = planted_counts()
    a = counts_adata(counts)
    result = sccr.tl.score(a, method="none", split=0.5, random_state=2)
    X1, X2 = binomial_split(a.layers["counts"], 0.5, random_state=2)
    Y1, Y2 = normalise_counts(X1)[0].toarray(), normalise_counts(X2)[0].toarray()
    assert result["strategy"] == "mcv" and result["counts"] == "layers['counts']"
    assert result["mcv_mse"] == pytest.approx(np.mean((Y1.astype(np.float64) - Y2) ** 2), rel=1e-6)
    assert result["score"] == result["mcv_mse"]
    assert np.isfinite(result["mcv_poisson"])


def _smoother(weight: float, groups: np.ndarray):
    """(1 - w) X + w * group mean for w <= 1; beyond, the group mean blended towards the global mean (over-smoothing)."""

    def impute(X):
        X = X.toarray() if sp.issparse(X) else np.asarray(X)
        group_mean = np.vstack([X[groups == g].mean(axis=0) for g in groups])
        if weight <= 1:
            return (1 - weight) * X + weight * group_mean
        return (2 - weight) * group_mean + (weight - 1) * X.mean(axis=0)

    impute.__name__ = f"smooth_{weight}"
    return impute


@pytest.mark.parametrize("split", [0.5, 0.9])
def test_mcv_recovers_the_planted_amount_of_smoothing(split):
    counts, groups = planted_counts(depth=False)
    a = counts_adata(counts)
    weights = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0]
    scores = [sccr.tl.score(a, method=_smoother(w, groups), split=split)["score"] for w in weights]
    assert weights[int(np.argmin(scores))] == 1.0  # the group mean: the truth up to noise
    assert scores[0] > scores[4] and scores[-1] > scores[4]  # under- and over-smoothing both cost
    assert all(np.diff(scores[:5]) < 0) and all(np.diff(scores[4:]) > 0)


def test_mcv_penalises_sccr_under_and_over_smoothing():
    counts, _ = planted_counts()
    a = counts_adata(counts)
    scorer = Scorer(a, random_state=0, n_jobs=1)
    none = scorer.evaluate("none")["score"]
    right = scorer.evaluate("sccr", {"k": 10})["score"]
    across_groups = scorer.evaluate("sccr", {"k": 100})["score"]  # neighbourhoods spanning every group
    assert right < none and right < across_groups
    assert scorer.evaluate("sccr", {"k": 10})["mcv_poisson"] < scorer.evaluate("none")["mcv_poisson"]


def test_mask_strategy_without_counts():
    counts, _ = planted_counts()
    a = ad.AnnData(X=normalise_counts(counts)[0])  # no counts anywhere
    result = sccr.tl.score(a, method="sccr", params={"k": 10})
    assert result["strategy"] == "mask"
    assert set(result) >= {"mask_rmse", "mask_rmse_uniform", "mask_rmse_low"}
    none = sccr.tl.score(a, method="none")["score"]
    across = sccr.tl.score(a, method="sccr", params={"k": 100})["score"]
    assert result["score"] < none and result["score"] < across


def test_auto_finds_counts_in_x():
    counts, _ = planted_counts()
    result = sccr.tl.score(ad.AnnData(X=sp.csr_matrix(counts)), method="none")
    assert result["strategy"] == "mcv" and result["counts"] == "X"


def test_beta_and_gamma_reuse_one_run_bit_for_bit():
    counts, _ = planted_counts()
    a = counts_adata(counts)
    scorer = Scorer(a, n_jobs=1)
    settings = [
        {"k": 10, "gamma": 0.01},
        {"k": 10, "gamma": 1.0},
        {"k": 10, "gamma": 0.4, "beta": 0.5},
        {"k": 10, "gamma": 0.3, "beta": 0.5},
    ]
    outputs = [scorer.imputed("sccr", p) for p in settings]
    assert scorer.n_imputations == 1  # one run of steps 1-5
    assert scorer.n_denoisings == 2  # and one soft propagation (step 6) per beta; each gamma is a blend
    for p, out in zip(settings, outputs, strict=True):
        whole = sccr.SCCR(**p, random_state=0, n_jobs=1, progress=False).fit_transform(scorer.data.input)
        np.testing.assert_array_equal(out, whole)
    scorer.imputed("sccr", {"k": 11})
    assert scorer.n_imputations == 2  # any other option is another run


def naive_mcv_losses(data, imputed: np.ndarray) -> tuple[dict, np.ndarray, float]:
    """The losses of docs/trust.md in dense numpy, entry by entry (the kernel's reference)."""
    from scipy.special import gammaln

    p = data.p
    v = imputed.astype(np.float32)
    predicted = convert_log1p(v, p, 1 - p).astype(np.float64)
    squares = ((predicted - data.target.toarray()) ** 2).sum(axis=1)
    depth = data.totals1 / data.median1 * (1 - p) / p
    mu = np.maximum(invert_log1p(v) * depth[:, None], 1e-4)
    y = data.counts2.toarray()
    poisson = mu - y * np.log(mu) + gammaln(y + 1)
    change = np.sum((v - data.input.toarray()) ** 2, dtype=np.float64)
    n, g = v.shape
    groups = np.bincount(np.arange(n) % 100, weights=squares) / (np.bincount(np.arange(n) % 100) * g)
    return {"mcv_mse": squares.sum() / (n * g), "mcv_poisson": poisson.sum() / (n * g)}, groups, change / (n * g)


@pytest.mark.parametrize("split", [0.9, 0.5])
@pytest.mark.parametrize("method", ["none", "sccr", "negative"])
def test_mcv_kernel_matches_the_naive_losses(split, method):
    counts, _ = planted_counts(n_per=150)  # 450 cells: several blocks of the kernel
    scorer = Scorer(counts_adata(counts), split=split, n_jobs=2)
    data = scorer.data
    if method == "negative":  # a callable may return anything, negatives and values beyond the tables included
        rng = np.random.default_rng(0)
        imputed = rng.normal(0, 3, size=data.shape).astype(np.float32)
        imputed[0, :5] = [0, 1e-9, 30.0, 1e8, -0.0]
    else:
        imputed = scorer.imputed(method, {"k": 10} if method == "sccr" else {})
    losses, groups, change = data.details(imputed, n_jobs=2)
    expected, expected_groups, expected_change = naive_mcv_losses(data, imputed)
    for key in expected:
        assert losses[key] == pytest.approx(expected[key], rel=1e-12)
    np.testing.assert_allclose(groups, expected_groups, rtol=1e-12)
    assert change == pytest.approx(expected_change, rel=1e-12, abs=1e-300)
    one_thread = data.details(imputed, n_jobs=1)  # threads change nothing
    assert one_thread[0] == losses and one_thread[2] == change
    np.testing.assert_array_equal(one_thread[1], groups)


def test_interpolation_table_is_numpy_interp_bit_for_bit():
    from sccr.tl._kernels import Table
    from sccr.tl._score import _GRID, _curve

    rng = np.random.default_rng(0)
    for xp, fp in ((_curve(0.9), _curve(0.1)), (_curve(1.0), _GRID)):
        table = Table(xp, fp)
        nodes = xp.astype(np.float32)  # the kernel reads float32 imputations
        x = np.concatenate(
            [
                nodes,
                ((xp[1:] + xp[:-1]) / 2).astype(np.float32),  # between nodes
                np.nextafter(nodes, np.float32(np.inf)),
                np.nextafter(nodes, np.float32(-np.inf)),
                rng.exponential(0.05, 10_000).astype(np.float32),
                rng.uniform(0, 20, 10_000).astype(np.float32),  # past the last node as well
                np.array([0.0, -0.0, 1e-30, 1e-45, np.inf, 3e38], dtype=np.float32),
            ]
        )
        np.testing.assert_array_equal(table(x), np.interp(x.astype(np.float64), xp, fp))
        assert np.isnan(table(np.array([np.nan], dtype=np.float32))[0])
    with pytest.raises(ValueError, match="strictly increasing"):
        Table(np.array([0.0, 1.0, 1.0]), np.zeros(3))


# --- bad input ---------------------------------------------------------------------------------


def test_mcv_without_counts_is_refused_with_the_fix():
    counts, _ = planted_counts()
    a = ad.AnnData(X=normalise_counts(counts)[0])
    with pytest.raises(sccr.InputError, match=r"strategy='mcv' needs raw counts.*counts_layer=.*strategy='mask'"):
        sccr.tl.score(a, strategy="mcv")
    with pytest.raises(sccr.InputError, match=r"counts_layer 'raw' not found.*available: none"):
        sccr.tl.score(a, counts_layer="raw")
    a.layers["log"] = a.X.copy()
    with pytest.raises(sccr.InputError, match=r"layers\['log'\] does not hold raw counts"):
        sccr.tl.score(a, counts_layer="log")


def test_bad_options_are_refused():
    a = counts_adata(planted_counts()[0])
    with pytest.raises(sccr.InputError, match=r"'kk'.*use only k, k_gene"):
        sccr.tl.score(a, params={"kk": 3})
    with pytest.raises(sccr.InputError, match="strategy must be one of"):
        sccr.tl.score(a, strategy="cv")
    with pytest.raises(sccr.InputError, match="method must be one of"):
        sccr.tl.score(a, method="magic")
    with pytest.raises(sccr.InputError, match="method='none' takes no params"):
        sccr.tl.score(a, method="none", params={"k": 3})
    with pytest.raises(sccr.InputError, match="k must be an integer"):
        sccr.tl.score(a, params={"k": 0})


# --- permutation null --------------------------------------------------------------------------


@pytest.mark.parametrize("sparse", [True, False])
def test_permutation_keeps_marginals_and_destroys_planted_correlations(sparse):
    rng = np.random.default_rng(0)
    base = rng.uniform(0.5, 4.5, size=(300, 1))
    X = np.hstack([base, base * 2, 5 - base, rng.gamma(2.0, 1.0, size=(300, 3))]).astype(np.float32)
    X[X < 0] = 0
    before = gene_correlations(X)
    assert before[0, 1] > 0.999 and before[0, 2] < -0.999
    P = permute_genes(sp.csr_matrix(X) if sparse else X, random_state=1)
    P = P.toarray() if sparse else P
    np.testing.assert_array_equal(np.sort(P, axis=0), np.sort(X, axis=0))
    after = gene_correlations(P)
    assert np.abs(after[np.triu_indices(6, k=1)]).max() < 0.2


def test_null_check_on_planted_structure():
    counts, _ = planted_counts()
    a = counts_adata(counts)
    result = sccr.tl.null_check(a, params={"k": 10})
    assert result["null"]["associating"] + result["null"]["dissociating"] < 0.1 * (
        result["real"]["associating"] + result["real"]["dissociating"]
    )
    for sign in ("associating", "dissociating"):
        edges = result["edges"][sign]
        assert edges["n_edges"] > 0 and edges["n_survive"] >= 0.8 * edges["n_edges"]
    assert a.uns["sccr_null"] is result
    assert len(result["real"]["histogram"]) == len(result["bins"]) - 1
    with_null = sccr.tl.score(a, params={"k": 10}, null=True)
    assert with_null["null"]["edges"] == result["edges"]


def test_null_check_refuses_no_imputation():
    with pytest.raises(sccr.InputError, match="null check needs an imputation method"):
        sccr.tl.null_check(counts_adata(planted_counts()[0]), method="none")


def test_null_figure(tmp_path):
    pytest.importorskip("matplotlib")
    a = counts_adata(planted_counts()[0])
    sccr.tl.null_check(a, params={"k": 10})
    ax = sccr.pl.null_correlations(a, save=tmp_path / "null.png")
    assert ax.get_xlabel().startswith("correlation") and (tmp_path / "null.png").stat().st_size > 0


# --- several splits and standard errors ---------------------------------------------------------


def test_several_splits_average_and_keep_the_first():
    counts, _ = planted_counts()
    a = counts_adata(counts)
    one = sccr.tl.score(a, method="sccr", params={"k": 10}, n_jobs=1, random_state=4)
    three = sccr.tl.score(a, method="sccr", params={"k": 10}, n_jobs=1, random_state=4, n_splits=3)
    assert one["score_splits"] == [one["score"]] and "n_splits" not in one  # one split: as before
    assert three["n_splits"] == 3 and len(three["score_splits"]) == 3
    assert three["score_splits"][0] == pytest.approx(one["score"], rel=1e-12)  # split 0 is the single split
    assert three["score"] == pytest.approx(np.mean(three["score_splits"]))
    assert len(set(three["score_splits"])) == 3  # the other splits differ
    assert sccr.tl.score(a, method="none", n_splits=2)["change"] == 0  # no imputation changes nothing
    assert three["change"] > 0 and "cell_groups" not in three
    with pytest.raises(sccr.InputError, match="n_splits"):
        sccr.tl.score(a, n_splits=0)


def test_group_losses_add_up_to_the_loss():
    from sccr.tl._score import N_GROUPS, paired_se

    counts, _ = planted_counts(n_per=50)  # 150 cells: 100 groups of one or two cells
    a = counts_adata(counts)
    scorer = Scorer(a, n_jobs=1, n_splits=2)
    result = scorer.evaluate("sccr", {"k": 10})
    groups = np.asarray(result["cell_groups"])
    assert groups.shape == (2, N_GROUPS)
    sizes = np.bincount(np.arange(150) % N_GROUPS)
    for s in range(2):  # the groups' losses, weighted by their cells, are the split's loss
        assert np.sum(groups[s] * sizes) / 150 == pytest.approx(result["score_splits"][s], rel=1e-9)
    none = scorer.evaluate("none")
    d = (groups - np.asarray(none["cell_groups"])).mean(axis=0)
    assert paired_se(result["cell_groups"], none["cell_groups"]) == pytest.approx(d.std(ddof=1) / np.sqrt(N_GROUPS))
    assert paired_se(result["cell_groups"], result["cell_groups"]) == 0
    assert np.isnan(paired_se(None, none["cell_groups"]))
    masked = Scorer(ad.AnnData(X=normalise_counts(counts)[0]), strategy="mask", n_jobs=1).evaluate("none")
    assert masked["cell_groups"] is None and masked["change"] == 0

"""scCR step 2: the signed G-node gene graph equals the concatenated 2G-node form.

ALGORITHM.md builds the gene graph on 2G nodes (every gene and its negation) and
propagates over it; the package uses a signed graph on G nodes instead. These
tests prove the two are the same: graph for graph, and imputed matrix C for C.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import naive
from helpers import in_threads, make_expression, row_block_search
from sccr._engine.graph import knn_graph, signed_gene_graph
from sccr._engine.pipeline import propagate_over_genes, standardisation
from sccr._engine.propagation import propagate

ZERO_GENE, CONST_GENE, UP_GENE, DOWN_GENE = 0, 5, 6, 7


@pytest.fixture
def X_genes() -> np.ndarray:
    """Synthetic expression with an all-zero gene, a constant gene and an anti-correlated pair."""
    X = make_expression(60, 30, seed=3)
    group0 = np.arange(60) % 3 == 0
    X[:, ZERO_GENE] = 0.0
    X[:, CONST_GENE] = 0.9
    X[:, UP_GENE] = np.where(group0, 2.0, 0.0)
    X[:, DOWN_GENE] = np.where(group0, 0.0, 1.5)
    X[::4, DOWN_GENE] = 0.0  # some dropouts on the anti-correlated side
    return X


@pytest.fixture
def D(X_genes) -> np.ndarray:
    """Pre-imputation D0 = hard(knn(X), X, T), as in scCR step 1."""
    return propagate(knn_graph(X_genes, 5, sym=True), X_genes, 10, hard=True)


def two_g_graph(D: np.ndarray, k: int) -> np.ndarray:
    """Ag = knn([Z, -Z]^T, k, sym=True) with the package's own knn_graph.

    Z is standardised with the same float32 arithmetic as the signed path, so the
    two graphs are compared on identical inputs: near-duplicate genes can have
    correlations 1e-8 apart, closer than a float64-then-float32 standardisation
    would preserve. (The standardisation itself is checked against numpy above.)
    """
    mean, std = standardisation(D)
    Z = (np.asarray(D, dtype=np.float32) - mean) / std
    return knn_graph(np.hstack([Z, -Z]).T, k, sym=True).toarray()


def test_fixture_has_zero_variance_columns(D):
    assert np.ptp(D[:, ZERO_GENE]) == 0
    assert np.ptp(D[:, CONST_GENE]) == 0
    assert np.corrcoef(D[:, UP_GENE], D[:, DOWN_GENE])[0, 1] < -0.5


def test_standardisation_matches_numpy(D):
    mean, std = standardisation(D)
    assert mean.dtype == np.float32 and std.dtype == np.float32
    expected_std = D.astype(np.float64).std(axis=0, ddof=1)
    expected_std[expected_std == 0] = expected_std.mean()
    np.testing.assert_allclose(mean, D.astype(np.float64).mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(std, expected_std, rtol=1e-6)
    # ... and the mean of the G deviations equals that of the 2G deviations of [D, -D].
    m2, s2, _ = naive.standardise_2g(D)
    np.testing.assert_allclose(np.r_[mean, -mean], m2, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.r_[std, std], s2, rtol=1e-6)


def test_standardisation_all_constant():
    D = np.full((10, 3), 2.5, dtype=np.float32)
    mean, std = standardisation(D)
    np.testing.assert_array_equal(mean, 2.5)
    assert np.isfinite(std).all() and (std > 0).all()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_two_g_graph_is_mirror_symmetric_and_equals_signed_graph(D, k):
    G = D.shape[1]
    Ag = two_g_graph(D, k)
    P, N = Ag[:G, :G], Ag[:G, G:]
    np.testing.assert_allclose(Ag[G:, G:], P, atol=1e-7)
    np.testing.assert_allclose(Ag[G:, :G], N, atol=1e-7)
    # P and N never overlap: a pair of genes is either associated or dissociated.
    assert not ((P > 0) & (N > 0)).any()
    assert (N > 0).any(), "no dissociating edge: the test would be vacuous"

    mean, std = standardisation(D)
    S = signed_gene_graph(D, mean, std, k)
    assert S.shape == (G, G) and S.dtype == np.float32
    np.testing.assert_allclose(S.toarray(), P - N, atol=1e-6)


def test_two_g_graph_equals_dense_oracle(D):
    _, _, Z = naive.standardise_2g(D)
    np.testing.assert_allclose(two_g_graph(D, 2), naive.knn(Z.T.astype(np.float32), 2, sym=True), atol=1e-6)


@pytest.mark.parametrize("k,n_iter", [(1, 5), (2, 1), (2, 10), (2, 40), (4, 20)])
def test_gene_propagation_equals_two_g_form(D, X_genes, k, n_iter):
    G = D.shape[1]
    mean, std = standardisation(D)
    S = signed_gene_graph(D, mean, std, k)
    C = propagate_over_genes(S, D, X_genes, mean, std, n_iter)
    expected, Ag = naive.gene_stage_2g(D, X_genes, k, n_iter, graph=knn_graph)
    assert C.shape == D.shape and C.dtype == np.float32
    np.testing.assert_allclose(C, expected, atol=1e-5)
    # The negated half of the 2G propagation stays the exact negation of the first half.
    _, _, Z = naive.standardise_2g(D)
    keep = np.hstack([X_genes, -X_genes]).T != 0
    out = naive.hard(Ag, Z.T, n_iter, keep=keep)
    np.testing.assert_allclose(out[G:], -out[:G], atol=1e-6)


def test_gene_propagation_keeps_observed_values(D, X_genes):
    mean, std = standardisation(D)
    S = signed_gene_graph(D, mean, std, 2)
    C = propagate_over_genes(S, D, X_genes, mean, std, 10)
    observed = X_genes != 0
    # kept positions keep their standardised value, so C == D there (up to round-off)
    np.testing.assert_allclose(C[observed], D[observed], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(C[:, CONST_GENE], 0.9, rtol=1e-6)
    np.testing.assert_allclose(C[:, ZERO_GENE], 0.0, atol=1e-6)


def test_gene_propagation_sparse_and_threads(D, X_genes):
    mean, std = standardisation(D)
    S = signed_gene_graph(D, mean, std, 2)
    one = propagate_over_genes(S, D, X_genes, mean, std, 10)
    two = in_threads(2, propagate_over_genes, S, D, sp.csr_matrix(X_genes), mean, std, 10)
    np.testing.assert_array_equal(one, two)


def test_signed_graph_properties(D):
    mean, std = standardisation(D)
    S = signed_gene_graph(D, mean, std, 2)
    Sd = S.toarray().astype(np.float64)
    np.testing.assert_allclose(np.abs(Sd).sum(axis=1), 1.0, rtol=1e-6)
    assert (np.diag(Sd) > 0).all()
    assert ((S != 0) != (S.T != 0)).nnz == 0  # symmetric pattern
    np.testing.assert_array_equal(np.sign(Sd), np.sign(Sd.T))
    # signs are those of the Pearson correlations
    with np.errstate(invalid="ignore", divide="ignore"):  # zero-variance genes give NaN
        corr = np.corrcoef(D.T.astype(np.float64))
    off = (Sd != 0) & ~np.eye(len(Sd), dtype=bool)
    np.testing.assert_array_equal(np.sign(Sd[off]), np.sign(corr[off]))
    assert Sd[UP_GENE, DOWN_GENE] < 0
    # zero-variance genes only keep their self-loop
    for g in (ZERO_GENE, CONST_GENE):
        assert S[g].nnz == 1 and S[g, g] == 1
        assert S[:, g].nnz == 1


def test_signed_graph_independent_of_cell_chunk(D):
    mean, std = standardisation(D)
    whole = signed_gene_graph(D, mean, std, 2)
    chunked = signed_gene_graph(D, mean, std, 2, cell_chunk=7)
    np.testing.assert_array_equal(whole.indices, chunked.indices)
    np.testing.assert_array_equal(whole.indptr, chunked.indptr)
    np.testing.assert_allclose(whole.data, chunked.data, rtol=1e-5)


@pytest.mark.slow
def test_equivalence_on_real_data(bladder):
    """The graphs agree on mouse bladder after a 20% dropout (which leaves zero-variance genes)."""
    from sccr._evaluation import drop_entries

    X, _, _ = drop_entries(bladder.X, 0.2, 0)
    D0 = in_threads(2, propagate, knn_graph(X, 15, sym=True), X, 40, hard=True)
    assert (np.ptp(D0, axis=0) == 0).any()
    G = D0.shape[1]
    mean, std = standardisation(D0)
    S = signed_gene_graph(D0, mean, std, 2).toarray()
    Ag = two_g_graph(D0, 2)
    np.testing.assert_allclose(S, Ag[:G, :G] - Ag[:G, G:], atol=1e-6)
    np.testing.assert_allclose(Ag[G:, G:], Ag[:G, :G], atol=1e-6)
    np.testing.assert_allclose(Ag[G:, :G], Ag[:G, G:], atol=1e-6)


def test_signed_graph_ties_follow_the_concatenated_graph():
    """|r| ranks neighbours; an exact |r| tie between an associating and a dissociating
    gene goes to the associating one, as in the gene's own row of the 2G graph (node h
    comes before node G + h). At such exact opposite-sign ties the 2G graph is itself
    not mirror-symmetric (the negated copy's row picks the other gene), so no signed
    graph equals it there; these ties need two genes that are exact negatives after
    standardisation.
    """
    rng = np.random.default_rng(0)
    base = rng.integers(0, 8, size=40).astype(np.float32) / 4
    other = rng.integers(0, 8, size=40).astype(np.float32) / 4
    noise = rng.random(40).astype(np.float32)
    # gene 0 = 4 - base is the exact negation of gene 3 = base after standardisation
    D = np.stack([4 - base, other, noise, base], axis=1)
    mean, std = standardisation(D)
    Z = (D - mean) / std
    np.testing.assert_array_equal(Z[:, 0], -Z[:, 3])
    S = signed_gene_graph(D, mean, std, 1)
    # gene 1: |r(1, 0)| == |r(1, 3)| with opposite signs: the positive correlate is kept
    kept = set(S[1].indices) - {1}
    r13 = np.corrcoef(other, base)[0, 1]
    positive = 3 if r13 > 0 else 0
    assert kept == {positive}
    assert S[1, positive] > 0
    idx, _ = row_block_search(np.hstack([Z, -Z]).T, 2)
    assert set(idx[1]) - {1} == {positive}  # the same choice in gene 1's row of the 2G graph


@pytest.mark.parametrize("values", ["continuous", "ties"])
@pytest.mark.parametrize("margin", [0, 1, 8])
def test_signed_top_equals_naive(values, margin):
    """The compiled ranking of the gene graph against a sort of every row, including rows full of
    exact |r| ties of both signs (where the candidates' cut-off and the sign order both matter)."""
    from sccr._engine.ranking import signed_top

    rng = np.random.default_rng(margin)
    for m, n in [(1, 1), (3, 5), (3, 40), (12, 12), (5, 7)]:
        if values == "continuous":
            gram = rng.standard_normal((9, n))
        else:
            gram = rng.integers(-2, 3, size=(9, n)) / 2.0
        row_scale, col_scale = rng.choice([0.5, 1.0], size=9), rng.choice([0.0, 0.5, 1.0, 2.0], size=n)
        indices = np.empty((9, m), dtype=np.int64)
        correlations = np.empty((9, m), dtype=np.float32)
        signed_top(gram, row_scale, col_scale, m, margin, indices, correlations)
        S = (gram * row_scale[:, None] * col_scale[None, :]).astype(np.float32)
        expected_indices, expected = naive.signed_top(S, m, margin)
        np.testing.assert_array_equal(indices, expected_indices)
        np.testing.assert_array_equal(correlations, expected)


def test_signed_graph_same_in_gene_blocks(D, monkeypatch):
    """Correlations computed a few genes at a time (several passes over the cells) give the same graph bit for bit."""
    import sccr._engine.graph as _graph

    mean, std = standardisation(D)
    whole = signed_gene_graph(D, mean, std, 2, cell_chunk=11)
    monkeypatch.setattr(_graph, "SIMILARITY_BLOCK_ELEMENTS", 2 * 4 * D.shape[1] + 1)  # 4 genes a block
    assert _graph.gene_block_rows(D.shape[1]) == 4
    blocked = signed_gene_graph(D, mean, std, 2, cell_chunk=11)
    for a in ("indices", "indptr", "data"):
        np.testing.assert_array_equal(getattr(whole, a), getattr(blocked, a))

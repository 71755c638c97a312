"""Approximate k-NN (sccr._engine.ann) and the knn= switch of sccr._engine.graph.knn_graph (docs/knn.md)."""

from __future__ import annotations

import anndata as ad
import numba
import numpy as np
import pytest
import scipy.sparse as sp

import sccr
from helpers import DATA, REFERENCE, in_threads, make_expression, require, row_block_search
from sccr._engine import ann as _ann
from sccr._engine import graph as _graph
from sccr._engine.ann import approximate_neighbours
from sccr._engine.graph import ExactCosine, knn_graph, resolve_knn
from sccr._engine.matrix import Matrix

K1 = 16  # k = 15 plus the row itself, as the pipeline asks


class Streamed(Matrix):
    """A dense matrix seen only through ``row_blocks`` (as a store on disk)."""

    def __init__(self, M: np.ndarray):
        self._M = M
        self.shape = M.shape
        self.passes = 0

    def row_blocks(self, rows: int = 4096):
        self.passes += 1
        for start in range(0, self.shape[0], rows):
            yield start, self._M[start : start + rows].copy()


def exact(M, m=K1):
    return row_block_search(M, m)


def recall(indices, M, exact_values):
    """Fraction of returned neighbours at least as similar as the exact m-th (ties count as found)."""
    sims = ExactCosine(M)(0, indices)
    return float((sims >= exact_values[:, -1:]).sum(axis=1).clip(max=indices.shape[1]).mean() / indices.shape[1])


@pytest.fixture(scope="module")
def pbmc():
    """pbmc4k (4.3k cells x 2000 genes), preprocessed as in the paper, with its exact top-16."""
    import sccr

    path = require(DATA / "pbmc4k_top2000.h5ad")
    genes = require(REFERENCE / "pbmc4k_top2000.genes.txt").read_text().split()
    X = sp.csr_matrix(sccr.pp.preprocess_paper(ad.read_h5ad(path), genes=genes).X, dtype=np.float32)
    return X, exact(X)


@pytest.fixture
def small_clusters(monkeypatch):
    # pbmc4k alone would be one pool; clusters of 300 rows make the probing matter.
    monkeypatch.setattr(_ann, "CLUSTER_SIZE", 300)


@pytest.mark.slow
def test_recall_on_real_data(pbmc, small_clusters):
    # Measured 0.98 at 20k and 50k resampled cells (docs/knn.md); 0.95 is the contract.
    X, (_, values) = pbmc
    indices, _ = in_threads(2, approximate_neighbours, X, K1, random_state=0)
    assert recall(indices, X, values) >= 0.95


def test_output_format_and_exact_values(pbmc, small_clusters):
    X, _ = pbmc
    indices, values = in_threads(1, approximate_neighbours, X, K1, random_state=0)
    n = X.shape[0]
    assert indices.shape == values.shape == (n, K1)
    assert indices.dtype == np.int64 and values.dtype == np.float32
    assert indices.flags.c_contiguous and values.flags.c_contiguous
    assert ((indices >= 0) & (indices < n)).all()
    # Distinct neighbours, ranked by decreasing similarity, ties to the lower index.
    s = np.sort(indices, axis=1)
    assert (s[:, 1:] != s[:, :-1]).all()
    assert (np.diff(values, axis=1) <= 0).all()
    tie = np.diff(values, axis=1) == 0
    assert (np.diff(indices, axis=1)[tie] > 0).all()
    # Values are the exact cosines (the exact search's float32 rounding).
    np.testing.assert_allclose(values, ExactCosine(X)(0, indices), rtol=0, atol=1e-6)
    # Each row is its own first neighbour (pbmc4k has no duplicated or empty rows).
    assert (indices[:, 0] == np.arange(n)).all()
    np.testing.assert_allclose(values[:, 0], 1.0, atol=1e-6)


def test_deterministic_for_seed_and_threads(pbmc, small_clusters):
    X, _ = pbmc
    a = in_threads(2, approximate_neighbours, X[:1500], K1, random_state=3)
    b = in_threads(2, approximate_neighbours, X[:1500], K1, random_state=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_thread_settings_restored(pbmc):
    X, _ = pbmc
    before = numba.get_num_threads()
    in_threads(1, approximate_neighbours, X[:300], K1, random_state=0)
    assert numba.get_num_threads() == before


def test_streamed_blocks_equal_in_memory(pbmc, small_clusters, monkeypatch):
    X, _ = pbmc
    D = X[:1200].toarray()
    # Column slices of 256 genes: 8 scoring passes per round instead of 1.
    monkeypatch.setattr(_ann, "SLICE_BYTES", 4 * D.shape[0] * 256)
    monkeypatch.setattr(_ann, "ROW_BLOCK", 500)
    stream = Streamed(D)
    a = in_threads(2, approximate_neighbours, stream, K1, random_state=0)
    b = in_threads(2, approximate_neighbours, D, K1, random_state=0)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    # 2 passes for the projection, then 8 column slices for each of the 2 scoring rounds.
    assert stream.passes == _ann.N_PASSES_PCA + 8 * (1 + _ann.N_REFINE)
    # The sparse path gives the same neighbours (values within float32 rounding).
    c = in_threads(2, approximate_neighbours, sp.csr_matrix(D), K1, random_state=0)
    assert (c[0] == a[0]).mean() > 0.99
    np.testing.assert_allclose(c[1], a[1], atol=1e-6)


def test_streamed_input_must_cover_all_rows():
    class Short(Streamed):
        def row_blocks(self, rows):
            yield 0, self._M[:5]

    with pytest.raises(ValueError, match="covered 5 rows"):
        approximate_neighbours(Short(make_expression()), 4, random_state=0)


def test_all_zero_rows():
    X = make_expression(80, 30)
    X[[3, 40]] = 0
    indices, values = in_threads(1, approximate_neighbours, X, 6, random_state=0)
    assert (values[[3, 40]] == 0).all()
    others = np.setdiff1d(np.arange(80), [3, 40])
    assert not np.isin(indices[others], [3, 40]).any() or (values[np.isin(indices, [3, 40])] == 0).all()
    # In the graph an all-zero row keeps only its self-loop, as with the exact search.
    A = knn_graph(X, 5, sym=False, knn="approx")
    for r in (3, 40):
        assert A[r].nnz == 1 and A[r, r] == pytest.approx(1.0)


@pytest.mark.parametrize("n", [1, 2, 5, 16])
def test_fewer_rows_than_neighbours(n):
    X = make_expression(n, 30) + 0.01  # no empty rows
    indices, values = in_threads(1, approximate_neighbours, X, K1, random_state=0)
    assert indices.shape == values.shape == (n, min(n, K1))
    # With everything a candidate, the result is the exact one.
    e_idx, e_val = exact(X)
    np.testing.assert_array_equal(indices, e_idx)
    np.testing.assert_allclose(values, e_val, atol=1e-6)


def _naive_selection(row: np.ndarray, c: int) -> np.ndarray:
    """The ``c`` largest of ``row``: those above the ``c``-th largest value, then the tied ones, each in column order."""
    kth = np.sort(row)[::-1][c - 1]
    above, tied = np.flatnonzero(row > kth), np.flatnonzero(row == kth)
    return np.r_[above, tied[: c - above.size]]


@pytest.mark.parametrize(
    "case",
    [
        "projections",  # as the candidate search sees them
        "ties",  # few distinct values: many ties at the cut-off
        "ascending",  # the sample's threshold is met late in the row
        "constant",  # everything tied
        "short",  # too short for the sample: every entry is a candidate
        "sampled columns largest",  # fewer than c entries pass the sample's threshold: the whole row is partitioned
    ],
)
def test_candidate_selection_equals_naive(case):
    rng = np.random.default_rng(3)
    c = 48
    P = rng.standard_normal((400, 24)).astype(np.float32)
    rows = {
        "projections": P[:40] @ P.T,
        "ties": np.round(rng.random((40, 3000)) * 20).astype(np.float32),
        "ascending": np.sort(rng.random((10, 4000)), axis=1).astype(np.float32),
        "constant": np.ones((5, 1000), dtype=np.float32),
        "short": rng.random((10, 100)).astype(np.float32),
        "sampled columns largest": (rng.random((10, 2000)) + 10.0 * (np.arange(2000) % 8 == 0)).astype(np.float32),
    }[case]
    out = np.empty((rows.shape[0], c), dtype=np.int64)
    _ann._select_top(rows, c, out)
    for row, got in zip(rows, out, strict=True):
        np.testing.assert_array_equal(got, _naive_selection(row, c))


@pytest.mark.parametrize("kind", ["sparse", "dense", "streamed"])
def test_pairs_listed_both_ways_scored_once_bitwise(pbmc, kind, monkeypatch):
    # A pair (i, j) whose mirror (j, i) is listed too takes the mirror's sum: it must be the
    # very float64 sum that scoring (i, j) on its own gives, on every scoring path.
    X, _ = pbmc
    n = 600
    M = {"sparse": X[:n], "dense": X[:n].toarray(), "streamed": Streamed(X[:n].toarray())}[kind]
    monkeypatch.setattr(_ann, "SLICE_BYTES", 4 * n * 512)  # streamed: 4 column slices
    rng = np.random.default_rng(0)
    rows = [np.unique(rng.choice(n, size=30, replace=False)) for _ in range(n)]
    rows[5] = np.r_[rows[5], 7]  # make sure of mirrored pairs with no gaps between the rows
    rows[7] = np.r_[rows[7], 5]
    rows = [np.unique(r) for r in rows]
    cptr = np.r_[0, np.cumsum([r.size for r in rows])].astype(np.int64)
    cidx = np.concatenate(rows).astype(np.int64)
    flags = _ann._mirrored(cptr, cidx)
    listed = {(i, int(j)) for i, r in enumerate(rows) for j in r}
    np.testing.assert_array_equal(flags, [j < i and (j, i) in listed for i, j in sorted(listed)])
    assert flags.sum() > 300  # 30 of 600 rows per list: 5% of pairs listed both ways, half of them flagged
    norms = np.sqrt(np.asarray(X[:n].multiply(X[:n]).sum(axis=1), dtype=np.float64).ravel())
    scorer = _ann._Scorer(_ann.as_matrix(M), norms, np.arange(n))
    together = scorer(cptr, cidx)
    alone = np.concatenate([_one_row(scorer, i, r, n) for i, r in enumerate(rows)])
    np.testing.assert_array_equal(together, alone)
    first = cptr[5] + np.searchsorted(rows[5], 7)
    second = cptr[7] + np.searchsorted(rows[7], 5)
    assert flags[second] and not flags[first]
    assert together[first].tobytes() == together[second].tobytes()


@pytest.mark.parametrize("width", [1, 255, 256, 600])  # one tile, a partial tile, tiles and a remainder
def test_dense_scores_equal_float64_dot_products(width):
    # The dense kernel sums float64 products over tiles of columns starting anywhere in the row.
    rng = np.random.default_rng(4)
    S = (rng.random((300, width)) * (rng.random((300, width)) < 0.4)).astype(np.float32)
    rows = [np.unique(rng.choice(300, size=20, replace=False)) for _ in range(300)]
    cptr = np.r_[0, np.cumsum([r.size for r in rows])].astype(np.int64)
    cidx = np.concatenate(rows).astype(np.int64)
    out = np.zeros(cidx.size)
    _ann._accumulate_dense(S, rng.permutation(300), cptr, cidx, np.zeros(cidx.size, dtype=bool), out)
    S64 = S.astype(np.float64)
    naive = np.concatenate([S64[r] @ S64[i] for i, r in enumerate(rows)])
    np.testing.assert_allclose(out, naive, rtol=1e-13, atol=0)


def test_reverse_lists_equal_naive():
    # Every row's list of the rows that list it, lowest first, cut at ``cap``.
    rng = np.random.default_rng(5)
    n, m, cap = 500, 8, 6
    hubs = rng.choice(n, size=20, replace=False)  # listed by many rows: their lists are cut
    indices = np.array([rng.choice(np.union1d(hubs, rng.choice(n, 30)), size=m, replace=False) for _ in range(n)])
    assert len(set(map(tuple, indices))) > 1 and np.bincount(indices.ravel(), minlength=n).max() > cap
    ptr, idx = _ann._reverse_lists(indices, cap)
    for v in range(n):
        expected = [i for i in range(n) if v in indices[i]][:cap]
        np.testing.assert_array_equal(idx[ptr[v] : ptr[v + 1]], expected)


def _one_row(scorer, i: int, candidates: np.ndarray, n: int) -> np.ndarray:
    """The scores of row ``i``'s candidates with no other row listed (so nothing mirrored)."""
    cptr = np.zeros(n + 1, dtype=np.int64)
    cptr[i + 1 :] = candidates.size
    return scorer(cptr, candidates.astype(np.int64))


def test_empty_input():
    indices, values = approximate_neighbours(np.zeros((0, 4), dtype=np.float32), 5, random_state=0)
    assert indices.shape == values.shape == (0, 0)


def test_small_input_equals_exact_graph():
    # 60 rows: one pool with every row, so the approximate graph is the exact one.
    X = make_expression()
    for sym in (False, True):
        a = in_threads(2, knn_graph, X, 5, sym=sym, knn="approx", random_state=1)
        b = knn_graph(X, 5, sym=sym)
        np.testing.assert_allclose(a.toarray(), b.toarray(), atol=1e-6)


def test_resolve_knn_and_auto_switch(monkeypatch):
    t = _graph.APPROX_MIN_CELLS
    assert resolve_knn("exact", 10**7) == "exact"
    assert resolve_knn("approx", 3) == "approx"
    assert resolve_knn("auto", t - 1) == "exact"
    assert resolve_knn("auto", t) == "approx"
    with pytest.raises(sccr.InputError, match="knn must be one of auto, exact, approx; got 'hnsw'"):
        sccr.SCCR(knn="hnsw").fit(make_expression())  # checked once, at the boundary

    calls = []

    def spy(M, n, *, random_state, desc):
        calls.append((M.shape, n, random_state))
        return approximate_neighbours(M, n, random_state=random_state)

    monkeypatch.setattr(_ann, "approximate_neighbours", spy)
    X = make_expression()
    in_threads(2, knn_graph, X, 4, sym=True, knn="auto", random_state=7)
    assert calls == []  # 60 rows: exact
    monkeypatch.setattr(_graph, "APPROX_MIN_CELLS", 50)
    in_threads(2, knn_graph, X, 4, sym=True, knn="auto", random_state=7)
    assert calls == [((60, 30), 5, 7)]


def test_exact_graph_accepts_row_blocks():
    X = make_expression()
    np.testing.assert_allclose(
        knn_graph(Streamed(X), 4, sym=True).toarray(), knn_graph(X, 4, sym=True).toarray(), atol=0
    )
